//! The alarm rules as the config writes them (`[alarms]`, `[[alarms.rule]]`, `[alarms.meter]`,
//! `[[alarms.output]]`) and as the engine uses them ([`Rule`], [`Condition`]).
//!
//! A rule is one or more **conditions**, all of which must hold: the first names the rule's
//! quantity (its alarms are per instance of that quantity), the others (`and = [...]`) are read
//! at the same instance when that instance has the quantity, otherwise at every instance that
//! has it (all must hold). A condition is a threshold (`above` / `below`, with a `deadband`),
//! a rate of change over `window_s` (`rate_above` / `rate_below`, in units `per` hour, day or
//! minute), a text/flag match (`is = ["closed", "locked"]`), or an increase within the site's
//! local day (`daily_increase_above`, for meters' use per day).
//!
//! The meter rules of `[alarms.meter]` are the same kind of rules, built here once for every
//! field meter ([`meter_rules`]): no rule per meter.

use std::sync::Arc;

use serde::Deserialize;

/// How bad an alarm is, lowest first (ISA-18.2 priorities, as the dashboard shows them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Alarm,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Alarm => "alarm",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "alarm" => Severity::Alarm,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// The unit of a rate condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Minute,
    #[default]
    Hour,
    Day,
}

impl Per {
    pub fn seconds(self) -> f64 {
        match self {
            Per::Minute => 60.0,
            Per::Hour => 3600.0,
            Per::Day => 86_400.0,
        }
    }
}

/// One condition as written in the config.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ConditionConfig {
    /// A catalogue quantity name.
    pub quantity: String,
    /// Only at this instance (device); unset: every instance (see the module doc).
    pub instance: Option<String>,
    /// Only readings stored in this unit (a gas meter's credit is in kg, an electricity
    /// meter's in kWh).
    pub unit: Option<String>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub rate_above: Option<f64>,
    pub rate_below: Option<f64>,
    pub per: Per,
    /// Span of the rate (seconds); the rate is known once half of it is covered.
    pub window_s: Option<u64>,
    /// Matches a text or flag value (`true` / `false` for flags).
    pub is: Vec<String>,
    /// A counter's increase since the start of the site's local day above this.
    pub daily_increase_above: Option<f64>,
    /// Hysteresis: a condition that holds clears only this far back past its limit.
    pub deadband: f64,
}

/// `[[alarms.rule]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Stable name: the MQTT topic `alarms/{name}`, the API id `{name}:{instance}`.
    pub name: String,
    pub severity: Severity,
    /// Shown to people with the alarm.
    pub message: String,
    #[serde(flatten)]
    pub condition: ConditionConfig,
    /// Further conditions that must hold at the same time.
    pub and: Vec<ConditionConfig>,
    /// The conditions must hold this long before the alarm is raised (seconds).
    pub on_delay_s: f64,
    /// ... and stop holding this long before it clears.
    pub off_delay_s: f64,
    /// Stays active after the condition clears until an operator resets it.
    pub latched: bool,
    /// Seconds without a good reading of a quantity this rule reads before that quantity is
    /// stale (its own alarm; this rule is then suppressed). Unset: `[alarms] stale_s`; 0: never
    /// (manual entries such as the logbook's lab results).
    pub stale_s: Option<u64>,
}

/// `[alarms.meter]`: rules applied to every field meter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeterConfig {
    pub enabled: bool,
    /// Low credit, for gas meters (kg) and electricity meters (kWh).
    pub low_credit_kg: f64,
    pub low_credit_kwh: f64,
    /// Use per local day above which the customer is told (kg, kWh).
    pub daily_use_kg: f64,
    pub daily_use_kwh: f64,
    /// Battery below this (V).
    pub low_battery_v: f64,
    /// No message from a meter for this long (seconds): offline (a few of its intervals).
    pub offline_s: u64,
}

impl Default for MeterConfig {
    fn default() -> MeterConfig {
        MeterConfig {
            enabled: true,
            low_credit_kg: 0.5,
            low_credit_kwh: 2.0,
            daily_use_kg: 3.0,
            daily_use_kwh: 20.0,
            low_battery_v: 3.4,
            offline_s: 1800,
        }
    }
}

