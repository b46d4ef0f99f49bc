//! The service thread's sensor work (DEVID-S1): fetching a gateway's sensor keys, merging the
//! broker thread's per-sensor counts until they are posted, and persisting the highest
//! accepted seqs.

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use devid_core::api::{ConnectionEvent, DeviceCounters, SensorKeys, SensorReport};

use super::{Ctx, FromService, LogLevel};
use crate::engine::{SensorMaterial, SensorTally};
use crate::state;

impl Ctx {
    /// Records the reported highest seqs and writes them to `state_dir` (one atomic write).
    pub(super) fn persist_sensor_counters(&self, report: &[SensorTally]) {
        let snapshot = {
            let mut c = self
                .sensor_counters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut changed = false;
            // A sensor only refused here (0: none accepted) has nothing to persist.
            for t in report.iter().filter(|t| t.highest_seq > 0) {
                let e = c.entry(t.sensor.clone()).or_insert(0);
                if t.highest_seq > *e {
                    *e = t.highest_seq;
                    changed = true;
                }
            }
            if !changed {
                return;
            }
            c.clone()
        };
        if let Err(e) = state::save_sensor_counters(&self.config.state_dir, &snapshot) {
            self.log(
                LogLevel::Error,
                format!("devid: cannot persist sensor counters: {e}"),
            );
        }
    }
}

/// What waits for the next `POST /v1/events`.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) events: Vec<ConnectionEvent>,
    /// Per (sensor, gateway): the reports since the last successful POST, merged.
    pub(super) sensors: BTreeMap<(String, String), SensorTally>,
    /// Per ClientID: PUBLISHes accepted and refused since the last successful POST, merged.
    pub(super) counters: BTreeMap<String, (u64, u64)>,
}

/// Most ClientIDs whose PUBLISH counts wait for a successful POST; counts of further
/// ClientIDs are dropped (and that is logged) while the service is unreachable.
pub(super) const MAX_PENDING_COUNTERS: usize = 100_000;

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.sensors.is_empty() && self.counters.is_empty()
    }

    /// Adds a handoff of PUBLISH counts to what waits; returns the counts that did not fit.
    pub(super) fn merge_counters(&mut self, counters: Vec<DeviceCounters>) -> u64 {
        let mut dropped = 0u64;
        for c in counters {
            if let Some(p) = self.counters.get_mut(&c.client_id) {
                p.0 = p.0.saturating_add(c.published);
                p.1 = p.1.saturating_add(c.refused);
            } else if self.counters.len() < MAX_PENDING_COUNTERS {
                self.counters.insert(c.client_id, (c.published, c.refused));
            } else {
                dropped = dropped.saturating_add(c.published.saturating_add(c.refused));
            }
        }
        dropped
    }

    /// The counters part of a batch: at most `max` ClientIDs that wait, each once.
    pub(super) fn counters_batch(&self, max: usize) -> Vec<DeviceCounters> {
        self.counters
            .iter()
            .take(max)
            .map(|(client_id, (published, refused))| DeviceCounters {
                client_id: client_id.clone(),
                published: *published,
                refused: *refused,
            })
            .collect()
    }

    /// Takes out what a POST delivered, leaving what was counted since.
    pub(super) fn delivered_counters(&mut self, sent: &[DeviceCounters]) {
        for c in sent {
            if let Some(p) = self.counters.get_mut(&c.client_id) {
                p.0 = p.0.saturating_sub(c.published);
                p.1 = p.1.saturating_sub(c.refused);
                if *p == (0, 0) {
                    self.counters.remove(&c.client_id);
                }
            }
        }
    }

    pub(super) fn merge(&mut self, t: SensorTally) {
        let key = (t.sensor.clone(), t.gateway.clone());
        match self.sensors.get_mut(&key) {
            None => {
                self.sensors.insert(key, t);
            }
            Some(p) => {
                p.highest_seq = p.highest_seq.max(t.highest_seq);
                p.delta.accepted += t.delta.accepted;
                for (k, v) in t.delta.refused {
                    *p.delta.refused.entry(k).or_default() += v;
                }
                p.delta.last_accepted_at = p.delta.last_accepted_at.max(t.delta.last_accepted_at);
            }
        }
    }
}

