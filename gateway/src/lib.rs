//! Green Kitchen Gateway: the edge gateway of a community biogas plant.
//!
//! Start with ARCHITECTURE.md at the repository root; [`topology`] wires every part together.

pub mod aggregate;
pub mod alarm;
pub mod backup;
pub mod broker;
pub mod clock;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod gpio;
pub mod intake;
pub mod line_protocol;
pub mod logbook;
pub mod metrics;
pub mod model;
pub mod os;
pub mod plant;
pub mod sim;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod topology;
pub mod uplink;
pub mod users;
pub mod web;

pub use topology::run;
