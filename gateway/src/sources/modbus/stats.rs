//! Per-device counters of the Modbus pollers, for the status page and `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::health;
use crate::metrics::{Encoder, Kind};

/// Request counters: of one poll cycle (the poller's report), or summed over a device's life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub timeouts: u64,
    pub exceptions: u64,
    pub errors: u64,
    pub latency_seconds_sum: f64,
    pub readings: u64,
}

impl Counts {
    pub fn add(&mut self, c: &Counts) {
        self.requests += c.requests;
        self.timeouts += c.timeouts;
        self.exceptions += c.exceptions;
        self.errors += c.errors;
        self.latency_seconds_sum += c.latency_seconds_sum;
        self.readings += c.readings;
    }
}

/// Counters per device, rendered in `/metrics`.
#[derive(Debug, Clone)]
pub struct DeviceStats {
    pub bus: String,
    pub state: health::State,
    /// Since start.
    pub counts: Counts,
    /// The latest value of each field read so far, as text with its unit (or the quality
    /// when bad), for the status page.
    pub latest: BTreeMap<String, String>,
    /// When the device last answered (Unix ns).
    pub last_answer_ns: Option<i64>,
}

impl DeviceStats {
    pub fn new(bus: &str) -> DeviceStats {
        DeviceStats {
            bus: bus.to_owned(),
            state: health::State::Unknown,
            counts: Counts::default(),
            latest: BTreeMap::new(),
            last_answer_ns: None,
        }
    }

    /// `latest` no longer describes the device: it stopped answering (offline), so the values
    /// are as old as its last answer.
    pub fn stale(&self) -> bool {
        self.state == health::State::Offline
    }
}

/// Every device's stats by name, shared by the pollers (writing) and the web server (reading).
pub type Stats = Arc<Mutex<BTreeMap<String, DeviceStats>>>;

/// [`Stats`] as a registered collector: `registry.register(Collector(stats.clone()))`.
pub struct Collector(pub Stats);

impl crate::metrics::Collector for Collector {
    /// Nothing while no device is configured.
    fn collect(&self, out: &mut Encoder) {
        let Ok(map) = self.0.lock() else { return };
        if map.is_empty() {
            return;
        }
        for (name, help, get) in [
            (
                "gkgw_modbus_requests_total",
                "Modbus requests sent.",
                (|d: &DeviceStats| d.counts.requests as f64) as fn(&DeviceStats) -> f64,
            ),
            (
                "gkgw_modbus_timeouts_total",
                "Modbus requests that timed out.",
                |d| d.counts.timeouts as f64,
            ),
            (
                "gkgw_modbus_exceptions_total",
                "Modbus exception replies.",
                |d| d.counts.exceptions as f64,
            ),
            (
                "gkgw_modbus_errors_total",
                "Modbus connection, I/O and framing errors.",
                |d| d.counts.errors as f64,
            ),
            (
                "gkgw_modbus_latency_seconds_sum",
                "Total latency of answered requests.",
                |d| d.counts.latency_seconds_sum,
            ),
            ("gkgw_modbus_readings_total", "Readings produced.", |d| {
                d.counts.readings as f64
            }),
        ] {
            let mut f = out.family(name, help, Kind::Counter);
            for (dev, d) in map.iter() {
                f.sample(&[("device", dev), ("bus", &d.bus)], get(d));
            }
        }
        let mut f = out.family(
            "gkgw_modbus_device_state",
            "1 for the device's current state.",
            Kind::Gauge,
        );
        for (dev, d) in map.iter() {
            for s in health::State::ALL {
                f.sample(
                    &[("device", dev), ("state", s.as_str())],
                    u64::from(d.state == s),
                );
            }
        }
    }
}
