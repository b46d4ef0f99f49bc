//! Per-device IP allow-lists: CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.

use std::net::IpAddr;

/// One parsed CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        if prefix > max {
            return None;
        }
        Some(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as a dual-stack listener reports them) are
/// compared as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
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
        .filter_map(|c| Cidr::parse(c))
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
    fn parse_rejects_bad_cidrs() {
        for bad in ["", "10.0.0.0/", "10.0.0.0/+1", "10.0.0/8", "::/129", "a/8"] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
        assert!(Cidr::parse("::/0").is_some());
    }
}
