//! The one clock, end to end: the gateway runs in-process (`topology::start_with`) on a fake
//! clock that boots two years behind and unsynchronised, then steps at "NTP sync"; meters
//! publish through the real broker with mosquitto_pub, and the store holds the right times.

use std::time::Duration;

use gkgw::clock::{Clock, FakeTime};
use gkgw::model::{Quality, Value};

use crate::support::{mosquitto_pub, Gateway};

const S: i64 = 1_000_000_000;
const YEAR: i64 = 365 * 24 * 3600 * S;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_taken_before_ntp_sync_are_restamped_and_marked_in_the_store() {
    let g = Gateway::configure_only("", &["GM-1"]);
    let pw = g.passwords["GM-1"].clone();
    let config = gkgw::config::Config::load(&g.config).expect("config");
    let now = gkgw::clock::wall_ns();
    let fake = FakeTime::new(now - 2 * YEAR, false);
    let clock = Clock::new(fake.clone());
    let gw = gkgw::topology::start_with(config, clock.clone())
        .await
        .expect("gateway starts");
    let port = gw.mqtt_addrs[0].port();
    let publish = |seq: u64, ts: Option<String>| {
        let pw = pw.clone();
        async move {
            let ts = ts.map_or(String::new(), |t| format!(r#""ts":{t},"#));
            let payload =
                format!(r#"{{"meter_id":"GM-1","seq":{seq},{ts}"kind":"gas","cum_kg":{seq}}}"#);
            let ok = tokio::task::spawn_blocking(move || {
                mosquitto_pub(port, Some(("GM-1", &pw)), "meters/GM-1/state", 1, &payload)
            })
            .await
            .expect("mosquitto_pub ran");
            assert!(ok, "mosquitto_pub {seq}");
        }
    };
    let db = gkgw::store::db_path(g.dir.path());
    let stored = || {
        let mut r = gkgw::store::Reader::open(&db).expect("reader");
        r.read_after(0, 100)
            .expect("read")
            .into_iter()
            .map(|s| {
                let seq = s
                    .reading
                    .fields
                    .iter()
                    .find_map(|(k, v)| match (k.as_str(), v) {
                        ("seq", Value::Int(i)) => Some(*i),
                        _ => None,
                    });
                (seq.expect("seq"), s.reading.ts_ns, s.reading.quality)
            })
            .collect::<Vec<_>>()
    };
    let wait_for = |n: usize| async move {
        for _ in 0..200 {
            if stored().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} readings were not committed");
    };

    // QoS 1: mosquitto_pub returns after the PUBACK, which comes after the commit.
    publish(1, None).await;
    // The meter's own clock is right: two years "ahead" of ours, accepted while unsynced.
    publish(2, Some(format!("{}", now / S))).await;
    wait_for(2).await;
    fake.advance(5 * S);
    fake.step(2 * YEAR);
    fake.set_synced(true);
    publish(3, None).await;
    wait_for(3).await;
    gw.stop(Duration::from_secs(10)).await;

    let got = stored();
    // The status moved on by the time the test reads it; compare against the fake's own times.
    assert_eq!(
        got,
        vec![
            (1, got[0].1, Quality::Restamped),
            (2, now / S * S, Quality::Good),
            (3, got[2].1, Quality::Good),
        ]
    );
    let (first, third) = (got[0].1, got[2].1);
    assert!(
        (now..now + 5 * S).contains(&first),
        "re-stamped into the true time: {} s off",
        (first - now) as f64 / 1e9
    );
    assert!(third - first >= 5 * S && third - first < 6 * S);
    let st = clock.status();
    assert_eq!((st.synced, st.steps, st.restamped), (true, 1, 1));
}
