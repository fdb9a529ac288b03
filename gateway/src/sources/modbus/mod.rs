//! Modbus acquisition: device profiles (`profile`), register decoding (`decode`), request
//! planning (`plan`), the connection (`link`), per-device circuit breaker (`health`), and the
//! per-bus poller below that ties them together.
//!
//! One poller task per bus is the bus arbiter: it owns the connection and polls its devices one
//! request at a time, each when its fields fall due. Readings go into the store's channel like any
//! other source's. Architecture invariant: writes go through [`write`] only, which logs who, what
//! and why; the read path never writes.

pub mod commission;
pub mod decode;
pub mod health;
pub mod link;
pub mod plan;
pub mod profile;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{ModbusBus, ModbusDevice, ModbusTransport};
use crate::model::{Quality, Reading, Series, Value};
use link::{Data, Link, Transport};
use profile::{Parity, Profile};

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
) -> Option<Result<decode::Reading, decode::DecodeError>> {
    let span = plan::Span::from(field);
    match data {
        Data::Registers(regs) => req
            .slice(span, regs)
            .map(|s| decode::decode_registers(field, s)),
        Data::Bits(bits) => req.slice(span, bits).map(|s| decode::decode_bits(field, s)),
    }
}

pub fn parse_parity(s: &str) -> Option<Parity> {
    match s.to_ascii_lowercase().as_str() {
        "none" | "n" => Some(Parity::None),
        "even" | "e" => Some(Parity::Even),
        "odd" | "o" => Some(Parity::Odd),
        _ => None,
    }
}

