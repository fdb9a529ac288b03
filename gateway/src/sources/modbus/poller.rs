//! The bus poller as a state machine: what the bus does next, and what a reply turns into.
//!
//! No I/O and no clock inside (in the manner of `health.rs`): `now` is the time since the
//! poller started, passed in; the caller sends the one request [`Poller::next`] asks for and
//! feeds the result to [`Poller::on_read`]; commands (writes) are queued with
//! [`Poller::command`] and handed back by `next` between two reads, so requests on the bus
//! never interleave. `run_bus` in `mod.rs` is the short loop around it that does the I/O.
//!
//! A cycle is one device's due fields: planned into the fewest reads (`plan`), sent one by one.
//! IllegalDataAddress/IllegalDataValue splits a merged read (the planner remembers); a
//! malformed or mismatched reply is asked once more (usually another device's late answer);
//! a timeout or I/O error ends the cycle, the fields it did not read are due again at the
//! device's next attempt, and the device backs off (`health`). So a dead device costs the bus
//! one timeout per backoff interval.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio_modbus::ExceptionCode;

use super::decode::{self, Decoded};
use super::link::{self, Data};
use super::plan::{self, ReadRequest};
use super::profile::Profile;
use super::stats::Counts;
use super::{health, BusCommand, DeviceSpec};
use crate::clock::Stamp;
use crate::model::{Quality, Reading, Series, Value};

/// What the bus should do now.
#[derive(Debug)]
pub enum Next {
    /// Send this read, then feed the result to [`Poller::on_read`].
    Read {
        device: usize,
        unit: u8,
        request: ReadRequest,
    },
    /// Run this command now (nothing is in flight), then ask again.
    Command(BusCommand),
    /// Nothing is due before `until` (time since start), unless a command comes.
    Wait { until: Duration },
    /// Nothing is readable at all: only commands can come.
    Idle,
}

/// What a finished cycle turned into.
#[derive(Debug)]
pub struct Report {
    pub device: String,
    pub state: health::State,
    /// The device answered (the cycle did not end in a timeout or I/O error).
    pub answered: bool,
    pub stats: Counts,
    /// Field name → value text for the status page (the quality's name when bad).
    pub latest: Vec<(String, String)>,
    pub readings: Vec<Reading>,
}

/// One device on the bus, as the poller sees it.
struct Device {
    spec: DeviceSpec,
    planner: plan::Planner,
    health: health::Health,
    /// Per field: (measurement, influx field name).
    names: Vec<(String, String)>,
}

/// The cycle in progress: one device's reads of this round.
struct Cycle {
    device: usize,
    queue: VecDeque<ReadRequest>,
    in_flight: Option<ReadRequest>,
    decoded: Vec<(usize, Decoded)>,
    clean: bool,
    retried: bool,
    stats: Counts,
}

/// The state of one bus: its devices, the cycle in progress and the commands waiting.
pub struct Poller {
    devices: Vec<Device>,
    cycle: Option<Cycle>,
    commands: VecDeque<BusCommand>,
}

impl Poller {
    /// Everything is due at time zero; a device that failed waits between `min_backoff` and
    /// `max_backoff`.
    pub fn new(devices: Vec<DeviceSpec>, min_backoff: Duration, max_backoff: Duration) -> Poller {
        let devices = devices
            .into_iter()
            .map(|spec| Device {
                planner: plan::Planner::new(&spec.profile.fields, spec.profile.device.limits),
                health: health::Health::new(min_backoff, max_backoff),
                names: spec.names.clone(),
                spec,
            })
            .collect();
        Poller {
            devices,
            cycle: None,
            commands: VecDeque::new(),
        }
    }

    pub fn device_names(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(|d| d.spec.name.as_str())
    }

    /// The unit id and profile of a device, for a command.
    pub fn target(&self, device: &str) -> Option<(u8, &Profile)> {
        self.devices
            .iter()
            .find(|d| d.spec.name == device)
            .map(|d| (d.spec.unit, &d.spec.profile))
    }

    /// Queues a command; [`Poller::next`] hands it back before the next read.
    pub fn command(&mut self, command: BusCommand) {
        self.commands.push_back(command);
    }

