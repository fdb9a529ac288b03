//! GPIO and 1-Wire through the real binary: the sim backend's control socket makes pulses
//! with contact bounce; the pulse total is committed, survives a SIGKILL and counts on without
//! loss or double count; a sysfs-like 1-Wire directory gives good and bad readings.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::support::{wait_until, Gateway};

/// Sends one command line to the sim socket; returns the reply line.
fn sim(socket: &Path, command: &str) -> String {
    let mut s = UnixStream::connect(socket).expect("connect to the gpio sim socket");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    writeln!(s, "{command}").expect("send");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("reply");
    line.trim_end().to_owned()
}

/// The newest committed value and the bad count of a quantity at an instance, from the raw
/// history of the last ten minutes (short buckets, so the raw log answers).
fn committed(g: &Gateway, quantity: &str, instance: &str) -> (Option<f64>, u64) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let (from, to) = (now_ms - 600_000, now_ms + 60_000);
    let (code, body) = g.http(
        "GET",
        &format!(
            "http://127.0.0.1:{}/api/history?quantity={quantity}&instance={instance}&from={from}&to={to}&points=1000",
            g.http_port
        ),
        None,
    );
    if code != 200 {
        return (None, 0);
    }
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let points = v["points"].as_array().cloned().unwrap_or_default();
    let last = points
        .iter()
        .filter(|p| p["last"].is_number())
        .max_by_key(|p| p["ms"].as_i64())
        .and_then(|p| p["last"].as_f64());
    let bad = points.iter().map(|p| p["bad"].as_u64().unwrap_or(0)).sum();
    (last, bad)
}

fn wait_total(g: &Gateway, expected: f64) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (last, _) = committed(g, "gas.volume", "gas-meter");
        if last.is_some_and(|v| (v - expected).abs() < 1e-9) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "gas.volume at gas-meter is {last:?}, not {expected} m³, after 60 s:\n{}",
            g.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pulses_with_bounce_are_counted_once_and_the_total_survives_sigkill() {
    let aux = tempfile::tempdir().expect("tempdir");
    let socket = aux.path().join("gpio.sock");
    let extra = format!(
        "[gpio]\nbackend = \"sim\"\nsim_socket = \"{}\"\n[[gpio.input]]\nname = \"gas-meter\"\nline = 17\nkind = \"pulse\"\ndebounce_ms = 5\nreport_ms = 200\n[[gpio.output]]\nname = \"buzzer\"\nline = 22\n[[gpio.output]]\nname = \"beacon\"\nline = 23\nmode = \"pulsed\"\n",
        socket.display()
    );
    let mut g = Gateway::start(&extra, &[]);
    wait_until("the sim socket", Duration::from_secs(10), || {
        socket.exists()
    });
    assert_eq!(sim(&socket, "pulse gas-meter 120 bounce 3"), "ok 120");
    wait_total(&g, 1.20);
    assert_eq!(
        g.metric("gkgw_gpio_pulses_total{input=\"gas-meter\"}"),
        120.0
    );
    assert_eq!(
        g.metric("gkgw_gpio_bounces_filtered_total{input=\"gas-meter\"}"),
        120.0 * 2.0 * 3.0 * 2.0,
        "3 bounces (2 edges each) at each of the 2 edges of 120 pulses"
    );
    assert_eq!(
        g.metric("gkgw_gpio_missed_edges_total{input=\"gas-meter\"}"),
        0.0
    );
    // The outputs are on /api/status and the sim socket, nothing demanded.
    assert_eq!(sim(&socket, "outputs"), "beacon=0 buzzer=0");
    assert_eq!(sim(&socket, "get buzzer"), "0");
    let status = g.status();
    assert_eq!(status["gpio"][1]["name"], "buzzer", "{status}");
    assert_eq!(status["gpio"][0]["mode"], "pulsed", "{status}");

    g.proc.as_mut().expect("running").kill9();
    g.restart();
    wait_until("the sim socket again", Duration::from_secs(10), || {
        UnixStream::connect(&socket).is_ok()
    });
    // Counts on from the committed total: 30 more pulses are 1.50, not 0.30 or 1.80.
    assert_eq!(sim(&socket, "pulse gas-meter 30"), "ok 30");
    wait_total(&g, 1.50);
    assert!(
        g.log().contains("gpio input started"),
        "the input logged its start:\n{}",
        g.log()
    );
}

