//! Faults: InfluxDB down during ingest, kill -9 of the gateway mid-ingest, bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use crate::support::{mosquitto_pub, paho, paho_cmd, ts_base, wait_until, Gateway, Influx1, Proc};

fn influx_v1(url: &str) -> String {
    format!("[influx]\nenabled = true\nurl = \"{url}\"\nversion = 1\ndatabase = \"gkgw\"\nflush_interval_ms = 200\nmin_backoff_ms = 100\nmax_backoff_ms = 1000\ntimeout_ms = 3000\n")
}

fn publish(gw: &Gateway, meter: &str, start_seq: u64, count: u64) {
    let mut args = gw.paho_args(meter);
    args.extend(
        [
            "--meters",
            meter,
            "--count",
            &count.to_string(),
            "--start-seq",
            &start_seq.to_string(),
            "--qos",
            "1",
            "--ts-base",
            &ts_base().to_string(),
        ]
        .map(String::from),
    );
    let (summary, code) = paho(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "every reading acked: {summary}");
}

#[test]
fn an_influxdb_outage_loses_nothing_and_duplicates_nothing() {
    let mut influx = Influx1::start();
    let gw = Gateway::start(&influx_v1(&influx.url()), &["GM-0001"]);
    publish(&gw, "GM-0001", 1, 200);
    gw.wait_drained(Duration::from_secs(20));
    assert_eq!(influx.count("gas_meter", "seq"), 200);

    influx.stop();
    publish(&gw, "GM-0001", 201, 300);
    wait_until(
        "write errors while InfluxDB is down",
        Duration::from_secs(10),
        || gw.metric("gkgw_influx_write_errors_total") >= 1.0,
    );
    let status = gw.status();
    let backlog = status["consumers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "influx"))
        .and_then(|c| c["backlog"].as_i64())
        .expect("the influx consumer's backlog");
    assert_eq!(
        backlog, 300,
        "everything published during the outage waits in the store"
    );
    assert!(gw.metric("gkgw_consumer_oldest_unsent_seconds{consumer=\"influx\"}") > 0.0);

    influx.restart();
    gw.wait_drained(Duration::from_secs(30));
    assert_eq!(
        influx.count("gas_meter", "seq"),
        500,
        "nothing lost, nothing duplicated"
    );
    let seqs: BTreeSet<i64> = influx
        .rows("SELECT seq FROM gas_meter")
        .iter()
        .map(|r| r[1].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=500).collect());
}

#[test]
fn sigkill_mid_ingest_never_loses_an_acknowledged_reading() {
    let influx = Influx1::start();
    let mut gw = Gateway::start(&influx_v1(&influx.url()), &["GM-0001", "GM-0002"]);
    let acks_file = gw.dir.path().join("acks.txt");
    let pubacks_file = gw.dir.path().join("pubacks.txt");
    // Two meters, each on its own connection with its own account.
    let mut publishers: Vec<Proc> = ["GM-0001", "GM-0002"]
        .iter()
        .map(|meter| {
            let mut args = gw.paho_args(meter);
            args.extend(
                [
                    "--meters",
                    meter,
                    "--continuous",
                    "--rate",
                    "100",
                    "--qos",
                    "1",
                ]
                .map(String::from),
            );
            args.push("--acks-file".into());
            args.push(acks_file.display().to_string());
            args.push("--pubacks-file".into());
            args.push(pubacks_file.display().to_string());
            Proc::spawn(
                "meter.py",
                paho_cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
                    .stdout(Stdio::piped()),
            )
        })
        .collect();

    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(1500));
        let before = std::fs::read_to_string(&acks_file)
            .unwrap_or_default()
            .lines()
            .count();
        assert!(
            before > round * 50,
            "round {round}: the publisher is being acked ({before} acks)"
        );
        if let Some(p) = gw.proc.as_mut() {
            p.kill9();
        }
        std::thread::sleep(Duration::from_millis(300));
        gw.restart();
    }
    std::thread::sleep(Duration::from_millis(1500));
    for publisher in &mut publishers {
        publisher.signal("TERM");
        publisher
            .wait_timeout(Duration::from_secs(15))
            .expect("publisher stops");
    }
    gw.wait_drained(Duration::from_secs(60));

    // Both kinds of acknowledgement mean "committed": the application ack and, since the
    // broker sends it only after the commit, the MQTT PUBACK itself.
    for (what, file) in [("app ack", &acks_file), ("PUBACK", &pubacks_file)] {
        let mut acked: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for line in std::fs::read_to_string(file).expect("acks").lines() {
            let (meter, seq) = line.split_once(' ').expect("meter seq");
            acked
                .entry(meter.to_owned())
                .or_default()
                .insert(seq.parse().expect("seq"));
        }
        let total: usize = acked.values().map(BTreeSet::len).sum();
        assert!(
            total > 500,
            "{what}: enough acknowledged readings to mean something: {total}"
        );
        for (meter, seqs) in &acked {
            let stored: BTreeSet<i64> = influx
                .rows(&format!(
                    "SELECT seq FROM gas_meter WHERE device = '{meter}'"
                ))
                .iter()
                .map(|r| r[1].as_i64().expect("seq"))
                .collect();
            let lost: Vec<_> = seqs.difference(&stored).collect();
            assert!(
                lost.is_empty(),
                "{meter}: {} readings with a {what} missing from InfluxDB, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            );
        }
    }
}

