//! Aggregation: windows of 1 minute and 1 hour per quantity and instance, kept in the local
//! store, built by a durable store consumer (`aggregate`, its own cursor, like the InfluxDB
//! writer), and the history answered from them ([`history`]).
//!
//! Every [`Settings::interval`] the consumer reads the readings committed after its cursor (in
//! log order), folds each numeric field of a gauge or counter quantity into the windows of its
//! timestamp ([`window`]), and commits the changed windows, the counters' latest readings, the
//! watermark and its cursor in one transaction ([`crate::store::windows`]). A SIGKILL at any
//! moment therefore gives the same windows after the restart as an uninterrupted run: the
//! state it resumes from is exactly the one its cursor belongs to, and the same readings are
//! folded in the same order.
//!
//! What is aggregated: fields whose (measurement, field) is a quantity of the plant of kind
//! gauge or counter, at the instance of the reading's `device` tag. A `{field}_quality` flag
//! counts as a bad reading of that field. States, text and fields that are no quantity are not
//! aggregated (they are in the raw log and InfluxDB).
//!
//! Retention: after each step, windows older than the retention of their width (by the wall
//! clock; default 30 days of 1-minute, 5 years of 1-hour windows) are deleted.

pub mod history;
pub mod kpi;
pub mod window;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, Registry};
use crate::model::{Quality, Value};
use crate::plant::{Kind, Plant};
use crate::store::windows::{Commit, Row, SeriesKey, State, Windows};
use crate::store::{self, Handle, Reader, Stored};
use window::{Latest, Sample, Width, Window};

/// The aggregator's cursor in the store.
pub const CONSUMER: &str = "aggregate";

/// Readings read from the log at a time.
const READ_BATCH: usize = 1_000;
/// A step folds readings until it is caught up, has folded `Settings::step_readings` or has
/// changed this many windows, then commits. One commit per batch read rewrote every current window
/// of every meter once per 1,000 readings (at 1,000 msg/s from 500 meters: 60 transactions
/// of ≈ 330 pages a minute, most of the bytes the gateway wrote); a step now rewrites each
/// window it changed once.
const STEP_WINDOWS: usize = 20_000;

/// The aggregator's counters in `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub readings: Arc<Counter>,
    pub windows_written: Arc<Counter>,
    pub late: Arc<Counter>,
    pub resets: Arc<Counter>,
    pub errors: Arc<Counter>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            readings: r.counter(
                "gkgw_aggregate_readings_total",
                "Readings folded into the 1-minute and 1-hour windows.",
            ),
            windows_written: r.counter(
                "gkgw_aggregate_windows_written_total",
                "Window rows written (a window is rewritten at each step that changes it).",
            ),
            late: r.counter(
                "gkgw_aggregate_late_total",
                "Readings that arrived for a closed window and raised its revision.",
            ),
            resets: r.counter(
                "gkgw_aggregate_counter_resets_total",
                "Counter readings below the previous one (device reset or replaced): counted, never a negative delta.",
            ),
            errors: r.counter(
                "gkgw_aggregate_errors_total",
                "Aggregator steps that failed (retried from the last committed state).",
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the aggregator takes what was committed (its windows lag by at most this).
    pub interval: Duration,
    /// The most readings folded into one commit (`history.step_readings`).
    pub step_readings: usize,
    pub minute_retention: Duration,
    pub hour_retention: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            interval: Duration::from_secs(60),
            step_readings: 100_000,
            minute_retention: Duration::from_secs(30 * 86_400),
            hour_retention: Duration::from_secs(5 * 365 * 86_400),
        }
    }
}

type WindowKey = (Width, i64, i64);
/// A stored field that is aggregated: its quantity, and whether it is a counter.
type Aggregated = (Arc<str>, bool);

