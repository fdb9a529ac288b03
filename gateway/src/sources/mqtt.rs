//! MQTT ingest: messages from the embedded broker become readings.
//!
//! Built-in meter topics: `meters/{meter_id}/state` and `meters/{meter_id}/event` with the JSON
//! payloads of PRODUCT.md (names after OpenPAYGO Metrics where they fit). Configured topic maps
//! ([`crate::config::TopicMap`]) take JSON, a plain number or InfluxDB line protocol.
//!
//! Parsing is pure ([`parse`]); [`Ingest`] only moves data: the broker hands it each publish the
//! ACL allowed, from the publishing connection's task, and it sends the readings into the
//! store's bounded channel (awaiting there is the backpressure that slows a publisher down). A
//! rejected message is counted per reason and logged at most once per reason every 10 s, and
//! never stops the stream.
//!
//! A meter value outside its plausible range (negative cumulative gas, a battery at −2 V, an
//! RSSI of +50 dBm) is not stored as a number: the reading gets `Quality::Bad` and a
//! `{field}_quality = "out_of_range"` field instead, as Modbus values do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value as Json;

use crate::broker::{topic_matches, Identity, Refused};
use crate::clock::{Clock, Stamp};
use crate::config::{TopicDevice, TopicPayload, TopicPublishers};
use crate::metrics::{Counter, CounterFamily, LabelValue, Registry};
use crate::model::{AckRequest, Quality, Reading, Receipt, Series, Value};
use crate::plant::{self, Instance, MeterKind, Plant, Quantity};

/// Why a message or reading was rejected before it reached the store
/// (`gkgw_readings_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not valid JSON, not a number, or not line protocol.
    Malformed,
    /// Valid syntax, but a required field is missing or has the wrong type.
    Invalid,
    /// The payload's `meter_id` differs from the id in its topic.
    MeterIdMismatch,
    /// Larger than `mqtt.max_payload_bytes` (or, refused by the broker already, than
    /// `broker.max_packet_bytes`).
    Oversized,
    /// Timestamp before 2020 or more than a day in the future.
    BadTimestamp,
    /// A topic no pattern maps.
    UnknownTopic,
    /// Line protocol naming a measurement and field that is no quantity's stored name.
    UnknownQuantity,
    /// A connection tried to speak (publish, subscribe, will, client id) for an account other
    /// than its own: refused by the broker ([`Refused::Identity`]) or, for a line-protocol
    /// payload, by `parse`.
    Identity,
}

impl LabelValue for RejectReason {
    const ALL: &'static [RejectReason] = &[
        RejectReason::Malformed,
        RejectReason::Invalid,
        RejectReason::MeterIdMismatch,
        RejectReason::Oversized,
        RejectReason::BadTimestamp,
        RejectReason::UnknownTopic,
        RejectReason::UnknownQuantity,
        RejectReason::Identity,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Invalid => "invalid",
            RejectReason::MeterIdMismatch => "meter_id_mismatch",
            RejectReason::Oversized => "oversized",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::UnknownTopic => "unknown_topic",
            RejectReason::UnknownQuantity => "unknown_quantity",
            RejectReason::Identity => "identity",
        }
    }
}

impl From<Refused> for RejectReason {
    fn from(r: Refused) -> RejectReason {
        match r {
            Refused::Identity => RejectReason::Identity,
            Refused::Oversized => RejectReason::Oversized,
        }
    }
}

/// What the MQTT source counts.
pub struct Metrics {
    /// Messages received on ingest topics.
    pub messages: Arc<Counter>,
    pub rejected: Arc<CounterFamily<RejectReason>>,
}

