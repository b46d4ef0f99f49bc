//! The fleet's health: `devid fleet summary|findings|checks`, `devid device health|timeline`.

use std::process::ExitCode;

use devid_core::api::{
    AppEventPage, CheckThresholds, ConnectionSeen, DeviceHealth, Finding, FindingPage, FleetSummary,
};

use crate::cli::{FleetCommand, OutputFormat};
use crate::client::{seg, Api};
use crate::error::Result;
use crate::table::{self, Table};

pub async fn run(api: &Api, out: OutputFormat, c: FleetCommand) -> Result<ExitCode> {
    match c {
        FleetCommand::Summary => {
            let s: FleetSummary = api.get("/v1/fleet/summary").await?;
            match out {
                OutputFormat::Json => super::print_json(&s),
                OutputFormat::Table => super::print_text(&summary_text(&s)),
            }
        }
        FleetCommand::Findings {
            check,
            severity,
            model,
            state,
            limit,
        } => {
            let mut q: Vec<(&str, String)> = Vec::new();
            let mut put = |k, v: Option<String>| {
                if let Some(v) = v {
                    q.push((k, v));
                }
            };
            put("check", check);
            put("severity", severity);
            put("model", model.map(|m| m.to_string()));
            put("state", state);
            put("limit", limit.map(|l| l.to_string()));
            let page: FindingPage = api.get_query("/v1/fleet/findings", &q).await?;
            match out {
                OutputFormat::Json => super::print_json(&page),
                OutputFormat::Table => super::print_text(&findings_table(&page.items)),
            }
        }
        FleetCommand::Checks {
            model,
            cert_expiring,
            never_seen,
            silent_after,
            takeovers_per_hour,
            networks_per_hour,
            auth_failures,
        } => {
            let path = format!("/v1/fleet/checks/{}", seg(model.as_str()));
            let mut t: CheckThresholds = api.get(&path).await?;
            let change = cert_expiring.is_some()
                || never_seen.is_some()
                || silent_after.is_some()
                || takeovers_per_hour.is_some()
                || networks_per_hour.is_some()
                || auth_failures.is_some();
            if change {
                t.cert_expiring = cert_expiring.or(t.cert_expiring);
                t.never_seen = never_seen.or(t.never_seen);
                t.silent_after = silent_after.or(t.silent_after);
                t.takeovers_per_hour = takeovers_per_hour.or(t.takeovers_per_hour);
                t.networks_per_hour = networks_per_hour.or(t.networks_per_hour);
                t.auth_failures = auth_failures.or(t.auth_failures);
                t = api.put(&path, &t).await?;
            }
            match out {
                OutputFormat::Json => super::print_json(&t),
                OutputFormat::Table => super::print_text(&thresholds_text(&t)),
            }
        }
    }
}

fn summary_text(s: &FleetSummary) -> String {
    let mut text = table::fields(&[
        ("total", s.total.to_string()),
        ("active", s.active.to_string()),
        ("suspended", s.suspended.to_string()),
        ("revoked", s.revoked.to_string()),
        ("connected_now", s.connected_now.to_string()),
        ("never_seen", s.never_seen.to_string()),
        (
            "brokers",
            format!("{} live of {}", s.brokers_live, s.brokers_known),
        ),
        ("at", s.at.clone()),
    ]);
    if !s.findings.is_empty() {
        let mut t = Table::new(&["check", "severity", "open"]);
        for f in &s.findings {
            t.row(vec![
                f.check.as_str().to_string(),
                f.severity.as_str().to_string(),
                f.open.to_string(),
            ]);
        }
        text.push('\n');
        text.push_str(&t.render());
    }
    text
}

fn findings_table(items: &[Finding]) -> String {
    let mut t = Table::new(&[
        "id", "check", "severity", "subject", "opened", "closed", "detail",
    ]);
    for f in items {
        t.row(vec![
            f.id.to_string(),
            f.check.as_str().to_string(),
            f.severity.as_str().to_string(),
            f.subject.clone(),
            f.opened_at.clone(),
            table::opt(&f.closed_at),
            f.detail.clone(),
        ]);
    }
    t.render()
}

fn thresholds_text(t: &CheckThresholds) -> String {
    let d = |v: Option<devid_core::HumanDuration>, default: &str| {
        v.map_or_else(|| format!("{default} (default)"), |v| v.to_string())
    };
    let n = |v: Option<u32>, default: u32| {
        v.map_or_else(|| format!("{default} (default)"), |v| v.to_string())
    };
    table::fields(&[
        ("cert_expiring", d(t.cert_expiring, "30d")),
        ("never_seen", d(t.never_seen, "30d")),
        ("silent_after", d(t.silent_after, "24h")),
        ("takeovers_per_hour", n(t.takeovers_per_hour, 3)),
        ("networks_per_hour", n(t.networks_per_hour, 3)),
        ("auth_failures", n(t.auth_failures, 10)),
    ])
}

fn seen(c: &Option<ConnectionSeen>) -> String {
    match c {
        None => "-".into(),
        Some(c) => {
            let mut s = c.at.clone();
            for part in [c.address.clone(), c.broker.clone()].into_iter().flatten() {
                s.push(' ');
                s.push_str(&part);
            }
            if let Some(a) = c.auth {
                s.push_str(&format!(" ({})", a.as_str()));
            }
            s
        }
    }
}

pub async fn health(api: &Api, out: OutputFormat, id: &str) -> Result<ExitCode> {
    let h: DeviceHealth = api.get(&format!("/v1/devices/{}/health", seg(id))).await?;
    if out == OutputFormat::Json {
        return super::print_json(&h);
    }
    let failures = h
        .auth_failures
        .iter()
        .map(|r| format!("{} {}", r.reason, r.count))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = table::fields(&[
        ("client_id", h.client_id.clone()),
        ("status", h.status.as_str().to_string()),
        ("model", table::opt(&h.model)),
        ("first_seen", table::opt(&h.first_seen)),
        ("last_seen", table::opt(&h.last_seen)),
        (
            "connected_on",
            if h.connected_on.is_empty() {
                "-".into()
            } else {
                h.connected_on.join(",")
            },
        ),
        ("last_connect", seen(&h.last_connect)),
        ("last_disconnect", seen(&h.last_disconnect)),
        (
            "auth_failures",
            if failures.is_empty() {
                "-".into()
            } else {
                failures
            },
        ),
        ("published", h.published.to_string()),
        ("refused", h.refused.to_string()),
        ("sw_version", table::opt(&h.sw_version)),
        ("cert_not_after", table::opt(&h.cert_not_after)),
    ]);
    if !h.findings.is_empty() {
        text.push('\n');
        text.push_str(&findings_table(&h.findings));
    }
    super::print_text(&text)
}

pub async fn timeline(
    api: &Api,
    out: OutputFormat,
    id: &str,
    limit: Option<u32>,
) -> Result<ExitCode> {
    let q: Vec<(&str, String)> = limit
        .map(|l| ("limit", l.to_string()))
        .into_iter()
        .collect();
    let page: AppEventPage = api
        .get_query(&format!("/v1/devices/{}/timeline", seg(id)), &q)
        .await?;
    if out == OutputFormat::Json {
        return super::print_json(&page);
    }
    let mut t = Table::new(&["id", "at", "kind", "data"]);
    for e in &page.items {
        t.row(vec![
            e.id.to_string(),
            e.at.clone(),
            e.kind.as_str().to_string(),
            e.data.to_string(),
        ]);
    }
    super::print_text(&t.render())
}
