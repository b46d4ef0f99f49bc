//! `devid fleet`: the fleet's health (summary, findings) and per-model check thresholds.

use clap::Subcommand;
use devid_core::{HumanDuration, ModelName};

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Devices by status, connected now, never seen, open findings, brokers
    #[command(after_help = "Examples:\n  devid fleet summary\n  devid fleet summary -o json")]
    Summary,
    /// Findings of the fleet checks, newest first
    #[command(
        after_help = "Examples:\n  devid fleet findings\n  devid fleet findings --check silent --model thermo-v2\n  devid fleet findings --severity critical --state all -o json\n\nChecks: cert_expiring, ca_expiring, never_seen, silent, duplicate_client_id,\nshared_certificate, auth_failures, revoked_connected, stale_broker."
    )]
    Findings {
        #[arg(long)]
        check: Option<String>,
        /// info, warning or critical
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        model: Option<ModelName>,
        /// open (default), closed or all
        #[arg(long)]
        state: Option<String>,
        /// At most this many (default 100, at most 1000)
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show a model's check thresholds, or change the ones given (the others keep theirs)
    #[command(
        after_help = "Examples:\n  devid fleet checks thermo-v2\n  devid fleet checks thermo-v2 --silent-after 2h --cert-expiring 60d"
    )]
    Checks {
        model: ModelName,
        /// cert_expiring: notAfter within this (default 30d)
        #[arg(long)]
        cert_expiring: Option<HumanDuration>,
        /// never_seen: registered this long without a connect (default 30d)
        #[arg(long)]
        never_seen: Option<HumanDuration>,
        /// silent: nothing seen for this long (default 24h)
        #[arg(long)]
        silent_after: Option<HumanDuration>,
        /// duplicate_client_id: takeovers within an hour (default 3)
        #[arg(long)]
        takeovers_per_hour: Option<u32>,
        /// shared_certificate: source networks within an hour (default 3)
        #[arg(long)]
        networks_per_hour: Option<u32>,
        /// auth_failures: failures within 10 minutes (default 10)
        #[arg(long)]
        auth_failures: Option<u32>,
    },
}
