//! The plant model: the catalogue of **quantities** (`digester.pressure`, `meter.credit`, …) that
//! alarms, KPIs, the dashboard and the uplink refer to, and the **bindings** that say which source
//! feeds which quantity at which **instance** (the device, e.g. `digester-1`).
//!
//! The catalogue is data (`quantities.toml`, compiled in; a site adds its own with
//! `[[plant.quantity]]`). Each quantity has one storage name, an InfluxDB measurement and field
//! (docs/schema.md); the meter payloads store some under two names (gas meters in kg, electricity
//! meters in kWh), which [`METER_FIELDS`] lists. A stored reading's quantity is therefore its
//! `(measurement, field)` pair and its instance is its `device` tag: [`Plant::quantity_of`]
//! maps one to the other for the store's readers, and [`Plant::bind`] refuses a binding that
//! would make that map ambiguous.
//!
//! Architecture invariant: this module is pure (no I/O, no clock, no tasks); it imports only
//! `config` (for the site's `[[plant.quantity]]` tables) and `model`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::model::Value;

pub mod kpi;
pub mod zone;

/// What kind of value a quantity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A level that goes up and down (pressure, temperature).
    Gauge,
    /// A total that only grows, except when the device is reset or replaced (gas volume, kWh).
    Counter,
    /// A code or flag (compressor state, valve open).
    State,
    Text,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::State => "state",
            Kind::Text => "text",
        }
    }
}

/// One quantity of the catalogue, as written in `quantities.toml` or `[[plant.quantity]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantity {
    /// Stable dotted name, e.g. `digester.pressure`.
    pub name: String,
    /// The unit readings of it are stored in; empty for states, text and pH.
    #[serde(default)]
    pub unit: String,
    pub kind: Kind,
    /// Decimals shown to people.
    #[serde(default)]
    pub precision: u8,
    /// Plausible range: a value outside it is stored as `{field}_quality = "out_of_range"`.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// An alarm on it protects people or the plant.
    #[serde(default)]
    pub safety: bool,
    /// InfluxDB measurement and field; default: the name's first part, and the rest with the
    /// unit appended (`tank.level` in `m` → `tank`, `level_m`).
    #[serde(default)]
    pub measurement: String,
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub description: String,
}

impl Quantity {
    /// Whether `v` is inside the plausible range (a missing end is open).
    pub fn plausible(&self, v: f64) -> bool {
        v.is_finite() && self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }

    /// `v` with this quantity's precision and unit, for people: `57.4 W`, `0.35 A`, `7.1 pH`.
    pub fn display(&self, v: &Value) -> String {
        self.display_in(v, &self.unit)
    }

    /// `v` with this quantity's precision, in `unit` (a stored name's own unit: an electricity
    /// meter's credit is in kWh, a gas meter's in kg).
    pub fn display_in(&self, v: &Value, unit: &str) -> String {
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        match v {
            // Rounded to the precision, then written shortest (7.1, not 7.10), as the status
            // page writes Modbus values; -0 reads as 0.
            Value::Float(f) if f.is_finite() => {
                let rounded: f64 = format!("{f:.*}", usize::from(self.precision))
                    .parse()
                    .unwrap_or(*f);
                format!("{}{unit}", rounded + 0.0)
            }
            Value::Float(f) => format!("{f}{unit}"),
            Value::Int(i) => format!("{i}{unit}"),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => s.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("{key}: {name:?}: {message}")]
    BadQuantity {
        key: String,
        name: String,
        message: String,
    },
    #[error("{key}: {name:?} is not a known quantity (see `gkgw check` or docs/schema.md; a site adds its own with [[plant.quantity]])")]
    Unknown { key: String, name: String },
    #[error("{key}: {quantity} at {instance} is already fed by {other}")]
    Duplicate {
        key: String,
        quantity: String,
        instance: String,
        other: String,
    },
    #[error("{key}: {quantity} is stored in {expected:?}, but this source gives {given:?}")]
    UnitMismatch {
        key: String,
        quantity: String,
        expected: String,
        given: String,
    },
    #[error(
        "{key}: {quantity} would be stored as {measurement}.{field}, which already holds {other}"
    )]
    NameTaken {
        key: String,
        quantity: String,
        measurement: String,
        field: String,
        other: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    quantity: Vec<Quantity>,
}

