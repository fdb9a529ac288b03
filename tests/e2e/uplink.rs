//! The uplink against a stand-in for the platform (tests/peers/receiver.py: validates every
//! batch against docs/schema/batch.schema.json, de-duplicates by idempotency key): a day of
//! meter data with the platform down, then up; SIGKILL during uploads; a receiver that answers
//! 500, 429 with Retry-After, hangs and closes mid-request.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "platform-test-token-5e2a";

struct Platform {
    _proc: Proc,
    port: u16,
}

impl Platform {
    fn start() -> Platform {
        Platform::start_with(&[])
    }

    /// With more arguments for receiver.py (e.g. its HTTPS port).
    fn start_with(extra: &[&str]) -> Platform {
        let port = free_port();
        let mut p = Proc::spawn(
            "receiver.py",
            Command::new("python3")
                .arg(repo_root().join("tests/peers/receiver.py"))
                .args(["--port", &port.to_string(), "--token", TOKEN, "--schema"])
                .arg(repo_root().join("docs/schema/batch.schema.json"))
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let out = p.child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("READY");
        assert_eq!(
            line.trim(),
            "READY",
            "receiver.py did not start (needs python3 jsonschema: tests/peers/install.sh)"
        );
        Platform { _proc: p, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/batches", self.port)
    }

    fn control(&self, body: &str) {
        let (code, text) = http(
            "POST",
            &format!("http://127.0.0.1:{}/control", self.port),
            Some(body),
        );
        assert_eq!(code, 200, "{text}");
    }

    fn stats(&self) -> serde_json::Value {
        let (code, text) = http(
            "GET",
            &format!("http://127.0.0.1:{}/stats", self.port),
            None,
        );
        assert_eq!(code, 200, "{text}");
        serde_json::from_str(&text).expect("json")
    }

    fn batches(&self) -> Vec<serde_json::Value> {
        let (code, text) = http(
            "GET",
            &format!("http://127.0.0.1:{}/batches", self.port),
            None,
        );
        assert_eq!(code, 200);
        serde_json::from_str(&text).expect("json")
    }
}

/// A gateway with the meter GM-0001, its uplink to `url` (the bearer token in a file) and
/// `extra` keys in `[uplink]`, started.
fn gateway(url: &str, extra: &str) -> Gateway {
    let mut gw = Gateway::configure_only("", &["GM-0001"]);
    let token = gw.dir.path().join("uplink-token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token file");
    let text = std::fs::read_to_string(&gw.config).expect("config");
    std::fs::write(
        &gw.config,
        format!(
            "{text}[history]\ninterval_ms = 500\n[alarms]\nenabled = false\n\
             [uplink]\nenabled = true\nurl = \"{url}\"\ntoken_file = \"{}\"\ngateway = \"gw-test\"\nbackfill_hours = 100\nmin_backoff_ms = 100\nmax_backoff_ms = 400\n{extra}",
            token.display()
        ),
    )
    .expect("config");
    gw.restart();
    gw
}

/// `count` gas-meter readings one minute apart from the test's fixed base time, all acked.
fn publish_day(gw: &Gateway, meter: &str, count: u64) {
    let mut args = gw.paho_args(meter);
    args.extend(
        [
            "--meters",
            meter,
            "--count",
            &count.to_string(),
            "--qos",
            "1",
            "--ts-base",
            &ts_base().to_string(),
            "--ts-step",
            "60",
            "--wait-acks",
            "60",
        ]
        .map(String::from),
    );
    let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "every reading acked: {summary}");
}

/// Every batch the platform accepted: seq 1..=n in order, no conflicting duplicate, nothing
/// invalid; returns the windows by (quantity, instance, start_ms) and how many times each came.
fn check_complete(p: &Platform) -> BTreeMap<(String, String, i64), (serde_json::Value, usize)> {
    let stats = p.stats();
    assert_eq!(
        stats["invalid"], 0,
        "every batch valid: {:?}",
        stats["errors"]
    );
    assert_eq!(stats["conflicts"], 0, "a resent batch has the same body");
    let seqs: Vec<u64> = stats["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .map(|s| s.as_u64().expect("u64"))
        .collect();
    let n = seqs.len() as u64;
    assert!(n > 0);
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "gapless, in order");
    let mut windows = BTreeMap::new();
    for b in p.batches() {
        assert_eq!(b["site"], "test-site");
        assert_eq!(b["gateway"], "gw-test");
        for w in b["windows"].as_array().expect("windows") {
            let key = (
                w["quantity"].as_str().expect("q").to_owned(),
                w["instance"].as_str().expect("i").to_owned(),
                w["start_ms"].as_i64().expect("start"),
            );
            windows.entry(key).or_insert_with(|| (w.clone(), 0)).1 += 1;
        }
    }
    windows
}

/// What a day of one-minute readings must give: every 5-minute span that ended before the
/// aggregator's watermark (the last reading) minus its 2-minute grace, for the meter's four
/// numeric quantities, once each; the gas used adds up to the meter's own count.
fn check_day(
    p: &Platform,
    windows: &BTreeMap<(String, String, i64), (serde_json::Value, usize)>,
    count: i64,
) {
    let base_ms = ts_base() * 1000;
    let last_ms = base_ms + count * 60_000;
    let complete_until = (last_ms - 120_000).div_euclid(300_000) * 300_000;
    let spans: BTreeSet<i64> = (1..=count)
        .map(|s| (base_ms + s * 60_000).div_euclid(300_000) * 300_000)
        .filter(|s| s + 300_000 <= complete_until)
        .collect();
    for q in [
        "meter.gas_used",
        "meter.credit",
        "meter.battery",
        "meter.rssi",
    ] {
        let got: BTreeSet<i64> = windows
            .keys()
            .filter(|(wq, i, _)| wq == q && i == "GM-0001")
            .map(|(_, _, s)| *s)
            .collect();
        assert_eq!(got, spans, "{q}: every complete span, nothing else");
    }
    for ((q, _, s), (_, times)) in windows {
        assert_eq!(*times, 1, "{q} {s}: exactly once");
    }
    check_kpis(p, base_ms, complete_until);
    // Readings in the complete spans: seq 1.. whose time is before complete_until; each adds
    // 0.01 kg except the first (no earlier reading to count from).
    let in_spans = (1..=count)
        .filter(|s| base_ms + s * 60_000 < complete_until)
        .count() as f64;
    let used: f64 = windows
        .iter()
        .filter(|((q, _, _), _)| q == "meter.gas_used")
        .map(|(_, (w, _))| w["delta"].as_f64().expect("delta"))
        .sum();
    assert!(
        (used - 0.01 * (in_spans - 1.0)).abs() < 1e-6,
        "used {used} of {in_spans} readings"
    );
}

/// The KPIs: one set per hour from the first whole hour of data to the last complete span,
/// each once (no revision: the readings came in order), with the local day sets that ended;
/// every batch's meter has its valve state.
fn check_kpis(p: &Platform, base_ms: i64, complete_until: i64) {
    const HOUR_MS: i64 = 3_600_000;
    let first = (base_ms + 60_000).div_euclid(HOUR_MS) * HOUR_MS + HOUR_MS;
    let want: Vec<i64> = (0..)
        .map(|i| first + i * HOUR_MS)
        .take_while(|h| h + HOUR_MS <= complete_until)
        .collect();
    let mut hours: BTreeMap<i64, usize> = BTreeMap::new();
    let mut days = 0;
    for b in p.batches() {
        for k in b["kpis"].as_array().expect("kpis") {
            assert_eq!(k["revised"], false, "{k}");
            match k["period"].as_str() {
                Some("hour") => {
                    *hours
                        .entry(k["start_ms"].as_i64().expect("ms"))
                        .or_default() += 1
                }
                Some("day") => days += 1,
                other => panic!("period {other:?}"),
            }
            let names: Vec<&str> = k["figures"]
                .as_array()
                .expect("figures")
                .iter()
                .filter_map(|f| f["name"].as_str())
                .collect();
            assert!(names.contains(&"normal_gas_nm3"), "{names:?}");
        }
        for m in b["meters"].as_array().expect("meters") {
            assert_eq!(m["valve"], "open", "{m}");
        }
    }
    assert_eq!(
        hours.keys().copied().collect::<Vec<_>>(),
        want,
        "every hour once"
    );
    assert!(hours.values().all(|n| *n == 1), "{hours:?}");
    // A day of data from a UTC midnight crosses the site's local midnight (03:00 Nairobi,
    // 21:00 UTC) once when it spans 21 h or more.
    let local_midnights = want
        .iter()
        .filter(|h| (*h + HOUR_MS).rem_euclid(86_400_000) == 21 * HOUR_MS)
        .count();
    assert_eq!(days, local_midnights, "the local days that ended");
}

/// A simulated day with the platform down the whole time, then up: every window arrives,
/// exactly once after de-duplication, in order, seq gapless.
#[test]
fn a_day_of_data_with_the_platform_down_arrives_complete_once_and_in_order() {
    let p = Platform::start();
    p.control(r#"{"mode": "down", "count": -1}"#);
    let gw = gateway(
        &p.url(),
        "max_batch_bytes = 65536\nmax_batches_per_s = 20\n",
    );
    publish_day(&gw, "GM-0001", 1440);
    wait_until(
        "batches wait in the outbox",
        Duration::from_secs(60),
        || {
            gw.metric("gkgw_uplink_backlog_batches") >= 2.0
                && gw.metric("gkgw_consumer_backlog{consumer=\"aggregate\"}") == 0.0
        },
    );
    let status = gw.status();
    assert!(
        status["uplink"]["backlog"].as_u64().expect("backlog") >= 2,
        "{}",
        status["uplink"]
    );
    assert!(
        status["uplink"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{}",
        status["uplink"]
    );
    assert_eq!(p.stats()["accepted"], 0);
    p.control(r#"{"mode": "ok"}"#);
    wait_until("the backlog drained", Duration::from_secs(60), || {
        gw.metric("gkgw_uplink_backlog_batches") == 0.0
    });
    let windows = check_complete(&p);
    check_day(&p, &windows, 1440);
    assert!(gw.status()["uplink"]["last_success"].as_str().is_some());
    let stats = p.stats();
    assert!(
        stats["gzipped"].as_u64().unwrap_or(0) >= 2,
        "bodies are gzipped: {stats}"
    );
    assert!(stats["wire_bytes"].as_u64() < stats["json_bytes"].as_u64());
}

/// SIGKILL of the gateway while it drains a backlog, three times: nothing is missing after the
/// restarts, and a batch that came twice came with the same idempotency key and body.
#[test]
fn sigkill_during_uploads_loses_nothing_and_duplicates_only_by_key() {
    let p = Platform::start();
    p.control(r#"{"mode": "down", "count": -1}"#);
    let mut gw = gateway(&p.url(), "max_batch_bytes = 8192\nmax_batches_per_s = 50\n");
    publish_day(&gw, "GM-0001", 720);
    wait_until(
        "batches wait in the outbox",
        Duration::from_secs(60),
        || {
            gw.metric("gkgw_uplink_backlog_batches") >= 10.0
                && gw.metric("gkgw_consumer_backlog{consumer=\"aggregate\"}") == 0.0
        },
    );
    // Slow answers, so the kills land while batches are in flight.
    p.control(r#"{"mode": "slow", "count": -1, "hang_s": 0.15}"#);
    for round in 0..3 {
        let before = p.stats()["requests"].as_u64().unwrap_or(0);
        wait_until(
            &format!("uploads under way ({round})"),
            Duration::from_secs(30),
            || p.stats()["requests"].as_u64().unwrap_or(0) >= before + 3,
        );
        gw.proc.as_mut().expect("running").kill9();
        gw.restart();
    }
    p.control(r#"{"mode": "ok"}"#);
    wait_until("the backlog drained", Duration::from_secs(90), || {
        gw.metric("gkgw_uplink_backlog_batches") == 0.0
    });
    let windows = check_complete(&p);
    check_day(&p, &windows, 720);
}

/// 500 twice, 429 with Retry-After 2, a hang past the 1 s timeout, a connection closed
/// mid-request, a 503: each is retried; the wait after the 429 is the Retry-After; everything
/// arrives once.
#[test]
fn a_misbehaving_receiver_is_retried_and_its_retry_after_honoured() {
    let p = Platform::start();
    p.control(r#"{"script": ["500", "500", "429", "hang", "close", "down"], "retry_after": 2, "hang_s": 3}"#);
    let gw = gateway(&p.url(), "timeout_ms = 1000\n");
    publish_day(&gw, "GM-0001", 60);
    wait_until(
        "delivered after the misbehaviour",
        Duration::from_secs(60),
        || {
            p.stats()["accepted"].as_u64().unwrap_or(0) >= 1
                && gw.metric("gkgw_uplink_backlog_batches") == 0.0
        },
    );
    let stats = p.stats();
    let served = stats["served"].as_array().expect("served");
    let modes: Vec<&str> = served
        .iter()
        .map(|s| s[0].as_str().expect("mode"))
        .collect();
    assert_eq!(
        &modes[..7],
        ["500", "500", "429", "hang", "close", "down", "ok"],
        "{modes:?}"
    );
    let t = |i: usize| served[i][1].as_f64().expect("time");
    assert!(
        t(3) - t(2) >= 1.9,
        "Retry-After 2 s honoured: {:.2} s",
        t(3) - t(2)
    );
    assert!(gw.metric("gkgw_uplink_errors_total") >= 6.0);
    assert!(gw.metric("gkgw_uplink_throttled_total") >= 1.0);
    let windows = check_complete(&p);
    check_day(&p, &windows, 60);
}

/// Mosquitto with persistence (sessions and queued QoS 1 messages survive its restart).
pub(crate) fn mosquitto(port: u16, dir: &std::path::Path) -> Proc {
    // Started as root, mosquitto drops to its own user: let it write its database here.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    mosquitto_with(
        dir,
        &format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 10000\n",
            dir.display()
        ),
        port,
    )
}

/// Mosquitto with the configuration `conf` (written to `dir`), once `port` accepts connections.
fn mosquitto_with(dir: &std::path::Path, conf: &str, port: u16) -> Proc {
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf).expect("conf");
    let p = Proc::spawn(
        "mosquitto",
        Command::new(require("mosquitto"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until("mosquitto listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    p
}

/// The MQTT transport with the central broker (Mosquitto) down while a day of data comes in:
/// the batches wait in the outbox; once the broker is back they are published with QoS 1, each
/// confirmed by its PUBACK, and the platform's persistent subscription gets every one, once,
/// in order.
#[test]
fn over_mqtt_a_day_with_the_broker_down_arrives_complete_once_and_in_order() {
    let broker_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut broker = mosquitto(port, broker_dir.path());
    // The platform subscribes once with a persistent session, then the broker goes down.
    let http_port = free_port();
    let mut rp = Proc::spawn(
        "receiver.py",
        Command::new("python3")
            .arg(repo_root().join("tests/peers/receiver.py"))
            .args([
                "--port",
                &http_port.to_string(),
                "--mqtt-port",
                &port.to_string(),
                "--schema",
            ])
            .arg(repo_root().join("docs/schema/batch.schema.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut line = String::new();
    BufReader::new(rp.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("READY");
    assert_eq!(line.trim(), "READY");
    let p = Platform {
        _proc: rp,
        port: http_port,
    };
    broker.signal("TERM");
    assert!(
        broker.wait_timeout(Duration::from_secs(10)).is_some(),
        "mosquitto stopped"
    );

    let gw = gateway(
        &format!("mqtt://127.0.0.1:{port}"),
        "max_batch_bytes = 65536\nmax_batches_per_s = 50\n",
    );
    publish_day(&gw, "GM-0001", 720);
    wait_until(
        "batches wait in the outbox",
        Duration::from_secs(60),
        || {
            gw.metric("gkgw_uplink_backlog_batches") >= 1.0
                && gw.metric("gkgw_consumer_backlog{consumer=\"aggregate\"}") == 0.0
        },
    );
    assert!(gw.status()["uplink"]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("mqtt")));
    let _broker = mosquitto(port, broker_dir.path());
    wait_until(
        "the backlog drained over MQTT",
        Duration::from_secs(60),
        || gw.metric("gkgw_uplink_backlog_batches") == 0.0,
    );
    let built = gw.metric("gkgw_uplink_batches_built_total") as u64;
    let mut last = serde_json::Value::Null;
    let got_all = (0..300).any(|_| {
        last = p.stats();
        let done = last["accepted"].as_u64() == Some(built);
        if !done {
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    });
    assert!(got_all, "built {built}, the platform has: {last}");
    let windows = check_complete(&p);
    check_day(&p, &windows, 720);
}

/// HTTPS to a server whose certificate the built-in web roots do not know: refused (and
/// nothing sent) until `ca_file` names the site CA; then every window arrives.
#[test]
fn https_verifies_the_server_and_accepts_a_custom_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(certs.path());
    let tls_port = free_port();
    let p = Platform::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    let url = format!("https://127.0.0.1:{tls_port}/batches");
    let mut gw = gateway(&url, "");
    publish_day(&gw, "GM-0001", 60);
    wait_until("a refused handshake", Duration::from_secs(60), || {
        gw.metric("gkgw_uplink_errors_total") >= 2.0
    });
    let why = gw.status()["uplink"]["last_error"].to_string();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert_eq!(p.stats()["requests"], 0, "nothing reached the handler");
    let text = std::fs::read_to_string(&gw.config).expect("config");
    std::fs::write(
        &gw.config,
        format!("{text}ca_file = \"{}\"\n", ca.display()),
    )
    .expect("config");
    gw.restart();
    wait_until("delivered over HTTPS", Duration::from_secs(60), || {
        gw.metric("gkgw_uplink_backlog_batches") == 0.0 && p.stats()["accepted"].as_u64() > Some(0)
    });
    let windows = check_complete(&p);
    check_day(&p, &windows, 60);
}

/// mqtts:// to Mosquitto's TLS listener: refused without the site CA, delivered with it.
#[test]
fn mqtts_verifies_the_broker_and_accepts_a_custom_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(certs.path());
    let (plain, tls) = (free_port(), free_port());
    let _broker = mosquitto_with(
        certs.path(),
        &format!(
            "per_listener_settings false\nallow_anonymous true\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
        tls,
    );
    let p = Platform::start_with(&["--mqtt-port", &plain.to_string()]);
    let mut gw = gateway(&format!("mqtts://127.0.0.1:{tls}"), "");
    publish_day(&gw, "GM-0001", 60);
    wait_until("a refused handshake", Duration::from_secs(60), || {
        gw.status()["uplink"]["last_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("certificate"))
    });
    assert_eq!(p.stats()["accepted"], 0);
    let text = std::fs::read_to_string(&gw.config).expect("config");
    std::fs::write(
        &gw.config,
        format!("{text}ca_file = \"{}\"\n", ca.display()),
    )
    .expect("config");
    gw.restart();
    wait_until("delivered over mqtts", Duration::from_secs(60), || {
        gw.metric("gkgw_uplink_backlog_batches") == 0.0 && p.stats()["accepted"].as_u64() > Some(0)
    });
    let windows = check_complete(&p);
    check_day(&p, &windows, 60);
}

/// Every kind of secret configured (the uplink's bearer token, InfluxDB's token, the broker's
/// TLS key, a meter's password, a dashboard password, an API token, a session cookie), the
/// gateway run at debug log level through real traffic (a meter over TLS, a sign-in, batches
/// and line protocol delivered), then every output searched for each secret: the log, every
/// page and API answer a user or the platform can read, the CLI's listings and the batches.
#[test]
fn no_secret_appears_in_any_output() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(certs.path());
    let p = Platform::start();
    let tls_port = free_port();
    let mut gw = Gateway::configure_with(
        "",
        &["GM-0001"],
        RunOpts {
            rust_log: "debug".into(),
            ..RunOpts::default()
        },
    );
    let influx_token = format!("influx-secret-{}", std::process::id() * 7919);
    let files = gw.dir.path();
    std::fs::write(files.join("uplink-token"), format!("{TOKEN}\n")).expect("token");
    std::fs::write(files.join("influx-token"), format!("{influx_token}\n")).expect("token");
    let text = std::fs::read_to_string(&gw.config).expect("config");
    let text = text.replace(
        "[broker]\n",
        &format!(
            "[broker]\ntls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    std::fs::write(
        &gw.config,
        format!(
            "{text}[history]\ninterval_ms = 500\n\
             [influx]\nenabled = true\nversion = 2\nurl = \"http://127.0.0.1:{port}\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"{}\"\n\
             [uplink]\nenabled = true\nurl = \"{url}\"\ntoken_file = \"{}\"\ngateway = \"gw-test\"\nbackfill_hours = 100\nmin_backoff_ms = 100\nmax_backoff_ms = 400\n",
            files.join("influx-token").display(),
            files.join("uplink-token").display(),
            port = p.port,
            url = p.url(),
        ),
    )
    .expect("config");
    let dashboard_password = "kitchen-secret-password-31";
    gw.add_user("amina", "manager", dashboard_password);
    gw.restart();
    let meter_password = gw.passwords["GM-0001"].clone();

    // Traffic: a meter over TLS and over plain MQTT, a sign-in, the deliveries.
    let mut pub_tls = Command::new(require("mosquitto_pub"));
    pub_tls
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls_port.to_string(),
            "-V",
            "mqttv311",
            "-q",
            "1",
        ])
        .args([
            "-u",
            "GM-0001",
            "-P",
            &meter_password,
            "-i",
            "GM-0001",
            "--cafile",
        ])
        .arg(&ca)
        .args(["-t", "meters/GM-0001/state", "-m"])
        .arg(r#"{"meter_id":"GM-0001","seq":1,"kind":"gas","cum_kg":1.5,"credit_kg":4}"#);
    assert!(
        pub_tls.status().expect("mosquitto_pub").success(),
        "TLS publish"
    );
    publish_day(&gw, "GM-0001", 30);
    let b = Browser::new(&format!("http://127.0.0.1:{}", gw.http_port));
    assert_eq!(b.login("amina", dashboard_password).status, 303);
    let session = b.session_cookie().expect("session");
    assert_eq!(b.login("amina", "a-wrong-guess-xyz").status, 401);
    wait_until(
        "batches and line protocol delivered",
        Duration::from_secs(60),
        || {
            let s = p.stats();
            s["accepted"].as_u64() > Some(0) && s["line_protocol_lines"].as_u64() > Some(0)
        },
    );

    // Everything a person, a client or the platform can read.
    let mut outputs: Vec<(String, String)> = Vec::new();
    for path in [
        "/metrics",
        "/api/status",
        "/status",
        "/system",
        "/",
        "/meters",
        "/alarms",
        "/logbook",
        "/users",
        "/api/users",
        "/api/audit",
        "/api/session",
        "/api/commands",
    ] {
        let a = Browser::new(&format!("http://127.0.0.1:{}", gw.http_port)).request(
            "GET",
            path,
            None,
            &[format!("Authorization: Bearer {}", gw.token)],
        );
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        outputs.push((path.to_owned(), a.body));
    }
    for args in [vec!["user", "list"], vec!["audit", "list"], vec!["check"]] {
        let out = Command::new(GKGW)
            .args(&args)
            .arg("--config")
            .arg(&gw.config)
            .output()
            .expect("gkgw");
        outputs.push((
            format!("gkgw {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    outputs.push((
        "batches".into(),
        serde_json::to_string(&p.batches()).expect("json"),
    ));
    if let Some(mut proc) = gw.proc.take() {
        proc.signal("TERM");
        assert!(
            proc.wait_timeout(Duration::from_secs(30)).is_some(),
            "stopped"
        );
    }
    outputs.push(("gkgw.log".into(), gw.log()));
    assert!(
        outputs.iter().any(|(_, o)| o.contains("GM-0001")) && gw.log().contains("DEBUG"),
        "the outputs are real"
    );
    let key_pem = std::fs::read_to_string(&key).expect("key");
    let key_line = key_pem
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 20)
        .expect("a base64 line");
    let secrets = [
        ("uplink token", TOKEN),
        ("influx token", influx_token.as_str()),
        ("meter password", meter_password.as_str()),
        ("dashboard password", dashboard_password),
        ("wrong password tried", "a-wrong-guess-xyz"),
        ("API token", gw.token.as_str()),
        ("session id", session.as_str()),
        ("TLS key", key_line),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what} is too short to search for");
        for (source, text) in &outputs {
            assert!(!text.contains(secret), "the {what} is in {source}");
        }
    }
}
