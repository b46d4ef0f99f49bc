//! Text columns with rules: how a state, a reason or a list is stored, and parsed back when a
//! row is read (`#[sqlx(try_from = "Stored")]` on a field of a `FromRow` type).

use devid_core::api::{
    CertState, DeviceState, RevocationAction, RevocationReason, RevocationScope, Role,
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

impl TryFrom<Stored> for DeviceState {
    type Error = Corrupt;
    fn try_from(s: Stored) -> Result<Self, Corrupt> {
        parse("device status", s.0, DeviceState::parse)
    }
}

impl TryFrom<Stored> for CertState {
    type Error = Corrupt;
    fn try_from(s: Stored) -> Result<Self, Corrupt> {
        parse("certificate status", s.0, CertState::parse)
    }
}

impl TryFrom<Stored> for Role {
    type Error = Corrupt;
    fn try_from(s: Stored) -> Result<Self, Corrupt> {
        parse("role", s.0, Role::parse)
    }
}

impl TryFrom<Stored> for RevocationScope {
    type Error = Corrupt;
    fn try_from(s: Stored) -> Result<Self, Corrupt> {
        parse("feed scope", s.0, |s| {
            [
                RevocationScope::Device,
                RevocationScope::Certificate,
                RevocationScope::Model,
            ]
            .into_iter()
            .find(|v| scope_str(*v) == s)
        })
    }
}

impl TryFrom<Stored> for RevocationAction {
    type Error = Corrupt;
    fn try_from(s: Stored) -> Result<Self, Corrupt> {
        parse("feed action", s.0, |s| {
            [
                RevocationAction::Revoked,
                RevocationAction::Suspended,
                RevocationAction::Resumed,
                RevocationAction::Updated,
            ]
            .into_iter()
            .find(|v| action_str(*v) == s)
        })
    }
}

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

/// How a feed scope is stored.
pub(super) fn scope_str(s: RevocationScope) -> &'static str {
    match s {
        RevocationScope::Device => "device",
        RevocationScope::Certificate => "certificate",
        RevocationScope::Model => "model",
    }
}

/// How a feed action is stored.
pub(super) fn action_str(a: RevocationAction) -> &'static str {
    match a {
        RevocationAction::Revoked => "revoked",
        RevocationAction::Suspended => "suspended",
        RevocationAction::Resumed => "resumed",
        RevocationAction::Updated => "updated",
    }
}

/// How a list of strings is stored: a JSON array.
pub(super) fn json_list(v: &[String]) -> String {
    serde_json::Value::from(v.to_vec()).to_string()
}
