//! The demo plant: a simulated biogas plant served as a real Modbus TCP server on loopback
//! (tokio-modbus's server), so `gkgw demo` polls it exactly as it would poll hardware.
//!
//! Four devices share the server, each laid out by its shipped profile (the registers are encoded
//! with the profile's own types, scales and word orders, so the gateway's decoding is exercised
//! end to end):
//!
//! | unit | profile | simulates |
//! |---|---|---|
//! | 1 | `demo-digester` | gas holder pressure = production − kitchen use − compressor, slurry temperature with a daily cycle, pH, gas counter and flow |
//! | 2 | `eastron-sdm120` | the compressor's supply: voltage, current, power, energy |
//! | 3 | `compressor-controller` | starts above 30 mbar, stops below 15 mbar; rare over-temperature lockouts |
//! | 4 | `vaisala-mgp261` | CH4 drifting around 60 %, occasional souring (CH4 and pH drop, then recover) |
//!
//! The gas holder runs [`SPEED`]× faster than the wall clock so the compressor cycles within a
//! minute; meal times (breakfast, lunch, dinner) and the temperature cycle follow the real East
//! Africa Time clock. After a grace period, faults happen now and then: the gas analyser stops
//! answering for half a minute (the gateway must time out, back off and recover), the compressor
//! locks out on over-temperature.

use std::collections::{BTreeMap, HashMap};
use std::future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

use crate::config::{ModbusBus, ModbusDevice, ModbusTransport};
use crate::sources::modbus::{
    builtin_profile, decode,
    profile::{DataType, Profile, RegisterKind},
};

/// Plant time per wall-clock time for the gas holder, counters and compressor.
pub const SPEED: f64 = 60.0;
/// `--scenario` starts this long after the plant (the gateway has seen normal readings first).
pub const SCENARIO_DELAY: Duration = Duration::from_secs(20);
/// No simulated fault before this much time has passed.
const FAULT_GRACE: Duration = Duration::from_secs(180);

pub const DIGESTER: u8 = 1;
pub const ENERGY_METER: u8 = 2;
pub const COMPRESSOR: u8 = 3;
pub const GAS_ANALYSER: u8 = 4;

/// (unit, device name, profile) of the plant.
pub const DEVICES: [(u8, &str, &str); 4] = [
    (DIGESTER, "digester-1", "demo-digester"),
    (ENERGY_METER, "compressor-meter", "eastron-sdm120"),
    (COMPRESSOR, "compressor-1", "compressor-controller"),
    (GAS_ANALYSER, "gas-analyser", "vaisala-mgp261"),
];

/// One device's register tables. Addresses not set read as 0; reads past the end of what the
/// profile maps are refused with IllegalDataAddress, as real devices do.
#[derive(Default)]
struct Tables {
    registers: HashMap<(RegisterKind, u16), u16>,
    bits: HashMap<(RegisterKind, u16), bool>,
    /// One past the highest mapped address per kind.
    ends: HashMap<RegisterKind, u32>,
}

struct Unit {
    profile: Profile,
    tables: Tables,
    silent_until: Option<Instant>,
}

impl Unit {
    fn new(profile: Profile) -> Unit {
        let mut tables = Tables::default();
        for f in &profile.fields {
            let end = tables.ends.entry(f.kind).or_insert(0);
            *end = (*end).max(f.end());
        }
        Unit {
            profile,
            tables,
            silent_until: None,
        }
    }

    /// Sets a field to an engineering value, encoded as the profile says.
    fn set(&mut self, field: &str, value: f64) {
        let Some(f) = self.profile.field(field) else {
            debug_assert!(false, "demo plant sets unknown field {field}");
            return;
        };
        match f.data_type {
            DataType::Bit => {
                let key = (f.kind, f.address);
                let bit = 1u16 << f.bit.unwrap_or(0);
                let word = self.tables.registers.entry(key).or_insert(0);
                *word = if value != 0.0 {
                    *word | bit
                } else {
                    *word & !bit
                };
            }
            DataType::Bool
                if matches!(f.kind, RegisterKind::Coil | RegisterKind::DiscreteInput) =>
            {
                self.tables.bits.insert((f.kind, f.address), value != 0.0);
            }
            DataType::Bool => {
                self.tables
                    .registers
                    .insert((f.kind, f.address), u16::from(value != 0.0));
            }
            DataType::String => {}
            _ => {
                if let Some(words) = decode::encode_number(f, value) {
                    for (i, w) in words.into_iter().enumerate() {
                        self.tables
                            .registers
                            .insert((f.kind, f.address + i as u16), w);
                    }
                }
            }
        }
    }

