//! The one place that creates channels and spawns tasks. The same diagram is in ARCHITECTURE.md.
//!
//! ```text
//!  meters ──MQTT 3.1.1──▶ broker: one task per connection (login gate, ACL per account)
//!    ▲  ▲                   │ publish → mqtt::Ingest::parse (quantities from plant::Rules), in that task
//!    │  │                   ▼
//!    │  │               intake ──▶ live: broadcast 1024 ──▶ web live view, alarm engine; lagging
//!    │  │                 ▲   │    receivers skip the oldest; sees readings BEFORE the commit
//!    │  │                 │   ▼
//!    │  │                 │  readings: mpsc, store.channel_capacity (4 096); full → the source
//!    │  │                 │   │  waits: that meter's socket is not read; a bus spills (10 000), keeps polling
//!    │  │  Modbus pollers─┘   ▼
//!    │  │   ▲ one per bus   store committer: batch ≤ max_batch or commit_interval; COMMIT = fsync;
//!    │  │   │ commands:     re-stamps readings of this run after a clock step (clock: Arc<Clock>,
//!    │  │   │ modbus::Buses  injected into every source and the committer)
//!    │  │   │ mpsc 16/bus,    │ receipts: per connection, ≤ max_inflight each
//!    │  │   │ full → refused  │
//!    │  └─ PUBACK / PUBREC ◀──┤ (sent only after the commit, app ack in the same write)
//!    │                        │ acks: mpsc 1024 (full → dropped, counted; the meter resends)
//!    └─ meters/{id}/ack ◀── broker::outbox ◀─┤
//!                                            ▼
//!                         store.db (segments) ── committed: watch<last id>
//!                                            │   durable consumers, each with its own cursor:
//!                                            ├──▶ aggregator (every history.interval_ms, ≤ 1 000 readings a
//!                                            │    step): windows + counters' latest + watermark + cursor
//!                                            │    in ONE transaction ──▶ store.db windows (1m 30 d, 1h 5 y)
//!                                            └──▶ influx writer ──HTTP──▶ InfluxDB 1.x/2.x/3.x, VictoriaMetrics
//!                                                   ▲ second cursor influx.logbook: logbook rows
//!  GPIO inputs: backend thread per line ──edges: mpsc 1024/line (full → dropped, a seqno gap = missed)──▶
//!    one task per input (debounce, pulse count / contact) ──Intake::offer + spill 10 000──▶ intake
//!  1-Wire: one task, sensors read on the blocking pool every onewire.interval_ms ──offer + spill──▶ intake
//!  gpio::Outputs (alarm engine, demo) ──watch per output (newest demand only, never full)──▶
//!    one driver task per output (steady / pulsed) ──▶ GPIO line
//!  POST /api/logbook, gkgw logbook ──▶ web ──store::Handle<Logbook>──▶ store.db logbook table
//!                                      └─ logbook_changed: watch<last row id> (never full) ─┘
//!  (aggregator's windows) ──▶ kpi writer (each completed hour/day, marks in meta) ──HTTP──▶ InfluxDB `kpi`
//!  live ──▶ alarm task: engine (pure) + 1 s tick ──▶ GPIO outputs (buzzer, beacon), alarms/{rule} on the broker,
//!             ▲  requests: mpsc 64 (full → 503)         the log, then the persister ──▶ store.db alarm_events/alarm_state
//!             │  logbook_changed (lab results)             (retried while the store refuses) ──▶ influx writer `alarm`
//!  POST /api/alarms/{id}/ack|reset|shelve|silence (loopback only until logins)
//!  platform commands (uplink, POST /api/commands) ──commands::Handle::submit: JWS EdDSA, payload, exp/iat, meter
//!    account; refused → audit row, counted──▶ requests: mpsc 64 (full → the submitter waits) ──▶ relay task:
//!    replay check + store (store.db commands/command_events) ──▶ meters/{id}/cmd via the hub, resent every retry_s
//!    ◀── meters/{id}/cmd/ack: Ingest ──acks: mpsc 1024 (full → dropped, counted; resent, re-answered)──┘
//!  web: /, /healthz, /metrics (metrics::Registry), /api/status (store, devices, clock),
//!       /api/live, /api/history (raw log or windows, by span), /api/kpi, /api/alarms
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
use crate::metrics::Registry;
use crate::model::{AckRequest, Reading};
use crate::plant::{self, Plant};
use crate::sources::{modbus, mqtt};
use crate::store::{self, committer};
use crate::{broker, credentials, sinks, web};

/// Descriptors kept free of MQTT connections for the store, the web server and clients.
const RESERVED_FDS: u64 = 128;

