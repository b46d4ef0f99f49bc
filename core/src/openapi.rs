//! OpenAPI schemas of the value types (only with the `openapi` feature, which the server
//! enables; devices, the broker plugin and the CLI do not link utoipa).
//!
//! Every value type travels as a JSON string. Its schema says what its parser accepts: a
//! description, length bounds, a pattern and examples, all in one [`StringRules`] per type
//! below, turned into `utoipa::ToSchema` by `string_value!`. The tests check each pattern
//! against the type's own parser, so the document cannot promise what the parser refuses.
//!
//! The API types (`crate::api`) derive their schemas with `utoipa::ToSchema`; a field that
//! carries a value type as text (a `String` checked later, so that a bad value gets the
//! rule's own 422) names it with `#[schema(value_type = ...)]`.
//!
//! A new string value type needs three things here: a `StringRules` constant, a
//! `string_value!(Type, "ComponentName", RULES)` line, and a row in the tests' `cases()` with
//! texts its parser accepts and refuses. An enum of names (serde `rename_all`) derives its
//! schema instead: `#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]` beside its
//! serde derives.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// What the document says about a value type that travels as a string.
pub struct StringRules {
    pub description: &'static str,
    /// ECMA-262 regular expression (OpenAPI's dialect) that every accepted value matches.
    pub pattern: &'static str,
    /// True when the pattern and the length bounds are the whole rule; false when they are
    /// only a necessary condition and the description states the rest.
    pub exact: bool,
    pub min_length: usize,
    pub max_length: usize,
    /// Values the parser accepts.
    pub examples: &'static [&'static str],
}

impl StringRules {
    pub fn schema(&self) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(self.description))
            .pattern(Some(self.pattern))
            .min_length(Some(self.min_length))
            .max_length(Some(self.max_length))
            .examples(self.examples.iter().copied())
            .into()
    }
}

/// Gives `$ty` the schema `$rules` under the component name `$name`.
macro_rules! string_value {
    ($ty:ty, $name:literal, $rules:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $rules.schema()
            }
        }

        impl utoipa::ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

pub const CLIENT_ID: StringRules = StringRules {
    description: "An MQTT ClientID: 1 to 23 characters of 0-9, A-Z, a-z. One that devid makes \
        is the model's prefix (0 to 6 characters), 16 characters of 0-9 and A-Z without I, L, \
        O, U (the registration time in seconds, then 48 random bits, so that newer ids sort \
        later), and a Luhn mod 62 check character.",
    pattern: "^[0-9A-Za-z]+$",
    exact: true,
    min_length: 1,
    max_length: crate::clientid::MAX_LEN,
    examples: &["thermo7KQ2M9XW4D8R6T1VZ", "FW0001"],
};
string_value!(crate::ClientId, "ClientId", CLIENT_ID);

pub const HARDWARE_SERIAL: StringRules = StringRules {
    description: "The manufacturer's serial number of a device, as printed on its label and \
        put in its certificate's subject (X.520 serialNumber): 1 to 64 characters of A-Z, a-z, \
        0-9, space and ' ( ) + , - . / : = (PrintableString less ?), neither starting nor \
        ending with a space. Matched exactly as given.",
    pattern: "^[A-Za-z0-9'()+,./:=-]([A-Za-z0-9'()+,./:= -]*[A-Za-z0-9'()+,./:=-])?$",
    exact: true,
    min_length: 1,
    max_length: crate::hwserial::MAX_LEN,
    examples: &["SN-0001", "HW 42/7"],
};
string_value!(crate::HardwareSerial, "HardwareSerial", HARDWARE_SERIAL);

pub const MODEL_NAME: StringRules = StringRules {
    description: "A product model (a URL path segment, a token scope, a settings key): 1 to 64 \
        characters of A-Z, a-z, 0-9, '-', '_', '.', not dots alone.",
    pattern: "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$",
    exact: true,
    min_length: 1,
    max_length: crate::model::MAX_LEN,
    examples: &["thermo-v2", "valve_3.1"],
};
string_value!(crate::ModelName, "ModelName", MODEL_NAME);

pub const CIDR: StringRules = StringRules {
    description: "An IP network: an IPv4 address (dotted quad, no leading zeros) or an IPv6 \
        address (no zone), optionally followed by /PREFIX (decimal, no leading zeros, at most 32 \
        or 128). No bits may be set after the prefix (10.0.0.1/8 is refused). A single address \
        is that one address; answers carry the canonical form, without /32 or /128.",
    pattern: "^[0-9A-Fa-f:.]+(/(0|[1-9][0-9]{0,2}))?$",
    exact: false,
    min_length: 2,
    max_length: 49,
    examples: &["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"],
};
string_value!(crate::Cidr, "Cidr", CIDR);

pub const HUMAN_DURATION: StringRules = StringRules {
    description: "A duration: a whole number above zero and one unit, s (seconds), m (minutes), \
        h (hours), d (days), w (weeks) or y (years of 365 days), e.g. 90m, 30d, 1y; at most \
        i64::MAX seconds. A number without a unit is seconds; answers always carry the unit.",
    pattern: "^0*[1-9][0-9]*[smhdwy]?$",
    exact: false,
    min_length: 1,
    max_length: 40,
    examples: &["90m", "30d", "1y"],
};
string_value!(crate::HumanDuration, "HumanDuration", HUMAN_DURATION);

