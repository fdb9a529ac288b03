//! The uplink to the central platform (issue 12): a durable **builder** that turns what the
//! store holds (the aggregator's windows as 5-minute spans, alarm events, logbook revisions)
//! into numbered batches in the store's **outbox** (`store::outbox`), and a **sender** that
//! delivers them oldest first over HTTPS (`http.rs`), each leaving the outbox only when the
//! platform confirmed it (2xx).
//!
//! Guarantees (docs/uplink.md has them for the platform team):
//! - `seq` is gapless per gateway and never repeats: assigned in the transaction that inserts
//!   the batch and moves the builder's cursors.
//! - A batch is resent until confirmed, always with the same body and idempotency key
//!   (`{site}/{gateway}/{seq}`), so the platform de-duplicates by that key.
//! - Alarm events of severity alarm or critical make a batch at once (checked every 2 s), not
//!   at the end of a span.
//! - After an outage the backlog drains oldest first, at most `max_batches_per_s`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::aggregate::kpi::{self, Engine, Period};
use crate::clock::Clock;
use crate::metrics::{Counter, Gauge, Registry};
use crate::store::logbook::Logbook;
use crate::store::outbox::{BatchKpi, KpiAsk, Outbox, Plan};
use crate::store::windows::Windows;
use crate::store::Handle;

pub mod batch;
pub mod http;
pub mod mqtt;

/// `[uplink]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub enabled: bool,
    /// The platform: `https://host/path` (HTTP POST) or `mqtts://host:port` (MQTT, batches on
    /// `gkgw/{site}/{gateway}/batch`); http:// and mqtt:// only on loopback, for tests.
    pub url: String,
    /// The bearer token, read from this file (never from the config itself).
    pub token_file: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) to verify the platform's server with, instead of the built-in
    /// web roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// This gateway's id at the platform (with `site.id`, the idempotency key).
    pub gateway: String,
    /// Length of a window in a batch, seconds (a multiple of 60).
    pub window_s: u64,
    /// Largest body; a bigger batch is split into several, each with its own `seq`.
    pub max_batch_bytes: usize,
    /// Most batches sent per second while draining a backlog.
    pub max_batches_per_s: f64,
    /// Whole-request timeout (ms).
    pub timeout_ms: u64,
    /// HTTPS: send the body gzip-compressed (`Content-Encoding: gzip`; JSON shrinks ~10×).
    pub gzip: bool,
    /// Retry backoff (with jitter) starts here and doubles up to `max_backoff_ms`.
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// On the first start, how many hours of windows already in the store are sent.
    pub backfill_hours: u64,
    /// How far back late readings revise windows already sent (hours).
    pub revision_hours: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enabled: false,
            url: String::new(),
            token_file: None,
            ca_file: None,
            gateway: "gw1".into(),
            window_s: 300,
            max_batch_bytes: 256 * 1024,
            max_batches_per_s: 2.0,
            timeout_ms: 30_000,
            gzip: true,
            min_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            backfill_hours: 24,
            revision_hours: 6,
        }
    }
}

impl Config {
    /// Whether the transport is MQTT (`mqtt://`, `mqtts://`).
    pub fn is_mqtt(&self) -> bool {
        self.url.starts_with("mqtt://") || self.url.starts_with("mqtts://")
    }

    /// Cross-field checks; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| ("uplink.url", format!("{:?}: {e}", self.url)))?;
        let loopback = url
            .host_str()
            .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
        match url.scheme() {
            "https" | "mqtts" => {}
            "http" | "mqtt" if loopback => {}
            s => {
                return Err((
                    "uplink.url",
                    format!(
                        "{s}:// is not allowed: https:// or mqtts:// (http:// and mqtt:// only on loopback, for tests)"
                    ),
                ))
            }
        }
        if self.window_s < 60 || !self.window_s.is_multiple_of(60) || self.window_s > 3600 {
            return Err(("uplink.window_s", "a multiple of 60 from 60 to 3600".into()));
        }
        if self.max_batch_bytes < 4096 {
            return Err(("uplink.max_batch_bytes", "at least 4096".into()));
        }
        if !(self.max_batches_per_s > 0.0 && self.max_batches_per_s.is_finite()) {
            return Err(("uplink.max_batches_per_s", "above 0".into()));
        }
        if self.gateway.is_empty() || self.gateway.contains('/') {
            return Err(("uplink.gateway", "a non-empty id without '/'".into()));
        }
        // The secrets and the CA are read at the start too: `gkgw check` finds a missing or
        // empty file before the service does.
        if let Some(p) = &self.token_file {
            match crate::config::read_secret(p) {
                Ok(t) if !t.trim().is_empty() => {}
                Ok(_) => return Err(("uplink.token_file", format!("{} is empty", p.display()))),
                Err(e) => {
                    return Err((
                        "uplink.token_file",
                        format!("cannot read {}: {e}", p.display()),
                    ))
                }
            }
        }
        if let Some(p) = &self.ca_file {
            let pem = std::fs::read(p).map_err(|e| {
                (
                    "uplink.ca_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err((
                    "uplink.ca_file",
                    format!("{} holds no PEM certificate", p.display()),
                ));
            }
        }
        Ok(())
    }
}