/// The built-in catalogue (`quantities.toml`).
const BUILTIN: &str = include_str!("quantities.toml");

/// The quantities a site knows: the built-in ones and its own.
#[derive(Debug, Clone)]
pub struct Catalogue {
    by_name: BTreeMap<String, Arc<Quantity>>,
}

/// `digester.pressure` in mbar → (`digester`, `pressure_mbar`); `power.voltage.l1` in V →
/// (`power`, `voltage_l1_v`). The default storage name of a site's own quantity.
pub fn default_names(quantity: &str, unit: &str) -> (String, String) {
    let (measurement, rest) = quantity.split_once('.').unwrap_or(("site", quantity));
    let mut field = rest.replace('.', "_");
    let u = unit_suffix(unit);
    if !u.is_empty() && !field.ends_with(&u) {
        field = format!("{field}_{u}");
    }
    (measurement.to_owned(), field)
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

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

fn check_quantity(key: &str, mut q: Quantity) -> Result<Quantity, Error> {
    let bad = |message: &str| Error::BadQuantity {
        key: key.to_owned(),
        name: q.name.clone(),
        message: message.to_owned(),
    };
    if !name_ok(&q.name) {
        return Err(bad(
            "a name is lowercase letters, digits and '_', in dotted parts (tank.level)",
        ));
    }
    if let (Some(a), Some(b)) = (q.min, q.max) {
        if !(a.is_finite() && b.is_finite() && a < b) {
            return Err(bad("min must be below max"));
        }
    }
    if matches!(q.kind, Kind::State | Kind::Text) && (q.min.is_some() || q.max.is_some()) {
        return Err(bad("a state or text quantity has no range"));
    }
    if q.precision > 9 {
        return Err(bad("precision is at most 9 decimals"));
    }
    if q.measurement.is_empty() != q.field.is_empty() {
        return Err(bad("give both measurement and field, or neither"));
    }
    if q.measurement.is_empty() {
        (q.measurement, q.field) = default_names(&q.name, &q.unit);
    }
    let tag_ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !tag_ok(&q.measurement) || !tag_ok(&q.field) || q.field.ends_with("_quality") {
        return Err(bad(
            "measurement and field are letters, digits, '_' or '-' (and a field may not end in _quality)",
        ));
    }
    Ok(q)
}

impl Catalogue {
    /// The built-in catalogue alone.
    pub fn builtin() -> Catalogue {
        Catalogue::with_site(&[]).expect("the built-in catalogue is valid (tested)")
    }

    /// The built-in catalogue plus the site's `[[plant.quantity]]` tables. A site quantity may
    /// not reuse a built-in name.
    pub fn with_site(site: &[Quantity]) -> Result<Catalogue, Error> {
        let file: CatalogueFile = toml::from_str(BUILTIN).map_err(|e| Error::BadQuantity {
            key: "built-in quantities.toml".into(),
            name: String::new(),
            message: e.to_string(),
        })?;
        let mut by_name = BTreeMap::new();
        for (i, q) in file.quantity.into_iter().enumerate() {
            let q = check_quantity(&format!("built-in quantity[{i}]"), q)?;
            by_name.insert(q.name.clone(), Arc::new(q));
        }
        for (i, q) in site.iter().enumerate() {
            let key = format!("plant.quantity[{i}]");
            let q = check_quantity(&key, q.clone())?;
            if by_name.contains_key(&q.name) {
                return Err(Error::BadQuantity {
                    key,
                    name: q.name,
                    message: "is a built-in quantity already".into(),
                });
            }
            if let Some(other) = by_name
                .values()
                .find(|o: &&Arc<Quantity>| o.measurement == q.measurement && o.field == q.field)
            {
                return Err(Error::BadQuantity {
                    message: format!(
                        "would be stored as {}.{}, which {} uses already",
                        q.measurement, q.field, other.name
                    ),
                    key,
                    name: q.name,
                });
            }
            by_name.insert(q.name.clone(), Arc::new(q));
        }
        Ok(Catalogue { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Quantity>> {
        self.by_name.get(name)
    }

    /// `key` names the config key in the error.
    pub fn require(&self, key: &str, name: &str) -> Result<&Arc<Quantity>, Error> {
        self.get(name).ok_or_else(|| Error::Unknown {
            key: key.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Quantity>> {
        self.by_name.values()
    }

    /// The catalogue as the Markdown table of docs/schema.md (a test keeps the two equal).
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| quantity | measurement | field | unit | kind | precision | plausible range | safety |\n|---|---|---|---|---|---|---|---|\n",
        );
        let mut extra: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for m in METER_FIELDS {
            let q = self.get(m.quantity);
            if q.is_some_and(|q| q.measurement != m.kind.measurement() || q.field != m.field) {
                extra.entry(m.quantity).or_default().push(format!(
                    "{}.{} ({})",
                    m.kind.measurement(),
                    m.field,
                    if m.unit.is_empty() { "-" } else { m.unit }
                ));
            }
        }
        for q in self.iter() {
            let range = match (q.min, q.max) {
                (Some(a), Some(b)) => format!("{a} to {b}"),
                (Some(a), None) => format!("≥ {a}"),
                (None, Some(b)) => format!("≤ {b}"),
                (None, None) => "-".into(),
            };
            let mut field = format!("`{}`", q.field);
            if let Some(e) = extra.get(q.name.as_str()) {
                field.push_str(&format!("; also {}", e.join(", ")));
            }
            out.push_str(&format!(
                "| `{}` | `{}` | {field} | {} | {} | {} | {range} | {} |\n",
                q.name,
                q.measurement,
                if q.unit.is_empty() { "-" } else { &q.unit },
                q.kind.as_str(),
                q.precision,
                if q.safety { "yes" } else { "" },
            ));
        }
        out
    }
}

/// The two built-in meter payloads (PRODUCT.md, Interfaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterKind {
    Gas,
    Electricity,
    /// `meters/{id}/event`.
    Event,
}

impl MeterKind {
    pub fn measurement(self) -> &'static str {
        match self {
            MeterKind::Gas => "gas_meter",
            MeterKind::Electricity => "electricity_meter",
            MeterKind::Event => "meter_event",
        }
    }
}

/// One field of a built-in meter payload: the JSON key, the quantity it feeds, the stored
/// field name and unit.
#[derive(Debug, Clone, Copy)]
pub struct MeterField {
    pub kind: MeterKind,
    pub key: &'static str,
    pub quantity: &'static str,
    pub field: &'static str,
    pub unit: &'static str,
}

const fn mf(
    kind: MeterKind,
    key: &'static str,
    quantity: &'static str,
    field: &'static str,
    unit: &'static str,
) -> MeterField {
    MeterField {
        kind,
        key,
        quantity,
        field,
        unit,
    }
}

/// The built-in meter payload fields and the quantities they feed, in payload order.
pub const METER_FIELDS: &[MeterField] = &[
    mf(
        MeterKind::Gas,
        "cum_kg",
        "meter.gas_used",
        "gas_used_kg",
        "kg",
    ),
    mf(
        MeterKind::Gas,
        "credit_kg",
        "meter.credit",
        "credit_kg",
        "kg",
    ),
    mf(MeterKind::Gas, "valve", "meter.valve", "valve", ""),
    mf(
        MeterKind::Gas,
        "battery_v",
        "meter.battery",
        "battery_v",
        "V",
    ),
    mf(MeterKind::Gas, "rssi", "meter.rssi", "rssi_dbm", "dBm"),
    mf(MeterKind::Gas, "tamper", "meter.tamper", "tamper", ""),
    mf(
        MeterKind::Electricity,
        "cum_kwh",
        "meter.energy_used",
        "energy_used_kwh",
        "kWh",
    ),
    mf(
        MeterKind::Electricity,
        "credit_kwh",
        "meter.credit",
        "credit_kwh",
        "kWh",
    ),
    mf(MeterKind::Electricity, "relay", "meter.relay", "relay", ""),
    mf(
        MeterKind::Electricity,
        "status",
        "meter.status",
        "status",
        "",
    ),
    mf(
        MeterKind::Electricity,
        "battery_v",
        "meter.battery",
        "battery_v",
        "V",
    ),
    mf(
        MeterKind::Electricity,
        "rssi",
        "meter.rssi",
        "rssi_dbm",
        "dBm",
    ),
    mf(
        MeterKind::Electricity,
        "tamper",
        "meter.tamper",
        "tamper",
        "",
    ),
    mf(MeterKind::Event, "event", "meter.event", "event", ""),
    mf(
        MeterKind::Event,
        "detail",
        "meter.event_detail",
        "detail",
        "",
    ),
];

/// Which instance a binding feeds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Instance {
    /// A named device (a Modbus device, a configured topic's fixed device).
    Device(String),
    /// Every field meter, each its own instance (`meters/{id}/…`).
    EachMeter,
    /// The device named by a topic level (`sensors/+/t` with level 1: `sensors/d2/t` → `d2`).
    TopicLevel(usize),
    /// The device the payload names (a line-protocol point's `device` tag).
    FromPayload,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instance::Device(d) => f.write_str(d),
            Instance::EachMeter => f.write_str("each meter"),
            Instance::TopicLevel(l) => write!(f, "topic level {l}"),
            Instance::FromPayload => f.write_str("from the payload"),
        }
    }
}

