//! `POST /api/commands` (submit signed commands: the compact JWS as the body, or
//! `{"commands":["<jws>",…]}`) and `GET /api/commands?limit=` (the newest commands with their
//! newest outcome, and the audit log's newest events). For local tools and tests; the
//! platform's commands come through the uplink, which calls `commands::Handle::submit` itself.
//!
//! POST is for admins only (the route table, `web/auth.rs`); each command submitted is a row
//! of the audit log with the user, besides its own events in the commands' log.

// A handler's early answer is a `Response`, returned once per request: not worth a box.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use super::auth::Caller;
use super::{rfc3339, AppState};
use crate::commands::Submitted;
use crate::metrics::LabelValue as _;
use crate::store::commands::{Event, Stored};

/// At most this many commands in one POST.
const MAX_PER_POST: usize = 100;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResultDto {
    pub id: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResultsDto {
    pub results: Vec<ResultDto>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CommandDto {
    pub id: String,
    pub meter: String,
    pub kind: String,
    pub args: JsonValue,
    pub iat: i64,
    pub exp: i64,
    pub received: String,
    pub via: String,
    /// The newest outcome: accepted, delivered, applied, rejected or expired.
    pub outcome: String,
    pub detail: Option<String>,
    pub credit: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EventDto {
    pub row: i64,
    pub at: String,
    pub id: Option<String>,
    pub meter: Option<String>,
    pub kind: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub credit: Option<f64>,
    pub via: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ListDto {
    pub enabled: bool,
    pub pending: i64,
    pub commands: Vec<CommandDto>,
    /// The audit log, newest first.
    pub events: Vec<EventDto>,
}

#[derive(Serialize)]
pub(super) struct StatusDto {
    enabled: bool,
    pub(super) pending: i64,
    last: Option<LastDto>,
}

#[derive(Serialize)]
struct LastDto {
    id: Option<String>,
    outcome: &'static str,
    reason: Option<&'static str>,
    at: String,
}

pub(super) fn status(h: &crate::commands::Handle) -> StatusDto {
    let s = h.status();
    StatusDto {
        enabled: s.enabled,
        pending: s.pending,
        last: s.last.map(|l| LastDto {
            id: l.id,
            outcome: l.outcome.as_str(),
            reason: l.reason.map(|r| r.as_str()),
            at: rfc3339(l.ts_ns),
        }),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

fn result_dto(s: Submitted) -> ResultDto {
    ResultDto {
        id: s.id,
        outcome: s.outcome.as_str().to_owned(),
        reason: s.reason.map(|r| r.as_str().to_owned()),
    }
}

#[derive(Deserialize)]
struct Batch {
    commands: Vec<String>,
}

pub async fn submit(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let text = text.trim();
    let list = if text.starts_with('{') {
        match serde_json::from_str::<Batch>(text) {
            Ok(b) => b.commands,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"commands\":[\"<jws>\",…]}}: {e}"),
                )
            }
        }
    } else {
        vec![text.to_owned()]
    };
    if list.len() > MAX_PER_POST {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_PER_POST} commands per request"),
        );
    }
    let mut results = Vec::with_capacity(list.len());
    for jws in list {
        let r = result_dto(s.commands.submit(jws, "http").await);
        let detail = match &r.reason {
            Some(reason) => format!("{}: {reason}", r.outcome),
            None => r.outcome.clone(),
        };
        s.auth
            .audit(
                &caller,
                crate::store::users::Action::CommandSubmitted,
                r.id.clone(),
                Some(detail),
            )
            .await;
        results.push(r);
    }
    Json(ResultsDto { results }).into_response()
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

fn command_dto(c: Stored) -> CommandDto {
    CommandDto {
        args: serde_json::from_str(&c.args).unwrap_or(JsonValue::Null),
        id: c.id,
        meter: c.meter,
        kind: c.kind,
        iat: c.iat,
        exp: c.exp,
        received: rfc3339(c.received_ns),
        via: c.via,
        outcome: c.last.as_str().to_owned(),
        detail: c.detail,
        credit: c.credit,
    }
}

pub fn event_dto(e: Event) -> EventDto {
    EventDto {
        row: e.row,
        at: rfc3339(e.ts_ns),
        id: e.id,
        meter: e.meter,
        kind: e.kind,
        outcome: e.outcome.as_str().to_owned(),
        reason: e.reason.map(|r| r.as_str().to_owned()),
        detail: e.detail,
        credit: e.credit,
        via: e.via,
    }
}

pub async fn list(State(s): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let read = s
        .commands
        .store()
        .run(move |c| Ok::<_, crate::store::Error>((c.recent(limit)?, c.recent_events(limit)?)))
        .await;
    match read {
        Ok((commands, events)) => {
            let st = s.commands.status();
            Json(ListDto {
                enabled: st.enabled,
                pending: st.pending,
                commands: commands.into_iter().map(command_dto).collect(),
                events: events.into_iter().map(event_dto).collect(),
            })
            .into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the command log: {e}"),
        ),
    }
}
