//! The kitchen manager's dashboard against a real `gkgw demo`: over HTTP (every page in both
//! languages, no untranslated message, no external host, the first page's weight, the logbook
//! form's validation and the alarm form), and in headless Chromium (tests/browser/dashboard.mjs:
//! live values, the language switch, acknowledging an alarm, the logbook form, screenshots of
//! every page at 360 and 1280 px, the connection-lost banner and its recovery).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const PAGES: [&str; 7] = [
    "/",
    "/digester",
    "/gas",
    "/meters",
    "/alarms",
    "/logbook",
    "/system",
];

struct Demo {
    proc: Proc,
    dir: std::path::PathBuf,
    http: u16,
    mqtt: u16,
}

/// With `history`, a day of simulated history first (a new state dir only).
fn start_demo(dir: &std::path::Path, http_port: u16, mqtt: u16, history: bool) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("demo.log"))
        .expect("log");
    let p = Proc::spawn(
        "gkgw demo",
        Command::new(GKGW)
            .args(["demo", "--meters", "20", "--meter-interval", "2"])
            .args(["--history-days", if history { "1" } else { "0" }])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("demo.out"))
                    .expect("out"),
            )
            .stderr(log),
    );
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while http(
        "GET",
        &format!("http://127.0.0.1:{http_port}/healthz"),
        None,
    )
    .0 != 200
    {
        if std::time::Instant::now() > until {
            let log = std::fs::read_to_string(dir.join("demo.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "demo /healthz not up in 60 s; demo.log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

impl Demo {
    fn start(dir: &std::path::Path) -> Demo {
        let (http, mqtt) = (free_port(), free_port());
        let proc = start_demo(dir, http, mqtt, true);
        Demo {
            proc,
            dir: dir.to_owned(),
            http,
            mqtt,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// The demo's printed password of `role` (the banner: `login: viewer password …`).
    fn password(&self, role: &str) -> String {
        let mut found = None;
        wait_until("the demo's logins", Duration::from_secs(30), || {
            let out = std::fs::read_to_string(self.dir.join("demo.out")).unwrap_or_default();
            found = out.lines().rev().find_map(|l| {
                l.trim()
                    .strip_prefix("login:")
                    .and_then(|r| r.trim().strip_prefix(role))
                    .and_then(|r| r.trim().strip_prefix("password "))
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_owned)
            });
            found.is_some()
        });
        found.expect("password")
    }

    fn token(&self, role: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("state/demo-{role}.token")))
            .expect("token")
            .trim()
            .to_owned()
    }

    /// A signed-in curl session of `role`.
    fn login(&self, role: &str) -> Browser {
        let b = Browser::new(&self.url(""));
        let a = b.login(role, &self.password(role));
        assert_eq!(a.status, 303, "{role} signs in: {}", a.body);
        b
    }
}

/// The value of a hidden form field as maud writes it (`name="csrf" value="…"`).
fn field(page: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let at = page.find(&key).unwrap_or_else(|| panic!("no {name} field"));
    let rest = &page[at + key.len()..];
    rest[..rest.find('"').expect("quote")].to_owned()
}

/// Message ids of the dashboard's Fluent file.
fn message_ids() -> Vec<String> {
    let src = std::fs::read_to_string(repo_root().join("gateway/locales/en.ftl")).expect("en.ftl");
    src.lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| k.contains('-'))
        .collect()
}

/// Every page answers in both languages with no message id left untranslated, refers to no
/// other host, and the first page (HTML + its CSS and script, compressed) is under 100 KB.
#[test]
fn every_page_in_both_languages_is_complete_local_and_light() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(dir.path());
    let b = demo.login("viewer");
    wait_until("meters reported", Duration::from_secs(30), || {
        b.get("/meters").body.contains("GM-0001")
    });
    let ids = message_ids();
    assert!(ids.len() > 100, "{} ids", ids.len());
    for lang in ["en", "sw"] {
        assert_eq!(b.get(&format!("/lang/{lang}?next=/")).status, 303);
        for p in PAGES {
            let a = b.get(p);
            let (code, body) = (a.status, a.body);
            assert_eq!(code, 200, "{p} ({lang})");
            assert!(body.contains(&format!("<html lang=\"{lang}\"")), "{p}");
            // A message shown by its id is a missing translation.
            let text: String = body
                .split('<')
                .filter_map(|s| s.split_once('>').map(|(_, t)| t))
                .collect::<Vec<_>>()
                .join(" ");
            for id in &ids {
                assert!(
                    !text.split_whitespace().any(|w| w == id),
                    "{p} ({lang}) shows the id {id}"
                );
            }
            for attr in ["src=\"", "href=\""] {
                for (at, _) in body.match_indices(attr) {
                    let v = &body[at + attr.len()..];
                    let v = &v[..v.find('"').expect("quote")];
                    assert!(
                        v.starts_with('/') || v.starts_with('#') || v.starts_with('?'),
                        "{p}: {attr}{v} is not local"
                    );
                }
            }
        }
    }
    assert_eq!(b.get("/lang/sw?next=/").status, 303);
    assert!(
        b.get("/").body.contains("Muhtasari wa mtambo"),
        "the overview in Kiswahili"
    );
    assert_eq!(b.get("/lang/en?next=/").status, 303);
    let token = demo.token("viewer");
    // The first page's weight as a browser fetches it (gzip).
    let size = |path: &str| -> u64 {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                "-H",
                "Accept-Encoding: gzip",
                "-H",
            ])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(demo.url(path))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("size")
    };
    let html = b.get("/").body;
    let mut total = size("/");
    for attr in ["src=\"/assets/", "href=\"/assets/"] {
        for (at, _) in html.match_indices(attr) {
            let v = &html[at + attr.len() - "/assets/".len()..];
            total += size(&v[..v.find('"').expect("quote")]);
        }
    }
    assert!(total < 100 * 1024, "first page {total} bytes");
    eprintln!("first page, compressed: {total} bytes");
    // JSON answers (a chart's day of history here) travel compressed and decode the same.
    let from_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        - 86_400_000;
    let api = format!(
        "/api/history?quantity=digester.pressure&instance=digester-1&from={from_ms}&points=300"
    );
    let plain = b.get(&api).body;
    let parsed: serde_json::Value = serde_json::from_str(&plain).expect("history json");
    assert!(
        parsed["points"].as_array().is_some_and(|p| p.len() > 100),
        "the demo's day of history: {plain}"
    );
    let packed = size(&api);
    assert!(
        packed * 3 < plain.len() as u64,
        "{api}: {} bytes, gzip {packed}",
        plain.len()
    );
    let out = Command::new("curl")
        .args(["-s", "--compressed", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(demo.url(&api))
        .output()
        .expect("curl");
    let unpacked: serde_json::Value = serde_json::from_slice(&out.stdout).expect("gzip json");
    // `to` is each request's now; the day's points before it are the same.
    let head = |v: &serde_json::Value| v["points"].as_array().expect("points")[..100].to_vec();
    assert_eq!(head(&unpacked), head(&parsed));
    // Assets revalidate with their ETag.
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null"])
        .arg(demo.url("/assets/app.css"))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("etag")
        .trim()
        .to_owned();
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("If-None-Match: {etag}"))
        .arg(demo.url("/assets/app.css"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "304");
    drop(demo);
}

/// The logbook form without JavaScript: a refused value comes back with its message next to
/// the field and the values typed; a good entry is saved, listed, and `gkgw logbook list`
/// has it.
#[test]
fn the_logbook_form_validates_by_field_and_saves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(dir.path());
    let manager = demo.login("manager");
    let csrf = field(&manager.get("/logbook").body, "csrf");
    let post = |body: &str| {
        let mut fields: Vec<(&str, &str)> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        fields.push(("csrf", &csrf));
        let a = manager.form("/logbook", &fields);
        (a.status.to_string(), a.body)
    };
    // A viewer may read the logbook, not write it; a form without the CSRF token is refused.
    let viewer = demo.login("viewer");
    assert_eq!(viewer.get("/logbook").status, 200);
    let vcsrf = field(&viewer.get("/logbook").body, "csrf");
    let refused = viewer.form(
        "/logbook",
        &[("kind", "note"), ("text", "x"), ("csrf", &vcsrf)],
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        manager
            .form("/logbook", &[("kind", "note"), ("text", "x")])
            .status,
        403
    );
    let (status, page) = post("kind=waste_fed&waste=market&kg=-3&note=from the market");
    assert!(status.starts_with("422"), "{status}");
    assert!(page.contains("class=\"field invalid\""), "{page}");
    assert!(
        page.contains("id=\"f-kg-error\""),
        "the message is next to kg"
    );
    assert!(
        page.contains("value=\"from the market\""),
        "the note is kept"
    );
    let (status, _) = post("kind=waste_fed&waste=market&kg=lots");
    assert!(status.starts_with("422"), "{status}");
    let (status, _) = post("kind=waste_fed&waste=market&kg=85&note=ok");
    assert!(status.starts_with("303"), "{status}");
    let out = Command::new(GKGW)
        .args([
            "logbook",
            "--gateway",
            &format!("127.0.0.1:{}", demo.http),
            "--token-file",
        ])
        .arg(demo.dir.join("state/demo-viewer.token"))
        .arg("list")
        .output()
        .expect("gkgw logbook list");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("waste_fed") && list.contains("85") && list.contains("manager"),
        "{list}"
    );

    // Inside its edit window the entry has a correction and a withdrawal form (a manager's
    // only); refusals come back in the page's language next to the field.
    let page = manager.get("/logbook?kind=waste_fed").body;
    let key = "action=\"/logbook/";
    let row = page.find("85 kg").expect("the entry is listed");
    let at = page[..row].rfind("id=\"entry-").expect("its row") + "id=\"entry-".len();
    let entry = page[at..at + page[at..].find('"').expect("id")].to_owned();
    assert!(
        page.contains(&format!("{key}{entry}/revise\"")),
        "a correction form"
    );
    assert!(
        !viewer.get("/logbook").body.contains(key),
        "viewers get no change forms"
    );
    let revise = format!("/logbook/{entry}/revise");
    let withdraw = format!("/logbook/{entry}/withdraw");
    let refused = viewer.form(&revise, &[("kg", "1"), ("csrf", &vcsrf)]);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(manager.get("/lang/sw?next=/logbook").status, 303);
    let a = manager.form(&revise, &[("kg", "-1"), ("csrf", &csrf)]);
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(
        a.body.contains(&format!(
            "id=\"r{entry}-kg-error\" role=\"alert\">lazima iwe zaidi ya 0<"
        )),
        "the refusal in Kiswahili next to kg: {}",
        a.body
    );
    assert!(
        a.body.contains("<details class=\"change\" open"),
        "the entry's forms stay open"
    );
    let a = manager.form(
        &revise,
        &[("kg", "90"), ("note", "weighed again"), ("csrf", &csrf)],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let page = manager.get("/logbook?kind=waste_fed").body;
    assert!(
        page.contains("90 kg") && page.contains("weighed again"),
        "{page}"
    );
    let a = manager.form(&withdraw, &[("reason", " "), ("csrf", &csrf)]);
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(
        a.body.contains(&format!(
            "id=\"w{entry}-reason-error\" role=\"alert\">inahitajika<"
        )),
        "{}",
        a.body
    );
    let a = manager.form(&withdraw, &[("reason", "entered twice"), ("csrf", &csrf)]);
    assert_eq!(a.status, 303, "{}", a.body);
    let page = manager.get("/logbook?kind=waste_fed").body;
    assert!(
        !page.contains(&format!("id=\"entry-{entry}\"")),
        "a withdrawn entry is not listed"
    );
    let a = manager.form(&withdraw, &[("reason", "again"), ("csrf", &csrf)]);
    assert_eq!(
        a.status, 409,
        "a withdrawn entry cannot change again: {}",
        a.body
    );
    assert!(a.body.contains("Ingizo hili limeondolewa."), "{}", a.body);
}

