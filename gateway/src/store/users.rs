//! Dashboard accounts and the audit log of what people did (issue 13). Tables:
//! - `users(name, role, password_hash, created_ns, password_ns, last_login_ns)`: argon2id
//!   hashes (PHC strings, `credentials::hash_password`); roles as `users::Role::as_str`.
//! - `sessions(id_hash, user, created_ns, expires_ns, csrf, address)`: a browser login. The
//!   cookie carries 256 random bits; only their SHA-256 is stored, so a copy of the database
//!   opens no session. The CSRF token is stored as is (it is no credential by itself).
//! - `api_tokens(hash, user, created_ns, label)`: bearer tokens for machine clients (`gkgw
//!   user token`), 256 random bits each, SHA-256 stored. They do not expire; `gkgw user token
//!   NAME --revoke` and `gkgw user remove` end them.
//! - `login_attempts(key, failures, last_failure_ns, locked_until_ns)`: the login throttle's
//!   state per account (`user:NAME`) and per client address (`addr:IP`), so a restart does not
//!   lift a lock; rows are forgotten by `users::Throttle::forget_ns`.
//! - `audit(row, ts, user, action, target, detail, via)`: one row per login, logout, failed
//!   login, user change and every write through the web (logbook, alarms, commands), with who.
//!   Append-only: triggers abort any UPDATE or DELETE. `row` is `AUTOINCREMENT`.
//!
//! Why SHA-256 and not argon2 for sessions and tokens: they are 256 random bits, so there is
//! nothing to guess and no need for a slow hash; a lookup is one indexed query per request.
//!
//! One connection (the web's `store::Handle<Users>`); `gkgw user` opens its own, which SQLite
//! serialises with the gateway's (WAL, `busy_timeout`), so users can be managed while the
//! gateway runs and before it ever ran.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::open;
use crate::users::{Attempts, Role};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, created_ns INTEGER NOT NULL, password_ns INTEGER NOT NULL, last_login_ns INTEGER);
CREATE TABLE IF NOT EXISTS sessions(id_hash BLOB PRIMARY KEY, user TEXT NOT NULL, created_ns INTEGER NOT NULL, expires_ns INTEGER NOT NULL, csrf TEXT NOT NULL, address TEXT);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);
CREATE TABLE IF NOT EXISTS api_tokens(hash BLOB PRIMARY KEY, user TEXT NOT NULL, created_ns INTEGER NOT NULL, label TEXT);
CREATE TABLE IF NOT EXISTS login_attempts(key TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure_ns INTEGER NOT NULL, locked_until_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit(row INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, user TEXT, action TEXT NOT NULL, target TEXT, detail TEXT, via TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_never_updated BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_never_deleted BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// A user's newest sessions kept; an older one ends when a login would exceed it (a script
/// logging in in a loop must not grow the table).
pub const MAX_SESSIONS_PER_USER: i64 = 20;

/// At most this many throttle rows: beyond it the stalest unlocked ones go (a flood of made-up
/// user names must not grow the table without bound).
const MAX_ATTEMPT_ROWS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("user {0} exists already (gkgw user passwd {0} changes the password)")]
    Exists(String),
    #[error("no user {0} (gkgw user list shows them)")]
    NoSuchUser(String),
    #[error("store: {0}")]
    Store(#[from] super::Error),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Store(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What an audit row says happened. The strings are stored and shown by `gkgw audit list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Login,
    LoginFailed,
    Logout,
    UserAdded,
    UserRemoved,
    PasswordChanged,
    TokenIssued,
    TokensRevoked,
    LogbookAdded,
    LogbookRevised,
    LogbookWithdrawn,
    /// An alarm operation: the target is the alarm, the detail the operation and note.
    Alarm,
    CommandSubmitted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::LoginFailed => "login_failed",
            Action::Logout => "logout",
            Action::UserAdded => "user_added",
            Action::UserRemoved => "user_removed",
            Action::PasswordChanged => "password_changed",
            Action::TokenIssued => "token_issued",
            Action::TokensRevoked => "tokens_revoked",
            Action::LogbookAdded => "logbook_added",
            Action::LogbookRevised => "logbook_revised",
            Action::LogbookWithdrawn => "logbook_withdrawn",
            Action::Alarm => "alarm",
            Action::CommandSubmitted => "command_submitted",
        }
    }
}

