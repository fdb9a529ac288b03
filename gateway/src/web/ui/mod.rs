//! The kitchen manager's dashboard: server-rendered pages (maud: HTML checked at compile
//! time), readable without JavaScript; `assets/app.js` adds live values and alarms (from
//! `/api/live`'s server-sent events), the connection-lost banner and the charts (uPlot, from
//! `/api/history`). English and Kiswahili ([`i18n`]); times in the site's zone; numbers with
//! each quantity's unit and precision.
//!
//! Pages: `/` overview, `/digester`, `/gas`, `/meters`, `/meters/{id}`, `/alarms`, `/logbook`,
//! `/system`; `/lang/{code}` switches the language (a cookie); `/assets/{name}` the embedded
//! files. Every page is gzip-compressed when the browser accepts it.
//!
//! *Invariant: the pages read only [`AppState`] (the same sources as the JSON API) and write
//! only through the same engine requests and store calls the API uses.*

pub mod assets;
pub mod i18n;
pub mod latest;
mod logbook;

pub use logbook::{logbook, logbook_add, logbook_revise, logbook_withdraw};

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};

use super::auth::Caller;
use super::AppState;
use crate::aggregate::kpi::{KpiSet, Period};
use crate::alarm::{Severity, State as AlarmState, View};
use crate::model::Value;
use crate::users::Role;
use axum::Extension;
use i18n::{Arg, Lang, Tr};

/// The quantities of the overview's tiles, in order.
const OVERVIEW: &[&str] = &[
    "digester.pressure",
    "digester.temperature",
    "digester.ph",
    "biogas.ch4",
    "biogas.h2s",
    "gas.flow",
    "compressor.discharge_pressure",
    "compressor.state",
    "kitchen.ch4_lel",
];

const DIGESTER_CHARTS: &[&str] = &[
    "digester.pressure",
    "digester.temperature",
    "biogas.ch4",
    "biogas.co2",
    "biogas.h2s",
];

const GAS_TILES: &[&str] = &[
    "gas.flow",
    "gas.volume",
    "compressor.state",
    "compressor.discharge_pressure",
    "compressor.temperature",
    "compressor.current",
    "contact.run_hours",
    "contact.starts",
    "power.active",
];

/// A value older than this is shown as stale (grey).
const STALE_NS: i64 = 5 * 60 * 1_000_000_000;
/// Credit at or below this is "low" (kg or kWh): the meters table puts it first.
const LOW_CREDIT: f64 = 1.0;
/// A meter not heard from for this long is offline.
const OFFLINE_NS: i64 = 30 * 60 * 1_000_000_000;

/// What every page needs: the language, the path, the time and the alarms.
struct Ctx {
    t: Tr,
    path: String,
    now_ns: i64,
    alarms: Vec<View>,
    site: String,
    user: String,
    role: Role,
    /// The session's CSRF token, in every form.
    csrf: String,
    /// The site's offset from UTC (the charts' axes are in the site's time).
    utc_offset_s: i32,
}

impl Ctx {
    fn manager(&self) -> bool {
        self.role >= Role::Manager
    }
}

pub(crate) fn lang_of(headers: &HeaderMap) -> Lang {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("lang="))
        .find_map(Lang::parse);
    if let Some(l) = cookie {
        return l;
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.trim_start().to_ascii_lowercase().starts_with("sw") {
        Lang::Sw
    } else {
        Lang::En
    }
}

fn ctx(s: &AppState, headers: &HeaderMap, path: &str, caller: &Caller) -> Ctx {
    Ctx {
        user: caller.user.clone(),
        role: caller.role,
        csrf: caller.csrf.clone().unwrap_or_default(),
        t: Tr::new(lang_of(headers)),
        path: path.to_owned(),
        now_ns: s.clock.now().ts_ns,
        alarms: s
            .alarms
            .as_ref()
            .map(|h| h.snapshot().alarms)
            .unwrap_or_default(),
        site: s.site.clone(),
        utc_offset_s: s.kpi.zone().offset_s(),
    }
}

/// A page as HTML, gzip-compressed when the browser accepts it.
fn page(headers: &HeaderMap, status: StatusCode, m: Markup) -> Response {
    let body = m.into_string();
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let mut h = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::VARY,
            HeaderValue::from_static("accept-encoding, cookie"),
        ),
    ];
    if gzip {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = gz.write_all(body.as_bytes());
        h.push((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")));
        let mut r = (status, gz.finish().unwrap_or_default()).into_response();
        r.headers_mut().extend(h);
        r
    } else {
        let mut r = (status, body).into_response();
        r.headers_mut().extend(h);
        r
    }
}

fn role_msg(t: &Tr, r: Role) -> String {
    match r {
        Role::Viewer => t.s("role-viewer"),
        Role::Manager => t.s("role-manager"),
        Role::Admin => t.s("role-admin"),
    }
}

/// The alarms the banner counts: not normal and not shelved, worst first (the snapshot's order).
pub(crate) fn banner_alarms(alarms: &[View]) -> Vec<&View> {
    alarms
        .iter()
        .filter(|a| a.state != AlarmState::Normal && a.shelved_until.is_none())
        .collect()
}

pub(crate) fn severity_class(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warn",
        Severity::Alarm => "alarm",
        Severity::Critical => "crit",
    }
}

