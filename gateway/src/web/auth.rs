//! Who may use the web server, and how they prove it (issue 13).
//!
//! **The route table.** Every route is added through [`Routes`], which takes its [`Access`]
//! with the handler: `Routes::new().get("/api/kpi", VIEWER, kpi::kpi)`.
//! The table it builds is the one source of truth: [`guard`] looks the matched route up in it
//! and refuses (500) a route it does not find, so a route added any other way is closed to
//! everyone, and `tests/e2e/access.rs` requests every route of the table with every role and
//! with none. (`web/mod.rs` builds its router only through `Routes`: a unit test below fails
//! on a `.route(` anywhere else in `web/`.)
//!
//! **Who.** A browser session (cookie `gkgw_session`: 256 random bits, HttpOnly,
//! `SameSite=Strict`, `Path=/`; no `Secure` attribute, since the gateway serves plain HTTP on
//! the site network and a browser would drop a Secure cookie there) or a bearer token
//! (`Authorization: Bearer gkgw_…`, from `gkgw user token NAME`) for machine clients: the
//! CLIs, tests, scripts. Sessions last `http.session_hours` from the login, fixed (use does not
//! extend them: a stolen cookie is worth at most one shift, and no request writes to the
//! store to slide it). Tokens last until revoked.
//!
//! **CSRF.** Every request that is not GET/HEAD on a session must carry the session's CSRF
//! token, in the `X-CSRF-Token` header or the `csrf` field of a urlencoded form; otherwise
//! 403. `GET /api/session` gives it to scripts, pages embed it in their forms. A bearer-token
//! request carries no cookie, so a third-party page cannot make a browser send one, and it
//! needs no CSRF token. The login form has a CSRF token of its own (double submit: a
//! `gkgw_login` cookie and the same value in the form), so another site cannot sign a browser
//! in under the attacker's account.
//!
//! **Throttles.** Logins: per account name and per client address (`users::Throttle`, state in
//! the store), answered 429 with Retry-After while locked, without checking the password.
//! Every request: a token bucket per client address ([`Buckets`]), 429 with Retry-After;
//! `/healthz` is exempt. argon2 runs on the blocking pool, one check at a time.
//!
//! Unauthenticated: `/api/…` and any non-GET answer 401 JSON; a page GET is redirected (303)
//! to `/login?next=…`. A role too low: 403.

// The helpers return axum responses as errors, which handlers return as they are.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::metrics::{Counter, CounterFamily, LabelValue, Registry};
use crate::store::users::{self as stored, Action, NewAudit, Users};
use crate::store::Handle;
use crate::users::{Role, Throttle};

pub const SESSION_COOKIE: &str = "gkgw_session";
const LOGIN_COOKIE: &str = "gkgw_login";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A form body larger than this is refused before its CSRF field is looked for.
const MAX_FORM_BYTES: usize = 1 << 20;

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: `/healthz`, the login form.
    Public,
    /// `/metrics`: anyone when `http.metrics_public`, else viewer and up.
    Metrics,
    /// Signed in with this role or a higher one.
    Role(Role),
}

/// Signed in with any role.
pub const VIEWER: Access = Access::Role(Role::Viewer);
/// Managers and admins.
pub const MANAGER: Access = Access::Role(Role::Manager);
pub const ADMIN: Access = Access::Role(Role::Admin);

impl Access {
    /// The lowest role that may use the route (None: no login needed).
    pub fn needs(self, metrics_public: bool) -> Option<Role> {
        match self {
            Access::Public => None,
            Access::Metrics if metrics_public => None,
            Access::Metrics => Some(Role::Viewer),
            Access::Role(r) => Some(r),
        }
    }
}

/// One route of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// As given to axum, with `{param}` placeholders.
    pub path: &'static str,
    pub access: Access,
}

/// The router and its access table, built together: the only way routes are added.
pub struct Routes {
    router: Router<Arc<AppState>>,
    table: Vec<Route>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

impl Routes {
    pub fn new() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    pub fn get<H, T>(self, path: &'static str, access: Access, handler: H) -> Routes
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        self.add(Method::GET, MethodFilter::GET, path, access, handler)
    }

