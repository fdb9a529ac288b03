//! The commit loop: collects readings from the bounded channel into batches and commits each
//! batch in one transaction on the blocking pool (through the writer's [`Handle`]). Only after
//! a commit are consumers woken (`committed` watch), the MQTT messages confirmed (their
//! receipts: the broker's PUBACK) and meters acknowledged (`acks` channel).
//!
//! A batch closes when it reaches `max_batch` or when its first reading has waited
//! `commit_interval`. While a batch is being committed the channel keeps filling; when it is full
//! the sources wait. A failed commit (disk error) is retried with the same batch: nothing is
//! dropped, and `/healthz` reports the store unhealthy meanwhile.
//!
//! Clock steps (see `clock`): before each commit the batch is brought to the clock's current
//! epoch (`Timeline::correct`: unsynchronised readings stamped before a step are moved and
//! marked `Restamped`, also those that were still in the channel when the step came), and in
//! the same transaction the rows this run already stored unsynchronised move by the steps
//! since the last commit (`Restamp`). So every stored own-clock unsynchronised row of this run
//! is always expressed in the epoch of the last commit.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Handle, Restamp, Writer};
use crate::clock::Clock;
use crate::metrics::{Collector, Counter, Encoder, Kind, Registry, Seconds};
use crate::model::{AckRequest, Quality, Reading};

/// What the committer counts.
pub struct Metrics {
    pub readings_accepted: Arc<Counter>,
    pub commits: Arc<Counter>,
    pub commit_seconds: Arc<Seconds>,
    pub errors: Arc<Counter>,
    /// Acks not handed to the ack router because its queue was full.
    pub acks_dropped: Arc<Counter>,
}

impl Metrics {
    /// Registers the committer's metrics with `r`.
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            readings_accepted: r.counter(
                "gkgw_readings_accepted_total",
                "Readings committed to the local store.",
            ),
            commits: r.counter(
                "gkgw_store_commits_total",
                "Store transactions committed (each one fsync).",
            ),
            errors: r.counter(
                "gkgw_store_errors_total",
                "Store commits that failed and were retried.",
            ),
            acks_dropped: r.counter(
                "gkgw_meter_acks_dropped_total",
                "Acks not published because the broker link was full.",
            ),
            commit_seconds: r.seconds("gkgw_store_commit_seconds_total", "Time spent committing."),
        }
    }
}

/// Metrics that nobody renders (tests, tools).
impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::register(&mut Registry::default())
    }
}

pub struct Settings {
    pub commit_interval: Duration,
    /// Notified by a source whose publisher is blocked until something commits (an MQTT
    /// connection at `broker.max_inflight`): the open batch is committed at once instead of at
    /// the end of `commit_interval`, so acknowledging after the commit never caps a fast
    /// publisher at `max_inflight` per interval. Slow meters never trigger it, so their
    /// commits (and the SD card's writes) stay one per interval.
    pub commit_now: Arc<tokio::sync::Notify>,
    /// The least time from one commit's start to the next when `commit_now` asks for one
    /// early: the bound on fsyncs a second (`1 / min_commit_gap`) that no publisher can push
    /// past. A meter that keeps its window full cannot wear the SD card out one message
    /// at a time; its messages just ride in fuller commits.
    pub min_commit_gap: Duration,
    pub max_batch: usize,
    pub quota_bytes: u64,
    /// Consumers whose cursors hold readings back from pruning.
    pub consumers: Vec<&'static str>,
    /// Whose steps are corrected in the batch and the store.
    pub clock: Arc<Clock>,
    /// The reserve released when the disk is full (see `store::disk`).
    pub disk: Arc<super::disk::Disk>,
}

/// The pipeline's health: whether the last commit attempt failed, whether a commit has hung,
/// and which of the tasks the pipeline cannot do without (the broker's listener, each source,
/// the committer, the web server) ended before the shutdown. What `/healthz`, `gkgw_up` and
/// the systemd watchdog report: each is something a restart mends. Registered as a collector,
/// it is `gkgw_up`.
#[derive(Default)]
pub struct Health {
    pub failing: AtomicBool,
    /// When the commit in progress started; `None` between commits.
    committing_since: Mutex<Option<Instant>>,
    /// Watched tasks that ended (returned or panicked) while the gateway was running.
    ended: Mutex<Vec<String>>,
}

/// A commit running longer than this (a hung SD card, a wedged transaction) makes the gateway
/// unhealthy: the watchdog (WatchdogSec=30) then lets systemd restart it.
pub const COMMIT_STALL: Duration = Duration::from_secs(20);

