//! A full disk (issue 14, SD-card care): the newest readings win.
//!
//! SQLite needs free space to commit (the WAL grows, a checkpoint grows the database), and so
//! does every `DELETE` that would make room. So the store keeps a **reserve**: a file of
//! [`RESERVE_BYTES`] in the state directory, made while the disk has room. When a commit
//! fails for want of space the committer releases the reserve (the WAL can grow again) and
//! removes the oldest raw readings ([`super::Writer::make_room`]; counted as downsampled or
//! evicted), whose pages then take the newest readings without the database growing. While
//! the reserve is released the disk is *full*: before each commit the WAL is kept short and
//! more of the oldest readings go when little is free, `gkgw_store_disk_full` is 1 and the
//! alarm engine raises `gateway.disk_full`. When space returns ([`REMAKE_FREE`] more free) the
//! reserve is made again and the alarm clears.
//!
//! Invariant: the reserve exists, or `full()` is true (`tests::the_reserve_is_made_released_and_made_again`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::metrics::{Collector, Encoder, Kind};

/// Size of the reserve file.
pub const RESERVE_BYTES: u64 = 2 << 20;
/// Free space needed (besides the reserve) before the reserve is made again.
pub const REMAKE_FREE: u64 = 2 * RESERVE_BYTES;

/// The reserve and whether the disk is full. Shared by the committer (which releases and
/// remakes it), the alarm task (which raises `gateway.disk_full`) and `/metrics`.
pub struct Disk {
    dir: PathBuf,
    reserve: PathBuf,
    full: AtomicBool,
    episodes: AtomicU64,
    removed: AtomicU64,
}

impl Disk {
    /// The reserve of the store in `state_dir`, made now if the disk has room.
    pub fn open(state_dir: &Path) -> Disk {
        let d = Disk {
            dir: state_dir.to_owned(),
            reserve: state_dir.join("store.reserve"),
            full: AtomicBool::new(false),
            episodes: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        };
        if !d.keep() {
            d.full.store(true, Relaxed);
            tracing::warn!(dir = %d.dir.display(), "the disk is nearly full: no room for the store's reserve; the oldest readings go first when it fills");
        }
        d
    }

    /// Whether the disk is full: the reserve is released (or could not be made).
    pub fn full(&self) -> bool {
        self.full.load(Relaxed)
    }

    /// Readings removed to make room since the start.
    pub fn removed(&self) -> u64 {
        self.removed.load(Relaxed)
    }

    /// A commit failed for want of space: releases the reserve (once per episode). Returns
    /// whether it was released now.
    pub fn release(&self) -> bool {
        let was_full = self.full.swap(true, Relaxed);
        let released = std::fs::remove_file(&self.reserve).is_ok();
        if !was_full {
            self.episodes.fetch_add(1, Relaxed);
        }
        released
    }

    /// Counts readings removed to make room.
    pub fn count_removed(&self, n: u64) {
        self.removed.fetch_add(n, Relaxed);
    }

    /// Makes the reserve again when the disk has room; clears `full` once it exists.
    /// Returns whether the reserve exists.
    pub fn keep(&self) -> bool {
        if std::fs::metadata(&self.reserve).is_ok_and(|m| m.len() >= RESERVE_BYTES) {
            self.full.store(false, Relaxed);
            return true;
        }
        let room = crate::os::disk_space(&self.dir)
            .is_none_or(|(free, _)| free >= RESERVE_BYTES + REMAKE_FREE);
        if !room {
            return false;
        }
        match write_reserve(&self.reserve) {
            Ok(()) => {
                if self.full.swap(false, Relaxed) {
                    tracing::info!("disk space is back: the store's reserve is made again");
                }
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.reserve);
                tracing::warn!(error = %e, "cannot make the store's reserve");
                false
            }
        }
    }
}

/// Writes the reserve's bytes for real (not a sparse file: the space must be taken).
fn write_reserve(path: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    for _ in 0..RESERVE_BYTES / block.len() as u64 {
        f.write_all(&block)?;
    }
    f.sync_all()
}

impl Collector for Disk {
    fn collect(&self, out: &mut Encoder) {
        out.single(
            "gkgw_store_disk_full",
            "1 while the disk is full: the store's reserve is released and the oldest readings make room for the newest (alarm gateway.disk_full).",
            Kind::Gauge,
            u64::from(self.full()),
        );
        out.single(
            "gkgw_store_disk_full_total",
            "Times the disk filled (the store's reserve was released).",
            Kind::Counter,
            self.episodes.load(Relaxed),
        );
        out.single(
            "gkgw_store_room_made_total",
            "Oldest readings removed because the disk was full (also in gkgw_store_downsampled_total or gkgw_store_evicted_total).",
            Kind::Counter,
            self.removed(),
        );
    }
}

/// Whether a store error is the disk being full.
pub fn is_full(e: &super::Error) -> bool {
    matches!(e, super::Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_made_released_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = Disk::open(dir.path());
        assert!(!d.full());
        let reserve = dir.path().join("store.reserve");
        assert_eq!(std::fs::metadata(&reserve).unwrap().len(), RESERVE_BYTES);
        assert!(d.release(), "released now");
        assert!(d.full() && !reserve.exists());
        assert!(!d.release(), "nothing left to release");
        assert!(d.keep(), "room again: made again");
        assert!(!d.full());
        assert_eq!(std::fs::metadata(&reserve).unwrap().len(), RESERVE_BYTES);
        let mut r = crate::metrics::Registry::default();
        r.register(std::sync::Arc::new(d));
        assert!(r.render().contains("gkgw_store_disk_full_total 1"));
    }
}