    pub fn post<H, T>(self, path: &'static str, access: Access, handler: H) -> Routes
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        self.add(Method::POST, MethodFilter::POST, path, access, handler)
    }

    fn add<H, T>(
        mut self,
        method: Method,
        filter: MethodFilter,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        assert!(
            !self
                .table
                .iter()
                .any(|r| r.method == method && r.path == path),
            "route {method} {path} added twice"
        );
        self.table.push(Route {
            method,
            path,
            access,
        });
        self.router = self.router.route(path, on(filter, handler));
        self
    }

    pub fn table(&self) -> &[Route] {
        &self.table
    }

    /// The finished router: the access guard on every route, the rate limit on everything.
    pub fn finish(self, state: Arc<AppState>) -> Router {
        let table: HashMap<(Method, &'static str), Access> = self
            .table
            .iter()
            .map(|r| ((r.method.clone(), r.path), r.access))
            .collect();
        let guard_state = GuardState {
            gate: state.auth.clone(),
            table: Arc::new(table),
        };
        self.router
            .route_layer(axum::middleware::from_fn_with_state(guard_state, guard))
            .layer(axum::middleware::from_fn_with_state(
                state.auth.clone(),
                rate_limit,
            ))
            .with_state(state)
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Session,
    Token,
}

/// The signed-in caller of a request: in the request's extensions on every route that needs a
/// role (`Extension<Caller>` in a handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub via: Via,
    /// The session's CSRF token, for the forms a page renders (None for a token).
    pub csrf: Option<String>,
    pub expires_ns: Option<i64>,
    pub address: IpAddr,
}

impl Caller {
    /// The audit log's `via`: `web 192.168.1.20`, `token 127.0.0.1`.
    pub fn via_text(&self) -> String {
        match self.via {
            Via::Session => format!("web {}", self.address),
            Via::Token => format!("token {}", self.address),
        }
    }
}

/// What the guard does with a request, given the route's access and the caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No (valid) session or token: 401, or a redirect to the login page.
    Login,
    /// Signed in, role too low: 403.
    Forbidden,
}

pub fn decide(access: Access, caller: Option<Role>, metrics_public: bool) -> Decision {
    match (access.needs(metrics_public), caller) {
        (None, _) => Decision::Allow,
        (Some(_), None) => Decision::Login,
        (Some(need), Some(have)) if have >= need => Decision::Allow,
        (Some(_), Some(_)) => Decision::Forbidden,
    }
}

/// Methods that change nothing, so need no CSRF token.
fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Equal without an early exit on the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The counters of the web's access control.
pub struct Metrics {
    pub login_failures: Arc<Counter>,
    pub throttled: Arc<CounterFamily<Limit>>,
}

/// Which limit answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A login while its account or address is locked (or the failure that locked it).
    Login,
    /// The per-address request rate.
    Requests,
}

impl LabelValue for Limit {
    const ALL: &'static [Limit] = &[Limit::Login, Limit::Requests];
    fn index(self) -> usize {
        self as usize
    }
    fn as_str(self) -> &'static str {
        match self {
            Limit::Login => "login",
            Limit::Requests => "requests",
        }
    }
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            login_failures: r.counter(
                "gkgw_http_login_failures_total",
                "Dashboard logins refused for a wrong user name or password.",
            ),
            throttled: r.counter_family(
                "gkgw_http_throttled_total",
                "HTTP requests answered 429: a locked login, or over the per-address request rate.",
                "limit",
            ),
        }
    }
}

/// Token buckets per client address: `rate` tokens a second up to `burst`; a request takes
/// one. Pure: the time comes in. At most `MAX_CLIENTS` addresses are kept; beyond that the
/// full buckets (clients idle long enough to be back at `burst`) are forgotten, and if all are
/// busy, all are (the limit fails open rather than growing without bound).
pub struct Buckets {
    rate: f64,
    burst: f64,
    clients: HashMap<String, (f64, Instant)>,
}

