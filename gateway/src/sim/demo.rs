//! `gkgw demo`: the whole gateway on one machine with nothing installed. Simulated meters are
//! real MQTT clients (rumqttc) of the embedded broker, each logged in with its own account
//! (created in the state directory at start), and so is a simulated H2S sensor publishing plain
//! numbers on a mapped topic; the store lives in a temporary directory.
//! Anonymous loopback clients (`mosquitto_sub`) are let in read-only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

pub struct Options {
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    pub state_dir: Option<PathBuf>,
    pub meters: usize,
    pub meter_interval: Duration,
    pub influx: Option<crate::config::Influx>,
    /// Serve the simulated plant over Modbus TCP here and poll it.
    pub plant: Option<SocketAddr>,
    pub plant_faults: bool,
    /// Days of simulated history written into the windows before the start.
    pub history_days: u32,
    /// `store.commit_interval_ms`.
    pub commit_interval_ms: u64,
    /// A plant fault to start at once.
    pub scenario: Option<super::plant::Scenario>,
    /// Send batches to the platform.
    pub uplink: Option<crate::uplink::Config>,
    /// The platform's public key (`--platform-key`): commands signed with it reach the meters.
    pub platform_key: Option<PathBuf>,
}

/// The demo plant runs [`super::plant::SPEED`] times faster than the wall clock, so the
/// process rules' delays and rate windows are that much shorter (and a rate's limit, per wall
/// hour, that much larger); the stale and offline times are about communication and stay.
/// The buzzer sounds for alarms until acknowledged, the beacon for warnings until cleared; the
/// leak rule reads the gas flow of the outlet meter (`gas-meter`, GPIO pulses), as on a site
/// whose digester has no flow meter of its own.
fn demo_alarms(a: &mut crate::config::AlarmsConfig) {
    let speed = super::plant::SPEED;
    let scale = |c: &mut crate::alarm::rules::ConditionConfig| {
        if let Some(w) = c.window_s.as_mut() {
            *w = ((*w as f64 / speed).round() as u64).max(10);
        }
        for r in [&mut c.rate_above, &mut c.rate_below].into_iter().flatten() {
            *r *= speed;
        }
    };
    for r in &mut a.rule {
        r.on_delay_s /= speed;
        r.off_delay_s /= speed;
        scale(&mut r.condition);
        for c in &mut r.and {
            scale(c);
            if r.name == "leak" && c.quantity == "gas.flow" {
                c.instance = Some("gas-meter".into());
            }
        }
    }
    a.output = vec![
        crate::alarm::rules::OutputConfig {
            output: "buzzer".into(),
            min_severity: crate::alarm::Severity::Alarm,
            until: crate::alarm::rules::Until::Acknowledged,
        },
        crate::alarm::rules::OutputConfig {
            output: "beacon".into(),
            min_severity: crate::alarm::Severity::Warning,
            until: crate::alarm::rules::Until::Cleared,
        },
    ];
}

pub async fn run(opts: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_clock(opts, crate::clock::Clock::system(), shutdown).await
}