fn severity_msg(t: &Tr, s: Severity) -> String {
    match s {
        Severity::Info => t.s("severity-info"),
        Severity::Warning => t.s("severity-warning"),
        Severity::Alarm => t.s("severity-alarm"),
        Severity::Critical => t.s("severity-critical"),
    }
}

fn state_msg(t: &Tr, s: AlarmState) -> String {
    match s {
        AlarmState::Normal => t.s("alarm-state-normal"),
        AlarmState::ActiveUnacknowledged => t.s("alarm-state-unack"),
        AlarmState::ActiveAcknowledged => t.s("alarm-state-ack"),
        AlarmState::ClearedUnacknowledged => t.s("alarm-state-cleared-unack"),
    }
}

/// The name of a quantity for people; the catalogue name when there is no translation.
fn quantity_name(t: &Tr, q: &str) -> String {
    let id = format!("q-{}", q.replace(['.', '_'], "-"));
    let s = t.s(&id);
    if s == id {
        q.to_owned()
    } else {
        s
    }
}

/// `HH:MM` (today) or `D Mon HH:MM` in the site's time zone.
fn local_time(s: &AppState, now_ns: i64, ns: i64) -> String {
    let off = s.kpi.zone().fixed_offset();
    let t = chrono::DateTime::from_timestamp_nanos(ns).with_timezone(&off);
    let now = chrono::DateTime::from_timestamp_nanos(now_ns).with_timezone(&off);
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%d.%m %H:%M").to_string()
    }
}

/// `Wed 02.12`: a local day.
fn local_date(s: &AppState, ns: i64) -> String {
    let off = s.kpi.zone().fixed_offset();
    chrono::DateTime::from_timestamp_nanos(ns)
        .with_timezone(&off)
        .format("%d.%m.%Y")
        .to_string()
}

fn ago(t: &Tr, now_ns: i64, ns: i64) -> String {
    let s = ((now_ns - ns) / 1_000_000_000).max(0);
    if s < 90 {
        t.a("ago-seconds", &[("n", Arg::N(s as f64))])
    } else if s < 90 * 60 {
        t.a("ago-minutes", &[("n", Arg::N((s / 60) as f64))])
    } else if s < 36 * 3600 {
        t.a("ago-hours", &[("n", Arg::N((s / 3600) as f64))])
    } else {
        t.a("ago-days", &[("n", Arg::N((s / 86_400) as f64))])
    }
}

/// A value of `quantity` with its unit and precision (`—` when there is none).
fn show(s: &AppState, quantity: &str, v: Option<&latest::Current>) -> String {
    let Some(c) = v else {
        return "—".into();
    };
    if let Value::Str(x) = &c.value {
        if x.is_empty() {
            return c.fault.clone().unwrap_or_else(|| "—".into());
        }
    }
    match s.plant.catalogue.get(quantity) {
        Some(q) => q.display(&c.value),
        None => match &c.value {
            Value::Float(f) => format!("{f}"),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Str(x) => x.clone(),
        },
    }
}

fn layout(c: &Ctx, title: &str, body: Markup) -> Markup {
    let t = &c.t;
    let active = banner_alarms(&c.alarms);
    let worst = active.iter().map(|a| a.severity).max();
    let nav = [
        ("/", t.s("nav-overview")),
        ("/digester", t.s("nav-digester")),
        ("/gas", t.s("nav-gas")),
        ("/meters", t.s("nav-meters")),
        ("/alarms", t.s("nav-alarms")),
        ("/logbook", t.s("nav-logbook")),
        ("/system", t.s("nav-system")),
    ];
    let admin = c.role >= Role::Admin;
    let other = t.lang.other();
    html! {
        (DOCTYPE)
        html lang=(t.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (c.site) }
                link rel="stylesheet" href=(assets::url("app.css"));
                script src=(assets::url("app.js")) defer {}
            }
            body data-lang=(t.lang.code()) data-utc-offset=(c.utc_offset_s) data-lost=(t.s("connection-lost")) data-back=(t.s("connection-back")) data-ended=(t.s("session-ended")) data-signin=(t.s("sign-in-again")) {
                header {
                    a.brand href="/" { (t.s("brand")) }
                    span.site { (c.site) }
                    a.lang href=(format!("/lang/{}?next={}", other.code(), c.path)) lang=(other.code()) {
                        (t.s("switch-language"))
                    }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(c.csrf);
                        span.user { (c.user) " (" (role_msg(t, c.role)) ")" }
                        " "
                        button type="submit" { (t.s("log-out")) }
                    }
                }
                nav {
                    @for (href, label) in &nav {
                        @let here = *href == c.path || (*href != "/" && c.path.starts_with(href));
                        a href=(href) class=[here.then_some("here")] { (label) }
                    }
                    @if admin { a href="/users" { (t.s("nav-users")) } }
                }
                div #conn .banner .lost hidden { (t.s("connection-lost")) }
                div #alarm-banner class=(format!("banner {}", worst.map_or("none", severity_class))) hidden[active.is_empty()] {
                    a href="/alarms" {
                        span #alarm-count { (t.a("alarms-active", &[("count", Arg::N(active.len() as f64))])) }
                        @if let Some(a) = active.first() {
                            ": " span #alarm-first { (t.alarm(&a.rule, &a.message)) }
                        }
                    }
                }
                main { h1 { (title) } (body) }
                footer { (t.s("footer-offline")) }
            }
        }
    }
}