/// A sensor's line of `POST /v1/events`.
pub(super) fn sensor_report(t: &SensorTally) -> SensorReport {
    SensorReport {
        client_id: t.sensor.clone(),
        gateway: t.gateway.clone(),
        highest_seq: t.highest_seq,
        accepted: t.delta.accepted,
        refused: t
            .delta
            .refused
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        last_accepted_at: t.delta.last_accepted_at.map(rfc3339),
    }
}

pub(super) fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// The keys of the sensors attached to `gateway`, handed to the broker thread. On failure
/// nothing is sent: the gateway's readings stay refused as `keys_pending`, and the next
/// one asks again (at most once a second).
pub(super) async fn fetch_sensors(ctx: Arc<Ctx>, gateway: String) {
    let res = ctx
        .http
        .get(ctx.url(&format!("/v1/devices/{gateway}/sensors/keys")))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let answer: SensorKeys = match res {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(a) => a,
            Err(e) => {
                ctx.log(
                    LogLevel::Warning,
                    format!("devid: sensor keys of {gateway}: bad answer: {e}"),
                );
                return;
            }
        },
        Ok(r) => {
            ctx.log(
                LogLevel::Warning,
                format!("devid: sensor keys of {gateway}: HTTP {}", r.status()),
            );
            return;
        }
        Err(e) => {
            ctx.log(
                LogLevel::Warning,
                format!("devid: sensor keys of {gateway}: {e}"),
            );
            return;
        }
    };
    if answer.gateway != gateway {
        ctx.log(
            LogLevel::Warning,
            format!(
                "devid: sensor keys of {gateway}: answer is about {}",
                answer.gateway
            ),
        );
        return;
    }
    let mut sensors = Vec::with_capacity(answer.sensors.len());
    for s in &answer.sensors {
        match SensorMaterial::new(
            &s.client_id,
            s.status,
            &s.k_mac,
            &s.k_enc,
            &s.publish,
            s.seq_floor,
        ) {
            Ok(m) => sensors.push(m),
            // Left out: its readings are refused as not attached.
            Err(e) => ctx.log(
                LogLevel::Warning,
                format!("devid: sensor keys of {gateway}: {e}"),
            ),
        }
    }
    let _ = ctx.out.send(FromService::SensorKeys { gateway, sensors });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(client_id: &str, published: u64, refused: u64) -> DeviceCounters {
        DeviceCounters {
            client_id: client_id.into(),
            published,
            refused,
        }
    }

    #[test]
    fn counters_merge_until_delivered_one_entry_per_client_id() {
        let mut p = Pending::default();
        assert_eq!(p.merge_counters(vec![c("a", 1, 0), c("b", 0, 2)]), 0);
        // A failed POST leaves everything; the next handoff merges in.
        let sent = p.counters_batch(1_000);
        assert_eq!(sent, vec![c("a", 1, 0), c("b", 0, 2)]);
        p.merge_counters(vec![c("a", 4, 1)]);
        assert_eq!(p.counters_batch(1_000), vec![c("a", 5, 1), c("b", 0, 2)]);
        // Delivered: what the batch carried goes, what came after it stays.
        let sent = p.counters_batch(1_000);
        p.merge_counters(vec![c("b", 1, 0)]);
        p.delivered_counters(&sent);
        assert_eq!(p.counters_batch(1_000), vec![c("b", 1, 0)]);
        assert!(!p.is_empty());
        p.delivered_counters(&[c("b", 1, 0)]);
        assert!(p.is_empty());
    }

    #[test]
    fn counters_wait_bounded_and_leave_in_batches() {
        let mut p = Pending::default();
        let many: Vec<_> = (0..MAX_PENDING_COUNTERS)
            .map(|i| c(&format!("d{i:06}"), 1, 0))
            .collect();
        assert_eq!(p.merge_counters(many), 0);
        assert_eq!(
            p.merge_counters(vec![c("new", 2, 3), c("d000000", 1, 0)]),
            5
        );
        assert_eq!(p.counters.len(), MAX_PENDING_COUNTERS);
        assert_eq!(p.counters["d000000"], (2, 0));
        assert_eq!(p.counters_batch(1_000).len(), 1_000);
    }
}
