//! Prometheus text metrics, kept by hand: a few counters, a gauge and one latency histogram do
//! not justify a metrics framework (and the common exporter crates pull in a second TLS stack).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use devid_core::api::{CheckName, RevocationAction};

/// Upper bounds (seconds) of the issuance latency histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    /// (method, route, status) -> count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    certificates_issued: AtomicU64,
    /// Revocations and suspensions (devices and certificates).
    revocations: AtomicU64,
    /// Suspensions lifted.
    resumptions: AtomicU64,
    /// Broker-reported authentication failures by refusal kind (bounded, see `auth_failure`).
    auth_failures: Mutex<BTreeMap<String, u64>>,
    feed_head: AtomicI64,
    /// Per-bucket counts (not cumulative), then +Inf.
    latency_buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
    /// The fleet's gauges as last read from the store, and when (unix seconds).
    fleet: Mutex<Option<(i64, FleetGauges)>>,
}

/// The fleet's gauges: read from the store at most every [`FLEET_GAUGES_MAX_AGE`] seconds
/// (a scrape finds them older: the scrape reads them again), so scrapers cost the database one
/// set of counts per interval whatever their number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetGauges {
    pub active: i64,
    pub suspended: i64,
    pub revoked: i64,
    pub connected_now: i64,
    /// Open findings per check (every check has one severity).
    pub open_findings: Vec<(CheckName, i64)>,
}

