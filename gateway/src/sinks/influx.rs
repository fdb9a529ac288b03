//! The InfluxDB writer: store → line protocol → HTTP, for InfluxDB 1.x (`/write`), 2.x and
//! VictoriaMetrics (`/api/v2/write`) and 3.x (the v2-compatible path).
//!
//! Delivery rules:
//! - The cursor advances only after a 2xx, so an outage or a crash re-sends; a re-sent point
//!   has the same measurement, tags and timestamp and overwrites itself: no duplicates.
//! - 400/413/422 (the server rejects the data) splits the chunk in halves, in order, down to
//!   single lines; a single rejected line goes to the store's quarantine table with the server's
//!   message and is counted. One bad point never blocks the queue.
//! - Anything else (connection refused, timeout, 5xx, 429, 401, 404) is retried with
//!   exponential backoff, capped, honouring `Retry-After`.
//!
//! Why not the `influxdb2` crate: see ARCHITECTURE.md (reqwest 0.11 with advisories, gzip flag
//! ignored, path prefix dropped, no timeout, no 1.x).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{read_secret, Influx, INFLUX_PASSWORD, INFLUX_TOKEN};
use crate::logbook::Entry;
use crate::metrics::{Counter, Registry};
use crate::store::logbook::Logbook;
use crate::store::{Handle, Reader};

pub const CONSUMER: &str = "influx";
/// The name the logbook consumer's quarantined lines are kept under; its cursor is
/// `store::logbook::cursor_name(CONSUMER)` (`influx.logbook`).
pub const LOGBOOK_QUARANTINE: &str = "influx.logbook";
/// The consumer name quarantined alarm lines are kept under (their id is the event's `seq`).
pub const ALARMS_QUARANTINE: &str = "influx.alarms";

/// What the InfluxDB writer counts. Registered whether or not InfluxDB is enabled, so the
/// dashboards see zeros rather than nothing.
pub struct Metrics {
    pub points_written: Arc<Counter>,
    pub requests: Arc<Counter>,
    pub write_errors: Arc<Counter>,
    pub quarantined: Arc<Counter>,
}

impl Metrics {
    /// Registers the InfluxDB writer's metrics with `r`.
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            points_written: r.counter(
                "gkgw_influx_points_written_total",
                "Points InfluxDB accepted.",
            ),
            requests: r.counter(
                "gkgw_influx_requests_total",
                "Write requests sent to InfluxDB.",
            ),
            write_errors: r.counter(
                "gkgw_influx_write_errors_total",
                "Failed InfluxDB write requests (retried).",
            ),
            quarantined: r.counter(
                "gkgw_influx_quarantined_total",
                "Lines InfluxDB rejected as malformed, kept in quarantine.",
            ),
        }
    }
}

/// Metrics that nobody renders (tests, tools).
impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::register(&mut Registry::default())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Secret(String, std::io::Error),
    /// A secret file that cannot be read: which setting, what the file is for, its path.
    #[error("{key}: cannot read {what} {path}: {cause}")]
    SecretFile {
        key: &'static str,
        what: &'static str,
        path: String,
        cause: std::io::Error,
    },
    #[error("influx url: {0}")]
    Url(String),
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What one request's outcome means for the chunk it carried.
#[derive(Debug, PartialEq)]
enum Outcome {
    Written,
    /// The server refuses this data; retrying it unchanged cannot help.
    Rejected(String),
    /// Try again later; `Some` when the server said when.
    Retry(Option<Duration>, String),
}

fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
    let body = body.trim().chars().take(500).collect::<String>();
    match status {
        200..=299 => Outcome::Written,
        400 | 413 | 422 => Outcome::Rejected(body),
        _ => Outcome::Retry(
            retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            format!("http {status}: {body}"),
        ),
    }
}

pub struct Writer {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Marked sensitive, so HTTP libraries leave it out of their debug and trace output.
    auth: Option<reqwest::header::HeaderValue>,
    gzip: bool,
    cfg: Influx,
    site: String,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// The `site` tag of every point.
    pub fn site(&self) -> &str {
        &self.site
    }
}

