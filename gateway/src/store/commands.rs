//! The commands' audit log (issue 12): every command the gateway accepted (`commands`, one
//! row per command id, with the signed JWS as it came) and every outcome, refusals included
//! (`command_events`, one row per event). Both are append-only: triggers abort any UPDATE or
//! DELETE, so the log is evidence of what reached the meters and what was refused.
//!
//! `command_events.row` is `AUTOINCREMENT`: it only grows and is never reused, so the uplink
//! can read [`Commands::outcomes_after`] with its own cursor. A command id in `commands` is
//! "seen": a second command with that id is refused as `replayed`, across restarts.
//!
//! Written by the command relay only, on its own connection, one `IMMEDIATE` transaction per
//! write; read by the web (`/api/commands`) and the uplink.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{open, Result};
use crate::commands::{Outcome, Reason};
use crate::metrics::LabelValue;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS commands(id TEXT PRIMARY KEY, meter TEXT NOT NULL, kind TEXT NOT NULL, args TEXT NOT NULL, iat INTEGER NOT NULL, exp INTEGER NOT NULL, received INTEGER NOT NULL, via TEXT NOT NULL, jws TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS command_events(row INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, id TEXT, meter TEXT, kind TEXT, outcome TEXT NOT NULL, reason TEXT, detail TEXT, credit REAL, via TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS command_events_id ON command_events(id, row);
CREATE TRIGGER IF NOT EXISTS commands_never_updated BEFORE UPDATE ON commands BEGIN SELECT RAISE(ABORT, 'the command log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS commands_never_deleted BEFORE DELETE ON commands BEGIN SELECT RAISE(ABORT, 'the command log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS command_events_never_updated BEFORE UPDATE ON command_events BEGIN SELECT RAISE(ABORT, 'the command log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS command_events_never_deleted BEFORE DELETE ON command_events BEGIN SELECT RAISE(ABORT, 'the command log is append-only'); END;
";

/// Outcomes after which nothing more happens to a command.
const TERMINAL: &str = "('applied', 'rejected', 'expired')";

/// One event of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub row: i64,
    pub ts_ns: i64,
    /// None for a refusal before the payload could be read (unsigned, bad signature, malformed).
    pub id: Option<String>,
    pub meter: Option<String>,
    pub kind: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    /// The meter's answer (applied/rejected).
    pub detail: Option<String>,
    pub credit: Option<f64>,
    /// Where the command came from: `https`, `mqtt`, `http` (the local API).
    pub via: String,
}

/// What an event says, before it is written.
#[derive(Debug, Clone, Default)]
pub struct NewEvent<'a> {
    pub id: Option<&'a str>,
    pub meter: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub reason: Option<Reason>,
    pub detail: Option<&'a str>,
    pub credit: Option<f64>,
    pub via: &'a str,
}

/// An accepted command, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: String,
    pub meter: String,
    pub kind: String,
    /// The arguments' JSON object.
    pub args: String,
    pub iat: i64,
    pub exp: i64,
    pub received_ns: i64,
    pub via: String,
    /// The newest outcome (`accepted` until the meter's session got it).
    pub last: Outcome,
    pub detail: Option<String>,
    pub credit: Option<f64>,
}

pub struct Commands {
    conn: Connection,
}

const EVENT_COLUMNS: &str = "row, ts, id, meter, kind, outcome, reason, detail, credit, via";

/// Events after `row`, oldest first, on any connection (the uplink's outbox reads them in its
/// own transaction).
pub(super) fn events_after_in(conn: &Connection, row: i64, limit: usize) -> Result<Vec<Event>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM command_events WHERE row > ?1 ORDER BY row LIMIT ?2"
    ))?;
    let rows = st.query_map(params![row, limit as i64], event_of)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest `limit` events, newest first, on any connection (`gkgw audit list` reads them
/// with the people's audit log, `store::users`).
pub(super) fn recent_events_in(conn: &Connection, limit: usize) -> Result<Vec<Event>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM command_events ORDER BY row DESC LIMIT ?1"
    ))?;
    let rows = st.query_map(params![limit as i64], event_of)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many accepted commands have no final outcome yet, on any connection.
