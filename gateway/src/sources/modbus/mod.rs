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
pub mod stats;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ModbusBus};
use link::{Data, Link};
use profile::Profile;
pub use stats::{DeviceStats, Stats};

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

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: &'static str,
        message: String,
    },
    /// A field's quantity binding was refused (unknown quantity, other unit, duplicate).
    #[error("{file}: {source}")]
    Plant {
        file: String,
        source: Box<crate::plant::Error>,
    },
}

/// One device as a poller needs it: its profile loaded and the site's overrides applied.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub name: String,
    pub unit: u8,
    pub profile: Profile,
    /// Per profile field: the stored name (measurement, field) of the quantity it feeds.
    pub names: Vec<(String, String)>,
    /// Per profile field: decimals shown on the status page (the quantity's precision).
    pub decimals: Vec<u8>,
}

/// One bus and its devices, ready for [`run_bus`].
#[derive(Debug, Clone)]
pub struct BusSpec {
    pub bus: ModbusBus,
    pub devices: Vec<DeviceSpec>,
}

/// The one build step of the Modbus source: loads each device's profile (from
/// `profiles_dir` or built in), applies `unit`, `poll_interval_ms` and `quantities`, checks that
/// no two devices share a unit on a bus, and binds each field to its quantity in `plant`
/// (instance: the device). `file` is the config's origin, for the errors.
pub fn resolve(
    file: &str,
    modbus: &config::Modbus,
    plant: &mut crate::plant::Plant,
) -> Result<Vec<BusSpec>, ResolveError> {
    let bad = |key, message| ResolveError::Invalid {
        file: file.to_owned(),
        key,
        message,
    };
    let mut buses = Vec::new();
    for bus in &modbus.buses {
        let mut devices: Vec<DeviceSpec> = Vec::new();
        for (i, d) in modbus
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.bus == bus.name)
        {
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
            let (names, decimals) = bind_fields(
                &format!("modbus.device[{i}]"),
                bus,
                d,
                unit,
                &mut profile,
                plant,
            )
            .map_err(|e| ResolveError::Plant {
                file: file.to_owned(),
                source: Box::new(e),
            })?;
            devices.push(DeviceSpec {
                name: d.name.clone(),
                unit,
                profile,
                names,
                decimals,
            });
        }
        buses.push(BusSpec {
            bus: bus.clone(),
            devices,
        });
    }
    Ok(buses)
}

/// Per profile field: stored names, and display decimals.
type FieldNames = (Vec<(String, String)>, Vec<u8>);

/// Binds each field of a device's profile to its quantity (the device's `quantities` override,
/// else the profile's), and sets the field's `quantity` to it. Returns, per field, the stored
/// name and the display decimals. `key` is the device's config key, for errors.
fn bind_fields(
    key: &str,
    bus: &ModbusBus,
    d: &config::ModbusDevice,
    unit: u8,
    profile: &mut Profile,
    plant: &mut crate::plant::Plant,
) -> Result<FieldNames, crate::plant::Error> {
    for name in d.quantities.keys() {
        if profile.field(name).is_none() {
            return Err(crate::plant::Error::BadQuantity {
                key: format!("{key}.quantities"),
                name: name.clone(),
                message: format!("profile {} has no such field", profile.device.model),
            });
        }
    }
    let mut names = Vec::with_capacity(profile.fields.len());
    let mut decimals = Vec::with_capacity(profile.fields.len());
    for f in &mut profile.fields {
        let (qkey, quantity) = match d.quantities.get(&f.name) {
            Some(q) => (format!("{key}.quantities.{}", f.name), q.clone()),
            None => (
                format!("{key}.profile (field {})", f.name),
                f.quantity.clone(),
            ),
        };
        let interval = if f.poll_interval == profile::ONCE {
            "once".to_owned()
        } else {
            format!("{:?}", f.poll_interval)
        };
        let b = plant.bind(
            &qkey,
            &quantity,
            crate::plant::Instance::Device(d.name.clone()),
            format!("modbus {} unit {unit} {}", bus.name, f.name),
            f.unit.as_deref().unwrap_or(""),
            interval,
        )?;
        names.push((b.measurement.clone(), b.field.clone()));
        decimals.push(b.quantity.precision);
        f.quantity = quantity;
    }
    Ok((names, decimals))
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
    d.counts.add(c);
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
    tx: crate::intake::Intake,
    inbox: mpsc::Receiver<BusCommand>,
    stats: Stats,
    clock: Arc<crate::clock::Clock>,
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
    // Readings wait here while the store's channel is full, so the bus keeps being polled
    // (and the live stream keeps getting its values) while the store cannot commit.
    let mut spill = crate::intake::Spill::default();
    let start = tokio::time::Instant::now();
    loop {
        if tx.flush(&mut spill).is_err() {
            return;
        }
        while let Some(command) = inbox.as_mut().and_then(|rx| rx.try_recv().ok()) {
            poller.command(command);
        }
        let until = match poller.next(start.elapsed()) {
            poller::Next::Read { unit, request, .. } => {
                let (kind, address, count) = (request.kind, request.address, request.count);
                let result = link.read(unit, kind, address, count).await;
                let stamp = clock.now();
                if let Some(report) = poller.on_read(start.elapsed(), stamp, result) {
                    record(&stats, &report, stamp.ts_ns);
                    for r in report.readings {
                        if tx.offer(r, &mut spill).is_err() {
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
    // Stopping: what is spilled still goes to the store (the committer drains its channel).
    if !spill.is_empty() && tx.drain(&mut spill).await.is_err() {
        tracing::warn!(bus = %bus.name, "store gone at shutdown: spilled readings not stored");
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
        let mut plant = crate::plant::Plant::new(crate::plant::Catalogue::builtin());
        resolve(&c.origin, &c.modbus, &mut plant).map_err(|e| e.to_string())
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
