//! The command line: config errors name the key, `generate-config` round-trips, the demo runs
//! and stops cleanly.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    free_port, http, http_as, repo_root, wait_until, Browser, Influx1, Proc, Victoria, GKGW,
};

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(GKGW)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("gkgw check");
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "gw.toml");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        err,
    )
}

#[test]
fn config_mistakes_name_file_key_and_expectation() {
    let cases = [
        ("[store]\ncommit_interval_ms = \"soon\"\n", "gw.toml: store.commit_interval_ms: invalid type: string \"soon\", expected u64 (line 2, column 22)"),
        ("[influx]\nbatchsize = 10\n", "gw.toml: influx.batchsize: unknown field `batchsize`"),
        ("[brokr]\n", "gw.toml: brokr: unknown field `brokr`"),
        ("[influx]\nenabled = true\nversion = 7\n", "gw.toml: influx.version: 7: expected 1, 2 or 3"),
        ("[influx]\nenabled = true\nversion = 1\ndatabase = \"\"\n", "gw.toml: influx.database: required for version 1"),
        ("[influx]\nenabled = true\nversion = 2\nbucket = \"b\"\norg = \"o\"\ntoken_file = \"/nonexistent/token\"\n", "gw.toml: influx.token_file: cannot read the InfluxDB token file /nonexistent/token: No such file or directory"),
        ("[influx]\nenabled = true\nversion = 1\nusername = \"gkgw\"\npassword_file = \"/nonexistent/password\"\n", "gw.toml: influx.password_file: cannot read the InfluxDB password file /nonexistent/password: No such file or directory"),
        ("[[mqtt.topics]]\nfilter = \"a/+\"\nformat = \"xml\"\n", "gw.toml: mqtt.topics[0].format: unknown variant `xml`, expected one of `json`, `number`, `line_protocol`"),
        ("[store]\nquota_mib = 1\n", "gw.toml: store.quota_mib: expected at least 16 MiB"),
        ("[broker]\nconfig_file = \"/etc/rumqttd.toml\"\n", "gw.toml: broker.config_file: unknown field `config_file`"),
        ("[broker]\nmax_packet_bytes = 1000\n", "gw.toml: broker.max_packet_bytes: 1000 must exceed mqtt.max_payload_bytes (4096) by at least 128 bytes"),
        ("[[mqtt.topics]]\nfilter = \"lab/ph\"\nformat = \"number\"\nquantity = \"digester.ph\"\ndevice = \"lab1\"\n", "gw.toml: mqtt.topics[0]: publishers: \"lab/ph\": say who may publish here"),
        ("[[mqtt.topics]]\nfilter = \"lab/ph\"\nformat = \"number\"\nquantity = \"digester.acidity\"\ndevice = \"lab1\"\npublishers = [\"LAB\"]\n", "gw.toml: mqtt.topics[0].quantity: \"digester.acidity\" is not a known quantity"),
        ("[[modbus.bus]]\nname = \"b\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\n[[modbus.device]]\nname = \"t\"\nbus = \"b\"\nprofile = \"comwintop-8pt1000\"\nquantities = { ch2 = \"kitchen.h2s\" }\n", "gw.toml: modbus.device[0].quantities.ch2: kitchen.h2s is stored in \"ppm\", but this source gives \"°C\""),
        ("[[plant.quantity]]\nname = \"digester.pressure\"\nkind = \"gauge\"\n", "gw.toml: plant.quantity[0]: \"digester.pressure\": is a built-in quantity already"),
    ];
    for (config, expected) in cases {
        let (code, _, err) = check(config);
        assert_eq!(
            code, 2,
            "{config:?} must fail with exit code 2; stderr: {err}"
        );
        assert!(
            err.contains(expected),
            "for {config:?}\nexpected: {expected}\n     got: {err}"
        );
    }
    let missing = Command::new(GKGW)
        .args(["check", "--config", "/nonexistent/gw.toml"])
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/gw.toml: cannot read"));
}

#[test]
fn generated_config_is_valid_and_check_prints_the_pipeline() {
    let out = Command::new(GKGW)
        .arg("generate-config")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let (code, stdout, err) = check(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("store: /var/lib/gkgw/store.db"), "{stdout}");
    assert!(
        stdout.contains("mqtt broker 0.0.0.0:1883: meters publish meters/{id}/state"),
        "{stdout}"
    );
    // The plant table: every built-in meter field, with its quantity, instance and unit.
    assert!(stdout.contains("\nplant (15 bindings):\n"), "{stdout}");
    let credit: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("meter.credit "))
        .collect();
    assert_eq!(credit.len(), 2, "{stdout}");
    assert!(
        credit
            .iter()
            .any(|l| l.contains("\"credit_kwh\" (electricity)") && l.contains(" kWh ")),
        "{credit:?}"
    );
}

