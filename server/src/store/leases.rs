//! Leases: with several processes on one database, the one that holds a job's lease does the
//! job (webhook deliveries, the fleet sweep); the others wait until it lapses. A holder renews
//! its lease well within the lease's time to live, and gives it up when it stops.

use super::sql::Stmt;
use super::{Store, StoreError};

/// A job that one process at a time does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Turning app events into webhook deliveries and making them.
    Webhooks,
    /// The fleet's time-driven checks and the app events' retention.
    FleetSweep,
}

impl Lease {
    /// A name for this process as a lease holder: random, so two processes never share one.
    pub fn new_holder() -> String {
        use ring::rand::SecureRandom as _;
        let mut holder = [0u8; 16];
        let _ = ring::rand::SystemRandom::new().fill(&mut holder);
        hex::encode(holder)
    }

    fn name(self) -> &'static str {
        match self {
            Lease::Webhooks => "webhooks",
            Lease::FleetSweep => "fleet_sweep",
        }
    }
}

impl Store {
    /// Takes (or keeps) `lease` for `holder` until `at + ttl`; false while another holder has
    /// an unexpired one.
    pub async fn take_lease(
        &self,
        lease: Lease,
        holder: &str,
        at: i64,
        ttl: i64,
    ) -> Result<bool, StoreError> {
        let n = Stmt::new(
            "UPDATE leases SET holder = $1, expires = $2 \
             WHERE name = $3 AND (holder = $1 OR expires < $4)",
        )
        .bind(holder)
        .bind(at.saturating_add(ttl))
        .bind(lease.name())
        .bind(at)
        .execute(&mut self.pools.write().await?)
        .await?;
        Ok(n == 1)
    }

    /// Gives `lease` up if `holder` has it, so that another process takes it at once instead of
    /// after it lapses.
    pub async fn release_lease(&self, lease: Lease, holder: &str) -> Result<(), StoreError> {
        Stmt::new("UPDATE leases SET expires = 0 WHERE name = $1 AND holder = $2")
            .bind(lease.name())
            .bind(holder)
            .execute(&mut self.pools.write().await?)
            .await?;
        Ok(())
    }
}
