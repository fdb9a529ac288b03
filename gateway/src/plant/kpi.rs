//! Plant figures (KPIs): the formulas of DOMAIN.md ("Plant figures") as functions over plain
//! numbers, with the worked example of docs/kpi.md as a test.
//!
//! The chain is the platform's: kg of waste fed → kg of volatile solids (VS) fed; metered gas
//! volume → normal volume (Nm³, at 0 °C and 1013.25 hPa) → Nm³ of methane → kWh → kg of LPG
//! equivalent; and the plant's ratios (specific yield, volumetric rate, organic loading rate,
//! hydraulic retention time, compressor kWh per Nm³, gas utilisation).
//!
//! **Missing is not zero.** Every figure is a [`Kpi`]: a number, or the [`Missing`] reason it
//! cannot be computed (no CH4 reading in the window, no feeding logged, a zero divisor, a value
//! that is not physically possible). A raw input the window may lack is an `Option<f64>`; an
//! input that is itself a figure is a `Kpi`, and its reason passes through unchanged, so a
//! missing CH4 reading makes the energy missing with "no ch4 reading", not zero. A true zero
//! (no gas metered in an hour) stays a zero.
//!
//! **Windows.** The functions take the totals and means of one window (the aggregator's hour or
//! day). The ratios DOMAIN.md defines per day take per-day figures: [`per_day`] scales a
//! window's total to a daily rate. Feeding is logged twice a day, so the feed-based figures
//! (specific yield, organic loading rate, retention time) mean something per day, not per hour.
//!
//! Architecture invariant: pure (no I/O, no clock, no tasks, no config parsing); the aggregator
//! maps its windows and the site config onto these inputs.

use std::fmt;

/// A plant figure, or why it is missing.
pub type Kpi = Result<f64, Missing>;

/// Why a figure cannot be computed. Its `Display` is the reason shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("no gas volume in this window")]
    NoGasVolume,
    #[error("no gas pressure reading")]
    NoPressure,
    #[error("no gas temperature reading")]
    NoGasTemperature,
    #[error("no atmospheric pressure (neither the site altitude nor a measured pressure)")]
    NoAtmosphericPressure,
    #[error("no ch4 reading")]
    NoCh4,
    #[error("no waste fed is logged")]
    NoFeed,
    #[error("no water added is logged")]
    NoWater,
    #[error("no compressor energy reading")]
    NoCompressorEnergy,
    #[error("no gas meter usage reported")]
    NoGasSold,
    #[error("no cylinders filled are logged")]
    NoCylinders,
    /// A site parameter the formula needs is not configured.
    #[error("{0} is not configured")]
    NotConfigured(&'static str),
    /// The divisor of a ratio is zero (a digester of 0 m³, no gas produced).
    #[error("{0} is zero")]
    ZeroDivisor(&'static str),
    /// An input is not a number or not physically possible (a negative volume, CH4 above 100 %).
    #[error("{0} is out of range or not a number")]
    Bad(&'static str),
}

/// Normal pressure, hPa (1 mbar = 1 hPa).
pub const NORMAL_PRESSURE_HPA: f64 = 1013.25;
/// 0 °C in kelvin: normal temperature.
pub const ZERO_CELSIUS_K: f64 = 273.15;
/// Energy of methane, kWh per Nm³ (DOMAIN.md: LHV 35.8 MJ/Nm³, taken as 9.94 kWh/Nm³).
pub const CH4_KWH_PER_NM3: f64 = 9.94;
/// 1 kWh = 3.6 MJ.
pub const MJ_PER_KWH: f64 = 3.6;
/// Energy of LPG, MJ per kg (DOMAIN.md).
pub const LPG_MJ_PER_KG: f64 = 46.0;
/// Density of methane at 0 °C and 1013.25 hPa, kg/Nm³ (standard gas density).
pub const CH4_KG_PER_NM3: f64 = 0.7168;
/// Density of carbon dioxide at 0 °C and 1013.25 hPa, kg/Nm³ (standard gas density).
pub const CO2_KG_PER_NM3: f64 = 1.977;

/// The kinds of waste the logbook records (issue 10, the logbook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Waste {
    Household,
    Market,
    Animal,
    Agricultural,
}

impl Waste {
    /// Every kind, in the order the logbook lists them.
    pub const ALL: [Waste; 4] = [
        Waste::Household,
        Waste::Market,
        Waste::Animal,
        Waste::Agricultural,
    ];

    /// The name the logbook, the config and the API use (`household`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Waste::Household => "household",
            Waste::Market => "market",
            Waste::Animal => "animal",
            Waste::Agricultural => "agricultural",
        }
    }
}

