//! Time conversions between the store's unix seconds and the API's RFC 3339 strings.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix seconds now.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 (`2026-11-25T13:00:00Z`) for unix seconds. Out-of-range values (which the store never
/// holds) render as the Unix epoch rather than failing a whole response.
pub fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

pub fn rfc3339_opt(secs: Option<i64>) -> Option<String> {
    secs.map(rfc3339)
}

/// Parses an RFC 3339 time into unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-25T13:00:00Z"), Some(1_795_611_600));
        assert_eq!(rfc3339(1_795_611_600), "2026-11-25T13:00:00Z");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
