//! The alarms over HTTP: the hooks the dashboard and the uplink use.
//!
//! - `GET /api/alarms?limit=100` → `{"active":[…],"outputs":[{"output","on"}],"recent":[…]}`:
//!   every alarm not in the normal state (or shelved, or suppressed), worst first, and the
//!   newest transitions from the store (newest first).
//! - `GET /api/alarms/{id}` → `{"alarm":{…}|null,"history":[…]}`: one alarm (`{rule}:{instance}`)
//!   and its transitions.
//! - `POST /api/alarms/{id}/ack|reset|shelve|unshelve|silence` with `{"note":"…"}` (and
//!   `"minutes": 60` for shelve; the body may be empty) → 200 `{"events":[…],"alarm":{…}}`;
//!   404 no such alarm, 409 not possible in its state (already acknowledged, still present,
//!   not latched …), 400 a bad body, 503 the engine is busy.
//! - `POST /api/alarms/silence` silences every active alarm's outputs.
//!
//! **Manager and up** (the route table, `web/auth.rs`). Who did it (`by` in the events) is the
//! signed-in user; a body that names `by` itself is refused (400). Every operation is also a
//! row of the audit log.

// The helpers return axum responses as errors, which handlers return as they are.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

use super::auth::Caller;
use super::AppState;
use crate::alarm::task::{Handle, Request};
use crate::alarm::{Event, Op, OpError, View};
use crate::store::users::Action;

pub fn event_json(e: &Event) -> JsonValue {
    serde_json::from_str(&crate::alarm::task::message(e)).unwrap_or(JsonValue::Null)
}

pub fn view_json(v: &View) -> JsonValue {
    json!({
        "id": v.id,
        "rule": &*v.rule,
        "instance": &*v.instance,
        "severity": v.severity.as_str(),
        "state": v.state.as_str(),
        "latched": v.latched,
        "shelved_until": v.shelved_until.map(super::rfc3339),
        "silenced": v.silenced,
        "suppressed": v.suppressed,
        "condition": v.condition,
        "since": super::rfc3339(v.since_ns),
        "value": v.value.filter(|x| x.is_finite()),
        "message": v.message,
        "quantity": v.quantity,
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn engine(s: &AppState) -> Result<&Handle, Response> {
    s.alarms.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "alarms are disabled ([alarms] enabled = false)",
        )
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

pub async fn list(State(s): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Response {
    let h = match engine(&s) {
        Ok(h) => h.clone(),
        Err(r) => return r,
    };
    let snap = h.snapshot();
    let limit = q.limit.unwrap_or(100).min(1000);
    let recent = h.store.run(move |a| a.recent(None, limit)).await;
    let recent = match recent {
        Ok(r) => r.iter().map(event_json).collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the alarm history");
            Vec::new()
        }
    };
    Json(json!({
        "active": snap.alarms.iter().map(view_json).collect::<Vec<_>>(),
        "outputs": snap.outputs.iter().map(|(n, on)| json!({"output": n, "on": on})).collect::<Vec<_>>(),
        "recent": recent,
        "next_seq": snap.next_seq,
    }))
    .into_response()
}

pub async fn one(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let h = match engine(&s) {
        Ok(h) => h.clone(),
        Err(r) => return r,
    };
    let Some((rule, instance)) = id
        .split_once(':')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no alarm {id}: ids are rule:instance"),
        );
    };
    let alarm = h.snapshot().alarms.into_iter().find(|a| a.id == id);
    let history = h
        .store
        .run(move |a| a.recent(Some((&rule, &instance)), 200))
        .await
        .unwrap_or_default();
    if alarm.is_none() && history.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no alarm {id}"));
    }
    Json(json!({
        "alarm": alarm.as_ref().map(view_json),
        "history": history.iter().map(event_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Body {
    /// Only to refuse it with a message that says why.
    #[serde(default)]
    by: Option<serde_json::Value>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    minutes: Option<f64>,
    /// A dashboard form's: where to send the browser afterwards (a local path).
    #[serde(skip)]
    redirect: Option<String>,
}

/// Hands a request to the engine without waiting for room (a full queue is 503 at once).
fn submit(h: &Handle, req: Request) -> Result<(), Response> {
    h.requests.try_send(req).map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the alarm engine is busy; try again",
        )
    })
}

/// A JSON body, or a dashboard form (urlencoded: `note`, `hours` or `minutes`, `redirect`;
/// its `csrf` field was checked by the gate). `by` is never taken from the body.
fn body(bytes: &Bytes, caller: &Caller) -> Result<Body, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body::default());
    }
    if bytes.first() != Some(&b'{') {
        let mut b = Body::default();
        for (k, v) in super::ui::form_pairs(bytes) {
            match k.as_str() {
                "note" if !v.trim().is_empty() => b.note = Some(v),
                "minutes" => b.minutes = v.trim().parse().ok(),
                "hours" => b.minutes = v.trim().parse::<f64>().ok().map(|h| h * 60.0),
                "redirect" if v.starts_with('/') && !v.starts_with("//") => b.redirect = Some(v),
                _ => {}
            }
        }
        return Ok(b);
    }
    let b: Body = serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("body: {e}")))?;
    if b.by.is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "body: \"by\" is taken from the login (you are {}); leave it out",
                caller.user
            ),
        ));
    }
    Ok(b)
}

