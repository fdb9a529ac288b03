//! The HTTPS transport: `POST {url}` with the batch as JSON, `Authorization: Bearer {token}`
//! (from `token_file`), `Idempotency-Key: {site}/{gateway}/{seq}` (also in the body).
//!
//! - 2xx confirms: the batch leaves the outbox. The response body may carry commands for the
//!   meters (`{"commands": ["<compact JWS>", …]}`), handed to the command relay.
//! - 429 and 503 wait for `Retry-After` (seconds or an HTTP date; default the backoff), then
//!   resend the same batch.
//! - 401, 403 (the token: a person fixes it), 408, other 5xx, timeouts and broken
//!   connections back off (doubling from
//!   `min_backoff_ms` to `max_backoff_ms`, with ±25 % jitter) and resend.
//! - Any other 4xx means the platform will never take this body: it is kept aside
//!   (`outbox_rejected`), counted and logged, and the queue goes on.
//!
//! Certificates are verified (rustls; the web roots, or only `ca_file` when given).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use super::{update, Config, Metrics, SharedStatus};
use crate::clock::Clock;
use crate::store::outbox::{Outbox, Pending};
use crate::store::Handle;

/// Receives the commands a response carried (compact JWS strings).
pub type Commands = Arc<dyn Fn(Vec<String>) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("uplink.url {0:?}: {1}")]
    Url(String, String),
    #[error("uplink.token_file {0}: {1}")]
    Token(String, std::io::Error),
    #[error("uplink.ca_file {0}: {1}")]
    Ca(String, String),
    #[error("uplink: cannot build the HTTP client: {0}")]
    Client(String),
}

pub struct Sender {
    client: reqwest::Client,
    url: reqwest::Url,
    auth: Option<reqwest::header::HeaderValue>,
    site: String,
    gateway: String,
    cfg: Config,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Confirmed(Vec<String>),
    /// Wait this long (Retry-After, or the backoff when None), then resend.
    Retry(Option<Duration>, String),
    Rejected(String),
}

impl Sender {
    pub fn new(cfg: &Config, site: &str) -> Result<Sender, Error> {
        let url = reqwest::Url::parse(&cfg.url)
            .map_err(|e| Error::Url(cfg.url.clone(), e.to_string()))?;
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(10_000)));
        if let Some(p) = &cfg.ca_file {
            let pem =
                std::fs::read(p).map_err(|e| Error::Ca(p.display().to_string(), e.to_string()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| Error::Ca(p.display().to_string(), e.to_string()))?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        let client = b.build().map_err(|e| Error::Client(e.to_string()))?;
        let auth = match &cfg.token_file {
            Some(p) => {
                let token = crate::config::read_secret(p)
                    .map_err(|e| Error::Token(p.display().to_string(), e))?;
                let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| {
                        Error::Token(
                            p.display().to_string(),
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                "the token has characters an HTTP header cannot carry",
                            ),
                        )
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Sender {
            client,
            url,
            auth,
            site: site.to_owned(),
            gateway: cfg.gateway.clone(),
            cfg: cfg.clone(),
        })
    }

    /// One attempt at one batch.
    pub async fn post(&self, p: &Pending) -> Outcome {
        let key = super::batch::idempotency_key(&self.site, &self.gateway, p.seq);
        let mut req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(p.body.clone());
        if let Some(a) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, a.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "request failed".to_owned()
                };
                return Outcome::Retry(None, format!("{what}: {}", error_chain(&e)));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) if (200..300).contains(&status) => {
                // The platform said 2xx: it has the batch, even if its body was cut.
                tracing::warn!(error = %e, "uplink: confirmed, but the response body could not be read");
                String::new()
            }
            Err(e) => return Outcome::Retry(None, format!("http {status}, body cut: {e}")),
        };
        classify(status, retry_after.as_deref(), &text)
    }

    pub fn backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.cfg.min_backoff_ms),
            Duration::from_millis(self.cfg.max_backoff_ms),
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Parses `Retry-After`: seconds, or an HTTP date (then the time until it, from `now`).
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(s) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(s.min(3600)));
    }
    let t = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let secs = (t.timestamp() - crate::clock::wall_ns() / 1_000_000_000).clamp(0, 3600);
    Some(Duration::from_secs(secs as u64))
}

