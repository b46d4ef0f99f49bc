//! The handshake guard, which protects the broker's only thread: bounds on unfinished DEVID-1
//! handshakes (in total and per source address group) and a ClientHello token bucket per source
//! group, all checked before any public-key work; and the closing of handshakes that outlive
//! `auth_timeout`.

#![deny(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Conn, ConnKey, Engine, Expired, ServerSide};
use crate::config::HandshakeGuard;
use crate::refusal::Refusal;
use crate::service::LogLevel;

/// The group a source address counts in for the handshake bounds: an IPv4 address, an IPv6
/// /64 (one subscriber's usual allocation), or the text itself when it does not parse.
pub fn source_group(address: Option<&str>) -> String {
    let Some(a) = address else {
        return "?".into();
    };
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(ip) => ip.to_string(),
        Err(_) => a.to_string(),
    }
}

/// A token bucket: `tokens` as of `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the guard counts: unfinished handshakes per source address group and in the order they
/// started, and the ClientHello token buckets.
pub(super) struct HandshakeLimiter {
    bounds: HandshakeGuard,
    /// Unfinished handshakes per source address group.
    pending_by_source: HashMap<String, usize>,
    /// Handshakes in the order they started (stale entries are skipped when popped).
    pending_order: VecDeque<(Instant, ConnKey)>,
    /// ClientHello token buckets per source address group.
    hello_buckets: HashMap<String, Bucket>,
}

impl HandshakeLimiter {
    pub(super) fn new(bounds: HandshakeGuard) -> Self {
        HandshakeLimiter {
            bounds,
            pending_by_source: HashMap::new(),
            pending_order: VecDeque::new(),
            hello_buckets: HashMap::new(),
        }
    }

    /// Unfinished handshakes in total.
    pub(super) fn pending(&self) -> usize {
        self.pending_by_source.values().sum()
    }

    /// The bounds checked before any public-key work: unfinished handshakes in total and from
    /// this source, then the source's ClientHello rate (full handshakes only).
    pub(super) fn admit(&mut self, source: &str, full: bool) -> Result<(), Refusal> {
        let g = self.bounds;
        let total = self.pending();
        if total >= g.max_pending {
            return Err(Refusal::TooManyPending { pending: total });
        }
        let here = self.pending_by_source.get(source).copied().unwrap_or(0);
        if here >= g.max_pending_per_address {
            return Err(Refusal::TooManyPendingFromSource {
                source_group: source.to_string(),
                pending: here,
            });
        }
        if !full {
            return Ok(());
        }
        let now = Instant::now();
        let burst = f64::from(g.hello_burst);
        let b = self
            .hello_buckets
            .entry(source.to_string())
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            });
        let refill = now.duration_since(b.at).as_secs_f64() * f64::from(g.hello_rate);
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Refusal::HelloRate {
                source_group: source.to_string(),
                rate: g.hello_rate,
            });
        }
        b.tokens -= 1.0;
        Ok(())
    }

    /// Counts a handshake from `source` for connection `key` that starts now; returns its start.
    pub(super) fn start(&mut self, source: String, key: ConnKey) -> Instant {
        let started = Instant::now();
        *self.pending_by_source.entry(source).or_insert(0) += 1;
        self.pending_order.push_back((started, key));
        started
    }

    /// Uncounts a handshake from `address` that ended (finished, failed, replaced or closed).
    pub(super) fn end(&mut self, address: Option<&str>) {
        let source = source_group(address);
        if let Some(n) = self.pending_by_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending_by_source.remove(&source);
            }
        }
    }

    /// Forgets the buckets that have refilled: they are the same as no bucket (bounded memory).
    pub(super) fn forget_full_buckets(&mut self) {
        let g = self.bounds;
        let full_after = f64::from(g.hello_burst) / f64::from(g.hello_rate);
        self.hello_buckets
            .retain(|_, b| b.at.elapsed().as_secs_f64() < full_after);
    }

    /// The oldest handshake start still in the order, taken off it, when it is more than
    /// `timeout` ago.
    fn pop_older_than(&mut self, timeout: Duration) -> Option<(Instant, ConnKey)> {
        let &(started, key) = self.pending_order.front()?;
        if started.elapsed() <= timeout {
            return None;
        }
        self.pending_order.pop_front();
        Some((started, key))
    }
}

