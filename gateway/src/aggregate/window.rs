//! The pure core of the aggregator: what one reading does to the window of its series, and how
//! a window is packed into the store.
//!
//! A **series** here is one quantity at one instance (`digester.pressure` at `digester-1`). Its
//! readings fall into windows aligned to the Unix epoch (1 minute, 1 hour: UTC hours, so a
//! site's local days are unions of them for whole-hour offsets such as Africa/Nairobi, UTC+3).
//! Each window keeps count, min, max, sum (for the mean) and the value with the latest
//! timestamp; readings of bad quality are not in the statistics but counted (`bad`), and so are
//! readings stamped while the gateway's clock was unsynchronised (`unsynced`: they are in the
//! statistics, at the time they carry; the window's time may be off by as much as the clock was).
//!
//! **Counters** (`gas.volume`, kWh, meter usage) also get a `delta`: the sum of the increases
//! between consecutive good readings, each increase attributed to the window of the later
//! reading. A value below the previous one is a **reset** (the device restarted at zero, or was
//! replaced by one showing any value): it is counted in `resets`, and that step adds nothing
//! (the consumption across a reset is not known, and a replacement meter may start at 1,500 m³,
//! which must not be billed); the increases after it count again. A delta is never negative.
//! A counter reading older than the series' latest one (out of order) is in the statistics, but
//! adds nothing to a delta: the increase was already counted between its neighbours.
//!
//! **Late readings**: the caller knows the watermark (the latest timestamp it has aggregated);
//! a reading for a window that closed more than [`GRACE_NS`] before it is late, and raises that
//! window's `revision` by one. A window is never silently left stale: whoever copied it
//! (the uplink) sees the revision change.
//!
//! No I/O, no clock: time is the reading's timestamp.

use crate::store::codec::{get_varint, put_varint, take, DecodeError};

/// A window's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Width {
    Minute,
    Hour,
}

/// A reading for a window that ended at least this long before the watermark is late.
pub const GRACE_NS: i64 = 120_000_000_000;

impl Width {
    pub const ALL: [Width; 2] = [Width::Minute, Width::Hour];

    pub fn nanos(self) -> i64 {
        self.secs() * 1_000_000_000
    }

    pub fn secs(self) -> i64 {
        match self {
            Width::Minute => 60,
            Width::Hour => 3600,
        }
    }

    pub fn from_secs(s: i64) -> Option<Width> {
        Width::ALL.into_iter().find(|w| w.secs() == s)
    }

    /// The start of the window holding `ts_ns` (floor, also before 1970).
    pub fn start(self, ts_ns: i64) -> i64 {
        ts_ns.div_euclid(self.nanos()) * self.nanos()
    }

    /// A reading at `ts_ns` is late once the watermark has passed its window's end by the grace.
    pub fn is_late(self, ts_ns: i64, watermark_ns: i64) -> bool {
        self.start(ts_ns) + self.nanos() + GRACE_NS <= watermark_ns
    }

    pub fn label(self) -> &'static str {
        match self {
            Width::Minute => "1m",
            Width::Hour => "1h",
        }
    }
}

/// The statistics of one window of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub counter: bool,
    pub count: u32,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// The good value with the latest timestamp, and that timestamp.
    pub last: Option<(i64, f64)>,
    /// Readings of bad quality: not in the statistics.
    pub bad: u32,
    /// Readings in the statistics that were stamped while the clock was unsynchronised.
    pub unsynced: u32,
    /// Counters only: the increase within the window (resets add nothing).
    pub delta: f64,
    /// Counters only: resets seen in this window.
    pub resets: u32,
    /// Late readings folded in after the window had closed.
    pub revision: u32,
}

/// One field of one reading, as the aggregator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    Good(f64),
    /// A value the source flagged (`{field}_quality`), or not finite.
    Bad,
}

/// A counter's good reading with the latest timestamp so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latest {
    pub ts_ns: i64,
    pub value: f64,
}

impl Window {
    pub fn new(counter: bool) -> Window {
        Window {
            counter,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            last: None,
            bad: 0,
            unsynced: 0,
            delta: 0.0,
            resets: 0,
            revision: 0,
        }
    }