/// What a validated [`Config`] resolves to: everything the components need, each profile
/// loaded and each binding checked once. `gkgw check` prints it ([`describe`]); [`start`]
/// builds the pipeline from it.
pub struct Resolved {
    pub config: Config,
    pub plant: Arc<Plant>,
    pub mqtt: mqtt::Rules,
    pub modbus: Vec<modbus::BusSpec>,
    /// The alarm rules, checked against the catalogue (empty when alarms are disabled).
    pub alarm_rules: Vec<crate::alarm::rules::Rule>,
    /// `[[gpio.input]]`, bound.
    pub gpio: Vec<crate::sources::gpio::InputPlan>,
    /// `[[onewire.sensor]]`, bound.
    pub onewire: Vec<crate::sources::onewire::SensorPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{file}: {message}")]
    Alarms { file: String, message: String },
    #[error("{file}: {source}")]
    Plant {
        file: String,
        source: Box<plant::Error>,
    },
    #[error(transparent)]
    Modbus(#[from] modbus::ResolveError),
}

/// Loads the Modbus profiles, binds every source to its quantities and checks the bindings.
/// Errors name the config by its `origin`.
pub fn resolve(config: Config) -> Result<Resolved, ResolveError> {
    let file = if config.origin.is_empty() {
        "config".to_owned()
    } else {
        config.origin.clone()
    };
    let file = file.as_str();
    let plant_err = |source| ResolveError::Plant {
        file: file.to_owned(),
        source: Box::new(source),
    };
    let mut plant =
        Plant::new(plant::Catalogue::with_site(&config.plant.quantity).map_err(plant_err)?);
    let modbus = modbus::resolve(file, &config.modbus, &mut plant)?;
    let gpio = crate::sources::gpio::resolve(&config, &mut plant).map_err(plant_err)?;
    let onewire =
        crate::sources::onewire::resolve(&config.onewire, &mut plant).map_err(plant_err)?;
    let rules = mqtt::Rules::bind(&config.mqtt, plant).map_err(plant_err)?;
    let alarm_rules = if config.alarms.enabled {
        let catalogue = &rules.plant().catalogue;
        crate::alarm::rules::compile(&config.alarms, &|q| catalogue.get(q).is_some()).map_err(
            |message| ResolveError::Alarms {
                file: file.to_owned(),
                message,
            },
        )?
    } else {
        Vec::new()
    };
    Ok(Resolved {
        config,
        plant: rules.plant().clone(),
        mqtt: rules,
        modbus,
        alarm_rules,
        gpio,
        onewire,
    })
}

/// The resolved pipeline and plant table, as `gkgw check` prints them.
pub fn describe(r: &Resolved) -> String {
    use std::fmt::Write as _;
    let c = &r.config;
    let mut s = String::new();
    let _ = writeln!(s, "site {}", c.site.id);
    let _ = writeln!(s, "sources:");
    let _ = writeln!(
        s,
        "  mqtt broker {}: meters publish meters/{{id}}/state and /event (max payload {} bytes, packet {} bytes, {} connections, anonymous read-only: {})",
        c.broker.listen,
        c.mqtt.max_payload_bytes,
        c.broker.max_packet_bytes,
        c.broker.max_connections,
        c.broker.allow_anonymous
    );
    let _ = writeln!(s, "    accounts: {}", c.broker.credentials_file.display());
    for t in &c.mqtt.topics {
        let what = match &t.payload {
            crate::config::TopicPayload::Number { quantity } => format!("number -> {quantity}"),
            crate::config::TopicPayload::Json { values } => format!(
                "json -> {}",
                values.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            crate::config::TopicPayload::LineProtocol => {
                "line protocol (stored names of known quantities)".into()
            }
        };
        let _ = writeln!(s, "  mqtt topic {}: {what}", t.filter);
    }
    for spec in &r.modbus {
        let bus = &spec.bus;
        let _ = writeln!(
            s,
            "  modbus bus {}: {}, timeout {} ms, backoff {}..{} ms",
            bus.name, bus.transport, bus.timeout_ms, bus.min_backoff_ms, bus.max_backoff_ms
        );
        for d in &spec.devices {
            let p = &d.profile;
            let planner = modbus::plan::Planner::new(&p.fields, p.device.limits);
            let requests = planner.plan(&(0..p.fields.len()).collect::<Vec<_>>()).len();
            let _ = writeln!(
                s,
                "    {} = {} unit {}: {} fields, {requests} requests per full cycle",
                d.name,
                p.device.model,
                d.unit,
                p.fields.len()
            );
        }
    }
    if !c.gpio.inputs.is_empty() || !c.gpio.outputs.is_empty() {
        let _ = writeln!(
            s,
            "  gpio backend {} (fallback {}{})",
            format!("{:?}", c.gpio.backend).to_lowercase(),
            format!("{:?}", c.gpio.fallback).to_lowercase(),
            c.gpio
                .sim_socket
                .as_ref()
                .map_or(String::new(), |p| format!(", sim socket {}", p.display()))
        );
    }
    for p in &r.gpio {
        let i = &p.config;
        let chip = i.chip.as_ref().unwrap_or(&c.gpio.chip);
        let what = match &p.feeds {
            crate::sources::gpio::Feeds::Pulse { weight_m3, .. } => {
                format!("pulse × {weight_m3} m³ -> gas.volume, gas.flow")
            }
            crate::sources::gpio::Feeds::Contact { .. } => format!(
                "contact -> {}, contact.run_hours, contact.starts",
                i.quantity.as_deref().unwrap_or("")
            ),
        };
        let _ = writeln!(
            s,
            "  gpio input {}: {} line {}, {what}, debounce {} ms, report {} ms{}",
            i.name,
            chip.display(),
            i.line,
            i.debounce_ms,
            i.report_ms,
            if i.active_low { ", active low" } else { "" }
        );
    }
    for o in &c.gpio.outputs {
        let chip = o.chip.as_ref().unwrap_or(&c.gpio.chip);
        let mode = match o.mode {
            crate::config::OutputMode::Steady => "steady".to_owned(),
            crate::config::OutputMode::Pulsed => {
                format!("pulsed {}/{} ms", o.on_ms, o.off_ms)
            }
        };
        let _ = writeln!(
            s,
            "  gpio output {}: {} line {}, {mode}{}",
            o.name,
            chip.display(),
            o.line,
            if o.active_low { ", active low" } else { "" }
        );
    }
    for w in &r.onewire {
        let _ = writeln!(
            s,
            "  1-wire {} under {} -> {}.{} at {}, every {} ms",
            w.id,
            c.onewire.dir.display(),
            w.names.0,
            w.names.1,
            w.instance,
            c.onewire.interval_ms
        );
    }
    let _ = writeln!(
        s,
        "store: {} (commit every {} ms or {} readings, quota {} MiB, buffer {})",
        store::db_path(&c.store.state_dir).display(),
        c.store.commit_interval_ms,
        c.store.max_batch,
        c.store.quota_mib,
        c.store.channel_capacity
    );
    let _ = writeln!(s, "consumers (each with its own cursor; a reading leaves the store once all have it, or when the quota forces it out):");
    let _ = writeln!(
        s,
        "  aggregator: 1-minute and 1-hour windows every {} ms (history, KPIs{})",
        c.history.interval_ms,
        if c.uplink.enabled { ", uplink" } else { "" }
    );
    if c.influx.enabled {
        let _ = writeln!(
            s,
            "  influx v{} at {} (batch {}, flush {} ms, gzip {})",
            c.influx.version,
            c.influx.url,
            c.influx.batch_size,
            c.influx.flush_interval_ms,
            c.influx.gzip
        );
    } else {
        let _ = writeln!(s, "  influx: disabled");
    }
    if c.alarms.enabled {
        let meter = r
            .alarm_rules
            .iter()
            .filter(|a| a.name.starts_with("meter_"))
            .count();
        let _ = writeln!(
            s,
            "alarms: {} rules ({} site and safety rules, {meter} applied to every meter; stale after {} s, devices offline after {} s){}",
            r.alarm_rules.len(),
            r.alarm_rules.len() - meter,
            c.alarms.stale_s,
            c.alarms.offline_s,
            if c.alarms.mqtt { ", published on alarms/{rule}" } else { "" }
        );
        for a in &r.alarm_rules {
            if a.name.starts_with("meter_") {
                continue;
            }
            let _ = writeln!(
                s,
                "  {} ({}): {}: {}",
                a.name,
                a.severity.as_str(),
                a.describe(),
                a.message
            );
        }
        for o in &c.alarms.output {
            let _ = writeln!(
                s,
                "  output {}: alarms of severity {} or worse, until {}",
                o.output,
                o.min_severity.as_str(),
                match o.until {
                    crate::alarm::rules::Until::Acknowledged => "acknowledged",
                    crate::alarm::rules::Until::Cleared => "cleared",
                }
            );
        }
    } else {
        let _ = writeln!(s, "alarms: disabled");
    }
    match &c.commands.platform_key_file {
        Some(f) => {
            let _ = writeln!(
                s,
                "commands: signed by the platform key {}, resent every {} s until answered or expired",
                f.display(),
                c.commands.retry_s
            );
        }
        None => {
            let _ = writeln!(
                s,
                "commands: disabled (no commands.platform_key_file): each is refused"
            );
        }
    }
    if c.uplink.enabled {
        let u = &c.uplink;
        let _ = writeln!(
            s,
            "uplink: {} as gateway {}, {} s windows, token {}, server verified by {}",
            u.url,
            u.gateway,
            u.window_s,
            u.token_file
                .as_ref()
                .map_or("none".to_owned(), |p| format!("from {}", p.display())),
            u.ca_file
                .as_ref()
                .map_or("the web roots".to_owned(), |p| p.display().to_string())
        );
    } else {
        let _ = writeln!(s, "uplink: disabled");
    }
    let _ = writeln!(s, "http: {}", c.http.listen);
    let _ = writeln!(s, "\nplant ({} bindings):", r.plant.bindings().len());
    s.push_str(&r.plant.table());
    s
}

/// A started gateway: its bound addresses, and the handles needed to stop it in order.
pub struct Gateway {
    pub mqtt_addrs: Vec<SocketAddr>,
    /// The site's quantities and bindings.
    pub plant: Arc<Plant>,
    pub http_addr: SocketAddr,
    pub health: Arc<committer::Health>,
    pub live: broadcast::Sender<Arc<Reading>>,
    pub hub: Arc<broker::Hub>,
    /// The Modbus buses' command inboxes, by device name (for the web and the uplink).
    pub modbus: modbus::Buses,
    /// The GPIO outputs' demanded states (for the alarm engine and the status page).
    pub gpio: crate::gpio::Outputs,
    /// The simulated GPIO chip, when `[gpio] backend = "sim"` (or the fallback) is in use: the
    /// demo drives its inputs and reads its outputs through it.
    pub gpio_sim: Option<crate::gpio::simulator::Sim>,
    /// Platform commands: the uplink's transports submit through it.
    pub commands: crate::commands::Handle,
    _lock: store::lock::StateLock,
    sources_cancel: CancellationToken,
    sinks_cancel: CancellationToken,
    sources: TaskTracker,
    committer: tokio::task::JoinHandle<()>,
    sinks: TaskTracker,
}

/// Resolves `config` (see [`resolve`]) and starts everything on the system clock; returns
/// once the broker and the web server are listening.
pub async fn start(config: Config) -> anyhow::Result<Gateway> {
    start_with(config, Clock::system()).await
}

/// [`start`] with a given clock (tests inject a `clock::FakeTime`): the one clock every
/// source stamps readings with and the committer corrects steps of.
pub async fn start_with(config: Config, clock: Arc<Clock>) -> anyhow::Result<Gateway> {
    start_resolved(resolve(config)?, clock).await
}

/// Starts everything from a resolved config.
pub async fn start_resolved(resolved: Resolved, clock: Arc<Clock>) -> anyhow::Result<Gateway> {
    let Resolved {
        config,
        plant,
        mqtt: rules,
        modbus,
        alarm_rules,
        gpio: gpio_inputs,
        onewire,
    } = resolved;
    if !clock.now().synced {
        tracing::warn!("the clock is not synchronised (adjtimex): readings stamped now are marked clock_unsynced and re-stamped when it steps");
    }
    // Every component registers its metrics here; the web server renders them.
    let mut registry = Registry::default();
    let mqtt_metrics = Arc::new(mqtt::Metrics::register(&mut registry));
    let committer_metrics = Arc::new(committer::Metrics::register(&mut registry));
    let broker_metrics = Arc::new(broker::Metrics::register(&mut registry));
    let influx_metrics = Arc::new(sinks::influx::Metrics::register(&mut registry));
    let health = Arc::new(committer::Health::default());
    std::fs::create_dir_all(&config.store.state_dir).with_context(|| {
        format!(
            "cannot create state directory {}",
            config.store.state_dir.display()
        )
    })?;
    let lock = store::lock::lock_state_dir(&config.store.state_dir)?;
    let db = store::db_path(&config.store.state_dir);

    let mut consumers: Vec<&'static str> = vec![crate::aggregate::CONSUMER];
    if config.influx.enabled {
        consumers.push(sinks::influx::CONSUMER);
    }
    let mut writer = store::Writer::open(&db)
        .with_context(|| format!("cannot open the store {}", db.display()))?;
    let disk = Arc::new(store::disk::Disk::open(&config.store.state_dir));
    registry.register(disk.clone());
    writer.register_consumers(&consumers)?;

    // GPIO: every line opened now, so a missing chip stops the start-up here, naming the line.
    let gpio_lines = crate::gpio::open(&config.gpio)?;
    if !gpio_lines.inputs.is_empty() || !gpio_lines.outputs.is_empty() {
        tracing::info!(
            backend = gpio_lines.backend,
            inputs = gpio_lines.inputs.len(),
            outputs = gpio_lines.outputs.len(),
            "gpio lines open"
        );
    }
    // Each input counts on from its last committed total (sources/gpio.rs, "Persistence").
    let mut gpio_recovered = Vec::new();
    if !gpio_inputs.is_empty() {
        let mut raw = store::Reader::open(&db)?;
        let windows = store::windows::Windows::open(&db)?;
        for p in &gpio_inputs {
            gpio_recovered.push(
                crate::sources::gpio::recover(p, &mut raw, &windows).with_context(|| {
                    format!("cannot recover the totals of {} from the store", p.key)
                })?,
            );
        }
    }

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
    let mut listeners = vec![broker::Listener {
        tcp: listener,
        tls: None,
    }];
    let mut mqtt_tls_addr = None;
    if let (Some(addr), Some(cert), Some(key)) = (
        config.broker.tls_listen,
        &config.broker.tls_cert_file,
        &config.broker.tls_key_file,
    ) {
        let acceptor =
            broker::tls::acceptor(cert, key, config.broker.tls_client_ca_file.as_deref())
                .map_err(anyhow::Error::msg)?;
        let tcp = broker::bind(addr).await?;
        mqtt_tls_addr = Some(tcp.local_addr()?);
        listeners.push(broker::Listener {
            tcp,
            tls: Some(acceptor),
        });
    }
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
    let (acks_tx, acks_rx) = mpsc::channel::<Vec<AckRequest>>(1024);
    let (committed_tx, committed_rx) = watch::channel(0i64);
    let (live, _) = broadcast::channel::<Arc<Reading>>(crate::intake::LIVE_CAPACITY);
    // The alarm engine's receiver exists before any source starts, so it sees every reading.
    let alarm_live = config.alarms.enabled.then(|| live.subscribe());
    let intake = crate::intake::Intake::with_counter(
        readings_tx,
        live.clone(),
        registry.counter(
            "gkgw_readings_spill_dropped_total",
            "Modbus readings dropped because the store's channel and the poller's spill were full (the store was not committing).",
        ),
    );

    let sources_cancel = CancellationToken::new();
    let sinks_cancel = CancellationToken::new();
    let sources = TaskTracker::new();
    let sinks = TaskTracker::new();

    let hub = Arc::new(broker::Hub::new(broker_metrics.clone()));

    // Platform commands (commands/mod.rs has their diagram): requests mpsc 64 (full → the
    // submitter waits), meter answers mpsc 1 024 from the ingest (full → dropped, counted;
    // the command is resent). The relay has its own store connection; the handle another.
    let commands_metrics = Arc::new(crate::commands::Metrics::register(&mut registry));
    let commands = crate::commands::build(
        crate::commands::Settings {
            key: match &config.commands.platform_key_file {
                Some(f) => Some(
                    crate::config::load_platform_key(f)
                        .map_err(|e| anyhow::anyhow!("commands.platform_key_file: {e}"))?,
                ),
                None => None,
            },
            retry: Duration::from_secs(config.commands.retry_s),
            max_clock_skew_s: i64::try_from(config.commands.max_clock_skew_s).unwrap_or(300),
        },
        clock.clone(),
        verifier.clone(),
        store::Handle::new(store::commands::Commands::open(&db)?),
        store::commands::Commands::open(&db)?,
        hub.clone(),
        commands_metrics,
    )?;
    if config.commands.platform_key_file.is_none() {
        tracing::info!("no commands.platform_key_file: platform commands are refused");
    }
    let command_acks = commands.acks.clone();
    let commands_handle = commands.handle.clone();
    sinks.spawn(commands.relay.run(sinks_cancel.clone()));

    let commit_now = Arc::new(tokio::sync::Notify::new());
    let acl = broker::Acl::new(mqtt::publish_rules(&config.mqtt));
    let gate = Arc::new(broker::auth::Gate::new(
        verifier.clone(),
        config.broker.auth_concurrency,
        config.broker.allow_anonymous,
        broker_metrics.clone(),
    ));
    let broker_accept = broker::serve(
        listeners,
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
            inbound: Arc::new(
                mqtt::Ingest::new(rules, intake.clone(), mqtt_metrics.clone(), clock.clone())
                    .with_command_acks(Arc::new(command_acks)),
            ),
            metrics: broker_metrics.clone(),
        },
        &sources,
        sources_cancel.clone(),
    );
    // The tasks the pipeline cannot do without are watched: one that ends while the gateway
    // runs makes it unhealthy (/healthz, gkgw_up), and the systemd watchdog is no longer fed.
    sources.spawn(health.watch("broker", sources_cancel.clone(), broker_accept));
    sinks.spawn(reload_accounts(
        creds_file,
        gate,
        hub.clone(),
        sinks_cancel.clone(),
    ));

    // One poller task per bus, each with its command inbox: mpsc, modbus::INBOX_CAPACITY (16);
    // full → the command is refused at once (`WriteError::Busy`), the caller is not held.
    let modbus_stats = modbus::Stats::default();
    let mut inboxes = std::collections::BTreeMap::new();
    for spec in modbus {
        let (inbox_tx, inbox_rx) = mpsc::channel(modbus::INBOX_CAPACITY);
        for d in &spec.devices {
            inboxes.insert(d.name.clone(), inbox_tx.clone());
        }
        let name = format!("modbus bus {}", spec.bus.name);
        sources.spawn(health.watch(
            name,
            sources_cancel.clone(),
            modbus::run_bus(
                spec,
                intake.clone(),
                inbox_rx,
                modbus_stats.clone(),
                clock.clone(),
                sources_cancel.clone(),
            ),
        ));
    }
    let modbus_buses = modbus::Buses::new(inboxes);

    // One task per GPIO input; its edges come from the backend over mpsc gpio::EDGE_CAPACITY
    // (1024) per line (full → the backend drops the edge; the seqno gap counts it as missed);
    // its readings go through Intake::offer with a spill, so it never waits on the store.
    let mut gpio_stats = std::collections::BTreeMap::new();
    let software_debounce = gpio_lines.software_debounce;
    let gpio_sim = gpio_lines.sim.clone();
    for ((plan, recovered), (_, line, edges)) in gpio_inputs
        .into_iter()
        .zip(gpio_recovered)
        .zip(gpio_lines.inputs)
    {
        let stats = Arc::new(crate::sources::gpio::InputStats {
            pulse_input: matches!(plan.feeds, crate::sources::gpio::Feeds::Pulse { .. }),
            ..Default::default()
        });
        gpio_stats.insert(plan.config.name.clone(), stats.clone());
        let name = format!("gpio input {}", plan.config.name);
        sources.spawn(health.watch(
            name,
            sources_cancel.clone(),
            crate::sources::gpio::run_input(
                crate::sources::gpio::Task {
                    plan,
                    line,
                    edges,
                    software_debounce,
                    recovered,
                    stats,
                },
                intake.clone(),
                clock.clone(),
                sources_cancel.clone(),
            ),
        ));
    }
    if let (Some(sim), Some(path)) = (&gpio_sim, &config.gpio.sim_socket) {
        sources.spawn(crate::gpio::simulator::serve(
            sim.clone(),
            path.clone(),
            sources_cancel.clone(),
        ));
    }
    // 1-Wire: one task for the bus (reads on the blocking pool, offers with a spill).
    if !onewire.is_empty() {
        sources.spawn(health.watch(
            "1-wire",
            sources_cancel.clone(),
            crate::sources::onewire::run(
                config.onewire.dir.clone(),
                onewire,
                Duration::from_millis(config.onewire.interval_ms),
                intake.clone(),
                clock.clone(),
                sources_cancel.clone(),
            ),
        ));
    }
    drop(intake);
    // GPIO outputs: the demand is a watch per output (the newest demand only, never full);
    // one driver task each, stopped with the sinks (after the sources and the committer).
    let (gpio_outputs, drivers) = crate::gpio::Outputs::new(gpio_lines.outputs);
    for d in drivers {
        sinks.spawn(crate::gpio::drive(d, sinks_cancel.clone()));
    }

    let committer = tokio::spawn(health.watch(
        "store committer",
        sources_cancel.clone(),
        committer::run(
            store::Handle::new(writer),
            committer::Settings {
                commit_interval: Duration::from_millis(config.store.commit_interval_ms),
                min_commit_gap: Duration::from_millis(config.store.min_commit_gap_ms),
                commit_now,
                max_batch: config.store.max_batch,
                quota_bytes: config.store.quota_mib * 1024 * 1024,
                consumers: consumers.clone(),
                clock: clock.clone(),
                disk: disk.clone(),
            },
            readings_rx,
            committed_tx,
            acks_tx,
            committer_metrics.clone(),
            health.clone(),
        ),
    ));

    // Application acks of readings whose connection is gone go out through the broker's
    // outbox (never blocks: each connection's queue is bounded and a full one drops, counted).
    sinks.spawn(broker::outbox::route_acks(
        acks_rx,
        hub.clone(),
        broker_metrics.clone(),
    ));

    if config.influx.enabled {
        let w =
            sinks::influx::Writer::new(&config.influx, &config.site.id, influx_metrics.clone())?;
        let reader = store::Handle::new(store::Reader::open(&db)?);
        sinks.spawn(sinks::influx::run(
            w,
            reader,
            committed_rx.clone(),
            sinks_cancel.clone(),
        ));
    }

    // The aggregator: a durable consumer like the InfluxDB writer; windows + cursor in one
    // transaction (aggregate/mod.rs). Runs every history.interval_ms and once more at shutdown.
    let mut aggregator = crate::aggregate::Worker::open(
        &db,
        plant.clone(),
        crate::aggregate::Settings {
            interval: Duration::from_millis(config.history.interval_ms),
            step_readings: config.history.step_readings,
            minute_retention: Duration::from_secs(config.history.minute_days * 86_400),
            hour_retention: Duration::from_secs(config.history.hour_days * 86_400),
        },
    )
    .context("cannot open the aggregator's windows")?;
    aggregator.metrics = crate::aggregate::Metrics::register(&mut registry);
    sinks.spawn(crate::aggregate::run(
        store::Handle::new(aggregator),
        Duration::from_millis(config.history.interval_ms),
        sinks_cancel.clone(),
    ));

    // The logbook: its own connection (web writes; SQLite serialises them with the committer's,
    // busy_timeout waits). `logbook_changed`: watch, keeps only the newest row id, never full.
    let logbook = store::Handle::new(
        store::logbook::Logbook::open(
            &db,
            Duration::from_secs(config.logbook.edit_window_hours * 3600),
        )
        .with_context(|| format!("cannot open the logbook in {}", db.display()))?,
    );
    let (logbook_changed, logbook_rx) = watch::channel(0i64);
    if config.influx.enabled {
        let w =
            sinks::influx::Writer::new(&config.influx, &config.site.id, influx_metrics.clone())?;
        let reader = store::Handle::new(store::Reader::open(&db)?);
        let book = store::Handle::new(store::logbook::Logbook::open(
            &db,
            Duration::from_secs(config.logbook.edit_window_hours * 3600),
        )?);
        sinks.spawn(sinks::influx::run_logbook(
            w,
            reader,
            book,
            logbook_rx.clone(),
            sinks_cancel.clone(),
        ));
    }
    // The alarm engine: off the live stream (before the commit), its state and events in the
    // store by its persister (alarm/task.rs). Requests from the web: mpsc REQUESTS_CAPACITY
    // (64); full → 503 at once.
    let alarms = match alarm_live {
        Some(live_rx) => {
            let store = store::Handle::new(
                store::alarms::Alarms::open(&db)
                    .with_context(|| format!("cannot open the alarms in {}", db.display()))?,
            );
            let (saved, next_seq) = store.run(|a| a.load()).await?;
            let mut engine = crate::alarm::Engine::new(
                alarm_rules,
                config.alarms.output.clone(),
                config.alarms.max_shelve_hours,
                i64::from(config.site.timezone.offset_s()),
                next_seq,
            );
            let now = clock.now().ts_ns;
            let restored = saved.len();
            engine.restore(now, saved);
            for b in plant.bindings() {
                if let plant::Instance::Device(d) = &b.instance {
                    if ["modbus", "gpio", "1-wire"]
                        .iter()
                        .any(|k| b.source.starts_with(k))
                    {
                        engine.expect_device(now, d);
                    }
                }
            }
            if restored > 0 {
                tracing::warn!(
                    alarms = restored,
                    "alarms restored from the store: not normal before the restart, still not"
                );
            }
            let (requests_tx, requests_rx) = mpsc::channel(crate::alarm::task::REQUESTS_CAPACITY);
            let snapshot = Arc::new(std::sync::Mutex::new(
                crate::alarm::task::Snapshot::default(),
            ));
            let metrics = Arc::new(crate::alarm::task::Metrics::register(&mut registry));
            sinks.spawn(crate::alarm::task::run(
                crate::alarm::task::Parts {
                    engine,
                    plant: plant.clone(),
                    live: live_rx,
                    requests: requests_rx,
                    snapshot: snapshot.clone(),
                    drive: Some({
                        let o = gpio_outputs.clone();
                        Arc::new(move |n: &str, on| o.set(n, on))
                    }),
                    hub: config.alarms.mqtt.then(|| hub.clone()),
                    clock: clock.clone(),
                    store: store.clone(),
                    logbook: Some((logbook.clone(), logbook_rx.clone())),
                    metrics,
                    disk: disk.clone(),
                    save_gather: crate::alarm::task::SAVE_GATHER
                        .max(Duration::from_millis(config.store.commit_interval_ms)),
                },
                sinks_cancel.clone(),
            ));
            if config.influx.enabled {
                let w = sinks::influx::Writer::new(
                    &config.influx,
                    &config.site.id,
                    influx_metrics.clone(),
                )?;
                sinks.spawn(sinks::influx::run_alarms(
                    w,
                    store::Handle::new(store::Reader::open(&db)?),
                    store::Handle::new(store::alarms::Alarms::open(&db)?),
                    sinks_cancel.clone(),
                ));
            }
            Some(crate::alarm::task::Handle {
                snapshot,
                requests: requests_tx,
                store: store::Handle::new(store::alarms::Alarms::open(&db)?),
                max_shelve_hours: config.alarms.max_shelve_hours,
            })
        }
        None => None,
    };
    let kpi_engine = crate::aggregate::kpi::Engine::new(
        config.site.kpi_parameters(),
        config.site.timezone.clone(),
        config.site.compressor_meter.clone(),
    );
    // The KPI writer: each completed hour and local day to InfluxDB (sinks/kpi.rs), once the
    // aggregator's grace and interval have passed; its marks in the store's meta.
    if config.influx.enabled {
        let w =
            sinks::influx::Writer::new(&config.influx, &config.site.id, influx_metrics.clone())?;
        sinks.spawn(sinks::kpi::run(
            w,
            store::Handle::new(store::Reader::open(&db)?),
            store::Handle::new((
                store::windows::Windows::open(&db)?,
                store::logbook::Logbook::open(
                    &db,
                    Duration::from_secs(config.logbook.edit_window_hours * 3600),
                )?,
            )),
            kpi_engine.clone(),
            clock.clone(),
            Duration::from_nanos(crate::aggregate::window::GRACE_NS as u64)
                + Duration::from_millis(config.history.interval_ms)
                + Duration::from_secs(60),
            sinks_cancel.clone(),
        ));
    }

    // The uplink: a builder (batches into the outbox, one transaction each) and a sender
    // (oldest first, at most uplink.max_batches_per_s), each on its own store connection;
    // `built`: Notify, never full.
    let uplink_status = if config.uplink.enabled {
        let metrics = Arc::new(crate::uplink::Metrics::register(&mut registry));
        let status = crate::uplink::SharedStatus::default();
        status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .url = config.uplink.url.clone();
        let built = Arc::new(tokio::sync::Notify::new());
        sinks.spawn(crate::uplink::run_builder(
            store::Handle::new((
                store::outbox::Outbox::open(&db)?,
                store::windows::Windows::open(&db)?,
                store::logbook::Logbook::open(
                    &db,
                    Duration::from_secs(config.logbook.edit_window_hours * 3600),
                )?,
            )),
            kpi_engine.clone(),
            config.uplink.clone(),
            config.site.id.clone(),
            clock.clone(),
            metrics.clone(),
            built.clone(),
            sinks_cancel.clone(),
        ));
        // Commands in an answer (HTTPS) or on gkgw/{site}/{gateway}/cmd (MQTT) go to the
        // command relay, in their order, on a task of the sinks' tracker (the transport does
        // not wait for them; shutdown does).
        let to_relay = |via: &'static str| -> crate::uplink::http::Commands {
            let (relay, tracker) = (commands_handle.clone(), sinks.clone());
            Arc::new(move |cmds: Vec<String>| {
                let relay = relay.clone();
                tracker.spawn(async move {
                    for jws in cmds {
                        relay.submit(jws, via).await;
                    }
                });
            })
        };
        let outbox = store::Handle::new(store::outbox::Outbox::open(&db)?);
        if config.uplink.is_mqtt() {
            sinks.spawn(crate::uplink::mqtt::run(
                config.uplink.clone(),
                config.site.id.clone(),
                outbox,
                Some(to_relay("mqtt")),
                metrics,
                status.clone(),
                clock.clone(),
                built,
                sinks_cancel.clone(),
            ));
        } else {
            let sender = crate::uplink::http::Sender::new(&config.uplink, &config.site.id)?;
            sinks.spawn(crate::uplink::http::run(
                sender,
                outbox,
                Some(to_relay("https")),
                metrics,
                status.clone(),
                clock.clone(),
                built,
                sinks_cancel.clone(),
            ));
        }
        Some(status)
    } else {
        None
    };

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let store_gauges = store::gauges::Gauges::new(
        store::Handle::new(store::Reader::open(&db)?),
        db.clone(),
        consumers,
    );
    registry.register(store_gauges.clone());
    registry.register(crate::sources::modbus::stats::Collector(
        modbus_stats.clone(),
    ));
    registry.register(health.clone());
    registry.register(clock.clone());
    registry.register(crate::sources::gpio::Stats(Arc::new(gpio_stats)));
    // The dashboard's current values: the live stream from now on, seeded with the newest
    // minute windows and text states of the last day (subscribed first, so nothing between
    // the seed and the subscription is missed; the seed never replaces a newer value).
    let latest = Arc::new(web::ui::latest::Latest::default());
    sinks.spawn(web::ui::latest::run(
        latest.clone(),
        plant.clone(),
        live.subscribe(),
        sinks_cancel.clone(),
    ));
    {
        let w = store::windows::Windows::open(&db)?;
        let since = clock.now().ts_ns - 86_400_000_000_000;
        let mut seed: Vec<(String, String, i64, crate::model::Value)> = w
            .newest_values(since)?
            .into_iter()
            .map(|(q, i, ts, v)| (q, i, ts, crate::model::Value::Float(v)))
            .collect();
        for q in plant
            .catalogue
            .iter()
            .filter(|q| q.kind == crate::plant::Kind::Text)
        {
            for (i, ts, v) in w.texts(&q.name)? {
                seed.push((q.name.clone(), i, ts, crate::model::Value::Str(v)));
            }
        }
        latest.seed(seed);
    }
    let started_ns = clock.now().ts_ns;
    // Dashboard accounts, sessions and the audit log: their own store connection.
    let users = store::users::Users::open(&db)?;
    if users.list(crate::clock::wall_ns())?.is_empty() {
        tracing::warn!(
            "no dashboard users: nobody can sign in (add one with `gkgw user add NAME --role admin`)"
        );
    }
    let auth = web::auth::Gate::new(
        store::Handle::new(users),
        &config.http,
        web::auth::Metrics::register(&mut registry),
    );
    let state = Arc::new(web::AppState {
        latest,
        started_ns,
        state_dir: config.store.state_dir.clone(),
        registry,
        health: health.clone(),
        store: store_gauges,
        broker: broker_metrics,
        mqtt: mqtt_metrics,
        committer: committer_metrics,
        influx: influx_metrics,
        site: config.site.id.clone(),
        mqtt_addrs: vec![mqtt_addr],
        modbus: modbus_stats,
        clock,
        plant: plant.clone(),
        live: live.clone(),
        shutdown: sinks_cancel.clone(),
        aggregate_interval: Duration::from_millis(config.history.interval_ms),
        history: store::Handle::new((
            store::Reader::open(&db)?,
            store::windows::Windows::open(&db)?,
        )),
        logbook,
        logbook_changed,
        kpi: kpi_engine.clone(),
        alarms,
        uplink: uplink_status,
        gpio: gpio_outputs.clone(),
        commands: commands_handle.clone(),
        auth,
    });
    sinks.spawn(health.watch(
        "web server",
        sinks_cancel.clone(),
        web::serve(listener, state, sinks_cancel.clone()),
    ));

