//! The device state machine, written once.
//!
//! ```text
//!            suspend                 revoke
//!   active ----------> suspended ----------> revoked (final)
//!     ^  <----------      |
//!     |     resume        '--- revoke ---------^
//!     '-------------------- revoke ------------'
//! ```
//!
//! Suspending a suspended device or resuming an active one changes nothing (no feed entry, no
//! audit row). A certificate can also be revoked on its own; its device keeps its state.
//!
//! [`plan`] is pure: given the current state it says what changes. The store's one executor,
//! `Store::apply_device_transition`, locks the rows, asks [`plan`] inside the transaction and
//! writes what it says; the functions at the bottom ([`change_device`] and
//! [`revoke_certificate`]) are what the HTTP layer calls.

use devid_core::api::{
    CertState, DeviceState, RevocationAction, RevocationReason, RevocationScope,
};

use super::{Ctx, DomainError};
use crate::store::{Actor, CertRow, DeviceWithCerts, Transition, TransitionSubject};

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Revoke the device and every certificate of it not yet revoked. Final.
    Revoke { reason: RevocationReason },
    /// Put the device and its good certificates on hold; `comment` is kept in the audit row.
    Suspend { comment: Option<String> },
    /// Lift a suspension.
    Resume,
    /// Revoke one certificate (the subject); the device keeps its state.
    RevokeCertificate { reason: RevocationReason },
}

/// What the executor found (locked) before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub device: DeviceState,
    /// The certificate named, for actions on one certificate.
    pub certificate: Option<CertState>,
}

/// What an action does to the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing changes: no feed entry, no audit row; the device is returned as it is.
    Unchanged,
    Change(Change),
}

/// One change, written in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The device's new state; None: it keeps its state.
    pub device: Option<DeviceChange>,
    pub certificates: CertChange,
    /// Mark the keys of the changed certificates as compromised (never certified again).
    pub compromise_keys: bool,
    /// The feed entry; its serials are those of the certificates that changed.
    pub feed: FeedChange,
    /// The audit row of the success (its target is the subject).
    pub audit_action: &'static str,
    pub audit_detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceChange {
    pub status: DeviceState,
    /// Some: the device's revocation time becomes now and its reason this one. None: both are
    /// left as they are.
    pub revocation: Option<RevocationReason>,
}

/// Which certificates change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertScope {
    /// Every certificate of the device.
    Device,
    /// Only the certificate named.
    Subject,
}

/// Certificates of `scope` whose state is one of `from` go to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertChange {
    pub scope: CertScope,
    pub from: &'static [CertState],
    pub to: CertState,
    /// Some: revoked at now for this reason. None: neither a revocation time nor a reason.
    pub reason: Option<RevocationReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedChange {
    pub scope: RevocationScope,
    pub action: RevocationAction,
    pub reason: Option<RevocationReason>,
}

const NOT_REVOKED: &[CertState] = &[CertState::Good, CertState::Hold];
const GOOD: &[CertState] = &[CertState::Good];
const HOLD: &[CertState] = &[CertState::Hold];

