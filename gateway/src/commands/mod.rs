//! Signed commands from the central platform to the field meters (issue 12, item 4).
//!
//! ```text
//! uplink (HTTPS response, MQTT gkgw/{site}/{gw}/cmd), POST /api/commands
//!   └─ Handle::submit(jws, via): jws::verify (EdDSA, the platform key) → payload::parse →
//!      check_time → a meter account? ── refused: audit row, counted, answered; never relayed
//!        │ requests: mpsc REQUESTS_CAPACITY (64); full → the caller waits (a transport
//!        ▼ holds its next batch, the web request waits)
//!      relay task (relay.rs): replay check + store in ONE transaction (store/commands.rs) →
//!        broker::outbox::cmd_topic → Hub::publish_to_meter, resent every commands.retry_s
//!        until the meter's meters/{id}/cmd/ack or exp
//!        ▲ acks: mpsc ACKS_CAPACITY (1 024) from sources::mqtt::Ingest; full → dropped,
//!        │ counted (gkgw_command_acks_ignored_total): the command is resent, the meter acks again
//! ```
//!
//! Outcomes: `accepted` (stored, not yet at a meter), `delivered` (handed to the meter's
//! connected session), `applied` / `rejected` (the meter's answer, with its detail and credit),
//! `expired` (no answer before `exp`), `refused` (by the gateway, with a [`Reason`]). Each is an
//! append-only row of the audit log, which the uplink reads with
//! [`store::commands::Commands::outcomes_after`].
//!
//! Meters must treat a command id they have seen as done and answer it again with the same
//! result: a command is resent until its answer arrives (at-least-once to the meter).

pub mod dev;
pub mod jws;
pub mod payload;
pub mod relay;

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::credentials::Verifier;
use crate::metrics::{CounterFamily, Gauge, LabelValue, Registry};
use crate::store;

pub use jws::PublicKey;
pub use payload::{Command, Kind};

/// Submissions waiting for the relay task.
pub const REQUESTS_CAPACITY: usize = 64;
/// Meter answers waiting for the relay task.
pub const ACKS_CAPACITY: usize = 1024;

/// Why the gateway refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a JWS, or `alg: none`.
    Unsigned,
    BadSignature,
    /// A signed JWS with another algorithm than EdDSA.
    WrongAlg,
    Expired,
    NotYetValid,
    /// The command id was seen before.
    Replayed,
    Malformed,
    /// Not a meter account of the broker.
    UnknownMeter,
    /// `commands.platform_key_file` is not set: commands are disabled.
    NoPlatformKey,
    /// The store did not take it (disk full, I/O error) or the gateway is stopping; the
    /// platform may send it again (its id was not recorded as seen).
    Unavailable,
}

impl LabelValue for Reason {
    const ALL: &'static [Reason] = &[
        Reason::Unsigned,
        Reason::BadSignature,
        Reason::WrongAlg,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Replayed,
        Reason::Malformed,
        Reason::UnknownMeter,
        Reason::NoPlatformKey,
        Reason::Unavailable,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            Reason::Unsigned => "unsigned",
            Reason::BadSignature => "bad_signature",
            Reason::WrongAlg => "wrong_alg",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Replayed => "replayed",
            Reason::Malformed => "malformed",
            Reason::UnknownMeter => "unknown_meter",
            Reason::NoPlatformKey => "no_platform_key",
            Reason::Unavailable => "unavailable",
        }
    }
}

impl Reason {
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

/// What happened to a command (`gkgw_commands_total{outcome}`, the audit log's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Delivered,
    Applied,
    Rejected,
    Expired,
    Refused,
}

impl LabelValue for Outcome {
    const ALL: &'static [Outcome] = &[
        Outcome::Accepted,
        Outcome::Delivered,
        Outcome::Applied,
        Outcome::Rejected,
        Outcome::Expired,
        Outcome::Refused,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Delivered => "delivered",
            Outcome::Applied => "applied",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
            Outcome::Refused => "refused",
        }
    }
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.iter().copied().find(|o| o.as_str() == s)
    }

    /// Nothing more happens to a command after this.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Outcome::Applied | Outcome::Rejected | Outcome::Expired | Outcome::Refused
        )
    }
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The command id, when the payload could be read.
    pub id: Option<String>,
    /// `accepted` or `delivered` (it goes on), or `refused` with `reason`.
    pub outcome: Outcome,
    pub reason: Option<Reason>,
}