/// The fold state between commits: what the store holds, plus the windows of this step.
pub struct Aggregator {
    plant: Arc<Plant>,
    state: State,
    next_series: i64,
    /// Recent windows (the open ones); older ones are read back when a late reading needs them.
    cache: HashMap<WindowKey, Row>,
    dirty: BTreeSet<WindowKey>,
    dirty_latest: BTreeSet<i64>,
    /// The newest value of each text series (valve, relay, status) folded since the last commit.
    texts: HashMap<i64, (i64, String)>,
    new_series: Vec<(i64, SeriesKey)>,
    /// measurement → field → (quantity, counter), or `None` when it is not aggregated.
    kinds: HashMap<Arc<str>, HashMap<String, Option<Aggregated>>>,
    /// measurement → field → the text quantity it is, or `None`.
    text_kinds: HashMap<Arc<str>, HashMap<String, Option<Arc<str>>>>,
    /// Late readings (minute windows revised) and counter resets folded since the last commit.
    pub late: u64,
    pub resets: u64,
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    pub readings: usize,
    pub windows: usize,
    pub cursor: i64,
}

impl Aggregator {
    pub fn load(windows: &Windows, plant: Arc<Plant>) -> store::Result<Aggregator> {
        let state = windows.state(CONSUMER)?;
        let next_series = state.series.values().max().map_or(1, |m| m + 1);
        Ok(Aggregator {
            plant,
            state,
            next_series,
            cache: HashMap::new(),
            dirty: BTreeSet::new(),
            dirty_latest: BTreeSet::new(),
            texts: HashMap::new(),
            new_series: Vec::new(),
            kinds: HashMap::new(),
            text_kinds: HashMap::new(),
            late: 0,
            resets: 0,
        })
    }

    pub fn cursor(&self) -> i64 {
        self.state.cursor
    }

    fn kind(&mut self, measurement: &Arc<str>, field: &str) -> Option<Aggregated> {
        // Looked up per field of every reading: no allocation once a name is known.
        if let Some(k) = self.kinds.get(measurement).and_then(|f| f.get(field)) {
            return k.clone();
        }
        let k = self
            .plant
            .quantity_of(measurement, field)
            .and_then(|q| match q.kind {
                Kind::Gauge => Some((Arc::from(q.name.as_str()), false)),
                Kind::Counter => Some((Arc::from(q.name.as_str()), true)),
                _ => None,
            });
        self.kinds
            .entry(measurement.clone())
            .or_default()
            .insert(field.to_owned(), k.clone());
        k
    }

    fn text_kind(&mut self, measurement: &Arc<str>, field: &str) -> Option<Arc<str>> {
        if let Some(k) = self.text_kinds.get(measurement).and_then(|f| f.get(field)) {
            return k.clone();
        }
        let k = self
            .plant
            .quantity_of(measurement, field)
            .filter(|q| q.kind == Kind::Text)
            .map(|q| Arc::from(q.name.as_str()));
        self.text_kinds
            .entry(measurement.clone())
            .or_default()
            .insert(field.to_owned(), k.clone());
        k
    }

    /// Back to the state the store holds (after a failed commit), keeping the plant.
    pub fn reload(&mut self, windows: &Windows) -> store::Result<()> {
        *self = Aggregator::load(windows, self.plant.clone())?;
        Ok(())
    }

    fn series_id(&mut self, key: SeriesKey) -> i64 {
        if let Some(id) = self.state.series.get(&key) {
            return *id;
        }
        let id = self.next_series;
        self.next_series += 1;
        self.state.series.insert(key.clone(), id);
        self.new_series.push((id, key));
        id
    }

