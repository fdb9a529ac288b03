//! Modbus against a real peer: `tests/peers/modbus_device.py` (see tests/peers/MODBUS.md) served
//! over TCP and over RTU on a socat pseudo-terminal pair. The device encodes the values the test
//! gives it with Python's `struct`, independently of the gateway's decoder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// A socat pty pair: the gateway opens `gw`, the device `dev`. Both are symlinks to /dev/pts/N;
/// when socat is killed they dangle (SIGKILL) or go (SIGTERM), and an open descriptor on the old
/// pty is dead for good, like a USB adapter unplugged. A new socat recreates the same paths.
struct PtyPair {
    proc: Proc,
    gw: PathBuf,
    dev: PathBuf,
}

impl PtyPair {
    fn start(dir: &Path) -> PtyPair {
        let (gw, dev) = (dir.join("ttyGW"), dir.join("ttyDEV"));
        let proc = Proc::spawn(
            "socat",
            Command::new(require("socat"))
                .arg(format!("pty,raw,echo=0,link={}", gw.display()))
                .arg(format!("pty,raw,echo=0,link={}", dev.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_until("socat's pty links", Duration::from_secs(10), || {
            gw.exists() && dev.exists()
        });
        PtyPair { proc, gw, dev }
    }
}

/// The simulated device, serving `spec` (the JSON of MODBUS.md) until dropped.
struct Device {
    _proc: Proc,
    _spec: tempfile::NamedTempFile,
}

impl Device {
    fn start(spec: &serde_json::Value, serve: &[&str]) -> Device {
        Device::start_logged(spec, serve, None)
    }

    /// With `frames`, every frame the device receives and sends is logged to that file
    /// (`-v`: `<- unit N ...` for a request, `-> unit N ...` for a reply).
    fn start_logged(spec: &serde_json::Value, serve: &[&str], frames: Option<&Path>) -> Device {
        use std::io::{BufRead, BufReader, Write};
        let mut file = tempfile::NamedTempFile::new().expect("spec file");
        file.write_all(spec.to_string().as_bytes())
            .expect("write spec");
        let script = repo_root().join("tests/peers/modbus_device.py");
        let mut proc = Proc::spawn(
            "modbus_device.py",
            Command::new("python3")
                .arg(&script)
                .arg("--spec")
                .arg(file.path())
                .args(serve)
                .args(frames.map(|_| "-v"))
                .stdout(Stdio::piped())
                .stderr(match frames {
                    Some(f) => Stdio::from(std::fs::File::create(f).expect("frame log")),
                    None => Stdio::inherit(),
                }),
        );
        let out = proc.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.trim() == "READY" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("modbus_device.py did not become ready; is pymodbus installed? run `bash tests/peers/install.sh`");
        }
        Device {
            _proc: proc,
            _spec: file,
        }
    }

    fn tcp(spec: &serde_json::Value) -> (Device, u16) {
        let port = free_port();
        (
            Device::start(spec, &["--tcp", &format!("127.0.0.1:{port}")]),
            port,
        )
    }

    fn serial(spec: &serde_json::Value, pty: &PtyPair) -> Device {
        Device::start(
            spec,
            &[
                "--serial",
                &pty.dev.display().to_string(),
                "--baud",
                "19200",
            ],
        )
    }
}

fn gkgw(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(GKGW).args(args).output().expect("gkgw runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `name -> value text` from `gkgw modbus poll` output (name, quantity, value, unit, quality).
fn polled(out: &str) -> std::collections::HashMap<String, (String, String)> {
    out.lines()
        .skip(2)
        .filter(|l| !l.starts_with('('))
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.len() >= 4).then(|| {
                (
                    t[0].to_owned(),
                    (t[2].to_owned(), t[t.len() - 1].to_owned()),
                )
            })
        })
        .collect()
}

const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];

/// The device spec's typed values, the profile that reads them, and the numbers and texts a
/// poll must show.
type Layout = (
    Vec<serde_json::Value>,
    String,
    Vec<(String, f64)>,
    Vec<(String, String)>,
);

