//! Text columns with rules: how a state, a reason or a list is stored, and parsed back when a
//! row is read (`#[sqlx(try_from = "Stored")]` on a field of a `FromRow` type).

use devid_core::api::{
    AppEventKind, CertState, CheckName, DeliveryState, DeviceKind, DeviceState, RevocationAction,
    RevocationReason, RevocationScope, Role, Severity,
};

/// A `NOT NULL` text column, parsed into its type as the row is read (`try_from`).
#[derive(sqlx::Type)]
#[sqlx(transparent, no_pg_array)]
pub struct Stored(String);

/// A nullable text column, parsed into its type as the row is read (`try_from`).
#[derive(sqlx::Type)]
#[sqlx(transparent, no_pg_array)]
pub struct StoredOpt(Option<String>);

/// A stored value that does not parse (only possible if someone edited the database by hand).
#[derive(Debug, thiserror::Error)]
#[error("stored {what} {value:?} is not valid")]
pub struct Corrupt {
    what: &'static str,
    value: String,
}

impl Corrupt {
    pub fn new(what: &'static str, value: impl Into<String>) -> Corrupt {
        Corrupt {
            what,
            value: value.into(),
        }
    }
}

fn parse<T>(
    what: &'static str,
    s: String,
    f: impl FnOnce(&str) -> Option<T>,
) -> Result<T, Corrupt> {
    f(&s).ok_or_else(|| Corrupt::new(what, s))
}

/// An enum of names (core's `named_enum!`) is stored by its wire name.
macro_rules! stored_name {
    ($($t:ty => $what:literal),+ $(,)?) => {
        $(
            impl TryFrom<Stored> for $t {
                type Error = Corrupt;
                fn try_from(s: Stored) -> Result<Self, Corrupt> {
                    parse($what, s.0, <$t>::parse)
                }
            }
        )+
    };
}

stored_name!(
    DeviceState => "device status",
    DeviceKind => "device kind",
    CertState => "certificate status",
    Role => "role",
    RevocationScope => "feed scope",
    RevocationAction => "feed action",
    AppEventKind => "event kind",
    CheckName => "check name",
    Severity => "severity",
    DeliveryState => "delivery state",
);

/// A JSON list of strings (feed serials).
impl TryFrom<Stored> for Vec<String> {
    type Error = Corrupt;
    fn try_from(s: Stored) -> Result<Self, Corrupt> {
        parse("list", s.0, |s| serde_json::from_str(s).ok())
    }
}

impl TryFrom<StoredOpt> for Option<RevocationReason> {
    type Error = Corrupt;
    fn try_from(s: StoredOpt) -> Result<Self, Corrupt> {
        s.0.map(|s| parse("revocation reason", s, RevocationReason::parse))
            .transpose()
    }
}

/// A JSON list of strings, or NULL (a token's models, a device's allowed CIDRs).
impl TryFrom<StoredOpt> for Option<Vec<String>> {
    type Error = Corrupt;
    fn try_from(s: StoredOpt) -> Result<Self, Corrupt> {
        s.0.map(|s| Vec::try_from(Stored(s))).transpose()
    }
}

/// A value type stored as its text form, or NULL (a model's LDevID settings).
macro_rules! stored_text_opt {
    ($($t:ty => $what:literal),+ $(,)?) => {
        $(
            impl TryFrom<StoredOpt> for Option<$t> {
                type Error = Corrupt;
                fn try_from(s: StoredOpt) -> Result<Self, Corrupt> {
                    s.0.map(|s| parse($what, s, |s| s.parse::<$t>().ok()))
                        .transpose()
                }
            }
        )+
    };
}

stored_text_opt!(
    devid_core::LdevidValidity => "LDevID validity",
    devid_core::RenewalGrace => "renewal grace",
    devid_core::ConnectWith => "connect_with",
);

/// How a list of strings is stored: a JSON array.
pub(super) fn json_list(v: &[String]) -> String {
    serde_json::Value::from(v.to_vec()).to_string()
}

/// A sensor's seq (1 <= seq < 2^64) as SQL stores it: an i64 in the same order (seq - 2^63),
/// so that `>` and `MAX` compare seqs in SQL on both backends.
pub(super) fn seq_to_sql(seq: u64) -> i64 {
    (seq ^ (1 << 63)) as i64
}

/// The inverse of [`seq_to_sql`].
pub(super) fn seq_from_sql(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_seqs_keep_their_order_and_value() {
        let seqs = [0, 1, 2, (1 << 63) - 1, 1 << 63, u64::MAX - 1, u64::MAX];
        for w in seqs.windows(2) {
            assert!(seq_to_sql(w[0]) < seq_to_sql(w[1]), "{w:?}");
        }
        for s in seqs {
            assert_eq!(seq_from_sql(seq_to_sql(s)), s);
        }
    }
}
