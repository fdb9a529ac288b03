//! The KPI writer: the plant figures of each completed hour and local day, written to InfluxDB
//! as measurement `kpi`, tags `site` and `period` (`hour` / `day`), one float field per figure
//! present, and a string field `missing` listing `name: reason` pairs of the others; the
//! timestamp is the period's start. It reuses the InfluxDB writer's client, settings and
//! delivery rules ([`influx::Writer::deliver`]: retry with backoff; a rejected line is
//! quarantined under reading id 0).
//!
//! **Marks** (in the store's `meta`, [`Windows::set_marks`]): `kpi_influx_hour`, the start of the
//! next hour to write, and `kpi_influx_changed`, the aggregator's cursor when the last batch was
//! computed. They are set only after InfluxDB accepted the batch, so a restart neither skips a
//! period (it resumes at the mark) nor repeats one (a re-sent point would in any case overwrite
//! itself: same measurement, tags and timestamp).
//!
//! **When.** An hour is written once the wall clock is `settle` past its end (the aggregator's
//! grace and interval, so its windows hold the hour's readings); a local day right after its
//! last hour. Nothing is written while the clock is unsynchronised (a wrong clock would move the
//! mark to a wrong time). On the first start it begins at the oldest hour window of the last
//! 7 days (a store with history gets its past week), and writes at most a week of hours per round.
//!
//! **Revisions.** Each round also asks for the hour windows of the last 7 days changed by a
//! reading after `kpi_influx_changed` (a late reading revised them: one range scan of the
//! windows' primary key) and rewrites those hours and their local days. Revisions older than
//! 7 days are not rewritten (`/api/kpi` always computes from the windows, so it has them).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::influx;
use crate::aggregate::kpi::{self, Engine, KpiSet, Period};
use crate::clock::Clock;
use crate::model::{Quality, Reading, Series, Value};
use crate::store::{self, windows::Windows, Handle, Reader};

const HOUR_NS: i64 = 3_600_000_000_000;
const WEEK_NS: i64 = 7 * 24 * HOUR_NS;
const MARK_HOUR: &str = "kpi_influx_hour";
const MARK_CHANGED: &str = "kpi_influx_changed";
/// How often the writer looks for completed periods.
const ROUND: Duration = Duration::from_secs(60);

/// The line of one KPI set; `None` when it has no figure at all.
pub fn encode(site: &str, set: &KpiSet) -> Option<String> {
    let mut fields = Vec::with_capacity(set.figures.len() + 1);
    let mut missing = Vec::new();
    for f in &set.figures {
        match &f.value {
            Ok(v) if v.is_finite() => fields.push((f.name.to_owned(), Value::Float(*v))),
            Ok(_) => missing.push(format!("{}: not a number", f.name)),
            Err(m) => missing.push(format!("{}: {m}", f.name)),
        }
    }
    if !missing.is_empty() {
        fields.push(("missing".to_owned(), Value::Str(missing.join("; "))));
    }
    let reading = Reading {
        series: Series {
            measurement: "kpi".into(),
            device: "".into(),
            extra: vec![("period".into(), set.period.as_str().into())],
        },
        ts_ns: set.period_start_ns,
        quality: Quality::Good,
        fields,
        ack: None,
        receipt: None,
    };
    let mut out = String::new();
    crate::line_protocol::encode(&mut out, site, &reading).then_some(out)
}

/// The periods due when the next hour to write starts at `mark_ns` and the clock reads `now_ns`:
/// every hour that ended `settle_ns` ago or more (at most `limit`), each followed by its local
/// day when it is the day's last hour. Returns them and the new mark.
pub fn due(
    engine: &Engine,
    mark_ns: i64,
    now_ns: i64,
    settle_ns: i64,
    limit: usize,
) -> (Vec<(Period, i64)>, i64) {
    let mut out = Vec::new();
    let mut h = mark_ns;
    let mut hours = 0;
    while h + HOUR_NS + settle_ns <= now_ns && hours < limit {
        out.push((Period::Hour, h));
        let end = h + HOUR_NS;
        if engine.period_start(Period::Day, end) == end {
            out.push((Period::Day, end - 24 * HOUR_NS));
        }
        h = end;
        hours += 1;
    }
    (out, h)
}

