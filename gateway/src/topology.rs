//! The one place that creates channels and spawns tasks. The same diagram is in ARCHITECTURE.md.
//!
//! ```text
//!  meters ──MQTT 3.1.1──▶ broker: one task per connection (ACL, login gate)
//!    ▲  ▲                   │ publish → mqtt::Ingest::parse, in the connection's task
//!    │  │                   │ readings: mpsc, store.channel_capacity
//!    │  │                   │ (full → that connection's socket is not read: TCP slows the meter)
//!    │  │                   ▼                      also → live: broadcast 1024 (lagging receivers skip)
//!    │  │  Modbus pollers ──┴──▶ store committer (batch ≤ max_batch or commit_interval; commit = fsync)
//!    │  │                              │ receipts: per connection, unbounded but ≤ max_inflight each
//!    │  └─ PUBACK / PUBREC ◀───────────┤ (sent only after the commit)
//!    │                                 │ acks: mpsc 1024 (full → acks dropped, counted; the meter resends)
//!    └─ meters/{id}/ack (QoS 0) ◀─ ack router ◀─┤
//!                                              ▼
//!                               store.db ── committed: watch<last id>
//!                                              │
//!                                    influx writer (own cursor) ──HTTP──▶ InfluxDB
//! ```
//! Shutdown: cancel `sources` (the broker's connections and the Modbus pollers end and drop
//! their senders) → the committer drains the channel, commits, and ends → cancel `sinks` (they
//! stop mid-batch; their cursor stays) → web.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{AckRequest, Reading};
use crate::sources::mqtt;
use crate::store::{self, committer};
use crate::{broker, credentials, sinks, web};

/// Descriptors kept free of MQTT connections for the store, the web server and clients.
const RESERVED_FDS: u64 = 128;

/// A started gateway: its bound addresses, and the handles needed to stop it in order.
pub struct Gateway {
    pub mqtt_addrs: Vec<SocketAddr>,
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub health: Arc<committer::Health>,
    pub live: broadcast::Sender<Arc<Reading>>,
    pub hub: Arc<broker::Hub>,
    _lock: store::lock::StateLock,
    sources_cancel: CancellationToken,
    sinks_cancel: CancellationToken,
    sources: TaskTracker,
    committer: tokio::task::JoinHandle<()>,
    sinks: TaskTracker,
}

/// Starts everything on the system clock; returns once the broker and the web server are
/// listening.
pub async fn start(config: Config) -> anyhow::Result<Gateway> {
    start_with(config, Clock::system()).await
}

