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
//! When the store cannot commit (a failed disk), the channel fills within seconds. An MQTT
//! source then waits at step 2: the meter's TCP connection is slowed and its readings wait on the
//! meter, which resends what was not acknowledged. A Modbus poller must not stop polling (its
//! readings are the plant's safety values, and the live stream and alarms need them), so it uses
//! [`Intake::offer`] instead: live first, then the channel without waiting, and what does not
//! fit waits in the poller's [`Spill`] (bounded, [`SPILL_CAPACITY`]); beyond it the oldest
//! spilled reading is dropped and counted (`gkgw_readings_spill_dropped_total`). Those readings
//! were never accepted (nothing acknowledged them), and without the spill they would not have
//! been taken at all.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::metrics::Counter;

use crate::model::Reading;

/// Capacity of the live stream: about ten seconds of a busy site.
pub const LIVE_CAPACITY: usize = 1024;

/// Readings a poller keeps while the store's channel is full: about an hour of a bus polling
/// ten devices of ten fields every 5 s.
pub const SPILL_CAPACITY: usize = 10_000;

#[derive(Clone)]
pub struct Intake {
    store: mpsc::Sender<Reading>,
    live: broadcast::Sender<Arc<Reading>>,
    spill_dropped: Arc<Counter>,
}

/// The store is gone (shutting down).
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// A poller's readings waiting for room in the store's channel, oldest first.
#[derive(Debug, Default)]
pub struct Spill {
    queue: VecDeque<Reading>,
}

impl Spill {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl Intake {
    pub fn new(store: mpsc::Sender<Reading>, live: broadcast::Sender<Arc<Reading>>) -> Intake {
        Intake::with_counter(store, live, Arc::default())
    }

    /// `spill_dropped` counts readings dropped from a full [`Spill`].
    pub fn with_counter(
        store: mpsc::Sender<Reading>,
        live: broadcast::Sender<Arc<Reading>>,
        spill_dropped: Arc<Counter>,
    ) -> Intake {
        Intake {
            store,
            live,
            spill_dropped,
        }
    }

    fn to_live(&self, r: &Reading) {
        if self.live.receiver_count() > 0 {
            // The copy carries no receipt (see `Clone for Reading`): only the store confirms.
            let _ = self.live.send(Arc::new(r.clone()));
        }
    }

    /// Live first, then the store's channel without waiting, behind whatever `spill` holds;
    /// what does not fit is kept in `spill` (the oldest dropped and counted beyond
    /// [`SPILL_CAPACITY`]). For sources that must keep going while the store is stuck.
    pub fn offer(&self, r: Reading, spill: &mut Spill) -> Result<(), Closed> {
        self.to_live(&r);
        spill.queue.push_back(r);
        if spill.queue.len() > SPILL_CAPACITY {
            spill.queue.pop_front();
            self.spill_dropped.inc();
        }
        self.flush(spill)
    }

    /// Moves what `spill` holds into the store's channel, oldest first, as far as there is room.
    pub fn flush(&self, spill: &mut Spill) -> Result<(), Closed> {
        while let Some(r) = spill.queue.pop_front() {
            match self.store.try_send(r) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(r)) => {
                    spill.queue.push_front(r);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
            }
        }
        Ok(())
    }

    /// Sends everything `spill` holds, waiting for room (at shutdown: the committer drains).
    pub async fn drain(&self, spill: &mut Spill) -> Result<(), Closed> {
        while let Some(r) = spill.queue.pop_front() {
            self.store.send(r).await.map_err(|_| Closed)?;
        }
        Ok(())
    }

    /// Live first, then the store's channel (waiting while it is full). `Err` gives the reading
    /// back when the store is gone (shutting down); nothing was confirmed for it.
    pub async fn send(&self, r: Reading) -> Result<(), Reading> {
        self.to_live(&r);
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

    /// A poller's readings while the store is stuck: live gets each at once, the store gets
    /// them in order once there is room, and beyond the spill's capacity the oldest is
    /// dropped and counted.
    #[tokio::test]
    async fn offered_readings_spill_in_order_and_the_oldest_is_dropped_when_full() {
        let (tx, mut rx) = mpsc::channel(2);
        let (live, _) = broadcast::channel(SPILL_CAPACITY * 2);
        let dropped = Arc::new(Counter::default());
        let intake = Intake::with_counter(tx, live, dropped.clone());
        let mut watch = intake.subscribe();
        let mut spill = Spill::default();
        let n = SPILL_CAPACITY as i64 + 2 + 5;
        for i in 0..n {
            intake.offer(reading(i), &mut spill).expect("store open");
        }
        // 2 in the channel, SPILL_CAPACITY spilled, 5 dropped (the oldest spilled ones).
        assert_eq!(spill.len(), SPILL_CAPACITY);
        assert_eq!(dropped.get(), 5);
        for i in 0..n {
            assert_eq!(
                watch.recv().await.expect("live").ts_ns,
                i,
                "live has every one"
            );
        }
        let mut stored = Vec::new();
        while stored.len() < n as usize - 5 {
            stored.push(rx.recv().await.expect("stored").ts_ns);
            intake.flush(&mut spill).expect("store open");
        }
        let expected: Vec<i64> = [0, 1].into_iter().chain(7..n).collect();
        assert_eq!(
            stored, expected,
            "in order, the oldest spilled ones dropped"
        );
        assert!(spill.is_empty());
    }
}
