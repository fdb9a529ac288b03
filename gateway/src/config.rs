//! The gateway's configuration: one TOML file, every field documented and defaulted, validated
//! completely before anything starts. [`Config::load`] is the only way to get a `Config` from a
//! file, so holding one means the file parsed and every cross-field rule held.
//!
//! Errors name the file, the key path and what was expected, e.g.
//! `/etc/gkgw/gateway.toml: influx.batch_size: invalid type: string "big", expected u64 (line 12, column 14)`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The commented default configuration, printed by `gkgw generate-config`. A test checks that it
/// parses to exactly `Config::default()`.
pub const DEFAULT_TOML: &str = concat!(
    include_str!("default-config.toml"),
    include_str!("alarm/default-rules.toml")
);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {key}: {message}{location}")]
    Parse {
        file: String,
        key: String,
        message: String,
        location: String,
    },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The file this config was read from, named in the errors of later build steps
    /// (`topology::resolve`); the name given to `Config::validated` for a config built in code.
    #[serde(skip)]
    pub origin: String,
    pub site: Site,
    pub store: Store,
    pub broker: Broker,
    pub mqtt: Mqtt,
    pub influx: Influx,
    pub http: Http,
    pub modbus: Modbus,
    pub plant: Plant,
    pub history: History,
    pub logbook: Logbook,
    pub alarms: AlarmsConfig,
    pub uplink: crate::uplink::Config,
    pub gpio: Gpio,
    pub onewire: OneWire,
    pub commands: Commands,
}

/// `[commands]`: signed commands from the central platform to the meters (`commands` module).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Commands {
    /// The platform's Ed25519 public key: a PEM (`-----BEGIN PUBLIC KEY-----`) or a JWK
    /// (`{"kty":"OKP","crv":"Ed25519","x":…}`). Unset: commands are disabled and each one is
    /// refused as `no_platform_key`.
    pub platform_key_file: Option<PathBuf>,
    /// Seconds between two sends of a command its meter has not answered.
    pub retry_s: u64,
    /// How far in our future a command's `iat` may be (the platform's clock against ours).
    pub max_clock_skew_s: u64,
}

impl Default for Commands {
    fn default() -> Commands {
        Commands {
            platform_key_file: None,
            retry_s: 10,
            max_clock_skew_s: 300,
        }
    }
}

/// `[gpio]`: digital inputs (pulse counters, contacts) and outputs (buzzer, beacon, relay)
/// through one backend (`gpio` module).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gpio {
    /// Which GPIO driver: the Linux character device (any board), rppal (a Raspberry Pi), or
    /// a simulated chip (the demo and tests).
    pub backend: GpioBackend,
    /// The GPIO chip of lines that name none (cdev).
    pub chip: PathBuf,
    /// What to do when the configured backend cannot open a line: `none` refuses to start,
    /// `sim` simulates the lines instead (with a warning).
    pub fallback: GpioFallback,
    /// With the sim backend: a Unix socket taking text commands (`pulse LINE N [bounce K]`,
    /// `set LINE 0|1`, `get OUTPUT`, `outputs`), for black-box tests.
    pub sim_socket: Option<PathBuf>,
    #[serde(rename = "input")]
    pub inputs: Vec<GpioInput>,
    #[serde(rename = "output")]
    pub outputs: Vec<GpioOutput>,
}

impl Default for Gpio {
    fn default() -> Gpio {
        Gpio {
            backend: GpioBackend::Cdev,
            chip: "/dev/gpiochip0".into(),
            fallback: GpioFallback::None,
            sim_socket: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpioBackend {
    Cdev,
    Rppal,
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpioFallback {
    None,
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A counter's reed contact: each closing is a pulse of `pulse_m3` (gas.volume, gas.flow).
    Pulse,
    /// A contact whose state is a quantity (compressor running, pressure switch, door).
    Contact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Bias {
    #[default]
    None,
    PullUp,
    PullDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// The line is on while demanded.
    #[default]
    Steady,
    /// The line blinks (`on_ms` on, `off_ms` off) while demanded.
    Pulsed,
}

/// `[[gpio.input]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioInput {
    /// The `device` tag (instance) of its readings.
    pub name: String,
    /// The line's offset on its chip (the BCM number on a Pi).
    pub line: u32,
    /// The chip (cdev); default `gpio.chip`.
    #[serde(default)]
    pub chip: Option<PathBuf>,
    pub kind: InputKind,
    /// A change counts once the line has been stable this long (the kernel's debounce with
    /// cdev and rppal, the gateway's own with sim).
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// The line is active (closed contact, pulse) when low.
    #[serde(default)]
    pub active_low: bool,
    #[serde(default)]
    pub bias: Bias,
    /// Pulse: m³ per pulse; default `site.gas_meter_pulse_m3`.
    #[serde(default)]
    pub pulse_m3: Option<f64>,
    /// Contact: the state quantity it feeds (e.g. `compressor.status.running`).
    #[serde(default)]
    pub quantity: Option<String>,
    /// Report the state this often when it changed (a contact also at once on a change), and
    /// at least every 60 s anyway.
    #[serde(default = "default_gpio_report_ms")]
    pub report_ms: u64,
    /// Pulse: gas.flow is derived from the pulses of this window; 0 with fewer than two in it.
    #[serde(default = "default_flow_window_s")]
    pub flow_window_s: u64,
}

fn default_debounce_ms() -> u64 {
    10
}
fn default_gpio_report_ms() -> u64 {
    10_000
}
fn default_flow_window_s() -> u64 {
    300
}

/// `[[gpio.output]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioOutput {
    pub name: String,
    pub line: u32,
    #[serde(default)]
    pub chip: Option<PathBuf>,
    #[serde(default)]
    pub mode: OutputMode,
    #[serde(default = "default_blink_ms")]
    pub on_ms: u64,
    #[serde(default = "default_blink_ms")]
    pub off_ms: u64,
    /// The load is on when the line is low (many relay boards).
    #[serde(default)]
    pub active_low: bool,
}

fn default_blink_ms() -> u64 {
    500
}

/// `[onewire]`: DS18B20-family thermometers through the kernel's `w1` sysfs files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OneWire {
    /// The `w1` devices directory.
    pub dir: PathBuf,
    /// How often every sensor is read (each read takes the driver ~750 ms per sensor).
    pub interval_ms: u64,
    #[serde(rename = "sensor")]
    pub sensors: Vec<OneWireSensor>,
}

impl Default for OneWire {
    fn default() -> OneWire {
        OneWire {
            dir: "/sys/bus/w1/devices".into(),
            interval_ms: 60_000,
            sensors: Vec::new(),
        }
    }
}

/// `[[onewire.sensor]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneWireSensor {
    /// The sensor's directory name, `28-0316a2796eff`.
    pub id: String,
    /// A temperature quantity in °C (e.g. `digester.temperature`).
    pub quantity: String,
    /// The `device` tag of its readings (e.g. `digester-1`).
    pub instance: String,
}

/// `[alarms]`: see `alarm::rules`.
pub type AlarmsConfig = crate::alarm::Config;

/// The aggregator's windows (`aggregate`): how often it runs and how long windows are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    /// How often committed readings are folded into the windows (ms); windows lag by at most this.
    pub interval_ms: u64,
    /// The most readings one step folds before it commits (each commit rewrites the windows
    /// it changed: fewer, larger steps write less to the SD card).
    pub step_readings: usize,
    /// Days of 1-minute windows kept.
    pub minute_days: u64,
    /// Days of 1-hour windows kept.
    pub hour_days: u64,
}

