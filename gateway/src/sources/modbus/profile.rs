//! Device profiles: one TOML file per device model saying where each quantity
//! lives in the device's Modbus map and how to turn registers into a number.
//!
//! Profiles are data, not code, so supporting a new meter or probe means
//! writing a file an installer can review. The loader is strict
//! (`deny_unknown_fields` plus cross-field checks) because a typo in a
//! register map does not fail loudly on the bus: it yields plausible-looking
//! wrong numbers. Every validation error names the file and the field.
//! The schema is documented for installers in `sensors/README.md`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::config::Parity;

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{origin}: {err}")]
    Io { origin: String, err: std::io::Error },
    /// Syntax and schema errors; toml's message carries line and column.
    #[error("{origin}: {err}")]
    Toml {
        origin: String,
        err: toml::de::Error,
    },
    #[error("{origin}: device: {message}")]
    Device { origin: String, message: String },
    #[error("{origin}: field \"{field}\": {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
    /// A profile name that is neither a file nor built in.
    #[error("profile {name:?}: no file {tried} and no built-in profile of that name; built-in profiles: {}", builtin.join(", "))]
    NotFound {
        name: String,
        tried: String,
        builtin: Vec<&'static str>,
    },
}

/// The four Modbus data tables; each has its own function code and address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    Coil,
    DiscreteInput,
    Holding,
    Input,
}

impl RegisterKind {
    /// Coils and discrete inputs are read as bits, the others as 16-bit registers.
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::DiscreteInput)
    }

    /// The table in words, with its article: "a coil", "an input register".
    pub fn described(self) -> &'static str {
        match self {
            RegisterKind::Coil => "a coil",
            RegisterKind::DiscreteInput => "a discrete input",
            RegisterKind::Holding => "a holding register",
            RegisterKind::Input => "an input register",
        }
    }
}

/// How a field's registers are interpreted. `Bit` is one bit of a 16-bit
/// register (`bit = n`); `Bool` is a coil or discrete input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bool,
    Bit,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    String,
}

impl DataType {
    /// Registers taken by fixed-width types; `None` for strings, sized by `length`.
    pub fn width(self) -> Option<u16> {
        match self {
            DataType::Bool | DataType::Bit | DataType::U16 | DataType::I16 => Some(1),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(2),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(4),
            DataType::String => None,
        }
    }

    /// Types that decode to a number and so accept scale, offset, range and sentinels.
    pub fn is_number(self) -> bool {
        !matches!(self, DataType::Bool | DataType::Bit | DataType::String)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }
}

/// Byte layout of a multi-byte value, named by where the most significant
/// byte `A` ends up in the register stream. ABCD is plain big-endian; CDAB
/// swaps the 16-bit words (low word first, the common "Modicon float");
/// BADC swaps bytes inside each register; DCBA does both. For 64-bit values
/// the same two swaps apply to all four words. For single-register types only
/// the byte swap matters.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum WordOrder {
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];

    /// Least significant register comes first on the wire.
    pub fn swaps_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }

    /// Low byte comes first inside each register.
    pub fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }
}

/// How `address` values in a profile are written. Manuals disagree: some
/// print protocol addresses (0-based, as sent on the wire), some 1-based
/// register numbers, some Modicon numbers where the leading digit names the
/// table (00001 coils, 10001 discrete inputs, 30001 input, 40001 holding).
/// Copying the manual verbatim and stating the convention once avoids the
/// classic off-by-one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressBase {
    Zero,
    One,
    Modicon,
}

impl AddressBase {
    /// Converts a documented address to the 0-based protocol address.
    fn to_protocol(self, kind: RegisterKind, address: u32) -> Result<u16, String> {
        let base = match self {
            AddressBase::Zero => 0,
            AddressBase::One => 1,
            AddressBase::Modicon => match kind {
                RegisterKind::Coil => 1,
                RegisterKind::DiscreteInput => 10001,
                RegisterKind::Input => 30001,
                RegisterKind::Holding => 40001,
            },
        };
        let top = if self == AddressBase::Modicon {
            base + 9998
        } else {
            base + 65535
        };
        if address < base || address > top {
            let why = format!("for a {kind:?} field with address_base {self:?}");
            return Err(format!("address {address} is outside {base}..={top} {why}"));
        }
        u16::try_from(address - base).map_err(|_| format!("address {address} out of range"))
    }
}

