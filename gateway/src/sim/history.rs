//! `gkgw demo --history-days N`: N days of simulated plant and meter history, written straight
//! into the windows (not the raw log), so the history and the KPIs have something to show from
//! the first minute. It runs before the gateway starts, on a store with no windows yet.
//!
//! The plant is the demo plant's physics ([`super::plant::Physics`]) stepped minute by minute
//! in real time (Africa/Nairobi hours), the meters use gas and electricity by the hour of day.
//! Counters end where the live simulation starts (the plant's totals, [`super::meters::start_total`]),
//! so the first live reading continues them without a false reset.

use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};

use crate::aggregate::Aggregator;
use crate::model::{Quality, Reading, Series, Value};
use crate::plant::{Instance, Plant};
use crate::store::windows::Windows;
use crate::store::Stored;

const MINUTE_NS: i64 = 60_000_000_000;
/// Meters report every 15 minutes in the pre-filled history.
const METER_EVERY_MIN: i64 = 15;

/// The device a quantity of this plant is bound to, if it is.
fn instance_of(plant: &Plant, quantity: &str) -> Option<String> {
    plant.bindings().iter().find_map(|b| match &b.instance {
        Instance::Device(d) if b.quantity.name == quantity => Some(d.clone()),
        _ => None,
    })
}

fn reading(plant: &Plant, quantity: &str, device: &str, ts_ns: i64, v: f64) -> Option<Reading> {
    let q = plant.catalogue.get(quantity)?;
    Some(Reading {
        series: Series::new(q.measurement.as_str(), device),
        ts_ns,
        quality: Quality::Good,
        fields: vec![(q.field.clone(), Value::Float(v))],
        ack: None,
        receipt: None,
    })
}

