//! Alarms (issue 11): rules in the config ([`rules`]), a pure state machine that turns
//! readings, time and operator actions into numbered transitions ([`engine`]), and the task
//! that feeds it from the live stream and acts on what it says ([`task`]): GPIO outputs,
//! `alarms/{rule}` on the embedded broker, the log, the store (`store::alarms`), InfluxDB.
//!
//! The alarms run off the **live stream** (`intake`), before and independently of the store's
//! commit: they fire with the disk full or failing. Persisting their state and events is
//! best-effort after the actions, retried while the store refuses.

pub mod engine;
pub mod rules;
pub mod task;

#[cfg(test)]
mod tests;

pub use engine::{Action, Engine, Event, Input, Op, OpError, Persisted, Sample, State, View};
pub use rules::{Config, Severity};
