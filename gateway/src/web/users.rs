//! The people's side, for admins: the users page (`GET /users`, a plain form page that works
//! without JavaScript: add a user, set a password, remove one), `GET /api/users` and the audit
//! log `GET /api/audit?limit=` (the people's rows and the commands' events, newest first: the
//! same rows `gkgw audit list` prints). The command line has the same operations
//! (`users_cli.rs`), which work without the gateway running.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::{html, page, Caller};
use super::{rfc3339, AppState};
use crate::store::commands::Event as CommandEvent;
use crate::store::users::{Action, AuditRow};
use crate::users::{check_name, check_password, parse_role};

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
struct UserDto {
    name: String,
    role: &'static str,
    created: String,
    password_changed: String,
    last_login: Option<String>,
    sessions: i64,
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
}

/// `GET /users`: the list and the forms.
pub async fn page_handler(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(n): Query<Notice>,
) -> Response {
    let list = match users(&s).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let csrf = html(caller.csrf.as_deref().unwrap_or(""));
    let hidden = format!("<input type=hidden name=csrf value=\"{csrf}\">");
    let mut body = String::new();
    body.push_str(&format!(
        "<p><a href=\"/\">Status</a> &middot; {}</p>",
        super::auth::logout_form(&caller)
    ));
    if let Some(d) = &n.done {
        body.push_str(&format!("<p role=status>{}</p>", html(d)));
    }
    if let Some(e) = &n.error {
        body.push_str(&format!("<p class=msg role=alert>{}</p>", html(e)));
    }
    body.push_str("<table><tr><th>User</th><th>Role</th><th>Last login</th><th></th></tr>");
    for u in &list {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>\
             <form method=post action=\"/users/{}/remove\">{hidden}<button style=\"width:auto;margin:0\">Remove</button></form></td></tr>",
            html(&u.name),
            u.role,
            html(u.last_login.as_deref().unwrap_or("never")),
            html(&u.name)
        ));
    }
    body.push_str("</table>");
    let roles = "<select id=role name=role><option>viewer</option><option>manager</option><option>admin</option></select>";
    body.push_str(&format!(
        "<h2>Add a user</h2><form method=post action=/users>{hidden}\
         <label for=name>User name</label><input id=name name=name autocapitalize=none required>\
         <label for=role>Role</label>{roles}\
         <label for=password>Password (at least {} characters)</label><input id=password name=password type=password autocomplete=new-password required>\
         <button>Add</button></form>",
        crate::users::MIN_PASSWORD
    ));
    let options: String = list
        .iter()
        .map(|u| format!("<option>{}</option>", html(&u.name)))
        .collect();
    body.push_str(&format!(
        "<h2>Set a password</h2><form method=post action=/users/password>{hidden}\
         <label for=who>User</label><select id=who name=name>{options}</select>\
         <label for=new>New password</label><input id=new name=password type=password autocomplete=new-password required>\
         <button>Set</button></form>"
    ));
    Html(page("Users", &body)).into_response()
}

fn back(done: Result<String, String>) -> Response {
    let q = match done {
        Ok(m) => format!("done={}", urlencode(&m)),
        Err(m) => format!("error={}", urlencode(&m)),
    };
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/users?{q}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)])
        .map(|t| t.trim_start_matches("x=").to_owned())
        .unwrap_or_default()
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
        Err(e) => return back(Err(e.to_string())),
    };
    let password = f.password;
    let hash =
        match tokio::task::spawn_blocking(move || crate::credentials::hash_password(&password))
            .await
        {
            Ok(Ok(h)) => h,
            _ => return back(Err("hashing the password failed".into())),
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
            back(Ok(format!("{name} added ({role})")))
        }
        Err(e) => back(Err(e.to_string())),
    }
}

/// `POST /users/{name}/remove` (form).
pub async fn remove(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    if name == caller.user {
        return back(Err(
            "you cannot remove yourself (another admin, or gkgw user remove, can)".into(),
        ));
    }
    let n = name.clone();
    match s.auth.users().run(move |u| u.remove(&n)).await {
        Ok(()) => {
            s.auth
                .audit(&caller, Action::UserRemoved, Some(name.clone()), None)
                .await;
            back(Ok(format!("{name} removed")))
        }
        Err(e) => back(Err(e.to_string())),
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
        return back(Err(e.to_string()));
    }
    let password = f.password;
    let hash =
        match tokio::task::spawn_blocking(move || crate::credentials::hash_password(&password))
            .await
        {
            Ok(Ok(h)) => h,
            _ => return back(Err("hashing the password failed".into())),
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
            back(Ok(format!(
                "new password for {name}; their sessions have ended"
            )))
        }
        Err(e) => back(Err(e.to_string())),
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
