//! The uplink's outbox: batches for the central platform, each with a gapless `seq` that never
//! repeats (the next one is kept in `meta.uplink_next_seq`, not derived from the rows, which go
//! when confirmed). A batch is built and inserted in ONE transaction together with the cursors
//! of what it holds (`meta.uplink_*`), so a crash either keeps a whole batch and its cursors or
//! neither: nothing is sent twice under two `seq`s, nothing is skipped.
//!
//! What a batch reads (all from this store, never the live stream):
//! - the **windows**: every span of `span_s` (default 5 min) that ended at least the
//!   aggregator's grace before its watermark, merged from the 1-minute windows
//!   (`uplink_sent_until`); and spans sent before whose minute windows changed since (late
//!   readings: `uplink_changed`, the aggregator's cursor at the last build), looked back
//!   `lookback_ns`;
//! - the **alarm events** after `uplink_alarm_seq`;
//! - the **logbook** revisions after `uplink_logbook_id`;
//! - the **command outcomes** after `uplink_command_row`;
//! - the **KPIs** of each hour (and local day) the new spans complete, from `uplink_kpi_hour`
//!   (computed by the caller's function from the hour windows and the logbook; the first
//!   build starts at the first whole hour of data), and of the hours already sent that this
//!   batch's revisions touch;
//! - the **meter states**: the newest valve / relay text (`agg_text`) of the meters in it.
//!
//! Rows leave `outbox` only by [`Outbox::confirm`] (the platform said 2xx / PUBACK) or
//! [`Outbox::reject`] (the platform refused it as invalid: kept in `outbox_rejected`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{open, Error, Result};
use crate::aggregate::window::Window;
use crate::alarm::Event;
use crate::logbook::Entry;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY, created INTEGER NOT NULL, urgent INTEGER NOT NULL, body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS outbox_rejected(seq INTEGER PRIMARY KEY, created INTEGER NOT NULL, rejected INTEGER NOT NULL, reason TEXT NOT NULL, body BLOB NOT NULL);
";

/// One span window of one series, merged from its minute windows.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanWindow {
    pub quantity: Arc<str>,
    pub instance: Arc<str>,
    pub start_ns: i64,
    pub window: Window,
    /// Sent before: this is a revision (its minute windows changed after the span was sent).
    pub revised: bool,
}

/// What the next batch (or batches) holds.
#[derive(Debug, Default)]
pub struct Inputs {
    pub windows: Vec<SpanWindow>,
    /// The spans the new windows cover: `[from, to)` (None: no new span).
    pub span: Option<(i64, i64)>,
    pub alarms: Vec<Event>,
    pub logbook: Vec<Entry>,
    /// Command outcomes (accepted, delivered, applied, rejected, expired, refused).
    pub commands: Vec<super::commands::Event>,
    /// The KPIs of the hours and local days completed by the new spans, and of those whose
    /// windows were revised.
    pub kpis: Vec<BatchKpi>,
    /// The newest valve / relay state of the meters in `windows`: (meter, quantity, ts, state).
    pub meter_states: Vec<(String, &'static str, i64, String)>,
}

/// One KPI set in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchKpi {
    pub set: crate::aggregate::kpi::KpiSet,
    /// Sent before: recomputed because a late reading revised its windows.
    pub revised: bool,
}

/// What [`Outbox::build`] asks its KPI function for: the sets of the hours from `mark_ns`
/// (the next hour not yet sent) that end by `until_ns` (the end of the completed spans), with
/// their local days, and the recomputed sets of `revised_hours` (hours already sent whose
/// windows changed). It answers with the sets and the new mark.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiAsk {
    pub mark_ns: i64,
    pub until_ns: i64,
    pub revised_hours: Vec<i64>,
}

impl Inputs {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
            && self.alarms.is_empty()
            && self.logbook.is_empty()
            && self.commands.is_empty()
            && self.kpis.is_empty()
    }
}

/// What the builder asks of [`Outbox::build`].
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub span_ns: i64,
    /// The aggregator's lateness allowance: a span is complete once the watermark is this far
    /// past its end.
    pub grace_ns: i64,
    /// How far back revisions of sent spans are looked for.
    pub lookback_ns: i64,
    /// On the very first build, how far back spans are sent.
    pub backfill_ns: i64,
    /// Only pending alarm events of this severity or worse make a batch now (the urgent path);
    /// None: build whatever is pending.
    pub urgent_only: Option<crate::alarm::Severity>,
    pub now_ns: i64,
}

/// A batch waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: u64,
    pub created_ns: i64,
    pub urgent: bool,
    pub body: Vec<u8>,
    pub attempts: u32,
}

