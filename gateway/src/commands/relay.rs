//! The command relay: the one task that stores accepted commands and sends them to the meters.
//!
//! *Invariant: a command reaches `meters/{id}/cmd` only from here, and only after
//! [`super::Handle::submit`] verified it and [`Relay::accept`] stored it as not replayed
//! (`grep -rn 'cmd_topic(' gateway/src` finds its definition and unit test in
//! broker/outbox.rs and the one call below).*
//!
//! Each open command is published to its meter at once, then every `commands.retry_s` until
//! the meter answers on `meters/{id}/cmd/ack` or `exp` passes (`expired`). The first time the
//! broker hands it to a connected session that subscribes, it is `delivered`. Open commands
//! are loaded from the store at start-up, so a restart resends them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Command, Handle, Outcome, Reason, Submitted};
use crate::broker::{outbox, Hub};
use crate::clock::Clock;
use crate::metrics::LabelValue as _;
use crate::store::commands::{Accepted, Commands, NewEvent, ToAccept};
use crate::store::Handle as StoreHandle;

/// A verified command for the relay, with the channel its answer goes back on.
pub struct Request {
    pub command: Command,
    pub jws: String,
    pub via: &'static str,
    pub reply: oneshot::Sender<Submitted>,
}

/// A meter's answer, as it came (the meter id is the publishing account's).
pub struct Ack {
    pub meter: String,
    pub payload: Bytes,
}

#[derive(Deserialize)]
struct AckPayload {
    id: String,
    result: String,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    credit: Option<f64>,
}

struct Open {
    meter: String,
    kind: String,
    via: String,
    exp: i64,
    payload: Bytes,
    delivered: bool,
    next: Instant,
}

pub struct Relay {
    handle: Handle,
    store: StoreHandle<Commands>,
    hub: Arc<Hub>,
    clock: Arc<Clock>,
    retry: Duration,
    requests: mpsc::Receiver<Request>,
    acks: mpsc::Receiver<Ack>,
    open: BTreeMap<String, Open>,
}

/// The meter's message for a command (`broker::outbox` builds it).
fn message(id: &str, kind: &str, args: &serde_json::Value, exp: i64) -> Bytes {
    outbox::cmd_payload(id, kind, args, exp)
}

impl Relay {
    pub(super) fn new(
        handle: Handle,
        store: Commands,
        hub: Arc<Hub>,
        clock: Arc<Clock>,
        retry: Duration,
        requests: mpsc::Receiver<Request>,
        acks: mpsc::Receiver<Ack>,
    ) -> crate::store::Result<Relay> {
        let now = Instant::now();
        let mut open = BTreeMap::new();
        for c in store.open_commands()? {
            let args = serde_json::from_str(&c.args).unwrap_or(serde_json::json!({}));
            open.insert(
                c.id.clone(),
                Open {
                    payload: message(&c.id, &c.kind, &args, c.exp),
                    meter: c.meter,
                    kind: c.kind,
                    via: c.via,
                    exp: c.exp,
                    delivered: c.last == Outcome::Delivered,
                    next: now,
                },
            );
        }
        if !open.is_empty() {
            tracing::info!(open = open.len(), "resending open platform commands");
        }
        handle.set_pending(open.len());
        Ok(Relay {
            handle,
            store: StoreHandle::new(store),
            hub,
            clock,
            retry,
            requests,
            acks,
            open,
        })
    }

