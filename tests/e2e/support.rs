//! Real peers for the black-box tests: InfluxDB 1.6.7, VictoriaMetrics, mosquitto clients and
//! paho-mqtt, each started on a free loopback port with its data in a temporary directory and
//! killed when dropped. `tests/peers/install.sh` installs them; a missing one fails the test
//! with a message saying so.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const GKGW: &str = env!("CARGO_BIN_EXE_gkgw");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A fixed timestamp base (Unix seconds) for meter messages with their own `ts`: midnight UTC
/// three days ago, so it is always inside what the gateway accepts (after its build-date floor,
/// not in the future) and equal for every call in a run.
pub fn ts_base() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    (now / 86_400 - 3) * 86_400
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn require(bin: &str) -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"] {
        let p = format!("{dir}/{bin}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{bin} is not installed: run `bash tests/peers/install.sh` (as root) first");
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for exit; `None` if still running after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Blocking HTTP through curl (installed with the peers): (status, body).
pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let mut c = Command::new(require("curl"));
    c.args([
        "-s",
        "-m",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        url,
    ]);
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

pub struct Influx1 {
    pub proc: Option<Proc>,
    pub port: u16,
    rpc_port: u16,
    pub dir: tempfile::TempDir,
}

impl Influx1 {
    pub fn start() -> Influx1 {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let rpc_port = free_port();
        let mut i = Influx1 {
            proc: None,
            port,
            rpc_port,
            dir,
        };
        i.restart();
        let (code, body) = http(
            "POST",
            &format!("{}/query?q=CREATE%20DATABASE%20gkgw", i.url()),
            None,
        );
        assert_eq!(code, 200, "create database: {body}");
        i
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        self.proc.take();
    }

    pub fn restart(&mut self) {
        let template =
            std::fs::read_to_string(repo_root().join("tests/peers/influxdb.conf.template"))
                .expect("template");
        let conf = template
            .replace("@DIR@", &self.dir.path().display().to_string())
            .replace("@HTTP_PORT@", &self.port.to_string())
            .replace("@RPC_PORT@", &self.rpc_port.to_string());
        let conf_path = self.dir.path().join("influxdb.conf");
        std::fs::write(&conf_path, conf).expect("write conf");
        let log = std::fs::File::create(self.dir.path().join("influxd.log")).expect("log");
        self.proc = Some(Proc::spawn(
            "influxd",
            Command::new(require("influxd"))
                .arg("-config")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(log),
        ));
        let ping = format!("{}/ping", self.url());
        wait_until("influxd /ping", Duration::from_secs(30), || {
            http("GET", &ping, None).0 == 204
        });
    }

    /// Runs an InfluxQL query against database gkgw; returns the JSON.
    pub fn query(&self, q: &str) -> serde_json::Value {
        self.query_with(q, &[])
    }

