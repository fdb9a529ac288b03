//! The pure core of the aggregator: what one reading does to the windows of its series.
//!
//! A **series** here is one quantity at one instance (`digester.pressure` at `digester-1`). Its
//! readings fall into windows aligned to the Unix epoch (1 minute, 1 hour: UTC hours, so a
//! site's local days are unions of them for whole-hour offsets such as Africa/Nairobi, UTC+3).
//! Each window keeps count, min, max, sum (for the mean) and the value with the latest
//! timestamp; readings of bad quality are not in the statistics but counted (`bad`).
//!
//! **Counters** (`gas.volume`, kWh, meter usage) also get a `delta`: the sum of the increases
//! between consecutive readings, each increase attributed to the window of the later reading. A
//! value below the previous one is a **reset** (the device restarted at zero, or was replaced):
//! it is counted, and the increase is the new value itself (counted from zero), never negative.
//!
//! A reading older than a window already handed out (a meter that was offline for a day)
//! updates the window of its own timestamp, which gets its revision number raised, so that
//! whoever keeps windows sees it changed. For counters, a reading older than the series' latest
//! one is folded into its window's statistics but its increase is not split between the
//! neighbours (that needs the neighbouring raw readings; not built yet): `late` counts them.
//!
//! No I/O, no clock: time is the reading's timestamp.

use std::collections::BTreeMap;

/// A window's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Width {
    Minute,
    Hour,
}

impl Width {
    pub const ALL: [Width; 2] = [Width::Minute, Width::Hour];

    pub fn nanos(self) -> i64 {
        match self {
            Width::Minute => 60_000_000_000,
            Width::Hour => 3_600_000_000_000,
        }
    }

    /// The start of the window holding `ts_ns` (floor, also before 1970).
    pub fn start(self, ts_ns: i64) -> i64 {
        ts_ns.div_euclid(self.nanos()) * self.nanos()
    }
}

/// The statistics of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub start_ns: i64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// The good value with the latest timestamp, and that timestamp.
    pub last: Option<(i64, f64)>,
    /// Readings of bad quality: not in the statistics.
    pub bad: u64,
    /// Counters only: the increase within the window (resets counted from zero).
    pub delta: f64,
    /// Counters only: resets seen in this window.
    pub resets: u64,
    /// Counter readings older than the series' latest (their increase is not split).
    pub late: u64,
    /// 0 until a reading arrives for the window after it was handed out; then raised by one.
    pub revision: u32,
}

impl Window {
    fn new(start_ns: i64) -> Window {
        Window {
            start_ns,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            last: None,
            bad: 0,
            delta: 0.0,
            resets: 0,
            late: 0,
            revision: 0,
        }
    }

    /// Mean of the good values; `None` with none.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// One reading of a series, as the aggregator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts_ns: i64,
    pub value: f64,
    /// False for a reading marked bad (or a value flagged `{field}_quality`).
    pub good: bool,
}

/// The open windows of one series at one width, and what counters need to carry across them.
#[derive(Debug, Clone)]
pub struct Series {
    width: Width,
    counter: bool,
    windows: BTreeMap<i64, Window>,
    /// Windows handed out by [`Series::take_before`]: a later reading for one revises it.
    handed_out: BTreeMap<i64, u32>,
    /// Counters: the good reading with the latest timestamp so far.
    latest: Option<(i64, f64)>,
}

impl Series {
    pub fn new(width: Width, counter: bool) -> Series {
        Series {
            width,
            counter,
            windows: BTreeMap::new(),
            handed_out: BTreeMap::new(),
            latest: None,
        }
    }

    /// Folds one reading into the window of its timestamp.
    pub fn add(&mut self, s: Sample) {
        let start = self.width.start(s.ts_ns);
        let revision = self.handed_out.get(&start).map_or(0, |r| r + 1);
        let w = self.windows.entry(start).or_insert_with(|| {
            let mut w = Window::new(start);
            w.revision = revision;
            w
        });
        if !s.good || !s.value.is_finite() {
            w.bad += 1;
            return;
        }
        w.count += 1;
        w.min = w.min.min(s.value);
        w.max = w.max.max(s.value);
        w.sum += s.value;
        if w.last.is_none_or(|(t, _)| s.ts_ns >= t) {
            w.last = Some((s.ts_ns, s.value));
        }
        if self.counter {
            match self.latest {
                Some((t, _)) if s.ts_ns < t => w.late += 1,
                Some((_, prev)) => {
                    if s.value < prev {
                        w.resets += 1;
                        w.delta += s.value;
                    } else {
                        w.delta += s.value - prev;
                    }
                    self.latest = Some((s.ts_ns, s.value));
                }
                None => self.latest = Some((s.ts_ns, s.value)),
            }
        }
    }