/// The periods to rewrite for the revised hour windows starting at `hours`: those hours, and
/// the local days holding them that have ended by `mark_ns`.
pub fn revised(engine: &Engine, hours: &[i64], mark_ns: i64) -> Vec<(Period, i64)> {
    let mut out: Vec<(Period, i64)> = hours.iter().map(|&h| (Period::Hour, h)).collect();
    let mut days: Vec<i64> = hours
        .iter()
        .map(|&h| engine.period_start(Period::Day, h))
        .filter(|&d| engine.period_end(Period::Day, d) <= mark_ns)
        .collect();
    days.dedup();
    out.extend(days.into_iter().map(|d| (Period::Day, d)));
    out
}

/// What one round computed: the lines and the marks to set once they are delivered.
struct Round {
    lines: Vec<(i64, String)>,
    mark: i64,
    changed: i64,
}

/// Why a round could not be computed (it is tried again next round).
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("windows: {0}")]
    Store(#[from] store::Error),
    #[error("logbook: {0}")]
    Logbook(#[from] crate::store::logbook::Error),
}

fn round(
    windows: &Windows,
    book: &crate::store::logbook::Logbook,
    engine: &Engine,
    site: &str,
    now_ns: i64,
    settle_ns: i64,
) -> Result<Round, RoundError> {
    let changed_before = windows.mark(MARK_CHANGED)?;
    // Read before the windows: a window changed meanwhile is rewritten next round (harmless).
    let changed = windows.aggregated_through()?;
    let mark = match windows.mark(MARK_HOUR)? {
        Some(m) => m,
        None => {
            let week_ago = now_ns - WEEK_NS;
            let oldest = windows
                .oldest(crate::aggregate::window::Width::Hour)?
                .unwrap_or(now_ns);
            engine.period_start(Period::Hour, oldest.max(week_ago))
        }
    };
    let (mut periods, next) = due(engine, mark, now_ns, settle_ns, 24 * 7);
    if let Some(before) = changed_before {
        let hours = windows.hours_changed_after(before, mark - WEEK_NS, mark)?;
        periods.extend(revised(engine, &hours, mark));
    }
    let mut lines = Vec::with_capacity(periods.len());
    let span = periods
        .iter()
        .map(|(p, s)| (*s, engine.period_end(*p, *s)))
        .fold(None, |acc: Option<(i64, i64)>, (s, e)| {
            Some(acc.map_or((s, e), |(a, b)| (a.min(s), b.max(e))))
        });
    let entries = match span {
        Some((from, to)) => book.list(from, to, false)?,
        None => Vec::new(),
    };
    for (period, start) in periods {
        let feed = kpi::feed_of(&entries, start, engine.period_end(period, start));
        let set = engine.period(windows, period, start, &feed)?;
        if let Some(line) = encode(site, &set) {
            lines.push((0, line));
        }
    }
    Ok(Round {
        lines,
        mark: next,
        changed,
    })
}

/// The writer task (spawned by `topology` when InfluxDB is enabled).
pub async fn run(
    writer: influx::Writer,
    reader: Handle<Reader>,
    windows: Handle<(Windows, crate::store::logbook::Logbook)>,
    engine: Engine,
    clock: Arc<Clock>,
    settle: Duration,
    cancel: CancellationToken,
) {
    let settle_ns = settle.as_nanos() as i64;
    let site: Arc<str> = writer.site().into();
    loop {
        let now = clock.now();
        if now.synced {
            let (e, s) = (engine.clone(), site.clone());
            match windows
                .run(move |(w, book)| round(w, book, &e, &s, now.ts_ns, settle_ns))
                .await
            {
                Ok(r) => {
                    if !r.lines.is_empty()
                        && !writer.deliver(&reader, &r.lines, &cancel, "kpi").await
                    {
                        break;
                    }
                    let marks = [(MARK_HOUR, r.mark), (MARK_CHANGED, r.changed)];
                    if let Err(e) = windows.run(move |(w, _)| w.set_marks(&marks)).await {
                        tracing::error!(error = %e, "kpi writer: cannot keep its marks (periods will be written again)");
                    } else if !r.lines.is_empty() {
                        tracing::debug!(points = r.lines.len(), "kpi points written");
                    }
                }
                Err(e) => tracing::error!(error = %e, "kpi writer: cannot read the windows"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(ROUND) => {}
        }
    }
    tracing::info!("kpi writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::kpi::{Missing, SiteParameters};
    use crate::plant::zone::Zone;

    /// 2026-12-01T00:00:00Z = 03:00 in Nairobi.
    const T0: i64 = 1_796_083_200_000_000_000;
    const MIN: i64 = 60_000_000_000;

    fn engine() -> Engine {
        Engine::new(SiteParameters::default(), Zone::default(), None)
    }

    fn check(set: KpiSet, expected: Option<&str>) {
        assert_eq!(encode("site-1", &set).as_deref(), expected);
    }

    #[test]
    fn a_set_is_one_line_with_its_figures_and_the_missing_reasons() {
        let fig = |name, value| kpi::Figure {
            name,
            unit: "",
            value,
        };
        check(
            KpiSet {
                period: Period::Day,
                period_start_ns: T0 - 3 * 60 * MIN,
                figures: vec![
                    fig("normal_gas_nm3", Ok(7.5)),
                    fig("methane_nm3", Err(Missing::NoCh4)),
                    fig("cylinders_filled", Ok(2.0)),
                    fig("lpg_kg", Err(Missing::NoCh4)),
                ],
            },
            Some("kpi,period=day,site=site-1 normal_gas_nm3=7.5,cylinders_filled=2,missing=\"methane_nm3: no ch4 reading; lpg_kg: no ch4 reading\" 1796072400000000000\n"),
        );
        check(
            KpiSet {
                period: Period::Hour,
                period_start_ns: T0,
                figures: vec![fig("energy_kwh", Ok(f64::NAN))],
            },
            Some("kpi,period=hour,site=site-1 missing=\"energy_kwh: not a number\" 1796083200000000000\n"),
        );
        check(
            KpiSet {
                period: Period::Hour,
                period_start_ns: T0,
                figures: vec![],
            },
            None,
        );
    }

    #[test]
    fn hours_are_due_after_they_settle_and_days_after_their_last_hour() {
        let e = engine();
        let settle = 5 * MIN;
        // 20:00Z is 23:00 in Nairobi: that hour ends the local day 2026-12-01.
        let h20 = T0 + 20 * 60 * MIN;
        assert_eq!(due(&e, h20, h20 + 64 * MIN, settle, 10), (vec![], h20));
        assert_eq!(
            due(&e, h20, h20 + 65 * MIN, settle, 10),
            (
                vec![(Period::Hour, h20), (Period::Day, T0 - 3 * 60 * MIN)],
                h20 + 60 * MIN
            )
        );
        let (p, next) = due(&e, T0, T0 + 10 * 60 * MIN, settle, 3);
        assert_eq!((p.len(), next), (3, T0 + 3 * 60 * MIN));
        // Revised hours: each hour, and its day once the day has been written.
        assert_eq!(
            revised(&e, &[T0, T0 + 60 * MIN, h20 + 60 * MIN], h20 + 120 * MIN),
            vec![
                (Period::Hour, T0),
                (Period::Hour, T0 + 60 * MIN),
                (Period::Hour, h20 + 60 * MIN),
                (Period::Day, T0 - 3 * 60 * MIN),
            ]
        );
    }
}