/// A contact's state, run hours and starts: reported on a change, persisted like the total.
#[test]
fn a_contact_counts_its_starts_across_a_sigkill() {
    let aux = tempfile::tempdir().expect("tempdir");
    let socket = aux.path().join("gpio.sock");
    let extra = format!(
        "[gpio]\nbackend = \"sim\"\nsim_socket = \"{}\"\n[[gpio.input]]\nname = \"compressor\"\nline = 27\nkind = \"contact\"\nquantity = \"compressor.status.running\"\ndebounce_ms = 5\nreport_ms = 500\n",
        socket.display()
    );
    let mut g = Gateway::start(&extra, &[]);
    let starts = |g: &Gateway, n: f64| {
        wait_until(
            &format!("contact.starts at compressor committed as {n}"),
            Duration::from_secs(60),
            || committed(g, "contact.starts", "compressor").0 == Some(n),
        )
    };
    wait_until("the sim socket", Duration::from_secs(10), || {
        UnixStream::connect(&socket).is_ok()
    });
    assert_eq!(sim(&socket, "set compressor 1"), "ok");
    starts(&g, 1.0);
    assert_eq!(sim(&socket, "set compressor 0"), "ok");
    wait_until("run hours above 0", Duration::from_secs(30), || {
        committed(&g, "contact.run_hours", "compressor")
            .0
            .is_some_and(|h| h > 0.0)
    });
    g.proc.as_mut().expect("running").kill9();
    g.restart();
    wait_until("the sim socket again", Duration::from_secs(10), || {
        UnixStream::connect(&socket).is_ok()
    });
    assert_eq!(sim(&socket, "set compressor 1"), "ok");
    starts(&g, 2.0);
}

#[test]
fn ds18b20_files_give_good_and_bad_readings() {
    let aux = tempfile::tempdir().expect("tempdir");
    let w1 = aux.path().join("w1");
    for (id, body) in [
        (
            "28-000000000001",
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
        ),
        (
            "28-000000000002",
            "72 01 4b 46 7f ff 0e 10 57 : crc=12 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
        ),
        (
            "28-000000000003",
            "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
        ),
    ] {
        std::fs::create_dir_all(w1.join(id)).expect("mkdir");
        std::fs::write(w1.join(id).join("w1_slave"), body).expect("write");
    }
    let mut extra = format!(
        "[onewire]\ndir = \"{}\"\ninterval_ms = 1000\n",
        w1.display()
    );
    for i in 1..=4 {
        extra.push_str(&format!(
            "[[onewire.sensor]]\nid = \"28-00000000000{i}\"\nquantity = \"digester.temperature\"\ninstance = \"t{i}\"\n"
        ));
    }
    let g = Gateway::start(&extra, &[]);
    wait_until("a good reading of t1", Duration::from_secs(30), || {
        committed(&g, "digester.temperature", "t1").0 == Some(23.125)
    });
    for t in ["t2", "t3", "t4"] {
        wait_until(
            &format!("bad readings of {t}"),
            Duration::from_secs(30),
            || {
                let (last, bad) = committed(&g, "digester.temperature", t);
                last.is_none() && bad >= 2
            },
        );
    }
    let (_, bad) = committed(&g, "digester.temperature", "t1");
    assert_eq!(bad, 0, "the good sensor has no bad reading");
    // The missing sensor is logged once, not on every read.
    wait_until("two more reads", Duration::from_secs(30), || {
        committed(&g, "digester.temperature", "t4").1 >= 3
    });
    assert_eq!(
        g.log().matches("1-wire: sensor missing").count(),
        1,
        "{}",
        g.log()
    );
}
