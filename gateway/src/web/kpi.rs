//! `GET /api/kpi?period=day|hour&from=…&to=…`: the plant figures of each period starting in
//! `[from, to)` ([`crate::aggregate::kpi`]). `from`/`to` are RFC 3339 or Unix milliseconds;
//! default: the last 7 local days (today included, so far) or the last 24 hours (the current
//! one included). Each period: `start` (RFC 3339 with the site's offset), `start_ms`,
//! `complete` (the period has ended), and its figures `{name, unit, value}` or
//! `{name, unit, missing: "reason"}`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::history::{bad_request, parse_time};
use super::AppState;
use crate::aggregate::kpi::{self, Period};

/// Most periods one request may ask for (a month of hours, a year of days).
const MAX_HOURS: usize = 31 * 24;
const MAX_DAYS: usize = 366;

#[derive(Debug, Deserialize)]
pub struct Params {
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// One figure as the API and the uplink's batches show it.
#[derive(Serialize)]
pub(crate) struct FigureDto {
    name: &'static str,
    unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<String>,
}

impl FigureDto {
    pub(crate) fn of(f: &kpi::Figure) -> FigureDto {
        FigureDto {
            name: f.name,
            unit: f.unit,
            value: f.value.as_ref().ok().copied().filter(|v| v.is_finite()),
            missing: match &f.value {
                Ok(v) if !v.is_finite() => Some("not a number".to_owned()),
                Ok(_) => None,
                Err(m) => Some(m.to_string()),
            },
        }
    }
}

#[derive(Serialize)]
struct PeriodDto {
    start: String,
    start_ms: i64,
    complete: bool,
    figures: Vec<FigureDto>,
}

#[derive(Serialize)]
struct KpiDto {
    period: &'static str,
    timezone: String,
    periods: Vec<PeriodDto>,
}

pub async fn kpi(State(state): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    let period = match p.period.as_deref() {
        None => Period::Day,
        Some(s) => match Period::parse(s) {
            Some(p) => p,
            None => return bad_request(format!("period: {s:?}: expected day or hour")),
        },
    };
    let engine = state.kpi.clone();
    let now = crate::clock::wall_ns();
    let to = match p.to.as_deref().map(|s| parse_time("to", s)).transpose() {
        Ok(t) => t.unwrap_or_else(|| engine.period_end(period, engine.period_start(period, now))),
        Err(e) => return bad_request(e),
    };
    let from = match p.from.as_deref().map(|s| parse_time("from", s)).transpose() {
        Ok(Some(t)) => t,
        Ok(None) => {
            let back = match period {
                Period::Day => 7 * 86_400,
                Period::Hour => 24 * 3600,
            };
            to - back * 1_000_000_000
        }
        Err(e) => return bad_request(e),
    };
    let starts = engine.starts(period, from, to);
    let max = match period {
        Period::Hour => MAX_HOURS,
        Period::Day => MAX_DAYS,
    };
    if starts.len() > max {
        return bad_request(format!(
            "{} periods of a {} asked for; at most {max} per request",
            starts.len(),
            period.as_str()
        ));
    }
    let e = engine.clone();
    let span = starts
        .first()
        .zip(starts.last())
        .map(|(f, l)| (*f, e.period_end(period, *l)));
    let entries = match span {
        Some((from, to)) => match state.logbook.run(move |b| b.list(from, to, false)).await {
            Ok(v) => v,
            Err(err) => {
                tracing::error!(error = %err, "kpi: cannot read the logbook");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(serde_json::json!({ "error": "the logbook could not be read" })),
                )
                    .into_response();
            }
        },
        None => Vec::new(),
    };
    let sets = state
        .history
        .run(move |(_, windows)| {
            starts
                .iter()
                .map(|&s| {
                    let feed = kpi::feed_of(&entries, s, e.period_end(period, s));
                    e.period(windows, period, s, &feed)
                })
                .collect::<crate::store::Result<Vec<_>>>()
        })
        .await;
    let sets = match sets {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "kpi: store error");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({ "error": "the store could not be read" })),
            )
                .into_response();
        }
    };
    let offset = engine.zone().fixed_offset();
    let periods = sets
        .iter()
        .map(|set| PeriodDto {
            start: chrono::DateTime::from_timestamp_nanos(set.period_start_ns)
                .with_timezone(&offset)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            start_ms: set.period_start_ns.div_euclid(1_000_000),
            complete: engine.period_end(period, set.period_start_ns) <= now,
            figures: set.figures.iter().map(FigureDto::of).collect(),
        })
        .collect();
    Json(KpiDto {
        period: period.as_str(),
        timezone: engine.zone().name().to_owned(),
        periods,
    })
    .into_response()
}
