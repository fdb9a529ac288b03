//! The durable local store: every accepted reading lives here until every consumer has it.
//!
//! # On disk
//! One SQLite database (`store.db` in the state directory) in WAL mode with `synchronous = FULL`,
//! so a transaction is durable once `COMMIT` returns (the WAL is fsynced). Tables:
//! - `readings_<k>(id INTEGER PRIMARY KEY, series, ts, quality, fields BLOB)`: the log, in
//!   segments of 2^`segment_bits` ids (65,536 by default; `meta.segment_bits`), segment `k` holding
//!   ids `k << bits ..= ((k + 1) << bits) - 1`. `id` grows by one per reading in commit order, which
//!   is what "order is kept per source" rests on, and is never reused (the writer continues after the
//!   highest id any segment or cursor has seen); `fields` is packed by [`codec`].
//!   Why segments: deleting delivered rows one by one rewrote every page once more (measured: 184
//!   bytes written per meter reading with row deletes, 103 without); dropping a whole delivered
//!   segment only touches the free-list. See docs/PERFORMANCE.md.
//! - `series(id, measurement, tags)` and `names(id, name)`: interned series and field names.
//! - `cursors(consumer, position)`: the last reading id each consumer has durably delivered.
//! - `quarantine(...)`: lines a sink's server rejected as malformed, kept for inspection.
//! - `meta(key, value)`: counters that must survive restarts (readings evicted or downsampled
//!   by the quota, the aggregator's watermark).
//! - `windows`, `agg_series`, `agg_latest`: the aggregator's, see [`windows`].
//! - `logbook(...)`: the plant logbook's revisions, appended only (triggers refuse `UPDATE` and
//!   `DELETE`); its format and read API are in [`logbook`].
//! - `users`, `sessions`, `api_tokens`, `login_attempts`, `audit`: dashboard accounts and the
//!   audit log of what people did, see [`users`].
//!
//! # Guarantees
//! - A reading is *accepted* when the transaction containing it has committed. Only then are
//!   consumers woken and meters acknowledged. A crash loses at most the uncommitted batch, whose
//!   meters were never acknowledged and will resend.
//! - Raw rows are kept after delivery (the history answers from them) until the store exceeds
//!   its quota (`enforce_quota`): then the oldest go first, whole segments where possible,
//!   counted in `meta` as *downsampled* (every consumer, the aggregator among them, had them:
//!   their windows keep them) or *evicted* (some consumer had not: lost for it).
//! - SQLite's WAL recovery makes a kill -9 or power cut at any point safe: the database opens
//!   with exactly the committed transactions.
//!
//! Architecture invariant: only this module knows SQL; one [`Writer`] (one thread) writes
//! readings, one [`logbook::Logbook`] connection writes the logbook; each consumer has its own [`Reader`] connection; async code reaches them only
//! through a [`Handle`] (the blocking pool).

pub mod alarms;
pub mod codec;
pub mod commands;
pub mod committer;
pub mod copy;
pub mod disk;
pub mod gauges;
mod handle;
pub mod lock;
pub mod logbook;
pub mod outbox;
pub mod users;
pub mod windows;

