//! The aggregator's tables: windows of 1 minute and 1 hour per quantity and instance.
//!
//! - `agg_series(id, quantity, instance)`: interned (quantity, instance) pairs.
//! - `windows(width, start, series, changed, stats BLOB)`, primary key `(width, start, series)`
//!   WITHOUT ROWID: the rows of one window start lie together, so the aggregator's commit writes
//!   few pages (the current minute of every series), and a series' history is read by point
//!   lookups per start. `stats` is packed by [`crate::aggregate::window::Window::encode`];
//!   `changed` is the id of the last reading folded in (a consumer copying windows asks for
//!   rows changed after its own mark).
//! - `agg_latest(series, ts, value)`: each counter's latest good reading, for its next delta.
//! - `agg_text(series, ts, value)`: the newest value of each text quantity (a meter's valve or
//!   relay, a status), for the uplink's and the dashboard's meter states.
//! - `meta.agg_watermark`: the latest timestamp aggregated, which decides what is late.
//!
//! [`Windows::commit`] writes the changed windows, the counters' latest readings, the watermark
//! and the aggregator's cursor in **one transaction**: after a SIGKILL the aggregator resumes
//! from exactly the state that matches its cursor, so it builds the same windows as a run that
//! was never interrupted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::{open, Error, Result};
use crate::aggregate::window::{Latest, Width, Window};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agg_series(id INTEGER PRIMARY KEY, quantity TEXT NOT NULL, instance TEXT NOT NULL, UNIQUE(quantity, instance));
CREATE TABLE IF NOT EXISTS windows(width INTEGER NOT NULL, start INTEGER NOT NULL, series INTEGER NOT NULL, changed INTEGER NOT NULL, stats BLOB NOT NULL, PRIMARY KEY(width, start, series)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_latest(series INTEGER PRIMARY KEY, ts INTEGER NOT NULL, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS agg_text(series INTEGER PRIMARY KEY, ts INTEGER NOT NULL, value TEXT NOT NULL);
";

/// A (quantity, instance) pair as the windows know it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub quantity: Arc<str>,
    pub instance: Arc<str>,
}

/// What the aggregator keeps between runs (loaded by [`Windows::state`]).
#[derive(Debug, Default)]
pub struct State {
    pub cursor: i64,
    pub watermark_ns: i64,
    pub series: HashMap<SeriesKey, i64>,
    pub latest: HashMap<i64, Latest>,
}

/// One window row, as committed or read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub width: Width,
    pub start_ns: i64,
    pub series: i64,
    /// The id of the last reading folded in.
    pub changed: i64,
    pub window: Window,
}

/// One aggregator transaction.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    pub new_series: Vec<(i64, &'a SeriesKey)>,
    pub rows: Vec<&'a Row>,
    pub latest: Vec<(i64, Latest)>,
    /// (series, ts, value) of text series; an older one never replaces a newer.
    pub texts: Vec<(i64, i64, &'a str)>,
    pub watermark_ns: i64,
    pub consumer: &'a str,
    pub cursor: i64,
}

/// A connection to the windows: the aggregator's (one writer), or a reader's.
pub struct Windows {
    conn: Connection,
    buf: Vec<u8>,
}

