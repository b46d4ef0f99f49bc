//! MQTT topic names and topic filters (MQTT 5.0 section 4.7), and the `%c` of topic policies.
//!
//! The device's codec checks what it sends and receives with these rules, the broker plugin
//! what devices publish and subscribe to, and the service the filters of a topic policy.

/// Longest topic name or filter: an MQTT UTF-8 string has a two-byte length.
pub const MAX_LEN: usize = 65_535;

/// What stands for the device's ClientID in a topic policy's filters (`devices/%c/#`).
pub const CLIENT_ID: &str = "%c";

/// Why a text is not a topic name or filter. The `Display` text is safe to show clients and
/// reads after the name of what was checked: `topic filter has '#' ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("has the character U+0000")]
    Nul,
    #[error("has a wildcard ('+' or '#'), which only topic filters may have")]
    Wildcard,
    #[error("has '#' other than as its whole last level")]
    MisplacedHash,
    #[error("has '+' other than as a whole level")]
    MisplacedPlus,
}

/// The rules every topic name and filter follows: 1 to [`MAX_LEN`] bytes, no U+0000.
fn check_text(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// A checked topic name: what a PUBLISH is sent to.
///
/// Rules (MQTT 5.0 section 4.7): 1 to 65,535 bytes of UTF-8, no U+0000, no wildcard (`+`,
/// `#`). Levels are separated by `/` and may be empty (`a//b`, `/a`). (A PUBLISH may carry an
/// empty topic name with a topic alias; the codec that knows the alias decides that case.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(String);

impl TopicName {
    /// Checks `s` against the rules above without copying it.
    pub fn check(s: &str) -> Result<(), TopicError> {
        check_text(s)?;
        if s.contains(['+', '#']) {
            return Err(TopicError::Wildcard);
        }
        Ok(())
    }

    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::check(s).map(|()| Self(s.to_string()))
    }
}

text_value!(TopicName, TopicError, "topic name {}");

/// A checked topic filter: what a SUBSCRIBE asks for, and what a topic policy grants.
///
/// Rules (MQTT 5.0 section 4.7.1): 1 to 65,535 bytes of UTF-8, no U+0000; `#` only as the
/// whole last level (`a/#`, `#`), `+` only as a whole level (`a/+/b`, `+`).
///
/// In a topic policy, [`CLIENT_ID`] (`%c`) stands for the device's ClientID; to the rules above
/// it is two ordinary characters, and [`TopicFilter::expand`] puts the ClientID in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Checks `s` against the rules above without copying it.
    pub fn check(s: &str) -> Result<(), TopicError> {
        check_text(s)?;
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            match level {
                "+" => {}
                "#" if levels.peek().is_none() => {}
                l if l.contains('#') => return Err(TopicError::MisplacedHash),
                l if l.contains('+') => return Err(TopicError::MisplacedPlus),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::check(s).map(|()| Self(s.to_string()))
    }

    /// The policy filter with every [`CLIENT_ID`] replaced by `client_id`, checked again. A
    /// ClientID that passed devid's ClientID rules (`[0-9A-Za-z]`, 1 to 23) cannot put a
    /// wildcard or a level separator into the filter, but the result may be too long.
    pub fn expand(&self, client_id: &str) -> Result<TopicFilter, TopicError> {
        if !self.0.contains(CLIENT_ID) {
            return Ok(self.clone());
        }
        Self::parse(&self.0.replace(CLIENT_ID, client_id))
    }
}

text_value!(TopicFilter, TopicError, "topic filter {}");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let max = "t".repeat(MAX_LEN);
        for ok in [
            "a",
            "a/b",
            "/",
            "a//b",
            "/a",
            "$SYS/x",
            "a b",
            "ü/%c",
            max.as_str(),
        ] {
            assert_eq!(
                TopicName::parse(ok).map(|t| t.to_string()),
                Ok(ok.to_string()),
                "ok/{ok}"
            );
        }
        let long = "t".repeat(MAX_LEN + 1);
        for (bad, e) in [
            ("", TopicError::Empty),
            (long.as_str(), TopicError::TooLong(MAX_LEN + 1)),
            ("a\0b", TopicError::Nul),
            ("a/+", TopicError::Wildcard),
            ("#", TopicError::Wildcard),
            ("a/b#", TopicError::Wildcard),
        ] {
            assert_eq!(TopicName::check(bad), Err(e), "fail/{bad:?}");
        }
    }

    #[test]
    fn filters() {
        let max = "f".repeat(MAX_LEN);
        for ok in [
            "a",
            "a/b",
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "+/#",
            "devices/%c/#",
            "$SYS/#",
            max.as_str(),
        ] {
            assert_eq!(
                TopicFilter::parse(ok).map(|t| t.to_string()),
                Ok(ok.to_string()),
                "ok/{ok}"
            );
        }
        let long = "f".repeat(MAX_LEN + 1);
        for (bad, e) in [
            ("", TopicError::Empty),
            (long.as_str(), TopicError::TooLong(MAX_LEN + 1)),
            ("a\0", TopicError::Nul),
            ("a#", TopicError::MisplacedHash),
            ("a/#/b", TopicError::MisplacedHash),
            ("#/", TopicError::MisplacedHash),
            ("#/a", TopicError::MisplacedHash),
            ("a/##", TopicError::MisplacedHash),
            ("a+", TopicError::MisplacedPlus),
            ("a/b+", TopicError::MisplacedPlus),
            ("a/b+/c", TopicError::MisplacedPlus),
            ("++", TopicError::MisplacedPlus),
        ] {
            assert_eq!(TopicFilter::check(bad), Err(e), "fail/{bad:?}");
        }
    }

    #[test]
    fn expand_puts_the_client_id_in_every_placeholder() {
        let f = |s: &str| TopicFilter::parse(s).expect("filter");
        assert_eq!(
            f("devices/%c/#").expand("dev1").map(|t| t.to_string()),
            Ok("devices/dev1/#".to_string())
        );
        assert_eq!(
            f("a/%c/%c-x").expand("Z9").map(|t| t.to_string()),
            Ok("a/Z9/Z9-x".to_string())
        );
        assert_eq!(f("broadcast/#").expand("dev1"), Ok(f("broadcast/#")));
        // The MQTT rules are checked again; a ClientID outside devid's rules could still widen
        // a filter, so callers expand with checked ClientIDs only.
        assert_eq!(f("%c").expand(""), Err(TopicError::Empty));
        assert_eq!(f("a/%c").expand("+"), Ok(f("a/+")));
        assert_eq!(f("a/%c").expand("x#"), Err(TopicError::MisplacedHash));
        let near = format!("{}%c", "f".repeat(MAX_LEN - 2));
        assert_eq!(
            f(&near).expand("abc"),
            Err(TopicError::TooLong(MAX_LEN + 1))
        );
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let t: TopicFilter = serde_json::from_str("\"a/+/#\"").expect("ok");
        assert_eq!(serde_json::to_string(&t).expect("json"), "\"a/+/#\"");
        let e = serde_json::from_str::<TopicFilter>("\"a/#/b\"").expect_err("bad");
        assert!(e.to_string().starts_with("topic filter has '#'"), "{e}");
        assert!(serde_json::from_str::<TopicName>("\"a/+\"").is_err());
    }
}
