//! The command line: clap types only. They are turned into settings in `settings.rs` and run in
//! `cmd/`; nothing outside this binary sees them.

use std::path::PathBuf;

mod fleet;
mod sensors;
mod webhook;
pub use fleet::FleetCommand;
pub use sensors::{GatewayCommand, SensorCommand};
pub use webhook::WebhookCommand;

use clap::{Args, Parser, Subcommand, ValueEnum};
use devid_core::{
    Cidr, ConnectWith, DnsName, HardwareSerial, HumanDuration, LdevidValidity, MessageAuth,
    ModelName, RenewalGrace, TopicFilter,
};

const MAIN_HELP: &str = "\
Examples:
  devid ca show
  devid --token-file devid-data/admin.token device list --status active
  devid --profile factory-line-3 device register-batch --csv devices.csv --generate-keys --out flash/
  devid -o json device show THERMO7KQ2M4XH9C3VBN8Da

Server and token (flag > environment > profile):
  --server / DEVID_SERVER (default http://127.0.0.1:8080)
  --token / DEVID_TOKEN, --token-file / DEVID_TOKEN_FILE; with neither and the default local
  server, ./devid-data/admin.token is used when it exists.
  --ca-file / DEVID_CA_FILE: PEM CA certificate(s) to trust for an https:// server instead
  of the system's roots.
  --profile / DEVID_PROFILE selects [profiles.NAME] in $XDG_CONFIG_HOME/devid/config.toml
  (default ~/.config/devid/config.toml; DEVID_CONFIG names another file), e.g.
    default_profile = \"factory-line-3\"
    [profiles.factory-line-3]
    server = \"https://devid.example.com\"
    token_file = \"/etc/devid/line3.token\"
    output = \"table\"

Output: -o table (for people) or -o json (for scripts; the documented objects of
core/src/api/, one JSON document per command, one JSON line per entry for `revocations watch`).

Exit codes: 0 success, 1 operation failed, 2 usage, 3 authentication or permission,
4 not found, 5 conflict, 141 stdout closed by its reader (as `| head` does).";

#[derive(Debug, Parser)]
#[command(
    name = "devid",
    version,
    about = "devid: device identities for IoT fleets (the manufacturing line's and the operator's tool)",
    after_help = MAIN_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes, listed under their own heading in every help page.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// devid-server base URL [env: DEVID_SERVER] [default: http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// API token [env: DEVID_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the API token [env: DEVID_TOKEN_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Profile from the config file [env: DEVID_PROFILE]
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// PEM file of the CA(s) to trust for an https:// server, instead of the system's roots
    /// [env: DEVID_CA_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Output format [env: DEVID_OUTPUT] [default: table]
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The certificate authority's chain
    #[command(subcommand)]
    Ca(CaCommand),
    /// Register, list, show, revoke, suspend and resume devices
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Single certificates
    #[command(subcommand)]
    Cert(CertCommand),
    /// The device feed: revocations and settings changes
    #[command(subcommand)]
    Revocations(RevocationsCommand),
    /// The certificate revocation list
    #[command(subcommand)]
    Crl(CrlCommand),
    /// API tokens (admin)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Webhooks: events POSTed to a URL, signed (admin)
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// The audit log
    #[command(
        after_help = "Examples:\n  devid audit --since 24h\n  devid audit --actor line-3 -o json"
    )]
    Audit(AuditArgs),
    /// Broker certificates
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// Per-model settings: ClientID prefix, topic policy, message authentication
    #[command(subcommand)]
    Model(ModelCommand),
    /// The sensors a gateway relays
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// The fleet's health: summary, findings of the fleet checks, check thresholds
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Sensors' keys
    #[command(subcommand)]
    Sensor(SensorCommand),
    /// Shell completions
    #[command(
        after_help = "Examples:\n  devid completions bash > /etc/bash_completion.d/devid\n  devid completions zsh > ~/.zfunc/_devid\n  devid completions fish > ~/.config/fish/completions/devid.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Subject, validity and fingerprints of each CA certificate (issuing CA first, root last)
    #[command(after_help = "Examples:\n  devid ca show\n  devid ca show -o json")]
    Show,
    /// Write the CA chain (PEM, issuing CA first, root last)
    #[command(
        after_help = "Examples:\n  devid ca export --out chain.pem\n  devid ca export --out - | openssl x509 -noout -subject"
    )]
    Export {
        /// Where to write it; `-` for standard output
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register one device (or sensor) and write its certificate (or key)
    #[command(
        after_help = "Examples:\n  devid device register --serial SN0001 --model thermo-v2 --generate-key --out flash/\n  devid device register --serial SN0002 --csr sn0002.csr --out flash/\n  devid device register --serial TS0001 --model tempsense --sensor --out flash/\n\nWrites <ClientID>.crt, <ClientID>.chain.pem (the certificate then the issuing CA: the file TLS\nclients send), chain.pem and with --generate-key <ClientID>.key (mode 0600) to --out; prints the\nClientID. A sensor (--sensor) gets <ClientID>.sensor.key instead (mode 0600): its key K as\nbase64url, which the server returns once (a repeated request answers without it). A device\nfound suspended or revoked (a repeated request) gets no files: exit code 1."
    )]
    Register(RegisterArgs),
    /// Register devices from a CSV file (the manufacturing line; resumable)
    #[command(after_help = BATCH_HELP)]
    RegisterBatch(BatchArgs),
    /// List devices
    #[command(
        after_help = "Examples:\n  devid device list --status active --model thermo-v2\n  devid device list --since 7d --limit 1000 -o json"
    )]
    List(ListArgs),
    /// A device's status, certificates and last contact
    #[command(after_help = "Examples:\n  devid device show THERMO7KQ2M4XH9C3VBN8Da")]
    Show {
        /// ClientID
        id: String,
    },
    /// Revoke a device, or every device a filter selects, and their certificates (final)
    #[command(
        after_help = "Examples:\n  devid device revoke THERMO7KQ2M4XH9C3VBN8Da --reason keyCompromise --yes\n  devid device revoke --model thermo --where lot=L7 --reason keyCompromise --dry-run\n  devid device revoke --model thermo --where lot=L7 --reason keyCompromise\n  devid device revoke --ids-file recall.txt --reason keyCompromise --yes\n\nReasons: unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation,\nprivilegeWithdrawn. With a filter, the command asks \"revoke N devices? [y/N]\" on a terminal and\nneeds --yes otherwise; --dry-run only counts and shows the first 20 ClientIDs."
    )]
    Revoke {
        /// ClientID (or give a filter instead)
        id: Option<String>,
        #[arg(long)]
        reason: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Put a device, or every device a filter selects, on hold (certificates on the CRL as
    /// certificateHold)
    #[command(
        after_help = "Examples:\n  devid device suspend THERMO7KQ2M4XH9C3VBN8Da --comment \"returned for repair\"\n  devid device suspend --model thermo --where lot=L7 --created-after 2026-11-01T00:00:00Z --yes"
    )]
    Suspend {
        /// ClientID (or give a filter instead)
        id: Option<String>,
        /// Kept in the audit log (one device only)
        #[arg(long)]
        comment: Option<String>,
        /// Do not ask for confirmation (a filter)
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Lift the hold of a device, or of every device a filter selects
    #[command(
        after_help = "Examples:\n  devid device resume THERMO7KQ2M4XH9C3VBN8Da\n  devid device resume --model thermo --where lot=L7 --yes"
    )]
    Resume {
        /// ClientID (or give a filter instead)
        id: Option<String>,
        /// Do not ask for confirmation (a filter)
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// What devid knows of a device's health: last seen, connections, failures, findings
    #[command(after_help = "Examples:\n  devid device health THERMO7KQ2M4XH9C3VBN8Da -o json")]
    Health {
        /// ClientID
        id: String,
    },
    /// A device's events (connects, failures, status changes, findings), newest first
    #[command(
        after_help = "Examples:\n  devid device timeline THERMO7KQ2M4XH9C3VBN8Da --limit 20"
    )]
    Timeline {
        /// ClientID
        id: String,
        /// At most this many (default 100, at most 1000)
        #[arg(long)]
        limit: Option<u32>,
    },
    /// What brokers see: status, revoked serials, topic policy, allowed networks
    #[command(after_help = "Examples:\n  devid device status THERMO7KQ2M4XH9C3VBN8Da")]
    Status {
        /// ClientID
        id: String,
    },
    /// Set a device's topic policy or message authentication (overrides its model's)
    #[command(
        after_help = "Examples:\n  devid device policy THERMO7KQ2M4XH9C3VBN8Da --publish 'devices/%c/#' --subscribe 'devices/%c/#,broadcast/#'\n  devid device policy THERMO7KQ2M4XH9C3VBN8Da --message-auth required\n\n%c stands for the device's ClientID."
    )]
    Policy {
        /// ClientID
        id: String,
        /// Topic filters it may publish to (comma-separated)
        #[arg(long, value_delimiter = ',')]
        publish: Option<Vec<TopicFilter>>,
        /// Topic filters it may subscribe to (comma-separated)
        #[arg(long, value_delimiter = ',')]
        subscribe: Option<Vec<TopicFilter>>,
        /// off or required
        #[arg(long)]
        message_auth: Option<MessageAuth>,
    },
    /// Set the networks a device may connect from
    #[command(
        after_help = "Examples:\n  devid device allowlist THERMO7KQ2M4XH9C3VBN8Da 10.20.0.0/16 2001:db8::/32\n  devid device allowlist THERMO7KQ2M4XH9C3VBN8Da --clear"
    )]
    Allowlist {
        /// ClientID
        id: String,
        /// CIDRs or single addresses
        #[arg(required_unless_present = "clear")]
        cidrs: Vec<Cidr>,
        /// Allow any address
        #[arg(long, conflicts_with = "cidrs")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Make a broker key here and get its certificate from devid
    #[command(
        after_help = "Examples:\n  devid broker enroll --name mqtt.example.com --out /etc/mosquitto/devid/\n\nWrites <name>.key (mode 0600, made here, never sent), <name>.crt and chain.pem."
    )]
    Enroll {
        /// The broker's DNS name (CN and SAN)
        #[arg(long)]
        name: DnsName,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List models with settings
    #[command(after_help = "Examples:\n  devid model list")]
    List,
    /// One model's settings
    #[command(after_help = "Examples:\n  devid model show thermo-v2")]
    Show { model: ModelName },
    /// Change a model's settings (unnamed settings keep their values)
    #[command(
        after_help = "Examples:\n  devid model set thermo-v2 --prefix THERMO\n  devid model set thermo-v2 --publish 'devices/%c/#' --subscribe 'devices/%c/#,broadcast/#' --message-auth required\n  devid model set thermo-v2 --ldevid-validity 30d --renewal-grace 7d --connect-with ldevid"
    )]
    Set {
        model: ModelName,
        /// ClientID prefix for new devices: 1 to 6 of [0-9A-Za-z]
        #[arg(long)]
        prefix: Option<String>,
        /// Topic filters devices may publish to (comma-separated, %c = ClientID)
        #[arg(long, value_delimiter = ',')]
        publish: Option<Vec<TopicFilter>>,
        /// Topic filters devices may subscribe to (comma-separated, %c = ClientID)
        #[arg(long, value_delimiter = ',')]
        subscribe: Option<Vec<TopicFilter>>,
        /// off or required
        #[arg(long)]
        message_auth: Option<MessageAuth>,
        /// Lifetime of the model's LDevIDs (operational certificates), at most 90d
        #[arg(long)]
        ldevid_validity: Option<LdevidValidity>,
        /// How long after expiry an LDevID may still renew (0 = never)
        #[arg(long)]
        renewal_grace: Option<RenewalGrace>,
        /// Certificates brokers admit: any (IDevID or LDevID) or ldevid (LDevID only)
        #[arg(long)]
        connect_with: Option<ConnectWith>,
    },
}