/// [`start`] with a given clock (tests inject a `clock::FakeTime`): the one clock every
/// source stamps readings with and the committer corrects steps of.
pub async fn start_with(config: Config, clock: Arc<Clock>) -> anyhow::Result<Gateway> {
    if !clock.now().synced {
        tracing::warn!("the clock is not synchronised (adjtimex): readings stamped now are marked clock_unsynced and re-stamped when it steps");
    }
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(committer::Health::default());
    std::fs::create_dir_all(&config.store.state_dir).with_context(|| {
        format!(
            "cannot create state directory {}",
            config.store.state_dir.display()
        )
    })?;
    let lock = store::lock::lock_state_dir(&config.store.state_dir)?;
    let db = store::db_path(&config.store.state_dir);

    let mut consumers: Vec<&'static str> = Vec::new();
    if config.influx.enabled {
        consumers.push(sinks::influx::CONSUMER);
    }
    let mut writer = store::Writer::open(&db)
        .with_context(|| format!("cannot open the store {}", db.display()))?;
    writer.register_consumers(&consumers)?;

    // Broker accounts and the login gate.
    let creds_file = config.broker.credentials_file.clone();
    let verifier =
        credentials::Verifier::new(credentials::load_file(&creds_file).with_context(|| {
            format!(
                "cannot load the broker accounts (broker.credentials_file = {})",
                creds_file.display()
            )
        })?);
    if verifier.is_empty() {
        tracing::warn!(file = %creds_file.display(), "no meter accounts: no meter can publish (add one with `gkgw meter add ID`)");
    }
    let listener = broker::bind(config.broker.listen).await?;
    let mqtt_addr = listener.local_addr()?;
    let max_connections = broker::connection_limit(config.broker.max_connections, RESERVED_FDS);
    if max_connections < config.broker.max_connections {
        tracing::warn!(
            configured = config.broker.max_connections,
            used = max_connections,
            "broker.max_connections lowered to fit the open-files limit (raise LimitNOFILE)"
        );
    }

    // Channels: every edge of the diagram above.
    let (readings_tx, readings_rx) = mpsc::channel::<Reading>(config.store.channel_capacity);
    let (acks_tx, mut acks_rx) = mpsc::channel::<Vec<AckRequest>>(1024);
    let (committed_tx, committed_rx) = watch::channel(0i64);
    let (live, _) = broadcast::channel::<Arc<Reading>>(1024);

    let sources_cancel = CancellationToken::new();
    let sinks_cancel = CancellationToken::new();
    let sources = TaskTracker::new();
    let sinks = TaskTracker::new();

    let hub = Arc::new(broker::Hub::new(metrics.clone()));
    let commit_now = Arc::new(tokio::sync::Notify::new());
    let rules = mqtt::Rules {
        max_payload_bytes: config.mqtt.max_payload_bytes,
        topics: config.mqtt.topics.clone(),
    };
    let acl = broker::Acl::new(
        config
            .mqtt
            .topics
            .iter()
            .map(|t| broker::PublishRule {
                filter: t.filter.clone(),
                owner: match t.device_level {
                    Some(l) => broker::Owner::Level(l),
                    None => broker::Owner::Accounts(t.publishers.clone()),
                },
            })
            .collect(),
    );
    let gate = Arc::new(broker::auth::Gate::new(
        verifier.clone(),
        config.broker.auth_concurrency,
        config.broker.allow_anonymous,
        metrics.clone(),
    ));
    broker::spawn(
        listener,
        broker::Parts {
            settings: broker::Settings {
                commit_now: commit_now.clone(),
                max_connections,
                max_pending: config.broker.max_pending,
                connect_timeout: Duration::from_millis(config.broker.connect_timeout_ms),
                max_packet_bytes: config.broker.max_packet_bytes,
                max_inflight: config.broker.max_inflight,
            },
            gate: gate.clone(),
            acl,
            hub: hub.clone(),
            inbound: Arc::new(mqtt::Ingest::new(
                rules,
                readings_tx.clone(),
                live.clone(),
                metrics.clone(),
                clock.clone(),
            )),
            metrics: metrics.clone(),
        },
        &sources,
        sources_cancel.clone(),
    );
    sinks.spawn(reload_accounts(
        creds_file,
        gate,
        hub.clone(),
        sinks_cancel.clone(),
    ));

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
            clock.clone(),
            sources_cancel.clone(),
        ));
    }
    drop(readings_tx);

    let committer = tokio::spawn(committer::run(
        writer,
        committer::Settings {
            commit_interval: Duration::from_millis(config.store.commit_interval_ms),
            commit_now,
            max_batch: config.store.max_batch,
            quota_bytes: config.store.quota_mib * 1024 * 1024,
            consumers: consumers.clone(),
            clock: clock.clone(),
        },
        readings_rx,
        committed_tx,
        acks_tx,
        metrics.clone(),
        health.clone(),
    ));

    // Application acks go out through the broker's session table (never blocks: each
    // connection's queue is bounded and a full one drops, counted).
    {
        let hub = hub.clone();
        let metrics = metrics.clone();
        sinks.spawn(async move {
            while let Some(acks) = acks_rx.recv().await {
                for a in acks {
                    hub.publish(
                        &format!("meters/{}/ack", a.meter_id),
                        bytes::Bytes::from(format!("{{\"seq\":{}}}", a.seq)),
                    );
                    metrics
                        .acks_published
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
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
        mqtt_addrs: vec![mqtt_addr],
        modbus: modbus_stats,
        clock,
    });
    sinks.spawn(web::serve(listener, state, sinks_cancel.clone()));

    tracing::info!(mqtt = %mqtt_addr, http = %http_addr, influx = config.influx.enabled, max_connections, "gateway started");
    Ok(Gateway {
        mqtt_addrs: vec![mqtt_addr],
        hub,
        _lock: lock,
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

/// Reloads the broker accounts on SIGHUP and whenever the file's modification time or size
/// changes (checked every 2 s), and disconnects accounts that were removed. A file that does
/// not parse is reported and the accounts in use are kept.
async fn reload_accounts(
    path: std::path::PathBuf,
    gate: Arc<broker::auth::Gate>,
    hub: Arc<broker::Hub>,
    cancel: CancellationToken,
) {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(&path);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let signalled = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = async {
                match hup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
            _ = tokio::time::sleep(Duration::from_secs(2)) => false,
        };
        let now = stamp(&path);
        if !signalled && now == last {
            continue;
        }
        last = now;
        match credentials::load_file(&path) {
            Ok(file) => {
                let removed = gate.verifier().reload(file);
                hub.remove_accounts(&removed);
                gate.forgive();
                tracing::info!(file = %path.display(), meters = gate.verifier().len(), removed = removed.len(), "broker accounts reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "broker accounts not reloaded; the accounts in use stay");
            }
        }
    }
}
