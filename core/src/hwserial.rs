//! The hardware serial: the manufacturer's serial number of a device, as printed on its label.
//!
//! It goes into the device certificate's subject as the X.520 serialNumber attribute, which
//! RFC 5280 (appendix A.1) defines as a PrintableString. devid therefore accepts only what a
//! PrintableString can hold, and the certificate carries exactly the registered text.

/// Longest hardware serial: the X.520 upper bound of serialNumber (ub-serial-number, RFC 5280
/// appendix A.1).
pub const MAX_LEN: usize = 64;

/// The characters a hardware serial may contain, as shown in error messages.
pub const ALLOWED: &str = "A-Z a-z 0-9 space ' ( ) + , - . / : =";

/// A checked hardware serial.
///
/// Rules: 1 to 64 characters of the PrintableString set less `?` (`A-Z a-z 0-9`, space and
/// `' ( ) + , - . / : =`), not starting or ending with a space. (`?` is PrintableString too,
/// but the DER writer under rcgen, yasna 0.6, panics on it.) Nothing is trimmed or
/// rewritten: the text is stored, matched and put in the certificate as given. `_`, `@`, `*`,
/// `#`, non-ASCII letters, control and format characters (such as the bidi override U+202E)
/// are refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HardwareSerial(String);

/// Why a text is not a hardware serial. The `Display` text is safe to show clients and reads
/// after the name of what was checked: `hardware_serial has the character '_' (U+005F) at
/// position 3; allowed are ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HardwareSerialError {
    #[error("is empty")]
    Empty,
    #[error("is {0} characters long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("{0} with a space")]
    EdgeSpace(&'static str),
    /// `position` counts characters from 1.
    #[error(
        "has the character {} at position {position}; allowed are {ALLOWED}",
        describe(*.character)
    )]
    Character { character: char, position: usize },
}

/// `'@' (U+0040)` for visible ASCII, `U+202E` alone for anything else, so that invisible or
/// direction-changing characters never reach a terminal as such.
fn describe(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}' (U+{:04X})", u32::from(c))
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// Whether `c` may appear in a hardware serial: the PrintableString character set (X.680
/// 41.4) without `?`.
pub fn is_allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=".contains(c)
}

impl HardwareSerial {
    /// Checks `s` against the rules above.
    pub fn parse(s: &str) -> Result<Self, HardwareSerialError> {
        if s.is_empty() {
            return Err(HardwareSerialError::Empty);
        }
        for (i, c) in s.chars().enumerate() {
            if !is_allowed_char(c) {
                return Err(HardwareSerialError::Character {
                    character: c,
                    position: i + 1,
                });
            }
        }
        // Only ASCII is left: bytes are characters.
        if s.len() > MAX_LEN {
            return Err(HardwareSerialError::TooLong(s.len()));
        }
        if s.starts_with(' ') {
            return Err(HardwareSerialError::EdgeSpace("starts"));
        }
        if s.ends_with(' ') {
            return Err(HardwareSerialError::EdgeSpace("ends"));
        }
        Ok(Self(s.to_string()))
    }
}

text_value!(HardwareSerial, HardwareSerialError, "hardware serial {}");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_printable_string_serials() {
        let max = "9".repeat(MAX_LEN);
        for s in [
            "SN0001",
            "HW-0042",
            "SN-0042/7",
            "A",
            "ab (rev 2), lot=7: ok",
            "O'Brien+1.0",
            max.as_str(),
        ] {
            let h = HardwareSerial::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(h.as_str(), s);
            assert_eq!(h.to_string(), s);
        }
    }

    #[test]
    fn fail_characters_outside_printable_string_name_the_character_and_position() {
        for (s, c, pos) in [
            ("SN_0010@y", '_', 3),
            ("SN 0008*", '*', 8),
            ("SNÖ11", 'Ö', 3),
            ("SN\u{202e}1", '\u{202e}', 3),
            ("SN\n1", '\n', 3),
            ("#1", '#', 1),
            ("SN?", '?', 3),
            ("a\u{0}", '\u{0}', 2),
        ] {
            assert_eq!(
                HardwareSerial::parse(s),
                Err(HardwareSerialError::Character {
                    character: c,
                    position: pos
                }),
                "{s:?}"
            );
        }
        let e = HardwareSerial::parse("SN_1").expect_err("underscore");
        assert!(e.to_string().contains("'_' (U+005F) at position 3"), "{e}");
        let e = HardwareSerial::parse("SN\u{202e}1").expect_err("bidi");
        assert!(e.to_string().contains("U+202E at position 3"), "{e}");
        assert!(!e.to_string().contains('\u{202e}'), "{e}");
    }

    #[test]
    fn fail_empty_long_and_edge_spaces() {
        assert_eq!(HardwareSerial::parse(""), Err(HardwareSerialError::Empty));
        let long = "9".repeat(MAX_LEN + 1);
        assert_eq!(
            HardwareSerial::parse(&long),
            Err(HardwareSerialError::TooLong(MAX_LEN + 1))
        );
        for s in [" SN1", "SN1 ", " "] {
            assert!(
                matches!(
                    HardwareSerial::parse(s),
                    Err(HardwareSerialError::EdgeSpace(_))
                ),
                "{s:?}"
            );
        }
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let h: HardwareSerial = serde_json::from_str("\"SN-1\"").expect("ok");
        assert_eq!(serde_json::to_string(&h).expect("json"), "\"SN-1\"");
        assert!(serde_json::from_str::<HardwareSerial>("\"SN_1\"").is_err());
    }
}
