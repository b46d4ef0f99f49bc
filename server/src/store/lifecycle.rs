//! The one executor of the device state machine: `domain::lifecycle::plan` decides, this writes
//! what it decided, in one transaction; and the operations built on it.

use devid_core::api::RevocationReason;

use super::app_events::{append_app_events, NewAppEvent};
use super::devices::{load_cert, load_device, lock_device, DeviceKey};
use super::feed::append_feed;
use super::sql::{numbered, Arg, Conn, Stmt, Tx};
use super::tokens::{audit_ok, insert_audit_on};
use super::{
    Actor, AuditRecord, CertRow, DeviceWithCerts, FeedEntryRow, Store, StoreError, Transition,
    TransitionSubject,
};
use crate::domain::lifecycle::{self, Action, CertScope, Current, Plan};

/// The event for applications a feed entry of a device's change makes: `revoked`,
/// `suspended` or `resumed` with `{reason?, serials}` (a settings entry makes none).
fn lifecycle_event(entry: &FeedEntryRow, model: Option<&str>) -> Option<NewAppEvent> {
    use devid_core::api::{AppEventKind, RevocationAction};
    let kind = match entry.action {
        RevocationAction::Revoked => AppEventKind::Revoked,
        RevocationAction::Suspended => AppEventKind::Suspended,
        RevocationAction::Resumed => AppEventKind::Resumed,
        _ => return None,
    };
    let mut data = serde_json::json!({ "serials": entry.serials });
    if let Some(reason) = entry.reason {
        data["reason"] = reason.as_str().into();
    }
    Some(NewAppEvent {
        kind,
        at: entry.at,
        client_id: Some(entry.client_id.clone()),
        model: model.map(str::to_string),
        data,
    })
}

/// The certificates a change applies to: every one of a device, or the one named.
#[derive(Debug, Clone, Copy)]
enum Certs<'a> {
    OfDevice(i64),
    One(&'a str),
}

impl<'a> Certs<'a> {
    /// The `certificates` column that picks them, and its value.
    fn column(self) -> (&'static str, Arg<'a>) {
        match self {
            Certs::OfDevice(id) => ("device_id", id.into()),
            Certs::One(serial) => ("serial", serial.into()),
        }
    }
}

impl Store {
    /// The one way a device's or certificate's state changes. In one transaction: locks the
    /// device row (for a certificate subject: its device's row), reads its state (and the
    /// certificate's), asks `decide` what to do (`domain::lifecycle::plan`), and writes exactly
    /// that: the certificates' and the device's new states, the keys' compromise mark, one feed
    /// entry with the serials that changed, the success audit row (target: the subject; detail:
    /// the plan's); then returns the device (and certificate) as committed. `Plan::Unchanged`
    /// writes nothing and returns the device as it is, without an entry. An error of `decide`
    /// rolls back and is returned as it is; NotFound when the subject does not exist.
    pub async fn apply_device_transition<E, F>(
        &self,
        subject: TransitionSubject<'_>,
        at: i64,
        actor: &Actor,
        decide: F,
    ) -> Result<Transition, E>
    where
        E: From<StoreError>,
        F: FnOnce(&Current) -> Result<Plan, E>,
    {
        self.execute_transition(subject, at, actor, decide)
            .await
            .map_err(E::from)?
    }