/// One field per (type, order): the device spec values and the profile that reads them.
fn every_type_and_order() -> Layout {
    let numbers: [(&str, u16, f64); 8] = [
        ("u16", 1, 51234.0),
        ("i16", 1, -12345.0),
        ("u32", 2, 3_000_000_123.0),
        ("i32", 2, -2_000_000_123.0),
        ("u64", 4, 9_007_199_254_740_989.0),
        ("i64", 4, -9_007_199_254_740_989.0),
        ("f32", 2, -1234.56),
        ("f64", 4, 12345.6789012),
    ];
    let mut values = Vec::new();
    let mut profile =
        String::from("[device]\nmodel = \"test device\"\nmanufacturer = \"test\"\nmax_gap = 8\n");
    let (mut expect_num, mut expect_text) = (Vec::new(), Vec::new());
    let mut address = 0u16;
    for (ty, width, value) in numbers {
        for order in ORDERS {
            let name = format!("{ty}_{}", order.to_lowercase());
            let v = if ty.starts_with('f') {
                json!(value)
            } else {
                json!(value as i64)
            };
            values.push(json!({"table": "holding", "address": address, "type": ty, "order": order, "value": v}));
            let _ = write!(profile, "[[field]]\nname = \"{name}\"\nquantity = \"t.{name}\"\nkind = \"holding\"\naddress = {address}\ntype = \"{ty}\"\nword_order = \"{order}\"\n");
            expect_num.push((name, value));
            address += width + 1; // one unused register between fields: merged across
        }
    }
    for order in ORDERS {
        let name = format!("text_{}", order.to_lowercase());
        values.push(json!({"table": "input", "address": address, "type": "string", "order": order, "value": "GK-42x", "count": 4}));
        let _ = write!(profile, "[[field]]\nname = \"{name}\"\nquantity = \"t.{name}\"\nkind = \"input\"\naddress = {address}\ntype = \"string\"\nlength = 4\nword_order = \"{order}\"\n");
        expect_text.push((name, "GK-42x".to_owned()));
        address += 4;
    }
    // A bit inside a register and a coil.
    let _ = write!(profile, "[[field]]\nname = \"flag\"\nquantity = \"t.flag\"\nkind = \"holding\"\naddress = 900\ntype = \"bit\"\nbit = 5\n");
    // A scaled integer (116 × 0.1) and an implausible value.
    let _ = write!(profile, "[[field]]\nname = \"tenths\"\nquantity = \"t.tenths\"\nkind = \"holding\"\naddress = 901\ntype = \"i16\"\nscale = 0.1\n");
    let _ = write!(profile, "[[field]]\nname = \"too_hot\"\nquantity = \"t.too_hot\"\nkind = \"holding\"\naddress = 902\ntype = \"u16\"\nmax = 100\n");
    expect_num.push(("tenths".into(), 11.6));
    let _ = write!(profile, "[[field]]\nname = \"relay\"\nquantity = \"t.relay\"\nkind = \"coil\"\naddress = 7\ntype = \"bool\"\n");
    expect_text.push(("flag".into(), "true".into()));
    expect_text.push(("relay".into(), "true".into()));
    (values, profile, expect_num, expect_text)
}

/// Numbers are compared as text: the device was given -1234.56 as an f32 and 116 with scale
/// 0.1, so the poll must say "-1234.56" and "11.6", not the float32's binary expansion or the
/// product's rounding noise.
fn check_poll(out: &str, nums: &[(String, f64)], texts: &[(String, String)]) {
    let got = polled(out);
    for (name, want) in nums {
        let (v, q) = got
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in:\n{out}"));
        assert_eq!(v, &want.to_string(), "{name}\n{out}");
        assert_eq!(q, "good", "{name}\n{out}");
    }
    for (name, want) in texts {
        let (v, _) = got
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in:\n{out}"));
        assert_eq!(v, want, "{name}\n{out}");
    }
    let too_hot = got.get("too_hot").map(|(v, q)| (v.as_str(), q.as_str()));
    assert_eq!(too_hot, Some(("500", "out_of_range")), "{out}");
}

