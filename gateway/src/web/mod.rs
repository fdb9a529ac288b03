//! The local web server: a plain status page, `/healthz`, `/metrics` and `/api/status`.
//!
//! Architecture invariant: this is the only module that knows HTTP routes and JSON DTOs; the
//! DTOs below are the boundary types and nothing else in the crate is `Serialize`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::committer::Health;
use crate::store::{Reader, StoreStats};

pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub reader: Mutex<Reader>,
    pub db: PathBuf,
    pub consumers: Vec<&'static str>,
    pub site: String,
    pub mqtt_addrs: Vec<SocketAddr>,
    pub modbus: crate::sources::modbus::Stats,
    pub clock: Arc<crate::clock::Clock>,
}

#[derive(Serialize)]
struct ClockDto {
    /// The kernel says the clock is synchronised (and it is past the build date); readings
    /// stamped while not are `clock_unsynced`.
    synced: bool,
    /// The wall clock now, RFC 3339.
    now: String,
    /// The last step of the wall clock: when (RFC 3339, after the step) and by how much.
    last_step_at: Option<String>,
    last_step_s: Option<f64>,
    steps: u64,
    /// Readings moved to a corrected time since start.
    restamped: u64,
    /// From `adjtimex`: NTP's offset correction, estimated and maximum error.
    offset_s: f64,
    estimated_error_s: f64,
    max_error_s: f64,
}