/// One row of the audit log to write.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    /// Who: the session's or token's user; for a failed login the name that was tried; for
    /// `gkgw user` the operator (`os::operator`).
    pub user: Option<&'a str>,
    pub action: Action,
    pub target: Option<&'a str>,
    pub detail: Option<&'a str>,
    /// `web 192.168.1.20` (a browser session), `token 127.0.0.1` (a bearer token), `cli`.
    pub via: &'a str,
}

/// One row of the audit log as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub row: i64,
    pub ts_ns: i64,
    pub user: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub via: String,
}

/// A user as `gkgw user list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub name: String,
    pub role: Role,
    pub created_ns: i64,
    pub password_ns: i64,
    pub last_login_ns: Option<i64>,
    /// Sessions not expired at the time of the listing.
    pub sessions: i64,
    pub tokens: i64,
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub expires_ns: i64,
}

/// A new session: the cookie's value (shown once, never stored) and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

/// 256 random bits, base64url without padding (43 characters).
pub fn random_secret() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Bearer tokens start with this, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "gkgw_";

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn role_of(s: &str) -> Role {
    // A role the code does not know (a newer gateway's, downgraded) is the least one.
    Role::parse(s).unwrap_or(Role::Viewer)
}

pub struct Users {
    conn: Connection,
}

