//! The login gate: every CONNECT with a user name passes through here before argon2 runs.
//!
//! An attacker on the site Wi-Fi must not be able to exhaust memory or CPU with wrong
//! passwords, nor learn which meter ids exist:
//! - argon2 checks (each ~7 MiB and ~30 ms) run on `concurrency` threads of their own, fed by
//!   a bounded queue: never more at once, whatever happens to the connections that asked (a
//!   connection dropped while waiting leaves its check to be skipped, not run unbounded);
//! - failures are counted per source address and per user name ([`Throttle`]); past the limit
//!   an attempt is refused after a fixed delay without hashing;
//! - an unknown user name is checked against a dummy hash, so it costs what a known one costs;
//! - a meter that logged in with the same password before (since start or the last reload) is
//!   let in from the cache, so a throttled id never locks out the real meter once it is known.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::acl::Identity;
use super::metrics::{AuthResult, Metrics};
use crate::credentials::{Account, Verifier};

/// Failure counting for one key (a source address or a user name).
#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
    /// How many times this key was blocked in a row: each block lasts twice the last.
    blocks: u32,
}

/// The throttle's limits: `max_failures` within `window` blocks a key for `block`, doubling
/// with every repeated block up to `max_block`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_failures: u32,
    pub window: Duration,
    pub block: Duration,
    pub max_block: Duration,
}

pub const PER_ADDRESS: Limits = Limits {
    max_failures: 10,
    window: Duration::from_secs(60),
    block: Duration::from_secs(30),
    max_block: Duration::from_secs(900),
};
pub const PER_USER: Limits = Limits {
    max_failures: 5,
    window: Duration::from_secs(60),
    block: Duration::from_secs(30),
    max_block: Duration::from_secs(300),
};

/// Entries kept per table before expired ones are swept (bounds memory under a flood of
/// random user names).
const MAX_KEYS: usize = 4096;

/// Failure counts per key. No clock inside: every call gets `now`.
#[derive(Debug)]
pub struct Table<K> {
    limits: Limits,
    keys: HashMap<K, Strikes>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    pub fn new(limits: Limits) -> Table<K> {
        Table {
            limits,
            keys: HashMap::new(),
        }
    }

    pub fn blocked(&self, key: &K, now: Instant) -> bool {
        self.keys
            .get(key)
            .and_then(|s| s.blocked_until)
            .is_some_and(|until| now < until)
    }

    pub fn failed(&mut self, key: &K, now: Instant) {
        if self.keys.len() >= MAX_KEYS && !self.keys.contains_key(key) {
            let l = self.limits;
            self.keys.retain(|_, s| {
                now.duration_since(s.window_start) < l.window
                    || s.blocked_until.is_some_and(|u| now < u)
            });
            if self.keys.len() >= MAX_KEYS {
                // Still full of live entries: forget the lot rather than grow without bound.
                self.keys.clear();
            }
        }
        let s = self.keys.entry(key.clone()).or_insert(Strikes {
            failures: 0,
            window_start: now,
            blocked_until: None,
            blocks: 0,
        });
        if now.duration_since(s.window_start) >= self.limits.window {
            s.failures = 0;
            s.window_start = now;
        }
        s.failures += 1;
        if s.failures >= self.limits.max_failures {
            let block = self
                .limits
                .block
                .saturating_mul(1 << s.blocks.min(10))
                .min(self.limits.max_block);
            s.blocked_until = Some(now + block);
            s.blocks += 1;
            s.failures = 0;
            s.window_start = now;
        }
    }

    pub fn succeeded(&mut self, key: &K) {
        self.keys.remove(key);
    }
}

/// Per-address and per-user failure tables.
#[derive(Debug)]
pub struct Throttle {
    pub addresses: Table<IpAddr>,
    pub users: Table<String>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            addresses: Table::new(PER_ADDRESS),
            users: Table::new(PER_USER),
        }
    }
}

impl Throttle {
    pub fn allows(&self, ip: IpAddr, user: &str, now: Instant) -> bool {
        !self.addresses.blocked(&ip, now) && !self.users.blocked(&user.to_owned(), now)
    }

    pub fn failed(&mut self, ip: IpAddr, user: &str, now: Instant) {
        self.addresses.failed(&ip, now);
        self.users.failed(&user.to_owned(), now);
    }

    pub fn succeeded(&mut self, ip: IpAddr, user: &str) {
        self.addresses.succeeded(&ip);
        self.users.succeeded(&user.to_owned());
    }
}

/// What a CONNECT's credentials come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Identity),
    /// CONNACK return code 4.
    BadCredentials,
    /// CONNACK return code 5 (anonymous where anonymous is not allowed).
    NotAuthorized,
}

/// How long a throttled attempt waits before it is refused: about what a real check costs,
/// so a throttled refusal looks like any other.
const THROTTLED_DELAY: Duration = Duration::from_millis(40);

/// One password check for the hashing threads.
struct Job {
    user: String,
    password: String,
    reply: tokio::sync::oneshot::Sender<Option<Account>>,
}

/// Checks waiting for a hashing thread; beyond it, logins wait in their connection's task.
const QUEUE: usize = 16;

pub struct Gate {
    verifier: Verifier,
    jobs: tokio::sync::mpsc::Sender<Job>,
    throttle: Mutex<Throttle>,
    allow_anonymous: bool,
    metrics: Arc<Metrics>,
}