    fn read(
        &self,
        kind: RegisterKind,
        address: u16,
        count: u16,
    ) -> Result<Response, ExceptionCode> {
        if count == 0 || count > 125 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        if u32::from(address) + u32::from(count) > self.tables.ends.get(&kind).copied().unwrap_or(0)
        {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let addrs = address..address + count;
        let words = || {
            addrs
                .clone()
                .map(|a| self.tables.registers.get(&(kind, a)).copied().unwrap_or(0))
                .collect()
        };
        let bits = || {
            addrs
                .clone()
                .map(|a| self.tables.bits.get(&(kind, a)).copied().unwrap_or(false))
                .collect()
        };
        Ok(match kind {
            RegisterKind::Holding => Response::ReadHoldingRegisters(words()),
            RegisterKind::Input => Response::ReadInputRegisters(words()),
            RegisterKind::Coil => Response::ReadCoils(bits()),
            RegisterKind::DiscreteInput => Response::ReadDiscreteInputs(bits()),
        })
    }
}

/// The state behind the Modbus server, shared with the simulation task.
#[derive(Clone)]
struct Registers(Arc<Mutex<BTreeMap<u8, Unit>>>);

impl Registers {
    fn answer(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        let mut units = self
            .0
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        // An absent or silent unit does not answer at all, like a device on a real bus.
        let Some(unit) = units.get_mut(&req.slave) else {
            return Ok(None);
        };
        if unit.silent_until.is_some_and(|t| Instant::now() < t) {
            return Ok(None);
        }
        let response = match req.request {
            Request::ReadHoldingRegisters(a, n) => unit.read(RegisterKind::Holding, a, n)?,
            Request::ReadInputRegisters(a, n) => unit.read(RegisterKind::Input, a, n)?,
            Request::ReadCoils(a, n) => unit.read(RegisterKind::Coil, a, n)?,
            Request::ReadDiscreteInputs(a, n) => unit.read(RegisterKind::DiscreteInput, a, n)?,
            Request::WriteSingleRegister(a, w) => {
                unit.tables.registers.insert((RegisterKind::Holding, a), w);
                Response::WriteSingleRegister(a, w)
            }
            Request::WriteMultipleRegisters(a, ws) => {
                for (i, w) in ws.iter().enumerate() {
                    unit.tables
                        .registers
                        .insert((RegisterKind::Holding, a + i as u16), *w);
                }
                Response::WriteMultipleRegisters(a, ws.len() as u16)
            }
            Request::WriteSingleCoil(a, b) => {
                unit.tables.bits.insert((RegisterKind::Coil, a), b);
                Response::WriteSingleCoil(a, b)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        Ok(Some(response))
    }
}

impl tokio_modbus::server::Service for Registers {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        future::ready(self.answer(req))
    }
}

/// A fault episode the demo plant plays (now and then with faults on, or at once with
/// `gkgw demo --scenario`), each lasting [`SCENARIO_PLANT_S`] of plant time (a few minutes of
/// wall time), for the alarms to raise, be acknowledged and clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The gas holder leaks while nobody cooks and the compressor is off: pressure falls with
    /// no gas through the meter.
    Leak,
    /// Over-feeding: the methanogens fall behind, CH4 and pH drop, then recover.
    Souring,
    /// The compressor locks out and the kitchen is closed: the holder fills past its design
    /// pressure.
    Overpressure,
}

impl Scenario {
    pub fn parse(s: &str) -> Option<Scenario> {
        Some(match s {
            "leak" => Scenario::Leak,
            "souring" => Scenario::Souring,
            "overpressure" => Scenario::Overpressure,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Leak => "leak",
            Scenario::Souring => "souring",
            Scenario::Overpressure => "overpressure",
        }
    }
}

/// Plant seconds a scenario lasts (at [`SPEED`], three wall minutes).
pub const SCENARIO_PLANT_S: f64 = 3.0 * 3600.0;

/// Kitchen gas use in m³/h (plant time) at an hour of day: three meals, a pilot flame between.
pub fn kitchen_use(hour: f64) -> f64 {
    match hour {
        h if (6.0..8.0).contains(&h) => 1.6,
        h if (11.5..13.5).contains(&h) => 2.2,
        h if (17.5..19.5).contains(&h) => 2.4,
        _ => 0.15,
    }
}

/// The physical state of the plant; `step` advances it.
pub struct Physics {
    /// Gas in the holder, m³.
    pub stored: f64,
    pub capacity: f64,
    pub produced_litres: f64,
    pub ch4: f64,
    pub ph: f64,
    /// Plant seconds left in a souring episode.
    pub souring: f64,
    pub compressor_on: bool,
    /// Plant seconds left in a compressor lockout.
    pub lockout: f64,
    pub outlet_c: f64,
    pub energy_kwh: f64,
    pub slurry_c: f64,
    /// Plant seconds left in a leak (gas lost from the holder, kitchen closed).
    pub leak: f64,
    /// Plant seconds left in an overpressure episode (compressor locked, kitchen closed).
    pub overpressure: f64,
    /// Gas through the outlet meter (kitchen and compressor) in the last step, m³/h.
    pub outlet_flow: f64,
}

impl Default for Physics {
    fn default() -> Self {
        Physics {
            stored: 0.8,
            capacity: 2.0,
            produced_litres: 1_250_000.0,
            ch4: 60.0,
            ph: 7.1,
            souring: 0.0,
            compressor_on: false,
            lockout: 0.0,
            outlet_c: 25.0,
            energy_kwh: 312.4,
            slurry_c: 30.0,
            leak: 0.0,
            overpressure: 0.0,
            outlet_flow: 0.0,
        }
    }
}

impl Physics {
    /// Gas holder pressure in mbar: proportional to the stored volume.
    pub fn pressure(&self) -> f64 {
        50.0 * self.stored / self.capacity
    }