/// When an output follows an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// On while an alarm is active and not yet acknowledged (a buzzer).
    #[default]
    Acknowledged,
    /// On while an alarm is active, acknowledged or not (a beacon, a shut-off relay).
    Cleared,
}

/// `[[alarms.output]]`: a GPIO output driven by the alarms.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// A `[[gpio.output]]` name.
    pub output: String,
    /// Alarms of this severity or worse drive it.
    pub min_severity: Severity,
    pub until: Until,
}

/// `[alarms]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub enabled: bool,
    /// Default seconds without a good reading before a quantity is stale.
    pub stale_s: u64,
    /// Seconds without any reading before a bound device (Modbus, GPIO, 1-Wire) is offline.
    pub offline_s: u64,
    /// Longest shelving an operator may ask for (hours).
    pub max_shelve_hours: u64,
    /// Publish every transition on the embedded broker at `alarms/{rule}`.
    pub mqtt: bool,
    pub meter: MeterConfig,
    pub output: Vec<OutputConfig>,
    pub rule: Vec<RuleConfig>,
}

/// The rules shipped in the generated config (DOMAIN.md's alarm defaults), as TOML.
pub const DEFAULT_RULES_TOML: &str = include_str!("default-rules.toml");

impl Default for Config {
    fn default() -> Config {
        #[derive(Deserialize)]
        struct File {
            alarms: Rules,
        }
        #[derive(Deserialize)]
        struct Rules {
            rule: Vec<RuleConfig>,
        }
        let rules: File = toml::from_str(DEFAULT_RULES_TOML).expect("default-rules.toml parses");
        Config {
            enabled: true,
            stale_s: 300,
            offline_s: 120,
            max_shelve_hours: 24,
            mqtt: true,
            meter: MeterConfig::default(),
            output: Vec::new(),
            rule: rules.alarms.rule,
        }
    }
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub quantity: Arc<str>,
    pub instance: Option<Arc<str>>,
    pub unit: Option<String>,
    pub test: Test,
    pub deadband: f64,
    pub stale_ns: Option<i64>,
}

/// What a condition tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Above(f64),
    Below(f64),
    RateAbove {
        per_s: f64,
        limit: f64,
        window_ns: i64,
    },
    RateBelow {
        per_s: f64,
        limit: f64,
        window_ns: i64,
    },
    Is(Vec<String>),
    DailyIncreaseAbove(f64),
}

impl Test {
    pub fn window_ns(&self) -> Option<i64> {
        match self {
            Test::RateAbove { window_ns, .. } | Test::RateBelow { window_ns, .. } => {
                Some(*window_ns)
            }
            _ => None,
        }
    }
}

/// How a rule's instances are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Per instance of the first condition's quantity.
    Quantity,
    /// Per device (no reading of any kind for `after`): device offline, meter offline.
    Offline { meters: bool },
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: Arc<str>,
    pub severity: Severity,
    pub message: String,
    pub scope: Scope,
    pub conditions: Vec<Condition>,
    pub on_delay_ns: i64,
    pub off_delay_ns: i64,
    pub latched: bool,
    /// For offline rules: silence after which a device is offline.
    pub offline_ns: i64,
}

impl Condition {
    /// For people: `digester.pressure > 53 (deadband 3)`, `gas.flow at gas-meter < 0.01`.
    pub fn describe(&self) -> String {
        let at = self
            .instance
            .as_deref()
            .map(|i| format!(" at {i}"))
            .unwrap_or_default();
        let per = |per_s: f64| match per_s {
            60.0 => "minute",
            86_400.0 => "day",
            _ => "hour",
        };
        let test = match &self.test {
            Test::Above(v) => format!("> {v}"),
            Test::Below(v) => format!("< {v}"),
            Test::RateAbove {
                per_s,
                limit,
                window_ns,
            }
            | Test::RateBelow {
                per_s,
                limit,
                window_ns,
            } => {
                let above = matches!(self.test, Test::RateAbove { .. });
                let how = match (above, *limit < 0.0) {
                    (true, false) => "rising faster than",
                    (true, true) => "falling slower than",
                    (false, true) => "falling faster than",
                    (false, false) => "rising slower than",
                };
                format!(
                    "{how} {} per {} over {} s",
                    limit.abs(),
                    per(*per_s),
                    window_ns / S
                )
            }
            Test::Is(w) => format!("is {}", w.join(" or ")),
            Test::DailyIncreaseAbove(v) => format!("up by more than {v} today"),
        };
        let db = if self.deadband > 0.0 {
            format!(" (deadband {})", self.deadband)
        } else {
            String::new()
        };
        format!("{}{at} {test}{db}", self.quantity)
    }
}