/// What an answer means (see the module doc).
pub fn classify(status: u16, retry: Option<&str>, body: &str) -> Outcome {
    match status {
        200..=299 => {
            let commands = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("commands").cloned())
                .and_then(|c| c.as_array().cloned())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Outcome::Confirmed(commands)
        }
        429 | 503 => Outcome::Retry(
            retry.and_then(retry_after),
            format!("http {status}: {}", snippet(body)),
        ),
        // A wrong or expired token is fixed by a person; the batches wait for it.
        401 | 403 | 408 | 500..=599 => {
            Outcome::Retry(None, format!("http {status}: {}", snippet(body)))
        }
        _ => Outcome::Rejected(format!("http {status}: {}", snippet(body))),
    }
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[allow(clippy::too_many_arguments)] // the task's parts, as topology.rs hands them over
/// Sends the outbox, oldest first, one batch at a time, at most `max_batches_per_s`; waits
/// for `built` (or 5 s) when it is empty.
pub async fn run(
    sender: Sender,
    outbox: Handle<Outbox>,
    commands: Option<Commands>,
    metrics: Arc<Metrics>,
    status: SharedStatus,
    clock: Arc<Clock>,
    built: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let (min_backoff, max_backoff) = sender.backoff();
    let mut backoff = min_backoff;
    let gap = Duration::from_secs_f64(1.0 / sender.cfg.max_batches_per_s);
    let mut next_send = tokio::time::Instant::now();
    loop {
        super::refresh(&outbox, &metrics, &status, clock.now().ts_ns).await;
        let next = match outbox.run(|o| o.oldest(1)).await {
            Ok(mut v) => v.pop(),
            Err(e) => {
                tracing::error!(error = %e, "uplink: cannot read the outbox");
                None
            }
        };
        let Some(batch) = next else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = built.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next_send) => {}
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            o = sender.post(&batch) => o,
        };
        next_send = tokio::time::Instant::now() + gap;
        let now = clock.now().ts_ns;
        match outcome {
            Outcome::Confirmed(cmds) => {
                let seq = batch.seq;
                if let Err(e) = outbox.run(move |o| o.confirm(seq)).await {
                    // It stays and is sent again: the platform de-duplicates by its key.
                    tracing::error!(error = %e, seq, "uplink: confirmed but cannot remove it from the outbox");
                }
                metrics.sent.inc();
                metrics.bytes_sent.add(batch.body.len() as u64);
                metrics.last_success_s.set(now / 1_000_000_000);
                update(&status, |s| s.last_success_ns = Some(now));
                backoff = min_backoff;
                if !cmds.is_empty() {
                    match &commands {
                        Some(c) => c(cmds),
                        None => tracing::warn!(
                            commands = cmds.len(),
                            "uplink: the platform sent commands, but no command relay is configured; refused"
                        ),
                    }
                }
            }
            Outcome::Retry(wait, why) => {
                metrics.errors.inc();
                if wait.is_some() {
                    metrics.throttled.inc();
                }
                let seq = batch.seq;
                let w = why.clone();
                let _ = outbox.run(move |o| o.attempted(seq, &w)).await;
                let delay = wait.unwrap_or_else(|| {
                    let jitter = rand::thread_rng().gen_range(0.75..1.25);
                    let d = backoff.mul_f64(jitter);
                    backoff = (backoff * 2).min(max_backoff);
                    d
                });
                tracing::warn!(seq, error = %why, retry_in_ms = delay.as_millis() as u64, "uplink: batch not confirmed; retrying");
                update(&status, |s| {
                    s.last_error = Some(why);
                    s.last_error_ns = Some(now);
                });
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Outcome::Rejected(why) => {
                metrics.rejected.inc();
                tracing::error!(seq = batch.seq, error = %why, "uplink: the platform refused a batch as invalid; kept in outbox_rejected, not resent");
                let (seq, w) = (batch.seq, why.clone());
                let _ = outbox.run(move |o| o.reject(seq, &w, now)).await;
                update(&status, |s| {
                    s.last_error = Some(why);
                    s.last_error_ns = Some(now);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200, None, ""), Outcome::Confirmed(vec![]));
        assert_eq!(
            classify(202, None, r#"{"commands":["a.b.c", 7]}"#),
            Outcome::Confirmed(vec!["a.b.c".into()])
        );
        assert_eq!(
            classify(429, Some("7"), "slow down"),
            Outcome::Retry(Some(Duration::from_secs(7)), "http 429: slow down".into())
        );
        assert_eq!(
            classify(503, None, ""),
            Outcome::Retry(None, "http 503: ".into())
        );
        assert_eq!(
            classify(500, None, "boom"),
            Outcome::Retry(None, "http 500: boom".into())
        );
        assert_eq!(
            classify(408, None, ""),
            Outcome::Retry(None, "http 408: ".into())
        );
        assert_eq!(
            classify(422, None, "bad field"),
            Outcome::Rejected("http 422: bad field".into())
        );
        assert_eq!(retry_after("  12 "), Some(Duration::from_secs(12)));
        assert_eq!(retry_after("999999"), Some(Duration::from_secs(3600)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
