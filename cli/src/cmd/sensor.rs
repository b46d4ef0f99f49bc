//! `devid sensor rekey`: a sensor's new key, written to a file only its owner may read.

use std::process::ExitCode;

use devid_core::api::SensorRekeyed;

use crate::cli::{OutputFormat, SensorCommand};
use crate::client::{seg, Api};
use crate::error::{io_err, CliError, Result};

pub async fn run(api: &Api, out: OutputFormat, c: SensorCommand) -> Result<ExitCode> {
    let SensorCommand::Rekey { sensor, out: dir } = c;
    super::create_dir(&dir)?;
    let path = format!("/v1/devices/{}/rekey", seg(sensor.as_str()));
    let answer: SensorRekeyed = api.post(&path, &serde_json::json!({})).await?;
    if answer.client_id != sensor.as_str() {
        return Err(CliError::failed(format!(
            "the server answered about {} instead of {sensor}",
            answer.client_id
        )));
    }
    // The key exists nowhere else: on disk (replacing the old key file at once) and synced
    // before anything says it was written.
    let file = dir.join(crate::batch::sensor_key_file(&answer.client_id));
    super::write_private(&file, format!("{}\n", answer.sensor_key).as_bytes())?;
    std::fs::File::open(&file)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(format!("cannot sync {}", file.display()), e))?;
    let shown = serde_json::json!({
        "client_id": answer.client_id,
        "key_file": file.display().to_string(),
    });
    match out {
        OutputFormat::Json => super::print_json(&shown),
        OutputFormat::Table => super::print_text(&format!(
            "new key of {} written to {}\n",
            answer.client_id,
            file.display()
        )),
    }
}