    /// Hands out the windows that end at or before `until_ns` (complete, unless a late reading
    /// revises them), oldest first, and forgets them.
    pub fn take_before(&mut self, until_ns: i64) -> Vec<Window> {
        let width = self.width.nanos();
        let done: Vec<i64> = self
            .windows
            .keys()
            .copied()
            .take_while(|start| start + width <= until_ns)
            .collect();
        done.into_iter()
            .filter_map(|start| {
                let w = self.windows.remove(&start)?;
                self.handed_out.insert(start, w.revision);
                Some(w)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000_000_000;
    /// 2026-12-01T00:00:00Z, a window boundary of both widths.
    const T0: i64 = 1_796_083_200_000_000_000;

    fn good(ts: i64, value: f64) -> Sample {
        Sample {
            ts_ns: ts,
            value,
            good: true,
        }
    }

    /// Feeds `samples` to a minute series and returns the windows complete at `until`, as
    /// `(minute since T0, count, min, max, mean, last, delta, resets, bad, revision)`.
    #[allow(clippy::type_complexity)]
    fn check(
        counter: bool,
        samples: &[Sample],
        expected: &[(i64, u64, f64, f64, f64, f64, f64, u64, u64, u32)],
    ) {
        let mut s = Series::new(Width::Minute, counter);
        for x in samples {
            s.add(*x);
        }
        let got: Vec<_> = s
            .take_before(T0 + 100 * M)
            .into_iter()
            .map(|w| {
                (
                    (w.start_ns - T0) / M,
                    w.count,
                    w.min,
                    w.max,
                    w.mean().unwrap_or(f64::NAN),
                    w.last.map_or(f64::NAN, |l| l.1),
                    w.delta,
                    w.resets,
                    w.bad,
                    w.revision,
                )
            })
            .collect();
        let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-9;
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(
                g.0 == e.0
                    && g.1 == e.1
                    && same(g.2, e.2)
                    && same(g.3, e.3)
                    && same(g.4, e.4)
                    && same(g.5, e.5)
                    && same(g.6, e.6)
                    && g.7 == e.7
                    && g.8 == e.8
                    && g.9 == e.9,
                "got {g:?}, expected {e:?}"
            );
        }
    }

    #[test]
    fn windows_align_to_the_epoch_also_before_1970() {
        assert_eq!(Width::Minute.start(T0 + 59 * 1_000_000_000), T0);
        assert_eq!(Width::Hour.start(T0 + 61 * M), T0 + 60 * M);
        assert_eq!(Width::Minute.start(-1), -M);
    }

    #[test]
    fn gauges_keep_count_min_max_mean_and_last_and_exclude_bad_readings() {
        let bad = Sample {
            ts_ns: T0 + 30_000_000_000,
            value: 900.0,
            good: false,
        };
        check(
            false,
            &[
                good(T0 + 10_000_000_000, 12.0),
                good(T0 + 20_000_000_000, 14.0),
                bad,
                good(T0 + M + 5, 13.0),
            ],
            &[
                (0, 2, 12.0, 14.0, 13.0, 14.0, 0.0, 0, 1, 0),
                (1, 1, 13.0, 13.0, 13.0, 13.0, 0.0, 0, 0, 0),
            ],
        );
        // A window of bad readings only: counted, with no statistics.
        check(
            false,
            &[bad],
            &[(
                0,
                0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                f64::NAN,
                0.0,
                0,
                1,
                0,
            )],
        );
    }

    #[test]
    fn counter_increases_go_to_the_window_of_the_later_reading() {
        check(
            true,
            &[
                good(T0 + 50_000_000_000, 100.0),
                good(T0 + M + 10_000_000_000, 100.5),
                good(T0 + M + 40_000_000_000, 101.25),
            ],
            &[
                (0, 1, 100.0, 100.0, 100.0, 100.0, 0.0, 0, 0, 0),
                (1, 2, 100.5, 101.25, 100.875, 101.25, 1.25, 0, 0, 0),
            ],
        );
    }

    #[test]
    fn a_counter_reset_or_a_replaced_meter_is_counted_and_never_a_negative_delta() {
        // 1250.0 → the meter is replaced → 0.25 → 0.75: the increase is 0.25 + 0.5.
        check(
            true,
            &[
                good(T0 + 10_000_000_000, 1250.0),
                good(T0 + 20_000_000_000, 0.25),
                good(T0 + 30_000_000_000, 0.75),
            ],
            &[(0, 3, 0.25, 1250.0, 417.0, 0.75, 0.75, 1, 0, 0)],
        );
    }

    #[test]
    fn a_late_reading_revises_its_window_after_it_was_handed_out() {
        let mut s = Series::new(Width::Minute, false);
        s.add(good(T0 + 10_000_000_000, 12.0));
        s.add(good(T0 + M + 10_000_000_000, 13.0));
        let first = s.take_before(T0 + M);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].revision, 0);
        // A meter offline for a while: its reading of minute 0 arrives now.
        s.add(good(T0 + 30_000_000_000, 20.0));
        let again = s.take_before(T0 + 2 * M);
        assert_eq!(again.len(), 2, "{again:?}");
        let w0 = &again[0];
        assert_eq!((w0.start_ns, w0.revision, w0.count), (T0, 1, 1));
        assert_eq!(w0.max, 20.0);
        // It holds only the late reading: whoever stores windows merges the revision into the
        // stored one (count, min, max and sum add up; last goes to the later timestamp).
        assert_eq!(again[1].revision, 0);
    }

    #[test]
    fn a_late_counter_reading_is_counted_not_split() {
        check(
            true,
            &[
                good(T0 + 10_000_000_000, 100.0),
                good(T0 + 50_000_000_000, 102.0),
                good(T0 + 30_000_000_000, 101.0),
            ],
            &[(0, 3, 100.0, 102.0, 101.0, 102.0, 2.0, 0, 0, 0)],
        );
    }
}