impl Submitted {
    fn refused(id: Option<String>, reason: Reason) -> Submitted {
        Submitted {
            id,
            outcome: Outcome::Refused,
            reason: Some(reason),
        }
    }
}

pub struct Metrics {
    pub outcomes: Arc<CounterFamily<Outcome>>,
    pub refused: Arc<CounterFamily<Reason>>,
    pub pending: Arc<Gauge>,
    pub acks_ignored: Arc<crate::metrics::Counter>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            outcomes: r.counter_family(
                "gkgw_commands_total",
                "Platform commands by outcome (accepted, delivered, applied, rejected by the meter, expired, refused by the gateway).",
                "outcome",
            ),
            refused: r.counter_family(
                "gkgw_commands_refused_total",
                "Platform commands the gateway refused, by reason; none of them reached a meter.",
                "reason",
            ),
            pending: r.gauge(
                "gkgw_commands_pending",
                "Accepted commands without a final outcome (applied, rejected or expired) yet.",
            ),
            acks_ignored: r.counter(
                "gkgw_command_acks_ignored_total",
                "Meter answers on meters/{id}/cmd/ack that were malformed, for no open command of that meter, or dropped (relay queue full).",
            ),
        }
    }
}

/// The newest outcome, for `/api/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Last {
    pub id: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    pub ts_ns: i64,
}

/// Settings from `[commands]`, with the key read.
#[derive(Clone)]
pub struct Settings {
    /// None: commands are disabled, every one refused as `no_platform_key`.
    pub key: Option<PublicKey>,
    pub retry: std::time::Duration,
    pub max_clock_skew_s: i64,
}

struct Inner {
    settings: Settings,
    clock: Arc<Clock>,
    meters: Verifier,
    requests: mpsc::Sender<relay::Request>,
    store: store::Handle<store::commands::Commands>,
    metrics: Arc<Metrics>,
    last: Mutex<Option<Last>>,
    pending: AtomicI64,
}

/// The entry point of commands: cheap to clone; the uplink's transports and the web call
/// [`Handle::submit`].
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

/// What `/api/status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub enabled: bool,
    pub pending: i64,
    pub last: Option<Last>,
}

impl Handle {
    /// Checks a command and, if it passes, hands it to the relay; answers once it is stored
    /// (and handed to the meter's session if it is connected) or refused.
    pub async fn submit(&self, jws: String, via: &'static str) -> Submitted {
        let i = &self.inner;
        let now = i.clock.now();
        let checked = match &i.settings.key {
            None => Err((None, Reason::NoPlatformKey)),
            Some(key) => self.check(&jws, key, now),
        };
        match checked {
            Err((cmd, reason)) => self.refuse(cmd.as_ref(), reason, via).await,
            Ok(cmd) => {
                let (tx, rx) = oneshot::channel();
                let id = cmd.id.clone();
                let sent = i
                    .requests
                    .send(relay::Request {
                        command: cmd,
                        jws,
                        via,
                        reply: tx,
                    })
                    .await;
                match (sent, rx.await) {
                    (Ok(()), Ok(s)) => s,
                    _ => Submitted::refused(Some(id), Reason::Unavailable),
                }
            }
        }
    }

    fn check(
        &self,
        jws: &str,
        key: &PublicKey,
        now: crate::clock::Stamp,
    ) -> Result<Command, (Option<Command>, Reason)> {
        let v = jws::verify(jws, key).map_err(|r| (None, r))?;
        let cmd = payload::parse(&v.payload).map_err(|r| (None, r))?;
        let now_s = now.ts_ns.div_euclid(1_000_000_000);
        if let Err(r) = payload::check_time(&cmd, now_s, self.inner.settings.max_clock_skew_s) {
            return Err((Some(cmd), r));
        }
        if !self.inner.meters.is_meter(&cmd.meter) {
            return Err((Some(cmd), Reason::UnknownMeter));
        }
        Ok(cmd)
    }

