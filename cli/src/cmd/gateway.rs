//! `devid gateway attach|detach|sensors`: which sensors a gateway relays.
//!
//! The service takes a gateway's whole set (`PUT /v1/devices/{gateway}/sensors`); attach and
//! detach read the set, change it and write it back, so two of them on the same gateway at
//! the same moment may undo each other's change: run them one at a time per gateway.

use std::process::ExitCode;

use devid_core::api::{GatewaySensors, SensorAttachment};
use devid_core::ClientId;

use crate::cli::{GatewayCommand, OutputFormat};
use crate::client::{seg, Api};
use crate::error::Result;
use crate::table::{self, Table};

pub async fn run(api: &Api, out: OutputFormat, c: GatewayCommand) -> Result<ExitCode> {
    let (gateway, change) = match c {
        GatewayCommand::Sensors { gateway } => {
            let set = sensors(api, &gateway).await?;
            return print(out, &set);
        }
        GatewayCommand::Attach { gateway, sensors } => (gateway, Change::Attach(sensors)),
        GatewayCommand::Detach { gateway, sensors } => (gateway, Change::Detach(sensors)),
    };
    let mut set: Vec<String> = sensors(api, &gateway)
        .await?
        .sensors
        .into_iter()
        .map(|s| s.client_id)
        .collect();
    match change {
        Change::Attach(new) => {
            for s in new {
                let s = s.into_string();
                if !set.contains(&s) {
                    set.push(s);
                }
            }
        }
        Change::Detach(gone) => {
            let gone: Vec<String> = gone.into_iter().map(ClientId::into_string).collect();
            set.retain(|s| !gone.contains(s));
        }
    }
    let now: GatewaySensors = api
        .put(&path(&gateway), &SensorAttachment { sensors: set })
        .await?;
    print(out, &now)
}

enum Change {
    Attach(Vec<ClientId>),
    Detach(Vec<ClientId>),
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
