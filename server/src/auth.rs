//! Bearer tokens and roles.
//!
//! A token is `devid_<id>_<43 characters of base64url randomness>` (256 random bits). Only its
//! SHA-256 is stored: tokens are high-entropy, so a fast hash is the right one (a password hash
//! would only slow every request). Validated tokens are cached for a few seconds; revoking a
//! token through this process evicts it at once, through another process within
//! [`CACHE_TTL`]. Long-lived responses (the revocation stream) end when their token is revoked
//! or expires: see [`Caller::guard_stream`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use devid_core::api::Role;
use futures::{Stream, StreamExt as _};
use ring::rand::SecureRandom;
use tokio::sync::watch;

use crate::app::AppState;
use crate::domain::audit::{self, Audit};
use crate::domain::{authz, DomainError};
use crate::store::{Actor, AuditRecord, Store, StoreError, TokenRow};
use crate::timefmt;

/// How long a validated token is trusted without asking the database again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// How often a long-lived response re-reads its caller's token from the store, so that a token
/// revoked through another process ends it within this time (plus one read).
pub const STREAM_RECHECK: Duration = Duration::from_secs(2);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// Factory tokens: the models it may register (None: any).
    pub models: Option<Vec<String>>,
    /// When the token expires (unix seconds), if it does.
    pub expires_at: Option<i64>,
    /// SHA-256 of the token, to read it again (see [`Caller::guard_stream`]).
    token_hash: Vec<u8>,
}

impl Caller {
    /// Refuses unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), DomainError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(DomainError::forbidden(format!(
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
    /// `error: ...` (see [`audit::record`]).
    pub fn audit_record(&self, action: &str, target: &str, outcome: String) -> AuditRecord {
        audit::record(&self.actor(), action, target, outcome)
    }

    /// The audit of this caller doing `action` on `target`.
    pub fn audit(&self, action: &'static str, target: &str) -> Audit {
        Audit::new(self.actor(), action, target)
    }

    /// Whether this token may register devices of `model` (factory tokens may be limited to
    /// some models).
    pub fn may_register_model(&self, model: Option<&str>) -> Result<(), DomainError> {
        authz::may_register_model(self.models.as_deref(), model)
    }
}

#[cfg(test)]
impl Caller {
    /// A caller with `role` (and, for a factory token, `models`), for unit tests.
    pub(crate) fn for_tests(role: Role, models: Option<Vec<String>>) -> Caller {
        Caller {
            token_id: "t".into(),
            name: "test".into(),
            role,
            models,
            expires_at: None,
            token_hash: vec![],
        }
    }
}

impl Caller {
    /// Ends `stream` once this caller's token is gone: at its expiry, at once when it is revoked
    /// through this process, and within [`STREAM_RECHECK`] (plus one store read) when it is
    /// revoked through another. Every long-lived response wraps its stream in this.
    pub fn guard_stream<S: Stream>(
        &self,
        state: &AppState,
        stream: S,
    ) -> impl Stream<Item = S::Item> {
        let gone = token_gone(state.clone(), self.token_hash.clone(), self.expires_at);
        stream.take_until(Box::pin(gone))
    }
}

/// Returns when the token with `hash` is revoked, deleted or expired.
async fn token_gone(state: AppState, hash: Vec<u8>, expires_at: Option<i64>) {
    let mut revocations = state.tokens.revocations.subscribe();
    loop {
        let until_expiry = expires_at.map(|e| {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(e).unwrap_or(0));
            at.duration_since(SystemTime::now()).unwrap_or_default()
        });
        tokio::select! {
            _ = tokio::time::sleep(STREAM_RECHECK) => {}
            Some(()) = async { match until_expiry {
                Some(d) => { tokio::time::sleep(d).await; Some(()) }
                None => None,
            } } => {}
            Ok(()) = revocations.changed() => {}
        }
        match state
            .tokens
            .lookup_within(&state.store, hash.clone(), STREAM_RECHECK)
            .await
        {
            Ok(Some(row)) if usable(&row, timefmt::now()) => {}
            Ok(_) => return,
            // The stream itself will notice a store that is gone; keep checking.
            Err(e) => tracing::warn!(error = %e, "could not re-read a stream's token"),
        }
    }
}

