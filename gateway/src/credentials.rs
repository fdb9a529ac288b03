//! Broker accounts: a TOML file of argon2id password hashes, one table per field meter and one
//! per integration account (read-only, e.g. the site's Home Assistant).
//!
//! ```toml
//! [meters."GM-0001"]
//! password_hash = "$argon2id$v=19$m=7168,t=5,p=1$..."
//! [integrations."homeassistant"]
//! password_hash = "$argon2id$v=19$m=7168,t=5,p=1$..."
//! ```
//! `gkgw meter add` / `gkgw integration add` rewrite the file atomically and keep its owner,
//! group and mode, so running them with sudo never locks the gateway (user `gkgw`) out of it.
//! The running gateway reloads it on SIGHUP and when its modification time changes.
//!
//! Argon2 is deliberately slow (~30 ms and 7 MiB here), so checking is split in two: the
//! broker's login gate (`broker::auth`) bounds how many run at once and throttles failures, and
//! [`Verifier::verify_blocking`] does the hashing. A successful check is remembered by a SHA-256
//! of the password for the life of the process (cleared on reload): a meter that reconnects every
//! few seconds on a bad link does not cost a core. An unknown user name is checked against a
//! dummy hash with the same parameters, so it costs the same time as a known one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The on-disk format. A boundary type: serialisable on purpose.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    #[serde(default)]
    pub meters: BTreeMap<String, MeterEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub integrations: BTreeMap<String, MeterEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterEntry {
    pub password_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Format { file: String, message: String },
    #[error("account id {0:?} must be 1-64 letters, digits, '-' or '_'")]
    BadId(String),
    #[error("{0} already has credentials (use --force to replace them)")]
    Exists(String),
    #[error("{0} is already a meter; an integration account needs another name")]
    Clash(String),
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("{0} has no account in {1}")]
    Missing(String, String),
}

pub fn valid_meter_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn load_file(path: &Path) -> Result<CredentialsFile, Error> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| Error::Format {
            file,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CredentialsFile::default()),
        Err(source) => Err(Error::Io { file, source }),
    }
}

/// argon2id with 7 MiB and 5 passes: one of OWASP's equivalent argon2id settings (m=19 MiB,
/// t=2 is another), chosen for its memory: a check costs about the same CPU and a third of the
/// RAM, which matters on a 1 GB Pi. A hash carries its own parameters, so older hashes verify.
fn hasher() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(7168, 5, 1, None).expect("OWASP's parameters are valid"),
    )
}

pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Whether `password` matches `hash` (a PHC string; its own parameters are used). Slow on
/// purpose: call it on a blocking thread.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A random 20-character password from an alphabet without look-alikes (0/O, 1/l/I).
pub fn new_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Which table of the file an account goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Meter,
    Integration,
}

/// Adds (or with `force` replaces) accounts with the given passwords and rewrites the file
/// once. Returns nothing on error: the file is then unchanged.
pub fn add_accounts(
    path: &Path,
    kind: Kind,
    accounts: &[(String, String)],
    force: bool,
) -> Result<(), Error> {
    let mut creds = load_file(path)?;
    for (id, password) in accounts {
        if !valid_meter_id(id) {
            return Err(Error::BadId(id.clone()));
        }
        let (table, other) = match kind {
            Kind::Meter => (&creds.meters, &creds.integrations),
            Kind::Integration => (&creds.integrations, &creds.meters),
        };
        if other.contains_key(id) {
            return Err(Error::Clash(id.clone()));
        }
        if table.contains_key(id) && !force {
            return Err(Error::Exists(id.clone()));
        }
        let entry = MeterEntry {
            password_hash: hash_password(password)?,
        };
        match kind {
            Kind::Meter => creds.meters.insert(id.clone(), entry),
            Kind::Integration => creds.integrations.insert(id.clone(), entry),
        };
    }
    write_file(path, &creds)
}

/// Removes accounts of `kind` and rewrites the file once; an id without an account of that
/// kind is an error and the file is then unchanged. A running gateway closes their
/// connections when it re-reads the file (within 2 s, or at `systemctl reload gkgw`).
pub fn remove_accounts(path: &Path, kind: Kind, ids: &[String]) -> Result<(), Error> {
    let mut creds = load_file(path)?;
    for id in ids {
        let table = match kind {
            Kind::Meter => &mut creds.meters,
            Kind::Integration => &mut creds.integrations,
        };
        if table.remove(id).is_none() {
            return Err(Error::Missing(id.clone(), path.display().to_string()));
        }
    }
    write_file(path, &creds)
}

