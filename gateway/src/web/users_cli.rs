//! `gkgw user add|list|passwd|remove|token`: dashboard accounts, on the store itself (the
//! state directory of the config, `store.state_dir`), not through the running gateway: the
//! first admin must exist before anyone can sign in, and whoever may write the state directory
//! (root, the `gkgw` user) is already trusted with everything in it. SQLite serialises these
//! writes with the running gateway's; a change applies to the next request (sessions are read
//! from the store on each one).
//!
//! Passwords come from `--password-file` (its first line), else a prompt without echo when
//! standard input is a terminal, else one line of standard input; never from an argument
//! (it would be in the shell history and in `ps`).
//!
//! Run as root on a state directory owned by the service user, the files SQLite creates
//! (`store.db`, its `-wal` and `-shm`) are given to the directory's owner afterwards, so the
//! gateway can still open them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::logbook_cli::{cell, columns};
use super::rfc3339;
use crate::store::users::{Action, Error as UsersError, NewAudit, Users};
use crate::users::{check_name, check_password, Invalid, Role};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Users(#[from] UsersError),
    #[error("{0}")]
    Store(#[from] crate::store::Error),
    #[error("the passwords do not match")]
    Mismatch,
    #[error("no password given (an empty line)")]
    Empty,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("no state directory {0} (store.state_dir of the config): has the gateway ever run here? `gkgw user add` creates it")]
    NoStateDir(PathBuf),
    #[error("hashing failed: {0}")]
    Hash(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Opens the store of `state_dir`; `create`: making the directory if it is missing.
fn open(state_dir: &Path, create: bool) -> Result<Users, Error> {
    if !state_dir.is_dir() {
        if !create {
            return Err(Error::NoStateDir(state_dir.to_owned()));
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(state_dir)
            .map_err(io(format!("cannot create {}", state_dir.display())))?;
    }
    Ok(Users::open(&crate::store::db_path(state_dir))?)
}

/// Gives the store's files to the state directory's owner when root made them (see the
/// module doc). Anyone else's files are theirs already.
fn keep_owner(state_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::metadata(state_dir) else {
        return;
    };
    let db = crate::store::db_path(state_dir);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let p = PathBuf::from(p);
        if let Ok(m) = std::fs::metadata(&p) {
            if m.uid() == 0 && dir.uid() != 0 {
                if let Err(e) = std::os::unix::fs::chown(&p, Some(dir.uid()), Some(dir.gid())) {
                    eprintln!(
                        "warning: cannot give {} to the state directory's owner: {e}",
                        p.display()
                    );
                }
            }
        }
    }
}

/// Where a password comes from.
pub enum Source<'a> {
    File(&'a Path),
    /// A prompt (standard input a terminal) or one line of standard input.
    Stdin,
}

/// Reads a password: the first line of a file, a prompt without echo (twice, when `confirm`),
/// or a line of standard input.
pub fn read_password(source: Source<'_>, prompt: &str, confirm: bool) -> Result<String, Error> {
    use std::io::{BufRead, IsTerminal};
    let line = match source {
        Source::File(f) => {
            let text =
                std::fs::read_to_string(f).map_err(io(format!("cannot read {}", f.display())))?;
            text.lines().next().unwrap_or("").to_owned()
        }
        Source::Stdin if std::io::stdin().is_terminal() => {
            let first = crate::os::read_hidden(prompt).map_err(io("cannot read the terminal"))?;
            if confirm {
                let again =
                    crate::os::read_hidden("again: ").map_err(io("cannot read the terminal"))?;
                if again != first {
                    return Err(Error::Mismatch);
                }
            }
            first
        }
        Source::Stdin => {
            let mut l = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut l)
                .map_err(io("cannot read standard input"))?;
            l.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    if line.is_empty() {
        return Err(Error::Empty);
    }
    check_password(&line)?;
    Ok(line)
}

fn audit(u: &mut Users, action: Action, target: &str, detail: Option<&str>, now: i64) {
    let operator = crate::os::operator();
    let r = u.audit(
        &NewAudit {
            user: Some(&operator),
            action,
            target: Some(target),
            detail,
            via: "cli",
        },
        now,
    );
    if let Err(e) = r {
        eprintln!("warning: cannot write the audit log: {e}");
    }
}

fn hash(password: &str) -> Result<String, Error> {
    crate::credentials::hash_password(password).map_err(|e| Error::Hash(e.to_string()))
}

/// `gkgw user add NAME --role R`.
pub fn add(state_dir: &Path, name: &str, role: Role, password: &str) -> Result<String, Error> {
    check_name(name)?;
    check_password(password)?;
    let h = hash(password)?;
    let mut u = open(state_dir, true)?;
    let now = crate::clock::wall_ns();
    let r = u.add(name, role, &h, false, now);
    if r.is_ok() {
        audit(&mut u, Action::UserAdded, name, Some(role.as_str()), now);
    }
    drop(u);
    keep_owner(state_dir);
    r?;
    Ok(format!("user {name} added ({role})\n"))
}

/// `gkgw user passwd NAME`.
pub fn passwd(state_dir: &Path, name: &str, password: &str) -> Result<String, Error> {
    check_password(password)?;
    let mut u = open(state_dir, false)?;
    if u.role(name)?.is_none() {
        return Err(UsersError::NoSuchUser(name.to_owned()).into());
    }
    let h = hash(password)?;
    let now = crate::clock::wall_ns();
    u.set_password(name, &h, now)?;
    audit(&mut u, Action::PasswordChanged, name, None, now);
    drop(u);
    keep_owner(state_dir);
    Ok(format!(
        "new password for {name}; their sessions have ended (tokens stay: gkgw user token {name} --revoke)\n"
    ))
}

/// `gkgw user remove NAME`.
pub fn remove(state_dir: &Path, name: &str) -> Result<String, Error> {
    let mut u = open(state_dir, false)?;
    let now = crate::clock::wall_ns();
    u.remove(name)?;
    audit(&mut u, Action::UserRemoved, name, None, now);
    drop(u);
    keep_owner(state_dir);
    Ok(format!(
        "user {name} removed, with its sessions and tokens\n"
    ))
}

/// `gkgw user token NAME [--revoke]`: a new token (returned, to print or write), or how many
/// were revoked.
pub fn token(state_dir: &Path, name: &str, label: Option<&str>) -> Result<String, Error> {
    let mut u = open(state_dir, false)?;
    let now = crate::clock::wall_ns();
    let t = u.issue_token(name, label, now)?;
    audit(&mut u, Action::TokenIssued, name, label, now);
    drop(u);
    keep_owner(state_dir);
    Ok(t)
}

pub fn revoke(state_dir: &Path, name: &str) -> Result<String, Error> {
    let mut u = open(state_dir, false)?;
    let now = crate::clock::wall_ns();
    let n = u.revoke_tokens(name)?;
    audit(
        &mut u,
        Action::TokensRevoked,
        name,
        Some(&n.to_string()),
        now,
    );
    drop(u);
    keep_owner(state_dir);
    Ok(format!("{n} token(s) of {name} revoked\n"))
}

/// Writes a token to `path`, readable by its owner only.
pub fn write_token(path: &Path, token: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("cannot write {}", path.display())))?;
    writeln!(f, "{token}").map_err(io(format!("cannot write {}", path.display())))?;
    Ok(())
}

/// `gkgw user list`: NAME, ROLE, CREATED, PASSWORD SET, LAST LOGIN, SESSIONS, TOKENS.
pub fn list(state_dir: &Path) -> Result<String, Error> {
    let u = open(state_dir, false)?;
    let users = u.list(crate::clock::wall_ns())?;
    let mut rows: Vec<[String; 7]> = vec![[
        "NAME".into(),
        "ROLE".into(),
        "CREATED".into(),
        "PASSWORD SET".into(),
        "LAST LOGIN".into(),
        "SESSIONS".into(),
        "TOKENS".into(),
    ]];
    for r in &users {
        rows.push([
            cell(&r.name),
            r.role.as_str().into(),
            rfc3339(r.created_ns),
            rfc3339(r.password_ns),
            r.last_login_ns.map_or("never".into(), rfc3339),
            r.sessions.to_string(),
            r.tokens.to_string(),
        ]);
    }
    let mut out = columns(&rows);
    if users.is_empty() {
        let _ = writeln!(
            out,
            "(no users: gkgw user add NAME --role admin makes the first)"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_passwd_token_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        assert!(matches!(list(&state), Err(Error::NoStateDir(_))));
        let out = add(&state, "amina", Role::Manager, "correct horse").expect("add");
        assert_eq!(out, "user amina added (manager)\n");
        let err = add(&state, "amina", Role::Admin, "correct horse").expect_err("exists");
        assert!(err.to_string().contains("exists already"), "{err}");
        assert_eq!(
            add(&state, "Amina", Role::Admin, "correct horse")
                .expect_err("name")
                .to_string(),
            Invalid::Name("Amina".into()).to_string()
        );
        assert_eq!(
            add(&state, "b", Role::Admin, "short")
                .expect_err("short")
                .to_string(),
            "the password is too short: at least 8 characters"
        );
        let t = list(&state).expect("list");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[0].starts_with("NAME   ROLE"), "{t}");
        assert!(lines[1].starts_with("amina  manager"), "{t}");
        assert!(lines[1].contains("never"), "{t}");
        let tok = token(&state, "amina", None).expect("token");
        assert!(tok.starts_with("gkgw_"));
        passwd(&state, "amina", "battery staple").expect("passwd");
        assert!(passwd(&state, "nobody", "battery staple").is_err());
        assert_eq!(
            revoke(&state, "amina").expect("revoke"),
            "1 token(s) of amina revoked\n"
        );
        remove(&state, "amina").expect("remove");
        assert!(remove(&state, "amina")
            .expect_err("gone")
            .to_string()
            .contains("no user amina"));
        // Every change is in the audit log, by the operator, via the CLI.
        let u = open(&state, false).expect("open");
        let actions: Vec<String> = u
            .recent_audit(10)
            .expect("audit")
            .into_iter()
            .map(|r| format!("{} {}", r.action, r.via))
            .collect();
        assert_eq!(
            actions,
            [
                "user_removed cli",
                "tokens_revoked cli",
                "password_changed cli",
                "token_issued cli",
                "user_added cli"
            ]
        );
    }

    #[test]
    fn a_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("pw");
        std::fs::write(&f, "correct horse\nignored\n").expect("write");
        assert_eq!(
            read_password(Source::File(&f), "", false).expect("read"),
            "correct horse"
        );
        std::fs::write(&f, "short\n").expect("write");
        assert!(read_password(Source::File(&f), "", false).is_err());
        std::fs::write(&f, "").expect("write");
        assert!(matches!(
            read_password(Source::File(&f), "", false),
            Err(Error::Empty)
        ));
    }
}
