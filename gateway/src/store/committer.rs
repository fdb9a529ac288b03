//! The commit loop: collects readings from the bounded channel into batches and commits each
//! batch in one transaction on the blocking pool (through the writer's [`Handle`]). Only after
//! a commit are consumers woken (`committed` watch), the MQTT messages confirmed (their
//! receipts: the broker's PUBACK) and meters acknowledged (`acks` channel).
//!
//! A batch closes when it reaches `max_batch` or when its first reading has waited
//! `commit_interval`. While a batch is being committed the channel keeps filling; when it is full
//! the sources wait. A failed commit (disk error) is retried with the same batch: nothing is
//! dropped, and `/healthz` reports the store unhealthy meanwhile.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::{Handle, Writer};
use crate::metrics::{Collector, Counter, Encoder, Kind, Registry, Seconds};
use crate::model::{AckRequest, Reading};

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
    pub max_batch: usize,
    pub quota_bytes: u64,
    /// Consumers whose cursors hold readings back from pruning.
    pub consumers: Vec<&'static str>,
}

/// Health the commit loop reports: whether the last attempt failed. Registered as a collector,
/// it is `gkgw_up`.
#[derive(Default)]
pub struct Health {
    pub failing: AtomicBool,
}

impl Health {
    /// Whether the store commits: what `/healthz` (the systemd watchdog) and `gkgw_up` report.
    pub fn healthy(&self) -> bool {
        !self.failing.load(Relaxed)
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
    let mut open = true;
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
        let housekeeping = last_housekeeping.elapsed() >= Duration::from_secs(5) || !open;
        let quota = settings.quota_bytes;
        let mut retry = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let consumers = settings.consumers.clone();
            let (b, result) = writer
                .run(move |writer| {
                    let r = writer.append(&batch).and_then(|last| {
                        if housekeeping {
                            writer.prune_delivered(&consumers, last)?;
                            let evicted = writer.enforce_quota(quota)?;
                            if evicted > 0 {
                                tracing::warn!(
                                    evicted,
                                    "store quota reached: oldest readings evicted"
                                );
                            }
                        }
                        Ok(last)
                    });
                    (batch, r)
                })
                .await;
            batch = b;
            match result {
                Ok(last) => {
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
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    tracing::info!("store committer stopped: every received reading is committed");
}
