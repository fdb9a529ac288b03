//! Modbus acquisition: device profiles (`profile`), register decoding (`decode`), request
//! planning (`plan`), the connection (`link`), per-device circuit breaker (`health`), and the
//! per-bus poller below that ties them together.
//!
//! One poller task per bus is the bus arbiter: it owns the connection and polls its devices one
//! request at a time, each when its fields fall due ([`poller`], the state machine; [`run_bus`],
//! the loop around it). Readings go into the store's channel like any other source's. Writes
//! come in through the bus's command inbox ([`Buses`]) and go out between two reads.
//! Architecture invariant: writes go through [`write`] only, which logs who, what and why; the
//! read path never writes.
//!
//! [`resolve`] is the one step that turns the `[modbus]` config into what the pollers need:
//! it loads every profile once and applies the per-device overrides.

pub mod commission;
pub mod decode;
pub mod health;
pub mod link;
pub mod plan;
pub mod poller;
pub mod profile;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ModbusBus};
use crate::model::Reading;
use link::{Data, Link};
use profile::Profile;

/// The shipped profiles, built in so `gkgw demo` and a fresh install work without `sensors/`.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    (
        "compressor-controller",
        include_str!("../../../../sensors/compressor-controller.toml"),
    ),
    (
        "comwintop-8pt1000",
        include_str!("../../../../sensors/comwintop-8pt1000.toml"),
    ),
    (
        "demo-digester",
        include_str!("../../../../sensors/demo-digester.toml"),
    ),
    (
        "eastron-sdm120",
        include_str!("../../../../sensors/eastron-sdm120.toml"),
    ),
    (
        "eastron-sdm630",
        include_str!("../../../../sensors/eastron-sdm630.toml"),
    ),
    (
        "generic-4-20ma-pressure",
        include_str!("../../../../sensors/generic-4-20ma-pressure.toml"),
    ),
    (
        "vaisala-mgp261",
        include_str!("../../../../sensors/vaisala-mgp261.toml"),
    ),
];

/// A profile by path (contains `/` or ends in `.toml`), by stem in `dir`, or built in. A name
/// that is none of these is an error listing the built-in names.
pub fn load_profile(dir: &Path, name: &str) -> Result<Profile, profile::ProfileError> {
    let path = if name.contains('/') || name.ends_with(".toml") {
        Path::new(name).to_path_buf()
    } else {
        let path = dir.join(format!("{name}.toml"));
        if !path.exists() && BUILTIN_PROFILES.iter().any(|(n, _)| *n == name) {
            return builtin_profile(name);
        }
        path
    };
    match profile::load_file(&path) {
        Err(profile::ProfileError::Io { err, .. })
            if err.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(profile::ProfileError::NotFound {
                name: name.to_owned(),
                tried: path.display().to_string(),
                builtin: BUILTIN_PROFILES.iter().map(|(n, _)| *n).collect(),
            })
        }
        other => other,
    }
}

/// A shipped profile by name (`sensors/<name>.toml` as built into gkgw).
pub fn builtin_profile(name: &str) -> Result<Profile, profile::ProfileError> {
    match BUILTIN_PROFILES.iter().find(|(n, _)| *n == name) {
        Some((n, src)) => profile::parse(src, &format!("built-in sensors/{n}.toml")),
        None => profile::load_file(Path::new(&format!("sensors/{name}.toml"))),
    }
}

/// Decodes one field of `req` from the data its read returned; `None` when the reply does not
/// cover the field (the request was sliced wrongly).
pub fn decode_field(
    req: &plan::ReadRequest,
    field: &profile::Field,
    data: &Data,
) -> Option<Result<decode::Decoded, decode::DecodeError>> {
    let span = plan::Span::from(field);
    match data {
        Data::Registers(regs) => req
            .slice(span, regs)
            .map(|s| decode::decode_registers(field, s)),
        Data::Bits(bits) => req.slice(span, bits).map(|s| decode::decode_bits(field, s)),
    }
}