    /// [`Store::apply_device_transition`], with the store's errors apart from `decide`'s.
    async fn execute_transition<E, F>(
        &self,
        subject: TransitionSubject<'_>,
        at: i64,
        actor: &Actor,
        decide: F,
    ) -> Result<Result<Transition, E>, StoreError>
    where
        F: FnOnce(&Current) -> Result<Plan, E>,
    {
        let mut tx = self.pools.begin_write().await?;
        // Device row first, as everywhere else, so that concurrent changes cannot deadlock.
        let (dev, cert) = match subject {
            TransitionSubject::Device(client_id) => (
                lock_device(&mut tx, DeviceKey::ClientId(client_id)).await?,
                None,
            ),
            TransitionSubject::Certificate(serial) => {
                let (device_id,): (i64,) =
                    Stmt::new("SELECT device_id FROM certificates WHERE serial = $1")
                        .bind(serial)
                        .fetch_optional(&mut tx)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                let dev = lock_device(&mut tx, DeviceKey::Id(device_id)).await?;
                let cert = load_cert(Conn::from(&mut tx), serial)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                (dev, Some(cert))
            }
        };
        let current = Current {
            device: dev.status,
            certificate: cert.as_ref().map(|c| c.status),
        };
        let change = match decide(&current) {
            Err(e) => return Ok(Err(e)),
            Ok(Plan::Unchanged) => {
                let device = reload(&mut tx, dev.id).await?;
                return Ok(Ok(Transition {
                    device,
                    certificate: cert,
                    entry: None,
                }));
            }
            Ok(Plan::Change(change)) => change,
        };
        let (target, serial) = match subject {
            TransitionSubject::Device(client_id) => (client_id, None),
            TransitionSubject::Certificate(serial) => (serial, Some(serial)),
        };
        let changed = &change.certificates;
        let certs = match (changed.scope, serial) {
            (CertScope::Device, _) => Certs::OfDevice(dev.id),
            (CertScope::Subject, Some(s)) => Certs::One(s),
            (CertScope::Subject, None) => {
                return Err(StoreError::InvalidTransition(
                    "a change of the certificate named needs a certificate".into(),
                ))
            }
        };
        let (column, value) = certs.column();
        let mut q = Stmt::new(format!(
            "UPDATE certificates SET status = $1, revoked_at = $2, reason = $3 \
             WHERE {column} = $4 AND status IN ({}) RETURNING serial",
            numbered(changed.from.len(), 5)
        ))
        .bind(changed.to.as_str())
        .bind(changed.reason.map(|_| at))
        .bind(changed.reason.map(|r| r.as_str()))
        .bind(value);
        for s in changed.from {
            q = q.bind(s.as_str());
        }
        let mut serials: Vec<String> = q
            .fetch_all::<(String,)>(&mut tx)
            .await?
            .into_iter()
            .map(|(s,)| s)
            .collect();
        serials.sort();
        if change.compromise_keys {
            mark_keys_compromised(&mut tx, certs, at).await?;
        }
        if let Some(d) = change.device {
            match d.revocation {
                Some(reason) => Stmt::new(
                    "UPDATE devices SET status = $1, revoked_at = $2, reason = $3 WHERE id = $4",
                )
                .bind(d.status.as_str())
                .bind(at)
                .bind(reason.as_str())
                .bind(dev.id),
                None => Stmt::new("UPDATE devices SET status = $1 WHERE id = $2")
                    .bind(d.status.as_str())
                    .bind(dev.id),
            }
            .execute(&mut tx)
            .await?;
        }
        let entry = append_feed(
            &mut tx,
            change.feed.scope,
            change.feed.action,
            &dev.client_id,
            serials,
            change.feed.reason,
            at,
        )
        .await?;
        let events: Vec<NewAppEvent> = lifecycle_event(&entry, dev.model.as_deref())
            .into_iter()
            .collect();
        let appended = append_app_events(&mut tx, &events).await?;
        let audit = AuditRecord {
            detail: change.audit_detail,
            ..audit_ok(actor, change.audit_action, target, at)
        };
        insert_audit_on(Conn::from(&mut tx), &audit).await?;
        let device = reload(&mut tx, dev.id).await?;
        let certificate = match serial {
            Some(s) => Some(
                load_cert(Conn::from(&mut tx), s)
                    .await?
                    .ok_or(StoreError::NotFound)?,
            ),
            None => None,
        };
        tx.commit().await?;
        self.app_events_committed(appended);
        Ok(Ok(Transition {
            device,
            certificate,
            entry: Some(entry),
        }))
    }

