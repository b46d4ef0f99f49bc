//! Model names: the product model a device belongs to (`thermo-v2`). A model name is a URL path
//! segment (`/v1/models/{model}`), a token scope and a settings key.

/// Longest model name.
pub const MAX_LEN: usize = 64;

/// A checked model name.
///
/// Rules: 1 to 64 characters of `A-Z a-z 0-9 - _ .`, and not made of dots alone (`.`, `..`,
/// `...`): every model name is a path segment that URL normalization leaves as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName(String);

/// Why a text is not a model name. The `Display` text is safe to show clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelNameError {
    #[error("model {0:?} is not 1 to {MAX_LEN} characters of A-Z, a-z, 0-9, '-', '_', '.'")]
    Invalid(String),
    #[error("model {0:?} is made of dots alone, which URLs cannot carry as a path segment")]
    Dots(String),
}

impl ModelName {
    /// Checks `s` against the rules above.
    pub fn parse(s: &str) -> Result<Self, ModelNameError> {
        if s.is_empty()
            || s.len() > MAX_LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            // Debug-escaped, and cut so that a huge value does not make a huge message.
            let shown: String = s.chars().take(MAX_LEN + 1).collect();
            return Err(ModelNameError::Invalid(shown));
        }
        if s.bytes().all(|b| b == b'.') {
            return Err(ModelNameError::Dots(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }
}

text_value!(ModelName, ModelNameError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let max = "m".repeat(MAX_LEN);
        for ok in [
            "thermo-v2",
            "a",
            "A_b.c-9",
            ".hidden",
            "v1.0",
            "..a",
            max.as_str(),
        ] {
            assert_eq!(
                ModelName::parse(ok).map(|m| m.to_string()),
                Ok(ok.to_string())
            );
        }
        let long = "m".repeat(MAX_LEN + 1);
        for bad in ["", "a b", "a/b", "ü", "a%2e", long.as_str(), "a\0"] {
            assert!(
                matches!(ModelName::parse(bad), Err(ModelNameError::Invalid(_))),
                "{bad:?}"
            );
        }
        for bad in [".", "..", "...", "...."] {
            assert_eq!(
                ModelName::parse(bad),
                Err(ModelNameError::Dots(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let m: ModelName = serde_json::from_str("\"thermo\"").expect("ok");
        assert_eq!(m.as_str(), "thermo");
        assert!(serde_json::from_str::<ModelName>("\"..\"").is_err());
    }
}
