//! ClientID rules.
//!
//! A ClientID is 1 to 23 characters of `[0-9A-Za-z]`: the range MQTT 3.1.1 and 5.0 oblige every
//! broker to accept. devid makes ClientIDs at manufacturing time as
//!
//! ```text
//! <prefix: 0..=6 of [0-9A-Za-z]> <body: 16 of 0-9 A-Z without I L O U> <check: 1 of [0-9A-Za-z]>
//! ```
//!
//! The body carries 80 bits ([`body`]): the time of registration in unix seconds (32 bits), then
//! 48 random bits. The time comes first so that ids made together sort together: a registry's
//! unique index on ClientIDs then takes new ids at its right edge instead of on a random leaf page
//! each, which keeps registration as fast in a fleet of millions as in an empty one. The id does
//! tell when its device was registered, to the second. Its alphabet leaves out letters that are
//! easily misread, and sorts in the order of the values it encodes. The
//! check character is Luhn mod 62 over the whole id, which catches every single-character error
//! and every transposition of two adjacent characters, so a mistyped id is rejected before it is
//! looked up. A ClientID burned into firmware may be brought instead; it must follow the charset
//! and length rules but carries no check character of ours.

use std::fmt;

/// Longest ClientID every MQTT broker must accept.
pub const MAX_LEN: usize = 23;
/// Longest per-model prefix.
pub const MAX_PREFIX_LEN: usize = 6;
/// Body characters in a generated ClientID (5 bits each).
pub const BODY_LEN: usize = 16;
/// Random bytes in a generated ClientID's body, after its 32 bits of time.
pub const RANDOM_LEN: usize = 6;

/// The full ClientID alphabet, in the order that defines each character's Luhn value.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// The body alphabet: 32 characters, no I, L, O, U.
const BODY_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why a ClientID (or a prefix) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdError {
    Empty,
    TooLong {
        len: usize,
        max: usize,
    },
    /// A character outside `[0-9A-Za-z]`, with its position (0-based, in characters).
    BadCharacter {
        ch: char,
        position: usize,
    },
    /// The check character does not match: the id is probably mistyped.
    CheckMismatch,
}

impl fmt::Display for ClientIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIdError::Empty => write!(f, "ClientID is empty"),
            ClientIdError::TooLong { len, max } => {
                write!(
                    f,
                    "ClientID has {len} characters; at most {max} are allowed"
                )
            }
            ClientIdError::BadCharacter { ch, position } => write!(
                f,
                "ClientID has {ch:?} at position {position}; only 0-9, A-Z and a-z are allowed"
            ),
            ClientIdError::CheckMismatch => write!(
                f,
                "ClientID check character does not match; the id is probably mistyped"
            ),
        }
    }
}

impl std::error::Error for ClientIdError {}

fn value_of(c: u8) -> Option<usize> {
    match c {
        b'0'..=b'9' => Some(usize::from(c - b'0')),
        b'A'..=b'Z' => Some(usize::from(c - b'A') + 10),
        b'a'..=b'z' => Some(usize::from(c - b'a') + 36),
        _ => None,
    }
}

fn check_charset(s: &str, max: usize) -> Result<(), ClientIdError> {
    if s.is_empty() {
        return Err(ClientIdError::Empty);
    }
    for (position, ch) in s.chars().enumerate() {
        if !ch.is_ascii_alphanumeric() {
            return Err(ClientIdError::BadCharacter { ch, position });
        }
    }
    if s.len() > max {
        return Err(ClientIdError::TooLong { len: s.len(), max });
    }
    Ok(())
}

/// A checked ClientID: the rules of [`validate`], kept as given. Devices' ClientIDs made by
/// devid also pass [`verify_check`]; one burned into firmware need not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(s: &str) -> Result<ClientId, ClientIdError> {
        validate(s)?;
        Ok(ClientId(s.to_string()))
    }
}

text_value!(ClientId, ClientIdError, "ClientID {}");

/// Validates a ClientID's charset and length (the rules for a ClientID brought by the caller).
pub fn validate(id: &str) -> Result<(), ClientIdError> {
    check_charset(id, MAX_LEN)
}

