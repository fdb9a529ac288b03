//! Sources turn the outside world into readings and send them into the store's channel.

pub mod gpio;
pub mod modbus;
pub mod mqtt;
pub mod onewire;
