//! The KPI engine: the plant figures of one hour or one local day, from the aggregator's hour
//! windows and the logbook, by the formulas of [`crate::plant::kpi`].
//!
//! **Periods.** An hour is a UTC hour window (= a local hour: the site's offset is a whole number
//! of hours, [`crate::plant::zone`]). A day is the site's local day, midnight to midnight, i.e.
//! the 24 hour windows from its start in UTC ([`Zone::day_start_ns`]).
//!
//! **Inputs** (quantities of `plant/quantities.toml`, every instance unless said):
//! - gas metered, m³: the sum of the `gas.volume` counter's deltas over every instance (every gas
//!   meter on a digester outlet: the plant's production; a site with two digesters gets their sum).
//!   A reset adds nothing (the gas across it is unknown), so a period with a reset may read low.
//! - gas gauge pressure, mbar: the mean of `digester.pressure` (count-weighted over the period's
//!   readings of every instance).
//! - gas temperature, °C: the mean of `digester.temperature`. There is no gas temperature
//!   quantity; the gas in the holder and at the meter is close to the slurry's temperature, and a
//!   5 °C error is a 1.7 % error in Nm³.
//! - CH4, %vol: the mean of `biogas.ch4`.
//! - atmospheric pressure: from `site.altitude_m` (no barometer quantity exists yet).
//! - compressor electricity, kWh: the deltas of `power.energy_import` at `site.compressor_meter`,
//!   or of every instance when it is not set.
//! - gas sold, kg: the sum of the `meter.gas_used` deltas of every pay-as-you-go meter.
//! - waste fed, water added, cylinders filled: the logbook, passed in as a [`Feed`].
//!
//! A quantity with no good reading in the period is a missing input (the figure says why); one
//! with readings and no increase is a true zero. Hour sets carry no feed-based ratios (waste fed,
//! VS fed, specific yield, organic loading rate, retention time): feeding is logged twice a day,
//! so an hour's ratio of gas to feed means nothing (plant/kpi.rs's module doc).
//!
//! **Revisions.** The figures are recomputed from the windows each time they are asked for, so a
//! late reading that revised a window is in the next answer; the KPI writer (`sinks/kpi.rs`)
//! rewrites the periods whose windows changed after it wrote them.
//!
//! Architecture invariant: no SQL (reads go through [`Windows`]), no clock and no config parsing:
//! [`figures`] is pure, and [`Engine`] only reads windows and calls it.

use chrono::NaiveDate;

use super::window::Width;
use crate::plant::kpi::{self, Kpi, Missing, SiteParameters, Waste};
use crate::plant::zone::Zone;
use crate::store::{self, windows::Windows};

pub const GAS_VOLUME: &str = "gas.volume";
pub const PRESSURE: &str = "digester.pressure";
pub const TEMPERATURE: &str = "digester.temperature";
pub const CH4: &str = "biogas.ch4";
pub const COMPRESSOR_ENERGY: &str = "power.energy_import";
pub const GAS_SOLD: &str = "meter.gas_used";

const HOUR_NS: i64 = 3_600_000_000_000;
const DAY_NS: i64 = 24 * HOUR_NS;

/// The length of a KPI period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "hour" => Some(Period::Hour),
            "day" => Some(Period::Day),
            _ => None,
        }
    }

    pub fn secs(self) -> f64 {
        match self {
            Period::Hour => 3600.0,
            Period::Day => 86_400.0,
        }
    }
}

/// What the logbook says about one period. An empty `waste` means nothing was logged (missing,
/// not zero: plant/kpi.rs's `fed_kg`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feed {
    /// Waste fed: kind and fresh kg, one entry per logbook entry.
    pub waste: Vec<(Waste, f64)>,
    /// Water added, litres; `None` when no water entry is logged.
    pub water_l: Option<f64>,
    /// Cylinders filled; `None` when no entry is logged.
    pub cylinders_filled: Option<u32>,
}

