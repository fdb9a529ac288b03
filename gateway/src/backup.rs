//! `gkgw backup` and `gkgw restore`: everything a site has, copied to a directory (a USB stick)
//! while the gateway runs, and put back on a gateway that is stopped (a new SD card).
//!
//! A backup directory holds:
//! ```text
//! MANIFEST                 what is in it: one line per file with its mode, size and SHA-256
//! store.db                 the store, copied with SQLite's `VACUUM INTO` (a consistent snapshot
//!                          of the database and its WAL, taken without stopping the writer)
//! files/etc/gkgw/...       the config file, every file it names (meters.toml, secrets,
//!                          certificates), the rest of its directory, and the systemd drop-in
//!                          directory, each under its absolute path
//! ```
//! Invariants (tested in `tests/e2e/cli.rs`, `backup_while_running_then_restore_onto_an_empty_state_dir`):
//! - a backup is checked before it is reported done: the copy passes `PRAGMA integrity_check`
//!   and every file's hash is in the manifest;
//! - a restore checks the whole backup (hashes, integrity) before it changes anything, refuses
//!   while a gateway holds the state directory, and moves what it replaces into
//!   `{state_dir}/before-restore-{time}/` instead of deleting it.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::store::copy::{check_copy, Summary};

pub const MANIFEST: &str = "MANIFEST";
const STORE: &str = "store.db";
const FILES: &str = "files";
const HEADER: &str = "gkgw backup 1";
/// `systemctl edit gkgw` writes its drop-ins here (`LoadCredential=` lines).
pub const DROP_IN_DIR: &str = "/etc/systemd/system/gkgw.service.d";
/// systemd's private copies of `LoadCredential=` files: made at each start, not backed up
/// (their sources are, through the drop-in).
const RUN_CREDENTIALS: &str = "/run/credentials/";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    #[error("store {}: {}", .0.display(), .1)]
    Sqlite(PathBuf, rusqlite::Error),
    #[error("the copy {} is damaged: {}", .0.display(), .1)]
    BadCopy(PathBuf, String),
    #[error("no store at {}: is this the gateway's state directory?", .0.display())]
    NoStore(PathBuf),
    #[error("{} exists and is not empty: give a new directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{} is not a gkgw backup: {}", .0.display(), .1)]
    NotABackup(PathBuf, String),
    #[error("the backup in {} is damaged, nothing was restored: {}", .0.display(), .1)]
    Damaged(PathBuf, String),
    #[error("state directory {} is in use by another gkgw (pid {}): stop it first (sudo systemctl stop gkgw); nothing was restored", .0.display(), .1)]
    Running(PathBuf, String),
    #[error(transparent)]
    Locked(crate::store::lock::Error),
}

type Result<T> = std::result::Result<T, Error>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io(path.to_owned(), e)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Store,
    File,
}

/// One line of the manifest.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    size: u64,
    sha256: String,
    /// `store.db`, or the file's absolute path on the gateway.
    path: PathBuf,
}

impl Entry {
    /// Where the entry's copy is inside the backup directory.
    fn inside(&self, backup: &Path) -> PathBuf {
        match self.kind {
            Kind::Store => backup.join(STORE),
            Kind::File => backup
                .join(FILES)
                .join(self.path.strip_prefix("/").unwrap_or(&self.path)),
        }
    }
}

struct Manifest {
    created: String,
    version: String,
    state_dir: PathBuf,
    entries: Vec<Entry>,
}

impl Manifest {
    fn render(&self) -> String {
        let mut s = format!(
            "{HEADER}\nversion {}\ncreated {}\nstate_dir {}\n",
            self.version,
            self.created,
            self.state_dir.display()
        );
        for e in &self.entries {
            let kind = match e.kind {
                Kind::Store => "store",
                Kind::File => "file",
            };
            let _ = writeln!(
                s,
                "{kind} {:04o} {} {} {}",
                e.mode,
                e.size,
                e.sha256,
                e.path.display()
            );
        }
        s
    }

