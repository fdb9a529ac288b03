//! Per-meter MQTT credentials: a TOML file of argon2id password hashes, one table per meter.
//!
//! ```toml
//! [meters."GM-0001"]
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! ```
//! The broker's auth handler checks a connecting client's user name (the meter id) and password
//! against it. Argon2 is deliberately slow (~30 ms here), so a successful check is remembered by a
//! SHA-256 of the password for the life of the process: a meter that reconnects every few seconds
//! on a bad link does not cost a core.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The on-disk format. A boundary type: serialisable on purpose.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    #[serde(default)]
    pub meters: BTreeMap<String, MeterEntry>,
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
    #[error("meter id {0:?} must be 1-64 letters, digits, '-' or '_'")]
    BadId(String),
    #[error("meter {0} already has credentials (use --force to replace them)")]
    Exists(String),
    #[error("hashing failed: {0}")]
    Hash(String),
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

pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Adds (or with `force` replaces) a meter and returns its new random password. The file is
/// rewritten atomically (temp file + rename) with mode 0600.
pub fn add_meter(path: &Path, id: &str, force: bool) -> Result<String, Error> {
    if !valid_meter_id(id) {
        return Err(Error::BadId(id.to_owned()));
    }
    let mut creds = load_file(path)?;
    if creds.meters.contains_key(id) && !force {
        return Err(Error::Exists(id.to_owned()));
    }
    let password: String = {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut rng = rand::thread_rng();
        (0..20)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    creds.meters.insert(
        id.to_owned(),
        MeterEntry {
            password_hash: hash_password(&password)?,
        },
    );
    let file = path.display().to_string();
    let text = toml::to_string(&creds).map_err(|e| Error::Format {
        file: file.clone(),
        message: e.to_string(),
    })?;
    let io = |source| Error::Io {
        file: file.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("toml.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(password)
}

/// What the broker's auth handler consults. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    hashes: Arc<HashMap<String, String>>,
    verified: Arc<Mutex<HashMap<String, [u8; 32]>>>,
}

impl Verifier {
    pub fn new(file: CredentialsFile) -> Verifier {
        Verifier {
            hashes: Arc::new(
                file.meters
                    .into_iter()
                    .map(|(k, v)| (k, v.password_hash))
                    .collect(),
            ),
            verified: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks `user`/`password`. Runs argon2 on the blocking pool; never blocks the caller's thread.
    pub async fn verify(&self, user: String, password: String) -> bool {
        let Some(hash) = self.hashes.get(&user).cloned() else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        if self
            .verified
            .lock()
            .map(|m| m.get(&user) == Some(&digest))
            .unwrap_or(false)
        {
            return true;
        }
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if ok {
            if let Ok(mut m) = self.verified.lock() {
                m.insert(user, digest);
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn added_meter_verifies_and_others_do_not() {
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
            0o600
        );
        let v = Verifier::new(load_file(&path).expect("load"));
        assert!(v.verify("GM-0001".into(), pw.clone()).await);
        assert!(v.verify("GM-0001".into(), pw.clone()).await, "cached path");
        assert!(!v.verify("GM-0001".into(), "wrong".into()).await);
        assert!(!v.verify("GM-0002".into(), pw).await);
    }
}
