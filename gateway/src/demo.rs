//! `gkgw demo`: the whole gateway on one machine with nothing installed. Simulated meters are
//! real MQTT clients (rumqttc) of the embedded broker, each logged in with its own account
//! (created in the state directory at start); the store lives in a temporary directory.
//! Anonymous loopback clients (`mosquitto_sub`) are let in read-only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
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
}

/// East Africa Time hour of day (UTC+3) for meal-time gas use.
pub(crate) fn eat_hour() -> f64 {
    let secs = crate::model::now_ns() / 1_000_000_000;
    ((secs + 3 * 3600) % 86_400) as f64 / 3600.0
}

fn meal_factor(hour: f64) -> f64 {
    match hour {
        h if (6.5..8.0).contains(&h) => 1.0,
        h if (12.0..13.5).contains(&h) => 1.0,
        h if (18.0..20.0).contains(&h) => 1.2,
        _ => 0.1,
    }
}

/// The simulated state of one meter; `step` advances it by one reporting interval.
struct SimMeter {
    id: String,
    gas: bool,
    seq: u64,
    cumulative: f64,
    credit: f64,
    battery: f64,
    rssi: f64,
}

impl SimMeter {
    fn new(index: usize, gas: bool, rng: &mut impl Rng) -> SimMeter {
        SimMeter {
            id: meter_id(index),
            gas,
            seq: 0,
            cumulative: rng.gen_range(5.0..500.0),
            credit: rng.gen_range(0.5..6.0),
            battery: rng.gen_range(3.6..4.1),
            rssi: rng.gen_range(-95.0..-60.0),
        }
    }

    /// The next state payload and, when credit just ran low, a `low_credit` event.
    fn step(&mut self, interval: Duration, rng: &mut impl Rng) -> (String, Option<String>) {
        self.seq += 1;
        let hours = interval.as_secs_f64() / 3600.0;
        let rate =
            if self.gas { 0.6 } else { 1.5 } * meal_factor(eat_hour()) * rng.gen_range(0.5..1.5);
        let before = self.credit;
        let used = if self.credit > 0.0 {
            (rate * hours * 60.0).min(self.credit)
        } else {
            0.0
        };
        self.cumulative += used;
        self.credit -= used;
        if self.credit <= 0.0 && rng.gen_bool(0.05) {
            self.credit += rng.gen_range(1.0..5.0); // a customer tops up
        }
        self.battery = (self.battery - rng.gen_range(0.0..0.0005)).max(3.3);
        self.rssi = (self.rssi + rng.gen_range(-2.0..2.0)).clamp(-110.0, -50.0);
        let state = if self.gas {
            format!(
                r#"{{"meter_id":"{}","seq":{},"kind":"gas","cum_kg":{:.3},"credit_kg":{:.3},"valve":"{}","battery_v":{:.2},"rssi":{:.0},"tamper":false}}"#,
                self.id,
                self.seq,
                self.cumulative,
                self.credit,
                if self.credit > 0.0 { "open" } else { "closed" },
                self.battery,
                self.rssi
            )
        } else {
            format!(
                r#"{{"meter_id":"{}","seq":{},"kind":"electricity","cum_kwh":{:.2},"credit_kwh":{:.2},"relay":"{}","status":"active","rssi":{:.0}}}"#,
                self.id,
                self.seq,
                self.cumulative,
                self.credit,
                if self.credit > 0.0 { "closed" } else { "open" },
                self.rssi
            )
        };
        let low = if self.gas { 0.5 } else { 2.0 };
        let event = if before >= low && self.credit < low {
            self.seq += 1;
            Some(format!(
                r#"{{"meter_id":"{}","seq":{},"event":"low_credit"}}"#,
                self.id, self.seq
            ))
        } else {
            None
        };
        (state, event)
    }
}

fn meter_id(index: usize) -> String {
    format!(
        "{}-{:04}",
        if index.is_multiple_of(2) { "GM" } else { "EM" },
        index + 1
    )
}

