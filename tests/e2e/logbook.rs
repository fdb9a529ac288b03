//! The logbook as a technician uses it: `gkgw logbook add` and `list` against the running
//! gateway, an invalid entry over HTTP answered with every field's error, corrections and
//! withdrawals as revisions, the entry in InfluxDB, and the rows surviving a kill -9.

use std::process::Command;
use std::time::Duration;

use crate::support::{ts_base, wait_until, Gateway, Influx1, GKGW};

/// `gkgw logbook ARGS --config …` with the token of `user` (a file in the test's directory,
/// named by GKGW_TOKEN_FILE; "" for none): (exit code, stdout, stderr).
fn logbook_as(gw: &Gateway, user: &str, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(GKGW);
    c.arg("logbook").args(args).arg("--config").arg(&gw.config);
    if user.is_empty() {
        c.env_remove("GKGW_TOKEN_FILE");
    } else {
        c.env(
            "GKGW_TOKEN_FILE",
            gw.dir.path().join(format!("{user}.token")),
        );
    }
    let out = c.output().expect("gkgw logbook");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// As the manager amina.
fn logbook(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    logbook_as(gw, "amina", args)
}

/// A user with its token in `{dir}/{name}.token`.
fn user(gw: &Gateway, name: &str, role: &str) {
    let token = gw.add_user(name, role, &format!("{name}-password"));
    std::fs::write(gw.dir.path().join(format!("{name}.token")), token).expect("token file");
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
    user(&gw, "amina", "manager");
    user(&gw, "baraka", "manager");
    user(&gw, "juma", "viewer");
    // No token: the CLI says how to get one; a viewer's token reads but does not write.
    let (code, _, err) = logbook_as(&gw, "", &["list"]);
    assert_ne!(code, 0);
    assert!(err.contains("gkgw user token"), "{err}");
    let (code, _, err) = logbook_as(&gw, "juma", &["add", "--kind", "lab_ph", "--ph", "7"]);
    assert_ne!(code, 0);
    assert!(err.contains("403") && err.contains("manager"), "{err}");
    let (code, _, err) = logbook_as(&gw, "juma", &["list"]);
    assert_eq!(code, 0, "{err}");

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
    let (status, body) = gw.http(
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
    let (code, out, err) = logbook_as(&gw, "baraka", &["revise", "1", "--kg", "130"]);
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
    // Who wrote what is in the audit log.
    let out = Command::new(GKGW)
        .args(["audit", "list", "--config"])
        .arg(&gw.config)
        .output()
        .expect("gkgw audit list");
    let audit = String::from_utf8_lossy(&out.stdout);
    for (who, action) in [
        ("amina", "logbook_added"),
        ("baraka", "logbook_revised"),
        ("amina", "logbook_withdrawn"),
    ] {
        assert!(
            audit.lines().any(|l| l.contains(who) && l.contains(action)),
            "{who} {action}:\n{audit}"
        );
    }
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
