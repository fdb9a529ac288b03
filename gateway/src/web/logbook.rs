//! The logbook over HTTP: what the dashboard's forms (next issue) and `gkgw logbook` use.
//!
//! - `POST /api/logbook` `{"kind":"waste_fed","waste":"household","kg":120,
//!   "at":"2026-12-01T08:00:00+03:00","note":"…"}` → 201 with the entry. `at` is RFC 3339
//!   (omitted: now).
//! - `GET /api/logbook?from=&to=&history=true` → 200 with a JSON list: the current revision of
//!   each entry whose `at` is in `[from, to)` (RFC 3339; omitted: unbounded), withdrawn ones
//!   left out; with `history=true` every revision, withdrawn ones too.
//! - `POST /api/logbook/{entry}/revise` with the values to change (and `at`, `note`) → 201
//!   with the new revision; what is not given stays as it was.
//! - `POST /api/logbook/{entry}/withdraw` `{"reason":"entered twice"}` → 201.
//!
//! Errors are one shape, `{"errors":[{"field":"kg","message":"must be more than 0"}]}`, listing
//! every invalid field: 400 (not a JSON object), 422 (invalid values, unknown fields), 404 (no
//! such entry), 409 (after the edit window, or already withdrawn), 500 (the store failed).
//!
//! **Roles** (the route table, `web/auth.rs`): viewers read, managers and admins write. Who
//! wrote a revision (`by`) is the signed-in user; a body that names `by` itself is refused
//! (422, field `by`). Every write is also a row of the audit log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use super::auth::Caller;
use super::AppState;
use crate::logbook::{Amount, Change, Draft, Entry, FieldError, Fields, Invalid, Now, Values};
use crate::store::logbook::Error as StoreError;
use crate::store::users::Action;

/// One revision as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryDto {
    /// The revision's row id (the order revisions were recorded in).
    pub id: i64,
    pub entry: i64,
    pub revision: u32,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waste: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub litres: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ph: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The time the entry refers to, RFC 3339 UTC, and as Unix ms.
    pub at: String,
    pub at_ms: i64,
    pub by: String,
    /// When this revision was recorded.
    pub recorded_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub withdrawn: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EntryDto {
    pub fn of(e: &Entry) -> EntryDto {
        let mut d = EntryDto {
            id: e.id,
            entry: e.entry,
            revision: e.revision,
            kind: e.values.kind().as_str().to_owned(),
            waste: None,
            kg: None,
            litres: None,
            count: None,
            ph: None,
            ratio: None,
            text: None,
            at: super::rfc3339(e.at_ns),
            at_ms: e.at_ns.div_euclid(1_000_000),
            by: e.by.clone(),
            recorded_at: super::rfc3339(e.recorded_ns),
            note: e.note.clone(),
            withdrawn: e.withdrawn,
            reason: e.reason.clone(),
        };
        match &e.values {
            Values::WasteFed { waste, kg } => {
                d.waste = Some(waste.as_str().to_owned());
                d.kg = Some(*kg);
            }
            Values::WaterAdded { litres } => d.litres = Some(*litres),
            Values::DigestateOut(Amount::Kg(kg)) => d.kg = Some(*kg),
            Values::DigestateOut(Amount::Litres(l)) => d.litres = Some(*l),
            Values::CylindersFilled { count } | Values::CylindersDispatched { count } => {
                d.count = Some(*count)
            }
            Values::LabPh { ph } => d.ph = Some(*ph),
            Values::LabFosTac { ratio } => d.ratio = Some(*ratio),
            Values::Note { text } => d.text = Some(text.clone()),
        }
        d
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldErrorDto {
    pub field: String,
    pub message: String,
}

/// Every error answer's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorsDto {
    pub errors: Vec<FieldErrorDto>,
}

fn errors(status: StatusCode, errors: &[FieldError]) -> Response {
    let body = ErrorsDto {
        errors: errors
            .iter()
            .map(|e| FieldErrorDto {
                field: e.field().to_owned(),
                message: e.message().to_owned(),
            })
            .collect(),
    };
    (status, Json(body)).into_response()
}

/// An answer before the store is reached: the status and every field's error.
type Refusal = (StatusCode, Vec<FieldError>);

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Invalid(Invalid(list)) => errors(StatusCode::UNPROCESSABLE_ENTITY, &list),
        StoreError::NotFound(id) => errors(
            StatusCode::NOT_FOUND,
            &[FieldError::new("entry", format!("no entry {id}"))],
        ),
        StoreError::Refused(r) => errors(
            StatusCode::CONFLICT,
            &[FieldError::new("entry", r.to_string())],
        ),
        e => {
            tracing::error!(error = %e, "logbook: store failed");
            errors(
                StatusCode::INTERNAL_SERVER_ERROR,
                &[FieldError::new("store", e.to_string())],
            )
        }
    }
}

