//! The one entrance of readings into the pipeline. Every source (the MQTT ingest, each Modbus
//! bus poller; GPIO and the logbook later) hands its readings to an [`Intake`], which:
//!
//! 1. publishes a copy on the **live stream** (a `broadcast` of `Arc<Reading>`, capacity 1024)
//!    at once, before the commit: the live view and the alarm engine see every reading as it
//!    arrives and never wait for a batch. A receiver that lags more than 1024 readings skips
//!    the oldest and is told how many (`RecvError::Lagged`); nobody blocks a source.
//! 2. sends the reading itself into the **store's channel** (`mpsc`, `store.channel_capacity`),
//!    waiting while it is full: that wait is the backpressure that slows a meter's TCP
//!    connection or delays a Modbus poll.
//!
//! Who sees uncommitted readings: only the live stream's receivers (the web's live view and,
//! from the alarms issue on, the alarm engine). They are for people and for safety, where late
//! is worse than unconfirmed; a reading they saw may still be lost by a power cut before its
//! commit, and they must not forward it anywhere durable. Every durable consumer (the InfluxDB
//! writer, the aggregator, the uplink) reads the store by its cursor and so sees only
//! committed readings.
//!
//! When the store cannot commit (a failed disk), the channel fills within seconds and the
//! sources then wait at step 2, so the live stream stops with them; a spill buffer that keeps
//! the live view going in that case is not built.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::model::Reading;

/// Capacity of the live stream: about ten seconds of a busy site.
pub const LIVE_CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct Intake {
    store: mpsc::Sender<Reading>,
    live: broadcast::Sender<Arc<Reading>>,
}

impl Intake {
    pub fn new(store: mpsc::Sender<Reading>, live: broadcast::Sender<Arc<Reading>>) -> Intake {
        Intake { store, live }
    }

    /// Live first, then the store's channel (waiting while it is full). `Err` gives the reading
    /// back when the store is gone (shutting down); nothing was confirmed for it.
    pub async fn send(&self, r: Reading) -> Result<(), Reading> {
        if self.live.receiver_count() > 0 {
            // The copy carries no receipt (see `Clone for Reading`): only the store confirms.
            let _ = self.live.send(Arc::new(r.clone()));
        }
        self.store.send(r).await.map_err(|e| e.0)
    }

    /// A new receiver of the live stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Reading>> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quality, Series, Value};

    fn reading(n: i64) -> Reading {
        Reading {
            series: Series::new("digester", "d1"),
            ts_ns: n,
            quality: Quality::Good,
            fields: vec![("pressure_mbar".into(), Value::Float(n as f64))],
            ack: None,
            receipt: None,
        }
    }

    /// The live stream sees a reading before the store has it, and keeps getting readings
    /// while the store's channel is full and nobody drains it (a stuck commit).
    #[tokio::test]
    async fn live_sees_readings_before_the_store_and_while_it_is_stuck() {
        let (tx, mut rx) = mpsc::channel(1);
        let (live, _) = broadcast::channel(16);
        let intake = Intake::new(tx, live);
        let mut watch = intake.subscribe();
        intake.send(reading(1)).await.expect("store open");
        assert_eq!(watch.recv().await.expect("live").ts_ns, 1);
        // The channel (capacity 1) is now full: the next send waits, but live has it already.
        let blocked = {
            let intake = intake.clone();
            tokio::spawn(async move { intake.send(reading(2)).await })
        };
        assert_eq!(watch.recv().await.expect("live").ts_ns, 2);
        assert!(!blocked.is_finished());
        assert_eq!(rx.recv().await.expect("stored").ts_ns, 1);
        blocked.await.expect("task").expect("store open");
        assert_eq!(rx.recv().await.expect("stored").ts_ns, 2);
        drop(rx);
        assert!(intake.send(reading(3)).await.is_err(), "the store is gone");
    }
}