impl Health {
    /// Whether the pipeline is healthy: what `/healthz` (the systemd watchdog) and `gkgw_up`
    /// report.
    pub fn healthy(&self) -> bool {
        self.problem().is_none()
    }

    /// Why the pipeline is unhealthy, if it is.
    pub fn problem(&self) -> Option<String> {
        if self.failing.load(Relaxed) {
            return Some("store commits are failing".to_owned());
        }
        if let Some(since) = *lock(&self.committing_since) {
            let took = since.elapsed();
            if took > COMMIT_STALL {
                return Some(format!(
                    "a store commit has been running for {} s",
                    took.as_secs()
                ));
            }
        }
        let ended = lock(&self.ended);
        if !ended.is_empty() {
            return Some(format!("stopped: {}", ended.join(", ")));
        }
        None
    }

    fn committing(&self, on: bool) {
        *lock(&self.committing_since) = on.then(Instant::now);
    }

    /// `task`, watched: if it ends (returns or panics) before `shutdown` is cancelled, the
    /// gateway is unhealthy from then on, naming it.
    pub fn watch<F>(
        self: &Arc<Self>,
        name: impl Into<String>,
        shutdown: CancellationToken,
        task: F,
    ) -> impl Future<Output = F::Output> + Send + 'static
    where
        F: Future + Send + 'static,
    {
        let guard = Watched {
            health: self.clone(),
            name: name.into(),
            shutdown,
        };
        async move {
            let _guard = guard;
            task.await
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Watched {
    health: Arc<Health>,
    name: String,
    shutdown: CancellationToken,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.shutdown.is_cancelled() {
            tracing::error!(task = %self.name, "a pipeline task stopped while running: the gateway is unhealthy (the watchdog lets systemd restart it)");
            lock(&self.health.ended).push(std::mem::take(&mut self.name));
        }
    }
}

impl Collector for Health {
    fn collect(&self, out: &mut Encoder) {
        out.single(
            "gkgw_up",
            "1 while the pipeline is healthy.",
            Kind::Gauge,
            u64::from(self.healthy()),
        );
    }
}

/// Runs until `rx` closes (all sources stopped) and the last batch is committed.
pub async fn run(
    writer: Handle<Writer>,
    settings: Settings,
    mut rx: mpsc::Receiver<Reading>,
    committed: watch::Sender<i64>,
    acks: mpsc::Sender<Vec<AckRequest>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let mut batch: Vec<Reading> = Vec::with_capacity(settings.max_batch.min(65_536));
    let mut last_housekeeping = Instant::now();
    // The first id of this run, and the clock epoch the stored rows of this run are in.
    let first_id = writer.run(|w| w.next_id()).await;
    let mut store_epoch = 0u64;
    let mut open = true;
    let mut last_commit: Option<tokio::time::Instant> = None;
    while open {
        match rx.recv().await {
            Some(r) => batch.push(r),
            None => break,
        }
        // One timer per batch, and every reading already queued taken in one go.
        let deadline = tokio::time::sleep(settings.commit_interval);
        tokio::pin!(deadline);
        while batch.len() < settings.max_batch {
            let room = settings.max_batch - batch.len();
            tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, room) => if n == 0 { open = false; break; },
                _ = &mut deadline => break,
                _ = settings.commit_now.notified() => {
                    // Not sooner than min_commit_gap after the last commit: until then the
                    // batch goes on filling (the interval's deadline still holds when earlier).
                    if let Some(at) = last_commit.map(|t| t + settings.min_commit_gap) {
                        if tokio::time::Instant::now() < at {
                            if at < deadline.deadline() {
                                deadline.as_mut().reset(at);
                            }
                            continue;
                        }
                    }
                    // Whatever is already queued goes into this commit too.
                    let room = settings.max_batch - batch.len();
                    if room > 0 {
                        while let Ok(r) = rx.try_recv() {
                            batch.push(r);
                            if batch.len() >= settings.max_batch {
                                break;
                            }
                        }
                    }
                    break;
                }
            }
        }
        let (restamp, epoch, moved) =
            correct_for_steps(&settings.clock, store_epoch, first_id, &mut batch);
        let housekeeping = last_housekeeping.elapsed() >= Duration::from_secs(5) || !open;
        if settings.disk.full() {
            // While the disk is full, before each commit: the WAL is kept short and room is
            // kept inside the database, so neither takes the last free bytes; and every 5 s,
            // if space is back, the reserve is made again (and the alarm clears).
            make_room(&writer, &settings, None).await;
            if housekeeping {
                let disk = settings.disk.clone();
                let _ = tokio::task::spawn_blocking(move || disk.keep()).await;
            }
        }
        let quota = settings.quota_bytes;
        let mut retry = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            last_commit = Some(tokio::time::Instant::now());
            health.committing(true);
            let consumers = settings.consumers.clone();
            let (b, result) = writer
                .run(move |writer| {
                    let r = writer
                        .append_restamped(&batch, restamp)
                        .and_then(|(last, moved)| {
                            if housekeeping {
                                let removed = writer.enforce_quota(quota, &consumers)?;
                                if removed.evicted > 0 {
                                    tracing::warn!(
                                        evicted = removed.evicted,
                                        downsampled = removed.downsampled,
                                        "store quota reached: oldest readings evicted before every consumer had them"
                                    );
                                } else if removed.downsampled > 0 {
                                    tracing::info!(
                                        downsampled = removed.downsampled,
                                        "store quota reached: oldest raw readings removed, their windows kept"
                                    );
                                }
                            }
                            Ok((last, moved))
                        });
                    (batch, r)
                })
                .await;
            health.committing(false);
            batch = b;
            match result {
                Ok((last, stored_moved)) => {
                    store_epoch = epoch;
                    if moved + stored_moved > 0 {
                        settings.clock.count_restamped(moved + stored_moved);
                        tracing::info!(
                            in_batch = moved,
                            stored = stored_moved,
                            "readings re-stamped after a clock step"
                        );
                    }
                    metrics.commits.inc();
                    metrics.commit_seconds.add(started.elapsed());
                    metrics.readings_accepted.add(batch.len() as u64);
                    health.failing.store(false, Relaxed);
                    committed.send_replace(last);
                    // Now, and only now, the readings are accepted: PUBACK their messages. A
                    // meter's application ack rides with its PUBACK when the message has one
                    // (one write to the meter instead of two); the others go through the router.
                    let mut to_ack: Vec<AckRequest> = Vec::new();
                    for r in batch.iter_mut() {
                        let ack = r.ack.take();
                        match r.receipt.take() {
                            Some(receipt) => {
                                if let Err(Some(seq)) = receipt.confirm(ack.as_ref().map(|a| a.seq))
                                {
                                    if let Some(a) = ack.filter(|a| a.seq == seq) {
                                        to_ack.push(a);
                                    }
                                }
                            }
                            None => to_ack.extend(ack),
                        }
                    }
                    if !to_ack.is_empty() && acks.try_send(to_ack).is_err() {
                        metrics.acks_dropped.inc();
                    }
                    batch.clear();
                    if housekeeping {
                        last_housekeeping = Instant::now();
                    }
                    break;
                }
                Err(e) => {
                    metrics.errors.inc();
                    health.failing.store(true, Relaxed);
                    tracing::error!(error = %e, readings = batch.len(), "store commit failed; retrying the same batch");
                    if super::disk::is_full(&e) {
                        // The newest readings win: release the reserve (room for the WAL) and
                        // remove the oldest readings, whose pages then take the new ones.
                        make_room(&writer, &settings, Some(&e)).await;
                        retry = Duration::from_millis(100);
                        continue;
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    tracing::info!("store committer stopped: every received reading is committed");
}

/// The disk is full (`store::disk`, `Writer::make_room`). After a commit failed for want of
/// space (`cause`): releases the reserve, truncates the WAL and removes the oldest readings
/// whatever is free; when nothing can be removed (the store holds only the newest reading)
/// it waits a second and the batch is retried, its QoS 1 messages unacked. Before a commit
/// while the disk is full (`None`): truncates the WAL once it is long and removes the oldest
/// readings once little is free.
async fn make_room(writer: &Handle<Writer>, settings: &Settings, cause: Option<&super::Error>) {
    let force = cause.is_some();
    let released = force && settings.disk.release();
    let consumers = settings.consumers.clone();
    match writer.run(move |w| w.make_room(&consumers, force)).await {
        Ok(r) => {
            let n = r.downsampled + r.evicted;
            settings.disk.count_removed(n);
            if n > 0 || force {
                tracing::warn!(
                    released_reserve = released,
                    downsampled = r.downsampled,
                    evicted = r.evicted,
                    cause = cause.map(tracing::field::display),
                    "the disk is full: the oldest readings make room for the newest"
                );
            }
            if force && n == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, released_reserve = released, "the disk is full and the oldest readings cannot be removed; the batch waits");
            if force {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Brings `batch` to the clock's current epoch and says how the stored rows of this run
/// (from `first_id`, in `store_epoch`) must move: (the store's correction, the epoch both are
/// in afterwards, readings of the batch moved). Without steps this costs one lock.
fn correct_for_steps(
    clock: &Clock,
    store_epoch: u64,
    first_id: i64,
    batch: &mut [Reading],
) -> (Option<Restamp>, u64, u64) {
    let epoch = clock.epoch();
    let unsynced = |r: &Reading| r.quality == Quality::ClockUnsynced;
    if epoch == 0 || (epoch == store_epoch && !batch.iter().any(unsynced)) {
        return (None, store_epoch, 0);
    }
    let timeline = clock.timeline();
    let now = timeline.current();
    let moved = timeline.correct(batch) as u64;
    let delta_ns = timeline.offset(now) - timeline.offset(store_epoch);
    let restamp = (delta_ns != 0).then_some(Restamp {
        from_id: first_id,
        delta_ns,
    });
    (restamp, now, moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FakeTime, Stamp};
    use crate::model::Value;
    use crate::sources::mqtt;

    const S: i64 = 1_000_000_000;
    const YEAR: i64 = 365 * 24 * 3600 * S;
    /// The true time at boot: 2026-11-22T09:33:20Z.
    const NOW: i64 = 1_795_340_000 * S;

    /// A meter message through the real MQTT parser, stamped by `clock` (with a floor that
    /// does not expire as the build date moves on).
    fn meter(clock: &Clock, seq: u64, ts: Option<&str>) -> Reading {
        let rules = mqtt::Rules::meters_only(512);
        let ts = ts.map_or(String::new(), |t| format!(r#""ts":"{t}","#));
        let payload =
            format!(r#"{{"meter_id":"GM-1","seq":{seq},{ts}"kind":"gas","cum_kg":{seq}}}"#);
        let now = Stamp {
            floor_ns: NOW - 5 * YEAR,
            ..clock.now()
        };
        let mut rs = mqtt::parse(&rules, "meters/GM-1/state", payload.as_bytes(), now)
            .expect("a valid message");
        rs.pop().expect("one reading")
    }

    /// The committer's settings in these tests: a fresh disk watch on `dir`, no consumers.
    fn settings(
        dir: &std::path::Path,
        clock: &Arc<Clock>,
        commit_interval: Duration,
        commit_now: Arc<tokio::sync::Notify>,
        min_commit_gap: Duration,
    ) -> Settings {
        Settings {
            commit_interval,
            commit_now,
            min_commit_gap,
            max_batch: 1000,
            quota_bytes: 1 << 30,
            consumers: Vec::new(),
            clock: clock.clone(),
            disk: Arc::new(crate::store::disk::Disk::open(dir)),
        }
    }

    /// The watchdog's view: a watched task that ends while the gateway runs (returned or
    /// panicked) makes it unhealthy, naming the task; one that ends after the shutdown began
    /// does not; a commit running longer than COMMIT_STALL does, until it finishes.
    #[tokio::test]
    async fn health_covers_stopped_tasks_and_hung_commits() {
        let health = Arc::new(Health::default());
        let shutdown = CancellationToken::new();
        assert_eq!(health.problem(), None);

        let slow = tokio::spawn(health.watch("slow", shutdown.clone(), async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }));
        tokio::spawn(health.watch("modbus bus rs485", shutdown.clone(), async {}))
            .await
            .expect("returns");
        assert_eq!(
            health.problem().as_deref(),
            Some("stopped: modbus bus rs485")
        );
        let panicked =
            tokio::spawn(
                health.watch("gpio input gas-meter", shutdown.clone(), async {
                    panic!("a source bug");
                }),
            )
            .await;
        assert!(panicked.is_err());
        assert_eq!(
            health.problem().as_deref(),
            Some("stopped: modbus bus rs485, gpio input gas-meter")
        );
        assert!(!health.healthy());

        // After the shutdown began, tasks ending is the plan.
        let health = Arc::new(Health::default());
        let shutdown = CancellationToken::new();
        let t = tokio::spawn(health.watch("broker", shutdown.clone(), async {}));
        shutdown.cancel();
        t.await.expect("returns");
        slow.abort();
        assert!(health.healthy());

        // A hung commit; then the commit finishes.
        health.committing(true);
        assert!(health.healthy(), "a commit in progress is fine");
        *lock(&health.committing_since) = Instant::now().checked_sub(COMMIT_STALL * 2);
        let p = health.problem().expect("a hung commit is a problem");
        assert!(p.starts_with("a store commit has been running for "), "{p}");
        health.committing(false);
        assert!(health.healthy());
        health.failing.store(true, Relaxed);
        assert_eq!(
            health.problem().as_deref(),
            Some("store commits are failing")
        );
    }

    #[tokio::test]
    async fn a_step_at_sync_restamps_this_runs_unsynced_readings_in_batch_and_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = super::super::db_path(dir.path());
        // Boots at a saved time two years old, not synchronised.
        let fake = FakeTime::new(NOW - 2 * YEAR, false);
        let clock = Clock::new(fake.clone());
        let (tx, rx) = mpsc::channel(64);
        let (committed_tx, mut committed) = watch::channel(0i64);
        let (acks_tx, _acks_rx) = mpsc::channel(64);
        let task = tokio::spawn(run(
            Handle::new(Writer::open(&path).expect("open")),
            settings(
                dir.path(),
                &clock,
                Duration::from_millis(5),
                Arc::default(),
                Duration::from_millis(1),
            ),
            rx,
            committed_tx,
            acks_tx,
            Arc::new(Metrics::default()),
            Arc::new(Health::default()),
        ));
        let mut send = async |r: Reading, wait_for: i64| {
            tx.send(r).await.expect("committer running");
            committed
                .wait_for(|last| *last >= wait_for)
                .await
                .expect("committed");
        };
        // 1: our stamp, unsynced. 2: the meter's own (correct) clock, two years "ahead".
        send(meter(&clock, 1, None), 1).await;
        send(meter(&clock, 2, Some("2026-11-22T09:00:00Z")), 2).await;
        fake.advance(10 * S);
        // 3: stamped before the step, but reaches the committer after it (still in a channel).
        let late = meter(&clock, 3, None);
        fake.advance(10 * S);
        fake.step(2 * YEAR); // NTP steps the clock ...
        let unsynced_after = meter(&clock, 4, None); // ... and clears STA_UNSYNC a moment later
        fake.set_synced(true);
        fake.advance(2 * S);
        let synced = meter(&clock, 5, None);
        for (r, id) in [(late, 3), (unsynced_after, 4), (synced, 5)] {
            send(r, id).await;
        }
        drop(tx);
        task.await.expect("committer ends");

        let got: Vec<(i64, i64, Quality)> = super::super::Reader::open(&path)
            .expect("reader")
            .read_after(0, 100)
            .expect("read")
            .into_iter()
            .map(|s| {
                let seq = s
                    .reading
                    .fields
                    .iter()
                    .find_map(|(k, v)| match (k.as_str(), v) {
                        ("seq", Value::Int(i)) => Some(*i),
                        _ => None,
                    })
                    .expect("seq");
                (seq, s.reading.ts_ns, s.reading.quality)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, NOW, Quality::Restamped),              // in the store at the step
                (2, NOW - 2000 * S, Quality::Good),        // the meter's clock: untouched
                (3, NOW + 10 * S, Quality::Restamped),     // in the channel at the step
                (4, NOW + 20 * S, Quality::ClockUnsynced), // after the step, not yet synced
                (5, NOW + 22 * S, Quality::Good),
            ]
        );
        let st = clock.status();
        assert_eq!((st.steps, st.restamped), (1, 2));
        assert_eq!(st.last_step.map(|(_, d)| d), Some(2 * YEAR));
    }

    /// A publisher that asks for a commit every 5 ms (a meter keeping its window full) gets
    /// commits no closer than `min_commit_gap`; every reading is still committed, and with
    /// a 10 s interval none of these commits is the interval's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn early_commits_keep_the_least_gap_between_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = super::super::db_path(dir.path());
        let clock = Clock::new(FakeTime::new(NOW, true));
        let (tx, rx) = mpsc::channel(4096);
        let (committed_tx, mut committed) = watch::channel(0i64);
        let (acks_tx, _acks_rx) = mpsc::channel(64);
        let commit_now = Arc::new(tokio::sync::Notify::new());
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(run(
            Handle::new(Writer::open(&path).expect("open")),
            settings(
                dir.path(),
                &clock,
                Duration::from_secs(10),
                commit_now.clone(),
                Duration::from_millis(300),
            ),
            rx,
            committed_tx,
            acks_tx,
            metrics.clone(),
            Arc::new(Health::default()),
        ));
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_millis(1200) {
            sent += 1;
            tx.send(meter(&clock, sent, None)).await.expect("running");
            commit_now.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        committed
            .wait_for(|last| *last >= sent as i64)
            .await
            .expect("every reading committed");
        let spent = started.elapsed();
        let commits = metrics.commits.get();
        // The first commit comes at once; each next one at least 300 ms after the last.
        let most = 1 + (spent.as_millis() / 300) as u64;
        assert!(
            (2..=most).contains(&commits),
            "{commits} commits of {sent} readings in {spent:?}: expected 2 to {most}"
        );
        drop(tx);
        task.await.expect("committer ends");
    }
}