impl Rule {
    /// The conditions and delays, for `gkgw check`.
    pub fn describe(&self) -> String {
        let mut s = self
            .conditions
            .iter()
            .map(Condition::describe)
            .collect::<Vec<_>>()
            .join(" and ");
        if let Scope::Offline { .. } = self.scope {
            s = format!("nothing received for {} s", self.offline_ns / S);
        }
        for (what, ns) in [
            ("on-delay", self.on_delay_ns),
            ("off-delay", self.off_delay_ns),
        ] {
            if ns > 0 {
                s.push_str(&format!(", {what} {} s", ns as f64 / 1e9));
            }
        }
        if self.latched {
            s.push_str(", latched");
        }
        s
    }
}

const S: i64 = 1_000_000_000;

fn compile_condition(c: &ConditionConfig, stale_s: u64, key: &str) -> Result<Condition, String> {
    if c.quantity.is_empty() {
        return Err(format!("{key}: a condition needs a quantity"));
    }
    let mut tests = Vec::new();
    let window = || -> Result<i64, String> {
        match c.window_s {
            Some(w) if w > 0 => Ok(w as i64 * S),
            _ => Err(format!("{key}: a rate needs window_s (seconds, > 0)")),
        }
    };
    if let Some(v) = c.above {
        tests.push(Test::Above(v));
    }
    if let Some(v) = c.below {
        tests.push(Test::Below(v));
    }
    if let Some(limit) = c.rate_above {
        tests.push(Test::RateAbove {
            per_s: c.per.seconds(),
            limit,
            window_ns: window()?,
        });
    }
    if let Some(limit) = c.rate_below {
        tests.push(Test::RateBelow {
            per_s: c.per.seconds(),
            limit,
            window_ns: window()?,
        });
    }
    if !c.is.is_empty() {
        tests.push(Test::Is(c.is.clone()));
    }
    if let Some(v) = c.daily_increase_above {
        tests.push(Test::DailyIncreaseAbove(v));
    }
    if tests.len() != 1 {
        return Err(format!(
            "{key}: exactly one of above, below, rate_above, rate_below, is, daily_increase_above (found {})",
            tests.len()
        ));
    }
    if c.window_s.is_some() && tests[0].window_ns().is_none() {
        return Err(format!(
            "{key}: window_s is only for rate_above / rate_below"
        ));
    }
    if !(c.deadband >= 0.0 && c.deadband.is_finite()) {
        return Err(format!("{key}: deadband must be 0 or more"));
    }
    Ok(Condition {
        quantity: c.quantity.as_str().into(),
        instance: c.instance.as_deref().map(Arc::from),
        unit: c.unit.clone(),
        test: tests.remove(0),
        deadband: c.deadband,
        stale_ns: (stale_s > 0).then_some(stale_s as i64 * S),
    })
}

