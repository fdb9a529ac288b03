//! Copies of the store for `gkgw backup` (`crate::backup`): a consistent snapshot taken while
//! the writer goes on, and the check of a copy.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, Error>;

/// Writes a compact, consistent copy of the database `db` (with what its WAL holds) to `to`
/// with `VACUUM INTO`: one read transaction, so a running gateway's commits go on meanwhile.
pub fn vacuum_into(db: &Path, to: &Path) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
    Ok(())
}

pub fn utc(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Counts in a store, printed by both commands so a technician can compare them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub bytes: u64,
    pub readings: u64,
    pub newest_reading_ns: Option<i64>,
    pub users: u64,
    pub logbook_rows: u64,
    pub alarm_events: u64,
}

fn count(conn: &rusqlite::Connection, table: &str) -> u64 {
    conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n.max(0) as u64)
    .unwrap_or(0)
}

/// Opens the copy in `path` and checks it: `PRAGMA integrity_check` must say ok.
pub fn check_copy(path: &Path) -> Result<Summary> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(Error::Damaged(format!("integrity_check: {verdict}")));
    }
    let segments: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'readings_*'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })?;
    let mut sum = Summary {
        bytes: std::fs::metadata(path)?.len(),
        users: count(&conn, "users"),
        logbook_rows: count(&conn, "logbook"),
        alarm_events: count(&conn, "alarm_events"),
        ..Summary::default()
    };
    for t in segments {
        sum.readings += count(&conn, &t);
        let newest: Option<i64> = conn
            .query_row(
                &format!("SELECT ts FROM \"{t}\" ORDER BY id DESC LIMIT 1"),
                [],
                |r| r.get(0),
            )
            .ok();
        sum.newest_reading_ns = sum.newest_reading_ns.max(newest);
    }
    Ok(sum)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MB, {} readings kept (newest {}), {} users, {} logbook rows, {} alarm events",
            self.bytes as f64 / 1e6,
            self.readings,
            self.newest_reading_ns.map_or("none".into(), utc),
            self.users,
            self.logbook_rows,
            self.alarm_events,
        )
    }
}