/// The outbox's size, for `/metrics` and `/api/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub batches: u64,
    pub bytes: u64,
    pub oldest_created_ns: Option<i64>,
    pub oldest_seq: Option<u64>,
    pub next_seq: u64,
    pub rejected: u64,
}

pub struct Outbox {
    conn: Connection,
}

fn meta(tx: &Transaction<'_>, key: &str) -> Result<Option<i64>> {
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn set_meta(tx: &Transaction<'_>, key: &str, v: i64) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
        params![key, v],
    )?;
    Ok(())
}

fn next_seq(tx: &Transaction<'_>) -> Result<u64> {
    Ok(meta(tx, "uplink_next_seq")?.unwrap_or(1).max(1) as u64)
}

/// Inserts `bodies` as `first`, `first + 1` … and moves `uplink_next_seq` past them.
fn insert(
    tx: &Transaction<'_>,
    first: u64,
    bodies: &[Vec<u8>],
    now_ns: i64,
    urgent: bool,
) -> Result<Vec<u64>> {
    let mut ins = tx
        .prepare_cached("INSERT INTO outbox(seq, created, urgent, body) VALUES (?1, ?2, ?3, ?4)")?;
    let mut seqs = Vec::with_capacity(bodies.len());
    for (i, b) in bodies.iter().enumerate() {
        let seq = first + i as u64;
        ins.execute(params![seq as i64, now_ns, urgent, b])?;
        seqs.push(seq);
    }
    set_meta(tx, "uplink_next_seq", (first + bodies.len() as u64) as i64)?;
    Ok(seqs)
}

const MINUTE: i64 = 60;
const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;