fn usable(row: &TokenRow, now: i64) -> bool {
    row.revoked_at.is_none() && row.expires_at.is_none_or(|e| e > now)
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
) -> Result<NewToken, DomainError> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rng.fill(&mut id)
        .map_err(|_| DomainError::internal("rng"))?;
    rng.fill(&mut secret)
        .map_err(|_| DomainError::internal("rng"))?;
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
pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, CachedLookup>>,
    /// Bumped by every revocation through this process (wakes [`Caller::guard_stream`]).
    revocations: watch::Sender<u64>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            entries: Mutex::default(),
            revocations: watch::Sender::new(0),
        }
    }
}

impl TokenCache {
    /// Forgets a revoked token, and tells the streams that follow tokens to look again.
    pub fn evict(&self, token_id: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|_, (_, row)| row.as_ref().is_none_or(|r| r.id != token_id));
        }
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn lookup(&self, store: &Store, hash: Vec<u8>) -> Result<Option<TokenRow>, StoreError> {
        self.lookup_within(store, hash, CACHE_TTL).await
    }

    /// The token with `hash`, read from the store unless a read younger than `max_age` is
    /// cached.
    async fn lookup_within(
        &self,
        store: &Store,
        hash: Vec<u8>,
        max_age: Duration,
    ) -> Result<Option<TokenRow>, StoreError> {
        if let Ok(map) = self.entries.lock() {
            if let Some((at, row)) = map.get(&hash) {
                if at.elapsed() < max_age {
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
    type Rejection = DomainError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, DomainError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(DomainError::Unauthenticated)?;
        let secret = bearer_token(header).ok_or(DomainError::Unauthenticated)?;
        Caller::from_secret(state, secret).await
    }
}

impl Caller {
    /// The caller whose token is `secret`, if the token exists, is not revoked and has not
    /// expired.
    pub async fn from_secret(state: &AppState, secret: &str) -> Result<Caller, DomainError> {
        let token_hash = hash_token(secret);
        let row = state
            .tokens
            .lookup(&state.store, token_hash.clone())
            .await?
            .ok_or(DomainError::Unauthenticated)?;
        if !usable(&row, timefmt::now()) {
            return Err(DomainError::Unauthenticated);
        }
        Ok(Caller {
            token_id: row.id,
            name: row.name,
            role: row.role,
            models: row.models,
            expires_at: row.expires_at,
            token_hash,
        })
    }
}

/// The password of an `Authorization: Basic <base64(user:password)>` header (RFC 7617), where
/// EST clients put a token; the user name is ignored.
pub fn basic_password(header: &str) -> Option<String> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string())
}

/// The token of an `Authorization: Bearer <token>` header. The scheme name is case-insensitive
/// (RFC 9110 section 11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    Some(token.trim())
        .filter(|_| scheme.eq_ignore_ascii_case("bearer"))
        .filter(|t| t.starts_with("devid_"))
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
            expires_at: None,
            token_hash: vec![],
        };
        assert!(c.may_register_model(Some("thermo")).is_ok());
        assert!(c.may_register_model(Some("valve")).is_err());
        assert!(c.may_register_model(None).is_err());
        assert!(c.require(&[Role::Admin]).is_err());
        assert!(c.require(&[Role::Admin, Role::Factory]).is_ok());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for h in [
            "Bearer devid_x",
            "bearer devid_x",
            "BEARER  devid_x ",
            "bEaReR devid_x",
        ] {
            assert_eq!(bearer_token(h), Some("devid_x"), "{h}");
        }
        for h in ["Basic devid_x", "Bearer", "Bearerdevid_x", "Bearer other"] {
            assert_eq!(bearer_token(h), None, "{h}");
        }
    }

    #[test]
    fn basic_passwords() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            basic_password(&format!("Basic {}", b64("line3:devid_x_y"))).as_deref(),
            Some("devid_x_y")
        );
        assert_eq!(
            basic_password(&format!("basic {}", b64(":a:b"))).as_deref(),
            Some("a:b")
        );
        assert_eq!(basic_password(&format!("Bearer {}", b64("u:p"))), None);
        assert_eq!(basic_password("Basic !!"), None);
        assert_eq!(basic_password(&format!("Basic {}", b64("no colon"))), None);
    }

    #[test]
    fn audit_records_escape_control_characters() {
        let c = Caller {
            token_id: "t".into(),
            name: "n".into(),
            role: Role::Admin,
            models: None,
            expires_at: None,
            token_hash: vec![],
        };
        let r = c.audit_record("a\0", "ab\0c\n", "error: 422 \u{1}".into());
        for s in [&r.action, &r.target, &r.outcome] {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
        assert_eq!(r.target, "ab\\u{0}c\\n");
    }
}