    /// Runs until `cancel`; what is open stays open in the store for the next start.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250).min(self.retry));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(r) = self.requests.recv() => {
                    let answer = self.accept(r.command, &r.jws, r.via).await;
                    let _ = r.reply.send(answer);
                }
                Some(a) = self.acks.recv() => self.on_ack(a).await,
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    fn clock_ns(&self) -> i64 {
        self.clock.now().ts_ns
    }

    async fn record(
        &self,
        outcome: Outcome,
        id: &str,
        o: &Open,
        detail: Option<String>,
        credit: Option<f64>,
    ) {
        let ts = self.clock_ns();
        let (id2, meter, kind, via) = (
            id.to_owned(),
            o.meter.clone(),
            o.kind.clone(),
            o.via.clone(),
        );
        let r = self
            .store
            .run(move |s| {
                s.record(
                    outcome,
                    &NewEvent {
                        id: Some(&id2),
                        meter: Some(&meter),
                        kind: Some(&kind),
                        detail: detail.as_deref(),
                        credit,
                        via: &via,
                        reason: None,
                    },
                    ts,
                )
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, id = ?id, outcome = outcome.as_str(), "cannot log a command outcome in the store");
        }
        self.handle.note(Some(id.to_owned()), outcome, None, ts);
    }

    /// Stores a verified command unless its id was seen, then sends it.
    async fn accept(&mut self, c: Command, jws: &str, via: &'static str) -> Submitted {
        let ts = self.clock_ns();
        let args = c.args.to_string();
        let (id, meter, kind, jws_owned) = (
            c.id.clone(),
            c.meter.clone(),
            c.kind.as_str(),
            jws.to_owned(),
        );
        let (iat, exp) = (c.iat, c.exp);
        let stored = self
            .store
            .run(move |s| {
                s.accept(
                    &ToAccept {
                        id: &id,
                        meter: &meter,
                        kind,
                        args: &args,
                        iat,
                        exp,
                        jws: &jws_owned,
                        via,
                    },
                    ts,
                )
            })
            .await;
        match stored {
            Err(e) => {
                tracing::error!(error = %e, id = ?c.id, "cannot store a platform command: refused as unavailable");
                self.handle.note(
                    Some(c.id.clone()),
                    Outcome::Refused,
                    Some(Reason::Unavailable),
                    ts,
                );
                Submitted::refused(Some(c.id), Reason::Unavailable)
            }
            Ok(Accepted::Replayed(_)) => {
                tracing::warn!(id = ?c.id, meter = ?c.meter, via, "platform command refused: replayed");
                self.handle.note(
                    Some(c.id.clone()),
                    Outcome::Refused,
                    Some(Reason::Replayed),
                    ts,
                );
                Submitted::refused(Some(c.id), Reason::Replayed)
            }
            Ok(Accepted::New(_)) => {
                tracing::info!(id = ?c.id, meter = ?c.meter, kind = c.kind.as_str(), via, "platform command accepted");
                self.handle
                    .note(Some(c.id.clone()), Outcome::Accepted, None, ts);
                let o = Open {
                    payload: message(&c.id, c.kind.as_str(), &c.args, c.exp),
                    meter: c.meter,
                    kind: c.kind.as_str().to_owned(),
                    via: via.to_owned(),
                    exp: c.exp,
                    delivered: false,
                    next: Instant::now(),
                };
                self.open.insert(c.id.clone(), o);
                self.handle.set_pending(self.open.len());
                let delivered = self.send(&c.id).await;
                Submitted {
                    id: Some(c.id),
                    outcome: if delivered {
                        Outcome::Delivered
                    } else {
                        Outcome::Accepted
                    },
                    reason: None,
                }
            }
        }
    }

    /// Publishes an open command to its meter; true once it has been delivered.
    async fn send(&mut self, id: &str) -> bool {
        let retry = self.retry;
        let Some(o) = self.open.get_mut(id) else {
            return false;
        };
        o.next = Instant::now() + retry;
        let got = self
            .hub
            .publish_to_meter(&outbox::cmd_topic(&o.meter), o.payload.clone());
        if got && !o.delivered {
            o.delivered = true;
            if let Some(o) = self.open.get(id) {
                self.record(Outcome::Delivered, id, o, None, None).await;
            }
        }
        self.open.get(id).is_some_and(|o| o.delivered)
    }

    async fn on_tick(&mut self) {
        let now_s = self.clock_ns().div_euclid(1_000_000_000);
        let expired: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| o.exp < now_s)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(o) = self.open.remove(&id) {
                tracing::warn!(id = ?id, meter = ?o.meter, delivered = o.delivered, "platform command expired without an answer from the meter");
                self.record(Outcome::Expired, &id, &o, None, None).await;
            }
        }
        self.handle.set_pending(self.open.len());
        let now = Instant::now();
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| o.next <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.send(&id).await;
        }
    }

    async fn on_ack(&mut self, a: Ack) {
        let Ok(p) = serde_json::from_slice::<AckPayload>(&a.payload) else {
            self.handle.inner.metrics.acks_ignored.inc();
            tracing::debug!(meter = ?a.meter, "malformed command answer ignored");
            return;
        };
        let outcome = match p.result.as_str() {
            "applied" => Outcome::Applied,
            "rejected" => Outcome::Rejected,
            _ => {
                self.handle.inner.metrics.acks_ignored.inc();
                return;
            }
        };
        // Only the meter the command was for can answer it; a late duplicate finds nothing.
        if self.open.get(&p.id).is_none_or(|o| o.meter != a.meter) {
            self.handle.inner.metrics.acks_ignored.inc();
            tracing::debug!(meter = ?a.meter, id = ?p.id, "answer for no open command of this meter ignored");
            return;
        }
        let Some(o) = self.open.remove(&p.id) else {
            return;
        };
        let detail = p.detail.map(|d| d.chars().take(256).collect::<String>());
        tracing::info!(id = ?p.id, meter = ?o.meter, outcome = outcome.as_str(), detail = ?detail, "platform command answered by the meter");
        self.record(
            outcome,
            &p.id,
            &o,
            detail,
            p.credit.filter(|c| c.is_finite()),
        )
        .await;
        self.handle.set_pending(self.open.len());
    }
}