    /// Mean of the good values; `None` with none.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / f64::from(self.count))
    }

    /// Folds one reading of the series into this window (the window of `ts_ns`). For a counter,
    /// `latest` is the series' latest good reading, updated here.
    pub fn add(&mut self, ts_ns: i64, sample: Sample, unsynced: bool, latest: &mut Option<Latest>) {
        let value = match sample {
            Sample::Good(v) if v.is_finite() => v,
            _ => {
                self.bad += 1;
                return;
            }
        };
        self.count += 1;
        self.unsynced += u32::from(unsynced);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
        if self.last.is_none_or(|(t, _)| ts_ns >= t) {
            self.last = Some((ts_ns, value));
        }
        if !self.counter {
            return;
        }
        match *latest {
            Some(l) if ts_ns < l.ts_ns => {}
            Some(l) => {
                if value < l.value {
                    self.resets += 1;
                } else {
                    self.delta += value - l.value;
                }
                *latest = Some(Latest { ts_ns, value });
            }
            None => *latest = Some(Latest { ts_ns, value }),
        }
    }

    /// Adds another window of the same series into this one (history buckets).
    pub fn merge(&mut self, o: &Window) {
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        if let Some((t, v)) = o.last {
            if self.last.is_none_or(|(mine, _)| t >= mine) {
                self.last = Some((t, v));
            }
        }
        self.bad += o.bad;
        self.unsynced += o.unsynced;
        self.delta += o.delta;
        self.resets += o.resets;
        self.revision = self.revision.max(o.revision);
    }

    /// Packs the window (its start is the row's key; `last`'s time is stored relative to it).
    /// Layout, varints unless noted: flags (1 counter, 2 has values, 4 single value), revision,
    /// count, bad, unsynced; with values: min, max, sum, last as f64 LE (one f64 when single),
    /// zigzag(last time − start); counters: delta f64 LE, resets.
    pub fn encode(&self, start_ns: i64, out: &mut Vec<u8>) {
        let values = self.last.is_some();
        let single = values && self.count == 1;
        let flags = u64::from(self.counter) | u64::from(values) << 1 | u64::from(single) << 2;
        put_varint(out, flags);
        put_varint(out, u64::from(self.revision));
        put_varint(out, u64::from(self.count));
        put_varint(out, u64::from(self.bad));
        put_varint(out, u64::from(self.unsynced));
        if let Some((t, v)) = self.last {
            if single {
                out.extend_from_slice(&v.to_le_bytes());
            } else {
                for x in [self.min, self.max, self.sum, v] {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            let rel = t - start_ns;
            put_varint(out, ((rel << 1) ^ (rel >> 63)) as u64);
        }
        if self.counter {
            out.extend_from_slice(&self.delta.to_le_bytes());
            put_varint(out, u64::from(self.resets));
        }
    }

    pub fn decode(buf: &[u8], start_ns: i64) -> Result<Window, DecodeError> {
        let mut pos = 0;
        let f64_at = |pos: &mut usize| -> Result<f64, DecodeError> {
            let b = take(buf, pos, 8)?;
            Ok(f64::from_le_bytes(
                b.try_into().map_err(|_| DecodeError::Truncated)?,
            ))
        };
        let small = |pos: &mut usize| -> Result<u32, DecodeError> {
            u32::try_from(get_varint(buf, pos)?).map_err(|_| DecodeError::Truncated)
        };
        let flags = get_varint(buf, &mut pos)?;
        let mut w = Window::new(flags & 1 != 0);
        w.revision = small(&mut pos)?;
        w.count = small(&mut pos)?;
        w.bad = small(&mut pos)?;
        w.unsynced = small(&mut pos)?;
        if flags & 2 != 0 {
            let v = if flags & 4 != 0 {
                let v = f64_at(&mut pos)?;
                (w.min, w.max, w.sum) = (v, v, v);
                v
            } else {
                w.min = f64_at(&mut pos)?;
                w.max = f64_at(&mut pos)?;
                w.sum = f64_at(&mut pos)?;
                f64_at(&mut pos)?
            };
            let z = get_varint(buf, &mut pos)?;
            let rel = ((z >> 1) as i64) ^ -((z & 1) as i64);
            w.last = Some((start_ns + rel, v));
        }
        if w.counter {
            w.delta = f64_at(&mut pos)?;
            w.resets = small(&mut pos)?;
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    /// 2026-12-01T00:00:00Z, a window boundary of both widths.
    const T0: i64 = 1_796_083_200_000_000_000;

    /// Feeds `(ts, sample)` to minute windows of one series, as the aggregator does.
    fn run(counter: bool, samples: &[(i64, Sample)]) -> std::collections::BTreeMap<i64, Window> {
        let mut windows = std::collections::BTreeMap::new();
        let mut latest = None;
        for (ts, s) in samples {
            windows
                .entry((Width::Minute.start(*ts) - T0) / M)
                .or_insert_with(|| Window::new(counter))
                .add(*ts, *s, false, &mut latest);
        }
        windows
    }

    use Sample::{Bad, Good};

    #[test]
    fn windows_align_to_the_epoch_also_before_1970() {
        assert_eq!(Width::Minute.start(T0 + 59 * S), T0);
        assert_eq!(Width::Hour.start(T0 + 61 * M), T0 + 60 * M);
        assert_eq!(Width::Minute.start(-1), -M);
        assert!(!Width::Minute.is_late(T0 + 30 * S, T0 + M + GRACE_NS - 1));
        assert!(Width::Minute.is_late(T0 + 30 * S, T0 + M + GRACE_NS));
    }

    #[test]
    fn gauges_keep_count_min_max_mean_and_last_and_exclude_bad_readings() {
        let w = run(
            false,
            &[
                (T0 + 10 * S, Good(12.0)),
                (T0 + 20 * S, Good(14.0)),
                (T0 + 30 * S, Bad),
                (T0 + 40 * S, Good(f64::NAN)),
                (T0 + M + 5, Good(13.0)),
            ],
        );
        let w0 = &w[&0];
        assert_eq!((w0.count, w0.bad, w0.min, w0.max), (2, 2, 12.0, 14.0));
        assert_eq!(
            (w0.mean(), w0.last),
            (Some(13.0), Some((T0 + 20 * S, 14.0)))
        );
        assert_eq!((w[&1].count, w[&1].mean()), (1, Some(13.0)));
        // A window of bad readings only: counted, with no statistics.
        let only_bad = run(false, &[(T0, Bad)]);
        assert_eq!((only_bad[&0].bad, only_bad[&0].mean()), (1, None));
    }

    #[test]
    fn counter_increases_go_to_the_window_of_the_later_reading() {
        let w = run(
            true,
            &[
                (T0 + 50 * S, Good(100.0)),
                (T0 + M + 10 * S, Good(100.5)),
                (T0 + M + 40 * S, Good(101.25)),
            ],
        );
        assert_eq!((w[&0].delta, w[&1].delta), (0.0, 1.25));
        assert_eq!(w[&1].last, Some((T0 + M + 40 * S, 101.25)));
    }

    #[test]
    fn a_counter_reset_is_counted_and_never_a_negative_delta() {
        // 1250.0 → the device restarts at zero → 0.25 → 0.75: the step across the reset adds
        // nothing, the 0.5 after it counts.
        let w = run(
            true,
            &[
                (T0 + 10 * S, Good(1250.0)),
                (T0 + 20 * S, Good(0.25)),
                (T0 + 30 * S, Good(0.75)),
            ],
        );
        assert_eq!((w[&0].delta, w[&0].resets, w[&0].count), (0.5, 1, 3));
    }

    #[test]
    fn a_replaced_meter_showing_a_higher_or_lower_total_bills_only_what_it_measured() {
        // The old meter read 812.5; its replacement shows 40.0 (a used meter) and counts on.
        let w = run(
            true,
            &[
                (T0 + 10 * S, Good(812.0)),
                (T0 + 20 * S, Good(812.5)),
                (T0 + M + 10 * S, Good(40.0)),
                (T0 + M + 50 * S, Good(40.75)),
            ],
        );
        assert_eq!((w[&0].delta, w[&0].resets), (0.5, 0));
        assert_eq!((w[&1].delta, w[&1].resets), (0.75, 1));
        assert!(w.values().all(|w| w.delta >= 0.0));
    }

    #[test]
    fn an_out_of_order_counter_reading_is_in_the_statistics_but_not_counted_twice() {
        let w = run(
            true,
            &[
                (T0 + 10 * S, Good(100.0)),
                (T0 + 50 * S, Good(102.0)),
                (T0 + 30 * S, Good(101.0)),
            ],
        );
        assert_eq!(
            (w[&0].count, w[&0].delta, w[&0].mean()),
            (3, 2.0, Some(101.0))
        );
        assert_eq!(w[&0].last, Some((T0 + 50 * S, 102.0)));
    }

    #[test]
    fn windows_round_trip_through_their_packed_form_compactly() {
        let mut latest = None;
        let mut single = Window::new(false);
        single.add(T0 + 7 * S, Good(0.1), true, &mut latest);
        let mut many = Window::new(true);
        for (i, v) in [5.0, 5.5, 4.0, 6.25].iter().enumerate() {
            many.add(T0 + i as i64 * S, Good(*v), false, &mut latest);
        }
        many.add(T0, Bad, false, &mut latest);
        many.revision = 3;
        let empty = Window::new(true);
        for (w, size) in [
            (&single, 5 + 8 + 5),
            (&many, 5 + 32 + 5 + 9),
            (&empty, 5 + 9),
        ] {
            let mut buf = Vec::new();
            w.encode(T0, &mut buf);
            assert_eq!(buf.len(), size, "{w:?}");
            assert_eq!(&Window::decode(&buf, T0).expect("decodes"), w);
        }
        assert_eq!(
            Window::decode(&[2, 0, 1, 0, 0, 1], T0),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn merged_windows_add_up() {
        let w = run(
            true,
            &[
                (T0, Good(1.0)),
                (T0 + 30 * S, Good(3.0)),
                (T0 + M, Good(4.0)),
                (T0 + M + S, Bad),
            ],
        );
        let mut all = w[&0].clone();
        all.merge(&w[&1]);
        assert_eq!((all.count, all.bad, all.min, all.max), (3, 1, 1.0, 4.0));
        assert_eq!((all.delta, all.last), (3.0, Some((T0 + M, 4.0))));
    }
}