/// A request body as its fields: every key checked against `allowed`, every value's JSON type
/// checked, so each problem is a field error rather than one parse error.
struct Body {
    map: serde_json::Map<String, JsonValue>,
    errors: Vec<FieldError>,
}

impl Body {
    /// `allowed` lists the keys a body may have; `by` is refused with its own message (who
    /// wrote an entry is the signed-in `caller`).
    fn parse(bytes: &[u8], allowed: &[&str], caller: &Caller) -> Result<Body, Refusal> {
        let map = match serde_json::from_slice::<JsonValue>(bytes) {
            Ok(JsonValue::Object(m)) => m,
            Ok(_) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    vec![FieldError::new("body", "expected a JSON object")],
                ))
            }
            Err(e) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    vec![FieldError::new("body", format!("not JSON: {e}"))],
                ))
            }
        };
        let errors = map
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                if k == "by" {
                    FieldError::new(
                        "by",
                        format!(
                            "taken from the login (you are {}); leave it out",
                            caller.user
                        ),
                    )
                } else {
                    FieldError::new(
                        k.clone(),
                        format!("unknown field (expected {})", allowed.join(", ")),
                    )
                }
            })
            .collect();
        Ok(Body { map, errors })
    }

    fn number(&mut self, k: &str) -> Option<f64> {
        match self.map.get(k) {
            None | Some(JsonValue::Null) => None,
            Some(v) => match v.as_f64() {
                Some(n) => Some(n),
                None => {
                    self.errors
                        .push(FieldError::new(k, format!("expected a number, not {v}")));
                    None
                }
            },
        }
    }

    fn string(&mut self, k: &str) -> Option<String> {
        match self.map.get(k) {
            None | Some(JsonValue::Null) => None,
            Some(JsonValue::String(s)) => Some(s.clone()),
            Some(v) => {
                self.errors
                    .push(FieldError::new(k, format!("expected a string, not {v}")));
                None
            }
        }
    }

    fn fields(&mut self) -> Fields {
        Fields {
            waste: self.string("waste"),
            kg: self.number("kg"),
            litres: self.number("litres"),
            count: self.number("count"),
            ph: self.number("ph"),
            ratio: self.number("ratio"),
            text: self.string("text"),
        }
    }
}

const VALUE_KEYS: [&str; 7] = ["waste", "kg", "litres", "count", "ph", "ratio", "text"];

fn now(s: &AppState) -> Now {
    let stamp = s.clock.now();
    Now {
        ns: stamp.ts_ns,
        synced: stamp.synced,
    }
}

async fn created(s: &AppState, caller: &Caller, e: &Entry) -> Response {
    s.logbook_changed.send_replace(e.id);
    let action = match (e.withdrawn, e.revision) {
        (true, _) => Action::LogbookWithdrawn,
        (false, 1) => Action::LogbookAdded,
        (false, _) => Action::LogbookRevised,
    };
    let dto = EntryDto::of(e);
    let detail = match &dto.reason {
        Some(r) => format!("{}: {r}", dto.kind),
        None => format!("{} {}", dto.kind, super::logbook_cli::values_text(&dto)),
    };
    s.auth
        .audit(
            caller,
            action,
            Some(format!("entry {} revision {}", e.entry, e.revision)),
            Some(detail),
        )
        .await;
    (StatusCode::CREATED, Json(dto)).into_response()
}

