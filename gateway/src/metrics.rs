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
}

impl RejectReason {
    pub const ALL: [RejectReason; 6] = [
        RejectReason::Malformed,
        RejectReason::Invalid,
        RejectReason::MeterIdMismatch,
        RejectReason::Oversized,
        RejectReason::BadTimestamp,
        RejectReason::UnknownTopic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Invalid => "invalid",
            RejectReason::MeterIdMismatch => "meter_id_mismatch",
            RejectReason::Oversized => "oversized",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::UnknownTopic => "unknown_topic",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub mqtt_messages: AtomicU64,
    rejected: [AtomicU64; 7],
    pub readings_accepted: AtomicU64,
    pub store_commits: AtomicU64,
    pub store_commit_micros: AtomicU64,
    pub store_errors: AtomicU64,
    pub acks_published: AtomicU64,
    pub acks_dropped: AtomicU64,
    pub broker_auth_ok: AtomicU64,
    pub broker_skipped: AtomicU64,
    pub broker_auth_rejected: AtomicU64,
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
            "gkgw_broker_skipped_total",
            "Messages the broker dropped because ingest fell further behind than its log holds.",
            &self.broker_skipped,
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
        s.push_str("# HELP gkgw_broker_auth_total MQTT connection attempts checked by the auth handler.\n# TYPE gkgw_broker_auth_total counter\n");
        let _ = writeln!(
            s,
            "gkgw_broker_auth_total{{result=\"ok\"}} {}",
            self.broker_auth_ok.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "gkgw_broker_auth_total{{result=\"rejected\"}} {}",
            self.broker_auth_rejected.load(Relaxed)
        );
        s.push_str(extra);
        s
    }
}
