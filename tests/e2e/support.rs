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

/// Blocking HTTP through curl (installed with the peers), with no credentials: (status, body).
pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    http_with(method, url, body, &[])
}

/// [`http`] with a bearer token (`gkgw user token`).
pub fn http_as(token: &str, method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    http_with(
        method,
        url,
        body,
        &[format!("Authorization: Bearer {token}")],
    )
}

/// [`http`] with extra request headers (`Name: value`).
pub fn http_with(method: &str, url: &str, body: Option<&str>, headers: &[String]) -> (u16, String) {
    let mut c = Command::new(require("curl"));
    for h in headers {
        c.arg("-H").arg(h);
    }
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
    /// A bearer token of the admin `test-admin`, made before the gateway starts.
    pub token: String,
}

impl Gateway {
    /// `extra` is appended to a config that sets the state dir, ports and credentials file
    /// (an `extra` starting with `[http]` adds keys to its `[http]` table); each of `meters` gets credentials (`gkgw meter add`) before the gateway starts.
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

    /// [`Gateway::configure_only`] with run options (the log level) for a later `restart`.
    pub fn configure_with(extra: &str, meters: &[&str], opts: RunOpts) -> Gateway {
        Gateway::configure(extra, "", "", meters, opts)
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
        // The base ends in its [http] table: an extra that starts with [http] adds to it.
        let extra = extra.strip_prefix("[http]\n").unwrap_or(extra);
        std::fs::write(&config, format!("{base}{extra}")).expect("write config");
        let mut g = Gateway {
            opts,
            proc: None,
            passwords: Default::default(),
            dir,
            mqtt_port,
            http_port,
            config,
            token: String::new(),
        };
        g.token = g.add_user("test-admin", "admin", "test-admin-password");
        for m in meters {
            let pw = g.add_meter(m);
            g.passwords.insert((*m).to_owned(), pw);
        }
        g
    }

    /// `gkgw user add NAME --role ROLE` (the password on stdin) and `gkgw user token NAME`;
    /// returns the token.
    pub fn add_user(&self, name: &str, role: &str, password: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(GKGW)
            .args(["user", "add", name, "--role", role, "--config"])
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gkgw user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("password");
        let out = child.wait_with_output().expect("gkgw user add");
        assert!(
            out.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(GKGW)
            .args(["user", "token", name, "--config"])
            .arg(&self.config)
            .output()
            .expect("gkgw user token");
        assert!(
            out.status.success(),
            "user token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `http://127.0.0.1:{http_port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// [`http`] as the admin `test-admin` (its bearer token).
    pub fn http(&self, method: &str, url: &str, body: Option<&str>) -> (u16, String) {
        http_as(&self.token, method, url, body)
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
        let (code, body) = self.http(
            "GET",
            &format!("http://127.0.0.1:{}/api/status", self.http_port),
            None,
        );
        assert_eq!(code, 200, "status: {body}");
        serde_json::from_str(&body).expect("status json")
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http(
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

/// One HTTP answer: status, headers (names lowercase) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A browser as far as the gateway can tell: a cookie jar (curl's), the login form, the
/// session's CSRF token.
pub struct Browser {
    pub base: String,
    dir: tempfile::TempDir,
    /// The local address to connect from (another loopback address is another client).
    pub from: Option<String>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            base: base.trim_end_matches('/').to_owned(),
            dir: tempfile::tempdir().expect("tempdir"),
            from: None,
        }
    }

    /// A browser on another client address (`127.0.0.2`: Linux routes all of 127/8 to lo).
    pub fn from_address(base: &str, address: &str) -> Browser {
        Browser {
            from: Some(address.to_owned()),
            ..Browser::new(base)
        }
    }

    /// `method path` with the jar's cookies; `form`: an urlencoded body; `headers`: `Name: value`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        headers: &[String],
    ) -> Answer {
        let jar = self.dir.path().join("cookies");
        let head = self.dir.path().join("headers");
        let mut c = Command::new(require("curl"));
        c.args(["-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}"]);
        if method == "HEAD" {
            // -X HEAD would wait for a body that never comes.
            c.arg("-I");
        } else {
            c.args(["-X", method]);
        }
        c.arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg("-D")
            .arg(&head);
        if let Some(a) = &self.from {
            c.args(["--interface", a]);
        }
        for h in headers {
            c.arg("-H").arg(h);
        }
        if let Some((content_type, b)) = body {
            c.arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .args(["--data-binary", b]);
        }
        c.arg(format!("{}{path}", self.base));
        let out = c.output().expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let headers = std::fs::read_to_string(&head)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            status: code.trim().parse().unwrap_or(0),
            headers,
            body: body.to_owned(),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, &[])
    }

    /// Posts an urlencoded form (values are encoded here).
    pub fn form(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect();
        self.request(
            "POST",
            path,
            Some(("application/x-www-form-urlencoded", &body.join("&"))),
            &[],
        )
    }

    /// Opens the login form and signs in with it; returns the answer to the POST (303 and a
    /// session cookie when the password is right).
    pub fn login(&self, user: &str, password: &str) -> Answer {
        let form = self.get("/login");
        assert_eq!(form.status, 200, "the login form: {}", form.body);
        let csrf = hidden(&form.body, "csrf").expect("the form's csrf field");
        self.form(
            "/login",
            &[
                ("user", user),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/"),
            ],
        )
    }

    /// The session cookie's value in the jar (to replay it by hand after the jar dropped it).
    pub fn session_cookie(&self) -> Option<String> {
        let jar = std::fs::read_to_string(self.dir.path().join("cookies")).ok()?;
        jar.lines().find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 7 && f[5] == "gkgw_session").then(|| f[6].to_owned())
        })
    }

    /// The session's CSRF token (`GET /api/session`).
    pub fn csrf(&self) -> String {
        let a = self.get("/api/session");
        assert_eq!(a.status, 200, "session: {}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).expect("json");
        v["csrf"]
            .as_str()
            .expect("a session has a csrf token")
            .to_owned()
    }
}

/// The value of the hidden input `name` in a page.
pub fn hidden(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name={name} value=\""))?;
    let rest = &page[at + name.len() + 13..];
    Some(rest[..rest.find('"')?].to_owned())
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A site CA and a server certificate for 127.0.0.1 signed by it (openssl, P-256), in `dir`:
/// returns (ca.pem, server.pem, server.key), all readable by Mosquitto's own user; also
/// client.pem and client.key, a client certificate (CN=GA-0001) from the same CA.
pub fn tls_files(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let openssl = require("openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gkgw test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    // A client certificate from the same CA (for a listener that requires one).
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=GA-0001",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
        "-extfile",
        "client.cnf",
    ]);
    for f in [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}
