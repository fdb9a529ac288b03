//! The local web server: a plain status page, `/healthz`, `/metrics`, `/api/status`, the live
//! stream `/api/live` (`live.rs`), the history `/api/history` (`history.rs`), the plant
//! figures `/api/kpi` (`kpi.rs`) and the logbook `/api/logbook` (`logbook.rs`; its command-line
//! client `gkgw logbook` is `logbook_cli.rs`).
//!
//! Who may use which route is declared with the route, in [`routes`], the one table
//! (`auth.rs`: sessions, tokens, CSRF, throttles); the users page and `/api/audit` are
//! `users.rs`, `gkgw user` is `users_cli.rs`.
//!
//! Architecture invariant: this is the only module that knows HTTP routes and JSON DTOs; the
//! DTOs below are the boundary types and nothing else in the crate is `Serialize`.

pub mod alarms;
pub mod audit_cli;
pub mod auth;
pub mod commands;
mod history;
pub(crate) mod kpi;
mod live;
pub mod logbook;
pub mod logbook_cli;
pub mod ui;
pub mod users;
pub mod users_cli;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::{LabelValue as _, Registry};
use crate::sources::modbus::health;
use crate::sources::mqtt::RejectReason;
use crate::store::committer::Health;
use crate::store::gauges::Gauges;

/// What the pages read: the registry for `/metrics`, and the components' typed metrics for the
/// status page and `/api/status`.
pub struct AppState {
    pub registry: Registry,
    pub health: Arc<Health>,
    /// Registered in `registry` too; refreshed before each render.
    pub store: Arc<Gauges>,
    pub broker: Arc<crate::broker::Metrics>,
    pub mqtt: Arc<crate::sources::mqtt::Metrics>,
    pub committer: Arc<crate::store::committer::Metrics>,
    pub influx: Arc<crate::sinks::influx::Metrics>,
    pub site: String,
    pub mqtt_addrs: Vec<SocketAddr>,
    pub modbus: crate::sources::modbus::Stats,
    pub clock: Arc<crate::clock::Clock>,
    /// The site's quantities: names the live stream's values.
    pub plant: Arc<crate::plant::Plant>,
    /// The live stream (`intake.rs`); `/api/live` subscribes to it.
    pub live: tokio::sync::broadcast::Sender<Arc<crate::model::Reading>>,
    /// Ends open live streams at shutdown (they would otherwise hold the server open).
    pub shutdown: CancellationToken,
    /// How often the aggregator runs (`history.interval_ms`): its backlog is that old by design.
    pub aggregate_interval: std::time::Duration,
    /// The history's store connections (raw log and windows), on the blocking pool.
    pub history: crate::store::Handle<(crate::store::Reader, crate::store::windows::Windows)>,
    /// The logbook's own store connection (its writes serialise with the readings' in SQLite).
    pub logbook: crate::store::Handle<crate::store::logbook::Logbook>,
    /// Told the row id of every revision written, to wake the logbook's durable consumers.
    pub logbook_changed: tokio::sync::watch::Sender<i64>,
    /// The KPI engine (the site's parameters and time zone); `/api/kpi` runs it on `history`.
    pub kpi: crate::aggregate::kpi::Engine,
    /// The alarm engine's snapshot, its request channel and its store (None: disabled).
    pub alarms: Option<crate::alarm::task::Handle>,
    /// The uplink's state (None: no uplink configured).
    pub uplink: Option<crate::uplink::SharedStatus>,
    /// The GPIO outputs (buzzer, beacon, relays): their demanded and current states.
    pub gpio: crate::gpio::Outputs,
    /// Platform commands: `/api/commands` submits through it and reads its audit log.
    pub commands: crate::commands::Handle,
    /// The dashboard's current values (kept from the live stream by `ui::latest::run`).
    pub latest: Arc<ui::latest::Latest>,
    /// When the gateway started (Unix ns), for the uptime.
    pub started_ns: i64,
    /// The state directory (the store's filesystem, for the disk use).
    pub state_dir: std::path::PathBuf,
    /// Logins, sessions, tokens, throttles and the audit log (`auth.rs`).
    pub auth: auth::Gate,
}

