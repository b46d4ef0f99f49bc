//! The one error type of the crate.

use core::fmt;

/// Why a DEVID-S1 computation, a check or a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The sensor id is empty or longer than 255 bytes.
    BadId,
    /// The topic is longer than 65,535 bytes (or than the AAD scratch buffer holds).
    BadTopic,
    /// A sequence number that is not a decimal integer with 1 <= seq < 2^64, no sign and no
    /// leading zero.
    BadSeq,
    /// The MAC does not verify.
    BadMac,
    /// The sealed payload does not open (wrong key, id, seq, topic, or altered bytes).
    BadSeal,
    /// seq was already accepted (the highest, or marked in the window below it).
    Replayed,
    /// seq is more than 64 below the highest accepted.
    TooOld,
    /// The output buffer is too small.
    BufferTooSmall,
    /// Not 22 characters of canonical unpadded base64url encoding 16 bytes.
    BadBase64,
    /// The counter has no unpersisted value left: persist a new limit first.
    PersistFirst,
    /// The counter reached 2^64 - 1; the sensor needs a new identity.
    CounterExhausted,
    /// A frame whose bytes are not a valid encoding (COBS, length, CRC, fields).
    BadFrame,
}

impl Error {
    /// A short stable name (for logs, events and counters).
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::BadId => "bad_id",
            Error::BadTopic => "bad_topic",
            Error::BadSeq => "bad_seq",
            Error::BadMac => "bad_mac",
            Error::BadSeal => "bad_seal",
            Error::Replayed => "replayed",
            Error::TooOld => "too_old",
            Error::BufferTooSmall => "buffer_too_small",
            Error::BadBase64 => "bad_base64",
            Error::PersistFirst => "persist_first",
            Error::CounterExhausted => "counter_exhausted",
            Error::BadFrame => "bad_frame",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::BadId => "sensor id is empty or longer than 255 bytes",
            Error::BadTopic => "topic too long",
            Error::BadSeq => "seq is not a decimal integer with 1 <= seq < 2^64",
            Error::BadMac => "MAC does not verify",
            Error::BadSeal => "sealed payload does not open",
            Error::Replayed => "seq already accepted",
            Error::TooOld => "seq more than 64 below the highest accepted",
            Error::BufferTooSmall => "buffer too small",
            Error::BadBase64 => "not 16 bytes of canonical unpadded base64url",
            Error::PersistFirst => "counter limit must be persisted before the next seq",
            Error::CounterExhausted => "counter exhausted",
            Error::BadFrame => "malformed frame",
        })
    }
}

impl core::error::Error for Error {}