/// Validates a per-model prefix: 1 to 6 characters of `[0-9A-Za-z]`.
pub fn validate_prefix(prefix: &str) -> Result<(), ClientIdError> {
    check_charset(prefix, MAX_PREFIX_LEN)
}

/// The default prefix for a model that has none configured: its first (up to) six
/// alphanumeric characters. `"thermo-v2"` gives `"thermo"`.
pub fn default_prefix(model: &str) -> String {
    model
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(MAX_PREFIX_LEN)
        .collect()
}

/// Luhn mod 62 check character for `payload` (which must be `[0-9A-Za-z]`).
fn check_char(payload: &[u8]) -> Option<u8> {
    const N: usize = ALPHABET.len();
    let mut sum = 0;
    // Double every second value, counting from the rightmost payload character.
    for (i, &c) in payload.iter().rev().enumerate() {
        let mut v = value_of(c)?;
        if i % 2 == 0 {
            v *= 2;
            v = v / N + v % N;
        }
        sum += v;
    }
    Some(ALPHABET[(N - sum % N) % N])
}

/// The 80 bits of a new ClientID's body: `unix_secs` modulo 2^32 (big-endian, so ids sort by
/// time until 2106, when the count wraps and only index locality suffers), then 48 random bits.
/// The caller supplies both, so this stays free of I/O.
pub fn body(unix_secs: u64, random: &[u8; RANDOM_LEN]) -> [u8; 10] {
    let mut bits = [0u8; 10];
    // Truncation is the rule: the low 32 bits of the time.
    bits[..4].copy_from_slice(&(unix_secs as u32).to_be_bytes());
    bits[4..].copy_from_slice(random);
    bits
}

/// Makes a ClientID from a prefix and 80 body bits ([`body`] makes them for a registration).
/// The prefix must pass [`validate_prefix`] or be empty.
pub fn generate(prefix: &str, random: &[u8; 10]) -> Result<String, ClientIdError> {
    if !prefix.is_empty() {
        validate_prefix(prefix)?;
    }
    let mut id = Vec::with_capacity(prefix.len() + BODY_LEN + 1);
    id.extend_from_slice(prefix.as_bytes());
    // 80 bits, 5 at a time, most significant first.
    let bits = random
        .iter()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    for i in (0..BODY_LEN).rev() {
        let index = ((bits >> (5 * i)) & 0x1f) as usize;
        id.push(BODY_ALPHABET[index]);
    }
    let check = check_char(&id).ok_or(ClientIdError::Empty)?;
    id.push(check);
    // Every byte pushed is ASCII, taken from the alphabets above or a validated prefix.
    String::from_utf8(id).map_err(|_| ClientIdError::Empty)
}