pub struct Metrics {
    pub built: Arc<Counter>,
    pub sent: Arc<Counter>,
    pub bytes_sent: Arc<Counter>,
    pub errors: Arc<Counter>,
    pub rejected: Arc<Counter>,
    pub throttled: Arc<Counter>,
    pub backlog: Arc<Gauge>,
    pub oldest_age_s: Arc<Gauge>,
    pub last_success_s: Arc<Gauge>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            built: r.counter("gkgw_uplink_batches_built_total", "Batches put in the outbox."),
            sent: r.counter("gkgw_uplink_batches_confirmed_total", "Batches the platform confirmed (2xx); they left the outbox."),
            bytes_sent: r.counter("gkgw_uplink_bytes_confirmed_total", "Body bytes of the confirmed batches."),
            errors: r.counter("gkgw_uplink_errors_total", "Failed attempts to send a batch (timeouts, refused connections, 5xx); retried."),
            rejected: r.counter("gkgw_uplink_batches_rejected_total", "Batches the platform refused as invalid (4xx other than 408/429): kept in outbox_rejected, not resent."),
            throttled: r.counter("gkgw_uplink_throttled_total", "Answers 429 or 503 (the Retry-After was honoured)."),
            backlog: r.gauge("gkgw_uplink_backlog_batches", "Batches waiting in the outbox."),
            oldest_age_s: r.gauge("gkgw_uplink_oldest_unsent_seconds", "Age of the oldest batch waiting in the outbox (0 when empty)."),
            last_success_s: r.gauge("gkgw_uplink_last_success_timestamp_seconds", "When the platform last confirmed a batch (Unix seconds; 0: never)."),
        }
    }
}

/// What `/api/status` shows of the uplink.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub url: String,
    pub backlog: u64,
    pub backlog_bytes: u64,
    pub oldest_unsent_ns: Option<i64>,
    pub next_seq: u64,
    pub last_success_ns: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ns: Option<i64>,
    pub rejected: u64,
}

pub type SharedStatus = Arc<Mutex<Status>>;

fn update(status: &SharedStatus, f: impl FnOnce(&mut Status)) {
    f(&mut status.lock().unwrap_or_else(PoisonError::into_inner));
}

/// How often the builder looks for completed spans, logbook revisions and other alarm
/// events (seconds); urgent alarm events are looked for every 2 s.
pub const FULL_BUILD_S: u64 = 30;

