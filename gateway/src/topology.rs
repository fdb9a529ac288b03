//! The one place that creates channels and spawns tasks. The same diagram is in ARCHITECTURE.md.
//!
//! ```text
//!  meters ──MQTT──▶ rumqttd ──local link (1 MiB × 4 segments per filter; a reader further
//!                     ▲        behind skips: the ingest task must keep up)──▶ mqtt ingest
//!                     │                                                        │
//!                     │ meters/{id}/ack (QoS 0)                                 │ readings: mpsc, store.channel_capacity
//!                     │                                                        │ (full → ingest waits)
//!                ack publisher ◀── acks: mpsc 1024 (full → acks dropped,      ▼    also → live: broadcast 1024 (lagging receivers skip)
//!                (own thread)       counted; the meter resends)   ◀── store committer (batch ≤ max_batch or commit_interval)
//!                                                                             │ commit = fsync (SQLite WAL)
//!                                                                             ▼
//!                                                               store.db ── committed: watch<last id>
//!                                                                             │
//!                                                                   influx writer (own cursor) ──HTTP──▶ InfluxDB
//! ```
//! Shutdown: cancel `sources` → ingest stops and drops its sender → the committer drains the
//! channel, commits, and ends → cancel `sinks` (they stop mid-batch; their cursor stays) → web.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{AckRequest, Reading};
use crate::sources::mqtt;
use crate::store::{self, committer};
use crate::{broker, credentials, sinks, web};

/// A started gateway: its bound addresses, and the handles needed to stop it in order.
pub struct Gateway {
    pub mqtt_addrs: Vec<SocketAddr>,
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub health: Arc<committer::Health>,
    pub live: broadcast::Sender<Arc<Reading>>,
    sources_cancel: CancellationToken,
    sinks_cancel: CancellationToken,
    sources: TaskTracker,
    committer: tokio::task::JoinHandle<()>,
    sinks: TaskTracker,
}