    /// Folds readings (in log order, after the cursor) into the windows; nothing is written
    /// until [`Aggregator::commit`].
    pub fn fold(&mut self, windows: &Windows, readings: &[Stored]) -> store::Result<()> {
        for s in readings {
            let r = &s.reading;
            let unsynced = r.quality == Quality::ClockUnsynced;
            for (name, value) in &r.fields {
                if let Value::Str(text) = value {
                    if !name.ends_with("_quality") && r.quality != Quality::Bad {
                        if let Some(quantity) = self.text_kind(&r.series.measurement, name) {
                            let series = self.series_id(SeriesKey {
                                quantity,
                                instance: r.series.device.clone(),
                            });
                            let newer =
                                self.texts.get(&series).is_none_or(|(ts, _)| r.ts_ns >= *ts);
                            if newer {
                                self.texts.insert(series, (r.ts_ns, text.clone()));
                            }
                            continue;
                        }
                    }
                }
                let (field, sample) = match (name.strip_suffix("_quality"), value) {
                    (Some(f), Value::Str(_)) => (f, Sample::Bad),
                    (None, Value::Float(v)) => (name.as_str(), Sample::Good(*v)),
                    (None, Value::Int(v)) => (name.as_str(), Sample::Good(*v as f64)),
                    _ => continue,
                };
                let Some((quantity, counter)) = self.kind(&r.series.measurement, field) else {
                    continue;
                };
                let series = self.series_id(SeriesKey {
                    quantity,
                    instance: r.series.device.clone(),
                });
                let before = self.state.latest.get(&series).copied();
                let mut after = before;
                for width in Width::ALL {
                    let start = width.start(r.ts_ns);
                    let key = (width, start, series);
                    let row = match self.cache.entry(key) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => {
                            v.insert(windows.get(width, start, series)?.unwrap_or(Row {
                                width,
                                start_ns: start,
                                series,
                                changed: 0,
                                window: Window::new(counter),
                            }))
                        }
                    };
                    if width.is_late(r.ts_ns, self.state.watermark_ns) {
                        row.window.revision += 1;
                        self.late += u64::from(width == Width::Minute);
                    }
                    let mut latest = before;
                    let resets = row.window.resets;
                    row.window.add(r.ts_ns, sample, unsynced, &mut latest);
                    if width == Width::Minute {
                        self.resets += u64::from(row.window.resets - resets);
                    }
                    row.changed = s.id;
                    after = latest;
                    self.dirty.insert(key);
                }
                if after != before {
                    if let Some(l) = after {
                        self.state.latest.insert(series, l);
                        self.dirty_latest.insert(series);
                    }
                }
            }
            self.state.watermark_ns = self.state.watermark_ns.max(r.ts_ns);
            self.state.cursor = s.id;
        }
        Ok(())
    }

    /// Writes what was folded since the last commit, and the cursor, in one transaction.
    /// On an error the caller must [`Aggregator::load`] again (the step is not in the store).
    pub fn commit(&mut self, windows: &mut Windows) -> store::Result<usize> {
        let rows: Vec<&Row> = self.dirty.iter().map(|k| &self.cache[k]).collect();
        let latest: Vec<(i64, Latest)> = self
            .dirty_latest
            .iter()
            .map(|s| (*s, self.state.latest[s]))
            .collect();
        let n = rows.len();
        windows.commit(&Commit {
            new_series: self.new_series.iter().map(|(i, k)| (*i, k)).collect(),
            rows,
            latest,
            texts: self
                .texts
                .iter()
                .map(|(s, (ts, v))| (*s, *ts, v.as_str()))
                .collect(),
            watermark_ns: self.state.watermark_ns,
            consumer: CONSUMER,
            cursor: self.state.cursor,
        })?;
        self.dirty.clear();
        self.dirty_latest.clear();
        self.texts.clear();
        self.new_series.clear();
        // Closed windows leave the cache; a late reading reads its window back.
        let watermark = self.state.watermark_ns;
        self.cache.retain(|(w, start, _), _| {
            start.saturating_add(w.nanos() + window::GRACE_NS + 600_000_000_000) > watermark
        });
        Ok(n)
    }
}

/// The aggregator's store connections and fold state, on the blocking pool.
pub struct Worker {
    pub metrics: Metrics,
    reader: Reader,
    windows: Windows,
    agg: Aggregator,
    settings: Settings,
    last_retention: Option<std::time::Instant>,
}