/// Checks and compiles the configured rules, the meter rules and the offline rule. `known`
/// says whether a quantity is in the catalogue. Errors name the config key.
pub fn compile(cfg: &Config, known: &dyn Fn(&str) -> bool) -> Result<Vec<Rule>, String> {
    let mut out = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, r) in cfg.rule.iter().enumerate() {
        let key = format!("alarms.rule[{i}]");
        if r.name.is_empty()
            || !r
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "{key}.name: {:?}: a name is letters, digits, '_', '-' or '.'",
                r.name
            ));
        }
        if r.name.starts_with("stale.")
            || r.name.starts_with("meter_")
            || r.name == "device_offline"
        {
            return Err(format!(
                "{key}.name: {:?}: names starting with stale. or meter_, and device_offline, are the built-in rules'",
                r.name
            ));
        }
        if !names.insert(r.name.clone()) {
            return Err(format!("{key}.name: {:?} is used twice", r.name));
        }
        let stale = r.stale_s.unwrap_or(cfg.stale_s);
        let mut conditions = vec![compile_condition(&r.condition, stale, &key)?];
        for (j, c) in r.and.iter().enumerate() {
            conditions.push(compile_condition(c, stale, &format!("{key}.and[{j}]"))?);
        }
        for c in &conditions {
            if !known(&c.quantity) {
                return Err(format!(
                    "{key}: quantity {:?} is not in the catalogue (gkgw check lists it)",
                    &*c.quantity
                ));
            }
        }
        for (what, v) in [("on_delay_s", r.on_delay_s), ("off_delay_s", r.off_delay_s)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{key}.{what}: must be 0 or more seconds"));
            }
        }
        out.push(Rule {
            name: r.name.as_str().into(),
            severity: r.severity,
            message: r.message.clone(),
            scope: Scope::Quantity,
            conditions,
            on_delay_ns: (r.on_delay_s * 1e9) as i64,
            off_delay_ns: (r.off_delay_s * 1e9) as i64,
            latched: r.latched,
            offline_ns: 0,
        });
    }
    if cfg.offline_s > 0 {
        out.push(offline_rule(
            "device_offline",
            Severity::Warning,
            cfg.offline_s,
            false,
            "no reading from this device",
        ));
    }
    if cfg.meter.enabled {
        out.extend(meter_rules(&cfg.meter));
    }
    Ok(out)
}

fn offline_rule(name: &str, severity: Severity, after_s: u64, meters: bool, message: &str) -> Rule {
    Rule {
        name: name.into(),
        severity,
        message: message.into(),
        scope: Scope::Offline { meters },
        conditions: Vec::new(),
        on_delay_ns: 0,
        off_delay_ns: 0,
        latched: false,
        offline_ns: after_s as i64 * S,
    }
}

#[allow(clippy::too_many_arguments)] // one line per built-in meter rule reads best
fn simple(
    name: &str,
    severity: Severity,
    message: &str,
    quantity: &str,
    unit: Option<&str>,
    test: Test,
    deadband: f64,
    latched: bool,
) -> Rule {
    Rule {
        name: name.into(),
        severity,
        message: message.into(),
        scope: Scope::Quantity,
        conditions: vec![Condition {
            quantity: quantity.into(),
            instance: None,
            unit: unit.map(str::to_owned),
            test,
            deadband,
            // A meter reports when it likes; its silence is the offline rule's business.
            stale_ns: None,
        }],
        on_delay_ns: 0,
        off_delay_ns: 0,
        latched,
        offline_ns: 0,
    }
}

