//! Topic authorization: a device's policy (filters with `%c` for its ClientID) against a topic
//! (PUBLISH, delivery) or a subscription filter (SUBSCRIBE), with MQTT wildcard semantics.

#![deny(unsafe_code)]

use devid_core::api::TopicPolicy;
use devid_core::{TopicFilter, TopicName};

/// What the broker asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The device publishes to a topic (MOSQ_ACL_WRITE).
    Publish,
    /// The device subscribes with a filter (MOSQ_ACL_SUBSCRIBE).
    Subscribe,
    /// A message on a topic is delivered to the device (MOSQ_ACL_READ).
    Deliver,
}

/// A device's policy with `%c` already replaced by its ClientID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl Expanded {
    /// Expands `%c` (core's [`TopicFilter::expand`]). The ClientID has passed devid's ClientID
    /// rules (`[0-9A-Za-z]` only), so it cannot smuggle a wildcard or a level separator into a
    /// filter; a filter that is not a valid MQTT filter, before or after expansion, is dropped
    /// (it grants nothing).
    pub fn new(policy: &TopicPolicy, client_id: &str) -> Expanded {
        let expand = |list: &[String]| {
            list.iter()
                .filter_map(|f| TopicFilter::parse(f).and_then(|f| f.expand(client_id)).ok())
                .map(TopicFilter::into_string)
                .collect()
        };
        Expanded {
            publish: expand(&policy.publish),
            subscribe: expand(&policy.subscribe),
        }
    }

    /// Whether the access is allowed. Publish checks the publish filters; subscribe and
    /// delivery check the subscribe filters (a device receives what it may subscribe to).
    pub fn allows(&self, access: Access, topic: &str) -> bool {
        match access {
            Access::Publish => valid_topic(topic) && self.publish.iter().any(|f| covers(f, topic)),
            Access::Deliver => {
                valid_topic(topic) && self.subscribe.iter().any(|f| covers(f, topic))
            }
            Access::Subscribe => {
                valid_filter(topic) && self.subscribe.iter().any(|f| covers(f, topic))
            }
        }
    }
}

/// A topic name by core's MQTT rule ([`TopicName`]).
fn valid_topic(t: &str) -> bool {
    TopicName::check(t).is_ok()
}

/// A topic filter by core's MQTT rule ([`TopicFilter`]).
fn valid_filter(f: &str) -> bool {
    TopicFilter::check(f).is_ok()
}

/// Whether every topic matched by `inner` (a topic or a filter) is matched by the policy filter
/// `outer`. For a topic without wildcards this is plain MQTT matching. Topics whose first level
/// starts with `$` are not matched by a leading wildcard (MQTT 5.0 section 4.7.2).
pub fn covers(outer: &str, inner: &str) -> bool {
    let o: Vec<&str> = outer.split('/').collect();
    let i: Vec<&str> = inner.split('/').collect();
    if inner.starts_with('$') && (o[0] == "+" || o[0] == "#") {
        return false;
    }
    let mut k = 0;
    loop {
        match (o.get(k), i.get(k)) {
            // `a/#` also matches `a` itself.
            (Some(&"#"), _) => return true,
            (None, None) => return true,
            (None, Some(_)) => return false,
            (Some(_), None) => return false,
            (Some(&"+"), Some(&il)) => {
                if il == "#" {
                    return false;
                }
            }
            (Some(&ol), Some(&il)) => {
                if ol != il {
                    return false;
                }
            }
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_for(id: &str) -> Expanded {
        Expanded::new(&TopicPolicy::default(), id)
    }

    #[test]
    fn ok_default_policy_own_topics() {
        let p = default_for("dev1");
        assert!(p.allows(Access::Publish, "devices/dev1/temp"));
        assert!(p.allows(Access::Publish, "devices/dev1"));
        assert!(p.allows(Access::Publish, "devices/dev1/a/b/c"));
        assert!(p.allows(Access::Subscribe, "devices/dev1/#"));
        assert!(p.allows(Access::Subscribe, "devices/dev1/+/x"));
        assert!(p.allows(Access::Subscribe, "broadcast/#"));
        assert!(p.allows(Access::Subscribe, "broadcast/fw/+"));
        assert!(p.allows(Access::Deliver, "broadcast/fw/1"));
        assert!(p.allows(Access::Deliver, "devices/dev1/cmd"));
    }

    #[test]
    fn fail_default_policy_foreign_and_wider_topics() {
        let p = default_for("dev1");
        for t in [
            "devices/dev2/temp",
            "devices/dev10/temp",
            "devices",
            "broadcast/fw",
            "other",
            "$SYS/broker/uptime",
            "devices/dev1/+",
            "devices/dev1/#",
            "",
        ] {
            assert!(!p.allows(Access::Publish, t), "publish {t}");
        }
        for f in [
            "#",
            "+/dev1/#",
            "devices/#",
            "devices/+/temp",
            "devices/dev2/#",
            "broadcast/#/x",
            "$SYS/#",
            "devices/dev1/a#",
            "",
        ] {
            assert!(!p.allows(Access::Subscribe, f), "subscribe {f}");
        }
        assert!(!p.allows(Access::Deliver, "devices/dev2/cmd"));
        assert!(!p.allows(Access::Deliver, "$SYS/x"));
    }

    #[test]
    fn custom_templates_expand_client_id() {
        let policy = TopicPolicy {
            publish: vec!["fleet/%c/up".into(), "bad/#/x".into()],
            subscribe: vec!["fleet/%c/down/+".into(), "+/status".into()],
        };
        let p = Expanded::new(&policy, "abc");
        assert!(p.allows(Access::Publish, "fleet/abc/up"));
        assert!(!p.allows(Access::Publish, "fleet/abc/up/more"));
        assert!(!p.allows(Access::Publish, "bad/x/x"));
        assert!(p.allows(Access::Subscribe, "fleet/abc/down/+"));
        assert!(p.allows(Access::Subscribe, "fleet/abc/down/1"));
        assert!(!p.allows(Access::Subscribe, "fleet/abc/down/#"));
        assert!(p.allows(Access::Subscribe, "x/status"));
        assert!(!p.allows(Access::Subscribe, "$SYS/status"));
    }

    #[test]
    fn empty_policy_grants_nothing() {
        let p = Expanded::new(
            &TopicPolicy {
                publish: vec![],
                subscribe: vec![],
            },
            "a",
        );
        assert!(!p.allows(Access::Publish, "devices/a/x"));
        assert!(!p.allows(Access::Subscribe, "devices/a/x"));
    }

    #[test]
    fn filter_validity() {
        for ok in ["a", "a/b", "#", "+", "a/+/b", "a/#", "/", "+/+"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a/b+", "#/a", "a\0"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }
}
