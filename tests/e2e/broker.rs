//! The field broker tried as an attacker on the site Wi-Fi would: one meter speaking or
//! listening for another, wrong-password and half-open-connection floods, secrets and forged
//! lines in the log, a QoS 0 flood. Independent clients: mosquitto_pub/sub, paho-mqtt
//! (tests/peers/meter.py) and raw packets (tests/peers/mqtt_raw.py).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    mosquitto_pub, mqtt_raw, paho, paho_cmd, require, rss_kib, wait_until, Gateway, Influx1, Proc,
    RunOpts, GKGW,
};

fn state(meter: &str, seq: u64, credit: f64) -> String {
    format!(
        r#"{{"meter_id":"{meter}","seq":{seq},"kind":"gas","cum_kg":1.5,"credit_kg":{credit}}}"#
    )
}

/// `mosquitto_sub` logged in as `user`, with stdout piped.
fn mosquitto_sub(
    port: u16,
    user: &str,
    password: &str,
    client_id: Option<&str>,
    args: &[&str],
) -> Proc {
    let mut c = Command::new(require("mosquitto_sub"));
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args(["-u", user, "-P", password]);
    if let Some(id) = client_id {
        c.args(["-i", id]);
    }
    Proc::spawn(
        "mosquitto_sub",
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::null()),
    )
}

fn login<'a>(gw: &'a Gateway, meter: &'a str) -> Vec<&'a str> {
    vec!["--user", meter, "--password", &gw.passwords[meter]]
}

