//! Dashboard accounts, the pure part: the roles and what each may do, which names and
//! passwords are acceptable, and the login throttle's arithmetic. The tables are in
//! `store/users.rs`, the HTTP side (sessions, CSRF, the route table) in `web/auth.rs`, the
//! `gkgw user` commands in `web/users_cli.rs`.
//!
//! *Invariant: no I/O, no clock, no SQL (`grep -n 'rusqlite\|tokio\|std::fs\|SystemTime'
//! gateway/src/users.rs` finds nothing); time comes in as Unix nanoseconds.*

/// What a person may do. Ordered: each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads every page and every `GET /api/…`.
    Viewer,
    /// Also writes the logbook and acknowledges, shelves, resets and silences alarms.
    Manager,
    /// Also manages users, reads the audit log and submits platform commands.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Manager, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a name, role or password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("unknown role {0:?}: viewer, manager or admin")]
    Role(String),
    #[error("user name {0:?}: 1 to 32 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")]
    Name(String),
    #[error("the password is too short: at least {MIN_PASSWORD} characters")]
    ShortPassword,
    #[error("the password is too long: at most {MAX_PASSWORD} bytes")]
    LongPassword,
}

pub const MIN_PASSWORD: usize = 8;
/// Argon2 takes any length, but a megabyte "password" in a login form is an attack on the CPU.
pub const MAX_PASSWORD: usize = 1024;

pub fn parse_role(s: &str) -> Result<Role, Invalid> {
    Role::parse(s).ok_or_else(|| Invalid::Role(s.to_owned()))
}

/// A user name: lowercase, so `Amina` and `amina` cannot be two accounts; short and plain, so it
/// is safe in a log line, a table and a URL path.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Invalid::Name(name.to_owned()))
    }
}

/// Length only (characters, not bytes): a kitchen manager's passphrase in Kiswahili is as good
/// as any, and composition rules make people write passwords down.
pub fn check_password(password: &str) -> Result<(), Invalid> {
    if password.len() > MAX_PASSWORD {
        Err(Invalid::LongPassword)
    } else if password.chars().count() < MIN_PASSWORD {
        Err(Invalid::ShortPassword)
    } else {
        Ok(())
    }
}

/// Failed logins of one key (an account name, or a client address) as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempts {
    pub failures: u32,
    pub last_failure_ns: i64,
    /// 0: not locked.
    pub locked_until_ns: i64,
}

/// The login throttle: the `lock_after`-th failure in a row locks the key for `lockout_ns`, and
/// each further failure for twice as long as the one before, at most `max_lockout_ns`. A key's failures
/// are forgotten `forget_ns` after its last one, and an account's at a successful login. An
/// attempt while locked is refused without checking the password, and does not count (the real
/// user waiting out a lock does not extend it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub lock_after: u32,
    pub lockout_ns: i64,
    pub max_lockout_ns: i64,
    pub forget_ns: i64,
}

impl Throttle {
    /// `Err(ns)`: locked for `ns` more.
    pub fn check(&self, a: Option<Attempts>, now_ns: i64) -> Result<(), i64> {
        match a {
            Some(a) if a.locked_until_ns > now_ns => Err(a.locked_until_ns - now_ns),
            _ => Ok(()),
        }
    }

    /// The key's state after one more failure at `now_ns`.
    pub fn failed(&self, a: Option<Attempts>, now_ns: i64) -> Attempts {
        let prior = a
            .filter(|a| now_ns.saturating_sub(a.last_failure_ns) < self.forget_ns)
            .map_or(0, |a| a.failures);
        let failures = prior.saturating_add(1);
        let lock_after = self.lock_after.max(1);
        let locked_until_ns = if failures >= lock_after {
            let doublings = (failures - lock_after).min(40);
            let lock = self
                .lockout_ns
                .saturating_mul(1i64 << doublings)
                .min(self.max_lockout_ns);
            now_ns.saturating_add(lock)
        } else {
            0
        };
        Attempts {
            failures,
            last_failure_ns: now_ns,
            locked_until_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn names_roles_and_passwords() {
        for ok in ["amina", "baraka.o", "tech-2", "a", "0ops"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Amina",
            "-x",
            ".x",
            "a b",
            "amina\n",
            &"x".repeat(33),
            "ümit",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_role("manager"), Ok(Role::Manager));
        assert_eq!(
            parse_role("root").map_err(|e| e.to_string()),
            Err("unknown role \"root\": viewer, manager or admin".to_owned())
        );
        assert!(Role::Viewer < Role::Manager && Role::Manager < Role::Admin);
        assert_eq!(check_password("1234567"), Err(Invalid::ShortPassword));
        assert_eq!(check_password("12345678"), Ok(()));
        // Eight characters, more bytes: characters count.
        assert_eq!(check_password("ñandú.ñu"), Ok(()));
        assert_eq!(
            check_password(&"x".repeat(1025)),
            Err(Invalid::LongPassword)
        );
    }

    /// Runs `failures` (times in seconds) through the throttle and checks the lock after each.
    fn check(t: &Throttle, failures: &[i64], expected_lock_s: &[i64]) {
        let mut a: Option<Attempts> = None;
        let mut got = Vec::new();
        for &at in failures {
            let next = t.failed(a, at * S);
            got.push(if next.locked_until_ns == 0 {
                0
            } else {
                (next.locked_until_ns - at * S) / S
            });
            a = Some(next);
        }
        assert_eq!(got, expected_lock_s, "failures at {failures:?}");
    }

    #[test]
    fn the_throttle_locks_at_the_nth_failure_and_doubles() {
        let t = Throttle {
            lock_after: 5,
            lockout_ns: 30 * S,
            max_lockout_ns: 3600 * S,
            forget_ns: 86_400 * S,
        };
        check(&t, &[0, 1, 2, 3], &[0, 0, 0, 0]);
        check(&t, &[0, 1, 2, 3, 4], &[0, 0, 0, 0, 30]);
        check(&t, &[0, 1, 2, 3, 4, 40, 100], &[0, 0, 0, 0, 30, 60, 120]);
        // Capped.
        let many: Vec<i64> = (0..20).map(|i| i * 4000).collect();
        assert_eq!(t.failed(None, 0).failures, 1, "a first failure counts one");
        check(
            &t,
            &many,
            &[
                0, 0, 0, 0, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600, 3600,
                3600, 3600, 3600,
            ],
        );
        // Forgotten a day after the last failure.
        check(&t, &[0, 1, 2, 3, 86_404], &[0, 0, 0, 0, 0]);
        // While locked: refused with the time left; afterwards allowed.
        let a = (0..5).fold(None, |a, i| Some(t.failed(a, i * S)));
        assert_eq!(t.check(a, 10 * S), Err(24 * S));
        assert_eq!(t.check(a, 34 * S), Ok(()));
        assert_eq!(t.check(None, 0), Ok(()));
        // lock_after = 1: the first failure locks (0 is taken as 1).
        let one = Throttle { lock_after: 1, ..t };
        check(&one, &[0, 100], &[30, 60]);
        check(&Throttle { lock_after: 0, ..t }, &[0, 100], &[30, 60]);
    }
}
