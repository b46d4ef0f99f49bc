//! The one error type of the DEVID-1 protocol code.

use std::fmt;

/// MQTT v5 reason code 0x87, Not authorized: every refusal except an unknown method or version.
pub const REASON_NOT_AUTHORIZED: u8 = 0x87;
/// MQTT v5 reason code 0x8C, Bad authentication method: unknown method or protocol version.
pub const REASON_BAD_AUTH_METHOD: u8 = 0x8C;

/// Why bytes did not parse. Never carries attacker-controlled data beyond small integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ended before a field it must contain.
    Truncated,
    /// The message (or a length-prefixed field) has bytes after its last field.
    TrailingBytes,
    /// A certificate list with no certificate, or a zero-length certificate.
    EmptyCertificate,
    /// More certificates than [`MAX_CERTS`](super::MAX_CERTS).
    TooManyCertificates,
    /// A value that must be a fixed constant or lie in a range does not.
    BadValue,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "truncated",
            DecodeError::TrailingBytes => "trailing bytes",
            DecodeError::EmptyCertificate => "empty certificate list or certificate",
            DecodeError::TooManyCertificates => "too many certificates",
            DecodeError::BadValue => "bad field value",
        })
    }
}

/// Every way a DEVID-1 handshake, resumption, ticket or message check can fail.
///
/// The broker sends only [`Error::reason_code`] to the client; [`Error::log_str`] and `Display`
/// are for logs and the service's event feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The Authentication Method is not `DEVID-1`.
    UnsupportedMethod,
    /// The message's protocol version byte is not 0x01.
    UnsupportedVersion(u8),
    /// A message of another type than the state awaits (out of order, or garbage).
    UnexpectedMessage {
        /// The message the state waits for.
        expected: &'static str,
        /// The type byte that came (0 for an empty message).
        got: u8,
    },
    /// The message does not parse exactly.
    Decode(DecodeError),
    /// The exchange did not complete within the configured timeout.
    Timeout,
    /// The CONNECT's ClientID is empty.
    EmptyClientId,
    /// The ClientID breaks the charset or length rules.
    BadClientId,
    /// The CONNECT's ClientID differs from the one in the certificate or ticket.
    ClientIdMismatch,
    /// The certificate's CN and SAN URI `urn:devid:<ClientID>` do not agree (or one is missing).
    CertificateNotBound,
    /// A certificate breaks the profile (key type, keyUsage, unparsable fields).
    BadCertificate(&'static str),
    /// Path validation failed: other CA, expired, missing EKU, bad signature algorithm, ...
    CertificateChain(webpki::Error),
    /// The broker certificate does not carry the configured broker name as a SAN DNS name.
    BrokerNameMismatch,
    /// The peer's key share is not a valid P-256 point.
    BadKeyShare,
    /// sig_s or sig_c does not verify.
    BadSignature,
    /// mac_s, mac_c, mac_f, a resumption MAC or a message MAC/seal does not verify.
    BadMac,
    /// The ticket is not authentic, not well formed, or sealed under an unknown key.
    BadTicket,
    /// The ticket has expired (or is not yet valid).
    TicketExpired,
    /// A message sequence number is not above the last accepted one.
    Replay {
        /// The sequence number that came.
        seq: u64,
        /// The last accepted one.
        last: u64,
    },
    /// A `devid-*` MQTT user property is missing, duplicated or malformed.
    BadProperty(&'static str),
    /// The sequence number space of a session is exhausted: re-authenticate.
    SequenceExhausted,
    /// A local failure: the random number generator or the signer failed.
    Internal(&'static str),
}

impl Error {
    /// The MQTT v5 reason code the broker answers with: 0x8C for an unknown method or version,
    /// 0x87 (Not authorized) for everything else.
    pub fn reason_code(&self) -> u8 {
        match self {
            Error::UnsupportedMethod | Error::UnsupportedVersion(_) => REASON_BAD_AUTH_METHOD,
            _ => REASON_NOT_AUTHORIZED,
        }
    }

    /// A short, fixed string for logs and metrics (no peer-controlled data).
    pub fn log_str(&self) -> &'static str {
        match self {
            Error::UnsupportedMethod => "unsupported auth method",
            Error::UnsupportedVersion(_) => "unsupported protocol version",
            Error::UnexpectedMessage { .. } => "unexpected message",
            Error::Decode(_) => "malformed message",
            Error::Timeout => "handshake timeout",
            Error::EmptyClientId => "empty client id",
            Error::BadClientId => "bad client id",
            Error::ClientIdMismatch => "client id mismatch",
            Error::CertificateNotBound => "certificate cn/san disagree",
            Error::BadCertificate(_) => "bad certificate",
            Error::CertificateChain(_) => "certificate chain invalid",
            Error::BrokerNameMismatch => "broker name mismatch",
            Error::BadKeyShare => "bad key share",
            Error::BadSignature => "bad signature",
            Error::BadMac => "bad mac",
            Error::BadTicket => "bad ticket",
            Error::TicketExpired => "ticket expired",
            Error::Replay { .. } => "replayed sequence number",
            Error::BadProperty(_) => "bad devid property",
            Error::SequenceExhausted => "sequence exhausted",
            Error::Internal(_) => "internal error",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v:#04x}"),
            Error::UnexpectedMessage { expected, got } => {
                write!(f, "expected {expected}, got message type {got:#04x}")
            }
            Error::Decode(e) => write!(f, "malformed message: {e}"),
            Error::BadCertificate(why) => write!(f, "bad certificate: {why}"),
            Error::CertificateChain(e) => write!(f, "certificate chain invalid: {e}"),
            Error::Replay { seq, last } => {
                write!(f, "sequence number {seq} not above last accepted {last}")
            }
            Error::BadProperty(why) => write!(f, "bad devid property: {why}"),
            Error::Internal(why) => write!(f, "internal error: {why}"),
            other => f.write_str(other.log_str()),
        }
    }
}

impl std::error::Error for Error {}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Decode(e)
    }
}

/// A configuration that cannot work (bad PEM, key not matching the certificate, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DEVID-1 configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}