    /// What to do at `now`. Call [`Poller::on_read`] after each `Read` before asking again.
    pub fn next(&mut self, now: Duration) -> Next {
        debug_assert!(
            self.cycle.as_ref().is_none_or(|c| c.in_flight.is_none()),
            "on_read first"
        );
        if let Some(command) = self.commands.pop_front() {
            return Next::Command(command);
        }
        loop {
            if let Some(c) = self.cycle.as_mut() {
                if let Some(request) = c.queue.pop_front() {
                    c.in_flight = Some(request.clone());
                    let unit = self.devices[c.device].spec.unit;
                    let device = c.device;
                    return Next::Read {
                        device,
                        unit,
                        request,
                    };
                }
                self.cycle = None;
            }
            let due = self
                .devices
                .iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    let due = d.planner.next_due()?;
                    Some((i, due.max(d.health.next_attempt)))
                })
                .min_by_key(|(_, at)| *at);
            match due {
                None => return Next::Idle,
                Some((_, at)) if at > now => return Next::Wait { until: at },
                Some((i, _)) => {
                    let queue = self.devices[i].planner.poll(now).into();
                    self.cycle = Some(Cycle {
                        device: i,
                        queue,
                        in_flight: None,
                        decoded: Vec::new(),
                        clean: true,
                        retried: false,
                        stats: Counts::default(),
                    });
                }
            }
        }
    }

    /// Feeds the result of the read [`Poller::next`] asked for, received at `now`; `stamp` is
    /// the clock's stamp for the readings if this ends the cycle. Returns the cycle's report when it
    /// ended.
    pub fn on_read(
        &mut self,
        now: Duration,
        stamp: Stamp,
        result: Result<(Data, Duration), link::Error>,
    ) -> Option<Report> {
        let c = self.cycle.as_mut()?;
        let req = c.in_flight.take()?;
        let dev = &mut self.devices[c.device];
        let name = dev.spec.name.as_str();
        c.stats.requests += 1;
        let mut failed = None;
        match result {
            Ok((data, latency)) => {
                c.stats.latency_seconds_sum += latency.as_secs_f64();
                for &fi in &req.fields {
                    let field = &dev.spec.profile.fields[fi];
                    match super::decode_field(&req, field, &data) {
                        Some(Ok(r)) => {
                            c.clean &= !r.sanity.is_fault();
                            c.decoded.push((fi, r));
                        }
                        other => {
                            c.clean = false;
                            tracing::warn!(device = %name, field = %field.name, result = ?other.map(|r| r.map(|_| ())), "reply does not cover the field");
                        }
                    }
                }
            }
            Err(link::Error::Exception(
                code @ (ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue),
            )) => {
                c.stats.exceptions += 1;
                c.clean = false;
                match dev.planner.on_exception(&req) {
                    plan::Recovery::Retry(parts) => {
                        tracing::info!(device = %name, address = req.address, count = req.count, exception = %link::exception_name(code), "splitting a merged read");
                        for p in parts.into_iter().rev() {
                            c.queue.push_front(p);
                        }
                    }
                    plan::Recovery::Unreadable(fields) => {
                        let names: Vec<&str> = fields
                            .iter()
                            .map(|f| dev.spec.profile.fields[*f].name.as_str())
                            .collect();
                        tracing::warn!(device = %name, fields = ?names, exception = %link::exception_name(code), "fields unreadable on this device: no longer polled");
                    }
                }
            }
            Err(e @ link::Error::Exception(_)) => {
                c.stats.exceptions += 1;
                c.clean = false;
                tracing::warn!(device = %name, address = req.address, error = %e, "modbus exception");
            }
            Err(e @ link::Error::Protocol(_)) if !c.retried => {
                // Most often a stray frame: another device's late answer arriving during this
                // request. The link was reset; ask once more before blaming the device.
                c.stats.errors += 1;
                c.retried = true;
                tracing::info!(device = %name, error = %e, "malformed or mismatched reply; retrying once");
                c.queue.push_front(req);
            }
            Err(e) => {
                if matches!(e, link::Error::Timeout(_)) {
                    c.stats.timeouts += 1;
                } else {
                    c.stats.errors += 1;
                }
                // What this cycle did not read is due again at the next attempt.
                let missed: Vec<usize> = req
                    .fields
                    .iter()
                    .chain(c.queue.iter().flat_map(|r| r.fields.iter()))
                    .copied()
                    .collect();
                dev.planner.retry(&missed, now);
                // One failed request ends this device's cycle: a dead device costs the bus at
                // most one timeout per attempt.
                c.queue.clear();
                failed = Some(e);
            }
        }
        if !c.queue.is_empty() {
            return None;
        }
        let c = self.cycle.take()?;
        let dev = &mut self.devices[c.device];
        Some(finish(dev, c, failed, now, stamp))
    }
}