/// [`run`] on a given clock: the Grafana test runs the demo in-process on the system's time
/// with the kernel's sync state taken as synchronised, since the KPI writer writes nothing while
/// the clock is unsynchronised (as it is in many containers).
pub async fn run_with_clock(
    opts: Options,
    clock: std::sync::Arc<crate::clock::Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (_tmp, state_dir) = match opts.state_dir {
        Some(d) => (None, d),
        None => {
            let t = tempfile::Builder::new().prefix("gkgw-demo-").tempdir()?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    let mut config = Config::default();
    config.site.id = "demo-site".into();
    // The simulated plant is a 1,550 m highland site with a 40 m³ digester (docs/kpi.md), so
    // the demo's KPIs have their site parameters.
    config.site.altitude_m = Some(1550.0);
    config.site.digester_m3 = Some(40.0);
    config.store.state_dir = state_dir.clone();
    config.store.commit_interval_ms = opts.commit_interval_ms;
    config.broker.listen = opts.mqtt;
    config.broker.allow_anonymous = true;
    config.broker.credentials_file = state_dir.join("meters.toml");
    config.http.listen = opts.http;
    config.commands.platform_key_file = opts.platform_key.clone();
    config.commands.retry_s = 5;
    demo_alarms(&mut config.alarms);
    if let Some(i) = opts.influx {
        config.influx = i;
    }
    if let Some(u) = opts.uplink.clone() {
        config.uplink = u;
    }
    if !opts.mqtt.ip().is_loopback() {
        anyhow::bail!(
            "--mqtt {}: the demo broker accepts anonymous clients, so it only listens on loopback",
            opts.mqtt
        );
    }
    // Simulated GPIO: the kitchen's gas meter (a reed contact, 0.01 m³ a pulse), the
    // compressor's run contact, a buzzer and a beacon for the alarms.
    config.gpio = demo_gpio();
    let plant_cancel = CancellationToken::new();
    let plant = match opts.plant {
        Some(addr) if !addr.ip().is_loopback() => {
            anyhow::bail!("--plant {addr}: the simulated plant only listens on loopback")
        }
        Some(addr) => {
            let plant =
                super::plant::start(addr, opts.plant_faults, opts.scenario, plant_cancel.clone())
                    .await?;
            let (bus, devices) = plant.config();
            config.modbus.buses.push(bus);
            config.modbus.devices.extend(devices);
            Some(plant)
        }
        None => None,
    };
    // The biogas H2S sensor (the gas analyser measures CH4, CO2 and H2O only) publishes plain
    // numbers over MQTT, as a site's own sensor would.
    config.mqtt.topics.push(crate::config::TopicMap {
        filter: H2S_TOPIC.into(),
        device: crate::config::TopicDevice::Fixed(H2S_DEVICE.into()),
        publishers: crate::config::TopicPublishers::Accounts(vec![H2S_ACCOUNT.into()]),
        payload: crate::config::TopicPayload::Number {
            quantity: "biogas.h2s".into(),
        },
    });
    // Every simulated meter has an account of its own, as on a real site. Hashing is slow on
    // purpose (argon2id), so the accounts are made on the blocking pool, all in one write.
    let accounts: Vec<(String, String)> = (0..opts.meters)
        .map(|i| {
            (
                super::meters::meter_id(i),
                crate::credentials::new_password(),
            )
        })
        .collect();
    // A field device's account, like a meter's (integration accounts are read-only).
    let h2s_password = crate::credentials::new_password();
    {
        let (file, mut accounts) = (config.broker.credentials_file.clone(), accounts.clone());
        accounts.push((H2S_ACCOUNT.to_owned(), h2s_password.clone()));
        tokio::task::spawn_blocking(move || {
            crate::credentials::add_accounts(
                &file,
                crate::credentials::Kind::Meter,
                &accounts,
                true,
            )
        })
        .await??;
    }
    let resolved = crate::topology::resolve(config.validated("demo config")?)?;
    if opts.history_days > 0 {
        let (db, plant, days, meters) = (
            crate::store::db_path(&state_dir),
            resolved.plant.clone(),
            opts.history_days,
            opts.meters,
        );
        let n = tokio::task::spawn_blocking(move || {
            super::history::prefill(&db, plant, days, crate::clock::wall_ns(), meters)
        })
        .await??;
        tracing::info!(
            days,
            readings = n,
            "demo: simulated history written into the windows"
        );
    }
    {
        let (db, days) = (crate::store::db_path(&state_dir), opts.history_days);
        let n = tokio::task::spawn_blocking(move || {
            super::history::feed_logbook(&db, days, crate::clock::wall_ns())
        })
        .await??;
        tracing::info!(
            entries = n,
            "demo: the kitchen's logbook (feeding at 08:00 and 16:00, lab, cylinders)"
        );
    }
    let logins = demo_logins(&state_dir).await?;
    let gw = crate::topology::start_resolved(resolved, clock).await?;
    let mqtt = gw.mqtt_addrs[0];
    let mut banner = format!(
        "Green Kitchen Gateway demo\n  dashboard:    http://{}/   (English / Kiswahili; technician status: /status, metrics: /metrics, health: /healthz, live: /api/live)\n  history:      http://{}/api/history?quantity=digester.pressure&instance=digester-1&points=100\n  MQTT broker:  {mqtt} with {} simulated meters and an H2S sensor (publishing ppm on {H2S_TOPIC}), each with its own account ({}); anonymous clients are read-only\n  state dir:    {}\n",
        gw.http_addr,
        gw.http_addr,
        opts.meters,
        state_dir.join("meters.toml").display(),
        state_dir.display()
    );
    banner.push_str(&logins_banner(&logins, &state_dir));
    banner.push_str(
        "  GPIO (sim):   input gas-meter (line 17, pulses of 0.01 m³ of the gas leaving the digester, plant time 60x), input compressor-run (line 27, the compressor's run contact), outputs buzzer (line 22, steady: alarms until acknowledged) and beacon (line 23, pulsed: warnings and worse until cleared); see the status page\n",
    );
    if let Some(p) = &plant {
        banner.push_str(&format!(
            "  Modbus plant: {} (units 1 digester, 2 energy meter, 3 compressor, 4 gas analyser)\n  try:          gkgw modbus poll --tcp {} --unit 1 --profile demo-digester\n",
            p.addr, p.addr
        ));
    }
    banner.push_str(&format!(
        "  alarms:       http://{}/api/alarms   (acknowledge as the manager: curl -H \"Authorization: Bearer $(cat {})\" -X POST http://{}/api/alarms/RULE:INSTANCE/ack -d '{{\"note\":\"seen\"}}'){}\n",
        gw.http_addr,
        token_file(&state_dir, Role::Manager).display(),
        gw.http_addr,
        match opts.scenario {
            Some(s) => format!("; scenario {} starts in 20 s", s.as_str()),
            None => "; try --scenario leak|souring|overpressure".into(),
        }
    ));
    if let Some(u) = &opts.uplink {
        banner.push_str(&format!(
            "  uplink:       batches every {} s to {} (state: /api/status \"uplink\")\n",
            u.window_s, u.url
        ));
    }
    banner.push_str(&format!(
        "  try:          gkgw logbook --gateway {} --token-file {} list    (or add --kind waste_fed --waste household --kg 120)\n",
        gw.http_addr,
        token_file(&state_dir, Role::Manager).display()
    ));
    banner.push_str(&match &opts.platform_key {
        Some(k) => format!(
            "  commands:     accepted when signed with the private key of the public key {} (a development signer: gkgw command sign --key PRIVATE.pem --meter GM-0001 --kind top_up --args '{{\"amount\":2,\"unit\":\"kg\"}}' | curl -H \"Authorization: Bearer $(cat {})\" --data-binary @- http://{}/api/commands)\n",
            k.display(),
            token_file(&state_dir, Role::Admin).display(),
            gw.http_addr,
        ),
        None => "  commands:     off; try gkgw command keygen --private platform.pem --public platform.pub.pem, then gkgw demo --platform-key platform.pub.pem\n".to_owned(),
    });
    banner.push_str(&format!(
        "  try:          mosquitto_sub -h {} -p {} -t 'meters/#' -t 'alarms/#' -v\n  Ctrl-C stops the demo; everything received is committed first.\n",
        mqtt.ip(),
        mqtt.port()
    ));
    {
        // A closed stdout (`gkgw demo | head`) must not stop the demo.
        use std::io::Write;
        let _ = std::io::stdout().write_all(banner.as_bytes());
        let _ = std::io::stdout().flush();
    }
    let meters = TaskTracker::new();
    let meters_cancel = CancellationToken::new();
    for (i, (_, password)) in accounts.into_iter().enumerate() {
        meters.spawn(super::meters::run_meter(
            mqtt,
            i,
            password,
            opts.meter_interval,
            meters_cancel.clone(),
        ));
    }
    meters.spawn(run_h2s_sensor(
        mqtt,
        h2s_password,
        opts.meter_interval,
        meters_cancel.clone(),
    ));
    if let (Some(sim), Some(p)) = (gw.gpio_sim.clone(), &plant) {
        meters.spawn(drive_gpio(sim, p.gpio.clone(), meters_cancel.clone()));
    }
    meters.close();
    shutdown.cancelled().await;
    meters_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), meters.wait()).await;
    gw.stop(Duration::from_secs(10)).await;
    plant_cancel.cancel();
    Ok(())
}

