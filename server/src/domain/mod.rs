//! The rules of the service, apart from HTTP and SQL.
//!
//! - [`lifecycle`]: the device state machine (revoke, suspend, resume, certificate revocation),
//!   a pure `plan` the store's one executor applies inside its transaction.
//! - [`bulk`]: the same plan applied to every device a filter selects, in one transaction.
//! - [`devices`]: finding a device, the status brokers poll.
//! - [`policy`]: what applies to a device (its settings, else its model's, else the defaults),
//!   and changing its policy and allow-list.
//! - [`models`], [`tokens`], [`brokers`]: per-model settings, API tokens, broker enrolment.
//! - [`registration`]: the checks of an item and a batch, whether an item is new, a replay or a
//!   conflict given what is stored (`classify`, asked by the store), what a refusal means.
//! - [`renewal`]: the rules of LDevID issuance (enroll, renew, re-key), pure.
//! - [`sensors`]: sensors behind gateways: attachment rules, the keys brokers get, what
//!   brokers report of readings.
//! - [`fleet`]: what brokers' batches mean for the fleet's health record, and the fleet
//!   checks' decisions (`fleet::checks`).
//! - [`authz`]: decisions beyond "this role may call this route" (factory tokens limited to
//!   models).
//! - [`audit`]: one helper for "do it, and record a failure in the audit log" (successes are
//!   written by the store in the change's own transaction).
//!
//! Every function here returns [`DomainError`]; `crate::error` maps it to HTTP in one place.
//! The route modules parse requests, call in here, and render answers.

pub mod audit;
pub mod authz;
pub mod brokers;
pub mod bulk;
pub mod devices;
mod error;
pub mod fleet;
pub mod issuers;
pub mod lifecycle;
pub mod models;
pub mod policy;
pub mod registration;
pub mod renewal;
pub mod sensors;
pub mod tokens;
pub mod webhooks;

use std::sync::Arc;

pub use error::DomainError;

use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{FeedEntryRow, Store};

/// What the domain's operations use besides their arguments: the store, and the parts that
/// spread the news of a committed change.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub feed: &'a Arc<Feed>,
    pub metrics: &'a Metrics,
    pub registry: &'a Registry,
}

impl Ctx<'_> {
    /// After a committed status change: tell the feed's followers, count it, refresh the CRL.
    pub fn committed(&self, entry: &FeedEntryRow) {
        self.feed.notify(entry.seq);
        self.metrics.status_changed(entry.action);
        self.feed.refresh_crl_soon();
    }

    /// After a committed settings change (`updated` entry): tell the feed's followers.
    pub fn updated(&self, entry: &FeedEntryRow) {
        self.feed.notify(entry.seq);
    }
}