    fn parse(dir: &Path, text: &str) -> Result<Manifest> {
        let bad = |line: usize, why: &str| {
            Error::NotABackup(dir.to_owned(), format!("{MANIFEST} line {line}: {why}"))
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, HEADER)) => {}
            _ => return Err(bad(1, &format!("expected \"{HEADER}\""))),
        }
        let mut m = Manifest {
            created: String::new(),
            version: String::new(),
            state_dir: PathBuf::new(),
            entries: Vec::new(),
        };
        for (n, line) in lines {
            let (key, rest) = line.split_once(' ').ok_or_else(|| bad(n, "no value"))?;
            match key {
                "version" => m.version = rest.to_owned(),
                "created" => m.created = rest.to_owned(),
                "state_dir" => m.state_dir = rest.into(),
                "store" | "file" => {
                    let mut f = rest.splitn(4, ' ');
                    let (Some(mode), Some(size), Some(sha256), Some(path)) =
                        (f.next(), f.next(), f.next(), f.next())
                    else {
                        return Err(bad(n, "expected: mode size sha256 path"));
                    };
                    let path = PathBuf::from(path);
                    let kind = if key == "store" {
                        Kind::Store
                    } else {
                        Kind::File
                    };
                    if kind == Kind::File && !path.is_absolute() {
                        return Err(bad(n, "a file's path must be absolute"));
                    }
                    if path
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                    {
                        return Err(bad(n, "a path with .. in it"));
                    }
                    m.entries.push(Entry {
                        kind,
                        mode: u32::from_str_radix(mode, 8).map_err(|_| bad(n, "bad mode"))?,
                        size: size.parse().map_err(|_| bad(n, "bad size"))?,
                        sha256: sha256.to_owned(),
                        path,
                    });
                }
                _ => return Err(bad(n, &format!("unknown key {key}"))),
            }
        }
        if !m.entries.iter().any(|e| e.kind == Kind::Store) {
            return Err(bad(0, "no store"));
        }
        Ok(m)
    }
}

fn sha256_of(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    let hex = h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    Ok((size, hex))
}

fn copy_error(path: &Path, e: crate::store::copy::Error) -> Error {
    match e {
        crate::store::copy::Error::Sqlite(e) => Error::Sqlite(path.to_owned(), e),
        crate::store::copy::Error::Damaged(why) => Error::BadCopy(path.to_owned(), why),
        crate::store::copy::Error::Io(e) => Error::Io(path.to_owned(), e),
    }
}

/// fsyncs a file the backup wrote.
fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Copies `from` to `to` (parents made), fsynced, with `mode`.
fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).map_err(io(p))?;
    }
    let tmp = to.with_extension("gkgw-partial");
    {
        let mut src = std::fs::File::open(from).map_err(io(from))?;
        let mut dst = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        std::io::copy(&mut src, &mut dst).map_err(io(&tmp))?;
        dst.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(&tmp))?;
        dst.flush().map_err(io(&tmp))?;
        dst.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, to).map_err(io(to))?;
    if let Some(p) = to.parent() {
        sync_dir(p);
    }
    Ok(())
}

