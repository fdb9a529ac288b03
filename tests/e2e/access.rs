//! Accounts and access control over HTTP (issue 13): every route of the one table
//! (`gkgw::web::route_table`) with no login, a viewer, a manager and an admin, by browser session
//! and by bearer token; CSRF; the login throttle per account and per address; session expiry
//! and logout; the request rate limit; the audit log of logins.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Each role's login (name = role), made before the gateway starts.
fn users(gw: &Gateway) -> Vec<(&'static str, String)> {
    ["viewer", "manager", "admin"]
        .into_iter()
        .map(|r| (r, gw.add_user(r, r, &format!("{r}-password"))))
        .collect()
}

fn base(gw: &Gateway) -> String {
    format!("http://127.0.0.1:{}", gw.http_port)
}

/// A concrete path for a route of the table: each `{param}` gets a value no object has.
fn concrete(path: &str) -> String {
    path.replace("{id}", "no_rule:nowhere")
        .replace("{action}", "ack")
        .replace("{entry}", "999999")
        .replace("{name}", "nobody-here")
}

/// Who asks: nobody, a browser session of a role, or a role's bearer token.
enum Caller<'a> {
    Nobody,
    Session(&'a str, &'a Browser, String),
    Token(&'a str, &'a str),
}

impl Caller<'_> {
    fn role(&self) -> Option<gkgw::users::Role> {
        match self {
            Caller::Nobody => None,
            Caller::Session(r, ..) | Caller::Token(r, _) => gkgw::users::Role::parse(r),
        }
    }

    fn name(&self) -> String {
        match self {
            Caller::Nobody => "nobody".into(),
            Caller::Session(r, ..) => format!("{r} (session)"),
            Caller::Token(r, _) => format!("{r} (token)"),
        }
    }
}

fn ask(gw: &Gateway, caller: &Caller<'_>, method: &str, path: &str) -> Answer {
    // The live stream never ends: HEAD answers with its status and no body.
    let method = if path == "/api/live" { "HEAD" } else { method };
    let body = (method == "POST").then_some(("application/json", "{}"));
    match caller {
        Caller::Nobody => Browser::new(&base(gw)).request(method, path, body, &[]),
        Caller::Session(_, b, csrf) => {
            b.request(method, path, body, &[format!("X-CSRF-Token: {csrf}")])
        }
        Caller::Token(_, t) => Browser::new(&base(gw)).request(
            method,
            path,
            body,
            &[format!("Authorization: Bearer {t}")],
        ),
    }
}