pub(super) fn pending_in(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM commands c WHERE NOT EXISTS (SELECT 1 FROM command_events e WHERE e.id = c.id AND e.outcome IN {TERMINAL})"
        ),
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

fn event_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let outcome: String = r.get(5)?;
    let reason: Option<String> = r.get(6)?;
    Ok(Event {
        row: r.get(0)?,
        ts_ns: r.get(1)?,
        id: r.get(2)?,
        meter: r.get(3)?,
        kind: r.get(4)?,
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Refused),
        reason: reason.as_deref().and_then(Reason::parse),
        detail: r.get(7)?,
        credit: r.get(8)?,
        via: r.get(9)?,
    })
}

fn insert_event(
    tx: &Connection,
    ts_ns: i64,
    outcome: Outcome,
    e: &NewEvent<'_>,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO command_events(ts, id, meter, kind, outcome, reason, detail, credit, via) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        ts_ns,
        e.id,
        e.meter,
        e.kind,
        outcome.as_str(),
        e.reason.map(LabelValue::as_str),
        e.detail,
        e.credit.filter(|c| c.is_finite()),
        e.via
    ])?;
    Ok(tx.last_insert_rowid())
}

/// What [`Commands::accept`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored, with its `accepted` event at this row.
    New(i64),
    /// The id was seen before; the refusal is logged at this row.
    Replayed(i64),
}

/// A command to store (its signature and fields were checked).
#[derive(Debug, Clone, Copy)]
pub struct ToAccept<'a> {
    pub id: &'a str,
    pub meter: &'a str,
    pub kind: &'a str,
    pub args: &'a str,
    pub iat: i64,
    pub exp: i64,
    pub jws: &'a str,
    pub via: &'a str,
}