impl Metrics {
    /// Registers the MQTT source's metrics with `r`.
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            messages: r.counter(
                "gkgw_mqtt_messages_total",
                "MQTT messages received on ingest topics.",
            ),
            rejected: r.counter_family(
                "gkgw_readings_rejected_total",
                "Messages rejected before the store, by reason.",
                "reason",
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

/// Everything `parse` needs besides the message: the configured topics resolved to the
/// quantities they feed, and the meter payload fields with their quantities' ranges.
pub struct Rules {
    pub max_payload_bytes: usize,
    topics: Vec<TopicRule>,
    /// `plant::METER_FIELDS` with their quantities, in payload order.
    meter: Vec<(plant::MeterField, Arc<Quantity>)>,
    /// For line protocol: which stored names are quantities.
    plant: Arc<Plant>,
}

/// Where a value goes: its quantity and its stored name.
#[derive(Debug, Clone)]
struct Target {
    quantity: Arc<Quantity>,
    measurement: Arc<str>,
    field: String,
}

#[derive(Debug, Clone)]
enum Payload {
    Number(Target),
    /// (dotted JSON path, target).
    Json(Vec<(String, Target)>),
    LineProtocol,
}

#[derive(Debug, Clone)]
struct TopicRule {
    filter: String,
    device: TopicDevice,
    payload: Payload,
}

impl Rules {
    /// Resolves the configured topics against the catalogue and records their bindings (and
    /// the meter payloads') in `plant`, which the rules then share: bind the other sources
    /// first, this takes the plant as complete ([`Rules::plant`]). Errors name the config key.
    pub fn bind(config: &crate::config::Mqtt, mut plant: Plant) -> Result<Rules, plant::Error> {
        plant.bind_meters()?;
        let mut topics = Vec::new();
        for (i, t) in config.topics.iter().enumerate() {
            let instance = match &t.device {
                TopicDevice::Fixed(d) => Instance::Device(d.clone()),
                TopicDevice::Level(l) => Instance::TopicLevel(*l),
                TopicDevice::FromPayload => Instance::FromPayload,
            };
            let mut target = |key: String, quantity: &str, what: String| {
                let unit = plant.catalogue.require(&key, quantity)?.unit.clone();
                let b = plant.bind(
                    &key,
                    quantity,
                    instance.clone(),
                    format!("mqtt {} {what}", t.filter),
                    &unit,
                    "on publish".into(),
                )?;
                Ok::<Target, plant::Error>(Target {
                    quantity: b.quantity.clone(),
                    measurement: Arc::from(b.measurement.as_str()),
                    field: b.field.clone(),
                })
            };
            let payload = match &t.payload {
                TopicPayload::Number { quantity } => Payload::Number(target(
                    format!("mqtt.topics[{i}].quantity"),
                    quantity,
                    "(number)".into(),
                )?),
                TopicPayload::Json { values } => Payload::Json(
                    values
                        .iter()
                        .map(|(q, path)| {
                            target(format!("mqtt.topics[{i}].values"), q, format!("\"{path}\""))
                                .map(|t| (path.clone(), t))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                TopicPayload::LineProtocol => Payload::LineProtocol,
            };
            topics.push(TopicRule {
                filter: t.filter.clone(),
                device: t.device.clone(),
                payload,
            });
        }
        let meter = plant::METER_FIELDS
            .iter()
            .map(|m| {
                plant
                    .catalogue
                    .require("built-in meter payload", m.quantity)
                    .map(|q| (*m, q.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Rules {
            max_payload_bytes: config.max_payload_bytes,
            topics,
            meter,
            plant: Arc::new(plant),
        })
    }
}

impl Rules {
    /// The built-in meter topics alone, with the built-in catalogue (benchmarks, simulators).
    pub fn meters_only(max_payload_bytes: usize) -> Rules {
        let config = crate::config::Mqtt {
            max_payload_bytes,
            topics: Vec::new(),
        };
        Rules::bind(&config, Plant::new(plant::Catalogue::builtin()))
            .expect("the built-in meter bindings are valid (tested)")
    }

    /// The site's plant, with every binding.
    pub fn plant(&self) -> &Arc<Plant> {
        &self.plant
    }
}

/// Who may publish to each configured topic, for the broker's ACL.
pub fn publish_rules(config: &crate::config::Mqtt) -> Vec<crate::broker::PublishRule> {
    config
        .topics
        .iter()
        .map(|t| crate::broker::PublishRule {
            filter: t.filter.clone(),
            owner: match &t.publishers {
                TopicPublishers::DeviceLevel(l) => crate::broker::Owner::Level(*l),
                TopicPublishers::Accounts(a) => crate::broker::Owner::Accounts(a.clone()),
            },
        })
        .collect()
}

/// A device's own timestamp, if plausible (`Stamp::plausible`: not before the build date, not
/// more than a day ahead of our clock while it is synchronised).
fn check_ts(ts_ns: i64, now: Stamp) -> Result<i64, RejectReason> {
    if now.plausible(ts_ns) {
        Ok(ts_ns)
    } else {
        Err(RejectReason::BadTimestamp)
    }
}

/// Timestamp and quality of a reading: the device's own timestamp as it is (a meter's clock is
/// not ours to mark or correct), else arrival time, marked when our clock is unsynchronised.
fn stamped(device_ts: Option<i64>, now: Stamp, quality: Quality) -> (i64, Quality) {
    match device_ts {
        Some(ts) => (ts, quality),
        None => (now.ts_ns, now.quality(quality)),
    }
}

/// The device's `ts`, as RFC 3339 text or Unix seconds (integer or fractional), if present.
fn json_ts(obj: &serde_json::Map<String, Json>, now: Stamp) -> Result<Option<i64>, RejectReason> {
    match obj.get("ts") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => {
            let t =
                chrono::DateTime::parse_from_rfc3339(s).map_err(|_| RejectReason::BadTimestamp)?;
            check_ts(
                t.timestamp_nanos_opt().ok_or(RejectReason::BadTimestamp)?,
                now,
            )
            .map(Some)
        }
        Some(Json::Number(n)) => {
            let secs = n.as_f64().ok_or(RejectReason::BadTimestamp)?;
            check_ts((secs * 1e9) as i64, now).map(Some)
        }
        Some(_) => Err(RejectReason::BadTimestamp),
    }
}

fn num(obj: &serde_json::Map<String, Json>, key: &str) -> Result<Option<f64>, RejectReason> {
    match obj.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or(RejectReason::Invalid),
        Some(_) => Err(RejectReason::Invalid),
    }
}

fn text(
    obj: &serde_json::Map<String, Json>,
    key: &str,
    allowed: &[&str],
) -> Result<Option<String>, RejectReason> {
    match obj.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s))
            if allowed.is_empty() && s.len() <= 64 || allowed.contains(&s.as_str()) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(RejectReason::Invalid),
    }
}

/// Measurements only the built-in meter topics write.
const METER_MEASUREMENTS: [&str; 3] = ["gas_meter", "electricity_meter", "meter_event"];

/// The words a meter's text fields may hold; anything else is `invalid`.
fn allowed_words(key: &str) -> &'static [&'static str] {
    match key {
        "valve" => &["open", "closed", "locked"],
        "relay" => &["open", "closed"],
        "status" => &["active", "inactive", "suspended"],
        _ => &[],
    }
}

/// Supplementary fields: a message of only these (no usage, credit or switch state) is invalid.
fn supplementary(quantity: &str) -> bool {
    matches!(quantity, "meter.battery" | "meter.rssi" | "meter.tamper")
}

/// Pushes `field = v`, or, when `v` is outside the quantity's plausible range,
/// `{field}_quality = "out_of_range"` and marks the reading bad.
fn push_checked(
    fields: &mut Vec<(String, Value)>,
    quality: &mut Quality,
    field: &str,
    v: f64,
    q: &Quantity,
) {
    if q.plausible(v) {
        fields.push((field.to_owned(), Value::Float(v)));
    } else {
        fields.push((
            format!("{field}_quality"),
            Value::Str("out_of_range".into()),
        ));
        *quality = Quality::Bad;
    }
}

/// A meter payload (`state` or `event`) for the meter named in the topic. Fields and their
/// quantities come from `plant::METER_FIELDS`; ranges from the quantity catalogue.
fn parse_meter(
    rules: &Rules,
    topic_id: &str,
    event: bool,
    payload: &[u8],
    now: Stamp,
) -> Result<Reading, RejectReason> {
    let json: Json = serde_json::from_slice(payload).map_err(|_| RejectReason::Malformed)?;
    let Json::Object(obj) = json else {
        return Err(RejectReason::Invalid);
    };
    match obj.get("meter_id") {
        Some(Json::String(id)) if id == topic_id => {}
        Some(Json::String(_)) => return Err(RejectReason::MeterIdMismatch),
        _ => return Err(RejectReason::Invalid),
    }
    let seq = match obj.get("seq") {
        None | Some(Json::Null) => None,
        Some(s) => Some(s.as_u64().ok_or(RejectReason::Invalid)?),
    };
    let device_ts = json_ts(&obj, now)?;
    let kind = if event {
        MeterKind::Event
    } else {
        match obj.get("kind").and_then(Json::as_str) {
            Some("gas") => MeterKind::Gas,
            Some("electricity") => MeterKind::Electricity,
            _ => return Err(RejectReason::Invalid),
        }
    };
    let mut fields: Vec<(String, Value)> = Vec::with_capacity(8);
    let mut quality = Quality::Good;
    let mut primary = 0;
    for (m, q) in rules.meter.iter().filter(|(m, _)| m.kind == kind) {
        let before = fields.len();
        match q.kind {
            plant::Kind::Gauge | plant::Kind::Counter => {
                if let Some(v) = num(&obj, m.key)? {
                    push_checked(&mut fields, &mut quality, m.field, v, q);
                }
            }
            plant::Kind::Text => {
                if let Some(v) = text(&obj, m.key, allowed_words(m.key))? {
                    fields.push((m.field.to_owned(), Value::Str(v)));
                }
            }
            plant::Kind::State => match obj.get(m.key) {
                None | Some(Json::Null) => {}
                Some(Json::Bool(b)) => fields.push((m.field.to_owned(), Value::Bool(*b))),
                Some(_) => return Err(RejectReason::Invalid),
            },
        }
        if !supplementary(&q.name) {
            primary += fields.len() - before;
        }
    }
    let required_missing = match kind {
        // An event must say which event it is.
        MeterKind::Event => !fields.iter().any(|(f, _)| f == "event"),
        _ => primary == 0,
    };
    if required_missing {
        return Err(RejectReason::Invalid);
    }
    if let Some(s) = seq {
        fields.push(("seq".into(), Value::Int(s as i64)));
    }
    let meter: Arc<str> = Arc::from(topic_id);
    let (ts_ns, quality) = stamped(device_ts, now, quality);
    Ok(Reading {
        series: Series::new(kind.measurement(), meter.clone()),
        ts_ns,
        quality,
        fields,
        ack: seq.map(|seq| AckRequest {
            meter_id: meter,
            seq,
        }),
        receipt: None,
    })
}

fn json_path<'a>(v: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn device_of(rule: &TopicRule, topic: &str) -> String {
    match &rule.device {
        TopicDevice::Fixed(d) => d.clone(),
        TopicDevice::Level(l) => topic.split('/').nth(*l).unwrap_or_default().to_owned(),
        TopicDevice::FromPayload => String::new(),
    }
}

/// One message to zero or more readings (line protocol can carry several points).
pub fn parse(
    rules: &Rules,
    topic: &str,
    payload: &[u8],
    now: Stamp,
) -> Result<Vec<Reading>, RejectReason> {
    if payload.len() > rules.max_payload_bytes {
        return Err(RejectReason::Oversized);
    }
    let levels: Vec<&str> = topic.split('/').collect();
    if let ["meters", id, kind @ ("state" | "event")] = levels.as_slice() {
        return parse_meter(rules, id, *kind == "event", payload, now).map(|r| vec![r]);
    }
    let map = rules
        .topics
        .iter()
        .find(|m| topic_matches(&m.filter, topic))
        .ok_or(RejectReason::UnknownTopic)?;
    let text = std::str::from_utf8(payload).map_err(|_| RejectReason::Malformed)?;
    match &map.payload {
        Payload::Number(t) => {
            let v: f64 = text.trim().parse().map_err(|_| RejectReason::Malformed)?;
            if !v.is_finite() {
                return Err(RejectReason::Invalid);
            }
            let mut fields = Vec::with_capacity(1);
            let mut quality = Quality::Good;
            push_checked(&mut fields, &mut quality, &t.field, v, &t.quantity);
            Ok(vec![Reading {
                series: Series::new(t.measurement.clone(), device_of(map, topic)),
                ts_ns: now.ts_ns,
                quality: now.quality(quality),
                fields,
                ack: None,
                receipt: None,
            }])
        }
        Payload::Json(values) => {
            let json: Json = serde_json::from_str(text).map_err(|_| RejectReason::Malformed)?;
            let obj = json.as_object().ok_or(RejectReason::Invalid)?;
            let device_ts = json_ts(obj, now)?;
            let (ts_ns, _) = stamped(device_ts, now, Quality::Good);
            let device = device_of(map, topic);
            // One reading per measurement, in the order the rule lists them.
            let mut out: Vec<Reading> = Vec::new();
            for (path, t) in values {
                let value = match json_path(&json, path) {
                    None | Some(Json::Null) => continue,
                    Some(v) => v,
                };
                let i = match out
                    .iter()
                    .position(|r| r.series.measurement == t.measurement)
                {
                    Some(i) => i,
                    None => {
                        out.push(Reading {
                            series: Series::new(t.measurement.clone(), device.as_str()),
                            ts_ns,
                            quality: Quality::Good,
                            fields: Vec::new(),
                            ack: None,
                            receipt: None,
                        });
                        out.len() - 1
                    }
                };
                let r = &mut out[i];
                match (t.quantity.kind, value) {
                    (plant::Kind::Gauge | plant::Kind::Counter, Json::Number(n)) => {
                        let v = n.as_f64().ok_or(RejectReason::Invalid)?;
                        push_checked(&mut r.fields, &mut r.quality, &t.field, v, &t.quantity);
                    }
                    (plant::Kind::State, Json::Bool(b)) => {
                        r.fields.push((t.field.clone(), Value::Bool(*b)))
                    }
                    (plant::Kind::State, Json::Number(n)) => r.fields.push((
                        t.field.clone(),
                        Value::Float(n.as_f64().ok_or(RejectReason::Invalid)?),
                    )),
                    (plant::Kind::Text | plant::Kind::State, Json::String(s)) if s.len() <= 64 => {
                        r.fields.push((t.field.clone(), Value::Str(s.clone())))
                    }
                    _ => return Err(RejectReason::Invalid),
                }
            }
            out.retain(|r| !r.fields.is_empty());
            if out.is_empty() {
                return Err(RejectReason::Invalid);
            }
            for r in &mut out {
                r.quality = stamped(device_ts, now, r.quality).1;
            }
            Ok(out)
        }
        Payload::LineProtocol => {
            let device = device_of(map, topic);
            let mut out = Vec::new();
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let mut r =
                    crate::line_protocol::parse_line(line).map_err(|_| RejectReason::Malformed)?;
                if METER_MEASUREMENTS.contains(&&*r.series.measurement) {
                    // Only a meter's own connection writes a meter's series.
                    return Err(RejectReason::Identity);
                }
                // Every field must be a quantity's stored name: line protocol may not invent
                // series the plant model does not know.
                if r.fields
                    .iter()
                    .any(|(f, _)| rules.plant.quantity_of(&r.series.measurement, f).is_none())
                {
                    return Err(RejectReason::UnknownQuantity);
                }
                (r.ts_ns, r.quality) = match r.ts_ns {
                    0 => stamped(None, now, r.quality),
                    ts => (check_ts(ts, now)?, r.quality),
                };
                if r.series.device.is_empty() {
                    if device.is_empty() {
                        return Err(RejectReason::Invalid);
                    }
                    r.series.device = Arc::from(device.as_str());
                }
                out.push(r);
            }
            if out.is_empty() {
                return Err(RejectReason::Malformed);
            }
            Ok(out)
        }
    }
}