impl Writer {
    pub fn new(cfg: &Influx, site: &str, metrics: Arc<Metrics>) -> Result<Writer, Error> {
        let base = cfg.url.trim_end_matches('/');
        let mut url = reqwest::Url::parse(&format!(
            "{base}{}",
            if cfg.version == crate::config::InfluxVersion::V1 {
                "/write"
            } else {
                "/api/v2/write"
            }
        ))
        .map_err(|e| Error::Url(e.to_string()))?;
        let auth = {
            let mut q = url.query_pairs_mut();
            q.append_pair("precision", "ns");
            if cfg.version == crate::config::InfluxVersion::V1 {
                q.append_pair("db", &cfg.database);
                if !cfg.retention_policy.is_empty() {
                    q.append_pair("rp", &cfg.retention_policy);
                }
                match &cfg.password_file {
                    Some(p) if !cfg.username.is_empty() => {
                        let pw = read_secret(p).map_err(|cause| Error::SecretFile {
                            key: "influx.password_file",
                            what: INFLUX_PASSWORD,
                            path: p.display().to_string(),
                            cause,
                        })?;
                        use base64::Engine as _;
                        Some(format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD
                                .encode(format!("{}:{pw}", cfg.username))
                        ))
                    }
                    _ => None,
                }
            } else {
                if !cfg.org.is_empty() {
                    q.append_pair("org", &cfg.org);
                }
                q.append_pair("bucket", &cfg.bucket);
                match &cfg.token_file {
                    Some(p) => Some(format!(
                        "Token {}",
                        read_secret(p).map_err(|cause| Error::SecretFile {
                            key: "influx.token_file",
                            what: INFLUX_TOKEN,
                            path: p.display().to_string(),
                            cause,
                        })?
                    )),
                    None => None,
                }
            }
        };
        let auth = match auth {
            None => None,
            Some(a) => {
                let mut v = reqwest::header::HeaderValue::from_str(&a).map_err(|_| {
                    Error::Secret(
                        "the InfluxDB credentials".into(),
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "contain characters an HTTP header cannot carry",
                        ),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(5000)))
            .build()?;
        Ok(Writer {
            client,
            url,
            auth,
            gzip: cfg.gzip,
            cfg: cfg.clone(),
            site: site.to_owned(),
            metrics,
        })
    }

    async fn post(&self, lines: &[(i64, String)]) -> Outcome {
        let mut body: Vec<u8> = Vec::with_capacity(lines.iter().map(|(_, l)| l.len()).sum());
        for (_, l) in lines {
            body.extend_from_slice(l.as_bytes());
        }
        let mut req = self
            .client
            .post(self.url.clone())
            .header("content-type", "text/plain; charset=utf-8");
        if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            if enc.write_all(&body).is_ok() {
                if let Ok(z) = enc.finish() {
                    body = z;
                    req = req.header("content-encoding", "gzip");
                }
            }
        }
        if let Some(a) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, a.clone());
        }
        self.metrics.requests.inc();
        match req.body(body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = resp.text().await.unwrap_or_default();
                classify(status, retry_after.as_deref(), &text)
            }
            Err(e) => Outcome::Retry(
                None,
                if e.is_timeout() {
                    "timeout".into()
                } else {
                    e.to_string()
                },
            ),
        }
    }

    /// Delivers `lines` (reading id, line) in order; rejected single lines are quarantined
    /// under their id (0 for lines that are no reading, the KPI points). Returns false if
    /// cancelled before everything was delivered (the cursor must then stay where it was).
    pub(crate) async fn deliver(
        &self,
        reader: &Handle<Reader>,
        lines: &[(i64, String)],
        cancel: &CancellationToken,
        consumer: &'static str,
    ) -> bool {
        let mut pending: Vec<&[(i64, String)]> = vec![lines];
        let mut backoff = Duration::from_millis(self.cfg.min_backoff_ms);
        while let Some(chunk) = pending.pop() {
            loop {
                if cancel.is_cancelled() {
                    return false;
                }
                match self.post(chunk).await {
                    Outcome::Written => {
                        self.metrics.points_written.add(chunk.len() as u64);
                        backoff = Duration::from_millis(self.cfg.min_backoff_ms);
                        break;
                    }
                    Outcome::Rejected(msg) if chunk.len() == 1 => {
                        let (id, line) = &chunk[0];
                        tracing::warn!(reading = id, error = %msg, line = line.trim_end(), "influx rejected a line: quarantined");
                        let (id, line, why) = (*id, line.trim_end().to_owned(), msg.clone());
                        let quarantined = reader
                            .run(move |r| r.quarantine(consumer, id, &line, &why))
                            .await;
                        if let Err(e) = quarantined {
                            tracing::error!(error = %e, "cannot quarantine; will retry");
                            self.metrics.write_errors.inc();
                            if !sleep_or_cancel(backoff, cancel).await {
                                return false;
                            }
                            continue;
                        }
                        self.metrics.quarantined.inc();
                        break;
                    }
                    Outcome::Rejected(msg) => {
                        tracing::debug!(lines = chunk.len(), error = %msg, "influx rejected a batch: splitting");
                        let (a, b) = chunk.split_at(chunk.len() / 2);
                        pending.push(b);
                        pending.push(a);
                        break;
                    }
                    Outcome::Retry(after, msg) => {
                        self.metrics.write_errors.inc();
                        let wait = after
                            .unwrap_or(backoff)
                            .min(Duration::from_millis(self.cfg.max_backoff_ms));
                        tracing::warn!(error = %msg, retry_in_ms = wait.as_millis() as u64, "influx write failed");
                        if !sleep_or_cancel(wait, cancel).await {
                            return false;
                        }
                        backoff = (backoff * 2).min(Duration::from_millis(self.cfg.max_backoff_ms));
                    }
                }
            }
        }
        true
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// The consumer loop: waits for commits, batches by size and age, delivers, advances the cursor.
pub async fn run(
    writer: Writer,
    reader: Handle<Reader>,
    mut committed: watch::Receiver<i64>,
    cancel: CancellationToken,
) {
    let mut cursor = reader.run(|r| r.cursor(CONSUMER)).await.unwrap_or(0);
    let flush = Duration::from_millis(writer.cfg.flush_interval_ms);
    let batch = writer.cfg.batch_size;
    let mut pending_since: Option<Instant> = None;
    let mut text = String::new();
    loop {
        let last = *committed.borrow_and_update();
        if last <= cursor {
            pending_since = None;
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = committed.changed() => if r.is_err() { break },
            }
            continue;
        }
        let since = *pending_since.get_or_insert_with(Instant::now);
        if ((last - cursor) as usize) < batch && since.elapsed() < flush {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(flush - since.elapsed()) => {}
                _ = async { while committed.changed().await.is_ok() { if (*committed.borrow() - cursor) as usize >= batch { break } } } => {}
            }
            continue;
        }
        let rows = match reader.run(move |r| r.read_after(cursor, batch)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "influx writer cannot read the store");
                if !sleep_or_cancel(Duration::from_secs(5), &cancel).await {
                    break;
                }
                continue;
            }
        };
        let Some(last_id) = rows.last().map(|s| s.id) else {
            // Everything up to `last` was evicted or pruned before we got to it.
            cursor = last;
            continue;
        };
        let mut lines = Vec::with_capacity(rows.len());
        for s in &rows {
            text.clear();
            if crate::line_protocol::encode(&mut text, &writer.site, &s.reading) {
                lines.push((s.id, text.clone()));
            }
        }
        if !writer.deliver(&reader, &lines, &cancel, CONSUMER).await {
            break;
        }
        cursor = last_id;
        if let Err(e) = reader.run(move |r| r.set_cursor(CONSUMER, cursor)).await {
            tracing::error!(error = %e, "cannot persist the influx cursor; data will be re-sent");
        }
        pending_since = None;
    }
    tracing::info!(cursor, "influx writer stopped");
}