/// What the logbook's current entries (withdrawn ones left out, as `store::logbook::Logbook::list`
/// gives them) say about `[from_ns, to_ns)`: each waste entry, the litres of water and the
/// cylinders filled summed. Nothing logged stays `None`/empty (missing, not zero).
pub fn feed_of(entries: &[crate::logbook::Entry], from_ns: i64, to_ns: i64) -> Feed {
    use crate::logbook::Values;
    let mut feed = Feed::default();
    for e in entries
        .iter()
        .filter(|e| !e.withdrawn && e.at_ns >= from_ns && e.at_ns < to_ns)
    {
        match &e.values {
            Values::WasteFed { waste, kg } => feed.waste.push((*waste, *kg)),
            Values::WaterAdded { litres } => {
                feed.water_l = Some(feed.water_l.unwrap_or(0.0) + litres)
            }
            Values::CylindersFilled { count } => {
                feed.cylinders_filled = Some(feed.cylinders_filled.unwrap_or(0) + count)
            }
            _ => {}
        }
    }
    feed
}

/// One figure: a stable snake_case name, its unit, and its value or why it is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    pub value: Kpi,
}

/// The figures of one period.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiSet {
    pub period: Period,
    /// Unix ns of the period's start (a local midnight for a day).
    pub period_start_ns: i64,
    pub figures: Vec<Figure>,
}

impl KpiSet {
    /// The figure called `name`, if the set has one.
    pub fn get(&self, name: &str) -> Option<&Kpi> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }
}

/// The measured inputs of one period, read from the windows (`None`: no good reading).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Inputs {
    pub gas_m3: Option<f64>,
    pub gauge_mbar: Option<f64>,
    pub gas_c: Option<f64>,
    pub ch4_pct: Option<f64>,
    pub compressor_kwh: Option<f64>,
    pub sold_kg: Option<f64>,
}

/// The figures of a period of `period` from its inputs: the pure part of the engine.
pub fn figures(period: Period, site: &SiteParameters, i: &Inputs, feed: &Feed) -> Vec<Figure> {
    let window_s = period.secs();
    let p_atm = kpi::site_pressure_hpa(None, site.altitude_m);
    let v: Kpi = i.gas_m3.ok_or(Missing::NoGasVolume);
    let vn = kpi::normal_volume_nm3(&kpi::GasWindow {
        volume_m3: v,
        atmospheric_hpa: p_atm,
        gauge_mbar: i.gauge_mbar,
        gas_c: i.gas_c,
    });
    let ch4 = kpi::methane_nm3(vn, i.ch4_pct);
    let kwh = kpi::energy_kwh(ch4);
    let vn_day = kpi::per_day(vn, window_s);
    let sold = kpi::gas_sold_nm3(i.sold_kg, i.ch4_pct);
    let f = |name, unit, value| Figure { name, unit, value };
    let mut out = vec![
        f("gas_metered_m3", "m³", v),
        f("normal_gas_nm3", "Nm³", vn),
        f("methane_nm3", "Nm³", ch4),
        f("energy_kwh", "kWh", kwh),
        f("lpg_kg", "kg", kpi::lpg_equivalent_kg(kwh)),
        f(
            "volumetric_rate",
            "Nm³/(m³·d)",
            kpi::volumetric_rate(vn_day, site.digester_m3),
        ),
        f(
            "compressor_kwh",
            "kWh",
            i.compressor_kwh.ok_or(Missing::NoCompressorEnergy),
        ),
        f(
            "compressor_kwh_per_nm3",
            "kWh/Nm³",
            kpi::compressor_kwh_per_nm3(i.compressor_kwh, vn),
        ),
        f("gas_sold_nm3", "Nm³", sold),
        f("gas_utilisation", "", kpi::gas_utilisation(sold, vn)),
        f(
            "cylinders_filled",
            "",
            kpi::cylinders_filled(feed.cylinders_filled),
        ),
    ];
    if period == Period::Day {
        let kg = kpi::per_day(kpi::fed_kg(&feed.waste), window_s);
        let vs = kpi::per_day(kpi::vs_fed_kg(&feed.waste, &site.vs), window_s);
        out.extend([
            f("waste_fed_kg", "kg", kg),
            f("vs_fed_kg", "kg", vs),
            f(
                "specific_yield_nm3_per_kg_vs",
                "Nm³/kg VS",
                kpi::specific_yield(vn_day, vs),
            ),
            f(
                "organic_loading_rate",
                "kg VS/(m³·d)",
                kpi::organic_loading_rate(vs, site.digester_m3),
            ),
            f(
                "hrt_days",
                "d",
                kpi::hydraulic_retention_days(
                    site.digester_m3,
                    kg,
                    feed.water_l,
                    site.feed_kg_per_m3,
                ),
            ),
        ]);
    }
    out
}

