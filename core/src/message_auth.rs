//! Per-message authentication: whether a broker requires a device's PUBLISHes to prove their
//! origin.

use std::fmt;
use std::str::FromStr;

/// A device's message-authentication setting, written `off` or `required`.
///
/// `off` (the default): a PUBLISH may come without `devid-mac` or `devid-seal`; one that
/// carries them is still checked. `required`: a DEVID-1 device's PUBLISH must carry a valid
/// `devid-mac` or `devid-seal` with a `devid-seq` above the last accepted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageAuth {
    #[default]
    Off,
    Required,
}

/// Why a text is not a message-authentication setting. The `Display` text is safe to show
/// clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message_auth must be \"off\" or \"required\", not {0:?}")]
pub struct MessageAuthError(pub String);

impl MessageAuth {
    pub const ALL: [MessageAuth; 2] = [MessageAuth::Off, MessageAuth::Required];

    /// The one table of the names: `Display`, `FromStr` and serde all go through it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageAuth::Off => "off",
            MessageAuth::Required => "required",
        }
    }

    pub fn is_required(self) -> bool {
        self == MessageAuth::Required
    }

    pub fn parse(s: &str) -> Result<Self, MessageAuthError> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| MessageAuthError(s.to_string()))
    }
}

impl FromStr for MessageAuth {
    type Err = MessageAuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for MessageAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

serde_as_text!(MessageAuth);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (ok, m) in [
            ("off", MessageAuth::Off),
            ("required", MessageAuth::Required),
        ] {
            assert_eq!(MessageAuth::parse(ok), Ok(m), "ok/{ok}");
            assert_eq!(m.to_string(), ok);
        }
        for bad in ["", "on", "Off", "REQUIRED", " off", "required ", "maybe"] {
            assert_eq!(
                MessageAuth::parse(bad),
                Err(MessageAuthError(bad.to_string())),
                "fail/{bad:?}"
            );
        }
        assert_eq!(MessageAuth::default(), MessageAuth::Off);
        assert!(MessageAuth::Required.is_required() && !MessageAuth::Off.is_required());
    }

    #[test]
    fn errors_say_what_is_allowed() {
        assert_eq!(
            MessageAuth::parse("maybe").expect_err("bad").to_string(),
            "message_auth must be \"off\" or \"required\", not \"maybe\""
        );
    }

    #[test]
    fn serde_uses_the_names() {
        assert_eq!(
            serde_json::to_string(&MessageAuth::Required).expect("json"),
            "\"required\""
        );
        let m: MessageAuth = serde_json::from_str("\"off\"").expect("ok");
        assert_eq!(m, MessageAuth::Off);
        assert!(serde_json::from_str::<MessageAuth>("\"on\"").is_err());
    }
}