#[test]
fn demo_runs_with_nothing_installed_and_stops_cleanly_on_ctrl_c() {
    let (mqtt, web) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = Proc::spawn(
        "gkgw demo",
        Command::new(GKGW)
            .args([
                "demo",
                "--mqtt",
                &format!("127.0.0.1:{mqtt}"),
                "--http",
                &format!("127.0.0.1:{web}"),
                "--meters",
                "6",
                "--meter-interval",
                "0.2",
            ])
            .arg("--state-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // The banner: a login for each role, and their tokens in the state directory.
    let mut banner = String::new();
    {
        use std::io::BufRead;
        let out = demo.child.stdout.take().expect("stdout");
        for line in std::io::BufReader::new(out).lines() {
            let line = line.expect("banner");
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C stops the demo") {
                break;
            }
        }
    }
    let password = |role: &str| {
        banner
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("login:")
                    .and_then(|r| r.trim().strip_prefix(role))
                    .and_then(|r| r.trim().strip_prefix("password "))
                    .and_then(|r| r.split_whitespace().next())
            })
            .unwrap_or_else(|| panic!("a {role} login in the banner:\n{banner}"))
            .to_owned()
    };
    let token = std::fs::read_to_string(dir.path().join("demo-admin.token"))
        .expect("the admin's token")
        .trim()
        .to_owned();
    let status = format!("http://127.0.0.1:{web}/api/status");
    wait_until(
        "the demo to commit readings from its meters",
        Duration::from_secs(30),
        || {
            let (code, body) = http_as(&token, "GET", &status, None);
            code == 200
                && serde_json::from_str::<serde_json::Value>(&body)
                    .is_ok_and(|v| v["readings_accepted"].as_u64() >= Some(30))
        },
    );
    assert_eq!(http("GET", &status, None).0, 401, "no login, no status");
    for role in ["viewer", "manager", "admin"] {
        let b = Browser::new(&format!("http://127.0.0.1:{web}"));
        let a = b.login(role, &password(role));
        assert_eq!(
            a.status, 303,
            "{role} signs in with the printed password: {}",
            a.body
        );
        let page = b.get("/status");
        assert_eq!(page.status, 200);
        assert!(page.body.contains("Readings accepted"), "{}", page.body);
    }
    let (_, metrics) = http("GET", &format!("http://127.0.0.1:{web}/metrics"), None);
    assert!(metrics.contains("gkgw_readings_accepted_total"));
    assert!(
        metrics.contains("gkgw_readings_rejected_total{reason=\"malformed\"} 0"),
        "{metrics}"
    );
    // A simulated meter reconnecting at this moment is not gone: all 7 are back within 15 s.
    let connected = || {
        http("GET", &format!("http://127.0.0.1:{web}/metrics"), None)
            .1
            .contains("gkgw_broker_connections 7\n")
    };
    if !connected() {
        wait_until(
            "six simulated meters and the H2S sensor connected",
            Duration::from_secs(15),
            connected,
        );
    }
    demo.signal("INT");
    let exit = demo
        .wait_timeout(Duration::from_secs(10))
        .expect("the demo stops within 10 s of Ctrl-C");
    assert!(exit.success(), "exit status {exit:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(demo.child.stderr.as_mut().expect("stderr"), &mut err)
        .expect("read");
    assert!(err.contains("every received reading is committed"), "{err}");
}