/// A hashing thread: one long-lived thread keeps argon2's big buffer in one place instead of
/// scattering it over the blocking pool's threads.
fn hash_worker(
    jobs: Arc<Mutex<tokio::sync::mpsc::Receiver<Job>>>,
    verifier: Verifier,
    metrics: Arc<Metrics>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => None,
        };
        let Some(job) = job else { return };
        if job.reply.is_closed() {
            continue; // the connection is gone: nobody waits for this answer
        }
        metrics.auth_checks_running.inc();
        let found = verifier.verify_blocking(&job.user, &job.password);
        metrics.auth_checks_running.dec();
        let _ = job.reply.send(found);
    }
}

impl Gate {
    pub fn new(
        verifier: Verifier,
        concurrency: usize,
        allow_anonymous: bool,
        metrics: Arc<Metrics>,
    ) -> Gate {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..concurrency.max(1) {
            let (rx, v, m) = (rx.clone(), verifier.clone(), metrics.clone());
            if let Err(e) = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || hash_worker(rx, v, m))
            {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        Gate {
            verifier,
            jobs: tx,
            throttle: Mutex::new(Throttle::default()),
            allow_anonymous,
            metrics,
        }
    }

    /// Forgets every failure count: after the accounts file changed, a meter that was refused
    /// before it was added must not stay throttled.
    pub fn forgive(&self) {
        if let Ok(mut t) = self.throttle.lock() {
            *t = Throttle::default();
        }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn count(&self, r: AuthResult) {
        self.metrics.auth.inc(r);
    }

    pub async fn login(&self, login: Option<(String, String)>, ip: IpAddr) -> Verdict {
        let Some((user, password)) = login else {
            return if self.allow_anonymous {
                self.count(AuthResult::Anonymous);
                Verdict::Accepted(Identity::Anonymous)
            } else {
                self.count(AuthResult::AnonymousRefused);
                Verdict::NotAuthorized
            };
        };
        if let Some(a) = self.verifier.cached(&user, &password) {
            self.count(AuthResult::Ok);
            return Verdict::Accepted(identity(a));
        }
        let allowed = self
            .throttle
            .lock()
            .map(|t| t.allows(ip, &user, Instant::now()))
            .unwrap_or(true);
        if !allowed {
            tokio::time::sleep(THROTTLED_DELAY).await;
            self.count(AuthResult::Throttled);
            return Verdict::BadCredentials;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            user: user.clone(),
            password,
            reply,
        };
        if self.jobs.send(job).await.is_err() {
            return Verdict::BadCredentials;
        }
        let found = answer.await.ok().flatten();
        if let Ok(mut t) = self.throttle.lock() {
            match found {
                Some(_) => t.succeeded(ip, &user),
                None => t.failed(ip, &user, Instant::now()),
            }
        }
        match found {
            Some(a) => {
                self.count(AuthResult::Ok);
                Verdict::Accepted(identity(a))
            }
            None => {
                self.count(AuthResult::Rejected);
                Verdict::BadCredentials
            }
        }
    }
}

fn identity(a: Account) -> Identity {
    match a {
        Account::Meter(id) => Identity::Meter(id),
        Account::Integration(id) => Identity::Integration(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_a_key_for_a_doubling_time() {
        let t0 = Instant::now();
        let mut t = Table::new(Limits {
            max_failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(30),
            max_block: Duration::from_secs(100),
        });
        let k = "GM-1".to_owned();
        t.failed(&k, t0);
        t.failed(&k, t0);
        assert!(!t.blocked(&k, t0), "two failures are not enough");
        t.failed(&k, t0);
        assert!(t.blocked(&k, t0));
        assert!(t.blocked(&k, t0 + Duration::from_secs(29)));
        assert!(!t.blocked(&k, t0 + Duration::from_secs(30)));
        let t1 = t0 + Duration::from_secs(31);
        for _ in 0..3 {
            t.failed(&k, t1);
        }
        assert!(
            t.blocked(&k, t1 + Duration::from_secs(59)),
            "second block: 60 s"
        );
        let t2 = t1 + Duration::from_secs(61);
        for _ in 0..3 {
            t.failed(&k, t2);
        }
        assert!(
            t.blocked(&k, t2 + Duration::from_secs(99)),
            "capped at 100 s"
        );
        assert!(!t.blocked(&k, t2 + Duration::from_secs(100)));
        t.succeeded(&k);
        assert!(!t.blocked(&k, t2));
    }

    #[test]
    fn failures_spread_beyond_the_window_never_block() {
        let t0 = Instant::now();
        let mut t = Table::new(PER_USER);
        let k = "GM-1".to_owned();
        for i in 0..20 {
            t.failed(&k, t0 + Duration::from_secs(61 * i));
            assert!(!t.blocked(&k, t0 + Duration::from_secs(61 * i)));
        }
    }

    #[test]
    fn a_flood_of_user_names_keeps_the_table_bounded() {
        let t0 = Instant::now();
        let mut t = Table::new(PER_USER);
        for i in 0..(3 * MAX_KEYS) {
            t.failed(&format!("u{i}"), t0);
        }
        assert!(t.keys.len() <= MAX_KEYS);
    }

    #[test]
    fn the_throttle_blocks_by_address_or_by_user() {
        let t0 = Instant::now();
        let mut th = Throttle::default();
        let a: IpAddr = "10.0.0.5".parse().expect("ip");
        let b: IpAddr = "10.0.0.6".parse().expect("ip");
        for i in 0..PER_ADDRESS.max_failures {
            th.failed(a, &format!("random-{i}"), t0);
        }
        assert!(!th.allows(a, "GM-0001", t0), "address blocked");
        assert!(th.allows(b, "GM-0001", t0), "another address is not");
        for _ in 0..PER_USER.max_failures {
            th.failed(b, "GM-0002", t0);
        }
        assert!(!th.allows("10.0.0.7".parse().expect("ip"), "GM-0002", t0));
    }
}
