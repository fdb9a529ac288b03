//! `/api/live`: the live stream as Server-Sent Events, one `reading` event per reading as it
//! arrives (before its commit; see `intake.rs` for who may see uncommitted readings and why),
//! each value named by its quantity. The dashboard's live tiles will read this.
//!
//! ```text
//! event: reading
//! data: {"ts":"2026-12-01T08:00:00.000Z","device":"digester-1","quality":"good",
//!        "values":[{"quantity":"digester.pressure","value":12.3,"text":"12.3 mbar"}]}
//! ```
//! A client that falls more than the stream's capacity behind gets a `lagged` event with the
//! number of readings it missed, then carries on; nothing waits for it. When the session that
//! opened the stream expires or is ended (logout, new password, user removed), a `session`
//! event with `ended` is the last one.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

/// How often a live stream checks that its session or token is still valid.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(15);
use crate::model::{Reading, Value};
use crate::plant::Plant;

#[derive(Serialize)]
struct LiveValue {
    quantity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<serde_json::Value>,
    text: String,
}

#[derive(Serialize)]
struct LiveReading {
    ts: String,
    device: String,
    quality: &'static str,
    values: Vec<LiveValue>,
}

/// A reading as the live stream's JSON: the fields that are quantities, by quantity name
/// (`seq` and `{field}_quality` are left out; a bad value is shown by its quality).
fn dto(plant: &Plant, r: &Reading) -> LiveReading {
    let mut values = Vec::new();
    for (field, v) in &r.fields {
        if let Some((q, unit)) = plant.stored(&r.series.measurement, field) {
            let value = match v {
                Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number),
                Value::Int(i) => Some((*i).into()),
                Value::Bool(b) => Some((*b).into()),
                Value::Str(s) => Some(s.clone().into()),
            };
            values.push(LiveValue {
                quantity: q.name.clone(),
                value,
                text: q.display_in(v, unit),
            });
        } else if let (Some(base), Value::Str(why)) = (field.strip_suffix("_quality"), v) {
            if let Some(q) = plant.quantity_of(&r.series.measurement, base) {
                values.push(LiveValue {
                    quantity: q.name.clone(),
                    value: None,
                    text: why.clone(),
                });
            }
        }
    }
    LiveReading {
        ts: super::rfc3339(r.ts_ns),
        device: r.series.device.to_string(),
        quality: r.quality.as_str(),
        values,
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct LiveQuery {
    /// `alarms=1`: also an `alarms` event at once and whenever the active alarms change
    /// (checked every 500 ms): `{"count", "worst", "text", "first"}` in the page's language.
    alarms: Option<String>,
}

/// The dashboard banner's view of the alarms: a change of any alarm's state changes it.
fn alarm_summary(s: &AppState, t: &super::ui::i18n::Tr) -> (u64, serde_json::Value) {
    let Some(h) = &s.alarms else {
        return (0, serde_json::json!({"count": 0}));
    };
    let snap = h.snapshot();
    let active = super::ui::banner_alarms(&snap.alarms);
    let worst = active.iter().map(|a| a.severity).max();
    let key = snap.next_seq;
    (
        key,
        serde_json::json!({
            "count": active.len(),
            "worst": worst.map(super::ui::severity_class),
            "text": t.a("alarms-active", &[("count", super::ui::i18n::Arg::N(active.len() as f64))]),
            "first": active.first().map(|a| t.alarm(&a.rule, &a.message)),
        }),
    )
}

pub async fn live(
    State(s): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    axum::extract::Query(q): axum::extract::Query<LiveQuery>,
    headers: axum::http::HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.live.subscribe();
    let with_alarms = q.alarms.as_deref() == Some("1");
    let t = super::ui::i18n::Tr::new(super::ui::lang_of(&headers));
    let tick = tokio::time::interval(std::time::Duration::from_millis(500));
    // A stream lives no longer than the session or token that opened it: it ends at the
    // session's expiry, and within RECHECK of a logout, a new password or a removed user.
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.reset();
    let left_ns = caller
        .expires_ns
        .map_or(i64::MAX, |e| e.saturating_sub(crate::clock::wall_ns()));
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_nanos(left_ns.clamp(0, 365 * 86_400_000_000_000) as u64);
    let who = Arc::new((headers.clone(), caller.address));
    // The last alarm state sent (None: not yet); whether the session has ended.
    let state = (rx, s.clone(), tick, None::<u64>, recheck, false);
    let stream = futures_util::stream::unfold(
        state,
        move |(mut rx, s, mut tick, sent, mut recheck, ended)| {
            let who = who.clone();
            async move {
                if ended {
                    return None;
                }
                let session_ended = || Event::default().event("session").data("ended");
                loop {
                    if with_alarms {
                        let (key, summary) = alarm_summary(&s, &t);
                        if sent != Some(key) {
                            let ev = Event::default()
                                .event("alarms")
                                .json_data(summary)
                                .unwrap_or_else(|_| Event::default().event("error"));
                            return Some((Ok(ev), (rx, s, tick, Some(key), recheck, false)));
                        }
                    }
                    let event = tokio::select! {
                        _ = s.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep_until(deadline) => {
                            return Some((Ok(session_ended()), (rx, s, tick, sent, recheck, true)));
                        }
                        _ = recheck.tick() => {
                            if s.auth.identifies(&who.0, who.1).await {
                                continue;
                            }
                            return Some((Ok(session_ended()), (rx, s, tick, sent, recheck, true)));
                        }
                        _ = tick.tick(), if with_alarms => continue,
                        r = rx.recv() => match r {
                            Ok(reading) => Event::default()
                                .event("reading")
                                .json_data(dto(&s.plant, &reading))
                                .unwrap_or_else(|_| Event::default().event("error")),
                            Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                            Err(RecvError::Closed) => return None,
                        },
                    };
                    return Some((Ok(event), (rx, s, tick, sent, recheck, false)));
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quality, Series};

    #[test]
    fn readings_are_named_by_quantity_with_their_precision() {
        let mut plant = Plant::new(crate::plant::Catalogue::builtin());
        plant.bind_meters().expect("meters");
        let r = Reading {
            series: Series::new("gas_meter", "GM-0001"),
            ts_ns: 1_795_340_000_000_000_000,
            quality: Quality::Bad,
            fields: vec![
                ("credit_kg".into(), Value::Float(1.23456)),
                (
                    "battery_v_quality".into(),
                    Value::Str("out_of_range".into()),
                ),
                ("seq".into(), Value::Int(42)),
            ],
            ack: None,
            receipt: None,
        };
        let json = serde_json::to_value(dto(&plant, &r)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "ts": "2026-11-22T09:33:20.000Z",
                "device": "GM-0001",
                "quality": "bad",
                "values": [
                    {"quantity": "meter.credit", "value": 1.23456, "text": "1.23 kg"},
                    {"quantity": "meter.battery", "text": "out_of_range"}
                ]
            })
        );
    }
}