/// Ends a cycle: health and backoff, readings, status texts.
fn finish(
    dev: &mut Device,
    c: Cycle,
    failed: Option<link::Error>,
    now: Duration,
    stamp: Stamp,
) -> Report {
    let was = dev.health.state;
    let name = &dev.spec.name;
    match &failed {
        Some(e) => {
            dev.health.on_failure(now);
            if dev.health.state != was || dev.health.consecutive_failures == 1 {
                let retry_in_s = dev.health.next_attempt.saturating_sub(now).as_secs_f64();
                tracing::warn!(device = %name, unit = dev.spec.unit, error = %e, state = dev.health.state.as_str(), retry_in_s, "modbus device failed");
            }
        }
        None => {
            dev.health.on_answer(c.clean);
            if was != dev.health.state && was != health::State::Unknown {
                tracing::info!(device = %name, state = dev.health.state.as_str(), "modbus device state changed");
            }
        }
    }
    let readings = readings_of(dev, &c.decoded, stamp);
    let latest = c
        .decoded
        .iter()
        .map(|(fi, r)| {
            let f = &dev.spec.profile.fields[*fi];
            let text = if r.sanity == decode::Sanity::Good {
                decode::field_text(f, &r.value, Some(dev.spec.decimals[*fi]))
            } else {
                r.sanity.as_str().to_owned()
            };
            (f.name.clone(), text)
        })
        .collect();
    Report {
        device: name.clone(),
        state: dev.health.state,
        answered: failed.is_none(),
        stats: Counts {
            readings: readings.len() as u64,
            ..c.stats
        },
        latest,
        readings,
    }
}

fn to_value(v: &decode::DecodedValue) -> Value {
    match v {
        decode::DecodedValue::Number(n) => Value::Float(*n),
        decode::DecodedValue::Bool(b) => Value::Bool(*b),
        decode::DecodedValue::Text(t) => Value::Str(t.clone()),
    }
}

