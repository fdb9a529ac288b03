//! The logbook as a technician uses it: `gkgw logbook add` and `list` against the running
//! gateway, an invalid entry over HTTP answered with every field's error, corrections and
//! withdrawals as revisions, the entry in InfluxDB, and the rows surviving a kill -9.

use std::process::Command;
use std::time::Duration;

use crate::support::{http, ts_base, wait_until, Gateway, Influx1, GKGW};

/// `gkgw logbook ARGS --config …` as user amina: (exit code, stdout, stderr).
fn logbook(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(GKGW)
        .arg("logbook")
        .args(args)
        .arg("--config")
        .arg(&gw.config)
        .env("USER", "amina")
        .output()
        .expect("gkgw logbook");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The table row of `entry` revision `rev` (`ENTRY REV WHEN KIND VALUES BY NOTE`).
fn row<'a>(table: &'a str, entry: &str, rev: &str) -> Option<&'a str> {
    table.lines().find(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some(entry) && w.next() == Some(rev)
    })
}

#[test]
fn a_technician_logs_corrects_and_lists_and_the_entries_survive_a_restart() {
    let influx = Influx1::start();
    let mut gw = Gateway::start(
        &format!(
            "[influx]\nenabled = true\nurl = \"{}\"\nversion = 1\ndatabase = \"gkgw\"\nflush_interval_ms = 200\nmin_backoff_ms = 100\nmax_backoff_ms = 1000\n",
            influx.url()
        ),
        &[],
    );
    let at_s = ts_base() + 8 * 3600;
    let at = chrono::DateTime::from_timestamp(at_s, 0)
        .expect("time")
        .to_rfc3339();

    let (code, out, err) = logbook(
        &gw,
        &[
            "add",
            "--kind",
            "waste_fed",
            "--waste",
            "household",
            "--kg",
            "120",
            "--at",
            &at,
            "--note",
            "morning feed",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("entry 1 recorded\n"), "{out}");

    let (code, out, err) = logbook(&gw, &["add", "--kind", "lab_ph", "--ph", "7.1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("entry 2 recorded\n"), "{out}");

    let (code, out, err) = logbook(&gw, &["list"]);
    assert_eq!(code, 0, "{err}");
    let first = row(&out, "1", "1").unwrap_or_else(|| panic!("no entry 1 in\n{out}"));
    for part in ["waste_fed", "household 120 kg", "amina", "morning feed"] {
        assert!(first.contains(part), "{part:?} missing from {first:?}");
    }
    assert!(
        row(&out, "2", "1").is_some_and(|r| r.contains("pH 7.1")),
        "{out}"
    );

    // An invalid entry: every bad field named, nothing stored.
    let url = format!("http://127.0.0.1:{}/api/logbook", gw.http_port);
    let (status, body) = http(
        "POST",
        &url,
        Some(r#"{"kind":"waste_fed","waste":"leaves","kg":0,"at":"tomorrow"}"#),
    );
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"errors":[
            {"field":"waste","message":"\"leaves\" is not one of household, market, animal, agricultural"},
            {"field":"kg","message":"must be more than 0"},
            {"field":"at","message":"\"tomorrow\" is not an RFC 3339 time such as 2026-12-01T08:00:00+03:00"},
        ]})
    );
    let (code, _, err) = logbook(&gw, &["add", "--kind", "lab_ph", "--ph", "15"]);
    assert_ne!(code, 0);
    assert_eq!(err, "error: ph: 15 is outside 0–14\n");

    // A correction and a withdrawal are revisions; the history keeps all of them.
    let (code, out, err) = logbook(&gw, &["revise", "1", "--kg", "130", "--by", "baraka"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("entry 1 corrected (revision 2)\n"), "{out}");
    let (code, _, err) = logbook(&gw, &["withdraw", "2", "--reason", "wrong probe"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = {
        let (c, _, e) = logbook(&gw, &["revise", "2", "--ph", "7.0"]);
        (c, e)
    };
    assert_ne!(code, 0);
    assert_eq!(err, "error: entry: entry 2 is withdrawn\n");

    let (_, out, _) = logbook(&gw, &["list"]);
    assert!(
        row(&out, "1", "2").is_some_and(|r| r.contains("household 130 kg") && r.contains("baraka")),
        "{out}"
    );
    assert!(
        row(&out, "1", "1").is_none() && row(&out, "2", "1").is_none(),
        "{out}"
    );
    let (_, history, _) = logbook(&gw, &["list", "--history"]);
    assert!(
        row(&history, "1", "1").is_some_and(|r| r.contains("120 kg")),
        "{history}"
    );
    assert!(
        row(&history, "1", "2").is_some_and(|r| r.contains("130 kg")),
        "{history}"
    );
    assert!(
        row(&history, "2", "2").is_some_and(|r| r.contains("WITHDRAWN: wrong probe")),
        "{history}"
    );

    // InfluxDB has the entry at its own time, the correction overwriting the first revision.
    let q = "SELECT kg, revision, withdrawn FROM logbook WHERE kind = 'waste_fed'";
    wait_until("the logbook in InfluxDB", Duration::from_secs(20), || {
        influx
            .rows_ns(q)
            .first()
            .is_some_and(|r| r.get(2) == Some(&serde_json::json!(2)))
    });
    let rows = influx.rows_ns(q);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0],
        vec![
            serde_json::json!(at_s * 1_000_000_000),
            serde_json::json!(130),
            serde_json::json!(2),
            serde_json::json!(false)
        ]
    );

    // kill -9 and start again: every revision is still there.
    gw.proc.take();
    let (code, _, err) = logbook(&gw, &["list"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "no gateway answers at http://127.0.0.1:{}",
            gw.http_port
        )),
        "{err}"
    );
    gw.restart();
    let (code, after, err) = logbook(&gw, &["list", "--history"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(after, history);
}