/// Adds (or with `force` replaces) a meter and returns its new random password.
pub fn add_meter(path: &Path, id: &str, force: bool) -> Result<String, Error> {
    let password = new_password();
    add_accounts(
        path,
        Kind::Meter,
        &[(id.to_owned(), password.clone())],
        force,
    )?;
    Ok(password)
}

/// Writes `creds` atomically (temp file in the same directory, fsync, rename). An existing
/// file's owner, group and mode are kept; a new file gets mode 0640 and its directory's group,
/// so a gateway running as another user of that group (`gkgw`) can read it.
fn write_file(path: &Path, creds: &CredentialsFile) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let file = path.display().to_string();
    let text = toml::to_string(creds).map_err(|e| Error::Format {
        file: file.clone(),
        message: e.to_string(),
    })?;
    let io = |source| Error::Io {
        file: file.clone(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let (mode, owner) = match std::fs::metadata(path) {
        Ok(m) => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
        Err(_) => (
            0o640,
            std::fs::metadata(dir).ok().map(|d| (u32::MAX, d.gid())),
        ),
    };
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    if let Some((uid, gid)) = owner {
        let new_file = uid == u32::MAX;
        let uid = (!new_file).then_some(uid);
        // Only root may give a file away; anyone may keep their own. For an existing file a
        // failure is an error (a file the gateway cannot read would lock every meter out);
        // for a new one the directory's group is only a courtesy.
        if let Err(e) = std::os::unix::fs::fchown(&f, uid, Some(gid)) {
            if !new_file {
                let _ = std::fs::remove_file(&tmp);
                return Err(io(e));
            }
        }
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A verified account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    Meter(Arc<str>),
    Integration(Arc<str>),
}

struct Accounts {
    meters: HashMap<String, String>,
    integrations: HashMap<String, String>,
}

/// What the broker's login gate consults. Cheap to clone; [`Verifier::reload`] swaps the table
/// under every clone.
#[derive(Clone)]
pub struct Verifier {
    accounts: Arc<RwLock<Accounts>>,
    verified: Arc<Mutex<HashMap<String, [u8; 32]>>>,
    dummy: Arc<String>,
}

fn accounts_of(file: CredentialsFile) -> Accounts {
    Accounts {
        meters: file
            .meters
            .into_iter()
            .map(|(k, v)| (k, v.password_hash))
            .collect(),
        integrations: file
            .integrations
            .into_iter()
            .map(|(k, v)| (k, v.password_hash))
            .collect(),
    }
}

impl Verifier {
    pub fn new(file: CredentialsFile) -> Verifier {
        Verifier {
            accounts: Arc::new(RwLock::new(accounts_of(file))),
            verified: Arc::default(),
            // Same parameters as every real hash, so an unknown user costs the same time.
            dummy: Arc::new(hash_password(&new_password()).unwrap_or_default()),
        }
    }

    /// Replaces the accounts; returns the meter ids that are gone (their connections are
    /// closed by the broker) and clears the cache of verified passwords.
    pub fn reload(&self, file: CredentialsFile) -> Vec<String> {
        let new = accounts_of(file);
        let mut removed = Vec::new();
        if let Ok(mut a) = self.accounts.write() {
            removed = a
                .meters
                .keys()
                .chain(a.integrations.keys())
                .filter(|k| !new.meters.contains_key(*k) && !new.integrations.contains_key(*k))
                .cloned()
                .collect();
            *a = new;
        }
        if let Ok(mut v) = self.verified.lock() {
            v.clear();
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.accounts.read().map_or(0, |a| a.meters.len())
    }

    /// Whether `id` is a meter account (the command relay sends only to meters).
    pub fn is_meter(&self, id: &str) -> bool {
        self.accounts
            .read()
            .is_ok_and(|a| a.meters.contains_key(id))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, user: &str) -> Option<(Account, String)> {
        let a = self.accounts.read().ok()?;
        if let Some(h) = a.meters.get(user) {
            return Some((Account::Meter(Arc::from(user)), h.clone()));
        }
        a.integrations
            .get(user)
            .map(|h| (Account::Integration(Arc::from(user)), h.clone()))
    }

    /// The account if `user` logged in with this very password before (no hashing).
    pub fn cached(&self, user: &str, password: &str) -> Option<Account> {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let hit = self
            .verified
            .lock()
            .map(|m| m.get(user) == Some(&digest))
            .unwrap_or(false);
        if hit {
            self.lookup(user).map(|(a, _)| a)
        } else {
            None
        }
    }

    /// Checks `user`/`password` with argon2: slow and memory-hungry, so call it on a blocking
    /// thread and only through the login gate, which bounds how many run at once.
    pub fn verify_blocking(&self, user: &str, password: &str) -> Option<Account> {
        let found = self.lookup(user);
        let hash = found
            .as_ref()
            .map_or(self.dummy.as_str(), |(_, h)| h.as_str());
        let ok = verify_password(hash, password);
        let account = found.filter(|_| ok).map(|(a, _)| a)?;
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        if let Ok(mut m) = self.verified.lock() {
            m.insert(user.to_owned(), digest);
        }
        Some(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_meter_verifies_and_others_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meters.toml");
        let pw = add_meter(&path, "GM-0001", false).expect("add");
        assert!(matches!(
            add_meter(&path, "GM-0001", false),
            Err(Error::Exists(_))
        ));
        assert!(matches!(
            add_meter(&path, "bad id", false),
            Err(Error::BadId(_))
        ));
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(!text.contains(&pw), "the password itself is never stored");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o640
        );
        let v = Verifier::new(load_file(&path).expect("load"));
        let gm = Account::Meter(Arc::from("GM-0001"));
        assert_eq!(v.cached("GM-0001", &pw), None, "nothing cached yet");
        assert_eq!(v.verify_blocking("GM-0001", &pw), Some(gm.clone()));
        assert_eq!(v.cached("GM-0001", &pw), Some(gm));
        assert_eq!(v.verify_blocking("GM-0001", "wrong"), None);
        assert_eq!(v.cached("GM-0001", "wrong"), None);
        assert_eq!(v.verify_blocking("GM-0002", &pw), None);
    }

    #[test]
    fn rewriting_keeps_the_mode_and_reload_reports_removed_accounts() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meters.toml");
        add_meter(&path, "GM-0001", false).expect("add");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        add_accounts(
            &path,
            Kind::Integration,
            &[("ha".into(), "pw".into())],
            false,
        )
        .expect("add integration");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o604,
            "mode kept"
        );
        assert!(matches!(
            add_accounts(&path, Kind::Meter, &[("ha".into(), "x".into())], true),
            Err(Error::Clash(_))
        ));
        let v = Verifier::new(load_file(&path).expect("load"));
        assert_eq!(
            v.verify_blocking("ha", "pw"),
            Some(Account::Integration(Arc::from("ha")))
        );
        let mut file = load_file(&path).expect("load");
        file.meters.clear();
        assert_eq!(v.reload(file), vec!["GM-0001".to_owned()]);
        assert_eq!(v.cached("ha", "pw"), None, "cache cleared on reload");
        assert_eq!(v.len(), 0);
    }

    #[test]
    fn accounts_are_removed_and_a_missing_one_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meters.toml");
        for id in ["GM-0001", "GM-0002"] {
            add_meter(&path, id, false).expect("add");
        }
        add_accounts(
            &path,
            Kind::Integration,
            &[("grafana".into(), "pw".into())],
            false,
        )
        .expect("add");
        let err = remove_accounts(&path, Kind::Meter, &["GM-0002".into(), "grafana".into()])
            .expect_err("grafana is not a meter");
        assert!(
            err.to_string().starts_with("grafana has no account in"),
            "{err}"
        );
        assert_eq!(load_file(&path).expect("load").meters.len(), 2, "unchanged");
        remove_accounts(&path, Kind::Meter, &["GM-0002".into()]).expect("remove");
        let left = load_file(&path).expect("load");
        assert_eq!(left.meters.keys().collect::<Vec<_>>(), ["GM-0001"]);
        assert!(left.integrations.contains_key("grafana"));
    }
}
