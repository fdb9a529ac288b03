//! The people's side, for admins: the users page (`GET /users`, forms in the dashboard's layout
//! that work without JavaScript: add a user, set a password, remove one), `GET /api/users` and the audit
//! log `GET /api/audit?limit=` (the people's rows and the commands' events, newest first: the
//! same rows `gkgw audit list` prints). The command line has the same operations
//! (`users_cli.rs`), which work without the gateway running.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{rfc3339, AppState};
use crate::store::commands::Event as CommandEvent;
use crate::store::users::{Action, AuditRow};
use crate::users::{check_name, check_password, parse_role, Role};

/// One row of the audit log as the API and `gkgw audit list` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDto {
    pub at: String,
    #[serde(skip)]
    pub ts_ns: i64,
    /// The user (None: the platform, for a command that came over the uplink).
    pub user: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub via: String,
}

impl AuditDto {
    pub fn of_row(r: AuditRow) -> AuditDto {
        AuditDto {
            at: rfc3339(r.ts_ns),
            ts_ns: r.ts_ns,
            user: r.user,
            action: r.action,
            target: r.target,
            detail: r.detail,
            via: r.via,
        }
    }

    /// A command's event: `command_applied` of `top-1 GM-0001 top_up`, its reason or the
    /// meter's answer and the credit as the detail.
    pub fn of_command(e: CommandEvent) -> AuditDto {
        let target: Vec<&str> = [&e.id, &e.meter, &e.kind]
            .into_iter()
            .filter_map(|s| s.as_deref())
            .collect();
        let mut detail: Vec<String> = Vec::new();
        if let Some(r) = e.reason {
            detail.push(crate::metrics::LabelValue::as_str(r).to_owned());
        }
        if let Some(d) = &e.detail {
            detail.push(d.clone());
        }
        if let Some(c) = e.credit {
            detail.push(format!("credit {c}"));
        }
        AuditDto {
            at: rfc3339(e.ts_ns),
            ts_ns: e.ts_ns,
            user: None,
            action: format!("command_{}", crate::metrics::LabelValue::as_str(e.outcome)),
            target: (!target.is_empty()).then(|| target.join(" ")),
            detail: (!detail.is_empty()).then(|| detail.join("; ")),
            via: e.via,
        }
    }
}

/// Both logs as one, newest first, at most `limit`.
pub fn merged(rows: Vec<AuditRow>, commands: Vec<CommandEvent>, limit: usize) -> Vec<AuditDto> {
    let mut all: Vec<AuditDto> = rows
        .into_iter()
        .map(AuditDto::of_row)
        .chain(commands.into_iter().map(AuditDto::of_command))
        .collect();
    // Stable: rows of one log with the same time keep their (newest-first) order.
    all.sort_by_key(|r| std::cmp::Reverse(r.ts_ns));
    all.truncate(limit);
    all
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "users: the store failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": format!("the store failed: {e}")})),
    )
        .into_response()
}

/// `GET /api/audit?limit=`.
pub async fn audit(State(s): State<Arc<AppState>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let read = s
        .auth
        .users()
        .run(move |u| {
            Ok::<_, crate::store::users::Error>((
                u.recent_audit(limit)?,
                u.recent_commands(limit)?.0,
            ))
        })
        .await;
    match read {
        Ok((rows, commands)) => Json(merged(rows, commands, limit)).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Serialize)]
pub(crate) struct UserDto {
    pub(crate) name: String,
    pub(crate) role: &'static str,
    created: String,
    password_changed: String,
    pub(crate) last_login: Option<String>,
    pub(crate) sessions: i64,
    tokens: i64,
}

async fn users(s: &AppState) -> Result<Vec<UserDto>, Response> {
    let now = crate::clock::wall_ns();
    let list = s
        .auth
        .users()
        .run(move |u| u.list(now))
        .await
        .map_err(store_error)?;
    Ok(list
        .into_iter()
        .map(|u| UserDto {
            name: u.name,
            role: u.role.as_str(),
            created: rfc3339(u.created_ns),
            password_changed: rfc3339(u.password_ns),
            last_login: u.last_login_ns.map(rfc3339),
            sessions: u.sessions,
            tokens: u.tokens,
        })
        .collect())
}

