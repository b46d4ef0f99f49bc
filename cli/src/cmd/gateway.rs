//! `devid gateway attach|detach|sensors`: which sensors a gateway relays.
//!
//! Attach and detach name only the sensors they add or take away
//! (`POST /v1/devices/{gateway}/sensors/attach|detach`): the service changes the set it has in
//! one transaction, so two operators changing one gateway at once both get their change.

use std::process::ExitCode;

use devid_core::api::{GatewaySensors, SensorAttachment};
use devid_core::ClientId;

use crate::cli::{GatewayCommand, OutputFormat};
use crate::client::{seg, Api};
use crate::error::Result;
use crate::table::{self, Table};

pub async fn run(api: &Api, out: OutputFormat, c: GatewayCommand) -> Result<ExitCode> {
    let (gateway, verb, sensors) = match c {
        GatewayCommand::Sensors { gateway } => {
            let set = sensors(api, &gateway).await?;
            return print(out, &set);
        }
        GatewayCommand::Attach { gateway, sensors } => (gateway, "attach", sensors),
        GatewayCommand::Detach { gateway, sensors } => (gateway, "detach", sensors),
    };
    let body = SensorAttachment {
        sensors: sensors.into_iter().map(ClientId::into_string).collect(),
    };
    let now: GatewaySensors = api
        .post(&format!("{}/{verb}", path(&gateway)), &body)
        .await?;
    print(out, &now)
}

fn path(gateway: &ClientId) -> String {
    format!("/v1/devices/{}/sensors", seg(gateway.as_str()))
}

async fn sensors(api: &Api, gateway: &ClientId) -> Result<GatewaySensors> {
    api.get(&path(gateway)).await
}

fn print(out: OutputFormat, set: &GatewaySensors) -> Result<ExitCode> {
    match out {
        OutputFormat::Json => super::print_json(set),
        OutputFormat::Table => {
            let mut t = Table::new(&["sensor", "status", "last_seen"]);
            for s in &set.sensors {
                t.row(vec![
                    s.client_id.clone(),
                    s.status.as_str().to_string(),
                    table::opt(&s.last_seen),
                ]);
            }
            let mut text = format!("gateway {}\n", set.gateway);
            text.push_str(&t.render());
            super::print_text(&text)
        }
    }
}