/// Every route of the table, with every kind of caller: allowed → neither 401 nor 403 nor a
/// redirect to the login; refused → 401 (API, or a write) or a redirect to /login?next= (a page)
/// without a login, 403 with a role too low. A route added to the router has to be in the table
/// (the guard refuses any other with 500, and web::auth's unit test finds `.route(` elsewhere),
/// so this walks every route there is. No page references another host.
#[test]
fn every_route_answers_each_role_as_its_table_says() {
    let gw = Gateway::start(
        "[http]\nmetrics_public = false\nrate_limit_per_s = 500\nrate_limit_burst = 2000\n",
        &[],
    );
    let tokens = users(&gw);
    let table = gkgw::web::route_table();
    assert!(table.len() >= 25, "{} routes", table.len());
    for must in [
        "/api/alarms/{id}/{action}",
        "/api/logbook",
        "/api/commands",
        "/login",
    ] {
        assert!(table.iter().any(|r| r.path == must), "{must} in the table");
    }
    let browsers: Vec<(&str, Browser)> = tokens
        .iter()
        .map(|(role, _)| {
            let b = Browser::new(&base(&gw));
            let a = b.login(role, &format!("{role}-password"));
            assert_eq!(a.status, 303, "{role} signs in: {}", a.body);
            (*role, b)
        })
        .collect();
    let mut callers = vec![Caller::Nobody];
    for (role, b) in &browsers {
        callers.push(Caller::Session(role, b, b.csrf()));
    }
    for (role, t) in &tokens {
        callers.push(Caller::Token(role, t));
    }
    // Logout ends the session it is asked with: last.
    let mut routes = table.clone();
    routes.sort_by_key(|r| r.path == "/logout");
    let mut checked = 0;
    for r in &routes {
        let path = concrete(r.path);
        let need = r.access.needs(false);
        for c in &callers {
            let a = if r.path == "/login" && r.method == "POST" {
                // The login form is its own: a fresh browser with the form's token.
                Browser::new(&base(&gw)).login("viewer", "viewer-password")
            } else {
                ask(&gw, c, r.method.as_str(), &path)
            };
            let what = format!(
                "{} {path} as {}: {} {}",
                r.method,
                c.name(),
                a.status,
                a.body
            );
            let to_login = a.status == 303
                && a.header("location")
                    .is_some_and(|l| l.starts_with("/login?next="));
            match (need, c.role()) {
                (None, _) => {
                    assert!(![401, 403, 500].contains(&a.status) && !to_login, "{what}")
                }
                (Some(_), None) => {
                    let page =
                        r.method == "GET" && !r.path.starts_with("/api/") && r.path != "/metrics";
                    if page {
                        assert!(to_login, "a page redirects to the login: {what}");
                        assert_eq!(
                            a.header("location"),
                            Some(format!("/login?next={}", path.replace(':', "%3A")).as_str()),
                            "{what}"
                        );
                    } else {
                        assert_eq!(a.status, 401, "{what}");
                    }
                }
                (Some(need), Some(have)) if have >= need => {
                    assert!(![401, 403, 500].contains(&a.status) && !to_login, "{what}");
                    let html = a
                        .header("content-type")
                        .is_some_and(|t| t.starts_with("text/html"));
                    if html {
                        for external in [
                            "http://",
                            "https://",
                            "src=\"//",
                            "href=\"//",
                            "src=//",
                            "href=//",
                        ] {
                            assert!(
                                !a.body.contains(external),
                                "an external reference {external:?}: {what}"
                            );
                        }
                    }
                }
                (Some(_), Some(_)) => assert_eq!(a.status, 403, "{what}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * callers.len());
    // An unknown token is told so, not redirected.
    let (code, _) = http_as("gkgw_forged", "GET", &gw.url("/api/status"), None);
    assert_eq!(code, 401);
}

/// A state-changing request on a session needs the session's CSRF token (header or form
/// field); a bearer token needs none.
#[test]
fn session_writes_need_the_csrf_token() {
    let gw = Gateway::start("", &[]);
    let tokens = users(&gw);
    let b = Browser::new(&base(&gw));
    assert_eq!(b.login("manager", "manager-password").status, 303);
    let csrf = b.csrf();
    let entry = r#"{"kind":"note","text":"csrf check"}"#;
    let post = |headers: &[String]| {
        b.request(
            "POST",
            "/api/logbook",
            Some(("application/json", entry)),
            headers,
        )
    };
    assert_eq!(post(&[]).status, 403, "no token");
    assert_eq!(
        post(&["X-CSRF-Token: wrong".into()]).status,
        403,
        "a wrong token"
    );
    let other = Browser::new(&base(&gw));
    assert_eq!(other.login("admin", "admin-password").status, 303);
    assert_eq!(
        post(&[format!("X-CSRF-Token: {}", other.csrf())]).status,
        403,
        "another session's token"
    );
    let ok = post(&[format!("X-CSRF-Token: {csrf}")]);
    assert_eq!(ok.status, 201, "{}", ok.body);
    let v: serde_json::Value = serde_json::from_str(&ok.body).expect("json");
    assert_eq!(v["by"], "manager", "who wrote it is the session's user");
    // A form: the csrf field. Without it, the logout is refused and the session stays.
    assert_eq!(b.form("/logout", &[]).status, 403);
    assert_eq!(b.get("/api/session").status, 200);
    assert_eq!(b.form("/logout", &[("csrf", &csrf)]).status, 303);
    // A bearer token carries no cookie: no CSRF token needed.
    let manager_token = &tokens[1].1;
    let (code, body) = http_as(manager_token, "POST", &gw.url("/api/logbook"), Some(entry));
    assert_eq!(code, 201, "{body}");
}

/// `login_lock_after` failures lock the account and the address; while locked even the right
/// password is refused (429, Retry-After); another account from the same address is locked
/// too, the same account from another address as well; another account from another address
/// is not. A new password lifts the account's lock. Failures are counted and audited.
#[test]
fn logins_are_throttled_per_account_and_per_address() {
    let gw = Gateway::start("[http]\nlogin_lock_after = 3\nlogin_lockout_s = 120\n", &[]);
    users(&gw);
    gw.add_user("amina", "manager", "amina-password");
    let here = Browser::new(&base(&gw));
    for i in 1..=2 {
        let a = here.login("amina", "wrong-password");
        assert_eq!(a.status, 401, "failure {i}: {}", a.body);
        assert!(a.body.contains("Wrong user name or password"), "{}", a.body);
    }
    let a = here.login("amina", "wrong-password");
    assert_eq!(a.status, 429, "the third failure locks: {}", a.body);
    let retry: u64 = a
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((100..=120).contains(&retry), "{retry}");
    let a = here.login("amina", "amina-password");
    assert_eq!(
        a.status, 429,
        "the right password during the lock: {}",
        a.body
    );
    assert!(a.header("retry-after").is_some());
    assert!(
        here.get("/api/session").status == 401,
        "no session was made"
    );
    // The address is locked for every account.
    assert_eq!(here.login("viewer", "viewer-password").status, 429);
    // The account is locked from anywhere; another account from another address is not.
    let there = Browser::from_address(&base(&gw), "127.0.0.2");
    assert_eq!(there.login("amina", "amina-password").status, 429);
    assert_eq!(there.login("viewer", "viewer-password").status, 303);
    // A new password (gkgw user passwd) lifts the account's lock.
    let pw = gw.dir.path().join("pw");
    std::fs::write(&pw, "amina-new-password\n").expect("pw");
    let out = Command::new(GKGW)
        .args(["user", "passwd", "amina", "--password-file"])
        .arg(&pw)
        .arg("--config")
        .arg(&gw.config)
        .output()
        .expect("gkgw user passwd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elsewhere = Browser::from_address(&base(&gw), "127.0.0.3");
    assert_eq!(elsewhere.login("amina", "amina-password").status, 401);
    assert_eq!(elsewhere.login("amina", "amina-new-password").status, 303);
    assert_eq!(gw.metric("gkgw_http_login_failures_total"), 4.0);
    assert!(gw.metric("gkgw_http_throttled_total{limit=\"login\"}") >= 4.0);
    // The audit log has the failures and the logins, with the user and the address.
    let out = Command::new(GKGW)
        .args(["audit", "list", "--config"])
        .arg(&gw.config)
        .output()
        .expect("gkgw audit list");
    let audit = String::from_utf8_lossy(&out.stdout);
    let lines = |action: &str, who: &str, via: &str| {
        audit
            .lines()
            .filter(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.get(1) == Some(&who) && w.get(2) == Some(&action) && l.contains(via)
            })
            .count()
    };
    assert_eq!(
        lines("login_failed", "amina", "web 127.0.0.1"),
        3,
        "{audit}"
    );
    assert_eq!(
        lines("login_failed", "amina", "web 127.0.0.3"),
        1,
        "{audit}"
    );
    assert_eq!(lines("login", "amina", "web 127.0.0.3"), 1, "{audit}");
    assert_eq!(lines("login", "viewer", "web 127.0.0.2"), 1, "{audit}");
    // The new password: by the operator (WHO), of amina (TARGET), from the command line.
    assert!(
        audit
            .lines()
            .any(|l| l.contains("password_changed") && l.contains("amina") && l.contains("cli")),
        "{audit}"
    );
}

/// A session ends at `session_hours` after the login (fixed), checked by the server even for
/// a cookie the browser still sends; logout ends it at once.
#[test]
fn sessions_expire_and_logout_ends_them() {
    // 0.002 h = 7.2 s.
    let gw = Gateway::start("[http]\nsession_hours = 0.002\n", &[]);
    users(&gw);
    let b = Browser::new(&base(&gw));
    let a = b.login("viewer", "viewer-password");
    assert_eq!(a.status, 303);
    let cookie = a.header("set-cookie").expect("a session cookie").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=7"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let id = b.session_cookie().expect("in the jar");
    let by_hand = |path: &str| {
        Browser::new(&base(&gw)).request("GET", path, None, &[format!("Cookie: gkgw_session={id}")])
    };
    assert_eq!(by_hand("/api/session").status, 200);
    // A live stream opened with the session ends with it (curl returns when the server closes).
    let stream = |id: String| {
        let url = format!("{}/api/live?alarms=1", base(&gw));
        std::thread::spawn(move || {
            let out = std::process::Command::new("curl")
                .args(["-sN", "--max-time", "40", "-H"])
                .arg(format!("Cookie: gkgw_session={id}"))
                .arg(url)
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let live = stream(id.clone());
    let started = std::time::Instant::now();
    wait_until("the session to expire", Duration::from_secs(20), || {
        by_hand("/api/session").status == 401
    });
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let page = by_hand("/");
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login?next=/"));
    let events = live.join().expect("stream");
    assert!(
        events.contains("event: alarms") && events.ends_with("event: session\ndata: ended\n\n"),
        "the stream ends with the session: {events}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "curl timed out instead"
    );

    // Logout: the same cookie replayed afterwards is refused.
    let b = Browser::new(&base(&gw));
    assert_eq!(b.login("viewer", "viewer-password").status, 303);
    let id = b.session_cookie().expect("in the jar");
    let csrf = b.csrf();
    let live = stream(id.clone());
    std::thread::sleep(Duration::from_millis(500));
    let out = b.form("/logout", &[("csrf", &csrf)]);
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/login"));
    let replay = Browser::new(&base(&gw)).request(
        "GET",
        "/api/session",
        None,
        &[format!("Cookie: gkgw_session={id}")],
    );
    assert_eq!(replay.status, 401);
    let events = live.join().expect("stream");
    assert!(
        events.ends_with("event: session\ndata: ended\n\n"),
        "{events}"
    );

    // With 12-hour sessions, a stream of a session that logs out ends at its next check (15 s).
    let gw = Gateway::start("", &[]);
    users(&gw);
    let b = Browser::new(&base(&gw));
    assert_eq!(b.login("viewer", "viewer-password").status, 303);
    let id = b.session_cookie().expect("in the jar");
    let url = format!("{}/api/live", base(&gw));
    let live = std::thread::spawn(move || {
        let out = std::process::Command::new("curl")
            .args(["-sN", "--max-time", "40", "-H"])
            .arg(format!("Cookie: gkgw_session={id}"))
            .arg(url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    std::thread::sleep(Duration::from_millis(500));
    let logged_out = std::time::Instant::now();
    let csrf = b.csrf();
    assert_eq!(b.form("/logout", &[("csrf", &csrf)]).status, 303);
    let events = live.join().expect("stream");
    assert!(
        events.ends_with("event: session\ndata: ended\n\n"),
        "{events}"
    );
    assert!(
        logged_out.elapsed() < Duration::from_secs(20),
        "{:?}",
        logged_out.elapsed()
    );
}

/// Over `rate_limit_per_s` (burst `rate_limit_burst`) one address gets 429 with Retry-After;
/// another address does not, and /healthz never does.
#[test]
fn requests_over_the_rate_are_refused_with_retry_after() {
    let gw = Gateway::start("[http]\nrate_limit_per_s = 1\nrate_limit_burst = 5\n", &[]);
    // Gateway::start polled /healthz only, which is not limited.
    for i in 0..5 {
        let (code, body) = gw.http("GET", &gw.url("/api/status"), None);
        assert_eq!(code, 200, "request {i}: {body}");
    }
    let over = Browser::new(&base(&gw)).request(
        "GET",
        "/api/status",
        None,
        &[format!("Authorization: Bearer {}", gw.token)],
    );
    assert_eq!(over.status, 429, "{}", over.body);
    let retry: u64 = over
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(gw.healthz(), 200);
    let other = Browser::from_address(&base(&gw), "127.0.0.2");
    assert_eq!(
        other
            .request(
                "GET",
                "/api/status",
                None,
                &[format!("Authorization: Bearer {}", gw.token)]
            )
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        gw.http("GET", &gw.url("/api/status"), None).0,
        200,
        "refilled"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert!(gw.metric("gkgw_http_throttled_total{limit=\"requests\"}") >= 1.0);
}

/// The admin's users page: forms without script add a user, set a password, remove a user;
/// each change is audited as the admin, from the web.
#[test]
fn the_admin_page_adds_and_removes_users() {
    let gw = Gateway::start("", &[]);
    users(&gw);
    let admin = Browser::new(&base(&gw));
    assert_eq!(admin.login("admin", "admin-password").status, 303);
    let csrf = admin.csrf();
    let page = admin.get("/users");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(">manager<") && page.body.contains("name=\"csrf\""),
        "{}",
        page.body
    );
    let a = admin.form(
        "/users",
        &[
            ("csrf", &csrf),
            ("name", "juma"),
            ("role", "viewer"),
            ("password", "short"),
        ],
    );
    assert_eq!(a.status, 303);
    assert!(
        a.header("location").is_some_and(|l| l.contains("error=")),
        "{:?}",
        a.headers
    );
    let a = admin.form(
        "/users",
        &[
            ("csrf", &csrf),
            ("name", "juma"),
            ("role", "viewer"),
            ("password", "juma-password"),
        ],
    );
    assert!(
        a.header("location").is_some_and(|l| l.contains("done=")),
        "{:?}",
        a.headers
    );
    assert!(admin.get("/users").body.contains(">juma<"));
    let juma = Browser::new(&base(&gw));
    assert_eq!(juma.login("juma", "juma-password").status, 303);
    assert_eq!(juma.get("/users").status, 403, "a viewer is not an admin");
    // A new password ends juma's session.
    let a = admin.form(
        "/users/password",
        &[
            ("csrf", &csrf),
            ("name", "juma"),
            ("password", "juma-new-password"),
        ],
    );
    assert!(
        a.header("location").is_some_and(|l| l.contains("done=")),
        "{:?}",
        a.headers
    );
    assert_eq!(juma.get("/api/session").status, 401);
    assert_eq!(juma.login("juma", "juma-new-password").status, 303);
    let a = admin.form("/users/juma/remove", &[("csrf", &csrf)]);
    assert!(
        a.header("location").is_some_and(|l| l.contains("done=")),
        "{:?}",
        a.headers
    );
    assert_eq!(
        juma.get("/api/session").status,
        401,
        "removed: its session ended"
    );
    let list: serde_json::Value =
        serde_json::from_str(&admin.get("/api/users").body).expect("json");
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .all(|u| u["name"] != "juma"),
        "{list}"
    );
    let out = Command::new(GKGW)
        .args(["audit", "list", "--config"])
        .arg(&gw.config)
        .output()
        .expect("gkgw audit list");
    let audit = String::from_utf8_lossy(&out.stdout);
    for action in ["user_added", "password_changed", "user_removed"] {
        assert!(
            audit.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.get(1) == Some(&"admin")
                    && w.get(2) == Some(&action)
                    && l.contains("web 127.0.0.1")
            }),
            "{action}:\n{audit}"
        );
    }
}