/// `POST /api/logbook`.
pub async fn add(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let mut allowed = vec!["kind", "at", "note"];
    allowed.extend(VALUE_KEYS);
    let mut b = match Body::parse(&body, &allowed, &caller) {
        Ok(b) => b,
        Err((status, list)) => return errors(status, &list),
    };
    let draft = Draft {
        kind: b.string("kind").unwrap_or_default(),
        fields: b.fields(),
        at: b.string("at"),
        by: Some(caller.user.clone()),
        note: b.string("note"),
    };
    let checked = draft.validate(now(&s), &caller.user);
    let new = match checked {
        Ok(new) if b.errors.is_empty() => new,
        Ok(_) => return errors(StatusCode::UNPROCESSABLE_ENTITY, &b.errors),
        Err(Invalid(list)) => {
            // Type errors first: a string kg is "expected a number", not "required".
            let mut all = b.errors;
            all.extend(list);
            return errors(StatusCode::UNPROCESSABLE_ENTITY, &dedup(all));
        }
    };
    match s.logbook.run(move |l| l.add(&new)).await {
        Ok(e) => created(&s, &caller, &e).await,
        Err(e) => store_error(e),
    }
}

/// One error per field: the first (a type error beats the "required" it causes).
fn dedup(list: Vec<FieldError>) -> Vec<FieldError> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter()
        .filter(|e| seen.insert(e.field().to_owned()))
        .collect()
}

fn entry_id(raw: &str) -> Result<i64, Refusal> {
    raw.parse::<i64>().map_err(|_| {
        (
            StatusCode::NOT_FOUND,
            vec![FieldError::new("entry", format!("no entry {raw:?}"))],
        )
    })
}

async fn change(s: Arc<AppState>, caller: Caller, entry: i64, change: Change) -> Response {
    let now = now(&s);
    let by = caller.user.clone();
    match s
        .logbook
        .run(move |l| l.revise(entry, &change, &by, now))
        .await
    {
        Ok(e) => created(&s, &caller, &e).await,
        Err(e) => store_error(e),
    }
}

/// `POST /api/logbook/{entry}/revise`.
pub async fn revise(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let entry = match entry_id(&raw) {
        Ok(e) => e,
        Err((status, list)) => return errors(status, &list),
    };
    let mut allowed = vec!["at", "note"];
    allowed.extend(VALUE_KEYS);
    let mut b = match Body::parse(&body, &allowed, &caller) {
        Ok(b) => b,
        Err((status, list)) => return errors(status, &list),
    };
    let c = Change::Correct {
        fields: b.fields(),
        at: b.string("at"),
        note: b.string("note"),
    };
    if !b.errors.is_empty() {
        return errors(StatusCode::UNPROCESSABLE_ENTITY, &b.errors);
    }
    change(s, caller, entry, c).await
}

/// `POST /api/logbook/{entry}/withdraw`.
pub async fn withdraw(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let entry = match entry_id(&raw) {
        Ok(e) => e,
        Err((status, list)) => return errors(status, &list),
    };
    let mut b = match Body::parse(&body, &["reason"], &caller) {
        Ok(b) => b,
        Err((status, list)) => return errors(status, &list),
    };
    let reason = b.string("reason");
    if reason.is_none() && b.errors.is_empty() {
        b.errors
            .push(FieldError::new("reason", "required to withdraw an entry"));
    }
    match reason {
        Some(reason) if b.errors.is_empty() => {
            change(s, caller, entry, Change::Withdraw { reason }).await
        }
        _ => errors(StatusCode::UNPROCESSABLE_ENTITY, &b.errors),
    }
}

/// `GET /api/logbook?from=&to=&history=`.
pub async fn list(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut errs = Vec::new();
    for k in q.keys() {
        if !["from", "to", "history"].contains(&k.as_str()) {
            errs.push(FieldError::new(
                k.clone(),
                "unknown parameter (expected from, to, history)",
            ));
        }
    }
    let mut time = |k: &str, default: i64| match q.get(k).filter(|v| !v.is_empty()) {
        None => default,
        Some(v) => match crate::logbook::parse_at(v) {
            Ok(ns) => ns,
            Err(e) => {
                errs.push(FieldError::new(k, e.message()));
                default
            }
        },
    };
    let from = time("from", i64::MIN);
    let to = time("to", i64::MAX);
    let history = match q.get("history").map(String::as_str) {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(v) => {
            errs.push(FieldError::new(
                "history",
                format!("{v:?}: expected true or false"),
            ));
            false
        }
    };
    if !errs.is_empty() {
        return errors(StatusCode::UNPROCESSABLE_ENTITY, &errs);
    }
    match s.logbook.run(move |l| l.list(from, to, history)).await {
        Ok(list) => Json(list.iter().map(EntryDto::of).collect::<Vec<_>>()).into_response(),
        Err(e) => store_error(e),
    }
}