    async fn refuse(&self, cmd: Option<&Command>, reason: Reason, via: &'static str) -> Submitted {
        let id = cmd.map(|c| c.id.clone());
        let (meter, kind) = (cmd.map(|c| c.meter.clone()), cmd.map(|c| c.kind.as_str()));
        tracing::warn!(reason = reason.as_str(), id = ?id, meter = ?meter, via, "platform command refused");
        let ts = self.inner.clock.now().ts_ns;
        let (id2, via2) = (id.clone(), via);
        let stored = self
            .inner
            .store
            .run(move |s| {
                s.record(
                    Outcome::Refused,
                    &store::commands::NewEvent {
                        id: id2.as_deref(),
                        meter: meter.as_deref(),
                        kind,
                        reason: Some(reason),
                        via: via2,
                        ..Default::default()
                    },
                    ts,
                )
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot log a refused command in the store");
        }
        self.note(id.clone(), Outcome::Refused, Some(reason), ts);
        Submitted::refused(id, reason)
    }

    /// Counts an outcome and keeps it as the newest.
    pub(crate) fn note(
        &self,
        id: Option<String>,
        outcome: Outcome,
        reason: Option<Reason>,
        ts_ns: i64,
    ) {
        self.inner.metrics.outcomes.inc(outcome);
        if let Some(r) = reason {
            self.inner.metrics.refused.inc(r);
        }
        if let Ok(mut l) = self.inner.last.lock() {
            *l = Some(Last {
                id,
                outcome,
                reason,
                ts_ns,
            });
        }
    }

    pub(crate) fn set_pending(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.inner.pending.store(n, Relaxed);
        self.inner.metrics.pending.set(n);
    }

    /// Enabled, pending count, newest outcome.
    pub fn status(&self) -> Status {
        Status {
            enabled: self.inner.settings.key.is_some(),
            pending: self.inner.pending.load(Relaxed),
            last: self.inner.last.lock().ok().and_then(|l| l.clone()),
        }
    }

    /// The audit log's store connection (the web's list, the uplink's `outcomes_after`).
    pub fn store(&self) -> &store::Handle<store::commands::Commands> {
        &self.inner.store
    }

    /// How many accepted commands have no final outcome (the relay's count, kept current).
    pub fn pending(&self) -> i64 {
        self.inner.pending.load(Relaxed)
    }
}

/// Where `sources::mqtt::Ingest` hands the meters' `meters/{id}/cmd/ack` messages.
#[derive(Clone)]
pub struct AckSender {
    tx: mpsc::Sender<relay::Ack>,
    metrics: Arc<Metrics>,
}

impl crate::sources::mqtt::CommandAcks for AckSender {
    fn ack(&self, meter: &str, payload: Bytes) {
        if self
            .tx
            .try_send(relay::Ack {
                meter: meter.to_owned(),
                payload,
            })
            .is_err()
        {
            self.metrics.acks_ignored.inc();
        }
    }
}

/// Everything [`relay::run`] needs, built with its [`Handle`] and [`AckSender`].
pub struct Parts {
    pub handle: Handle,
    pub acks: AckSender,
    pub relay: relay::Relay,
}

/// Builds the handle, the ack sender and the relay (spawn `relay.run(cancel)`); loads the
/// open commands from the store so they are resent.
pub fn build(
    settings: Settings,
    clock: Arc<Clock>,
    meters: Verifier,
    store: store::Handle<store::commands::Commands>,
    relay_store: store::commands::Commands,
    hub: Arc<crate::broker::Hub>,
    metrics: Arc<Metrics>,
) -> store::Result<Parts> {
    let (req_tx, req_rx) = mpsc::channel(REQUESTS_CAPACITY);
    let (ack_tx, ack_rx) = mpsc::channel(ACKS_CAPACITY);
    let retry = settings.retry;
    let handle = Handle {
        inner: Arc::new(Inner {
            settings,
            clock: clock.clone(),
            meters,
            requests: req_tx,
            store,
            metrics: metrics.clone(),
            last: Mutex::new(None),
            pending: AtomicI64::new(0),
        }),
    };
    let relay = relay::Relay::new(
        handle.clone(),
        relay_store,
        hub,
        clock,
        retry,
        req_rx,
        ack_rx,
    )?;
    Ok(Parts {
        acks: AckSender {
            tx: ack_tx,
            metrics,
        },
        handle,
        relay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::hub::{Link, Outbound, QUEUE};
    use crate::sources::mqtt::CommandAcks as _;

    const NOW_S: i64 = 1_796_184_000;

    struct Rig {
        handle: Handle,
        acks: AckSender,
        hub: Arc<crate::broker::Hub>,
        time: Arc<crate::clock::FakeTime>,
        cancel: tokio_util::sync::CancellationToken,
        key: ed25519_dalek::SigningKey,
        _dir: tempfile::TempDir,
        db: std::path::PathBuf,
    }

    fn rig_on(dir: tempfile::TempDir, with_key: bool) -> Rig {
        let db = dir.path().join("store.db");
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let time = crate::clock::FakeTime::new(NOW_S * 1_000_000_000, true);
        let clock = Clock::new(time.clone());
        let mut file = crate::credentials::CredentialsFile::default();
        file.meters.insert(
            "GM-0001".into(),
            crate::credentials::MeterEntry {
                password_hash: String::new(),
            },
        );
        let hub = Arc::new(crate::broker::Hub::new(Arc::default()));
        let metrics = Arc::new(Metrics::register(&mut Registry::default()));
        let parts = build(
            Settings {
                key: with_key.then(|| PublicKey::parse(&jws::public_pem(&key)).expect("key")),
                retry: std::time::Duration::from_millis(100),
                max_clock_skew_s: 300,
            },
            clock,
            Verifier::new(file),
            store::Handle::new(store::commands::Commands::open(&db).expect("store")),
            store::commands::Commands::open(&db).expect("store"),
            hub.clone(),
            metrics,
        )
        .expect("built");
        let cancel = tokio_util::sync::CancellationToken::new();
        tokio::spawn(parts.relay.run(cancel.clone()));
        Rig {
            handle: parts.handle,
            acks: parts.acks,
            hub,
            time,
            cancel,
            key,
            _dir: dir,
            db,
        }
    }

    impl Rig {
        fn sign(&self, id: &str, meter: &str, iat: i64, exp: i64) -> String {
            let p = serde_json::json!({"id": id, "meter": meter, "kind": "top_up",
                "args": {"amount": 1.5, "unit": "kg"}, "iat": iat, "exp": exp});
            jws::sign(&self.key, None, p.to_string().as_bytes())
        }

        async fn submit(&self, jws: String) -> (Outcome, Option<Reason>) {
            let s = self.handle.submit(jws, "test").await;
            (s.outcome, s.reason)
        }

        fn events(&self) -> Vec<(Option<String>, Outcome, Option<Reason>)> {
            let c = store::commands::Commands::open(&self.db).expect("open");
            c.outcomes_after(0, 100)
                .expect("events")
                .into_iter()
                .map(|e| (e.id, e.outcome, e.reason))
                .collect()
        }
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_command_is_checked_stored_relayed_and_answered_once() {
        let r = rig_on(tempfile::tempdir().expect("tempdir"), true);
        let meter: Arc<str> = Arc::from("GM-0001");
        let (tx, mut rx) = mpsc::channel(QUEUE);
        r.hub.attach_meter(&meter, Link { id: 1, tx }, true);
        r.hub
            .set_filters(Some(&meter), 1, &["meters/GM-0001/cmd".into()], true);
        let good = r.sign("c-1", "GM-0001", NOW_S, NOW_S + 60);
        assert_eq!(r.submit(good.clone()).await, (Outcome::Delivered, None));
        let Some(Outbound::Publish { topic, payload }) = rx.recv().await else {
            panic!("no command published");
        };
        assert_eq!(&*topic, "meters/GM-0001/cmd");
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(v["id"], "c-1");
        assert_eq!(v["args"]["amount"], 1.5);
        assert_eq!(r.handle.pending(), 1);
        // Refusals: none of them is published.
        let refused = [
            (good.clone(), Reason::Replayed),
            (
                r.sign("c-2", "GM-0404", NOW_S, NOW_S + 60),
                Reason::UnknownMeter,
            ),
            (
                r.sign("c-3", "GM-0001", NOW_S - 120, NOW_S - 60),
                Reason::Expired,
            ),
            (
                r.sign("c-4", "GM-0001", NOW_S + 301, NOW_S + 900),
                Reason::NotYetValid,
            ),
            ("a.b".to_owned(), Reason::Unsigned),
        ];
        for (jws, reason) in refused {
            assert_eq!(r.submit(jws).await, (Outcome::Refused, Some(reason)));
        }
        // An answer from another meter, or for another id, changes nothing.
        r.acks.ack(
            "GM-0002",
            Bytes::from_static(br#"{"id":"c-1","result":"applied"}"#),
        );
        r.acks.ack(
            "GM-0001",
            Bytes::from_static(br#"{"id":"c-9","result":"applied"}"#),
        );
        r.acks.ack("GM-0001", Bytes::from_static(b"not json"));
        // Resent until answered: only c-1 reaches the meter.
        let again = rx.recv().await;
        assert!(
            matches!(&again, Some(Outbound::Publish { topic, .. }) if &**topic == "meters/GM-0001/cmd"),
            "{again:?}"
        );
        r.acks.ack(
            "GM-0001",
            Bytes::from_static(br#"{"id":"c-1","result":"applied","detail":"ok","credit":4.5}"#),
        );
        until("applied", || r.handle.pending() == 0).await;
        while let Ok(m) = rx.try_recv() {
            let Outbound::Publish { payload, .. } = m else {
                continue;
            };
            assert!(String::from_utf8_lossy(&payload).contains("\"c-1\""));
        }
        let events = r.events();
        let outcomes: Vec<Outcome> = events.iter().map(|e| e.1).collect();
        use Outcome::*;
        assert_eq!(
            outcomes,
            [Accepted, Delivered, Refused, Refused, Refused, Refused, Refused, Applied]
        );
        assert_eq!(
            events[2],
            (Some("c-1".into()), Refused, Some(Reason::Replayed))
        );
        assert_eq!(events[6], (None, Refused, Some(Reason::Unsigned)));
        assert_eq!(r.handle.status().last.map(|l| l.outcome), Some(Applied));
        r.cancel.cancel();
    }

    #[tokio::test]
    async fn open_commands_survive_a_restart_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let r = rig_on(dir, true);
        let cmd = r.sign("c-1", "GM-0001", NOW_S, NOW_S + 60);
        assert_eq!(r.submit(cmd.clone()).await, (Outcome::Accepted, None));
        r.cancel.cancel();
        let Rig { _dir: dir, .. } = r;
        assert_eq!(dir.path(), path);
        let r = rig_on(dir, true);
        assert_eq!(r.handle.pending(), 1, "loaded from the store");
        assert_eq!(
            r.submit(cmd).await,
            (Outcome::Refused, Some(Reason::Replayed))
        );
        r.time.advance(61 * 1_000_000_000);
        until("expired", || r.handle.pending() == 0).await;
        assert_eq!(r.events().last().map(|e| e.1), Some(Outcome::Expired));
        r.cancel.cancel();
    }

    #[tokio::test]
    async fn without_a_key_everything_is_refused() {
        let r = rig_on(tempfile::tempdir().expect("tempdir"), false);
        let cmd = r.sign("c-1", "GM-0001", NOW_S, NOW_S + 60);
        assert_eq!(
            r.submit(cmd).await,
            (Outcome::Refused, Some(Reason::NoPlatformKey))
        );
        assert!(!r.handle.status().enabled);
        r.cancel.cancel();
    }
}
