//! The audit log's side of every mutating call.
//!
//! A success is recorded by the store in the same transaction as the change (the record comes
//! from [`Audit::ok`]); a refused or failed call is recorded afterwards by [`Audit::run`],
//! best effort, with the public message of its error.

use std::future::Future;

use crate::store::{Actor, AuditRecord, Store};
use crate::timefmt;

/// How a failed call is described in its audit row (never an internal cause).
pub trait AuditOutcome {
    /// `error: <status> <public message>`.
    fn audit_outcome(&self) -> String;
}

/// One audited operation: who does what to which target.
#[derive(Debug, Clone)]
pub struct Audit {
    actor: Actor,
    action: &'static str,
    target: String,
}

impl Audit {
    pub fn new(actor: Actor, action: &'static str, target: &str) -> Self {
        Audit {
            actor,
            action,
            target: target.to_string(),
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The record of the success, to be written with the change.
    pub fn ok(&self) -> AuditRecord {
        self.ok_about(&self.target)
    }

    /// The record of the success, naming more than the target (e.g. the serial issued).
    pub fn ok_about(&self, target: &str) -> AuditRecord {
        record(&self.actor, self.action, target, "ok".to_string())
    }

    /// Runs `work`; when it fails, records the failure before passing the error on. A failure
    /// to write the record is logged, and the caller still gets the original error.
    pub async fn run<T, E: AuditOutcome>(
        &self,
        store: &Store,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let result = work.await;
        if let Err(e) = &result {
            self.failed(store, e).await;
        }
        result
    }

    /// Records that the call failed with `err`. Best effort: a failure to write the record is
    /// logged.
    pub async fn failed(&self, store: &Store, err: &impl AuditOutcome) {
        let rec = record(&self.actor, self.action, &self.target, err.audit_outcome());
        if let Err(e) = store.insert_audit(&rec).await {
            tracing::error!(error = %e, action = self.action, target = %self.target, "could not write audit record");
        }
    }
}

/// An audit record of `actor` doing `action` on `target`, now; `outcome` is `ok` or
/// `error: ...`. Control characters in what the caller sent are escaped (`\u{0}`): PostgreSQL
/// cannot store a NUL, and the audit row of a refused call must be written whatever it carried.
pub fn record(actor: &Actor, action: &str, target: &str, outcome: String) -> AuditRecord {
    AuditRecord {
        at: timefmt::now(),
        actor: actor.clone(),
        action: printable(action),
        target: printable(target),
        outcome: printable(&outcome),
        detail: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> Actor {
        Actor {
            id: "t".into(),
            name: "n".into(),
        }
    }

    #[test]
    fn records_escape_control_characters() {
        let r = record(&actor(), "a\0", "ab\0c\n", "error: 422 \u{1}".into());
        for s in [&r.action, &r.target, &r.outcome] {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
        assert_eq!(r.target, "ab\\u{0}c\\n");
        assert_eq!(printable("plain"), "plain");
    }

    #[test]
    fn a_success_record_names_action_and_target() {
        let a = Audit::new(actor(), "device.revoke", "C1");
        let r = a.ok();
        assert_eq!(
            (r.action.as_str(), r.target.as_str(), r.outcome.as_str()),
            ("device.revoke", "C1", "ok")
        );
        assert_eq!(a.ok_about("C1: 10.0.0.0/8").target, "C1: 10.0.0.0/8");
    }
}