/// The unit as it appears in a field name: `°C` → `c`, `m³/h` → `m3h`, `%vol` → `pct`.
fn unit_suffix(unit: &str) -> String {
    let u = unit
        .replace('³', "3")
        .replace('²', "2")
        .replace('°', "")
        .replace('%', "pct")
        .replace("vol", "");
    u.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Measurement and field name of a quantity: `digester.pressure` in mbar →
/// (`digester`, `pressure_mbar`); `power.voltage.l1` in V → (`power`, `voltage_l1_v`).
pub fn influx_names(quantity: &str, unit: Option<&str>) -> (String, String) {
    let (measurement, rest) = quantity.split_once('.').unwrap_or(("modbus", quantity));
    let mut field = rest.replace('.', "_");
    if let Some(u) = unit.map(unit_suffix).filter(|u| !u.is_empty()) {
        if !field.ends_with(&u) {
            field = format!("{field}_{u}");
        }
    }
    (measurement.to_owned(), field)
}

/// Counters per device, rendered in `/metrics`.
#[derive(Debug, Clone)]
pub struct DeviceStats {
    pub bus: String,
    pub state: health::State,
    pub requests: u64,
    pub timeouts: u64,
    pub exceptions: u64,
    pub errors: u64,
    pub latency_seconds_sum: f64,
    pub readings: u64,
    /// The latest value of each field read so far, as text with its unit (or the quality
    /// when bad), for the status page.
    pub latest: BTreeMap<String, String>,
    /// When the device last answered (Unix ns).
    pub last_answer_ns: Option<i64>,
}

impl DeviceStats {
    pub fn new(bus: &str) -> DeviceStats {
        DeviceStats {
            bus: bus.to_owned(),
            state: health::State::Unknown,
            requests: 0,
            timeouts: 0,
            exceptions: 0,
            errors: 0,
            latency_seconds_sum: 0.0,
            readings: 0,
            latest: BTreeMap::new(),
            last_answer_ns: None,
        }
    }

    /// `latest` no longer describes the device: it stopped answering (offline), so the values
    /// are as old as its last answer.
    pub fn stale(&self) -> bool {
        self.state == health::State::Offline
    }
}

pub type Stats = Arc<Mutex<BTreeMap<String, DeviceStats>>>;

pub fn render_stats(stats: &Stats, out: &mut String) {
    use std::fmt::Write as _;
    let Ok(map) = stats.lock() else { return };
    if map.is_empty() {
        return;
    }
    for (name, help, get) in [
        (
            "gkgw_modbus_requests_total",
            "Modbus requests sent.",
            (|d: &DeviceStats| d.requests as f64) as fn(&DeviceStats) -> f64,
        ),
        (
            "gkgw_modbus_timeouts_total",
            "Modbus requests that timed out.",
            |d| d.timeouts as f64,
        ),
        (
            "gkgw_modbus_exceptions_total",
            "Modbus exception replies.",
            |d| d.exceptions as f64,
        ),
        (
            "gkgw_modbus_errors_total",
            "Modbus connection, I/O and framing errors.",
            |d| d.errors as f64,
        ),
        (
            "gkgw_modbus_latency_seconds_sum",
            "Total latency of answered requests.",
            |d| d.latency_seconds_sum,
        ),
        ("gkgw_modbus_readings_total", "Readings produced.", |d| {
            d.readings as f64
        }),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (dev, d) in map.iter() {
            let _ = writeln!(
                out,
                "{name}{{device=\"{dev}\",bus=\"{}\"}} {}",
                d.bus,
                get(d)
            );
        }
    }
    let _ = writeln!(out, "# HELP gkgw_modbus_device_state 1 for the device's current state.\n# TYPE gkgw_modbus_device_state gauge");
    for (dev, d) in map.iter() {
        for s in health::State::ALL {
            let _ = writeln!(
                out,
                "gkgw_modbus_device_state{{device=\"{dev}\",state=\"{}\"}} {}",
                s.as_str(),
                u8::from(d.state == s)
            );
        }
    }
}

/// Why `[modbus]` does not resolve into buses; names the file and the key like `config::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ResolveError {
    pub file: String,
    pub key: &'static str,
    pub message: String,
}

/// One device as a poller needs it: its profile loaded and the site's overrides applied.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub name: String,
    pub unit: u8,
    pub profile: Profile,
}

/// One bus and its devices, ready for [`run_bus`].
#[derive(Debug, Clone)]
pub struct BusSpec {
    pub bus: ModbusBus,
    pub devices: Vec<DeviceSpec>,
}