#[test]
fn every_type_and_word_order_decodes_over_tcp_and_rtu() {
    let (values, profile, nums, texts) = every_type_and_order();
    let spec = json!({"units": {"7": {"values": values, "holding": {"900": 0b10_0000, "901": 116, "902": 500}, "coils": {"7": true}}}});
    let dir = tempfile::tempdir().unwrap();
    let profile_path = dir.path().join("test-device.toml");
    std::fs::write(&profile_path, profile).unwrap();
    let profile_arg = profile_path.display().to_string();

    let (_dev, port) = Device::tcp(&spec);
    let (ok, out, err) = gkgw(&[
        "modbus",
        "poll",
        "--tcp",
        &format!("127.0.0.1:{port}"),
        "--unit",
        "7",
        "--profile",
        &profile_arg,
    ]);
    assert!(ok, "{err}");
    check_poll(&out, &nums, &texts);

    let pty = PtyPair::start(dir.path());
    let _rtu = Device::serial(&spec, &pty);
    let gw_port = pty.gw.display().to_string();
    let (ok, out, err) = gkgw(&[
        "modbus",
        "poll",
        "--port",
        &gw_port,
        "--baud",
        "19200",
        "--unit",
        "7",
        "--profile",
        &profile_arg,
    ]);
    assert!(ok, "{err}");
    check_poll(&out, &nums, &texts);

    // RTU framing over TCP (a serial device server).
    let rtu_tcp_port = free_port();
    let _rtu_tcp = Device::start(&spec, &["--rtu-tcp", &format!("127.0.0.1:{rtu_tcp_port}")]);
    let (ok, out, err) = gkgw(&[
        "modbus",
        "poll",
        "--rtu-over-tcp",
        &format!("127.0.0.1:{rtu_tcp_port}"),
        "--unit",
        "7",
        "--profile",
        &profile_arg,
    ]);
    assert!(ok, "{err}");
    check_poll(&out, &nums, &texts);

    // The commissioning read shows the f32 CDAB field in its CDAB column.
    let (ok, out, err) = gkgw(&[
        "modbus",
        "read",
        "--port",
        &gw_port,
        "--baud",
        "19200",
        "--unit",
        "7",
        "--holding",
        "0",
        "--count",
        "4",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("51234"), "{out}");
}

#[test]
fn refused_merged_reads_are_split_and_exceptions_named() {
    // The device refuses reads longer than 6 registers and has no registers 20-21.
    let spec = json!({"units": {"1": {"holding": {"0": 1000, "4": 1004, "8": 1008, "16": 1016, "20": 1020, "24": 1024}, "max_read": 6, "holes": [[20, 21]]}}});
    let mut profile = String::from("[device]\nmodel = \"picky\"\nmanufacturer = \"test\"\n");
    for a in [0, 4, 8, 16, 20, 24] {
        let _ = write!(profile, "[[field]]\nname = \"r{a}\"\nquantity = \"t.r{a}\"\nkind = \"holding\"\naddress = {a}\ntype = \"u16\"\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("picky.toml");
    std::fs::write(&path, profile).unwrap();
    let (_dev, port) = Device::tcp(&spec);
    let tcp = format!("127.0.0.1:{port}");
    let (ok, out, err) = gkgw(&[
        "modbus",
        "poll",
        "--tcp",
        &tcp,
        "--profile",
        &path.display().to_string(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("1 requests") || out.contains("in 1 request"),
        "one merged read planned:\n{out}"
    );
    assert!(out.contains("split"), "{out}");
    let got = polled(&out);
    for a in [0, 4, 8, 16, 24] {
        assert_eq!(
            got[&format!("r{a}")].0,
            (1000 + a).to_string(),
            "r{a}\n{out}"
        );
    }
    assert_eq!(got["r20"].0, "-", "{out}");
    assert!(out.to_lowercase().contains("illegal data address"), "{out}");

    // A poll that reads nothing at all fails, so a script can tell.
    let hole = dir.path().join("hole.toml");
    std::fs::write(
        &hole,
        "[device]\nmodel = \"hole\"\nmanufacturer = \"test\"\n[[field]]\nname = \"r20\"\nquantity = \"t.r20\"\nkind = \"holding\"\naddress = 20\ntype = \"u16\"\n",
    )
    .unwrap();
    let hole = hole.display().to_string();
    let (ok, out, err) = gkgw(&["modbus", "poll", "--tcp", &tcp, "--profile", &hole]);
    assert!(!ok, "{out}");
    assert!(err.contains("none of the 1 fields could be read"), "{err}");
    assert!(out.to_lowercase().contains("illegal data address"), "{out}");

    // The commissioning tools say what happened in words.
    let (ok, _, err) = gkgw(&[
        "modbus",
        "read",
        "--tcp",
        &tcp,
        "--holding",
        "20",
        "--count",
        "2",
    ]);
    assert!(!ok);
    assert!(err.to_lowercase().contains("illegal data address"), "{err}");
    let (ok, _, err) = gkgw(&[
        "modbus",
        "read",
        "--tcp",
        &tcp,
        "--unit",
        "9",
        "--holding",
        "0",
        "--count",
        "1",
        "--timeout-ms",
        "300",
    ]);
    assert!(!ok);
    assert!(
        err.to_lowercase().contains("timeout") || err.to_lowercase().contains("timed out"),
        "{err}"
    );
    let (ok, out, _) = gkgw(&[
        "modbus",
        "scan",
        "--tcp",
        &tcp,
        "--from",
        "1",
        "--to",
        "3",
        "--timeout-ms",
        "300",
    ]);
    assert!(ok);
    assert!(
        out.contains("unit   1") && !out.contains("unit   2"),
        "{out}"
    );
}

/// Failures before any device is reached say which port or profile was wrong.
#[test]
fn commissioning_errors_name_the_port_and_the_profiles() {
    let port = "/nonexistent/ttyGK9";
    let (ok, _, err) = gkgw(&["modbus", "read", "--port", port, "--holding", "0"]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot open serial port {port}")),
        "{err}"
    );
    let (ok, out, err) = gkgw(&["modbus", "scan", "--port", port, "--to", "3"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("cannot open serial port {port}")),
        "{err}"
    );
    let (ok, _, err) = gkgw(&["modbus", "poll", "--port", port, "--profile", "sdm120"]);
    assert!(!ok);
    assert!(
        err.contains("profile \"sdm120\"")
            && err.contains("built-in profiles: ")
            && err.contains("eastron-sdm120"),
        "{err}"
    );
}

#[test]
fn writes_are_typed_range_checked_and_logged() {
    let spec = json!({"units": {"1": {"input": {"0": 7}}}});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("writable.toml");
    std::fs::write(
        &path,
        "[device]\nmodel = \"writable\"\nmanufacturer = \"test\"\nword_order = \"CDAB\"\n\
         [[field]]\nname = \"setpoint\"\nquantity = \"t.setpoint\"\nkind = \"holding\"\naddress = 10\ntype = \"f32\"\nmin = 0\nmax = 100\n\
         [[field]]\nname = \"level\"\nquantity = \"t.level\"\nkind = \"holding\"\naddress = 20\ntype = \"i16\"\nscale = 0.1\n\
         [[field]]\nname = \"relay\"\nquantity = \"t.relay\"\nkind = \"coil\"\naddress = 3\ntype = \"bool\"\n\
         [[field]]\nname = \"reading\"\nquantity = \"t.reading\"\nkind = \"input\"\naddress = 0\ntype = \"u16\"\n",
    )
    .unwrap();
    let profile = path.display().to_string();
    let (_dev, port) = Device::tcp(&spec);
    let tcp = format!("127.0.0.1:{port}");
    // Without $USER (cron, systemd, some sudo setups) the log still names a user.
    let write = |field: &str, value: &str| {
        let out = Command::new(GKGW)
            .args(["modbus", "write", "--tcp", &tcp, "--profile", &profile])
            .args(["--field", field, "--value", value, "--reason", "e2e test"])
            .env_remove("USER")
            .env_remove("SUDO_USER")
            .output()
            .expect("gkgw runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let poll = || polled(&gkgw(&["modbus", "poll", "--tcp", &tcp, "--profile", &profile]).1);

    let (ok, out, err) = write("setpoint", "42.5");
    assert!(ok, "{err}");
    assert!(
        err.contains("modbus write") && err.contains("e2e test") && err.contains("cli:"),
        "the write is logged with who and why: {err}"
    );
    assert!(!err.contains("cli:unknown"), "{err}");
    assert!(out.starts_with("wrote setpoint = 42.5 to unit 1"), "{out}");
    // The register holds tenths: the output says what the device got, not what was asked.
    let (ok, out, err) = write("level", "-12.34");
    assert!(ok, "{err}");
    assert!(
        out.starts_with("wrote level = -12.3 to unit 1") && out.contains("-12.34 asked"),
        "{out}"
    );
    assert!(write("relay", "1").0);
    let got = poll();
    assert_eq!(got["setpoint"].0, "42.5");
    assert_eq!(got["level"].0, "-12.3");
    assert_eq!(got["relay"].0, "true");

    // Out of range, read-only, unknown: refused before anything goes on the wire.
    let (ok, _, err) = write("setpoint", "150");
    assert!(
        !ok && err.contains("150 is outside the range of field \"setpoint\": 0 to 100"),
        "{err}"
    );
    let (ok, _, err) = write("reading", "1");
    assert!(!ok && err.contains("read-only"), "{err}");
    let (ok, _, err) = write("nope", "1");
    assert!(!ok && err.contains("not in the profile"), "{err}");
    assert_eq!(
        poll()["setpoint"].0,
        "42.5",
        "a refused write changes nothing"
    );
}

fn influx_v1(url: &str) -> String {
    format!("[influx]\nenabled = true\nurl = \"{url}\"\nversion = 1\ndatabase = \"gkgw\"\nflush_interval_ms = 200\nmin_backoff_ms = 100\nmax_backoff_ms = 1000\n")
}

/// A one-register profile polled every `poll_ms`.
fn one_register_profile(dir: &Path, poll_ms: u64) -> String {
    let path = dir.join("one.toml");
    std::fs::write(
        &path,
        format!("[device]\nmodel = \"one\"\nmanufacturer = \"test\"\npoll_interval = \"{poll_ms}ms\"\n[[field]]\nname = \"value\"\nquantity = \"probe.value\"\nkind = \"holding\"\naddress = 0\ntype = \"u16\"\n"),
    )
    .unwrap();
    path.display().to_string()
}

/// `[modbus]` config: one RTU bus on `port` and a device per (name, unit).
fn rtu_config(port: &Path, profile: &str, timeout_ms: u64, devices: &[(&str, u8)]) -> String {
    let mut c = format!(
        "[modbus]\n[[modbus.bus]]\nname = \"rs485\"\ntransport = \"rtu\"\nport = \"{}\"\nbaud = 19200\ntimeout_ms = {timeout_ms}\nmin_backoff_ms = 1000\nmax_backoff_ms = 2000\n",
        port.display()
    );
    for (name, unit) in devices {
        let _ = write!(c, "[[modbus.device]]\nname = \"{name}\"\nbus = \"rs485\"\nunit = {unit}\nprofile = \"{profile}\"\n");
    }
    // The test profiles' quantities, as a site declares its own.
    for (q, precision) in [
        ("value", 0),
        ("setpoint", 0),
        ("level", 1),
        ("ratio", 2),
        ("spare", 2),
    ] {
        let _ = write!(
            c,
            "[[plant.quantity]]\nname = \"probe.{q}\"\nkind = \"gauge\"\nprecision = {precision}\n"
        );
    }
    c
}

/// (time in ns, value) of a device's readings in InfluxDB.
fn series(influx: &Influx1, device: &str) -> Vec<(i64, f64)> {
    influx
        .rows_ns(&format!(
            "SELECT \"value\" FROM \"probe\" WHERE \"device\" = '{device}'"
        ))
        .iter()
        .filter_map(|r| Some((r.first()?.as_i64()?, r.get(1)?.as_f64()?)))
        .collect()
}

#[test]
fn a_late_answer_is_never_taken_for_the_next_request() {
    let influx = Influx1::start();
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    // Unit 1 answers its first request 700 ms late (timeout 300 ms), while unit 2, asked next,
    // holds a different value at the same address: a stale frame would show up as 111 on unit 2.
    let spec = json!({"units": {
        "1": {"holding": {"0": 111}, "mode": "late_once", "late_ms": 700},
        "2": {"holding": {"0": 222}}
    }});
    let _dev = Device::serial(&spec, &pty);
    let profile = one_register_profile(dir.path(), 300);
    let gw = Gateway::start(
        &format!(
            "{}{}",
            influx_v1(&influx.url()),
            rtu_config(&pty.gw, &profile, 300, &[("late", 1), ("steady", 2)])
        ),
        &[],
    );
    wait_until(
        "both devices read several times",
        Duration::from_secs(30),
        || {
            gw.wait_drained(Duration::from_secs(10));
            series(&influx, "late").len() >= 5 && series(&influx, "steady").len() >= 10
        },
    );
    for (dev, want) in [("late", 111.0), ("steady", 222.0)] {
        let s = series(&influx, dev);
        assert!(
            s.iter().all(|(_, v)| *v == want),
            "{dev}: {s:?}\n{}",
            gw.log()
        );
    }
    assert!(gw.metric("gkgw_modbus_timeouts_total{device=\"late\",bus=\"rs485\"}") >= 1.0);
    assert_eq!(
        gw.metric("gkgw_modbus_device_state{device=\"late\",state=\"online\"}"),
        1.0
    );
}

/// The unit ids of the requests in a device's frame log, in the order they came in.
fn requests_seen(frames: &Path) -> Vec<u8> {
    std::fs::read_to_string(frames)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(": <- unit ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Asserted on the bus itself (the order of the requests the device received), not on wall-clock
/// gaps: a dead device's request never follows its own (its cycle ends at the first timeout and
/// is not retried), and between two requests to the live device there is at most one to the
/// dead one, so the live device is delayed by at most one timeout per backoff interval. The
/// timing rules behind it are the poller's unit tests (`poller::tests`).
#[test]
fn a_silent_device_does_not_stall_its_neighbour_on_the_rtu_bus() {
    let influx = Influx1::start();
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let spec = json!({"units": {"1": {"holding": {"0": 1}, "mode": "silent"}, "2": {"holding": {"0": 2}}}});
    let frames = dir.path().join("frames.log");
    let serve = [
        "--serial",
        &pty.dev.display().to_string(),
        "--baud",
        "19200",
    ];
    let _dev = Device::start_logged(&spec, &serve, Some(&frames));
    let (period_ms, timeout_ms) = (1000u64, 400u64);
    let profile = one_register_profile(dir.path(), period_ms);
    let gw = Gateway::start(
        &format!(
            "{}{}",
            influx_v1(&influx.url()),
            rtu_config(&pty.gw, &profile, timeout_ms, &[("dead", 1), ("alive", 2)])
        ),
        &[],
    );
    wait_until(
        "12 readings of the healthy device",
        Duration::from_secs(40),
        || {
            gw.wait_drained(Duration::from_secs(10));
            series(&influx, "alive").len() >= 12
        },
    );
    let seen = requests_seen(&frames);
    let text = format!("requests by unit: {seen:?}\n{}", gw.log());
    assert_eq!(
        seen.first(),
        Some(&1),
        "the dead device is asked first: {text}"
    );
    assert!(
        seen.windows(2).all(|w| w != [1, 1]),
        "a dead device is asked once per attempt: {text}"
    );
    // Two dead-device requests in a row without one to the live device between them would
    // be two timeouts in one of its periods.
    let mut since_alive = 0;
    for unit in &seen {
        since_alive = if *unit == 2 { 0 } else { since_alive + 1 };
        assert!(since_alive <= 1, "{text}");
    }
    let dead = seen.iter().filter(|u| **u == 1).count();
    let alive = seen.iter().filter(|u| **u == 2).count();
    // Backoff 1 s then 2 s against a 1 s period: about one dead request per two live ones.
    assert!(dead >= 2 && 2 * dead <= alive + 2, "{text}");
    assert!(series(&influx, "dead").is_empty());
    // The gateway's counters say what the device saw (the device may have received one more
    // request than was counted when the log was read).
    let counted = gw.metric("gkgw_modbus_requests_total{device=\"dead\",bus=\"rs485\"}");
    assert!(
        (counted as usize).abs_diff(dead) <= 1,
        "counted {counted}: {text}"
    );
    assert!(
        gw.metric("gkgw_modbus_timeouts_total{device=\"dead\",bus=\"rs485\"}") >= 2.0,
        "{text}"
    );
    assert_eq!(
        gw.metric("gkgw_modbus_device_state{device=\"dead\",state=\"offline\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("gkgw_modbus_device_state{device=\"alive\",state=\"online\"}"),
        1.0
    );
}

/// [`one_register_profile`]'s `value` (u16 at 0) and, after it, `level` (i16 × 0.1 at 1),
/// `ratio` (f32 at 2) and `spare` (f32 at 4, NaN meaning "not fitted").
fn probe_profile(dir: &Path) -> String {
    let path = dir.join("probe.toml");
    let mut p = String::from(
        "[device]\nmodel = \"probe\"\nmanufacturer = \"test\"\npoll_interval = \"300ms\"\n",
    );
    for (name, address, keys) in [
        ("value", 0, "type = \"u16\""),
        ("level", 1, "type = \"i16\"\nscale = 0.1"),
        ("ratio", 2, "type = \"f32\""),
        ("spare", 4, "type = \"f32\"\nnan_is_missing = true"),
    ] {
        let _ = write!(p, "[[field]]\nname = \"{name}\"\nquantity = \"probe.{name}\"\nkind = \"holding\"\naddress = {address}\n{keys}\n");
    }
    std::fs::write(&path, p).unwrap();
    path.display().to_string()
}

#[test]
fn the_serial_port_disappears_and_comes_back() {
    let influx = Influx1::start();
    let dir = tempfile::tempdir().unwrap();
    // 0x7FC0 0000 is a float32 NaN: a channel the profile allows to be missing.
    let spec = json!({"units": {"3": {
        "holding": {"0": 33, "1": 116, "4": 0x7FC0, "5": 0},
        "values": [{"table": "holding", "address": 2, "type": "f32", "value": 11.62}]
    }}});
    let mut pty = PtyPair::start(dir.path());
    let mut dev = Device::serial(&spec, &pty);
    let profile = probe_profile(dir.path());
    let mut gw = Gateway::start(
        &format!(
            "{}{}",
            influx_v1(&influx.url()),
            rtu_config(&pty.gw, &profile, 300, &[("probe-3", 3)])
        ),
        &[],
    );
    wait_until(
        "readings before the unplug",
        Duration::from_secs(30),
        || {
            gw.wait_drained(Duration::from_secs(10));
            series(&influx, "probe-3").len() >= 3
        },
    );
    // Numbers as the device meant them, in InfluxDB: 116 × 0.1 is 11.6 and the float32 11.62
    // is 11.62, not 11.600000000000001 and 11.619999885559082.
    let rows = influx.rows(
        "SELECT \"level\", \"ratio\", \"spare_quality\" FROM \"probe\" WHERE \"device\" = 'probe-3'",
    );
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(
            (r[1].as_f64(), r[2].as_f64(), r[3].as_str()),
            (Some(11.6), Some(11.62), Some("missing")),
            "{r:?}"
        );
    }
    // A value the profile allows to be missing does not make the device degraded.
    assert_eq!(
        gw.metric("gkgw_modbus_device_state{device=\"probe-3\",state=\"online\"}"),
        1.0,
        "{}",
        gw.log()
    );
    let status = gw.status();
    assert_eq!(status["health"], "healthy", "{status}");
    assert_eq!(status["modbus"][0]["latest"]["level"], "11.6", "{status}");
    assert_eq!(status["modbus"][0]["latest"]["ratio"], "11.62", "{status}");
    assert_eq!(status["modbus"][0]["stale"], false, "{status}");

    // Unplug: the device and the pty pair go away, the path no longer exists.
    drop(dev);
    pty.proc.kill9();
    wait_until("the port to be gone", Duration::from_secs(5), || {
        !pty.gw.exists()
    });
    wait_until(
        "the device to be marked offline",
        Duration::from_secs(30),
        || gw.metric("gkgw_modbus_device_state{device=\"probe-3\",state=\"offline\"}") == 1.0,
    );
    let running = gw
        .proc
        .as_mut()
        .map(|p| p.child.try_wait().expect("try_wait").is_none());
    assert_eq!(
        running,
        Some(true),
        "the gateway keeps running while its port is gone"
    );
    // Its last values are still shown, marked stale, and the gateway says it is degraded.
    let status = gw.status();
    let probe = &status["modbus"][0];
    assert_eq!(
        (&probe["stale"], &probe["latest"]["value"]),
        (&json!(true), &json!("33")),
        "{status}"
    );
    assert!(probe["last_answer_age_s"].as_f64().is_some(), "{status}");
    assert_eq!(status["health"], "degraded", "{status}");
    assert!(
        status["health_reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("modbus device probe-3 is offline (last answer")),
        "{status}"
    );
    let (_, page) = gw.http(
        "GET",
        &format!("http://127.0.0.1:{}/status", gw.http_port),
        None,
    );
    assert!(page.contains("STALE, from"), "{page}");
    assert!(
        page.contains("DEGRADED: modbus device probe-3 is offline"),
        "{page}"
    );
    gw.wait_drained(Duration::from_secs(10));
    let before = series(&influx, "probe-3").len();

    // Plug back in under the same name: polling resumes by itself.
    pty = PtyPair::start(dir.path());
    dev = Device::serial(&spec, &pty);
    wait_until(
        "readings after the port came back",
        Duration::from_secs(40),
        || {
            gw.wait_drained(Duration::from_secs(10));
            series(&influx, "probe-3").len() >= before + 3
        },
    );
    assert_eq!(
        gw.metric("gkgw_modbus_device_state{device=\"probe-3\",state=\"online\"}"),
        1.0
    );
    assert!(series(&influx, "probe-3").iter().all(|(_, v)| *v == 33.0));
    drop(dev);
}

/// A write made while the bus is being polled goes through the bus task's inbox: on the line
/// it is one whole exchange between two reads (every request is answered before the next one
/// is sent), and the reads after it show the new value. Drives `gkgw`'s library directly
/// (`modbus::run_bus` and `modbus::Buses`), as the web and the uplink will.
#[test]
fn a_write_goes_through_the_bus_inbox_between_two_reads() {
    use gkgw::sources::modbus::{self, decode::DecodedValue};
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let spec = json!({"units": {"1": {"holding": {"0": 7, "20": 5}}}});
    let frames = dir.path().join("frames.log");
    let serve = [
        "--serial",
        &pty.dev.display().to_string(),
        "--baud",
        "19200",
    ];
    let _dev = Device::start_logged(&spec, &serve, Some(&frames));
    // Two reads per cycle (the fields are too far apart to merge), every 200 ms.
    let profile = dir.path().join("writable.toml");
    std::fs::write(
        &profile,
        "[device]\nmodel = \"w\"\nmanufacturer = \"test\"\npoll_interval = \"200ms\"\n\
         [[field]]\nname = \"value\"\nquantity = \"probe.value\"\nkind = \"holding\"\naddress = 0\ntype = \"u16\"\n\
         [[field]]\nname = \"setpoint\"\nquantity = \"probe.setpoint\"\nkind = \"holding\"\naddress = 20\ntype = \"u16\"\nmax = 100\n",
    )
    .unwrap();
    let text = rtu_config(
        &pty.gw,
        &profile.display().to_string(),
        300,
        &[("probe", 1)],
    );
    let config = gkgw::config::Config::parse("gw.toml", &text).expect("config");
    let mut specs = gkgw::topology::resolve(config).expect("resolves").modbus;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let setpoints = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let (live, _) = tokio::sync::broadcast::channel(16);
        let tx = gkgw::intake::Intake::new(tx, live);
        let (inbox_tx, inbox_rx) = tokio::sync::mpsc::channel(modbus::INBOX_CAPACITY);
        let buses = modbus::Buses::new([("probe".to_owned(), inbox_tx)].into());
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(modbus::run_bus(
            specs.remove(0),
            tx,
            inbox_rx,
            modbus::Stats::default(),
            gkgw::clock::Clock::system(),
            cancel.clone(),
        ));
        let setpoint = |r: &gkgw::model::Reading| {
            r.fields.iter().find_map(|(f, v)| match v {
                gkgw::model::Value::Float(x) if f == "setpoint" => Some(*x),
                _ => None,
            })
        };
        let mut seen = Vec::new();
        let within = Duration::from_secs(10);
        while seen.len() < 2 {
            let r = tokio::time::timeout(within, rx.recv())
                .await
                .expect("readings")
                .expect("open");
            seen.extend(setpoint(&r));
        }
        let reason = modbus::WriteReason {
            who: "test".into(),
            why: "e2e".into(),
        };
        let written = buses.write("probe", "setpoint", 42.0, reason.clone()).await;
        assert_eq!(
            written.map_err(|e| e.to_string()),
            Ok(DecodedValue::Number(42.0))
        );
        let refused = buses
            .write("probe", "setpoint", 420.0, reason.clone())
            .await;
        assert!(refused.is_err_and(|e| e.to_string().contains("outside the range")));
        let unknown = buses.write("nobody", "setpoint", 1.0, reason).await;
        assert!(unknown.is_err_and(|e| e.to_string() == "no modbus device \"nobody\""));
        while seen.last() != Some(&42.0) {
            let r = tokio::time::timeout(within, rx.recv())
                .await
                .expect("readings")
                .expect("open");
            seen.extend(setpoint(&r));
        }
        cancel.cancel();
        task.await.expect("the bus task ends");
        seen
    });
    assert!(setpoints.starts_with(&[5.0, 5.0]), "{setpoints:?}");
    // On the line: request, reply, request, reply... with the write (function 06 at 20 = 0x14)
    // among the reads (function 03).
    let log = std::fs::read_to_string(&frames).unwrap_or_default();
    let directions: Vec<bool> = log
        .lines()
        .filter(|l| l.contains(": <- unit 1 ") || l.contains(": -> unit 1 "))
        .map(|l| l.contains(" <- "))
        .collect();
    assert!(!directions.is_empty(), "{log}");
    assert!(
        directions.chunks(2).all(|c| c == [true, false]),
        "requests never overlap:\n{log}"
    );
    let requests: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(": <- unit 1 ").map(|(_, pdu)| pdu.trim()))
        .collect();
    let write = requests
        .iter()
        .position(|p| p.starts_with("06 00 14 00 2a"))
        .unwrap_or_else(|| panic!("the write on the line:\n{log}"));
    assert!(
        write >= 2 && requests[..write].iter().all(|p| p.starts_with("03")),
        "{log}"
    );
    assert!(
        requests[write + 1..].iter().all(|p| p.starts_with("03")),
        "{log}"
    );
}
