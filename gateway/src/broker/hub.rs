//! The session table and outbound routing: which connection gets a message the gateway (or a
//! meter, for read-only watchers) publishes.
//!
//! - A meter's session is keyed by its meter id, which is also its client id (the ACL makes
//!   sure), so one meter can never take over another's session. A new connection of the same
//!   meter closes the old one (MQTT-3.1.4-2). With `clean_session = false` its subscriptions
//!   outlive the connection (until the gateway restarts: sessions are not persisted).
//! - Integration and anonymous connections are **watchers**: read-only, always clean sessions,
//!   keyed by connection, never by client id.
//!
//! Outbound messages are QoS 0 (SUBACK grants 0): each connection has a bounded queue of
//! [`QUEUE`] messages; when it is full (a client that does not read), the message is dropped
//! for that client and counted in `gkgw_broker_outbound_dropped_total`. A meter's
//! application ack is safe to drop: the meter resends the reading and is acked again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::acl::topic_matches;
use super::metrics::Metrics;

/// Outbound queue per connection: a burst of application acks for one meter (a commit of
/// everything it sent at QoS 0) must fit. Slots are allocated as they are used.
pub const QUEUE: usize = 1024;

/// What a connection's task is told from outside.
#[derive(Debug)]
pub enum Outbound {
    Publish {
        topic: Arc<str>,
        payload: Bytes,
    },
    /// Close the connection: taken over by a newer one, or the account was removed.
    Close(&'static str),
}

#[derive(Clone)]
pub struct Link {
    pub id: u64,
    pub tx: mpsc::Sender<Outbound>,
}

struct MeterSession {
    conn: Option<Link>,
    filters: Vec<String>,
    persistent: bool,
}

struct Watcher {
    link: Link,
    filters: Vec<String>,
}

#[derive(Default)]
struct Inner {
    meters: HashMap<Arc<str>, MeterSession>,
    watchers: HashMap<u64, Watcher>,
}

pub struct Hub {
    inner: Mutex<Inner>,
    watching: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Hub {
        Hub {
            inner: Mutex::new(Inner::default()),
            watching: AtomicUsize::new(0),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug in a few lines of map code; the
        // table is still consistent enough to route messages, so carry on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a meter's new connection; returns the subscriptions of the session that was
    /// present (`None`: a new session).
    pub fn attach_meter(&self, id: &Arc<str>, link: Link, clean: bool) -> Option<Vec<String>> {
        let mut inner = self.lock();
        let s = inner.meters.entry(id.clone()).or_insert(MeterSession {
            conn: None,
            filters: Vec::new(),
            persistent: false,
        });
        if let Some(old) = s.conn.take() {
            let _ = old
                .tx
                .try_send(Outbound::Close("taken over by a new connection"));
        }
        let present = (!clean && s.persistent).then(|| s.filters.clone());
        if clean {
            s.filters.clear();
        }
        s.persistent = !clean;
        s.conn = Some(link);
        present
    }

    pub fn detach_meter(&self, id: &Arc<str>, conn: u64) {
        let mut inner = self.lock();
        if let Some(s) = inner.meters.get_mut(id) {
            if s.conn.as_ref().is_some_and(|l| l.id == conn) {
                s.conn = None;
                if !s.persistent {
                    inner.meters.remove(id);
                }
            }
        }
    }

    pub fn attach_watcher(&self, link: Link) {
        let mut inner = self.lock();
        inner.watchers.insert(
            link.id,
            Watcher {
                link,
                filters: Vec::new(),
            },
        );
        self.watching.store(inner.watchers.len(), Relaxed);
    }

    pub fn detach_watcher(&self, conn: u64) {
        let mut inner = self.lock();
        inner.watchers.remove(&conn);
        self.watching.store(inner.watchers.len(), Relaxed);
    }

    /// Adds (`subscribe`) or removes filters of a connection's session.
    pub fn set_filters(&self, meter: Option<&Arc<str>>, conn: u64, filters: &[String], add: bool) {
        let mut inner = self.lock();
        let list = match meter {
            Some(id) => inner.meters.get_mut(id).map(|s| &mut s.filters),
            None => inner.watchers.get_mut(&conn).map(|w| &mut w.filters),
        };
        if let Some(list) = list {
            for f in filters {
                list.retain(|x| x != f);
                if add {
                    list.push(f.clone());
                }
            }
        }
    }

    /// Delivers to every connection with a matching subscription.
    pub fn publish(&self, topic: &str, payload: Bytes) {
        let _ = self.deliver(topic, payload, true);
    }

    /// Delivers to the meter of `meters/{id}/…` only, never to watchers (a command may carry a
    /// top-up token); answers whether the meter's connected session subscribes to `topic`
    /// and its queue took the message (the command relay's `delivered`).
    pub fn publish_to_meter(&self, topic: &str, payload: Bytes) -> bool {
        self.deliver_to(topic, payload, true, false)
    }

    fn deliver(&self, topic: &str, payload: Bytes, to_meter: bool) -> bool {
        self.deliver_to(topic, payload, to_meter, true)
    }

    fn deliver_to(&self, topic: &str, payload: Bytes, to_meter: bool, to_watchers: bool) -> bool {
        let inner = self.lock();
        let mut topic_arc: Option<Arc<str>> = None;
        let mut send = |link: &Link| {
            let t = topic_arc.get_or_insert_with(|| Arc::from(topic)).clone();
            let ok = link
                .tx
                .try_send(Outbound::Publish {
                    topic: t,
                    payload: payload.clone(),
                })
                .is_ok();
            if !ok {
                self.metrics.outbound_dropped.inc();
            }
            ok
        };
        let mut to_its_meter = false;
        if let Some(id) = topic
            .strip_prefix("meters/")
            .and_then(|r| r.split('/').next())
            .filter(|_| to_meter)
        {
            if let Some(s) = inner.meters.get(id) {
                if let Some(link) = &s.conn {
                    if s.filters.iter().any(|f| topic_matches(f, topic)) {
                        to_its_meter = send(link);
                    }
                }
            }
        }
        if to_watchers && self.watching.load(Relaxed) > 0 {
            for w in inner.watchers.values() {
                if w.filters.iter().any(|f| topic_matches(f, topic)) {
                    send(&w.link);
                }
            }
        }
        to_its_meter
    }

    /// Whether any watcher is connected (publishes from meters are only copied when one is).
    pub fn has_watchers(&self) -> bool {
        self.watching.load(Relaxed) > 0
    }

    /// Delivers to matching watchers only (a meter's own connection sends its ack itself).
    pub fn publish_to_watchers(&self, topic: &str, payload: Bytes) {
        if self.has_watchers() {
            let _ = self.deliver(topic, payload, false);
        }
    }

    /// Closes the connections and forgets the sessions of accounts no longer in the file.
    pub fn remove_accounts(&self, ids: &[String]) {
        let mut inner = self.lock();
        for id in ids {
            if let Some(s) = inner.meters.remove(id.as_str()) {
                if let Some(l) = s.conn {
                    let _ = l.tx.try_send(Outbound::Close("account removed"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: u64) -> (Link, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Link { id, tx }, rx)
    }

    fn topics(rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(match m {
                Outbound::Publish { topic, .. } => topic.to_string(),
                Outbound::Close(why) => format!("close: {why}"),
            });
        }
        out
    }

    #[test]
    fn messages_reach_only_matching_sessions() {
        let hub = Hub::new(Arc::default());
        let a: Arc<str> = Arc::from("GA-0001");
        let b: Arc<str> = Arc::from("GB-0002");
        let (la, mut ra) = link(1);
        let (lb, mut rb) = link(2);
        let (lw, mut rw) = link(3);
        assert!(hub.attach_meter(&a, la, true).is_none());
        hub.attach_meter(&b, lb, true);
        hub.attach_watcher(lw);
        hub.set_filters(Some(&a), 1, &["meters/GA-0001/ack".into()], true);
        hub.set_filters(None, 3, &["meters/+/ack".into()], true);
        hub.publish("meters/GA-0001/ack", Bytes::from_static(b"{}"));
        hub.publish("meters/GB-0002/ack", Bytes::from_static(b"{}"));
        assert_eq!(topics(&mut ra), ["meters/GA-0001/ack"]);
        assert!(topics(&mut rb).is_empty(), "b never subscribed");
        assert_eq!(
            topics(&mut rw),
            ["meters/GA-0001/ack", "meters/GB-0002/ack"]
        );
    }

    #[test]
    fn commands_reach_only_their_meter_never_a_watcher() {
        let hub = Hub::new(Arc::default());
        let a: Arc<str> = Arc::from("GA-0001");
        let (la, mut ra) = link(1);
        let (lw, mut rw) = link(3);
        hub.attach_meter(&a, la, true);
        hub.attach_watcher(lw);
        hub.set_filters(None, 3, &["meters/#".into()], true);
        assert!(
            !hub.publish_to_meter("meters/GA-0001/cmd", Bytes::new()),
            "not subscribed yet"
        );
        hub.set_filters(Some(&a), 1, &["meters/GA-0001/cmd".into()], true);
        assert!(hub.publish_to_meter("meters/GA-0001/cmd", Bytes::new()));
        assert!(!hub.publish_to_meter("meters/GB-0002/cmd", Bytes::new()));
        assert_eq!(topics(&mut ra), ["meters/GA-0001/cmd"]);
        assert!(topics(&mut rw).is_empty(), "a command may carry a token");
        hub.detach_meter(&a, 1);
        assert!(!hub.publish_to_meter("meters/GA-0001/cmd", Bytes::new()));
    }

    #[test]
    fn a_new_connection_takes_over_and_persistent_sessions_keep_filters() {
        let hub = Hub::new(Arc::default());
        let a: Arc<str> = Arc::from("GA-0001");
        let (l1, mut r1) = link(1);
        hub.attach_meter(&a, l1, false);
        hub.set_filters(Some(&a), 1, &["meters/GA-0001/#".into()], true);
        let (l2, mut r2) = link(2);
        assert_eq!(
            hub.attach_meter(&a, l2, false),
            Some(vec!["meters/GA-0001/#".to_owned()]),
            "session present, with its subscription"
        );
        assert_eq!(topics(&mut r1), ["close: taken over by a new connection"]);
        hub.detach_meter(&a, 1); // the old connection's late goodbye changes nothing
        hub.publish("meters/GA-0001/ack", Bytes::new());
        assert_eq!(topics(&mut r2), ["meters/GA-0001/ack"]);
        hub.detach_meter(&a, 2);
        let (l3, mut r3) = link(3);
        assert!(
            hub.attach_meter(&a, l3, false).is_some(),
            "kept while offline"
        );
        hub.publish("meters/GA-0001/ack", Bytes::new());
        assert_eq!(topics(&mut r3), ["meters/GA-0001/ack"]);
        let (l4, mut r4) = link(4);
        assert!(
            hub.attach_meter(&a, l4, true).is_none(),
            "a clean session starts empty"
        );
        hub.publish("meters/GA-0001/ack", Bytes::new());
        assert!(topics(&mut r4).is_empty());
        hub.remove_accounts(&["GA-0001".into()]);
        assert_eq!(topics(&mut r4), ["close: account removed"]);
    }
}
