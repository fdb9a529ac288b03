//! The logbook's table in `store.db`: every revision of every entry, appended, never changed.
//!
//! # On disk
//! `logbook(id INTEGER PRIMARY KEY, entry, revision, kind, at_ns, recorded_ns, "by",
//! withdrawn, body)`, created by the store's schema setup (`super::SCHEMA`), so a store opened by
//! the [`super::Writer`], a [`super::Reader`] or a [`Logbook`] has it.
//! - `id` grows by one per revision in commit order: the position of a durable consumer
//!   ([`Logbook::after`], cursors named by [`cursor_name`] in the `cursors` table).
//! - `entry` is the `id` of the entry's first revision; `(entry, revision)` is unique, revisions
//!   count 1, 2, … per entry.
//! - `kind` is [`Kind::as_str`]; `withdrawn` 0 or 1; `body` a JSON object with the values
//!   (`waste`, `kg`, `litres`, `count`, `ph`, `ratio`, `text`, those the kind has), `note` and,
//!   for a withdrawal, `reason`. Written and read here only (a boundary format, like the
//!   readings' codec).
//! - Triggers in the schema abort any statement that changes or removes a row: the audit
//!   trail is kept by the database too, not only by this module having no such statement.
//!
//! # Guarantees
//! - Durable on return: each add or revision is one `IMMEDIATE` transaction on this
//!   connection; the store runs WAL with `synchronous = FULL`, so `COMMIT` has fsynced.
//!   SQLite serialises it with the readings' writer (the store's `busy_timeout` waits for it).
//! - A revision is checked (edit window, not withdrawn, values) inside the transaction that
//!   appends it, so two corrections at once cannot both become revision 2.
//!
//! # The read API (what the KPI engine and the consumers call)
//! - [`Logbook::list`]`(from_ns, to_ns, include_history)`: the current revision of each entry
//!   whose `at` is in `[from_ns, to_ns)`, ordered by `at`, withdrawn entries left out; with
//!   `include_history`, every revision of those entries (withdrawn ones too), each entry's
//!   revisions together in order.
//! - [`Logbook::after`]`(id, limit)`: revisions with row id greater than `id`, in id order.
//! - [`Logbook::history`]`(entry)`, [`Logbook::revision`]`(entry, n)`.
//!
//! Architecture invariant: this module only inserts into and selects from the logbook table;
//! no statement changes or removes a row (ARCHITECTURE.md has the grep that checks it).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{Map, Value as Json};

use crate::logbook::{
    may_revise, revise, Change, Entry, Fields, Invalid, Kind, NewEntry, Now, Refused, Revision,
    Values,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Store(#[from] super::Error),
    #[error("corrupt logbook row {id}: {why}")]
    Corrupt { id: i64, why: String },
    #[error("no entry {0}")]
    NotFound(i64),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Refused(#[from] Refused),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The cursor (in the `cursors` table) of `consumer`'s position in the logbook, e.g.
/// `influx.logbook`. The readings' writer skips these when it continues the reading ids.
pub fn cursor_name(consumer: &str) -> String {
    format!("{consumer}{CURSOR_SUFFIX}")
}

/// What every logbook cursor's name ends with.
pub const CURSOR_SUFFIX: &str = ".logbook";

const COLUMNS: &str = "l.id, l.entry, l.revision, l.kind, l.at_ns, l.recorded_ns, l.\"by\", l.withdrawn, l.body, (SELECT f.recorded_ns FROM logbook f WHERE f.id = l.entry)";

/// Rows that are the latest revision of their entry.
const CURRENT: &str =
    "l.revision = (SELECT MAX(m.revision) FROM logbook m WHERE m.entry = l.entry)";

/// The logbook's own connection to `store.db`.
pub struct Logbook {
    conn: Connection,
    window_ns: i64,
}

fn body(values: &Values, note: Option<&str>, reason: Option<&str>) -> String {
    let f = values.fields();
    let mut m = Map::new();
    if let Some(w) = f.waste {
        m.insert("waste".into(), Json::from(w));
    }
    for (k, v) in [
        ("kg", f.kg),
        ("litres", f.litres),
        ("count", f.count),
        ("ph", f.ph),
        ("ratio", f.ratio),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), Json::from(v));
        }
    }
    for (k, v) in [
        ("text", f.text.as_deref()),
        ("note", note),
        ("reason", reason),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), Json::from(v));
        }
    }
    Json::Object(m).to_string()
}