const BATCH_HELP: &str = "\
Examples:
  devid device register-batch --csv line3.csv --generate-keys --out flash/
  devid device register-batch --csv line3.csv --csr-dir csrs/ --out flash/ --chunk 500
  devid device register-batch --csv sensors.csv --sensors --out flash/

CSV: a header `hardware_serial,model[,client_id][,metadata columns…]`; extra columns go into the
device's metadata as strings. With --csr-dir the CSR of serial S is read from DIR/S.csr (or
DIR/S.pem). With --generate-keys each key pair and CSR are made here; keys never leave the
machine.

The output directory then holds <ClientID>.crt, <ClientID>.chain.pem (the certificate then the
issuing CA: the file TLS clients send), <ClientID>.key (mode 0600, with --generate-keys),
chain.pem, manifest.csv (hardware_serial,model,client_id,serial,fingerprint_sha256,not_after,
chain_file: one line per registered device) and .devid-batch/ (the journal that makes a re-run
resume: keys are recorded there before their CSR is sent; removed once every row is done).
Re-running the same command after an interruption (Ctrl-C, a killed process, a server restart)
registers every serial exactly once and reuses what was issued. Rows that fail (bad CSV rows are
never sent; a device the server answers as suspended or revoked) are listed in failures.csv
(line,hardware_serial,error) and make the exit code 1; the other rows are registered. A second
run on the same --out while one is working is refused with exit code 5.

