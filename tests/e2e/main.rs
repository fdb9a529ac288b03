//! Black-box tests of the `gkgw` binary against real peers (see TESTING.md and support.rs).

mod support;

mod access;
mod alarms;
mod broker;
mod cli;
mod clock;
mod commands;
mod contract;
mod dashboard;
mod faults;
mod gpio;
mod grafana;
mod history;
mod ingest;
mod live;
mod logbook;
mod modbus;
mod scenarios;
mod uplink;