    /// Production in m³/h: warmer slurry digests faster, souring slows the methanogens.
    pub fn production(&self) -> f64 {
        let temp = (1.0 + 0.04 * (self.slurry_c - 30.0)).clamp(0.3, 1.3);
        let health = if self.souring > 0.0 { 0.6 } else { 1.0 };
        1.2 * temp * health
    }

    /// Starts a scenario now.
    pub fn start(&mut self, s: Scenario) {
        match s {
            Scenario::Leak => self.leak = SCENARIO_PLANT_S,
            Scenario::Souring => self.souring = SCENARIO_PLANT_S,
            Scenario::Overpressure => {
                self.overpressure = SCENARIO_PLANT_S;
                self.lockout = self.lockout.max(SCENARIO_PLANT_S);
            }
        }
    }

    /// The scenario playing now, if any.
    pub fn scenario(&self) -> Option<Scenario> {
        if self.leak > 0.0 {
            Some(Scenario::Leak)
        } else if self.overpressure > 0.0 {
            Some(Scenario::Overpressure)
        } else if self.souring > 0.0 {
            Some(Scenario::Souring)
        } else {
            None
        }
    }

    /// Advances `dt` of plant time at hour of day `hour`; `fault` decides rare events.
    pub fn step(&mut self, dt: f64, hour: f64, faults: bool, rng: &mut impl Rng) {
        let h = dt / 3600.0;
        // Now and then a leak or an overpressure (about once in two plant days each).
        if faults && self.scenario().is_none() {
            if rng.gen_bool((dt / 172_800.0).min(1.0)) {
                self.start(Scenario::Leak);
            } else if rng.gen_bool((dt / 172_800.0).min(1.0)) {
                self.start(Scenario::Overpressure);
            }
        }
        self.leak = (self.leak - dt).max(0.0);
        self.overpressure = (self.overpressure - dt).max(0.0);
        let closed = self.leak > 0.0 || self.overpressure > 0.0;
        self.slurry_c = 30.0
            + 2.5 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin()
            + rng.gen_range(-0.05..0.05);
        // Compressor: hysteresis on holder pressure, unless locked out.
        let p = self.pressure();
        self.lockout = (self.lockout - dt).max(0.0);
        if self.lockout > 0.0 || self.leak > 0.0 {
            self.compressor_on = false;
        } else if p > 30.0 {
            self.compressor_on = true;
        } else if p < 15.0 {
            self.compressor_on = false;
        }
        if faults && self.compressor_on && rng.gen_bool((dt / 7200.0).min(1.0)) {
            self.lockout = 600.0; // over-temperature: ten plant minutes
            self.compressor_on = false;
        }
        let produced = self.production() * h;
        let compressed = if self.compressor_on { 3.0 * h } else { 0.0 };
        let kitchen = if closed { 0.0 } else { kitchen_use(hour) * h };
        let leaked = if self.leak > 0.0 { 3.0 * h } else { 0.0 };
        self.produced_litres += produced * 1000.0;
        self.outlet_flow = (kitchen + compressed) / h.max(1e-9);
        self.stored = (self.stored + produced - kitchen - compressed - leaked)
            .clamp(0.0, self.capacity * 1.15);
        // Compressor outlet warms while running, cools towards ambient otherwise.
        let target = if self.compressor_on { 55.0 } else { 25.0 };
        self.outlet_c += (target - self.outlet_c) * (dt / 300.0).min(1.0);
        let power_w = if self.compressor_on { 1150.0 } else { 60.0 };
        self.energy_kwh += power_w * h / 1000.0;
        // Methane: a slow random walk around 60 %; souring drops it and the pH, then recovers.
        if faults && self.souring <= 0.0 && rng.gen_bool((dt / 86_400.0).min(1.0)) {
            self.souring = 3.0 * 3600.0;
        }
        self.souring = (self.souring - dt).max(0.0);
        let (ch4_target, ph_target) = if self.souring > 0.0 {
            (46.0, 6.4)
        } else {
            (60.0, 7.1)
        };
        let k = (dt / 1800.0).min(1.0);
        self.ch4 += (ch4_target - self.ch4) * k + rng.gen_range(-0.05..0.05);
        self.ph += (ph_target - self.ph) * k + rng.gen_range(-0.002..0.002);
    }
}

/// Writes the physical state into the devices' registers.
fn publish(units: &mut BTreeMap<u8, Unit>, s: &Physics, rng: &mut impl Rng) {
    if let Some(u) = units.get_mut(&DIGESTER) {
        u.set("pressure", s.pressure() + rng.gen_range(-0.1..0.1));
        u.set("temperature", s.slurry_c);
        u.set("ph", s.ph);
        u.set("gas_volume", s.produced_litres / 1000.0);
        u.set("gas_flow", s.production());
    }
    let (current, pf) = if s.compressor_on {
        (5.9 + rng.gen_range(-0.1..0.1), 0.84)
    } else {
        (0.35, 0.72)
    };
    if let Some(u) = units.get_mut(&ENERGY_METER) {
        let volts = 229.0 + rng.gen_range(-3.0..3.0);
        let apparent = volts * current;
        let active = apparent * pf;
        u.set("voltage", volts);
        u.set("current", current);
        u.set("active_power", active);
        u.set("apparent_power", apparent);
        u.set(
            "reactive_power",
            (apparent * apparent - active * active).sqrt(),
        );
        u.set("power_factor", pf);
        u.set("frequency", 50.0 + rng.gen_range(-0.05..0.05));
        u.set("import_energy", s.energy_kwh);
        u.set("export_energy", 0.0);
        u.set("total_energy", s.energy_kwh);
    }
    if let Some(u) = units.get_mut(&COMPRESSOR) {
        let state = if s.lockout > 0.0 {
            7.0
        } else if s.compressor_on {
            3.0
        } else {
            0.0
        };
        u.set("state", state);
        u.set("running", f64::from(u8::from(s.compressor_on)));
        u.set("remote_enabled", 1.0);
        u.set("fault_overcurrent", 0.0);
        u.set(
            "fault_overtemperature",
            f64::from(u8::from(s.lockout > 0.0)),
        );
        u.set("fault_high_pressure", 0.0);
        u.set("fault_low_suction", 0.0);
        u.set("current", if s.compressor_on { current } else { 0.0 });
        u.set("stage_pressure", if s.compressor_on { 2400.0 } else { 0.0 });
        u.set(
            "discharge_pressure",
            if s.compressor_on {
                9200.0 + rng.gen_range(-100.0..100.0)
            } else {
                0.0
            },
        );
        u.set("outlet_temperature", s.outlet_c);
    }
    if let Some(u) = units.get_mut(&GAS_ANALYSER) {
        let ch4 = s.ch4;
        let h2o = 2.8 + rng.gen_range(-0.05..0.05);
        u.set("ch4", ch4);
        u.set("co2", 100.0 - ch4 - h2o - 0.6);
        u.set("h2o", h2o);
        u.set("sensor_temperature", s.slurry_c - 4.0);
    }
}

/// What the simulated GPIO lines follow (`sim::demo` drives the sim chip from it): the gas
/// through the digester's outlet meter (the kitchen's and the compressor's) in m³/h of plant
/// time, and the compressor's run contact.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpioView {
    /// Gas through the outlet meter (kitchen and compressor), m³/h of plant time.
    pub outlet_m3h: f64,
    pub compressor_on: bool,
}

/// A running demo plant.
pub struct Plant {
    pub addr: SocketAddr,
    /// Updated on every step of the physics (once a wall second).
    pub gpio: tokio::sync::watch::Receiver<GpioView>,
}

impl Plant {
    /// The bus and device entries that make the gateway poll this plant.
    pub fn config(&self) -> (ModbusBus, Vec<ModbusDevice>) {
        let bus = ModbusBus {
            timeout_ms: 500,
            min_backoff_ms: 5_000,
            max_backoff_ms: 30_000,
            ..ModbusBus::new("demo-plant", ModbusTransport::Tcp { address: self.addr })
        };
        let devices = DEVICES
            .iter()
            .map(|(unit, name, profile)| ModbusDevice {
                name: (*name).into(),
                bus: bus.name.clone(),
                unit: Some(*unit),
                profile: (*profile).into(),
                poll_interval_ms: None,
                quantities: Default::default(),
            })
            .collect();
        (bus, devices)
    }
}

/// Starts the plant's Modbus TCP server on `listen` and its simulation; both stop on `cancel`.
/// `faults` enables the rare simulated faults (after a grace period).
/// `scenario` starts once, [`SCENARIO_DELAY`] after the start.
pub async fn start(
    listen: SocketAddr,
    faults: bool,
    scenario: Option<Scenario>,
    cancel: CancellationToken,
) -> anyhow::Result<Plant> {
    let mut units = BTreeMap::new();
    for (unit, _, profile) in DEVICES {
        units.insert(unit, Unit::new(builtin_profile(profile)?));
    }
    let mut rng = rand::rngs::StdRng::from_entropy();
    let physics = Arc::new(Mutex::new(Physics::default()));
    if let Ok(p) = physics.lock() {
        publish(&mut units, &p, &mut rng);
    }
    let registers = Registers(Arc::new(Mutex::new(units)));
    let (gpio_tx, gpio_rx) = tokio::sync::watch::channel(GpioView::default());

    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let server = Server::new(listener);
    let service = registers.clone();
    let on_connected = move |stream, socket_addr| {
        let service = service.clone();
        async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(service.clone()))) }
    };
    let stop = cancel.clone();
    tokio::spawn(async move {
        let on_error = |e| tracing::debug!(error = %e, "demo plant: connection ended");
        if let Err(e) = server
            .serve_until(
                &on_connected,
                on_error,
                async move { stop.cancelled().await },
            )
            .await
        {
            tracing::error!(error = %e, "demo plant Modbus server failed");
        }
    });

    let shared = physics.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let mut scenario = scenario;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let faults = faults && started.elapsed() > FAULT_GRACE;
            let Ok(mut physics) = shared.lock() else {
                break;
            };
            let before = physics.scenario();
            if started.elapsed() >= SCENARIO_DELAY {
                if let Some(s) = scenario.take() {
                    physics.start(s);
                }
            }
            physics.step(SPEED, super::eat_hour(), faults, &mut rng);
            match (before, physics.scenario()) {
                (None, Some(s)) => {
                    tracing::info!(scenario = s.as_str(), "demo plant: scenario starts")
                }
                (Some(s), None) => tracing::info!(
                    scenario = s.as_str(),
                    "demo plant: scenario over, back to normal"
                ),
                _ => {}
            }
            gpio_tx.send_replace(GpioView {
                outlet_m3h: physics.outlet_flow,
                compressor_on: physics.compressor_on,
            });
            let Ok(mut units) = registers.0.lock() else {
                break;
            };
            publish(&mut units, &physics, &mut rng);
            drop(physics);
            // Now and then the gas analyser stops answering for half a minute.
            if faults && rng.gen_bool(1.0 / 900.0) {
                if let Some(u) = units.get_mut(&GAS_ANALYSER) {
                    tracing::info!("demo plant: the gas analyser stops answering for 30 s");
                    u.silent_until = Some(Instant::now() + Duration::from_secs(30));
                }
            }
        }
    });
    Ok(Plant {
        addr,
        gpio: gpio_rx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plant_units() -> BTreeMap<u8, Unit> {
        DEVICES
            .iter()
            .map(|(unit, _, p)| (*unit, Unit::new(builtin_profile(p).unwrap())))
            .collect()
    }

    /// Every field of every plant device decodes from the simulated registers with good quality:
    /// the simulation sets every field its profile maps, in the profile's encoding.
    #[test]
    fn every_simulated_field_decodes_good() {
        let mut units = plant_units();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut s = Physics::default();
        for _ in 0..600 {
            s.step(SPEED, 12.0, false, &mut rng);
        }
        publish(&mut units, &s, &mut rng);
        for (unit, name, _) in DEVICES {
            let u = &units[&unit];
            for f in &u.profile.fields {
                let Ok(Response::ReadHoldingRegisters(regs) | Response::ReadInputRegisters(regs)) =
                    u.read(f.kind, f.address, f.count)
                else {
                    panic!("{name}.{}: not readable", f.name)
                };
                let r = decode::decode_registers(f, &regs).unwrap();
                assert_eq!(r.sanity, decode::Sanity::Good, "{name}.{}: {:?}", f.name, r);
            }
        }
    }

    #[test]
    fn reads_past_the_map_are_refused() {
        let units = plant_units();
        let digester = &units[&DIGESTER];
        assert!(digester.read(RegisterKind::Holding, 0, 8).is_ok());
        assert_eq!(
            digester.read(RegisterKind::Holding, 0, 9).err(),
            Some(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            digester.read(RegisterKind::Input, 0, 1).err(),
            Some(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            digester.read(RegisterKind::Holding, 0, 126).err(),
            Some(ExceptionCode::IllegalDataValue)
        );
    }

    /// The compressor cycles: the holder fills to the start pressure, the compressor draws it
    /// down to the stop pressure, and the pressure stays within the profile's range.
    #[test]
    fn compressor_cycles_between_the_set_points() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = Physics::default();
        let (mut starts, mut stops, mut was) = (0, 0, false);
        for _ in 0..3600 {
            s.step(SPEED, 10.0, false, &mut rng);
            match (was, s.compressor_on) {
                (false, true) => starts += 1,
                (true, false) => stops += 1,
                _ => {}
            }
            was = s.compressor_on;
            assert!((0.0..=60.0).contains(&s.pressure()), "{}", s.pressure());
        }
        assert!(starts >= 5 && stops >= 5, "starts {starts} stops {stops}");
    }

    /// At dinner the kitchen uses more than the digester makes: the pressure falls and the
    /// compressor stays off.
    #[test]
    fn dinner_draws_the_holder_down() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut s = Physics {
            stored: 1.0,
            ..Physics::default()
        };
        let before = s.pressure();
        for _ in 0..30 {
            s.step(SPEED, 18.5, false, &mut rng);
            assert!(!s.compressor_on);
        }
        assert!(s.pressure() < before - 5.0, "{before} -> {}", s.pressure());
    }

    #[test]
    fn souring_lowers_methane_and_ph() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut s = Physics {
            souring: 3.0 * 3600.0,
            ..Physics::default()
        };
        for _ in 0..120 {
            s.step(SPEED, 10.0, false, &mut rng);
        }
        assert!(s.ch4 < 52.0 && s.ph < 6.8, "ch4 {} ph {}", s.ch4, s.ph);
    }
}