/// Logs each reject reason at most once per interval, with how many were suppressed.
#[derive(Default)]
struct RateLimitedLog {
    last: BTreeMap<&'static str, (Instant, u64)>,
}

impl RateLimitedLog {
    fn reject(&mut self, reason: RejectReason, topic: &str) {
        let now = Instant::now();
        let entry = self
            .last
            .entry(reason.as_str())
            .or_insert((now - Duration::from_secs(3600), 0));
        if now.duration_since(entry.0) >= Duration::from_secs(10) {
            tracing::warn!(reason = reason.as_str(), topic = ?topic, suppressed = entry.1, "mqtt message rejected");
            *entry = (now, 0);
        } else {
            entry.1 += 1;
        }
    }
}

/// Where a meter's answers to commands (`meters/{id}/cmd/ack`) go: the command relay
/// (`commands::AckSender`), given to the [`Ingest`] in topology.rs. Must not block.
pub trait CommandAcks: Send + Sync + 'static {
    fn ack(&self, meter: &str, payload: Bytes);
}

/// The meter of a `meters/{id}/cmd/ack` topic.
fn cmd_ack_meter(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("meters/")?
        .strip_suffix("/cmd/ack")
        .filter(|m| !m.contains('/'))
}

/// The broker's [`crate::broker::Inbound`]: publishes become readings in the store's channel;
/// answers to commands go to the command relay.
pub struct Ingest {
    acks: Option<Arc<dyn CommandAcks>>,
    rules: Rules,
    intake: crate::intake::Intake,
    metrics: Arc<Metrics>,
    clock: Arc<Clock>,
    log: Mutex<RateLimitedLog>,
}