    /// Revokes the device and all its certificates not yet revoked (hold ones included), with
    /// one feed entry and an audit row (the lifecycle's rules applied by
    /// [`Store::apply_device_transition`]).
    pub async fn revoke_device(
        &self,
        client_id: &str,
        reason: RevocationReason,
        at: i64,
        actor: &Actor,
    ) -> Result<(DeviceWithCerts, FeedEntryRow), StoreError> {
        let t = self
            .transition(
                TransitionSubject::Device(client_id),
                at,
                actor,
                Action::Revoke { reason },
            )
            .await?;
        Ok((t.device, t.entry.ok_or_else(nothing_changed)?))
    }

    /// Puts an active device's good certificates on hold. Already suspended: no change, None.
    pub async fn suspend_device(
        &self,
        client_id: &str,
        at: i64,
        actor: &Actor,
        comment: Option<&str>,
    ) -> Result<(DeviceWithCerts, Option<FeedEntryRow>), StoreError> {
        let action = Action::Suspend {
            comment: comment.map(str::to_string),
        };
        let t = self
            .transition(TransitionSubject::Device(client_id), at, actor, action)
            .await?;
        Ok((t.device, t.entry))
    }

    /// Lifts a suspension (hold certificates back to good). Already active: no change, None.
    pub async fn resume_device(
        &self,
        client_id: &str,
        at: i64,
        actor: &Actor,
    ) -> Result<(DeviceWithCerts, Option<FeedEntryRow>), StoreError> {
        let t = self
            .transition(
                TransitionSubject::Device(client_id),
                at,
                actor,
                Action::Resume,
            )
            .await?;
        Ok((t.device, t.entry))
    }

    /// Revokes one certificate (good or on hold). The device's state is unchanged.
    pub async fn revoke_certificate(
        &self,
        serial: &str,
        reason: RevocationReason,
        at: i64,
        actor: &Actor,
    ) -> Result<(CertRow, FeedEntryRow), StoreError> {
        let action = Action::RevokeCertificate { reason };
        let t = self
            .transition(TransitionSubject::Certificate(serial), at, actor, action)
            .await?;
        let entry = t.entry.ok_or_else(nothing_changed)?;
        Ok((t.certificate.ok_or(StoreError::NotFound)?, entry))
    }

    /// [`Store::apply_device_transition`] with the lifecycle's plan, its refusals as
    /// `InvalidTransition`.
    async fn transition(
        &self,
        subject: TransitionSubject<'_>,
        at: i64,
        actor: &Actor,
        action: Action,
    ) -> Result<Transition, StoreError> {
        self.apply_device_transition(subject, at, actor, |current| {
            lifecycle::plan(current, action)
                .map_err(|e| StoreError::InvalidTransition(e.to_string()))
        })
        .await
    }
}

fn nothing_changed() -> StoreError {
    StoreError::InvalidTransition("nothing changed".into())
}

/// The device with its certificates as the transaction sees it now.
async fn reload(tx: &mut Tx, id: i64) -> Result<DeviceWithCerts, StoreError> {
    load_device(Conn::from(tx), DeviceKey::Id(id))
        .await?
        .ok_or(StoreError::NotFound)
}

/// Marks the keys of `certs` as revoked for keyCompromise, so that they are never certified
/// again. A key bound to an earlier device (two devices sharing a key from before keys were
/// tracked) is marked on that binding.
async fn mark_keys_compromised(tx: &mut Tx, certs: Certs<'_>, at: i64) -> Result<(), StoreError> {
    let (column, value) = certs.column();
    Stmt::new(format!(
        "INSERT INTO device_keys (spki_sha256, device_id, compromised_at) \
         SELECT DISTINCT c.spki_sha256, c.device_id, $1 FROM certificates c \
         WHERE c.spki_sha256 IS NOT NULL AND c.{column} = $2 \
         ON CONFLICT (spki_sha256) DO UPDATE SET \
         compromised_at = COALESCE(device_keys.compromised_at, excluded.compromised_at)"
    ))
    .bind(at)
    .bind(value)
    .execute(tx)
    .await?;
    Ok(())
}