/// The rules every field meter gets (the prepaid platform's low-balance and use alerts).
pub fn meter_rules(m: &MeterConfig) -> Vec<Rule> {
    let words = |v: &[&str]| Test::Is(v.iter().map(|s| (*s).to_owned()).collect());
    let mut rules = vec![
        simple(
            "meter_low_credit",
            Severity::Info,
            "credit is low",
            "meter.credit",
            Some("kg"),
            Test::Below(m.low_credit_kg),
            m.low_credit_kg * 0.1,
            false,
        ),
        simple(
            "meter_low_credit",
            Severity::Info,
            "credit is low",
            "meter.credit",
            Some("kWh"),
            Test::Below(m.low_credit_kwh),
            m.low_credit_kwh * 0.1,
            false,
        ),
        simple(
            "meter_credit_exhausted",
            Severity::Warning,
            "credit is used up",
            "meter.credit",
            None,
            Test::Below(1e-6),
            0.0,
            false,
        ),
        simple(
            "meter_valve_closed",
            Severity::Warning,
            "the meter closed its valve",
            "meter.valve",
            None,
            words(&["closed", "locked"]),
            0.0,
            false,
        ),
        simple(
            "meter_relay_open",
            Severity::Warning,
            "the meter cut the supply",
            "meter.relay",
            None,
            words(&["open"]),
            0.0,
            false,
        ),
        simple(
            "meter_daily_use",
            Severity::Info,
            "use today is above the daily limit",
            "meter.gas_used",
            None,
            Test::DailyIncreaseAbove(m.daily_use_kg),
            0.0,
            false,
        ),
        simple(
            "meter_daily_use",
            Severity::Info,
            "use today is above the daily limit",
            "meter.energy_used",
            None,
            Test::DailyIncreaseAbove(m.daily_use_kwh),
            0.0,
            false,
        ),
        simple(
            "meter_tamper",
            Severity::Alarm,
            "the meter reports tampering",
            "meter.tamper",
            None,
            words(&["true"]),
            0.0,
            true,
        ),
        simple(
            "meter_low_battery",
            Severity::Warning,
            "the meter's battery is low",
            "meter.battery",
            None,
            Test::Below(m.low_battery_v),
            0.05,
            false,
        ),
    ];
    if m.offline_s > 0 {
        rules.push(offline_rule(
            "meter_offline",
            Severity::Warning,
            m.offline_s,
            true,
            "no message from this meter",
        ));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_compile_against_the_catalogue() {
        let cat = crate::plant::Catalogue::builtin();
        let rules = compile(&Config::default(), &|q| cat.get(q).is_some()).expect("compiles");
        for name in [
            "digester_overpressure",
            "leak",
            "air_ingress",
            "kitchen_methane_10_lel",
            "kitchen_methane_40_lel",
            "slurry_cooling",
            "ph_low",
            "fos_tac_high",
            "device_offline",
            "meter_low_credit",
            "meter_offline",
        ] {
            assert!(rules.iter().any(|r| &*r.name == name), "{name}");
        }
    }

    #[test]
    fn bad_rules_are_refused_with_their_key() {
        let cat = crate::plant::Catalogue::builtin();
        let check = |text: &str| {
            let mut cfg = Config {
                rule: Vec::new(),
                ..Config::default()
            };
            #[derive(Deserialize)]
            struct F {
                rule: Vec<RuleConfig>,
            }
            cfg.rule = toml::from_str::<F>(text).expect("parses").rule;
            compile(&cfg, &|q| cat.get(q).is_some()).err()
        };
        assert_eq!(
            check("[[rule]]\nname = \"x\"\nquantity = \"digester.pressure\"\n").as_deref(),
            Some("alarms.rule[0]: exactly one of above, below, rate_above, rate_below, is, daily_increase_above (found 0)")
        );
        assert_eq!(
            check("[[rule]]\nname = \"x\"\nquantity = \"digester.presure\"\nabove = 1\n").as_deref(),
            Some("alarms.rule[0]: quantity \"digester.presure\" is not in the catalogue (gkgw check lists it)")
        );
        assert_eq!(
            check("[[rule]]\nname = \"x\"\nquantity = \"digester.pressure\"\nrate_below = -1\n")
                .as_deref(),
            Some("alarms.rule[0]: a rate needs window_s (seconds, > 0)")
        );
        assert_eq!(
            check("[[rule]]\nname = \"x\"\nquantity = \"digester.pressure\"\nabove = 1\n[[rule]]\nname = \"x\"\nquantity = \"digester.pressure\"\nabove = 2\n").as_deref(),
            Some("alarms.rule[1].name: \"x\" is used twice")
        );
        assert_eq!(
            check("[[rule]]\nname = \"a b\"\nquantity = \"digester.pressure\"\nabove = 1\n")
                .as_deref(),
            Some("alarms.rule[0].name: \"a b\": a name is letters, digits, '_', '-' or '.'")
        );
        assert_eq!(
            check("[[rule]]\nname = \"x\"\nquantity = \"digester.pressure\"\nabove = 1\nand = [{ quantity = \"gas.flow\" }]\n").as_deref(),
            Some("alarms.rule[0].and[0]: exactly one of above, below, rate_above, rate_below, is, daily_increase_above (found 0)")
        );
    }
}
