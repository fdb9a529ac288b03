//! The outbox to the meters: every message the gateway sends a field meter is built here, so
//! its topics and payloads are defined once (PRODUCT.md, Interfaces). Today that is the
//! application ack `meters/{id}/ack` `{"seq":N}`, published once the reading carrying `seq` is
//! committed; meter commands (`meters/{id}/cmd`) join it in the uplink issue.
//!
//! Two routes lead out: a connection that is still open writes the ack in the same packet
//! burst as the PUBACK (`conn.rs`, through [`ack_payload`]); an ack whose connection is gone, or
//! that came without a receipt, reaches [`route_acks`], which publishes it through the hub to
//! whichever session of that meter subscribes now.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Hub;
use super::Metrics;
use crate::model::AckRequest;

/// `meters/{id}/ack`.
pub fn ack_topic(meter_id: &str) -> String {
    format!("meters/{meter_id}/ack")
}

/// `{"seq":N}`.
pub fn ack_payload(seq: u64) -> Bytes {
    Bytes::from(format!("{{\"seq\":{seq}}}"))
}

/// Publishes the acks the committer hands over, until its sender closes. Never blocks on a
/// meter: each connection's queue is bounded and a full one drops, counted.
pub async fn route_acks(
    mut acks: mpsc::Receiver<Vec<AckRequest>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
) {
    while let Some(batch) = acks.recv().await {
        for a in batch {
            hub.publish(&ack_topic(&a.meter_id), ack_payload(a.seq));
            metrics.acks_published.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_follow_the_interface() {
        assert_eq!(ack_topic("GM-0001"), "meters/GM-0001/ack");
        assert_eq!(ack_payload(42), Bytes::from_static(b"{\"seq\":42}"));
    }
}
