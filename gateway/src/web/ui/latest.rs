//! The dashboard's current values: the newest value of every (quantity, instance), kept from
//! the live stream, seeded at start from the newest minute windows and the text states
//! (`agg_text`) of the last day, so a page rendered right after a restart (or without
//! JavaScript) has values before the devices report again.
//!
//! *Invariant: no I/O but the seed; [`Latest::observe`] is the only writer after it.*

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::model::{Quality, Reading, Value};
use crate::plant::Plant;

/// One current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub ts_ns: i64,
    pub value: Value,
    /// A bad reading's reason (`out_of_range`, a sensor fault): the value is the last good one
    /// or absent.
    pub fault: Option<String>,
}

#[derive(Default)]
pub struct Latest {
    map: Mutex<HashMap<(String, String), Current>>,
}

impl Latest {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Current>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seeds from the store (older than anything the live stream brings).
    pub fn seed(&self, values: Vec<(String, String, i64, Value)>) {
        let mut m = self.lock();
        for (q, i, ts_ns, value) in values {
            let e = m.entry((q, i)).or_insert(Current {
                ts_ns,
                value: value.clone(),
                fault: None,
            });
            if ts_ns > e.ts_ns {
                e.ts_ns = ts_ns;
                e.value = value;
            }
        }
    }

    /// A reading from the live stream: its quantities' values (and faults) become current.
    pub fn observe(&self, plant: &Plant, r: &Reading) {
        let mut m = self.lock();
        for (field, v) in &r.fields {
            if let Some(q) = plant.quantity_of(&r.series.measurement, field) {
                let key = (q.name.clone(), r.series.device.to_string());
                let e = m.entry(key).or_insert(Current {
                    ts_ns: r.ts_ns,
                    value: v.clone(),
                    fault: None,
                });
                if r.ts_ns >= e.ts_ns {
                    e.ts_ns = r.ts_ns;
                    e.value = v.clone();
                    e.fault = None;
                }
            } else if let (Some(base), Value::Str(why)) = (field.strip_suffix("_quality"), v) {
                if r.quality == Quality::Good {
                    continue;
                }
                if let Some(q) = plant.quantity_of(&r.series.measurement, base) {
                    let key = (q.name.clone(), r.series.device.to_string());
                    let e = m.entry(key).or_insert(Current {
                        ts_ns: r.ts_ns,
                        value: Value::Str(String::new()),
                        fault: None,
                    });
                    if r.ts_ns >= e.ts_ns {
                        e.ts_ns = r.ts_ns;
                        e.fault = Some(why.clone());
                    }
                }
            }
        }
    }

    pub fn get(&self, quantity: &str, instance: &str) -> Option<Current> {
        self.lock()
            .get(&(quantity.to_owned(), instance.to_owned()))
            .cloned()
    }

    /// Every instance of `quantity` with its current value, by instance.
    pub fn instances(&self, quantity: &str) -> Vec<(String, Current)> {
        let mut v: Vec<(String, Current)> = self
            .lock()
            .iter()
            .filter(|((q, _), _)| q == quantity)
            .map(|((_, i), c)| (i.clone(), c.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The first instance of `quantity` (the site's one digester, analyser …).
    pub fn first(&self, quantity: &str) -> Option<(String, Current)> {
        self.instances(quantity).into_iter().next()
    }
}

/// Keeps `latest` current from the live stream until `cancel` (spawned by topology).
pub async fn run(
    latest: Arc<Latest>,
    plant: Arc<Plant>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Reading>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.recv() => match r {
                Ok(reading) => latest.observe(&plant, &reading),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Series;

    #[test]
    fn the_newest_value_wins_and_a_fault_keeps_the_last_good_value() {
        let mut plant = Plant::new(crate::plant::Catalogue::builtin());
        plant.bind_meters().expect("meters");
        let latest = Latest::default();
        latest.seed(vec![(
            "meter.credit".into(),
            "GM-1".into(),
            5,
            Value::Float(9.0),
        )]);
        let reading = |ts, fields: Vec<(&str, Value)>, quality| Reading {
            series: Series::new("gas_meter", "GM-1"),
            ts_ns: ts,
            quality,
            fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            ack: None,
            receipt: None,
        };
        latest.observe(
            &plant,
            &reading(10, vec![("credit_kg", Value::Float(2.5))], Quality::Good),
        );
        latest.observe(
            &plant,
            &reading(8, vec![("credit_kg", Value::Float(7.0))], Quality::Good),
        );
        assert_eq!(
            latest.get("meter.credit", "GM-1").map(|c| c.value),
            Some(Value::Float(2.5)),
            "an older reading does not replace a newer one"
        );
        latest.observe(
            &plant,
            &reading(
                20,
                vec![("credit_kg_quality", Value::Str("out_of_range".into()))],
                Quality::Bad,
            ),
        );
        let c = latest.get("meter.credit", "GM-1").expect("current");
        assert_eq!(
            (c.value, c.fault.as_deref()),
            (Value::Float(2.5), Some("out_of_range"))
        );
        assert_eq!(latest.instances("meter.credit").len(), 1);
    }
}