impl Action {
    /// The rules that need no state: refused before anything is read.
    pub fn check(&self) -> Result<(), DomainError> {
        match self {
            Action::Revoke { reason } | Action::RevokeCertificate { reason }
                if *reason == RevocationReason::CertificateHold =>
            {
                Err(DomainError::invalid_field(
                    "reason",
                    "certificateHold is set by suspending a device (POST \
                     /v1/devices/{client_id}/suspend), not by revoking",
                ))
            }
            Action::Revoke { reason } | Action::RevokeCertificate { reason }
                if *reason == RevocationReason::CaCompromise =>
            {
                Err(DomainError::invalid_field(
                    "reason",
                    "cACompromise is for an issuing CA (devid-server ca revoke-issuing), not a \
                     device",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The state machine: what `action` does to a device (and certificate) in state `current`.
pub fn plan(current: &Current, action: Action) -> Result<Plan, DomainError> {
    action.check()?;
    let invalid = |m: &str| Err(DomainError::InvalidTransition(m.to_string()));
    match action {
        Action::Revoke { reason } => {
            if current.device == DeviceState::Revoked {
                return invalid("device is already revoked");
            }
            Ok(Plan::Change(Change {
                device: Some(DeviceChange {
                    status: DeviceState::Revoked,
                    revocation: Some(reason),
                }),
                certificates: CertChange {
                    scope: CertScope::Device,
                    from: NOT_REVOKED,
                    to: CertState::Revoked,
                    reason: Some(reason),
                },
                compromise_keys: reason == RevocationReason::KeyCompromise,
                feed: FeedChange {
                    scope: RevocationScope::Device,
                    action: RevocationAction::Revoked,
                    reason: Some(reason),
                },
                audit_action: "device.revoke",
                audit_detail: None,
            }))
        }
        Action::Suspend { comment } => match current.device {
            DeviceState::Revoked => invalid("device is revoked"),
            DeviceState::Suspended => Ok(Plan::Unchanged),
            DeviceState::Active => Ok(Plan::Change(Change {
                device: Some(DeviceChange {
                    status: DeviceState::Suspended,
                    revocation: None,
                }),
                certificates: CertChange {
                    scope: CertScope::Device,
                    from: GOOD,
                    to: CertState::Hold,
                    reason: Some(RevocationReason::CertificateHold),
                },
                compromise_keys: false,
                feed: FeedChange {
                    scope: RevocationScope::Device,
                    action: RevocationAction::Suspended,
                    reason: Some(RevocationReason::CertificateHold),
                },
                audit_action: "device.suspend",
                audit_detail: comment,
            })),
        },
        Action::Resume => match current.device {
            DeviceState::Revoked => invalid("device is revoked"),
            DeviceState::Active => Ok(Plan::Unchanged),
            DeviceState::Suspended => Ok(Plan::Change(Change {
                device: Some(DeviceChange {
                    status: DeviceState::Active,
                    revocation: None,
                }),
                certificates: CertChange {
                    scope: CertScope::Device,
                    from: HOLD,
                    to: CertState::Good,
                    reason: None,
                },
                compromise_keys: false,
                feed: FeedChange {
                    scope: RevocationScope::Device,
                    action: RevocationAction::Resumed,
                    reason: None,
                },
                audit_action: "device.resume",
                audit_detail: None,
            })),
        },
        Action::RevokeCertificate { reason } => match current.certificate {
            None => Err(DomainError::internal(
                "a certificate revocation needs the certificate's state",
            )),
            Some(CertState::Revoked) => invalid("certificate is already revoked"),
            Some(CertState::Good | CertState::Hold) => Ok(Plan::Change(Change {
                device: None,
                certificates: CertChange {
                    scope: CertScope::Subject,
                    from: NOT_REVOKED,
                    to: CertState::Revoked,
                    reason: Some(reason),
                },
                compromise_keys: reason == RevocationReason::KeyCompromise,
                feed: FeedChange {
                    scope: RevocationScope::Certificate,
                    action: RevocationAction::Revoked,
                    reason: Some(reason),
                },
                audit_action: "certificate.revoke",
                audit_detail: None,
            })),
        },
    }
}

/// Applies `action` to the device with this ClientID (looked up with [`super::devices::find`]'s
/// messages), then spreads the news. Returns the device as it now is.
pub async fn change_device(
    ctx: Ctx<'_>,
    actor: &Actor,
    client_id: &str,
    action: Action,
) -> Result<DeviceWithCerts, DomainError> {
    action.check()?;
    super::devices::find(ctx.store, client_id).await?;
    let t = apply(ctx, actor, TransitionSubject::Device(client_id), action).await?;
    Ok(t.device)
}

/// Revokes one certificate by its (normalized) serial.
pub async fn revoke_certificate(
    ctx: Ctx<'_>,
    actor: &Actor,
    serial: &str,
    reason: RevocationReason,
) -> Result<CertRow, DomainError> {
    let action = Action::RevokeCertificate { reason };
    action.check()?;
    let t = apply(ctx, actor, TransitionSubject::Certificate(serial), action)
        .await
        .map_err(|e| match e {
            DomainError::NotFound(_) => {
                DomainError::not_found(format!("no certificate has serial {serial}"))
            }
            other => other,
        })?;
    t.certificate
        .ok_or_else(|| DomainError::internal("certificate transition without its certificate"))
}

async fn apply(
    ctx: Ctx<'_>,
    actor: &Actor,
    subject: TransitionSubject<'_>,
    action: Action,
) -> Result<Transition, DomainError> {
    let t = ctx
        .store
        .apply_device_transition(subject, crate::timefmt::now(), actor, |current| {
            plan(current, action)
        })
        .await?;
    if let Some(entry) = &t.entry {
        ctx.committed(entry);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CertState::{Good, Hold, Revoked as CertRevoked};
    use DeviceState::{Active, Revoked, Suspended};
    use RevocationAction as A;
    use RevocationReason::{CertificateHold, KeyCompromise, Superseded};

    /// What one (state, action) comes to: the device's state afterwards, the certificates that
    /// change (from -> to), the feed entry (action, reason), the audit action, keys marked.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Refused(&'static str),
        Unchanged,
        Changed {
            device: DeviceState,
            certs: (&'static [CertState], CertState, CertScope),
            feed: (RevocationScope, RevocationAction, Option<RevocationReason>),
            audit: &'static str,
            keys_compromised: bool,
        },
    }

    fn outcome(current: Current, action: Action) -> Outcome {
        match plan(&current, action) {
            Err(DomainError::InvalidTransition(m) | DomainError::Invalid { detail: m, .. }) => {
                Outcome::Refused(Box::leak(m.into_boxed_str()))
            }
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(Plan::Unchanged) => Outcome::Unchanged,
            Ok(Plan::Change(c)) => Outcome::Changed {
                device: c.device.map_or(current.device, |d| d.status),
                certs: (c.certificates.from, c.certificates.to, c.certificates.scope),
                feed: (c.feed.scope, c.feed.action, c.feed.reason),
                audit: c.audit_action,
                keys_compromised: c.compromise_keys,
            },
        }
    }

    fn device(s: DeviceState) -> Current {
        Current {
            device: s,
            certificate: None,
        }
    }

    fn cert(d: DeviceState, c: CertState) -> Current {
        Current {
            device: d,
            certificate: Some(c),
        }
    }

    #[test]
    fn every_state_and_action() {
        use CertScope::{Device as All, Subject as One};
        use RevocationScope::{Certificate as CertEntry, Device as DevEntry};
        let revoke = |reason| Action::Revoke { reason };
        let suspend = || Action::Suspend { comment: None };
        let revoke_cert = |reason| Action::RevokeCertificate { reason };
        let changed = |device, certs, feed, audit, keys_compromised| Outcome::Changed {
            device,
            certs,
            feed,
            audit,
            keys_compromised,
        };
        let hold_refused = "certificateHold is set by suspending a device (POST /v1/devices/{client_id}/suspend), not by revoking";
        #[rustfmt::skip]
        let table: Vec<(Current, Action, Outcome)> = vec![
            // ok/revoke: from active or suspended, every certificate not yet revoked.
            (device(Active), revoke(Superseded),
             changed(Revoked, (NOT_REVOKED, CertRevoked, All), (DevEntry, A::Revoked, Some(Superseded)), "device.revoke", false)),
            (device(Suspended), revoke(KeyCompromise),
             changed(Revoked, (NOT_REVOKED, CertRevoked, All), (DevEntry, A::Revoked, Some(KeyCompromise)), "device.revoke", true)),
            (device(Revoked), revoke(Superseded), Outcome::Refused("device is already revoked")),
            (device(Active), revoke(CertificateHold), Outcome::Refused(hold_refused)),
            // ok/suspend: good certificates on hold; a second suspension changes nothing.
            (device(Active), suspend(),
             changed(Suspended, (GOOD, Hold, All), (DevEntry, A::Suspended, Some(CertificateHold)), "device.suspend", false)),
            (device(Suspended), suspend(), Outcome::Unchanged),
            (device(Revoked), suspend(), Outcome::Refused("device is revoked")),
            // ok/resume: held certificates good again; resuming an active device changes nothing.
            (device(Suspended), Action::Resume,
             changed(Active, (HOLD, Good, All), (DevEntry, A::Resumed, None), "device.resume", false)),
            (device(Active), Action::Resume, Outcome::Unchanged),
            (device(Revoked), Action::Resume, Outcome::Refused("device is revoked")),
            // ok/revoke-certificate: one certificate, the device keeps its state.
            (cert(Active, Good), revoke_cert(Superseded),
             changed(Active, (NOT_REVOKED, CertRevoked, One), (CertEntry, A::Revoked, Some(Superseded)), "certificate.revoke", false)),
            (cert(Suspended, Hold), revoke_cert(KeyCompromise),
             changed(Suspended, (NOT_REVOKED, CertRevoked, One), (CertEntry, A::Revoked, Some(KeyCompromise)), "certificate.revoke", true)),
            (cert(Active, CertRevoked), revoke_cert(Superseded), Outcome::Refused("certificate is already revoked")),
            (cert(Revoked, CertRevoked), revoke_cert(Superseded), Outcome::Refused("certificate is already revoked")),
            (cert(Active, Good), revoke_cert(CertificateHold), Outcome::Refused(hold_refused)),
        ];
        for (current, action, want) in table {
            let label = format!("{current:?} {action:?}");
            assert_eq!(outcome(current, action), want, "{label}");
        }
    }

    #[test]
    fn a_revocation_stamps_device_and_certificates() {
        let Ok(Plan::Change(c)) = plan(&device(Active), Action::Revoke { reason: Superseded })
        else {
            panic!("a change")
        };
        assert_eq!(
            c.device,
            Some(DeviceChange {
                status: Revoked,
                revocation: Some(Superseded)
            })
        );
        assert_eq!(c.certificates.reason, Some(Superseded));
        // A resumption clears the certificates' revocation time and reason.
        let Ok(Plan::Change(c)) = plan(&device(Suspended), Action::Resume) else {
            panic!("a change")
        };
        assert_eq!(c.certificates.reason, None);
        assert_eq!(c.device.and_then(|d| d.revocation), None);
    }

    #[test]
    fn a_suspension_keeps_its_comment_in_the_audit_row() {
        let action = Action::Suspend {
            comment: Some("shipped for repair".into()),
        };
        let Ok(Plan::Change(c)) = plan(&device(Active), action) else {
            panic!("a change")
        };
        assert_eq!(c.audit_detail.as_deref(), Some("shipped for repair"));
    }

    async fn apply_on(
        store: &crate::store::Store,
        actor: &Actor,
        subject: TransitionSubject<'_>,
        action: Action,
    ) -> Result<Transition, DomainError> {
        store
            .apply_device_transition(subject, 100, actor, |current| plan(current, action))
            .await
    }

    /// The executor on a real (SQLite) store: every (state, action) from the table above ends
    /// in the planned state, with one feed entry and one audit row when something changed and
    /// none otherwise.
    #[tokio::test]
    async fn the_store_applies_every_plan() {
        use crate::store::{Credential, NewCert, NewDevice, RegMode, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::connect_sqlite(&dir.path().join("t.db"), false)
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        let actor = Actor {
            id: "t".into(),
            name: "n".into(),
        };
        let audit_rows = || async {
            store
                .list_audit(None, None, None, 10_000)
                .await
                .expect("audit")
        };
        let actions = || {
            vec![
                Action::Revoke {
                    reason: KeyCompromise,
                },
                Action::Suspend {
                    comment: Some("repair".into()),
                },
                Action::Resume,
                Action::RevokeCertificate { reason: Superseded },
            ]
        };
        let mut n = 0u8;
        for start in [Active, Suspended, Revoked] {
            for action in actions() {
                n += 1;
                let (cid, serial) = (format!("C{n}"), format!("{n:02x}"));
                let device = NewDevice {
                    client_id: cid.clone(),
                    client_id_generated: false,
                    hardware_serial: format!("HW{n}"),
                    model: None,
                    metadata: None,
                    created_at: 0,
                    credential: Credential::Certificate(NewCert {
                        serial: serial.clone(),
                        fingerprint: serial.clone(),
                        der: vec![n],
                        not_before: 0,
                        not_after: 1,
                        csr_sha256: Some(serial.clone()),
                        spki_sha256: devid_core::csr::spki_sha256(&[n]),
                        profile: "idevid".into(),
                    }),
                };
                store
                    .register(&[device], RegMode::AllOrNothing, &actor, 0)
                    .await
                    .expect("register");
                let to_start = match start {
                    Active => vec![],
                    Suspended => vec![Action::Suspend { comment: None }],
                    Revoked => vec![Action::Revoke { reason: Superseded }],
                };
                for a in to_start {
                    apply_on(&store, &actor, TransitionSubject::Device(&cid), a)
                        .await
                        .expect("setup");
                }
                let subject = match action {
                    Action::RevokeCertificate { .. } => TransitionSubject::Certificate(&serial),
                    _ => TransitionSubject::Device(&cid),
                };
                let before = store.get_device(&cid).await.expect("get").expect("device");
                let current = Current {
                    device: before.device.status,
                    certificate: match subject {
                        TransitionSubject::Certificate(_) => Some(before.certs[0].status),
                        TransitionSubject::Device(_) => None,
                    },
                };
                let (head, audits) = (
                    store.feed_head().await.expect("head"),
                    audit_rows().await.len(),
                );
                let label = format!("{start:?} {action:?}");
                let planned = plan(&current, action.clone());
                let got = apply_on(&store, &actor, subject, action).await;
                let after = store.get_device(&cid).await.expect("get").expect("device");
                let new_head = store.feed_head().await.expect("head");
                let rows = audit_rows().await;
                match planned {
                    Err(e) => {
                        assert_eq!(got.err(), Some(e), "{label}");
                        assert_eq!(after.device.status, before.device.status, "{label}");
                        assert_eq!((new_head, rows.len()), (head, audits), "{label}");
                    }
                    Ok(Plan::Unchanged) => {
                        let t = got.expect("unchanged");
                        assert!(t.entry.is_none(), "{label}");
                        assert_eq!(t.device.device.status, before.device.status, "{label}");
                        assert_eq!((new_head, rows.len()), (head, audits), "{label}");
                    }
                    Ok(Plan::Change(c)) => {
                        let t = got.expect("changed");
                        let entry = t.entry.expect("an entry");
                        let want = c.device.map_or(before.device.status, |d| d.status);
                        assert_eq!(after.device.status, want, "{label}");
                        assert_eq!(after.certs[0].status, c.certificates.to, "{label}");
                        assert_eq!(after.certs[0].reason, c.certificates.reason, "{label}");
                        assert_eq!(
                            after.certs[0].revoked_at,
                            c.certificates.reason.map(|_| 100),
                            "{label}"
                        );
                        assert_eq!(
                            (entry.seq, entry.scope, entry.action, entry.reason),
                            (head + 1, c.feed.scope, c.feed.action, c.feed.reason),
                            "{label}"
                        );
                        assert_eq!(entry.serials, vec![serial.clone()], "{label}");
                        assert_eq!(rows.len(), audits + 1, "{label}");
                        let row = &rows[rows.len() - 1].record;
                        assert_eq!(row.action, c.audit_action, "{label}");
                        assert_eq!(row.detail, c.audit_detail, "{label}");
                        let target = match subject {
                            TransitionSubject::Device(cid) => cid,
                            TransitionSubject::Certificate(serial) => serial,
                        };
                        assert_eq!(row.target, target, "{label}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_certificate_action_without_a_certificate_is_an_internal_error() {
        assert!(matches!(
            plan(
                &device(Active),
                Action::RevokeCertificate { reason: Superseded }
            ),
            Err(DomainError::Internal(_))
        ));
    }
}
