//! Per-device PUBLISH counters: each authenticated connection counts the PUBLISHes it had
//! accepted and refused (ACL, message authentication) in two cells of its own state, on the
//! broker thread, with no allocation and no I/O per message. About once a second TICK sums them
//! per ClientID and hands the sums to the service thread, which sends them as
//! `EventBatch.counters`. What a closing connection counted is kept for the next handoff, and
//! sums the service thread cannot take now (its queue is full) are merged into the next one:
//! nothing counted is lost, up to [`MAX_PENDING`] ClientIDs.
//!
//! A gateway's relayed sensor readings are not counted here: they are the sensors' and leave
//! in the sensor reports. Mosquitto checks a Will against the ACL when it sends it (no MESSAGE
//! event): a Will refused while the connection is still known counts as refused, one sent is
//! not counted.

#![deny(unsafe_code)]

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use devid_core::api::DeviceCounters;
use tokio::sync::mpsc::error::TrySendError;

use super::{Conn, Engine, ServerSide};
use crate::service::{lock, LogLevel, ToService};

/// Counters leave for the service thread at most this often.
pub(super) const HANDOFF_EVERY: Duration = Duration::from_secs(1);

/// Most ClientIDs whose counts wait for a handoff; counts of further ClientIDs are dropped
/// (and that is logged) until the service thread takes the waiting ones.
pub(super) const MAX_PENDING: usize = 100_000;

/// What one connection counted since the last handoff. Cells: the ACL check, which counts a
/// refused PUBLISH, has only a shared borrow of the engine.
#[derive(Debug, Default)]
pub(super) struct ConnCounts {
    published: Cell<u64>,
    refused: Cell<u64>,
}

impl ConnCounts {
    pub(super) fn published(&self) {
        self.published.set(self.published.get().saturating_add(1));
    }

    pub(super) fn refused(&self) {
        self.refused.set(self.refused.get().saturating_add(1));
    }

    /// The counts so far, leaving zeros.
    fn take(&self) -> (u64, u64) {
        (self.published.take(), self.refused.take())
    }
}

/// Sums per ClientID waiting for the service thread.
#[derive(Debug, Default)]
pub(super) struct CounterBook {
    pending: HashMap<String, (u64, u64)>,
    last_handoff: Option<Instant>,
    /// Counts dropped since the last warning (the book was full).
    dropped: u64,
}

impl CounterBook {
    /// Adds a connection's counts to its ClientID's sums.
    pub(super) fn add(&mut self, client_id: &str, (published, refused): (u64, u64)) {
        if published == 0 && refused == 0 {
            return;
        }
        if let Some(s) = self.pending.get_mut(client_id) {
            s.0 = s.0.saturating_add(published);
            s.1 = s.1.saturating_add(refused);
        } else if self.pending.len() < MAX_PENDING {
            self.pending
                .insert(client_id.to_string(), (published, refused));
        } else {
            self.dropped = self
                .dropped
                .saturating_add(published.saturating_add(refused));
        }
    }

    /// Whether a handoff is due (or `force`d).
    fn due(&self, force: bool) -> bool {
        force
            || self
                .last_handoff
                .is_none_or(|t| t.elapsed() >= HANDOFF_EVERY)
    }