impl Windows {
    pub fn open(path: &Path) -> Result<Windows> {
        let conn = open(path)?;
        conn.execute_batch(super::SCHEMA)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Windows {
            conn,
            buf: Vec::with_capacity(64),
        })
    }

    pub fn state(&self, consumer: &str) -> Result<State> {
        let tx = self.conn.unchecked_transaction()?;
        let cursor = tx
            .query_row(
                "SELECT position FROM cursors WHERE consumer = ?1",
                [consumer],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let watermark_ns = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'agg_watermark'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(i64::MIN);
        let mut series = HashMap::new();
        let mut latest = HashMap::new();
        {
            let mut st = tx.prepare("SELECT id, quantity, instance FROM agg_series")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (id, q, i) = row?;
                let key = SeriesKey {
                    quantity: q.into(),
                    instance: i.into(),
                };
                series.insert(key, id);
            }
            let mut st = tx.prepare("SELECT series, ts, value FROM agg_latest")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            for row in rows {
                let (s, ts_ns, value) = row?;
                latest.insert(s, Latest { ts_ns, value });
            }
        }
        tx.commit()?;
        Ok(State {
            cursor,
            watermark_ns,
            series,
            latest,
        })
    }

    /// The stored window, if any.
    pub fn get(&self, width: Width, start_ns: i64, series: i64) -> Result<Option<Row>> {
        let mut st = self.conn.prepare_cached(
            "SELECT changed, stats FROM windows WHERE width = ?1 AND start = ?2 AND series = ?3",
        )?;
        let got: Option<(i64, Vec<u8>)> = st
            .query_row(params![width.secs(), start_ns, series], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        got.map(|(changed, blob)| {
            Ok(Row {
                width,
                start_ns,
                series,
                changed,
                window: Window::decode(&blob, start_ns).map_err(|source| Error::Corrupt {
                    id: changed,
                    source,
                })?,
            })
        })
        .transpose()
    }

    /// Writes one aggregator step in one transaction (see the module doc).
    pub fn commit(&mut self, c: &Commit) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (id, k) in &c.new_series {
            tx.execute(
                "INSERT INTO agg_series(id, quantity, instance) VALUES (?1, ?2, ?3)",
                params![id, &*k.quantity, &*k.instance],
            )?;
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO windows(width, start, series, changed, stats) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(width, start, series) DO UPDATE SET changed = ?4, stats = ?5",
            )?;
            for r in &c.rows {
                self.buf.clear();
                r.window.encode(r.start_ns, &mut self.buf);
                put.execute(params![
                    r.width.secs(),
                    r.start_ns,
                    r.series,
                    r.changed,
                    &self.buf
                ])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT INTO agg_latest(series, ts, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(series) DO UPDATE SET ts = ?2, value = ?3",
            )?;
            for (s, l) in &c.latest {
                put.execute(params![s, l.ts_ns, l.value])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT INTO agg_text(series, ts, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(series) DO UPDATE SET ts = ?2, value = ?3 WHERE ?2 >= agg_text.ts",
            )?;
            for (s, ts, v) in &c.texts {
                put.execute(params![s, ts, v])?;
            }
        }
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('agg_watermark', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            [c.watermark_ns],
        )?;
        tx.execute(
            "INSERT INTO cursors(consumer, position) VALUES (?1, ?2) ON CONFLICT(consumer) DO UPDATE SET position = ?2",
            params![c.consumer, c.cursor],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes windows of `width` that start before `before_ns`; returns how many went.
    pub fn retain(&self, width: Width, before_ns: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM windows WHERE width = ?1 AND start < ?2",
            params![width.secs(), before_ns],
        )?)
    }

    /// The id of a (quantity, instance) pair, if it has windows.
    pub fn series_id(&self, quantity: &str, instance: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM agg_series WHERE quantity = ?1 AND instance = ?2",
                [quantity, instance],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The instances that have windows of `quantity`, sorted.
    /// A counter's latest good value as the aggregator last folded it (`agg_latest`), with its
    /// timestamp: what a source recovers its persisted total from once the raw readings were
    /// downsampled away.
    pub fn latest(&self, quantity: &str, instance: &str) -> Result<Option<(i64, f64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT l.ts, l.value FROM agg_latest l JOIN agg_series s ON s.id = l.series WHERE s.quantity = ?1 AND s.instance = ?2",
                params![quantity, instance],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The newest good value of every series with a minute window starting at or after
    /// `since_ns`: (quantity, instance, ts, value) from that window's `last` (the dashboard's
    /// values at start, before the live stream has brought new ones).
    pub fn newest_values(&self, since_ns: i64) -> Result<Vec<(String, String, i64, f64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT s.quantity, s.instance, w.start, w.stats FROM agg_series s
             JOIN windows w ON w.width = 60 AND w.series = s.id
               AND w.start = (SELECT MAX(start) FROM windows x WHERE x.width = 60 AND x.series = s.id AND x.start >= ?1)",
        )?;
        let rows = st.query_map([since_ns], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (q, i, start, blob) = row?;
            if let Ok(w) = Window::decode(&blob, start) {
                if let Some((ts, v)) = w.last {
                    out.push((q, i, ts, v));
                }
            }
        }
        Ok(out)
    }

    /// The newest text of `quantity` per instance: (instance, ts, value), by instance.
    pub fn texts(&self, quantity: &str) -> Result<Vec<(String, i64, String)>> {
        texts(&self.conn, quantity)
    }

    pub fn instances(&self, quantity: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare_cached(
            "SELECT instance FROM agg_series WHERE quantity = ?1 ORDER BY instance",
        )?;
        let rows = st.query_map([quantity], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The windows of `series` at `width` starting in `[from_ns, to_ns)`, oldest first: one
    /// point lookup per possible start (the table is ordered by start first).
    pub fn range(&self, width: Width, series: i64, from_ns: i64, to_ns: i64) -> Result<Vec<Row>> {
        let tx = self.conn.unchecked_transaction()?;
        let mut out = Vec::new();
        {
            let mut st = tx.prepare_cached(
                "SELECT changed, stats FROM windows WHERE width = ?1 AND start = ?2 AND series = ?3",
            )?;
            let mut start = width.start(from_ns);
            if start < from_ns {
                start += width.nanos();
            }
            while start < to_ns {
                let got: Option<(i64, Vec<u8>)> = st
                    .query_row(params![width.secs(), start, series], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                if let Some((changed, blob)) = got {
                    out.push(Row {
                        width,
                        start_ns: start,
                        series,
                        changed,
                        window: Window::decode(&blob, start).map_err(|source| Error::Corrupt {
                            id: changed,
                            source,
                        })?,
                    });
                }
                start += width.nanos();
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// A mark the KPI writer keeps in `meta` (`sinks/kpi.rs`), if set.
    pub fn mark(&self, key: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets marks in `meta`, all in one transaction.
    pub fn set_marks(&self, marks: &[(&str, i64)]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for (key, value) in marks {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, value],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The aggregator's cursor: every reading up to this id is in the windows.
    pub fn aggregated_through(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT position FROM cursors WHERE consumer = ?1",
                [crate::aggregate::CONSUMER],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// The starts of the hour windows in `[from_ns, to_ns)` that a reading after `after_id`
    /// changed (late readings), oldest first. A range scan of the primary key.
    pub fn hours_changed_after(&self, after_id: i64, from_ns: i64, to_ns: i64) -> Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT start FROM windows WHERE width = ?1 AND start >= ?2 AND start < ?3 AND changed > ?4 ORDER BY start",
        )?;
        let rows = st.query_map(params![Width::Hour.secs(), from_ns, to_ns, after_id], |r| {
            r.get(0)
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The oldest window start kept at `width`, if any.
    pub fn oldest(&self, width: Width) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN(start) FROM windows WHERE width = ?1",
            [width.secs()],
            |r| r.get(0),
        )?)
    }

    /// Number of window rows per width (minute, hour), for `/metrics` and the docs.
    pub fn counts(&self) -> Result<(i64, i64)> {
        let n = |w: Width| -> Result<i64> {
            Ok(self.conn.query_row(
                "SELECT COUNT(*) FROM windows WHERE width = ?1",
                [w.secs()],
                |r| r.get(0),
            )?)
        };
        Ok((n(Width::Minute)?, n(Width::Hour)?))
    }
}

/// [`Windows::texts`] on any connection (the uplink's outbox reads it in its transaction).
pub(super) fn texts(conn: &Connection, quantity: &str) -> Result<Vec<(String, i64, String)>> {
    let mut st = conn.prepare_cached(
        "SELECT s.instance, t.ts, t.value FROM agg_text t JOIN agg_series s ON s.id = t.series WHERE s.quantity = ?1 ORDER BY s.instance",
    )?;
    let rows = st.query_map([quantity], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
