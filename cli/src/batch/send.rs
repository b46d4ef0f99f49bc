//! The second step of a chunk: one batch request, with what the server's answer calls for.

use std::sync::Arc;
use std::time::Duration;

use devid_core::api::{BatchRequest, BatchResponse, DeviceKind, RegisterRequest};
use reqwest::Method;

use super::prepare::Item;
use super::{output, Shared};
use crate::error::{problem_line, CliError, Result};

/// Sends items as one batch; a failing item (named by the problem's `index`) is recorded and the
/// rest sent again without it; a body too large is split; transport errors and 5xx are retried.
/// The answer to a batch that succeeds is written by [`output::store`].
pub async fn send_items(s: &Arc<Shared>, mut items: Vec<Item>) -> Result<()> {
    let mut attempt = 0u32;
    while !items.is_empty() {
        let sent = s
            .api
            .request(Method::POST, "/v1/devices/batch")
            .json(&batch_request(&items, s.sensors))
            .send()
            .await;
        let retry_reason = match sent {
            Ok(resp) if resp.status().is_success() => {
                let body: BatchResponse = s.api.json(resp).await?;
                let s2 = s.clone();
                return tokio::task::spawn_blocking(move || output::store(&s2, items, body))
                    .await
                    .map_err(|e| CliError::failed(format!("writing results stopped: {e}")))?;
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let err = s.api.error_from_response(resp).await;
                let index = err.problem.as_ref().and_then(|p| p.index);
                match (status, index) {
                    (400..=499, Some(i)) if i < items.len() => {
                        let bad = items.remove(i);
                        let why = err
                            .problem
                            .as_deref()
                            .map(problem_line)
                            .unwrap_or(err.message);
                        s.fail(vec![bad.row.failure(why)])?;
                        continue;
                    }
                    (413, _) if items.len() > 1 => {
                        let second = items.split_off(items.len() / 2);
                        Box::pin(send_items(s, items)).await?;
                        return Box::pin(send_items(s, second)).await;
                    }
                    (500..=599, _) | (429, _) => err.message,
                    _ => return Err(name_line(err, &items)),
                }
            }
            Err(e) => s.api.transport_error(&e).message,
        };
        attempt += 1;
        if attempt > 8 {
            return Err(CliError::failed(format!(
                "{retry_reason} (gave up after {attempt} attempts)"
            )));
        }
        let wait = Duration::from_millis(250 * (1 << attempt.min(6)));
        s.progress.note(format!(
            "{retry_reason}; retrying {} devices in {:.1}s",
            items.len(),
            wait.as_secs_f64()
        ));
        tokio::time::sleep(wait).await;
    }
    Ok(())
}

fn batch_request(items: &[Item], sensors: bool) -> BatchRequest {
    BatchRequest {
        items: items
            .iter()
            .map(|i| RegisterRequest {
                hardware_serial: i.row.serial.clone(),
                model: i.row.model.clone(),
                client_id: i.row.client_id.clone(),
                metadata: i.row.metadata.clone(),
                csr: i.csr.clone(),
                generate_key: false,
                kind: if sensors {
                    DeviceKind::Sensor
                } else {
                    DeviceKind::Device
                },
            })
            .collect(),
    }
}

/// A fatal batch error whose text names an item (`item 3: ...`) but carries no `index`: say
/// which CSV line that item came from.
fn name_line(mut err: CliError, items: &[Item]) -> CliError {
    let n = err
        .message
        .split_once("item ")
        .and_then(|(_, rest)| rest.split_once(':'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    if let Some(item) = n.and_then(|n| items.get(n)) {
        err.message = format!(
            "{} (CSV line {}, hardware_serial {:?})",
            err.message, item.row.line, item.row.serial
        );
    }
    err
}
