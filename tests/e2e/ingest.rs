//! Meters → embedded broker → store → InfluxDB, with independent MQTT clients (mosquitto_pub
//! and paho-mqtt) and real servers (InfluxDB 1.6.7, VictoriaMetrics).

use std::time::Duration;

use crate::support::{mosquitto_pub, paho, ts_base, wait_until, Gateway, Influx1, Victoria};

fn rfc3339(secs: i64) -> String {
    chrono_free_rfc3339(secs)
}

/// Formats Unix seconds as RFC 3339 UTC without pulling a date crate into the tests.
fn chrono_free_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn influx_v1(url: &str) -> String {
    format!("[influx]\nenabled = true\nurl = \"{url}\"\nversion = 1\ndatabase = \"gkgw\"\nflush_interval_ms = 200\nmin_backoff_ms = 100\nmax_backoff_ms = 1000\n")
}

#[test]
fn every_meter_message_reaches_influxdb_1x_with_tags_fields_and_timestamps() {
    let influx = Influx1::start();
    let gw = Gateway::start(
        &influx_v1(&influx.url()),
        &["GM-0001", "GM-0002", "GM-0003", "GM-0004", "EM-0001"],
    );

    // mosquitto_pub, QoS 0 and QoS 1, with the meter's own timestamps.
    for seq in 1..=20i64 {
        for (meter, qos) in [("GM-0001", 0u8), ("GM-0002", 1u8)] {
            let payload = format!(
                r#"{{"meter_id":"{meter}","seq":{seq},"ts":"{}","kind":"gas","cum_kg":{},"credit_kg":{},"valve":"open","battery_v":3.7,"rssi":-71,"tamper":false}}"#,
                rfc3339(ts_base() + seq),
                10.0 + seq as f64 * 0.125,
                5.0 - seq as f64 * 0.125
            );
            assert!(mosquitto_pub(
                gw.mqtt_port,
                Some((meter, &gw.passwords[meter])),
                &format!("meters/{meter}/state"),
                qos,
                &payload
            ));
        }
    }
    let em = r#"{"meter_id":"EM-0001","seq":7,"kind":"electricity","cum_kwh":1234.5,"credit_kwh":5.5,"relay":"closed","status":"active"}"#;
    assert!(mosquitto_pub(
        gw.mqtt_port,
        Some(("EM-0001", &gw.passwords["EM-0001"])),
        "meters/EM-0001/state",
        1,
        em
    ));

    // paho-mqtt, QoS 1 and QoS 0, waiting for every application ack.
    for (meter, qos) in [("GM-0003", "1"), ("GM-0004", "0")] {
        let mut args = gw.paho_args(meter);
        args.extend(
            [
                "--meters",
                meter,
                "--count",
                "100",
                "--qos",
                qos,
                "--ts-base",
                &ts_base().to_string(),
            ]
            .map(String::from),
        );
        let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            code, 0,
            "paho {meter} qos {qos}: every reading acked: {summary}"
        );
        assert_eq!(summary["acked"], 100);
    }

    wait_until(
        "all 241 readings in InfluxDB",
        Duration::from_secs(30),
        || influx.count("gas_meter", "seq") == 240 && influx.count("electricity_meter", "seq") == 1,
    );
    for meter in ["GM-0001", "GM-0002"] {
        let rows = influx.rows(&format!(
            "SELECT seq, cum_kg, gas_used_kg, credit_kg, valve, battery_v, rssi_dbm, tamper, site FROM gas_meter WHERE device = '{meter}' ORDER BY time"
        ));
        assert_eq!(rows.len(), 20, "{meter}: {rows:?}");
        for (i, row) in rows.iter().enumerate() {
            let seq = i as i64 + 1;
            assert_eq!(
                row[0],
                rfc3339(ts_base() + seq),
                "timestamp is the meter's own"
            );
            assert_eq!(row[1], seq);
            assert!(row[2].is_null(), "no field named after the payload key");
            assert_eq!(row[3], 10.0 + seq as f64 * 0.125);
            assert_eq!(row[4], 5.0 - seq as f64 * 0.125);
            assert_eq!(row[5], "open");
            assert_eq!(row[6], 3.7);
            assert_eq!(row[7], -71.0);
            assert_eq!(row[8], false);
            assert_eq!(row[9], "test-site");
        }
    }
    let em_rows = influx.rows(
        "SELECT energy_used_kwh, credit_kwh, relay, status, site, device FROM electricity_meter",
    );
    assert_eq!(
        em_rows[0][1..],
        serde_json::json!([1234.5, 5.5, "closed", "active", "test-site", "EM-0001"])
            .as_array()
            .expect("array")[..]
    );
    let tags = influx.query("SHOW TAG KEYS FROM gas_meter");
    assert_eq!(
        tags["results"][0]["series"][0]["values"],
        serde_json::json!([["device"], ["site"]])
    );
    assert_eq!(gw.metric("gkgw_readings_accepted_total"), 241.0);
    assert_eq!(gw.metric("gkgw_meter_acks_published_total"), 241.0);
}

#[test]
fn the_v2_write_path_delivers_into_victoriametrics() {
    let vm = Victoria::start();
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let token = gw_dir.path().join("token");
    std::fs::write(&token, "secret-token\n").expect("token");
    let gw = Gateway::start(
        &format!(
            "[influx]\nenabled = true\nurl = \"{}\"\nversion = 2\norg = \"gk\"\nbucket = \"plant\"\ntoken_file = \"{}\"\nflush_interval_ms = 200\n",
            vm.url(),
            token.display()
        ),
        &["GM-0001"],
    );
    let mut args = gw.paho_args("GM-0001");
    args.extend(
        [
            "--meters",
            "GM-0001",
            "--count",
            "50",
            "--qos",
            "1",
            "--ts-base",
            &ts_base().to_string(),
        ]
        .map(String::from),
    );
    let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{summary}");
    gw.wait_drained(Duration::from_secs(20));
    let mut series = Vec::new();
    wait_until(
        "50 samples of gas_meter_seq in VictoriaMetrics",
        Duration::from_secs(20),
        || {
            series = vm.export(r#"{__name__="gas_meter_seq",device="GM-0001"}"#);
            series
                .first()
                .and_then(|s| s["values"].as_array())
                .is_some_and(|v| v.len() == 50)
        },
    );
    let s = &series[0];
    assert_eq!(s["metric"]["site"], "test-site");
    let values: Vec<i64> = s["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_i64().expect("int"))
        .collect();
    assert_eq!(values, (1..=50).collect::<Vec<_>>());
    let ts: Vec<i64> = s["timestamps"]
        .as_array()
        .expect("ts")
        .iter()
        .map(|v| v.as_i64().expect("int"))
        .collect();
    assert_eq!(
        ts,
        (1..=50).map(|i| (ts_base() + i) * 1000).collect::<Vec<_>>(),
        "millisecond timestamps of the meter's own ts"
    );
}