impl<S: ServerSide> Engine<S> {
    /// Handshakes that did not finish within `auth_timeout`: their state is dropped, the
    /// refusal logged and reported, and the connections returned for the caller to close
    /// (after releasing every borrow of the engine: closing re-enters DISCONNECT). A stalled
    /// re-authentication ends its live connection too.
    pub fn expired_handshakes(&mut self) -> Vec<Expired> {
        let timeout = self.config.auth_timeout;
        let mut expired = Vec::new();
        while let Some((started, key)) = self.handshakes.pop_older_than(timeout) {
            // Skip entries whose handshake finished, failed, or was replaced by a newer one.
            let current = matches!(
                self.conns.get(&key),
                Some(Conn::Handshaking { started: s, .. }) if *s == started
            );
            if !current {
                continue;
            }
            if let Some(Conn::Handshaking {
                identity,
                address,
                previous,
                ..
            }) = self.take(key)
            {
                self.refuse(
                    &identity.client_id,
                    address.as_deref(),
                    Refusal::Abandoned {
                        secs: timeout.as_secs(),
                    },
                );
                expired.push(Expired {
                    key,
                    reauth: previous.is_some(),
                });
                if let Some(p) = previous {
                    self.ended(*p);
                }
            }
        }
        if !expired.is_empty() {
            self.log(
                LogLevel::Notice,
                format!(
                    "devid: closing {} connection(s) whose handshake did not finish within {} s; public-key operations since start: {}",
                    expired.len(),
                    timeout.as_secs(),
                    devid_core::protocol::pk_operations()
                ),
            );
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use devid_core::api::ConnectionEventKind;
    use tokio::sync::mpsc;

    use super::super::testing::*;
    use super::super::{AuthOutcome, ConnKey, Engine, Expired, METHOD};
    use super::source_group;
    use crate::policy::Access;
    use crate::service::ToService;

    fn start(e: &mut Engine<Fake>, key: ConnKey, msg: &str, address: &str) -> AuthOutcome {
        let cid = msg.split(':').nth(1).unwrap_or("");
        e.auth_start(key, Some(METHOD), msg.as_bytes(), Some(cid), Some(address))
    }

    fn auth_failures(rx: &mut mpsc::Receiver<ToService>) -> Vec<String> {
        drain(rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::Event(ev) if ev.kind == ConnectionEventKind::AuthFailure => ev.reason,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn stalled_handshakes_are_closed_after_auth_timeout() {
        let (mut e, _s, mut rx) = engine_with(|c| c.auth_timeout = Duration::from_millis(200));
        // Authenticated, then a re-authentication that stalls.
        assert!(matches!(
            connect(&mut e, 3, "dev3", "0c"),
            AuthOutcome::Success(_)
        ));
        assert!(matches!(
            start(&mut e, 3, "hello:dev3:0c", "10.0.0.3"),
            AuthOutcome::Continue(_)
        ));
        // A first exchange that stalls, one that finishes, one that the client abandons.
        for key in [1, 2, 4] {
            assert!(matches!(
                start(&mut e, key, "hello:dev1:0a", "10.0.0.1"),
                AuthOutcome::Continue(_)
            ));
        }
        assert!(e.in_first_handshake(1));
        assert!(!e.in_first_handshake(3), "a re-authentication");
        assert!(matches!(
            e.auth_continue(2, b"finish", Some("dev1"), None),
            AuthOutcome::Success(_)
        ));
        e.disconnect(4);
        assert_eq!(e.handshakes.pending(), 2);
        assert!(e.expired_handshakes().is_empty(), "not yet");
        let _ = auth_failures(&mut rx);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            e.expired_handshakes(),
            vec![
                Expired {
                    key: 3,
                    reauth: true
                },
                Expired {
                    key: 1,
                    reauth: false
                }
            ]
        );
        assert!(e.expired_handshakes().is_empty(), "closed once");
        assert_eq!(e.handshakes.pending(), 0);
        assert!(e.acl(2, Access::Publish, "devices/dev1/x"), "untouched");
        assert!(!e.acl(3, Access::Publish, "devices/dev3/x"));
        let reasons = auth_failures(&mut rx);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons
            .iter()
            .all(|r| r.starts_with("authentication timed out")));
        assert!(e
            .take_logs()
            .iter()
            .any(|(_, l)| l.contains("dev1") && l.contains("authentication timed out")));
        // The ClientFinish of a closed handshake finds nothing.
        assert_eq!(
            e.auth_continue(1, b"finish", Some("dev1"), None),
            AuthOutcome::Deny
        );
    }

    #[test]
    fn unfinished_handshakes_are_bounded_per_address_and_in_total() {
        let (mut e, _s, mut rx) = engine_with(|c| {
            c.guard.max_pending = 6;
            c.guard.max_pending_per_address = 2;
        });
        let mut key = 0;
        let mut try_from = |e: &mut Engine<Fake>, address: &str| {
            key += 1;
            start(e, key, "hello:dev1:0a", address)
        };
        for address in [
            "10.0.0.1",
            "10.0.0.1",
            "10.0.0.2",
            "2001:db8::1",
            "2001:db8::2",
        ] {
            assert!(matches!(
                try_from(&mut e, address),
                AuthOutcome::Continue(_)
            ));
        }
        let calls = HELLO_CALLS.with(|c| c.get());
        // Per address (an IPv6 /64 counts as one), then in total.
        assert_eq!(try_from(&mut e, "10.0.0.1"), AuthOutcome::Deny);
        assert_eq!(try_from(&mut e, "2001:db8::3"), AuthOutcome::Deny);
        assert_eq!(
            HELLO_CALLS.with(|c| c.get()),
            calls,
            "refused before any work"
        );
        assert!(matches!(
            try_from(&mut e, "10.0.0.3"),
            AuthOutcome::Continue(_)
        ));
        let calls = HELLO_CALLS.with(|c| c.get());
        assert_eq!(try_from(&mut e, "10.0.0.9"), AuthOutcome::Deny);
        assert_eq!(
            HELLO_CALLS.with(|c| c.get()),
            calls,
            "refused before any work"
        );
        let reasons = auth_failures(&mut rx);
        assert!(reasons[0].contains("from 10.0.0.1"), "{reasons:?}");
        assert!(reasons[1].contains("from 2001:db8:0:0::/64"), "{reasons:?}");
        assert!(
            reasons[2].contains("too many unfinished handshakes (6"),
            "{reasons:?}"
        );
        // An ended handshake frees its place.
        e.disconnect(1);
        assert!(matches!(
            try_from(&mut e, "10.0.0.1"),
            AuthOutcome::Continue(_)
        ));
        assert_eq!(e.handshakes.pending(), 6);
    }

    #[test]
    fn client_hellos_are_rate_limited_per_address_before_any_work() {
        let (mut e, _s, mut rx) = engine_with(|c| {
            c.guard.hello_rate = 4;
            c.guard.hello_burst = 3;
        });
        let calls = || HELLO_CALLS.with(|c| c.get());
        let before = calls();
        for key in 1..=3 {
            assert!(matches!(
                start(&mut e, key, "hello:dev1:0a", "10.0.0.1"),
                AuthOutcome::Continue(_)
            ));
            e.disconnect(key);
        }
        assert_eq!(
            start(&mut e, 4, "hello:dev1:0a", "10.0.0.1"),
            AuthOutcome::Deny
        );
        assert_eq!(calls() - before, 3, "the refused ClientHello was not read");
        assert!(auth_failures(&mut rx)
            .iter()
            .any(|r| r.contains("ClientHello rate from 10.0.0.1")));
        // Another address has its own bucket; a resumption costs no public-key work.
        assert!(matches!(
            start(&mut e, 5, "hello:dev1:0a", "10.0.0.2"),
            AuthOutcome::Continue(_)
        ));
        assert!(matches!(
            start(&mut e, 6, "resume:dev1:0a", "10.0.0.1"),
            AuthOutcome::Continue(_)
        ));
        // The bucket refills at the rate.
        std::thread::sleep(Duration::from_millis(300));
        assert!(matches!(
            start(&mut e, 7, "hello:dev1:0a", "10.0.0.1"),
            AuthOutcome::Continue(_)
        ));
    }

    #[test]
    fn source_groups() {
        assert_eq!(source_group(Some("192.0.2.1")), "192.0.2.1");
        assert_eq!(source_group(Some("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(
            source_group(Some("2001:db8:1:2:3:4:5:6")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(source_group(None), "?");
    }
}