/// The name of a kind of waste is not one of [`Waste::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of household, market, animal, agricultural")]
pub struct UnknownWaste(pub String);

impl std::str::FromStr for Waste {
    type Err = UnknownWaste;

    fn from_str(s: &str) -> Result<Waste, UnknownWaste> {
        Waste::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| UnknownWaste(s.to_owned()))
    }
}

impl fmt::Display for Waste {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Volatile solids as a fraction of the fresh mass fed, per kind of waste.
///
/// The defaults are **unsourced working defaults** (order of magnitude for fresh food, vegetable
/// and dung wastes), to be replaced by the site's lab figures: household 0.20, market 0.10,
/// animal 0.13, agricultural 0.20.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedFractions {
    pub household: f64,
    pub market: f64,
    pub animal: f64,
    pub agricultural: f64,
}

impl Default for FeedFractions {
    fn default() -> Self {
        // Unsourced working defaults (see the type's doc).
        FeedFractions {
            household: 0.20,
            market: 0.10,
            animal: 0.13,
            agricultural: 0.20,
        }
    }
}

impl FeedFractions {
    /// The VS fraction of `waste`, and its name for a [`Missing::Bad`].
    fn of(&self, waste: Waste) -> (f64, &'static str) {
        match waste {
            Waste::Household => (self.household, "vs fraction of household waste"),
            Waste::Market => (self.market, "vs fraction of market waste"),
            Waste::Animal => (self.animal, "vs fraction of animal waste"),
            Waste::Agricultural => (self.agricultural, "vs fraction of agricultural waste"),
        }
    }
}

/// What the formulas need to know about the site (the aggregator builds it from the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteParameters {
    /// Metres above sea level; gives the atmospheric pressure when none is measured. No
    /// default: a wrong altitude is a wrong Nm³ (1,550 m is 17 % below sea-level pressure).
    pub altitude_m: Option<f64>,
    /// Digester working volume, m³. No default.
    pub digester_m3: Option<f64>,
    /// Gas meter volume per pulse, m³ (DOMAIN.md: a G4 diaphragm meter's reed output, 0.01).
    pub pulse_m3: f64,
    /// Density of the fed waste, kg/m³, to turn kg fed into slurry m³ (unsourced working
    /// default: 1000, as water).
    pub feed_kg_per_m3: f64,
    pub vs: FeedFractions,
}

impl Default for SiteParameters {
    fn default() -> Self {
        SiteParameters {
            altitude_m: None,
            digester_m3: None,
            pulse_m3: 0.01,
            feed_kg_per_m3: 1000.0,
            vs: FeedFractions::default(),
        }
    }
}

/// `v` when present and `ok`, else the reason.
fn need(v: Option<f64>, missing: Missing, what: &'static str, ok: fn(f64) -> bool) -> Kpi {
    let v = v.ok_or(missing)?;
    if v.is_finite() && ok(v) {
        Ok(v)
    } else {
        Err(Missing::Bad(what))
    }
}

/// An upstream figure, checked again (a caller may pass `Ok(f64::NAN)`).
fn need_kpi(v: Kpi, what: &'static str, ok: fn(f64) -> bool) -> Kpi {
    let v = v?;
    if v.is_finite() && ok(v) {
        Ok(v)
    } else {
        Err(Missing::Bad(what))
    }
}

fn non_negative(v: f64) -> bool {
    v >= 0.0
}

fn positive(v: f64) -> bool {
    v > 0.0
}

fn divide(numerator: f64, divisor: f64, what: &'static str) -> Kpi {
    if divisor == 0.0 {
        Err(Missing::ZeroDivisor(what))
    } else {
        Ok(numerator / divisor)
    }
}