#[test]
fn a_meter_speaks_and_listens_only_for_itself() {
    let gw = Gateway::start("", &["GA-0001", "GB-0002"]);
    let reloads = gw.reloads();
    let ha = gw.add_integration("homeassistant");
    let port = gw.mqtt_port;
    gw.wait_reloaded(reloads);

    // The attack of the issue: GA-0001 publishes GB-0002's state with 1000 kg of credit.
    let mut a = vec!["publish"];
    a.extend(login(&gw, "GA-0001"));
    let spoof = state("GB-0002", 1, 1000.0);
    a.extend([
        "--topic",
        "meters/GB-0002/state",
        "--payload",
        &spoof,
        "--qos",
        "1",
    ]);
    let r = mqtt_raw(port, &a);
    assert_eq!(r["rc"], 0, "{r}");
    assert_eq!(r["puback"], false, "never acknowledged: {r}");
    assert_eq!(
        r["closed"], true,
        "the connection is closed (MQTT-3.3.5-2): {r}"
    );

    // Nor may it listen to GB-0002 (0x80 per refused filter), only to itself.
    let mut s = vec!["subscribe"];
    s.extend(login(&gw, "GA-0001"));
    s.extend([
        "--filter",
        "meters/GB-0002/#",
        "--filter",
        "meters/GA-0001/ack",
        "--filter",
        "meters/#",
    ]);
    assert_eq!(
        mqtt_raw(port, &s)["codes"],
        serde_json::json!([128, 0, 128])
    );

    // Its client id must be its own id, and its will must stay under its own topics.
    let mut c = vec!["connect"];
    c.extend(login(&gw, "GA-0001"));
    let mut other_id = c.clone();
    other_id.extend(["--client-id", "GB-0002"]);
    assert_eq!(mqtt_raw(port, &other_id)["rc"], 2, "identifier rejected");
    let mut will = c.clone();
    will.extend(["--will-topic", "meters/GB-0002/event"]);
    assert_eq!(mqtt_raw(port, &will)["rc"], 5, "not authorised");
    let mut own_will = c.clone();
    own_will.extend(["--will-topic", "meters/GA-0001/event"]);
    assert_eq!(mqtt_raw(port, &own_will)["rc"], 0);

    // The integration account sees every meter, read-only.
    let mut watcher = mosquitto_sub(
        port,
        "homeassistant",
        &ha,
        None,
        &["-t", "meters/+/state", "-v", "-C", "2"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut p = vec!["publish", "--user", "homeassistant", "--password", &ha];
    let fake = state("GA-0001", 9, 1000.0);
    p.extend(["--topic", "meters/GA-0001/state", "--payload", &fake]);
    assert_eq!(
        mqtt_raw(port, &p)["closed"],
        true,
        "an integration publishes nothing"
    );
    for (meter, seq) in [("GA-0001", 1), ("GB-0002", 1)] {
        assert!(mosquitto_pub(
            port,
            Some((meter, &gw.passwords[meter])),
            &format!("meters/{meter}/state"),
            1,
            &state(meter, seq, 2.0)
        ));
    }
    watcher
        .wait_timeout(Duration::from_secs(10))
        .expect("the integration got both meters' states");
    let mut seen = String::new();
    std::io::Read::read_to_string(watcher.child.stdout.as_mut().expect("stdout"), &mut seen)
        .expect("read");
    assert!(
        seen.contains("meters/GA-0001/state") && seen.contains("meters/GB-0002/state"),
        "{seen}"
    );

    // And the meter's own readings still flow and are acked.
    let mut args = gw.paho_args("GA-0001");
    args.extend(["--meters", "GA-0001", "--count", "5", "--start-seq", "10"].map(String::from));
    let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        gw.metric("gkgw_readings_accepted_total"),
        7.0,
        "5 from paho and one mosquitto_pub per meter; nothing of the spoof"
    );
    assert_eq!(
        gw.metric("gkgw_readings_rejected_total{reason=\"identity\"}"),
        6.0,
        "spoofed publish, 2 filters, client id, will, integration publish"
    );
    assert!(
        !mosquitto_pub(
            port,
            None,
            "meters/GA-0001/state",
            0,
            &state("GA-0001", 99, 1.0)
        ),
        "anonymous refused"
    );
    assert_eq!(
        gw.metric("gkgw_broker_auth_total{result=\"anonymous_refused\"}"),
        1.0
    );
}

#[test]
fn keep_alive_zero_is_allowed_and_refusals_say_why() {
    let gw = Gateway::start("", &["GA-0001"]);
    let port = gw.mqtt_port;
    let pw = gw.passwords["GA-0001"].clone();
    let r = mqtt_raw(
        port,
        &[
            "connect",
            "--user",
            "GA-0001",
            "--password",
            &pw,
            "--keepalive",
            "0",
            "--hold",
            "2",
        ],
    );
    assert_eq!(r, serde_json::json!({"rc": 0, "alive": true}));
    let wrong = mqtt_raw(
        port,
        &["connect", "--user", "GA-0001", "--password", "nope"],
    );
    assert_eq!(wrong["rc"], 4, "bad user name or password");
    let unknown = mqtt_raw(
        port,
        &["connect", "--user", "GZ-9999", "--password", "nope"],
    );
    assert_eq!(
        unknown["rc"], 4,
        "an unknown meter looks like a wrong password"
    );
    assert_eq!(
        mqtt_raw(port, &["connect"])["rc"],
        5,
        "anonymous: not authorised"
    );
    assert_eq!(
        gw.metric("gkgw_broker_auth_total{result=\"rejected\"}"),
        2.0
    );
}

#[test]
fn no_secret_and_no_forged_line_reaches_the_log_at_trace_level() {
    let influx = Influx1::start();
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let influx_pw = "influx-Secret-7hQ2";
    let pw_file = secret_dir.path().join("influx-password");
    std::fs::write(&pw_file, format!("{influx_pw}\n")).expect("write");
    let mut gw = Gateway::start_with(
        &format!(
            "[influx]\nenabled = true\nurl = \"{}\"\nversion = 1\ndatabase = \"gkgw\"\nusername = \"gkgw\"\npassword_file = \"{}\"\nflush_interval_ms = 200\n",
            influx.url(),
            pw_file.display()
        ),
        &["GA-0001", "GB-0002"],
        RunOpts {
            rust_log: "trace".into(),
            nofile: None,
        },
    );
    let port = gw.mqtt_port;
    for meter in ["GA-0001", "GB-0002"] {
        let mut args = gw.paho_args(meter);
        args.extend(["--meters", meter, "--count", "10"].map(String::from));
        let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{summary}");
    }
    // A second CONNECT on an open connection is a protocol violation (MQTT-3.1.0-2).
    let mut second = vec!["second-connect"];
    second.extend(login(&gw, "GA-0001"));
    assert_eq!(
        mqtt_raw(port, &second),
        serde_json::json!({"rc": 0, "closed": true})
    );
    // A user name that tries to start a line of its own in the log (first: refusals are
    // logged once per 10 s).
    let forged = "x\n2026-12-01T00:00:00.000000Z  INFO gkgw::topology: all meters topped up";
    assert_eq!(
        mqtt_raw(port, &["connect", "--user", forged, "--password", "p"])["rc"],
        4
    );
    let wrong = "wrong-Secret-9xT4";
    assert_eq!(
        mqtt_raw(port, &["connect", "--user", "GB-0002", "--password", wrong])["rc"],
        4
    );
    let reloads = gw.reloads();
    let added = gw.add_meter("GC-0003");
    gw.wait_reloaded(reloads);
    assert_eq!(
        mqtt_raw(
            port,
            &["connect", "--user", "GC-0003", "--password", &added]
        )["rc"],
        0
    );
    gw.wait_drained(Duration::from_secs(20));
    if let Some(p) = gw.proc.as_mut() {
        p.signal("TERM");
        p.wait_timeout(Duration::from_secs(15)).expect("stops");
    }
    let log = gw.log();
    assert!(log.contains(" TRACE "), "the gateway logged at trace level");
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("gkgw:{influx_pw}"))
    };
    for secret in [
        gw.passwords["GA-0001"].as_str(),
        gw.passwords["GB-0002"].as_str(),
        added.as_str(),
        wrong,
        influx_pw,
        basic.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret is in the log: {secret}");
    }
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-12-01T00:00:00.000000Z")),
        "a forged line"
    );
    assert!(
        log.contains(r#"x\n2026-12-01T00:00:00.000000Z"#),
        "logged escaped"
    );
}

