//! Per-device IP allow-lists: CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.

#![deny(unsafe_code)]

use std::net::IpAddr;

pub use devid_core::cidr::{Cidr, CidrError};

/// An allow-list entry as the broker reads it: core's one CIDR rule. An entry with bits set
/// after its prefix (`10.0.0.1/8`), which the service stored before it refused such entries,
/// counts as its network (`10.0.0.0/8`), as it always did here.
fn entry(s: &str) -> Option<Cidr> {
    match Cidr::parse(s) {
        Ok(c) => Some(c),
        Err(CidrError::HostBits { network, .. }) => Some(network),
        Err(CidrError::Syntax(_)) => None,
    }
}

/// Whether `address` (as Mosquitto reports it) is allowed by `cidrs`. An empty list allows
/// anywhere. A list with an entry that does not parse fails closed for that entry; an address
/// that does not parse is refused.
pub fn allowed(cidrs: &[String], address: Option<&str>) -> bool {
    if cidrs.is_empty() {
        return true;
    }
    let Some(ip) = address.and_then(|a| a.trim().parse::<IpAddr>().ok()) else {
        return false;
    };
    cidrs
        .iter()
        .filter_map(|c| entry(c.as_str()))
        .any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ok_matches() {
        assert!(allowed(&[], Some("1.2.3.4")));
        assert!(allowed(&[], None));
        assert!(allowed(&v(&["10.0.0.0/8"]), Some("10.255.1.2")));
        assert!(allowed(&v(&["127.0.0.1"]), Some("127.0.0.1")));
        assert!(allowed(&v(&["0.0.0.0/0"]), Some("8.8.8.8")));
        assert!(allowed(
            &v(&["192.168.1.0/24", "127.0.0.0/8"]),
            Some("127.0.0.1")
        ));
        assert!(allowed(&v(&["2001:db8::/32"]), Some("2001:db8:1::5")));
        assert!(allowed(&v(&["10.0.0.0/8"]), Some("::ffff:10.1.1.1")));
    }

    #[test]
    fn fail_mismatches() {
        assert!(!allowed(&v(&["10.0.0.0/8"]), Some("11.0.0.1")));
        assert!(!allowed(&v(&["127.0.0.2"]), Some("127.0.0.1")));
        assert!(!allowed(&v(&["10.0.0.0/8"]), None));
        assert!(!allowed(&v(&["10.0.0.0/8"]), Some("garbage")));
        assert!(!allowed(&v(&["2001:db8::/32"]), Some("10.0.0.1")));
        assert!(!allowed(&v(&["garbage"]), Some("10.0.0.1")));
        assert!(!allowed(&v(&["10.0.0.0/33"]), Some("10.0.0.1")));
    }

    #[test]
    fn entries_follow_core_rules() {
        // What the service's API refuses never matches here either.
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/+8",
            " 10.0.0.0/8",
            "010.0.0.0/8",
            "10.0.0/8",
            "::/129",
            "a/8",
        ] {
            assert!(entry(bad).is_none(), "{bad:?}");
            assert!(!allowed(&v(&[bad]), Some("10.0.0.1")), "{bad:?}");
        }
        assert!(entry("::/0").is_some());
        // Stored before the service refused host bits: read as the network.
        assert!(allowed(&v(&["10.0.0.1/8"]), Some("10.200.0.1")));
    }
}