const H2S_TOPIC: &str = "sensors/h2s-sensor/h2s";
const H2S_DEVICE: &str = "h2s-sensor";
const H2S_ACCOUNT: &str = "H2S-SENSOR";

/// The simulated H2S sensor in the biogas line after the scrubber: an MQTT client of its own
/// account publishing the H2S content in ppm as a plain number every `interval`, wandering
/// around 150 ppm (the default `biogas_h2s_high` rule warns above 1000 ppm: a spent scrubber).
async fn run_h2s_sensor(
    addr: SocketAddr,
    password: String,
    interval: Duration,
    cancel: CancellationToken,
) {
    use rand::{Rng, SeedableRng};
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut opts = MqttOptions::new(H2S_ACCOUNT, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(H2S_ACCOUNT, password);
    let (client, eventloop) = AsyncClient::new(opts, 16);
    let poller = super::meters::drive(eventloop, H2S_ACCOUNT.into(), cancel.clone(), |_| {}, None);
    let mut tick = tokio::time::interval(interval);
    let mut ppm: f64 = 150.0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                ppm = (ppm + rng.gen_range(-10.0..10.0) + (150.0 - ppm) * 0.05).clamp(20.0, 600.0);
                let _ = client.try_publish(H2S_TOPIC, QoS::AtLeastOnce, false, format!("{ppm:.0}"));
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = poller.await;
}

/// The demo's `[gpio]`: the sim backend with the kitchen's gas meter, the compressor's run
/// contact, a buzzer and a beacon.
fn demo_gpio() -> crate::config::Gpio {
    use crate::config::{Bias, GpioBackend, GpioInput, GpioOutput, InputKind, OutputMode};
    let input = |name: &str, line, kind, quantity: Option<&str>| GpioInput {
        name: name.into(),
        line,
        chip: None,
        kind,
        debounce_ms: 10,
        active_low: false,
        bias: Bias::None,
        pulse_m3: None,
        quantity: quantity.map(Into::into),
        report_ms: 10_000,
        flow_window_s: 20,
    };
    let output = |name: &str, line, mode| GpioOutput {
        name: name.into(),
        line,
        chip: None,
        mode,
        on_ms: 500,
        off_ms: 500,
        active_low: false,
    };
    crate::config::Gpio {
        backend: GpioBackend::Sim,
        inputs: vec![
            input("gas-meter", 17, InputKind::Pulse, None),
            input(
                "compressor-run",
                27,
                InputKind::Contact,
                Some("compressor.status.running"),
            ),
        ],
        outputs: vec![
            output("buzzer", 22, OutputMode::Steady),
            output("beacon", 23, OutputMode::Pulsed),
        ],
        ..crate::config::Gpio::default()
    }
}

/// Drives the simulated GPIO from the plant, once a wall second: the compressor's contact
/// follows `compressor_on`; the gas meter at the digester's outlet pulses for the gas the
/// kitchen and the compressor draw (nothing in a leak: the gas escapes before the meter). The plant runs 60×
/// faster than the wall clock ([`super::plant::SPEED`]), so one wall second is a plant
/// minute: 2.4 m³/h at dinner is 0.04 m³, 4 pulses of 0.01 m³ a wall second (the pilot
/// flame's 0.15 m³/h one pulse every 4 s). The counted total is the plant's gas, in plant
/// time, and its `gas.flow` (pulses per wall hour) is 60× the plant's m³/h. Each pulse bounces
/// once at each edge, which the input's debounce filters.
async fn drive_gpio(
    sim: crate::gpio::simulator::Sim,
    view: tokio::sync::watch::Receiver<super::plant::GpioView>,
    cancel: CancellationToken,
) {
    const PULSE_M3: f64 = 0.01;
    let mut owed = 0.0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let v = *view.borrow();
        let _ = sim.set("compressor-run", v.compressor_on);
        owed += v.outlet_m3h * super::plant::SPEED / 3600.0 / PULSE_M3;
        let n = owed.floor();
        owed -= n;
        if n >= 1.0 {
            let _ = sim.pulse("gas-meter", n as u32, 1).await;
        }
    }
}

