//! The aggregator and the history (issue 10) through the real binary: SIGKILL during the
//! aggregation gives the same windows as an uninterrupted run, and `/api/history` answers from
//! raw readings or windows by the span.

use std::time::Duration;

use crate::support::{paho, ts_base, wait_until, Gateway};

const METERS: [&str; 8] = [
    "GM-0001", "GM-0002", "GM-0003", "GM-0004", "GM-0005", "GM-0006", "GM-0007", "GM-0008",
];
const PER_METER: usize = 2_500;

/// One stored window: width, start, quantity, instance, changed, packed statistics.
type WindowRow = (i64, i64, String, String, i64, Vec<u8>);

/// Every window row with its series' names, and the aggregator's cursor.
fn windows(state: &std::path::Path) -> (Vec<WindowRow>, i64) {
    let c = rusqlite::Connection::open(state.join("store.db")).expect("open the store");
    let mut st = c
        .prepare("SELECT w.width, w.start, s.quantity, s.instance, w.changed, w.stats FROM windows w JOIN agg_series s ON s.id = w.series ORDER BY 1, 2, 3, 4")
        .expect("prepare");
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows");
    let cursor = c
        .query_row(
            "SELECT position FROM cursors WHERE consumer = 'aggregate'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    (rows, cursor)
}

fn aggregated(gw: &Gateway) -> bool {
    gw.status()["consumers"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["name"] == "aggregate" && c["backlog"] == 0)
    })
}

fn copy_state(from: &std::path::Path, to: &std::path::Path) {
    for f in ["store.db", "store.db-wal"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).expect("copy the store");
        }
    }
}

#[test]
fn sigkill_during_aggregation_gives_the_windows_of_an_uninterrupted_run() {
    // The aggregator runs at start-up and then only every 10 minutes: the readings pile up;
    // it commits every 1,000 of them, so a kill can land between two commits.
    let config = "[history]\ninterval_ms = 600000\nstep_readings = 1000\n";
    let mut gw = Gateway::start(config, &METERS);
    let base = ts_base().to_string();
    let count = PER_METER.to_string();
    let publishers: Vec<_> = METERS
        .iter()
        .map(|m| {
            let mut args = gw.paho_args(m);
            args.extend(
                [
                    "--meters",
                    m,
                    "--count",
                    &count,
                    "--ts-base",
                    &base,
                    "--wait-acks",
                    "60",
                ]
                .map(String::from),
            );
            std::thread::spawn(move || paho(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        })
        .collect();
    for p in publishers {
        let (summary, code) = p.join().expect("publisher");
        assert_eq!(code, 0, "every reading acked: {summary}");
    }
    let total = (METERS.len() * PER_METER) as i64;
    // Killed before any aggregation step saw them (the readings are committed).
    gw.proc.as_mut().expect("running").kill9();
    assert_eq!(windows(gw.dir.path()).1, 0);
    let mut reference = Gateway::configure_only(config, &[]);
    copy_state(gw.dir.path(), reference.dir.path());
    // The copied store has gw's users: its admin token, not the one made for `reference`.
    reference.token = gw.token.clone();

    // This one is killed as soon as it answers, several times, mid-aggregation.
    let mut cursors = Vec::new();
    for _ in 0..4 {
        gw.restart();
        gw.proc.as_mut().expect("running").kill9();
        cursors.push(windows(gw.dir.path()).1);
    }
    gw.restart();
    wait_until(
        "the aggregator to catch up",
        Duration::from_secs(60),
        || aggregated(&gw),
    );
    assert!(
        cursors.iter().any(|c| *c > 0 && *c < total),
        "at least one kill landed mid-aggregation: cursors {cursors:?} of {total}"
    );

    reference.restart();
    wait_until("the reference to catch up", Duration::from_secs(60), || {
        aggregated(&reference)
    });

    // /api/history on the uninterrupted one: raw readings for a short span in many points,
    // minute windows for the whole span in few.
    let from_ms = ts_base() * 1000;
    let to_ms = from_ms + (PER_METER as i64 + 1) * 1000;
    let get = |quantity: &str, points: usize| {
        let (code, body) = reference.http(
            "GET",
            &format!(
                "http://127.0.0.1:{}/api/history?quantity={quantity}&instance=GM-0003&from={from_ms}&to={to_ms}&points={points}",
                reference.http_port
            ),
            None,
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };
    let raw = get("meter.credit", 2_600);
    let minutes = get("meter.credit", 20);
    let used = get("meter.gas_used", 3);
    assert_eq!(raw["source"], "raw", "{raw}");
    assert_eq!(minutes["source"], "1m", "{minutes}");
    assert_eq!(raw["unit"], "kg");
    let sum = |v: &serde_json::Value, k: &str| -> f64 {
        v["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p[k].as_f64().unwrap_or(0.0))
            .sum()
    };
    assert_eq!(sum(&raw, "count"), PER_METER as f64);
    assert_eq!(sum(&minutes, "count"), PER_METER as f64);
    assert!(minutes["points"].as_array().expect("points").len() <= 20);
    // meter.py's cum_kg is seq × 0.01: 24.99 kg between the first and the last reading.
    assert!((sum(&used, "delta") - 24.99).abs() < 1e-6, "{used}");
    assert_eq!(
        used["points"][0]["t"].as_str().map(|t| t.ends_with('Z')),
        Some(true)
    );
    let (code, body) = reference.http(
        "GET",
        &format!(
            "http://127.0.0.1:{}/api/history?quantity=meter.valve&instance=GM-0003",
            reference.http_port
        ),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("only gauges and counters"), "{body}");

    gw.proc.as_mut().expect("running").signal("TERM");
    reference.proc.as_mut().expect("running").signal("TERM");
    for g in [&mut gw, &mut reference] {
        g.proc
            .as_mut()
            .expect("running")
            .wait_timeout(Duration::from_secs(20));
    }
    let (a, ca) = windows(gw.dir.path());
    let (b, cb) = windows(reference.dir.path());
    assert_eq!((ca, cb), (total, total));
    // 8 meters × 4 numeric quantities × (42 minutes + 1 hour) windows.
    assert!(a.len() >= 8 * 4 * 43, "{} windows", a.len());
    assert!(a == b, "the windows differ after the kills");
}
