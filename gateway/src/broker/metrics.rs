//! What the broker counts: logins, refused connections, connections open, accept errors,
//! outbound drops, password checks running and acks published.

use std::sync::Arc;

use crate::metrics::{Counter, CounterFamily, Gauge, LabelValue, Registry};

/// How a login attempt ended (`gkgw_broker_auth_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    /// Wrong password or unknown user (indistinguishable on purpose).
    Rejected,
    /// Refused without checking: too many recent failures from that address or for that user.
    Throttled,
    /// An anonymous client let in read-only (demo).
    Anonymous,
    AnonymousRefused,
}

impl LabelValue for AuthResult {
    const ALL: &'static [AuthResult] = &[
        AuthResult::Ok,
        AuthResult::Rejected,
        AuthResult::Throttled,
        AuthResult::Anonymous,
        AuthResult::AnonymousRefused,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            AuthResult::Ok => "ok",
            AuthResult::Rejected => "rejected",
            AuthResult::Throttled => "throttled",
            AuthResult::Anonymous => "anonymous",
            AuthResult::AnonymousRefused => "anonymous_refused",
        }
    }
}

/// Why the broker closed a connection before or instead of serving it
/// (`gkgw_broker_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `broker.max_connections` reached and nobody to evict.
    Full,
    /// A connection still without CONNECT dropped to make room for a newer one.
    Evicted,
    ConnectTimeout,
    /// Not MQTT 3.1.1, or a protocol violation.
    Protocol,
    /// The TLS listener's handshake failed or timed out (no or a wrong client certificate).
    Tls,
}

impl LabelValue for Refusal {
    const ALL: &'static [Refusal] = &[
        Refusal::Full,
        Refusal::Evicted,
        Refusal::ConnectTimeout,
        Refusal::Protocol,
        Refusal::Tls,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::Evicted => "evicted_pending",
            Refusal::ConnectTimeout => "connect_timeout",
            Refusal::Protocol => "protocol",
            Refusal::Tls => "tls",
        }
    }
}

/// The broker's metrics, registered once by the topology and shared by the accept loop, the
/// connections, the login gate and the hub.
pub struct Metrics {
    pub auth: Arc<CounterFamily<AuthResult>>,
    pub refused: Arc<CounterFamily<Refusal>>,
    /// Authenticated MQTT connections.
    pub connected: Arc<Gauge>,
    pub accept_errors: Arc<Counter>,
    pub outbound_dropped: Arc<Counter>,
    /// argon2 checks running now (at most `broker.auth_concurrency`).
    pub auth_checks_running: Arc<Gauge>,
    /// `meters/{id}/ack` messages published (riding on a PUBACK or on their own).
    pub acks_published: Arc<Counter>,
}

impl Metrics {
    /// Registers the broker's metrics with `r`.
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            acks_published: r.counter(
                "gkgw_meter_acks_published_total",
                "meters/{id}/ack messages published.",
            ),
            accept_errors: r.counter(
                "gkgw_broker_accept_errors_total",
                "Failed accept() calls on the MQTT listener (e.g. out of file descriptors).",
            ),
            outbound_dropped: r.counter(
                "gkgw_broker_outbound_dropped_total",
                "Messages to a client dropped because its outbound queue was full.",
            ),
            auth: r.counter_family("gkgw_broker_auth_total", "MQTT logins by result.", "result"),
            refused: r.counter_family(
                "gkgw_broker_refused_total",
                "MQTT connections closed before or instead of being served, by reason.",
                "reason",
            ),
            connected: r.gauge("gkgw_broker_connections", "Authenticated MQTT connections."),
            auth_checks_running: r.gauge(
                "gkgw_broker_auth_checks_running",
                "Password checks (argon2) running now.",
            ),
        }
    }
}

/// Metrics that nobody renders (tests, tools).
impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::register(&mut Registry::default())
    }
}