impl Commands {
    pub fn open(path: &Path) -> Result<Commands> {
        let conn = open(path)?;
        conn.execute_batch(super::SCHEMA)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Commands { conn })
    }

    /// Stores a new command and its `accepted` event, or, if its id was seen, logs it as
    /// `refused`/`replayed`; one transaction, so two deliveries of one id cannot both pass.
    pub fn accept(&mut self, c: &ToAccept<'_>, now_ns: i64) -> Result<Accepted> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let seen = tx
            .query_row("SELECT 1 FROM commands WHERE id = ?1", [c.id], |_| Ok(()))
            .optional()?
            .is_some();
        let event = NewEvent {
            id: Some(c.id),
            meter: Some(c.meter),
            kind: Some(c.kind),
            via: c.via,
            ..NewEvent::default()
        };
        let result = if seen {
            Accepted::Replayed(insert_event(
                &tx,
                now_ns,
                Outcome::Refused,
                &NewEvent {
                    reason: Some(Reason::Replayed),
                    ..event
                },
            )?)
        } else {
            tx.execute(
                "INSERT INTO commands(id, meter, kind, args, iat, exp, received, via, jws) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![c.id, c.meter, c.kind, c.args, c.iat, c.exp, now_ns, c.via, c.jws],
            )?;
            Accepted::New(insert_event(&tx, now_ns, Outcome::Accepted, &event)?)
        };
        tx.commit()?;
        Ok(result)
    }

    /// Appends one event; returns its row.
    pub fn record(&mut self, outcome: Outcome, e: &NewEvent<'_>, now_ns: i64) -> Result<i64> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row = insert_event(&tx, now_ns, outcome, e)?;
        tx.commit()?;
        Ok(row)
    }

    /// Events after `row`, oldest first, at most `limit`: the uplink's cursor reads.
    pub fn outcomes_after(&self, row: i64, limit: usize) -> Result<Vec<Event>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM command_events WHERE row > ?1 ORDER BY row LIMIT ?2"
        ))?;
        let rows = st.query_map(params![row, limit as i64], event_of)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest `limit` events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>> {
        recent_events_in(&self.conn, limit)
    }

    fn stored(&self, filter: &str, limit: usize) -> Result<Vec<Stored>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT c.id, c.meter, c.kind, c.args, c.iat, c.exp, c.received, c.via, e.outcome, e.detail, e.credit
             FROM commands c JOIN command_events e ON e.row = (SELECT max(row) FROM command_events WHERE id = c.id AND outcome != 'refused')
             {filter} ORDER BY c.received DESC, c.rowid DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit as i64], |r| {
            let last: String = r.get(8)?;
            Ok(Stored {
                id: r.get(0)?,
                meter: r.get(1)?,
                kind: r.get(2)?,
                args: r.get(3)?,
                iat: r.get(4)?,
                exp: r.get(5)?,
                received_ns: r.get(6)?,
                via: r.get(7)?,
                last: Outcome::parse(&last).unwrap_or(Outcome::Accepted),
                detail: r.get(9)?,
                credit: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest `limit` accepted commands, newest first, each with its newest outcome.
    pub fn recent(&self, limit: usize) -> Result<Vec<Stored>> {
        self.stored("", limit)
    }

    /// Accepted commands with no final outcome yet (the relay resends them after a restart).
    pub fn open_commands(&self) -> Result<Vec<Stored>> {
        self.stored(
            &format!("WHERE e.outcome NOT IN {TERMINAL}"),
            i64::MAX as usize,
        )
    }

    /// How many accepted commands have no final outcome yet.
    pub fn pending(&self) -> Result<u64> {
        pending_in(&self.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd<'a>(id: &'a str) -> ToAccept<'a> {
        ToAccept {
            id,
            meter: "GM-0001",
            kind: "valve",
            args: r#"{"state":"open"}"#,
            iat: 1,
            exp: 2,
            jws: "h.p.s",
            via: "http",
        }
    }

    #[test]
    fn the_log_is_append_only_and_ids_are_seen_across_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("store.db");
        let mut c = Commands::open(&db).expect("open");
        assert_eq!(c.accept(&cmd("a"), 10).expect("accept"), Accepted::New(1));
        assert_eq!(c.pending().expect("pending"), 1);
        let e = NewEvent {
            id: Some("a"),
            meter: Some("GM-0001"),
            kind: Some("valve"),
            via: "http",
            ..NewEvent::default()
        };
        c.record(Outcome::Delivered, &e, 11).expect("delivered");
        assert_eq!(c.open_commands().expect("open").len(), 1);
        c.record(
            Outcome::Applied,
            &NewEvent {
                detail: Some("ok"),
                credit: Some(3.5),
                ..e.clone()
            },
            12,
        )
        .expect("applied");
        assert_eq!(c.pending().expect("pending"), 0);
        assert!(c.open_commands().expect("open").is_empty());
        drop(c);
        let mut c = Commands::open(&db).expect("reopen");
        assert_eq!(
            c.accept(&cmd("a"), 13).expect("again"),
            Accepted::Replayed(4)
        );
        c.record(
            Outcome::Refused,
            &NewEvent {
                reason: Some(Reason::BadSignature),
                via: "mqtt",
                ..NewEvent::default()
            },
            14,
        )
        .expect("refused");
        let all = c.outcomes_after(0, 100).expect("after");
        let got: Vec<(i64, Outcome, Option<Reason>)> =
            all.iter().map(|e| (e.row, e.outcome, e.reason)).collect();
        assert_eq!(
            got,
            [
                (1, Outcome::Accepted, None),
                (2, Outcome::Delivered, None),
                (3, Outcome::Applied, None),
                (4, Outcome::Refused, Some(Reason::Replayed)),
                (5, Outcome::Refused, Some(Reason::BadSignature)),
            ]
        );
        assert_eq!(c.outcomes_after(3, 1).expect("page")[0].row, 4);
        let recent = c.recent(10).expect("recent");
        assert_eq!(recent.len(), 1);
        assert_eq!(
            recent[0].last,
            Outcome::Applied,
            "a replay does not change it"
        );
        assert_eq!(recent[0].credit, Some(3.5));
        assert!(c
            .conn
            .execute("UPDATE command_events SET outcome = 'applied'", [])
            .is_err());
        assert!(c.conn.execute("DELETE FROM command_events", []).is_err());
        assert!(c.conn.execute("DELETE FROM commands", []).is_err());
    }
}
