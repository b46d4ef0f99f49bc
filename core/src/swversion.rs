//! The software version a device reports when it connects (`devid-agent --sw-version`, carried
//! in its CONNECT as `devid-sw`; `docs/protocol.md`, "Software version"). The broker reports it
//! with the connection; nothing is decided on it.

/// Longest software version.
pub const MAX_LEN: usize = 64;

/// A checked software version.
///
/// Rules: 1 to 64 printable ASCII characters (U+0020 to U+007E: letters, digits, space and
/// punctuation), kept as given. Control characters, DEL and anything beyond ASCII are refused,
/// so the text is safe in a log line, a terminal or a JSON string as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SwVersion(String);

/// Why a text is not a software version. The `Display` text is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwVersionError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long; at most {MAX_LEN} printable ASCII characters are allowed")]
    TooLong(usize),
    /// `position` counts characters from 1; the character is shown as its code point only.
    #[error("has U+{:04X} at position {position}; only printable ASCII (U+0020 to U+007E) is allowed", u32::from(*.character))]
    Character { character: char, position: usize },
}

/// Whether `c` may appear in a software version.
pub fn is_allowed_char(c: char) -> bool {
    matches!(c, ' '..='~')
}

impl SwVersion {
    /// Checks `s` against the rules above.
    pub fn parse(s: &str) -> Result<Self, SwVersionError> {
        if s.is_empty() {
            return Err(SwVersionError::Empty);
        }
        if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !is_allowed_char(*c)) {
            return Err(SwVersionError::Character {
                character: c,
                position: i + 1,
            });
        }
        // Only ASCII is left: bytes are characters.
        if s.len() > MAX_LEN {
            return Err(SwVersionError::TooLong(s.len()));
        }
        Ok(Self(s.to_string()))
    }
}

text_value!(SwVersion, SwVersionError, "software version {}");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_printable_ascii_up_to_64() {
        let max = "9".repeat(MAX_LEN);
        for s in [
            "1.4.2",
            "v2.0.0-rc.1+build.7",
            "fw 3 (2026-12-01)",
            "~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./",
            " ",
            max.as_str(),
        ] {
            let v = SwVersion::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(v.as_str(), s);
        }
    }

    #[test]
    fn fail_empty_long_control_and_non_ascii() {
        assert_eq!(SwVersion::parse(""), Err(SwVersionError::Empty));
        let long = "9".repeat(MAX_LEN + 1);
        assert_eq!(
            SwVersion::parse(&long),
            Err(SwVersionError::TooLong(MAX_LEN + 1))
        );
        for (s, c, pos) in [
            ("1.0\n", '\n', 4),
            ("1.0\u{7f}", '\u{7f}', 4),
            ("\t1", '\t', 1),
            ("1.0é", 'é', 4),
            ("1\u{202e}0", '\u{202e}', 2),
            ("a\u{0}", '\u{0}', 2),
        ] {
            assert_eq!(
                SwVersion::parse(s),
                Err(SwVersionError::Character {
                    character: c,
                    position: pos
                }),
                "{s:?}"
            );
        }
        let e = SwVersion::parse("1\u{202e}0").expect_err("bidi");
        assert!(!e.to_string().contains('\u{202e}'), "{e}");
        assert!(e.to_string().contains("U+202E at position 2"), "{e}");
        // A long text of a refused character names the character, not the length.
        let e = SwVersion::parse(&"é".repeat(40)).expect_err("non-ASCII");
        assert!(matches!(e, SwVersionError::Character { .. }), "{e}");
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let v: SwVersion = serde_json::from_str("\"1.2.3\"").expect("ok");
        assert_eq!(serde_json::to_string(&v).expect("json"), "\"1.2.3\"");
        assert!(serde_json::from_str::<SwVersion>("\"1.2\\n\"").is_err());
    }
}
