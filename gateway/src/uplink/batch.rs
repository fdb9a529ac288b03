//! The batch as the platform receives it (`docs/uplink.md`, `docs/schema/batch.schema.json`):
//! built from the outbox's [`Inputs`] by [`assemble`], split so no body is above the size
//! limit. Pure: no I/O, no clock (the time comes in).

use serde_json::{json, Map, Value as Json};

use crate::store::outbox::{Inputs, SpanWindow};

/// The contract's version; a change that is not backwards compatible raises it.
pub const SCHEMA_VERSION: u32 = 1;

/// Who is sending and what the clock says.
#[derive(Debug, Clone)]
pub struct Header {
    pub site: String,
    pub gateway: String,
    pub now_ns: i64,
    pub clock_synced: bool,
    pub span_s: u64,
}

/// `{site}/{gateway}/{seq}`: the same for every resend of a batch, unique across gateways.
pub fn idempotency_key(site: &str, gateway: &str, seq: u64) -> String {
    format!("{site}/{gateway}/{seq}")
}

fn rfc3339(ns: i64) -> String {
    crate::web::rfc3339(ns)
}

fn finite(v: f64) -> Json {
    if v.is_finite() {
        json!(v)
    } else {
        Json::Null
    }
}

fn window_json(w: &SpanWindow, span_s: u64) -> Json {
    let s = &w.window;
    let mut m = Map::new();
    m.insert("quantity".into(), json!(&*w.quantity));
    m.insert("instance".into(), json!(&*w.instance));
    m.insert("start".into(), json!(rfc3339(w.start_ns)));
    m.insert("start_ms".into(), json!(w.start_ns / 1_000_000));
    m.insert("seconds".into(), json!(span_s));
    m.insert("count".into(), json!(s.count));
    if s.count > 0 {
        m.insert("min".into(), finite(s.min));
        m.insert("max".into(), finite(s.max));
        m.insert("mean".into(), s.mean().map_or(Json::Null, finite));
    }
    if let Some((t, v)) = s.last {
        m.insert("last".into(), finite(v));
        m.insert("last_ms".into(), json!(t / 1_000_000));
    }
    m.insert("bad".into(), json!(s.bad));
    m.insert("unsynced".into(), json!(s.unsynced));
    if s.counter {
        m.insert("delta".into(), finite(s.delta));
        m.insert("resets".into(), json!(s.resets));
    }
    m.insert("revision".into(), json!(s.revision));
    m.insert("revised".into(), json!(w.revised));
    Json::Object(m)
}

/// One KPI set: a completed hour or local day (`revised`: recomputed after a late reading).
fn kpi_json(k: &crate::store::outbox::BatchKpi) -> Json {
    json!({
        "period": k.set.period.as_str(),
        "start": rfc3339(k.set.period_start_ns),
        "start_ms": k.set.period_start_ns.div_euclid(1_000_000),
        "revised": k.revised,
        "figures": k.set.figures.iter().map(crate::web::kpi::FigureDto::of).collect::<Vec<_>>(),
    })
}

/// One command outcome (the gateway's audit log: `gkgw audit list`).
fn command_json(e: &crate::store::commands::Event) -> Json {
    use crate::metrics::LabelValue as _;
    json!({
        "row": e.row,
        "time": rfc3339(e.ts_ns),
        "id": e.id,
        "meter": e.meter,
        "kind": e.kind,
        "outcome": e.outcome.as_str(),
        "reason": e.reason.map(|r| r.as_str()),
        "detail": e.detail,
        "credit": e.credit.filter(|c| c.is_finite()),
        "via": e.via,
    })
}

