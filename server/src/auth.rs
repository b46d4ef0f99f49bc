//! Bearer tokens and roles.
//!
//! A token is `devid_<id>_<43 characters of base64url randomness>` (256 random bits). Only its
//! SHA-256 is stored: tokens are high-entropy, so a fast hash is the right one (a password hash
//! would only slow every request). Validated tokens are cached for a few seconds; revoking a
//! token through this process evicts it at once, through another process within
//! [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use devid_core::api::Role;
use ring::rand::SecureRandom;

use crate::app::AppState;
use crate::error::ApiError;
use crate::store::{Actor, AuditRecord, Store, StoreError, TokenRow};
use crate::timefmt;

/// How long a validated token is trusted without asking the database again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// Factory tokens: the models it may register (None: any).
    pub models: Option<Vec<String>>,
}

impl Caller {
    /// Refuses unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "a {} token may not do this",
                self.role.as_str()
            )))
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            id: self.token_id.clone(),
            name: self.name.clone(),
        }
    }

    /// An audit record of this caller doing `action` on `target`, now; `outcome` is `ok` or
    /// `error: ...`.
    /// Control characters in what the caller sent are escaped (`\u{0}`): PostgreSQL cannot
    /// store a NUL, and the audit row of a refused call must be written whatever it carried.
    pub fn audit_record(&self, action: &str, target: &str, outcome: String) -> AuditRecord {
        AuditRecord {
            at: timefmt::now(),
            actor: self.actor(),
            action: printable(action),
            target: printable(target),
            outcome: printable(&outcome),
            detail: None,
        }
    }

    /// The audit record of a successful call.
    pub fn audit_ok(&self, action: &str, target: &str) -> AuditRecord {
        self.audit_record(action, target, "ok".to_string())
    }

    /// Whether a factory token may register devices of `model`.
    pub fn may_register_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match (&self.models, model) {
            (None, _) => Ok(()),
            (Some(allowed), Some(m)) if allowed.iter().any(|a| a == m) => Ok(()),
            (Some(allowed), m) => Err(ApiError::forbidden(format!(
                "this token may register models {} only, not {}",
                allowed.join(", "),
                m.map_or_else(
                    || "a device without a model".to_string(),
                    |m| format!("{m:?}")
                )
            ))),
        }
    }
}

/// `s` with every control character escaped the way Rust writes it (`\n`, `\u{0}`).
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A freshly made token: the secret (shown once) and the row to store.
pub struct NewToken {
    pub secret: String,
    pub row: TokenRow,
}

pub fn hash_token(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Makes a token.
pub fn new_token(
    rng: &dyn SecureRandom,
    role: Role,
    name: &str,
    models: Option<Vec<String>>,
    expires_at: Option<i64>,
) -> Result<NewToken, ApiError> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rng.fill(&mut id).map_err(|_| ApiError::internal("rng"))?;
    rng.fill(&mut secret)
        .map_err(|_| ApiError::internal("rng"))?;
    let id = hex::encode(id);
    let secret = format!(
        "devid_{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let row = TokenRow {
        id,
        name: name.to_string(),
        role,
        models,
        hash: hash_token(&secret),
        created_at: timefmt::now(),
        expires_at,
        revoked_at: None,
    };
    Ok(NewToken { secret, row })
}

/// What the database said about a token hash, and when.
type CachedLookup = (Instant, Option<TokenRow>);

/// Validated tokens by hash, each with the instant it was read from the database.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, CachedLookup>>,
}

impl TokenCache {
    pub fn evict(&self, token_id: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|_, (_, row)| row.as_ref().is_none_or(|r| r.id != token_id));
        }
    }

    async fn lookup(&self, store: &Store, hash: Vec<u8>) -> Result<Option<TokenRow>, StoreError> {
        if let Ok(map) = self.entries.lock() {
            if let Some((at, row)) = map.get(&hash) {
                if at.elapsed() < CACHE_TTL {
                    return Ok(row.clone());
                }
            }
        }
        let row = store.find_token_by_hash(&hash).await?;
        if let Ok(mut map) = self.entries.lock() {
            if map.len() > 10_000 {
                map.clear();
            }
            map.insert(hash, (Instant::now(), row.clone()));
        }
        Ok(row)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let secret = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|s| s.starts_with("devid_"))
            .ok_or(ApiError::Unauthorized)?;
        let row = state
            .tokens
            .lookup(&state.store, hash_token(secret))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let now = timefmt::now();
        if row.revoked_at.is_some() || row.expires_at.is_some_and(|e| e <= now) {
            return Err(ApiError::Unauthorized);
        }
        Ok(Caller {
            token_id: row.id,
            name: row.name,
            role: row.role,
            models: row.models,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let rng = ring::rand::SystemRandom::new();
        let a = new_token(&rng, Role::Admin, "a", None, None).expect("token");
        let b = new_token(&rng, Role::Admin, "b", None, None).expect("token");
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(&format!("devid_{}_", a.row.id)));
        assert_eq!(a.row.hash, hash_token(&a.secret));
        assert_ne!(a.row.hash, a.secret.as_bytes());
    }

    #[test]
    fn model_limits() {
        let c = Caller {
            token_id: "t".into(),
            name: "line3".into(),
            role: Role::Factory,
            models: Some(vec!["thermo".into()]),
        };
        assert!(c.may_register_model(Some("thermo")).is_ok());
        assert!(c.may_register_model(Some("valve")).is_err());
        assert!(c.may_register_model(None).is_err());
        assert!(c.require(&[Role::Admin]).is_err());
        assert!(c.require(&[Role::Admin, Role::Factory]).is_ok());
    }

    #[test]
    fn audit_records_escape_control_characters() {
        let c = Caller {
            token_id: "t".into(),
            name: "n".into(),
            role: Role::Admin,
            models: None,
        };
        let r = c.audit_record("a\0", "ab\0c\n", "error: 422 \u{1}".into());
        for s in [&r.action, &r.target, &r.outcome] {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
        assert_eq!(r.target, "ab\\u{0}c\\n");
        assert_eq!(printable("plain"), "plain");
    }
}
