//! `GET /api/history?quantity=digester.pressure&instance=digester-1&from=…&to=…&points=N`:
//! at most N points (buckets with count, min, max, mean, last; delta for counters), from raw
//! readings, 1-minute or 1-hour windows by the span ([`crate::aggregate::history`]).
//! `from`/`to` are RFC 3339 or Unix milliseconds; default: the last 24 hours, 300 points.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{rfc3339, AppState};
use crate::aggregate::history::{self, Error};

#[derive(Debug, Deserialize)]
pub struct Params {
    quantity: Option<String>,
    instance: Option<String>,
    from: Option<String>,
    to: Option<String>,
    points: Option<usize>,
}

#[derive(Serialize)]
struct PointDto {
    t: String,
    ms: i64,
    count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<f64>,
    bad: u32,
    #[serde(skip_serializing_if = "is_zero")]
    unsynced: u32,
    #[serde(skip_serializing_if = "is_zero")]
    resets: u32,
    #[serde(skip_serializing_if = "is_zero")]
    revision: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct HistoryDto {
    quantity: String,
    instance: String,
    unit: String,
    from: String,
    to: String,
    /// `raw`, `1m` or `1h`.
    source: &'static str,
    bucket_s: f64,
    points: Vec<PointDto>,
}

/// A time as RFC 3339 or Unix milliseconds.
pub(super) fn parse_time(key: &str, s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return ms
            .checked_mul(1_000_000)
            .ok_or_else(|| format!("{key}: {ms} ms is out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| format!("{key}: {s:?} is neither RFC 3339 (2026-12-01T08:00:00+03:00) nor Unix milliseconds"))
}

pub(super) fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

pub async fn history(State(state): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    let (Some(quantity), Some(instance)) = (p.quantity, p.instance) else {
        return bad_request("quantity and instance are required".into());
    };
    let now = crate::clock::wall_ns();
    let to = match p.to.as_deref().map(|s| parse_time("to", s)).transpose() {
        Ok(t) => t.unwrap_or(now),
        Err(e) => return bad_request(e),
    };
    let from = match p.from.as_deref().map(|s| parse_time("from", s)).transpose() {
        Ok(t) => t.unwrap_or(to - 86_400_000_000_000),
        Err(e) => return bad_request(e),
    };
    let q = history::Query {
        quantity: quantity.clone(),
        instance: instance.clone(),
        from_ns: from,
        to_ns: to,
        points: p.points.unwrap_or(300),
    };
    let plant = state.plant.clone();
    let answer = state
        .history
        .run(move |(reader, windows)| history::query(&plant, reader, windows, &q))
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(Error::Store(e)) => {
            tracing::error!(error = %e, "history: store error");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({ "error": "the store could not be read" })),
            )
                .into_response();
        }
        Err(e) => return bad_request(e.to_string()),
    };
    let unit = state
        .plant
        .catalogue
        .get(&quantity)
        .map(|q| q.unit.clone())
        .unwrap_or_default();
    let points = answer
        .points
        .iter()
        .map(|p| {
            let w = &p.window;
            let some = |v: f64| (w.count > 0).then_some(v);
            PointDto {
                t: rfc3339(p.start_ns),
                ms: p.start_ns.div_euclid(1_000_000),
                count: w.count,
                min: some(w.min),
                max: some(w.max),
                mean: w.mean(),
                last: w.last.map(|(_, v)| v),
                delta: answer.counter.then_some(w.delta),
                bad: w.bad,
                unsynced: w.unsynced,
                resets: w.resets,
                revision: w.revision,
            }
        })
        .collect();
    Json(HistoryDto {
        quantity,
        instance,
        unit,
        from: rfc3339(from),
        to: rfc3339(to),
        source: answer.source.label(),
        bucket_s: answer.bucket_ns as f64 / 1e9,
        points,
    })
    .into_response()
}