    /// [`Influx1::query`] with extra form parameters (e.g. `epoch=ns`).
    fn query_with(&self, q: &str, extra: &[&str]) -> serde_json::Value {
        let url = format!("{}/query", self.url());
        let mut args = vec![
            "-s",
            "-m",
            "20",
            "-G",
            url.as_str(),
            "--data-urlencode",
            "db=gkgw",
        ];
        for e in extra {
            args.extend(["--data-urlencode", e]);
        }
        let q_arg = format!("q={q}");
        args.extend(["--data-urlencode", q_arg.as_str()]);
        let out = Command::new(require("curl"))
            .args(&args)
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("query {q}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// `SELECT count(field) FROM m`, 0 when there is no such series.
    pub fn count(&self, measurement: &str, field: &str) -> u64 {
        let v = self.query(&format!("SELECT count(\"{field}\") FROM \"{measurement}\""));
        v["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0)
    }

    /// Rows of `SELECT <cols> FROM m WHERE device = 'd'`, as JSON arrays (time first).
    /// Like [`Influx1::rows`] with the time as integer nanoseconds.
    pub fn rows_ns(&self, q: &str) -> Vec<Vec<serde_json::Value>> {
        values(&self.query_with(q, &["epoch=ns"]))
    }

    pub fn rows(&self, q: &str) -> Vec<Vec<serde_json::Value>> {
        values(&self.query(q))
    }
}

/// The rows of the first series of an InfluxQL answer.
fn values(v: &serde_json::Value) -> Vec<Vec<serde_json::Value>> {
    v["results"][0]["series"][0]["values"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

pub struct Victoria {
    pub proc: Proc,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Victoria {
    pub fn start() -> Victoria {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let proc = Proc::spawn(
            "victoria-metrics",
            Command::new(require("victoria-metrics"))
                .arg(format!("-storageDataPath={}", dir.path().display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg("-search.latencyOffset=0s")
                .arg("-retentionPeriod=100y")
                .arg("-loggerLevel=ERROR")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let v = Victoria { proc, port, dir };
        let health = format!("{}/health", v.url());
        wait_until("victoria-metrics /health", Duration::from_secs(30), || {
            http("GET", &health, None).0 == 200
        });
        v
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stores one scrape (Prometheus text exposition), as a Prometheus server scraping it would.
    pub fn import_prometheus(&self, text: &str) {
        let out = Command::new(require("curl"))
            .args(["-s", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{}/api/v1/import/prometheus", self.url()))
            .args(["--data-binary", "@-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
                c.wait_with_output()
            })
            .expect("curl");
        let code = String::from_utf8_lossy(&out.stdout);
        assert_eq!(code, "204", "import into victoria-metrics");
        http("GET", &format!("{}/internal/force_flush", self.url()), None);
    }

    /// A PromQL instant query at the current time; returns the JSON answer.
    pub fn query(&self, q: &str) -> serde_json::Value {
        let out = Command::new(require("curl"))
            .args(["-s", "-m", "20", "-G"])
            .arg(format!("{}/api/v1/query", self.url()))
            .args(["--data-urlencode", &format!("query={q}")])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("query {q}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Every sample of `metric` as exported lines (JSON lines of /api/v1/export).
    pub fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        http("GET", &format!("{}/internal/force_flush", self.url()), None);
        let out = Command::new(require("curl"))
            .args([
                "-s",
                "-m",
                "20",
                "-G",
                &format!("{}/api/v1/export", self.url()),
                "--data-urlencode",
                &format!("match[]={selector}"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// How a test's gateway process is started.
#[derive(Clone)]
pub struct RunOpts {
    pub rust_log: String,
    /// Hard and soft RLIMIT_NOFILE of the process.
    pub nofile: Option<u64>,
}

impl Default for RunOpts {
    fn default() -> RunOpts {
        RunOpts {
            rust_log: "info".into(),
            nofile: None,
        }
    }
}

/// A running `gkgw run` with its own config, state directory and ports.
pub struct Gateway {
    pub opts: RunOpts,
    pub proc: Option<Proc>,
    pub passwords: std::collections::HashMap<String, String>,
    pub dir: tempfile::TempDir,
    pub mqtt_port: u16,
    pub http_port: u16,
    pub config: PathBuf,
}

impl Gateway {
    /// `extra` is appended to a config that sets the state dir, ports and credentials file;
    /// each of `meters` gets credentials (`gkgw meter add`) before the gateway starts.
    pub fn start(extra: &str, meters: &[&str]) -> Gateway {
        Gateway::start_with(extra, meters, RunOpts::default())
    }

    pub fn start_with(extra: &str, meters: &[&str], opts: RunOpts) -> Gateway {
        Gateway::build(extra, "", "", meters, opts)
    }

    /// With extra keys in the base config's `[store]` and `[broker]` tables.
    pub fn start_with_config(store: &str, broker: &str, meters: &[&str]) -> Gateway {
        Gateway::build("", store, broker, meters, RunOpts::default())
    }

    fn build(extra: &str, store: &str, broker: &str, meters: &[&str], opts: RunOpts) -> Gateway {
        let mut g = Gateway::configure(extra, store, broker, meters, opts);
        g.restart();
        g
    }

    /// The config, state directory and meter credentials of [`Gateway::start`], without
    /// starting the binary: for tests that run `gkgw::topology::start_with` in-process.
    pub fn configure_only(extra: &str, meters: &[&str]) -> Gateway {
        Gateway::configure(extra, "", "", meters, RunOpts::default())
    }

    fn configure(
        extra: &str,
        store: &str,
        broker: &str,
        meters: &[&str],
        opts: RunOpts,
    ) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let mqtt_port = free_port();
        let http_port = free_port();
        let config = dir.path().join("gateway.toml");
        let base = format!(
            "[site]\nid = \"test-site\"\n[store]\nstate_dir = \"{state}\"\n{commit}{store}[broker]\nlisten = \"127.0.0.1:{mqtt_port}\"\ncredentials_file = \"{state}/meters.toml\"\n{broker}[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
            state = dir.path().display(),
            commit = if store.contains("commit_interval_ms") {
                ""
            } else {
                "commit_interval_ms = 100\n"
            }
        );
        std::fs::write(&config, format!("{base}{extra}")).expect("write config");
        let mut g = Gateway {
            opts,
            proc: None,
            passwords: Default::default(),
            dir,
            mqtt_port,
            http_port,
            config,
        };
        for m in meters {
            let pw = g.add_meter(m);
            g.passwords.insert((*m).to_owned(), pw);
        }
        g
    }

    pub fn add_meter(&self, id: &str) -> String {
        let out = Command::new(GKGW)
            .args(["meter", "add", id, "--config"])
            .arg(&self.config)
            .output()
            .expect("gkgw meter add");
        assert!(
            out.status.success(),
            "meter add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find_map(|l| l.strip_prefix("mqtt password: "))
            .expect("password printed")
            .to_owned()
    }

    /// `gkgw integration add NAME`; returns the password.
    pub fn add_integration(&self, name: &str) -> String {
        let out = Command::new(GKGW)
            .args(["integration", "add", name, "--config"])
            .arg(&self.config)
            .output()
            .expect("gkgw integration add");
        assert!(
            out.status.success(),
            "integration add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("mqtt password: "))
            .expect("password printed")
            .to_owned()
    }

    /// Waits until the gateway has reloaded its accounts once more than `before` times
    /// (count them with [`Gateway::reloads`] before changing the file).
    pub fn wait_reloaded(&self, before: usize) {
        let until = Instant::now() + Duration::from_secs(15);
        while self.reloads() <= before {
            assert!(
                Instant::now() < until,
                "no reload of the accounts after {before}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn reloads(&self) -> usize {
        self.log().matches("broker accounts reloaded").count()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gkgw.log")
    }

    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let mut cmd = Command::new(GKGW);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.opts.rust_log)
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = self.opts.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        self.proc = Some(Proc::spawn("gkgw", &mut cmd));
        let url = format!("http://127.0.0.1:{}/healthz", self.http_port);
        wait_until("gkgw /healthz", Duration::from_secs(30), || {
            http("GET", &url, None).0 == 200
        });
    }

    /// The HTTP status of `/healthz`.
    pub fn healthz(&self) -> u16 {
        http(
            "GET",
            &format!("http://127.0.0.1:{}/healthz", self.http_port),
            None,
        )
        .0
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gkgw.log")).unwrap_or_default()
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http(
            "GET",
            &format!("http://127.0.0.1:{}/api/status", self.http_port),
            None,
        );
        assert_eq!(code, 200, "status: {body}");
        serde_json::from_str(&body).expect("status json")
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = http(
            "GET",
            &format!("http://127.0.0.1:{}/metrics", self.http_port),
            None,
        );
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("metric {name} not found in:\n{body}"))
    }

    /// Waits until the influx consumer has nothing left to send.
    pub fn wait_drained(&self, timeout: Duration) {
        wait_until("the influx backlog to drain", timeout, || {
            let s = self.status();
            s["consumers"].as_array().is_some_and(|c| {
                c.iter()
                    .filter(|c| c["name"] == "influx")
                    .all(|c| c["backlog"] == 0)
            })
        });
    }
}

/// Runs tests/peers/meter.py (paho-mqtt) to completion; returns its JSON summary and exit code.
pub fn paho(args: &[&str]) -> (serde_json::Value, i32) {
    let out = paho_cmd(args).output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    if v.is_null() {
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("No module named"),
            "paho-mqtt is missing: run `bash tests/peers/install.sh`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (v, out.status.code().unwrap_or(-1))
}

pub fn paho_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg(repo_root().join("tests/peers/meter.py")).args(args);
    c
}

impl Gateway {
    /// meter.py arguments that log in as `meter`.
    pub fn paho_args(&self, meter: &str) -> Vec<String> {
        vec![
            "--port".into(),
            self.mqtt_port.to_string(),
            "--user".into(),
            meter.into(),
            "--password".into(),
            self.passwords[meter].clone(),
        ]
    }
}

/// `mosquitto_pub` with a single message; returns whether it exited 0.
pub fn mosquitto_pub(
    port: u16,
    user: Option<(&str, &str)>,
    topic: &str,
    qos: u8,
    payload: &str,
) -> bool {
    let mut c = Command::new(require("mosquitto_pub"));
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        topic,
        "-q",
        &qos.to_string(),
        "-m",
        payload,
        "-V",
        "mqttv311",
    ]);
    if let Some((u, p)) = user {
        c.args(["-u", u, "-P", p, "-i", u]);
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub")
        .success()
}

/// Runs tests/peers/mqtt_raw.py (raw MQTT packets); returns its JSON line.
pub fn mqtt_raw(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(repo_root().join("tests/peers/mqtt_raw.py"))
        .args(["--port", &port.to_string()])
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "mqtt_raw.py {args:?}: no result: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Resident and peak resident memory of a process in KiB (VmRSS, VmHWM).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