/// Groups one cycle's decoded fields into one reading per measurement. A bad value is left out
/// and replaced by a `{field}_quality` string, and the reading is marked `Quality::Bad`. An
/// enum field is stored as its number (the InfluxDB schema and the dashboards query it so).
/// A reading stamped while the clock is unsynchronised is `ClockUnsynced` (`Stamp::quality`).
/// The one place Modbus readings are built.
fn readings_of(dev: &Device, decoded: &[(usize, Decoded)], stamp: Stamp) -> Vec<Reading> {
    let mut by_measurement: BTreeMap<&str, Reading> = BTreeMap::new();
    for (fi, r) in decoded {
        let (m, f) = &dev.names[*fi];
        let reading = by_measurement.entry(m).or_insert_with(|| Reading {
            series: Series::new(m.as_str(), dev.spec.name.as_str()),
            ts_ns: stamp.ts_ns,
            quality: Quality::Good,
            fields: Vec::new(),
            ack: None,
            receipt: None,
        });
        if r.sanity == decode::Sanity::Good {
            reading.fields.push((f.clone(), to_value(&r.value)));
        } else {
            reading.quality = Quality::Bad;
            reading
                .fields
                .push((format!("{f}_quality"), Value::Str(r.sanity.as_str().into())));
        }
    }
    let mut readings: Vec<Reading> = by_measurement.into_values().collect();
    for r in &mut readings {
        r.quality = stamp.quality(r.quality);
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::super::{profile, BusCommand, WriteReason};
    use super::*;
    use std::fmt::Write as _;

    const MS: Duration = Duration::from_millis(1);

    /// A profile of holding registers `(name, address, poll interval in ms)`, u16 each.
    fn device(name: &str, unit: u8, fields: &[(&str, u16, u64)]) -> DeviceSpec {
        let mut src = String::from("[device]\nmodel = \"m\"\nmanufacturer = \"x\"\n");
        for (f, address, ms) in fields {
            let _ = write!(src, "[[field]]\nname = \"{f}\"\nquantity = \"t.{f}\"\nkind = \"holding\"\naddress = {address}\ntype = \"u16\"\npoll_interval = \"{ms}ms\"\n");
        }
        let profile = profile::parse(&src, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        DeviceSpec {
            name: name.to_owned(),
            unit,
            names: profile
                .fields
                .iter()
                .map(|f| crate::plant::default_names(&f.quantity, f.unit.as_deref().unwrap_or("")))
                .collect(),
            decimals: vec![1; profile.fields.len()],
            profile,
        }
    }

    /// How the simulated bus answers: `bus(unit, request)`. Runs `poller` until `until` ms, every answered read taking 10 ms and a failed one 100 ms
    /// (the timeout), with `commands` queued at their time (ms). Returns one line per event:
    /// `t unit 1 read 0+2`, `t unit 1 timeout`, `t device a: 2 readings, online`,
    /// `t command write a.x`.
    fn run(
        mut poller: Poller,
        until: u64,
        bus: &mut dyn FnMut(u8, &ReadRequest) -> Result<Data, link::Error>,
        mut commands: Vec<(u64, BusCommand)>,
    ) -> String {
        let mut out = String::new();
        let mut now = Duration::ZERO;
        let end = Duration::from_millis(until);
        let ms = |t: &u64| Duration::from_millis(*t);
        loop {
            if let Some(i) = commands.iter().position(|(at, _)| ms(at) <= now) {
                poller.command(commands.remove(i).1);
            }
            let t = now.as_millis();
            match poller.next(now) {
                Next::Read { unit, request, .. } => {
                    let (a, n) = (request.address, request.count);
                    let _ = write!(out, "{t} unit {unit} read {a}+{n}");
                    let result = bus(unit, &request);
                    match &result {
                        Ok(_) => now += 10 * MS,
                        Err(e) => {
                            now += 100 * MS;
                            let _ = write!(out, ": {e}");
                        }
                    }
                    out.push('\n');
                    let result = result.map(|d| (d, 10 * MS));
                    if let Some(r) = poller.on_read(now, Stamp::new(7, true), result) {
                        let t = now.as_millis();
                        let fields: usize = r.readings.iter().map(|r| r.fields.len()).sum();
                        let _ = writeln!(
                            out,
                            "{t} device {}: {fields} fields, {}",
                            r.device,
                            r.state.as_str()
                        );
                    }
                }
                Next::Command(BusCommand::Write { device, field, .. }) => {
                    let _ = writeln!(out, "{t} command write {device}.{field}");
                    now += 10 * MS;
                }
                // A command that comes while the bus waits is taken at once.
                Next::Wait { until } => match commands.iter().map(|(at, _)| ms(at)).min() {
                    Some(c) if c < until => now = now.max(c),
                    _ if until > end => break,
                    _ => now = until,
                },
                Next::Idle => break,
            }
        }
        out
    }

    fn registers(_unit: u8, r: &ReadRequest) -> Result<Data, link::Error> {
        Ok(Data::Registers((r.address..r.address + r.count).collect()))
    }

    fn check(got: &str, expected: &str) {
        let expected: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let got: Vec<&str> = got.lines().collect();
        assert_eq!(got, expected, "\n{}", got.join("\n"));
    }

    #[test]
    fn fields_are_read_when_due_in_the_fewest_reads() {
        let a = device("a", 1, &[("x", 0, 1000), ("y", 1, 1000), ("z", 2, 3000)]);
        let p = Poller::new(vec![a], 5000 * MS, 60_000 * MS);
        let got = run(p, 3000, &mut registers, Vec::new());
        check(
            &got,
            "0 unit 1 read 0+3
             10 device a: 3 fields, online
             1000 unit 1 read 0+2
             1010 device a: 2 fields, online
             2000 unit 1 read 0+2
             2010 device a: 2 fields, online
             3000 unit 1 read 0+3
             3010 device a: 3 fields, online",
        );
    }

    #[test]
    fn a_refused_merged_read_is_split_and_the_split_remembered() {
        let a = device("a", 1, &[("x", 0, 1000), ("y", 4, 1000)]);
        let p = Poller::new(vec![a], 5000 * MS, 60_000 * MS);
        let mut bus = |unit: u8, r: &ReadRequest| {
            if r.count > 2 {
                return Err(link::Error::Exception(ExceptionCode::IllegalDataAddress));
            }
            registers(unit, r)
        };
        let got = run(p, 1000, &mut bus, Vec::new());
        check(
            &got,
            "0 unit 1 read 0+5: device answered with exception 2: illegal data address (no such register on this device)
             100 unit 1 read 0+1
             110 unit 1 read 4+1
             120 device a: 2 fields, degraded
             1000 unit 1 read 0+1
             1010 unit 1 read 4+1
             1020 device a: 2 fields, online",
        );
    }

    /// A dead device ends its cycle at the first timeout and backs off (1 s, 2 s, then capped
    /// at 2 s); its neighbour keeps its period, delayed by at most one timeout per attempt.
    #[test]
    fn a_failed_device_backs_off_and_its_neighbour_keeps_polling() {
        let dead = device("dead", 1, &[("x", 0, 500), ("y", 40, 500)]);
        let alive = device("alive", 2, &[("x", 0, 500)]);
        let p = Poller::new(vec![dead, alive], 1000 * MS, 2000 * MS);
        let mut bus = |unit: u8, r: &ReadRequest| match unit {
            1 => Err(link::Error::Timeout(100 * MS)),
            _ => registers(unit, r),
        };
        let got = run(p, 4000, &mut bus, Vec::new());
        check(
            &got,
            "0 unit 1 read 0+1: no answer within 100ms (timeout)
             100 device dead: 0 fields, degraded
             100 unit 2 read 0+1
             110 device alive: 1 fields, online
             500 unit 2 read 0+1
             510 device alive: 1 fields, online
             1000 unit 2 read 0+1
             1010 device alive: 1 fields, online
             1100 unit 1 read 0+1: no answer within 100ms (timeout)
             1200 device dead: 0 fields, degraded
             1500 unit 2 read 0+1
             1510 device alive: 1 fields, online
             2000 unit 2 read 0+1
             2010 device alive: 1 fields, online
             2500 unit 2 read 0+1
             2510 device alive: 1 fields, online
             3000 unit 2 read 0+1
             3010 device alive: 1 fields, online
             3200 unit 1 read 0+1: no answer within 100ms (timeout)
             3300 device dead: 0 fields, offline
             3500 unit 2 read 0+1
             3510 device alive: 1 fields, online
             4000 unit 2 read 0+1
             4010 device alive: 1 fields, online",
        );
    }

    #[test]
    fn a_mismatched_reply_is_asked_once_more() {
        let a = device("a", 1, &[("x", 0, 1000)]);
        let p = Poller::new(vec![a], 5000 * MS, 60_000 * MS);
        let mut calls = 0;
        let mut bus = |unit: u8, r: &ReadRequest| {
            calls += 1;
            match calls {
                1 => Err(link::Error::Protocol("header mismatch".into())),
                _ => registers(unit, r),
            }
        };
        let got = run(p, 0, &mut bus, Vec::new());
        check(
            &got,
            "0 unit 1 read 0+1: malformed reply (CRC, header or length mismatch): header mismatch
             100 unit 1 read 0+1
             110 device a: 1 fields, online",
        );
    }

    fn write(device: &str, field: &str) -> BusCommand {
        let (reply, _) = tokio::sync::oneshot::channel();
        BusCommand::Write {
            device: device.to_owned(),
            field: field.to_owned(),
            value: 1.0,
            reason: WriteReason {
                who: "test".into(),
                why: "test".into(),
            },
            reply,
        }
    }

    /// A command goes out between two reads, also in the middle of a cycle, never during one.
    #[test]
    fn a_command_runs_between_two_reads() {
        // Two reads per cycle: the fields are too far apart to merge.
        let a = device("a", 1, &[("x", 0, 1000), ("y", 100, 1000)]);
        let p = Poller::new(vec![a], 5000 * MS, 60_000 * MS);
        let commands = vec![(5, write("a", "x")), (500, write("a", "y"))];
        let got = run(p, 1000, &mut registers, commands);
        check(
            &got,
            "0 unit 1 read 0+1
             10 command write a.x
             20 unit 1 read 100+1
             30 device a: 2 fields, online
             500 command write a.y
             1000 unit 1 read 0+1
             1010 unit 1 read 100+1
             1020 device a: 2 fields, online",
        );
    }

    #[test]
    fn an_enum_is_stored_as_its_number_and_shown_by_name() {
        let mut a = device("a", 1, &[("state", 0, 1000)]);
        a.profile.fields[0].enum_names = BTreeMap::from([(0, "idle".to_owned())]);
        let mut p = Poller::new(vec![a], 5000 * MS, 60_000 * MS);
        assert!(matches!(p.next(Duration::ZERO), Next::Read { .. }));
        let report = p
            .on_read(MS, Stamp::new(7, true), Ok((Data::Registers(vec![0]), MS)))
            .expect("one read, one cycle");
        assert_eq!(report.latest, [("state".to_owned(), "idle".to_owned())]);
        assert_eq!(
            report.readings[0].fields,
            [("state".into(), Value::Float(0.0))]
        );
        assert_eq!(report.readings[0].ts_ns, 7);
        assert!(matches!(p.next(MS), Next::Wait { until } if until == 1000 * MS));
    }
}
