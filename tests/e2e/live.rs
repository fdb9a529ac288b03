//! The live stream (`/api/live`): every reading, named by its quantity, as it arrives.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// Reads server-sent events from `/api/live` until `want` returns true for an event's data
/// (JSON), or `timeout`.
fn watch_live(
    port: u16,
    token: &str,
    timeout: Duration,
    mut want: impl FnMut(&str, &serde_json::Value) -> bool,
) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    write!(
        s,
        "GET /api/live HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let until = Instant::now() + timeout;
    let mut event = String::new();
    let mut line = String::new();
    while Instant::now() < until {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(_) => continue, // read timeout: check the deadline
        }
        let l = line.trim_end();
        if let Some(e) = l.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(d) = l.strip_prefix("data: ") {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(d) {
                if want(&event, &json) {
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn a_meter_reading_reaches_the_live_stream_named_by_quantity() {
    let gw = Gateway::start("", &["GM-0001"]);
    let port = gw.http_port;
    let login = gw.passwords["GM-0001"].clone();
    let mqtt = gw.mqtt_port;
    // Publish a little after the stream is open (and keep publishing: the watcher may
    // subscribe after the first one).
    let publisher = std::thread::spawn(move || {
        for seq in 1..=20 {
            std::thread::sleep(Duration::from_millis(300));
            mosquitto_pub(
                mqtt,
                Some(("GM-0001", &login)),
                "meters/GM-0001/state",
                1,
                &format!(
                    r#"{{"meter_id":"GM-0001","seq":{seq},"kind":"gas","cum_kg":12.5,"credit_kg":1.23456,"battery_v":-3}}"#
                ),
            );
        }
    });
    let mut seen = None;
    let found = watch_live(port, &gw.token, Duration::from_secs(20), |event, data| {
        if event == "reading" && data["device"] == "GM-0001" {
            seen = Some(data.clone());
            true
        } else {
            false
        }
    });
    publisher.join().unwrap();
    assert!(found, "no live reading of GM-0001 within 20 s");
    let data = seen.expect("seen");
    let values = data["values"].as_array().expect("values");
    let by = |q: &str| values.iter().find(|v| v["quantity"] == q).cloned();
    assert_eq!(by("meter.credit").expect("credit")["text"], "1.23 kg");
    assert_eq!(by("meter.gas_used").expect("gas used")["value"], 12.5);
    // An implausible battery voltage is shown by its quality, never as a number.
    let battery = by("meter.battery").expect("battery");
    assert_eq!(battery["text"], "out_of_range");
    assert!(battery.get("value").is_none(), "{battery}");
    // Bad, or clock_unsynced on a host whose clock is not synchronised (which wins, clock.rs).
    assert_ne!(data["quality"], "good");
}