/// `GET /api/users`.
pub async fn list(State(s): State<Arc<AppState>>) -> Response {
    match users(&s).await {
        Ok(l) => Json(l).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
pub struct Notice {
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

/// What a change on the page did, as a message id (`users-done-…`, `users-error-…`) and the
/// user it was about: the redirect carries the id, the page says it in its language.
type Outcome = Result<(&'static str, String), (&'static str, String)>;

pub(crate) const DONE: &[&str] = &["added", "removed", "password"];
pub(crate) const ERRORS: &[&str] = &[
    "name", "role", "short", "long", "self", "exists", "missing", "store",
];

fn refused(e: &crate::users::Invalid, name: &str) -> (&'static str, String) {
    use crate::users::Invalid;
    let id = match e {
        Invalid::Role(_) => "role",
        Invalid::Name(_) => "name",
        Invalid::ShortPassword => "short",
        Invalid::LongPassword => "long",
    };
    (id, name.to_owned())
}

fn store_refused(e: &crate::store::users::Error, name: &str) -> (&'static str, String) {
    use crate::store::users::Error;
    match e {
        Error::Exists(_) => ("exists", name.to_owned()),
        Error::NoSuchUser(_) => ("missing", name.to_owned()),
        e => {
            tracing::error!(error = %e, "users page: the store failed");
            ("store", name.to_owned())
        }
    }
}

/// `GET /users`: the list and the forms, in the dashboard's layout and language.
pub async fn page_handler(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    Query(n): Query<Notice>,
) -> Response {
    let list = match users(&s).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    super::ui::users_page(
        &s,
        &headers,
        &caller,
        &list,
        n.done.as_deref().filter(|d| DONE.contains(d)),
        n.error.as_deref().filter(|e| ERRORS.contains(e)),
        n.name.as_deref().unwrap_or(""),
        n.role.as_deref().unwrap_or(""),
    )
}

fn back(done: Outcome, role: Option<Role>) -> Response {
    let (key, (id, name)) = match done {
        Ok(d) => ("done", d),
        Err(e) => ("error", e),
    };
    let mut q = vec![(key, id.to_owned()), ("name", name)];
    if let Some(r) = role {
        q.push(("role", r.as_str().to_owned()));
    }
    let q = serde_urlencoded::to_string(q).unwrap_or_default();
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/users?{q}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

/// `POST /users` (form): adds a user.
pub async fn add(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    axum::Form(f): axum::Form<AddForm>,
) -> Response {
    let name = f.name.trim().to_owned();
    let checked = check_name(&name)
        .and_then(|()| parse_role(&f.role))
        .and_then(|role| check_password(&f.password).map(|()| role));
    let role = match checked {
        Ok(r) => r,
        Err(e) => return back(Err(refused(&e, &name)), None),
    };
    let password = f.password;
    let hash =
        match tokio::task::spawn_blocking(move || crate::credentials::hash_password(&password))
            .await
        {
            Ok(Ok(h)) => h,
            _ => return back(Err(("store", name)), None),
        };
    let now = crate::clock::wall_ns();
    let n = name.clone();
    match s
        .auth
        .users()
        .run(move |u| u.add(&n, role, &hash, false, now))
        .await
    {
        Ok(()) => {
            s.auth
                .audit(
                    &caller,
                    Action::UserAdded,
                    Some(name.clone()),
                    Some(role.as_str().into()),
                )
                .await;
            back(Ok(("added", name)), Some(role))
        }
        Err(e) => back(Err(store_refused(&e, &name)), None),
    }
}

/// `POST /users/{name}/remove` (form).
pub async fn remove(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    if name == caller.user {
        return back(Err(("self", name)), None);
    }
    let n = name.clone();
    match s.auth.users().run(move |u| u.remove(&n)).await {
        Ok(()) => {
            s.auth
                .audit(&caller, Action::UserRemoved, Some(name.clone()), None)
                .await;
            back(Ok(("removed", name)), None)
        }
        Err(e) => back(Err(store_refused(&e, &name)), None),
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// `POST /users/password` (form): a new password for a user; ends its sessions.
pub async fn password(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    axum::Form(f): axum::Form<PasswordForm>,
) -> Response {
    if let Err(e) = check_password(&f.password) {
        return back(Err(refused(&e, &f.name)), None);
    }
    let password = f.password;
    let hash =
        match tokio::task::spawn_blocking(move || crate::credentials::hash_password(&password))
            .await
        {
            Ok(Ok(h)) => h,
            _ => return back(Err(("store", f.name)), None),
        };
    let now = crate::clock::wall_ns();
    let name = f.name;
    let n = name.clone();
    match s
        .auth
        .users()
        .run(move |u| u.set_password(&n, &hash, now))
        .await
    {
        Ok(()) => {
            s.auth
                .audit(&caller, Action::PasswordChanged, Some(name.clone()), None)
                .await;
            back(Ok(("password", name)), None)
        }
        Err(e) => back(Err(store_refused(&e, &name)), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Outcome, Reason};

    #[test]
    fn both_logs_merge_newest_first() {
        let row = |row, ts_ns, action: &str| AuditRow {
            row,
            ts_ns,
            user: Some("amina".into()),
            action: action.into(),
            target: None,
            detail: None,
            via: "web 10.0.0.5".into(),
        };
        let cmd = CommandEvent {
            row: 1,
            ts_ns: 15,
            id: Some("top-1".into()),
            meter: Some("GM-0001".into()),
            kind: Some("top_up".into()),
            outcome: Outcome::Refused,
            reason: Some(Reason::UnknownMeter),
            detail: None,
            credit: None,
            via: "https".into(),
        };
        let m = merged(
            vec![row(2, 20, "logout"), row(1, 10, "login")],
            vec![cmd],
            10,
        );
        let got: Vec<(&str, Option<&str>)> = m
            .iter()
            .map(|d| (d.action.as_str(), d.detail.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("logout", None),
                ("command_refused", Some("unknown_meter")),
                ("login", None)
            ]
        );
        assert_eq!(m[1].target.as_deref(), Some("top-1 GM-0001 top_up"));
        assert_eq!(m[1].user, None);
        assert_eq!(
            merged(vec![row(1, 1, "a"), row(2, 2, "b")], vec![], 1).len(),
            1
        );
    }
}