impl Ingest {
    pub fn new(
        rules: Rules,
        intake: crate::intake::Intake,
        metrics: Arc<Metrics>,
        clock: Arc<Clock>,
    ) -> Ingest {
        Ingest {
            acks: None,
            rules,
            intake,
            metrics,
            clock,
            log: Mutex::default(),
        }
    }
}

impl Ingest {
    /// Hands `meters/{id}/cmd/ack` messages to `acks` instead of parsing them as readings.
    pub fn with_command_acks(mut self, acks: Arc<dyn CommandAcks>) -> Ingest {
        self.acks = Some(acks);
        self
    }
}

impl crate::broker::Inbound for Ingest {
    /// Counted with the rejected messages; the broker has logged it.
    fn refused(&self, why: Refused) {
        self.metrics.rejected.inc(why.into());
    }

    /// Parses and sends the readings, waiting while the store's channel is full. The receipt
    /// rides on the message's last reading: readings are committed in channel order, so when
    /// that one is committed, all of them are.
    async fn publish(
        &self,
        _from: &Identity,
        topic: &str,
        payload: Bytes,
        receipt: Option<Receipt>,
    ) {
        if let (Some(acks), Some(meter)) = (&self.acks, cmd_ack_meter(topic)) {
            // The ACL let only this meter publish here. Handed over at once (never waits on
            // the relay; a full queue drops it, counted, and the command is resent), so the
            // PUBACK goes now: a lost answer costs a resend, never a second application.
            acks.ack(meter, payload);
            if let Some(r) = receipt {
                let _ = r.confirm(None);
            }
            return;
        }
        self.metrics.messages.inc();
        match parse(&self.rules, topic, &payload, self.clock.now()) {
            Ok(mut readings) => {
                if let Some(last) = readings.last_mut() {
                    last.receipt = receipt;
                }
                for r in readings {
                    if self.intake.send(r).await.is_err() {
                        return; // the store is gone: shutting down; nothing was confirmed
                    }
                }
            }
            Err(reason) => {
                self.metrics.rejected.inc(reason);
                if let Ok(mut log) = self.log.lock() {
                    log.reject(reason, topic);
                }
                // Bad input is counted; resending it would not make it good.
                if let Some(r) = receipt {
                    let _ = r.confirm(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_340_000_000_000_000; // 2026-11-22T09:33:20Z
    const YEAR: i64 = 365 * 24 * 3600 * 1_000_000_000;

    /// Our clock at `NOW`; the floor is fixed, so the cases do not expire with the build date.
    fn now(synced: bool) -> Stamp {
        Stamp {
            ts_ns: NOW,
            synced,
            floor_ns: NOW - 3 * YEAR,
        }
    }

    fn rules() -> Rules {
        let config = crate::config::Config::parse(
            "test.toml",
            r#"
[mqtt]
max_payload_bytes = 512
[[mqtt.topics]]
filter = "sensors/+/temp"
format = "number"
quantity = "digester.temperature"
device_level = 1
[[mqtt.topics]]
filter = "lab/json"
format = "json"
device = "lab1"
publishers = ["LAB"]
[mqtt.topics.values]
"digester.ph" = "sample.ph"
"biogas.ch4" = "sample.ch4"
[[mqtt.topics]]
filter = "lp/#"
format = "line_protocol"
device = "lp-dev"
publishers = ["LP"]
[[plant.quantity]]
name = "power.volts"
unit = "V"
kind = "gauge"
measurement = "power"
field = "volts"
[[plant.quantity]]
name = "power.on"
kind = "state"
measurement = "power"
field = "on"
[[plant.quantity]]
name = "power.watts"
unit = "W"
kind = "gauge"
measurement = "power"
field = "watts"
"#,
        )
        .expect("test config");
        let plant = Plant::new(
            plant::Catalogue::with_site(&config.plant.quantity).expect("site quantities"),
        );
        Rules::bind(&config.mqtt, plant).expect("bound")
    }

    fn check(topic: &str, payload: &str, expected: Result<Vec<Reading>, RejectReason>) {
        assert_eq!(
            parse(&rules(), topic, payload.as_bytes(), now(true)),
            expected,
            "{topic} {payload}"
        );
    }

    fn reading(
        m: &str,
        dev: &str,
        ts: i64,
        fields: Vec<(&str, Value)>,
        ack: Option<u64>,
    ) -> Reading {
        Reading {
            series: Series::new(m, dev),
            ts_ns: ts,
            quality: Quality::Good,
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ack: ack.map(|seq| AckRequest {
                meter_id: Arc::from(dev),
                seq,
            }),
            receipt: None,
        }
    }

    #[test]
    fn product_md_payloads_parse() {
        check(
            "meters/GM-0001/state",
            r#"{"meter_id":"GM-0001","seq":42,"ts":"2026-11-22T08:00:00Z","kind":"gas","cum_kg":12.345,"credit_kg":1.2,"valve":"open","battery_v":3.7,"rssi":-71,"tamper":false}"#,
            Ok(vec![reading(
                "gas_meter",
                "GM-0001",
                1_795_334_400_000_000_000,
                vec![
                    ("gas_used_kg", Value::Float(12.345)),
                    ("credit_kg", Value::Float(1.2)),
                    ("valve", Value::Str("open".into())),
                    ("battery_v", Value::Float(3.7)),
                    ("rssi_dbm", Value::Float(-71.0)),
                    ("tamper", Value::Bool(false)),
                    ("seq", Value::Int(42)),
                ],
                Some(42),
            )]),
        );
        check(
            "meters/EM-0001/state",
            r#"{"meter_id":"EM-0001","seq":7,"kind":"electricity","cum_kwh":1234.5,"credit_kwh":5.5,"relay":"closed","status":"active"}"#,
            Ok(vec![reading(
                "electricity_meter",
                "EM-0001",
                NOW,
                vec![
                    ("energy_used_kwh", Value::Float(1234.5)),
                    ("credit_kwh", Value::Float(5.5)),
                    ("relay", Value::Str("closed".into())),
                    ("status", Value::Str("active".into())),
                    ("seq", Value::Int(7)),
                ],
                Some(7),
            )]),
        );
        check(
            "meters/GM-0001/event",
            r#"{"meter_id":"GM-0001","seq":43,"event":"low_credit"}"#,
            Ok(vec![reading(
                "meter_event",
                "GM-0001",
                NOW,
                vec![
                    ("event", Value::Str("low_credit".into())),
                    ("seq", Value::Int(43)),
                ],
                Some(43),
            )]),
        );
    }

    #[test]
    fn bad_meter_payloads_are_rejected_with_a_reason() {
        check(
            "meters/GM-1/state",
            "{not json",
            Err(RejectReason::Malformed),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-2","kind":"gas","cum_kg":1}"#,
            Err(RejectReason::MeterIdMismatch),
        );
        check(
            "meters/GM-1/state",
            r#"{"kind":"gas","cum_kg":1}"#,
            Err(RejectReason::Invalid),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-1","kind":"water","cum_kg":1}"#,
            Err(RejectReason::Invalid),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-1","kind":"gas","cum_kg":"lots"}"#,
            Err(RejectReason::Invalid),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-1","kind":"gas","valve":"ajar"}"#,
            Err(RejectReason::Invalid),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-1","kind":"gas"}"#,
            Err(RejectReason::Invalid),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-1","seq":-1,"kind":"gas","cum_kg":1}"#,
            Err(RejectReason::Invalid),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-1","ts":"1970-01-01T00:00:00Z","kind":"gas","cum_kg":1}"#,
            Err(RejectReason::BadTimestamp),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-1","ts":"2099-01-01T00:00:00Z","kind":"gas","cum_kg":1}"#,
            Err(RejectReason::BadTimestamp),
        );
        check(
            "meters/GM-1/state",
            r#"{"meter_id":"GM-1","ts":"yesterday","kind":"gas","cum_kg":1}"#,
            Err(RejectReason::BadTimestamp),
        );
        check(
            "meters/GM-1/state",
            &format!(
                r#"{{"meter_id":"GM-1","kind":"gas","cum_kg":1,"pad":"{}"}}"#,
                "x".repeat(600)
            ),
            Err(RejectReason::Oversized),
        );
        check("other/topic", "1", Err(RejectReason::UnknownTopic));
    }

    #[test]
    fn configured_topics_map_number_json_and_line_protocol() {
        check(
            "sensors/d2/temp",
            " 31.5\n",
            Ok(vec![reading(
                "digester",
                "d2",
                NOW,
                vec![("temperature_c", Value::Float(31.5))],
                None,
            )]),
        );
        check("sensors/d2/temp", "warm", Err(RejectReason::Malformed));
        check(
            "lab/json",
            r#"{"sample":{"ph":7.1}}"#,
            Ok(vec![reading(
                "digester",
                "lab1",
                NOW,
                vec![("ph", Value::Float(7.1))],
                None,
            )]),
        );
        // Two quantities of two equipment kinds: one reading each, in stored names.
        check(
            "lab/json",
            r#"{"sample":{"ph":7.1,"ch4":58.5}}"#,
            Ok(vec![
                reading(
                    "biogas",
                    "lab1",
                    NOW,
                    vec![("ch4_pct", Value::Float(58.5))],
                    None,
                ),
                reading(
                    "digester",
                    "lab1",
                    NOW,
                    vec![("ph", Value::Float(7.1))],
                    None,
                ),
            ]),
        );
        check(
            "lab/json",
            r#"{"sample":{"ph":"acid"}}"#,
            Err(RejectReason::Invalid),
        );
        // Out of the quantity's plausible range: a quality flag, not a number.
        let mut bad = reading(
            "digester",
            "d3",
            NOW,
            vec![("temperature_c_quality", Value::Str("out_of_range".into()))],
            None,
        );
        bad.quality = Quality::Bad;
        check("sensors/d3/temp", "900", Ok(vec![bad]));
        // Line protocol may only write stored names of known quantities.
        check(
            "lp/x",
            "power,device=sdm1 volts=230.1,bogus=1",
            Err(RejectReason::UnknownQuantity),
        );
        check("lab/json", r#"{"sample":{}}"#, Err(RejectReason::Invalid));
        check(
            "lp/x",
            "power,device=sdm1 volts=230.1,on=t 1795340000000000001\npower watts=5i",
            Ok(vec![
                reading(
                    "power",
                    "sdm1",
                    NOW + 1,
                    vec![("volts", Value::Float(230.1)), ("on", Value::Bool(true))],
                    None,
                ),
                reading("power", "lp-dev", NOW, vec![("watts", Value::Int(5))], None),
            ]),
        );
        check("lp/x", "power volts=", Err(RejectReason::Malformed));
        check(
            "lp/x",
            "gas_meter,device=GM-0001 credit_kg=1000",
            Err(RejectReason::Identity),
        );
    }

    #[test]
    fn implausible_meter_values_become_bad_quality_not_numbers() {
        let r = parse(
            &rules(),
            "meters/GM-1/state",
            br#"{"meter_id":"GM-1","seq":3,"kind":"gas","cum_kg":-4.0,"credit_kg":1.5,"battery_v":-2,"rssi":50}"#,
            now(true),
        )
        .expect("parsed");
        assert_eq!(r[0].quality, Quality::Bad);
        assert_eq!(
            r[0].fields,
            vec![
                (
                    "gas_used_kg_quality".to_owned(),
                    Value::Str("out_of_range".into())
                ),
                ("credit_kg".to_owned(), Value::Float(1.5)),
                (
                    "battery_v_quality".to_owned(),
                    Value::Str("out_of_range".into())
                ),
                (
                    "rssi_dbm_quality".to_owned(),
                    Value::Str("out_of_range".into())
                ),
                ("seq".to_owned(), Value::Int(3)),
            ]
        );
        let ok = parse(
            &rules(),
            "meters/EM-1/state",
            br#"{"meter_id":"EM-1","kind":"electricity","cum_kwh":0,"credit_kwh":0,"rssi":-150}"#,
            now(true),
        )
        .expect("parsed");
        assert_eq!(ok[0].quality, Quality::Good, "the range ends are plausible");
    }

    #[test]
    fn only_our_own_unsynced_stamps_are_marked_and_the_future_bound_waits_for_sync() {
        let q = |topic: &str, payload: &str, synced: bool| {
            parse(&rules(), topic, payload.as_bytes(), now(synced))
                .map(|rs| rs.iter().map(|r| (r.ts_ns, r.quality)).collect::<Vec<_>>())
        };
        let no_ts = r#"{"meter_id":"GM-1","kind":"gas","cum_kg":1}"#;
        assert_eq!(
            q("meters/GM-1/state", no_ts, true),
            Ok(vec![(NOW, Quality::Good)])
        );
        assert_eq!(
            q("meters/GM-1/state", no_ts, false),
            Ok(vec![(NOW, Quality::ClockUnsynced)])
        );
        // A bad value read while unsynced: the time's quality wins (see `Stamp::quality`).
        assert_eq!(
            q(
                "meters/GM-1/state",
                r#"{"meter_id":"GM-1","kind":"gas","cum_kg":-1}"#,
                false
            ),
            Ok(vec![(NOW, Quality::ClockUnsynced)])
        );
        // The meter's own clock, two years ahead of a Pi that booted at an old saved time.
        let ahead = r#"{"meter_id":"GM-1","ts":"2028-11-22T09:33:20Z","kind":"gas","cum_kg":1}"#;
        assert_eq!(
            q("meters/GM-1/state", ahead, false),
            Ok(vec![(
                NOW + 2 * YEAR + 24 * 3600 * 1_000_000_000,
                Quality::Good
            )])
        );
        assert_eq!(
            q("meters/GM-1/state", ahead, true),
            Err(RejectReason::BadTimestamp)
        );
        assert_eq!(
            q("sensors/d1/temp", "30", false),
            Ok(vec![(NOW, Quality::ClockUnsynced)])
        );
        assert_eq!(
            q(
                "lp/x",
                "power,device=a watts=1 1795340000000000001\npower watts=2",
                false
            ),
            Ok(vec![
                (NOW + 1, Quality::Good),
                (NOW, Quality::ClockUnsynced)
            ])
        );
    }

    #[test]
    fn answers_to_commands_are_recognised_by_their_topic() {
        assert_eq!(cmd_ack_meter("meters/GM-0001/cmd/ack"), Some("GM-0001"));
        assert_eq!(cmd_ack_meter("meters/GM-0001/cmd"), None);
        assert_eq!(cmd_ack_meter("meters/GM-0001/state"), None);
        assert_eq!(cmd_ack_meter("meters/a/b/cmd/ack"), None);
        assert_eq!(cmd_ack_meter("sensors/x/cmd/ack"), None);
    }
}