pub const TOPIC_FILTER: StringRules = StringRules {
    description: "An MQTT topic filter (MQTT 5.0 section 4.7): 1 to 65,535 bytes of UTF-8, no \
        U+0000; levels separated by '/'; '+' only as a whole level, '#' only as the whole last \
        level. In a topic policy, %c stands for the device's ClientID.",
    pattern: "^[^\\u0000]+$",
    exact: false,
    min_length: 1,
    max_length: crate::topic::MAX_LEN,
    examples: &["devices/%c/#", "fleet/+/status"],
};
string_value!(crate::TopicFilter, "TopicFilter", TOPIC_FILTER);

pub const DNS_NAME: StringRules = StringRules {
    description: "A DNS host name: 1 to 253 characters; labels separated by '.', each 1 to 63 \
        of A-Z, a-z, 0-9, '-', not starting or ending with '-'. No wildcard, no trailing dot, \
        not an IP address (nor digits and dots alone).",
    pattern: "^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$",
    exact: false,
    min_length: 1,
    max_length: crate::dnsname::MAX_LEN,
    examples: &["broker-1.example.com", "mqtt"],
};
string_value!(crate::DnsName, "DnsName", DNS_NAME);

pub const MESSAGE_AUTH: StringRules = StringRules {
    description: "Per-message authentication: off (a PUBLISH may come without devid-mac or \
        devid-seal; one that carries them is still checked) or required (a DEVID-1 device's \
        PUBLISH must carry a valid devid-mac or devid-seal).",
    pattern: "^(off|required)$",
    exact: true,
    min_length: 3,
    max_length: 8,
    examples: &["off", "required"],
};
string_value!(crate::MessageAuth, "MessageAuth", MESSAGE_AUTH);

pub const LDEVID_VALIDITY: StringRules = StringRules {
    description: "The lifetime of an LDevID: a duration (a whole number above zero and one \
        unit, s, m, h, d or w; a number without a unit is seconds) of at most 90 days.",
    pattern: "^0*[1-9][0-9]*[smhdw]?$",
    exact: false,
    min_length: 1,
    max_length: 40,
    examples: &["90d", "30d", "12h"],
};
string_value!(crate::LdevidValidity, "LdevidValidity", LDEVID_VALIDITY);