impl Default for History {
    fn default() -> History {
        History {
            interval_ms: 60_000,
            step_readings: 100_000,
            minute_days: 30,
            hour_days: 5 * 365,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logbook {
    /// Hours after an entry was first recorded during which it can be corrected or withdrawn
    /// (each a new revision); after that it is refused.
    pub edit_window_hours: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plant {
    /// The site's own quantities, in addition to the built-in catalogue (docs/schema.md).
    pub quantity: Vec<crate::plant::Quantity>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Site {
    /// Site id: the `site` tag on every point and the gateway id upstream.
    pub id: String,
    /// The site's time zone: KPI days are its local days (`plant::zone`).
    pub timezone: crate::plant::zone::Zone,
    /// Metres above sea level: gives the atmospheric pressure of the normal gas volume.
    pub altitude_m: Option<f64>,
    /// Digester working volume, m³.
    pub digester_m3: Option<f64>,
    /// Gas meter volume per pulse, m³.
    pub gas_meter_pulse_m3: f64,
    /// Density of the fed waste, kg/m³ (kg fed → slurry m³ for the retention time).
    pub feed_kg_per_m3: f64,
    /// The instance (device) of `power.energy_import` that meters the compressor; unset: every
    /// instance of it, summed.
    pub compressor_meter: Option<String>,
    /// Volatile solids as a fraction of the fresh mass fed, per kind of waste.
    pub vs_fraction: VsFraction,
}

/// `[site.vs_fraction]`: see [`crate::plant::kpi::FeedFractions`] (unsourced working defaults).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VsFraction {
    pub household: f64,
    pub market: f64,
    pub animal: f64,
    pub agricultural: f64,
}

impl Default for VsFraction {
    fn default() -> VsFraction {
        let f = crate::plant::kpi::FeedFractions::default();
        VsFraction {
            household: f.household,
            market: f.market,
            animal: f.animal,
            agricultural: f.agricultural,
        }
    }
}

impl Site {
    /// What the KPI formulas need to know about the site.
    pub fn kpi_parameters(&self) -> crate::plant::kpi::SiteParameters {
        let v = self.vs_fraction;
        crate::plant::kpi::SiteParameters {
            altitude_m: self.altitude_m,
            digester_m3: self.digester_m3,
            pulse_m3: self.gas_meter_pulse_m3,
            feed_kg_per_m3: self.feed_kg_per_m3,
            vs: crate::plant::kpi::FeedFractions {
                household: v.household,
                market: v.market,
                animal: v.animal,
                agricultural: v.agricultural,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// Directory for the store database and counters (systemd's StateDirectory).
    pub state_dir: PathBuf,
    /// Longest a reading waits before its batch is committed (fsynced), in milliseconds
    /// (1 to 60 000). Each commit writes at least one 4 KiB page to the card whatever it holds,
    /// so a longer interval is the SD card's main saving (docs/PERFORMANCE.md) and costs a later
    /// PUBACK and meter ack, and more polled readings lost at a power cut.
    pub commit_interval_ms: u64,
    /// The least time between two commits when a publisher waiting for its PUBACKs asks for
    /// one early (0 to 1 000 ms): at most 1000 / this fsyncs a second, whatever the meters do.
    pub min_commit_gap_ms: u64,
    /// Most readings per transaction.
    pub max_batch: usize,
    /// Readings buffered between the sources and the store; a full buffer blocks the sources.
    pub channel_capacity: usize,
    /// Disk quota for live data in MiB; beyond it the oldest readings are evicted and counted.
    pub quota_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Broker {
    /// The MQTT 3.1.1 listener field meters connect to.
    pub listen: SocketAddr,
    /// Let clients without credentials in, read-only (like an integration account). Only
    /// `gkgw demo` turns this on, on loopback.
    pub allow_anonymous: bool,
    /// Broker accounts written by `gkgw meter add` / `gkgw integration add` (argon2id hashes).
    /// Reloaded on SIGHUP and when the file changes.
    pub credentials_file: PathBuf,
    /// Most connections at once (lowered at start-up to fit the open-files limit).
    pub max_connections: usize,
    /// Most connections that have not finished CONNECT; the oldest is dropped for a newcomer.
    pub max_pending: usize,
    /// Time a client has to send CONNECT after the TCP connection opens (ms).
    pub connect_timeout_ms: u64,
    /// A larger MQTT packet closes the connection (count: `oversized`).
    pub max_packet_bytes: usize,
    /// QoS 1/2 messages of one connection awaiting commit; beyond it its socket is not read.
    pub max_inflight: usize,
    /// Password checks (argon2, ~7 MiB each) running at once.
    pub auth_concurrency: usize,
    /// A second listener, MQTT over TLS (rustls), e.g. `0.0.0.0:8883`; needs `tls_cert_file`
    /// and `tls_key_file`. Same accounts, limits and sessions as `listen`.
    pub tls_listen: Option<SocketAddr>,
    /// The broker's certificate chain (PEM, leaf first).
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1), readable by the gateway only.
    pub tls_key_file: Option<PathBuf>,
    /// With it, a client must present a certificate this CA (PEM) signed, as well as its
    /// user name and password.
    pub tls_client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mqtt {
    /// Payloads larger than this are rejected and counted as `oversized`; the connection stays.
    /// (A packet above `broker.max_packet_bytes` closes it.)
    pub max_payload_bytes: usize,
    /// Extra topics mapped to readings.
    pub topics: Vec<TopicMap>,
}

/// A configured MQTT topic, checked and typed once when the config is read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawTopicMap")]
pub struct TopicMap {
    /// MQTT filter, e.g. `site/+/temperature`.
    pub filter: String,
    /// Which device (instance) the readings belong to.
    pub device: TopicDevice,
    /// Who may publish here.
    pub publishers: TopicPublishers,
    pub payload: TopicPayload,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TopicDevice {
    /// Always this device.
    Fixed(String),
    /// The topic level (0-based) that names the device.
    Level(usize),
    /// Line protocol only: the point's `device` tag (every point must carry one).
    FromPayload,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TopicPublishers {
    /// The account whose id is the device's topic level (`sensors/d2/temp`: `d2`).
    DeviceLevel(usize),
    /// These broker accounts.
    Accounts(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TopicPayload {
    /// A plain number feeding one quantity.
    Number { quantity: String },
    /// A JSON object: quantity → dotted path of its value (`"digester.temperature" = "data.t"`).
    Json {
        values: std::collections::BTreeMap<String, String>,
    },
    /// InfluxDB line protocol; each point's measurement and field must be a known quantity's
    /// storage name (docs/schema.md).
    LineProtocol,
}

/// `[[mqtt.topics]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopicMap {
    /// MQTT filter, e.g. `site/+/temperature`; `+` levels can name the device.
    filter: String,
    /// `json`, `number` or `line_protocol`.
    format: PayloadFormat,
    /// For `number`: the quantity it feeds.
    #[serde(default)]
    quantity: Option<String>,
    /// For `json`: quantity → dotted path in the payload.
    #[serde(default)]
    values: std::collections::BTreeMap<String, String>,
    /// Which topic level (0-based) is the device name; `device` is used when absent.
    #[serde(default)]
    device_level: Option<usize>,
    #[serde(default)]
    device: Option<String>,
    /// Broker accounts allowed to publish to this filter. Not needed with `device_level`.
    #[serde(default)]
    publishers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PayloadFormat {
    Json,
    Number,
    LineProtocol,
}

impl TryFrom<RawTopicMap> for TopicMap {
    type Error = String;

    fn try_from(t: RawTopicMap) -> Result<TopicMap, String> {
        let f = &t.filter;
        if f.is_empty() || f.contains('#') && !f.ends_with('#') {
            return Err(format!("filter: {f:?} is not a valid MQTT filter"));
        }
        if f.starts_with("meters/") {
            return Err(format!(
                "filter: {f:?}: meters/ topics are the built-in meter payloads"
            ));
        }
        let levels = f.split('/').count();
        if let Some(l) = t.device_level.filter(|l| *l >= levels) {
            return Err(format!(
                "device_level: {l} is beyond the {levels} levels of {f:?}"
            ));
        }
        let publishers = match (t.device_level, t.publishers.is_empty()) {
            (Some(l), true) => TopicPublishers::DeviceLevel(l),
            (_, false) => TopicPublishers::Accounts(t.publishers),
            (None, true) => {
                return Err(format!(
                    "publishers: {f:?}: say who may publish here: device_level (the account named by that topic level) or publishers = [\"ID\", ...]"
                ))
            }
        };
        let device = match (t.device_level, t.device) {
            (Some(l), _) => TopicDevice::Level(l),
            (None, Some(d)) if !d.is_empty() => TopicDevice::Fixed(d),
            (None, _) if t.format == PayloadFormat::LineProtocol => TopicDevice::FromPayload,
            (None, _) => return Err(format!("device: {f:?}: set device or device_level")),
        };
        let payload = match t.format {
            PayloadFormat::Number => match (t.quantity, t.values.is_empty()) {
                (Some(quantity), true) => TopicPayload::Number { quantity },
                _ => {
                    return Err(format!(
                        "quantity: {f:?}: a number payload feeds one quantity (quantity = \"digester.temperature\")"
                    ))
                }
            },
            PayloadFormat::Json => match (t.quantity, t.values.is_empty()) {
                (None, false) => TopicPayload::Json { values: t.values },
                _ => {
                    return Err(format!(
                        "values: {f:?}: a json payload maps quantities to paths ([mqtt.topics.values] \"digester.temperature\" = \"data.t\")"
                    ))
                }
            },
            PayloadFormat::LineProtocol if t.quantity.is_none() && t.values.is_empty() => {
                TopicPayload::LineProtocol
            }
            PayloadFormat::LineProtocol => {
                return Err(format!(
                    "format: {f:?}: line protocol names its own measurement and fields; quantity and values are for number and json"
                ))
            }
        };
        Ok(TopicMap {
            filter: t.filter,
            device,
            publishers,
            payload,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Influx {
    pub enabled: bool,
    /// Base URL; a path prefix (behind a reverse proxy) is kept.
    pub url: String,
    /// 1 for InfluxDB 1.x (`/write`), 2 for 2.x and VictoriaMetrics, 3 for 3.x (v2-compatible path).
    pub version: InfluxVersion,
    /// 1.x: database and retention policy (empty: the database's default).
    pub database: String,
    pub retention_policy: String,
    /// 1.x: user name; the password is read from `password_file`.
    pub username: String,
    pub password_file: Option<PathBuf>,
    /// 2.x/3.x: organisation and bucket; the token is read from `token_file`.
    pub org: String,
    pub bucket: String,
    pub token_file: Option<PathBuf>,
    /// Most lines per request.
    pub batch_size: usize,
    /// Longest a reading waits for a fuller batch, in milliseconds.
    pub flush_interval_ms: u64,
    /// Whole-request timeout, in milliseconds.
    pub timeout_ms: u64,
    pub gzip: bool,
    /// Retry backoff starts here and doubles up to `max_backoff_ms`.
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

/// Which InfluxDB write API to speak; written as the number 1, 2 or 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum InfluxVersion {
    /// `/write` with database, retention policy, user and password.
    V1,
    /// `/api/v2/write` with org, bucket and token (also VictoriaMetrics).
    V2,
    /// InfluxDB 3.x through its v2-compatible path (bucket and token; no org).
    V3,
}

impl TryFrom<u8> for InfluxVersion {
    type Error = String;
    fn try_from(v: u8) -> Result<InfluxVersion, String> {
        match v {
            1 => Ok(InfluxVersion::V1),
            2 => Ok(InfluxVersion::V2),
            3 => Ok(InfluxVersion::V3),
            v => Err(format!("{v}: expected 1, 2 or 3")),
        }
    }
}

impl std::fmt::Display for InfluxVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InfluxVersion::V1 => "1",
            InfluxVersion::V2 => "2",
            InfluxVersion::V3 => "3",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Modbus {
    /// Device profiles (one TOML file per device model). A profile not found here is taken from
    /// the copies of `sensors/` built into gkgw.
    pub profiles_dir: PathBuf,
    #[serde(rename = "bus")]
    pub buses: Vec<ModbusBus>,
    #[serde(rename = "device")]
    pub devices: Vec<ModbusDevice>,
}

/// One Modbus bus: a connection and the devices polled over it, one request at a time.
/// Deserialised from the flat `[[modbus.bus]]` table ([`RawBus`]) and checked there, so a
/// `ModbusBus` always has a parsed address or a complete serial line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawBus")]
pub struct ModbusBus {
    pub name: String,
    pub transport: ModbusTransport,
    /// Per-request timeout.
    pub timeout_ms: u64,
    /// A device that failed is retried after this, doubling up to `max_backoff_ms`.
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Extra silence between two exchanges on the bus, for slow RTU devices (default: the
    /// protocol's 3.5 character times).
    pub inter_frame_delay_ms: Option<u64>,
}

impl ModbusBus {
    /// A bus with the documented defaults for timeout and backoff.
    pub fn new(name: &str, transport: ModbusTransport) -> ModbusBus {
        ModbusBus {
            name: name.to_owned(),
            transport,
            timeout_ms: default_modbus_timeout(),
            min_backoff_ms: default_modbus_min_backoff(),
            max_backoff_ms: default_modbus_max_backoff(),
            inter_frame_delay_ms: None,
        }
    }
}

/// How a bus is reached, with what each way needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModbusTransport {
    /// Modbus TCP (MBAP framing).
    Tcp { address: SocketAddr },
    /// RTU frames over a TCP serial server.
    RtuOverTcp { address: SocketAddr },
    /// RTU on a local serial port.
    Rtu(SerialLine),
}

/// A serial port and its line settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    /// e.g. `/dev/ttyUSB0`.
    pub port: String,
    pub baud: u32,
    pub parity: Parity,
    /// 7 or 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
}

impl SerialLine {
    /// `port` at 9600 baud, 8N1.
    pub fn new(port: &str) -> SerialLine {
        SerialLine {
            port: port.to_owned(),
            baud: default_baud(),
            parity: Parity::None,
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
        }
    }
}

/// Serial parity; `none`, `even` or `odd` (also `n`, `e`, `o`, any case) in the config and on
/// the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

impl std::str::FromStr for Parity {
    type Err = String;
    fn from_str(s: &str) -> Result<Parity, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "n" => Ok(Parity::None),
            "even" | "e" => Ok(Parity::Even),
            "odd" | "o" => Ok(Parity::Odd),
            _ => Err(format!("{s:?}: expected none, even or odd")),
        }
    }
}

impl TryFrom<String> for Parity {
    type Error = String;
    fn try_from(s: String) -> Result<Parity, String> {
        s.parse()
    }
}

impl Parity {
    /// The letter of `8N1`.
    pub fn letter(self) -> char {
        match self {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        }
    }
}

impl std::fmt::Display for ModbusTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModbusTransport::Tcp { address } => write!(f, "tcp {address}"),
            ModbusTransport::RtuOverTcp { address } => write!(f, "rtu-over-tcp {address}"),
            ModbusTransport::Rtu(s) => write!(
                f,
                "rtu {} {} {}{}{}",
                s.port,
                s.baud,
                s.data_bits,
                s.parity.letter(),
                s.stop_bits
            ),
        }
    }
}

/// `host:port`, parsed when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BusAddress(SocketAddr);

impl<'de> Deserialize<'de> for BusAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BusAddress, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(BusAddress).map_err(|_| {
            serde::de::Error::custom(format!("{s:?} is not host:port (an IP address and port)"))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TransportKind {
    Tcp,
    Rtu,
    RtuOverTcp,
}

/// `[[modbus.bus]]` as written: one flat table whatever the transport.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    name: String,
    /// `tcp`, `rtu` or `rtu_over_tcp`.
    transport: TransportKind,
    /// `host:port` for tcp and rtu_over_tcp.
    address: Option<BusAddress>,
    /// Serial device for rtu, e.g. `/dev/ttyUSB0`.
    port: Option<String>,
    baud: Option<u32>,
    parity: Option<Parity>,
    data_bits: Option<u8>,
    stop_bits: Option<u8>,
    #[serde(default = "default_modbus_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_modbus_min_backoff")]
    min_backoff_ms: u64,
    #[serde(default = "default_modbus_max_backoff")]
    max_backoff_ms: u64,
    #[serde(default)]
    inter_frame_delay_ms: Option<u64>,
}

impl TryFrom<RawBus> for ModbusBus {
    type Error = String;

    /// The cross-field rules of a bus; the message names the bus and the key.
    fn try_from(b: RawBus) -> Result<ModbusBus, String> {
        let name = &b.name;
        let serial_keys = [
            ("port", b.port.is_some()),
            ("baud", b.baud.is_some()),
            ("parity", b.parity.is_some()),
            ("data_bits", b.data_bits.is_some()),
            ("stop_bits", b.stop_bits.is_some()),
        ];
        let net = |address: Option<BusAddress>, what: &str| {
            if let Some((key, _)) = serial_keys.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "bus {name:?}: {key} is for transport rtu, not {what}"
                ));
            }
            address.map(|a| a.0).ok_or(format!(
                "bus {name:?}: address: {what} needs address = \"host:port\""
            ))
        };
        let transport = match b.transport {
            TransportKind::Tcp => ModbusTransport::Tcp {
                address: net(b.address, "tcp")?,
            },
            TransportKind::RtuOverTcp => ModbusTransport::RtuOverTcp {
                address: net(b.address, "rtu_over_tcp")?,
            },
            TransportKind::Rtu => {
                if b.address.is_some() {
                    return Err(format!(
                        "bus {name:?}: address is for tcp and rtu_over_tcp; rtu takes port"
                    ));
                }
                let port = b.port.clone().filter(|p| !p.is_empty()).ok_or(format!(
                    "bus {name:?}: port: rtu needs a serial port, e.g. /dev/ttyUSB0"
                ))?;
                let line = SerialLine {
                    port,
                    baud: b.baud.unwrap_or(default_baud()),
                    parity: b.parity.unwrap_or_default(),
                    data_bits: b.data_bits.unwrap_or(default_data_bits()),
                    stop_bits: b.stop_bits.unwrap_or(default_stop_bits()),
                };
                if line.baud == 0 {
                    return Err(format!("bus {name:?}: baud: expected more than 0"));
                }
                if !(7..=8).contains(&line.data_bits) || !(1..=2).contains(&line.stop_bits) {
                    return Err(format!(
                        "bus {name:?}: data_bits, stop_bits: expected 7 or 8 data bits and 1 or 2 stop bits"
                    ));
                }
                ModbusTransport::Rtu(line)
            }
        };
        if b.timeout_ms == 0 || b.min_backoff_ms == 0 || b.min_backoff_ms > b.max_backoff_ms {
            return Err(format!("bus {name:?}: timeout_ms, min_backoff_ms: timeout and backoff must be positive, min_backoff_ms <= max_backoff_ms"));
        }
        Ok(ModbusBus {
            name: b.name,
            transport,
            timeout_ms: b.timeout_ms,
            min_backoff_ms: b.min_backoff_ms,
            max_backoff_ms: b.max_backoff_ms,
            inter_frame_delay_ms: b.inter_frame_delay_ms,
        })
    }
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_modbus_timeout() -> u64 {
    1000
}
fn default_modbus_min_backoff() -> u64 {
    5000
}
fn default_modbus_max_backoff() -> u64 {
    60_000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// The `device` tag of its readings.
    pub name: String,
    /// Name of a `[[modbus.bus]]`.
    pub bus: String,
    /// Unit id (slave address); default: the profile's.
    #[serde(default)]
    pub unit: Option<u8>,
    /// Profile file stem in `profiles_dir` (e.g. `eastron-sdm120`) or a path to a profile.
    pub profile: String,
    /// Poll interval override for every field, in milliseconds.
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// Quantity overrides: profile field name → quantity (e.g. a temperature module's
    /// `ch1 = "digester.temperature"`). Other fields feed the profile's quantity.
    #[serde(default)]
    pub quantities: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Status page, `/healthz` and `/metrics`.
    pub listen: SocketAddr,
    /// `/metrics` without a login (Prometheus scrapes it); false: viewer and up.
    pub metrics_public: bool,
    /// How long a login lasts, from the login (fixed, not extended by use). Fractions are
    /// allowed (`0.5` = 30 minutes).
    pub session_hours: f64,
    /// The login throttle: this many failed logins in a row for one account, or from one
    /// client address, lock it for `login_lockout_s`, doubled with each further failure (at
    /// most an hour); forgotten a day after the last failure.
    pub login_lock_after: u32,
    pub login_lockout_s: u64,
    /// Requests per second per client address (a token bucket of `rate_limit_burst`); 429 with
    /// Retry-After beyond it. 0 turns the limit off. `/healthz` is never limited.
    pub rate_limit_per_s: f64,
    pub rate_limit_burst: u32,
}

impl Default for Site {
    fn default() -> Site {
        Site {
            id: "site-001".into(),
            timezone: crate::plant::zone::Zone::default(),
            altitude_m: None,
            digester_m3: None,
            gas_meter_pulse_m3: 0.01,
            feed_kg_per_m3: 1000.0,
            compressor_meter: None,
            vs_fraction: VsFraction::default(),
        }
    }
}

impl Default for Store {
    fn default() -> Store {
        Store {
            state_dir: "/var/lib/gkgw".into(),
            commit_interval_ms: 500,
            min_commit_gap_ms: 20,
            max_batch: 5_000,
            channel_capacity: 4_096,
            quota_mib: 2048,
        }
    }
}

impl Default for Broker {
    fn default() -> Broker {
        Broker {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            allow_anonymous: false,
            credentials_file: "/etc/gkgw/meters.toml".into(),
            max_connections: 1000,
            max_pending: 64,
            connect_timeout_ms: 10_000,
            max_packet_bytes: 16_384,
            max_inflight: 32,
            auth_concurrency: 1,
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }
}

impl Default for Mqtt {
    fn default() -> Mqtt {
        Mqtt {
            max_payload_bytes: 4096,
            topics: Vec::new(),
        }
    }
}

impl Default for Influx {
    fn default() -> Influx {
        Influx {
            enabled: false,
            url: "http://127.0.0.1:8086".into(),
            version: InfluxVersion::V1,
            database: "gkgw".into(),
            retention_policy: String::new(),
            username: String::new(),
            password_file: None,
            org: String::new(),
            bucket: String::new(),
            token_file: None,
            batch_size: 5000,
            flush_interval_ms: 1000,
            timeout_ms: 10_000,
            gzip: true,
            min_backoff_ms: 500,
            max_backoff_ms: 60_000,
        }
    }
}

impl Default for Modbus {
    fn default() -> Modbus {
        Modbus {
            profiles_dir: "/usr/share/gkgw/sensors".into(),
            buses: Vec::new(),
            devices: Vec::new(),
        }
    }
}

impl Default for Logbook {
    fn default() -> Logbook {
        Logbook {
            edit_window_hours: 24,
        }
    }
}

impl Http {
    /// The `[http]` keys' bounds: (key, message) of the first one out of them.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.session_hours > 0.0 && self.session_hours <= 24.0 * 366.0) {
            return Err((
                "http.session_hours",
                "expected more than 0 and at most 8784 hours (a year)".into(),
            ));
        }
        if self.login_lock_after == 0 {
            return Err(("http.login_lock_after", "expected at least 1".into()));
        }
        if !(1..=3600).contains(&self.login_lockout_s) {
            return Err(("http.login_lockout_s", "expected 1 to 3600 seconds".into()));
        }
        if !(self.rate_limit_per_s >= 0.0 && self.rate_limit_per_s.is_finite()) {
            return Err((
                "http.rate_limit_per_s",
                "expected 0 (off) or more requests per second".into(),
            ));
        }
        if self.rate_limit_burst == 0 {
            return Err(("http.rate_limit_burst", "expected at least 1".into()));
        }
        Ok(())
    }
}

impl Default for Http {
    fn default() -> Http {
        Http {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_public: true,
            session_hours: 12.0,
            login_lock_after: 5,
            login_lockout_s: 30,
            rate_limit_per_s: 20.0,
            rate_limit_burst: 120,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |p| before.len() - p - 1)
        + 1;
    (line, col)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&file, &text)
    }

    /// Parses and validates `text`; `file` is only used in error messages.
    pub fn parse(file: &str, text: &str) -> Result<Config, Error> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let location = inner
                .span()
                .map(|s| {
                    let (l, c) = line_col(text, s.start);
                    format!(" (line {l}, column {c})")
                })
                .unwrap_or_default();
            Error::Parse {
                file: file.to_owned(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: inner.message().trim().to_owned(),
                location,
            }
        })?;
        config.validate(file)?;
        Ok(Config {
            origin: file.to_owned(),
            ..config
        })
    }

    /// Validates a `Config` built in code (the demo's) by the same rules as a file's; `file`
    /// names it in errors.
    pub fn validated(mut self, file: &str) -> Result<Config, Error> {
        self.validate(file)?;
        self.origin = file.to_owned();
        Ok(self)
    }

    fn validate(&self, file: &str) -> Result<(), Error> {
        let bad = |key: &'static str, message: String| {
            Err(Error::Invalid {
                file: file.to_owned(),
                key,
                message,
            })
        };
        let tag_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !tag_ok(&self.site.id) {
            return bad(
                "site.id",
                format!(
                    "{:?} must be non-empty letters, digits, '-', '_' or '.'",
                    self.site.id
                ),
            );
        }
        self.validate_site(file)?;
        self.validate_commands(file)?;
        if self.store.commit_interval_ms == 0 || self.store.commit_interval_ms > 60_000 {
            return bad(
                "store.commit_interval_ms",
                "expected 1 to 60000 milliseconds".into(),
            );
        }
        if self.store.min_commit_gap_ms > 1_000 {
            return bad(
                "store.min_commit_gap_ms",
                "expected 0 to 1000 milliseconds".into(),
            );
        }
        if self.history.interval_ms == 0 || self.history.interval_ms > 600_000 {
            return bad(
                "history.interval_ms",
                "expected 1 to 600000 milliseconds".into(),
            );
        }
        if !(1_000..=1_000_000).contains(&self.history.step_readings) {
            return bad(
                "history.step_readings",
                "expected 1000 to 1000000 readings".into(),
            );
        }
        if self.history.minute_days == 0 || self.history.hour_days < self.history.minute_days {
            return bad(
                "history.hour_days",
                "minute_days must be at least 1, and hour_days at least minute_days".into(),
            );
        }
        if self.store.max_batch == 0 {
            return bad("store.max_batch", "expected at least 1".into());
        }
        if self.store.channel_capacity == 0 {
            return bad("store.channel_capacity", "expected at least 1".into());
        }
        if self.store.quota_mib < 16 {
            return bad("store.quota_mib", "expected at least 16 MiB".into());
        }
        let b = &self.broker;
        if b.max_connections == 0 || b.max_pending == 0 || b.max_inflight == 0 {
            return bad(
                "broker.max_connections",
                "max_connections, max_pending and max_inflight must be at least 1".into(),
            );
        }
        if b.connect_timeout_ms == 0 {
            return bad("broker.connect_timeout_ms", "expected at least 1".into());
        }
        if !(1..=16).contains(&b.auth_concurrency) {
            return bad("broker.auth_concurrency", "expected 1 to 16".into());
        }
        if b.tls_listen.is_some() && (b.tls_cert_file.is_none() || b.tls_key_file.is_none()) {
            return bad(
                "broker.tls_listen",
                "needs broker.tls_cert_file and broker.tls_key_file".into(),
            );
        }
        if b.tls_listen.is_none()
            && (b.tls_cert_file.is_some()
                || b.tls_key_file.is_some()
                || b.tls_client_ca_file.is_some())
        {
            return bad(
                "broker.tls_cert_file",
                "set broker.tls_listen (e.g. \"0.0.0.0:8883\") to use the certificate".into(),
            );
        }
        if b.max_packet_bytes < self.mqtt.max_payload_bytes + 128 {
            return bad(
                "broker.max_packet_bytes",
                format!(
                    "{} must exceed mqtt.max_payload_bytes ({}) by at least 128 bytes (topic and header), so an oversized payload is counted rather than cut off",
                    b.max_packet_bytes, self.mqtt.max_payload_bytes
                ),
            );
        }
        if self.mqtt.max_payload_bytes < 64 {
            return bad(
                "mqtt.max_payload_bytes",
                "expected at least 64 bytes".into(),
            );
        }
        if !(1..=24 * 366).contains(&self.logbook.edit_window_hours) {
            return bad(
                "logbook.edit_window_hours",
                "expected 1 to 8784 hours (a year)".into(),
            );
        }
        if let Err((key, message)) = self.http.check() {
            return bad(key, message);
        }
        self.validate_modbus(file)?;
        self.validate_gpio(file)?;
        self.validate_alarms(file)?;
        if let Err((key, message)) = self.uplink.check() {
            return Err(Error::Invalid {
                file: file.to_owned(),
                key,
                message,
            });
        }
        if self.influx.enabled {
            let i = &self.influx;
            if !(i.url.starts_with("http://") || i.url.starts_with("https://"))
                || reqwest::Url::parse(&i.url).is_err()
            {
                return bad(
                    "influx.url",
                    format!("{:?} is not an http:// or https:// URL", i.url),
                );
            }
            match i.version {
                InfluxVersion::V1 if i.database.is_empty() => {
                    return bad("influx.database", "required for version 1".into())
                }
                InfluxVersion::V1 if !i.username.is_empty() && i.password_file.is_none() => {
                    return bad(
                        "influx.password_file",
                        "required when influx.username is set".into(),
                    )
                }
                InfluxVersion::V2 | InfluxVersion::V3 if i.bucket.is_empty() => {
                    return bad("influx.bucket", "required for version 2 and 3".into())
                }
                InfluxVersion::V2 if i.org.is_empty() => {
                    return bad("influx.org", "required for version 2".into())
                }
                _ => {}
            }
            if i.batch_size == 0 {
                return bad("influx.batch_size", "expected at least 1".into());
            }
            if i.timeout_ms == 0 {
                return bad("influx.timeout_ms", "expected at least 1".into());
            }
            if i.min_backoff_ms == 0 || i.min_backoff_ms > i.max_backoff_ms {
                return bad(
                    "influx.min_backoff_ms",
                    "expected 1 to influx.max_backoff_ms".into(),
                );
            }
            for (key, what, f) in [
                ("influx.password_file", INFLUX_PASSWORD, &i.password_file),
                ("influx.token_file", INFLUX_TOKEN, &i.token_file),
            ] {
                if let Some(f) = f {
                    if let Err(e) = std::fs::metadata(f) {
                        return bad(key, format!("cannot read {what} {}: {e}", f.display()));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_commands(&self, file: &str) -> Result<(), Error> {
        let bad = |key: &'static str, message: String| {
            Err(Error::Invalid {
                file: file.to_owned(),
                key,
                message,
            })
        };
        let c = &self.commands;
        if c.retry_s == 0 || c.retry_s > 3600 {
            return bad("commands.retry_s", "expected 1 to 3600 seconds".into());
        }
        if c.max_clock_skew_s > 86_400 {
            return bad(
                "commands.max_clock_skew_s",
                "expected 0 to 86400 seconds".into(),
            );
        }
        if let Some(f) = &c.platform_key_file {
            if let Err(e) = load_platform_key(f) {
                return bad("commands.platform_key_file", e);
            }
        }
        Ok(())
    }

    fn validate_site(&self, file: &str) -> Result<(), Error> {
        let bad = |key: &'static str, message: String| {
            Err(Error::Invalid {
                file: file.to_owned(),
                key,
                message,
            })
        };
        let s = &self.site;
        if let Some(h) = s.altitude_m {
            if !(h.is_finite() && (-500.0..=11_000.0).contains(&h)) {
                return bad(
                    "site.altitude_m",
                    format!("{h}: expected -500 to 11000 metres"),
                );
            }
        }
        if let Some(v) = s.digester_m3 {
            if !(v.is_finite() && v > 0.0) {
                return bad("site.digester_m3", format!("{v}: expected more than 0 m³"));
            }
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(s.gas_meter_pulse_m3) {
            return bad(
                "site.gas_meter_pulse_m3",
                format!("{}: expected more than 0 m³", s.gas_meter_pulse_m3),
            );
        }
        if !positive(s.feed_kg_per_m3) {
            return bad(
                "site.feed_kg_per_m3",
                format!("{}: expected more than 0 kg/m³", s.feed_kg_per_m3),
            );
        }
        if s.compressor_meter.as_deref() == Some("") {
            return bad(
                "site.compressor_meter",
                "expected a device name, or leave it out".into(),
            );
        }
        let v = s.vs_fraction;
        for (key, f) in [
            ("site.vs_fraction.household", v.household),
            ("site.vs_fraction.market", v.market),
            ("site.vs_fraction.animal", v.animal),
            ("site.vs_fraction.agricultural", v.agricultural),
        ] {
            if !(f.is_finite() && f > 0.0 && f <= 1.0) {
                return bad(key, format!("{f}: expected a fraction above 0, at most 1"));
            }
        }
        Ok(())
    }

    fn validate_alarms(&self, file: &str) -> Result<(), Error> {
        let a = &self.alarms;
        let bad = |key: &'static str, message: String| {
            Err(Error::Invalid {
                file: file.to_owned(),
                key,
                message,
            })
        };
        if a.max_shelve_hours == 0 || a.max_shelve_hours > 24 * 30 {
            return bad("alarms.max_shelve_hours", "expected 1 to 720 hours".into());
        }
        if a.stale_s == 0 {
            return bad(
                "alarms.stale_s",
                "expected at least 1 s (a rule that should never be stale says stale_s = 0 itself)"
                    .into(),
            );
        }
        for (i, o) in a.output.iter().enumerate() {
            if !self.gpio.outputs.iter().any(|g| g.name == o.output) {
                return bad(
                    "alarms.output",
                    format!(
                        "output {i}: {:?} is not a [[gpio.output]] name ({})",
                        o.output,
                        if self.gpio.outputs.is_empty() {
                            "there are none".to_owned()
                        } else {
                            self.gpio
                                .outputs
                                .iter()
                                .map(|g| g.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                );
            }
        }
        Ok(())
    }

    fn validate_gpio(&self, file: &str) -> Result<(), Error> {
        let bad = |key: &'static str, message: String| {
            Err(Error::Invalid {
                file: file.to_owned(),
                key,
                message,
            })
        };
        let tag_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let g = &self.gpio;
        if g.sim_socket.is_some()
            && g.backend != GpioBackend::Sim
            && g.fallback != GpioFallback::Sim
        {
            return bad(
                "gpio.sim_socket",
                "only with backend = \"sim\" or fallback = \"sim\"".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        let mut lines = std::collections::BTreeSet::new();
        let chip_of = |c: &Option<PathBuf>| c.clone().unwrap_or_else(|| g.chip.clone());
        for (i, inp) in g.inputs.iter().enumerate() {
            if !tag_ok(&inp.name) {
                return bad(
                    "gpio.input.name",
                    format!(
                        "input {i}: {:?} must be non-empty letters, digits, '-', '_' or '.'",
                        inp.name
                    ),
                );
            }
            if !names.insert(inp.name.as_str()) {
                return bad("gpio.input.name", format!("{:?} is used twice", inp.name));
            }
            if !lines.insert((chip_of(&inp.chip), inp.line)) {
                return bad(
                    "gpio.input.line",
                    format!("input {:?}: line {} is used twice", inp.name, inp.line),
                );
            }
            if inp.debounce_ms > 1_000 {
                return bad(
                    "gpio.input.debounce_ms",
                    format!("input {:?}: expected 0 to 1000 ms", inp.name),
                );
            }
            if !(100..=60_000).contains(&inp.report_ms) {
                return bad(
                    "gpio.input.report_ms",
                    format!("input {:?}: expected 100 to 60000 ms", inp.name),
                );
            }
            match inp.kind {
                InputKind::Pulse => {
                    let w = inp.pulse_m3.unwrap_or(self.site.gas_meter_pulse_m3);
                    if !(w.is_finite() && w > 0.0) {
                        return bad(
                            "gpio.input.pulse_m3",
                            format!("pulse input {:?}: needs a weight above 0 m³ per pulse (pulse_m3, or site.gas_meter_pulse_m3)", inp.name),
                        );
                    }
                    if inp.quantity.is_some() {
                        return bad(
                            "gpio.input.quantity",
                            format!("pulse input {:?}: feeds gas.volume and gas.flow; quantity is for contacts", inp.name),
                        );
                    }
                    if !(1..=3_600).contains(&inp.flow_window_s) {
                        return bad(
                            "gpio.input.flow_window_s",
                            format!("input {:?}: expected 1 to 3600 s", inp.name),
                        );
                    }
                }
                InputKind::Contact => {
                    if inp.quantity.is_none() {
                        return bad(
                            "gpio.input.quantity",
                            format!("contact input {:?}: needs the state quantity it feeds, e.g. quantity = \"compressor.status.running\"", inp.name),
                        );
                    }
                    if inp.pulse_m3.is_some() {
                        return bad(
                            "gpio.input.pulse_m3",
                            format!("contact input {:?}: pulse_m3 is for pulse inputs", inp.name),
                        );
                    }
                }
            }
        }
        let mut outs = std::collections::BTreeSet::new();
        for o in &g.outputs {
            if o.name.is_empty() || !outs.insert(o.name.as_str()) {
                return bad(
                    "gpio.output.name",
                    format!("{:?} is empty or used twice", o.name),
                );
            }
            if !lines.insert((chip_of(&o.chip), o.line)) {
                return bad(
                    "gpio.output.line",
                    format!("output {:?}: line {} is already used", o.name, o.line),
                );
            }
            if o.mode == OutputMode::Pulsed && (o.on_ms == 0 || o.off_ms == 0) {
                return bad(
                    "gpio.output.on_ms",
                    format!(
                        "pulsed output {:?}: on_ms and off_ms must be at least 1",
                        o.name
                    ),
                );
            }
        }
        let w = &self.onewire;
        if !(1_000..=86_400_000).contains(&w.interval_ms) {
            return bad(
                "onewire.interval_ms",
                "expected 1000 to 86400000 milliseconds".into(),
            );
        }
        let mut ids = std::collections::BTreeSet::new();
        for s in &w.sensors {
            if !ids.insert(s.id.as_str()) {
                return bad("onewire.sensor.id", format!("{:?} is used twice", s.id));
            }
            let family = s.id.split('-').next().unwrap_or("");
            if !s.id.contains('-') || s.id.contains('/') || s.id.contains("..") {
                return bad(
                    "onewire.sensor.id",
                    format!("{:?}: expected a w1 device name like 28-0316a2796eff", s.id),
                );
            }
            if !["10", "22", "28", "3b", "42"].contains(&family) {
                return bad(
                    "onewire.sensor.id",
                    format!(
                        "{:?}: family {family} is not a thermometer (10, 22, 28, 3b, 42)",
                        s.id
                    ),
                );
            }
            if !tag_ok(&s.instance) {
                return bad(
                    "onewire.sensor.instance",
                    format!(
                        "sensor {:?}: {:?} must be non-empty letters, digits, '-', '_' or '.'",
                        s.id, s.instance
                    ),
                );
            }
        }
        Ok(())
    }

    fn validate_modbus(&self, file: &str) -> Result<(), Error> {
        let bad = |key: &'static str, message: String| {
            Err(Error::Invalid {
                file: file.to_owned(),
                key,
                message,
            })
        };
        let mut names = std::collections::BTreeSet::new();
        for b in &self.modbus.buses {
            if !names.insert(b.name.as_str()) {
                return bad("modbus.bus.name", format!("{:?} is used twice", b.name));
            }
        }
        let mut devices = std::collections::BTreeSet::new();
        for d in &self.modbus.devices {
            if !devices.insert(d.name.as_str()) {
                return bad("modbus.device.name", format!("{:?} is used twice", d.name));
            }
            if !names.contains(d.bus.as_str()) {
                return bad(
                    "modbus.device.bus",
                    format!("device {:?}: no [[modbus.bus]] named {:?}", d.name, d.bus),
                );
            }
            if d.unit.is_some_and(|u| !(1..=247).contains(&u)) {
                return bad(
                    "modbus.device.unit",
                    format!(
                        "device {:?}: unit {}: expected 1..=247",
                        d.name,
                        d.unit.unwrap_or_default()
                    ),
                );
            }
            if d.poll_interval_ms == Some(0) {
                return bad(
                    "modbus.device.poll_interval_ms",
                    format!("device {:?}: expected at least 1", d.name),
                );
            }
        }
        Ok(())
    }
}

/// What `influx.password_file` holds, for error messages.
pub const INFLUX_PASSWORD: &str = "the InfluxDB password file";
/// What `influx.token_file` holds, for error messages.
pub const INFLUX_TOKEN: &str = "the InfluxDB token file";

/// Reads and parses the platform's public key (`commands.platform_key_file`); the error
/// names the file.
pub fn load_platform_key(path: &Path) -> Result<crate::commands::PublicKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the platform key {}: {e}", path.display()))?;
    crate::commands::PublicKey::parse(&text)
        .map_err(|e| format!("{}: not an Ed25519 public key: {e}", path.display()))
}

/// Reads a secret from a file (systemd credential or 0600 file), trimming the trailing newline.
pub fn read_secret(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?
        .trim_end_matches(['\n', '\r'])
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_is_the_default_config() {
        assert_eq!(
            Config::parse("default", DEFAULT_TOML).expect("default parses"),
            Config {
                origin: "default".into(),
                ..Config::default()
            }
        );
    }

    fn check(text: &str, expected: &str) {
        let err = Config::parse("gw.toml", text)
            .expect_err("must be rejected")
            .to_string();
        assert_eq!(err, expected);
    }

    #[test]
    fn uplink_secret_and_ca_files_are_checked_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = |extra: &str| {
            format!("[uplink]\nenabled = true\nurl = \"https://platform.example/batches\"\ngateway = \"gw-1\"\n{extra}")
        };
        let missing = dir.path().join("missing.token");
        let err = Config::parse(
            "gw.toml",
            &up(&format!("token_file = \"{}\"\n", missing.display())),
        )
        .expect_err("no such file")
        .to_string();
        assert!(
            err.starts_with(&format!(
                "gw.toml: uplink.token_file: cannot read {}",
                missing.display()
            )),
            "{err}"
        );
        let empty = dir.path().join("empty.token");
        std::fs::write(&empty, "\n").expect("write");
        let err = Config::parse(
            "gw.toml",
            &up(&format!("token_file = \"{}\"\n", empty.display())),
        )
        .expect_err("empty")
        .to_string();
        assert_eq!(
            err,
            format!("gw.toml: uplink.token_file: {} is empty", empty.display())
        );
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").expect("write");
        let err = Config::parse("gw.toml", &up(&format!("ca_file = \"{}\"\n", ca.display())))
            .expect_err("no certificate")
            .to_string();
        assert_eq!(
            err,
            format!(
                "gw.toml: uplink.ca_file: {} holds no PEM certificate",
                ca.display()
            )
        );
        let token = dir.path().join("ok.token");
        std::fs::write(&token, "s3cret\n").expect("write");
        Config::parse(
            "gw.toml",
            &up(&format!("token_file = \"{}\"\n", token.display())),
        )
        .expect("a readable token");
    }

    #[test]
    fn commands_mistakes_name_the_key() {
        check(
            "[commands]\nretry_s = 0\n",
            "gw.toml: commands.retry_s: expected 1 to 3600 seconds",
        );
        check(
            "[commands]\nmax_clock_skew_s = 100000\n",
            "gw.toml: commands.max_clock_skew_s: expected 0 to 86400 seconds",
        );
        let err = Config::parse(
            "gw.toml",
            "[commands]\nplatform_key_file = \"/nonexistent/key.pem\"\n",
        )
        .expect_err("no such file")
        .to_string();
        assert!(
            err.starts_with("gw.toml: commands.platform_key_file: cannot read the platform key /nonexistent/key.pem"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("key.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
        )
        .expect("write");
        let err = Config::parse(
            "gw.toml",
            &format!("[commands]\nplatform_key_file = \"{}\"\n", bad.display()),
        )
        .expect_err("not a key")
        .to_string();
        assert!(err.contains("not an Ed25519 public key"), "{err}");
        let good = dir.path().join("key.jwk");
        std::fs::write(
            &good,
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        )
        .expect("write");
        let c = Config::parse(
            "gw.toml",
            &format!(
                "[commands]\nplatform_key_file = \"{}\"\nretry_s = 2\n",
                good.display()
            ),
        )
        .expect("valid");
        assert_eq!(c.commands.retry_s, 2);
    }

    #[test]
    fn http_access_keys_are_checked() {
        for (text, want) in [
            (
                "[http]\nsession_hours = 0\n",
                "gw.toml: http.session_hours: expected more than 0 and at most 8784 hours (a year)",
            ),
            (
                "[http]\nlogin_lock_after = 0\n",
                "gw.toml: http.login_lock_after: expected at least 1",
            ),
            (
                "[http]\nlogin_lockout_s = 0\n",
                "gw.toml: http.login_lockout_s: expected 1 to 3600 seconds",
            ),
            (
                "[http]\nrate_limit_per_s = -1\n",
                "gw.toml: http.rate_limit_per_s: expected 0 (off) or more requests per second",
            ),
            (
                "[http]\nrate_limit_burst = 0\n",
                "gw.toml: http.rate_limit_burst: expected at least 1",
            ),
        ] {
            check(text, want);
        }
        let c = Config::parse(
            "gw.toml",
            "[http]\nsession_hours = 0.001\nmetrics_public = false\n",
        )
        .expect("valid");
        assert_eq!(
            (c.http.session_hours, c.http.metrics_public),
            (0.001, false)
        );
    }

    #[test]
    fn logbook_window_is_checked() {
        check(
            "[logbook]\nedit_window_hours = 0\n",
            "gw.toml: logbook.edit_window_hours: expected 1 to 8784 hours (a year)",
        );
        check(
            "[logbook]\nedit_window = 24\n",
            "gw.toml: logbook.edit_window: unknown field `edit_window`, expected `edit_window_hours` (line 2, column 1)",
        );
        let c = Config::parse("gw.toml", "[logbook]\nedit_window_hours = 48\n").expect("valid");
        assert_eq!(c.logbook.edit_window_hours, 48);
    }

    #[test]
    fn gpio_and_onewire_mistakes_name_the_key() {
        let pulse = |extra: &str| {
            format!("[[gpio.input]]\nname = \"gas-meter\"\nline = 17\nkind = \"pulse\"\n{extra}")
        };
        check(
            &format!("{}{}", pulse(""), pulse("")),
            "gw.toml: gpio.input.name: \"gas-meter\" is used twice",
        );
        check(
            &pulse("pulse_m3 = 0.0\n"),
            "gw.toml: gpio.input.pulse_m3: pulse input \"gas-meter\": needs a weight above 0 m³ per pulse (pulse_m3, or site.gas_meter_pulse_m3)",
        );
        check(
            "[gpio]\nbackend = \"pigpio\"\n",
            "gw.toml: gpio.backend: unknown variant `pigpio`, expected one of `cdev`, `rppal`, `sim` (line 2, column 11)",
        );
        check(
            "[[gpio.input]]\nname = \"door\"\nline = 4\nkind = \"contact\"\n",
            "gw.toml: gpio.input.quantity: contact input \"door\": needs the state quantity it feeds, e.g. quantity = \"compressor.status.running\"",
        );
        check(
            &format!(
                "{}[[gpio.output]]\nname = \"buzzer\"\nline = 17\n",
                pulse("")
            ),
            "gw.toml: gpio.output.line: output \"buzzer\": line 17 is already used",
        );
        check(
            "[[gpio.output]]\nname = \"beacon\"\nline = 2\nmode = \"pulsed\"\non_ms = 0\n",
            "gw.toml: gpio.output.on_ms: pulsed output \"beacon\": on_ms and off_ms must be at least 1",
        );
        check(
            "[gpio]\nsim_socket = \"/tmp/s\"\n",
            "gw.toml: gpio.sim_socket: only with backend = \"sim\" or fallback = \"sim\"",
        );
        check(
            "[[onewire.sensor]]\nid = \"3a-00001\"\nquantity = \"digester.temperature\"\ninstance = \"d1\"\n",
            "gw.toml: onewire.sensor.id: \"3a-00001\": family 3a is not a thermometer (10, 22, 28, 3b, 42)",
        );
        check(
            "[[gpio.input]]\nname = \"m\"\nline = 1\nkind = \"pulse\"\nweight = 1\n",
            "gw.toml: gpio.input[0].weight: unknown field `weight`, expected one of `name`, `line`, `chip`, `kind`, `debounce_ms`, `active_low`, `bias`, `pulse_m3`, `quantity`, `report_ms`, `flow_window_s` (line 5, column 1)",
        );
        let c = Config::parse("gw.toml", &pulse("")).expect("valid");
        assert_eq!(c.gpio.inputs[0].debounce_ms, 10);
        assert_eq!(c.gpio.inputs[0].report_ms, 10_000);
    }

    #[test]
    fn modbus_mistakes_name_the_key() {
        let bus =
            "[[modbus.bus]]\nname = \"rs485\"\ntransport = \"rtu\"\nport = \"/dev/ttyUSB0\"\n";
        let dev = |name: &str, unit: u8| {
            format!("[[modbus.device]]\nname = \"{name}\"\nbus = \"rs485\"\nunit = {unit}\nprofile = \"eastron-sdm120\"\n")
        };
        check(
            &format!("{bus}{}", dev("a", 0)),
            "gw.toml: modbus.device.unit: device \"a\": unit 0: expected 1..=247",
        );
        check(
            "[[modbus.bus]]\nname = \"tcp\"\ntransport = \"tcp\"\naddress = \"plc:502\"\n",
            "gw.toml: modbus.bus[0].address: \"plc:502\" is not host:port (an IP address and port) (line 4, column 11)",
        );
        check(
            "[[modbus.bus]]\nname = \"tcp\"\ntransport = \"tcp\"\n",
            "gw.toml: modbus.bus[0]: bus \"tcp\": address: tcp needs address = \"host:port\" (line 1, column 1)",
        );
        check(
            "[[modbus.bus]]\nname = \"tcp\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nbaud = 19200\n",
            "gw.toml: modbus.bus[0]: bus \"tcp\": baud is for transport rtu, not tcp (line 1, column 1)",
        );
        check(
            "[[modbus.bus]]\nname = \"rs485\"\ntransport = \"rtu\"\n",
            "gw.toml: modbus.bus[0]: bus \"rs485\": port: rtu needs a serial port, e.g. /dev/ttyUSB0 (line 1, column 1)",
        );
        check(
            &format!("{bus}parity = \"mark\"\n"),
            "gw.toml: modbus.bus[0].parity: \"mark\": expected none, even or odd (line 5, column 10)",
        );
        check(
            &format!("{bus}{}", dev("a", 1))
                .replace("bus = \"rs485\"\nunit", "bus = \"rs232\"\nunit"),
            "gw.toml: modbus.device.bus: device \"a\": no [[modbus.bus]] named \"rs232\"",
        );
        let ok = Config::parse(
            "gw.toml",
            &format!(
                "{bus}parity = \"E\"\nbaud = 19200\n{}{}",
                dev("a", 1),
                dev("b", 2)
            ),
        );
        let transport = ok.map(|c| c.modbus.buses[0].transport.to_string());
        assert_eq!(
            transport.map_err(|e| e.to_string()),
            Ok("rtu /dev/ttyUSB0 19200 8E1".to_owned())
        );
        let tcp = "[[modbus.bus]]\nname = \"plc\"\ntransport = \"rtu_over_tcp\"\naddress = \"10.0.0.5:4001\"\n";
        let transport = Config::parse("gw.toml", tcp).map(|c| c.modbus.buses[0].transport.clone());
        let address = "10.0.0.5:4001".parse().expect("an address");
        assert_eq!(
            transport.ok(),
            Some(ModbusTransport::RtuOverTcp { address })
        );
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        check(
            "[store]\ncommit_interval_ms = \"fast\"\n",
            "gw.toml: store.commit_interval_ms: invalid type: string \"fast\", expected u64 (line 2, column 22)",
        );
        check(
            "[store]\ncommit_intervall_ms = 5\n",
            "gw.toml: store.commit_intervall_ms: unknown field `commit_intervall_ms`, expected one of `state_dir`, `commit_interval_ms`, `min_commit_gap_ms`, `max_batch`, `channel_capacity`, `quota_mib` (line 2, column 1)",
        );
        check(
            "[influx]\nenabled = true\nversion = 2\nbucket = \"b\"\n",
            "gw.toml: influx.org: required for version 2",
        );
        check(
            "[influx]\nenabled = true\nurl = \"localhost:8086\"\n",
            "gw.toml: influx.url: \"localhost:8086\" is not an http:// or https:// URL",
        );
        check(
            "[http]\nlisten = \"nowhere\"\n",
            "gw.toml: http.listen: invalid socket address syntax (line 2, column 10)",
        );
        check(
            "[site]\nid = \"my site\"\n",
            "gw.toml: site.id: \"my site\" must be non-empty letters, digits, '-', '_' or '.'",
        );
        check(
            "[site]\ntimezone = \"Europe/Paris\"\n",
            &format!(
                "gw.toml: site.timezone: {} (line 2, column 12)",
                crate::plant::zone::Zone::parse("Europe/Paris").expect_err("refused")
            ),
        );
        check(
            "[site]\ndigester_m3 = 0.0\n",
            "gw.toml: site.digester_m3: 0: expected more than 0 m³",
        );
        check(
            "[site.vs_fraction]\nmarket = 1.5\n",
            "gw.toml: site.vs_fraction.market: 1.5: expected a fraction above 0, at most 1",
        );
        check(
            "[site]\naltitude_m = 20000.0\n",
            "gw.toml: site.altitude_m: 20000: expected -500 to 11000 metres",
        );
        let site = Config::parse(
            "gw.toml",
            "[site]\ntimezone = \"Africa/Kigali\"\naltitude_m = 1550.0\ndigester_m3 = 40.0\n",
        )
        .expect("parses")
        .site;
        assert_eq!(site.timezone.offset_s(), 7200);
        let p = site.kpi_parameters();
        assert_eq!((p.altitude_m, p.digester_m3), (Some(1550.0), Some(40.0)));
        assert_eq!(p.vs, crate::plant::kpi::FeedFractions::default());
        check(
            "[store\n",
            "gw.toml: (top level): invalid table header\nexpected `.`, `]` (line 1, column 7)",
        );
    }
}