/// The lines for one logbook revision: its own, and when it moved the entry to another time or
/// kind of waste, the previous revision's point marked withdrawn (InfluxDB keys a point by
/// series and time, so the old one would otherwise stay and be counted twice).
fn logbook_lines(site: &str, e: &Entry, previous: Option<&Entry>, out: &mut Vec<(i64, String)>) {
    let mut text = String::new();
    if let Some(p) = previous {
        if (p.at_ns, p.values.fields().waste) != (e.at_ns, e.values.fields().waste) {
            let gone = Entry {
                revision: e.revision,
                withdrawn: true,
                reason: Some(format!("moved by revision {}", e.revision)),
                ..p.clone()
            };
            crate::line_protocol::encode_entry(&mut text, site, &gone);
            out.push((e.id, std::mem::take(&mut text)));
        }
    }
    crate::line_protocol::encode_entry(&mut text, site, e);
    out.push((e.id, text));
}

/// The logbook consumer: the same delivery rules as the readings' (cursor advanced only after a
/// 2xx, rejected lines quarantined), over the logbook's row ids with its own cursor. Woken by
/// `changed` (the web server sends the row id of each revision it writes) and every 30 s.
pub async fn run_logbook(
    writer: Writer,
    reader: Handle<Reader>,
    book: Handle<Logbook>,
    mut changed: watch::Receiver<i64>,
    cancel: CancellationToken,
) {
    let mut cursor = book.run(|b| b.cursor(CONSUMER)).await.unwrap_or(0);
    let batch = writer.cfg.batch_size;
    loop {
        changed.borrow_and_update();
        let read = book
            .run(
                move |b| -> crate::store::logbook::Result<Vec<(Entry, Option<Entry>)>> {
                    let mut out = Vec::new();
                    for e in b.after(cursor, batch)? {
                        let previous = match e.revision {
                            1 => None,
                            n => b.revision(e.entry, n - 1)?,
                        };
                        out.push((e, previous));
                    }
                    Ok(out)
                },
            )
            .await;
        let rows = match read {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "influx writer cannot read the logbook");
                if !sleep_or_cancel(Duration::from_secs(5), &cancel).await {
                    break;
                }
                continue;
            }
        };
        let Some(last_id) = rows.last().map(|(e, _)| e.id) else {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            continue;
        };
        let mut lines = Vec::with_capacity(rows.len());
        for (e, previous) in &rows {
            logbook_lines(&writer.site, e, previous.as_ref(), &mut lines);
        }
        if !writer
            .deliver(&reader, &lines, &cancel, LOGBOOK_QUARANTINE)
            .await
        {
            break;
        }
        cursor = last_id;
        if let Err(e) = book.run(move |b| b.set_cursor(CONSUMER, cursor)).await {
            tracing::error!(error = %e, "cannot persist the influx logbook cursor; entries will be re-sent");
        }
    }
    tracing::info!(cursor, "influx logbook writer stopped");
}