/// The browser test (tests/browser/dashboard.mjs) with the harness stopping and restarting the
/// gateway under it.
#[test]
fn the_dashboard_in_chromium() {
    require("chromium");
    let node = require("node");
    let script = repo_root().join("tests/browser/dashboard.mjs");
    assert!(
        repo_root()
            .join("tests/browser/node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: run tests/peers/install.sh"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = Demo::start(dir.path());
    let shots = repo_root().join("target/screenshots");
    let mut child = Command::new(node)
        .arg(&script)
        .arg(demo.url(""))
        .arg(&shots)
        .arg(demo.password("viewer"))
        .arg(demo.password("manager"))
        .arg(demo.password("admin"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut stdin = child.stdin.take().expect("stdin");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut steps = Vec::new();
    for line in out.lines().map_while(Result::ok) {
        eprintln!("browser: {line}");
        match line.as_str() {
            "WAITING stop" => {
                demo.proc.signal("TERM");
                assert!(demo.proc.wait_timeout(Duration::from_secs(30)).is_some());
                writeln!(stdin, "GO").expect("stdin");
            }
            "WAITING start" => {
                std::thread::sleep(Duration::from_secs(2));
                demo.proc = start_demo(&demo.dir, demo.http, demo.mqtt, false);
                writeln!(stdin, "GO").expect("stdin");
            }
            l if l.starts_with('{') => {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                steps.push(v);
            }
            _ => {}
        }
    }
    let status = child.wait().expect("node exit");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert!(status.success(), "{steps:#?}");
    assert_eq!(
        names,
        [
            "roles",
            "live",
            "kiswahili",
            "english",
            "acknowledged",
            "logbook_refused",
            "logbook_saved",
            "site_time",
            "screenshots",
            "lost",
            "recovered",
            "clean"
        ]
    );
    let n = std::fs::read_dir(&shots).expect("screenshots").count();
    assert!(n >= 16, "{n} screenshots in {}", shots.display());
}
