//! MQTT ingest: messages from the embedded broker become readings.
//!
//! Built-in meter topics: `meters/{meter_id}/state` and `meters/{meter_id}/event` with the JSON
//! payloads of PRODUCT.md (names after OpenPAYGO Metrics where they fit). Configured topic maps
//! ([`crate::config::TopicMap`]) take JSON, a plain number or InfluxDB line protocol.
//!
//! Parsing is pure ([`parse`]); [`run`] only moves data. A rejected message is counted per reason
//! and logged at most once per reason every 10 s, and never stops the stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{PayloadFormat, TopicMap};
use crate::metrics::{Metrics, RejectReason};
use crate::model::{AckRequest, Quality, Reading, Series, Value, MAX_FUTURE_NS, MIN_VALID_TS_NS};

pub const METER_FILTERS: [&str; 2] = ["meters/+/state", "meters/+/event"];

/// Everything `parse` needs besides the message.
pub struct Rules {
    pub max_payload_bytes: usize,
    pub topics: Vec<TopicMap>,
}

/// Does `topic` match the MQTT `filter` (`+` one level, `#` the rest)?
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(l)) if f == l => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

fn check_ts(ts_ns: i64, now_ns: i64) -> Result<i64, RejectReason> {
    if (MIN_VALID_TS_NS..=now_ns.saturating_add(MAX_FUTURE_NS)).contains(&ts_ns) {
        Ok(ts_ns)
    } else {
        Err(RejectReason::BadTimestamp)
    }
}

