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

fn start_demo(dir: &std::path::Path, http_port: u16, mqtt: u16) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("demo.log"))
        .expect("log");
    let p = Proc::spawn(
        "gkgw demo",
        Command::new(GKGW)
            .args(["demo", "--meters", "20", "--meter-interval", "2"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
            .stdout(Stdio::null())
            .stderr(log),
    );
    wait_until("demo /healthz", Duration::from_secs(60), || {
        http(
            "GET",
            &format!("http://127.0.0.1:{http_port}/healthz"),
            None,
        )
        .0 == 200
    });
    p
}

impl Demo {
    fn start(dir: &std::path::Path) -> Demo {
        let (http, mqtt) = (free_port(), free_port());
        let proc = start_demo(dir, http, mqtt);
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

    fn get_lang(&self, path: &str, lang: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Cookie: lang={lang}"))
            .arg(self.url(path))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("code");
        (code.trim().parse().expect("code"), body.to_owned())
    }
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
    wait_until("meters reported", Duration::from_secs(30), || {
        demo.get_lang("/meters", "en").1.contains("GM-0001")
    });
    let ids = message_ids();
    assert!(ids.len() > 100, "{} ids", ids.len());
    for lang in ["en", "sw"] {
        for p in PAGES {
            let (code, body) = demo.get_lang(p, lang);
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
    let (_, sw) = demo.get_lang("/", "sw");
    assert!(
        sw.contains("Muhtasari wa mtambo"),
        "the overview in Kiswahili"
    );
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
            ])
            .arg(demo.url(path))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("size")
    };
    let (_, html) = demo.get_lang("/", "en");
    let mut total = size("/");
    for attr in ["src=\"/assets/", "href=\"/assets/"] {
        for (at, _) in html.match_indices(attr) {
            let v = &html[at + attr.len() - "/assets/".len()..];
            total += size(&v[..v.find('"').expect("quote")]);
        }
    }
    assert!(total < 100 * 1024, "first page {total} bytes");
    eprintln!("first page, compressed: {total} bytes");
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
    let post = |body: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code} %{redirect_url}",
                "-X",
                "POST",
                "--data",
                body,
            ])
            .arg(demo.url("/logbook"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, tail) = text.rsplit_once('\n').expect("tail");
        (tail.to_owned(), body.to_owned())
    };
    let (status, page) = post("kind=waste_fed&waste=market&kg=-3&note=from+the+market");
    assert!(status.starts_with("422"), "{status}");
    assert!(page.contains("class=\"field invalid\""), "{page}");
    assert!(page.contains("id=\"e-kg\""), "the message is next to kg");
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
            "list",
        ])
        .output()
        .expect("gkgw logbook list");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("waste_fed") && list.contains("85"), "{list}");
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
                demo.proc = start_demo(&demo.dir, demo.http, demo.mqtt);
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
            "live",
            "kiswahili",
            "english",
            "acknowledged",
            "logbook_refused",
            "logbook_saved",
            "screenshots",
            "lost",
            "recovered",
            "clean"
        ]
    );
    let n = std::fs::read_dir(&shots).expect("screenshots").count();
    assert!(n >= 16, "{n} screenshots in {}", shots.display());
}