/// The good readings of one quantity over a period, summed over its windows and instances.
#[derive(Debug, Default)]
struct Total {
    count: u64,
    sum: f64,
    delta: f64,
}

impl Total {
    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    fn delta(&self) -> Option<f64> {
        (self.count > 0).then_some(self.delta)
    }
}

/// Computes KPI sets from the windows, for one site.
#[derive(Debug, Clone)]
pub struct Engine {
    site: SiteParameters,
    zone: Zone,
    compressor_meter: Option<String>,
}

impl Engine {
    /// `compressor_meter`: the instance of [`COMPRESSOR_ENERGY`] that meters the compressor;
    /// `None`: every instance.
    pub fn new(site: SiteParameters, zone: Zone, compressor_meter: Option<String>) -> Engine {
        Engine {
            site,
            zone,
            compressor_meter,
        }
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The start of the period of `period` holding `ts_ns`.
    pub fn period_start(&self, period: Period, ts_ns: i64) -> i64 {
        match period {
            Period::Hour => Width::Hour.start(ts_ns),
            Period::Day => self.zone.day_start_of(ts_ns),
        }
    }

    /// The end of the period starting at `start_ns`.
    pub fn period_end(&self, period: Period, start_ns: i64) -> i64 {
        start_ns
            + match period {
                Period::Hour => HOUR_NS,
                Period::Day => DAY_NS,
            }
    }

    fn total(
        &self,
        windows: &Windows,
        quantity: &str,
        only: Option<&str>,
        from_ns: i64,
        to_ns: i64,
    ) -> store::Result<Total> {
        let mut t = Total::default();
        for instance in windows.instances(quantity)? {
            if only.is_some_and(|o| o != instance) {
                continue;
            }
            let Some(id) = windows.series_id(quantity, &instance)? else {
                continue;
            };
            for row in windows.range(Width::Hour, id, from_ns, to_ns)? {
                let w = &row.window;
                t.count += u64::from(w.count);
                t.sum += w.sum;
                t.delta += w.delta;
            }
        }
        Ok(t)
    }

    /// The measured inputs of `[from_ns, to_ns)` (hour-aligned).
    pub fn inputs(&self, windows: &Windows, from_ns: i64, to_ns: i64) -> store::Result<Inputs> {
        let t = |q, only| self.total(windows, q, only, from_ns, to_ns);
        Ok(Inputs {
            gas_m3: t(GAS_VOLUME, None)?.delta(),
            gauge_mbar: t(PRESSURE, None)?.mean(),
            gas_c: t(TEMPERATURE, None)?.mean(),
            ch4_pct: t(CH4, None)?.mean(),
            compressor_kwh: t(COMPRESSOR_ENERGY, self.compressor_meter.as_deref())?.delta(),
            sold_kg: t(GAS_SOLD, None)?.delta(),
        })
    }

    /// The figures of the period of `period` starting at `start_ns` (see [`Engine::period_start`]).
    pub fn period(
        &self,
        windows: &Windows,
        period: Period,
        start_ns: i64,
        feed: &Feed,
    ) -> store::Result<KpiSet> {
        let inputs = self.inputs(windows, start_ns, self.period_end(period, start_ns))?;
        Ok(KpiSet {
            period,
            period_start_ns: start_ns,
            figures: figures(period, &self.site, &inputs, feed),
        })
    }

    /// The figures of the UTC hour starting at `start_ns`.
    pub fn hour(&self, windows: &Windows, start_ns: i64, feed: &Feed) -> store::Result<KpiSet> {
        self.period(windows, Period::Hour, Width::Hour.start(start_ns), feed)
    }

    /// The figures of the site's local day `date`.
    pub fn day(&self, windows: &Windows, date: NaiveDate, feed: &Feed) -> store::Result<KpiSet> {
        self.period(windows, Period::Day, self.zone.day_start_ns(date), feed)
    }

    /// The starts of the periods of `period` that start in `[from_ns, to_ns)`, oldest first.
    pub fn starts(&self, period: Period, from_ns: i64, to_ns: i64) -> Vec<i64> {
        let mut s = self.period_start(period, from_ns);
        if s < from_ns {
            s = self.period_end(period, s);
        }
        let mut out = Vec::new();
        while s < to_ns {
            out.push(s);
            s = self.period_end(period, s);
        }
        out
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_feed_of_a_period_sums_its_current_logbook_entries_and_leaves_withdrawn_ones_out() {
        use crate::logbook::{Entry, Values};
        const H: i64 = 3_600_000_000_000;
        let entry = |id: i64, at_ns: i64, values: Values, withdrawn: bool| Entry {
            id,
            entry: id,
            revision: 1,
            values,
            at_ns,
            by: "amina".into(),
            recorded_ns: at_ns,
            first_recorded_ns: at_ns,
            note: None,
            withdrawn,
            reason: None,
        };
        let entries = vec![
            entry(
                1,
                8 * H,
                Values::WasteFed {
                    waste: Waste::Household,
                    kg: 120.0,
                },
                false,
            ),
            entry(
                2,
                8 * H,
                Values::WasteFed {
                    waste: Waste::Market,
                    kg: 60.0,
                },
                false,
            ),
            entry(
                3,
                9 * H,
                Values::WasteFed {
                    waste: Waste::Animal,
                    kg: 999.0,
                },
                true,
            ),
            entry(4, 8 * H, Values::WaterAdded { litres: 100.0 }, false),
            entry(5, 16 * H, Values::WaterAdded { litres: 50.0 }, false),
            entry(6, 17 * H, Values::CylindersFilled { count: 2 }, false),
            entry(7, 18 * H, Values::CylindersFilled { count: 1 }, false),
            entry(8, 10 * H, Values::LabPh { ph: 7.1 }, false),
            entry(
                9,
                30 * H,
                Values::WasteFed {
                    waste: Waste::Household,
                    kg: 70.0,
                },
                false,
            ),
        ];
        let day = feed_of(&entries, 0, 24 * H);
        assert_eq!(
            day.waste,
            vec![(Waste::Household, 120.0), (Waste::Market, 60.0)]
        );
        assert_eq!((day.water_l, day.cylinders_filled), (Some(150.0), Some(3)));
        // A period with nothing logged: missing, not zero.
        let empty = feed_of(&entries, 48 * H, 72 * H);
        assert_eq!(empty, Feed::default());
    }
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::{Settings, Worker};
    use crate::model::{Quality, Reading, Series, Value};
    use crate::plant::{Catalogue, Plant};
    use crate::store::{db_path, Writer};

    const S: i64 = 1_000_000_000;
    const MIN: i64 = 60 * S;
    /// 2026-12-01T00:00:00Z; the Nairobi day 2026-12-01 starts 3 hours before.
    const T0: i64 = 1_796_083_200_000_000_000;
    const DAY0: i64 = T0 - 3 * 3600 * S;

    fn reading(measurement: &str, device: &str, ts: i64, fields: &[(&str, Value)]) -> Reading {
        Reading {
            series: Series::new(measurement, device),
            ts_ns: ts,
            quality: Quality::Good,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            ack: None,
            receipt: None,
        }
    }

    fn f(name: &str, v: f64) -> (&str, Value) {
        (name, Value::Float(v))
    }

    /// `n` increments of `step` between increment `first` and the `i`-th reading.
    fn counter(base: f64, step: f64, i: i64, first: i64, n: i64) -> f64 {
        base + step * (i - first + 1).clamp(0, n) as f64
    }

    /// One Nairobi day (2026-12-01) of readings, with the numbers of the hand computation below.
    /// `ch4`: whether the analyser reported.
    fn scenario(ch4: bool) -> Vec<Reading> {
        let mut v = Vec::new();
        // The counters' last readings of the day before: the day's deltas start from them.
        let pre = DAY0 - 30 * S;
        v.push(reading(
            "biogas",
            "digester-1",
            pre,
            &[f("volume_m3", 1000.0)],
        ));
        v.push(reading(
            "power",
            "sdm120-1",
            pre,
            &[f("energy_import_kwh", 350.0)],
        ));
        v.push(reading(
            "power",
            "sdm120-2",
            pre,
            &[f("energy_import_kwh", 80.0)],
        ));
        v.push(reading("gas_meter", "GM-1", pre, &[f("gas_used_kg", 5.0)]));
        v.push(reading("gas_meter", "GM-2", pre, &[f("gas_used_kg", 20.0)]));
        for i in 0..1440 {
            let t = DAY0 + i * MIN + 30 * S;
            let half = i >= 720;
            // Gas: 0.01 m³ a minute from 05:00 to 21:00 local (960 minutes).
            v.push(reading(
                "biogas",
                "digester-1",
                t,
                &[f("volume_m3", counter(1000.0, 0.01, i, 300, 960))],
            ));
            v.push(reading(
                "digester",
                "digester-1",
                t,
                &[
                    f("pressure_mbar", if half { 12.0 } else { 8.0 }),
                    f("temperature_c", if half { 28.0 } else { 24.0 }),
                ],
            ));
            if ch4 && i % 3 == 0 {
                v.push(reading(
                    "biogas",
                    "analyser-1",
                    t,
                    &[f("ch4_pct", if half { 60.0 } else { 54.0 })],
                ));
            }
            // The compressor: 0.005 kWh a minute, 10:00–12:00 and 14:00–16:00 local.
            let kwh = counter(350.0, 0.005, i, 600, 120) + counter(0.0, 0.005, i, 840, 120);
            v.push(reading(
                "power",
                "sdm120-1",
                t,
                &[f("energy_import_kwh", kwh)],
            ));
            // The pumps' meter (not the compressor's): 10 kWh over the day, not counted.
            v.push(reading(
                "power",
                "sdm120-2",
                t,
                &[f(
                    "energy_import_kwh",
                    80.0 + 10.0 * (i + 1) as f64 / 1440.0,
                )],
            ));
        }
        // A pressure reading out of range (the source stores the flag instead of the value):
        // counted bad, not in the mean.
        let mut bad = reading(
            "digester",
            "digester-1",
            DAY0 + 100 * MIN + 45 * S,
            &[("pressure_mbar_quality", Value::Str("out_of_range".into()))],
        );
        bad.quality = Quality::Bad;
        v.push(bad);
        for j in 0..144 {
            let t = DAY0 + j * 10 * MIN + 15 * S;
            // GM-1: 0.05 kg in each of 30 ten-minute steps = 1.5 kg.
            v.push(reading(
                "gas_meter",
                "GM-1",
                t,
                &[f("gas_used_kg", counter(5.0, 0.05, j, 10, 30))],
            ));
            // GM-2: 0.4 kg, then replaced by a meter showing 3.0 kg (a reset: adds nothing),
            // then 0.5 kg more = 0.9 kg.
            let used = if j < 60 {
                counter(20.0, 0.1, j, 20, 4)
            } else {
                counter(3.0, 0.1, j, 80, 5)
            };
            v.push(reading("gas_meter", "GM-2", t, &[f("gas_used_kg", used)]));
        }
        // The next local day: not in this one.
        v.push(reading(
            "biogas",
            "digester-1",
            DAY0 + 86_400 * S + 30 * S,
            &[f("volume_m3", 1_000.0 + 9.6 + 0.5)],
        ));
        v
    }

    fn site() -> SiteParameters {
        SiteParameters {
            altitude_m: Some(1550.0),
            digester_m3: Some(40.0),
            ..SiteParameters::default()
        }
    }

    fn engine() -> Engine {
        Engine::new(site(), Zone::default(), Some("sdm120-1".into()))
    }

    fn feed() -> Feed {
        Feed {
            waste: vec![
                (Waste::Household, 120.0),
                (Waste::Market, 60.0),
                (Waste::Animal, 100.0),
            ],
            water_l: Some(400.0),
            cylinders_filled: Some(2),
        }
    }

    /// Stores `readings`, runs the aggregator, and returns the windows (and the tempdir).
    fn aggregated(readings: &[Reading]) -> (tempfile::TempDir, Windows) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        let mut writer = Writer::open(&path).expect("writer");
        writer.append(readings).expect("append");
        let plant = Arc::new(Plant::new(Catalogue::builtin()));
        let mut w = Worker::open(&path, plant, Settings::default()).expect("worker");
        w.catch_up().expect("catch up");
        (dir, Windows::open(&path).expect("windows"))
    }

    fn close(what: &str, actual: Option<&Kpi>, expected: f64) {
        match actual {
            Some(Ok(a)) if ((a - expected) / expected.abs().max(1e-12)).abs() < 1e-9 => {}
            _ => panic!("{what}: expected {expected}, got {actual:?}"),
        }
    }

    /// The known scenario: one Nairobi day at a 1,550 m site with a 40 m³ digester. Every
    /// expected value is computed by hand from the formulas (docs/kpi.md, "Second worked example"):
    ///
    /// - gas metered: 960 minutes × 0.01 m³ = 9.6 m³
    /// - gauge pressure: 720 readings of 8 mbar and 720 of 12 (one more is flagged bad) = 10 mbar
    /// - temperature: 720 × 24 °C and 720 × 28 °C = 26 °C
    /// - CH4: 240 readings of 54 % and 240 of 60 % = 57 %
    /// - atmospheric pressure at 1,550 m: 840.384875190647 hPa (docs/kpi.md)
    /// - normal gas: 9.6 × (840.384875190647 + 10) / 1013.25 × 273.15 / (273.15 + 26)
    ///   = 9.6 × 0.839264619 × 0.913087080 = 7.35668813 Nm³
    /// - methane: 7.35668813 × 0.57 = 4.19331223 Nm³
    /// - energy: 4.19331223 × 9.94 = 41.6815236 kWh
    /// - LPG: 41.6815236 × 3.6 / 46 = 3.26203228 kg
    /// - volumetric rate: 7.35668813 / 40 = 0.183917203 Nm³/(m³·d)
    /// - compressor: 240 minutes × 0.005 = 1.2 kWh (sdm120-2, the pumps, not counted);
    ///   1.2 / 7.35668813 = 0.163116878 kWh/Nm³
    /// - gas sold: GM-1 1.5 kg + GM-2 0.4 + 0.5 kg (its replacement is a reset) = 2.4 kg;
    ///   density 0.57 × 0.7168 + 0.43 × 1.977 = 1.258686 kg/Nm³; 2.4 / 1.258686 = 1.90675037 Nm³
    /// - gas utilisation: 1.90675037 / 7.35668813 = 0.259185973
    /// - waste fed: 120 + 60 + 100 = 280 kg; VS: 120 × 0.20 + 60 × 0.10 + 100 × 0.13 = 43 kg
    /// - specific yield: 7.35668813 / 43 = 0.171085770; organic loading: 43 / 40 = 1.075
    /// - retention: 40 / (280 / 1000 + 400 / 1000) = 40 / 0.68 = 58.8235294 days
    /// - cylinders: 2 (logbook)
    #[test]
    fn kpis_on_a_known_scenario_equal_hand_computed_values() {
        let (_dir, windows) = aggregated(&scenario(true));
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).expect("date");
        let set = engine().day(&windows, day, &feed()).expect("kpis");
        assert_eq!((set.period, set.period_start_ns), (Period::Day, DAY0));
        // The hand computation above, to the digits of a calculator.
        let vn = 9.6 * (840.384_875_190_647_4 + 10.0) / 1013.25 * 273.15 / 299.15;
        let rho = 0.57 * 0.7168 + 0.43 * 1.977;
        let sold = 2.4 / rho;
        let expected: [(&str, f64); 16] = [
            ("gas_metered_m3", 9.6),
            ("normal_gas_nm3", vn),
            ("methane_nm3", vn * 0.57),
            ("energy_kwh", vn * 0.57 * 9.94),
            ("lpg_kg", vn * 0.57 * 9.94 * 3.6 / 46.0),
            ("volumetric_rate", vn / 40.0),
            ("compressor_kwh", 1.2),
            ("compressor_kwh_per_nm3", 1.2 / vn),
            ("gas_sold_nm3", sold),
            ("gas_utilisation", sold / vn),
            ("cylinders_filled", 2.0),
            ("waste_fed_kg", 280.0),
            ("vs_fed_kg", 43.0),
            ("specific_yield_nm3_per_kg_vs", vn / 43.0),
            ("organic_loading_rate", 1.075),
            ("hrt_days", 40.0 / 0.68),
        ];
        for (name, value) in expected {
            close(name, set.get(name), value);
        }
        assert_eq!(set.figures.len(), expected.len());
        // The written-out decimals of the comment above are the same numbers.
        for (name, written) in [
            ("normal_gas_nm3", 7.356_688_13),
            ("methane_nm3", 4.193_312_23),
            ("energy_kwh", 41.681_523_6),
            ("lpg_kg", 3.262_032_28),
            ("volumetric_rate", 0.183_917_203),
            ("compressor_kwh_per_nm3", 0.163_116_878),
            ("gas_sold_nm3", 1.906_750_37),
            ("gas_utilisation", 0.259_185_973),
            ("specific_yield_nm3_per_kg_vs", 0.171_085_770),
            ("hrt_days", 58.823_529_4),
        ] {
            match set.get(name) {
                Some(Ok(v)) if ((v - written) / written).abs() < 1e-8 => {}
                other => panic!("{name}: written {written}, computed {other:?}"),
            }
        }

        // The hours add up to the day; the 13:00 local hour (10:00Z) is within the compressor's
        // off time and the gas production: 60 × 0.01 m³, no compressor energy (a true zero).
        let hours = engine().starts(Period::Hour, DAY0, DAY0 + 86_400 * S);
        assert_eq!(hours.len(), 24);
        let mut sum = 0.0;
        for h in &hours {
            let set = engine().hour(&windows, *h, &Feed::default()).expect("kpis");
            if let Some(Ok(v)) = set.get("gas_metered_m3") {
                sum += v;
            }
            assert_eq!(set.get("specific_yield_nm3_per_kg_vs"), None);
            assert_eq!(
                set.get("cylinders_filled"),
                Some(&Err(Missing::NoCylinders))
            );
        }
        assert!((sum - 9.6).abs() < 1e-9, "{sum}");
        let h13 = engine()
            .hour(&windows, DAY0 + 13 * 3600 * S, &Feed::default())
            .expect("kpis");
        close("hour gas", h13.get("gas_metered_m3"), 0.6);
        assert_eq!(h13.get("compressor_kwh"), Some(&Ok(0.0)));
        assert_eq!(h13.get("compressor_kwh_per_nm3"), Some(&Ok(0.0)));
        // Before the first reading: no gas volume in the window, not zero.
        let before = engine()
            .hour(&windows, DAY0 - 5 * 3600 * S, &Feed::default())
            .expect("kpis");
        assert_eq!(
            before.get("normal_gas_nm3"),
            Some(&Err(Missing::NoGasVolume))
        );
    }