/// One simulated meter: connects, subscribes to its ack topic, publishes every `interval`.
async fn run_meter(
    addr: SocketAddr,
    index: usize,
    password: String,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut meter = SimMeter::new(index, index.is_multiple_of(2), &mut rng);
    let mut opts = MqttOptions::new(meter.id.clone(), addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(meter.id.clone(), password);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let _ = client.try_subscribe(format!("meters/{}/ack", meter.id), QoS::AtLeastOnce);
    // Spread the meters over the interval so they do not all report at once.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + interval.mul_f64(rng.gen_range(0.0..1.0)),
        interval,
    );
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                let (state, event) = meter.step(interval, &mut rng);
                let _ = client.try_publish(format!("meters/{}/state", meter.id), QoS::AtLeastOnce, false, state);
                if let Some(e) = event {
                    let _ = client.try_publish(format!("meters/{}/event", meter.id), QoS::AtLeastOnce, false, e);
                }
            }
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => backoff = Duration::from_millis(200),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(meter = %meter.id, error = %e, "simulated meter reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    let _ = client.try_disconnect();
}

pub async fn run(opts: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
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
    config.store.state_dir = state_dir.clone();
    config.broker.listen = opts.mqtt;
    config.broker.allow_anonymous = true;
    config.broker.credentials_file = state_dir.join("meters.toml");
    config.http.listen = opts.http;
    if let Some(i) = opts.influx {
        config.influx = i;
    }
    if !opts.mqtt.ip().is_loopback() {
        anyhow::bail!(
            "--mqtt {}: the demo broker accepts anonymous clients, so it only listens on loopback",
            opts.mqtt
        );
    }
    let plant_cancel = CancellationToken::new();
    let plant = match opts.plant {
        Some(addr) if !addr.ip().is_loopback() => {
            anyhow::bail!("--plant {addr}: the simulated plant only listens on loopback")
        }
        Some(addr) => {
            let plant =
                crate::demo_plant::start(addr, opts.plant_faults, plant_cancel.clone()).await?;
            let (bus, devices) = plant.config();
            config.modbus.buses.push(bus);
            config.modbus.devices.extend(devices);
            Some(plant)
        }
        None => None,
    };
    // Every simulated meter has an account of its own, as on a real site. Hashing is slow on
    // purpose (argon2id), so the accounts are made on the blocking pool, all in one write.
    let accounts: Vec<(String, String)> = (0..opts.meters)
        .map(|i| (meter_id(i), crate::credentials::new_password()))
        .collect();
    {
        let (file, accounts) = (config.broker.credentials_file.clone(), accounts.clone());
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
    let gw = crate::topology::start(config).await?;
    let mqtt = gw.mqtt_addrs[0];
    let mut banner = format!(
        "Green Kitchen Gateway demo\n  status page:  http://{}/   (metrics: /metrics, health: /healthz)\n  MQTT broker:  {mqtt} with {} simulated meters, each with its own account ({}); anonymous clients are read-only\n  state dir:    {}\n",
        gw.http_addr,
        opts.meters,
        state_dir.join("meters.toml").display(),
        state_dir.display()
    );
    if let Some(p) = &plant {
        banner.push_str(&format!(
            "  Modbus plant: {} (units 1 digester, 2 energy meter, 3 compressor, 4 gas analyser)\n  try:          gkgw modbus poll --tcp {} --unit 1 --profile demo-digester\n",
            p.addr, p.addr
        ));
    }
    banner.push_str(&format!(
        "  try:          mosquitto_sub -h {} -p {} -t 'meters/#' -v\n  Ctrl-C stops the demo; everything received is committed first.\n",
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
        meters.spawn(run_meter(
            mqtt,
            i,
            password,
            opts.meter_interval,
            meters_cancel.clone(),
        ));
    }
    meters.close();
    shutdown.cancelled().await;
    meters_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), meters.wait()).await;
    gw.stop(Duration::from_secs(10)).await;
    plant_cancel.cancel();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_meters_produce_payloads_the_gateway_accepts() {
        let rules = crate::sources::mqtt::Rules {
            max_payload_bytes: 4096,
            topics: Vec::new(),
        };
        let mut rng = rand::thread_rng();
        for gas in [true, false] {
            let mut m = SimMeter::new(0, gas, &mut rng);
            for _ in 0..500 {
                let (state, event) = m.step(Duration::from_secs(60), &mut rng);
                let topic = format!("meters/{}/state", m.id);
                let r = crate::sources::mqtt::parse(
                    &rules,
                    &topic,
                    state.as_bytes(),
                    crate::model::now_ns(),
                );
                assert!(r.is_ok(), "{state}: {r:?}");
                if let Some(e) = event {
                    let topic = format!("meters/{}/event", m.id);
                    assert!(
                        crate::sources::mqtt::parse(
                            &rules,
                            &topic,
                            e.as_bytes(),
                            crate::model::now_ns()
                        )
                        .is_ok(),
                        "{e}"
                    );
                }
            }
            assert!(m.credit >= 0.0);
        }
    }
}
