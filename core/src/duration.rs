//! Durations as people write them in flags and configuration: `90m`, `12h`, `30d`, `1y`.

use std::fmt;
use std::str::FromStr;

/// A time unit of the duration grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    /// 365 days when counted in seconds; certificate validity counts calendar years instead.
    Years,
}

impl Unit {
    /// Seconds in one unit.
    pub fn secs(self) -> u64 {
        match self {
            Unit::Seconds => 1,
            Unit::Minutes => 60,
            Unit::Hours => 3600,
            Unit::Days => 86_400,
            Unit::Weeks => 7 * 86_400,
            Unit::Years => 365 * 86_400,
        }
    }

    pub fn suffix(self) -> char {
        match self {
            Unit::Seconds => 's',
            Unit::Minutes => 'm',
            Unit::Hours => 'h',
            Unit::Days => 'd',
            Unit::Weeks => 'w',
            Unit::Years => 'y',
        }
    }

    fn from_suffix(c: char) -> Option<Unit> {
        Some(match c {
            's' => Unit::Seconds,
            'm' => Unit::Minutes,
            'h' => Unit::Hours,
            'd' => Unit::Days,
            'w' => Unit::Weeks,
            'y' => Unit::Years,
            _ => return None,
        })
    }
}

/// What a number without a unit means where a duration is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bare {
    /// `3600` is `3600s` (CLI flags, plugin options: what they accepted before units).
    Seconds,
    /// A unit is required (certificate validity, where `20` could mean years).
    Refused,
}

/// A duration in the one grammar every flag and option uses.
///
/// Grammar: a whole number greater than zero (ASCII digits, no sign, no spaces), then one unit:
/// `s` seconds, `m` minutes, `h` hours, `d` days, `w` weeks (7 days), `y` years (365 days when
/// counted in seconds; certificate validity counts calendar years). Lowercase only, one number
/// and one unit (`1h30m` is refused; write `90m`), at most `i64::MAX` seconds in all. A number
/// without a unit means seconds through [`FromStr`]; each use states whether it accepts it
/// ([`Bare`]). `Display` writes the number and its unit (`3600` shows as `3600s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HumanDuration {
    count: u64,
    unit: Unit,
}

/// Why a text is not a duration. The `Display` text is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "{0:?} is not a duration: use a whole number and a unit s, m, h, d, w or y (e.g. 90m, 30d, 1y)"
    )]
    Syntax(String),
    #[error("{0:?} lacks a unit: use s, m, h, d, w or y (e.g. 3600s, 20y)")]
    NoUnit(String),
    #[error("{0:?} is zero; a duration must be longer than that")]
    Zero(String),
    #[error("{0:?} is too long")]
    TooLong(String),
}

/// Longest duration, in seconds: what fits time arithmetic in `i64` seconds.
const MAX_SECS: u64 = i64::MAX as u64;

impl HumanDuration {
    /// Reads `s`; `bare` says what a number without a unit means.
    pub fn parse(s: &str, bare: Bare) -> Result<Self, DurationError> {
        let shown = || s.chars().take(40).collect::<String>();
        let (digits, unit) = match s.char_indices().last() {
            Some((_, c)) if c.is_ascii_digit() => match bare {
                Bare::Seconds => (s, Unit::Seconds),
                Bare::Refused if s.bytes().all(|b| b.is_ascii_digit()) => {
                    return Err(DurationError::NoUnit(shown()))
                }
                Bare::Refused => return Err(DurationError::Syntax(shown())),
            },
            Some((i, c)) => match Unit::from_suffix(c) {
                Some(u) => (&s[..i], u),
                None => return Err(DurationError::Syntax(shown())),
            },
            None => return Err(DurationError::Syntax(shown())),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DurationError::Syntax(shown()));
        }
        let count: u64 = digits
            .parse()
            .map_err(|_| DurationError::TooLong(shown()))?;
        if count == 0 {
            return Err(DurationError::Zero(shown()));
        }
        match count.checked_mul(unit.secs()) {
            Some(secs) if secs <= MAX_SECS => Ok(Self { count, unit }),
            _ => Err(DurationError::TooLong(shown())),
        }
    }

    /// `n` seconds (for defaults). `None` when `n` is zero or too long.
    pub fn from_secs(n: u64) -> Option<Self> {
        (n > 0 && n <= MAX_SECS).then_some(Self {
            count: n,
            unit: Unit::Seconds,
        })
    }

    /// The number as written.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The unit as written (seconds for a bare number).
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// The length in seconds (a year is 365 days). Never zero.
    pub fn as_secs(&self) -> u64 {
        // Checked at construction: the product is at most MAX_SECS.
        self.count * self.unit.secs()
    }

    pub fn to_std(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.as_secs())
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;
    /// A number without a unit is seconds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s, Bare::Seconds)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit.suffix())
    }
}

serde_as_text!(HumanDuration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (ok, secs, shown) in [
            ("1s", 1, "1s"),
            ("3600", 3600, "3600s"),
            ("3600s", 3600, "3600s"),
            ("90m", 5400, "90m"),
            ("12h", 43_200, "12h"),
            ("30d", 2_592_000, "30d"),
            ("2w", 1_209_600, "2w"),
            ("1y", 31_536_000, "1y"),
            ("20y", 630_720_000, "20y"),
            ("007d", 604_800, "7d"),
        ] {
            let d: HumanDuration = ok.parse().unwrap_or_else(|e| panic!("ok/{ok}: {e}"));
            assert_eq!(d.as_secs(), secs, "ok/{ok}");
            assert_eq!(d.to_string(), shown, "ok/{ok}");
            assert_eq!(d.to_std(), std::time::Duration::from_secs(secs));
        }
        for bad in [
            "",
            "s",
            "y",
            "0",
            "0s",
            "0y",
            "-1d",
            "+1d",
            "1.5h",
            "1h30m",
            "1 h",
            " 1h",
            "1h ",
            "10M",
            "1Y",
            "1mo",
            "soon",
            "1e3",
            "١s",
            "99999999999999999999s",
            "300000000000y",
        ] {
            assert!(bad.parse::<HumanDuration>().is_err(), "fail/{bad:?}");
        }
    }

    #[test]
    fn bare_numbers_per_use() {
        assert_eq!(
            HumanDuration::parse("20", Bare::Seconds).map(|d| d.as_secs()),
            Ok(20)
        );
        assert!(matches!(
            HumanDuration::parse("20", Bare::Refused),
            Err(DurationError::NoUnit(_))
        ));
        let d = HumanDuration::parse("20y", Bare::Refused).expect("ok");
        assert_eq!((d.count(), d.unit()), (20, Unit::Years));
        assert!(matches!(
            HumanDuration::parse("-20", Bare::Refused),
            Err(DurationError::Syntax(_))
        ));
    }

    #[test]
    fn serde_round_trip() {
        let d: HumanDuration = serde_json::from_str("\"1y\"").expect("ok");
        assert_eq!(serde_json::to_string(&d).expect("json"), "\"1y\"");
        assert!(serde_json::from_str::<HumanDuration>("\"1x\"").is_err());
        assert_eq!(HumanDuration::from_secs(0), None);
        assert_eq!(
            HumanDuration::from_secs(5).map(|d| d.to_string()),
            Some("5s".into())
        );
    }
}