impl Outbox {
    pub fn open(path: &Path) -> Result<Outbox> {
        let conn = open(path)?;
        conn.execute_batch(super::SCHEMA)?;
        conn.execute_batch(super::windows::SCHEMA)?;
        conn.execute_batch(super::alarms::SCHEMA)?;
        conn.execute_batch(super::commands::SCHEMA)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Outbox { conn })
    }

    /// Reads what is pending, lets `assemble` turn it into batch bodies (given the first
    /// `seq` to use; one body per `seq`, in order) and inserts them with the new cursors, in
    /// one transaction. Returns the new `seq`s (empty: nothing was pending).
    pub fn build<K, F>(&mut self, plan: &Plan, kpis: K, assemble: F) -> Result<Vec<u64>>
    where
        K: FnOnce(&KpiAsk) -> Result<(Vec<BatchKpi>, i64)>,
        F: FnOnce(&Inputs, u64) -> Vec<Vec<u8>>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let alarm_cursor = meta(&tx, "uplink_alarm_seq")?.unwrap_or(0);
        let alarms = read_alarms(&tx, alarm_cursor)?;
        let mut inputs = Inputs::default();
        let urgent = match plan.urgent_only {
            Some(min) => {
                if !alarms.iter().any(|e| e.severity >= min) {
                    return Ok(Vec::new());
                }
                true
            }
            None => false,
        };
        inputs.alarms = alarms;
        let mut new_cursors: Vec<(&str, i64)> = Vec::new();
        if let Some(last) = inputs.alarms.last() {
            new_cursors.push(("uplink_alarm_seq", last.seq as i64));
        }
        if !urgent {
            let logbook_cursor = meta(&tx, "uplink_logbook_id")?.unwrap_or(0);
            inputs.logbook = read_logbook(&tx, logbook_cursor)?;
            if let Some(last) = inputs.logbook.last() {
                new_cursors.push(("uplink_logbook_id", last.id));
            }
            let command_cursor = meta(&tx, "uplink_command_row")?.unwrap_or(0);
            inputs.commands = super::commands::events_after_in(&tx, command_cursor, 10_000)?;
            if let Some(last) = inputs.commands.last() {
                new_cursors.push(("uplink_command_row", last.row));
            }
            let watermark = meta(&tx, "agg_watermark")?.unwrap_or(i64::MIN);
            let span = plan.span_ns.max(MINUTE_NS);
            let complete_until = if watermark == i64::MIN {
                None
            } else {
                Some((watermark - plan.grace_ns).div_euclid(span) * span)
            };
            if let Some(until) = complete_until {
                let sent_until = match meta(&tx, "uplink_sent_until")? {
                    Some(s) => s,
                    None => (until - plan.backfill_ns).div_euclid(span) * span,
                };
                let changed_cursor = meta(&tx, "uplink_changed")?.unwrap_or(0);
                // Every window's `changed` is at most the aggregator's cursor (the last
                // reading it folded in), read here in the same snapshot as the windows.
                let max_changed: i64 = tx
                    .query_row(
                        "SELECT position FROM cursors WHERE consumer = ?1",
                        [crate::aggregate::CONSUMER],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(0);
                // Revisions: sent spans whose minute windows changed since.
                if changed_cursor > 0 && max_changed > changed_cursor {
                    let mut st = tx.prepare_cached(
                        "SELECT DISTINCT series, start FROM windows WHERE width = ?1 AND start >= ?2 AND start < ?3 AND changed > ?4",
                    )?;
                    let rows = st.query_map(
                        params![
                            MINUTE,
                            sent_until - plan.lookback_ns,
                            sent_until,
                            changed_cursor
                        ],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                    )?;
                    let mut spans: std::collections::BTreeSet<(i64, i64)> = Default::default();
                    for row in rows {
                        let (series, start) = row?;
                        spans.insert((start.div_euclid(span) * span, series));
                    }
                    drop(st);
                    for (start, series) in spans {
                        inputs.windows.extend(span_windows(
                            &tx,
                            start,
                            start + span,
                            Some(series),
                            true,
                        )?);
                    }
                }
                if until > sent_until {
                    let new = span_windows(&tx, sent_until, until, None, false)?;
                    inputs.windows.extend(merge_spans(new, span));
                    inputs.span = Some((sent_until, until));
                    new_cursors.push(("uplink_sent_until", until));
                }
                if max_changed > changed_cursor {
                    new_cursors.push(("uplink_changed", max_changed));
                }
                // KPIs: the hours these spans complete (the first build starts at the next
                // whole hour), and the hours already sent that the revisions touch.
                let mark = match meta(&tx, "uplink_kpi_hour")? {
                    Some(m) => m,
                    None => {
                        // Not before the oldest window (a backfill reaching back further has
                        // no data to compute from).
                        let oldest: Option<i64> = tx.query_row(
                            "SELECT MIN(start) FROM windows WHERE width = ?1",
                            [MINUTE],
                            |r| r.get(0),
                        )?;
                        let first = inputs
                            .span
                            .map_or(until, |(from, _)| from)
                            .max(oldest.unwrap_or(i64::MIN));
                        (first + HOUR_NS - 1).div_euclid(HOUR_NS) * HOUR_NS
                    }
                };
                let mut revised_hours: Vec<i64> = inputs
                    .windows
                    .iter()
                    .filter(|w| w.revised)
                    .map(|w| w.start_ns.div_euclid(HOUR_NS) * HOUR_NS)
                    .filter(|&h| h < mark)
                    .collect();
                revised_hours.sort_unstable();
                revised_hours.dedup();
                if mark + HOUR_NS <= until || !revised_hours.is_empty() {
                    let (sets, next) = kpis(&KpiAsk {
                        mark_ns: mark,
                        until_ns: until,
                        revised_hours,
                    })?;
                    inputs.kpis = sets;
                    if next != mark {
                        new_cursors.push(("uplink_kpi_hour", next));
                    }
                } else if meta(&tx, "uplink_kpi_hour")?.is_none() {
                    new_cursors.push(("uplink_kpi_hour", mark));
                }
            }
        }
        if !inputs.windows.is_empty() {
            let meters: std::collections::BTreeSet<&str> = inputs
                .windows
                .iter()
                .filter(|w| w.quantity.starts_with("meter."))
                .map(|w| &*w.instance)
                .collect();
            for q in ["meter.valve", "meter.relay"] {
                for (meter, ts, state) in super::windows::texts(&tx, q)? {
                    if meters.contains(meter.as_str()) {
                        inputs.meter_states.push((meter, q, ts, state));
                    }
                }
            }
        }
        // The revision windows are already one per span; the new ones were merged above.
        if inputs.is_empty() {
            // Advance the time cursors anyway (an empty span is still sent-until).
            for (k, v) in new_cursors {
                set_meta(&tx, k, v)?;
            }
            tx.commit()?;
            return Ok(Vec::new());
        }
        let first = next_seq(&tx)?;
        let bodies = assemble(&inputs, first);
        let seqs = insert(&tx, first, &bodies, plan.now_ns, urgent)?;
        for (k, v) in new_cursors {
            set_meta(&tx, k, v)?;
        }
        tx.commit()?;
        Ok(seqs)
    }

    /// Puts ready-made bodies in the outbox under the next `seq`s, in one transaction (the
    /// fleet benchmark's pre-filled backlog; the builder goes through [`Outbox::build`]).
    pub fn enqueue(&mut self, bodies: &[Vec<u8>], now_ns: i64) -> Result<Vec<u64>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let first = next_seq(&tx)?;
        let seqs = insert(&tx, first, bodies, now_ns, false)?;
        tx.commit()?;
        Ok(seqs)
    }

    /// The oldest waiting batches, oldest first.
    pub fn oldest(&self, limit: usize) -> Result<Vec<Pending>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, created, urgent, body, attempts FROM outbox ORDER BY seq LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            Ok(Pending {
                seq: r.get::<_, i64>(0)? as u64,
                created_ns: r.get(1)?,
                urgent: r.get(2)?,
                body: r.get(3)?,
                attempts: r.get::<_, i64>(4)? as u32,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The platform has it: the batch leaves the outbox.
    pub fn confirm(&mut self, seq: u64) -> Result<()> {
        self.conn
            .execute("DELETE FROM outbox WHERE seq = ?1", [seq as i64])?;
        Ok(())
    }

    /// A failed attempt, for the status.
    pub fn attempted(&mut self, seq: u64, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE seq = ?1",
            params![seq as i64, error],
        )?;
        Ok(())
    }

    /// The platform refused the batch as invalid (4xx): it is kept aside, never resent, and
    /// the queue goes on.
    pub fn reject(&mut self, seq: u64, reason: &str, now_ns: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO outbox_rejected(seq, created, rejected, reason, body) SELECT seq, created, ?2, ?3, body FROM outbox WHERE seq = ?1",
            params![seq as i64, now_ns, reason],
        )?;
        tx.execute("DELETE FROM outbox WHERE seq = ?1", [seq as i64])?;
        tx.commit()?;
        Ok(())
    }

    pub fn backlog(&self) -> Result<Backlog> {
        let (batches, bytes, oldest_created_ns, oldest_seq): (i64, i64, Option<i64>, Option<i64>) =
            self.conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(created), MIN(seq) FROM outbox",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
        let next: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'uplink_next_seq'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let rejected: i64 =
            self.conn
                .query_row("SELECT COUNT(*) FROM outbox_rejected", [], |r| r.get(0))?;
        Ok(Backlog {
            batches: batches as u64,
            bytes: bytes as u64,
            oldest_created_ns,
            oldest_seq: oldest_seq.map(|s| s as u64),
            next_seq: next.unwrap_or(1) as u64,
            rejected: rejected as u64,
        })
    }
}

