//! `gkgw`: parses the command line, loads the config, sets up tracing and hands over to the
//! library. Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use gkgw::config::{self, Config};
use gkgw::sources::modbus::{self, link::Link, profile::Profile};

#[derive(Parser)]
#[command(name = "gkgw", version, about = "Green Kitchen Gateway: the edge gateway of a community biogas plant", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole gateway with simulated meters; nothing needs to be installed.
    Demo(DemoArgs),
    /// Run the gateway in production.
    Run {
        /// The gateway's TOML configuration.
        #[arg(long, short, default_value = "/etc/gkgw/gateway.toml")]
        config: PathBuf,
    },
    /// Validate a configuration and print the resolved pipeline, without starting anything.
    Check {
        #[arg(long, short, default_value = "/etc/gkgw/gateway.toml")]
        config: PathBuf,
    },
    /// Print the commented default configuration.
    GenerateConfig,
    /// Field meters: accounts on the embedded broker.
    #[command(subcommand)]
    Meter(MeterCommand),
    /// Integration accounts (read-only MQTT: meters/# and alarms/#), e.g. Home Assistant.
    #[command(subcommand)]
    Integration(IntegrationCommand),
    /// Publish meter messages at a given rate and count acks (benchmarks).
    Load(LoadArgs),
    /// Modbus commissioning: read registers, scan a bus, poll a profile.
    #[command(subcommand)]
    Modbus(ModbusCommand),
    /// The plant logbook (waste fed, water, digestate, cylinders, lab results, notes), through
    /// the running gateway's HTTP API at the config's http.listen.
    Logbook(LogbookArgs),
    /// The audit log: logins, user changes, logbook writes, alarm operations and platform
    /// commands with their outcomes, read from the store (the gateway may be running or not).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Dashboard users (viewer, manager, admin) and their API tokens, on the store of the
    /// config's state directory (the gateway may be running or not).
    #[command(subcommand)]
    User(UserCommand),
    /// Back up the store (a consistent copy, safe while the gateway runs) and the config with
    /// every file it names (meters, secrets, certificates, the systemd drop-in) into a new
    /// directory, e.g. on a USB stick; checked before it says done.
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        /// The new (or empty) directory to write.
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup made by `gkgw backup` back, on a stopped gateway (a new SD card); the whole
    /// backup is checked first, and what it replaces is kept in the state directory's
    /// before-restore-TIME/.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The state directory to restore into (default: the one the backup was taken from).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Restore the store only, leave the config files as they are.
        #[arg(long)]
        store_only: bool,
    },
    /// Platform commands: development and test tools.
    #[command(name = "command", subcommand)]
    Commands(CommandCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the newest rows of the audit log: who did what (logins, alarms, logbook, users,
    /// commands submitted) and each platform command's outcome or refusal.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// How many rows.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// Which store a command works on.
#[derive(Args)]
struct StoreArgs {
    /// The gateway's TOML configuration (for store.state_dir).
    #[arg(long, short, default_value = "/etc/gkgw/gateway.toml")]
    config: PathBuf,
    /// The state directory instead of the config's store.state_dir (e.g. the one `gkgw demo
    /// --state-dir` was given).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

fn parse_role(s: &str) -> Result<gkgw::users::Role, String> {
    gkgw::users::parse_role(s).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password comes from --password-file, a prompt, or a line of stdin.
    Add {
        name: String,
        /// viewer (reads everything), manager (also logbook and alarms) or admin (also users,
        /// audit log, commands).
        #[arg(long, value_parser = parse_role)]
        role: gkgw::users::Role,
        /// Read the password from the first line of this file (never give it as an argument).
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the users: role, when created, last login, open sessions, tokens.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a user's password (ends its sessions, lifts a login lock).
    Passwd {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user with its sessions and tokens.
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make a bearer token for a user's scripts and CLIs (`gkgw logbook --token-file`), or
    /// revoke all of its tokens.
    Token {
        name: String,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// What the token is for, shown in the audit log.
        #[arg(long)]
        label: Option<String>,
        /// Revoke every token of the user instead.
        #[arg(long, conflicts_with_all = ["out", "label"])]
        revoke: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum CommandCommand {
    /// DEVELOPMENT/TEST TOOL: sign a command as the platform would (EdDSA compact JWS) and
    /// print it; the platform signs its own in production (docs/uplink.md, "Commands").
    Sign {
        /// The Ed25519 private key: PKCS#8 PEM (`openssl genpkey -algorithm ed25519`) or a JWK with d.
        #[arg(long)]
        key: PathBuf,
        /// The meter's id.
        #[arg(long)]
        meter: String,
        /// top_up, valve, relay, tariff or time_sync.
        #[arg(long)]
        kind: String,
        /// The arguments as a JSON object, e.g. '{"amount":2,"unit":"kg"}'.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The command id (default: cmd-<unix time in ns>).
        #[arg(long)]
        id: Option<String>,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// A kid for the JWS header.
        #[arg(long)]
        kid: Option<String>,
    },
    /// DEVELOPMENT/TEST TOOL: write a new Ed25519 key pair (PKCS#8 PEM and public PEM), for
    /// `gkgw demo --platform-key` and `gkgw command sign`.
    Keygen {
        /// The private key file (written 0600).
        #[arg(long)]
        private: PathBuf,
        /// The public key file.
        #[arg(long)]
        public: PathBuf,
    },
}

#[derive(Args)]
struct LogbookArgs {
    /// The gateway's TOML configuration (for http.listen).
    #[arg(long, short, default_value = "/etc/gkgw/gateway.toml", global = true)]
    config: PathBuf,
    /// The gateway's HTTP address instead of the config's http.listen (e.g. `gkgw demo`'s
    /// 127.0.0.1:8080, which has no config file).
    #[arg(long, global = true)]
    gateway: Option<std::net::SocketAddr>,
    /// A bearer token (`gkgw user token NAME --out FILE`): entries are recorded as its user.
    #[arg(long, global = true, env = "GKGW_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: LogbookCommand,
}

/// An entry's values as flags; which ones a kind takes: waste_fed --waste --kg,
/// water_added --litres, digestate_out --kg or --litres, cylinders_filled and
/// cylinders_dispatched --count, lab_ph --ph, lab_fos_tac --ratio, note --text.
#[derive(Args)]
struct LogbookValues {
    /// household, market, animal or agricultural.
    #[arg(long)]
    waste: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    kg: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    litres: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    count: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    ph: Option<f64>,
    /// FOS/TAC.
    #[arg(long, allow_negative_numbers = true)]
    ratio: Option<f64>,
    /// The text of a note.
    #[arg(long)]
    text: Option<String>,
    /// The time the entry refers to, RFC 3339 (2026-12-01T08:00:00+03:00); default now.
    #[arg(long)]
    at: Option<String>,
    #[arg(long)]
    note: Option<String>,
}

impl LogbookValues {
    fn values(&self) -> gkgw::web::logbook_cli::Values {
        gkgw::web::logbook_cli::Values {
            waste: self.waste.clone(),
            kg: self.kg,
            litres: self.litres,
            count: self.count,
            ph: self.ph,
            ratio: self.ratio,
            text: self.text.clone(),
        }
    }
}

#[derive(Subcommand)]
enum LogbookCommand {
    /// Record an entry: `gkgw logbook add --kind waste_fed --waste household --kg 120`.
    Add {
        /// waste_fed, water_added, digestate_out, cylinders_filled, cylinders_dispatched,
        /// lab_ph, lab_fos_tac or note.
        #[arg(long)]
        kind: String,
        #[command(flatten)]
        values: LogbookValues,
    },
    /// List entries (current revisions; --history for every revision, withdrawn ones too).
    List {
        /// From this time (RFC 3339), inclusive; default: the first entry.
        #[arg(long)]
        from: Option<String>,
        /// Up to this time (RFC 3339), exclusive; default: the last entry.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        history: bool,
    },
    /// Correct an entry (within the edit window): the values given replace the current ones.
    Revise {
        entry: i64,
        #[command(flatten)]
        values: LogbookValues,
    },
    /// Withdraw an entry (within the edit window); it stays in the history.
    Withdraw {
        entry: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args)]
struct BusArgs {
    /// Modbus TCP device, host:port.
    #[arg(long, conflicts_with_all = ["port", "rtu_over_tcp"])]
    tcp: Option<SocketAddr>,
    /// RTU framing over a TCP serial server, host:port.
    #[arg(long, conflicts_with = "port")]
    rtu_over_tcp: Option<SocketAddr>,
    /// Serial port for Modbus RTU, e.g. /dev/ttyUSB0.
    #[arg(long)]
    port: Option<String>,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// none, even or odd.
    #[arg(long, default_value = "none")]
    parity: config::Parity,
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

/// A bus, a profile and a unit id: one device to talk to.
#[derive(Args)]
struct DeviceArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Profile file (sensors/x.toml) or built-in profile name.
    #[arg(long)]
    profile: String,
    /// Unit id (default: the profile's).
    #[arg(long)]
    unit: Option<u8>,
}

impl BusArgs {
    /// The bus as the config would have it: the one conversion from the command line.
    fn bus(&self) -> anyhow::Result<config::ModbusBus> {
        use config::ModbusTransport;
        let transport = match (&self.tcp, &self.rtu_over_tcp, &self.port) {
            (Some(address), _, _) => ModbusTransport::Tcp { address: *address },
            (_, Some(address), _) => ModbusTransport::RtuOverTcp { address: *address },
            (_, _, Some(port)) => ModbusTransport::Rtu(config::SerialLine {
                port: port.clone(),
                baud: self.baud,
                parity: self.parity,
                data_bits: self.data_bits,
                stop_bits: self.stop_bits,
            }),
            _ => anyhow::bail!("say where the bus is: --tcp HOST:PORT, --rtu-over-tcp HOST:PORT or --port /dev/ttyUSB0"),
        };
        Ok(config::ModbusBus {
            timeout_ms: self.timeout_ms,
            ..config::ModbusBus::new("cli", transport)
        })
    }

    fn link(&self) -> anyhow::Result<Link> {
        Ok(Link::for_bus(&self.bus()?))
    }
}

impl DeviceArgs {
    /// The profile (a file, or built in) and the unit id to use.
    fn profile(&self) -> anyhow::Result<(Profile, u8)> {
        let p = modbus::load_profile(std::path::Path::new("sensors"), &self.profile)?;
        let unit = self.unit.unwrap_or(p.device.unit_id);
        Ok((p, unit))
    }
}

#[derive(Subcommand)]
enum ModbusCommand {
    /// Read one block and show it as every type and word order side by side.
    Read {
        #[command(flatten)]
        bus: BusArgs,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// Holding registers from this address (0-based protocol address).
        #[arg(long, group = "table")]
        holding: Option<u16>,
        #[arg(long, group = "table")]
        input: Option<u16>,
        #[arg(long, group = "table")]
        coils: Option<u16>,
        #[arg(long, group = "table")]
        discrete: Option<u16>,
        #[arg(long, default_value_t = 4)]
        count: u16,
    },
    /// List the unit ids that answer on a bus.
    Scan {
        #[command(flatten)]
        bus: BusArgs,
        #[arg(long, default_value_t = 1)]
        from: u8,
        #[arg(long, default_value_t = 247)]
        to: u8,
        /// Holding register to probe.
        #[arg(long, default_value_t = 0)]
        register: u16,
    },
    /// Poll every field of a profile once and print the decoded values.
    Poll {
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Write one field of a device, typed and range-checked by its profile; logged with who and why.
    Write {
        #[command(flatten)]
        dev: DeviceArgs,
        /// Field name in the profile.
        #[arg(long)]
        field: String,
        /// Engineering value (coils: 0 or 1).
        #[arg(long, allow_negative_numbers = true)]
        value: f64,
        /// Why, for the log line every write leaves.
        #[arg(long)]
        reason: String,
    },
    /// Load tool: poll a profile's fields back to back and report requests/s (benchmarks).
    Bench {
        #[command(flatten)]
        dev: DeviceArgs,
        /// Full poll cycles to run.
        #[arg(long, default_value_t = 10_000)]
        cycles: u64,
        /// Parallel connections (TCP), each with its own link.
        #[arg(long, default_value_t = 1)]
        connections: u32,
    },
    /// Serve the demo's simulated plant over Modbus TCP alone (no gateway), e.g. to try the
    /// commissioning tools or as the tokio-modbus server in benchmarks.
    ServeDemo {
        #[arg(long, default_value = "127.0.0.1:5020")]
        listen: SocketAddr,
        /// No simulated faults.
        #[arg(long)]
        no_faults: bool,
    },
    /// Show a profile's read plan and its RTU bus time per cycle against the minimum (offline).
    Plan {
        /// Profile files (sensors/x.toml) or built-in profile names.
        #[arg(long, required = true, num_args = 1..)]
        profile: Vec<String>,
        /// Baud rates to compute the bus time for.
        #[arg(long, num_args = 1.., default_values_t = [9600, 19200])]
        baud: Vec<u32>,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// MQTT listener of the embedded broker (loopback only in the demo).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// Status page, /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Keep the store here instead of a new temporary directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Number of simulated meters (half gas, half electricity).
    #[arg(long, default_value_t = 20)]
    meters: usize,
    /// Seconds between two reports of one simulated meter.
    #[arg(long, default_value_t = 5.0)]
    meter_interval: f64,
    /// Modbus TCP server of the simulated plant (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    plant: SocketAddr,
    /// Do not start the simulated plant.
    #[arg(long)]
    no_plant: bool,
    /// No simulated plant faults (gas analyser silences, compressor lockouts).
    #[arg(long)]
    no_faults: bool,
    /// Start a plant fault at once (20 s after the start), to watch its alarms raise, be
    /// acknowledged and clear within a few minutes: leak, souring or overpressure.
    #[arg(long, value_parser = ["leak", "souring", "overpressure"])]
    scenario: Option<String>,
    /// Pre-fill this many days of simulated history (in the windows) before starting (at most 60).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=60))]
    history_days: u32,
    /// The store's commit interval in milliseconds (`store.commit_interval_ms`, 1 to 60000):
    /// a longer one writes less to the SD card and acks the meters later (/metrics:
    /// gkgw_process_written_bytes_total).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    commit_interval_ms: u64,
    /// Also write to this InfluxDB (base URL, e.g. http://127.0.0.1:8086).
    #[arg(long)]
    influx: Option<String>,
    /// InfluxDB 1.x database.
    #[arg(long, conflicts_with_all = ["influx_org", "influx_bucket"])]
    influx_db: Option<String>,
    /// InfluxDB 2.x/3.x organisation.
    #[arg(long)]
    influx_org: Option<String>,
    /// InfluxDB 2.x/3.x bucket.
    #[arg(long)]
    influx_bucket: Option<String>,
    /// InfluxDB 2.x/3.x token, read from this file.
    #[arg(long)]
    influx_token_file: Option<PathBuf>,
    /// Send the demo's batches to this platform endpoint (https://…, or http:// on loopback).
    #[arg(long)]
    uplink: Option<String>,
    /// The uplink's bearer token, read from this file.
    #[arg(long, requires = "uplink")]
    uplink_token_file: Option<PathBuf>,
    /// A CA certificate (PEM) the platform's server is verified with.
    #[arg(long, requires = "uplink")]
    uplink_ca_file: Option<PathBuf>,
    /// The platform's Ed25519 public key (PEM or JWK file): commands signed with its private
    /// key are relayed to the simulated meters.
    #[arg(long)]
    platform_key: Option<PathBuf>,
}

/// Where the accounts file is: `--credentials`, or `broker.credentials_file` of `--config`.
#[derive(Args)]
struct AccountsFile {
    /// Accounts file (default: broker.credentials_file of --config).
    #[arg(long)]
    credentials: Option<PathBuf>,
    #[arg(long, short, default_value = "/etc/gkgw/gateway.toml")]
    config: PathBuf,
    /// Replace existing credentials.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum MeterCommand {
    /// Create a meter's account and print its MQTT user name and password once. A running
    /// gateway picks it up within 2 s (or at once with `systemctl reload gkgw`).
    Add {
        /// Meter ids, e.g. GM-0001 (each is also the meter's MQTT user name and client id).
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
        #[command(flatten)]
        file: AccountsFile,
    },
    /// List the meters and integration accounts (ids only; passwords are never stored).
    List {
        #[command(flatten)]
        file: AccountsFile,
    },
    /// Remove meters' accounts: a running gateway disconnects them within 2 s (or at once
    /// with `systemctl reload gkgw`). Their stored readings stay.
    Remove {
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
        #[command(flatten)]
        file: AccountsFile,
    },
}

#[derive(Subcommand)]
enum IntegrationCommand {
    /// Create a read-only account (subscribe to meters/# and alarms/#; publish nothing).
    Add {
        name: String,
        #[command(flatten)]
        file: AccountsFile,
    },
    /// Remove integration accounts (as `gkgw meter remove`).
    Remove {
        #[arg(required = true, num_args = 1..)]
        names: Vec<String>,
        #[command(flatten)]
        file: AccountsFile,
    },
}

#[derive(Args)]
struct LoadArgs {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// Concurrent MQTT connections (one simulated meter each).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Messages in total.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Messages per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// MQTT QoS of the publishes (0 or 1).
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Wait for and count the gateway's meters/{id}/ack messages.
    #[arg(long)]
    acks: bool,
    /// Create accounts for the load's meters in this file first (a gateway's
    /// broker.credentials_file; it picks them up within 2 s).
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Count deliveries to a subscriber of meters/+/state (for a plain broker).
    #[arg(long)]
    count_delivered: bool,
    /// Seconds to wait for outstanding acks after the last publish.
    #[arg(long, default_value_t = 30)]
    drain: u64,
    /// Seconds to keep the connections open afterwards (idle-memory measurements).
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Seconds between printing "all N connected" and the first publish.
    #[arg(long, default_value_t = 0)]
    pause: u64,
    #[arg(long, default_value = "LOAD")]
    id_prefix: String,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttc=warn"));
    // No timestamps under systemd: journald adds its own.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colours only on a terminal: a log file or pipe gets plain text a technician can grep.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| gkgw::os::LogStderr);
    if journald {
        fmt.without_time().with_ansi(false).init();
    } else {
        fmt.init();
    }
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the SIGTERM handler");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The accounts file an account command writes, or the exit code of a config error.
/// `gkgw meter remove` and `gkgw integration remove`.
fn remove_accounts(kind: gkgw::credentials::Kind, ids: &[String], file: &AccountsFile) -> ExitCode {
    let path = match accounts_file(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let what = match kind {
        gkgw::credentials::Kind::Meter => "meter",
        gkgw::credentials::Kind::Integration => "integration account",
    };
    match gkgw::credentials::remove_accounts(&path, kind, ids) {
        Ok(()) => {
            for id in ids {
                println!("{what} {id} removed from {}", path.display());
            }
            if kind == gkgw::credentials::Kind::Meter {
                println!(
                    "(a running gateway disconnects them within 2 s; their stored readings stay)"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn accounts_file(a: &AccountsFile) -> Result<PathBuf, ExitCode> {
    match &a.credentials {
        Some(f) => Ok(f.clone()),
        None if !a.config.exists() => {
            eprintln!(
                "error: no config at {} to take broker.credentials_file from: pass --credentials FILE or --config FILE",
                a.config.display()
            );
            Err(ExitCode::from(2))
        }
        None => load_config(&a.config).map(|c| c.broker.credentials_file),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    gkgw::os::release_large_allocations();
    if !matches!(cli.command, Command::Run { .. } | Command::Demo(_)) {
        // `gkgw check | head -1` ends quietly, like any Unix tool, instead of panicking.
        gkgw::os::default_sigpipe();
    }
    init_tracing();
    let result = match cli.command {
        Command::GenerateConfig => {
            print!("{}", config::DEFAULT_TOML);
            Ok(())
        }
        Command::Check { config } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match gkgw::topology::resolve(cfg) {
                Ok(r) => {
                    println!("{}: ok", config.display());
                    print!("{}", gkgw::topology::describe(&r));
                    Ok(())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Run { config } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match gkgw::topology::resolve(cfg) {
                Ok(r) => gkgw::topology::run(r, shutdown_on_signal()).await,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Demo(a) => demo(a).await,
        Command::Meter(MeterCommand::Add { ids, file }) => {
            let path = match accounts_file(&file) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let accounts: Vec<(String, String)> = ids
                .iter()
                .map(|id| (id.clone(), gkgw::credentials::new_password()))
                .collect();
            gkgw::credentials::add_accounts(
                &path,
                gkgw::credentials::Kind::Meter,
                &accounts,
                file.force,
            )
            .map(|()| {
                for (id, password) in &accounts {
                    println!("meter {id} added to {}", path.display());
                    println!("mqtt username: {id}");
                    println!("mqtt client id: {id}");
                    println!("mqtt password: {password}");
                }
                println!("(passwords are shown only now; a running gateway picks the meters up within 2 s)");
            })
            .map_err(Into::into)
        }
        Command::Meter(MeterCommand::List { file }) => {
            let path = match accounts_file(&file) {
                Ok(p) => p,
                Err(code) => return code,
            };
            gkgw::credentials::load_file(&path)
                .map(|c| {
                    println!(
                        "{}: {} meters, {} integration accounts",
                        path.display(),
                        c.meters.len(),
                        c.integrations.len()
                    );
                    for id in c.meters.keys() {
                        println!("meter        {id}");
                    }
                    for name in c.integrations.keys() {
                        println!("integration  {name}");
                    }
                })
                .map_err(Into::into)
        }
        Command::Meter(MeterCommand::Remove { ids, file }) => {
            return remove_accounts(gkgw::credentials::Kind::Meter, &ids, &file)
        }
        Command::Integration(IntegrationCommand::Remove { names, file }) => {
            return remove_accounts(gkgw::credentials::Kind::Integration, &names, &file)
        }
        Command::Integration(IntegrationCommand::Add { name, file }) => {
            let path = match accounts_file(&file) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let password = gkgw::credentials::new_password();
            gkgw::credentials::add_accounts(
                &path,
                gkgw::credentials::Kind::Integration,
                &[(name.clone(), password.clone())],
                file.force,
            )
            .map(|()| {
                println!(
                    "integration account {name} added to {} (read-only: meters/#, alarms/#)",
                    path.display()
                );
                println!("mqtt username: {name}");
                println!("mqtt password: {password}");
                println!("(the password is shown only now)");
            })
            .map_err(Into::into)
        }
        Command::Load(a) => load(a).await,
        Command::Modbus(c) => modbus(c).await,
        Command::Logbook(a) => return logbook(a).await,
        Command::Audit(AuditCommand::List { store, limit }) => {
            let (dir, config) = match state_dir(&store) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let enabled = config.map(|c| c.commands.platform_key_file.is_some());
            gkgw::web::audit_cli::list(&dir, limit.max(1), enabled)
                .map(|out| print!("{out}"))
                .map_err(Into::into)
        }
        Command::User(c) => return user(c),
        Command::Backup { store, to } => {
            let (dir, config) = match &store.state_dir {
                // A state directory given (`gkgw demo --state-dir`): the config only if there is one.
                Some(d) if !store.config.exists() => (d.clone(), None),
                Some(d) => match load_config(&store.config) {
                    Ok(c) => (d.clone(), Some(c)),
                    Err(code) => return code,
                },
                None => match load_config(&store.config) {
                    Ok(c) => (c.store.state_dir.clone(), Some(c)),
                    Err(code) => return code,
                },
            };
            gkgw::backup::backup(
                &dir,
                config.as_ref().map(|c| (store.config.as_path(), c)),
                &to,
            )
            .map(|report| print!("{report}"))
            .map_err(Into::into)
        }
        Command::Restore {
            from,
            state_dir,
            store_only,
        } => {
            let dir = match state_dir {
                Some(d) => Ok(d),
                None => gkgw::backup::recorded_state_dir(&from),
            };
            dir.and_then(|dir| gkgw::backup::restore(&from, &dir, store_only))
                .map(|report| print!("{report}"))
                .map_err(Into::into)
        }
        Command::Commands(CommandCommand::Sign {
            key,
            meter,
            kind,
            args,
            id,
            ttl,
            kid,
        }) => gkgw::commands::dev::sign_file(&gkgw::commands::dev::SignArgs {
            key,
            meter,
            kind,
            args,
            id,
            ttl,
            kid,
        })
        .map(|jws| println!("{jws}")),
        Command::Commands(CommandCommand::Keygen { private, public }) => {
            gkgw::commands::dev::keygen(&private, &public)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The state directory of `--state-dir`, else of the config (and the config, if read).
fn state_dir(a: &StoreArgs) -> Result<(PathBuf, Option<Config>), ExitCode> {
    match &a.state_dir {
        Some(d) => Ok((d.clone(), None)),
        None => load_config(&a.config).map(|c| (c.store.state_dir.clone(), Some(c))),
    }
}

fn user(c: UserCommand) -> ExitCode {
    use gkgw::web::users_cli as cli;
    fn source(f: &Option<PathBuf>) -> gkgw::web::users_cli::Source<'_> {
        match f {
            Some(f) => gkgw::web::users_cli::Source::File(f.as_path()),
            None => gkgw::web::users_cli::Source::Stdin,
        }
    }
    let store = match &c {
        UserCommand::Add { store, .. }
        | UserCommand::List { store }
        | UserCommand::Passwd { store, .. }
        | UserCommand::Remove { store, .. }
        | UserCommand::Token { store, .. } => store,
    };
    let dir = match state_dir(store) {
        Ok((d, _)) => d,
        Err(code) => return code,
    };
    let result = match &c {
        UserCommand::Add {
            name,
            role,
            password_file,
            ..
        } => gkgw::users::check_name(name)
            .map_err(cli::Error::from)
            .and_then(|()| {
                cli::read_password(
                    source(password_file),
                    &format!("password for {name}: "),
                    true,
                )
            })
            .and_then(|pw| cli::add(&dir, name, *role, &pw)),
        UserCommand::List { .. } => cli::list(&dir),
        UserCommand::Passwd {
            name,
            password_file,
            ..
        } => cli::read_password(
            source(password_file),
            &format!("new password for {name}: "),
            true,
        )
        .and_then(|pw| cli::passwd(&dir, name, &pw)),
        UserCommand::Remove { name, .. } => cli::remove(&dir, name),
        UserCommand::Token {
            name, revoke: true, ..
        } => cli::revoke(&dir, name),
        UserCommand::Token {
            name, out, label, ..
        } => cli::token(&dir, name, label.as_deref()).and_then(|t| match out {
            Some(f) => cli::write_token(f, &t)
                .map(|()| format!("a token for {name} is in {} (mode 0600)\n", f.display())),
            None => Ok(format!("{t}\n")),
        }),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn logbook(a: LogbookArgs) -> ExitCode {
    use gkgw::web::logbook_cli::{self as cli, Request};
    // Times in the site's zone (its config), else the shell's TZ.
    let (addr, zone) = match a.gateway {
        Some(addr) => {
            let zone = std::fs::read_to_string(&a.config).ok().and_then(|text| {
                Config::parse(&a.config.display().to_string(), &text)
                    .ok()
                    .map(|c| c.site.timezone.fixed_offset())
            });
            (addr, zone)
        }
        None => match load_config(&a.config) {
            Ok(c) => (
                cli::connect_addr(c.http.listen),
                Some(c.site.timezone.fixed_offset()),
            ),
            Err(code) => return code,
        },
    };
    let token = match &a.token_file {
        None => None,
        Some(f) => match cli::read_token(f) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: cannot read the token file {}: {e}", f.display());
                return ExitCode::from(2);
            }
        },
    };
    let req = match a.command {
        LogbookCommand::Add { kind, values } => Request::Add {
            kind,
            values: values.values(),
            at: values.at.clone(),
            note: values.note.clone(),
        },
        LogbookCommand::List { from, to, history } => Request::List { from, to, history },
        LogbookCommand::Revise { entry, values } => Request::Revise {
            entry,
            values: values.values(),
            at: values.at.clone(),
            note: values.note.clone(),
        },
        LogbookCommand::Withdraw { entry, reason } => Request::Withdraw { entry, reason },
    };
    match cli::run(addr, token.as_deref(), &req, zone).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            for l in e.lines() {
                eprintln!("error: {l}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let influx = match a.influx {
        None => None,
        Some(url) => {
            let mut i = Config::default().influx;
            i.enabled = true;
            i.url = url;
            if let Some(bucket) = a.influx_bucket {
                i.version = gkgw::config::InfluxVersion::V2;
                i.bucket = bucket;
                i.org = a.influx_org.unwrap_or_default();
                i.token_file = a.influx_token_file;
            } else {
                i.version = gkgw::config::InfluxVersion::V1;
                i.database = a.influx_db.unwrap_or_else(|| "gkgw".into());
            }
            Some(i)
        }
    };
    let opts = gkgw::sim::demo::Options {
        mqtt: a.mqtt,
        http: a.http,
        state_dir: a.state_dir,
        meters: a.meters,
        meter_interval: Duration::from_secs_f64(a.meter_interval.max(0.01)),
        history_days: a.history_days,
        commit_interval_ms: a.commit_interval_ms,
        influx,
        plant: (!a.no_plant).then_some(a.plant),
        plant_faults: !a.no_faults,
        platform_key: a.platform_key,
        scenario: a
            .scenario
            .as_deref()
            .and_then(gkgw::sim::plant::Scenario::parse),
        uplink: a.uplink.map(|url| gkgw::uplink::Config {
            enabled: true,
            url,
            token_file: a.uplink_token_file,
            ca_file: a.uplink_ca_file,
            gateway: "demo-gw".into(),
            ..gkgw::uplink::Config::default()
        }),
    };
    gkgw::sim::demo::run(opts, shutdown_on_signal()).await
}

async fn load(a: LoadArgs) -> anyhow::Result<()> {
    let qos = match a.qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        q => anyhow::bail!("--qos {q}: expected 0 or 1"),
    };
    let r = gkgw::sim::load::run(gkgw::sim::load::Options {
        broker: a.mqtt,
        connections: a.connections.max(1),
        messages: a.messages,
        rate: a.rate,
        qos,
        acks: a.acks,
        count_delivered: a.count_delivered,
        drain: Duration::from_secs(a.drain),
        hold: Duration::from_secs(a.hold),
        pause: Duration::from_secs(a.pause),
        id_prefix: a.id_prefix,
        credentials: a.credentials,
    })
    .await?;
    println!(
        "published {} in {:.2} s ({:.0} msg/s); acked {}; delivered {}; total {:.2} s ({:.0} msg/s end to end)",
        r.published,
        r.publish_secs,
        r.published as f64 / r.publish_secs,
        r.acked,
        r.delivered,
        r.total_secs,
        (if a.acks { r.acked } else if a.count_delivered { r.delivered } else { r.published }) as f64 / r.total_secs
    );
    Ok(())
}

async fn modbus(c: ModbusCommand) -> anyhow::Result<()> {
    use modbus::{commission, profile::RegisterKind};
    match c {
        ModbusCommand::Read {
            bus,
            unit,
            holding,
            input,
            coils,
            discrete,
            count,
        } => {
            let (kind, address) = match (holding, input, coils, discrete) {
                (Some(a), ..) => (RegisterKind::Holding, a),
                (_, Some(a), ..) => (RegisterKind::Input, a),
                (_, _, Some(a), _) => (RegisterKind::Coil, a),
                (.., Some(a)) => (RegisterKind::DiscreteInput, a),
                _ => (RegisterKind::Holding, 0),
            };
            let mut link = bus.link()?;
            print!(
                "{}",
                commission::read(&mut link, unit, kind, address, count).await?
            );
        }
        ModbusCommand::Scan {
            bus,
            from,
            to,
            register,
        } => {
            let mut link = bus.link()?;
            println!(
                "scanning {} units {from}..={to} (timeout {} ms each)",
                link.transport(),
                bus.timeout_ms
            );
            let found =
                commission::scan(&mut link, from..=to, RegisterKind::Holding, register).await?;
            if found.is_empty() {
                println!("no unit answered");
            }
            for (unit, what) in found {
                println!("unit {unit:>3}: {what}");
            }
        }
        ModbusCommand::Poll { dev } => {
            let (p, unit) = dev.profile()?;
            let mut link = dev.bus.link()?;
            let report = commission::poll(&mut link, unit, &p).await?;
            print!("{}", report.text);
            report.ensure_something_read()?;
        }
        ModbusCommand::Write {
            dev,
            field,
            value,
            reason,
        } => {
            let (p, unit) = dev.profile()?;
            let mut link = dev.bus.link()?;
            println!(
                "{}",
                commission::write(&mut link, unit, &p, &field, value, &reason).await?
            );
        }
        ModbusCommand::Bench {
            dev,
            cycles,
            connections,
        } => {
            let (p, unit) = dev.profile()?;
            let bus = dev.bus.bus()?;
            let summary =
                commission::bench_connections(&bus, unit, &p, cycles, connections).await?;
            println!("{summary}");
        }
        ModbusCommand::ServeDemo { listen, no_faults } => {
            let cancel = shutdown_on_signal();
            let plant = gkgw::sim::plant::start(listen, !no_faults, None, cancel.clone()).await?;
            println!("demo plant on {} (units 1 digester, 2 energy meter, 3 compressor, 4 gas analyser); Ctrl-C stops", plant.addr);
            cancel.cancelled().await;
        }
        ModbusCommand::Plan { profile, baud } => {
            for name in profile {
                let p = modbus::load_profile(std::path::Path::new("sensors"), &name)?;
                print!("{}", commission::plan_report(&p, &baud));
            }
        }
    }
    Ok(())
}
