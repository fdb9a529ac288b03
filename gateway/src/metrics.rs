//! Counters the whole gateway shares, rendered as Prometheus text at `/metrics`.
//!
//! Hand-written on atomics rather than the `prometheus` crates: the set of metrics is fixed and
//! small, every label value is a closed enum, and this keeps the hot path to one relaxed atomic add.
//! Store and consumer gauges are not kept here: `/metrics` asks the store for them on each scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a message or reading was rejected before it reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not valid JSON, not a number, or not line protocol.
    Malformed,
    /// Valid syntax, but a required field is missing or has the wrong type.
    Invalid,
    /// The payload's `meter_id` differs from the id in its topic.
    MeterIdMismatch,
    /// Larger than `mqtt.max_payload_bytes`.
    Oversized,
    /// Timestamp before 2020 or more than a day in the future.
    BadTimestamp,
    /// A topic no pattern maps.
    UnknownTopic,
    /// Line protocol naming a measurement and field that is no quantity's stored name.
    UnknownQuantity,
    /// A connection tried to speak (publish, subscribe, will, client id) for an account other
    /// than its own.
    Identity,
}

impl RejectReason {
    pub const ALL: [RejectReason; 8] = [
        RejectReason::Malformed,
        RejectReason::Invalid,
        RejectReason::MeterIdMismatch,
        RejectReason::Oversized,
        RejectReason::BadTimestamp,
        RejectReason::UnknownTopic,
        RejectReason::UnknownQuantity,
        RejectReason::Identity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Invalid => "invalid",
            RejectReason::MeterIdMismatch => "meter_id_mismatch",
            RejectReason::Oversized => "oversized",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::UnknownTopic => "unknown_topic",
            RejectReason::UnknownQuantity => "unknown_quantity",
            RejectReason::Identity => "identity",
        }
    }
}

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

impl AuthResult {
    pub const ALL: [AuthResult; 5] = [
        AuthResult::Ok,
        AuthResult::Rejected,
        AuthResult::Throttled,
        AuthResult::Anonymous,
        AuthResult::AnonymousRefused,
    ];

    pub fn as_str(self) -> &'static str {
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
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Full,
        Refusal::Evicted,
        Refusal::ConnectTimeout,
        Refusal::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::Evicted => "evicted_pending",
            Refusal::ConnectTimeout => "connect_timeout",
            Refusal::Protocol => "protocol",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub mqtt_messages: AtomicU64,
    rejected: [AtomicU64; 8],
    auth: [AtomicU64; 5],
    refused: [AtomicU64; 4],
    /// Authenticated MQTT connections (a gauge).
    pub broker_connected: AtomicU64,
    pub broker_accept_errors: AtomicU64,
    pub broker_outbound_dropped: AtomicU64,
    /// argon2 checks running now (a gauge; at most `broker.auth_concurrency`).
    pub auth_checks_running: AtomicU64,
    pub readings_accepted: AtomicU64,
    pub store_commits: AtomicU64,
    pub store_commit_micros: AtomicU64,
    pub store_errors: AtomicU64,
    pub acks_published: AtomicU64,
    pub acks_dropped: AtomicU64,
    pub influx_points_written: AtomicU64,
    pub influx_requests: AtomicU64,
    pub influx_write_errors: AtomicU64,
    pub influx_quarantined: AtomicU64,
}

impl Metrics {
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].load(Relaxed)
    }

    pub fn auth(&self, r: AuthResult) {
        self.auth[r as usize].fetch_add(1, Relaxed);
    }

    pub fn auth_count(&self, r: AuthResult) -> u64 {
        self.auth[r as usize].load(Relaxed)
    }

    pub fn broker_refused(&self, r: Refusal) {
        self.refused[r as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Prometheus text exposition of the counters; `extra` is appended (store gauges).
    pub fn render(&self, extra: &str) -> String {
        let mut s = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        counter(
            "gkgw_mqtt_messages_total",
            "MQTT messages received on ingest topics.",
            &self.mqtt_messages,
        );
        counter(
            "gkgw_readings_accepted_total",
            "Readings committed to the local store.",
            &self.readings_accepted,
        );
        counter(
            "gkgw_store_commits_total",
            "Store transactions committed (each one fsync).",
            &self.store_commits,
        );
        counter(
            "gkgw_store_errors_total",
            "Store commits that failed and were retried.",
            &self.store_errors,
        );
        counter(
            "gkgw_meter_acks_published_total",
            "meters/{id}/ack messages published.",
            &self.acks_published,
        );
        counter(
            "gkgw_meter_acks_dropped_total",
            "Acks not published because the broker link was full.",
            &self.acks_dropped,
        );
        counter(
            "gkgw_broker_accept_errors_total",
            "Failed accept() calls on the MQTT listener (e.g. out of file descriptors).",
            &self.broker_accept_errors,
        );
        counter(
            "gkgw_broker_outbound_dropped_total",
            "Messages to a client dropped because its outbound queue was full.",
            &self.broker_outbound_dropped,
        );
        counter(
            "gkgw_influx_points_written_total",
            "Points InfluxDB accepted.",
            &self.influx_points_written,
        );
        counter(
            "gkgw_influx_requests_total",
            "Write requests sent to InfluxDB.",
            &self.influx_requests,
        );
        counter(
            "gkgw_influx_write_errors_total",
            "Failed InfluxDB write requests (retried).",
            &self.influx_write_errors,
        );
        counter(
            "gkgw_influx_quarantined_total",
            "Lines InfluxDB rejected as malformed, kept in quarantine.",
            &self.influx_quarantined,
        );
        let _ = writeln!(
            s,
            "# HELP gkgw_store_commit_seconds_total Time spent committing.\n# TYPE gkgw_store_commit_seconds_total counter\ngkgw_store_commit_seconds_total {:.6}",
            self.store_commit_micros.load(Relaxed) as f64 / 1e6
        );
        s.push_str("# HELP gkgw_readings_rejected_total Messages rejected before the store, by reason.\n# TYPE gkgw_readings_rejected_total counter\n");
        for r in RejectReason::ALL {
            let _ = writeln!(
                s,
                "gkgw_readings_rejected_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.rejected(r)
            );
        }
        labelled(
            &mut s,
            "gkgw_broker_auth_total",
            "MQTT logins by result.",
            "result",
            AuthResult::ALL.map(|r| (r.as_str(), self.auth[r as usize].load(Relaxed))),
        );
        labelled(
            &mut s,
            "gkgw_broker_refused_total",
            "MQTT connections closed before or instead of being served, by reason.",
            "reason",
            Refusal::ALL.map(|r| (r.as_str(), self.refused[r as usize].load(Relaxed))),
        );
        let _ = writeln!(
            s,
            "# HELP gkgw_broker_connections Authenticated MQTT connections.\n# TYPE gkgw_broker_connections gauge\ngkgw_broker_connections {}",
            self.broker_connected.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP gkgw_broker_auth_checks_running Password checks (argon2) running now.\n# TYPE gkgw_broker_auth_checks_running gauge\ngkgw_broker_auth_checks_running {}",
            self.auth_checks_running.load(Relaxed)
        );
        s.push_str(extra);
        s
    }
}

/// One counter with a single label, one line per label value.
fn labelled<const N: usize>(
    s: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: [(&str, u64); N],
) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
    for (v, n) in values {
        let _ = writeln!(s, "{name}{{{label}=\"{v}\"}} {n}");
    }
}