/// Whether `id` carries a valid check character (as generated ids do). Charset and length are
/// checked first.
pub fn verify_check(id: &str) -> Result<(), ClientIdError> {
    validate(id)?;
    let (payload, last) = id.as_bytes().split_at(id.len() - 1);
    if payload.is_empty() || check_char(payload) != Some(last[0]) {
        return Err(ClientIdError::CheckMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_id_type_parses_once_and_keeps_the_text() {
        let id: ClientId = "thermo7KQ2M9XW4D8R6T1VZ".parse().expect("valid");
        assert_eq!(id.as_str(), "thermo7KQ2M9XW4D8R6T1VZ");
        assert_eq!(
            serde_json::to_string(&id).expect("ser"),
            "\"thermo7KQ2M9XW4D8R6T1VZ\""
        );
        for bad in ["", "a-b", &"a".repeat(24)] {
            assert_eq!(ClientId::parse(bad).map(|_| ()), validate(bad), "{bad:?}");
            assert!(serde_json::from_str::<ClientId>(&format!("\"{bad}\"")).is_err());
        }
    }

    use super::*;

    fn sample(seed: u8) -> [u8; 10] {
        let mut r = [0u8; 10];
        for (i, b) in r.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 17);
        }
        r
    }

    #[test]
    fn generated_ids_follow_the_rules() {
        for prefix in ["", "T", "thermo", "AB12cd"] {
            for seed in 0..50 {
                let id = generate(prefix, &sample(seed)).expect("generate");
                assert!(id.starts_with(prefix));
                assert_eq!(id.len(), prefix.len() + BODY_LEN + 1);
                assert!(id.len() <= MAX_LEN);
                validate(&id).expect("valid");
                verify_check(&id).expect("check ok");
            }
        }
    }

    #[test]
    fn ids_made_later_sort_after_earlier_ones_whatever_their_random_bits() {
        let t = 1_796_000_000u64; // 2026-11-30
        let mut last = String::new();
        for (i, dt) in [0u64, 1, 2, 60, 3600, 86_400 * 365].into_iter().enumerate() {
            // Random bits that fall as time rises: order must come from the time alone.
            let r = [0xff - i as u8; RANDOM_LEN];
            let id = generate("thermo", &body(t + dt, &r)).expect("id");
            verify_check(&id).expect("check");
            assert!(id > last, "{id} does not sort after {last}");
            last = id;
        }
        // Within one second, the random bits decide, and every one of them reaches the id.
        let a = generate("x", &body(t, &[0; RANDOM_LEN])).expect("a");
        let b = generate("x", &body(t, &[0xff; RANDOM_LEN])).expect("b");
        let c = generate("x", &body(t, &[0, 0, 0, 0, 0, 1])).expect("c");
        assert!(a != b && a != c && b != c);
        // The prefix and 6 characters (30 of the time's 32 bits) are the same.
        assert_eq!(a[..7], b[..7], "same second, same leading characters");
    }

    #[test]
    fn different_randomness_gives_different_ids() {
        let a = generate("x", &[0; 10]).expect("a");
        let b = generate("x", &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]).expect("b");
        assert_ne!(a, b);
    }

    #[test]
    fn every_single_character_substitution_is_caught() {
        let id = generate("thermo", &sample(7)).expect("generate");
        for pos in 0..id.len() {
            for &c in ALPHABET.iter() {
                let mut bytes = id.clone().into_bytes();
                if bytes[pos] == c {
                    continue;
                }
                bytes[pos] = c;
                let typo = String::from_utf8(bytes).expect("ascii");
                assert_eq!(
                    verify_check(&typo),
                    Err(ClientIdError::CheckMismatch),
                    "{typo} passed"
                );
            }
        }
    }

    #[test]
    fn adjacent_transpositions_are_caught() {
        for seed in 0..20 {
            let id = generate("dev", &sample(seed)).expect("generate");
            let bytes = id.as_bytes();
            for pos in 0..bytes.len() - 1 {
                if bytes[pos] == bytes[pos + 1] {
                    continue;
                }
                let mut swapped = bytes.to_vec();
                swapped.swap(pos, pos + 1);
                let typo = String::from_utf8(swapped).expect("ascii");
                assert!(verify_check(&typo).is_err(), "{typo} passed (from {id})");
            }
        }
    }

    #[test]
    fn brought_ids_are_validated() {
        assert_eq!(validate(""), Err(ClientIdError::Empty));
        assert!(matches!(
            validate("a+b"),
            Err(ClientIdError::BadCharacter {
                ch: '+',
                position: 1
            })
        ));
        for bad in ["a#", "a/b", "a b", "tab\t", "ü", "x-y", "a_b"] {
            assert!(
                matches!(validate(bad), Err(ClientIdError::BadCharacter { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            validate(&"a".repeat(24)),
            Err(ClientIdError::TooLong { len: 24, max: 23 })
        );
        validate(&"a".repeat(23)).expect("23 is fine");
        validate("FW0000123").expect("firmware id");
    }

    #[test]
    fn prefixes_are_validated_and_derived() {
        assert!(validate_prefix("toolong").is_err());
        assert!(validate_prefix("a-b").is_err());
        assert!(generate("a-b", &[0; 10]).is_err());
        assert_eq!(default_prefix("thermo-v2"), "thermo");
        assert_eq!(default_prefix("a-1"), "a1");
        assert_eq!(default_prefix("--"), "");
    }
}
