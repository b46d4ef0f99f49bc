//! `devid gateway` and `devid sensor`: which sensors a gateway relays, and sensors' keys.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Attach sensors to a gateway (a sensor attached elsewhere moves here)
    #[command(
        after_help = "Examples:\n  devid gateway attach GW4KQ2M4XH9C3VBN8Da TS7KQ2M4XH9C3VBN8Dab TS9KQ2M4XH9C3VBN8Dac\n\nPrints the gateway's sensors. Brokers learn of the change within a second (the feed)."
    )]
    Attach {
        /// The gateway's ClientID (a device)
        gateway: devid_core::ClientId,
        /// Sensors' ClientIDs
        #[arg(required = true)]
        sensors: Vec<devid_core::ClientId>,
    },
    /// Detach sensors from a gateway
    #[command(
        after_help = "Examples:\n  devid gateway detach GW4KQ2M4XH9C3VBN8Da TS7KQ2M4XH9C3VBN8Dab"
    )]
    Detach {
        /// The gateway's ClientID
        gateway: devid_core::ClientId,
        /// Sensors' ClientIDs
        #[arg(required = true)]
        sensors: Vec<devid_core::ClientId>,
    },
    /// The sensors a gateway relays, with their status and last accepted reading
    #[command(after_help = "Examples:\n  devid gateway sensors GW4KQ2M4XH9C3VBN8Da -o json")]
    Sensors {
        /// The gateway's ClientID
        gateway: devid_core::ClientId,
    },
}

#[derive(Debug, Subcommand)]
pub enum SensorCommand {
    /// Give a sensor a new key K; written to DIR/<ClientID>.sensor.key (mode 0600)
    #[command(
        after_help = "Examples:\n  devid sensor rekey TS7KQ2M4XH9C3VBN8Dab --out keys/\n\nThe key is shown this once: the file replaces the old key file. Brokers refuse readings made with the old key within a second (the feed); the sensor's seq goes on."
    )]
    Rekey {
        /// The sensor's ClientID
        sensor: devid_core::ClientId,
        /// Output directory
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}