/// The files a backup takes besides the store: the config file, the files it names (those
/// under `/run/credentials/` come from the drop-in's `LoadCredential=` instead), every regular
/// file of the config's directory (not what lies in the state directory, when that is inside
/// it), and the systemd drop-in directory. Files named but missing are returned apart.
fn files_to_take(
    config: &Path,
    cfg: &Config,
    state_dir: &Path,
    backup: &Path,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let (state_dir, backup) = (abs(state_dir), abs(backup));
    let mut take = vec![abs(config)];
    let mut missing = Vec::new();
    let named = [
        Some(&cfg.broker.credentials_file),
        cfg.broker.tls_cert_file.as_ref(),
        cfg.broker.tls_key_file.as_ref(),
        cfg.broker.tls_client_ca_file.as_ref(),
        cfg.influx.password_file.as_ref(),
        cfg.influx.token_file.as_ref(),
        cfg.uplink.token_file.as_ref(),
        cfg.uplink.ca_file.as_ref(),
        cfg.commands.platform_key_file.as_ref(),
    ];
    for p in named.into_iter().flatten() {
        let p = abs(p);
        if p.starts_with(RUN_CREDENTIALS) {
            continue;
        }
        if p.is_file() {
            take.push(p);
        } else {
            missing.push(p);
        }
    }
    let mut walk = Vec::new();
    if let Some(dir) = take[0].parent() {
        walk.push(dir.to_owned());
    }
    walk.push(PathBuf::from(DROP_IN_DIR));
    while let Some(dir) = walk.pop() {
        if dir.starts_with(&state_dir) || dir.starts_with(&backup) {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => walk.push(p),
                Ok(m) if m.is_file() => take.push(p),
                _ => {}
            }
        }
    }
    take.sort();
    take.dedup();
    (take, missing)
}

/// What `gkgw backup` did, printed for the technician.
pub struct BackupReport {
    pub dir: PathBuf,
    pub store: Summary,
    pub files: Vec<PathBuf>,
    pub missing: Vec<PathBuf>,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "backup written to {}", self.dir.display())?;
        writeln!(f, "  store    {} (integrity ok)", self.store)?;
        if self.files.is_empty() {
            writeln!(f, "  config   none (no config file: only the store)")?;
        }
        for p in &self.files {
            writeln!(f, "  file     {}", p.display())?;
        }
        for p in &self.missing {
            writeln!(
                f,
                "  MISSING  {} (named in the config, not found: not in the backup)",
                p.display()
            )?;
        }
        if self.files.is_empty() {
            writeln!(
                f,
                "restore it with the gateway stopped: gkgw restore --from {}",
                self.dir.display()
            )
        } else {
            writeln!(
                f,
                "restore it on a stopped gateway: sudo systemctl stop gkgw && sudo gkgw restore --from {} && sudo systemctl start gkgw",
                self.dir.display()
            )
        }
    }
}

/// `gkgw backup`: the store of `state_dir` and, with a config, its files, into the new or
/// empty directory `to`. Safe while the gateway runs (a read snapshot; the writer goes on).
pub fn backup(
    state_dir: &Path,
    config: Option<(&Path, &Config)>,
    to: &Path,
) -> Result<BackupReport> {
    let db = crate::store::db_path(state_dir);
    if !db.is_file() {
        return Err(Error::NoStore(state_dir.to_owned()));
    }
    match std::fs::read_dir(to) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::NotEmpty(to.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(to).map_err(io(to))?;
        }
        Err(e) => return Err(Error::Io(to.to_owned(), e)),
    }
    // Secrets go in: only its owner reads the backup.
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).map_err(io(to))?;

    let copy = to.join(STORE);
    crate::store::copy::vacuum_into(&db, &copy).map_err(|e| Error::Sqlite(db.clone(), e))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).map_err(io(&copy))?;
    sync_file(&copy)?;
    let store = check_copy(&copy).map_err(|e| copy_error(&copy, e))?;
    let (size, sha256) = sha256_of(&copy)?;
    let mut entries = vec![Entry {
        kind: Kind::Store,
        mode: 0o640,
        size,
        sha256,
        path: STORE.into(),
    }];

    let (files, missing) = match config {
        Some((path, cfg)) => files_to_take(path, cfg, state_dir, to),
        None => (Vec::new(), Vec::new()),
    };
    for p in &files {
        let mode = std::fs::metadata(p).map_err(io(p))?.permissions().mode() & 0o7777;
        let mut e = Entry {
            kind: Kind::File,
            mode,
            size: 0,
            sha256: String::new(),
            path: p.clone(),
        };
        let inside = e.inside(to);
        copy_file(p, &inside, 0o600)?;
        (e.size, e.sha256) = sha256_of(&inside)?;
        entries.push(e);
    }
    let manifest = Manifest {
        created: crate::store::copy::utc(crate::clock::wall_ns()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        state_dir: std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned()),
        entries,
    };
    let mpath = to.join(MANIFEST);
    std::fs::write(&mpath, manifest.render()).map_err(io(&mpath))?;
    sync_file(&mpath)?;
    sync_dir(to);
    Ok(BackupReport {
        dir: to.to_owned(),
        store,
        files,
        missing,
    })
}