/// The demo's simulated plant is a real Modbus TCP server: the gateway polls it into InfluxDB
/// with the shipped profiles' decoding, and the commissioning CLI reads it like hardware.
#[test]
fn demo_plant_is_polled_over_modbus_into_influxdb() {
    let influx = Influx1::start();
    let state = tempfile::tempdir().expect("tempdir");
    let (mqtt, web, plant) = (free_port(), free_port(), free_port());
    let mut demo = Proc::spawn(
        "gkgw demo",
        Command::new(GKGW)
            .args([
                "demo",
                "--meters",
                "2",
                "--meter-interval",
                "1",
                "--no-faults",
                "--influx",
                &influx.url(),
                "--influx-db",
                "gkgw",
            ])
            .args([
                "--mqtt",
                &format!("127.0.0.1:{mqtt}"),
                "--http",
                &format!("127.0.0.1:{web}"),
                "--plant",
                &format!("127.0.0.1:{plant}"),
            ])
            .arg("--state-dir")
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until(
        "plant readings in InfluxDB",
        Duration::from_secs(60),
        || {
            influx.count("digester", "pressure_mbar") >= 2
                && influx.count("biogas", "ch4_pct") >= 1
                && influx.count("power", "voltage_v") >= 1
                && influx.count("compressor", "state") >= 1
        },
    );
    let rows =
        influx.rows("SELECT \"pressure_mbar\", \"temperature_c\", \"device\" FROM \"digester\"");
    for r in &rows {
        assert_eq!(r[3], "digester-1", "{r:?}");
        let p = r[1].as_f64().expect("pressure is a number");
        assert!(
            (0.0..=60.0).contains(&p),
            "pressure {p} mbar in the gas holder's range"
        );
    }
    let ch4 = influx.rows("SELECT \"ch4_pct\" FROM \"biogas\" WHERE \"device\" = 'gas-analyser'");
    assert!(
        ch4.iter()
            .all(|r| r[1].as_f64().is_some_and(|v| (40.0..=70.0).contains(&v))),
        "{ch4:?}"
    );
    let (_, metrics) = http("GET", &format!("http://127.0.0.1:{web}/metrics"), None);
    for dev in [
        "digester-1",
        "compressor-meter",
        "compressor-1",
        "gas-analyser",
    ] {
        assert!(
            metrics.contains(&format!(
                "gkgw_modbus_device_state{{device=\"{dev}\",state=\"online\"}} 1"
            )),
            "{dev} online:\n{metrics}"
        );
    }
    // The status page and its JSON show each device's latest values with units.
    let token = std::fs::read_to_string(state.path().join("demo-viewer.token"))
        .expect("the viewer's token")
        .trim()
        .to_owned();
    let (_, status) = http_as(
        &token,
        "GET",
        &format!("http://127.0.0.1:{web}/api/status"),
        None,
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    let digester = status["modbus"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "digester-1"))
        .unwrap_or_else(|| panic!("digester-1 in {status}"));
    assert!(
        digester["latest"]["pressure"]
            .as_str()
            .is_some_and(|v| v.ends_with(" mbar")),
        "{digester}"
    );
    let (_, page) = http_as(
        &token,
        "GET",
        &format!("http://127.0.0.1:{web}/status"),
        None,
    );
    assert!(page.contains("digester-1 values"), "{page}");
    let out = Command::new(GKGW)
        .args([
            "modbus",
            "poll",
            "--tcp",
            &format!("127.0.0.1:{plant}"),
            "--unit",
            "1",
            "--profile",
            "demo-digester",
        ])
        .output()
        .expect("gkgw modbus poll");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("pressure") && l.trim_end().ends_with("good")),
        "{text}"
    );

    // Every panel of the Prometheus dashboard has data: each PromQL target of gateway.json
    // against the demo's /metrics scraped into VictoriaMetrics. (The InfluxQL dashboards are
    // checked against InfluxDB by grafana.rs.)
    let vm = Victoria::start();
    let metrics_url = format!("http://127.0.0.1:{web}/metrics");
    let targets = dashboard_targets("gateway.json");
    assert!(targets.len() >= 15, "{} targets", targets.len());
    // rate() and increase() need two scrapes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        vm.import_prometheus(&http("GET", &metrics_url, None).1);
        let mut empty = Vec::new();
        for t in &targets {
            let v = vm.query(&t.query);
            assert_eq!(v["status"], "success", "{t}: {v}");
            if !prom_has_value(&v) {
                empty.push(t.to_string());
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data after the demo ran for a while:\n{}",
            empty.join("\n")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    demo.signal("INT");
    assert!(demo
        .wait_timeout(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// One PromQL query of one panel of a dashboard in `dashboards/`.
struct Target {
    file: &'static str,
    panel: String,
    ref_id: String,
    query: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (file, panel, id, q) = (self.file, &self.panel, &self.ref_id, &self.query);
        write!(f, "{file} \"{panel}\" {id}: {q}")
    }
}

/// Every target (`expr`) of every panel of a Prometheus dashboard.
fn dashboard_targets(file: &'static str) -> Vec<Target> {
    let path = repo_root().join("dashboards").join(file);
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("json");
    let mut targets = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        let list = panel["targets"].as_array();
        assert!(
            list.is_some_and(|l| !l.is_empty()),
            "{file}: {title}: no targets"
        );
        for t in list.into_iter().flatten() {
            let query = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: {title}: a target needs an expr: {t}"));
            targets.push(Target {
                file,
                panel: title.to_owned(),
                ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                query: query.to_owned(),
            });
        }
    }
    targets
}

/// At least one finite sample in a PromQL instant-query answer.
fn prom_has_value(v: &serde_json::Value) -> bool {
    let result = v["data"]["result"].as_array().into_iter().flatten();
    result
        .filter_map(|r| r["value"][1].as_str())
        .any(|x| x.parse::<f64>().is_ok_and(f64::is_finite))
}

/// The part of a `gkgw backup`/`gkgw restore` report that describes the store.
fn store_line(report: &str) -> String {
    let line = report
        .lines()
        .find_map(|l| l.strip_prefix("  store    "))
        .unwrap_or_else(|| panic!("no store line: {report}"));
    line.split(" (integrity ok)")
        .next()
        .and_then(|l| l.split(" -> ").next())
        .unwrap_or_default()
        .to_owned()
}

fn gkgw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(GKGW).args(args).output().expect("gkgw");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `gkgw backup` while the gateway runs and takes readings, then (a new SD card: no store, no
/// meters file) `gkgw restore` on the stopped gateway: the meters log in with their old
/// passwords, the dashboard token works, the logbook is back. A damaged backup and a restore
/// onto a running gateway are refused without touching anything.
#[test]
fn backup_while_running_then_restore_onto_an_empty_state_dir() {
    use crate::support::{paho, Gateway};
    let mut gw = Gateway::start("", &["GM-0001"]);
    let state = gw.dir.path().to_owned();
    let config = gw.config.display().to_string();
    let meters = state.join("meters.toml");
    let mut args = gw.paho_args("GM-0001");
    args.extend(["--meters", "GM-0001", "--count", "20"].map(String::from));
    let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{summary}");
    let note = r#"{"kind":"note","text":"before the backup"}"#;
    let (code, body) = gw.http("POST", &gw.url("/api/logbook"), Some(note));
    assert_eq!(code, 201, "{body}");

    let usb = tempfile::tempdir().expect("tempdir");
    let to = usb.path().join("gkgw-backup");
    let to_s = to.display().to_string();
    let (code, out, err) = gkgw(&["backup", "--config", &config, "--to", &to_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(integrity ok)"), "{out}");
    assert!(out.contains(&format!("  file     {config}\n")), "{out}");
    assert!(
        out.contains(&format!("  file     {}\n", meters.display())),
        "{out}"
    );
    assert!(
        !out.contains("gkgw.log") && !out.contains("store.db-wal"),
        "the state directory's own files are not config: {out}"
    );
    assert!(!out.contains("argon2"), "{out}");
    let stored = store_line(&out);
    assert!(!stored.contains(" 0 readings"), "{stored}");
    assert_eq!(
        std::fs::metadata(&to)
            .expect("backup dir")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // Not over an earlier backup.
    let (code, _, err) = gkgw(&["backup", "--config", &config, "--to", &to_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exists and is not empty"), "{err}");
    // Not onto the running gateway.
    let (code, _, err) = gkgw(&["restore", "--from", &to_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by another gkgw"), "{err}");
    // A backup with one changed byte is refused before anything changes.
    let damaged = usb.path().join("damaged");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&to)
        .arg(&damaged)
        .status()
        .expect("cp")
        .success());
    let copy = damaged
        .join("files")
        .join(meters.strip_prefix("/").expect("absolute"));
    let mut text = std::fs::read(&copy).expect("meters copy");
    text[0] ^= 1;
    std::fs::write(&copy, text).expect("damage");
    let (code, _, err) = gkgw(&["restore", "--from", &damaged.display().to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is damaged, nothing was restored"), "{err}");

    // A new SD card: the gateway stopped, its store and meters file gone.
    let proc = gw.proc.as_mut().expect("running");
    proc.signal("TERM");
    assert!(
        proc.wait_timeout(Duration::from_secs(20)).is_some(),
        "stops"
    );
    let meters_before = std::fs::read(&meters).expect("meters");
    let mode_before = std::fs::metadata(&meters)
        .expect("meters")
        .permissions()
        .mode();
    for f in ["store.db", "store.db-wal", "store.db-shm", "meters.toml"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    let (code, out, err) = gkgw(&["restore", "--from", &to_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(store_line(&out), stored, "the same store: {out}");
    assert!(
        out.contains(&format!("  file     {}\n", meters.display())),
        "{out}"
    );
    assert!(
        out.contains("before-restore-"),
        "the replaced config is kept: {out}"
    );
    assert_eq!(std::fs::read(&meters).expect("restored"), meters_before);
    assert_eq!(
        std::fs::metadata(&meters)
            .expect("meters")
            .permissions()
            .mode(),
        mode_before
    );

    gw.restart();
    let (code, body) = gw.http("GET", &gw.url("/api/logbook"), None);
    assert_eq!(code, 200, "the token is back: {body}");
    assert!(body.contains("before the backup"), "{body}");
    let mut args = gw.paho_args("GM-0001");
    args.extend(["--meters", "GM-0001", "--count", "5", "--start-seq", "100"].map(String::from));
    let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        code, 0,
        "the meter logs in with its old password: {summary}"
    );
}