/// `ts` as RFC 3339 text or Unix seconds (integer or fractional); arrival time when absent.
fn json_ts(obj: &serde_json::Map<String, Json>, now_ns: i64) -> Result<i64, RejectReason> {
    match obj.get("ts") {
        None | Some(Json::Null) => Ok(now_ns),
        Some(Json::String(s)) => {
            let t =
                chrono::DateTime::parse_from_rfc3339(s).map_err(|_| RejectReason::BadTimestamp)?;
            check_ts(
                t.timestamp_nanos_opt().ok_or(RejectReason::BadTimestamp)?,
                now_ns,
            )
        }
        Some(Json::Number(n)) => {
            let secs = n.as_f64().ok_or(RejectReason::BadTimestamp)?;
            check_ts((secs * 1e9) as i64, now_ns)
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

/// A meter payload (`state` or `event`) for the meter named in the topic.
fn parse_meter(
    topic_id: &str,
    event: bool,
    payload: &[u8],
    now_ns: i64,
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
    let ts_ns = json_ts(&obj, now_ns)?;
    let mut fields: Vec<(String, Value)> = Vec::with_capacity(8);
    let measurement = if event {
        let name = text(&obj, "event", &[])?.ok_or(RejectReason::Invalid)?;
        fields.push(("event".into(), Value::Str(name)));
        if let Some(d) = text(&obj, "detail", &[])? {
            fields.push(("detail".into(), Value::Str(d)));
        }
        "meter_event"
    } else {
        let (measurement, numbers, texts): (&str, &[(&str, &str)], &[(&str, &str, &[&str])]) =
            match obj.get("kind").and_then(Json::as_str) {
                Some("gas") => (
                    "gas_meter",
                    &[("cum_kg", "gas_used_kg"), ("credit_kg", "credit_kg")],
                    &[("valve", "valve", &["open", "closed", "locked"])],
                ),
                Some("electricity") => (
                    "electricity_meter",
                    &[("cum_kwh", "energy_used_kwh"), ("credit_kwh", "credit_kwh")],
                    &[
                        ("relay", "relay", &["open", "closed"]),
                        ("status", "status", &["active", "inactive", "suspended"]),
                    ],
                ),
                _ => return Err(RejectReason::Invalid),
            };
        for (key, field) in numbers {
            if let Some(v) = num(&obj, key)? {
                fields.push(((*field).into(), Value::Float(v)));
            }
        }
        for (key, field, allowed) in texts {
            if let Some(v) = text(&obj, key, allowed)? {
                fields.push(((*field).into(), Value::Str(v)));
            }
        }
        if fields.is_empty() {
            return Err(RejectReason::Invalid);
        }
        if let Some(v) = num(&obj, "battery_v")? {
            fields.push(("battery_v".into(), Value::Float(v)));
        }
        if let Some(v) = num(&obj, "rssi")? {
            fields.push(("rssi_dbm".into(), Value::Float(v)));
        }
        match obj.get("tamper") {
            None | Some(Json::Null) => {}
            Some(Json::Bool(b)) => fields.push(("tamper".into(), Value::Bool(*b))),
            Some(_) => return Err(RejectReason::Invalid),
        }
        measurement
    };
    if let Some(s) = seq {
        fields.push(("seq".into(), Value::Int(s as i64)));
    }
    let meter: Arc<str> = Arc::from(topic_id);
    Ok(Reading {
        series: Series::new(measurement, meter.clone()),
        ts_ns,
        quality: Quality::Good,
        fields,
        ack: seq.map(|seq| AckRequest {
            meter_id: meter,
            seq,
        }),
    })
}

fn json_path<'a>(v: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn device_of(map: &TopicMap, topic: &str) -> String {
    map.device_level
        .and_then(|l| topic.split('/').nth(l))
        .unwrap_or(&map.device)
        .to_owned()
}

/// One message to zero or more readings (line protocol can carry several points).
pub fn parse(
    rules: &Rules,
    topic: &str,
    payload: &[u8],
    now_ns: i64,
) -> Result<Vec<Reading>, RejectReason> {
    if payload.len() > rules.max_payload_bytes {
        return Err(RejectReason::Oversized);
    }
    let levels: Vec<&str> = topic.split('/').collect();
    if let ["meters", id, kind @ ("state" | "event")] = levels.as_slice() {
        return parse_meter(id, *kind == "event", payload, now_ns).map(|r| vec![r]);
    }
    let map = rules
        .topics
        .iter()
        .find(|m| topic_matches(&m.filter, topic))
        .ok_or(RejectReason::UnknownTopic)?;
    let text = std::str::from_utf8(payload).map_err(|_| RejectReason::Malformed)?;
    match map.format {
        PayloadFormat::Number => {
            let v: f64 = text.trim().parse().map_err(|_| RejectReason::Malformed)?;
            if !v.is_finite() {
                return Err(RejectReason::Invalid);
            }
            Ok(vec![Reading {
                series: Series::new(map.measurement.as_str(), device_of(map, topic)),
                ts_ns: now_ns,
                quality: Quality::Good,
                fields: vec![(map.field.clone(), Value::Float(v))],
                ack: None,
            }])
        }
        PayloadFormat::Json => {
            let json: Json = serde_json::from_str(text).map_err(|_| RejectReason::Malformed)?;
            let obj = json.as_object().ok_or(RejectReason::Invalid)?;
            let mut fields = Vec::new();
            for (field, path) in &map.fields {
                match json_path(&json, path) {
                    Some(Json::Number(n)) => fields.push((
                        field.clone(),
                        Value::Float(n.as_f64().ok_or(RejectReason::Invalid)?),
                    )),
                    Some(Json::Bool(b)) => fields.push((field.clone(), Value::Bool(*b))),
                    Some(Json::String(s)) => fields.push((field.clone(), Value::Str(s.clone()))),
                    None | Some(Json::Null) => {}
                    Some(_) => return Err(RejectReason::Invalid),
                }
            }
            if fields.is_empty() {
                return Err(RejectReason::Invalid);
            }
            Ok(vec![Reading {
                series: Series::new(map.measurement.as_str(), device_of(map, topic)),
                ts_ns: json_ts(obj, now_ns)?,
                quality: Quality::Good,
                fields,
                ack: None,
            }])
        }
        PayloadFormat::LineProtocol => {
            let device = device_of(map, topic);
            let mut out = Vec::new();
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let mut r = crate::sinks::line_protocol::parse_line(line)
                    .map_err(|_| RejectReason::Malformed)?;
                r.ts_ns = match r.ts_ns {
                    0 => now_ns,
                    ts => check_ts(ts, now_ns)?,
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

/// The MQTT filters the ingest link subscribes to.
pub fn filters(rules: &Rules) -> Vec<String> {
    METER_FILTERS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(rules.topics.iter().map(|t| t.filter.clone()))
        .collect()
}

/// Logs each reject reason at most once per interval, with how many were suppressed.
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
            tracing::warn!(reason = reason.as_str(), %topic, suppressed = entry.1, "mqtt message rejected");
            *entry = (now, 0);
        } else {
            entry.1 += 1;
        }
    }
}

/// Moves messages from the broker into the store's channel until cancelled or the broker ends.
/// A full channel makes this task wait: backpressure reaches rumqttd's bounded log.
pub async fn run(
    mut link: crate::broker::IngestLink,
    rules: Rules,
    tx: mpsc::Sender<Reading>,
    live: tokio::sync::broadcast::Sender<Arc<Reading>>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut log = RateLimitedLog {
        last: BTreeMap::new(),
    };
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = link.next() => m,
        };
        let Some((topic, payload)) = msg else { break };
        metrics
            .mqtt_messages
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let topic = String::from_utf8_lossy(&topic);
        match parse(&rules, &topic, &payload, crate::model::now_ns()) {
            Ok(readings) => {
                for r in readings {
                    if live.receiver_count() > 0 {
                        let _ = live.send(Arc::new(r.clone()));
                    }
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
            }
            Err(reason) => {
                metrics.reject(reason);
                log.reject(reason, &topic);
            }
        }
    }
    tracing::info!("mqtt ingest stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_340_000_000_000_000; // 2026-11-22T09:33:20Z

    fn rules() -> Rules {
        Rules {
            max_payload_bytes: 512,
            topics: vec![
                TopicMap {
                    filter: "sensors/+/temp".into(),
                    format: PayloadFormat::Number,
                    measurement: "digester".into(),
                    device_level: Some(1),
                    device: String::new(),
                    field: "temperature_c".into(),
                    fields: Default::default(),
                },
                TopicMap {
                    filter: "lab/json".into(),
                    format: PayloadFormat::Json,
                    measurement: "lab".into(),
                    device_level: None,
                    device: "lab1".into(),
                    field: String::new(),
                    fields: [("ph".to_owned(), "sample.ph".to_owned())]
                        .into_iter()
                        .collect(),
                },
                TopicMap {
                    filter: "lp/#".into(),
                    format: PayloadFormat::LineProtocol,
                    measurement: String::new(),
                    device_level: None,
                    device: "lp-dev".into(),
                    field: String::new(),
                    fields: Default::default(),
                },
            ],
        }
    }

    fn check(topic: &str, payload: &str, expected: Result<Vec<Reading>, RejectReason>) {
        assert_eq!(
            parse(&rules(), topic, payload.as_bytes(), NOW),
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
                "lab",
                "lab1",
                NOW,
                vec![("ph", Value::Float(7.1))],
                None,
            )]),
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
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/c/d"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(!topic_matches("a/b", "a"));
    }
}
