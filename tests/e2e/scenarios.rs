//! The demo plant's fault scenarios through the whole pipeline: the simulated plant (Modbus)
//! and the simulated GPIO gas meter → the default rules (time-scaled like the demo plant) →
//! `alarms/{rule}` on the broker and the simulated buzzer and beacon → an operator's
//! acknowledgement → the alarm clearing when the scenario is over. `gkgw demo --scenario X`,
//! as a person would watch it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;

struct Demo {
    _proc: Proc,
    _dir: tempfile::TempDir,
    _watch: Proc,
    http: u16,
    messages: mpsc::Receiver<(String, serde_json::Value)>,
    seen: Vec<(String, serde_json::Value)>,
}

impl Demo {
    fn start(scenario: &str) -> Demo {
        let (http_port, mqtt) = (free_port(), free_port());
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("demo.log")).expect("log");
        let proc = Proc::spawn(
            "gkgw demo",
            Command::new(GKGW)
                .args([
                    "demo",
                    "--meters",
                    "0",
                    "--no-faults",
                    "--scenario",
                    scenario,
                ])
                .args(["--http", &format!("127.0.0.1:{http_port}")])
                .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
                .arg("--state-dir")
                .arg(dir.path())
                .env("RUST_LOG", "info")
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
        // The demo lets anonymous loopback clients in read-only: alarms/# as a person would.
        let mut watch = Proc::spawn(
            "mosquitto_sub",
            Command::new(require("mosquitto_sub"))
                .args(["-h", "127.0.0.1", "-p", &mqtt.to_string(), "-V", "mqttv311"])
                .args(["-t", "alarms/#", "-v"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let out = watch.child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((t, j)) = line.split_once(' ') {
                    if let Ok(v) = serde_json::from_str(j) {
                        let _ = tx.send((t.to_owned(), v));
                    }
                }
            }
        });
        Demo {
            _proc: proc,
            _dir: dir,
            _watch: watch,
            http: http_port,
            messages: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for `alarms/{rule}` with `action`, returns its message.
    fn wait_for(&mut self, rule: &str, action: &str, within: Duration) -> serde_json::Value {
        let topic = format!("alarms/{rule}");
        let until = std::time::Instant::now() + within;
        loop {
            if let Some((_, m)) = self
                .seen
                .iter()
                .find(|(t, m)| *t == topic && m["action"] == action)
            {
                return m.clone();
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "no {topic} {action} within {within:?}; seen: {:?}",
                self.seen
            );
            if let Ok(m) = self.messages.recv_timeout(left.min(Duration::from_secs(1))) {
                self.seen.push(m);
            }
        }
    }

    /// The demo's token for its `role` login.
    fn token(&self, role: &str) -> String {
        std::fs::read_to_string(self._dir.path().join(format!("demo-{role}.token")))
            .expect("the demo's token")
            .trim()
            .to_owned()
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = http_as(
            &self.token("viewer"),
            "GET",
            &format!("http://127.0.0.1:{}/api/status", self.http),
            None,
        );
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("json")
    }

    /// The output's demanded state (what the alarms ask of it).
    fn output(&self, name: &str) -> bool {
        self.status()["gpio"]
            .as_array()
            .expect("gpio")
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no output {name}"))["demanded"]
            .as_bool()
            .expect("bool")
    }

    fn ack(&self, id: &str) {
        let (code, body) = http_as(
            &self.token("manager"),
            "POST",
            &format!("http://127.0.0.1:{}/api/alarms/{id}/ack", self.http),
            Some(r#"{"note":"seen"}"#),
        );
        assert_eq!(code, 200, "{body}");
    }
}

/// A leak: pressure falls while no gas passes the outlet meter (GPIO pulses) → `leak`
/// (severity alarm) on MQTT, the buzzer and the beacon on; acknowledged → the buzzer stops, the
/// beacon stays until the alarm clears.
#[test]
fn the_leak_scenario_raises_sounds_is_acknowledged_and_clears() {
    let mut d = Demo::start("leak");
    let raised = d.wait_for("leak", "raised", Duration::from_secs(150));
    assert_eq!(raised["instance"], "digester-1");
    assert_eq!(raised["severity"], "alarm");
    assert!(raised["value"].as_f64().expect("rate") < 0.0, "{raised}");
    wait_until("buzzer and beacon on", Duration::from_secs(10), || {
        d.output("buzzer") && d.output("beacon")
    });
    d.ack("leak:digester-1");
    d.wait_for("leak", "acknowledged", Duration::from_secs(10));
    wait_until(
        "buzzer off after the acknowledgement",
        Duration::from_secs(10),
        || !d.output("buzzer"),
    );
    d.wait_for("leak", "cleared", Duration::from_secs(240));
    wait_until("beacon off once cleared", Duration::from_secs(10), || {
        !d.output("beacon")
    });
}

/// Souring: CH4 and pH fall → two warnings (no buzzer: it is for alarms), the beacon on.
#[test]
fn the_souring_scenario_raises_its_warnings() {
    let mut d = Demo::start("souring");
    let ch4 = d.wait_for("biogas_ch4_low", "raised", Duration::from_secs(150));
    assert_eq!(ch4["severity"], "warning");
    assert!(ch4["value"].as_f64().expect("ch4") < 50.0);
    let ph = d.wait_for("ph_low", "raised", Duration::from_secs(60));
    assert!(ph["value"].as_f64().expect("ph") < 6.8);
    assert!(d.output("beacon"));
    assert!(!d.output("buzzer"), "warnings do not sound the buzzer");
}

/// Overpressure: the compressor locks out with the kitchen closed → the holder fills past
/// 53 mbar → `digester_overpressure`; it clears when the compressor runs again.
#[test]
fn the_overpressure_scenario_raises_and_clears() {
    let mut d = Demo::start("overpressure");
    let over = d.wait_for("digester_overpressure", "raised", Duration::from_secs(180));
    assert!(over["value"].as_f64().expect("mbar") > 53.0);
    assert!(d.output("buzzer"));
    d.wait_for("digester_overpressure", "cleared", Duration::from_secs(300));
}