const MAX_CLIENTS: usize = 10_000;

impl Buckets {
    pub fn new(rate: f64, burst: u32) -> Buckets {
        Buckets {
            rate,
            burst: f64::from(burst),
            clients: HashMap::new(),
        }
    }

    /// Takes a token for `key`; `Err(wait)` when there is none, with the time until one.
    pub fn take(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let (rate, burst) = (self.rate, self.burst);
        if self.clients.len() >= MAX_CLIENTS && !self.clients.contains_key(key) {
            self.clients.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.clients.len() >= MAX_CLIENTS {
                self.clients.clear();
            }
        }
        let (tokens, at) = self.clients.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

struct GateInner {
    users: Handle<Users>,
    session_ns: i64,
    metrics_public: bool,
    throttle: Throttle,
    buckets: Mutex<Buckets>,
    metrics: Metrics,
    /// One argon2 check at a time (7 MiB and ~30 ms each; logins are rare).
    hashing: tokio::sync::Semaphore,
    /// Checked for an unknown name, so it costs what a known one does.
    dummy_hash: String,
}

/// The access control's state, shared by the guard, the login routes and the handlers that
/// write the audit log. Cheap to clone.
#[derive(Clone)]
pub struct Gate(Arc<GateInner>);

impl Gate {
    pub fn new(users: Handle<Users>, http: &crate::config::Http, metrics: Metrics) -> Gate {
        Gate(Arc::new(GateInner {
            users,
            session_ns: (http.session_hours * 3600e9) as i64,
            metrics_public: http.metrics_public,
            throttle: Throttle {
                lock_after: http.login_lock_after,
                lockout_ns: (http.login_lockout_s as i64).saturating_mul(1_000_000_000),
                max_lockout_ns: 3600 * 1_000_000_000,
                forget_ns: 86_400 * 1_000_000_000,
            },
            buckets: Mutex::new(Buckets::new(http.rate_limit_per_s, http.rate_limit_burst)),
            metrics,
            hashing: tokio::sync::Semaphore::new(1),
            dummy_hash: crate::credentials::hash_password(&crate::credentials::new_password())
                .unwrap_or_default(),
        }))
    }

    pub fn users(&self) -> &Handle<Users> {
        &self.0.users
    }

    /// Appends to the audit log what `caller` did. A failure is logged, not returned: the
    /// write it records has happened.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: Action,
        target: Option<String>,
        detail: Option<String>,
    ) {
        self.audit_as(
            Some(caller.user.clone()),
            action,
            target,
            detail,
            caller.via_text(),
        )
        .await;
    }

    async fn audit_as(
        &self,
        user: Option<String>,
        action: Action,
        target: Option<String>,
        detail: Option<String>,
        via: String,
    ) {
        let now = crate::clock::wall_ns();
        let r = self
            .0
            .users
            .run(move |u| {
                u.audit(
                    &NewAudit {
                        user: user.as_deref(),
                        action,
                        target: target.as_deref(),
                        detail: detail.as_deref(),
                        via: &via,
                    },
                    now,
                )
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, action = action.as_str(), "cannot write the audit log");
        }
    }

    /// Whether the credentials in `headers` still name a caller (a live stream's recheck).
    pub async fn identifies(&self, headers: &HeaderMap, address: IpAddr) -> bool {
        matches!(self.identify(headers, address).await, Ok(Some(_)))
    }

    /// The caller a request's credentials name: `Err` for a bearer token that is not valid (a
    /// machine client must hear that, not be sent to a login page), `Ok(None)` for no
    /// credentials or a session that has ended.
    async fn identify(&self, headers: &HeaderMap, address: IpAddr) -> Result<Option<Caller>, ()> {
        let now = crate::clock::wall_ns();
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_owned())
                .ok_or(())?;
            let found = self.0.users.run(move |u| u.token(&token)).await;
            return match found {
                Ok(Some((user, role))) => Ok(Some(Caller {
                    user,
                    role,
                    via: Via::Token,
                    csrf: None,
                    expires_ns: None,
                    address,
                })),
                Ok(None) => Err(()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the tokens");
                    Err(())
                }
            };
        }
        let Some(id) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        match self.0.users.run(move |u| u.session(&id, now)).await {
            Ok(Some(s)) => Ok(Some(Caller {
                user: s.user,
                role: s.role,
                via: Via::Session,
                csrf: Some(s.csrf),
                expires_ns: Some(s.expires_ns),
                address,
            })),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the sessions");
                Ok(None)
            }
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_owned())
        })
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