/// Each meter's state and use, from its windows in this batch, with its valve or relay.
fn meters_json(
    windows: &[SpanWindow],
    states: &[(String, &'static str, i64, String)],
) -> Vec<Json> {
    use std::collections::BTreeMap;
    let mut by: BTreeMap<&str, Map<String, Json>> = BTreeMap::new();
    for (meter, q, ts, state) in states {
        let key = if *q == "meter.valve" {
            "valve"
        } else {
            "relay"
        };
        let m = by.entry(meter).or_default();
        m.insert(key.into(), json!(state));
        m.insert(format!("{key}_ms"), json!(ts / 1_000_000));
    }
    for w in windows.iter().filter(|w| !w.revised) {
        let key = match &*w.quantity {
            "meter.gas_used" | "meter.energy_used" => "used",
            "meter.credit" => "credit",
            "meter.battery" => "battery_v",
            "meter.rssi" => "rssi_dbm",
            _ => continue,
        };
        let m = by.entry(&w.instance).or_default();
        if key == "used" {
            let prev = m.get("used").and_then(Json::as_f64).unwrap_or(0.0);
            m.insert("used".into(), finite(prev + w.window.delta));
            m.insert(
                "unit".into(),
                json!(if &*w.quantity == "meter.gas_used" {
                    "kg"
                } else {
                    "kWh"
                }),
            );
        } else if let Some((t, v)) = w.window.last {
            let newer = m
                .get(&format!("{key}_ms"))
                .and_then(Json::as_i64)
                .is_none_or(|old| t / 1_000_000 >= old);
            if newer {
                m.insert(key.into(), finite(v));
                m.insert(format!("{key}_ms"), json!(t / 1_000_000));
            }
        }
    }
    by.into_iter()
        .map(|(id, mut m)| {
            // The per-field times were for picking the newest; one "last" time is enough.
            let last = [
                "credit_ms",
                "battery_v_ms",
                "rssi_dbm_ms",
                "valve_ms",
                "relay_ms",
            ]
            .iter()
            .filter_map(|k| m.remove(*k).and_then(|v| v.as_i64()))
            .max();
            m.insert("meter".into(), json!(id));
            if let Some(t) = last {
                m.insert("last_seen_ms".into(), json!(t));
            }
            Json::Object(m)
        })
        .collect()
}

fn body(h: &Header, seq: u64, parts: &Map<String, Json>) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("schema".into(), json!(SCHEMA_VERSION));
    m.insert("site".into(), json!(h.site));
    m.insert("gateway".into(), json!(h.gateway));
    m.insert("seq".into(), json!(seq));
    m.insert(
        "idempotency_key".into(),
        json!(idempotency_key(&h.site, &h.gateway, seq)),
    );
    m.insert("created".into(), json!(rfc3339(h.now_ns)));
    m.insert("clock".into(), json!({ "synced": h.clock_synced }));
    for (k, v) in parts {
        m.insert(k.clone(), v.clone());
    }
    serde_json::to_vec(&Json::Object(m)).unwrap_or_default()
}

/// The bodies for `inputs`, numbered from `first`: one, or several when the windows do not fit
/// in `max_bytes` (the alarms, the logbook, the meters, the commands and the KPIs ride with
/// the first).
pub fn assemble(h: &Header, inputs: &Inputs, first: u64, max_bytes: usize) -> Vec<Vec<u8>> {
    let windows: Vec<Json> = inputs
        .windows
        .iter()
        .map(|w| window_json(w, h.span_s))
        .collect();
    let mut extra = Map::new();
    extra.insert(
        "alarms".into(),
        Json::Array(
            inputs
                .alarms
                .iter()
                .map(crate::web::alarms::event_json)
                .collect(),
        ),
    );
    extra.insert(
        "logbook".into(),
        Json::Array(
            inputs
                .logbook
                .iter()
                .map(|e| {
                    serde_json::to_value(crate::web::logbook::EntryDto::of(e)).unwrap_or(Json::Null)
                })
                .collect(),
        ),
    );
    extra.insert(
        "meters".into(),
        Json::Array(meters_json(&inputs.windows, &inputs.meter_states)),
    );
    extra.insert(
        "commands".into(),
        Json::Array(inputs.commands.iter().map(command_json).collect()),
    );
    extra.insert(
        "kpis".into(),
        Json::Array(inputs.kpis.iter().map(kpi_json).collect()),
    );
    if let Some((from, to)) = inputs.span {
        extra.insert(
            "span".into(),
            json!({"from": rfc3339(from), "to": rfc3339(to)}),
        );
    }
    // Chunks of windows, halved until each body fits.
    let mut chunk = windows.len().max(1);
    loop {
        let mut out = Vec::new();
        let mut fits = true;
        let pieces: Vec<&[Json]> = if windows.is_empty() {
            vec![&windows[..]]
        } else {
            windows.chunks(chunk).collect()
        };
        for (i, piece) in pieces.iter().enumerate() {
            let mut parts = if i == 0 {
                extra.clone()
            } else {
                let mut m = Map::new();
                for k in ["alarms", "logbook", "meters", "commands", "kpis"] {
                    m.insert(k.into(), json!([]));
                }
                m
            };
            parts.insert("windows".into(), Json::Array(piece.to_vec()));
            parts.insert("part".into(), json!({"index": i + 1, "of": pieces.len()}));
            let b = body(h, first + i as u64, &parts);
            if b.len() > max_bytes && piece.len() > 1 {
                fits = false;
                break;
            }
            out.push(b);
        }
        if fits {
            return out;
        }
        chunk = chunk.div_ceil(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::window::Window;
    use std::sync::Arc;

    fn window(q: &str, i: &str, start_ns: i64, v: f64) -> SpanWindow {
        SpanWindow {
            quantity: Arc::from(q),
            instance: Arc::from(i),
            start_ns,
            window: Window {
                counter: q.ends_with("_used"),
                count: 3,
                min: v - 1.0,
                max: v + 1.0,
                sum: 3.0 * v,
                last: Some((start_ns + 1_000_000_000, v)),
                bad: 0,
                unsynced: 0,
                delta: if q.ends_with("_used") { 0.5 } else { 0.0 },
                resets: 0,
                revision: 0,
            },
            revised: false,
        }
    }

    fn header() -> Header {
        Header {
            site: "site-1".into(),
            gateway: "gw1".into(),
            now_ns: 1_800_000_000_000_000_000,
            clock_synced: true,
            span_s: 300,
        }
    }

    #[test]
    fn one_batch_holds_windows_meters_and_the_key() {
        let inputs = Inputs {
            windows: vec![
                window("digester.pressure", "digester-1", 0, 20.0),
                window("meter.gas_used", "GM-1", 0, 10.0),
                window("meter.credit", "GM-1", 0, 2.0),
            ],
            meter_states: vec![("GM-1".into(), "meter.valve", 2_000_000_000, "closed".into())],
            span: Some((0, 300_000_000_000)),
            ..Inputs::default()
        };
        let bodies = assemble(&header(), &inputs, 7, 1 << 20);
        assert_eq!(bodies.len(), 1);
        let b: Json = serde_json::from_slice(&bodies[0]).unwrap();
        assert_eq!(b["seq"], 7);
        assert_eq!(b["idempotency_key"], "site-1/gw1/7");
        assert_eq!(b["windows"].as_array().unwrap().len(), 3);
        assert_eq!(b["windows"][0]["mean"], 20.0);
        assert_eq!(b["windows"][1]["delta"], 0.5);
        assert_eq!(b["meters"][0]["meter"], "GM-1");
        assert_eq!(b["meters"][0]["used"], 0.5);
        assert_eq!(b["meters"][0]["credit"], 2.0);
        assert_eq!(b["meters"][0]["valve"], "closed");
        assert_eq!(b["meters"][0]["last_seen_ms"], 2_000);
        assert_eq!(b["part"], json!({"index": 1, "of": 1}));
    }

    #[test]
    fn too_big_a_batch_is_split_with_consecutive_seqs() {
        let windows = (0..200)
            .map(|i| window("digester.pressure", &format!("d{i}"), 0, 1.0))
            .collect();
        let inputs = Inputs {
            windows,
            ..Inputs::default()
        };
        let bodies = assemble(&header(), &inputs, 10, 20_000);
        assert!(bodies.len() > 1);
        let mut total = 0;
        for (i, b) in bodies.iter().enumerate() {
            assert!(b.len() <= 20_000, "{}", b.len());
            let v: Json = serde_json::from_slice(b).unwrap();
            assert_eq!(v["seq"], 10 + i as u64);
            assert_eq!(v["part"]["of"], bodies.len());
            total += v["windows"].as_array().unwrap().len();
        }
        assert_eq!(total, 200);
    }
}
