//! Planner statistics on PostgreSQL.
//!
//! devid writes in bulk: a batch registration adds 10,000 devices in one call, a recall
//! revokes 100,000. Under that load autovacuum's analyze falls behind: in a 1,000,000-device
//! benchmark `devices` was still planned as if `status = 'active'` matched 1,700 rows when it
//! matched 860,000 (no statistics yet, so PostgreSQL's default selectivity), and the fleet
//! sweep's `cert_expiring` query walked every active device for 2 to 11 s instead of reading a
//! range of the `certificates_expiry` index in 0.1 ms. The fleet sweep's lease holder therefore
//! asks, at each pass, which of the tables that grow with the fleet changed by more than a tenth
//! since their last analyze (or were never analyzed), and analyzes them: sampled, about 0.1-0.3 s
//! for a table of a million rows, taking no lock that blocks reads or writes.
//!
//! SQLite plans without gathered statistics unless it is asked to keep them: nothing to do.

use super::sql::Stmt;
use super::{Store, StoreError};

/// The tables that grow with the fleet and are read by plans that depend on their size.
const FLEET_TABLES: [&str; 8] = [
    "devices",
    "certificates",
    "device_keys",
    "device_health",
    "app_events",
    "findings",
    "audit",
    "feed",
];

/// Changes since the last analyze, below which a table is left alone whatever its size.
const MIN_CHANGES: i64 = 1_000;

impl Store {
    /// Analyzes each fleet table (PostgreSQL) that changed by more than [`MIN_CHANGES`] rows
    /// and more than a tenth of its rows since its last analyze. Returns the tables analyzed;
    /// none on SQLite.
    pub async fn refresh_statistics(&self) -> Result<Vec<String>, StoreError> {
        if !self.is_postgres() {
            return Ok(Vec::new());
        }
        let mut conn = self.pools.write().await?;
        let list = FLEET_TABLES
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let stale: Vec<(String,)> = Stmt::new(format!(
            "SELECT relname::text FROM pg_stat_user_tables \
             WHERE schemaname = current_schema() AND relname IN ({list}) \
             AND n_mod_since_analyze >= $1 AND n_mod_since_analyze > n_live_tup / 10 \
             ORDER BY relname"
        ))
        .bind(MIN_CHANGES)
        .fetch_all(&mut conn)
        .await?;
        let mut analyzed = Vec::with_capacity(stale.len());
        for (table,) in stale {
            // Only names of FLEET_TABLES reach the statement text.
            let Some(table) = FLEET_TABLES.iter().find(|t| **t == table) else {
                continue;
            };
            Stmt::new(format!("ANALYZE {table}"))
                .execute(&mut conn)
                .await?;
            analyzed.push((*table).to_string());
        }
        Ok(analyzed)
    }
}