/// The alarm events' consumer: the same delivery rules as the readings', over the events'
/// sequence numbers, its position in the store's meta (`influx_alarms_seq`). Woken every 2 s
/// (alarms are few; the store keeps them, so nothing is lost while InfluxDB is away).
pub async fn run_alarms(
    writer: Writer,
    reader: Handle<Reader>,
    alarms: Handle<crate::store::alarms::Alarms>,
    cancel: CancellationToken,
) {
    let mut cursor = alarms.run(|a| a.cursor()).await.unwrap_or(0);
    let batch = writer.cfg.batch_size;
    loop {
        let read = alarms.run(move |a| a.after(cursor, batch)).await;
        let events = match read {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "influx writer cannot read the alarm events");
                if !sleep_or_cancel(Duration::from_secs(5), &cancel).await {
                    break;
                }
                continue;
            }
        };
        let Some(last) = events.last().map(|e| e.seq) else {
            if !sleep_or_cancel(Duration::from_secs(2), &cancel).await {
                break;
            }
            continue;
        };
        let lines: Vec<(i64, String)> = events
            .iter()
            .map(|e| {
                let mut text = String::new();
                crate::line_protocol::encode_alarm(&mut text, &writer.site, e);
                (e.seq as i64, text)
            })
            .collect();
        if !writer
            .deliver(&reader, &lines, &cancel, ALARMS_QUARANTINE)
            .await
        {
            break;
        }
        cursor = last;
        if let Err(e) = alarms.run(move |a| a.set_cursor(cursor)).await {
            tracing::error!(error = %e, "cannot persist the influx alarms cursor; events will be re-sent");
        }
    }
    tracing::info!(cursor, "influx alarm writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, retry_after: Option<&str>, expected: Outcome) {
        assert_eq!(classify(status, retry_after, "body"), expected);
    }

    #[test]
    fn responses_are_classified() {
        check(204, None, Outcome::Written);
        check(400, None, Outcome::Rejected("body".into()));
        check(413, None, Outcome::Rejected("body".into()));
        check(
            503,
            Some("7"),
            Outcome::Retry(Some(Duration::from_secs(7)), "http 503: body".into()),
        );
        check(
            429,
            Some("soon"),
            Outcome::Retry(None, "http 429: body".into()),
        );
        check(401, None, Outcome::Retry(None, "http 401: body".into()));
        check(404, None, Outcome::Retry(None, "http 404: body".into()));
    }

    #[test]
    fn a_revision_that_moves_an_entry_withdraws_the_old_point() {
        use crate::logbook::Values;
        use crate::plant::kpi::Waste;
        let first = Entry {
            id: 1,
            entry: 1,
            revision: 1,
            values: Values::WasteFed {
                waste: Waste::Market,
                kg: 10.0,
            },
            at_ns: 100,
            by: "a".into(),
            recorded_ns: 0,
            first_recorded_ns: 0,
            note: None,
            withdrawn: false,
            reason: None,
        };
        let lines = |e: &Entry, p: Option<&Entry>| {
            let mut out = Vec::new();
            logbook_lines("s", e, p, &mut out);
            out
        };
        let kg_only = Entry {
            id: 2,
            revision: 2,
            values: Values::WasteFed {
                waste: Waste::Market,
                kg: 12.0,
            },
            ..first.clone()
        };
        assert_eq!(
            lines(&kg_only, Some(&first)),
            vec![(2, "logbook,kind=waste_fed,site=s,waste=market by=\"a\",entry=1i,kg=12,revision=2i,withdrawn=false 100\n".to_owned())]
        );
        let moved = Entry {
            at_ns: 200,
            ..kg_only
        };
        assert_eq!(
            lines(&moved, Some(&first)),
            vec![
                (2, "logbook,kind=waste_fed,site=s,waste=market by=\"a\",entry=1i,kg=10,reason=\"moved by revision 2\",revision=2i,withdrawn=true 100\n".to_owned()),
                (2, "logbook,kind=waste_fed,site=s,waste=market by=\"a\",entry=1i,kg=12,revision=2i,withdrawn=false 200\n".to_owned()),
            ]
        );
    }
}