/// One source feeding one quantity.
#[derive(Debug, Clone)]
pub struct Binding {
    pub quantity: Arc<Quantity>,
    pub instance: Instance,
    /// Where the value comes from, for people: `modbus rs485/digester unit 1 field pressure`.
    pub source: String,
    /// The unit the source delivers (must equal the quantity's).
    pub unit: String,
    /// How often it comes: `10s`, `once`, `on publish`.
    pub interval: String,
    pub measurement: String,
    pub field: String,
}

/// The site's quantities and bindings: the plant table of `gkgw check`, and the map from a
/// stored reading's `(measurement, field)` back to its quantity.
#[derive(Debug, Clone)]
pub struct Plant {
    pub catalogue: Catalogue,
    bindings: Vec<Binding>,
    /// Stored name (measurement, field) → its quantity and the unit stored under that name.
    by_name: HashMap<(String, String), (Arc<Quantity>, String)>,
}

impl Plant {
    pub fn new(catalogue: Catalogue) -> Plant {
        let mut by_name = HashMap::new();
        for q in catalogue.iter() {
            by_name.insert(
                (q.measurement.clone(), q.field.clone()),
                (q.clone(), q.unit.clone()),
            );
        }
        for m in METER_FIELDS {
            if let Some(q) = catalogue.get(m.quantity) {
                by_name.insert(
                    (m.kind.measurement().to_owned(), m.field.to_owned()),
                    (q.clone(), m.unit.to_owned()),
                );
            }
        }
        Plant {
            catalogue,
            bindings: Vec::new(),
            by_name,
        }
    }

