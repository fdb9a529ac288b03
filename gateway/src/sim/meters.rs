//! Simulated field meters: real MQTT clients (rumqttc) of the embedded broker, each logged in
//! with its own account, reporting gas or electricity use shaped by meal times. They take the
//! platform's commands on `meters/{id}/cmd` (top-up, valve, relay, tariff, time sync) and
//! answer on `meters/{id}/cmd/ack`; a command id seen before gets its first answer again.

use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use super::eat_hour;

fn meal_factor(hour: f64) -> f64 {
    match hour {
        h if (6.5..8.0).contains(&h) => 1.0,
        h if (12.0..13.5).contains(&h) => 1.0,
        h if (18.0..20.0).contains(&h) => 1.2,
        _ => 0.1,
    }
}

/// A simulated meter's total when the demo starts (kg or kWh): fixed per meter, so the history
/// `--history-days` pre-fills ends where the live meter goes on (no false reset).
pub(crate) fn start_total(index: usize) -> f64 {
    200.0 + 13.7 * (index % 20) as f64
}

/// The gas (kg/h) or electricity (kWh/h) a simulated meter uses at an hour of day, on average,
/// in real time (the live demo meters run 60 times faster).
pub(crate) fn use_per_hour(gas: bool, hour: f64) -> f64 {
    (if gas { 0.25 } else { 1.5 }) * meal_factor(hour)
}

/// The simulated state of one meter; `step` advances it by one reporting interval.
pub(crate) struct SimMeter {
    id: String,
    gas: bool,
    seq: u64,
    cumulative: f64,
    credit: f64,
    battery: f64,
    rssi: f64,
    /// Closed by a command (valve or relay): no gas or power whatever the credit.
    shut: bool,
    /// The answers given, by command id (a resent command is answered again, not re-applied).
    answered: std::collections::HashMap<String, String>,
}

/// The credit an OpenPAYGo/STS token is worth in the simulation (a real meter decodes it).
pub const TOKEN_CREDIT: f64 = 5.0;

impl SimMeter {
    fn new(index: usize, gas: bool, rng: &mut impl Rng) -> SimMeter {
        SimMeter {
            id: meter_id(index),
            gas,
            seq: 0,
            cumulative: start_total(index),
            credit: rng.gen_range(0.5..6.0),
            battery: rng.gen_range(3.6..4.1),
            rssi: rng.gen_range(-95.0..-60.0),
            shut: false,
            answered: std::collections::HashMap::new(),
        }
    }