/// Percent-encodes `s` for a query value (unreserved characters and `/` stay).
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `next` to redirect to after the login: a path on this server only (not `//host`, not
/// `/\host`, which browsers read as another host), else `/`.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.starts_with("/login")
        && !next.bytes().any(|b| b.is_ascii_control());
    if ok {
        next
    } else {
        "/"
    }
}

fn login_required(method: &Method, path_and_query: &str, path: &str) -> Response {
    if is_api(path) || !matches!(*method, Method::GET | Method::HEAD) {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "login required: sign in at /login, or send Authorization: Bearer <token> (gkgw user token NAME)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"gkgw\""),
        );
        return r;
    }
    let location = format!("/login?next={}", query_escape(path_and_query));
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn forbidden(headers: &HeaderMap, path: &str, need: Role, have: Role) -> Response {
    if is_api(path) {
        json_error(
            StatusCode::FORBIDDEN,
            format!("this needs the {need} role (you are {have})"),
        )
    } else {
        use crate::web::ui::i18n::Arg;
        let t = tr(headers);
        let role = |r: Role| t.s(&format!("role-{}", r.as_str()));
        let message = t.a(
            "forbidden-role",
            &[("need", Arg::S(role(need))), ("have", Arg::S(role(have)))],
        );
        (
            StatusCode::FORBIDDEN,
            Html(page(
                t.lang.code(),
                &t.s("forbidden-title"),
                &format!(
                    "<p>{}</p><p><a href=\"/\">{}</a></p>",
                    html(&message),
                    html(&t.s("forbidden-back"))
                ),
            )),
        )
            .into_response()
    }
}