impl Worker {
    pub fn open(
        path: &std::path::Path,
        plant: Arc<Plant>,
        settings: Settings,
    ) -> store::Result<Worker> {
        let reader = Reader::open(path)?;
        let windows = Windows::open(path)?;
        let agg = Aggregator::load(&windows, plant)?;
        Ok(Worker {
            metrics: Metrics::default(),
            reader,
            windows,
            agg,
            settings,
            last_retention: None,
        })
    }

    /// Folds the readings after the cursor, up to `step_readings` or [`STEP_WINDOWS`]
    /// changed windows, and commits them in one transaction; `readings == 0` when caught up.
    pub fn step(&mut self) -> store::Result<Step> {
        let mut folded = 0;
        let result = loop {
            let rows = match self.reader.read_after(self.agg.cursor(), READ_BATCH) {
                Ok(rows) => rows,
                Err(e) => break Err(e),
            };
            if rows.is_empty() {
                break Ok(());
            }
            if let Err(e) = self.agg.fold(&self.windows, &rows) {
                break Err(e);
            }
            folded += rows.len();
            if rows.len() < READ_BATCH
                || folded >= self.settings.step_readings
                || self.agg.dirty.len() >= STEP_WINDOWS
            {
                break Ok(());
            }
        };
        if result.is_ok() && folded == 0 {
            self.retention()?;
            return Ok(Step {
                cursor: self.agg.cursor(),
                ..Step::default()
            });
        }
        let result = result.and_then(|()| self.agg.commit(&mut self.windows));
        match result {
            Ok(windows) => {
                self.metrics.readings.add(folded as u64);
                self.metrics.windows_written.add(windows as u64);
                self.metrics.late.add(std::mem::take(&mut self.agg.late));
                self.metrics
                    .resets
                    .add(std::mem::take(&mut self.agg.resets));
                Ok(Step {
                    readings: folded,
                    windows,
                    cursor: self.agg.cursor(),
                })
            }
            Err(e) => {
                self.metrics.errors.inc();
                // Back to the committed state: the same readings are folded again next time.
                self.agg.reload(&self.windows)?;
                Err(e)
            }
        }
    }

    /// Everything committed so far, in steps.
    pub fn catch_up(&mut self) -> store::Result<u64> {
        let mut n = 0;
        loop {
            let s = self.step()?;
            if s.readings == 0 {
                return Ok(n);
            }
            n += s.readings as u64;
        }
    }

    fn retention(&mut self) -> store::Result<()> {
        if self
            .last_retention
            .is_some_and(|t| t.elapsed() < Duration::from_secs(600))
        {
            return Ok(());
        }
        self.last_retention = Some(std::time::Instant::now());
        let now = crate::clock::wall_ns();
        for (w, keep) in [
            (Width::Minute, self.settings.minute_retention),
            (Width::Hour, self.settings.hour_retention),
        ] {
            let n = self
                .windows
                .retain(w, now.saturating_sub(keep.as_nanos() as i64))?;
            if n > 0 {
                tracing::info!(
                    width = w.label(),
                    windows = n,
                    "history: windows past their retention deleted"
                );
            }
        }
        Ok(())
    }
}