#[test]
fn bad_input_is_rejected_counted_and_never_blocks_the_stream() {
    let influx = Influx1::start();
    let extra = format!(
        "{}[mqtt]\nmax_payload_bytes = 1024\n[[mqtt.topics]]\nfilter = \"lp/#\"\nformat = \"line_protocol\"\ndevice = \"lp\"\npublishers = [\"SENSOR-1\"]\n[[plant.quantity]]\nname = \"flow.m3h\"\nunit = \"m³/h\"\nkind = \"gauge\"\nmeasurement = \"flow\"\nfield = \"m3h\"\n",
        influx_v1(&influx.url())
    );
    let gw = Gateway::start(&extra, &["GM-0001", "SENSOR-1"]);
    let login = Some(("GM-0001", gw.passwords["GM-0001"].as_str()));
    publish(&gw, "GM-0001", 1, 20);
    gw.wait_drained(Duration::from_secs(20));

    assert!(mosquitto_pub(
        gw.mqtt_port,
        login,
        "meters/GM-0001/state",
        1,
        "{\"meter_id\": \"GM-0001\", oops"
    ));
    assert!(mosquitto_pub(
        gw.mqtt_port,
        login,
        "meters/GM-0001/state",
        1,
        r#"{"meter_id":"GM-0002","seq":1,"kind":"gas","cum_kg":1}"#
    ));
    let big = format!(
        r#"{{"meter_id":"GM-0001","seq":999,"kind":"gas","cum_kg":1,"pad":"{}"}}"#,
        "x".repeat(2000)
    );
    assert!(mosquitto_pub(
        gw.mqtt_port,
        login,
        "meters/GM-0001/state",
        1,
        &big
    ));
    assert!(!mosquitto_pub(
        gw.mqtt_port,
        Some(("GM-0001", "wrong-password")),
        "meters/GM-0001/state",
        1,
        r#"{"meter_id":"GM-0001","seq":1000,"kind":"gas","cum_kg":1}"#
    ));
    assert!(
        !mosquitto_pub(
            gw.mqtt_port,
            None,
            "meters/GM-0001/state",
            1,
            r#"{"meter_id":"GM-0001","seq":1001,"kind":"gas","cum_kg":1}"#
        ),
        "anonymous refused"
    );
    // A point InfluxDB refuses: m3h is a float in flow, this one is a string.
    let sensor = Some(("SENSOR-1", gw.passwords["SENSOR-1"].as_str()));
    assert!(mosquitto_pub(
        gw.mqtt_port,
        sensor,
        "lp/x",
        1,
        &format!(
            "flow,device=f0 m3h=1.0 {}",
            (ts_base() + 499) * 1_000_000_000
        )
    ));
    gw.wait_drained(Duration::from_secs(20));
    assert!(mosquitto_pub(
        gw.mqtt_port,
        sensor,
        "lp/x",
        1,
        &format!(
            "flow,device=f1 m3h=\"lots\" {}\nflow,device=f2 m3h=1.5",
            (ts_base() + 500) * 1_000_000_000
        )
    ));
    // A sensor account may not write a meter's series through line protocol.
    assert!(mosquitto_pub(
        gw.mqtt_port,
        sensor,
        "lp/x",
        1,
        &format!(
            "gas_meter,device=GM-0001 credit_kg=1000 {}",
            (ts_base() + 500) * 1_000_000_000
        )
    ));
    publish(&gw, "GM-0001", 21, 20);
    gw.wait_drained(Duration::from_secs(30));

    assert_eq!(
        gw.metric("gkgw_readings_rejected_total{reason=\"malformed\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("gkgw_readings_rejected_total{reason=\"meter_id_mismatch\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("gkgw_readings_rejected_total{reason=\"oversized\"}"),
        1.0
    );
    assert!(gw.metric("gkgw_broker_auth_total{result=\"rejected\"}") >= 1.0);
    assert_eq!(gw.metric("gkgw_influx_quarantined_total"), 1.0);
    assert_eq!(gw.status()["quarantined"], 1);
    assert_eq!(
        influx.count("gas_meter", "seq"),
        40,
        "every good reading arrived, before and after the bad ones"
    );
    assert_eq!(
        influx.count("flow", "m3h"),
        2,
        "the good line next to the refused one arrived"
    );
    assert_eq!(
        gw.metric("gkgw_readings_rejected_total{reason=\"identity\"}"),
        1.0,
        "the meter series written by a sensor"
    );
    let seqs: BTreeSet<i64> = influx
        .rows("SELECT seq FROM gas_meter")
        .iter()
        .map(|r| r[1].as_i64().expect("seq"))
        .collect();
    assert!(!seqs.contains(&999) && !seqs.contains(&1000) && !seqs.contains(&1001));
    assert!(
        gw.log().contains("influx rejected a line: quarantined"),
        "{}",
        gw.log()
    );
}

/// A tmpfs of a few MB mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u32) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The state directory on a 16 MB filesystem that fills up under a running gateway: it keeps
/// running and the newest readings win: the commit that fails for want of space releases the
/// store's reserve and removes the oldest readings (counted), so the meter's new QoS 1
/// reading is stored and acknowledged, `gateway.disk_full` is raised, the alarms keep firing;
/// when space returns the reserve is made again and the alarm clears, by itself.
#[test]
fn a_full_disk_keeps_the_newest_readings_counts_what_it_drops_and_recovers_by_itself() {
    let disk = SmallDisk::mount(16);
    let mut gw = Gateway::configure_only("", &["GM-0001", "GM-0002"]);
    let old = gw.dir.path().to_path_buf();
    for e in std::fs::read_dir(&old).expect("state dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if p.is_file() && name != "gateway.toml" && name != "gkgw.log" {
            std::fs::copy(&p, disk.path().join(&name)).expect("copy");
        }
    }
    let text = std::fs::read_to_string(&gw.config).expect("config");
    let text = text.replace(
        &format!("state_dir = \"{}\"", old.display()),
        &format!("state_dir = \"{}\"", disk.path().display()),
    );
    let text = text.replace(
        &format!("credentials_file = \"{}/meters.toml\"", old.display()),
        &format!(
            "credentials_file = \"{}/meters.toml\"",
            disk.path().display()
        ),
    );
    // A commit every few ms: the WAL grows fast, as in hours of a real site.
    let text = text.replace("commit_interval_ms = 100\n", "commit_interval_ms = 5\n");
    std::fs::write(&gw.config, format!("{text}[history]\ninterval_ms = 500\n")).expect("config");
    gw.restart();
    let reserve = disk.path().join("store.reserve");
    assert!(reserve.exists(), "the reserve is made at the start");
    assert_eq!(gw.metric("gkgw_store_disk_full"), 0.0);
    let pw = gw.passwords["GM-0001"].clone();
    let reading = |seq: u64, credit: f64| {
        format!(
            r#"{{"meter_id":"GM-0001","seq":{seq},"kind":"gas","cum_kg":1.5,"credit_kg":{credit}}}"#
        )
    };
    // Many readings in one connection, each QoS 1: true once all are acknowledged.
    let port = gw.mqtt_port;
    let publish_many = |seqs: std::ops::RangeInclusive<u64>| {
        let mut publisher = std::process::Command::new(crate::support::require("mosquitto_pub"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-t",
                "meters/GM-0001/state",
                "-q",
                "1",
                "-l",
                "-V",
                "mqttv311",
            ])
            .args(["-u", "GM-0001", "-P", &pw, "-i", "GM-0001"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("mosquitto_pub");
        {
            use std::io::Write as _;
            let mut stdin = publisher.stdin.take().expect("stdin");
            for seq in seqs {
                writeln!(stdin, "{}", reading(seq, 5.0)).expect("line");
            }
        }
        // A reading the gateway never acknowledges leaves mosquitto_pub waiting: fail instead.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = publisher.try_wait().expect("publisher") {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = publisher.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // 100 older readings.
    assert!(publish_many(1..=100));
    let metric = |name: &str| gw.metric(name);
    wait_until(
        "the old readings are stored",
        Duration::from_secs(30),
        || metric("gkgw_readings_accepted_total") >= 100.0,
    );
    let before = metric("gkgw_readings_accepted_total");
    let removed_before =
        metric("gkgw_store_downsampled_total") + metric("gkgw_store_evicted_total");

    // Fill the disk to the last byte.
    let filler = disk.path().join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    assert_eq!(metric("gkgw_disk_free_bytes"), 0.0, "the disk is full");

    // A reading with low credit arrives, and a meter never seen before (its series is new in
    // the batch whose first commit fails): both are stored and acknowledged, the oldest
    // readings making room.
    let (pw2, body) = (pw.clone(), reading(101, 0.2));
    let newest = std::thread::spawn(move || {
        mosquitto_pub(
            port,
            Some(("GM-0001", &pw2)),
            "meters/GM-0001/state",
            1,
            &body,
        )
    });
    let (pw3, first) = (
        gw.passwords["GM-0002"].clone(),
        r#"{"meter_id":"GM-0002","seq":1,"kind":"gas","cum_kg":0.5,"credit_kg":7}"#.to_owned(),
    );
    let new_meter = std::thread::spawn(move || {
        mosquitto_pub(
            port,
            Some(("GM-0002", &pw3)),
            "meters/GM-0002/state",
            1,
            &first,
        )
    });
    wait_until(
        "the newest reading's PUBACK",
        Duration::from_secs(30),
        || newest.is_finished() && new_meter.is_finished(),
    );
    assert!(
        newest.join().expect("publisher"),
        "the newest reading is acknowledged"
    );
    assert!(
        new_meter.join().expect("publisher"),
        "the new meter's first reading too"
    );
    assert_eq!(metric("gkgw_readings_accepted_total"), before + 2.0);
    assert!(
        metric("gkgw_store_errors_total") >= 1.0,
        "a commit failed first"
    );
    assert!(!reserve.exists(), "the reserve was released");
    assert_eq!(metric("gkgw_store_disk_full"), 1.0);
    assert_eq!(metric("gkgw_store_disk_full_total"), 1.0);
    let made = metric("gkgw_store_room_made_total");
    assert!(made >= 25.0, "the oldest quarter made room: {made}");
    assert_eq!(
        metric("gkgw_store_downsampled_total") + metric("gkgw_store_evicted_total")
            - removed_before,
        made,
        "and they are counted as downsampled or evicted"
    );
    wait_until(
        "gateway.disk_full and the low-credit alarm are raised",
        Duration::from_secs(20),
        || {
            let (_, body) = gw.http("GET", &gw.url("/api/alarms"), None);
            body.contains("gateway.disk_full:gateway") && body.contains("meter_low_credit:GM-0001")
        },
    );
    assert_eq!(gw.healthz(), 200, "commits succeed again: healthy");
    // And it keeps going while the disk stays full: 10,000 more readings, hundreds of
    // commits, every one acknowledged; the WAL is kept short and room is made inside the
    // database, so the space the reserve gave back is never used up.
    let accepted = metric("gkgw_readings_accepted_total");
    if !publish_many(10_000..=19_999) {
        let log = gw.log();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!("a reading on the full disk was not acknowledged; the log ends:\n{tail}");
    }
    assert_eq!(metric("gkgw_readings_accepted_total"), accepted + 10_000.0);
    assert!(
        metric("gkgw_disk_free_bytes") > 0.0,
        "the reserve's space is not used up"
    );
    assert_eq!(gw.healthz(), 200);

    // Space comes back: the reserve is made again and the alarm clears.
    std::fs::remove_file(&filler).expect("free the disk");
    assert!(mosquitto_pub(
        gw.mqtt_port,
        Some(("GM-0001", &pw)),
        "meters/GM-0001/state",
        1,
        &reading(102, 5.0)
    ));
    wait_until("the reserve is made again", Duration::from_secs(30), || {
        let _ = mosquitto_pub(
            port,
            Some(("GM-0001", &pw)),
            "meters/GM-0001/state",
            0,
            &reading(103, 5.0),
        );
        reserve.exists() && metric("gkgw_store_disk_full") == 0.0
    });
    wait_until("gateway.disk_full clears", Duration::from_secs(20), || {
        let (_, body) = gw.http("GET", &gw.url("/api/alarms"), None);
        let v: serde_json::Value = serde_json::from_str(&body).expect("alarms json");
        v["active"]
            .as_array()
            .expect("active alarms")
            .iter()
            .all(|a| a["id"] != "gateway.disk_full:gateway" || a["condition"] == false)
    });
    // Nothing the retry refers to was left behind: the aggregator reads every committed
    // reading (one naming a series the store does not hold would stall it).
    wait_until(
        "the aggregator has read everything",
        Duration::from_secs(30),
        || gw.metric("gkgw_consumer_backlog{consumer=\"aggregate\"}") == 0.0,
    );
    assert!(!gw.log().contains("unknown series"), "{}", gw.log());
    assert!(gw
        .proc
        .as_mut()
        .expect("running")
        .child
        .try_wait()
        .expect("wait")
        .is_none());
}