/// The builder: every 2 s it checks for urgent alarm events; every [`FULL_BUILD_S`] it
/// builds whatever is pending (completed spans, revisions, logbook, other events). Wakes the
/// sender after each build.
#[allow(clippy::too_many_arguments)]
pub async fn run_builder(
    store: Handle<BuilderStore>,
    engine: Engine,
    cfg: Config,
    site: String,
    clock: Arc<Clock>,
    metrics: Arc<Metrics>,
    built: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let span_ns = cfg.window_s as i64 * 1_000_000_000;
    let mut last_full = tokio::time::Instant::now() - Duration::from_secs(cfg.window_s);
    loop {
        let full = last_full.elapsed() >= Duration::from_secs(cfg.window_s.min(FULL_BUILD_S));
        let now = clock.now();
        let plan = Plan {
            span_ns,
            grace_ns: crate::aggregate::window::GRACE_NS,
            lookback_ns: cfg.revision_hours as i64 * 3_600_000_000_000,
            backfill_ns: cfg.backfill_hours as i64 * 3_600_000_000_000,
            urgent_only: (!full).then_some(crate::alarm::Severity::Alarm),
            now_ns: now.ts_ns,
        };
        let header = batch::Header {
            site: site.clone(),
            gateway: cfg.gateway.clone(),
            now_ns: now.ts_ns,
            clock_synced: now.synced,
            span_s: cfg.window_s,
        };
        let max = cfg.max_batch_bytes;
        let engine = engine.clone();
        let r = store
            .run(move |(o, windows, book)| {
                o.build(
                    &plan,
                    |ask| kpi_sets(&engine, windows, book, ask),
                    |inputs, first| batch::assemble(&header, inputs, first, max),
                )
            })
            .await;
        match r {
            Ok(seqs) if !seqs.is_empty() => {
                metrics.built.add(seqs.len() as u64);
                tracing::debug!(
                    first = seqs[0],
                    batches = seqs.len(),
                    urgent = !full,
                    "uplink batches built"
                );
                built.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "uplink: cannot build a batch; retried"),
        }
        if full {
            last_full = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The builder's store connections: the outbox, and the windows and logbook the KPIs are
/// computed from.
pub type BuilderStore = (Outbox, Windows, Logbook);

/// The KPI sets `ask` is for: each hour from its mark that ends by `until_ns` (at most a
/// week's worth per build), each followed by its local day when it is the day's last hour,
/// then the revised hours and their ended days. Returns them and the new mark.
pub fn kpi_sets(
    engine: &Engine,
    windows: &Windows,
    book: &Logbook,
    ask: &KpiAsk,
) -> crate::store::Result<(Vec<BatchKpi>, i64)> {
    let (due, mark) = crate::sinks::kpi::due(engine, ask.mark_ns, ask.until_ns, 0, 24 * 7);
    let revised = crate::sinks::kpi::revised(engine, &ask.revised_hours, ask.mark_ns);
    let periods: Vec<(Period, i64, bool)> = due
        .into_iter()
        .map(|(p, s)| (p, s, false))
        .chain(revised.into_iter().map(|(p, s)| (p, s, true)))
        .collect();
    let Some(from) = periods.iter().map(|p| p.1).min() else {
        return Ok((Vec::new(), mark));
    };
    let to = periods
        .iter()
        .map(|(p, s, _)| engine.period_end(*p, *s))
        .max()
        .unwrap_or(from);
    let entries = book
        .list(from, to, false)
        .map_err(|e| crate::store::Error::Logbook(e.to_string()))?;
    let mut out = Vec::with_capacity(periods.len());
    for (period, start, revised) in periods {
        let feed = kpi::feed_of(&entries, start, engine.period_end(period, start));
        out.push(BatchKpi {
            set: engine.period(windows, period, start, &feed)?,
            revised,
        });
    }
    Ok((out, mark))
}

/// Refreshes the backlog in the metrics and the status.
pub async fn refresh(
    outbox: &Handle<Outbox>,
    metrics: &Metrics,
    status: &SharedStatus,
    now_ns: i64,
) {
    if let Ok(b) = outbox.run(|o| o.backlog()).await {
        metrics.backlog.set(b.batches as i64);
        metrics.oldest_age_s.set(
            b.oldest_created_ns
                .map_or(0, |t| ((now_ns - t) / 1_000_000_000).max(0)),
        );
        update(status, |s| {
            s.backlog = b.batches;
            s.backlog_bytes = b.bytes;
            s.oldest_unsent_ns = b.oldest_created_ns;
            s.next_seq = b.next_seq;
            s.rejected = b.rejected;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::kpi::SiteParameters;
    use crate::plant::zone::Zone;

    /// 2026-12-01T00:00:00Z = 03:00 in Nairobi.
    const T0: i64 = 1_796_083_200_000_000_000;
    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn kpi_sets_are_the_completed_hours_their_ended_days_and_the_revised_hours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.db");
        let windows = Windows::open(&path).expect("windows");
        let book = Logbook::open(&path, Duration::from_secs(3600)).expect("logbook");
        let engine = Engine::new(SiteParameters::default(), Zone::default(), None);
        // Next hour to send: 18:00 UTC; the spans are complete until 22:10 UTC; 02:00 and
        // 03:00 UTC were sent and revised.
        let ask = KpiAsk {
            mark_ns: T0 + 18 * HOUR,
            until_ns: T0 + 22 * HOUR + HOUR / 6,
            revised_hours: vec![T0 + 2 * HOUR, T0 + 3 * HOUR],
        };
        let (sets, mark) = kpi_sets(&engine, &windows, &book, &ask).expect("sets");
        assert_eq!(mark, T0 + 22 * HOUR, "the next hour not yet complete");
        let got: Vec<(Period, i64, bool)> = sets
            .iter()
            .map(|k| (k.set.period, (k.set.period_start_ns - T0) / HOUR, k.revised))
            .collect();
        assert_eq!(
            got,
            vec![
                (Period::Hour, 18, false),
                (Period::Hour, 19, false),
                (Period::Hour, 20, false),
                // 21:00 UTC is local midnight: the local day 2026-12-01 (from 21:00 UTC the day
                // before) has ended.
                (Period::Day, -3, false),
                (Period::Hour, 21, false),
                // The revised hours. Their local day had not ended by the old mark: it is the
                // day set above (computed now, revisions included), not sent twice.
                (Period::Hour, 2, true),
                (Period::Hour, 3, true),
            ]
        );
        assert!(sets.iter().all(|k| !k.set.figures.is_empty()));
        // Once that day was sent, a revision of its hours sends it again, revised.
        let ask = KpiAsk {
            mark_ns: T0 + 22 * HOUR,
            until_ns: T0 + 22 * HOUR,
            revised_hours: vec![T0 + 2 * HOUR],
        };
        let (sets, mark) = kpi_sets(&engine, &windows, &book, &ask).expect("sets");
        assert_eq!(mark, T0 + 22 * HOUR);
        let got: Vec<(Period, i64, bool)> = sets
            .iter()
            .map(|k| (k.set.period, (k.set.period_start_ns - T0) / HOUR, k.revised))
            .collect();
        assert_eq!(got, vec![(Period::Hour, 2, true), (Period::Day, -3, true)]);
    }
}