/// The one build step of the Modbus source: loads each device's profile (from
/// `profiles_dir` or built in), applies `unit` and `poll_interval_ms`, and checks that no two
/// devices share a unit on a bus. `file` is the config's origin, for the errors.
pub fn resolve(file: &str, modbus: &config::Modbus) -> Result<Vec<BusSpec>, ResolveError> {
    let bad = |key, message| ResolveError {
        file: file.to_owned(),
        key,
        message,
    };
    let mut buses = Vec::new();
    for bus in &modbus.buses {
        let mut devices: Vec<DeviceSpec> = Vec::new();
        for d in modbus.devices.iter().filter(|d| d.bus == bus.name) {
            let mut profile = load_profile(&modbus.profiles_dir, &d.profile)
                .map_err(|e| bad("modbus.device.profile", format!("device {:?}: {e}", d.name)))?;
            let unit = d.unit.unwrap_or(profile.device.unit_id);
            if !(1..=247).contains(&unit) {
                let message = format!("device {:?}: unit {unit}: expected 1..=247", d.name);
                return Err(bad("modbus.device.unit", message));
            }
            if let Some(other) = devices.iter().find(|o| o.unit == unit) {
                let message = format!(
                    "devices {:?} and {:?} both use unit {unit} on bus {:?}",
                    other.name, d.name, d.bus
                );
                return Err(bad("modbus.device.unit", message));
            }
            if let Some(ms) = d.poll_interval_ms {
                for f in &mut profile.fields {
                    f.poll_interval = Duration::from_millis(ms);
                }
            }
            devices.push(DeviceSpec {
                name: d.name.clone(),
                unit,
                profile,
            });
        }
        buses.push(BusSpec {
            bus: bus.clone(),
            devices,
        });
    }
    Ok(buses)
}

/// What the task that owns a bus can be asked to do, between two of its reads.
#[derive(Debug)]
pub enum BusCommand {
    /// Write one field through [`write`]; the reply is the value the device was sent.
    Write {
        device: String,
        field: String,
        value: f64,
        reason: WriteReason,
        reply: oneshot::Sender<Result<decode::DecodedValue, WriteError>>,
    },
}

/// Each bus task's command inbox holds this many commands; when it is full a new command is
/// refused at once ([`WriteError::Busy`]) rather than waiting: a caller (web, uplink) must not
/// hang on a bus that is stuck in timeouts.
pub const INBOX_CAPACITY: usize = 16;

/// The way to the bus tasks' inboxes, by device name: cheap to clone, handed to whoever may
/// send commands (the web and the uplink, later).
#[derive(Debug, Clone, Default)]
pub struct Buses {
    by_device: Arc<BTreeMap<String, mpsc::Sender<BusCommand>>>,
}

impl Buses {
    pub fn new(by_device: BTreeMap<String, mpsc::Sender<BusCommand>>) -> Buses {
        Buses {
            by_device: Arc::new(by_device),
        }
    }

    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.by_device.keys().map(String::as_str)
    }

    /// Writes `field` of `device` through its bus task, between two reads; returns the value
    /// the device was sent (see [`write`]).
    pub async fn write(
        &self,
        device: &str,
        field: &str,
        value: f64,
        reason: WriteReason,
    ) -> Result<decode::DecodedValue, WriteError> {
        let inbox = self
            .by_device
            .get(device)
            .ok_or_else(|| WriteError::UnknownDevice(device.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        let command = BusCommand::Write {
            device: device.to_owned(),
            field: field.to_owned(),
            value,
            reason,
            reply,
        };
        inbox.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Busy(device.to_owned()),
            mpsc::error::TrySendError::Closed(_) => WriteError::Stopped(device.to_owned()),
        })?;
        answer
            .await
            .map_err(|_| WriteError::Stopped(device.to_owned()))?
    }
}

