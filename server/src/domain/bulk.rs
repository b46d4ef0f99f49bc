//! Revoking, suspending or resuming every device a filter selects, in one transaction.
//!
//! There is one state machine: [`super::lifecycle::plan`] is asked for each state the selected
//! devices are in, and the store writes its answer to each state's devices as a set
//! (`Store::apply_bulk_transition`). A device the plan leaves unchanged or refuses (resuming
//! an active device, revoking a revoked one) is counted as matched, not changed.

use devid_core::api::{BulkResult, DeviceFilter, BULK_SAMPLE};

use super::lifecycle::{plan, Action, Plan};
use super::{Ctx, DomainError};
use crate::store::{Actor, BulkAudit, DeviceSelection};

/// Applies `action` to every device `filter` selects (a dry run only counts), then spreads the
/// news of what changed: the feed's followers, the metrics, the CRL.
pub async fn change_devices(
    ctx: Ctx<'_>,
    actor: &Actor,
    filter: &DeviceFilter,
    action: Action,
    dry_run: bool,
) -> Result<BulkResult, DomainError> {
    action.check()?;
    let sel = selection(filter)?;
    let audit = BulkAudit {
        action: audit_action(&action),
        target: describe(filter),
    };
    let out = ctx
        .store
        .apply_bulk_transition(
            &sel,
            crate::timefmt::now(),
            actor,
            audit,
            dry_run,
            |current| match plan(current, action.clone()) {
                Ok(Plan::Change(change)) => Some(change),
                Ok(Plan::Unchanged) | Err(_) => None,
            },
        )
        .await?;
    if let Some(seq) = out.last_seq {
        ctx.feed.notify(seq);
        for a in &out.actions {
            ctx.metrics.status_changed(*a);
        }
        ctx.feed.refresh_crl_soon();
    }
    Ok(BulkResult {
        matched: out.matched,
        changed: out.changed.len() as u64,
        sample: out.changed.into_iter().take(BULK_SAMPLE).collect(),
        dry_run,
    })
}

/// The audit action of a bulk change (the single-device one's, on `devices`).
pub fn audit_action(action: &Action) -> &'static str {
    match action {
        Action::Revoke { .. } | Action::RevokeCertificate { .. } => "devices.revoke",
        Action::Suspend { .. } => "devices.suspend",
        Action::Resume => "devices.resume",
    }
}

/// The filter's rules (at least one criterion, the ClientID limit, RFC 3339 times), and the
/// store's form of it.
pub fn selection(filter: &DeviceFilter) -> Result<DeviceSelection, DomainError> {
    filter
        .check()
        .map_err(|m| DomainError::invalid_field("filter", m))?;
    let time = |field: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|s| {
                crate::timefmt::parse_rfc3339(s).ok_or_else(|| {
                    DomainError::invalid_field(
                        field,
                        format!("filter.{field}: {s:?} is not an RFC 3339 time"),
                    )
                })
            })
            .transpose()
    };
    Ok(DeviceSelection {
        model: filter.model.as_ref().map(|m| m.as_str().to_string()),
        metadata: filter.metadata.clone(),
        created_after: time("created_after", &filter.created_after)?,
        created_before: time("created_before", &filter.created_before)?,
        client_ids: filter
            .client_ids
            .as_ref()
            .map(|ids| ids.iter().map(|c| c.as_str().to_string()).collect()),
    })
}

/// The filter in a line, for the audit row: the criteria given, a list of ClientIDs by its
/// length and first ClientID.
pub fn describe(filter: &DeviceFilter) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &filter.model {
        parts.push(format!("model={m}"));
    }
    for (k, v) in &filter.metadata {
        parts.push(format!("metadata.{k}={v}"));
    }
    if let Some(t) = &filter.created_after {
        parts.push(format!("created_after={t}"));
    }
    if let Some(t) = &filter.created_before {
        parts.push(format!("created_before={t}"));
    }
    if let Some(ids) = &filter.client_ids {
        match ids.first() {
            Some(first) if ids.len() > 1 => {
                parts.push(format!("client_ids=[{first}, +{} more]", ids.len() - 1))
            }
            Some(first) => parts.push(format!("client_ids=[{first}]")),
            None => parts.push("client_ids=[]".into()),
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_target_names_every_criterion() {
        let f: DeviceFilter = serde_json::from_str(
            r#"{"model":"thermo","metadata":{"lot":"L7"},"created_after":"2026-01-01T00:00:00Z",
                "client_ids":["A1","B2","C3"]}"#,
        )
        .expect("filter");
        assert_eq!(
            describe(&f),
            "model=thermo metadata.lot=L7 created_after=2026-01-01T00:00:00Z \
             client_ids=[A1, +2 more]"
        );
        let sel = selection(&f).expect("selection");
        assert_eq!(sel.created_after, Some(1_767_225_600));
        assert_eq!(sel.client_ids.map(|v| v.len()), Some(3));
    }

    #[test]
    fn a_bad_filter_is_refused_naming_the_field() {
        for (json, field) in [
            (r#"{}"#, "filter"),
            (r#"{"created_before":"yesterday"}"#, "created_before"),
            (r#"{"metadata":{"":"x"}}"#, "filter"),
        ] {
            let f: DeviceFilter = serde_json::from_str(json).expect("filter");
            match selection(&f) {
                Err(DomainError::Invalid { field: Some(f), .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }
}