fn read_alarms(tx: &Transaction<'_>, after: i64) -> Result<Vec<Event>> {
    super::alarms::events_after(tx, after as u64, 10_000)
}

fn read_logbook(tx: &Transaction<'_>, after: i64) -> Result<Vec<Entry>> {
    super::logbook::after_in(tx, after, 10_000)
}

/// Minute windows starting in `[from, to)` (of one series, or all), each with its quantity and
/// instance; `revised` marks them. For a single span and series the result is merged into one.
fn span_windows(
    tx: &Transaction<'_>,
    from: i64,
    to: i64,
    series: Option<i64>,
    revised: bool,
) -> Result<Vec<SpanWindow>> {
    let mut out: Vec<SpanWindow> = Vec::new();
    let sql = "SELECT w.start, w.changed, w.stats, s.quantity, s.instance FROM windows w JOIN agg_series s ON s.id = w.series WHERE w.width = ?1 AND w.start >= ?2 AND w.start < ?3 AND (?4 IS NULL OR w.series = ?4) ORDER BY w.start, s.quantity, s.instance";
    let mut st = tx.prepare_cached(sql)?;
    let rows = st.query_map(params![MINUTE, from, to, series], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut names: BTreeMap<(String, String), (Arc<str>, Arc<str>)> = BTreeMap::new();
    for row in rows {
        let (start, changed, blob, q, i) = row?;
        let window = Window::decode(&blob, start).map_err(|source| Error::Corrupt {
            id: changed,
            source,
        })?;
        let (q, i) = names
            .entry((q.clone(), i.clone()))
            .or_insert_with(|| (q.into(), i.into()))
            .clone();
        out.push(SpanWindow {
            quantity: q,
            instance: i,
            start_ns: start,
            window,
            revised,
        });
    }
    if series.is_some() && !out.is_empty() {
        let mut merged = out[0].clone();
        merged.start_ns = from;
        for w in &out[1..] {
            merged.window.merge(&w.window);
        }
        return Ok(vec![merged]);
    }
    Ok(out)
}

/// Minute windows → one window per (series, span), in span order.
fn merge_spans(minutes: Vec<SpanWindow>, span: i64) -> Vec<SpanWindow> {
    let mut by: BTreeMap<(i64, Arc<str>, Arc<str>), SpanWindow> = BTreeMap::new();
    for w in minutes {
        let start = w.start_ns.div_euclid(span) * span;
        match by.get_mut(&(start, w.quantity.clone(), w.instance.clone())) {
            Some(acc) => acc.window.merge(&w.window),
            None => {
                by.insert(
                    (start, w.quantity.clone(), w.instance.clone()),
                    SpanWindow {
                        start_ns: start,
                        ..w
                    },
                );
            }
        }
    }
    by.into_values().collect()
}