/// What `gkgw restore` did.
pub struct RestoreReport {
    pub from: PathBuf,
    pub created: String,
    pub store: Summary,
    pub state_dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// Where what was replaced went (none when nothing was there).
    pub aside: Option<PathBuf>,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "restored the backup of {} from {}",
            self.created,
            self.from.display()
        )?;
        writeln!(
            f,
            "  store    {} -> {}",
            self.store,
            crate::store::db_path(&self.state_dir).display()
        )?;
        for p in &self.files {
            writeln!(f, "  file     {}", p.display())?;
        }
        match &self.aside {
            Some(a) => writeln!(
                f,
                "what was there before is kept in {} (delete it once the gateway runs well)",
                a.display()
            )?,
            None => writeln!(f, "nothing was there before")?,
        }
        writeln!(f, "next: sudo gkgw check && sudo systemctl start gkgw")
    }
}

/// The state directory a backup was taken from (its manifest's `state_dir`).
pub fn recorded_state_dir(from: &Path) -> Result<PathBuf> {
    let m = read_manifest(from)?;
    if m.state_dir.as_os_str().is_empty() {
        return Err(Error::NotABackup(
            from.to_owned(),
            format!("{MANIFEST} names no state_dir: give --state-dir"),
        ));
    }
    Ok(m.state_dir)
}

fn read_manifest(from: &Path) -> Result<Manifest> {
    let mpath = from.join(MANIFEST);
    match std::fs::read_to_string(&mpath) {
        Ok(t) => Manifest::parse(from, &t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::NotABackup(from.to_owned(), format!("no {MANIFEST}")))
        }
        Err(e) => Err(Error::Io(mpath, e)),
    }
}

/// Checks a whole backup: the manifest, every file's size and hash, the store's integrity.
fn verify(from: &Path) -> Result<(Manifest, Summary)> {
    let m = read_manifest(from)?;
    for e in &m.entries {
        let inside = e.inside(from);
        let (size, sha256) =
            sha256_of(&inside).map_err(|err| Error::Damaged(from.to_owned(), err.to_string()))?;
        if size != e.size || sha256 != e.sha256 {
            return Err(Error::Damaged(
                from.to_owned(),
                format!(
                    "{} is not the file that was backed up (size or SHA-256 differs)",
                    inside.display()
                ),
            ));
        }
    }
    let store = check_copy(&from.join(STORE))
        .map_err(|err| Error::Damaged(from.to_owned(), err.to_string()))?;
    Ok((m, store))
}

/// The owner a restored file gets: the one of the file it replaces, else of its directory
/// (root restores; a `gkgw` user's id may differ on a new SD card, so ids are not carried).
fn chown_like(path: &Path, like: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let m = std::fs::metadata(like).map_err(io(like))?;
    std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid())).map_err(io(path))
}

/// Makes the missing directories of `dir`, each 0750 (they may hold secrets) and owned like
/// `like` (the nearest directory that was there).
fn make_dirs(dir: &Path, like: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = dir.to_owned();
    while !d.exists() {
        missing.push(d.clone());
        if !d.pop() {
            break;
        }
    }
    for d in missing.into_iter().rev() {
        std::fs::create_dir(&d).map_err(io(&d))?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).map_err(io(&d))?;
        if !like.as_os_str().is_empty() {
            chown_like(&d, like)?;
        }
    }
    Ok(())
}