#[test]
fn a_qos0_flood_from_20_meters_is_committed_in_full() {
    let meters: Vec<String> = (1..=20).map(|i| format!("GF-{i:04}")).collect();
    let ids: Vec<&str> = meters.iter().map(String::as_str).collect();
    let gw = Gateway::start("", &ids);
    let mut pubs = Vec::new();
    for m in &meters {
        let mut p = Proc::spawn(
            "mosquitto_pub -l",
            Command::new(require("mosquitto_pub"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &gw.mqtt_port.to_string(),
                    "-V",
                    "mqttv311",
                ])
                .args(["-u", m, "-P", &gw.passwords[m], "-i", m, "-q", "0", "-l"])
                .args(["-t", &format!("meters/{m}/state")])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut stdin = p.child.stdin.take().expect("stdin");
        let m = m.clone();
        let feeder = std::thread::spawn(move || {
            let mut text = String::with_capacity(5000 * 120);
            for seq in 1..=5000u64 {
                text.push_str(&state(&m, seq, 2.0));
                text.push('\n');
            }
            stdin
                .write_all(text.as_bytes())
                .expect("feed mosquitto_pub");
        });
        pubs.push((p, feeder));
    }
    for (mut p, feeder) in pubs {
        feeder.join().expect("fed");
        let status = p
            .wait_timeout(Duration::from_secs(120))
            .expect("publisher ends");
        assert!(status.success(), "mosquitto_pub exit {status:?}");
    }
    wait_until(
        "all 100,000 readings committed",
        Duration::from_secs(120),
        || gw.metric("gkgw_readings_accepted_total") >= 100_000.0,
    );
    assert_eq!(gw.metric("gkgw_readings_accepted_total"), 100_000.0);
    assert_eq!(gw.metric("gkgw_mqtt_messages_total"), 100_000.0);
}

#[test]
fn a_wrong_password_flood_keeps_memory_bounded_and_a_good_meter_acked() {
    let gw = Gateway::start("", &["GM-0001", "GM-0002"]);
    let port = gw.mqtt_port;
    let pid = gw.proc.as_ref().expect("running").pid();
    let acks = gw.dir.path().join("acks.txt");
    let mut args = gw.paho_args("GM-0002");
    args.extend(["--meters", "GM-0002", "--continuous", "--rate", "20"].map(String::from));
    args.extend(["--acks-file".to_owned(), acks.display().to_string()]);
    let good = Proc::spawn(
        "meter.py",
        paho_cmd(&args.iter().map(String::as_str).collect::<Vec<_>>()).stdout(Stdio::null()),
    );
    let count = || {
        std::fs::read_to_string(&acks)
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_until("the good meter is acked", Duration::from_secs(20), || {
        count() > 10
    });
    let (_, hwm_before) = rss_kib(pid);

    let flood = mqtt_raw(
        port,
        &[
            "login-flood",
            "--user",
            "GM-0001",
            "--connections",
            "100",
            "--attempts",
            "10",
        ],
    );
    let codes = flood["codes"].as_object().expect("codes").clone();
    let total: u64 = codes.values().map(|v| v.as_u64().unwrap_or(0)).sum();
    assert_eq!(total, 1000, "{flood}");
    assert!(
        !codes.contains_key("0"),
        "no wrong password got in: {flood}"
    );
    let (_, hwm_after) = rss_kib(pid);
    assert!(
        hwm_after.saturating_sub(hwm_before) <= 30 * 1024,
        "peak RSS grew by {} KiB (from {hwm_before} KiB)",
        hwm_after - hwm_before
    );
    let during = count();
    wait_until(
        "the good meter keeps being acked",
        Duration::from_secs(20),
        || count() > during + 20,
    );
    assert!(gw.metric("gkgw_broker_auth_total{result=\"throttled\"}") > 0.0);
    good.signal("TERM");
}

#[test]
fn running_out_of_descriptors_neither_floods_the_log_nor_locks_meters_out() {
    let gw = Gateway::start_with(
        "",
        &["GM-0001"],
        RunOpts {
            rust_log: "info".into(),
            nofile: Some(256),
        },
    );
    let log_before = std::fs::metadata(gw.log_path()).map_or(0, |m| m.len());
    let port = gw.mqtt_port;
    // 600 TCP connections that never send CONNECT, held for 8 s: more than the process may open.
    let mut holder = Proc::spawn(
        "mqtt_raw.py hold",
        Command::new("python3")
            .arg(crate::support::repo_root().join("tests/peers/mqtt_raw.py"))
            .args([
                "--port",
                &port.to_string(),
                "hold",
                "--connections",
                "600",
                "--seconds",
                "8",
            ])
            .stdout(Stdio::piped()),
    );
    std::thread::sleep(Duration::from_secs(3));
    let mut args = gw.paho_args("GM-0001");
    args.extend(["--meters", "GM-0001", "--count", "5"].map(String::from));
    let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        code, 0,
        "a good meter connects and is acked during the flood: {summary}"
    );
    holder
        .wait_timeout(Duration::from_secs(30))
        .expect("holder ends");
    let grown = std::fs::metadata(gw.log_path()).map_or(0, |m| m.len()) - log_before;
    assert!(
        grown < 16 * 1024,
        "log grew by {grown} bytes:\n{}",
        gw.log()
    );
    assert!(gw.metric("gkgw_broker_refused_total{reason=\"evicted_pending\"}") > 0.0);
    assert!(gw
        .log()
        .contains("broker.max_connections lowered to fit the open-files limit"));
}

#[test]
fn meter_add_keeps_the_file_readable_and_the_running_gateway_follows_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let gw = Gateway::start("", &["GA-0001", "GB-0002"]);
    let port = gw.mqtt_port;
    let file = gw.dir.path().join("meters.toml");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // As `sudo gkgw meter add` would find it: owned by the service user.
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).expect("chown");
    }
    let before = std::fs::metadata(&file).expect("meta");
    let reloads = gw.reloads();
    let pw = gw.add_meter("GN-0009");
    let after = std::fs::metadata(&file).expect("meta");
    assert_eq!(
        (after.uid(), after.gid(), after.mode() & 0o7777),
        (before.uid(), before.gid(), 0o640),
        "owner, group and mode kept (root: {root})"
    );
    gw.wait_reloaded(reloads);
    assert_eq!(
        mqtt_raw(port, &["connect", "--user", "GN-0009", "--password", &pw])["rc"],
        0
    );

    // GA-0001 is connected when it is removed from the file; SIGHUP reloads at once.
    let ga = gw.passwords["GA-0001"].clone();
    let mut listener = mosquitto_sub(
        port,
        "GA-0001",
        &ga,
        Some("GA-0001"),
        &["-t", "meters/GA-0001/ack"],
    );
    wait_until("GA-0001 connected", Duration::from_secs(10), || {
        gw.metric("gkgw_broker_connections") >= 1.0
    });
    // `gkgw meter list` shows the accounts (ids only); `gkgw meter remove` takes one out.
    let gkgw = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::GKGW)
            .args(args)
            .arg("--config")
            .arg(&gw.config)
            .output()
            .expect("gkgw");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = gkgw(&["meter", "list"]);
    assert!(
        list.contains("meter        GA-0001\n") && list.contains("meter        GN-0009\n"),
        "{list}"
    );
    assert!(!list.contains("argon2"), "no hash is printed: {list}");
    let removed = gkgw(&["meter", "remove", "GA-0001"]);
    assert!(
        removed.starts_with("meter GA-0001 removed from"),
        "{removed}"
    );
    let list = gkgw(&["meter", "list"]);
    assert!(
        !list.contains("GA-0001") && list.contains("GB-0002"),
        "{list}"
    );
    let reloads = gw.reloads();
    gw.proc.as_ref().expect("running").signal("HUP");
    gw.wait_reloaded(reloads);
    wait_until(
        "GA-0001's connection is closed",
        Duration::from_secs(10),
        || listener.child.try_wait().ok().flatten().is_some(),
    );
    assert_eq!(
        mqtt_raw(
            port,
            &[
                "connect",
                "--user",
                "GA-0001",
                "--password",
                &gw.passwords["GA-0001"]
            ]
        )["rc"],
        4
    );
    let gb = &gw.passwords["GB-0002"];
    assert_eq!(
        mqtt_raw(port, &["connect", "--user", "GB-0002", "--password", gb])["rc"],
        0
    );
    assert!(
        gw.log().contains("broker accounts reloaded"),
        "{}",
        gw.log()
    );
    assert_eq!(
        gw.healthz(),
        200,
        "SIGHUP reloads, it does not stop the gateway"
    );
}