/// Request-shaping limits for the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest hole (in registers or bits) the planner may read across to merge two fields.
    pub max_gap: u16,
    /// Registers per read of holding/input registers (protocol maximum 125).
    pub max_registers: u16,
    /// Bits per read of coils/discrete inputs (protocol maximum 2000).
    pub max_bits: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_gap: DEFAULT_MAX_GAP,
            max_registers: 125,
            max_bits: 2000,
        }
    }
}

impl Limits {
    pub fn max_request(&self, kind: RegisterKind) -> u16 {
        if kind.is_bit() {
            self.max_bits
        } else {
            self.max_registers
        }
    }
}

/// Merging across a few unused registers is cheaper than a new request
/// (8-byte request, 5-byte response header, two 3.5-character silences),
/// and a device that rejects the hole is handled by the planner's learning.
const DEFAULT_MAX_GAP: u16 = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub model: String,
    pub manufacturer: String,
    pub description: String,
    pub unit_id: u8,
    pub word_order: WordOrder,
    pub limits: Limits,
    pub poll_interval: Duration,
}

/// One resolved field: addresses are 0-based protocol addresses and every
/// default from `[device]` has been applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub quantity: String,
    pub description: String,
    pub kind: RegisterKind,
    pub address: u16,
    pub data_type: DataType,
    /// Bit number for `DataType::Bit`.
    pub bit: Option<u8>,
    /// Registers (or bits) occupied on the bus.
    pub count: u16,
    pub word_order: WordOrder,
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
    pub poll_interval: Duration,
    /// Raw values meaning "no reading": matched against the register bit
    /// pattern for integer types (so 0x8000 and -32768 both work for i16),
    /// against the unscaled value for floats.
    pub sentinels: Vec<i64>,
    pub nan_is_missing: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Names of an integer field's values (`[field.enum]`, `0 = "idle"`): the value is stored
    /// as the number and shown as its name.
    pub enum_names: BTreeMap<i64, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Where the profile came from, used in every error message.
    pub origin: String,
    pub device: Device,
    pub fields: Vec<Field>,
}

impl Field {
    /// One past the last address, as u32 so 0xFFFF + 1 does not overflow.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

impl Profile {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    device: RawDevice,
    #[serde(default)]
    field: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    model: String,
    manufacturer: String,
    description: Option<String>,
    unit_id: Option<u8>,
    // The device's factory serial settings, for the installer reading the profile: the bus's
    // settings are the site config's (`[[modbus.bus]]`), so these are checked and not kept.
    baud: Option<u32>,
    #[serde(rename = "parity")]
    _parity: Option<Parity>,
    data_bits: Option<u8>,
    stop_bits: Option<u8>,
    address_base: Option<u32>,
    word_order: Option<WordOrder>,
    max_registers_per_request: Option<u16>,
    max_bits_per_request: Option<u16>,
    max_gap: Option<u16>,
    poll_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    quantity: String,
    description: Option<String>,
    kind: RegisterKind,
    address: u32,
    #[serde(rename = "type")]
    data_type: DataType,
    bit: Option<u8>,
    length: Option<u16>,
    word_order: Option<WordOrder>,
    scale: Option<f64>,
    offset: Option<f64>,
    unit: Option<String>,
    poll_interval: Option<String>,
    #[serde(default)]
    sentinels: Vec<i64>,
    #[serde(default)]
    nan_is_missing: bool,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(rename = "enum", default)]
    enum_names: BTreeMap<String, String>,
}

/// `return Err(format!(...))` unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        match $cond {
            true => {}
            false => return Err(format!($($msg)+)),
        }
    };
}

/// Parses "500ms", "5s", "2m", "1h": one integer and one unit, greater than zero.
/// `poll_interval = "once"`: read at the first successful poll (firmware versions, serial
/// numbers), then not again while the gateway runs.
pub const ONCE: Duration = Duration::from_secs(100 * 365 * 86_400);

pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    let d = match &s[split..] {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

fn interval(s: Option<String>, default: Duration) -> Result<Duration, String> {
    match s {
        None => Ok(default),
        Some(p) if p == "once" => Ok(ONCE),
        Some(p) => parse_duration(&p).ok_or(format!(
            "poll_interval \"{p}\" is not like \"5s\", \"1h\" or \"once\""
        )),
    }
}

fn valid_name(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    !s.is_empty() && s.bytes().all(ok)
}

pub fn load_file(path: &Path) -> Result<Profile, ProfileError> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse(&src, &origin),
        Err(err) => Err(ProfileError::Io { origin, err }),
    }
}

/// Loads every `*.toml` in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Profile>, ProfileError> {
    let origin = dir.display().to_string();
    let io = |err| ProfileError::Io {
        origin: origin.clone(),
        err,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|p| load_file(p)).collect()
}

/// Parses and validates profile text; `origin` names it in errors.
pub fn parse(src: &str, origin: &str) -> Result<Profile, ProfileError> {
    let origin = origin.to_string();
    let toml_err = |err| ProfileError::Toml {
        origin: origin.clone(),
        err,
    };
    let raw: RawProfile = toml::from_str(src).map_err(toml_err)?;
    let device_err = |message| ProfileError::Device {
        origin: origin.clone(),
        message,
    };
    let (device, base) = resolve_device(raw.device).map_err(device_err)?;
    if raw.field.is_empty() {
        return Err(device_err("no [[field]] entries".into()));
    }
    let mut fields: Vec<Field> = Vec::with_capacity(raw.field.len());
    for rf in raw.field {
        let field = rf.name.clone();
        let field_err = |message| ProfileError::Field {
            origin: origin.clone(),
            field,
            message,
        };
        fields.push(resolve_field(rf, &device, base, &fields).map_err(field_err)?);
    }
    Ok(Profile {
        origin,
        device,
        fields,
    })
}

fn resolve_device(d: RawDevice) -> Result<(Device, AddressBase), String> {
    ensure!(!d.model.trim().is_empty(), "model must not be empty");
    ensure!(
        !d.manufacturer.trim().is_empty(),
        "manufacturer must not be empty"
    );
    let unit_id = d.unit_id.unwrap_or(1);
    ensure!(
        (1..=247).contains(&unit_id),
        "unit_id {unit_id} outside 1..=247"
    );
    ensure!(d.baud != Some(0), "baud must be > 0");
    ensure!(
        (7..=8).contains(&d.data_bits.unwrap_or(8)),
        "data_bits must be 7 or 8"
    );
    ensure!(
        (1..=2).contains(&d.stop_bits.unwrap_or(1)),
        "stop_bits must be 1 or 2"
    );
    let limits = Limits {
        max_gap: d.max_gap.unwrap_or(DEFAULT_MAX_GAP),
        max_registers: d.max_registers_per_request.unwrap_or(125),
        max_bits: d.max_bits_per_request.unwrap_or(2000),
    };
    ensure!(
        (1..=125).contains(&limits.max_registers),
        "max_registers_per_request must be 1..=125"
    );
    ensure!(
        (1..=2000).contains(&limits.max_bits),
        "max_bits_per_request must be 1..=2000"
    );
    let base = match d.address_base.unwrap_or(0) {
        0 => AddressBase::Zero,
        1 => AddressBase::One,
        40001 => AddressBase::Modicon,
        n => return Err(format!("address_base must be 0, 1 or 40001, not {n}")),
    };
    let device = Device {
        model: d.model,
        manufacturer: d.manufacturer,
        description: d.description.unwrap_or_default(),
        unit_id,
        word_order: d.word_order.unwrap_or(WordOrder::ABCD),
        limits,
        poll_interval: interval(d.poll_interval, Duration::from_secs(10))?,
    };
    Ok((device, base))
}