/// A state code by its name (the Modbus profile's `[field.enum]`, as the device's latest
/// values have it), translated when the dashboard knows the word: `3` → "running".
fn named_state(s: &AppState, t: &Tr, quantity: &str, instance: &str) -> Option<String> {
    let q = s.plant.catalogue.get(quantity)?;
    if q.kind != crate::plant::Kind::State && q.kind != crate::plant::Kind::Text {
        return None;
    }
    let field = s
        .plant
        .bindings()
        .iter()
        .find(|b| b.quantity.name == quantity && b.instance.to_string() == instance)
        .map(|b| b.field.clone())?;
    let devices = s.modbus.lock().ok()?;
    let text = devices.get(instance)?.latest.get(&field)?.clone();
    Some(state_word(t, &text))
}

/// A state word in the page's language when the dashboard has it (`running` → "inafanya kazi").
fn state_word(t: &Tr, word: &str) -> String {
    let id = format!(
        "state-{}",
        word.trim().to_ascii_lowercase().replace([' ', '_'], "-")
    );
    let s = t.s(&id);
    if s == id {
        word.to_owned()
    } else {
        s
    }
}

fn tile(s: &AppState, c: &Ctx, quantity: &str, instance: Option<&str>) -> Markup {
    let found = match instance {
        Some(i) => s.latest.get(quantity, i).map(|v| (i.to_owned(), v)),
        None => s.latest.first(quantity),
    };
    let (inst, cur) = match &found {
        Some((i, v)) => (i.clone(), Some(v)),
        None => (String::new(), None),
    };
    let alarm = c
        .alarms
        .iter()
        .filter(|a| {
            a.quantity == quantity
                && (inst.is_empty() || *a.instance == *inst)
                && a.state != AlarmState::Normal
        })
        .map(|a| a.severity)
        .max();
    let stale = cur.is_none_or(|v| c.now_ns - v.ts_ns > STALE_NS || v.fault.is_some());
    let class = match (alarm, stale) {
        (Some(sev), _) => severity_class(sev),
        (None, true) => "stale",
        (None, false) => "ok",
    };
    html! {
        div class=(format!("tile {class}")) data-q=(quantity) data-i=(inst) {
            span.label { (quantity_name(&c.t, quantity)) }
            span.value { (named_state(s, &c.t, quantity, &inst).unwrap_or_else(|| show(s, quantity, cur))) }
            span.age data-ts=(cur.map_or(0, |v| v.ts_ns / 1_000_000)) {
                @if let Some(v) = cur { (ago(&c.t, c.now_ns, v.ts_ns)) } @else { (c.t.s("no-reading")) }
                @if let Some(f) = cur.and_then(|v| v.fault.as_deref()) { " · " (f) }
            }
        }
    }
}

