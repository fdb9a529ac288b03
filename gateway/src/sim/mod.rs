//! Simulations for the demo and for benchmarks: field meters (`meters`), the plant behind the
//! Modbus devices (`plant`), the `gkgw demo` command that runs them against a real gateway
//! (`demo`), and the MQTT load generator (`load`). Nothing in the gateway proper imports this.

pub mod demo;
pub mod history;
pub mod load;
pub mod meters;
pub mod plant;

/// East Africa Time hour of day (UTC+3) for meal-time gas use.
pub fn eat_hour() -> f64 {
    let secs = crate::clock::wall_ns() / 1_000_000_000;
    ((secs + 3 * 3600) % 86_400) as f64 / 3600.0
}
