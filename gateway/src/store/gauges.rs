//! The store's gauges for `/metrics`: asked of the store at scrape time, not kept on atomics.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Handle, Reader, StoreStats};
use crate::metrics::{Collector, Encoder, Kind};

/// Reads [`StoreStats`] through the web's reader and renders the last ones read. The web
/// server calls [`Gauges::refresh`] before it renders the registry (and for `/api/status`).
pub struct Gauges {
    reader: Handle<Reader>,
    db: PathBuf,
    consumers: Vec<&'static str>,
    /// The last stats read, and when (Unix ns): consumer ages are relative to that moment.
    last: Mutex<(StoreStats, i64)>,
}

impl Gauges {
    pub fn new(reader: Handle<Reader>, db: PathBuf, consumers: Vec<&'static str>) -> Arc<Gauges> {
        Arc::new(Gauges {
            reader,
            db,
            consumers,
            last: Mutex::default(),
        })
    }

    /// Reads the store's stats now; on an error logs it and returns empty stats.
    pub async fn refresh(&self) -> StoreStats {
        let (db, consumers) = (self.db.clone(), self.consumers.clone());
        let stats = self
            .reader
            .run(move |r| r.stats(&consumers, &db))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "store stats");
                StoreStats::default()
            });
        let now = crate::clock::wall_ns();
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = (stats.clone(), now);
        stats
    }
}

impl Collector for Gauges {
    fn collect(&self, out: &mut Encoder) {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let (st, now) = (&last.0, last.1);
        out.single(
            "gkgw_store_bytes",
            "Store files on disk (database and WAL).",
            Kind::Gauge,
            st.file_bytes,
        );
        out.single(
            "gkgw_store_readings",
            "Readings held in the store.",
            Kind::Gauge,
            st.readings,
        );
        out.single(
            "gkgw_store_evicted_total",
            "Readings evicted by the disk quota before every consumer had them.",
            Kind::Counter,
            st.evicted,
        );
        out.single(
            "gkgw_store_downsampled_total",
            "Raw readings removed by the disk quota after every consumer had them (their 1-minute and 1-hour windows stay).",
            Kind::Counter,
            st.downsampled,
        );
        let dir = self.db.parent().unwrap_or(std::path::Path::new("."));
        if let Some((free, total)) = crate::os::disk_space(dir) {
            out.single(
                "gkgw_disk_free_bytes",
                "Free space on the state directory's filesystem.",
                Kind::Gauge,
                free,
            );
            out.single(
                "gkgw_disk_size_bytes",
                "Size of the state directory's filesystem.",
                Kind::Gauge,
                total,
            );
        }
        if let Some(w) = crate::os::written_bytes() {
            out.single(
                "gkgw_process_written_bytes_total",
                "Bytes the gateway caused to be written to storage (/proc/self/io write_bytes): the SD card's wear. Each store commit is one fsync (gkgw_store_commits_total).",
                Kind::Counter,
                w,
            );
        }
        if let Some(rss) = crate::os::resident_bytes() {
            out.single(
                "gkgw_process_resident_bytes",
                "Resident memory of the gateway process (/proc/self/statm).",
                Kind::Gauge,
                rss,
            );
        }
        if let Some((used, held)) = crate::os::heap_bytes() {
            out.single(
                "gkgw_process_heap_bytes",
                "Heap in use (glibc mallinfo2, all arenas, mmapped blocks included).",
                Kind::Gauge,
                used,
            );
            out.single(
                "gkgw_process_heap_held_bytes",
                "Heap the allocator holds from the kernel, in use or free.",
                Kind::Gauge,
                held,
            );
        }
        out.single(
            "gkgw_store_quarantined",
            "Lines held in quarantine.",
            Kind::Gauge,
            st.quarantined,
        );
        let mut f = out.family(
            "gkgw_consumer_backlog",
            "Readings not yet delivered by a consumer.",
            Kind::Gauge,
        );
        for c in &st.consumers {
            f.sample(&[("consumer", &c.name)], c.backlog);
        }
        let mut f = out.family(
            "gkgw_consumer_oldest_unsent_seconds",
            "Age of the oldest reading a consumer has not delivered.",
            Kind::Gauge,
        );
        for c in &st.consumers {
            // Millisecond resolution, as the text had before the registry.
            let ms = c
                .oldest_unsent_ts_ns
                .map_or(0, |t| (now - t).max(0) / 1_000_000);
            f.sample(&[("consumer", &c.name)], ms as f64 / 1e3);
        }
    }
}