fn resolve_field(
    f: RawField,
    dev: &Device,
    base: AddressBase,
    earlier: &[Field],
) -> Result<Field, String> {
    let (t, kind) = (f.data_type, f.kind);
    ensure!(
        valid_name(&f.name),
        "name must be lowercase letters, digits and '_'"
    );
    // Quantity names are the stable interface to the rest of the system.
    let dotted = f.quantity.contains('.') && f.quantity.split('.').all(valid_name);
    ensure!(
        dotted,
        "quantity \"{}\" is not a lowercase dotted name like \"digester.pressure\"",
        f.quantity
    );
    ensure!(
        earlier.iter().all(|o| o.name != f.name),
        "name is used twice"
    );
    if let Some(o) = earlier.iter().find(|o| o.quantity == f.quantity) {
        return Err(format!(
            "quantity \"{}\" is already fed by field \"{}\"",
            f.quantity, o.name
        ));
    }
    ensure!(
        !kind.is_bit() || t == DataType::Bool,
        "a {kind:?} field must have type bool, not {t:?}"
    );
    ensure!(
        kind.is_bit() || t != DataType::Bool,
        "type bool needs kind coil or discrete_input; for a bit in a register use type \"bit\""
    );
    ensure!(
        (t == DataType::Bit) == f.bit.is_some(),
        "bit = n goes with type bit and only with it"
    );
    ensure!(f.bit.unwrap_or(0) <= 15, "bit {} > 15", f.bit.unwrap_or(0));
    ensure!(
        (t == DataType::String) == f.length.is_some(),
        "length = registers goes with type string and only with it"
    );
    let count = t.width().or(f.length).unwrap_or(0);
    ensure!(count > 0, "length must be > 0");
    let numeric_keys = [f.scale, f.offset, f.min, f.max]
        .iter()
        .any(Option::is_some);
    let numeric_keys = numeric_keys || !f.sentinels.is_empty();
    ensure!(
        t.is_number() || !numeric_keys,
        "scale, offset, min, max and sentinels need a numeric type, not {t:?}"
    );
    ensure!(
        t.is_float() || !f.nan_is_missing,
        "nan_is_missing needs type f32 or f64, not {t:?}"
    );
    let (scale, offset) = (f.scale.unwrap_or(1.0), f.offset.unwrap_or(0.0));
    ensure!(
        scale.is_finite() && scale != 0.0 && offset.is_finite(),
        "scale must be finite and non-zero, offset finite"
    );
    if let (Some(lo), Some(hi)) = (f.min, f.max) {
        ensure!(lo <= hi, "min {lo} > max {hi}");
    }
    if !t.is_float() && count < 4 {
        let bits = 16 * u32::from(count);
        let fits = |s: &&i64| (-(1i64 << (bits - 1))..(1i64 << bits)).contains(*s);
        if let Some(s) = f.sentinels.iter().find(|s| !fits(s)) {
            return Err(format!("sentinel {s} does not fit in {bits} bits"));
        }
    }
    let mut enum_names = BTreeMap::new();
    if !f.enum_names.is_empty() {
        ensure!(
            t.is_number() && !t.is_float() && scale == 1.0 && offset == 0.0,
            "enum needs an unscaled integer type, not {t:?} with scale {scale} and offset {offset}"
        );
    }
    for (k, name) in f.enum_names {
        let Ok(v) = k.parse::<i64>() else {
            return Err(format!("enum key {k:?} is not an integer"));
        };
        ensure!(
            valid_name(&name),
            "enum name {name:?} must be lowercase letters, digits and '_'"
        );
        enum_names.insert(v, name);
    }
    let address = base.to_protocol(kind, f.address)?;
    let (limit, unit) = (
        dev.limits.max_request(kind),
        if kind.is_bit() { "bits" } else { "registers" },
    );
    ensure!(
        count <= limit,
        "{count} {unit} exceed the per-request limit of {limit}"
    );
    let end = u32::from(address) + u32::from(count);
    ensure!(
        end <= 0x1_0000,
        "address 0x{address:04X} + {count} {unit} runs past 0xFFFF"
    );
    // Several bit fields (or a bit field and the whole word) may view the
    // same status register; any other overlap is a typo in the map.
    let overlaps = |o: &&Field| {
        o.kind == kind
            && o.data_type != DataType::Bit
            && u32::from(o.address) < end
            && u32::from(address) < o.end()
    };
    if let Some(o) = earlier.iter().find(overlaps).filter(|_| t != DataType::Bit) {
        return Err(format!(
            "address 0x{address:04X} + {count} {unit} overlaps field \"{}\"",
            o.name
        ));
    }
    Ok(Field {
        poll_interval: interval(f.poll_interval, dev.poll_interval)?,
        name: f.name,
        quantity: f.quantity,
        description: f.description.unwrap_or_default(),
        kind,
        address,
        data_type: t,
        bit: f.bit,
        count,
        word_order: f.word_order.unwrap_or(dev.word_order),
        scale,
        offset,
        unit: f.unit,
        sentinels: f.sentinels,
        nan_is_missing: f.nan_is_missing,
        min: f.min,
        max: f.max,
        enum_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[device]\nmodel = \"m\"\nmanufacturer = \"x\"\n";

    /// Parses `HEAD + body`; `Err(msg)` expects exactly that error text.
    fn check(body: &str, expected: Result<(), &str>) -> Option<Profile> {
        let got = parse(&format!("{HEAD}{body}"), "t.toml");
        match (&got, expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(want)) => assert_eq!(e.to_string(), want, "for {body}"),
            _ => panic!("for {body}: expected {expected:?}, got {got:?}"),
        }
        got.ok()
    }

    /// A `[[field]]` named `name` (quantity `t.name`) at holding 0 plus `;`-separated keys.
    fn field(name: &str, keys: &str) -> String {
        let keys = keys.replace("; ", "\n");
        let kind = if keys.contains("kind") {
            ""
        } else {
            "kind = \"holding\"\n"
        };
        let addr = if keys.contains("address") {
            ""
        } else {
            "address = 0\n"
        };
        format!("[[field]]\nname = \"{name}\"\nquantity = \"t.{name}\"\n{kind}{addr}{keys}\n")
    }

    #[test]
    fn valid_profiles_resolve_defaults_and_addresses() {
        let p = check(&field("a", "type = \"f32\""), Ok(())).unwrap();
        let f = &p.fields[0];
        let ten = Duration::from_secs(10);
        assert_eq!(
            (f.count, f.word_order, f.scale, f.poll_interval),
            (2, WordOrder::ABCD, 1.0, ten)
        );
        let modicon = field("a", "type = \"u32\"; address = 40010");
        let p = check(
            &format!("word_order = \"CDAB\"\naddress_base = 40001\n{modicon}"),
            Ok(()),
        );
        assert_eq!(
            p.map(|p| (p.fields[0].address, p.fields[0].word_order)),
            Some((9, WordOrder::CDAB))
        );
        let one = format!(
            "address_base = 1\n{}",
            field("a", "type = \"u16\"; address = 1")
        );
        assert_eq!(check(&one, Ok(())).map(|p| p.fields[0].address), Some(0));
        let bits = format!(
            "{}{}",
            field("a", "type = \"u16\""),
            field("b", "type = \"bit\"; bit = 3")
        );
        assert_eq!(check(&bits, Ok(())).map(|p| p.fields[1].bit), Some(Some(3)));
        let named = field(
            "a",
            "type = \"u16\"; enum = { 0 = \"idle\", 3 = \"running\" }",
        );
        let names = check(&named, Ok(())).map(|p| p.fields[0].enum_names.clone());
        let want = BTreeMap::from([(0, "idle".to_owned()), (3, "running".to_owned())]);
        assert_eq!(names, Some(want));
    }

    /// Field-level mistakes, `keys => message`; each is reported for field "a".
    const BAD_FIELDS: &str = r#"
        type = "bit"; bit = 16 => bit 16 > 15
        type = "bit" => bit = n goes with type bit and only with it
        type = "u16"; bit = 1 => bit = n goes with type bit and only with it
        type = "string" => length = registers goes with type string and only with it
        type = "u32"; length = 2 => length = registers goes with type string and only with it
        type = "string"; length = 0 => length must be > 0
        type = "string"; length = 126 => 126 registers exceed the per-request limit of 125
        type = "bool" => type bool needs kind coil or discrete_input; for a bit in a register use type "bit"
        type = "u16"; kind = "coil" => a Coil field must have type bool, not U16
        type = "string"; length = 4; scale = 2.0 => scale, offset, min, max and sentinels need a numeric type, not String
        type = "bit"; bit = 1; sentinels = [0] => scale, offset, min, max and sentinels need a numeric type, not Bit
        type = "i16"; nan_is_missing = true => nan_is_missing needs type f32 or f64, not I16
        type = "i16"; sentinels = [70000] => sentinel 70000 does not fit in 16 bits
        type = "u32"; sentinels = [-2147483649] => sentinel -2147483649 does not fit in 32 bits
        type = "u16"; scale = 0 => scale must be finite and non-zero, offset finite
        type = "u16"; min = 5; max = 1 => min 5 > max 1
        type = "u16"; poll_interval = "5 s" => poll_interval "5 s" is not like "5s", "1h" or "once"
        type = "u32"; address = 0xFFFF => address 0xFFFF + 2 registers runs past 0xFFFF
        type = "u16"; quantity = "Pressure" => quantity "Pressure" is not a lowercase dotted name like "digester.pressure"
        type = "f32"; enum = { 0 = "idle" } => enum needs an unscaled integer type, not F32 with scale 1 and offset 0
        type = "u16"; scale = 0.1; enum = { 0 = "idle" } => enum needs an unscaled integer type, not U16 with scale 0.1 and offset 0
        type = "u16"; enum = { x = "idle" } => enum key "x" is not an integer
        type = "u16"; enum = { 0 = "Idle" } => enum name "Idle" must be lowercase letters, digits and '_'
    "#;

    #[test]
    fn invalid_profiles_name_file_and_field() {
        let cases: Vec<_> = BAD_FIELDS
            .lines()
            .filter_map(|l| l.trim().split_once(" => "))
            .collect();
        assert_eq!(cases.len(), 23);
        for (keys, msg) in cases {
            let body = field("a", keys);
            let body = match keys.split_once("; quantity = ") {
                Some((k, q)) => field("a", k).replace("\"t.a\"", q),
                None => body,
            };
            check(&body, Err(&format!("t.toml: field \"a\": {msg}")));
        }
        let (a, b) = (
            field("a", "type = \"f32\""),
            field("b", "type = \"u16\"; address = 1"),
        );
        check(
            &format!("{a}{b}"),
            Err("t.toml: field \"b\": address 0x0001 + 1 registers overlaps field \"a\""),
        );
        check(
            &format!("{a}{a}"),
            Err("t.toml: field \"a\": name is used twice"),
        );
        let dup = field("b", "type = \"u16\"; address = 9").replace("t.b", "t.a");
        check(
            &format!("{a}{dup}"),
            Err("t.toml: field \"b\": quantity \"t.a\" is already fed by field \"a\""),
        );
        let modicon = format!("address_base = 40001\n{}", field("a", "type = \"u16\""));
        let want =
            "address 0 is outside 40001..=49999 for a Holding field with address_base Modicon";
        check(&modicon, Err(&format!("t.toml: field \"a\": {want}")));
        check(
            "unit_id = 0\n",
            Err("t.toml: device: unit_id 0 outside 1..=247"),
        );
        check("", Err("t.toml: device: no [[field]] entries"));
        let toml_err = |body: &str| {
            parse(&format!("{HEAD}{body}"), "t.toml")
                .unwrap_err()
                .to_string()
        };
        let e = toml_err("colour = 1\n");
        assert!(
            e.starts_with("t.toml: TOML parse error at line 4")
                && e.contains("unknown field `colour`"),
            "{e}"
        );
        let e = toml_err(&field("a", "type = \"u16\"; colour = 1"));
        assert!(e.contains("unknown field `colour`"), "{e}");
        assert!(
            toml_err("address_base = 2\n").contains("address_base must be 0, 1 or 40001, not 2")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in ["0s", "s", "5", "1.5s", "5d", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    /// Every shipped profile loads and validates. The directory is
    /// `../sensors` from the gateway crate, or `GKGW_SENSORS_DIR`.
    #[test]
    fn shipped_profiles_load() {
        let dir = std::env::var("GKGW_SENSORS_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../sensors").into());
        let profiles = load_dir(Path::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            profiles.len() >= 7,
            "only {} profiles in {dir}",
            profiles.len()
        );
        let vaisala = profiles
            .iter()
            .find(|p| p.device.model == "MGP261")
            .map(|p| p.device.unit_id);
        assert_eq!(vaisala, Some(240));
    }
}
