//! The fleet checks' decisions, pure: thresholds (a model's, else the defaults), severities,
//! and whether a check holds given the counts the store read. The store runs them (on a batch's
//! rows for the event-driven checks, in the sweeper for the time-driven ones) and keeps the
//! findings.
//!
//! Severities: `revoked_connected`, `duplicate_client_id` and `shared_certificate` are
//! critical (a device that should be off is on, or an identity is used by more than one
//! device: a clone or a stolen key); `auth_failures`, `stale_broker`, `cert_expiring` and
//! `ca_expiring` are warnings (action needed soon, nothing is compromised yet); `silent` and
//! `never_seen` are informational (the device may simply be off the shelf or in a box).

use std::collections::HashMap;
use std::net::IpAddr;

use devid_core::api::{CheckName, CheckThresholds, Severity};

/// Window of `auth_failures`: 10 minutes.
pub const AUTH_WINDOW_SECS: i64 = 600;
/// Window of `duplicate_client_id` takeovers and `shared_certificate` networks: an hour.
pub const HOUR_SECS: i64 = 3600;
/// `revoked_connected`: how long after the change a connection may still be open.
pub const REVOKED_GRACE_SECS: i64 = 10;
/// `ca_expiring`: an issuing or root CA within this of its notAfter.
pub const CA_EXPIRING_SECS: i64 = 180 * 86_400;

/// Whether a CA (issuing or root) with this notAfter is expiring as of `now`.
pub fn ca_expiring(not_after: i64, now: i64) -> bool {
    not_after - now < CA_EXPIRING_SECS
}

/// The thresholds of one model with every default filled in (seconds and counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cert_expiring: i64,
    pub never_seen: i64,
    pub silent_after: i64,
    pub takeovers_per_hour: i64,
    pub networks_per_hour: i64,
    pub auth_failures: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cert_expiring: 30 * 86_400,
            never_seen: 30 * 86_400,
            silent_after: 86_400,
            takeovers_per_hour: 3,
            networks_per_hour: 3,
            auth_failures: 10,
        }
    }
}

impl Limits {
    /// `t` over the defaults.
    pub fn of(t: &CheckThresholds) -> Limits {
        let d = Limits::default();
        let secs = |v: Option<devid_core::HumanDuration>, default: i64| {
            v.map_or(default, |v| i64::try_from(v.as_secs()).unwrap_or(i64::MAX))
        };
        Limits {
            cert_expiring: secs(t.cert_expiring, d.cert_expiring),
            never_seen: secs(t.never_seen, d.never_seen),
            silent_after: secs(t.silent_after, d.silent_after),
            takeovers_per_hour: t.takeovers_per_hour.map_or(d.takeovers_per_hour, i64::from),
            networks_per_hour: t.networks_per_hour.map_or(d.networks_per_hour, i64::from),
            auth_failures: t.auth_failures.map_or(d.auth_failures, i64::from),
        }
    }
}

/// Every model's thresholds; a model without its own has the defaults.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    pub per_model: HashMap<String, Limits>,
}

impl Thresholds {
    pub fn for_model(&self, model: Option<&str>) -> Limits {
        model
            .and_then(|m| self.per_model.get(m))
            .copied()
            .unwrap_or_default()
    }

    /// The smallest value of `field` over every model and the defaults: the widest candidate
    /// set a time-driven query needs (each candidate is then decided with its model's value).
    pub fn min_of(&self, field: impl Fn(&Limits) -> i64) -> i64 {
        self.per_model
            .values()
            .map(&field)
            .fold(field(&Limits::default()), i64::min)
    }

    /// The largest value of `field` over every model and the defaults (for a check that holds
    /// below its threshold, such as time left before notAfter).
    pub fn max_of(&self, field: impl Fn(&Limits) -> i64) -> i64 {
        self.per_model
            .values()
            .map(&field)
            .fold(field(&Limits::default()), i64::max)
    }
}

/// A check's severity.
pub fn severity(check: CheckName) -> Severity {
    match check {
        CheckName::RevokedConnected
        | CheckName::DuplicateClientId
        | CheckName::SharedCertificate => Severity::Critical,
        CheckName::AuthFailures
        | CheckName::StaleBroker
        | CheckName::CertExpiring
        | CheckName::CaExpiring => Severity::Warning,
        CheckName::Silent | CheckName::NeverSeen => Severity::Info,
    }
}

/// The source network of an address (`ip:port`, `[v6]:port` or a bare IP): the /24 of an IPv4
/// address, the /64 of an IPv6 one. None when it is no address.
pub fn network(address: &str) -> Option<String> {
    let host = if let Some(rest) = address.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if address.matches(':').count() == 1 {
        address.split(':').next().unwrap_or(address)
    } else {
        address
    };
    match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

/// The source IP of an address (`ip:port`, `[v6]:port` or a bare IP), as text; None when it
/// is no address.
pub fn source_ip(address: &str) -> Option<String> {
    network(address)?;
    let host = if let Some(rest) = address.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if address.matches(':').count() == 1 {
        address.split(':').next().unwrap_or(address)
    } else {
        address
    };
    host.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// Whether a window's count reaches its limit.
pub fn reached(count: i64, limit: i64) -> bool {
    count >= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        for (ok, net) in [
            ("10.1.2.3:5555", "10.1.2.0/24"),
            ("10.1.2.3", "10.1.2.0/24"),
            ("[2001:db8:1:2:3::4]:8883", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:3::4", "2001:db8:1:2::/64"),
        ] {
            assert_eq!(network(ok).as_deref(), Some(net), "ok/{ok}");
        }
        for bad in ["", "host:1883", "10.1.2:1"] {
            assert_eq!(network(bad), None, "fail/{bad}");
        }
        assert_eq!(source_ip("10.1.2.3:5555").as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn a_model_overrides_only_what_it_names() {
        let mut t = Thresholds::default();
        t.per_model.insert(
            "thermo".into(),
            Limits::of(&CheckThresholds {
                silent_after: Some("2h".parse().expect("duration")),
                ..Default::default()
            }),
        );
        assert_eq!(t.for_model(Some("thermo")).silent_after, 7200);
        assert_eq!(t.for_model(Some("thermo")).never_seen, 30 * 86_400);
        assert_eq!(t.for_model(Some("valve")), Limits::default());
        assert_eq!(t.min_of(|l| l.silent_after), 7200);
    }

    #[test]
    fn severities_are_fixed_per_check() {
        assert_eq!(severity(CheckName::RevokedConnected), Severity::Critical);
        assert_eq!(severity(CheckName::Silent), Severity::Info);
        assert_eq!(severity(CheckName::StaleBroker), Severity::Warning);
    }
}