pub fn transport_of(bus: &ModbusBus) -> Transport {
    let addr = || bus.address.parse().expect("validated by config: host:port");
    match bus.transport {
        ModbusTransport::Tcp => Transport::Tcp(addr()),
        ModbusTransport::RtuOverTcp => Transport::RtuOverTcp(addr()),
        ModbusTransport::Rtu => Transport::Rtu {
            port: bus.port.clone(),
            baud: bus.baud,
            parity: parse_parity(&bus.parity).unwrap_or(Parity::None),
            data_bits: bus.data_bits,
            stop_bits: bus.stop_bits,
        },
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

/// One device on a bus, as the poller sees it.
struct Device {
    name: String,
    unit: u8,
    profile: Profile,
    planner: plan::Planner,
    health: health::Health,
    /// Per field: (measurement, influx field name).
    names: Vec<(String, String)>,
}

fn to_value(v: &decode::Value) -> Value {
    match v {
        decode::Value::Number(n) => Value::Float(*n),
        decode::Value::Bool(b) => Value::Bool(*b),
        decode::Value::Text(t) => Value::Str(t.clone()),
    }
}

/// Groups one poll's decoded fields into one reading per measurement. A bad value is left out
/// and replaced by a `{field}_quality` string, and the reading is marked `Quality::Bad`; a
/// reading stamped while the clock is unsynchronised is `ClockUnsynced` (`Stamp::quality`).
fn readings_of(
    dev: &Device,
    decoded: &[(usize, decode::Reading)],
    now: crate::clock::Stamp,
) -> Vec<Reading> {
    let mut by_measurement: BTreeMap<&str, Reading> = BTreeMap::new();
    for (fi, r) in decoded {
        let (m, f) = &dev.names[*fi];
        let reading = by_measurement.entry(m).or_insert_with(|| Reading {
            series: Series::new(m.as_str(), dev.name.as_str()),
            ts_ns: now.ts_ns,
            quality: Quality::Good,
            fields: Vec::new(),
            ack: None,
            receipt: None,
        });
        if r.quality == decode::Quality::Good {
            reading.fields.push((f.clone(), to_value(&r.value)));
        } else {
            reading.quality = Quality::Bad;
            reading.fields.push((
                format!("{f}_quality"),
                Value::Str(r.quality.as_str().into()),
            ));
        }
    }
    let mut readings: Vec<Reading> = by_measurement.into_values().collect();
    for r in &mut readings {
        r.quality = now.quality(r.quality);
    }
    readings
}

/// Polls every device of one bus until cancelled. See the module doc and `health`.
pub async fn run_bus(
    bus: ModbusBus,
    devices: Vec<(ModbusDevice, Profile)>,
    tx: mpsc::Sender<Reading>,
    stats: Stats,
    clock: Arc<crate::clock::Clock>,
    cancel: CancellationToken,
) {
    let mut link = Link::new(transport_of(&bus), Duration::from_millis(bus.timeout_ms))
        .with_inter_frame_delay(bus.inter_frame_delay_ms.map(Duration::from_millis));
    let (min_b, max_b) = (
        Duration::from_millis(bus.min_backoff_ms),
        Duration::from_millis(bus.max_backoff_ms),
    );
    let mut devs: Vec<Device> = devices
        .into_iter()
        .map(|(cfg, mut profile)| {
            if let Some(ms) = cfg.poll_interval_ms {
                for f in &mut profile.fields {
                    f.poll_interval = Duration::from_millis(ms);
                }
            }
            let names = profile
                .fields
                .iter()
                .map(|f| influx_names(&f.quantity, f.unit.as_deref()))
                .collect();
            Device {
                name: cfg.name.clone(),
                unit: cfg.unit.unwrap_or(profile.device.unit_id),
                planner: plan::Planner::new(&profile.fields, profile.device.limits),
                health: health::Health::new(min_b, max_b),
                names,
                profile,
            }
        })
        .collect();
    if let Ok(mut s) = stats.lock() {
        for d in &devs {
            s.insert(d.name.clone(), DeviceStats::new(&bus.name));
        }
    }
    tracing::info!(bus = %bus.name, transport = %link.transport(), devices = devs.len(), "modbus bus started");
    let start = tokio::time::Instant::now();
    loop {
        let next = devs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                d.planner
                    .next_due()
                    .map(|due| (i, due.max(d.health.next_attempt)))
            })
            .min_by_key(|(_, at)| *at);
        let Some((i, at)) = next else { break };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(start + at) => {}
        }
        let now = start.elapsed();
        let dev = &mut devs[i];
        let mut queue: VecDeque<plan::ReadRequest> = dev.planner.poll(now).into();
        let mut decoded: Vec<(usize, decode::Reading)> = Vec::new();
        let mut clean = true;
        let mut failed = None;
        let mut retried = false;
        let mut st = DeviceStats::new(&bus.name);
        while let Some(req) = queue.pop_front() {
            st.requests += 1;
            match link.read(dev.unit, req.kind, req.address, req.count).await {
                Ok((data, latency)) => {
                    st.latency_seconds_sum += latency.as_secs_f64();
                    for &fi in &req.fields {
                        let field = &dev.profile.fields[fi];
                        let r = decode_field(&req, field, &data);
                        match r {
                            Some(Ok(r)) => {
                                clean &= !r.quality.is_fault();
                                decoded.push((fi, r));
                            }
                            other => {
                                clean = false;
                                tracing::warn!(device = %dev.name, field = %field.name, result = ?other.map(|r| r.map(|_| ())), "reply does not cover the field");
                            }
                        }
                    }
                }
                Err(link::Error::Exception(
                    code @ (tokio_modbus::ExceptionCode::IllegalDataAddress
                    | tokio_modbus::ExceptionCode::IllegalDataValue),
                )) => {
                    st.exceptions += 1;
                    clean = false;
                    match dev.planner.on_exception(&req) {
                        plan::Recovery::Retry(parts) => {
                            tracing::info!(device = %dev.name, address = req.address, count = req.count, exception = %link::exception_name(code), "splitting a merged read");
                            for p in parts.into_iter().rev() {
                                queue.push_front(p);
                            }
                        }
                        plan::Recovery::Unreadable(fields) => {
                            let names: Vec<&str> = fields
                                .iter()
                                .map(|f| dev.profile.fields[*f].name.as_str())
                                .collect();
                            tracing::warn!(device = %dev.name, fields = ?names, exception = %link::exception_name(code), "fields unreadable on this device: no longer polled");
                        }
                    }
                }
                Err(e @ link::Error::Exception(_)) => {
                    st.exceptions += 1;
                    clean = false;
                    tracing::warn!(device = %dev.name, address = req.address, error = %e, "modbus exception");
                }
                Err(e @ link::Error::Protocol(_)) if !retried => {
                    // Most often a stray frame: another device's late answer arriving during
                    // this request. The link was reset; ask once more before blaming the device.
                    st.errors += 1;
                    retried = true;
                    tracing::info!(device = %dev.name, error = %e, "malformed or mismatched reply; retrying once");
                    queue.push_front(req);
                }
                Err(e) => {
                    if matches!(e, link::Error::Timeout(_)) {
                        st.timeouts += 1;
                    } else {
                        st.errors += 1;
                    }
                    failed = Some(e);
                    // What this cycle did not read is due again at the next attempt.
                    let missed: Vec<usize> = req
                        .fields
                        .iter()
                        .chain(queue.iter().flat_map(|r| r.fields.iter()))
                        .copied()
                        .collect();
                    dev.planner.retry(&missed, now);
                    // One failed request ends this device's cycle: a dead device costs the bus
                    // at most one timeout per attempt.
                    break;
                }
            }
        }
        let was = dev.health.state;
        match &failed {
            Some(e) => {
                dev.health.on_failure(start.elapsed());
                if dev.health.state != was || dev.health.consecutive_failures == 1 {
                    tracing::warn!(device = %dev.name, unit = dev.unit, error = %e, state = dev.health.state.as_str(), retry_in_s = (dev.health.next_attempt.saturating_sub(start.elapsed())).as_secs_f64(), "modbus device failed");
                }
            }
            None => {
                dev.health.on_answer(clean);
                if was != dev.health.state && was != health::State::Unknown {
                    tracing::info!(device = %dev.name, state = dev.health.state.as_str(), "modbus device state changed");
                }
            }
        }
        let now = clock.now();
        let readings = readings_of(dev, &decoded, now);
        st.readings = readings.len() as u64;
        for (fi, r) in &decoded {
            let f = &dev.profile.fields[*fi];
            let text = if r.quality == decode::Quality::Good {
                commission::value_text(&r.value, f.unit.as_deref())
            } else {
                r.quality.as_str().to_owned()
            };
            st.latest.insert(f.name.clone(), text);
        }
        if let Ok(mut s) = stats.lock() {
            if let Some(d) = s.get_mut(&dev.name) {
                d.state = dev.health.state;
                d.requests += st.requests;
                d.timeouts += st.timeouts;
                d.exceptions += st.exceptions;
                d.errors += st.errors;
                d.latency_seconds_sum += st.latency_seconds_sum;
                d.readings += st.readings;
                if failed.is_none() {
                    d.last_answer_ns = Some(now.ts_ns);
                }
                d.latest.append(&mut st.latest);
            }
        }
        for r in readings {
            if tx.send(r).await.is_err() {
                return;
            }
        }
    }
    tracing::info!(bus = %bus.name, "modbus bus stopped");
}

/// Why a write is made, for the audit line every write logs.
#[derive(Debug, Clone)]
pub struct WriteReason<'a> {
    pub who: &'a str,
    pub why: &'a str,
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
    reason: WriteReason<'_>,
) -> Result<decode::Value, WriteError> {
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
        (target, decode::Value::Bool(on))
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
    let shown = commission::value_text(&written, f.unit.as_deref());
    tracing::info!(who = reason.who, why = reason.why, unit, field, value, written = %shown, target = ?target, "modbus write");
    match link.write(unit, &target).await {
        Ok(()) => Ok(written),
        Err(e) => {
            tracing::warn!(who = reason.who, unit, field, error = %e, "modbus write failed");
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
