//! The outbox to the meters: every message the gateway sends a field meter is built here, so
//! its topics and payloads are defined once (PRODUCT.md, Interfaces). Today that is the
//! application ack `meters/{id}/ack` `{"seq":N}`, published once the reading carrying `seq` is
//! committed; and the platform's commands `meters/{id}/cmd` `{"id","kind","args","exp"}`, which
//! only the command relay publishes (`commands/relay.rs`), after verifying them.
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

/// `meters/{id}/cmd`: where a meter receives the platform's commands.
pub fn cmd_topic(meter_id: &str) -> String {
    format!("meters/{meter_id}/cmd")
}

/// `meters/{id}/cmd/ack`: where a meter answers them.
pub fn cmd_ack_topic(meter_id: &str) -> String {
    format!("meters/{meter_id}/cmd/ack")
}

/// `{"id":…,"kind":…,"args":{…},"exp":…}`: a verified command as its meter receives it.
pub fn cmd_payload(id: &str, kind: &str, args: &serde_json::Value, exp: i64) -> Bytes {
    Bytes::from(serde_json::json!({"id": id, "kind": kind, "args": args, "exp": exp}).to_string())
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
        assert_eq!(cmd_topic("GM-0001"), "meters/GM-0001/cmd");
        assert_eq!(cmd_ack_topic("GM-0001"), "meters/GM-0001/cmd/ack");
        let p = cmd_payload("c-1", "valve", &serde_json::json!({"state": "closed"}), 9);
        let v: serde_json::Value = serde_json::from_slice(&p).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"id": "c-1", "kind": "valve", "args": {"state": "closed"}, "exp": 9})
        );
    }
}