/// Atmospheric pressure at `altitude_m`, hPa, by the barometric formula of the standard
/// atmosphere (U.S. Standard Atmosphere 1976 = ISO 2533 = ICAO, troposphere layer):
/// `p = 1013.25 hPa × (1 − L·h / T0) ^ (g0·M / (R·L))`, with T0 = 288.15 K, L = 0.0065 K/m,
/// g0 = 9.80665 m/s², M = 0.0289644 kg/mol, R = 8.31432 J/(mol·K) (exponent 5.25588).
/// 1,550 m gives 840.4 hPa. Valid from −500 m to 11,000 m (the top of the troposphere layer).
pub fn atmospheric_pressure_hpa(altitude_m: f64) -> Kpi {
    const T0: f64 = 288.15;
    const L: f64 = 0.0065;
    const G0: f64 = 9.80665;
    const M: f64 = 0.0289644;
    const R: f64 = 8.31432;
    if !(altitude_m.is_finite() && (-500.0..=11_000.0).contains(&altitude_m)) {
        return Err(Missing::Bad("altitude"));
    }
    Ok(NORMAL_PRESSURE_HPA * (1.0 - L * altitude_m / T0).powf(G0 * M / (R * L)))
}

/// The site's atmospheric pressure: measured (a window's mean) when given, else from the altitude.
pub fn site_pressure_hpa(measured_hpa: Option<f64>, altitude_m: Option<f64>) -> Kpi {
    match (measured_hpa, altitude_m) {
        (Some(_), _) => need(
            measured_hpa,
            Missing::NoAtmosphericPressure,
            "atmospheric pressure",
            positive,
        ),
        (None, Some(h)) => atmospheric_pressure_hpa(h),
        (None, None) => Err(Missing::NoAtmosphericPressure),
    }
}

/// Gas volume, m³, of `pulses` of `pulse_m3` each.
pub fn pulses_to_m3(pulses: Option<u64>, pulse_m3: f64) -> Kpi {
    let pulses = pulses.ok_or(Missing::NoGasVolume)?;
    if !(pulse_m3.is_finite() && pulse_m3 > 0.0) {
        return Err(Missing::Bad("gas meter pulse volume"));
    }
    // A u64 pulse count is exact in f64 up to 2^53, far beyond any meter's life.
    Ok(pulses as f64 * pulse_m3)
}

/// The inputs of a normal volume: one window's gas meter delta and mean conditions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GasWindow {
    /// Gas metered in the window, m³ (the `gas.volume` counter's delta, or [`pulses_to_m3`]).
    pub volume_m3: Kpi,
    /// Site atmospheric pressure, hPa ([`site_pressure_hpa`]).
    pub atmospheric_hpa: Kpi,
    /// Mean gauge pressure of the gas at the meter, mbar (= hPa).
    pub gauge_mbar: Option<f64>,
    /// Mean gas temperature at the meter, °C.
    pub gas_c: Option<f64>,
}

/// Normal volume, Nm³ (0 °C, 1013.25 hPa), of the metered gas (DOMAIN.md):
/// `Vn = V × (p_atm + p_gauge) / 1013.25 hPa × 273.15 / (273.15 + T)`.
pub fn normal_volume_nm3(w: &GasWindow) -> Kpi {
    let v = need_kpi(w.volume_m3, "gas volume", non_negative)?;
    let p_atm = need_kpi(w.atmospheric_hpa, "atmospheric pressure", positive)?;
    let gauge = need(w.gauge_mbar, Missing::NoPressure, "gas pressure", |_| true)?;
    let t = need(w.gas_c, Missing::NoGasTemperature, "gas temperature", |t| {
        t > -ZERO_CELSIUS_K
    })?;
    let p = p_atm + gauge;
    if p <= 0.0 {
        return Err(Missing::Bad("gas pressure"));
    }
    Ok(v * p / NORMAL_PRESSURE_HPA * ZERO_CELSIUS_K / (ZERO_CELSIUS_K + t))
}

/// Methane, Nm³: `Vn × CH4 %vol / 100`.
pub fn methane_nm3(biogas_nm3: Kpi, ch4_pct: Option<f64>) -> Kpi {
    let vn = need_kpi(biogas_nm3, "normal volume", non_negative)?;
    let ch4 = need(ch4_pct, Missing::NoCh4, "ch4", |c| {
        (0.0..=100.0).contains(&c)
    })?;
    Ok(vn * ch4 / 100.0)
}

/// Energy, kWh: `Nm³ CH4 × 9.94 kWh/Nm³`.
pub fn energy_kwh(methane_nm3: Kpi) -> Kpi {
    Ok(need_kpi(methane_nm3, "methane volume", non_negative)? * CH4_KWH_PER_NM3)
}

/// LPG equivalent, kg: `kWh × 3.6 MJ/kWh / 46 MJ/kg`.
pub fn lpg_equivalent_kg(energy_kwh: Kpi) -> Kpi {
    Ok(need_kpi(energy_kwh, "energy", non_negative)? * MJ_PER_KWH / LPG_MJ_PER_KG)
}