/// The audit row of an operation that was done.
async fn audited(s: &AppState, caller: &Caller, target: &str, op: &str, note: &str) {
    let detail = if note.is_empty() {
        op.to_owned()
    } else {
        format!("{op}: {note}")
    };
    s.auth
        .audit(caller, Action::Alarm, Some(target.to_owned()), Some(detail))
        .await;
}

pub async fn operate(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let h = match engine(&s) {
        Ok(h) => h.clone(),
        Err(r) => return r,
    };
    let b = match body(&bytes, &caller) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let op = match action.as_str() {
        "ack" | "acknowledge" => Op::Acknowledge,
        "reset" => Op::Reset,
        "unshelve" => Op::Unshelve,
        "silence" => Op::Silence,
        "shelve" => match b.minutes {
            Some(m) if m.is_finite() && m > 0.0 => Op::Shelve((m * 60e9) as i64),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "shelve needs \"minutes\" (1 to {})",
                        h.max_shelve_hours * 60
                    ),
                )
            }
        },
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no action {other:?}: ack, reset, shelve, unshelve, silence"),
            )
        }
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    let redirect = b.redirect.clone();
    let note = b.note.unwrap_or_default();
    let req = Request::Operate {
        id: id.clone(),
        op,
        by: caller.user.clone(),
        note: note.clone(),
        reply,
    };
    if let Err(r) = submit(&h, req) {
        return r;
    }
    match rx.await {
        Ok(Ok((events, alarm))) => {
            audited(&s, &caller, &id, &action, &note).await;
            if let Some(to) = redirect {
                // A dashboard form: back to the page it came from.
                return axum::response::Redirect::to(&to).into_response();
            }
            let alarm = alarm
                .filter(|a| a.state != crate::alarm::State::Normal || a.shelved_until.is_some());
            Json(json!({
                "events": events.iter().map(event_json).collect::<Vec<_>>(),
                "alarm": alarm.as_ref().map(view_json),
            }))
            .into_response()
        }
        Ok(Err(e @ OpError::Unknown(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e @ OpError::ShelveTooLong(_))) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the alarm engine is stopping",
        ),
    }
}

pub async fn silence_all(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let h = match engine(&s) {
        Ok(h) => h.clone(),
        Err(r) => return r,
    };
    let b = match body(&bytes, &caller) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    let note = b.note.unwrap_or_default();
    let req = Request::SilenceAll {
        by: caller.user.clone(),
        note: note.clone(),
        reply,
    };
    if let Err(r) = submit(&h, req) {
        return r;
    }
    match rx.await {
        Ok(events) => {
            audited(&s, &caller, "all", "silence", &note).await;
            Json(json!({
                "events": events.iter().map(event_json).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the alarm engine is stopping",
        ),
    }
}