// ---- Demo logins (issue 13) ----

use crate::users::Role;

/// Where the demo writes the bearer token of its `role` login.
pub fn token_file(state_dir: &std::path::Path, role: Role) -> PathBuf {
    state_dir.join(format!("demo-{role}.token"))
}

/// One login per role, named after it (`viewer`, `manager`, `admin`), with a random password
/// and a bearer token each, kept in the state directory (`demo-{role}.password`, `.token`,
/// mode 0600) for the CLIs and curl; a restart on the same `--state-dir` reuses them, a new
/// directory gets new ones. Returns (role, password).
async fn demo_logins(state_dir: &std::path::Path) -> anyhow::Result<Vec<(Role, String)>> {
    let (db, dir) = (crate::store::db_path(state_dir), state_dir.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut users = crate::store::users::Users::open(&db)?;
        let now = crate::clock::wall_ns();
        let mut logins = Vec::new();
        let known: Vec<String> = users.list(now)?.into_iter().map(|u| u.name).collect();
        for role in Role::ALL {
            // A restart on the same state directory keeps the logins (and the sessions of
            // open dashboards): the password is kept next to the token.
            let pw_file = dir.join(format!("demo-{role}.password"));
            let kept = std::fs::read_to_string(&pw_file)
                .ok()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty() && known.iter().any(|k| k == role.as_str()));
            if let Some(password) = kept.filter(|_| token_file(&dir, role).exists()) {
                logins.push((role, password));
                continue;
            }
            let password = crate::credentials::new_password();
            let hash = crate::credentials::hash_password(&password)?;
            users.add(role.as_str(), role, &hash, true, now)?;
            let token = users.issue_token(role.as_str(), Some("gkgw demo"), now)?;
            crate::web::users_cli::write_token(&token_file(&dir, role), &token)?;
            crate::web::users_cli::write_token(&pw_file, &password)?;
            logins.push((role, password));
        }
        Ok(logins)
    })
    .await?
}

fn logins_banner(logins: &[(Role, String)], state_dir: &std::path::Path) -> String {
    let mut out = String::new();
    for (role, password) in logins {
        out.push_str(&format!(
            "  login:        {:<8} password {password}   (token: {})\n",
            role.as_str(),
            token_file(state_dir, *role).display()
        ));
    }
    out.push_str(&format!(
        "  audit log:    gkgw audit list --state-dir {}   (users: gkgw user list --state-dir …)\n",
        state_dir.display()
    ));
    out
}
