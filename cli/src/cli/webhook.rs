//! `devid webhook`: events POSTed to a URL, signed.

use clap::Subcommand;
use devid_core::api::AppEventKind;
use devid_core::ModelName;

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Create a webhook (its signing secret is printed once)
    #[command(
        after_help = "Examples:\n  devid webhook create --url https://ops.example.com/devid --kinds revoked,finding_opened\n  devid webhook create --url https://ops.example.com/devid --kinds registered --models thermo-v2\n\nReceivers check `devid-signature` as docs/webhooks.md says."
    )]
    Create {
        /// Where events are POSTed (http or https)
        #[arg(long)]
        url: String,
        /// Event kinds, comma-separated (registered, revoked, suspended, resumed, connected,
        /// disconnected, auth_failed, finding_opened, finding_closed, certificate_issued)
        #[arg(long, value_delimiter = ',', required = true)]
        kinds: Vec<AppEventKind>,
        /// Only events about devices of these models (comma-separated)
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<ModelName>>,
    },
    /// List webhooks
    List,
    /// Delete a webhook (nothing more is sent to it)
    Delete { id: String },
    /// A webhook's deliveries, newest first
    Deliveries { id: String },
    /// Deliver an event again
    Redeliver { id: String, delivery: i64 },
}