impl ClockDto {
    fn of(c: &crate::clock::Status) -> ClockDto {
        let rfc3339 = |ns: i64| {
            chrono::DateTime::from_timestamp_nanos(ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        ClockDto {
            synced: c.synced,
            now: rfc3339(c.wall_ns),
            last_step_at: c.last_step.map(|(at, _)| rfc3339(at)),
            last_step_s: c.last_step.map(|(_, d)| d as f64 / 1e9),
            steps: c.steps,
            restamped: c.restamped,
            offset_s: c.kernel.offset_ns as f64 / 1e9,
            estimated_error_s: c.kernel.est_error_ns as f64 / 1e9,
            max_error_s: c.kernel.max_error_ns as f64 / 1e9,
        }
    }
}

/// The clock's gauges, in the form the other `/metrics` lines have.
fn render_clock(c: &crate::clock::Status, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP gkgw_clock_synced 1 while the kernel says the clock is synchronised.\n# TYPE gkgw_clock_synced gauge\ngkgw_clock_synced {}", u8::from(c.synced));
    let _ = writeln!(out, "# HELP gkgw_clock_last_step_seconds Size of the last step of the wall clock (0: none since start).\n# TYPE gkgw_clock_last_step_seconds gauge\ngkgw_clock_last_step_seconds {:.3}", c.last_step.map_or(0.0, |(_, d)| d as f64 / 1e9));
    let _ = writeln!(out, "# HELP gkgw_clock_steps_total Steps of the wall clock since start.\n# TYPE gkgw_clock_steps_total counter\ngkgw_clock_steps_total {}", c.steps);
    let _ = writeln!(out, "# HELP gkgw_clock_restamped_total Readings re-stamped after a clock step.\n# TYPE gkgw_clock_restamped_total counter\ngkgw_clock_restamped_total {}", c.restamped);
    let _ = writeln!(out, "# HELP gkgw_clock_offset_seconds NTP offset correction (adjtimex).\n# TYPE gkgw_clock_offset_seconds gauge\ngkgw_clock_offset_seconds {:.6}", c.kernel.offset_ns as f64 / 1e9);
    let _ = writeln!(out, "# HELP gkgw_clock_estimated_error_seconds Estimated clock error (adjtimex).\n# TYPE gkgw_clock_estimated_error_seconds gauge\ngkgw_clock_estimated_error_seconds {:.6}", c.kernel.est_error_ns as f64 / 1e9);
}

#[derive(Serialize)]
struct ConsumerDto {
    name: String,
    position: i64,
    backlog: i64,
    oldest_unsent_age_s: Option<f64>,
}

#[derive(Serialize)]
struct ModbusDeviceDto {
    name: String,
    bus: String,
    state: &'static str,
    requests: u64,
    timeouts: u64,
    exceptions: u64,
    errors: u64,
    last_answer_age_s: Option<f64>,
    /// Latest value of each field, as text with its unit.
    latest: std::collections::BTreeMap<String, String>,
    /// `latest` is out of date: the device is offline and the values are `last_answer_age_s`
    /// old.
    stale: bool,
}

#[derive(Serialize)]
struct StatusDto {
    version: &'static str,
    site: String,
    /// `health == "healthy"`.
    healthy: bool,
    health: &'static str,
    /// Why the health is not "healthy", one sentence each.
    health_reasons: Vec<String>,
    mqtt_listeners: Vec<String>,
    mqtt_connections: usize,
    mqtt_messages: u64,
    readings_accepted: u64,
    readings_rejected: std::collections::BTreeMap<&'static str, u64>,
    store_file_bytes: u64,
    store_readings: i64,
    store_last_id: i64,
    store_evicted: i64,
    quarantined: i64,
    influx_points_written: u64,
    influx_write_errors: u64,
    consumers: Vec<ConsumerDto>,
    modbus: Vec<ModbusDeviceDto>,
    clock: ClockDto,
}

/// Whether the store commits: what `/healthz` (the systemd watchdog) and `gkgw_up` report.
fn healthy(s: &AppState) -> bool {
    !s.health.failing.load(Relaxed)
}

/// A consumer further behind than this is not delivering (InfluxDB down or refusing): with the
/// default flush interval of 1 s its oldest unsent reading is normally a second or two old, and
/// a minute is long enough not to flag a retry or two.
const CONSUMER_LAG_LIMIT_S: f64 = 60.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overall {
    Healthy,
    /// Running and committing, but something it should do is not happening.
    Degraded,
    /// Store commits fail: nothing new is kept.
    Failing,
}

impl Overall {
    fn as_str(self) -> &'static str {
        match self {
            Overall::Healthy => "healthy",
            Overall::Degraded => "degraded",
            Overall::Failing => "failing",
        }
    }
}

/// The gateway's overall health for the status page and `/api/status`, with the reasons: the
/// store failing to commit, Modbus devices offline, a consumer that has stopped delivering.
/// `/healthz` means only "the store commits" (a restart cannot bring a device or InfluxDB
/// back), so it does not use this.
fn assess(
    store_failing: bool,
    modbus: &[ModbusDeviceDto],
    consumers: &[ConsumerDto],
) -> (Overall, Vec<String>) {
    let mut reasons = Vec::new();
    if store_failing {
        reasons.push("store commits are failing".to_owned());
    }
    let offline: Vec<&ModbusDeviceDto> = modbus.iter().filter(|d| d.stale).collect();
    if offline.len() > 1 && offline.len() == modbus.len() {
        reasons.push(format!("all {} modbus devices are offline", modbus.len()));
    } else {
        for d in offline {
            let since = d
                .last_answer_age_s
                .map_or("never answered".to_owned(), |a| {
                    format!("last answer {a:.0} s ago")
                });
            reasons.push(format!("modbus device {} is offline ({since})", d.name));
        }
    }
    for c in consumers {
        if let Some(age) = c.oldest_unsent_age_s.filter(|a| *a > CONSUMER_LAG_LIMIT_S) {
            reasons.push(format!(
                "consumer {} is not delivering: {} readings unsent, the oldest {age:.0} s old",
                c.name, c.backlog
            ));
        }
    }
    let health = if store_failing {
        Overall::Failing
    } else if reasons.is_empty() {
        Overall::Healthy
    } else {
        Overall::Degraded
    };
    (health, reasons)
}

async fn stats(s: &Arc<AppState>) -> StoreStats {
    let s = s.clone();
    tokio::task::spawn_blocking(move || {
        let reader = s.reader.lock().map_err(|_| ())?;
        reader
            .stats(&s.consumers, &s.db)
            .map_err(|e| tracing::warn!(error = %e, "store stats"))
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default()
}

async fn status_dto(s: &Arc<AppState>) -> StatusDto {
    let st = stats(s).await;
    let clock = s.clock.status();
    let now = clock.wall_ns;
    let m = &s.metrics;
    let consumers: Vec<ConsumerDto> = st
        .consumers
        .into_iter()
        .map(|c| ConsumerDto {
            name: c.name,
            position: c.position,
            backlog: c.backlog,
            oldest_unsent_age_s: c.oldest_unsent_ts_ns.map(|t| (now - t) as f64 / 1e9),
        })
        .collect();
    let modbus: Vec<ModbusDeviceDto> = s
        .modbus
        .lock()
        .map(|devs| {
            devs.iter()
                .map(|(name, d)| ModbusDeviceDto {
                    name: name.clone(),
                    bus: d.bus.clone(),
                    state: d.state.as_str(),
                    requests: d.requests,
                    timeouts: d.timeouts,
                    exceptions: d.exceptions,
                    errors: d.errors,
                    last_answer_age_s: d.last_answer_ns.map(|t| (now - t) as f64 / 1e9),
                    latest: d.latest.clone(),
                    stale: d.stale(),
                })
                .collect()
        })
        .unwrap_or_default();
    let (health, health_reasons) = assess(!healthy(s), &modbus, &consumers);
    StatusDto {
        version: env!("CARGO_PKG_VERSION"),
        site: s.site.clone(),
        healthy: health == Overall::Healthy,
        health: health.as_str(),
        health_reasons,
        mqtt_listeners: s.mqtt_addrs.iter().map(ToString::to_string).collect(),
        mqtt_connections: m.broker_connected.load(Relaxed) as usize,
        mqtt_messages: m.mqtt_messages.load(Relaxed),
        readings_accepted: m.readings_accepted.load(Relaxed),
        readings_rejected: crate::metrics::RejectReason::ALL
            .iter()
            .map(|r| (r.as_str(), m.rejected(*r)))
            .collect(),
        store_file_bytes: st.file_bytes,
        store_readings: st.readings,
        store_last_id: st.last_id,
        store_evicted: st.evicted,
        quarantined: st.quarantined,
        influx_points_written: m.influx_points_written.load(Relaxed),
        influx_write_errors: m.influx_write_errors.load(Relaxed),
        consumers,
        modbus,
        clock: ClockDto::of(&clock),
    }
}

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    if healthy(&s) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store commits are failing\n",
        )
            .into_response()
    }
}

