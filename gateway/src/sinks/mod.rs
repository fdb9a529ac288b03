//! Durable consumers of the store: each reads the log by its own persisted cursor and advances
//! it only after its destination has accepted the data.

pub mod influx;
pub mod kpi;
