//! The field-side MQTT 3.1.1 server that meters connect to.
//!
//! Architecture invariant: this is the only module that speaks MQTT on the field side. It
//! knows nothing about payloads: an accepted PUBLISH goes to an [`Inbound`] (the MQTT source),
//! and the gateway's own messages come in through [`Hub::publish`].
//!
//! Why not rumqttd (ARCHITECTURE.md has the measurements): it has no topic authorization, it
//! PUBACKs on receipt and then lets a lagging subscriber skip, and it reserves fixed queues per
//! connection and a commit log per filter. This server is built on rumqttc's MQTT 3.1.1 codec
//! (`rumqttc::mqttbytes::v4`) and does only what field devices do: CONNECT (keep-alive 0 and a
//! will allowed), PUBLISH QoS 0/1/2, SUBSCRIBE/UNSUBSCRIBE on the account's own topics, PING,
//! DISCONNECT, persistent sessions (subscriptions kept in memory).
//!
//! What it guarantees:
//! - **Identity.** A connection is its account ([`acl::Identity`]); a meter publishes and
//!   subscribes only under `meters/{its id}/…`, its client id is its id and its will stays under
//!   its own topics. A PUBLISH outside them is counted (`reason="identity"`), never handed on,
//!   never acknowledged, and the connection is closed (MQTT-3.3.5-2 allows exactly that); a
//!   refused SUBSCRIBE filter gets return code 0x80.
//! - **Acknowledged means committed.** The PUBACK (QoS 1) or PUBREC (QoS 2) of a message is
//!   sent when the store has committed it ([`crate::model::Receipt`]), not on receipt.
//! - **Backpressure, never skipping.** A connection's socket is read only while the ingest
//!   channel takes its messages and while it has fewer than `max_inflight` messages waiting for
//!   commit; otherwise it is not read, and TCP slows the publisher down.
//! - **Bounded.** At most `max_connections` connections, of which at most `max_pending` have not
//!   finished CONNECT (the oldest of those is dropped for a newcomer); logins go through the
//!   throttled, bounded [`auth::Gate`]; accept errors (out of file descriptors) back off and are
//!   logged at most once per 10 s.
//! - **Logs.** No packet is ever logged whole; strings from the network are logged escaped
//!   (`?`), so a user name cannot forge a log line; passwords are never logged.

pub mod acl;
pub mod auth;
mod conn;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod tls;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use acl::{topic_matches, Acl, Identity, Owner, PublishRule};
pub use hub::Hub;
pub use metrics::{AuthResult, Metrics, Refusal};

use crate::model::Receipt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on broker.listen = {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// Why the broker refused a message of a connection it serves: what the MQTT source counts as a
/// rejected message (`gkgw_readings_rejected_total{reason}`), though it never reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A publish, subscription, will or client id for an account other than the connection's.
    Identity,
    /// A packet above `broker.max_packet_bytes`.
    Oversized,
}

/// Where accepted publishes go. The MQTT source implements it; the broker calls it from the
/// publishing connection's task, so awaiting in it stops that connection's reads (backpressure).
pub trait Inbound: Send + Sync + 'static {
    /// A message the broker refused before it could reach [`Inbound::publish`]; counted there
    /// with the messages that were rejected as bad input.
    fn refused(&self, why: Refused);

    /// A PUBLISH the ACL allowed. `receipt` (QoS 1/2) must be confirmed once the message is
    /// committed, or at once if it is rejected as bad input (resending would not fix it).
    fn publish(
        &self,
        from: &Identity,
        topic: &str,
        payload: Bytes,
        receipt: Option<Receipt>,
    ) -> impl Future<Output = ()> + Send;
}

/// The broker's settings, resolved from `[broker]` of the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Told when a connection reaches `max_inflight`: it waits for a commit to go on.
    pub commit_now: Arc<tokio::sync::Notify>,
    pub max_connections: usize,
    pub max_pending: usize,
    pub connect_timeout: Duration,
    pub max_packet_bytes: usize,
    pub max_inflight: usize,
}