pub const RENEWAL_GRACE: StringRules = StringRules {
    description: "How long after its expiry an LDevID may still renew: 0 (never) or a duration \
        (a whole number above zero and one unit, s, m, h, d, w or y; a number without a unit is \
        seconds).",
    pattern: "^(0|0*[1-9][0-9]*[smhdwy]?)$",
    exact: false,
    min_length: 1,
    max_length: 40,
    examples: &["30d", "0", "12h"],
};
string_value!(crate::RenewalGrace, "RenewalGrace", RENEWAL_GRACE);

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts every parser is tried on, besides each type's own cases.
    const COMMON: &[&str] = &[
        "",
        " ",
        "a",
        "A1",
        "0",
        "00",
        "1",
        "1s",
        "abc def",
        " lead",
        "trail ",
        "x_y",
        "x-y",
        "x.y",
        ".",
        "..",
        "a?",
        "a@b",
        "é",
        "a\u{202e}b",
        "a\nb",
        "10.0.0.0/8",
        "::1",
        "2001:db8::/32",
        "10.0.0.1/8",
        "010.0.0.0/8",
        "10.0.0.0/08",
        "1.2.3.4/33",
        "fe80::1%eth0",
        "90m",
        "1h30m",
        "0s",
        "012s",
        "3600",
        "1Y",
        "SN-0001",
        "HW 42/7",
        "thermo-v2",
    ];

    /// Each value type: its rules, texts its parser accepts and refuses, and its parser.
    type Case = (
        &'static str,
        &'static StringRules,
        Vec<String>,
        Vec<String>,
        fn(&str) -> bool,
    );

    fn cases() -> Vec<Case> {
        let texts = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let with = |t: &[&str], more: [String; 2]| [texts(t), more.to_vec()].concat();
        vec![
            (
                "ClientId",
                &CLIENT_ID,
                with(&["A", "0"], ["a".repeat(23), "Z9".repeat(11)]),
                with(&["a-b", "a b"], ["a".repeat(24), String::new()]),
                |s| crate::clientid::validate(s).is_ok(),
            ),
            (
                "HardwareSerial",
                &HARDWARE_SERIAL,
                with(
                    &["a", "A B", "'()+,-./:="],
                    ["9".repeat(64), "x y".repeat(21)],
                ),
                with(&["a_b", "a?", " a", "a "], ["9".repeat(65), String::new()]),
                |s| crate::HardwareSerial::parse(s).is_ok(),
            ),
            (
                "ModelName",
                &MODEL_NAME,
                with(
                    &["a", ".a", "a.", "-", "_"],
                    ["m".repeat(64), ".".repeat(63) + "m"],
                ),
                with(
                    &[".", "...", "a b", "a/b"],
                    ["m".repeat(65), ".".repeat(64)],
                ),
                |s| crate::ModelName::parse(s).is_ok(),
            ),
            (
                "Cidr",
                &CIDR,
                texts(&[
                    "0.0.0.0/0",
                    "::/0",
                    "::ffff:192.0.2.1",
                    "2001:db8::1/128",
                    "192.0.2.7/32",
                ]),
                texts(&[
                    "10.0.0.1/8",
                    "010.0.0.0/8",
                    "1.2.3.4/33",
                    "fe80::1%eth0",
                    "10.0.0.0 /8",
                ]),
                |s| s.parse::<crate::Cidr>().is_ok(),
            ),
            (
                "HumanDuration",
                &HUMAN_DURATION,
                texts(&["1s", "3600", "20y", "2w", "012s"]),
                texts(&["0s", "1h30m", "1Y", "-1s", "1.5h", "s"]),
                |s| s.parse::<crate::HumanDuration>().is_ok(),
            ),
            (
                "LdevidValidity",
                &LDEVID_VALIDITY,
                texts(&["1s", "3600", "90d", "12w", "012h"]),
                texts(&["0", "0s", "91d", "1y", "1h30m", "-1s"]),
                |s| s.parse::<crate::LdevidValidity>().is_ok(),
            ),
            (
                "RenewalGrace",
                &RENEWAL_GRACE,
                texts(&["0", "1s", "3600", "30d", "1y"]),
                texts(&["00", "0s", "-1", "never", "1h30m"]),
                |s| s.parse::<crate::RenewalGrace>().is_ok(),
            ),
            (
                "TopicFilter",
                &TOPIC_FILTER,
                texts(&["a", "a/+/b", "#", "a//b", "devices/%c/#", "+"]),
                texts(&["a\u{0}b"]),
                |s| s.parse::<crate::TopicFilter>().is_ok(),
            ),
            (
                "DnsName",
                &DNS_NAME,
                texts(&["broker", "a.b-c.example", "x1"]),
                texts(&["-a", "a-", "a..b", "a.", "*.example.com", "a_b"]),
                |s| s.parse::<crate::DnsName>().is_ok(),
            ),
            (
                "MessageAuth",
                &MESSAGE_AUTH,
                texts(&["off", "required"]),
                texts(&["Off", "on", "require", ""]),
                |s| s.parse::<crate::MessageAuth>().is_ok(),
            ),
        ]
    }

    /// The pattern and length bounds admit every text the parser accepts, and (for an exact
    /// rule) nothing else.
    #[test]
    fn each_schema_admits_what_its_parser_accepts() {
        for (name, rules, ok, fail, parses) in cases() {
            let re = regex::Regex::new(rules.pattern).expect("pattern compiles");
            let fits = |s: &str| {
                let n = s.chars().count();
                re.is_match(s) && (rules.min_length..=rules.max_length).contains(&n)
            };
            let examples = rules.examples.iter().map(|s| s.to_string());
            for s in examples.clone().chain(ok.iter().cloned()) {
                assert!(parses(&s), "{name}: {s:?} should parse");
            }
            for s in &fail {
                assert!(!parses(s), "{name}: {s:?} should not parse");
            }
            let all = COMMON
                .iter()
                .map(|s| s.to_string())
                .chain(examples)
                .chain(ok)
                .chain(fail);
            for s in all {
                if parses(&s) {
                    assert!(fits(&s), "{name}: {s:?} parses but the schema refuses it");
                } else if rules.exact {
                    assert!(
                        !fits(&s),
                        "{name}: {s:?} fits the schema but does not parse"
                    );
                }
            }
        }
    }

    #[test]
    fn schemas_carry_their_rules() {
        use utoipa::ToSchema as _;
        for (name, schema) in [
            (
                <crate::ClientId as utoipa::ToSchema>::name(),
                <crate::ClientId as utoipa::PartialSchema>::schema(),
            ),
            (
                crate::HardwareSerial::name(),
                <crate::HardwareSerial as utoipa::PartialSchema>::schema(),
            ),
            (
                crate::ModelName::name(),
                <crate::ModelName as utoipa::PartialSchema>::schema(),
            ),
            (
                crate::Cidr::name(),
                <crate::Cidr as utoipa::PartialSchema>::schema(),
            ),
            (
                crate::HumanDuration::name(),
                <crate::HumanDuration as utoipa::PartialSchema>::schema(),
            ),
        ] {
            let json = serde_json::to_value(&schema).expect("serialize");
            assert_eq!(json["type"], "string", "{name}: {json}");
            for key in [
                "description",
                "pattern",
                "minLength",
                "maxLength",
                "examples",
            ] {
                assert!(!json[key].is_null(), "{name} lacks {key}: {json}");
            }
        }
        assert_eq!(<crate::ClientId as utoipa::ToSchema>::name(), "ClientId");
    }
}