With --sensors every row is a sensor: no certificate, and each sensor's key K (made by the server,
returned once) is written to <ClientID>.sensor.key (mode 0600, synced before its manifest line,
whose serial, fingerprint_sha256, not_after and chain_file are empty). A sensor whose answer was
lost (registered, but no key file written) cannot get its key again: a re-run lists it in
failures.csv.";

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Hardware serial number: 1-64 of A-Z a-z 0-9, space and ' ( ) + , - . / : = (no space at
    /// either end)
    #[arg(long)]
    pub serial: HardwareSerial,
    /// Model: 1-64 of A-Z a-z 0-9 - _ . (not dots alone)
    #[arg(long)]
    pub model: Option<ModelName>,
    /// A ClientID burned into firmware, at most 23 of 0-9 A-Z a-z (default: devid makes one)
    #[arg(long)]
    pub client_id: Option<devid_core::ClientId>,
    /// PEM CSR made on the device, with an ECDSA P-256 key (the only kind accepted)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["generate_key", "sensor"],
        required_unless_present_any = ["generate_key", "sensor"]
    )]
    pub csr: Option<PathBuf>,
    /// Make the key pair here and write <ClientID>.key (mode 0600)
    #[arg(long, conflicts_with = "sensor")]
    pub generate_key: bool,
    /// Register a sensor (no certificate): the server makes its key, returned once and written
    /// to <ClientID>.sensor.key (mode 0600)
    #[arg(long)]
    pub sensor: bool,
    /// Metadata entries KEY=VALUE (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Output directory
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// CSV file: hardware_serial,model[,client_id][,metadata…]
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Directory of per-serial CSRs (S.csr or S.pem)
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["generate_keys", "sensors"],
        required_unless_present_any = ["generate_keys", "sensors"]
    )]
    pub csr_dir: Option<PathBuf>,
    /// Make each device's key pair and CSR here
    #[arg(long, conflicts_with = "sensors")]
    pub generate_keys: bool,
    /// Register sensors (no certificates): each sensor's key, made by the server and returned
    /// once, goes to <ClientID>.sensor.key (mode 0600)
    #[arg(long)]
    pub sensors: bool,
    /// Output directory
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Devices per request (at most 10000)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub chunk: u32,
    /// Requests in flight at once
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub in_flight: u32,
    /// Threads making keys (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Which devices a revoke, suspend or resume applies to, instead of one ClientID: those meeting