/// Writes `days` of history ending at `now_ns` for the plant's bound quantities and `meters`
/// simulated meters; returns how many readings were folded into windows.
pub fn prefill(
    db: &Path,
    plant: Arc<Plant>,
    days: u32,
    now_ns: i64,
    meters: usize,
) -> anyhow::Result<u64> {
    let mut windows = Windows::open(db)?;
    let mut agg = Aggregator::load(&windows, plant.clone())?;
    if agg.cursor() != 0
        || windows
            .oldest(crate::aggregate::window::Width::Hour)?
            .is_some()
    {
        anyhow::bail!(
            "--history-days: the store in {} already has history; pre-fill only a new one",
            db.display()
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let minutes = i64::from(days) * 1440;
    let start = (now_ns / MINUTE_NS - minutes) * MINUTE_NS;
    // Pass 1: the plant's physics, to learn how much the counters grow, then shift them so
    // they end at the live simulation's starting totals.
    let mut physics = super::plant::Physics::default();
    let (gas0, energy0) = (physics.produced_litres, physics.energy_kwh);
    let hour_at = |ts: i64| ((ts / 1_000_000_000 + 3 * 3600).rem_euclid(86_400)) as f64 / 3600.0;
    let mut sim = rand::rngs::StdRng::seed_from_u64(11);
    for m in 0..minutes {
        physics.step(60.0, hour_at(start + m * MINUTE_NS), true, &mut sim);
    }
    let (gas_shift, energy_shift) = (physics.produced_litres - gas0, physics.energy_kwh - energy0);
    let mut physics = super::plant::Physics {
        produced_litres: (gas0 - gas_shift).max(0.0),
        energy_kwh: (energy0 - energy_shift).max(0.0),
        ..Default::default()
    };
    let mut sim = rand::rngs::StdRng::seed_from_u64(11);
    // Meters: totals walked back from their start, credit topped up when it runs out.
    let mut totals: Vec<f64> = (0..meters)
        .map(|i| {
            let gas = i % 2 == 0;
            let used: f64 = (0..minutes)
                .map(|m| super::meters::use_per_hour(gas, hour_at(start + m * MINUTE_NS)) / 60.0)
                .sum();
            (super::meters::start_total(i) - used).max(0.0)
        })
        .collect();
    let mut credit: Vec<f64> = (0..meters).map(|_| rng.gen_range(2.0..8.0)).collect();
    let bound: Vec<(&str, Option<String>)> = [
        "digester.pressure",
        "digester.temperature",
        "digester.ph",
        "gas.volume",
        "gas.flow",
        "biogas.ch4",
        "biogas.co2",
        "compressor.temperature",
        "power.active",
        "power.energy_import",
        "power.energy_total",
    ]
    .into_iter()
    .map(|q| (q, instance_of(&plant, q)))
    .collect();
    let mut folded = 0u64;
    let mut batch = Vec::new();
    for m in 0..minutes {
        let ts = start + m * MINUTE_NS;
        physics.step(60.0, hour_at(ts), true, &mut sim);
        let power_w = if physics.compressor_on { 1150.0 } else { 60.0 };
        for (q, device) in &bound {
            let Some(device) = device else { continue };
            let v = match *q {
                "digester.pressure" => physics.pressure(),
                "digester.temperature" => physics.slurry_c,
                "digester.ph" => physics.ph,
                "gas.volume" => physics.produced_litres / 1000.0,
                "gas.flow" => physics.production(),
                "biogas.ch4" => physics.ch4,
                "biogas.co2" => 100.0 - physics.ch4 - 3.4,
                "compressor.temperature" => physics.outlet_c,
                "power.active" => power_w,
                _ => physics.energy_kwh,
            };
            batch.extend(reading(&plant, q, device, ts, v));
        }
        for i in 0..meters {
            let gas = i % 2 == 0;
            totals[i] += super::meters::use_per_hour(gas, hour_at(ts)) / 60.0;
            credit[i] -= super::meters::use_per_hour(gas, hour_at(ts)) / 60.0;
            if credit[i] <= 0.3 {
                credit[i] += rng.gen_range(2.0..6.0);
            }
            if m % METER_EVERY_MIN != (i as i64) % METER_EVERY_MIN {
                continue;
            }
            let id = super::meters::meter_id(i);
            let fields = if gas {
                vec![
                    ("gas_used_kg".to_owned(), Value::Float(totals[i])),
                    ("credit_kg".to_owned(), Value::Float(credit[i])),
                    ("battery_v".to_owned(), Value::Float(3.9)),
                ]
            } else {
                vec![
                    ("energy_used_kwh".to_owned(), Value::Float(totals[i])),
                    ("credit_kwh".to_owned(), Value::Float(credit[i])),
                ]
            };
            batch.push(Reading {
                series: Series::new(
                    if gas {
                        "gas_meter"
                    } else {
                        "electricity_meter"
                    },
                    id.as_str(),
                ),
                ts_ns: ts,
                quality: Quality::Good,
                fields,
                ack: None,
                receipt: None,
            });
        }
        if m % 1440 == 1439 || m == minutes - 1 {
            // Id 0: these readings are not in the log; the aggregator's cursor stays at 0.
            let stored: Vec<Stored> = batch
                .drain(..)
                .map(|reading| Stored { id: 0, reading })
                .collect();
            folded += stored.len() as u64;
            agg.fold(&windows, &stored)?;
            agg.commit(&mut windows)?;
        }
    }
    Ok(folded)
}

/// The demo's logbook: the kitchen's day, for today and each pre-filled day: waste fed at
/// 08:00 and 16:00 (Africa/Nairobi), water with the morning feed, cylinders filled at 17:00, a
/// lab pH every day at 10:00 and FOS/TAC every third day. Only entries before `now_ns`.
pub fn feed_logbook(db: &Path, days: u32, now_ns: i64) -> anyhow::Result<usize> {
    use crate::logbook::{NewEntry, Values};
    use crate::plant::kpi::Waste;
    const H: i64 = 3_600_000_000_000;
    let mut book =
        crate::store::logbook::Logbook::open(db, std::time::Duration::from_secs(86_400))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Local midnight (UTC+3) of today.
    let today = (now_ns + 3 * H).div_euclid(24 * H) * 24 * H - 3 * H;
    let mut n = 0;
    for d in (0..=i64::from(days)).rev() {
        let day = today - d * 24 * H;
        let mut entries = vec![
            (
                8 * H,
                Values::WasteFed {
                    waste: Waste::Household,
                    kg: rng.gen_range(60.0..90.0_f64).round(),
                },
            ),
            (
                8 * H,
                Values::WasteFed {
                    waste: Waste::Market,
                    kg: rng.gen_range(30.0..50.0_f64).round(),
                },
            ),
            (8 * H + H / 4, Values::WaterAdded { litres: 100.0 }),
            (
                10 * H,
                Values::LabPh {
                    ph: (rng.gen_range(6.9..7.3_f64) * 10.0).round() / 10.0,
                },
            ),
            (
                16 * H,
                Values::WasteFed {
                    waste: Waste::Household,
                    kg: rng.gen_range(50.0..80.0_f64).round(),
                },
            ),
            (
                16 * H,
                Values::WasteFed {
                    waste: Waste::Animal,
                    kg: rng.gen_range(20.0..40.0_f64).round(),
                },
            ),
            (
                17 * H,
                Values::CylindersFilled {
                    count: rng.gen_range(2..5),
                },
            ),
        ];
        if d % 3 == 0 {
            entries.push((
                10 * H,
                Values::LabFosTac {
                    ratio: (rng.gen_range(0.2..0.35_f64) * 100.0).round() / 100.0,
                },
            ));
        }
        for (offset, values) in entries {
            let at_ns = day + offset;
            if at_ns > now_ns {
                continue;
            }
            book.add(&NewEntry {
                values,
                at_ns,
                by: "demo".into(),
                recorded_ns: at_ns,
                note: None,
            })?;
            n += 1;
        }
    }
    Ok(n)
}