/// Connections that have not finished CONNECT, oldest first, each with the token that drops it.
#[derive(Default)]
struct Pending {
    list: Mutex<VecDeque<(u64, CancellationToken)>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.list.lock().map_or(0, |l| l.len())
    }

    fn push(&self, id: u64, t: CancellationToken) {
        if let Ok(mut l) = self.list.lock() {
            l.push_back((id, t));
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut l) = self.list.lock() {
            l.retain(|(i, _)| *i != id);
        }
    }

    /// Drops the oldest pending connection; false when there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = self.list.lock().ok().and_then(|mut l| l.pop_front());
        match oldest {
            Some((_, t)) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

/// Shared by the accept loop and every connection task.
struct Ctx<I> {
    settings: Settings,
    gate: Arc<auth::Gate>,
    acl: Acl,
    hub: Arc<Hub>,
    inbound: Arc<I>,
    metrics: Arc<Metrics>,
    pending: Pending,
    next_id: AtomicU64,
    shutdown: CancellationToken,
    log: conn::LogLimiter,
}

/// Raises the soft open-files limit to the hard one and returns how many connections fit under
/// it, keeping `reserve` descriptors for the store, the web server and outbound clients.
pub fn connection_limit(wanted: usize, reserve: u64) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return wanted;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let fit = lim.rlim_cur.saturating_sub(reserve).max(16);
    wanted.min(usize::try_from(fit).unwrap_or(usize::MAX))
}

/// Binds the listener, so "address in use" is a start-up error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| Error::Listen { addr, error })
}

/// Everything [`serve`] needs besides the listener.
pub struct Parts<I> {
    pub settings: Settings,
    pub gate: Arc<auth::Gate>,
    pub acl: Acl,
    pub hub: Arc<Hub>,
    pub inbound: Arc<I>,
    pub metrics: Arc<Metrics>,
}

/// A bound listener: plain MQTT, or MQTT over TLS with this acceptor.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The accept loops, one per listener, as one future to be spawned on `tracker` (where the
/// connections run too), until `shutdown`: connections then close (without their wills), and
/// once they are gone nobody holds the `Inbound` any more. The listeners share the limits,
/// accounts and sessions; the future ends when every loop has.
pub fn serve<I: Inbound>(
    listeners: Vec<Listener>,
    parts: Parts<I>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ctx = Arc::new(Ctx {
        settings: parts.settings,
        gate: parts.gate,
        acl: parts.acl,
        hub: parts.hub,
        inbound: parts.inbound,
        metrics: parts.metrics,
        pending: Pending::default(),
        next_id: AtomicU64::new(1),
        shutdown,
        log: conn::LogLimiter::default(),
    });
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| accept_loop(l, ctx.clone(), tracker.clone()))
        .collect();
    async move {
        futures_util::future::join_all(loops).await;
    }
}

async fn accept_loop<I: Inbound>(listener: Listener, ctx: Arc<Ctx<I>>, tracker: TaskTracker) {
    let Listener { tcp: listener, tls } = listener;
    let mut backoff = Duration::from_millis(10);
    let mut errors_since_log: u64 = 0;
    let mut last_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // EMFILE and friends: the pending connection stays in the kernel's queue, so
                // retrying at once spins. Free a descriptor if we can, back off, log rarely.
                ctx.metrics.accept_errors.inc();
                errors_since_log += 1;
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::error!(error = %e, errors = errors_since_log, "mqtt accept failed; backing off (raise LimitNOFILE or lower broker.max_connections)");
                    errors_since_log = 0;
                    last_log = Some(Instant::now());
                }
                if ctx.pending.evict_oldest() {
                    ctx.metrics.refused.inc(Refusal::Evicted);
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connected = usize::try_from(ctx.metrics.connected.get()).unwrap_or(0);
        if connected + ctx.pending.len() >= ctx.settings.max_connections
            || ctx.pending.len() >= ctx.settings.max_pending
        {
            if !ctx.pending.evict_oldest() {
                ctx.metrics.refused.inc(Refusal::Full);
                ctx.log.note("full", |suppressed| {
                    tracing::warn!(%peer, suppressed, max = ctx.settings.max_connections, "mqtt connection refused: broker.max_connections reached");
                });
                drop(stream);
                continue;
            }
            ctx.metrics.refused.inc(Refusal::Evicted);
        }
        let id = ctx.next_id.fetch_add(1, Relaxed);
        let evict = ctx.shutdown.child_token();
        ctx.pending.push(id, evict.clone());
        match &tls {
            None => tracker.spawn(conn::serve(stream, peer, id, ctx.clone(), evict)),
            Some(acceptor) => tracker.spawn(conn::serve_tls(
                stream,
                acceptor.clone(),
                peer,
                id,
                ctx.clone(),
                evict,
            )),
        };
    }
    tracing::debug!("mqtt accept loop stopped");
}