/// every criterion given.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Devices of this model
    #[arg(long)]
    pub model: Option<ModelName>,
    /// KEY=VALUE: the device's metadata has KEY with this string value (repeat: all must match)
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Registered after this RFC 3339 time
    #[arg(long)]
    pub created_after: Option<String>,
    /// Registered before this RFC 3339 time
    #[arg(long)]
    pub created_before: Option<String>,
    /// A file of ClientIDs, one a line (at most 100,000)
    #[arg(long, value_name = "FILE")]
    pub ids_file: Option<PathBuf>,
    /// Count and show the first ClientIDs; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// active, suspended or revoked
    #[arg(long)]
    pub status: Option<String>,
    /// device or sensor
    #[arg(long)]
    pub kind: Option<devid_core::api::DeviceKind>,
    #[arg(long)]
    pub model: Option<String>,
    /// The hardware serial on the box's label (finds at most one device)
    #[arg(long)]
    pub serial: Option<String>,
    /// Created after: RFC 3339 time or an age like 30m, 24h, 7d
    #[arg(long)]
    pub since: Option<String>,
    /// Most devices to show
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Revoke one certificate
    #[command(
        after_help = "Examples:\n  devid cert revoke 5f0c3a9e1b2d4c6e8f0a1b2c3d4e5f60 --reason superseded"
    )]
    Revoke {
        /// Serial number, hex
        serial: String,
        #[arg(long)]
        reason: String,
    },
    /// Show one certificate
    #[command(after_help = "Examples:\n  devid cert show 5f0c3a9e1b2d4c6e8f0a1b2c3d4e5f60")]
    Show {
        /// Serial number, hex
        serial: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RevocationsCommand {
    /// Feed entries after a sequence number
    #[command(
        after_help = "Examples:\n  devid revocations list\n  devid revocations list --since 120 -o json"
    )]
    List {
        /// Show entries after this sequence number
        #[arg(long, default_value_t = 0)]
        since: i64,
    },
    /// Follow the live feed, printing each entry as it comes (reconnects on its own)
    #[command(
        after_help = "Examples:\n  devid revocations watch\n  devid revocations watch --since 120 -o json | jq .client_id"
    )]
    Watch {
        /// Start after this sequence number
        #[arg(long)]
        since: Option<i64>,
        /// Exit after this many entries
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CrlCommand {
    /// Download the CRL (DER)
    #[command(
        after_help = "Examples:\n  devid crl fetch --out crl.der --verify\n  openssl crl -inform DER -in crl.der -noout -text"
    )]
    Fetch {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Check the CRL's signature against the CA chain before writing it
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (the secret is printed once)
    #[command(
        after_help = "Examples:\n  devid token create --role factory --name line-3 --models thermo-v2 --expires 30d --out line3.token\n  devid token create --role auditor --name audit-2026\n  devid token create --role app --name dashboard\n  TOKEN=$(devid -o json token create --role broker --name mqtt1 | jq -r .token)"
    )]
    Create {
        /// admin, factory, broker, auditor or app (reads events and devices)
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        /// Factory tokens: the models it may register (comma-separated)
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<ModelName>>,
        /// Lifetime: 3600s, 90m, 12h, 30d, 1y (a bare number is seconds)
        #[arg(long)]
        expires: Option<HumanDuration>,
        /// Write the token to FILE (mode 0600, replaced atomically) instead of printing it
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// List tokens
    #[command(after_help = "Examples:\n  devid token list")]
    List,
    /// Revoke a token
    #[command(after_help = "Examples:\n  devid token revoke 3f9a2c")]
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// RFC 3339 time or an age like 30m, 24h, 7d
    #[arg(long)]
    pub since: Option<String>,
    /// Token id or name
    #[arg(long)]
    pub actor: Option<String>,
    /// Most entries to show
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}