    tracing::info!(mqtt = %mqtt_addr, mqtt_tls = ?mqtt_tls_addr, http = %http_addr, influx = config.influx.enabled, max_connections, "gateway started");
    Ok(Gateway {
        mqtt_addrs: vec![mqtt_addr],
        plant,
        hub,
        modbus: modbus_buses,
        gpio: gpio_outputs,
        gpio_sim,
        commands: commands_handle,
        _lock: lock,
        http_addr,
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

/// Runs the gateway until `shutdown` is cancelled, then stops it cleanly. Tells systemd READY
/// once the store, the broker and the web server are up, and feeds its watchdog only while
/// the pipeline is healthy (`committer::Health`: commits succeed and none hangs, every
/// watched task is alive).
pub async fn run(resolved: Resolved, shutdown: CancellationToken) -> anyhow::Result<()> {
    let gw = start_resolved(resolved, Clock::system()).await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    loop {
        let tick = watchdog.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(tick) => {
                if watchdog.is_some() && gw.health.healthy() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(text: &str) -> Result<Resolved, String> {
        let config = Config::parse("gw.toml", text).map_err(|e| e.to_string())?;
        resolve(config).map_err(|e| e.to_string())
    }

    const BUS: &str =
        "[[modbus.bus]]\nname = \"rs485\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5020\"\n";

    /// Every shipped profile binds as it is: each field's quantity is in the catalogue and its
    /// unit is the quantity's.
    #[test]
    fn every_shipped_profile_binds_to_the_catalogue() {
        for (i, (name, _)) in crate::sources::modbus::BUILTIN_PROFILES.iter().enumerate() {
            let text = format!(
                "{BUS}[[modbus.device]]\nname = \"d{i}\"\nbus = \"rs485\"\nunit = 1\nprofile = \"{name}\"\n"
            );
            let r = resolved(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let fields = r.modbus[0].devices[0].profile.fields.len();
            let bound = r
                .plant
                .bindings()
                .iter()
                .filter(|b| b.instance == plant::Instance::Device(format!("d{i}")))
                .count();
            assert_eq!(bound, fields, "{name}");
        }
    }

    #[test]
    fn a_device_override_rebinds_one_field() {
        let text = format!(
            "{BUS}[[modbus.device]]\nname = \"temps\"\nbus = \"rs485\"\nunit = 5\nprofile = \"comwintop-8pt1000\"\nquantities = {{ ch2 = \"compressor.temperature\" }}\n"
        );
        let r = resolved(&text).expect("resolves");
        let dev = &r.modbus[0].devices[0];
        let ch2 = dev
            .profile
            .fields
            .iter()
            .position(|f| f.name == "ch2")
            .expect("ch2");
        assert_eq!(dev.profile.fields[ch2].quantity, "compressor.temperature");
        assert_eq!(
            dev.names[ch2],
            ("compressor".to_owned(), "temperature_c".to_owned())
        );
        assert_eq!(
            r.plant
                .quantity_of("compressor", "temperature_c")
                .map(|q| q.name.as_str()),
            Some("compressor.temperature")
        );
        // The other channels keep the profile's quantities.
        assert!(r
            .plant
            .bindings()
            .iter()
            .any(|b| b.quantity.name == "temperature.ch3"));
        for (text, expected) in [
            (
                "quantities = { ch9 = \"digester.temperature\" }",
                "gw.toml: modbus.device[0].quantities: \"ch9\": profile 8-PT1000 has no such field",
            ),
            (
                "quantities = { ch2 = \"digester.temperature\" }",
                "gw.toml: modbus.device[0].quantities.ch2: digester.temperature at temps is already fed by modbus rs485 unit 5 ch1",
            ),
        ] {
            let t = format!(
                "{BUS}[[modbus.device]]\nname = \"temps\"\nbus = \"rs485\"\nunit = 5\nprofile = \"comwintop-8pt1000\"\n{text}\n"
            );
            assert_eq!(resolved(&t).err().as_deref(), Some(expected));
        }
    }

    #[test]
    fn two_devices_feed_one_quantity_at_two_instances() {
        let text = format!(
            "{BUS}[[modbus.device]]\nname = \"digester-1\"\nbus = \"rs485\"\nunit = 1\nprofile = \"demo-digester\"\n[[modbus.device]]\nname = \"digester-2\"\nbus = \"rs485\"\nunit = 2\nprofile = \"demo-digester\"\n"
        );
        let r = resolved(&text).expect("resolves");
        let instances: Vec<String> = r
            .plant
            .bindings()
            .iter()
            .filter(|b| b.quantity.name == "digester.pressure")
            .map(|b| b.instance.to_string())
            .collect();
        assert_eq!(instances, ["digester-1", "digester-2"]);
    }
}