fn too_many(wait: Duration, message: &str) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("{message}; retry in {secs} s"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// The table and the gate, for [`guard`].
#[derive(Clone)]
pub struct GuardState {
    gate: Gate,
    table: Arc<HashMap<(Method, &'static str), Access>>,
}

/// The per-address request rate limit, before anything else (404s count too).
pub async fn rate_limit(
    State(gate): State<Gate>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() != "/healthz" {
        let key = stored::address_key(addr.ip());
        let taken = gate
            .0
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(&key, Instant::now());
        if let Err(wait) = taken {
            gate.0.metrics.throttled.inc(Limit::Requests);
            return too_many(wait, "too many requests from this address");
        }
    }
    next.run(req).await
}

/// The access check of every route: the route's [`Access`] from the table, the caller from
/// the session cookie or bearer token, the CSRF token of a state-changing session request.
pub async fn guard(
    State(g): State<GuardState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    let path = req.uri().path().to_owned();
    let access = matched
        .as_ref()
        .and_then(|m| g.table.get(&(method.clone(), m.as_str())).copied());
    let Some(access) = access else {
        // The path is routed for other methods: axum's answer (405) passes through this layer.
        let other_methods = matched
            .as_ref()
            .is_some_and(|m| g.table.keys().any(|(_, p)| *p == m.as_str()));
        if other_methods {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        tracing::error!(method = %method, path = ?path, "a route without an access level: refused");
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this route has no access level (web::auth::Routes)",
        );
    };
    let Some(need) = access.needs(g.gate.0.metrics_public) else {
        return next.run(req).await;
    };
    let caller = match g.gate.identify(req.headers(), addr.ip()).await {
        Ok(c) => c,
        Err(()) => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "the bearer token is not valid (gkgw user token NAME makes one)",
            )
        }
    };
    match decide(
        access,
        caller.as_ref().map(|c| c.role),
        g.gate.0.metrics_public,
    ) {
        Decision::Allow => {}
        Decision::Login => {
            let pq = req
                .uri()
                .path_and_query()
                .map_or(path.clone(), |p| p.as_str().to_owned());
            return login_required(&method, &pq, &path);
        }
        Decision::Forbidden => {
            let have = caller.as_ref().map_or(Role::Viewer, |c| c.role);
            return forbidden(req.headers(), &path, need, have);
        }
    }
    let caller = caller.expect("allowed with a role needed, so signed in");
    let mut req = req;
    if caller.via == Via::Session && !safe(&method) {
        let expected = caller.csrf.clone().unwrap_or_default();
        let header_token = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ok = match header_token {
            Some(t) => same(&t, &expected),
            None if is_form(req.headers()) => {
                let (parts, body) = req.into_parts();
                let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
                    Ok(b) => b,
                    Err(_) => {
                        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large")
                    }
                };
                let field = form_field(&bytes, "csrf");
                req = Request::from_parts(parts, Body::from(bytes));
                field.is_some_and(|t| same(&t, &expected))
            }
            None => false,
        };
        if !ok {
            return json_error(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: send the session's token (GET /api/session) in the X-CSRF-Token header or a csrf form field",
            );
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn form_field(bytes: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// Escapes text for HTML content and attribute values.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal page in `lang`: no script, no external asset.
pub fn page(lang: &str, title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang={lang}><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{} · Green Kitchen Gateway</title>\
         <style>body{{font-family:sans-serif;margin:1em auto;max-width:26em;padding:0 1em;color:#111}}label{{display:block;margin:.8em 0 .2em}}\
         input,select,button{{font-size:1.1em;padding:.4em;width:100%;box-sizing:border-box}}button{{margin-top:1em;background:#1d5e2a;color:#fff;border:0}}\
         .msg{{background:#fde8e8;color:#7a0b0b;padding:.5em}}a{{color:#14532d}}</style>\
         </head><body><h1>{}</h1>{body}</body></html>",
        html(title),
        html(title)
    )
}

fn tr(headers: &HeaderMap) -> crate::web::ui::i18n::Tr {
    crate::web::ui::i18n::Tr::new(crate::web::ui::lang_of(headers))
}

/// A logout button for a page (a form: logout changes state, so it is a POST with the token).
pub fn logout_form(caller: &Caller) -> String {
    format!(
        "<form method=post action=/logout style=\"display:inline\"><input type=hidden name=csrf value=\"{}\"><button style=\"width:auto;margin:0;padding:.2em .6em;font-size:1em\">Log out {}</button></form>",
        html(caller.csrf.as_deref().unwrap_or("")),
        html(&caller.user)
    )
}

fn set_cookie(r: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The login form. Its CSRF token is the browser's `gkgw_login` cookie when it has one (two
/// tabs with the form both work), else a new one.
fn login_page(
    status: StatusCode,
    headers: &HeaderMap,
    next: &str,
    message: Option<&str>,
) -> Response {
    let token = cookie(headers, LOGIN_COOKIE)
        .filter(|t| {
            t.len() == 43
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        })
        .unwrap_or_else(stored::random_secret);
    let t = tr(headers);
    let other = t.lang.other();
    let back_here = format!("/login?next={}", query_escape(safe_next(next)));
    let body = format!(
        "{}<form method=post action=/login>\
         <input type=hidden name=csrf value=\"{token}\"><input type=hidden name=next value=\"{}\">\
         <label for=user>{}</label><input id=user name=user autocomplete=username autocapitalize=none required autofocus>\
         <label for=password>{}</label><input id=password name=password type=password autocomplete=current-password required>\
         <button>{}</button></form><p><a href=\"/lang/{}?next={}\" lang={}>{}</a></p>",
        message.map_or(String::new(), |m| format!("<p class=msg role=alert>{}</p>", html(m))),
        html(safe_next(next)),
        html(&t.s("login-user")),
        html(&t.s("login-password")),
        html(&t.s("login-button")),
        other.code(),
        html(&query_escape(&back_here)),
        other.code(),
        html(&t.s("switch-language")),
    );
    let mut r = (
        status,
        Html(page(t.lang.code(), &t.s("login-title"), &body)),
    )
        .into_response();
    set_cookie(
        &mut r,
        format!("{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/login; Max-Age=3600"),
    );
    r
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /login`: the form.
pub async fn login_form(headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    login_page(
        StatusCode::OK,
        &headers,
        q.next.as_deref().unwrap_or("/"),
        None,
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login`: checks the throttle, then the password; starts a session.
pub async fn login(
    State(s): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let gate = s.auth.clone();
    let g = &gate.0;
    let next = safe_next(&f.next).to_owned();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&f.csrf, &expected) {
        return login_page(
            StatusCode::FORBIDDEN,
            &headers,
            &next,
            Some(&tr(&headers).s("login-expired")),
        );
    }
    let name: String = f.user.trim().to_lowercase().chars().take(64).collect();
    let (account, address) = (stored::account_key(&name), stored::address_key(addr.ip()));
    let now = crate::clock::wall_ns();
    let (keys, lookup_name) = ((account.clone(), address.clone()), name.clone());
    let looked = g
        .users
        .run(move |u| {
            Ok::<_, stored::Error>((
                u.attempts(&keys.0)?,
                u.attempts(&keys.1)?,
                u.credentials(&lookup_name)?,
            ))
        })
        .await;
    let (by_account, by_address, creds) = match looked {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "login: cannot read the users");
            return login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &headers,
                &next,
                Some(&tr(&headers).s("login-unavailable")),
            );
        }
    };
    let locked = [by_account, by_address]
        .into_iter()
        .filter_map(|a| g.throttle.check(a, now).err())
        .max();
    if let Some(ns) = locked {
        g.metrics.throttled.inc(Limit::Login);
        return throttled_page(&headers, &next, ns);
    }
    let ok = {
        let _permit = g.hashing.acquire().await;
        let hash = creds
            .as_ref()
            .map_or(g.dummy_hash.clone(), |(_, h)| h.clone());
        let password = f.password;
        // A megabyte "password" is not checked: argon2's time grows with it.
        let valid = password.len() <= crate::users::MAX_PASSWORD;
        tokio::task::spawn_blocking(move || {
            valid && crate::credentials::verify_password(&hash, &password)
        })
        .await
        .unwrap_or(false)
    };
    if ok && creds.is_some() {
        let (user, expires) = (name.clone(), now.saturating_add(g.session_ns));
        let ip = addr.ip().to_string();
        match g
            .users
            .run(move |u| u.start_session(&user, now, expires, &ip))
            .await
        {
            Ok(session) => {
                gate.audit_as(
                    Some(name.clone()),
                    Action::Login,
                    None,
                    None,
                    format!("web {}", addr.ip()),
                )
                .await;
                tracing::info!(user = ?name, address = %addr.ip(), "dashboard login");
                let mut r = StatusCode::SEE_OTHER.into_response();
                if let Ok(v) = HeaderValue::from_str(&next) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                let secs = (g.session_ns / 1_000_000_000).max(1);
                set_cookie(
                    &mut r,
                    format!(
                        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={secs}",
                        session.id
                    ),
                );
                set_cookie(
                    &mut r,
                    format!("{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/login; Max-Age=0"),
                );
                return r;
            }
            Err(e) => {
                tracing::error!(error = %e, "login: cannot start a session");
                return login_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &headers,
                    &next,
                    Some(&tr(&headers).s("login-unavailable")),
                );
            }
        }
    }
    g.metrics.login_failures.inc();
    let (acc_state, addr_state) = (
        g.throttle.failed(by_account, now),
        g.throttle.failed(by_address, now),
    );
    let forget_before = now.saturating_sub(g.throttle.forget_ns);
    let stored_ok = g
        .users
        .run(move |u| {
            u.record_failure(
                &[(&account, acc_state), (&address, addr_state)],
                now,
                forget_before,
            )
        })
        .await;
    if let Err(e) = stored_ok {
        tracing::error!(error = %e, "login: cannot record a failure");
    }
    gate.audit_as(
        Some(name.clone()),
        Action::LoginFailed,
        None,
        None,
        format!("web {}", addr.ip()),
    )
    .await;
    tracing::warn!(user = ?name, address = %addr.ip(), "dashboard login failed");
    let locked = [acc_state, addr_state]
        .into_iter()
        .filter_map(|a| g.throttle.check(Some(a), now).err())
        .max();
    match locked {
        Some(ns) => {
            g.metrics.throttled.inc(Limit::Login);
            throttled_page(&headers, &next, ns)
        }
        None => login_page(
            StatusCode::UNAUTHORIZED,
            &headers,
            &next,
            Some(&tr(&headers).s("login-wrong")),
        ),
    }
}

fn throttled_page(headers: &HeaderMap, next: &str, ns: i64) -> Response {
    let secs = (ns as f64 / 1e9).ceil().max(1.0) as u64;
    let mut r = login_page(
        StatusCode::TOO_MANY_REQUESTS,
        headers,
        next,
        Some(&tr(headers).a(
            "login-throttled",
            &[("secs", crate::web::ui::i18n::Arg::N(secs as f64))],
        )),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// `POST /logout`: ends the session (its CSRF token was checked by the guard).
pub async fn logout(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE).filter(|_| caller.via == Via::Session) {
        if let Err(e) = s.auth.0.users.run(move |u| u.end_session(&id)).await {
            tracing::error!(error = %e, "logout: cannot end the session");
        }
        s.auth.audit(&caller, Action::Logout, None, None).await;
    }
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/login"));
    set_cookie(
        &mut r,
        format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

/// `GET /api/session`: who is signed in, and the CSRF token scripts send.
pub async fn session(Extension(caller): Extension<Caller>) -> Response {
    Json(json!({
        "user": caller.user,
        "role": caller.role.as_str(),
        "via": match caller.via { Via::Session => "session", Via::Token => "token" },
        "csrf": caller.csrf,
        "expires": caller.expires_ns.map(super::rfc3339),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(access: Access, caller: Option<Role>, metrics_public: bool, expected: Decision) {
        assert_eq!(
            decide(access, caller, metrics_public),
            expected,
            "{access:?} for {caller:?} (metrics public: {metrics_public})"
        );
    }

    #[test]
    fn each_role_gets_what_its_level_allows() {
        use Decision::*;
        use Role::*;
        for public in [true, false] {
            for c in [None, Some(Viewer), Some(Admin)] {
                check(Access::Public, c, public, Allow);
            }
        }
        check(Access::Metrics, None, true, Allow);
        check(Access::Metrics, None, false, Login);
        check(Access::Metrics, Some(Viewer), false, Allow);
        check(VIEWER, None, true, Login);
        check(VIEWER, Some(Viewer), true, Allow);
        check(MANAGER, Some(Viewer), true, Forbidden);
        check(MANAGER, Some(Manager), true, Allow);
        check(MANAGER, Some(Admin), true, Allow);
        check(ADMIN, Some(Manager), true, Forbidden);
        check(ADMIN, Some(Admin), true, Allow);
        check(ADMIN, None, true, Login);
    }

    #[test]
    fn buckets_refill_at_the_rate_and_hold_the_burst() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Buckets::new(2.0, 3);
        for _ in 0..3 {
            assert_eq!(b.take("a", at(0)), Ok(()));
        }
        let wait = b.take("a", at(0)).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(b.take("b", at(0)), Ok(()), "another address has its own");
        assert_eq!(b.take("a", at(500)), Ok(()), "one token in 0.5 s");
        assert!(b.take("a", at(500)).is_err());
        // Never more than the burst, however long idle.
        for _ in 0..3 {
            assert_eq!(b.take("a", at(60_000)), Ok(()));
        }
        assert!(b.take("a", at(60_000)).is_err());
        // Rate 0: off.
        let mut off = Buckets::new(0.0, 1);
        for _ in 0..100 {
            assert_eq!(off.take("a", at(0)), Ok(()));
        }
        // Bounded: idle (full) clients are forgotten to make room.
        let mut many = Buckets::new(1.0, 1);
        for i in 0..MAX_CLIENTS {
            let _ = many.take(&i.to_string(), at(0));
        }
        assert_eq!(many.take("new", at(5_000)), Ok(()));
        assert!(many.clients.len() < 10, "{}", many.clients.len());
    }

    #[test]
    fn next_stays_on_this_server() {
        for (next, want) in [
            ("/alarms?x=1", "/alarms?x=1"),
            ("/", "/"),
            ("//evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("/login?next=/", "/"),
            ("/a\r\nSet-Cookie: x", "/"),
            ("", "/"),
        ] {
            assert_eq!(safe_next(next), want, "{next:?}");
        }
        assert_eq!(query_escape("/a b?c=d&e"), "/a%20b%3Fc%3Dd%26e");
    }

    #[test]
    fn cookies_and_form_fields() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; gkgw_session=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "gkgw"), None);
        assert_eq!(
            form_field(b"kind=note&csrf=a%2Bb&text=x", "csrf").as_deref(),
            Some("a+b")
        );
        assert_eq!(form_field(b"kind=note", "csrf"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    /// Routes are added only through `Routes` (with their access level): no `.route(` call in
    /// any file of the web module but this one.
    #[test]
    fn routes_are_only_added_through_the_table() {
        fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).expect("src/web") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    files(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web");
        let mut all = Vec::new();
        files(&dir, &mut all);
        assert!(all.len() > 5, "{all:?}");
        for file in all.iter().filter(|p| !p.ends_with("auth.rs")) {
            let text = std::fs::read_to_string(file).expect("read");
            for forbidden in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".merge(",
                ".fallback(",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{} calls {forbidden}: add routes with web::auth::Routes and an Access",
                    file.display()
                );
            }
        }
    }

    #[test]
    fn the_table_has_every_route_once_with_a_level() {
        let routes = super::super::routes();
        let table = routes.table();
        assert!(table.len() > 10);
        let get = |p: &str| {
            table
                .iter()
                .find(|r| r.method == Method::GET && r.path == p)
                .map(|r| r.access)
        };
        assert_eq!(get("/healthz"), Some(Access::Public));
        assert_eq!(get("/login"), Some(Access::Public));
        assert_eq!(get("/metrics"), Some(Access::Metrics));
        assert_eq!(get("/"), Some(VIEWER));
        // The roles: managers write the logbook and operate alarms; admins manage
        // users, read the audit log and submit commands; everything else is read by viewers,
        // but the language switch and the static assets (the login page needs its CSS).
        for r in table {
            let (m, p) = (&r.method, r.path);
            let want = if *m == Method::POST
                && (p.starts_with("/api/logbook")
                    || p.starts_with("/api/alarms")
                    || p.starts_with("/logbook"))
            {
                MANAGER
            } else if p.starts_with("/users")
                || p == "/api/users"
                || p == "/api/audit"
                || (*m == Method::POST && p == "/api/commands")
            {
                ADMIN
            } else if ["/healthz", "/login", "/lang/{code}", "/assets/{name}"].contains(&p) {
                Access::Public
            } else if p == "/metrics" {
                Access::Metrics
            } else {
                VIEWER
            };
            assert_eq!(r.access, want, "{m} {p}");
        }
        // Nothing that changes state is public, except the login itself.
        for r in table {
            if r.method != Method::GET && r.path != "/login" {
                assert!(
                    matches!(r.access, Access::Role(_)),
                    "{} {} changes state without a login",
                    r.method,
                    r.path
                );
            }
        }
    }
}
