//! IP networks for per-device allow-lists: `10.0.0.0/8`, `2001:db8::/32`, or a single address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A checked IP network.
///
/// Grammar: `ADDRESS` or `ADDRESS/PREFIX`. ADDRESS is an IPv4 dotted quad (no leading zeros:
/// `010.0.0.0` is refused, as it reads as octal elsewhere) or an IPv6 address, as Rust's
/// `std::net` reads them (no zone `%eth0`). PREFIX is a decimal number without sign or leading
/// zeros, at most 32 (IPv4) or 128 (IPv6); without it the network is that one address. No
/// whitespace anywhere. Bits set after the prefix are refused (`10.0.0.1/8`: the error names
/// `10.0.0.0/8`), so a network is written one way. `Display` gives the canonical form: the
/// address as `std::net` prints it, and no `/32` or `/128` suffix for a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not a CIDR. The `Display` text is safe to show clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)")]
    Syntax(String),
    #[error("{given:?} has bits set after the prefix; the network is {network}")]
    HostBits { given: String, network: Cidr },
}

impl Cidr {
    /// Checks `s` against the grammar above.
    pub fn parse(s: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(s.chars().take(64).collect());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let address: IpAddr = addr.parse().map_err(|_| syntax())?;
        let max = max_prefix(address);
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let digits_only = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
                if !digits_only || (p.len() > 1 && p.starts_with('0')) || p.len() > 3 {
                    return Err(syntax());
                }
                p.parse::<u8>().map_err(|_| syntax())?
            }
        };
        if prefix > max {
            return Err(syntax());
        }
        let network = mask(address, prefix);
        let cidr = Cidr { network, prefix };
        if network != address {
            return Err(CidrError::HostBits {
                given: s.to_string(),
                network: cidr,
            });
        }
        Ok(cidr)
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length: 0 to 32 (IPv4) or 128 (IPv6).
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a
    /// dual-stack listener reports IPv4 peers) is compared as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// `ip` with the bits after `prefix` cleared (`prefix` is at most the address's width).
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == max_prefix(self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

serde_as_text!(Cidr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (input, canonical form)
        for (ok, canonical) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.168.1.7", "192.168.1.7"),
            ("192.168.1.7/32", "192.168.1.7"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:DB8:0::/32", "2001:db8::/32"),
            ("::1", "::1"),
            ("::/0", "::/0"),
            ("::1/128", "::1"),
            ("10.1.2.0/24", "10.1.2.0/24"),
        ] {
            let c = Cidr::parse(ok).unwrap_or_else(|e| panic!("ok/{ok}: {e}"));
            assert_eq!(c.to_string(), canonical, "ok/{ok}");
            assert_eq!(Cidr::parse(canonical), Ok(c), "round trip {ok}");
        }
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-8",
            "10.0.0.0/08",
            "10.0.0.0/0008",
            "10.0.0.0/33",
            "10.0.0.0/256",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/ 8",
            "010.0.0.0/8",
            "10.0.0/8",
            "10.0.0.0.0",
            "::1/129",
            "fe80::1%eth0",
            "host",
            "a/8",
            "10.0.0.0\0/8",
        ] {
            assert!(
                matches!(Cidr::parse(bad), Err(CidrError::Syntax(_))),
                "fail/{bad:?}: {:?}",
                Cidr::parse(bad)
            );
        }
        for (bad, network) in [
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("192.168.1.7/24", "192.168.1.0/24"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("1.2.3.4/0", "0.0.0.0/0"),
        ] {
            match Cidr::parse(bad) {
                Err(CidrError::HostBits { network: n, .. }) => {
                    assert_eq!(n.to_string(), network, "fail/{bad}")
                }
                other => panic!("fail/{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn contains() {
        let c = |s: &str| Cidr::parse(s).expect("cidr");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(c("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!c("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.2").contains(ip("127.0.0.1")));
        assert!(c("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!c("2001:db8::/32").contains(ip("10.0.0.1")));
        assert!(c("10.0.0.0/8").contains(ip("::ffff:10.1.1.1")));
        assert!(c("::/0").contains(ip("::1")));
    }

    #[test]
    fn serde_uses_the_canonical_text() {
        let c: Cidr = serde_json::from_str("\"2001:DB8::/32\"").expect("ok");
        assert_eq!(
            serde_json::to_string(&c).expect("json"),
            "\"2001:db8::/32\""
        );
        assert!(serde_json::from_str::<Cidr>("\"10.0.0.0/+8\"").is_err());
    }
}