    /// Adds a binding of `quantity` (a catalogue name, checked) from `source`. `key` names the
    /// config key in errors. The stored name is the quantity's own. Refused: an unknown
    /// quantity, a unit other than the quantity's, and a second source for the same quantity
    /// at the same named instance.
    pub fn bind(
        &mut self,
        key: &str,
        quantity: &str,
        instance: Instance,
        source: String,
        unit: &str,
        interval: String,
    ) -> Result<&Binding, Error> {
        let q = self.catalogue.require(key, quantity)?.clone();
        if unit != q.unit {
            return Err(Error::UnitMismatch {
                key: key.to_owned(),
                quantity: q.name.clone(),
                expected: q.unit.clone(),
                given: unit.to_owned(),
            });
        }
        let (measurement, field) = (q.measurement.clone(), q.field.clone());
        self.push(key, q, instance, source, unit, interval, measurement, field)
    }

    /// The built-in meter payloads' bindings (every meter is its own instance).
    pub fn bind_meters(&mut self) -> Result<(), Error> {
        for m in METER_FIELDS {
            let q = self
                .catalogue
                .require("built-in meter payload", m.quantity)?
                .clone();
            let topic = if m.kind == MeterKind::Event {
                "event"
            } else {
                "state"
            };
            let kind = match m.kind {
                MeterKind::Gas => " (gas)",
                MeterKind::Electricity => " (electricity)",
                MeterKind::Event => "",
            };
            self.push(
                "built-in meter payload",
                q,
                Instance::EachMeter,
                format!("mqtt meters/{{id}}/{topic} \"{}\"{kind}", m.key),
                m.unit,
                "on publish".into(),
                m.kind.measurement().to_owned(),
                m.field.to_owned(),
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        key: &str,
        q: Arc<Quantity>,
        instance: Instance,
        source: String,
        unit: &str,
        interval: String,
        measurement: String,
        field: String,
    ) -> Result<&Binding, Error> {
        if matches!(instance, Instance::Device(_)) {
            if let Some(b) = self
                .bindings
                .iter()
                .find(|b| b.quantity.name == q.name && b.instance == instance)
            {
                return Err(Error::Duplicate {
                    key: key.to_owned(),
                    quantity: q.name.clone(),
                    instance: instance.to_string(),
                    other: b.source.clone(),
                });
            }
        }
        let pair = (measurement.clone(), field.clone());
        match self.by_name.get(&pair).map(|(q, _)| q) {
            Some(other) if other.name != q.name => {
                return Err(Error::NameTaken {
                    key: key.to_owned(),
                    quantity: q.name.clone(),
                    measurement,
                    field,
                    other: other.name.clone(),
                })
            }
            Some(_) => {}
            None => {
                self.by_name.insert(pair, (q.clone(), unit.to_owned()));
            }
        }
        self.bindings.push(Binding {
            quantity: q,
            instance,
            source,
            unit: unit.to_owned(),
            interval,
            measurement,
            field,
        });
        Ok(self.bindings.last().expect("just pushed"))
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The quantity a stored field belongs to; `None` for metadata (`seq`, `{field}_quality`)
    /// and for fields of no known quantity.
    pub fn quantity_of(&self, measurement: &str, field: &str) -> Option<&Arc<Quantity>> {
        self.stored(measurement, field).map(|(q, _)| q)
    }

    /// Every stored name (measurement, field) of `quantity`, sorted: a meter quantity has one
    /// per meter kind.
    pub fn stored_names(&self, quantity: &str) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self
            .by_name
            .iter()
            .filter(|(_, (q, _))| q.name == quantity)
            .map(|((m, f), _)| (m.as_str(), f.as_str()))
            .collect();
        v.sort_unstable();
        v
    }

    /// A stored field's quantity and the unit it is stored in.
    pub fn stored(&self, measurement: &str, field: &str) -> Option<(&Arc<Quantity>, &str)> {
        self.by_name
            .get(&(measurement.to_owned(), field.to_owned()))
            .map(|(q, u)| (q, u.as_str()))
    }

    /// The plant table of `gkgw check`: quantity → instance → source → unit → interval.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 5]> = self
            .bindings
            .iter()
            .map(|b| {
                [
                    b.quantity.name.clone(),
                    b.instance.to_string(),
                    b.source.clone(),
                    if b.unit.is_empty() {
                        "-".into()
                    } else {
                        b.unit.clone()
                    },
                    b.interval.clone(),
                ]
            })
            .collect();
        rows.sort();
        let header = ["quantity", "instance", "source", "unit", "interval"].map(String::from);
        let mut width = [0usize; 5];
        for r in std::iter::once(&header).chain(&rows) {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 < r.len() {
                    line.push_str(&format!("{c:<w$}  ", w = width[i]));
                } else {
                    line.push_str(c);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(toml_text: &str) -> Vec<Quantity> {
        #[derive(Deserialize)]
        struct F {
            quantity: Vec<Quantity>,
        }
        toml::from_str::<F>(toml_text).expect("test toml").quantity
    }

    #[test]
    fn the_builtin_catalogue_holds_the_product_quantities_with_unique_storage_names() {
        let c = Catalogue::builtin();
        for name in [
            "digester.pressure",
            "digester.temperature",
            "biogas.ch4",
            "biogas.co2",
            "biogas.h2s",
            "biogas.o2",
            "digester.ph",
            "gas.volume",
            "gas.flow",
            "compressor.state",
            "compressor.discharge_pressure",
            "compressor.current",
            "compressor.temperature",
            "kitchen.ch4_lel",
            "kitchen.h2s",
            "power.active",
            "power.energy_import",
            "meter.gas_used",
            "meter.credit",
            "meter.valve",
            "meter.battery",
            "meter.rssi",
            "meter.tamper",
            "meter.energy_used",
            "meter.relay",
            "meter.status",
        ] {
            assert!(c.get(name).is_some(), "{name} missing");
        }
        let mut seen = BTreeMap::new();
        for q in c.iter() {
            if let Some(other) = seen.insert((q.measurement.clone(), q.field.clone()), &q.name) {
                panic!("{} and {other} share {}.{}", q.name, q.measurement, q.field);
            }
        }
        // The InfluxDB schema of the readings stored before the catalogue existed.
        let q = c.get("gas.flow").unwrap();
        assert_eq!(
            (q.measurement.as_str(), q.field.as_str()),
            ("biogas", "flow_m3h")
        );
        let q = c.get("power.voltage.l1").unwrap();
        assert_eq!(
            (q.measurement.as_str(), q.field.as_str()),
            ("power", "voltage_l1_v")
        );
        assert!(c.get("kitchen.ch4_lel").unwrap().safety);
        assert!(!c.get("digester.ph").unwrap().safety);
    }

    #[test]
    fn docs_schema_md_lists_the_catalogue() {
        let doc = include_str!("../../../docs/schema.md");
        let table = Catalogue::builtin().markdown();
        assert!(
            doc.contains(&table),
            "docs/schema.md is out of date; its table should be:\n{table}"
        );
    }

    #[test]
    fn default_names_put_the_unit_in_the_field() {
        let check = |q: &str, unit: &str, expected: (&str, &str)| {
            assert_eq!(
                default_names(q, unit),
                (expected.0.to_owned(), expected.1.to_owned())
            )
        };
        check("digester.pressure", "mbar", ("digester", "pressure_mbar"));
        check("digester.temperature", "°C", ("digester", "temperature_c"));
        check("biogas.ch4", "%vol", ("biogas", "ch4_pct"));
        check("gas.flow", "m³/h", ("gas", "flow_m3h"));
        check("power.voltage.l1", "V", ("power", "voltage_l1_v"));
        check("digester.ph", "pH", ("digester", "ph"));
        check("compressor.state", "", ("compressor", "state"));
        check("alone", "A", ("site", "alone_a"));
    }

    #[test]
    fn site_quantities_are_checked_and_get_default_names() {
        let c = Catalogue::with_site(&site(
            "[[quantity]]\nname = \"tank.level\"\nunit = \"m\"\nkind = \"gauge\"\nprecision = 2\n",
        ))
        .unwrap();
        let q = c.get("tank.level").unwrap();
        assert_eq!(
            (q.measurement.as_str(), q.field.as_str()),
            ("tank", "level_m")
        );
        let err = |t: &str| Catalogue::with_site(&site(t)).unwrap_err().to_string();
        assert_eq!(
            err("[[quantity]]\nname = \"digester.pressure\"\nkind = \"gauge\"\n"),
            "plant.quantity[0]: \"digester.pressure\": is a built-in quantity already"
        );
        assert_eq!(
            err("[[quantity]]\nname = \"Tank Level\"\nkind = \"gauge\"\n"),
            "plant.quantity[0]: \"Tank Level\": a name is lowercase letters, digits and '_', in dotted parts (tank.level)"
        );
        assert_eq!(
            err("[[quantity]]\nname = \"t.x\"\nkind = \"gauge\"\nmin = 5\nmax = 1\n"),
            "plant.quantity[0]: \"t.x\": min must be below max"
        );
        assert_eq!(
            err("[[quantity]]\nname = \"t.s\"\nkind = \"state\"\nmax = 1\n"),
            "plant.quantity[0]: \"t.s\": a state or text quantity has no range"
        );
    }

    #[test]
    fn bindings_refuse_unknown_quantities_duplicates_and_other_units() {
        let mut p = Plant::new(Catalogue::builtin());
        let dev = || Instance::Device("digester-1".into());
        p.bind(
            "modbus.device[0]",
            "digester.pressure",
            dev(),
            "modbus a".into(),
            "mbar",
            "5s".into(),
        )
        .unwrap();
        let e = p
            .bind(
                "k",
                "digester.presure",
                dev(),
                "x".into(),
                "mbar",
                "5s".into(),
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "k: \"digester.presure\" is not a known quantity (see `gkgw check` or docs/schema.md; a site adds its own with [[plant.quantity]])");
        let e = p
            .bind(
                "k",
                "digester.pressure",
                dev(),
                "modbus b".into(),
                "mbar",
                "5s".into(),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "k: digester.pressure at digester-1 is already fed by modbus a"
        );
        // The same quantity at another instance is fine: a site may have two digesters.
        p.bind(
            "k",
            "digester.pressure",
            Instance::Device("digester-2".into()),
            "modbus c".into(),
            "mbar",
            "5s".into(),
        )
        .unwrap();
        let e = p
            .bind(
                "k",
                "compressor.discharge_pressure",
                dev(),
                "x".into(),
                "bar",
                "1s".into(),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "k: compressor.discharge_pressure is stored in \"mbar\", but this source gives \"bar\""
        );
        assert_eq!(p.bindings().len(), 2);
    }

    #[test]
    fn stored_fields_map_back_to_their_quantity() {
        let mut p = Plant::new(Catalogue::builtin());
        p.bind_meters().unwrap();
        let q = |m: &str, f: &str| p.quantity_of(m, f).map(|q| q.name.as_str());
        assert_eq!(q("gas_meter", "credit_kg"), Some("meter.credit"));
        assert_eq!(q("electricity_meter", "credit_kwh"), Some("meter.credit"));
        assert_eq!(q("electricity_meter", "rssi_dbm"), Some("meter.rssi"));
        assert_eq!(q("digester", "pressure_mbar"), Some("digester.pressure"));
        assert_eq!(q("gas_meter", "seq"), None);
        assert_eq!(q("gas_meter", "credit_kg_quality"), None);
        let (credit, unit) = p.stored("electricity_meter", "credit_kwh").expect("stored");
        assert_eq!(credit.display_in(&Value::Float(5.5), unit), "5.5 kWh");
    }

    #[test]
    fn values_are_shown_with_the_quantity_precision() {
        let c = Catalogue::builtin();
        let show = |q: &str, v: Value| c.get(q).unwrap().display(&v);
        assert_eq!(show("power.active", Value::Float(57.4009284973)), "57.4 W");
        assert_eq!(show("power.current", Value::Float(0.34999999404)), "0.35 A");
        assert_eq!(show("digester.ph", Value::Float(7.1)), "7.1 pH");
        assert_eq!(show("digester.pressure", Value::Float(-0.01)), "0 mbar");
        assert_eq!(show("meter.valve", Value::Str("open".into())), "open");
    }

    #[test]
    fn the_table_lists_every_binding() {
        let mut p = Plant::new(Catalogue::builtin());
        p.bind(
            "k",
            "digester.pressure",
            Instance::Device("digester-1".into()),
            "modbus rs485 unit 1 pressure".into(),
            "mbar",
            "5s".into(),
        )
        .unwrap();
        let t = p.table();
        assert_eq!(
            t,
            "quantity           instance    source                        unit  interval\n\
             digester.pressure  digester-1  modbus rs485 unit 1 pressure  mbar  5s\n"
        );
    }
}