/// `gkgw restore`: puts a backup back. The state directory must not be in use by a gateway;
/// the store files there and each file the backup replaces are moved into
/// `{state_dir}/before-restore-{time}/` first. With `store_only`, the config files are left.
pub fn restore(from: &Path, state_dir: &Path, store_only: bool) -> Result<RestoreReport> {
    let (manifest, store) = verify(from)?;
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let _lock = crate::store::lock::lock_state_dir(state_dir).map_err(|e| match e {
        crate::store::lock::Error::Held { dir, pid } => Error::Running(dir, pid),
        e => Error::Locked(e),
    })?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let aside = state_dir.join(format!("before-restore-{stamp}"));
    let mut moved = false;
    let mut make_aside = || -> Result<()> {
        if !moved {
            std::fs::create_dir_all(&aside).map_err(io(&aside))?;
            std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&aside))?;
            moved = true;
        }
        Ok(())
    };

    let db = crate::store::db_path(state_dir);
    // The database with its WAL and shared memory: a WAL left by a killed gateway holds
    // committed readings, so the three go aside together.
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if p.exists() {
            make_aside()?;
            let to = aside.join(format!("{STORE}{suffix}"));
            std::fs::rename(&p, &to).map_err(io(&p))?;
        }
    }
    copy_file(&from.join(STORE), &db, 0o640)?;
    chown_like(&db, state_dir)?;

    let mut files = Vec::new();
    if !store_only {
        for e in manifest.entries.iter().filter(|e| e.kind == Kind::File) {
            let target = &e.path;
            let existed = target.is_file();
            if existed {
                make_aside()?;
                let old = aside
                    .join(FILES)
                    .join(target.strip_prefix("/").unwrap_or(target));
                copy_file(target, &old, 0o600)?;
            }
            let like = if existed {
                target.clone()
            } else {
                let mut p = target.parent().map(Path::to_owned).unwrap_or_default();
                while !p.exists() && p.pop() {}
                p
            };
            let like = std::fs::metadata(&like).map(|_| like).unwrap_or_default();
            if let Some(parent) = target.parent() {
                make_dirs(parent, &like)?;
            }
            copy_file(&e.inside(from), target, e.mode)?;
            if !like.as_os_str().is_empty() {
                chown_like(target, &like)?;
            }
            files.push(target.clone());
        }
    }
    sync_dir(state_dir);
    Ok(RestoreReport {
        from: from.to_owned(),
        created: manifest.created,
        store,
        state_dir: state_dir.to_owned(),
        files,
        aside: moved.then_some(aside),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_what_was_written_and_refuses_paths_out_of_the_backup() {
        let m = Manifest {
            created: "2026-12-03T10:00:00Z".into(),
            version: "0.1.0".into(),
            state_dir: "/var/lib/gkgw".into(),
            entries: vec![
                Entry {
                    kind: Kind::Store,
                    mode: 0o640,
                    size: 4096,
                    sha256: "ab".into(),
                    path: STORE.into(),
                },
                Entry {
                    kind: Kind::File,
                    mode: 0o600,
                    size: 12,
                    sha256: "cd".into(),
                    path: "/etc/gkgw/secrets/uplink token".into(),
                },
            ],
        };
        let back = Manifest::parse(Path::new("/b"), &m.render()).expect("parse");
        assert_eq!(back.entries.len(), 2);
        assert_eq!(
            back.entries[1].path,
            Path::new("/etc/gkgw/secrets/uplink token")
        );
        assert_eq!(back.entries[1].mode, 0o600);
        assert_eq!(
            back.entries[1].inside(Path::new("/b")),
            Path::new("/b/files/etc/gkgw/secrets/uplink token")
        );
        for bad in [
            "file 0600 1 ab etc/relative",
            "file 0600 1 ab /etc/../root/.ssh/authorized_keys",
            "file 0600 1 ab",
            "nonsense here",
        ] {
            let text = format!("{HEADER}\nstore 0640 1 ab store.db\n{bad}\n");
            let err = Manifest::parse(Path::new("/b"), &text).err().expect(bad);
            assert!(err.to_string().contains("line 3"), "{bad}: {err}");
        }
        assert!(Manifest::parse(Path::new("/b"), "hello\n").is_err());
    }
}
