//! Who may publish and subscribe where. Pure functions of the connection's identity and the
//! topic, with no I/O, checked on every PUBLISH, SUBSCRIBE and will.
//!
//! - A **meter** (logged in with its id) publishes only under `meters/{id}/…` (not to the
//!   gateway's own `meters/{id}/ack` and `meters/{id}/cmd`), plus configured topics it owns
//!   ([`PublishRule`]); it subscribes only under `meters/{id}/…`.
//! - An **integration** account (a site's Home Assistant or Node-RED) and, in `gkgw demo`, an
//!   **anonymous** loopback client are read-only: they subscribe under `meters/…` and `alarms/…`
//!   and publish nothing.

use std::sync::Arc;

/// Who is on the other end of a connection, as established at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Meter(Arc<str>),
    Integration(Arc<str>),
    Anonymous,
}

impl Identity {
    /// The name for logs and the session table.
    pub fn name(&self) -> &str {
        match self {
            Identity::Meter(id) | Identity::Integration(id) => id,
            Identity::Anonymous => "(anonymous)",
        }
    }
}

/// Which account owns a configured (non-meter) topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The topic level with this index must be the publishing account's id
    /// (`sensors/+/temp` with level 1: account `d2` may publish `sensors/d2/temp`).
    Level(usize),
    /// Only these accounts may publish.
    Accounts(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRule {
    pub filter: String,
    pub owner: Owner,
}

/// Does `topic` match the MQTT `filter` (`+` one level, `#` the rest)?
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(l)) if f == l => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// A topic name a client may use in PUBLISH: non-empty, no wildcards (MQTT-3.3.2-2).
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// A well-formed subscription filter: `#` only as the whole last level, `+` only as a whole level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == levels.len() - 1,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<PublishRule>,
}

impl Acl {
    pub fn new(rules: Vec<PublishRule>) -> Acl {
        Acl { rules }
    }

    pub fn may_publish(&self, who: &Identity, topic: &str) -> bool {
        let Identity::Meter(id) = who else {
            return false;
        };
        if !valid_topic_name(topic) {
            return false;
        }
        // Every message passes here: no allocation on the meter path.
        if let Some(rest) = topic.strip_prefix("meters/") {
            let Some(own) = rest.strip_prefix(&**id).and_then(|r| r.strip_prefix('/')) else {
                return false;
            };
            return !own.is_empty() && own != "ack" && own != "cmd";
        }
        self.rules.iter().any(|r| {
            topic_matches(&r.filter, topic)
                && match &r.owner {
                    Owner::Level(l) => topic.split('/').nth(*l) == Some(&**id),
                    Owner::Accounts(a) => a.iter().any(|a| **a == **id),
                }
        })
    }

    pub fn may_subscribe(&self, who: &Identity, filter: &str) -> bool {
        if !valid_filter(filter) {
            return false;
        }
        let levels: Vec<&str> = filter.split('/').collect();
        match who {
            Identity::Meter(id) => {
                matches!(levels.as_slice(), ["meters", owner, _, ..] if owner == &&**id)
            }
            Identity::Integration(_) | Identity::Anonymous => {
                matches!(levels.first(), Some(&"meters") | Some(&"alarms"))
            }
        }
    }

    /// A will is a publish the broker makes for the client later: the same rule applies.
    pub fn may_will(&self, who: &Identity, topic: &str) -> bool {
        self.may_publish(who, topic)
    }
}

/// The client id a meter must use: its own id (an empty one is given its id, MQTT-3.1.3-6).
pub fn client_id_ok(who: &Identity, client_id: &str) -> bool {
    match who {
        Identity::Meter(id) => client_id.is_empty() || client_id == &**id,
        Identity::Integration(_) | Identity::Anonymous => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(id: &str) -> Identity {
        Identity::Meter(Arc::from(id))
    }

    fn acl() -> Acl {
        Acl::new(vec![
            PublishRule {
                filter: "sensors/+/temp".into(),
                owner: Owner::Level(1),
            },
            PublishRule {
                filter: "lab/ph".into(),
                owner: Owner::Accounts(vec!["LAB-1".into()]),
            },
        ])
    }

    fn check_pub(who: &Identity, topic: &str, expected: bool) {
        assert_eq!(
            acl().may_publish(who, topic),
            expected,
            "{who:?} publish {topic}"
        );
    }

    fn check_sub(who: &Identity, filter: &str, expected: bool) {
        assert_eq!(
            acl().may_subscribe(who, filter),
            expected,
            "{who:?} subscribe {filter}"
        );
    }

    #[test]
    fn a_meter_speaks_only_for_itself() {
        let a = meter("GA-0001");
        check_pub(&a, "meters/GA-0001/state", true);
        check_pub(&a, "meters/GA-0001/event", true);
        check_pub(&a, "meters/GA-0001/cmd/ack", true);
        check_pub(&a, "meters/GB-0002/state", false);
        check_pub(&a, "meters/GA-0001/ack", false);
        check_pub(&a, "meters/GA-0001/cmd", false);
        check_pub(&a, "meters/GB-0002/cmd/ack", false);
        check_pub(&a, "meters/GB-0002/cmd", false);
        check_pub(&a, "meters/GA-0001", false);
        check_pub(&a, "meters/+/state", false);
        check_pub(&a, "meters/GA-0001/#", false);
        check_pub(&a, "alarms/x", false);
        check_pub(&a, "sensors/GA-0001/temp", true);
        check_pub(&a, "sensors/GB-0002/temp", false);
        check_pub(&a, "lab/ph", false);
        check_pub(&meter("LAB-1"), "lab/ph", true);
        check_pub(&Identity::Anonymous, "meters/GA-0001/state", false);
        check_pub(&Identity::Integration("ha".into()), "meters/x/state", false);
    }

    #[test]
    fn subscriptions_stay_inside_the_account() {
        let a = meter("GA-0001");
        check_sub(&a, "meters/GA-0001/ack", true);
        check_sub(&a, "meters/GA-0001/#", true);
        check_sub(&a, "meters/GA-0001/cmd", true);
        check_sub(&a, "meters/GB-0002/cmd", false);
        check_sub(&a, "meters/+/cmd", false);
        check_sub(&a, "meters/GB-0002/#", false);
        check_sub(&a, "meters/+/ack", false);
        check_sub(&a, "meters/#", false);
        check_sub(&a, "#", false);
        check_sub(&a, "meters/GA-0001/#/x", false);
        let ha = Identity::Integration("ha".into());
        check_sub(&ha, "meters/#", true);
        check_sub(&ha, "alarms/#", true);
        check_sub(&ha, "meters/+/state", true);
        check_sub(&ha, "#", false);
        check_sub(&ha, "+/state", false);
        check_sub(&ha, "sensors/#", false);
        check_sub(&Identity::Anonymous, "meters/#", true);
    }

    #[test]
    fn client_ids_and_filters() {
        assert!(client_id_ok(&meter("GA-0001"), "GA-0001"));
        assert!(client_id_ok(&meter("GA-0001"), ""));
        assert!(!client_id_ok(&meter("GA-0001"), "GB-0002"));
        assert!(client_id_ok(&Identity::Anonymous, "whatever"));
        assert!(valid_filter("a/+/b/#"));
        assert!(!valid_filter("a/b+"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter(""));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/c/d"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(!topic_matches("a/b", "a"));
    }
}