/// Revisions after row `id`, oldest first, on any connection (the uplink's outbox reads them
/// inside its own transaction).
pub(super) fn after_in(
    conn: &rusqlite::Connection,
    id: i64,
    limit: usize,
) -> super::Result<Vec<Entry>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM logbook l WHERE l.id > ?1 ORDER BY l.id LIMIT ?2"
    ))?;
    let rows = st.query_map(params![id, limit as i64], row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode(r?).map_err(|e| super::Error::Logbook(e.to_string()))?);
    }
    Ok(out)
}

type Row = (i64, i64, i64, String, i64, i64, String, bool, String, i64);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn decode(
    (id, entry, revision, kind, at_ns, recorded_ns, by, withdrawn, text, first): Row,
) -> Result<Entry> {
    let corrupt = |why: String| Error::Corrupt { id, why };
    let kind = Kind::parse(&kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?;
    let m = match serde_json::from_str::<Json>(&text) {
        Ok(Json::Object(m)) => m,
        Ok(_) => return Err(corrupt("body is not an object".into())),
        Err(e) => return Err(corrupt(e.to_string())),
    };
    let s = |k: &str| m.get(k).and_then(Json::as_str).map(str::to_owned);
    let n = |k: &str| m.get(k).and_then(Json::as_f64);
    let fields = Fields {
        waste: s("waste"),
        kg: n("kg"),
        litres: n("litres"),
        count: n("count"),
        ph: n("ph"),
        ratio: n("ratio"),
        text: s("text"),
    };
    Ok(Entry {
        id,
        entry,
        revision: u32::try_from(revision).map_err(|_| corrupt("bad revision".into()))?,
        values: Values::stored(kind, &fields).map_err(corrupt)?,
        at_ns,
        by,
        recorded_ns,
        first_recorded_ns: first,
        note: s("note"),
        withdrawn,
        reason: s("reason"),
    })
}

impl Logbook {
    /// Opens (and if needed creates) the logbook in the store at `path`; corrections and
    /// withdrawals are allowed for `edit_window` after an entry was first recorded.
    pub fn open(path: &Path, edit_window: Duration) -> Result<Logbook> {
        let conn = super::open(path)?;
        conn.execute_batch(super::SCHEMA)?;
        Ok(Logbook {
            conn,
            window_ns: i64::try_from(edit_window.as_nanos()).unwrap_or(i64::MAX),
        })
    }

    /// How long after its first recording an entry may be corrected or withdrawn, ns.
    pub fn window_ns(&self) -> i64 {
        self.window_ns
    }

    /// Appends a new entry as revision 1; durable on return.
    pub fn add(&mut self, e: &NewEntry) -> Result<Entry> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM logbook", [], |r| {
            r.get(0)
        })?;
        tx.execute(
            "INSERT INTO logbook(id, entry, revision, kind, at_ns, recorded_ns, \"by\", withdrawn, body) VALUES (?1, ?1, 1, ?2, ?3, ?4, ?5, 0, ?6)",
            params![
                id,
                e.values.kind().as_str(),
                e.at_ns,
                e.recorded_ns,
                e.by,
                body(&e.values, e.note.as_deref(), None)
            ],
        )?;
        tx.commit()?;
        Ok(Entry {
            id,
            entry: id,
            revision: 1,
            values: e.values.clone(),
            at_ns: e.at_ns,
            by: e.by.clone(),
            recorded_ns: e.recorded_ns,
            first_recorded_ns: e.recorded_ns,
            note: e.note.clone(),
            withdrawn: false,
            reason: None,
        })
    }

    /// Appends the revision `change` by `by` at `now` makes of `entry`: refused after the
    /// edit window or once withdrawn ([`Error::Refused`]), checked like a new entry
    /// ([`Error::Invalid`]); durable on return.
    pub fn revise(&mut self, entry: i64, change: &Change, by: &str, now: Now) -> Result<Entry> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM logbook l WHERE l.entry = ?1 ORDER BY l.revision DESC LIMIT 1"),
                [entry],
                row,
            )
            .optional()?
            .ok_or(Error::NotFound(entry))?;
        let current = decode(current)?;
        may_revise(&current, now.ns, self.window_ns)?;
        let Revision {
            values,
            at_ns,
            by,
            recorded_ns,
            note,
            withdrawn,
            reason,
        } = revise(&current, change, by, now)?;
        let id: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM logbook", [], |r| {
            r.get(0)
        })?;
        let revision = current.revision + 1;
        tx.execute(
            "INSERT INTO logbook(id, entry, revision, kind, at_ns, recorded_ns, \"by\", withdrawn, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                entry,
                revision,
                values.kind().as_str(),
                at_ns,
                recorded_ns,
                by,
                withdrawn,
                body(&values, note.as_deref(), reason.as_deref())
            ],
        )?;
        tx.commit()?;
        Ok(Entry {
            id,
            entry,
            revision,
            values,
            at_ns,
            by,
            recorded_ns,
            first_recorded_ns: current.first_recorded_ns,
            note,
            withdrawn,
            reason,
        })
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Entry>> {
        let mut st = self.conn.prepare_cached(sql)?;
        let rows = st.query_map(p, row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(decode(r?)?);
        }
        Ok(out)
    }

    /// The current revision of each entry whose `at` is in `[from_ns, to_ns)`, by `at` (then
    /// entry), withdrawn ones left out; with `include_history`, every revision of those
    /// entries including withdrawn ones, grouped by entry (in the order of their current
    /// `at`), revisions in order.
    pub fn list(&self, from_ns: i64, to_ns: i64, include_history: bool) -> Result<Vec<Entry>> {
        if include_history {
            self.query(
                &format!(
                    "WITH cur AS (SELECT l.entry AS entry, l.at_ns AS cur_at FROM logbook l WHERE {CURRENT} AND l.at_ns >= ?1 AND l.at_ns < ?2)
                     SELECT {COLUMNS} FROM logbook l JOIN cur ON cur.entry = l.entry ORDER BY cur.cur_at, l.entry, l.revision"
                ),
                params![from_ns, to_ns],
            )
        } else {
            self.query(
                &format!(
                    "SELECT {COLUMNS} FROM logbook l WHERE {CURRENT} AND l.withdrawn = 0 AND l.at_ns >= ?1 AND l.at_ns < ?2 ORDER BY l.at_ns, l.entry"
                ),
                params![from_ns, to_ns],
            )
        }
    }

    /// Up to `limit` revisions with row id greater than `id`, in id order (for durable
    /// consumers: a revision's row id never changes and is never reused).
    pub fn after(&self, id: i64, limit: usize) -> Result<Vec<Entry>> {
        self.query(
            &format!("SELECT {COLUMNS} FROM logbook l WHERE l.id > ?1 ORDER BY l.id LIMIT ?2"),
            params![id, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// Every revision of `entry`, in order (empty if there is no such entry).
    pub fn history(&self, entry: i64) -> Result<Vec<Entry>> {
        self.query(
            &format!("SELECT {COLUMNS} FROM logbook l WHERE l.entry = ?1 ORDER BY l.revision"),
            [entry],
        )
    }

    /// Revision `revision` of `entry`.
    pub fn revision(&self, entry: i64, revision: u32) -> Result<Option<Entry>> {
        Ok(self
            .query(
                &format!("SELECT {COLUMNS} FROM logbook l WHERE l.entry = ?1 AND l.revision = ?2"),
                params![entry, revision],
            )?
            .pop())
    }

    /// The highest row id, 0 for an empty logbook.
    pub fn last_id(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM logbook", [], |r| r.get(0))?)
    }

    /// The position of `consumer` (its [`cursor_name`] in the `cursors` table).
    pub fn cursor(&self, consumer: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT position FROM cursors WHERE consumer = ?1",
                [cursor_name(consumer)],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Durably records that `consumer` has delivered every revision up to row `position`.
    pub fn set_cursor(&self, consumer: &str, position: i64) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO cursors(consumer, position) VALUES (?1, ?2)",
            params![cursor_name(consumer), position],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logbook::{Draft, FieldError};
    use crate::plant::kpi::Waste;

    const H: i64 = 3600 * 1_000_000_000;
    /// 2026-12-01T05:00:00Z.
    const T0: i64 = 1_796_101_200 * 1_000_000_000;

    fn now(ns: i64) -> Now {
        Now { ns, synced: true }
    }

    fn open() -> (tempfile::TempDir, Logbook) {
        let dir = tempfile::tempdir().expect("tempdir");
        let lb = Logbook::open(
            &super::super::db_path(dir.path()),
            Duration::from_secs(24 * 3600),
        )
        .expect("open");
        (dir, lb)
    }

    fn fed(lb: &mut Logbook, kg: f64, at: i64, by: &str) -> Entry {
        let d = Draft {
            kind: "waste_fed".into(),
            fields: Fields {
                waste: Some("household".into()),
                kg: Some(kg),
                ..Fields::default()
            },
            by: Some(by.into()),
            ..Draft::default()
        };
        let mut e = d.validate(now(at), "local").expect("valid");
        e.at_ns = at;
        lb.add(&e).expect("add")
    }

    fn kg(e: &Entry) -> f64 {
        match e.values {
            Values::WasteFed { kg, .. } => kg,
            _ => panic!("not waste_fed: {e:?}"),
        }
    }

    fn correct_kg(kg: f64) -> Change {
        Change::Correct {
            fields: Fields {
                kg: Some(kg),
                ..Fields::default()
            },
            at: None,
            note: None,
        }
    }

    #[test]
    fn an_entry_survives_reopen_and_is_listed_by_at() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = super::super::db_path(dir.path());
        {
            let mut lb = Logbook::open(&path, Duration::from_secs(3600)).expect("open");
            fed(&mut lb, 120.0, T0, "amina");
            fed(&mut lb, 80.0, T0 - H, "baraka");
            fed(&mut lb, 50.0, T0 + 8 * H, "amina");
        }
        // A store opened by the readings' writer has the table too, and keeps the rows.
        super::super::Writer::open(&path).expect("writer");
        let lb = Logbook::open(&path, Duration::from_secs(3600)).expect("reopen");
        let got = lb.list(T0 - H, T0 + 8 * H, false).expect("list");
        assert_eq!(
            got.iter().map(|e| (e.entry, kg(e))).collect::<Vec<_>>(),
            vec![(2, 80.0), (1, 120.0)],
            "by at, the end of the range excluded"
        );
        assert_eq!(got[1].by, "amina");
        assert_eq!(got[1].revision, 1);
        assert_eq!(
            got[1].values,
            Values::WasteFed {
                waste: Waste::Household,
                kg: 120.0
            }
        );
    }

    #[test]
    fn a_correction_is_a_new_revision_and_the_old_one_stays() {
        let (_d, mut lb) = open();
        let e = fed(&mut lb, 120.0, T0, "amina");
        let r = lb
            .revise(e.entry, &correct_kg(130.0), "baraka", now(T0 + H))
            .expect("revise");
        assert_eq!((r.entry, r.revision, r.id, kg(&r)), (1, 2, 2, 130.0));
        let cur = lb.list(T0, T0 + 1, false).expect("list");
        assert_eq!(cur.len(), 1);
        assert_eq!((cur[0].revision, kg(&cur[0])), (2, 130.0));
        assert_eq!(cur[0].first_recorded_ns, T0);
        // The audit trail: both revisions, who and when.
        let all = lb.list(T0, T0 + 1, true).expect("history");
        assert_eq!(
            all.iter()
                .map(|e| (e.revision, kg(e), e.by.as_str(), e.recorded_ns))
                .collect::<Vec<_>>(),
            vec![(1, 120.0, "amina", T0), (2, 130.0, "baraka", T0 + H)]
        );
        assert_eq!(lb.history(1).expect("history"), all);
    }

    #[test]
    fn a_withdrawn_entry_is_listed_only_with_history() {
        let (_d, mut lb) = open();
        let e = fed(&mut lb, 120.0, T0, "amina");
        fed(&mut lb, 60.0, T0 + 1, "amina");
        let w = lb
            .revise(
                e.entry,
                &Change::Withdraw {
                    reason: "entered twice".into(),
                },
                "amina",
                now(T0 + H),
            )
            .expect("withdraw");
        assert!(w.withdrawn);
        assert_eq!(w.reason.as_deref(), Some("entered twice"));
        let cur = lb.list(T0, T0 + H, false).expect("list");
        assert_eq!(cur.iter().map(|e| e.entry).collect::<Vec<_>>(), vec![2]);
        let all = lb.list(T0, T0 + H, true).expect("history");
        assert_eq!(
            all.iter()
                .map(|e| (e.entry, e.revision, e.withdrawn))
                .collect::<Vec<_>>(),
            vec![(1, 1, false), (1, 2, true), (2, 1, false)]
        );
        // Nothing more after a withdrawal.
        assert!(matches!(
            lb.revise(e.entry, &correct_kg(1.0), "amina", now(T0 + H)),
            Err(Error::Refused(Refused::Withdrawn { entry: 1 }))
        ));
    }

    #[test]
    fn after_the_window_a_revision_is_refused_and_nothing_is_written() {
        let (_d, mut lb) = open();
        let e = fed(&mut lb, 120.0, T0, "amina");
        lb.revise(e.entry, &correct_kg(121.0), "amina", now(T0 + 23 * H))
            .expect("inside the window");
        let late = lb.revise(e.entry, &correct_kg(122.0), "amina", now(T0 + 25 * H));
        match late {
            Err(Error::Refused(r)) => assert_eq!(
                r.to_string(),
                "entry 1 was recorded 25 h ago; it can be corrected or withdrawn only within 24 h"
            ),
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(lb.last_id().expect("last"), 2);
        assert!(matches!(
            lb.revise(9, &correct_kg(1.0), "amina", now(T0)),
            Err(Error::NotFound(9))
        ));
    }

    #[test]
    fn an_invalid_correction_names_the_field_and_writes_nothing() {
        let (_d, mut lb) = open();
        let e = fed(&mut lb, 120.0, T0, "amina");
        match lb.revise(e.entry, &correct_kg(-3.0), "amina", now(T0)) {
            Err(Error::Invalid(Invalid(errors))) => {
                assert_eq!(
                    errors,
                    vec![FieldError::new("kg", "must be more than 0")
                        .because("invalid-not-positive", &[])]
                )
            }
            other => panic!("not invalid: {other:?}"),
        }
        assert_eq!(lb.last_id().expect("last"), 1);
    }

    #[test]
    fn after_reads_every_revision_in_id_order_and_cursors_persist() {
        let (dir, mut lb) = open();
        let a = fed(&mut lb, 1.0, T0, "amina");
        fed(&mut lb, 2.0, T0 - H, "amina");
        lb.revise(a.entry, &correct_kg(3.0), "amina", now(T0))
            .expect("revise");
        let got = lb.after(1, 10).expect("after");
        assert_eq!(
            got.iter()
                .map(|e| (e.id, e.entry, e.revision))
                .collect::<Vec<_>>(),
            vec![(2, 2, 1), (3, 1, 2)]
        );
        assert_eq!(lb.after(0, 1).expect("after").len(), 1);
        lb.set_cursor("influx", 3).expect("cursor");
        assert_eq!(lb.cursor("influx").expect("cursor"), 3);
        // The readings' writer does not continue its ids after a logbook cursor.
        let mut w = super::super::Writer::open(&super::super::db_path(dir.path())).expect("w");
        assert_eq!(w.next_id(), 1);
        w.register_consumers(&["influx"]).expect("register");
        assert_eq!(lb.cursor("influx").expect("cursor"), 3);
    }
}