    /// Applies a command from `meters/{id}/cmd` and returns the answer for
    /// `meters/{id}/cmd/ack` (None: not a command at all).
    pub(crate) fn command(&mut self, payload: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let id = v.get("id")?.as_str()?.to_owned();
        if let Some(a) = self.answered.get(&id) {
            return Some(a.clone());
        }
        let args = v.get("args").cloned().unwrap_or_default();
        let state = args.get("state").and_then(|s| s.as_str());
        let result: Result<String, String> = match v.get("kind").and_then(|k| k.as_str()) {
            Some("top_up") => {
                let add = match (
                    args.get("amount").and_then(|a| a.as_f64()),
                    args.get("token"),
                ) {
                    (Some(a), _) => a,
                    (None, Some(_)) => TOKEN_CREDIT,
                    _ => 0.0,
                };
                if add > 0.0 {
                    self.credit += add;
                    Ok(format!("credited {add}"))
                } else {
                    Err("nothing to credit".into())
                }
            }
            Some("valve") if !self.gas => Err("no valve: an electricity meter".into()),
            Some("relay") if self.gas => Err("no relay: a gas meter".into()),
            Some("valve" | "relay") => match state {
                Some("open") => {
                    // An open valve lets gas through; an open relay cuts the power.
                    self.shut = !self.gas;
                    Ok(format!("{} open", if self.gas { "valve" } else { "relay" }))
                }
                Some("closed") => {
                    self.shut = self.gas;
                    Ok(format!(
                        "{} closed",
                        if self.gas { "valve" } else { "relay" }
                    ))
                }
                _ => Err("state must be open or closed".into()),
            },
            Some("tariff") => Ok("tariff set".into()),
            Some("time_sync") => Ok("time set".into()),
            _ => Err("unknown command".into()),
        };
        let (result, detail) = match result {
            Ok(d) => ("applied", d),
            Err(d) => ("rejected", d),
        };
        let answer = serde_json::json!({
            "id": id,
            "result": result,
            "detail": detail,
            "credit": (self.credit * 1000.0).round() / 1000.0,
        })
        .to_string();
        self.answered.insert(id, answer.clone());
        Some(answer)
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
                if self.credit > 0.0 && !self.shut {
                    "open"
                } else {
                    "closed"
                },
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
                if self.credit > 0.0 && !self.shut {
                    "closed"
                } else {
                    "open"
                },
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

pub fn meter_id(index: usize) -> String {
    format!(
        "{}-{:04}",
        if index.is_multiple_of(2) { "GM" } else { "EM" },
        index + 1
    )
}

/// Drives a simulated client's MQTT event loop in a task of its own until `cancel`, with a
/// backoff between failed connections, and hands each incoming publish to `incoming`.
/// `EventLoop::poll` must not be raced against a timer in a `select!`: a poll dropped while
/// it waits for a CONNACK drops the connection, and the next poll logs in again (under load
/// at the demo's start that made the simulated meters reconnect over and over).
pub(crate) fn drive(
    mut eventloop: rumqttc::EventLoop,
    who: String,
    cancel: CancellationToken,
    on_connack: impl Fn(bool) + Send + 'static,
    incoming: Option<tokio::sync::mpsc::UnboundedSender<rumqttc::Publish>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = eventloop.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    backoff = Duration::from_millis(200);
                    on_connack(c.session_present);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(tx) = &incoming {
                        let _ = tx.send(p);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(client = %who, error = %e, "simulated client reconnecting");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    })
}

/// One simulated meter: connects, subscribes to its ack topic, publishes every `interval`.
pub async fn run_meter(
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
    let (client, eventloop) = AsyncClient::new(opts, 64);
    let ack_topic = format!("meters/{}/ack", meter.id);
    let cmd_topic = format!("meters/{}/cmd", meter.id);
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
    let poller = {
        let (client, ack_topic, cmd_topic) = (client.clone(), ack_topic.clone(), cmd_topic.clone());
        drive(
            eventloop,
            meter.id.clone(),
            cancel.clone(),
            move |session_present| {
                if !session_present {
                    let _ = client.try_subscribe(ack_topic.clone(), QoS::AtLeastOnce);
                    let _ = client.try_subscribe(cmd_topic.clone(), QoS::AtLeastOnce);
                }
            },
            Some(tx),
        )
    };
    // Spread the meters over the interval so they do not all report at once.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + interval.mul_f64(rng.gen_range(0.0..1.0)),
        interval,
    );
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
            Some(p) = commands.recv() => {
                if p.topic == cmd_topic {
                    if let Some(answer) = meter.command(&p.payload) {
                        let _ = client.try_publish(format!("{cmd_topic}/ack"), QoS::AtLeastOnce, false, answer);
                    }
                }
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = poller.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_meters_produce_payloads_the_gateway_accepts() {
        let rules = crate::sources::mqtt::Rules::meters_only(4096);
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
                    crate::clock::Stamp::new(crate::clock::wall_ns(), true),
                );
                assert!(r.is_ok(), "{state}: {r:?}");
                if let Some(e) = event {
                    let topic = format!("meters/{}/event", m.id);
                    assert!(
                        crate::sources::mqtt::parse(
                            &rules,
                            &topic,
                            e.as_bytes(),
                            crate::clock::Stamp::new(crate::clock::wall_ns(), true)
                        )
                        .is_ok(),
                        "{e}"
                    );
                }
            }
            assert!(m.credit >= 0.0);
        }
    }

    #[test]
    fn simulated_meters_apply_commands_once_and_answer() {
        let mut rng = rand::thread_rng();
        let mut gas = SimMeter::new(0, true, &mut rng);
        let before = gas.credit;
        let ack = |s: Option<String>| -> serde_json::Value {
            serde_json::from_str(&s.expect("an answer")).expect("json")
        };
        let top_up = br#"{"id":"c1","kind":"top_up","args":{"amount":2,"unit":"kg"},"exp":9}"#;
        let a = ack(gas.command(top_up));
        assert_eq!(a["id"], "c1");
        assert_eq!(a["result"], "applied");
        assert!((gas.credit - before - 2.0).abs() < 1e-9);
        assert_eq!(
            ack(gas.command(top_up)),
            a,
            "a resend is answered, not re-applied"
        );
        assert!((gas.credit - before - 2.0).abs() < 1e-9);
        let token = br#"{"id":"c2","kind":"top_up","args":{"token":"123456789"},"exp":9}"#;
        assert_eq!(ack(gas.command(token))["result"], "applied");
        assert!((gas.credit - before - 2.0 - TOKEN_CREDIT).abs() < 1e-9);
        let close = br#"{"id":"c3","kind":"valve","args":{"state":"closed"},"exp":9}"#;
        assert_eq!(ack(gas.command(close))["result"], "applied");
        let (state, _) = gas.step(Duration::from_secs(1), &mut rng);
        assert!(state.contains(r#""valve":"closed""#), "{state}");
        let relay = br#"{"id":"c4","kind":"relay","args":{"state":"open"},"exp":9}"#;
        assert_eq!(ack(gas.command(relay))["result"], "rejected");
        assert!(gas.command(b"not json").is_none());
    }
}