pub use handle::Handle;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{Quality, Reading, Series, Value};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("logbook: {0}")]
    Logbook(String),
    #[error("corrupt record {id}: {source}")]
    Corrupt { id: i64, source: codec::DecodeError },
    #[error("record {id} refers to unknown {what} {ref_id}")]
    Dangling {
        id: i64,
        what: &'static str,
        ref_id: i64,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series(id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, tags TEXT NOT NULL, UNIQUE(measurement, tags));
CREATE TABLE IF NOT EXISTS names(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS cursors(consumer TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine(id INTEGER PRIMARY KEY, consumer TEXT NOT NULL, reading_id INTEGER NOT NULL, line TEXT NOT NULL, error TEXT NOT NULL, at_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS logbook(id INTEGER PRIMARY KEY, entry INTEGER NOT NULL, revision INTEGER NOT NULL, kind TEXT NOT NULL, at_ns INTEGER NOT NULL, recorded_ns INTEGER NOT NULL, \"by\" TEXT NOT NULL, withdrawn INTEGER NOT NULL, body TEXT NOT NULL, UNIQUE(entry, revision));
CREATE INDEX IF NOT EXISTS logbook_at ON logbook(at_ns);
CREATE TRIGGER IF NOT EXISTS logbook_never_updated BEFORE UPDATE ON logbook BEGIN SELECT RAISE(ABORT, 'logbook rows are never changed: add a revision'); END;
CREATE TRIGGER IF NOT EXISTS logbook_never_deleted BEFORE DELETE ON logbook BEGIN SELECT RAISE(ABORT, 'logbook rows are never changed or deleted: withdraw the entry'); END;
";

/// Readings per segment table, as a power of two.
pub const DEFAULT_SEGMENT_BITS: u32 = 16;

fn segment_table(k: i64) -> String {
    format!("readings_{k}")
}

/// The segment tables that exist, oldest first.
fn segments(conn: &Connection) -> Result<Vec<i64>> {
    let mut st = conn.prepare_cached("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'readings\\_%' ESCAPE '\\'")?;
    let names = st.query_map([], |r| r.get::<_, String>(0))?;
    let mut ks = Vec::new();
    for n in names {
        if let Some(k) = n?
            .strip_prefix("readings_")
            .and_then(|k| k.parse::<i64>().ok())
        {
            ks.push(k);
        }
    }
    ks.sort_unstable();
    Ok(ks)
}

fn segment_bits(conn: &Connection) -> Result<u32> {
    let bits: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'segment_bits'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(bits.map_or(DEFAULT_SEGMENT_BITS, |b| b as u32))
}

/// Runs `f(k, table)` for each segment that may hold ids greater than `after`, in order, until
/// it returns false.
fn for_segments_after(
    conn: &Connection,
    after: i64,
    mut f: impl FnMut(i64, &str) -> Result<bool>,
) -> Result<()> {
    let bits = segment_bits(conn)?;
    for k in segments(conn)? {
        if ((k + 1) << bits) - 1 <= after {
            continue;
        }
        if !f(k, &segment_table(k))? {
            break;
        }
    }
    Ok(())
}

/// Stores written before the log was segmented kept it in one `readings` table: move its rows,
/// ids unchanged, into segment tables, in one transaction, so an upgrade loses nothing.
fn migrate_single_table(conn: &Connection, bits: u32) -> Result<()> {
    let exists: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'readings'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let (lo, hi): (Option<i64>, Option<i64>) =
        tx.query_row("SELECT MIN(id), MAX(id) FROM readings", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if let (Some(lo), Some(hi)) = (lo, hi) {
        for k in (lo >> bits)..=(hi >> bits) {
            let table = segment_table(k);
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table}(id INTEGER PRIMARY KEY, series INTEGER NOT NULL, ts INTEGER NOT NULL, quality INTEGER NOT NULL, fields BLOB NOT NULL)"
            ))?;
            tx.execute(
                &format!("INSERT INTO {table} SELECT id, series, ts, quality, fields FROM readings WHERE id >= ?1 AND id < ?2"),
                [k << bits, (k + 1) << bits],
            )?;
        }
    }
    tx.execute_batch("DROP TABLE readings")?;
    tx.commit()?;
    tracing::info!(from = ?lo, to = ?hi, "store: moved the readings table into segments");
    Ok(())
}

pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("store.db")
}

/// The page size of a new store: 1 KiB, not SQLite's 4 KiB. A commit of a few readings
/// touches one page, which the WAL appends with a 24-byte header: a 4 KiB page's frame
/// straddles two of the kernel's 4 KiB pages, so each small commit wrote 8 KiB; a 1 KiB
/// frame mostly lands in one (docs/PERFORMANCE.md, "Bytes written to the SD card": a third
/// less on the demo plant at 500 ms). A store made before keeps its page size (in WAL mode
/// SQLite cannot change it); both work the same.
pub const PAGE_SIZE: i64 = 1024;
/// WAL bytes before an automatic checkpoint, whatever the page size (SQLite's default of
/// 1,000 pages was 4 MiB at 4 KiB pages).
const WAL_CHECKPOINT_BYTES: i64 = 4 << 20;
/// Page cache per connection, KiB (SQLite's default is 2,000).
const CACHE_KIB: i64 = 256;

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    // Takes effect only on a new, empty database.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL + FULL: commit = fsync of the WAL. NORMAL would skip that fsync and lose the last
    // transactions on power loss, which is exactly what the store exists to prevent.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        WAL_CHECKPOINT_BYTES / page.max(512),
    )?;
    // Each connection has its own page cache, 2 MB by default; the gateway opens about 20
    // (a reader or writer per task), which made the page caches the largest part of its heap
    // at 500 meters (heaptrack). The kernel's page cache still holds the file.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// Tags as stored: `key=value` pairs joined by `,`, `device` first, then the extra tags sorted.
fn tags_key(s: &Series) -> String {
    let mut t = format!("device={}", s.device);
    for (k, v) in &s.extra {
        t.push(',');
        t.push_str(k);
        t.push('=');
        t.push_str(v);
    }
    t
}

fn parse_tags(measurement: &str, tags: &str) -> Series {
    let mut device: Arc<str> = Arc::from("");
    let mut extra = Vec::new();
    for kv in tags.split(',') {
        if let Some((k, v)) = kv.split_once('=') {
            if k == "device" {
                device = Arc::from(v);
            } else {
                extra.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    Series {
        measurement: Arc::from(measurement),
        device,
        extra,
    }
}

/// The interned series and field names.
/// The interned series and field names, each with its id.
type Interned = (Vec<(i64, Series)>, Vec<(i64, String)>);

fn interned(conn: &Connection) -> Result<Interned> {
    let mut st = conn.prepare("SELECT id, measurement, tags FROM series")?;
    let series = st
        .query_map([], |r| {
            let (m, t): (String, String) = (r.get(1)?, r.get(2)?);
            Ok((r.get::<_, i64>(0)?, parse_tags(&m, &t)))
        })?
        .collect::<std::result::Result<_, _>>()?;
    let mut st = conn.prepare("SELECT id, name FROM names")?;
    let names = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    Ok((series, names))
}

/// The single writer. Owns the write connection and the interning caches.
pub struct Writer {
    conn: Connection,
    series: HashMap<Series, i64>,
    names: HashMap<String, i64>,
    buf: Vec<u8>,
    bits: u32,
    /// The id the next reading gets.
    next_id: i64,
    /// Segment tables known to exist.
    tables: std::collections::BTreeSet<i64>,
}

impl Writer {
    pub fn open(path: &Path) -> Result<Writer> {
        Writer::open_with_segment_bits(path, DEFAULT_SEGMENT_BITS)
    }

    /// `bits` applies to a new store only; an existing one keeps the value it was created with.
    pub fn open_with_segment_bits(path: &Path, bits: u32) -> Result<Writer> {
        let conn = open(path)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(windows::SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('segment_bits', ?1)",
            [i64::from(bits)],
        )?;
        let bits = segment_bits(&conn)?;
        migrate_single_table(&conn, bits)?;
        let tables: std::collections::BTreeSet<i64> = segments(&conn)?.into_iter().collect();
        // Never reuse an id: continue after the highest one in any segment or cursor.
        // Logbook cursors count logbook rows, not readings: left out.
        let mut last: i64 = conn.query_row(
            "SELECT COALESCE(MAX(position), 0) FROM cursors WHERE consumer NOT LIKE ?1",
            [format!("%{}", logbook::CURSOR_SUFFIX)],
            |r| r.get(0),
        )?;
        if let Some(k) = tables.last() {
            let max: Option<i64> = conn.query_row(
                &format!("SELECT MAX(id) FROM {}", segment_table(*k)),
                [],
                |r| r.get(0),
            )?;
            last = last.max(max.unwrap_or((k << bits) - 1));
        }
        let (series, names) = interned(&conn)?;
        let series = series.into_iter().map(|(id, s)| (s, id)).collect();
        let names = names.into_iter().map(|(id, n)| (n, id)).collect();
        Ok(Writer {
            conn,
            series,
            names,
            buf: Vec::with_capacity(256),
            bits,
            next_id: last + 1,
            tables,
        })
    }

    /// Makes sure every consumer has a cursor row (a new consumer starts at the oldest reading).
    pub fn register_consumers(&mut self, consumers: &[&str]) -> Result<()> {
        for c in consumers {
            self.conn.execute(
                "INSERT OR IGNORE INTO cursors(consumer, position) VALUES (?1, 0)",
                [c],
            )?;
        }
        Ok(())
    }

    /// The id the next reading will get: the first id of this run after `open`.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// Appends a batch in one transaction; returns the id of the last reading. Durable on return.
    pub fn append(&mut self, readings: &[Reading]) -> Result<i64> {
        self.append_restamped(readings, None).map(|(last, _)| last)
    }

    /// Like [`Writer::append`], and in the same transaction first moves the stored readings
    /// `restamp` names (see [`Restamp`]); returns the last id and how many rows moved.
    pub fn append_restamped(
        &mut self,
        readings: &[Reading],
        restamp: Option<Restamp>,
    ) -> Result<(i64, u64)> {
        let tx = self.conn.transaction()?;
        let mut moved = 0u64;
        if let Some(r) = restamp {
            for k in self
                .tables
                .iter()
                .filter(|k| ((**k + 1) << self.bits) > r.from_id)
            {
                moved += tx.execute(
                    &format!(
                        "UPDATE {} SET ts = ts + ?1, quality = ?2 WHERE id >= ?3 AND quality IN (?2, ?4)",
                        segment_table(*k)
                    ),
                    params![
                        r.delta_ns,
                        Quality::Restamped as u8,
                        r.from_id,
                        Quality::ClockUnsynced as u8
                    ],
                )? as u64;
            }
        }
        let mut id = self.next_id;
        let mut created = Vec::new();
        // Series and field names first seen in this batch: into the caches only once the
        // transaction has committed (a failed commit, e.g. a full disk, rolls their rows back,
        // and the retry must insert them again rather than refer to rows that do not exist).
        let mut new_series: HashMap<Series, i64> = HashMap::new();
        let mut new_names: HashMap<String, i64> = HashMap::new();
        {
            for r in readings {
                let k = id >> self.bits;
                let table = segment_table(k);
                if !self.tables.contains(&k) && !created.contains(&k) {
                    tx.execute_batch(&format!(
                        "CREATE TABLE IF NOT EXISTS {table}(id INTEGER PRIMARY KEY, series INTEGER NOT NULL, ts INTEGER NOT NULL, quality INTEGER NOT NULL, fields BLOB NOT NULL)"
                    ))?;
                    created.push(k);
                }
                let mut ins = tx.prepare_cached(&format!("INSERT INTO {table}(id, series, ts, quality, fields) VALUES (?1, ?2, ?3, ?4, ?5)"))?;
                let sid = match self
                    .series
                    .get(&r.series)
                    .or_else(|| new_series.get(&r.series))
                {
                    Some(id) => *id,
                    None => {
                        tx.execute(
                            "INSERT INTO series(measurement, tags) VALUES (?1, ?2)",
                            params![&*r.series.measurement, tags_key(&r.series)],
                        )?;
                        let id = tx.last_insert_rowid();
                        new_series.insert(r.series.clone(), id);
                        id
                    }
                };
                let mut ids = Vec::with_capacity(r.fields.len());
                for (name, _) in &r.fields {
                    let id = match self.names.get(name).or_else(|| new_names.get(name)) {
                        Some(id) => *id,
                        None => {
                            tx.execute("INSERT INTO names(name) VALUES (?1)", [name])?;
                            let id = tx.last_insert_rowid();
                            new_names.insert(name.clone(), id);
                            id
                        }
                    };
                    ids.push(id as u64);
                }
                self.buf.clear();
                codec::encode(
                    ids.iter().copied().zip(r.fields.iter().map(|(_, v)| v)),
                    &mut self.buf,
                );
                ins.execute(params![id, sid, r.ts_ns, r.quality as u8, &self.buf])?;
                id += 1;
            }
        }
        tx.commit()?;
        self.tables.extend(created);
        self.series.extend(new_series);
        self.names.extend(new_names);
        self.next_id = id;
        Ok((id - 1, moved))
    }

    /// Bytes of live data: pages in use (the file keeps freed pages for reuse).
    pub fn used_bytes(&self) -> Result<u64> {
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * page_size) as u64)
    }

    /// Removes the oldest raw readings while live data exceeds `quota` bytes, down to 90 % of
    /// it. Raw readings are otherwise kept (the history answers from them); the windows built
    /// from them stay. A removed reading every consumer in `consumers` had already taken is
    /// *downsampled* (its windows still hold it); one some consumer had not is *evicted* (lost
    /// for that consumer). Both totals are kept in `meta` across restarts.
    pub fn enforce_quota(&mut self, quota: u64, consumers: &[&str]) -> Result<Removed> {
        // The size per row is an estimate (pages half emptied by a partial segment delete stay
        // in use): a few rounds until under the quota.
        let mut total = Removed::default();
        for _ in 0..4 {
            let r = self.remove_oldest(quota, consumers)?;
            if r == Removed::default() {
                break;
            }
            total.downsampled += r.downsampled;
            total.evicted += r.evicted;
        }
        Ok(total)
    }

    fn remove_oldest(&mut self, quota: u64, consumers: &[&str]) -> Result<Removed> {
        let used = self.used_bytes()?;
        if used <= quota {
            return Ok(Removed::default());
        }
        let Some((min, _, count)) = self.id_span()? else {
            return Ok(Removed::default());
        };
        let per_row = (used / count as u64).max(1);
        let excess_rows = ((used - quota * 9 / 10) / per_row).max(1) as i64;
        self.remove_below(min + excess_rows, consumers)
    }

    /// The disk is full: keeps the store committing without the files growing. Once the WAL
    /// holds more than [`ROOM_WAL_BYTES`] (or `force`: a commit just failed) it is copied
    /// into the database and truncated (its space goes back to the filesystem); when less
    /// than [`ROOM_FLOOR_BYTES`] of the disk is free (or `force`) the oldest quarter of the
    /// raw readings, at most [`ROOM_ROWS`], is removed, so the newest readings take their
    /// pages inside the database. Small enough steps that each fits in the space the
    /// released reserve ([`disk::Disk`]) gives. Counted like the quota's removals.
    pub fn make_room(&mut self, consumers: &[&str], force: bool) -> Result<Removed> {
        let path = self.conn.path().map(std::path::PathBuf::from);
        let wal = path
            .as_ref()
            .and_then(|p| std::fs::metadata(format!("{}-wal", p.display())).ok())
            .map_or(0, |m| m.len());
        if force || wal > ROOM_WAL_BYTES {
            let _ = self.checkpoint();
        }
        let free = path
            .as_ref()
            .and_then(|p| p.parent())
            .and_then(crate::os::disk_space)
            .map_or(0, |(free, _)| free);
        if !force && free >= ROOM_FLOOR_BYTES {
            return Ok(Removed::default());
        }
        let Some((min, _, count)) = self.id_span()? else {
            return Ok(Removed::default());
        };
        let removed = self.remove_below(min + (count / 4).clamp(1, ROOM_ROWS), consumers)?;
        let _ = self.checkpoint();
        Ok(removed)
    }

    /// Copies the WAL into the database and truncates it to nothing (the disk is full: the
    /// WAL's space goes back to the filesystem; the pages `make_room` freed take its
    /// content). Returns whether every frame was copied (a reader may hold some back).
    pub fn checkpoint(&mut self) -> Result<bool> {
        let (busy, _, _): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        Ok(busy == 0)
    }

    /// The lowest and highest stored id and the number of stored readings, if any.
    fn id_span(&self) -> Result<Option<(i64, i64, i64)>> {
        let (mut min, mut max, mut count) = (i64::MAX, 0i64, 0i64);
        for k in &self.tables {
            let (lo, hi, c): (Option<i64>, Option<i64>, i64) = self.conn.query_row(
                &format!(
                    "SELECT MIN(id), MAX(id), COUNT(*) FROM {}",
                    segment_table(*k)
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            if let (Some(lo), Some(hi)) = (lo, hi) {
                min = min.min(lo);
                max = max.max(hi);
                count += c;
            }
        }
        Ok((count > 0).then_some((min, max, count)))
    }

    /// Removes the readings with ids below `cut` (never the newest one) in one transaction,
    /// counting them downsampled (every consumer had them) or evicted (one had not).
    fn remove_below(&mut self, cut: i64, consumers: &[&str]) -> Result<Removed> {
        let Some((_, max, _)) = self.id_span()? else {
            return Ok(Removed::default());
        };
        let mut delivered = i64::MAX;
        for c in consumers {
            let pos: i64 = self
                .conn
                .query_row(
                    "SELECT position FROM cursors WHERE consumer = ?1",
                    [c],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            delivered = delivered.min(pos);
        }
        let cut = cut.min(max);
        let tx = self.conn.transaction()?;
        let mut removed = Removed::default();
        let mut dropped = Vec::new();
        for k in &self.tables {
            let table = segment_table(*k);
            if (k << self.bits) >= cut {
                break;
            }
            let split = cut.min(delivered.saturating_add(1));
            let (before, after): (i64, i64) = tx.query_row(
                &format!("SELECT COUNT(CASE WHEN id < ?2 THEN 1 END), COUNT(*) FROM {table} WHERE id < ?1"),
                [cut, split],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            removed.downsampled += before as u64;
            removed.evicted += (after - before) as u64;
            if ((k + 1) << self.bits) - 1 < cut && (k + 1) << self.bits <= max {
                tx.execute_batch(&format!("DROP TABLE {table}"))?;
                dropped.push(*k);
            } else {
                tx.execute(&format!("DELETE FROM {table} WHERE id < ?1"), [cut])?;
            }
        }
        for (key, n) in [
            ("evicted", removed.evicted),
            ("downsampled", removed.downsampled),
        ] {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = value + ?2",
                params![key, n as i64],
            )?;
        }
        tx.commit()?;
        for k in dropped {
            self.tables.remove(&k);
        }
        Ok(removed)
    }
}

/// How many of the oldest readings [`Writer::make_room`] removes at a time: ~0.5 MB of pages.
pub const ROOM_ROWS: i64 = 8_192;
/// While the disk is full, [`Writer::make_room`] truncates the WAL beyond this size.
pub const ROOM_WAL_BYTES: u64 = 256 * 1024;
/// While the disk is full, [`Writer::make_room`] removes the oldest readings when less than
/// this is free (half the reserve it released).
pub const ROOM_FLOOR_BYTES: u64 = 1 << 20;

/// What [`Writer::enforce_quota`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Readings no consumer was still waiting for: their windows keep them.
    pub downsampled: u64,
    /// Readings some consumer had not taken yet: lost for it.
    pub evicted: u64,
}

/// The wall clock stepped while readings stamped unsynchronised were stored: every row from
/// `from_id` on (this run's) whose quality is `ClockUnsynced` or `Restamped` moves by
/// `delta_ns` and becomes `Restamped`. Rows of earlier runs are left alone: their offset is
/// not known. Devices' own timestamps are never `ClockUnsynced`, so they never move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restamp {
    pub from_id: i64,
    pub delta_ns: i64,
}

/// One reading as read back, with its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: i64,
    pub reading: Reading,
}

/// A consumer's view of the log. Its own connection, so it never waits for the writer.
pub struct Reader {
    conn: Connection,
    series: HashMap<i64, Series>,
    names: HashMap<i64, String>,
    /// Timestamp span of each segment but the newest (they no longer grow): raw history.
    spans: HashMap<i64, (i64, i64)>,
}

/// One field of one raw reading, for the history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawPoint {
    pub ts_ns: i64,
    /// `None`: the source flagged the value bad (`{field}_quality`).
    pub value: Option<f64>,
    pub unsynced: bool,
}

/// What `/metrics` and the status page show about one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerState {
    pub name: String,
    pub position: i64,
    pub backlog: i64,
    pub oldest_unsent_ts_ns: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub file_bytes: u64,
    pub readings: i64,
    pub last_id: i64,
    /// Readings evicted by the quota before every consumer had them.
    pub evicted: i64,
    /// Raw readings removed by the quota after every consumer had them (windows keep them).
    pub downsampled: i64,
    pub quarantined: i64,
    pub consumers: Vec<ConsumerState>,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader> {
        let conn = open(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Reader {
            conn,
            series: HashMap::new(),
            names: HashMap::new(),
            spans: HashMap::new(),
        })
    }

    /// The raw readings of one field of the series `measurement` at `device` with a timestamp
    /// in `[from_ns, to_ns)`, oldest first. Segments whose time span misses the range are
    /// skipped; within one, rows are filtered by series in SQL before any decoding.
    pub fn raw_range(
        &mut self,
        measurement: &str,
        device: &str,
        field: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<RawPoint>> {
        self.reload_interning()?;
        let sids: Vec<i64> = self
            .series
            .iter()
            .filter(|(_, s)| &*s.measurement == measurement && &*s.device == device)
            .map(|(id, _)| *id)
            .collect();
        let flag = format!("{field}_quality");
        let good_id = self
            .names
            .iter()
            .find(|(_, n)| *n == field)
            .map(|(id, _)| *id as u64);
        let bad_id = self
            .names
            .iter()
            .find(|(_, n)| **n == flag)
            .map(|(id, _)| *id as u64);
        let mut out = Vec::new();
        if sids.is_empty() || (good_id.is_none() && bad_id.is_none()) {
            return Ok(out);
        }
        let list = sids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let tx = self.conn.unchecked_transaction()?;
        let ks = segments(&tx)?;
        self.spans.retain(|k, _| ks.contains(k));
        for (i, k) in ks.iter().enumerate() {
            let table = segment_table(*k);
            let span = match self.spans.get(k) {
                Some(s) => Some(*s),
                None => {
                    let (lo, hi): (Option<i64>, Option<i64>) =
                        tx.query_row(&format!("SELECT MIN(ts), MAX(ts) FROM {table}"), [], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?;
                    let span = lo.zip(hi);
                    if let (Some(span), true) = (span, i + 1 < ks.len()) {
                        self.spans.insert(*k, span);
                    }
                    span
                }
            };
            match span {
                Some((lo, hi)) if hi >= from_ns && lo < to_ns => {}
                _ => continue,
            }
            let mut st = tx.prepare(&format!(
                "SELECT id, ts, quality, fields FROM {table} WHERE series IN ({list}) AND ts >= ?1 AND ts < ?2"
            ))?;
            let rows = st.query_map([from_ns, to_ns], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, u8>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })?;
            for row in rows {
                let (id, ts_ns, quality, blob) = row?;
                let fields =
                    codec::decode(&blob).map_err(|source| Error::Corrupt { id, source })?;
                let unsynced = Quality::from_u8(quality) == Quality::ClockUnsynced;
                for (n, v) in fields {
                    let value = if Some(n) == good_id {
                        match v {
                            Value::Float(f) if f.is_finite() => Some(f),
                            Value::Int(i) => Some(i as f64),
                            _ => None,
                        }
                    } else if Some(n) == bad_id {
                        None
                    } else {
                        continue;
                    };
                    out.push(RawPoint {
                        ts_ns,
                        value,
                        unsynced,
                    });
                }
            }
        }
        tx.commit()?;
        out.sort_by_key(|p| p.ts_ns);
        Ok(out)
    }

    /// The newest good value of `field` of the series `measurement` at `device` in the raw
    /// log, with its timestamp (a source's persisted counter: the GPIO pulse total, run
    /// hours). Segments are searched newest first, rows by id descending; `None` when the raw
    /// readings are gone (the quota: then ask the windows' `agg_latest`).
    pub fn latest(
        &mut self,
        measurement: &str,
        device: &str,
        field: &str,
    ) -> Result<Option<(i64, f64)>> {
        self.reload_interning()?;
        let sids: Vec<i64> = self
            .series
            .iter()
            .filter(|(_, s)| &*s.measurement == measurement && &*s.device == device)
            .map(|(id, _)| *id)
            .collect();
        let Some(name_id) = self
            .names
            .iter()
            .find(|(_, n)| *n == field)
            .map(|(id, _)| *id as u64)
        else {
            return Ok(None);
        };
        if sids.is_empty() {
            return Ok(None);
        }
        let list = sids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let tx = self.conn.unchecked_transaction()?;
        let mut ks = segments(&tx)?;
        ks.reverse();
        let mut found = None;
        'segments: for k in ks {
            let mut st = tx.prepare(&format!(
                "SELECT id, ts, fields FROM {} WHERE series IN ({list}) ORDER BY id DESC",
                segment_table(k)
            ))?;
            let mut rows = st.query([])?;
            while let Some(row) = rows.next()? {
                let (id, ts, blob): (i64, i64, Vec<u8>) = (row.get(0)?, row.get(1)?, row.get(2)?);
                let fields =
                    codec::decode(&blob).map_err(|source| Error::Corrupt { id, source })?;
                for (n, v) in fields {
                    if n != name_id {
                        continue;
                    }
                    let value = match v {
                        Value::Float(f) if f.is_finite() => f,
                        Value::Int(i) => i as f64,
                        _ => continue,
                    };
                    found = Some((ts, value));
                    break 'segments;
                }
            }
        }
        tx.commit()?;
        Ok(found)
    }

    /// The timestamp of the oldest raw reading kept (from the oldest segment).
    pub fn oldest_raw_ts(&self) -> Result<Option<i64>> {
        let tx = self.conn.unchecked_transaction()?;
        let mut oldest = None;
        for_segments_after(&tx, i64::MIN, |_, table| {
            oldest = tx.query_row(&format!("SELECT MIN(ts) FROM {table}"), [], |r| r.get(0))?;
            Ok(oldest.is_none())
        })?;
        tx.commit()?;
        Ok(oldest)
    }

    fn reload_interning(&mut self) -> Result<()> {
        let (series, names) = interned(&self.conn)?;
        self.series.extend(series);
        self.names.extend(names);
        Ok(())
    }

    pub fn cursor(&self, consumer: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT position FROM cursors WHERE consumer = ?1",
                [consumer],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Durably records that `consumer` has delivered everything up to `position`.
    pub fn set_cursor(&self, consumer: &str, position: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO cursors(consumer, position) VALUES (?1, ?2) ON CONFLICT(consumer) DO UPDATE SET position = ?2",
            params![consumer, position],
        )?;
        Ok(())
    }

    /// Up to `limit` readings with id greater than `after`, in log order.
    pub fn read_after(&mut self, after: i64, limit: usize) -> Result<Vec<Stored>> {
        let mut rows: Vec<(i64, i64, i64, u8, Vec<u8>)> = Vec::new();
        {
            // One read transaction: a consistent snapshot even while the writer drops segments.
            let tx = self.conn.transaction()?;
            for_segments_after(&tx, after, |_, table| {
                let mut st = tx.prepare_cached(&format!("SELECT id, series, ts, quality, fields FROM {table} WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
                let got = st.query_map(params![after, (limit - rows.len()) as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?;
                for row in got {
                    rows.push(row?);
                }
                Ok(rows.len() < limit)
            })?;
            tx.commit()?;
        }
        let mut out = Vec::with_capacity(rows.len());
        for (id, sid, ts, quality, blob) in rows {
            let fields = codec::decode(&blob).map_err(|source| Error::Corrupt { id, source })?;
            if !self.series.contains_key(&sid)
                || fields
                    .iter()
                    .any(|(n, _)| !self.names.contains_key(&(*n as i64)))
            {
                self.reload_interning()?;
            }
            let series = self.series.get(&sid).cloned().ok_or(Error::Dangling {
                id,
                what: "series",
                ref_id: sid,
            })?;
            let fields = fields
                .into_iter()
                .map(|(n, v)| {
                    let name = self
                        .names
                        .get(&(n as i64))
                        .cloned()
                        .ok_or(Error::Dangling {
                            id,
                            what: "name",
                            ref_id: n as i64,
                        })?;
                    Ok((name, v))
                })
                .collect::<Result<Vec<(String, Value)>>>()?;
            out.push(Stored {
                id,
                reading: Reading {
                    series,
                    ts_ns: ts,
                    quality: Quality::from_u8(quality),
                    fields,
                    ack: None,
                    receipt: None,
                },
            });
        }
        Ok(out)
    }

    pub fn quarantine(
        &self,
        consumer: &str,
        reading_id: i64,
        line: &str,
        error: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO quarantine(consumer, reading_id, line, error, at_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![consumer, reading_id, line, error, crate::clock::wall_ns()],
        )?;
        Ok(())
    }

    /// The quarantined lines, newest first: (reading id, line, server's error).
    pub fn quarantined(&self, limit: usize) -> Result<Vec<(i64, String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT reading_id, line, error FROM quarantine ORDER BY id DESC LIMIT ?1")?;
        let rows = st.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn stats(&self, consumers: &[&str], db_path: &Path) -> Result<StoreStats> {
        let file_bytes = [db_path.to_path_buf(), db_path.with_extension("db-wal")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        // One read transaction, so a segment the writer drops meanwhile is still there.
        let tx = self.conn.unchecked_transaction()?;
        let (mut readings, mut last_id) = (0i64, 0i64);
        for_segments_after(&tx, i64::MIN, |_, table| {
            let (c, m): (i64, Option<i64>) =
                tx.query_row(&format!("SELECT COUNT(*), MAX(id) FROM {table}"), [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            readings += c;
            last_id = last_id.max(m.unwrap_or(0));
            Ok(true)
        })?;
        let evicted = tx
            .query_row("SELECT value FROM meta WHERE key = 'evicted'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let downsampled = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'downsampled'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let quarantined = self
            .conn
            .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))?;
        let mut states = Vec::new();
        for c in consumers {
            let position = self.cursor(c)?;
            let (mut backlog, mut oldest) = (0i64, None::<i64>);
            for_segments_after(&tx, position, |_, table| {
                let (c, first): (i64, Option<i64>) = tx.query_row(
                    &format!("SELECT COUNT(*), (SELECT ts FROM {table} WHERE id > ?1 ORDER BY id LIMIT 1) FROM {table} WHERE id > ?1"),
                    [position],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                backlog += c;
                oldest = oldest.or(first);
                Ok(true)
            })?;
            states.push(ConsumerState {
                name: (*c).to_owned(),
                position,
                backlog,
                oldest_unsent_ts_ns: oldest,
            });
        }
        tx.commit()?;
        Ok(StoreStats {
            file_bytes,
            readings,
            last_id,
            evicted,
            downsampled,
            quarantined,
            consumers: states,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(device: &str, ts: i64, v: f64) -> Reading {
        Reading {
            series: Series::new("gas_meter", device),
            ts_ns: ts,
            quality: Quality::Good,
            fields: vec![
                ("credit_kg".into(), Value::Float(v)),
                ("valve".into(), Value::Str("open".into())),
            ],
            ack: None,
            receipt: None,
        }
    }

    /// A new store has 1 KiB pages; one made with SQLite's 4 KiB pages (before) keeps them
    /// and takes readings as before.
    #[test]
    fn a_new_store_has_small_pages_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let page_size = |p: &Path| -> i64 {
            Connection::open(p)
                .expect("open")
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .expect("page_size")
        };
        let new = db_path(&dir.path().join("new"));
        std::fs::create_dir_all(new.parent().expect("dir")).expect("mkdir");
        let mut w = Writer::open(&new).expect("open");
        w.append(&[reading("a", 1, 1.0)]).expect("append");
        assert_eq!(page_size(&new), PAGE_SIZE);

        let old = db_path(&dir.path().join("old"));
        std::fs::create_dir_all(old.parent().expect("dir")).expect("mkdir");
        {
            let c = Connection::open(&old).expect("old");
            c.pragma_update(None, "page_size", 4096).expect("4 KiB");
            c.pragma_update(None, "journal_mode", "WAL").expect("wal");
            c.execute_batch("CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);")
                .expect("a table");
        }
        let mut w = Writer::open(&old).expect("open old");
        let batch: Vec<_> = (0..100).map(|i| reading("a", i, i as f64)).collect();
        w.append(&batch).expect("append");
        assert_eq!(page_size(&old), 4096);
        let got = Reader::open(&old)
            .expect("reader")
            .read_after(0, 1000)
            .expect("read");
        assert_eq!(got.len(), 100);
    }

    /// A source's persisted total: the newest good value of one field of one series, across
    /// segments, by log order; other series, other fields and bad values are skipped.
    #[test]
    fn latest_is_the_newest_good_value_of_a_series_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut w = Writer::open_with_segment_bits(&path, 2).expect("open");
        let mut r = Reader::open(&path).expect("reader");
        assert_eq!(
            r.latest("gas_meter", "a", "credit_kg").expect("latest"),
            None
        );
        let batch: Vec<_> = (0..10).map(|i| reading("a", i, i as f64)).collect();
        w.append(&batch).expect("append");
        w.append(&[reading("b", 20, 99.0)]).expect("append");
        let mut bad = reading("a", 30, 0.0);
        bad.fields = vec![(
            "credit_kg_quality".into(),
            Value::Str("out_of_range".into()),
        )];
        w.append(&[bad]).expect("append");
        assert_eq!(
            r.latest("gas_meter", "a", "credit_kg").expect("latest"),
            Some((9, 9.0))
        );
        assert_eq!(
            r.latest("gas_meter", "b", "credit_kg").expect("latest"),
            Some((20, 99.0))
        );
        assert_eq!(
            r.latest("gas_meter", "a", "valve").expect("latest"),
            None,
            "text"
        );
        assert_eq!(
            r.latest("gas_meter", "c", "credit_kg").expect("latest"),
            None
        );
    }

    #[test]
    fn committed_readings_survive_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let batch: Vec<_> = (0..100)
            .map(|i| reading(if i % 2 == 0 { "a" } else { "b" }, i, i as f64))
            .collect();
        {
            let mut w = Writer::open(&path).expect("open");
            assert_eq!(w.append(&batch[..60]).expect("append"), 60);
            assert_eq!(w.append(&batch[60..]).expect("append"), 100);
        }
        let mut w = Writer::open(&path).expect("reopen keeps interning");
        w.append(&[reading("c", 1000, 1.0)])
            .expect("append after reopen");
        let mut r = Reader::open(&path).expect("reader");
        let got = r.read_after(0, 1000).expect("read");
        assert_eq!(got.len(), 101);
        for (i, s) in got.iter().take(100).enumerate() {
            assert_eq!(s.id, i as i64 + 1);
            assert_eq!(s.reading, batch[i]);
        }
        assert_eq!(&*got[100].reading.series.device, "c");
    }

    #[test]
    fn a_store_from_before_segments_is_migrated_without_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        {
            let mut w = Writer::open_with_segment_bits(&path, 3).expect("open");
            w.append(
                &(0..20)
                    .map(|i| reading("a", i, i as f64))
                    .collect::<Vec<_>>(),
            )
            .expect("append");
            // Rebuild the old layout: one table with the same rows.
            w.conn
                .execute_batch(
                    "CREATE TABLE readings(id INTEGER PRIMARY KEY, series INTEGER NOT NULL, ts INTEGER NOT NULL, quality INTEGER NOT NULL, fields BLOB NOT NULL);
                     INSERT INTO readings SELECT * FROM readings_0 UNION ALL SELECT * FROM readings_1 UNION ALL SELECT * FROM readings_2;
                     DROP TABLE readings_0; DROP TABLE readings_1; DROP TABLE readings_2;",
                )
                .expect("old layout");
        }
        let mut w = Writer::open(&path).expect("reopen migrates");
        assert_eq!(w.append(&[reading("b", 99, 1.0)]).expect("append"), 21);
        let mut r = Reader::open(&path).expect("reader");
        let got = r.read_after(0, 100).expect("read");
        assert_eq!(got.len(), 21);
        assert!(got.iter().enumerate().all(|(i, s)| s.id == i as i64 + 1));
        assert_eq!(got[19].reading.fields[0].1, Value::Float(19.0));
    }

    #[test]
    fn quota_removes_oldest_first_and_tells_downsampled_from_evicted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut w = Writer::open_with_segment_bits(&path, 10).expect("open");
        w.register_consumers(&["influx", "aggregate"])
            .expect("register");
        let batch: Vec<_> = (0..20_000)
            .map(|i| reading("a", i, i as f64 + 0.1))
            .collect();
        w.append(&batch).expect("append");
        let r = Reader::open(&path).expect("reader");
        // The aggregator has everything; InfluxDB only the first 3,000.
        r.set_cursor("aggregate", 20_000).expect("cursor");
        r.set_cursor("influx", 3_000).expect("cursor");
        let quota = w.used_bytes().expect("size") / 2;
        let removed = w
            .enforce_quota(quota, &["influx", "aggregate"])
            .expect("evict");
        assert_eq!(removed.downsampled, 3_000, "{removed:?}");
        assert!(removed.evicted >= 7_000, "{removed:?}");
        let used = w.used_bytes().expect("size");
        assert!(used <= quota, "{used} > {quota}, {removed:?}");
        let total = removed.evicted + removed.downsampled;
        let mut r = Reader::open(&path).expect("reader");
        let first = r.read_after(0, 1).expect("read");
        assert_eq!(first[0].id, total as i64 + 1, "the oldest went first");
        let st = r.stats(&[], &path).expect("stats");
        assert_eq!(
            (st.evicted, st.downsampled),
            (removed.evicted as i64, 3_000)
        );
        // Ids are never reused after the oldest segments went.
        drop(w);
        let mut w = Writer::open_with_segment_bits(&path, 10).expect("reopen");
        assert_eq!(w.append(&[reading("a", 1, 0.5)]).expect("append"), 20_001);
    }

    #[test]
    fn make_room_removes_the_oldest_few_and_never_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut w = Writer::open_with_segment_bits(&path, 12).expect("open");
        w.register_consumers(&["aggregate"]).expect("register");
        let n = 4 * ROOM_ROWS + 400;
        let batch: Vec<_> = (0..n).map(|i| reading("a", i, i as f64)).collect();
        w.append(&batch).expect("append");
        let r = Reader::open(&path).expect("reader");
        r.set_cursor("aggregate", 50).expect("cursor");
        let removed = w.make_room(&["aggregate"], true).expect("room");
        assert_eq!(
            (removed.downsampled, removed.evicted),
            (50, ROOM_ROWS as u64 - 50),
            "at most ROOM_ROWS, the oldest, told apart by the cursor"
        );
        let mut r = Reader::open(&path).expect("reader");
        assert_eq!(r.read_after(0, 1).expect("read")[0].id, ROOM_ROWS + 1);
        // A quarter of what is left each time; the newest reading always stays.
        let removed = w.make_room(&["aggregate"], true).expect("room");
        assert_eq!(
            removed.downsampled + removed.evicted,
            (n - ROOM_ROWS) as u64 / 4,
            "{removed:?}"
        );
        for _ in 0..60 {
            w.make_room(&["aggregate"], true).expect("room");
        }
        let left = r.read_after(0, 10).expect("read");
        assert_eq!(left.iter().map(|s| s.id).collect::<Vec<_>>(), vec![n]);
        assert_eq!(
            w.make_room(&["aggregate"], true).expect("room"),
            Removed::default()
        );
    }

    #[test]
    fn raw_range_finds_one_fields_readings_by_series_and_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut w = Writer::open_with_segment_bits(&path, 3).expect("open");
        let mut batch: Vec<_> = (0..40)
            .map(|i| reading(if i % 2 == 0 { "a" } else { "b" }, i * 10, i as f64))
            .collect();
        batch[4].fields[0] = (
            "credit_kg_quality".into(),
            Value::Str("out_of_range".into()),
        );
        batch[6].quality = Quality::ClockUnsynced;
        w.append(&batch).expect("append");
        let mut r = Reader::open(&path).expect("reader");
        let got = r
            .raw_range("gas_meter", "a", "credit_kg", 20, 120)
            .expect("range");
        assert_eq!(
            got,
            vec![
                RawPoint {
                    ts_ns: 20,
                    value: Some(2.0),
                    unsynced: false
                },
                RawPoint {
                    ts_ns: 40,
                    value: None,
                    unsynced: false
                },
                RawPoint {
                    ts_ns: 60,
                    value: Some(6.0),
                    unsynced: true
                },
                RawPoint {
                    ts_ns: 80,
                    value: Some(8.0),
                    unsynced: false
                },
                RawPoint {
                    ts_ns: 100,
                    value: Some(10.0),
                    unsynced: false
                },
            ]
        );
        // Twice: the second time from the cached spans.
        assert_eq!(
            r.raw_range("gas_meter", "a", "credit_kg", 20, 120)
                .expect("again"),
            got
        );
        assert!(r
            .raw_range("gas_meter", "zz", "credit_kg", 0, 1000)
            .expect("none")
            .is_empty());
    }

    #[test]
    fn the_logbook_table_refuses_updates_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Writer::open(&db_path(dir.path())).expect("open");
        w.conn
            .execute(
                "INSERT INTO logbook(id, entry, revision, kind, at_ns, recorded_ns, \"by\", withdrawn, body) VALUES (1, 1, 1, 'note', 0, 0, 'a', 0, '{\"text\":\"x\"}')",
                [],
            )
            .expect("insert");
        for sql in ["UPDATE logbook SET body = '{}'", "DELETE FROM logbook"] {
            let e = w.conn.execute(sql, []).expect_err("refused");
            assert!(e.to_string().contains("never changed"), "{sql}: {e}");
        }
        let n: i64 = w
            .conn
            .query_row("SELECT COUNT(*) FROM logbook", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
    }
}