/// Adds a finished cycle to its device's counters and latest values.
fn record(stats: &Stats, report: &poller::Report, ts_ns: i64) {
    let Ok(mut s) = stats.lock() else { return };
    let Some(d) = s.get_mut(&report.device) else {
        return;
    };
    let c = &report.stats;
    d.state = report.state;
    d.requests += c.requests;
    d.timeouts += c.timeouts;
    d.exceptions += c.exceptions;
    d.errors += c.errors;
    d.latency_seconds_sum += c.latency_seconds_sum;
    d.readings += c.readings;
    if report.answered {
        d.last_answer_ns = Some(ts_ns);
    }
    d.latest.extend(report.latest.iter().cloned());
}

/// The next command, or never once every sender is gone.
async fn recv(inbox: &mut Option<mpsc::Receiver<BusCommand>>) -> Option<BusCommand> {
    match inbox {
        Some(rx) => {
            let command = rx.recv().await;
            if command.is_none() {
                *inbox = None;
            }
            command
        }
        None => std::future::pending().await,
    }
}

/// Runs a command on the bus now; the caller gets the result through its reply channel.
async fn execute(link: &mut Link, poller: &poller::Poller, command: BusCommand) {
    match command {
        BusCommand::Write {
            device,
            field,
            value,
            reason,
            reply,
        } => {
            let result = match poller.target(&device) {
                Some((unit, profile)) => write(link, unit, profile, &field, value, &reason).await,
                None => Err(WriteError::UnknownDevice(device)),
            };
            // The caller may have given up waiting; the write was made and logged anyway.
            let _ = reply.send(result);
        }
    }
}

/// Polls every device of one bus until cancelled, and runs the commands of `inbox` between two
/// reads. The decisions are the [`poller::Poller`]'s; this loop only does the I/O.
pub async fn run_bus(
    spec: BusSpec,
    tx: mpsc::Sender<Reading>,
    inbox: mpsc::Receiver<BusCommand>,
    stats: Stats,
    cancel: CancellationToken,
) {
    let BusSpec { bus, devices } = spec;
    let mut link = Link::for_bus(&bus);
    let ms = Duration::from_millis;
    let mut poller = poller::Poller::new(devices, ms(bus.min_backoff_ms), ms(bus.max_backoff_ms));
    if let Ok(mut s) = stats.lock() {
        for name in poller.device_names() {
            s.insert(name.to_owned(), DeviceStats::new(&bus.name));
        }
    }
    tracing::info!(bus = %bus.name, transport = %link.transport(), devices = poller.device_names().count(), "modbus bus started");
    let mut inbox = Some(inbox);
    let start = tokio::time::Instant::now();
    loop {
        while let Some(command) = inbox.as_mut().and_then(|rx| rx.try_recv().ok()) {
            poller.command(command);
        }
        let until = match poller.next(start.elapsed()) {
            poller::Next::Read { unit, request, .. } => {
                let (kind, address, count) = (request.kind, request.address, request.count);
                let result = link.read(unit, kind, address, count).await;
                let ts_ns = crate::model::now_ns();
                if let Some(report) = poller.on_read(start.elapsed(), ts_ns, result) {
                    record(&stats, &report, ts_ns);
                    for r in report.readings {
                        if tx.send(r).await.is_err() {
                            return;
                        }
                    }
                }
                continue;
            }
            poller::Next::Command(command) => {
                execute(&mut link, &poller, command).await;
                continue;
            }
            poller::Next::Wait { until } => Some(start + until),
            poller::Next::Idle => None,
        };
        let sleep = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sleep => {}
            Some(command) = recv(&mut inbox) => poller.command(command),
        }
    }
    tracing::info!(bus = %bus.name, "modbus bus stopped");
}

/// Why a write is made, for the audit line every write logs.
#[derive(Debug, Clone)]
pub struct WriteReason {
    /// e.g. `cli:alice`.
    pub who: String,
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("field {0:?} is not in the profile")]
    UnknownField(String),
    #[error("field {field:?} is {}, which is read-only", kind.described())]
    ReadOnly {
        field: String,
        kind: profile::RegisterKind,
    },
    #[error("{value} is outside the range of field {field:?}: {}", range_text(*min, *max))]
    OutOfRange {
        field: String,
        value: f64,
        min: Option<f64>,
        max: Option<f64>,
    },
    #[error("{value} cannot be encoded as {field:?}'s type")]
    Unencodable { field: String, value: f64 },
    #[error(transparent)]
    Link(#[from] link::Error),
    #[error("no modbus device {0:?}")]
    UnknownDevice(String),
    /// The bus's inbox is full ([`INBOX_CAPACITY`]): it is busy, probably with timeouts.
    #[error("the bus of device {0:?} is busy; try again")]
    Busy(String),
    #[error("the bus task of device {0:?} has stopped")]
    Stopped(String),
}

