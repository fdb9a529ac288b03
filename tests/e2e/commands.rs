//! Signed platform commands through the real binary: the platform's side (key pair, EdDSA JWS)
//! and a meter that takes commands are tests/peers/command_peer.py (Python `cryptography` and
//! paho-mqtt, independent of the gateway's code). Commands are submitted on the local
//! `POST /api/commands`, the entry point the uplink's transports share (`commands::Handle`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::{http, repo_root, wait_until, Gateway, Proc, GKGW};

struct Platform {
    dir: tempfile::TempDir,
}

impl Platform {
    fn new() -> Platform {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = platform(&["keygen", &dir.path().display().to_string()]);
        assert!(out.status.success(), "keygen: {out:?}");
        Platform { dir }
    }

    fn private(&self) -> PathBuf {
        self.dir.path().join("platform.pem")
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("platform.pub.pem")
    }

    /// The compact JWS of `payload` with `header`, signed with this platform's key.
    fn sign_with(&self, payload: &str, header: &str, raw: bool) -> String {
        let key = self.private().display().to_string();
        let mut args = vec!["sign", &key, payload, "--header", header];
        if raw {
            args.push("--raw");
        }
        let out = platform(&args);
        assert!(
            out.status.success(),
            "sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn sign(&self, payload: &Value) -> String {
        self.sign_with(&payload.to_string(), r#"{"alg":"EdDSA"}"#, false)
    }

    /// `[commands]` for a gateway that trusts this platform.
    fn config(&self, retry_s: u64) -> String {
        format!(
            "[commands]\nplatform_key_file = \"{}\"\nretry_s = {retry_s}\n",
            self.public().display()
        )
    }
}

fn platform(args: &[&str]) -> std::process::Output {
    let out = Command::new("python3")
        .arg(repo_root().join("tests/peers/command_peer.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("No module named"),
        "python packages missing: run `bash tests/peers/install.sh`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn command(id: &str, meter: &str, kind: &str, args: Value, ttl: i64) -> Value {
    let now = now_s();
    json!({"id": id, "meter": meter, "kind": kind, "args": args, "iat": now, "exp": now + ttl})
}

fn top_up(id: &str, meter: &str) -> Value {
    command(
        id,
        meter,
        "top_up",
        json!({"amount": 2.5, "unit": "kg"}),
        600,
    )
}

/// POSTs one command; returns its result `{id, outcome, reason}`.
fn submit(gw: &Gateway, jws: &str) -> Value {
    let (code, body) = gw.http(
        "POST",
        &format!("http://127.0.0.1:{}/api/commands", gw.http_port),
        Some(jws),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["results"][0].clone()
}

fn list(gw: &Gateway) -> Value {
    let (code, body) = gw.http(
        "GET",
        &format!("http://127.0.0.1:{}/api/commands?limit=100", gw.http_port),
        None,
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// The newest outcome of command `id` in `/api/commands`.
fn outcome(gw: &Gateway, id: &str) -> Option<Value> {
    list(gw)["commands"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

fn wait_outcome(gw: &Gateway, id: &str, want: &str, timeout: Duration) -> Value {
    let mut last = None;
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        last = outcome(gw, id);
        if last.as_ref().is_some_and(|c| c["outcome"] == want) {
            return last.expect("just seen");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "command {id}: no {want} within {timeout:?}; last {last:?}\n{}",
        gw.log()
    );
}

/// A meter (command_peer.py meter) that logs every command it receives and answers it.
struct TestMeter {
    _proc: Proc,
    log: PathBuf,
}

impl TestMeter {
    fn start(gw: &Gateway, id: &str, dir: &Path) -> TestMeter {
        let log = dir.join(format!("{id}.commands"));
        let proc = Proc::spawn(
            "command_peer.py meter",
            Command::new("python3")
                .arg(repo_root().join("tests/peers/command_peer.py"))
                .args([
                    "meter",
                    "--port",
                    &gw.mqtt_port.to_string(),
                    "--user",
                    id,
                    "--password",
                    &gw.passwords[id],
                    "--log",
                ])
                .arg(&log),
        );
        let m = TestMeter { _proc: proc, log };
        wait_until(&format!("{id} subscribed"), Duration::from_secs(15), || {
            m.lines().iter().any(|l| l["subscribed"] == true)
        });
        m
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The command ids received, in order (repeats included).
    fn received(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|l| l["id"].as_str().map(str::to_owned))
            .collect()
    }
}

fn audit_list(gw: &Gateway) -> String {
    let out = Command::new(GKGW)
        .args(["audit", "list", "--config"])
        .arg(&gw.config)
        .output()
        .expect("gkgw audit list");
    assert!(
        out.status.success(),
        "audit list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

#[test]
fn a_signed_top_up_reaches_the_meter_and_its_outcome_comes_back() {
    let p = Platform::new();
    let gw = Gateway::start(&p.config(10), &["GM-0001"]);
    let meter = TestMeter::start(&gw, "GM-0001", gw.dir.path());
    let r = submit(&gw, &p.sign(&top_up("top-1", "GM-0001")));
    assert_eq!(r["id"], "top-1");
    assert!(
        r["outcome"] == "delivered" || r["outcome"] == "accepted",
        "{r}"
    );
    let c = wait_outcome(&gw, "top-1", "applied", Duration::from_secs(20));
    assert_eq!(c["credit"], 3.5, "the meter's answer: {c}");
    assert_eq!(c["detail"], "ok");
    assert_eq!(c["args"], json!({"amount": 2.5, "unit": "kg"}));
    let got = meter.lines();
    let cmd = got
        .iter()
        .find(|l| l["id"] == "top-1")
        .expect("the meter got it");
    assert_eq!(cmd["kind"], "top_up");
    assert_eq!(cmd["args"], json!({"amount": 2.5, "unit": "kg"}));
    assert!(cmd["exp"].as_i64().is_some());
    let events: Vec<String> = list(&gw)["events"]
        .as_array()
        .expect("events")
        .iter()
        .rev()
        .map(|e| e["outcome"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(events, ["accepted", "delivered", "applied"]);
    let table = audit_list(&gw);
    assert!(
        table
            .lines()
            .any(|l| l.contains("top-1") && l.contains("applied") && l.contains("GM-0001")),
        "{table}"
    );
    // Who submitted it, over the local API.
    assert!(
        table.lines().any(|l| l.contains("test-admin")
            && l.contains("command_submitted")
            && l.contains("top-1")),
        "{table}"
    );
    assert_eq!(gw.metric("gkgw_commands_total{outcome=\"applied\"}"), 1.0);
    assert_eq!(gw.metric("gkgw_commands_pending"), 0.0);
    // The meter's answer went to the relay, not to the readings' parser.
    assert_eq!(
        gw.metric("gkgw_readings_rejected_total{reason=\"unknown_topic\"}"),
        0.0
    );
    assert_eq!(gw.metric("gkgw_mqtt_messages_total"), 0.0);
    let s = gw.status();
    assert_eq!(s["commands"]["enabled"], true);
    assert_eq!(s["commands"]["pending"], 0);
    assert_eq!(s["commands"]["last"]["outcome"], "applied");
}

#[test]
fn bad_commands_are_refused_counted_reported_and_never_reach_a_meter() {
    let p = Platform::new();
    let other = Platform::new();
    let gw = Gateway::start(&p.config(1), &["GM-0001"]);
    let meter = TestMeter::start(&gw, "GM-0001", gw.dir.path());
    let good = p.sign(&top_up("good-1", "GM-0001"));
    assert_ne!(submit(&gw, &good)["outcome"], "refused");
    wait_outcome(&gw, "good-1", "applied", Duration::from_secs(20));

    let payload = top_up("bad-1", "GM-0001").to_string();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let now = now_s();
    let cases: Vec<(&str, String)> = vec![
        ("unsigned", format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&payload))),
        ("unsigned", format!("{}.{}", b64(r#"{"alg":"EdDSA"}"#), b64(&payload))),
        ("wrong_alg", p.sign_with(&payload, r#"{"alg":"HS256"}"#, false)),
        ("bad_signature", other.sign(&top_up("bad-2", "GM-0001"))),
        ("bad_signature", {
            // The payload swapped for another after signing.
            let s = p.sign(&top_up("bad-3", "GM-0001"));
            let parts: Vec<&str> = s.split('.').collect();
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&top_up("bad-3", "GM-0001").to_string().replace("2.5", "250")),
                parts[2]
            )
        }),
        (
            "expired",
            p.sign(&json!({"id": "bad-4", "meter": "GM-0001", "kind": "valve", "args": {"state": "closed"}, "iat": now - 7200, "exp": now - 3600})),
        ),
        (
            "not_yet_valid",
            p.sign(&json!({"id": "bad-5", "meter": "GM-0001", "kind": "valve", "args": {"state": "closed"}, "iat": now + 3600, "exp": now + 7200})),
        ),
        ("malformed", p.sign_with("{not json", r#"{"alg":"EdDSA"}"#, true)),
        (
            "malformed",
            p.sign(&command("bad-6", "GM-0001", "reboot", json!({}), 600)),
        ),
        (
            "malformed",
            p.sign(&command("bad-7", "GM-0001", "valve", json!({"state": "ajar"}), 600)),
        ),
        ("unknown_meter", p.sign(&top_up("bad-8", "GM-9999"))),
        ("replayed", good.clone()),
    ];
    for (reason, jws) in &cases {
        let r = submit(&gw, jws);
        assert_eq!(r["outcome"], "refused", "{reason}: {r}");
        assert_eq!(r["reason"], *reason, "{r}");
    }
    for reason in [
        "unsigned",
        "wrong_alg",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "malformed",
        "unknown_meter",
        "replayed",
    ] {
        let want = cases.iter().filter(|(r, _)| *r == reason).count() as f64;
        assert_eq!(
            gw.metric(&format!(
                "gkgw_commands_refused_total{{reason=\"{reason}\"}}"
            )),
            want,
            "{reason}"
        );
    }
    // Reported: every refusal is an event of the audit log, with its reason.
    let events = list(&gw)["events"].clone();
    let refused: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["outcome"] == "refused")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(refused.len(), cases.len(), "{events}");
    assert!(audit_list(&gw).contains("unknown_meter"));
    // A command is sent at once when accepted, on the meter's one connection: once a later
    // good command has arrived, anything wrongly relayed before it would have too.
    submit(&gw, &p.sign(&top_up("good-2", "GM-0001")));
    wait_outcome(&gw, "good-2", "applied", Duration::from_secs(20));
    let ids = meter.received();
    assert!(
        ids.iter().all(|i| i == "good-1" || i == "good-2"),
        "{ids:?}"
    );
}

#[test]
fn without_a_platform_key_every_command_is_refused() {
    let p = Platform::new();
    let gw = Gateway::start("", &["GM-0001"]);
    let r = submit(&gw, &p.sign(&top_up("c-1", "GM-0001")));
    assert_eq!(r["reason"], "no_platform_key", "{r}");
    assert_eq!(gw.status()["commands"]["enabled"], false);
    let table = audit_list(&gw);
    assert!(
        table.contains("no_platform_key") && table.contains("commands disabled"),
        "{table}"
    );
}

#[test]
fn an_offline_meter_gets_its_command_when_it_connects_and_one_that_expires_first_is_expired() {
    let p = Platform::new();
    let gw = Gateway::start(&p.config(1), &["GM-0002", "GM-0003"]);
    let r = submit(&gw, &p.sign(&top_up("late-1", "GM-0002")));
    assert_eq!(r["outcome"], "accepted", "nobody to deliver to: {r}");
    let short = command("short-1", "GM-0003", "valve", json!({"state": "open"}), 2);
    assert_eq!(submit(&gw, &p.sign(&short))["outcome"], "accepted");
    assert_eq!(gw.status()["commands"]["pending"], 2);
    wait_outcome(&gw, "short-1", "expired", Duration::from_secs(20));
    assert_eq!(gw.metric("gkgw_commands_total{outcome=\"expired\"}"), 1.0);
    // Still retried: the meter connects and gets it within a retry period or two.
    let meter = TestMeter::start(&gw, "GM-0002", gw.dir.path());
    let c = wait_outcome(&gw, "late-1", "applied", Duration::from_secs(20));
    assert_eq!(c["credit"], 3.5);
    assert!(meter.received().contains(&"late-1".to_owned()));
    assert_eq!(gw.status()["commands"]["pending"], 0);
    // The expired one never reaches its meter, even once it connects (a later command does).
    let late = TestMeter::start(&gw, "GM-0003", gw.dir.path());
    submit(&gw, &p.sign(&top_up("after-1", "GM-0003")));
    wait_outcome(&gw, "after-1", "applied", Duration::from_secs(20));
    let ids = late.received();
    assert!(
        !ids.is_empty() && ids.iter().all(|i| i == "after-1"),
        "{ids:?}"
    );
}

#[test]
fn a_replay_is_refused_across_a_sigkill_restart_and_open_commands_are_resent() {
    let p = Platform::new();
    let mut gw = Gateway::start(&p.config(1), &["GM-0001", "GM-0004"]);
    let meter = TestMeter::start(&gw, "GM-0001", gw.dir.path());
    let jws = p.sign(&top_up("once-1", "GM-0001"));
    submit(&gw, &jws);
    wait_outcome(&gw, "once-1", "applied", Duration::from_secs(20));
    // One for a meter that is offline: open at the kill.
    let open = p.sign(&top_up("open-1", "GM-0004"));
    assert_eq!(submit(&gw, &open)["outcome"], "accepted");
    gw.proc.as_mut().expect("running").kill9();
    drop(meter);
    gw.restart();
    let r = submit(&gw, &jws);
    assert_eq!(r["reason"], "replayed", "{r}");
    assert_eq!(submit(&gw, &open)["reason"], "replayed");
    assert_eq!(gw.status()["commands"]["pending"], 1);
    let m4 = TestMeter::start(&gw, "GM-0004", gw.dir.path());
    wait_outcome(&gw, "open-1", "applied", Duration::from_secs(20));
    assert!(m4.received().contains(&"open-1".to_owned()));
}

#[test]
fn the_docs_command_examples_match_the_schema() {
    let root = repo_root();
    let doc = std::fs::read_to_string(root.join("docs/uplink.md")).expect("docs/uplink.md");
    let section = doc
        .split("\n## Commands")
        .nth(1)
        .expect("a Commands section")
        .split("\n## ")
        .next()
        .expect("its text");
    let examples: Vec<&str> = section
        .split("```json\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .collect();
    assert!(examples.len() >= 3, "examples: {examples:?}");
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for doc in sys.argv[2:]:
    v.validate(json.loads(doc))
bad = [{"id": "x", "meter": "GM-1", "kind": "reboot", "iat": 1, "exp": 2},
       {"id": "x", "meter": "GM-1", "kind": "valve", "args": {"state": "ajar"}, "iat": 1, "exp": 2},
       {"id": "x", "meter": "GM-1", "kind": "top_up", "args": {"token": "1", "amount": 2, "unit": "kg"}, "iat": 1, "exp": 2}]
for doc in bad:
    if v.is_valid(doc):
        sys.exit("schema accepts " + json.dumps(doc))
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(root.join("docs/schema/command.schema.json"))
        .args(&examples)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The uplink's HTTPS transport: commands in the platform's answer to a batch
/// (tests/peers/receiver.py queues them) reach the meter; a badly signed one is refused there.
#[test]
fn commands_in_the_platforms_answer_to_a_batch_reach_the_meter() {
    use std::io::{BufRead as _, BufReader};
    let p = Platform::new();
    let other = Platform::new();
    let port = crate::support::free_port();
    let mut receiver = Proc::spawn(
        "receiver.py",
        Command::new("python3")
            .arg(repo_root().join("tests/peers/receiver.py"))
            .args([
                "--port",
                &port.to_string(),
                "--token",
                "tok-cmd",
                "--schema",
            ])
            .arg(repo_root().join("docs/schema/batch.schema.json"))
            .stdout(std::process::Stdio::piped()),
    );
    let out = receiver.child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("READY");
    assert_eq!(line.trim(), "READY");
    let keys = tempfile::tempdir().expect("tempdir");
    let token = keys.path().join("token");
    std::fs::write(&token, "tok-cmd\n").expect("token");
    let gw = Gateway::start(
        &format!(
            "[history]\ninterval_ms = 500\n[alarms]\nenabled = false\n[uplink]\nenabled = true\nurl = \"http://127.0.0.1:{port}/batches\"\ntoken_file = \"{}\"\ngateway = \"gw-test\"\nbackfill_hours = 100\nmin_backoff_ms = 100\nmax_backoff_ms = 400\n{}",
            token.display(),
            p.config(1)
        ),
        &["GM-0001", "GM-0010"],
    );
    let meter = TestMeter::start(&gw, "GM-0001", gw.dir.path());
    let queued = json!({"commands": [
        p.sign(&top_up("via-https-1", "GM-0001")),
        other.sign(&top_up("via-https-2", "GM-0001")),
    ]});
    let (code, text) = http(
        "POST",
        &format!("http://127.0.0.1:{port}/control"),
        Some(&queued.to_string()),
    );
    assert_eq!(code, 200, "{text}");
    // Readings from another meter, an hour back, so windows complete and a batch goes out.
    let mut args = gw.paho_args("GM-0010");
    args.extend(
        [
            "--meters",
            "GM-0010",
            "--count",
            "30",
            "--qos",
            "1",
            "--ts-base",
            &(now_s() - 3600).to_string(),
            "--ts-step",
            "60",
            "--wait-acks",
            "30",
        ]
        .map(String::from),
    );
    let (summary, code) =
        crate::support::paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{summary}");
    let c = wait_outcome(&gw, "via-https-1", "applied", Duration::from_secs(60));
    assert_eq!(c["via"], "https");
    let events = list(&gw)["events"].clone();
    assert!(
        events
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["outcome"] == "refused"
                && e["reason"] == "bad_signature"
                && e["via"] == "https"),
        "{events}"
    );
    assert!(!meter.received().contains(&"via-https-2".to_owned()));
    // The outcomes go back to the platform in later batches: the applied top-up and the
    // refused forgery, each once.
    let outcomes = || -> Vec<(String, String)> {
        let (_, text) = http("GET", &format!("http://127.0.0.1:{port}/batches"), None);
        let batches: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        batches
            .as_array()
            .map(|bs| {
                bs.iter()
                    .flat_map(|b| b["commands"].as_array().cloned().unwrap_or_default())
                    .map(|c| {
                        (
                            c["outcome"].as_str().unwrap_or("").to_owned(),
                            c["reason"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    crate::support::wait_until(
        "the outcomes reach the platform",
        Duration::from_secs(60),
        || {
            let o = outcomes();
            o.iter().any(|(out, _)| out == "applied")
                && o.iter()
                    .any(|(out, why)| out == "refused" && why == "bad_signature")
        },
    );
    let o = outcomes();
    assert_eq!(
        o.iter().filter(|(out, _)| out == "applied").count(),
        1,
        "{o:?}"
    );
}

/// Commands over the MQTT uplink: the platform publishes a signed top-up on
/// `gkgw/{site}/{gateway}/cmd` at the central broker (Mosquitto); the gateway's persistent
/// session takes it, the meter applies it (`via` mqtt); an unsigned one on the same topic is
/// refused and never reaches the meter.
#[test]
fn commands_over_the_mqtt_uplink_reach_the_meter_and_bad_ones_do_not() {
    let p = Platform::new();
    let broker_dir = tempfile::tempdir().expect("tempdir");
    let port = crate::support::free_port();
    let _broker = crate::uplink::mosquitto(port, broker_dir.path());
    let gw = Gateway::start(
        &format!(
            "[alarms]\nenabled = false\n[uplink]\nenabled = true\nurl = \"mqtt://127.0.0.1:{port}\"\ngateway = \"gw-test\"\nmin_backoff_ms = 100\nmax_backoff_ms = 400\n{}",
            p.config(1)
        ),
        &["GM-0001"],
    );
    let meter = TestMeter::start(&gw, "GM-0001", gw.dir.path());
    let topic = "gkgw/test-site/gw-test/cmd";
    let jws = p.sign(&top_up("via-mqtt-1", "GM-0001"));
    // Until the gateway's session has subscribed, a command published to the broker finds no
    // one: the platform resends (a copy that came twice is refused as replayed).
    wait_until(
        "the top-up arrives over MQTT",
        Duration::from_secs(30),
        || {
            crate::support::mosquitto_pub(port, None, topic, 1, &jws);
            std::thread::sleep(Duration::from_millis(500));
            outcome(&gw, "via-mqtt-1").is_some()
        },
    );
    let c = wait_outcome(&gw, "via-mqtt-1", "applied", Duration::from_secs(30));
    assert_eq!(c["via"], "mqtt");
    assert!(meter.received().contains(&"via-mqtt-1".to_owned()));
    assert!(crate::support::mosquitto_pub(
        port,
        None,
        topic,
        1,
        "eyJhbGciOiJub25lIn0.eyJpZCI6Im1xdHQtYmFkIn0."
    ));
    wait_until("the unsigned one refused", Duration::from_secs(10), || {
        list(&gw)["events"].as_array().is_some_and(|es| {
            es.iter().any(|e| {
                e["outcome"] == "refused" && e["reason"] == "unsigned" && e["via"] == "mqtt"
            })
        })
    });
    assert!(!meter.received().contains(&"mqtt-bad".to_owned()));
}