impl Users {
    pub fn open(path: &Path) -> std::result::Result<Users, super::Error> {
        let conn = open(path)?;
        conn.execute_batch(super::SCHEMA)?;
        conn.execute_batch(super::commands::SCHEMA)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Users { conn })
    }

    fn immediate(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

    /// Adds a user (`replace`: or replaces one of that name, ending its sessions and tokens:
    /// the demo's fresh logins at each start).
    pub fn add(
        &mut self,
        name: &str,
        role: Role,
        hash: &str,
        replace: bool,
        now_ns: i64,
    ) -> Result<()> {
        let tx = self.immediate()?;
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some();
        if exists && !replace {
            return Err(Error::Exists(name.to_owned()));
        }
        end_all(&tx, name)?;
        tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
        tx.execute(
            "INSERT INTO users(name, role, password_hash, created_ns, password_ns) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![name, role.as_str(), hash, now_ns],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sets a new password hash; ends the user's sessions (not its tokens) and lifts a lock on
    /// the account.
    pub fn set_password(&mut self, name: &str, hash: &str, now_ns: i64) -> Result<()> {
        let tx = self.immediate()?;
        let n = tx.execute(
            "UPDATE users SET password_hash = ?2, password_ns = ?3 WHERE name = ?1",
            params![name, hash, now_ns],
        )?;
        if n == 0 {
            return Err(Error::NoSuchUser(name.to_owned()));
        }
        tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
        tx.execute(
            "DELETE FROM login_attempts WHERE key = ?1",
            [account_key(name)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a user with its sessions and tokens.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        let tx = self.immediate()?;
        end_all(&tx, name)?;
        if tx.execute("DELETE FROM users WHERE name = ?1", [name])? == 0 {
            return Err(Error::NoSuchUser(name.to_owned()));
        }
        tx.commit()?;
        Ok(())
    }

    pub fn list(&self, now_ns: i64) -> Result<Vec<UserRow>> {
        let mut st = self.conn.prepare(
            "SELECT name, role, created_ns, password_ns, last_login_ns,
                (SELECT count(*) FROM sessions s WHERE s.user = u.name AND s.expires_ns > ?1),
                (SELECT count(*) FROM api_tokens t WHERE t.user = u.name)
             FROM users u ORDER BY name",
        )?;
        let rows = st.query_map([now_ns], |r| {
            let role: String = r.get(1)?;
            Ok(UserRow {
                name: r.get(0)?,
                role: role_of(&role),
                created_ns: r.get(2)?,
                password_ns: r.get(3)?,
                last_login_ns: r.get(4)?,
                sessions: r.get(5)?,
                tokens: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The role and password hash of `name`, for a login.
    pub fn credentials(&self, name: &str) -> Result<Option<(Role, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT role, password_hash FROM users WHERE name = ?1",
                [name],
                |r| Ok((role_of(&r.get::<_, String>(0)?), r.get(1)?)),
            )
            .optional()?)
    }

    pub fn role(&self, name: &str) -> Result<Option<Role>> {
        Ok(self.credentials(name)?.map(|(r, _)| r))
    }

    /// Starts a session for `user` (who just proved its password) until `expires_ns`; also
    /// drops every expired session and notes the login time.
    pub fn start_session(
        &mut self,
        user: &str,
        now_ns: i64,
        expires_ns: i64,
        address: &str,
    ) -> Result<NewSession> {
        let s = NewSession {
            id: random_secret(),
            csrf: random_secret(),
        };
        let tx = self.immediate()?;
        tx.execute("DELETE FROM sessions WHERE expires_ns <= ?1", [now_ns])?;
        let n = tx.execute(
            "UPDATE users SET last_login_ns = ?2 WHERE name = ?1",
            params![user, now_ns],
        )?;
        if n == 0 {
            // Removed between the password check and now.
            return Err(Error::NoSuchUser(user.to_owned()));
        }
        tx.execute(
            "INSERT INTO sessions(id_hash, user, created_ns, expires_ns, csrf, address) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![digest(&s.id), user, now_ns, expires_ns, s.csrf, address],
        )?;
        tx.execute(
            "DELETE FROM sessions WHERE user = ?1 AND id_hash NOT IN
             (SELECT id_hash FROM sessions WHERE user = ?1 ORDER BY created_ns DESC, rowid DESC LIMIT ?2)",
            params![user, MAX_SESSIONS_PER_USER],
        )?;
        tx.execute(
            "DELETE FROM login_attempts WHERE key = ?1",
            [account_key(user)],
        )?;
        tx.commit()?;
        Ok(s)
    }

    /// The session a cookie names, if it exists, has not expired and its user still exists.
    pub fn session(&self, id: &str, now_ns: i64) -> Result<Option<Session>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT s.user, u.role, s.csrf, s.expires_ns FROM sessions s JOIN users u ON u.name = s.user
                 WHERE s.id_hash = ?1 AND s.expires_ns > ?2",
            )?
            .query_row(params![digest(id), now_ns], |r| {
                Ok(Session {
                    user: r.get(0)?,
                    role: role_of(&r.get::<_, String>(1)?),
                    csrf: r.get(2)?,
                    expires_ns: r.get(3)?,
                })
            })
            .optional()?)
    }

    /// Ends the session a cookie names; false if there was none.
    pub fn end_session(&mut self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM sessions WHERE id_hash = ?1", [digest(id)])?
            > 0)
    }

    /// A new bearer token for `user`; returns it (shown once, never stored).
    pub fn issue_token(&mut self, user: &str, label: Option<&str>, now_ns: i64) -> Result<String> {
        let token = format!("{TOKEN_PREFIX}{}", random_secret());
        let tx = self.immediate()?;
        if tx
            .query_row("SELECT 1 FROM users WHERE name = ?1", [user], |_| Ok(()))
            .optional()?
            .is_none()
        {
            return Err(Error::NoSuchUser(user.to_owned()));
        }
        tx.execute(
            "INSERT INTO api_tokens(hash, user, created_ns, label) VALUES (?1, ?2, ?3, ?4)",
            params![digest(&token), user, now_ns, label],
        )?;
        tx.commit()?;
        Ok(token)
    }

    /// Ends every token of `user`; returns how many there were.
    pub fn revoke_tokens(&mut self, user: &str) -> Result<usize> {
        if self.role(user)?.is_none() {
            return Err(Error::NoSuchUser(user.to_owned()));
        }
        Ok(self
            .conn
            .execute("DELETE FROM api_tokens WHERE user = ?1", [user])?)
    }

    /// The user and role a bearer token belongs to.
    pub fn token(&self, token: &str) -> Result<Option<(String, Role)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT t.user, u.role FROM api_tokens t JOIN users u ON u.name = t.user WHERE t.hash = ?1",
            )?
            .query_row([digest(token)], |r| {
                Ok((r.get(0)?, role_of(&r.get::<_, String>(1)?)))
            })
            .optional()?)
    }

    /// The throttle state of `key` (`account_key`, `address_key`).
    pub fn attempts(&self, key: &str) -> Result<Option<Attempts>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT failures, last_failure_ns, locked_until_ns FROM login_attempts WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok(Attempts {
                    failures: r.get::<_, i64>(0)?.clamp(0, u32::MAX as i64) as u32,
                    last_failure_ns: r.get(1)?,
                    locked_until_ns: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Stores the throttle states after a failed login (one transaction for both keys) and
    /// forgets rows older than `forget_before_ns` that are not locked.
    pub fn record_failure(
        &mut self,
        states: &[(&str, Attempts)],
        now_ns: i64,
        forget_before_ns: i64,
    ) -> Result<()> {
        let tx = self.immediate()?;
        for (key, a) in states {
            tx.execute(
                "INSERT INTO login_attempts(key, failures, last_failure_ns, locked_until_ns) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET failures = ?2, last_failure_ns = ?3, locked_until_ns = ?4",
                params![key, a.failures, a.last_failure_ns, a.locked_until_ns],
            )?;
        }
        tx.execute(
            "DELETE FROM login_attempts WHERE last_failure_ns < ?1 AND locked_until_ns <= ?2",
            params![forget_before_ns, now_ns],
        )?;
        tx.execute(
            "DELETE FROM login_attempts WHERE key IN (SELECT key FROM login_attempts WHERE locked_until_ns <= ?1
             ORDER BY last_failure_ns DESC LIMIT -1 OFFSET ?2)",
            params![now_ns, MAX_ATTEMPT_ROWS],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Appends one row to the audit log; returns its row.
    pub fn audit(&mut self, a: &NewAudit<'_>, now_ns: i64) -> Result<i64> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit(ts, user, action, target, detail, via) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                now_ns,
                a.user,
                a.action.as_str(),
                a.target,
                a.detail,
                a.via
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The newest `limit` audit rows, newest first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT row, ts, user, action, target, detail, via FROM audit ORDER BY row DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            Ok(AuditRow {
                row: r.get(0)?,
                ts_ns: r.get(1)?,
                user: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                detail: r.get(5)?,
                via: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest `limit` events of the commands' audit log (`store::commands`), newest first,
    /// and how many commands are pending: `gkgw audit list` shows them with the rows above.
    pub fn recent_commands(&self, limit: usize) -> Result<(Vec<super::commands::Event>, u64)> {
        Ok((
            super::commands::recent_events_in(&self.conn, limit)?,
            super::commands::pending_in(&self.conn)?,
        ))
    }
}

/// Ends every session and token of `name`.
fn end_all(tx: &Connection, name: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
    tx.execute("DELETE FROM api_tokens WHERE user = ?1", [name])?;
    Ok(())
}

/// The throttle key of an account name (whether or not it exists: an attacker must not learn
/// which names do from which ones lock).
pub fn account_key(name: &str) -> String {
    format!("user:{name}")
}

/// The throttle key of a client address: IPv4 as is, IPv6 by its /64 (one host has a /64).
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("addr:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("addr:{v4}"),
            None => {
                let s = v6.segments();
                format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn users() -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().expect("tempdir");
        let u = Users::open(&dir.path().join("store.db")).expect("open");
        (dir, u)
    }

    #[test]
    fn users_sessions_and_tokens() {
        let (dir, mut u) = users();
        u.add("amina", Role::Manager, "$hash1", false, 10)
            .expect("add");
        assert!(matches!(
            u.add("amina", Role::Admin, "$x", false, 11),
            Err(Error::Exists(_))
        ));
        assert_eq!(
            u.credentials("amina").expect("read"),
            Some((Role::Manager, "$hash1".to_owned()))
        );
        let s = u
            .start_session("amina", 100 * S, 200 * S, "10.0.0.5")
            .expect("session");
        assert_eq!(s.id.len(), 43);
        let got = u.session(&s.id, 150 * S).expect("read").expect("valid");
        assert_eq!((got.user.as_str(), got.role), ("amina", Role::Manager));
        assert_eq!(got.csrf, s.csrf);
        assert_eq!(u.session(&s.id, 200 * S).expect("read"), None, "expired");
        assert_eq!(u.session("forged", 150 * S).expect("read"), None);
        // Stored hashed: the cookie's value is nowhere in the table.
        let stored: Vec<u8> = u
            .conn
            .query_row("SELECT id_hash FROM sessions", [], |r| r.get(0))
            .expect("row");
        assert_ne!(stored, s.id.as_bytes());
        let t = u.issue_token("amina", Some("ci"), 100 * S).expect("token");
        assert!(t.starts_with("gkgw_"));
        assert_eq!(
            u.token(&t).expect("read"),
            Some(("amina".to_owned(), Role::Manager))
        );
        // A new password ends the sessions, not the tokens.
        u.set_password("amina", "$hash2", 160 * S).expect("passwd");
        assert_eq!(u.session(&s.id, 170 * S).expect("read"), None);
        assert!(u.token(&t).expect("read").is_some());
        let s2 = u
            .start_session("amina", 170 * S, 900 * S, "10.0.0.5")
            .expect("session");
        let list = u.list(180 * S).expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].sessions, list[0].tokens, list[0].last_login_ns),
            (1, 1, Some(170 * S))
        );
        assert!(u.end_session(&s2.id).expect("logout"));
        assert!(!u.end_session(&s2.id).expect("again"));
        assert_eq!(u.revoke_tokens("amina").expect("revoke"), 1);
        assert_eq!(u.token(&t).expect("read"), None);
        // Removing a user ends everything it had.
        let s3 = u
            .start_session("amina", 170 * S, 900 * S, "10.0.0.5")
            .expect("session");
        let t2 = u.issue_token("amina", None, 170 * S).expect("token");
        u.remove("amina").expect("remove");
        assert_eq!(u.session(&s3.id, 180 * S).expect("read"), None);
        assert_eq!(u.token(&t2).expect("read"), None);
        assert!(matches!(u.remove("amina"), Err(Error::NoSuchUser(_))));
        assert!(matches!(
            u.issue_token("amina", None, 1),
            Err(Error::NoSuchUser(_))
        ));
        // At most MAX_SESSIONS_PER_USER sessions a user: the oldest ends.
        u.add("zawadi", Role::Viewer, "$h", false, 1).expect("add");
        let first = u.start_session("zawadi", 1, 900 * S, "x").expect("login");
        for i in 0..MAX_SESSIONS_PER_USER {
            u.start_session("zawadi", 2 + i, 900 * S, "x")
                .expect("login");
        }
        assert_eq!(u.session(&first.id, 100).expect("read"), None);
        assert_eq!(
            u.list(100).expect("list")[0].sessions,
            MAX_SESSIONS_PER_USER
        );
        // A second connection (the CLI while the gateway runs) sees the same users.
        u.add("baraka", Role::Viewer, "$h", false, 1).expect("add");
        let other = Users::open(&dir.path().join("store.db")).expect("open");
        assert_eq!(other.role("baraka").expect("read"), Some(Role::Viewer));
    }

    #[test]
    fn the_audit_log_is_append_only_and_throttle_rows_are_bounded() {
        let (_dir, mut u) = users();
        for (i, action) in [Action::Login, Action::Alarm].into_iter().enumerate() {
            u.audit(
                &NewAudit {
                    user: Some("amina"),
                    action,
                    target: Some("gas_leak:kitchen"),
                    detail: None,
                    via: "web 10.0.0.5",
                },
                i as i64,
            )
            .expect("audit");
        }
        let rows = u.recent_audit(10).expect("read");
        assert_eq!(
            rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            ["alarm", "login"]
        );
        assert!(u.conn.execute("UPDATE audit SET user = 'x'", []).is_err());
        assert!(u.conn.execute("DELETE FROM audit", []).is_err());

        let a = Attempts {
            failures: 1,
            last_failure_ns: 5,
            locked_until_ns: 0,
        };
        u.record_failure(&[("user:x", a), ("addr:10.0.0.5", a)], 5, 0)
            .expect("record");
        assert_eq!(u.attempts("user:x").expect("read"), Some(a));
        // Forgotten once older than the window and not locked.
        u.record_failure(
            &[(
                "user:y",
                Attempts {
                    last_failure_ns: 50,
                    ..a
                },
            )],
            50,
            10,
        )
        .expect("record");
        assert_eq!(u.attempts("user:x").expect("read"), None);
        assert!(u.attempts("user:y").expect("read").is_some());
        // A successful login clears the account's row, not the address's.
        u.add("y", Role::Viewer, "$h", false, 1).expect("add");
        u.record_failure(
            &[(
                "addr:10.0.0.9",
                Attempts {
                    last_failure_ns: 50,
                    ..a
                },
            )],
            50,
            10,
        )
        .expect("record");
        u.start_session("y", 60, 100, "10.0.0.9").expect("login");
        assert_eq!(u.attempts("user:y").expect("read"), None);
        assert!(u.attempts("addr:10.0.0.9").expect("read").is_some());
    }

    #[test]
    fn address_keys() {
        let k = |s: &str| address_key(s.parse().expect("ip"));
        assert_eq!(k("192.168.1.20"), "addr:192.168.1.20");
        assert_eq!(k("::ffff:192.168.1.20"), "addr:192.168.1.20");
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "addr:2001:db8:1:2::/64");
        assert_eq!(k("2001:db8:1:2:bbbb::9"), k("2001:db8:1:2:aaaa::1"));
    }
}