/// A profile's plausible range in words: "0 to 100", "at least 0", "any finite number".
fn range_text(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{a} to {b}"),
        (Some(a), None) => format!("at least {a}"),
        (None, Some(b)) => format!("at most {b}"),
        (None, None) => "any finite number".to_owned(),
    }
}

/// The one function that writes to a device: typed and range-checked against the profile, and
/// logged with who asked and why. Coils take 0/1; registers take the engineering value.
/// Returns the value the device was sent, as it reads back: a register holds only so many
/// steps, so 2.57 written to a field with scale 0.1 is 2.6.
pub async fn write(
    link: &mut Link,
    unit: u8,
    profile: &Profile,
    field: &str,
    value: f64,
    reason: &WriteReason,
) -> Result<decode::DecodedValue, WriteError> {
    let f = profile
        .field(field)
        .ok_or_else(|| WriteError::UnknownField(field.to_owned()))?;
    if matches!(
        f.kind,
        profile::RegisterKind::Input | profile::RegisterKind::DiscreteInput
    ) {
        return Err(WriteError::ReadOnly {
            field: field.to_owned(),
            kind: f.kind,
        });
    }
    if f.min.is_some_and(|m| value < m) || f.max.is_some_and(|m| value > m) || !value.is_finite() {
        return Err(WriteError::OutOfRange {
            field: field.to_owned(),
            value,
            min: f.min,
            max: f.max,
        });
    }
    let unencodable = || WriteError::Unencodable {
        field: field.to_owned(),
        value,
    };
    let (target, written) = if f.kind == profile::RegisterKind::Coil {
        let on = value != 0.0;
        let target = link::WriteTarget::Coil {
            address: f.address,
            value: on,
        };
        (target, decode::DecodedValue::Bool(on))
    } else {
        let words = decode::encode_number(f, value).ok_or_else(unencodable)?;
        let written = decode::decode_registers(f, &words)
            .map_err(|_| unencodable())?
            .value;
        let target = link::WriteTarget::Registers {
            address: f.address,
            words,
        };
        (target, written)
    };
    let shown = decode::value_text(&written, f.unit.as_deref(), None);
    tracing::info!(who = %reason.who, why = %reason.why, unit, field, value, written = %shown, target = ?target, "modbus write");
    match link.write(unit, &target).await {
        Ok(()) => Ok(written),
        Err(e) => {
            tracing::warn!(who = %reason.who, unit, field, error = %e, "modbus write failed");
            Err(WriteError::from(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(quantity: &str, unit: Option<&str>, expected: (&str, &str)) {
        assert_eq!(
            influx_names(quantity, unit),
            (expected.0.to_owned(), expected.1.to_owned())
        );
    }

    #[test]
    fn quantities_become_measurement_and_field_with_unit() {
        check(
            "digester.pressure",
            Some("mbar"),
            ("digester", "pressure_mbar"),
        );
        check(
            "digester.temperature",
            Some("°C"),
            ("digester", "temperature_c"),
        );
        check("biogas.ch4", Some("%vol"), ("biogas", "ch4_pct"));
        check("biogas.flow", Some("m³/h"), ("biogas", "flow_m3h"));
        check("power.voltage.l1", Some("V"), ("power", "voltage_l1_v"));
        check("digester.ph", Some("pH"), ("digester", "ph"));
        check("compressor.state", None, ("compressor", "state"));
        check("alone", Some("A"), ("modbus", "alone_a"));
    }

    /// For every shipped profile, a full cycle takes exactly the minimum number of requests for
    /// its gap and size limits, computed per table by `plan::min_requests` (itself checked
    /// against brute force), and fields sharing a register cost no extra request.
    #[test]
    fn shipped_profiles_plan_the_minimum_number_of_requests() {
        for (name, _) in BUILTIN_PROFILES {
            let p = builtin_profile(name).unwrap();
            let planner = plan::Planner::new(&p.fields, p.device.limits);
            let requests = planner.plan(&(0..p.fields.len()).collect::<Vec<_>>());
            let mut minimum = 0;
            for kind in [
                profile::RegisterKind::Coil,
                profile::RegisterKind::DiscreteInput,
                profile::RegisterKind::Holding,
                profile::RegisterKind::Input,
            ] {
                let ranges: Vec<(u16, u16)> = p
                    .fields
                    .iter()
                    .filter(|f| f.kind == kind)
                    .map(|f| (f.address, f.count))
                    .collect();
                if ranges.is_empty() {
                    continue;
                }
                let max_len = if matches!(
                    kind,
                    profile::RegisterKind::Coil | profile::RegisterKind::DiscreteInput
                ) {
                    p.device.limits.max_bits
                } else {
                    p.device.limits.max_registers
                };
                minimum += plan::min_requests(&ranges, p.device.limits.max_gap, max_len);
            }
            assert_eq!(requests.len(), minimum, "{name}: {requests:?}");
            let covered: usize = requests.iter().map(|r| r.fields.len()).sum();
            assert_eq!(
                covered,
                p.fields.len(),
                "{name}: every field in exactly one request"
            );
        }
    }

    fn resolved(devices: &str) -> Result<Vec<BusSpec>, String> {
        let text = format!("[[modbus.bus]]\nname = \"rs485\"\ntransport = \"rtu\"\nport = \"/dev/ttyUSB0\"\n{devices}");
        let c = config::Config::parse("gw.toml", &text).map_err(|e| e.to_string())?;
        resolve(&c.origin, &c.modbus).map_err(|e| e.to_string())
    }

    fn dev(name: &str, unit: Option<u8>, profile: &str) -> String {
        let unit = unit.map(|u| format!("unit = {u}\n")).unwrap_or_default();
        format!("[[modbus.device]]\nname = \"{name}\"\nbus = \"rs485\"\n{unit}profile = \"{profile}\"\n")
    }

    #[test]
    fn resolve_loads_profiles_once_and_applies_overrides() {
        let two = format!(
            "{}{}",
            dev("a", Some(1), "eastron-sdm120"),
            dev("b", Some(1), "eastron-sdm630")
        );
        assert_eq!(
            resolved(&two).map(|_| ()),
            Err("gw.toml: modbus.device.unit: devices \"a\" and \"b\" both use unit 1 on bus \"rs485\"".into())
        );
        // Both default to the profile's unit 1.
        let defaults = format!(
            "{}{}",
            dev("a", None, "eastron-sdm120"),
            dev("b", None, "generic-4-20ma-pressure")
        );
        assert!(resolved(&defaults).is_err_and(|e| e.contains("both use unit 1")));
        let missing = dev("x", None, "sdm120");
        let e = resolved(&missing).map(|_| ()).unwrap_err();
        assert!(
            e.starts_with(
                "gw.toml: modbus.device.profile: device \"x\": profile \"sdm120\": no file"
            ),
            "{e}"
        );
        let fast = format!(
            "{}poll_interval_ms = 250\n",
            dev("a", None, "vaisala-mgp261")
        );
        let buses = resolved(&fast).unwrap();
        let d = &buses[0].devices[0];
        assert_eq!((d.name.as_str(), d.unit), ("a", 240));
        assert!(d
            .profile
            .fields
            .iter()
            .all(|f| f.poll_interval == Duration::from_millis(250)));
    }

    #[test]
    fn every_builtin_profile_loads() {
        for (name, _) in BUILTIN_PROFILES {
            let p = load_profile(Path::new("/nonexistent"), name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!p.fields.is_empty(), "{name}");
        }
        let e = load_profile(Path::new("/nonexistent"), "no-such-device").map(|_| ());
        assert_eq!(
            e.map_err(|e| e.to_string()),
            Err(
                "profile \"no-such-device\": no file /nonexistent/no-such-device.toml and no \
                 built-in profile of that name; built-in profiles: compressor-controller, \
                 comwintop-8pt1000, demo-digester, eastron-sdm120, eastron-sdm630, \
                 generic-4-20ma-pressure, vaisala-mgp261"
                    .to_owned()
            )
        );
    }
}