/// A window's total as a rate per day: `total × 86,400 s / window_s`.
pub fn per_day(total: Kpi, window_s: f64) -> Kpi {
    let total = total?;
    if !(window_s.is_finite() && window_s > 0.0) {
        return Err(Missing::Bad("window length"));
    }
    Ok(total * 86_400.0 / window_s)
}

/// Fresh mass fed, kg: the sum of the logbook's waste-fed entries. No entries is
/// [`Missing::NoFeed`]: the logbook cannot tell "not fed" from "not written down".
pub fn fed_kg(fed: &[(Waste, f64)]) -> Kpi {
    if fed.is_empty() {
        return Err(Missing::NoFeed);
    }
    fed.iter().try_fold(0.0, |sum, &(_, kg)| {
        if kg.is_finite() && kg >= 0.0 {
            Ok(sum + kg)
        } else {
            Err(Missing::Bad("kg of waste fed"))
        }
    })
}

/// Volatile solids fed, kg: `Σ kg fed × VS fraction of its kind`.
pub fn vs_fed_kg(fed: &[(Waste, f64)], fractions: &FeedFractions) -> Kpi {
    fed_kg(fed)?;
    fed.iter().try_fold(0.0, |sum, &(waste, kg)| {
        let (f, what) = fractions.of(waste);
        if f.is_finite() && f > 0.0 && f <= 1.0 {
            Ok(sum + kg * f)
        } else {
            Err(Missing::Bad(what))
        }
    })
}