/// The consumer task: a step every `interval`, and a last one at shutdown (after the committer
/// has committed everything, so the windows hold every accepted reading).
pub async fn run(worker: Handle<Worker>, interval: Duration, cancel: CancellationToken) {
    loop {
        let stopping = cancel.is_cancelled();
        match worker.run(|w| w.catch_up()).await {
            Ok(n) if n > 0 => tracing::debug!(readings = n, "aggregated"),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "aggregator: cannot update the windows (retrying)")
            }
        }
        if stopping {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Reading, Series};
    use crate::plant::Catalogue;
    use crate::store::{db_path, Writer};

    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    /// 2026-12-01T00:00:00Z.
    const T0: i64 = 1_796_083_200_000_000_000;

    fn plant() -> Arc<Plant> {
        Arc::new(Plant::new(Catalogue::builtin()))
    }

    fn meter(id: &str, ts: i64, used: f64, credit: Option<f64>) -> Reading {
        let mut fields = vec![("gas_used_kg".to_owned(), Value::Float(used))];
        match credit {
            Some(c) => fields.push(("credit_kg".into(), Value::Float(c))),
            None => fields.push((
                "credit_kg_quality".into(),
                Value::Str("out_of_range".into()),
            )),
        }
        fields.push(("valve".into(), Value::Str("open".into())));
        fields.push(("seq".into(), Value::Int(ts / S)));
        Reading {
            series: Series::new("gas_meter", id),
            ts_ns: ts,
            quality: if credit.is_some() {
                Quality::Good
            } else {
                Quality::Bad
            },
            fields,
            ack: None,
            receipt: None,
        }
    }

    /// Every window row, as stored.
    fn dump(path: &std::path::Path) -> Vec<(i64, i64, String, String, i64, Vec<u8>)> {
        let c = rusqlite::Connection::open(path).expect("open");
        let mut st = c
            .prepare("SELECT w.width, w.start, s.quantity, s.instance, w.changed, w.stats FROM windows w JOIN agg_series s ON s.id = w.series ORDER BY 1, 2, 3, 4")
            .expect("prepare");
        st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    fn window(w: &Worker, width: Width, quantity: &str, instance: &str, start: i64) -> Window {
        let id = w
            .windows
            .series_id(quantity, instance)
            .expect("sql")
            .expect("series");
        w.windows
            .get(width, start, id)
            .expect("sql")
            .expect("window")
            .window
    }

    /// Readings of three meters over two hours, with a reset, bad values and out-of-order ones.
    fn input() -> Vec<Reading> {
        let mut v = Vec::new();
        for i in 0..720 {
            for (m, id) in ["GM-1", "GM-2", "GM-3"].iter().enumerate() {
                let ts = T0 + i * 10 * S + m as i64;
                let used = if *id == "GM-2" && i >= 400 {
                    (i - 400) as f64 * 0.01
                } else {
                    5.0 + i as f64 * 0.01
                };
                let credit = (i % 97 != 0).then_some(3.0 - i as f64 * 0.001);
                v.push(meter(id, ts, used, credit));
            }
        }
        // GM-3 was offline: its readings of the first minutes arrive at the end.
        v.push(meter("GM-3", T0 + 5 * S, 5.0, Some(9.0)));
        v
    }

    #[test]
    fn a_restart_at_any_point_gives_the_same_windows_as_one_uninterrupted_run() {
        let readings = input();
        let run = |kill_after: &[usize]| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = db_path(dir.path());
            let mut writer = Writer::open(&path).expect("writer");
            writer.append(&readings).expect("append");
            let mut w = Worker::open(&path, plant(), Settings::default()).expect("worker");
            for &n in kill_after {
                // Fold a part, commit, then fold more and "die" before the commit.
                let rows = w.reader.read_after(w.agg.cursor(), n).expect("read");
                w.agg.fold(&w.windows, &rows).expect("fold");
                w.agg.commit(&mut w.windows).expect("commit");
                let more = w.reader.read_after(w.agg.cursor(), 333).expect("read");
                w.agg.fold(&w.windows, &more).expect("fold");
                drop(w);
                w = Worker::open(&path, plant(), Settings::default()).expect("reopen");
            }
            w.catch_up().expect("catch up");
            (dir, dump(&path))
        };
        let (_d1, straight) = run(&[]);
        let (_d2, killed) = run(&[1, 700, 1_234, 2_000]);
        assert!(straight.len() > 700, "{} windows", straight.len());
        assert_eq!(straight, killed);
    }

    #[test]
    fn a_backlog_is_folded_into_one_commit_that_writes_each_window_once() {
        // 50 meters, 5,000 readings inside one minute: 5 batches read from the log.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut writer = Writer::open(&path).expect("writer");
        let readings: Vec<Reading> = (0..5_000)
            .map(|i| {
                let ts = T0 + i * 10_000_000; // 10 ms apart: 50 s in all
                meter(&format!("GM-{}", i % 50), ts, i as f64 * 0.001, Some(3.0))
            })
            .collect();
        writer.append(&readings).expect("append");
        let mut w = Worker::open(&path, plant(), Settings::default()).expect("worker");
        let step = w.step().expect("step");
        assert_eq!(step.readings, 5_000);
        // 50 meters x 2 quantities (gas used, credit) x 2 widths, each written once: a
        // commit per batch of 1,000 readings wrote them 5 times.
        assert_eq!(step.windows, 200);
        assert_eq!(w.metrics.windows_written.get(), 200);
        assert_eq!(w.step().expect("step").readings, 0, "caught up in one step");
        assert_eq!(dump(&path).len(), 200);
        assert_eq!(
            window(&w, Width::Minute, "meter.gas_used", "GM-7", T0).count,
            100
        );
    }

    #[test]
    fn counters_resets_bad_values_and_a_late_reading_end_up_in_their_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut writer = Writer::open(&path).expect("writer");
        writer.append(&input()).expect("append");
        let mut w = Worker::open(&path, plant(), Settings::default()).expect("worker");
        assert_eq!(w.catch_up().expect("catch up"), 2_161);
        // GM-1 uses 0.01 kg per 10 s: 0.06 kg a minute, 3.59 kg over the 2 hours.
        let m5 = window(&w, Width::Minute, "meter.gas_used", "GM-1", T0 + 5 * M);
        assert_eq!(m5.count, 6);
        assert!((m5.delta - 0.06).abs() < 1e-9, "{m5:?}");
        let h0 = window(&w, Width::Hour, "meter.gas_used", "GM-1", T0);
        let h1 = window(&w, Width::Hour, "meter.gas_used", "GM-1", T0 + 60 * M);
        assert!((h0.delta + h1.delta - 7.19).abs() < 1e-9, "{h0:?} {h1:?}");
        // GM-2 was reset to zero at 4000 s (minute 66): counted, no negative delta, the
        // increase before and after it counted.
        let reset = window(&w, Width::Minute, "meter.gas_used", "GM-2", T0 + 66 * M);
        assert_eq!(reset.resets, 1);
        assert!(
            reset.delta >= 0.0 && (reset.delta - 0.05).abs() < 1e-9,
            "{reset:?}"
        );
        // Bad credit values (every 97th) are counted, not in the statistics.
        let c0 = window(&w, Width::Minute, "meter.credit", "GM-1", T0);
        assert_eq!((c0.count, c0.bad), (5, 1));
        assert_eq!(c0.max, 3.0 - 0.001);
        // States have no windows, only their newest text (agg_text).
        let valve = w.windows.series_id("meter.valve", "GM-1").expect("sql");
        let valve = valve.expect("a text series");
        assert!(w
            .windows
            .range(Width::Minute, valve, T0, T0 + 200 * M)
            .expect("range")
            .is_empty());
        let texts = w.windows.texts("meter.valve").expect("texts");
        assert!(texts.iter().any(|(i, _, _)| i == "GM-1"), "{texts:?}");
        // GM-3's late reading of minute 0 (five good readings and a bad one) revised that
        // window, and its value is in it.
        let late = window(&w, Width::Minute, "meter.credit", "GM-3", T0);
        assert_eq!(
            (late.revision, late.max, late.count, late.bad),
            (1, 9.0, 6, 1)
        );
        let hour = window(&w, Width::Hour, "meter.credit", "GM-3", T0);
        assert_eq!(hour.revision, 1, "the first hour had closed too: {hour:?}");
        let open = window(&w, Width::Minute, "meter.credit", "GM-1", T0 + 119 * M);
        assert_eq!(open.revision, 0);
    }

    #[test]
    fn readings_restamped_after_a_clock_step_land_in_the_windows_of_their_corrected_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut writer = Writer::open(&path).expect("writer");
        // Booted at an old saved time, unsynced: two readings 20 s apart around 00:00:50.
        let old = T0 - 2 * 365 * 86_400 * S;
        let mut a = meter("GM-1", old + 50 * S, 1.0, Some(2.0));
        let mut b = meter("GM-1", old + 70 * S, 1.5, Some(2.0));
        a.quality = Quality::ClockUnsynced;
        b.quality = Quality::ClockUnsynced;
        let first = writer.next_id();
        writer.append(&[a, b]).expect("append");
        // NTP steps the clock by +2 years + 5 s before the aggregator ran: both rows move.
        let delta = 2 * 365 * 86_400 * S + 5 * S;
        writer
            .append_restamped(
                &[],
                Some(crate::store::Restamp {
                    from_id: first,
                    delta_ns: delta,
                }),
            )
            .expect("restamp");
        let mut w = Worker::open(&path, plant(), Settings::default()).expect("worker");
        w.catch_up().expect("catch up");
        // 00:00:55 and 00:01:15 after the step: two minute windows, nothing at the old time.
        let m0 = window(&w, Width::Minute, "meter.credit", "GM-1", T0);
        let m1 = window(&w, Width::Minute, "meter.credit", "GM-1", T0 + M);
        assert_eq!((m0.count, m1.count, m0.unsynced), (1, 1, 0));
        assert_eq!(m1.last, Some((T0 + 75 * S, 2.0)));
        let id = w
            .windows
            .series_id("meter.credit", "GM-1")
            .expect("sql")
            .expect("id");
        assert!(w
            .windows
            .get(Width::Minute, Width::Minute.start(old + 50 * S), id)
            .expect("sql")
            .is_none());
        // An unsynced reading that was not restamped is aggregated at its time, and counted so.
        let mut c = meter("GM-1", T0 + 3 * M, 2.0, Some(1.0));
        c.quality = Quality::ClockUnsynced;
        writer.append(&[c]).expect("append");
        w.catch_up().expect("catch up");
        assert_eq!(
            window(&w, Width::Minute, "meter.credit", "GM-1", T0 + 3 * M).unsynced,
            1
        );
    }

    #[test]
    fn a_small_quota_removes_raw_readings_and_the_history_still_answers_from_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut writer = Writer::open_with_segment_bits(&path, 8).expect("writer");
        writer.register_consumers(&[CONSUMER]).expect("register");
        let readings = input();
        writer.append(&readings).expect("append");
        let mut w = Worker::open(&path, plant(), Settings::default()).expect("worker");
        w.catch_up().expect("catch up");
        let q = history::Query {
            quantity: "meter.credit".into(),
            instance: "GM-1".into(),
            from_ns: T0,
            to_ns: T0 + 30 * M,
            points: 300,
        };
        let mut reader = Reader::open(&path).expect("reader");
        let before = history::query(&plant(), &mut reader, &w.windows, &q).expect("query");
        assert_eq!(before.source, history::Source::Raw);
        // The quota forces the oldest raw readings out; the aggregator had them all.
        let removed = writer
            .enforce_quota(writer.used_bytes().expect("size") * 6 / 10, &[CONSUMER])
            .expect("quota");
        assert!(
            removed.downsampled > 500 && removed.evicted == 0,
            "{removed:?}"
        );
        let after = history::query(&plant(), &mut reader, &w.windows, &q).expect("query");
        assert_eq!(after.source, history::Source::Windows(Width::Minute));
        assert_eq!(after.points.len(), 30);
        let n = |a: &history::Answer| a.points.iter().map(|p| p.window.count).sum::<u32>();
        let bad = |a: &history::Answer| a.points.iter().map(|p| p.window.bad).sum::<u32>();
        assert_eq!((n(&after), bad(&after)), (n(&before), bad(&before)));
        assert_eq!(n(&after), 180 - 2);
        let max = |a: &history::Answer| {
            a.points
                .iter()
                .map(|p| p.window.max)
                .fold(f64::MIN, f64::max)
        };
        assert_eq!(max(&after), max(&before));
    }
}