#[derive(Serialize)]
struct GpioOutputDto {
    name: String,
    /// What the alarm engine asks for.
    demanded: bool,
    /// The line's logical level now (a pulsed output blinks while demanded).
    level: bool,
    mode: &'static str,
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

/// Unix nanoseconds as RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl ClockDto {
    fn of(c: &crate::clock::Status) -> ClockDto {
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
#[derive(Serialize)]
struct ConsumerDto {
    name: String,
    position: i64,
    backlog: i64,
    oldest_unsent_age_s: Option<f64>,
    /// How far behind the consumer is by design (the aggregator takes what was committed once
    /// per `history.interval_ms`): added to the lag limit.
    #[serde(skip)]
    cadence_s: f64,
}

#[derive(Serialize)]
struct ModbusDeviceDto {
    name: String,
    bus: String,
    #[serde(serialize_with = "state_name")]
    state: health::State,
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

/// A device state in JSON: `online`, `offline`, ... (`health::State::as_str`).
fn state_name<S: serde::Serializer>(state: &health::State, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
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
    store_downsampled: i64,
    quarantined: i64,
    influx_points_written: u64,
    influx_write_errors: u64,
    consumers: Vec<ConsumerDto>,
    modbus: Vec<ModbusDeviceDto>,
    clock: ClockDto,
    gpio: Vec<GpioOutputDto>,
    /// Alarms not in the normal state, worst first (`/api/alarms` has the details).
    alarms: Vec<AlarmDto>,
    /// The uplink to the platform (absent when none is configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    uplink: Option<UplinkDto>,
    /// GPIO outputs the alarms drive, and whether they demand them on.
    alarm_outputs: Vec<AlarmOutputDto>,
    /// Platform commands: enabled, pending, the newest outcome.
    commands: commands::StatusDto,
}

#[derive(Serialize)]
struct UplinkDto {
    url: String,
    /// Batches waiting in the outbox, and their bytes.
    backlog: u64,
    backlog_bytes: u64,
    /// When the oldest waiting batch was built, and its age.
    oldest_unsent: Option<String>,
    oldest_unsent_age_s: Option<f64>,
    next_seq: u64,
    last_success: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    /// Batches the platform refused as invalid (kept, not resent).
    rejected: u64,
}

#[derive(Serialize)]
struct AlarmDto {
    id: String,
    severity: &'static str,
    state: &'static str,
    shelved: bool,
    silenced: bool,
    suppressed: bool,
    since: String,
    message: String,
}

#[derive(Serialize)]
struct AlarmOutputDto {
    output: String,
    on: bool,
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
/// pipeline's own problem (store commits failing or hung, a pipeline task stopped: see
/// `committer::Health`), Modbus devices offline, a consumer that has stopped delivering.
/// `/healthz` means only the pipeline's own health (a restart cannot bring a device or
/// InfluxDB back), so it does not use this.
fn assess(
    pipeline_problem: Option<String>,
    modbus: &[ModbusDeviceDto],
    consumers: &[ConsumerDto],
) -> (Overall, Vec<String>) {
    let mut reasons = Vec::new();
    let store_failing = pipeline_problem.is_some();
    reasons.extend(pipeline_problem);
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
        let limit = CONSUMER_LAG_LIMIT_S + c.cadence_s;
        if let Some(age) = c.oldest_unsent_age_s.filter(|a| *a > limit) {
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

async fn status_dto(s: &Arc<AppState>) -> StatusDto {
    let st = s.store.refresh().await;
    // The device snapshot is taken before `now`: a poller that records an answer between the
    // two would otherwise give an answer newer than `now`, i.e. a negative age.
    let devices = s.modbus.lock().map(|d| d.clone()).unwrap_or_default();
    let clock = s.clock.status();
    let now = clock.wall_ns;
    let consumers: Vec<ConsumerDto> = st
        .consumers
        .into_iter()
        .map(|c| ConsumerDto {
            position: c.position,
            backlog: c.backlog,
            oldest_unsent_age_s: c.oldest_unsent_ts_ns.map(|t| (now - t) as f64 / 1e9),
            cadence_s: if c.name == crate::aggregate::CONSUMER {
                s.aggregate_interval.as_secs_f64()
            } else {
                0.0
            },
            name: c.name,
        })
        .collect();
    let modbus: Vec<ModbusDeviceDto> = devices
        .into_iter()
        .map(|(name, d)| ModbusDeviceDto {
            stale: d.stale(),
            name,
            bus: d.bus,
            state: d.state,
            requests: d.counts.requests,
            timeouts: d.counts.timeouts,
            exceptions: d.counts.exceptions,
            errors: d.counts.errors,
            last_answer_age_s: d.last_answer_ns.map(|t| (now - t) as f64 / 1e9),
            latest: d.latest,
        })
        .collect();
    let (health, health_reasons) = assess(s.health.problem(), &modbus, &consumers);
    let alarm_snapshot = s
        .alarms
        .as_ref()
        .map(crate::alarm::task::Handle::snapshot)
        .unwrap_or_default();
    let now_ns = crate::clock::wall_ns();
    let uplink = s.uplink.as_ref().map(|u| {
        let u = u
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        UplinkDto {
            url: u.url,
            backlog: u.backlog,
            backlog_bytes: u.backlog_bytes,
            oldest_unsent: u.oldest_unsent_ns.map(rfc3339),
            oldest_unsent_age_s: u.oldest_unsent_ns.map(|t| (now_ns - t) as f64 / 1e9),
            next_seq: u.next_seq,
            last_success: u.last_success_ns.map(rfc3339),
            last_error: u.last_error,
            last_error_at: u.last_error_ns.map(rfc3339),
            rejected: u.rejected,
        }
    });
    StatusDto {
        uplink,
        version: env!("CARGO_PKG_VERSION"),
        site: s.site.clone(),
        healthy: health == Overall::Healthy,
        health: health.as_str(),
        health_reasons,
        mqtt_listeners: s.mqtt_addrs.iter().map(ToString::to_string).collect(),
        mqtt_connections: usize::try_from(s.broker.connected.get()).unwrap_or(0),
        mqtt_messages: s.mqtt.messages.get(),
        readings_accepted: s.committer.readings_accepted.get(),
        readings_rejected: RejectReason::ALL
            .iter()
            .map(|r| (r.as_str(), s.mqtt.rejected.get(*r)))
            .collect(),
        store_file_bytes: st.file_bytes,
        store_readings: st.readings,
        store_last_id: st.last_id,
        store_evicted: st.evicted,
        store_downsampled: st.downsampled,
        quarantined: st.quarantined,
        influx_points_written: s.influx.points_written.get(),
        influx_write_errors: s.influx.write_errors.get(),
        consumers,
        modbus,
        clock: ClockDto::of(&clock),
        gpio: s
            .gpio
            .snapshot()
            .into_iter()
            .map(|o| GpioOutputDto {
                name: o.name,
                demanded: o.demanded,
                level: o.level,
                mode: match o.mode {
                    crate::config::OutputMode::Steady => "steady",
                    crate::config::OutputMode::Pulsed => "pulsed",
                },
            })
            .collect(),
        alarms: alarm_snapshot
            .alarms
            .iter()
            .map(|a| AlarmDto {
                id: a.id.clone(),
                severity: a.severity.as_str(),
                state: a.state.as_str(),
                shelved: a.shelved_until.is_some(),
                silenced: a.silenced,
                suppressed: a.suppressed,
                since: rfc3339(a.since_ns),
                message: a.message.clone(),
            })
            .collect(),
        alarm_outputs: alarm_snapshot
            .outputs
            .iter()
            .map(|(n, on)| AlarmOutputDto {
                output: n.clone(),
                on: *on,
            })
            .collect(),
        commands: commands::status(&s.commands),
    }
}

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    match s.health.problem() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(problem) => (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n")).into_response(),
    }
}

async fn api_status(State(s): State<Arc<AppState>>) -> Json<StatusDto> {
    Json(status_dto(&s).await)
}

/// Every registered metric; the store's gauges are read from the store first.
async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    s.store.refresh().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.registry.render(),
    )
        .into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn index(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<auth::Caller>,
) -> Html<String> {
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
    if d.alarms.is_empty() {
        row("Alarms", "none".into());
    }
    for a in &d.alarms {
        let mut flags = vec![a.state.replace('_', " ")];
        for (on, what) in [
            (a.shelved, "shelved"),
            (a.silenced, "silenced"),
            (a.suppressed, "suppressed: stale input"),
        ] {
            if on {
                flags.push(what.to_owned());
            }
        }
        row(
            &format!("Alarm ({})", a.severity.to_uppercase()),
            format!(
                "{}: {} [{}] since {}",
                a.id,
                a.message,
                flags.join(", "),
                a.since
            ),
        );
    }
    if let Some(u) = &d.uplink {
        row(
            "Uplink",
            format!(
                "{} batches waiting ({:.1} KiB){}; last confirmed {}{}",
                u.backlog,
                u.backlog_bytes as f64 / 1024.0,
                u.oldest_unsent_age_s
                    .map(|a| format!(", oldest {a:.0} s old"))
                    .unwrap_or_default(),
                u.last_success.as_deref().unwrap_or("never"),
                u.last_error
                    .as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
        );
    }
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
    row(
        "Downsampled by quota (windows kept)",
        d.store_downsampled.to_string(),
    );
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
                m.state.as_str(),
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
    for o in &d.gpio {
        let on = |b: bool| if b { "ON" } else { "off" };
        row(
            &format!("GPIO output {}", o.name),
            format!("{} ({}, demanded {})", on(o.level), o.mode, on(o.demanded)),
        );
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
         <style>body{{font-family:sans-serif;margin:1em;max-width:40em}}th{{text-align:left;padding-right:1em}}td,th{{border-bottom:1px solid #ddd;padding:.3em}}td{{overflow-wrap:anywhere}}</style>\
         </head><body><h1>Green Kitchen Gateway</h1><p>Version {} &middot; <a href=/metrics>metrics</a> &middot; <a href=/api/status>json</a> &middot; {}</p><table>{rows}</table></body></html>",
        d.version,
        auth::logout_form(&caller)
    ))
}

/// Every route with who may use it: the one table (`auth.rs`). A route is added here or
/// nowhere; `tests/e2e/access.rs` requests each with every role and with none.
pub fn routes() -> auth::Routes {
    use auth::Access::{Metrics, Public};
    use auth::{ADMIN, MANAGER, VIEWER};
    auth::Routes::new()
        // The dashboard (ui/): pages for every signed-in role; logbook writes for managers.
        .get("/", VIEWER, ui::overview)
        .get("/digester", VIEWER, ui::digester)
        .get("/gas", VIEWER, ui::gas)
        .get("/meters", VIEWER, ui::meters)
        .get("/meters/{id}", VIEWER, ui::meter)
        .get("/alarms", VIEWER, ui::alarms)
        .get("/logbook", VIEWER, ui::logbook)
        .post("/logbook", MANAGER, ui::logbook_add)
        .post("/logbook/{entry}/revise", MANAGER, ui::logbook_revise)
        .post("/logbook/{entry}/withdraw", MANAGER, ui::logbook_withdraw)
        .get("/system", VIEWER, ui::system)
        .get("/status", VIEWER, index)
        .get("/lang/{code}", Public, ui::set_lang)
        .get("/assets/{name}", Public, ui::assets::serve)
        .get("/healthz", Public, healthz)
        .get("/metrics", Metrics, metrics)
        // Accounts (auth.rs, users.rs).
        .get("/login", Public, auth::login_form)
        .post("/login", Public, auth::login)
        .post("/logout", VIEWER, auth::logout)
        .get("/api/session", VIEWER, auth::session)
        .get("/users", ADMIN, users::page_handler)
        .post("/users", ADMIN, users::add)
        .post("/users/password", ADMIN, users::password)
        .post("/users/{name}/remove", ADMIN, users::remove)
        .get("/api/users", ADMIN, users::list)
        .get("/api/audit", ADMIN, users::audit)
        // The plant.
        .get("/api/status", VIEWER, api_status)
        .get("/api/live", VIEWER, live::live)
        .get("/api/history", VIEWER, history::history)
        .get("/api/logbook", VIEWER, logbook::list)
        .post("/api/logbook", MANAGER, logbook::add)
        .post("/api/logbook/{entry}/revise", MANAGER, logbook::revise)
        .post("/api/logbook/{entry}/withdraw", MANAGER, logbook::withdraw)
        .get("/api/kpi", VIEWER, kpi::kpi)
        .get("/api/alarms", VIEWER, alarms::list)
        .post("/api/alarms/silence", MANAGER, alarms::silence_all)
        .get("/api/alarms/{id}", VIEWER, alarms::one)
        .post("/api/alarms/{id}/{action}", MANAGER, alarms::operate)
        .get("/api/commands", VIEWER, commands::list)
        .post("/api/commands", ADMIN, commands::submit)
}

/// The routes of [`routes`] as a table (method, path, access): what the access tests walk.
pub fn route_table() -> Vec<auth::Route> {
    routes().table().to_vec()
}

pub fn router(state: Arc<AppState>) -> Router {
    routes()
        .finish(state)
        .layer(axum::middleware::from_fn(gzip_json))
}

/// JSON answers of more than 1 KB are gzip-compressed for a client that accepts it (the
/// dashboard's 7-day charts over a phone's Wi-Fi: `/api/history` shrinks about tenfold). The
/// live stream (`text/event-stream`) and the pages (compressed by `ui::page`) pass as they are.
async fn gzip_json(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header;
    let accepts = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let r = next.run(req).await;
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !accepts || !json || r.headers().contains_key(header::CONTENT_ENCODING) {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    // Every JSON answer is built in memory already; 64 MB bounds a mistake.
    let bytes = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "web: cannot read a JSON answer to compress it");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    parts.headers.append(
        header::VARY,
        header::HeaderValue::from_static("accept-encoding"),
    );
    if bytes.len() <= 1024 {
        return axum::response::Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = gz.write_all(&bytes);
    let packed = gz.finish().unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_ENCODING,
        header::HeaderValue::from_static("gzip"),
    );
    axum::response::Response::from_parts(parts, axum::body::Body::from(packed))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    cancel: CancellationToken,
) {
    let result = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
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
            state: if stale {
                health::State::Offline
            } else {
                health::State::Online
            },
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
                cadence_s: if *n == "aggregate" { 60.0 } else { 0.0 },
            })
            .collect();
        let (health, reasons) = assess(
            store_failing.then(|| "store commits are failing".to_owned()),
            &devices,
            &consumers,
        );
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