/// The KPI sets of today and the 6 days before (newest first).
async fn days(s: &Arc<AppState>, now_ns: i64, n: usize) -> Vec<KpiSet> {
    let engine = s.kpi.clone();
    let today = engine.period_start(Period::Day, now_ns);
    let from = today - (n as i64 - 1) * 86_400_000_000_000;
    let to = engine.period_end(Period::Day, today);
    let entries = s
        .logbook
        .run(move |b| b.list(from, to, false))
        .await
        .unwrap_or_default();
    let e = engine.clone();
    let mut sets = s
        .history
        .run(move |(_, windows)| {
            e.starts(Period::Day, from, to)
                .into_iter()
                .filter_map(|st| {
                    let feed =
                        crate::aggregate::kpi::feed_of(&entries, st, e.period_end(Period::Day, st));
                    e.period(windows, Period::Day, st, &feed).ok()
                })
                .collect::<Vec<_>>()
        })
        .await;
    sets.reverse();
    sets
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

/// Free and total bytes of the filesystem holding `dir`.
fn disk_free(dir: &std::path::Path) -> Option<(u64, u64)> {
    crate::os::disk_space(dir)
}

/// A KPI figure with its own unit and `decimals` (`—` when the set or the value is missing).
fn figure(set: Option<&KpiSet>, name: &str, decimals: usize) -> String {
    let f = set.and_then(|k| k.figures.iter().find(|f| f.name == name));
    match f.map(|f| (&f.value, f.unit)) {
        Some((Ok(x), unit)) if x.is_finite() => {
            format!("{x:.decimals$} {unit}").trim_end().to_owned()
        }
        _ => "—".into(),
    }
}

pub async fn overview(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(&s, &headers, "/", &caller);
    let t = &c.t;
    let sets = days(&s, c.now_ns, 2).await;
    let (today, yesterday) = (sets.first(), sets.get(1));
    let meters = meter_rows(&s, c.now_ns);
    let attention = meters.iter().filter(|m| m.low || m.offline).count();
    let body = html! {
        section.tiles {
            @for q in OVERVIEW {
                @if s.latest.first(q).is_some() || s.plant.bindings().iter().any(|b| b.quantity.name == *q) {
                    (tile(&s, &c, q, None))
                }
            }
        }
        section.cards {
            div.card {
                h2 { (t.s("gas-today")) }
                p.big { (figure(today, "normal_gas_nm3", 1)) }
                p { (t.s("gas-metered")) ": " (figure(today, "gas_metered_m3", 1)) }
            }
            div.card {
                h2 { (t.s("gas-yesterday")) }
                p.big { (figure(yesterday, "normal_gas_nm3", 1)) }
                p { (t.s("gas-metered")) ": " (figure(yesterday, "gas_metered_m3", 1)) }
            }
            div.card {
                h2 { (t.s("meters-attention")) }
                p.big { (attention) " / " (meters.len()) }
                p { a href="/meters" { (t.s("see-meters")) } }
            }
        }
    };
    page(
        &headers,
        StatusCode::OK,
        layout(&c, &t.s("title-overview"), body),
    )
}

#[derive(serde::Deserialize)]
pub struct SpanQuery {
    span: Option<String>,
}

fn chart(c: &Ctx, quantity: &str, instance: &str, hours: u32) -> Markup {
    html! {
        figure.chart data-q=(quantity) data-i=(instance) data-hours=(hours) {
            figcaption { (quantity_name(&c.t, quantity)) }
            div.plot {}
            noscript { (c.t.s("charts-need-js")) }
        }
    }
}

/// Why a KPI figure is missing, in the page's language.
fn missing_msg(t: &Tr, m: &crate::plant::kpi::Missing) -> String {
    use crate::plant::kpi::Missing as M;
    let what = |w: &str| Arg::S(w.to_owned());
    match m {
        M::NoGasVolume => t.s("missing-gas-volume"),
        M::NoPressure => t.s("missing-pressure"),
        M::NoGasTemperature => t.s("missing-gas-temperature"),
        M::NoAtmosphericPressure => t.s("missing-atmospheric-pressure"),
        M::NoCh4 => t.s("missing-ch4"),
        M::NoFeed => t.s("missing-feed"),
        M::NoWater => t.s("missing-water"),
        M::NoCompressorEnergy => t.s("missing-compressor-energy"),
        M::NoGasSold => t.s("missing-gas-sold"),
        M::NoCylinders => t.s("missing-cylinders"),
        M::NotConfigured(w) => t.a("missing-not-configured", &[("what", what(w))]),
        M::ZeroDivisor(w) => t.a("missing-zero", &[("what", what(w))]),
        M::Bad(w) => t.a("missing-bad", &[("what", what(w))]),
    }
}

fn kpi_table(c: &Ctx, sets: &[KpiSet], names: &[(&str, usize)], s: &AppState) -> Markup {
    let t = &c.t;
    html! {
        div.scroll {
            table.kpi {
                thead { tr {
                    th { (t.s("day")) }
                    @for (n, _) in names { th { (t.s(&format!("kpi-{}", n.replace('_', "-")))) } }
                } }
                tbody {
                    @for set in sets {
                        tr {
                            td { (local_date(s, set.period_start_ns)) }
                            @for (n, d) in names {
                                td.num title=(set.get(n).and_then(|v| v.as_ref().err()).map(|m| missing_msg(t, m)).unwrap_or_default()) {
                                    (figure(Some(set), n, *d))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn digester(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<SpanQuery>,
) -> Response {
    let c = ctx(&s, &headers, "/digester", &caller);
    let t = &c.t;
    let hours = if q.span.as_deref() == Some("7d") {
        168
    } else {
        24
    };
    let sets = days(&s, c.now_ns, 7).await;
    let body = html! {
        section.tiles {
            @for q in ["digester.pressure", "digester.temperature", "digester.ph", "digester.fos_tac", "biogas.ch4", "biogas.co2", "biogas.h2s"] {
                @if s.latest.first(q).is_some() { (tile(&s, &c, q, None)) }
            }
        }
        p.spans {
            a href="/digester?span=24h" class=[(hours == 24).then_some("here")] { (t.s("span-24h")) }
            " · "
            a href="/digester?span=7d" class=[(hours == 168).then_some("here")] { (t.s("span-7d")) }
        }
        section.charts {
            @for q in DIGESTER_CHARTS {
                @if let Some((i, _)) = s.latest.first(q) { (chart(&c, q, &i, hours)) }
            }
        }
        h2 { (t.s("kpis-7-days")) }
        (kpi_table(&c, &sets, &[
            ("normal_gas_nm3", 1),
            ("methane_nm3", 1),
            ("energy_kwh", 0),
            ("waste_fed_kg", 0),
            ("specific_yield_nm3_per_kg_vs", 2),
            ("organic_loading_rate", 2),
            ("hrt_days", 0),
        ], &s))
    };
    page(
        &headers,
        StatusCode::OK,
        layout(&c, &t.s("title-digester"), body),
    )
}

pub async fn gas(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(&s, &headers, "/gas", &caller);
    let t = &c.t;
    let sets = days(&s, c.now_ns, 7).await;
    let body = html! {
        section.tiles {
            @for q in GAS_TILES {
                @if s.latest.first(q).is_some() { (tile(&s, &c, q, None)) }
            }
        }
        section.charts {
            @if let Some((i, _)) = s.latest.first("gas.flow") { (chart(&c, "gas.flow", &i, 24)) }
        }
        h2 { (t.s("kpis-7-days")) }
        (kpi_table(&c, &sets, &[
            ("normal_gas_nm3", 1),
            ("cylinders_filled", 0),
            ("compressor_kwh", 1),
            ("compressor_kwh_per_nm3", 2),
            ("gas_sold_nm3", 1),
            ("gas_utilisation", 2),
        ], &s))
    };
    page(
        &headers,
        StatusCode::OK,
        layout(&c, &t.s("title-gas"), body),
    )
}

/// One row of the meters table.
struct MeterRow {
    id: String,
    credit: Option<latest::Current>,
    used: Option<latest::Current>,
    valve: Option<latest::Current>,
    battery: Option<latest::Current>,
    rssi: Option<latest::Current>,
    last_ns: i64,
    low: bool,
    offline: bool,
}

fn meter_rows(s: &AppState, now_ns: i64) -> Vec<MeterRow> {
    let mut ids: std::collections::BTreeSet<String> = Default::default();
    for q in ["meter.credit", "meter.gas_used", "meter.energy_used"] {
        ids.extend(s.latest.instances(q).into_iter().map(|(i, _)| i));
    }
    ids.into_iter()
        .map(|id| {
            let g = |q: &str| s.latest.get(q, &id);
            let credit = g("meter.credit");
            let used = g("meter.gas_used").or_else(|| g("meter.energy_used"));
            let valve = g("meter.valve").or_else(|| g("meter.relay"));
            let (battery, rssi) = (g("meter.battery"), g("meter.rssi"));
            let last_ns = [&credit, &used, &valve, &battery, &rssi]
                .iter()
                .filter_map(|c| c.as_ref().map(|c| c.ts_ns))
                .max()
                .unwrap_or(0);
            let low = credit
                .as_ref()
                .and_then(|c| as_f64(&c.value))
                .is_some_and(|v| v <= LOW_CREDIT);
            MeterRow {
                offline: now_ns - last_ns > OFFLINE_NS,
                id,
                credit,
                used,
                valve,
                battery,
                rssi,
                last_ns,
                low,
            }
        })
        .collect()
}

#[derive(serde::Deserialize)]
pub struct SortQuery {
    sort: Option<String>,
}

pub async fn meters(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<SortQuery>,
) -> Response {
    let c = ctx(&s, &headers, "/meters", &caller);
    let t = &c.t;
    let mut rows = meter_rows(&s, c.now_ns);
    let f = |v: &Option<latest::Current>| v.as_ref().and_then(|c| as_f64(&c.value));
    let sort = q.sort.unwrap_or_else(|| "attention".into());
    match sort.as_str() {
        "id" => rows.sort_by(|a, b| a.id.cmp(&b.id)),
        "credit" => rows.sort_by(|a, b| {
            f(&a.credit)
                .partial_cmp(&f(&b.credit))
                .unwrap_or(std::cmp::Ordering::Equal)
        }),
        "battery" => rows.sort_by(|a, b| {
            f(&a.battery)
                .partial_cmp(&f(&b.battery))
                .unwrap_or(std::cmp::Ordering::Equal)
        }),
        "signal" => rows.sort_by(|a, b| {
            f(&a.rssi)
                .partial_cmp(&f(&b.rssi))
                .unwrap_or(std::cmp::Ordering::Equal)
        }),
        "seen" => rows.sort_by_key(|r| r.last_ns),
        // Offline first, then low credit, then by id.
        _ => rows.sort_by(|a, b| (!a.offline, !a.low, &a.id).cmp(&(!b.offline, !b.low, &b.id))),
    }
    let cols = [
        ("id", t.s("col-meter")),
        ("credit", t.s("col-credit")),
        ("used", t.s("col-used")),
        ("valve", t.s("col-valve")),
        ("battery", t.s("col-battery")),
        ("signal", t.s("col-signal")),
        ("seen", t.s("col-last-seen")),
    ];
    let body = html! {
        p { (t.a("meters-count", &[("count", Arg::N(rows.len() as f64))])) " · " (t.s("meters-sorted")) }
        div.scroll {
            table.meters {
                thead { tr {
                    @for (key, label) in &cols {
                        th { @if *key == "used" { (label) } @else { a href=(format!("/meters?sort={key}")) class=[(sort == *key).then_some("here")] { (label) } } }
                    }
                } }
                tbody {
                    @for r in &rows {
                        tr class=(match (r.offline, r.low) { (true, true) => "offline low", (true, false) => "offline", (false, true) => "low", _ => "" }) data-meter=(r.id) {
                            td { a href=(format!("/meters/{}", r.id)) { (r.id) } }
                            td.num data-q="meter.credit" { (show(&s, "meter.credit", r.credit.as_ref())) @if r.low { " " span.tag { (t.s("low-credit")) } } }
                            td.num data-q="meter.gas_used" { (show(&s, "meter.gas_used", r.used.as_ref())) }
                            td data-q="meter.valve" { (state_word(t, &show(&s, "meter.valve", r.valve.as_ref()))) }
                            td.num data-q="meter.battery" { (show(&s, "meter.battery", r.battery.as_ref())) }
                            td.num data-q="meter.rssi" { (show(&s, "meter.rssi", r.rssi.as_ref())) }
                            td { (if r.last_ns > 0 { ago(t, c.now_ns, r.last_ns) } else { "—".into() }) @if r.offline { " " span.tag { (t.s("offline")) } } }
                        }
                    }
                }
            }
        }
    };
    page(
        &headers,
        StatusCode::OK,
        layout(&c, &t.s("title-meters"), body),
    )
}

pub async fn meter(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let c = ctx(&s, &headers, &format!("/meters/{id}"), &caller);
    let t = &c.t;
    let known = meter_rows(&s, c.now_ns).into_iter().any(|r| r.id == id);
    if !known {
        let body =
            html! { p { (t.s("meter-unknown")) } p { a href="/meters" { (t.s("see-meters")) } } };
        return page(&headers, StatusCode::NOT_FOUND, layout(&c, &id, body));
    }
    let body = html! {
        section.tiles {
            @for q in ["meter.credit", "meter.gas_used", "meter.energy_used", "meter.valve", "meter.relay", "meter.battery", "meter.rssi", "meter.status"] {
                @if s.latest.get(q, &id).is_some() { (tile(&s, &c, q, Some(&id))) }
            }
        }
        section.charts {
            @for q in ["meter.credit", "meter.gas_used", "meter.energy_used"] {
                @if s.latest.get(q, &id).is_some() { (chart(&c, q, &id, 168)) }
            }
        }
    };
    page(
        &headers,
        StatusCode::OK,
        layout(&c, &format!("{} {id}", t.s("col-meter")), body),
    )
}

pub async fn alarms(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(&s, &headers, "/alarms", &caller);
    let t = &c.t;
    let history = match &s.alarms {
        Some(h) => h
            .store
            .run(|a| a.recent(None, 50))
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let max_shelve_h = s.alarms.as_ref().map_or(24, |h| h.max_shelve_hours);
    let body = html! {
        @if s.alarms.is_none() { p { (t.s("alarms-disabled")) } }
        h2 { (t.s("alarms-now")) }
        @if c.alarms.is_empty() { p.ok { (t.s("alarms-none")) } }
        @for a in &c.alarms {
            article class=(format!("acard {}", severity_class(a.severity))) {
                h3 { (severity_msg(t, a.severity)) ": " (t.alarm(&a.rule, &a.message)) }
                p {
                    (state_msg(t, a.state))
                    @if a.shelved_until.is_some() { " · " (t.s("alarm-shelved")) }
                    @if a.silenced { " · " (t.s("alarm-silenced")) }
                    " · " (t.s("since")) " " (local_time(&s, c.now_ns, a.since_ns))
                    " · " code { (a.id) }
                }
                @if !c.manager() { p.hint { (t.s("alarms-manager-only")) } }
                @if c.manager() { div.actions {
                    @if matches!(a.state, AlarmState::ActiveUnacknowledged | AlarmState::ClearedUnacknowledged) {
                        (action_form(&c, &a.id, "ack", &t.s("action-ack"), false, 0))
                    }
                    @if a.latched && a.state != AlarmState::Normal && !a.condition {
                        (action_form(&c, &a.id, "reset", &t.s("action-reset"), false, 0))
                    }
                    @if a.shelved_until.is_some() {
                        (action_form(&c, &a.id, "unshelve", &t.s("action-unshelve"), false, 0))
                    } @else {
                        (action_form(&c, &a.id, "shelve", &t.s("action-shelve"), true, max_shelve_h))
                    }
                } }
            }
        }
        h2 { (t.s("alarms-history")) }
        div.scroll {
            table {
                thead { tr { th { (t.s("col-time")) } th { (t.s("col-alarm")) } th { (t.s("col-action")) } th { (t.s("col-by")) } } }
                tbody {
                    @for e in &history {
                        tr class=(severity_class(e.severity)) {
                            td { (local_time(&s, c.now_ns, e.ts_ns)) }
                            td { code { (e.rule) "/" (e.instance) } }
                            td { (e.action.as_str()) }
                            td { (e.by.clone().unwrap_or_default()) @if let Some(n) = &e.note { " — " (n) } }
                        }
                    }
                }
            }
        }
    };
    page(
        &headers,
        StatusCode::OK,
        layout(&c, &t.s("title-alarms"), body),
    )
}

fn action_form(c: &Ctx, id: &str, action: &str, label: &str, minutes: bool, max_h: u64) -> Markup {
    let t = &c.t;
    html! {
        form method="post" action=(format!("/api/alarms/{id}/{action}")) {
            input type="hidden" name="redirect" value="/alarms";
            input type="hidden" name="csrf" value=(c.csrf);
            @if minutes {
                label { (t.s("shelve-hours")) " "
                    input type="number" name="hours" min="1" max=(max_h) value="1" required;
                }
            }
            label { (t.s("note")) " " input type="text" name="note" maxlength="200"; }
            button type="submit" { (label) }
        }
    }
}

/// `GET /users` (admins): the accounts, and forms to add one, set a password, remove one; the
/// outcome of the last change (`done`/`error`: a message id the handler checked) above them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn users_page(
    s: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
    list: &[super::users::UserDto],
    done: Option<&str>,
    error: Option<&str>,
    name: &str,
    role: &str,
) -> Response {
    let c = ctx(s, headers, "/users", caller);
    let t = &c.t;
    let role_name = |r: &str| Role::parse(r).map_or(r.to_owned(), |r| role_msg(t, r));
    let args = [
        ("name", Arg::S(name.to_owned())),
        ("role", Arg::S(role_name(role))),
        ("min", Arg::N(crate::users::MIN_PASSWORD as f64)),
    ];
    let body = html! {
        @if let Some(d) = done { p.ok role="status" { (t.a(&format!("users-done-{d}"), &args)) } }
        @if let Some(e) = error { p.error role="alert" { (t.a(&format!("users-error-{e}"), &args)) } }
        div.scroll {
            table {
                thead { tr { th { (t.s("users-name")) } th { (t.s("users-role")) } th { (t.s("users-last-login")) } th { (t.s("users-sessions")) } th {} } }
                tbody {
                    @for u in list {
                        tr {
                            td { (u.name) }
                            td { (role_name(u.role)) }
                            td {
                                @match u.last_login.as_deref().and_then(|l| chrono::DateTime::parse_from_rfc3339(l).ok()).and_then(|d| d.timestamp_nanos_opt()) {
                                    Some(ns) => (local_time(s, c.now_ns, ns)),
                                    None => (t.s("users-never")),
                                }
                            }
                            td.num { (u.sessions) }
                            td {
                                @if u.name != c.user {
                                    form method="post" action=(format!("/users/{}/remove", u.name)) {
                                        input type="hidden" name="csrf" value=(c.csrf);
                                        button.danger type="submit" { (t.s("users-remove")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { (t.s("users-add")) }
        form.logbook method="post" action="/users" {
            input type="hidden" name="csrf" value=(c.csrf);
            div.field { label for="u-name" { (t.s("users-name")) } input #u-name name="name" autocapitalize="none" required; }
            div.field {
                label for="u-role" { (t.s("users-role")) }
                select #u-role name="role" {
                    @for r in [Role::Viewer, Role::Manager, Role::Admin] { option value=(r.as_str()) { (role_msg(t, r)) } }
                }
            }
            div.field {
                label for="u-password" { (t.a("users-password", &args)) }
                input #u-password name="password" type="password" autocomplete="new-password" required;
            }
            button type="submit" { (t.s("users-add-button")) }
        }
        h2 { (t.s("users-set-password")) }
        form.logbook method="post" action="/users/password" {
            input type="hidden" name="csrf" value=(c.csrf);
            div.field {
                label for="u-who" { (t.s("users-name")) }
                select #u-who name="name" { @for u in list { option value=(u.name) { (u.name) } } }
            }
            div.field {
                label for="u-new" { (t.a("users-password", &args)) }
                input #u-new name="password" type="password" autocomplete="new-password" required;
            }
            button type="submit" { (t.s("users-set-button")) }
            p.hint { (t.s("users-set-hint")) }
        }
    };
    page(
        headers,
        StatusCode::OK,
        layout(&c, &t.s("title-users"), body),
    )
}

/// A form's `application/x-www-form-urlencoded` pairs (none when it does not decode).
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

pub async fn system(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(&s, &headers, "/system", &caller);
    let t = &c.t;
    let d = super::status_dto(&s).await;
    let uptime_s = (c.now_ns - s.started_ns).max(0) / 1_000_000_000;
    let disk = disk_free(&s.state_dir);
    let row = |k: String, v: String| html! { tr { th { (k) } td { (v) } } };
    let body = html! {
        section.cards {
            div class=(if d.healthy { "card ok" } else { "card alarm" }) {
                h2 { (t.s("health")) }
                p.big { (d.health) }
                @for r in &d.health_reasons { p { (r) } }
            }
        }
        div.scroll { table.kv { tbody {
            (row(t.s("sys-version"), d.version.to_owned()))
            (row(t.s("sys-uptime"), format!("{} h {} min", uptime_s / 3600, uptime_s / 60 % 60)))
            (row(t.s("sys-clock"), if d.clock.synced { t.s("clock-synced") } else { t.s("clock-unsynced") }))
            (row(t.s("sys-store"), format!("{:.1} MB, {} {}", d.store_file_bytes as f64 / 1e6, d.store_readings, t.s("readings"))))
            (row(t.s("sys-disk"), disk.map_or("—".into(), |(free, total)| format!("{:.1} / {:.1} GB {}", free as f64 / 1e9, total as f64 / 1e9, t.s("free")))))
            (row(t.s("sys-mqtt"), format!("{} {}, {} {}", d.mqtt_connections, t.s("connections"), d.mqtt_messages, t.s("messages"))))
            (row(t.s("sys-readings"), format!("{} {}, {} {}", d.readings_accepted, t.s("accepted"), d.readings_rejected.values().sum::<u64>(), t.s("rejected"))))
            (row(t.s("sys-influx"), format!("{} {}, {} {}", d.influx_points_written, t.s("written"), d.influx_write_errors, t.s("errors"))))
        } } }
        h2 { (t.s("sys-consumers")) }
        div.scroll { table {
            thead { tr { th { (t.s("col-consumer")) } th { (t.s("col-backlog")) } th { (t.s("col-oldest-unsent")) } } }
            tbody { @for k in &d.consumers { tr {
                td { (k.name) } td.num { (k.backlog) }
                td { (k.oldest_unsent_age_s.map_or("—".into(), |a| format!("{a:.0} s"))) }
            } } }
        } }
        h2 { (t.s("sys-devices")) }
        div.scroll { table {
            thead { tr { th { (t.s("col-device")) } th { (t.s("col-state")) } th { (t.s("col-requests")) } th { (t.s("col-errors")) } th { (t.s("col-last-answer")) } } }
            tbody { @for m in &d.modbus { tr class=[m.stale.then_some("offline")] {
                td { (m.name) " " small { (m.bus) } } td { (m.state.as_str()) }
                td.num { (m.requests) } td.num { (m.timeouts + m.exceptions + m.errors) }
                td { (m.last_answer_age_s.map_or("—".into(), |a| format!("{a:.0} s"))) }
            } } }
        } }
        h2 { (t.s("sys-uplink")) }
        @match &d.uplink {
            None => p { (t.s("uplink-off")) },
            Some(u) => div.scroll { table.kv { tbody {
                (row(t.s("uplink-url"), u.url.clone()))
                (row(t.s("uplink-backlog"), format!("{} ({:.1} KB)", u.backlog, u.backlog_bytes as f64 / 1024.0)))
                (row(t.s("uplink-oldest"), u.oldest_unsent_age_s.map_or("—".into(), |a| format!("{a:.0} s"))))
                (row(t.s("uplink-last-success"), u.last_success.clone().unwrap_or("—".into())))
                (row(t.s("uplink-last-error"), u.last_error.clone().unwrap_or("—".into())))
            } } },
        }
        h2 { (t.s("sys-commands")) }
        p { (t.a("commands-pending", &[("count", Arg::N(d.commands.pending as f64))])) }
        p.hint { a href="/status" { (t.s("sys-details")) } " · " a href="/api/status" { "/api/status" } " · " a href="/metrics" { "/metrics" } }
    };
    page(
        &headers,
        StatusCode::OK,
        layout(&c, &t.s("title-system"), body),
    )
}

#[derive(serde::Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /lang/{code}?next=/path`: remembers the language (a year) and goes back.
pub async fn set_lang(Path(code): Path<String>, Query(q): Query<NextQuery>) -> Response {
    let lang = Lang::parse(&code).unwrap_or(Lang::En);
    // Only a local path: never an open redirect.
    let next = q
        .next
        .filter(|n| n.starts_with('/') && !n.starts_with("//"))
        .unwrap_or_else(|| "/".into());
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "lang={}; Path=/; Max-Age=31536000; SameSite=Strict",
        lang.code()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Messages the browser script shows (its own strings, in the page's language).
pub async fn script_messages(headers: HeaderMap) -> Response {
    let t = Tr::new(lang_of(&headers));
    let m = serde_json::json!({
        "lost": t.s("connection-lost"),
        "back": t.s("connection-back"),
        "now": t.s("just-now"),
        "alarms": t.s("alarms-word"),
    });
    axum::Json(m).into_response()
}