/// How old the fleet gauges may be before a scrape reads them again.
pub const FLEET_GAUGES_MAX_AGE: i64 = 5;

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((method.to_string(), route.to_string(), status))
                .or_default() += 1;
        }
    }

    /// `count` certificates issued by one call that took `elapsed` (a batch counts once in the
    /// latency histogram).
    pub fn issued(&self, count: usize, elapsed: Duration) {
        if count == 0 {
            return;
        }
        self.certificates_issued
            .fetch_add(count as u64, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// A device-status change this process committed to the feed: a revocation or suspension,
    /// or a resumption (counted apart). Settings changes (`updated`) are not status changes.
    pub fn status_changed(&self, action: RevocationAction) {
        let counter = match action {
            RevocationAction::Revoked | RevocationAction::Suspended => &self.revocations,
            RevocationAction::Resumed => &self.resumptions,
            RevocationAction::Updated | RevocationAction::Rotated => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// An `auth_failure` event a broker reported, by its `refusal` kind. A kind that is not a
    /// short snake_case name, and any kind beyond the first 64 seen, counts as `other` (labels
    /// come from brokers: keep them bounded).
    pub fn auth_failure(&self, refusal: Option<&str>) {
        const MAX_KINDS: usize = 64;
        let kind = refusal
            .filter(|k| {
                !k.is_empty()
                    && k.len() <= 48
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
            .unwrap_or("other");
        if let Ok(mut map) = self.auth_failures.lock() {
            let key = if map.contains_key(kind) || map.len() < MAX_KINDS {
                kind
            } else {
                "other"
            };
            *map.entry(key.to_string()).or_default() += 1;
        }
    }

    /// Whether the fleet gauges need reading again at `now`.
    pub fn fleet_stale(&self, now: i64) -> bool {
        self.fleet
            .lock()
            .map(|g| {
                g.as_ref()
                    .is_none_or(|(at, _)| now - at >= FLEET_GAUGES_MAX_AGE)
            })
            .unwrap_or(true)
    }

    pub fn set_fleet(&self, now: i64, gauges: FleetGauges) {
        if let Ok(mut g) = self.fleet.lock() {
            *g = Some((now, gauges));
        }
    }

    pub fn set_feed_head(&self, head: i64) {
        self.feed_head.fetch_max(head, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str("# HELP devid_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE devid_http_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((method, route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "devid_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = write!(
            out,
            "# HELP devid_certificates_issued_total Device certificates issued.\n\
             # TYPE devid_certificates_issued_total counter\n\
             devid_certificates_issued_total {}\n\
             # HELP devid_revocations_total Revocations and suspensions made by this process.\n\
             # TYPE devid_revocations_total counter\n\
             devid_revocations_total {}\n\
             # HELP devid_resumptions_total Suspensions lifted by this process.\n\
             # TYPE devid_resumptions_total counter\n\
             devid_resumptions_total {}\n\
             # HELP devid_revocation_feed_head Newest sequence number of the device feed (revocations and settings changes).\n\
             # TYPE devid_revocation_feed_head gauge\n\
             devid_revocation_feed_head {}\n",
            self.certificates_issued.load(Ordering::Relaxed),
            self.revocations.load(Ordering::Relaxed),
            self.resumptions.load(Ordering::Relaxed),
            self.feed_head.load(Ordering::Relaxed),
        );
        out.push_str(
            "# HELP devid_auth_failures_total Authentication failures reported by brokers, by refusal kind.\n",
        );
        out.push_str("# TYPE devid_auth_failures_total counter\n");
        if let Ok(map) = self.auth_failures.lock() {
            for (kind, n) in map.iter() {
                let _ = writeln!(out, "devid_auth_failures_total{{refusal=\"{kind}\"}} {n}");
            }
        }
        if let Ok(Some((_, g))) = self.fleet.lock().as_deref() {
            let _ = write!(
                out,
                "# HELP devid_fleet_devices Devices and sensors registered, by status.\n\
                 # TYPE devid_fleet_devices gauge\n\
                 devid_fleet_devices{{status=\"active\"}} {}\n\
                 devid_fleet_devices{{status=\"suspended\"}} {}\n\
                 devid_fleet_devices{{status=\"revoked\"}} {}\n\
                 # HELP devid_fleet_connected_devices Devices with an open connection on a live broker.\n\
                 # TYPE devid_fleet_connected_devices gauge\n\
                 devid_fleet_connected_devices {}\n\
                 # HELP devid_fleet_open_findings Open findings of the fleet checks, by check and severity.\n\
                 # TYPE devid_fleet_open_findings gauge\n",
                g.active, g.suspended, g.revoked, g.connected_now
            );
            for check in CheckName::ALL {
                let n = g
                    .open_findings
                    .iter()
                    .filter(|(c, _)| *c == check)
                    .map(|(_, n)| n)
                    .sum::<i64>();
                let severity = crate::domain::fleet::checks::severity(check);
                let _ = writeln!(
                    out,
                    "devid_fleet_open_findings{{check=\"{}\",severity=\"{}\"}} {n}",
                    check.as_str(),
                    severity.as_str()
                );
            }
        }
        out.push_str(
            "# HELP devid_issuance_seconds Time to register and issue (one observation per call).\n",
        );
        out.push_str("# TYPE devid_issuance_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "devid_issuance_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.latency_buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "devid_issuance_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "devid_issuance_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "devid_issuance_seconds_count {}",
            self.latency_count.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.issued(3, Duration::from_micros(700));
        m.issued(1, Duration::from_secs(10));
        m.request("POST", "/v1/devices", 201);
        m.set_feed_head(5);
        m.set_feed_head(4);
        m.status_changed(RevocationAction::Revoked);
        m.status_changed(RevocationAction::Suspended);
        m.status_changed(RevocationAction::Resumed);
        m.status_changed(RevocationAction::Updated);
        m.auth_failure(Some("device_revoked"));
        m.auth_failure(Some("device_revoked"));
        m.auth_failure(Some("Bad\"label"));
        m.auth_failure(None);
        assert!(m.fleet_stale(100));
        assert!(!m.render().contains("devid_fleet_devices"));
        m.set_fleet(
            100,
            FleetGauges {
                active: 3,
                suspended: 1,
                revoked: 0,
                connected_now: 2,
                open_findings: vec![(CheckName::Silent, 4)],
            },
        );
        assert!(!m.fleet_stale(104));
        assert!(m.fleet_stale(105));
        let text = m.render();
        assert!(
            text.contains("devid_fleet_devices{status=\"active\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("devid_fleet_connected_devices 2\n"));
        assert!(text.contains("devid_fleet_open_findings{check=\"silent\",severity=\"info\"} 4\n"));
        assert!(text.contains(
            "devid_fleet_open_findings{check=\"revoked_connected\",severity=\"critical\"} 0\n"
        ));
        assert!(
            text.contains("devid_certificates_issued_total 4\n"),
            "{text}"
        );
        assert!(text.contains("devid_issuance_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("devid_issuance_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("devid_issuance_seconds_bucket{le=\"5\"} 1\n"));
        assert!(text.contains("devid_issuance_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("devid_revocation_feed_head 5\n"));
        // A resumption is not a revocation.
        assert!(text.contains("devid_revocations_total 2\n"), "{text}");
        assert!(text.contains("devid_resumptions_total 1\n"), "{text}");
        assert!(text.contains("devid_auth_failures_total{refusal=\"device_revoked\"} 2\n"));
        assert!(text.contains("devid_auth_failures_total{refusal=\"other\"} 2\n"));
        assert!(text.contains(
            "devid_http_requests_total{method=\"POST\",route=\"/v1/devices\",status=\"201\"} 1"
        ));
    }
}
