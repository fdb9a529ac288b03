//! The alarms' part of the store: every transition (`alarm_events`, one row per sequence
//! number, never changed) and the state of every alarm not in the normal state
//! (`alarm_state`, replaced as a whole with each save), so a restart never silently clears an
//! active or unacknowledged alarm.
//!
//! Written by the alarm task's persister only, on its own connection, in one transaction per
//! save; read by the web (history) and the InfluxDB writer (cursor `influx.alarms` over `seq`).

use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::{open, Result};
use crate::alarm::{Action, Event, Persisted, Severity, State};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alarm_events(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, rule TEXT NOT NULL, instance TEXT NOT NULL, severity TEXT NOT NULL, action TEXT NOT NULL, state TEXT NOT NULL, value REAL, shelved INTEGER NOT NULL, \"by\" TEXT, note TEXT);
CREATE INDEX IF NOT EXISTS alarm_events_alarm ON alarm_events(rule, instance, seq);
CREATE TABLE IF NOT EXISTS alarm_state(rule TEXT NOT NULL, instance TEXT NOT NULL, severity TEXT NOT NULL, active INTEGER NOT NULL, acked INTEGER NOT NULL, latched INTEGER NOT NULL, shelved_until INTEGER, silenced INTEGER NOT NULL, since INTEGER NOT NULL, value REAL, PRIMARY KEY(rule, instance));
CREATE TRIGGER IF NOT EXISTS alarm_events_never_updated BEFORE UPDATE ON alarm_events BEGIN SELECT RAISE(ABORT, 'alarm events are never changed'); END;
";

pub struct Alarms {
    conn: Connection,
}

fn state_of(s: &str) -> State {
    match s {
        "active_unacknowledged" => State::ActiveUnacknowledged,
        "active_acknowledged" => State::ActiveAcknowledged,
        "cleared_unacknowledged" => State::ClearedUnacknowledged,
        _ => State::Normal,
    }
}

fn event_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let rule: String = r.get(2)?;
    let instance: String = r.get(3)?;
    let severity: String = r.get(4)?;
    let action: String = r.get(5)?;
    let state: String = r.get(6)?;
    Ok(Event {
        seq: r.get::<_, i64>(0)? as u64,
        ts_ns: r.get(1)?,
        rule: Arc::from(rule),
        instance: Arc::from(instance),
        severity: Severity::parse(&severity).unwrap_or_default(),
        action: Action::parse(&action).unwrap_or(Action::Raised),
        state: state_of(&state),
        value: r.get(7)?,
        shelved: r.get(8)?,
        by: r.get(9)?,
        note: r.get(10)?,
    })
}

