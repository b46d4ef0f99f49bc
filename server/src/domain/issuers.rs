//! The issuing CAs' life: the first one adopted into the store, rotation, revocation, and
//! which ones are still in use. The store is the one truth about which issuing CA is active;
//! every process loads what it names ([`sync`]) when it starts and whenever the feed moves.

use std::sync::Arc;

use devid_core::api::RevocationReason;
use time::OffsetDateTime;

use super::DomainError;
use crate::ca::{Ca, CaOptions, IssuerRef, IssuingCa, FIRST_KEY_REF};
use crate::store::{Actor, AuditRecord, FeedEntryRow, IssuerRow, Store, ACTIVE, REVOKED};

/// The issuing CAs still in use at `now`: the active one, and retired ones whose own notAfter
/// (which bounds every certificate they signed) has not passed. Revoked ones are not.
pub fn in_use(rows: &[IssuerRow], now: i64) -> Vec<&IssuerRow> {
    rows.iter()
        .filter(|r| r.status == ACTIVE || (r.status != REVOKED && r.not_after > now))
        .collect()
}

/// The CA certificates a relying party needs, DER: the active issuing CA's chain up to (not
/// including) the root, then every other issuing CA still in use, root last. `GET /v1/ca` and
/// EST `cacerts` both answer this set.
pub async fn ca_set_der(store: &Store, ca: &Ca, now: i64) -> Result<Vec<Vec<u8>>, DomainError> {
    let rows = store.issuers().await?;
    let active = ca.active();
    let chain = active.chain_der();
    let mut out: Vec<Vec<u8>> = chain[..chain.len().saturating_sub(1)].to_vec();
    for row in in_use(&rows, now).iter().filter(|r| r.id != active.id()) {
        out.push(row.der.clone());
    }
    out.push(ca.root_der().to_vec());
    Ok(out)
}

/// Records the data directory's issuing CA as the active one when the store has none, then
/// loads what the store names.
pub async fn adopt_and_sync(store: &Store, ca: &Ca) -> Result<(), DomainError> {
    let first = ca.active();
    store
        .issuer_adopt(&row_of(&first, FIRST_KEY_REF, crate::timefmt::now()))
        .await?;
    sync(store, ca).await.map(|_| ())
}

/// Loads the issuing CAs the store names and makes its active one active here. Returns
/// whether the active one changed.
pub async fn sync(store: &Store, ca: &Ca) -> Result<bool, DomainError> {
    let rows = store.issuers().await?;
    let refs: Vec<IssuerRef> = rows
        .iter()
        .map(|r| IssuerRef {
            id: r.id.clone(),
            key_ref: r.key_ref.clone(),
            active: r.status == ACTIVE,
            revoked: r.status == REVOKED,
        })
        .collect();
    Ok(ca.sync_issuers(&refs)?)
}

/// `devid-server ca rotate`: a new issuing CA under the root becomes active; the previous one
/// is retired (still trusted, still signing its CRL). Audited with the feed entry.
pub async fn rotate(
    store: &Store,
    ca: &Ca,
    options: &CaOptions,
    actor: &Actor,
) -> Result<(Arc<IssuingCa>, FeedEntryRow), DomainError> {
    adopt_and_sync(store, ca).await?;
    let previous = ca.active();
    let now = OffsetDateTime::now_utc();
    let issuing = ca.new_issuing(options, now)?;
    let row = row_of(
        &issuing,
        &format!("issuers/{}", issuing.id()),
        now.unix_timestamp(),
    );
    let audit = AuditRecord {
        at: row.created_at,
        actor: actor.clone(),
        action: "ca.rotate".into(),
        target: format!(
            "issuing CA {} (serial {}), replacing {}",
            issuing.id(),
            issuing.serial_hex(),
            previous.id()
        ),
        outcome: "ok".into(),
        detail: None,
    };
    let entry = store.issuer_rotate(&row, &audit).await?;
    sync(store, ca).await?;
    Ok((issuing, entry))
}

/// `devid-server ca revoke-issuing`: the issuing CA named by its id or its certificate's serial
/// goes on the root's CRL and into the feed. The active one cannot be revoked (rotate first).
pub async fn revoke(
    store: &Store,
    ca: &Ca,
    id_or_serial: &str,
    reason: RevocationReason,
    actor: &Actor,
) -> Result<(IssuerRow, FeedEntryRow), DomainError> {
    adopt_and_sync(store, ca).await?;
    let wanted = id_or_serial.trim().to_ascii_lowercase().replace(':', "");
    let rows = store.issuers().await?;
    let row = rows
        .iter()
        .find(|r| r.id == wanted || r.serial == wanted.trim_start_matches('0'))
        .ok_or_else(|| DomainError::NotFound(format!("no issuing CA {id_or_serial:?}")))?;
    let at = crate::timefmt::now();
    let audit = AuditRecord {
        at,
        actor: actor.clone(),
        action: "ca.revoke_issuing".into(),
        target: format!("issuing CA {} (serial {})", row.id, row.serial),
        outcome: "ok".into(),
        detail: Some(reason.as_str().into()),
    };
    let done = store.issuer_revoke(&row.id, reason, at, &audit).await?;
    sync(store, ca).await?;
    Ok(done)
}

fn row_of(issuing: &IssuingCa, key_ref: &str, now: i64) -> IssuerRow {
    IssuerRow {
        id: issuing.id().to_string(),
        serial: issuing.serial_hex().to_string(),
        der: issuing.der().to_vec(),
        key_ref: key_ref.to_string(),
        status: ACTIVE.into(),
        not_after: issuing.not_after().unix_timestamp(),
        created_at: now,
        retired_at: None,
        revoked_at: None,
        reason: None,
    }
}