/// Starts everything; returns once the broker and the web server are listening.
pub async fn start(config: Config) -> anyhow::Result<Gateway> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(committer::Health::default());
    std::fs::create_dir_all(&config.store.state_dir).with_context(|| {
        format!(
            "cannot create state directory {}",
            config.store.state_dir.display()
        )
    })?;
    let db = store::db_path(&config.store.state_dir);

    let mut consumers: Vec<&'static str> = Vec::new();
    if config.influx.enabled {
        consumers.push(sinks::influx::CONSUMER);
    }
    let mut writer = store::Writer::open(&db)
        .with_context(|| format!("cannot open the store {}", db.display()))?;
    writer.register_consumers(&consumers)?;

    // Broker and its auth.
    let verifier = credentials::Verifier::new(
        credentials::load_file(&config.broker.credentials_file)
            .context("cannot load meter credentials")?,
    );
    if !config.broker.allow_anonymous && verifier.is_empty() {
        tracing::warn!(file = %config.broker.credentials_file.display(), "no meter credentials: no meter can connect (add one with `gkgw meter add ID`)");
    }
    let rules = mqtt::Rules {
        max_payload_bytes: config.mqtt.max_payload_bytes,
        topics: config.mqtt.topics.clone(),
    };
    let rumqttd_config = broker::load_config(&config.broker.config_file)?;
    let (link, mut publisher, mqtt_addrs) = broker::start(
        rumqttd_config,
        broker::Options {
            listen: config.broker.listen,
            allow_anonymous: config.broker.allow_anonymous,
            verifier,
        },
        &mqtt::filters(&rules),
        metrics.clone(),
    )?;

    // Channels: every edge of the diagram above.
    let (readings_tx, readings_rx) = mpsc::channel::<Reading>(config.store.channel_capacity);
    let (acks_tx, mut acks_rx) = mpsc::channel::<Vec<AckRequest>>(1024);
    let (committed_tx, committed_rx) = watch::channel(0i64);
    let (live, _) = broadcast::channel::<Arc<Reading>>(1024);

    let sources_cancel = CancellationToken::new();
    let sinks_cancel = CancellationToken::new();
    let sources = TaskTracker::new();
    let sinks = TaskTracker::new();

    let modbus_stats = crate::sources::modbus::Stats::default();
    for bus in &config.modbus.buses {
        let mut devices = Vec::new();
        for d in config.modbus.devices.iter().filter(|d| d.bus == bus.name) {
            let profile =
                crate::sources::modbus::load_profile(&config.modbus.profiles_dir, &d.profile)?;
            devices.push((d.clone(), profile));
        }
        sources.spawn(crate::sources::modbus::run_bus(
            bus.clone(),
            devices,
            readings_tx.clone(),
            modbus_stats.clone(),
            sources_cancel.clone(),
        ));
    }
    sources.spawn(mqtt::run(
        link,
        rules,
        readings_tx,
        live.clone(),
        metrics.clone(),
        sources_cancel.clone(),
    ));

    let committer = tokio::spawn(committer::run(
        writer,
        committer::Settings {
            commit_interval: Duration::from_millis(config.store.commit_interval_ms),
            max_batch: config.store.max_batch,
            quota_bytes: config.store.quota_mib * 1024 * 1024,
            consumers: consumers.clone(),
        },
        readings_rx,
        committed_tx,
        acks_tx,
        metrics.clone(),
        health.clone(),
    ));

    // rumqttd's LinkTx::publish blocks when the router's channel is full, so acks are published
    // from a thread of their own rather than from a tokio worker.
    {
        let metrics = metrics.clone();
        std::thread::Builder::new()
            .name("ack-publisher".into())
            .spawn(move || {
                while let Some(acks) = acks_rx.blocking_recv() {
                    for a in acks {
                        if publisher.publish(
                            format!("meters/{}/ack", a.meter_id),
                            format!("{{\"seq\":{}}}", a.seq),
                        ) {
                            metrics
                                .acks_published
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        } else {
                            metrics
                                .acks_dropped
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            })?;
    }

    if config.influx.enabled {
        let w = sinks::influx::Writer::new(&config.influx, &config.site.id, metrics.clone())?;
        sinks.spawn(sinks::influx::run(
            w,
            db.clone(),
            committed_rx.clone(),
            sinks_cancel.clone(),
        ));
    }

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let state = Arc::new(web::AppState {
        metrics: metrics.clone(),
        health: health.clone(),
        reader: std::sync::Mutex::new(store::Reader::open(&db)?),
        db,
        consumers,
        site: config.site.id.clone(),
        mqtt_addrs: mqtt_addrs.clone(),
        modbus: modbus_stats,
    });
    sinks.spawn(web::serve(listener, state, sinks_cancel.clone()));

    tracing::info!(mqtt = ?mqtt_addrs, http = %http_addr, influx = config.influx.enabled, "gateway started");
    Ok(Gateway {
        mqtt_addrs,
        http_addr,
        metrics,
        health,
        live,
        sources_cancel,
        sinks_cancel,
        sources,
        committer,
        sinks,
    })
}

impl Gateway {
    /// Stops in order: sources, then the committer once it has committed everything it received,
    /// then sinks and the web server. Bounded by `deadline` in total.
    pub async fn stop(self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        self.sources_cancel.cancel();
        self.sources.close();
        if tokio::time::timeout_at(until, self.sources.wait())
            .await
            .is_err()
        {
            tracing::warn!("sources did not stop in time");
        }
        if tokio::time::timeout_at(until, self.committer)
            .await
            .is_err()
        {
            tracing::error!("the store did not finish committing in time");
        }
        self.sinks_cancel.cancel();
        self.sinks.close();
        if tokio::time::timeout_at(until, self.sinks.wait())
            .await
            .is_err()
        {
            tracing::warn!("sinks did not stop in time");
        }
        tracing::info!("gateway stopped");
    }
}

/// Runs the gateway until `shutdown` is cancelled, then stops it cleanly. Feeds the systemd
/// watchdog only while the store is committing.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let gw = start(config).await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    loop {
        let tick = watchdog.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(tick) => {
                if watchdog.is_some() && !gw.health.failing.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    gw.stop(Duration::from_secs(20)).await;
    Ok(())
}
