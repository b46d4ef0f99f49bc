//! DNS host names: how a broker is named in its certificate (CN and SAN dNSName) and when it is
//! enrolled.

/// Longest DNS name.
pub const MAX_LEN: usize = 253;
/// Longest label (the text between dots).
pub const MAX_LABEL_LEN: usize = 63;

/// A checked DNS host name.
///
/// Rules: 1 to 253 characters; labels separated by `.`, each 1 to 63 of `A-Z a-z 0-9 -`, not
/// starting or ending with `-`. No wildcard (`*.example.com`), no trailing dot, and not an IP
/// address (nor digits and dots alone, which readers take for one). The text is kept as given
/// (no case folding).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

/// Why a text is not a DNS name. The `Display` text is safe to show clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a DNS name: {rule}")]
pub struct DnsNameError {
    pub name: String,
    pub rule: DnsNameRule,
}

/// The rule a text breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsNameRule {
    #[error("must be 1 to {MAX_LEN} characters")]
    Length,
    #[error("each label must be 1 to {MAX_LABEL_LEN} characters")]
    LabelLength,
    #[error("only letters, digits, '-' and '.' are allowed")]
    Character,
    #[error("a label cannot start or end with '-'")]
    Hyphen,
    #[error("an IP address is not a DNS name")]
    IpAddress,
}

fn rule_broken(name: &str) -> Option<DnsNameRule> {
    if name.is_empty() || name.len() > MAX_LEN {
        return Some(DnsNameRule::Length);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Some(DnsNameRule::LabelLength);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Some(DnsNameRule::Character);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(DnsNameRule::Hyphen);
        }
    }
    // Only letters, digits, '-' and '.' are left: an IPv6 address cannot be among them.
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Some(DnsNameRule::IpAddress);
    }
    None
}

impl DnsName {
    /// Checks `s` against the rules above.
    pub fn parse(s: &str) -> Result<Self, DnsNameError> {
        match rule_broken(s) {
            None => Ok(Self(s.to_string())),
            Some(rule) => Err(DnsNameError {
                name: s.to_string(),
                rule,
            }),
        }
    }
}

text_value!(DnsName, DnsNameError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let label = "a".repeat(MAX_LABEL_LEN);
        let max = [label.as_str(); 4].join(".")[..MAX_LEN].to_string();
        for ok in [
            "mqtt.example.com",
            "localhost",
            "a",
            "MQTT-1.Example.COM",
            "1a.example",
            "123.example",
            "xn--bcher-kva.example",
            label.as_str(),
            max.as_str(),
        ] {
            assert_eq!(
                DnsName::parse(ok).map(|n| n.to_string()),
                Ok(ok.to_string()),
                "ok/{ok}"
            );
        }
        let long_label = format!("{}.com", "a".repeat(MAX_LABEL_LEN + 1));
        let long = format!("{max}a");
        for (bad, rule) in [
            ("", DnsNameRule::Length),
            (long.as_str(), DnsNameRule::Length),
            ("a..b", DnsNameRule::LabelLength),
            ("example.com.", DnsNameRule::LabelLength),
            (".example.com", DnsNameRule::LabelLength),
            (long_label.as_str(), DnsNameRule::LabelLength),
            ("a b", DnsNameRule::Character),
            ("*.example.com", DnsNameRule::Character),
            ("a_b.com", DnsNameRule::Character),
            ("bücher.example", DnsNameRule::Character),
            ("::1", DnsNameRule::Character),
            ("a\0", DnsNameRule::Character),
            ("-a.com", DnsNameRule::Hyphen),
            ("a-.com", DnsNameRule::Hyphen),
            ("192.0.2.1", DnsNameRule::IpAddress),
            ("1234", DnsNameRule::IpAddress),
        ] {
            assert_eq!(
                DnsName::parse(bad),
                Err(DnsNameError {
                    name: bad.to_string(),
                    rule
                }),
                "fail/{bad:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_text_and_the_rule() {
        let e = DnsName::parse("a_b").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "\"a_b\" is not a DNS name: only letters, digits, '-' and '.' are allowed"
        );
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let n: DnsName = serde_json::from_str("\"mqtt.example.com\"").expect("ok");
        assert_eq!(
            serde_json::to_string(&n).expect("json"),
            "\"mqtt.example.com\""
        );
        assert!(serde_json::from_str::<DnsName>("\"-a\"").is_err());
    }
}