/// Events after `seq`, oldest first, on any connection (the uplink's outbox).
pub(super) fn events_after(conn: &Connection, seq: u64, limit: usize) -> Result<Vec<Event>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM alarm_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
    ))?;
    let rows = st.query_map(params![seq as i64, limit as i64], event_of)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn insert_events(tx: &rusqlite::Transaction<'_>, events: &[Event]) -> Result<()> {
    let mut ins = tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO alarm_events({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?;
    for e in events {
        ins.execute(params![
            e.seq as i64,
            e.ts_ns,
            &*e.rule,
            &*e.instance,
            e.severity.as_str(),
            e.action.as_str(),
            e.state.as_str(),
            e.value.filter(|v| v.is_finite()),
            e.shelved,
            e.by,
            e.note
        ])?;
    }
    Ok(())
}

const COLUMNS: &str =
    "seq, ts, rule, instance, severity, action, state, value, shelved, \"by\", note";

impl Alarms {
    pub fn open(path: &Path) -> Result<Alarms> {
        let conn = open(path)?;
        conn.execute_batch(super::SCHEMA)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Alarms { conn })
    }

    /// Appends `events` (a sequence number already stored is skipped: a retried save) and
    /// replaces the saved state with `state`, in one transaction.
    pub fn save(&mut self, events: &[Event], state: &[Persisted]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_events(&tx, events)?;
        {
            tx.execute("DELETE FROM alarm_state", [])?;
            let mut st = tx.prepare_cached(
                "INSERT INTO alarm_state(rule, instance, severity, active, acked, latched, shelved_until, silenced, since, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for p in state {
                st.execute(params![
                    p.rule,
                    p.instance,
                    p.severity.as_str(),
                    p.active,
                    p.acked,
                    p.latched,
                    p.shelved_until,
                    p.silenced,
                    p.since_ns,
                    p.value.filter(|v| v.is_finite())
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends `events` only (the state unchanged).
    pub fn save_events(&mut self, events: &[Event]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_events(&tx, events)?;
        tx.commit()?;
        Ok(())
    }

    /// The InfluxDB writer's position: the last sequence number it delivered.
    pub fn cursor(&self) -> Result<u64> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'influx_alarms_seq'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    pub fn set_cursor(&self, seq: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('influx_alarms_seq', ?1)",
            [seq as i64],
        )?;
        Ok(())
    }

    /// The saved state and the next sequence number.
    pub fn load(&self) -> Result<(Vec<Persisted>, u64)> {
        let mut st = self.conn.prepare(
            "SELECT rule, instance, severity, active, acked, latched, shelved_until, silenced, since, value FROM alarm_state ORDER BY rule, instance",
        )?;
        let rows = st.query_map([], |r| {
            let severity: String = r.get(2)?;
            Ok(Persisted {
                rule: r.get(0)?,
                instance: r.get(1)?,
                severity: Severity::parse(&severity).unwrap_or_default(),
                active: r.get(3)?,
                acked: r.get(4)?,
                latched: r.get(5)?,
                shelved_until: r.get(6)?,
                silenced: r.get(7)?,
                since_ns: r.get(8)?,
                value: r.get(9)?,
            })
        })?;
        let saved = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        let last: Option<i64> = self
            .conn
            .query_row("SELECT MAX(seq) FROM alarm_events", [], |r| r.get(0))
            .optional()?
            .flatten();
        Ok((saved, last.map_or(1, |s| s as u64 + 1)))
    }

    /// The newest events, newest first; of one alarm when `alarm` is given.
    pub fn recent(&self, alarm: Option<(&str, &str)>, limit: usize) -> Result<Vec<Event>> {
        let limit = limit.min(10_000) as i64;
        match alarm {
            Some((rule, instance)) => {
                let mut st = self.conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM alarm_events WHERE rule = ?1 AND instance = ?2 ORDER BY seq DESC LIMIT ?3"
                ))?;
                let rows = st.query_map(params![rule, instance, limit], event_of)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            None => {
                let mut st = self.conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM alarm_events ORDER BY seq DESC LIMIT ?1"
                ))?;
                let rows = st.query_map(params![limit], event_of)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
        }
    }

    /// Events after `seq`, oldest first (the InfluxDB writer's cursor).
    pub fn after(&self, seq: u64, limit: usize) -> Result<Vec<Event>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM alarm_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = st.query_map(params![seq as i64, limit as i64], event_of)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, action: Action) -> Event {
        Event {
            seq,
            ts_ns: 1_000 + seq as i64,
            rule: "over".into(),
            instance: "d1".into(),
            severity: Severity::Alarm,
            action,
            state: State::ActiveUnacknowledged,
            value: Some(55.0),
            shelved: false,
            by: (action == Action::Acknowledged).then(|| "amina".into()),
            note: None,
        }
    }

    #[test]
    fn events_and_state_survive_a_reopen_and_a_retried_save_is_harmless() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = super::super::db_path(dir.path());
        let mut a = Alarms::open(&path).expect("open");
        assert_eq!(a.load().expect("load"), (Vec::new(), 1));
        let state = vec![Persisted {
            rule: "over".into(),
            instance: "d1".into(),
            severity: Severity::Alarm,
            active: true,
            acked: false,
            latched: false,
            shelved_until: Some(5),
            silenced: true,
            since_ns: 1001,
            value: Some(55.0),
        }];
        let evs = [event(1, Action::Raised), event(2, Action::Acknowledged)];
        a.save(&evs, &state).expect("save");
        a.save(&evs[1..], &state).expect("retried save");
        drop(a);
        let a = Alarms::open(&path).expect("reopen");
        let (saved, next) = a.load().expect("load");
        assert_eq!(saved, state);
        assert_eq!(next, 3);
        let recent = a.recent(None, 10).expect("recent");
        assert_eq!(recent.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(recent[0], evs[1]);
        assert_eq!(a.after(1, 10).expect("after"), vec![evs[1].clone()]);
        assert_eq!(a.recent(Some(("over", "d2")), 10).expect("one").len(), 0);
        assert!(a
            .conn
            .execute("UPDATE alarm_events SET note = 'x'", [])
            .is_err());
    }
}
