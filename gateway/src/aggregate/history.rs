//! The history of one quantity at one instance over a time range, in at most N points.
//!
//! The source is chosen by the span and the number of points: raw readings when a bucket would
//! be shorter than a minute and the span at most [`RAW_MAX_SPAN_NS`] (and raw readings still
//! cover its start), else 1-minute windows when a bucket would be shorter than an hour (and
//! they still cover the start), else 1-hour windows. Each point is a bucket with count, min,
//! max, mean, last (and delta for counters), so a spike inside a bucket stays visible.
//! A 7-day query reads windows, never the ~600,000 raw rows of a week of 1-second data.

use crate::plant::{Kind, Plant};
use crate::store::windows::Windows;
use crate::store::{self, Reader};

use super::window::{Latest, Sample, Width, Window};

/// Longest span answered from raw readings.
pub const RAW_MAX_SPAN_NS: i64 = 6 * 3_600_000_000_000;
/// Most points one query may ask for.
pub const MAX_POINTS: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Raw,
    Windows(Width),
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Raw => "raw",
            Source::Windows(w) => w.label(),
        }
    }

    fn resolution_ns(self) -> i64 {
        match self {
            Source::Raw => 1_000_000_000,
            Source::Windows(w) => w.nanos(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Query {
    pub quantity: String,
    pub instance: String,
    pub from_ns: i64,
    pub to_ns: i64,
    pub points: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("quantity: {0:?} is not a quantity of this plant")]
    UnknownQuantity(String),
    #[error("quantity: {0:?} is a {1}; only gauges and counters have a history")]
    NotNumeric(String, &'static str),
    #[error("to: must be after from")]
    EmptyRange,
    #[error("points: must be between 1 and {MAX_POINTS}")]
    Points,
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// One point of the answer: the bucket starting at `start_ns`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub start_ns: i64,
    pub window: Window,
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub source: Source,
    pub bucket_ns: i64,
    pub counter: bool,
    pub points: Vec<Point>,
}

/// Which source answers a span of `span_ns` from `from_ns` in `points` points, given the
/// oldest raw reading and the oldest window of each width. The bucket length decides first
/// (raw below a minute, minute windows below an hour); a coarser source is taken instead when
/// the finer one does not reach back to `from_ns` and the coarser one reaches further (raw
/// readings removed by the quota, minute windows past their retention).
pub fn choose(from_ns: i64, span_ns: i64, points: usize, oldest: [Option<i64>; 3]) -> Source {
    let step = span_ns / points.max(1) as i64;
    let sources = [
        Source::Raw,
        Source::Windows(Width::Minute),
        Source::Windows(Width::Hour),
    ];
    let mut i = if step < Width::Minute.nanos() && span_ns <= RAW_MAX_SPAN_NS {
        0
    } else if step < Width::Hour.nanos() {
        1
    } else {
        2
    };
    while i < 2 {
        let reaches = |o: Option<i64>| o.is_some_and(|o| o <= from_ns);
        let further = match (oldest[i], oldest[i + 1]) {
            (None, Some(_)) => true,
            (Some(fine), Some(coarse)) => coarse + sources[i + 1].resolution_ns() <= fine,
            _ => false,
        };
        if reaches(oldest[i]) || !further {
            break;
        }
        i += 1;
    }
    sources[i]
}

/// Answers `q` from the store.
pub fn query(
    plant: &Plant,
    reader: &mut Reader,
    windows: &Windows,
    q: &Query,
) -> Result<Answer, Error> {
    let quantity = plant
        .catalogue
        .get(&q.quantity)
        .ok_or_else(|| Error::UnknownQuantity(q.quantity.clone()))?;
    let counter = match quantity.kind {
        Kind::Gauge => false,
        Kind::Counter => true,
        k => return Err(Error::NotNumeric(q.quantity.clone(), k.as_str())),
    };
    if q.to_ns <= q.from_ns {
        return Err(Error::EmptyRange);
    }
    if q.points == 0 || q.points > MAX_POINTS {
        return Err(Error::Points);
    }
    let span = q.to_ns - q.from_ns;
    let series = windows.series_id(&q.quantity, &q.instance)?;
    let source = choose(
        q.from_ns,
        span,
        q.points,
        [
            reader.oldest_raw_ts()?,
            windows.oldest(Width::Minute)?,
            windows.oldest(Width::Hour)?,
        ],
    );
    let bucket_ns = {
        let res = source.resolution_ns();
        let want = (span + q.points as i64 - 1) / q.points as i64;
        ((want + res - 1) / res).max(1) * res
    };
    let mut buckets: std::collections::BTreeMap<i64, Window> = Default::default();
    let bucket_of = |t: i64| q.from_ns + (t - q.from_ns).div_euclid(bucket_ns) * bucket_ns;
    match source {
        Source::Raw => {
            let mut raw = Vec::new();
            for (m, f) in plant.stored_names(&q.quantity) {
                raw.extend(reader.raw_range(m, &q.instance, f, q.from_ns, q.to_ns)?);
            }
            raw.sort_by_key(|p| p.ts_ns);
            let mut latest: Option<Latest> = None;
            for p in raw {
                let sample = p.value.map_or(Sample::Bad, Sample::Good);
                buckets
                    .entry(bucket_of(p.ts_ns))
                    .or_insert_with(|| Window::new(counter))
                    .add(p.ts_ns, sample, p.unsynced, &mut latest);
            }
        }
        Source::Windows(width) => {
            if let Some(series) = series {
                for row in windows.range(width, series, q.from_ns, q.to_ns)? {
                    buckets
                        .entry(bucket_of(row.start_ns))
                        .or_insert_with(|| Window::new(counter))
                        .merge(&row.window);
                }
            }
        }
    }
    Ok(Answer {
        source,
        bucket_ns,
        counter,
        points: buckets
            .into_iter()
            .map(|(start_ns, window)| Point { start_ns, window })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;
    const T0: i64 = 1_796_083_200_000_000_000;

    #[test]
    fn the_span_and_the_points_choose_the_source() {
        let old = [
            Some(T0 - 24 * H),
            Some(T0 - 30 * 24 * H),
            Some(T0 - 365 * 24 * H),
        ];
        // An hour in 600 points: 6 s buckets, from raw readings.
        assert_eq!(choose(T0, H, 600, old), Source::Raw);
        // A day in 500 points: ~3 min buckets, from minute windows.
        assert_eq!(choose(T0, 24 * H, 500, old), Source::Windows(Width::Minute));
        // A week in 100 points: ~1.7 h buckets, from hour windows.
        assert_eq!(
            choose(T0, 7 * 24 * H, 100, old),
            Source::Windows(Width::Hour)
        );
        // Raw readings removed by the quota: the same hour comes from minute windows.
        let evicted = [Some(T0 + H / 2), old[1], old[2]];
        assert_eq!(choose(T0, H, 600, evicted), Source::Windows(Width::Minute));
        // Minute windows past their retention: hour windows.
        assert_eq!(
            choose(T0 - 40 * 24 * H, 24 * H, 500, old),
            Source::Windows(Width::Hour)
        );
        // A gateway started 20 minutes ago asked for a day: its minute windows, not the one
        // hour window that holds the same readings.
        let fresh = [Some(T0 - H / 3), Some(T0 - H / 3), Some(T0 - H)];
        assert_eq!(
            choose(T0 - 24 * H, 24 * H, 500, fresh),
            Source::Windows(Width::Minute)
        );
    }
}