#[test]
fn a_second_gateway_on_the_same_state_dir_is_refused() {
    let gw = Gateway::start("", &[]);
    let pid = gw.proc.as_ref().expect("running").pid();
    let out = Command::new(GKGW)
        .args(["run", "--config"])
        .arg(&gw.config)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "state directory {} is in use by another gkgw (pid {pid})",
            gw.dir.path().display()
        )),
        "{err}"
    );
    assert_eq!(gw.healthz(), 200, "the first one is untouched");
}

#[test]
fn a_closed_log_pipe_never_hangs_shutdown_and_check_into_head_does_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mqtt, web) = (crate::support::free_port(), crate::support::free_port());
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nstate_dir = \"{}\"\n[broker]\nlisten = \"127.0.0.1:{mqtt}\"\ncredentials_file = \"{}/meters.toml\"\n[http]\nlisten = \"127.0.0.1:{web}\"\n",
            dir.path().display(),
            dir.path().display()
        ),
    )
    .expect("config");
    for sig in ["INT", "TERM"] {
        let mut p = Proc::spawn(
            "gkgw run",
            Command::new(GKGW)
                .args(["run", "--config"])
                .arg(&cfg)
                .env("RUST_LOG", "debug")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        // Like `gkgw run 2>&1 | head -2`: read two lines, then the reader goes away.
        let mut err = BufReader::new(p.child.stderr.take().expect("stderr"));
        let mut line = String::new();
        for _ in 0..2 {
            line.clear();
            err.read_line(&mut line).expect("a log line");
        }
        drop(err);
        wait_until("the gateway is up", Duration::from_secs(20), || {
            crate::support::http("GET", &format!("http://127.0.0.1:{web}/healthz"), None).0 == 200
        });
        p.signal(sig);
        let status = p
            .wait_timeout(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("SIGN{sig} with a closed stderr: still running"));
        assert!(status.success(), "{sig}: {status:?}");
    }
    let mut check = Command::new(GKGW)
        .args(["check", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("check");
    let mut out = BufReader::new(check.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("first line");
    drop(out); // `| head -1`
    let status = check.wait().expect("check ends");
    let mut err = String::new();
    std::io::Read::read_to_string(check.stderr.as_mut().expect("stderr"), &mut err).expect("read");
    assert!(!err.contains("panicked"), "{err}");
    assert!(first.ends_with(": ok\n"), "{first}");
    assert!(status.success() || status.code().is_none(), "{status:?}");
}

#[test]
fn a_publisher_waiting_for_its_pubacks_gets_a_commit_at_once() {
    // A 10 s commit interval and room for 10 messages awaiting commit: PUBACK-after-commit
    // would let this meter send 10 messages per 10 s if the store only committed on its timer.
    let gw = Gateway::start_with_config(
        "commit_interval_ms = 10000\n",
        "max_inflight = 10\n",
        &["GM-0001"],
    );
    let mut args = gw.paho_args("GM-0001");
    args.extend(["--meters", "GM-0001", "--count", "300", "--wait-acks", "60"].map(String::from));
    let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "every message acked: {summary}");
    assert_eq!(summary["acked"], 300);
    assert!(
        gw.metric("gkgw_store_commits_total") >= 30.0,
        "one commit per full window of 10, not one per 10 s: {}",
        gw.metric("gkgw_store_commits_total")
    );
}

/// `mosquitto_pub` over TLS, QoS 1 (its exit status is the PUBACK, sent after the commit).
fn tls_pub(port: u16, meter: &str, password: &str, tls: &[&std::path::Path], seq: u64) -> bool {
    let mut c = Command::new(require("mosquitto_pub"));
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-V",
        "mqttv311",
        "-q",
        "1",
    ])
    .args(["-u", meter, "-P", password, "-i", meter])
    .args([
        "-t",
        &format!("meters/{meter}/state"),
        "-m",
        &state(meter, seq, 3.0),
    ]);
    for (flag, path) in ["--cafile", "--cert", "--key"].iter().zip(tls) {
        c.arg(flag).arg(path);
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub")
        .success()
}

/// The TLS listener: a meter that trusts the site CA publishes (and the plain port still
/// works); one that does not trust it is refused; with `tls_client_ca_file` a meter without a
/// client certificate from that CA is refused even with the right password.
#[test]
fn mqtt_over_tls_verifies_the_broker_and_can_require_client_certificates() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = crate::support::tls_files(certs.path());
    let (client_cert, client_key) = (
        certs.path().join("client.pem"),
        certs.path().join("client.key"),
    );
    let tls_port = crate::support::free_port();
    let keys = format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let gw = Gateway::start_with_config("", &keys, &["GA-0001"]);
    wait_until("TLS listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });
    let pw = gw.passwords["GA-0001"].clone();
    assert!(
        tls_pub(tls_port, "GA-0001", &pw, &[&ca], 1),
        "with the site CA"
    );
    assert!(
        !tls_pub(tls_port, "GA-0001", &pw, &[], 2),
        "the broker's certificate is not trusted without the site CA"
    );
    assert!(
        !tls_pub(tls_port, "GA-0001", "wrong-password", &[&ca], 3),
        "TLS does not replace the password"
    );
    assert!(mosquitto_pub(
        gw.mqtt_port,
        Some(("GA-0001", &pw)),
        "meters/GA-0001/state",
        1,
        &state("GA-0001", 4, 3.0)
    ));
    drop(gw);

    let keys = format!("{keys}tls_client_ca_file = \"{}\"\n", ca.display());
    let gw = Gateway::start_with_config("", &keys, &["GA-0001"]);
    wait_until("TLS listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });
    let pw = gw.passwords["GA-0001"].clone();
    assert!(
        !tls_pub(tls_port, "GA-0001", &pw, &[&ca], 1),
        "no client certificate: refused"
    );
    assert!(
        tls_pub(
            tls_port,
            "GA-0001",
            &pw,
            &[&ca, &client_cert, &client_key],
            2
        ),
        "with a client certificate from the site CA"
    );
    let metrics = crate::support::http(
        "GET",
        &format!("http://127.0.0.1:{}/metrics", gw.http_port),
        None,
    )
    .1;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("reason=\"tls\"") && !l.trim_end().ends_with(" 0")),
        "the refused handshake is counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("tls"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
