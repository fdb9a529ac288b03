//! The alarms through the whole pipeline: a reading on MQTT → the rule → `alarms/{rule}` on
//! the broker and `/api/alarms`; the state kept over SIGKILL; operator actions; stale data;
//! the store failing under the alarm.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// A sensor account publishing plain numbers on two topics, and the given rules (which replace
/// the defaults); meter rules and device offline off, so only these rules speak.
fn config(rules: &str) -> String {
    format!(
        "[[mqtt.topics]]\nfilter = \"kitchen/ch4\"\nformat = \"number\"\nquantity = \"kitchen.ch4_lel\"\ndevice = \"kitchen\"\npublishers = [\"KS-1\"]\n\
         [[mqtt.topics]]\nfilter = \"digester/pressure\"\nformat = \"number\"\nquantity = \"digester.pressure\"\ndevice = \"digester-1\"\npublishers = [\"KS-1\"]\n\
         [alarms]\noffline_s = 0\n[alarms.meter]\nenabled = false\n{rules}"
    )
}

const METHANE: &str = "[[alarms.rule]]\nname = \"kitchen_methane_20_lel\"\nseverity = \"alarm\"\nquantity = \"kitchen.ch4_lel\"\nabove = 20.0\ndeadband = 2.0\nlatched = true\nstale_s = 0\n";

/// `alarms/#` as an integration account; its lines go to a file.
struct Watcher {
    _proc: Proc,
    out: std::path::PathBuf,
}

impl Watcher {
    fn start(gw: &Gateway, pw: &str) -> Watcher {
        let out = gw.dir.path().join("alarms.txt");
        let file = std::fs::File::create(&out).expect("watch file");
        let mut c = Command::new(require("mosquitto_sub"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.mqtt_port.to_string(),
            "-V",
            "mqttv311",
        ])
        .args(["-u", "ha", "-P", pw, "-i", "ha", "-t", "alarms/#", "-v"])
        .stdout(file)
        .stderr(Stdio::null());
        let w = Watcher {
            _proc: Proc::spawn("mosquitto_sub", &mut c),
            out,
        };
        wait_until("watcher connected", Duration::from_secs(20), || {
            gw.metric("gkgw_broker_connections") >= 1.0
        });
        w
    }

    /// Every message so far: (topic, JSON).
    fn messages(&self) -> Vec<(String, serde_json::Value)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, j) = l.split_once(' ')?;
                Some((t.to_owned(), serde_json::from_str(j).ok()?))
            })
            .collect()
    }

    fn wait_for(&self, rule: &str, action: &str) -> serde_json::Value {
        let mut found = None;
        wait_until(
            &format!("alarms/{rule} {action} on MQTT"),
            Duration::from_secs(20),
            || {
                found = self
                    .messages()
                    .into_iter()
                    .find(|(t, m)| t == &format!("alarms/{rule}") && m["action"] == action)
                    .map(|(_, m)| m);
                found.is_some()
            },
        );
        found.expect("found")
    }
}

/// A gateway with `rules`, the sensor account KS-1 and the integration account "ha" (its
/// password returned).
fn start(rules: &str) -> (Gateway, String) {
    let mut gw = Gateway::configure_only(&config(rules), &["KS-1"]);
    let pw = gw.add_integration("ha");
    gw.restart();
    (gw, pw)
}

fn publish(gw: &Gateway, topic: &str, value: f64) {
    assert!(
        mosquitto_pub(
            gw.mqtt_port,
            Some(("KS-1", gw.passwords["KS-1"].as_str())),
            topic,
            0,
            &value.to_string()
        ),
        "publish {topic}"
    );
}

