//! The device search: a prefix of a ClientID or of a hardware serial, as an operator types it.

/// Longest prefix: a hardware serial's length (a ClientID is shorter).
pub const MAX_LEN: usize = crate::hwserial::MAX_LEN;

/// A checked search prefix.
///
/// Rules: 1 to 64 characters of the hardware serial's set (`A-Z a-z 0-9`, space and
/// `' ( ) + , - . / : =`; a ClientID's characters are among them), not starting with a space.
/// Matching is case-sensitive, as ClientIDs and serials are. Every allowed character is ASCII
/// below `~`, so [`SearchPrefix::upper_bound`] is the prefix with its last character raised by
/// one: the strings that start with the prefix are exactly those in
/// `[prefix, upper_bound)` in byte order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchPrefix(String);

/// Why a text is not a search prefix; reads after the name of the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchPrefixError {
    #[error("is empty")]
    Empty,
    #[error("is {0} characters long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("starts with a space")]
    LeadingSpace,
    #[error(
        "has a character that is in no ClientID or hardware serial at position {0}; allowed are {allowed}",
        allowed = crate::hwserial::ALLOWED
    )]
    Character(usize),
}

impl SearchPrefix {
    /// Checks `s` against the rules above.
    pub fn parse(s: &str) -> Result<Self, SearchPrefixError> {
        if s.is_empty() {
            return Err(SearchPrefixError::Empty);
        }
        if let Some(i) = s.chars().position(|c| !crate::hwserial::is_allowed_char(c)) {
            return Err(SearchPrefixError::Character(i + 1));
        }
        // Only ASCII is left: bytes are characters.
        if s.len() > MAX_LEN {
            return Err(SearchPrefixError::TooLong(s.len()));
        }
        if s.starts_with(' ') {
            return Err(SearchPrefixError::LeadingSpace);
        }
        Ok(Self(s.to_string()))
    }

    /// The least string above every string that starts with this prefix (byte order).
    pub fn upper_bound(&self) -> String {
        let mut bytes = self.0.clone().into_bytes();
        if let Some(last) = bytes.last_mut() {
            // Every allowed character is below `~` (checked in `parse`), so this stays ASCII.
            *last += 1;
        }
        String::from_utf8(bytes).unwrap_or_default()
    }
}

text_value!(SearchPrefix, SearchPrefixError, "q {}");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_prefixes_and_their_upper_bounds() {
        for (s, hi) in [("a", "b"), ("SN-00", "SN-01"), ("AB9", "AB:"), ("x ", "x!")] {
            let p = SearchPrefix::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(p.upper_bound(), hi, "{s:?}");
            assert!(p.as_str() < hi);
        }
    }

    #[test]
    fn fail_empty_long_leading_space_and_foreign_characters() {
        assert_eq!(SearchPrefix::parse(""), Err(SearchPrefixError::Empty));
        assert_eq!(
            SearchPrefix::parse(&"a".repeat(65)),
            Err(SearchPrefixError::TooLong(65))
        );
        assert_eq!(
            SearchPrefix::parse(" a"),
            Err(SearchPrefixError::LeadingSpace)
        );
        for (s, at) in [("a%", 2), ("_", 1), ("ab*c", 3), ("é", 1), ("a\u{0}", 2)] {
            assert_eq!(
                SearchPrefix::parse(s),
                Err(SearchPrefixError::Character(at)),
                "{s:?}"
            );
        }
    }
}
