//! `devid webhook create|list|delete|deliveries|redeliver`.

use std::process::ExitCode;

use devid_core::api::{
    CreateWebhookRequest, CreatedWebhook, Webhook, WebhookDeliveries, WebhookDelivery, WebhookList,
};
use devid_core::ModelName;

use crate::cli::{OutputFormat, WebhookCommand};
use crate::client::{seg, Api};
use crate::error::Result;
use crate::table::{self, Table};

fn kinds(w: &Webhook) -> String {
    w.kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn fields(w: &Webhook) -> Vec<(&'static str, String)> {
    vec![
        ("id", w.id.clone()),
        ("url", w.url.clone()),
        ("kinds", kinds(w)),
        (
            "models",
            w.models.as_ref().map(|m| m.join(",")).unwrap_or_default(),
        ),
        ("created_at", w.created_at.clone()),
    ]
}

fn delivery_row(d: &WebhookDelivery) -> Vec<String> {
    vec![
        d.id.to_string(),
        d.event_id.to_string(),
        d.kind.as_str().into(),
        d.state.as_str().into(),
        d.attempts.to_string(),
        table::opt(&d.last_attempt_at),
        d.last_status.map(|s| s.to_string()).unwrap_or_default(),
        table::opt(&d.last_error),
        table::opt(&d.next_attempt_at),
    ]
}

const DELIVERY_COLUMNS: [&str; 9] = [
    "id",
    "event_id",
    "kind",
    "state",
    "attempts",
    "last_attempt_at",
    "last_status",
    "last_error",
    "next_attempt_at",
];

pub async fn run(api: &Api, out: OutputFormat, c: WebhookCommand) -> Result<ExitCode> {
    match c {
        WebhookCommand::Create { url, kinds, models } => {
            // Kinds and model names were checked by core's rules when the command line was read.
            let req = CreateWebhookRequest {
                url,
                kinds,
                models: models.map(|v| v.into_iter().map(ModelName::into_string).collect()),
            };
            let created: CreatedWebhook = api.post("/v1/webhooks", &req).await?;
            match out {
                OutputFormat::Json => super::print_json(&created),
                OutputFormat::Table => {
                    let mut f = fields(&created.webhook);
                    f.push(("secret", created.secret.clone()));
                    eprintln!("The secret is shown once: give it to the receiver now.");
                    super::print_text(&table::fields(&f))
                }
            }
        }
        WebhookCommand::List => {
            let list: WebhookList = api.get("/v1/webhooks").await?;
            match out {
                OutputFormat::Json => super::print_json(&list),
                OutputFormat::Table => {
                    let mut t = Table::new(&["id", "url", "kinds", "models", "created_at"]);
                    for w in &list.items {
                        t.row(fields(w).into_iter().map(|(_, v)| v).collect());
                    }
                    super::print_text(&t.render())
                }
            }
        }
        WebhookCommand::Delete { id } => {
            let w: Webhook = api.delete(&format!("/v1/webhooks/{}", seg(&id))).await?;
            match out {
                OutputFormat::Json => super::print_json(&w),
                OutputFormat::Table => super::print_text(&table::fields(&fields(&w))),
            }
        }
        WebhookCommand::Deliveries { id } => {
            let list: WebhookDeliveries = api
                .get(&format!("/v1/webhooks/{}/deliveries", seg(&id)))
                .await?;
            match out {
                OutputFormat::Json => super::print_json(&list),
                OutputFormat::Table => {
                    let mut t = Table::new(&DELIVERY_COLUMNS);
                    for d in &list.items {
                        t.row(delivery_row(d));
                    }
                    super::print_text(&t.render())
                }
            }
        }
        WebhookCommand::Redeliver { id, delivery } => {
            let d: WebhookDelivery = api
                .post(
                    &format!("/v1/webhooks/{}/deliveries/{delivery}/redeliver", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            match out {
                OutputFormat::Json => super::print_json(&d),
                OutputFormat::Table => {
                    let mut t = Table::new(&DELIVERY_COLUMNS);
                    t.row(delivery_row(&d));
                    super::print_text(&t.render())
                }
            }
        }
    }
}