fn digester(digester_m3: Option<f64>) -> Kpi {
    let v = digester_m3.ok_or(Missing::NotConfigured("digester volume"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(Missing::Bad("digester volume"));
    }
    Ok(v)
}

/// Specific yield, Nm³ per kg VS: `Nm³/day ÷ kg VS fed/day` (both over the same window).
pub fn specific_yield(nm3_per_day: Kpi, vs_kg_per_day: Kpi) -> Kpi {
    let nm3 = need_kpi(nm3_per_day, "gas per day", non_negative)?;
    let vs = need_kpi(vs_kg_per_day, "vs fed", non_negative)?;
    divide(nm3, vs, "vs fed")
}

/// Volumetric rate, Nm³ per m³ of digester per day: `Nm³/day ÷ digester m³`.
pub fn volumetric_rate(nm3_per_day: Kpi, digester_m3: Option<f64>) -> Kpi {
    let nm3 = need_kpi(nm3_per_day, "gas per day", non_negative)?;
    divide(nm3, digester(digester_m3)?, "digester volume")
}

/// Organic loading rate, kg VS per m³ of digester per day: `kg VS/day ÷ digester m³`.
pub fn organic_loading_rate(vs_kg_per_day: Kpi, digester_m3: Option<f64>) -> Kpi {
    let vs = need_kpi(vs_kg_per_day, "vs fed", non_negative)?;
    divide(vs, digester(digester_m3)?, "digester volume")
}

/// Hydraulic retention time, days: `digester m³ ÷ daily slurry m³`, the slurry being the feed
/// (`kg / feed_kg_per_m3`) plus the water added (litres / 1000).
pub fn hydraulic_retention_days(
    digester_m3: Option<f64>,
    fed_kg_per_day: Kpi,
    water_l_per_day: Option<f64>,
    feed_kg_per_m3: f64,
) -> Kpi {
    let d = digester(digester_m3)?;
    let fed = need_kpi(fed_kg_per_day, "kg of waste fed", non_negative)?;
    let water = need(
        water_l_per_day,
        Missing::NoWater,
        "water added",
        non_negative,
    )?;
    if !(feed_kg_per_m3.is_finite() && feed_kg_per_m3 > 0.0) {
        return Err(Missing::Bad("feed density"));
    }
    divide(d, fed / feed_kg_per_m3 + water / 1000.0, "daily slurry")
}

/// Compressor electricity per Nm³ of gas, kWh/Nm³: `compressor kWh ÷ Nm³` over one window.
pub fn compressor_kwh_per_nm3(compressor_kwh: Option<f64>, nm3: Kpi) -> Kpi {
    let kwh = need(
        compressor_kwh,
        Missing::NoCompressorEnergy,
        "compressor energy",
        non_negative,
    )?;
    let nm3 = need_kpi(nm3, "normal volume", non_negative)?;
    divide(kwh, nm3, "gas produced")
}

/// Density of biogas at normal conditions, kg/Nm³, from its CH4 %vol, the rest taken as CO2:
/// `x × 0.7168 + (1 − x) × 1.977` (standard gas densities at 0 °C, 1013.25 hPa; H2S, H2O
/// and O2 are neglected).
pub fn biogas_kg_per_nm3(ch4_pct: Option<f64>) -> Kpi {
    let x = need(ch4_pct, Missing::NoCh4, "ch4", |c| {
        (0.0..=100.0).contains(&c)
    })? / 100.0;
    Ok(x * CH4_KG_PER_NM3 + (1.0 - x) * CO2_KG_PER_NM3)
}

/// Gas sold to the cylinder meters, Nm³: their kg (the `meter.gas_used` deltas) ÷ the biogas
/// density at the window's CH4.
pub fn gas_sold_nm3(sold_kg: Option<f64>, ch4_pct: Option<f64>) -> Kpi {
    let kg = need(sold_kg, Missing::NoGasSold, "gas sold", non_negative)?;
    divide(kg, biogas_kg_per_nm3(ch4_pct)?, "biogas density")
}

/// Gas utilisation: `Nm³ sold ÷ Nm³ produced` (not clamped: gas bottled on an earlier day
/// and sold today can make it exceed 1).
pub fn gas_utilisation(sold_nm3: Kpi, produced_nm3: Kpi) -> Kpi {
    let sold = need_kpi(sold_nm3, "gas sold", non_negative)?;
    let produced = need_kpi(produced_nm3, "normal volume", non_negative)?;
    divide(sold, produced, "gas produced")
}

/// Cylinders filled: the logbook's count, passed through.
pub fn cylinders_filled(count: Option<u32>) -> Kpi {
    count.map(f64::from).ok_or(Missing::NoCylinders)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `actual` equals `expected` (within 1e-9 relative for numbers).
    fn check(what: &str, actual: Kpi, expected: Kpi) {
        match (actual, expected) {
            (Ok(a), Ok(e)) => assert!(
                (a - e).abs() <= 1e-9 * e.abs().max(f64::MIN_POSITIVE),
                "{what}: {a} != {e}"
            ),
            (a, e) => assert_eq!(a, e, "{what}"),
        }
    }

    use Missing::*;

    #[test]
    fn waste_names_round_trip() {
        for w in Waste::ALL {
            assert_eq!(w.as_str().parse::<Waste>(), Ok(w));
            assert_eq!(w.to_string(), w.as_str());
        }
        assert_eq!(
            "leaves".parse::<Waste>().map_err(|e| e.to_string()),
            Err("\"leaves\" is not one of household, market, animal, agricultural".to_owned())
        );
    }

    #[test]
    fn atmospheric_pressure_follows_the_standard_atmosphere() {
        let at = |h: f64, e: Kpi| check(&format!("{h} m"), atmospheric_pressure_hpa(h), e);
        at(0.0, Ok(1013.25));
        at(1550.0, Ok(840.384_875_190_647_4));
        at(1500.0, Ok(845.560_048_413_696_4));
        at(1700.0, Ok(825.013_031_434_996));
        // The standard atmosphere's tabulated 226.32 hPa at the top of the troposphere.
        at(11_000.0, Ok(226.320_639_734_629_28));
        at(11_001.0, Err(Bad("altitude")));
        at(f64::NAN, Err(Bad("altitude")));
        let site = |m, h, e: Kpi| check("site", site_pressure_hpa(m, h), e);
        site(Some(850.0), Some(1550.0), Ok(850.0));
        site(None, Some(0.0), Ok(1013.25));
        site(None, None, Err(NoAtmosphericPressure));
        site(Some(-1.0), None, Err(Bad("atmospheric pressure")));
    }

    #[test]
    fn normal_volume_corrects_for_pressure_and_temperature() {
        let w = |v: Kpi, p: Kpi, g: Option<f64>, t: Option<f64>| GasWindow {
            volume_m3: v,
            atmospheric_hpa: p,
            gauge_mbar: g,
            gas_c: t,
        };
        let vn = |w: GasWindow, e: Kpi| check(&format!("{w:?}"), normal_volume_nm3(&w), e);
        // At normal conditions Vn is V.
        vn(w(Ok(10.0), Ok(1013.25), Some(0.0), Some(0.0)), Ok(10.0));
        // Half the pressure, double the absolute temperature: a quarter.
        vn(w(Ok(10.0), Ok(500.0), Some(6.625), Some(273.15)), Ok(2.5));
        // No gas is a true zero.
        vn(w(Ok(0.0), Ok(840.0), Some(12.0), Some(28.0)), Ok(0.0));
        vn(
            w(Err(NoGasVolume), Ok(840.0), Some(12.0), Some(28.0)),
            Err(NoGasVolume),
        );
        vn(
            w(Ok(1.0), Err(NoAtmosphericPressure), Some(12.0), Some(28.0)),
            Err(NoAtmosphericPressure),
        );
        vn(w(Ok(1.0), Ok(840.0), None, Some(28.0)), Err(NoPressure));
        vn(
            w(Ok(1.0), Ok(840.0), Some(12.0), None),
            Err(NoGasTemperature),
        );
        vn(
            w(Ok(-1.0), Ok(840.0), Some(12.0), Some(28.0)),
            Err(Bad("gas volume")),
        );
        vn(
            w(Ok(1.0), Ok(840.0), Some(f64::NAN), Some(28.0)),
            Err(Bad("gas pressure")),
        );
        vn(
            w(Ok(1.0), Ok(840.0), Some(-900.0), Some(28.0)),
            Err(Bad("gas pressure")),
        );
        vn(
            w(Ok(1.0), Ok(840.0), Some(12.0), Some(-300.0)),
            Err(Bad("gas temperature")),
        );
        let p = |n, m3, e: Kpi| check("pulses", pulses_to_m3(n, m3), e);
        p(Some(1240), 0.01, Ok(12.4));
        p(Some(0), 0.01, Ok(0.0));
        p(None, 0.01, Err(NoGasVolume));
        p(Some(5), 0.0, Err(Bad("gas meter pulse volume")));
    }

    #[test]
    fn energy_chain_methane_kwh_lpg() {
        check("ch4", methane_nm3(Ok(10.0), Some(60.0)), Ok(6.0));
        check("ch4", methane_nm3(Ok(10.0), None), Err(NoCh4));
        check(
            "ch4",
            methane_nm3(Err(NoPressure), Some(60.0)),
            Err(NoPressure),
        );
        check("ch4", methane_nm3(Ok(10.0), Some(101.0)), Err(Bad("ch4")));
        // DOMAIN.md: 60 % biogas ≈ 6 kWh/Nm³.
        check("kwh", energy_kwh(Ok(0.6)), Ok(5.964));
        check("kwh", energy_kwh(Err(NoCh4)), Err(NoCh4));
        check(
            "kwh",
            energy_kwh(Ok(f64::INFINITY)),
            Err(Bad("methane volume")),
        );
        // 46 kWh = 165.6 MJ = 3.6 kg LPG.
        check("lpg", lpg_equivalent_kg(Ok(46.0)), Ok(3.6));
        check("lpg", lpg_equivalent_kg(Err(NoCh4)), Err(NoCh4));
        check("day", per_day(Ok(0.5), 3600.0), Ok(12.0));
        check("day", per_day(Ok(7.0), 86_400.0), Ok(7.0));
        check("day", per_day(Err(NoCh4), 3600.0), Err(NoCh4));
        check("day", per_day(Ok(1.0), 0.0), Err(Bad("window length")));
    }

    #[test]
    fn feed_and_digester_ratios() {
        let f = FeedFractions::default();
        let fed = [(Waste::Household, 100.0), (Waste::Animal, 50.0)];
        check("kg", fed_kg(&fed), Ok(150.0));
        check("kg", fed_kg(&[]), Err(NoFeed));
        check(
            "kg",
            fed_kg(&[(Waste::Market, -1.0)]),
            Err(Bad("kg of waste fed")),
        );
        check("vs", vs_fed_kg(&fed, &f), Ok(26.5));
        check("vs", vs_fed_kg(&[], &f), Err(NoFeed));
        let bad = FeedFractions { animal: 1.5, ..f };
        check(
            "vs",
            vs_fed_kg(&fed, &bad),
            Err(Bad("vs fraction of animal waste")),
        );

        check("yield", specific_yield(Ok(10.0), Ok(25.0)), Ok(0.4));
        check(
            "yield",
            specific_yield(Ok(10.0), Ok(0.0)),
            Err(ZeroDivisor("vs fed")),
        );
        check("yield", specific_yield(Ok(10.0), Err(NoFeed)), Err(NoFeed));
        check(
            "yield",
            specific_yield(Err(NoGasVolume), Err(NoFeed)),
            Err(NoGasVolume),
        );

        check("rate", volumetric_rate(Ok(10.0), Some(40.0)), Ok(0.25));
        check(
            "rate",
            volumetric_rate(Ok(10.0), None),
            Err(NotConfigured("digester volume")),
        );
        check(
            "rate",
            volumetric_rate(Ok(10.0), Some(0.0)),
            Err(ZeroDivisor("digester volume")),
        );
        check("olr", organic_loading_rate(Ok(30.0), Some(40.0)), Ok(0.75));
        check(
            "olr",
            organic_loading_rate(Err(NoFeed), Some(40.0)),
            Err(NoFeed),
        );
        check(
            "olr",
            organic_loading_rate(Ok(30.0), Some(-4.0)),
            Err(Bad("digester volume")),
        );

        let hrt = |d, fed, w, e: Kpi| check("hrt", hydraulic_retention_days(d, fed, w, 1000.0), e);
        hrt(Some(40.0), Ok(500.0), Some(500.0), Ok(40.0));
        hrt(
            Some(40.0),
            Ok(0.0),
            Some(0.0),
            Err(ZeroDivisor("daily slurry")),
        );
        hrt(Some(40.0), Ok(500.0), None, Err(NoWater));
        hrt(Some(40.0), Err(NoFeed), Some(500.0), Err(NoFeed));
        hrt(
            None,
            Ok(500.0),
            Some(500.0),
            Err(NotConfigured("digester volume")),
        );
        check(
            "hrt",
            hydraulic_retention_days(Some(40.0), Ok(500.0), Some(0.0), 500.0),
            Ok(40.0),
        );
    }

    #[test]
    fn compressor_utilisation_and_cylinders() {
        check("comp", compressor_kwh_per_nm3(Some(2.0), Ok(8.0)), Ok(0.25));
        check(
            "comp",
            compressor_kwh_per_nm3(None, Ok(8.0)),
            Err(NoCompressorEnergy),
        );
        check(
            "comp",
            compressor_kwh_per_nm3(Some(2.0), Ok(0.0)),
            Err(ZeroDivisor("gas produced")),
        );
        check(
            "comp",
            compressor_kwh_per_nm3(Some(-2.0), Ok(8.0)),
            Err(Bad("compressor energy")),
        );

        check("rho", biogas_kg_per_nm3(Some(100.0)), Ok(0.7168));
        check("rho", biogas_kg_per_nm3(Some(0.0)), Ok(1.977));
        check("rho", biogas_kg_per_nm3(Some(50.0)), Ok(1.3469));
        check("rho", biogas_kg_per_nm3(None), Err(NoCh4));
        check("sold", gas_sold_nm3(Some(1.3469), Some(50.0)), Ok(1.0));
        check("sold", gas_sold_nm3(None, Some(50.0)), Err(NoGasSold));
        check("sold", gas_sold_nm3(Some(1.0), None), Err(NoCh4));

        check("util", gas_utilisation(Ok(2.0), Ok(8.0)), Ok(0.25));
        check("util", gas_utilisation(Ok(12.0), Ok(8.0)), Ok(1.5));
        check(
            "util",
            gas_utilisation(Ok(2.0), Ok(0.0)),
            Err(ZeroDivisor("gas produced")),
        );
        check(
            "util",
            gas_utilisation(Err(NoGasSold), Ok(8.0)),
            Err(NoGasSold),
        );

        check("cyl", cylinders_filled(Some(3)), Ok(3.0));
        check("cyl", cylinders_filled(Some(0)), Ok(0.0));
        check("cyl", cylinders_filled(None), Err(NoCylinders));
    }

    #[test]
    fn missing_reasons_read_as_sentences() {
        assert_eq!(NoCh4.to_string(), "no ch4 reading");
        assert_eq!(
            ZeroDivisor("digester volume").to_string(),
            "digester volume is zero"
        );
        assert_eq!(
            NotConfigured("digester volume").to_string(),
            "digester volume is not configured"
        );
        assert_eq!(
            Bad("ch4").to_string(),
            "ch4 is out of range or not a number"
        );
        for m in [
            NoGasVolume,
            NoPressure,
            NoGasTemperature,
            NoAtmosphericPressure,
            NoCh4,
            NoFeed,
            NoWater,
            NoCompressorEnergy,
            NoGasSold,
            NoCylinders,
            NotConfigured("x"),
            ZeroDivisor("x"),
            Bad("x"),
        ] {
            let s = m.to_string();
            assert!(!s.ends_with('.') && s == s.to_lowercase(), "{s:?}");
        }
    }

    /// docs/kpi.md's worked example, figure by figure; each expected number is written in the doc.
    #[test]
    fn docs_kpi_md_worked_example() {
        let doc = include_str!("../../../docs/kpi.md");
        let example = doc
            .split_once("## Worked example")
            .map(|(_, e)| e)
            .expect("docs/kpi.md has a worked example");
        let site = SiteParameters {
            altitude_m: Some(1550.0),
            digester_m3: Some(40.0),
            ..SiteParameters::default()
        };
        let day = 86_400.0;
        let fed = [(Waste::Household, 150.0), (Waste::Market, 80.0)];

        let p_atm = site_pressure_hpa(None, site.altitude_m);
        let v = pulses_to_m3(Some(1240), site.pulse_m3);
        let vn = normal_volume_nm3(&GasWindow {
            volume_m3: v,
            atmospheric_hpa: p_atm,
            gauge_mbar: Some(12.0),
            gas_c: Some(28.0),
        });
        let ch4 = methane_nm3(vn, Some(58.0));
        let kwh = energy_kwh(ch4);
        let lpg = lpg_equivalent_kg(kwh);
        let kg = per_day(fed_kg(&fed), day);
        let vs = per_day(vs_fed_kg(&fed, &site.vs), day);
        let vn_day = per_day(vn, day);
        let rho = biogas_kg_per_nm3(Some(58.0));
        let sold = gas_sold_nm3(Some(3.1), Some(58.0));

        let figures: [(&str, Kpi, f64); 17] = [
            ("atmospheric pressure", p_atm, 840.384_875_190_647_4),
            ("gas metered", v, 12.4),
            ("normal volume", vn, 9.461_481_510_983_077),
            ("methane", ch4, 5.487_659_276_370_184),
            ("energy", kwh, 54.547_333_207_119_63),
            (
                "energy in MJ",
                kwh.map(|k| k * MJ_PER_KWH),
                196.370_399_545_630_68,
            ),
            ("lpg equivalent", lpg, 4.268_921_729_252_841),
            ("waste fed", kg, 230.0),
            ("vs fed", vs, 38.0),
            (
                "specific yield",
                specific_yield(vn_day, vs),
                0.248_986_355_552_186_23,
            ),
            (
                "volumetric rate",
                volumetric_rate(vn_day, site.digester_m3),
                0.236_537_037_774_576_94,
            ),
            (
                "organic loading rate",
                organic_loading_rate(vs, site.digester_m3),
                0.95,
            ),
            (
                "hydraulic retention time",
                hydraulic_retention_days(site.digester_m3, kg, Some(500.0), site.feed_kg_per_m3),
                54.794_520_547_945_204,
            ),
            (
                "compressor",
                compressor_kwh_per_nm3(Some(1.8), vn),
                0.190_245_047_555_240_05,
            ),
            ("biogas density", rho, 1.246_084),
            ("gas sold", sold, 2.487_793_760_292_243_7),
            (
                "gas utilisation",
                gas_utilisation(sold, vn),
                0.262_939_134_574_681_9,
            ),
        ];
        for (what, actual, expected) in figures {
            check(what, actual, Ok(expected));
            // The doc shows each figure to 6 significant digits.
            let shown = format!("{}", Sig6(expected));
            let row = example
                .lines()
                .find(|l| l.starts_with(&format!("| {what} |")));
            assert!(
                row.is_some_and(|r| r.contains(&format!(" {shown} "))),
                "docs/kpi.md should have a row \"| {what} | … {shown} … |\", found {row:?}"
            );
        }
        check("cylinders", cylinders_filled(Some(3)), Ok(3.0));
        // A day with no CH4 reading: the methane chain is missing, and says why.
        let no_ch4 = lpg_equivalent_kg(energy_kwh(methane_nm3(vn, None)));
        check("no ch4", no_ch4, Err(NoCh4));
        assert!(doc.contains(&NoCh4.to_string()));
    }

    /// A number to 6 significant digits, trailing zeros dropped (`9.46148`, `0.95`, `230`).
    struct Sig6(f64);

    impl fmt::Display for Sig6 {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let digits = 5 - self.0.abs().log10().floor() as i32;
            let s = format!("{:.*}", digits.max(0) as usize, self.0);
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_owned()
            } else {
                s
            };
            f.write_str(&s)
        }
    }
}