async fn api_status(State(s): State<Arc<AppState>>) -> Json<StatusDto> {
    Json(status_dto(&s).await)
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    use std::fmt::Write as _;
    let st = stats(&s).await;
    let clock = s.clock.status();
    let now = clock.wall_ns;
    let mut extra = String::new();
    let _ = writeln!(extra, "# HELP gkgw_store_bytes Store files on disk (database and WAL).\n# TYPE gkgw_store_bytes gauge\ngkgw_store_bytes {}", st.file_bytes);
    let _ = writeln!(extra, "# HELP gkgw_store_readings Readings held in the store.\n# TYPE gkgw_store_readings gauge\ngkgw_store_readings {}", st.readings);
    let _ = writeln!(extra, "# HELP gkgw_store_evicted_total Readings evicted by the disk quota before delivery.\n# TYPE gkgw_store_evicted_total counter\ngkgw_store_evicted_total {}", st.evicted);
    let _ = writeln!(extra, "# HELP gkgw_store_quarantined Lines held in quarantine.\n# TYPE gkgw_store_quarantined gauge\ngkgw_store_quarantined {}", st.quarantined);
    extra.push_str("# HELP gkgw_consumer_backlog Readings not yet delivered by a consumer.\n# TYPE gkgw_consumer_backlog gauge\n");
    for c in &st.consumers {
        let _ = writeln!(
            extra,
            "gkgw_consumer_backlog{{consumer=\"{}\"}} {}",
            c.name, c.backlog
        );
    }
    extra.push_str("# HELP gkgw_consumer_oldest_unsent_seconds Age of the oldest reading a consumer has not delivered.\n# TYPE gkgw_consumer_oldest_unsent_seconds gauge\n");
    for c in &st.consumers {
        let age = c
            .oldest_unsent_ts_ns
            .map_or(0.0, |t| (now - t).max(0) as f64 / 1e9);
        let _ = writeln!(
            extra,
            "gkgw_consumer_oldest_unsent_seconds{{consumer=\"{}\"}} {age:.3}",
            c.name
        );
    }
    crate::sources::modbus::render_stats(&s.modbus, &mut extra);
    render_clock(&clock, &mut extra);
    let _ = writeln!(
        extra,
        "# HELP gkgw_up 1 while the pipeline is healthy.\n# TYPE gkgw_up gauge\ngkgw_up {}",
        u8::from(healthy(&s))
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&extra),
    )
        .into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn index(State(s): State<Arc<AppState>>) -> Html<String> {
    let d = status_dto(&s).await;
    let mut rows = String::new();
    let mut row = |k: &str, v: String| {
        rows.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v)))
    };
    row("Site", d.site.clone());
    row(
        "Health",
        if d.health_reasons.is_empty() {
            d.health.to_owned()
        } else {
            format!(
                "{}: {}",
                d.health.to_uppercase(),
                d.health_reasons.join("; ")
            )
        },
    );
    row("MQTT listeners", d.mqtt_listeners.join(", "));
    row("MQTT clients connected", d.mqtt_connections.to_string());
    row("MQTT messages received", d.mqtt_messages.to_string());
    row(
        "Readings accepted (committed)",
        d.readings_accepted.to_string(),
    );
    for (k, v) in &d.readings_rejected {
        if *v > 0 {
            row(&format!("Rejected: {k}"), v.to_string());
        }
    }
    row(
        "Store on disk",
        format!("{:.1} MiB", d.store_file_bytes as f64 / 1048576.0),
    );
    row("Readings in store", d.store_readings.to_string());
    row("Evicted by quota", d.store_evicted.to_string());
    row("Quarantined lines", d.quarantined.to_string());
    row(
        "InfluxDB points written",
        d.influx_points_written.to_string(),
    );
    row("InfluxDB write errors", d.influx_write_errors.to_string());
    row(
        "Clock",
        match (&d.clock.last_step_at, d.clock.last_step_s) {
            (Some(at), Some(by)) => format!(
                "{} ({}; stepped {by:+.1} s at {at}; {} readings re-stamped)",
                d.clock.now,
                if d.clock.synced {
                    "synchronised"
                } else {
                    "NOT SYNCHRONISED"
                },
                d.clock.restamped
            ),
            _ => format!(
                "{} ({})",
                d.clock.now,
                if d.clock.synced {
                    "synchronised"
                } else {
                    "NOT SYNCHRONISED: readings are marked"
                }
            ),
        },
    );
    for m in &d.modbus {
        row(
            &format!("Modbus {}", m.name),
            format!(
                "{} ({} requests, {} timeouts, {} exceptions{})",
                m.state,
                m.requests,
                m.timeouts,
                m.exceptions,
                m.last_answer_age_s
                    .map_or(String::new(), |a| format!(", answered {a:.0} s ago"))
            ),
        );
        if !m.latest.is_empty() {
            let values: Vec<String> = m.latest.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let stale = match (m.stale, m.last_answer_age_s) {
                (false, _) => String::new(),
                (true, Some(a)) => format!("STALE, from {a:.0} s ago: "),
                (true, None) => "STALE: ".to_owned(),
            };
            row(
                &format!("{} values", m.name),
                format!("{stale}{}", values.join(" · ")),
            );
        }
    }
    for c in &d.consumers {
        row(
            &format!("Consumer {}", c.name),
            format!(
                "backlog {}, oldest unsent {}",
                c.backlog,
                c.oldest_unsent_age_s
                    .map_or("-".into(), |a| format!("{a:.0} s ago"))
            ),
        );
    }
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=refresh content=5><title>Green Kitchen Gateway</title>\
         <style>body{{font-family:sans-serif;margin:1em;max-width:40em}}th{{text-align:left;padding-right:1em}}td,th{{border-bottom:1px solid #ddd;padding:.3em}}</style>\
         </head><body><h1>Green Kitchen Gateway</h1><p>Version {} &middot; <a href=/metrics>metrics</a> &middot; <a href=/api/status>json</a></p><table>{rows}</table></body></html>",
        d.version
    ))
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(api_status))
        .with_state(state)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    cancel: CancellationToken,
) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "http server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, stale: bool, age: Option<f64>) -> ModbusDeviceDto {
        ModbusDeviceDto {
            name: name.to_owned(),
            bus: "rs485".to_owned(),
            state: if stale { "offline" } else { "online" },
            requests: 0,
            timeouts: 0,
            exceptions: 0,
            errors: 0,
            last_answer_age_s: age,
            latest: Default::default(),
            stale,
        }
    }

    /// `devices`: (name, offline, seconds since the last answer); `consumers`: (name, age of
    /// the oldest unsent reading, backlog).
    fn check(
        store_failing: bool,
        devices: &[(&str, bool, Option<f64>)],
        consumers: &[(&str, Option<f64>, i64)],
        expected: (Overall, &[&str]),
    ) {
        let devices: Vec<ModbusDeviceDto> = devices
            .iter()
            .map(|(n, stale, age)| device(n, *stale, *age))
            .collect();
        let consumers: Vec<ConsumerDto> = consumers
            .iter()
            .map(|(n, age, backlog)| ConsumerDto {
                name: (*n).to_owned(),
                position: 0,
                backlog: *backlog,
                oldest_unsent_age_s: *age,
            })
            .collect();
        let (health, reasons) = assess(store_failing, &devices, &consumers);
        assert_eq!(
            (
                health,
                reasons.iter().map(String::as_str).collect::<Vec<_>>()
            ),
            (expected.0, expected.1.to_vec())
        );
    }

    #[test]
    fn health_names_what_is_wrong() {
        check(false, &[], &[], (Overall::Healthy, &[]));
        check(
            false,
            &[("a", false, Some(1.0))],
            &[("influx", Some(2.0), 10)],
            (Overall::Healthy, &[]),
        );
        check(
            false,
            &[("a", true, Some(75.4)), ("b", false, Some(1.0))],
            &[],
            (
                Overall::Degraded,
                &["modbus device a is offline (last answer 75 s ago)"],
            ),
        );
        check(
            false,
            &[("a", true, None)],
            &[],
            (
                Overall::Degraded,
                &["modbus device a is offline (never answered)"],
            ),
        );
        check(
            false,
            &[("a", true, Some(9.0)), ("b", true, None)],
            &[],
            (Overall::Degraded, &["all 2 modbus devices are offline"]),
        );
        check(
            false,
            &[],
            &[("influx", Some(61.0), 1200), ("uplink", Some(60.0), 3)],
            (
                Overall::Degraded,
                &["consumer influx is not delivering: 1200 readings unsent, the oldest 61 s old"],
            ),
        );
        check(
            true,
            &[("a", true, None)],
            &[("influx", None, 0)],
            (
                Overall::Failing,
                &[
                    "store commits are failing",
                    "modbus device a is offline (never answered)",
                ],
            ),
        );
    }
}