fn alarms(gw: &Gateway) -> serde_json::Value {
    let (code, body) = gw.http(
        "GET",
        &format!("http://127.0.0.1:{}/api/alarms", gw.http_port),
        None,
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn active(gw: &Gateway, id: &str) -> Option<serde_json::Value> {
    alarms(gw)["active"]
        .as_array()
        .expect("list")
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
}

/// An alarm operation as `token`'s user (the manager amina's in these tests).
fn act(gw: &Gateway, token: &str, id: &str, action: &str, body: &str) -> (u16, serde_json::Value) {
    let (code, text) = http_as(
        token,
        "POST",
        &format!("http://127.0.0.1:{}/api/alarms/{id}/{action}", gw.http_port),
        Some(body),
    );
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The kitchen methane alarm (latched) raises on one reading, is published on MQTT with its
/// sequence number, survives a SIGKILL as active and unacknowledged, is acknowledged (who and
/// why recorded), refuses a reset while the gas is still there, and resets once it is gone.
#[test]
fn a_latched_alarm_is_published_kept_over_sigkill_and_reset_by_an_operator() {
    let (mut gw, pw) = start(METHANE);
    let watch = Watcher::start(&gw, &pw);
    let id = "kitchen_methane_20_lel:kitchen";
    publish(&gw, "kitchen/ch4", 25.0);
    let raised = watch.wait_for("kitchen_methane_20_lel", "raised");
    assert_eq!(raised["instance"], "kitchen");
    assert_eq!(raised["severity"], "alarm");
    assert_eq!(raised["state"], "active_unacknowledged");
    assert_eq!(raised["value"], 25.0);
    assert_eq!(raised["sequence"], 1);
    assert!(raised["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    // The gas goes, the latched alarm stays.
    publish(&gw, "kitchen/ch4", 0.0);
    wait_until(
        "the 0 %LEL reading arrived",
        Duration::from_secs(10),
        || active(&gw, id).is_some_and(|a| a["condition"] == false),
    );
    assert_eq!(
        active(&gw, id).expect("still active")["state"],
        "active_unacknowledged"
    );

    // SIGKILL: the alarm is not silently cleared by a restart.
    gw.proc.as_mut().expect("running").kill9();
    gw.restart();
    let a = active(&gw, id).expect("restored");
    assert_eq!(a["state"], "active_unacknowledged", "{a}");
    drop(watch);
    let watch = Watcher::start(&gw, &pw);

    // Who acknowledges is the signed-in user; a viewer may not.
    let viewer = gw.add_user("baraka", "viewer", "baraka-password");
    assert_eq!(act(&gw, &viewer, id, "ack", "").0, 403);
    let amina = gw.add_user("amina", "manager", "amina-password");
    let (code, r) = act(&gw, &amina, id, "ack", r#"{"by":"amina"}"#);
    assert_eq!(code, 400, "by comes from the login: {r}");
    let (code, r) = act(
        &gw,
        &amina,
        id,
        "ack",
        r#"{"note":"ventilated, valve closed"}"#,
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["alarm"]["state"], "active_acknowledged");
    let acked = watch.wait_for("kitchen_methane_20_lel", "acknowledged");
    assert_eq!(acked["by"], "amina");
    assert_eq!(acked["note"], "ventilated, valve closed");
    assert_eq!(
        act(&gw, &amina, id, "ack", "").0,
        409,
        "already acknowledged"
    );
    // After the restart the engine holds the condition until a fresh reading says otherwise.
    let (code, r) = act(&gw, &amina, id, "reset", "{}");
    assert_eq!(code, 409, "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("still present"),
        "{r}"
    );
    publish(&gw, "kitchen/ch4", 0.0);
    wait_until("condition clear", Duration::from_secs(10), || {
        active(&gw, id).is_some_and(|a| a["condition"] == false)
    });
    let (code, r) = act(&gw, &amina, id, "reset", r#"{"note":"sensor checked"}"#);
    assert_eq!(code, 200, "{r}");
    assert!(r["alarm"].is_null(), "back to normal: {r}");
    wait_until("gone from the list", Duration::from_secs(5), || {
        active(&gw, id).is_none()
    });
    watch.wait_for("kitchen_methane_20_lel", "reset");
    assert_eq!(act(&gw, &amina, "nope:x", "ack", "").0, 404);
    assert_eq!(act(&gw, &amina, id, "dance", "").0, 404);

    // The whole history, from the store: gapless sequence numbers, who and why.
    let (code, body) = gw.http(
        "GET",
        &format!("http://127.0.0.1:{}/api/alarms/{id}", gw.http_port),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).expect("json");
    let events: Vec<(u64, String, String)> = h["history"]
        .as_array()
        .expect("history")
        .iter()
        .rev()
        .map(|e| {
            (
                e["sequence"].as_u64().expect("seq"),
                e["action"].as_str().unwrap_or("").to_owned(),
                e["by"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            (1, "raised".into(), "".into()),
            (2, "acknowledged".into(), "amina".into()),
            (3, "reset".into(), "amina".into()),
        ]
    );
}

/// No good reading for stale_s: the stale alarm is raised and the rule reading that quantity
/// is suppressed (it neither clears nor fires on the old value); a fresh reading brings both
/// back.
#[test]
fn stale_data_is_caught_and_suppresses_its_dependants() {
    let rules = "[[alarms.rule]]\nname = \"digester_overpressure\"\nseverity = \"alarm\"\nquantity = \"digester.pressure\"\nabove = 53.0\ndeadband = 3.0\nstale_s = 2\n";
    let gw = Gateway::start(&config(rules), &["KS-1"]);
    publish(&gw, "digester/pressure", 60.0);
    wait_until("overpressure raised", Duration::from_secs(10), || {
        active(&gw, "digester_overpressure:digester-1").is_some()
    });
    wait_until(
        "stale raised, overpressure suppressed",
        Duration::from_secs(10),
        || {
            active(&gw, "stale.digester.pressure:digester-1").is_some()
                && active(&gw, "digester_overpressure:digester-1").is_some_and(|a| {
                    a["suppressed"] == true && a["state"] == "active_unacknowledged"
                })
        },
    );
    publish(&gw, "digester/pressure", 40.0);
    wait_until("fresh again: both clear", Duration::from_secs(10), || {
        let over = active(&gw, "digester_overpressure:digester-1");
        let stale = active(&gw, "stale.digester.pressure:digester-1");
        over.is_some_and(|a| a["state"] == "cleared_unacknowledged" && a["suppressed"] == false)
            && stale.is_some_and(|a| a["state"] == "cleared_unacknowledged")
    });
    assert!(gw.metric("gkgw_alarm_transitions_total") >= 6.0);
}

/// Makes files immutable (even to root) while it lives: the store "read-only" mid-run.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(paths: Vec<std::path::PathBuf>) -> Immutable {
        for p in &paths {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .expect("chattr runs")
                .success();
            assert!(ok, "chattr +i {} (needs root on ext4)", p.display());
        }
        Immutable(paths)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

/// The store's files and directory made read-only under a running gateway: the alarm still
/// fires and is published; its event waits in memory and is saved once the store takes writes
/// again.
#[test]
fn the_alarm_fires_with_the_store_read_only() {
    let (gw, pw) = start(METHANE);
    let watch = Watcher::start(&gw, &pw);
    let dir = gw.dir.path().to_path_buf();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("state dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("store.db"))
        })
        .collect();
    files.push(dir.clone());
    let guard = Immutable::set(files);
    publish(&gw, "kitchen/ch4", 30.0);
    let raised = watch.wait_for("kitchen_methane_20_lel", "raised");
    assert_eq!(raised["value"], 30.0);
    wait_until("the save failed", Duration::from_secs(20), || {
        gw.metric("gkgw_alarm_save_errors_total") >= 1.0
    });
    assert_eq!(gw.metric("gkgw_alarm_events_unsaved"), 1.0);
    drop(guard);
    wait_until(
        "saved once the store is writable",
        Duration::from_secs(20),
        || {
            gw.metric("gkgw_alarm_events_unsaved") == 0.0
                && alarms(&gw)["recent"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|e| e["action"] == "raised"))
        },
    );
}

/// A FOS/TAC lab result entered in the logbook raises `fos_tac_high` at instance `lab` (a
/// manual value, never stale); its withdrawal brings the previous result back, which clears
/// it. Every transition reaches InfluxDB as measurement `alarm`, with its sequence number.
#[test]
fn lab_results_from_the_logbook_raise_alarms_that_reach_influxdb() {
    let influx = Influx1::start();
    let rules = format!(
        "[[alarms.rule]]\nname = \"fos_tac_high\"\nseverity = \"warning\"\nquantity = \"digester.fos_tac\"\nabove = 0.4\nstale_s = 0\n\
         [influx]\nenabled = true\nurl = \"{}\"\nversion = 1\ndatabase = \"gkgw\"\nflush_interval_ms = 200\nmin_backoff_ms = 100\nmax_backoff_ms = 1000\n",
        influx.url()
    );
    let (gw, _) = start(&rules);
    let url = format!("http://127.0.0.1:{}/api/logbook", gw.http_port);
    let entry = |ratio: f64, minutes_ago: i64| {
        let at = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
        let body = format!(
            r#"{{"kind":"lab_fos_tac","ratio":{ratio},"at":"{}"}}"#,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let (code, text) = gw.http("POST", &url, Some(&body));
        assert_eq!(code, 201, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).expect("json")["entry"]
            .as_i64()
            .expect("entry id")
    };
    entry(0.3, 60);
    let id = "fos_tac_high:lab";
    let high = entry(0.45, 5);
    wait_until("fos_tac_high raised", Duration::from_secs(10), || {
        active(&gw, id).is_some_and(|a| a["state"] == "active_unacknowledged" && a["value"] == 0.45)
    });
    let (code, text) = gw.http(
        "POST",
        &format!("{url}/{high}/withdraw"),
        Some(r#"{"reason":"sample mixed up"}"#),
    );
    assert_eq!(code, 201, "{text}");
    wait_until(
        "cleared on the previous result",
        Duration::from_secs(10),
        || active(&gw, id).is_some_and(|a| a["state"] == "cleared_unacknowledged"),
    );
    wait_until(
        "both transitions in InfluxDB",
        Duration::from_secs(20),
        || {
            influx
                .rows("SELECT action, seq, value FROM alarm WHERE rule = 'fos_tac_high'")
                .len()
                == 2
        },
    );
    let rows = influx.rows("SELECT action, seq, value, instance, severity FROM alarm");
    assert_eq!(rows[0][1], "raised");
    assert_eq!(rows[0][2], 1);
    assert_eq!(rows[0][3], 0.45);
    assert_eq!(rows[0][4], "lab");
    assert_eq!(rows[0][5], "warning");
    assert_eq!(rows[1][1], "cleared");
    assert_eq!(rows[1][2], 2);
}