    /// The sums as the batch carries them (one entry per ClientID), leaving the book empty.
    fn take(&mut self) -> Vec<DeviceCounters> {
        let mut out: Vec<DeviceCounters> = self
            .pending
            .drain()
            .map(|(client_id, (published, refused))| DeviceCounters {
                client_id,
                published,
                refused,
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// Takes back sums the service thread could not take.
    fn put_back(&mut self, counters: Vec<DeviceCounters>) {
        for c in counters {
            self.add(&c.client_id, (c.published, c.refused));
        }
    }
}

impl<S: ServerSide> Engine<S> {
    /// What a closing connection counted, kept for the next handoff.
    pub(super) fn keep_counts(&mut self, client_id: &str, counts: &ConnCounts) {
        self.counters.add(client_id, counts.take());
    }

    /// In TICK, once [`HANDOFF_EVERY`] has passed (or at once with `force`): sums every
    /// connection's counts per ClientID and hands them to the service thread, and updates the
    /// number of open authenticated connections the heartbeat reports.
    pub fn report_counters(&mut self, force: bool) {
        if !self.counters.due(force) {
            return;
        }
        self.counters.last_handoff = Some(Instant::now());
        let mut connected = 0u64;
        for conn in self.conns.values() {
            if let Conn::Authenticated(a) = conn {
                connected += 1;
                self.counters.add(&a.identity.client_id, a.counts.take());
            }
        }
        lock(&self.shared).connected = connected;
        if self.counters.dropped > 0 {
            let n = std::mem::take(&mut self.counters.dropped);
            self.log(
                LogLevel::Warning,
                format!("devid: {n} PUBLISH counts dropped: counts of {MAX_PENDING} devices wait for the service thread"),
            );
        }
        if self.counters.pending.is_empty() {
            return;
        }
        let Some(tx) = &self.to_service else {
            return;
        };
        match tx.try_send(ToService::Counters(self.counters.take())) {
            Ok(()) => {}
            Err(TrySendError::Full(ToService::Counters(c)))
            | Err(TrySendError::Closed(ToService::Counters(c))) => self.counters.put_back(c),
            Err(_) => {}
        }
    }

    #[cfg(test)]
    pub(super) fn pending_counters(&self) -> usize {
        self.counters.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use devid_core::api::DeviceCounters;

    use super::super::testing::*;
    use super::super::METHOD;
    use super::*;
    use crate::policy::Access;

    fn counters(rx: &mut tokio::sync::mpsc::Receiver<ToService>) -> Vec<Vec<DeviceCounters>> {
        drain(rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::Counters(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn c(client_id: &str, published: u64, refused: u64) -> DeviceCounters {
        DeviceCounters {
            client_id: client_id.into(),
            published,
            refused,
        }
    }

    #[test]
    fn accepted_and_refused_publishes_are_summed_per_client_id() {
        let (mut e, shared, mut rx) = engine();
        // Two connections of dev1 (a takeover in progress) and one of dev2.
        connect(&mut e, 1, "dev1", "0a");
        connect(&mut e, 2, "dev1", "0a");
        connect(&mut e, 3, "dev2", "0b");
        drain(&mut rx);
        for key in [1, 2, 1] {
            assert!(e.acl(key, Access::Publish, "devices/dev1/t"));
            assert!(matches!(
                e.message(key, "devices/dev1/t", &[], b"x"),
                super::super::MessageVerdict::Accept { .. }
            ));
        }
        // Refused by the ACL (never reaches MESSAGE) and by message authentication.
        assert!(!e.acl(1, Access::Publish, "devices/dev2/t"));
        assert!(!e.acl(3, Access::Publish, "devices/dev1/t"));
        assert_eq!(
            e.message(
                3,
                "devices/dev2/t",
                &[("devid-seq", "1"), ("devid-mac", "bad")],
                b"x"
            ),
            super::super::MessageVerdict::Refuse
        );
        // Subscriptions and deliveries are not PUBLISHes of the device.
        assert!(!e.acl(3, Access::Subscribe, "devices/dev1/#"));
        assert!(e.acl(3, Access::Deliver, "broadcast/x"));
        e.report_counters(true);
        assert_eq!(
            counters(&mut rx),
            vec![vec![c("dev1", 3, 1), c("dev2", 0, 2)]]
        );
        assert_eq!(crate::service::lock(&shared).connected, 3);
        // Nothing new: nothing sent.
        e.report_counters(true);
        assert!(counters(&mut rx).is_empty());
    }

    #[test]
    fn counts_of_a_closed_connection_leave_with_the_next_handoff() {
        let (mut e, shared, mut rx) = engine();
        connect(&mut e, 1, "dev1", "0a");
        e.message(1, "devices/dev1/t", &[], b"x");
        e.message(1, "devices/dev1/t", &[], b"x");
        e.disconnect(1);
        e.report_counters(true);
        assert_eq!(counters(&mut rx), vec![vec![c("dev1", 2, 0)]]);
        assert_eq!(crate::service::lock(&shared).connected, 0);
    }

    #[test]
    fn handoff_at_most_once_a_second_unless_forced() {
        let (mut e, _s, mut rx) = engine();
        connect(&mut e, 1, "dev1", "0a");
        e.report_counters(true);
        e.message(1, "devices/dev1/t", &[], b"x");
        // TICK runs often; the counts wait for their second.
        e.tick(Vec::new());
        assert!(counters(&mut rx).is_empty());
        assert_eq!(e.pending_counters(), 0, "still in the connection's cells");
        e.report_counters(true);
        assert_eq!(counters(&mut rx), vec![vec![c("dev1", 1, 0)]]);
    }

    #[test]
    fn counts_the_service_thread_cannot_take_are_merged_into_the_next_handoff() {
        let (mut e, _s, mut rx) = engine_queue(1);
        connect(&mut e, 1, "dev1", "0a");
        // The queue holds one message: the connect event fills it.
        e.message(1, "devices/dev1/t", &[], b"x");
        e.report_counters(true);
        assert_eq!(e.pending_counters(), 1, "kept, not lost");
        e.message(1, "devices/dev1/t", &[], b"x");
        assert!(!e.acl(1, Access::Publish, "devices/dev2/t"));
        drain(&mut rx);
        e.report_counters(true);
        assert_eq!(counters(&mut rx), vec![vec![c("dev1", 2, 1)]]);
        assert_eq!(e.pending_counters(), 0);
    }

    #[test]
    fn the_book_is_bounded() {
        let mut b = CounterBook::default();
        for i in 0..MAX_PENDING {
            b.add(&format!("d{i}"), (1, 0));
        }
        b.add("one-more", (2, 3));
        b.add("d0", (1, 1));
        assert_eq!(b.pending.len(), MAX_PENDING);
        assert_eq!(b.dropped, 5);
        assert_eq!(b.pending["d0"], (2, 1));
        b.add("zeros", (0, 0));
        assert!(!b.pending.contains_key("zeros"));
    }

    #[test]
    fn an_unauthenticated_connection_counts_nothing() {
        let (mut e, _s, mut rx) = engine();
        assert!(!e.acl(9, Access::Publish, "devices/dev1/t"));
        e.auth_start(9, Some(METHOD), b"hello:dev1:0a", Some("dev1"), None);
        assert!(!e.acl(9, Access::Publish, "devices/dev1/t"));
        e.report_counters(true);
        assert!(counters(&mut rx).is_empty());
    }
}