    #[test]
    fn a_day_without_ch4_or_feed_says_which_figures_are_missing_and_why() {
        let (_dir, windows) = aggregated(&scenario(false));
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).expect("date");
        let set = engine().day(&windows, day, &Feed::default()).expect("kpis");
        let reason = |name: &str| match set.get(name) {
            Some(Err(m)) => m.to_string(),
            other => panic!("{name}: expected missing, got {other:?}"),
        };
        for name in [
            "methane_nm3",
            "energy_kwh",
            "lpg_kg",
            "gas_sold_nm3",
            "gas_utilisation",
        ] {
            assert_eq!(reason(name), "no ch4 reading", "{name}");
        }
        for name in [
            "waste_fed_kg",
            "vs_fed_kg",
            "specific_yield_nm3_per_kg_vs",
            "organic_loading_rate",
            "hrt_days",
        ] {
            assert_eq!(reason(name), "no waste fed is logged", "{name}");
        }
        assert_eq!(reason("cylinders_filled"), "no cylinders filled are logged");
        // What does not need CH4 or feed is still there.
        let vn = 9.6 * (840.384_875_190_647_4 + 10.0) / 1013.25 * 273.15 / 299.15;
        close("normal gas", set.get("normal_gas_nm3"), vn);
        close("compressor", set.get("compressor_kwh_per_nm3"), 1.2 / vn);
        // A site without altitude or digester volume: the reasons name them.
        let bare = Engine::new(SiteParameters::default(), Zone::default(), None);
        let set = bare.day(&windows, day, &feed()).expect("kpis");
        assert_eq!(
            set.get("normal_gas_nm3").cloned(),
            Some(Err(Missing::NoAtmosphericPressure))
        );
        assert_eq!(
            set.get("organic_loading_rate").cloned(),
            Some(Err(Missing::NotConfigured("digester volume")))
        );
        // Without site.compressor_meter both electricity meters count: 1.2 + 10 kWh.
        close("all meters", set.get("compressor_kwh"), 11.2);
    }

    #[test]
    fn period_starts_follow_the_local_day() {
        let e = engine();
        assert_eq!(e.period_start(Period::Day, T0), DAY0);
        assert_eq!(e.period_start(Period::Hour, T0 + 59 * MIN), T0);
        assert_eq!(
            e.starts(Period::Day, DAY0 - 1, DAY0 + 2 * 86_400 * S),
            vec![DAY0, DAY0 + 86_400 * S]
        );
        assert_eq!(e.starts(Period::Hour, T0 + 1, T0 + 3601 * S).len(), 1);
    }
}
