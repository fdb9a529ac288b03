//! The alarm engine: a pure state machine. Inputs are readings of quantities ([`Input`]),
//! the passing of time ([`Engine::tick`]) and operator actions ([`Engine::operate`]), each
//! with its time; outputs are [`Event`]s, one per transition, numbered by a gapless sequence.
//! No I/O, no clock, no tasks: `alarm::task` feeds it from the live stream and persists and
//! acts on what it returns.
//!
//! ## The state model (ISA-18.2 / IEC 62682, as OPC UA Part 9 models it)
//! `active` (the condition, after its delays) and `acknowledged` are independent axes:
//!
//! | active | acknowledged | state |
//! |---|---|---|
//! | no | yes | normal |
//! | yes | no | active_unacknowledged (`raised`) |
//! | yes | yes | active_acknowledged |
//! | no | no | cleared_unacknowledged (returned to normal, not yet seen) |
//!
//! A **latched** rule stays active after its condition clears, until an operator resets it
//! (only once the condition is clear). **Shelved** (for a limited time) alarms are still
//! evaluated and keep their transitions, but drive no output; the shelf expires by itself.
//! **Silenced** alarms drive no output either, and stay unacknowledged; a new raise unsilences.
//! **Suppressed**: a quantity a rule reads is stale (no good reading for its `stale_s`: the
//! `stale.{quantity}` alarm), so the rule neither raises nor clears on old data until the
//! quantity is fresh again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::rules::{Condition, OutputConfig, Rule, Scope, Severity, Test, Until};

const S: i64 = 1_000_000_000;
const DAY_NS: i64 = 86_400 * S;
/// Buckets of a rate's window: memory per (quantity, instance, window) is this many means.
const RATE_BUCKETS: i64 = 30;
/// A rate is known once its samples cover this share of the window.
const RATE_COVERAGE: f64 = 0.9;
/// Severity of the built-in stale-data alarms.
const STALE_SEVERITY: Severity = Severity::Warning;

/// The value of one reading of one quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample<'a> {
    Number(f64),
    Text(&'a str),
    /// A bad reading (sentinel, out of range, CRC error): not a value, and not fresh.
    Bad,
}

/// One reading of one quantity at one instance, as the engine sees it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub quantity: &'a str,
    pub instance: &'a str,
    /// The unit it is stored in (a meter's credit: kg or kWh).
    pub unit: &'a str,
    pub sample: Sample<'a>,
    /// Entered by a person (the logbook's lab results): never stale.
    pub manual: bool,
}

/// The four states (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Normal,
    ActiveUnacknowledged,
    ActiveAcknowledged,
    ClearedUnacknowledged,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Normal => "normal",
            State::ActiveUnacknowledged => "active_unacknowledged",
            State::ActiveAcknowledged => "active_acknowledged",
            State::ClearedUnacknowledged => "cleared_unacknowledged",
        }
    }
}

/// What happened in one transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Raised,
    Cleared,
    Acknowledged,
    Reset,
    Shelved,
    Unshelved,
    Silenced,
    Suppressed,
    Unsuppressed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Raised => "raised",
            Action::Cleared => "cleared",
            Action::Acknowledged => "acknowledged",
            Action::Reset => "reset",
            Action::Shelved => "shelved",
            Action::Unshelved => "unshelved",
            Action::Silenced => "silenced",
            Action::Suppressed => "suppressed",
            Action::Unsuppressed => "unsuppressed",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "raised" => Action::Raised,
            "cleared" => Action::Cleared,
            "acknowledged" => Action::Acknowledged,
            "reset" => Action::Reset,
            "shelved" => Action::Shelved,
            "unshelved" => Action::Unshelved,
            "silenced" => Action::Silenced,
            "suppressed" => Action::Suppressed,
            "unsuppressed" => Action::Unsuppressed,
            _ => return None,
        })
    }
}

/// One transition, numbered.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub ts_ns: i64,
    pub rule: Arc<str>,
    pub instance: Arc<str>,
    pub severity: Severity,
    pub action: Action,
    /// The state after the transition.
    pub state: State,
    /// The first condition's value at the time (for rates: the rate, per its unit).
    pub value: Option<f64>,
    pub shelved: bool,
    pub by: Option<String>,
    pub note: Option<String>,
}

impl Event {
    pub fn id(&self) -> String {
        format!("{}:{}", self.rule, self.instance)
    }
}

/// What an operator does to an alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Acknowledge,
    Reset,
    /// Shelve for this long (ns).
    Shelve(i64),
    Unshelve,
    /// Quiet the outputs this alarm drives, without acknowledging it.
    Silence,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("no alarm {0}")]
    Unknown(String),
    #[error("{0} is already acknowledged")]
    AlreadyAcknowledged(String),
    #[error("{0} is not latched: it clears by itself")]
    NotLatched(String),
    #[error("{0} is not active")]
    NotActive(String),
    #[error("{0}: the condition is still present; it can be reset once it has cleared")]
    StillPresent(String),
    #[error("shelving is for 1 minute up to {0} hours")]
    ShelveTooLong(u64),
    #[error("{0} is not shelved")]
    NotShelved(String),
}

/// What kind of alarm an entry is.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Of `rules[i]`.
    Rule(usize),
    /// No good reading of this quantity.
    Stale(Arc<str>),
    /// Restored from the store, its rule no longer configured: it stays until acknowledged
    /// and reset by hand.
    Orphan,
    /// A condition of the gateway itself ([`DISK_FULL`]), set by the alarm task.
    Gateway,
}

/// One alarm: a rule at one instance.
#[derive(Debug, Clone)]
struct Alarm {
    kind: Kind,
    rule: Arc<str>,
    instance: Arc<str>,
    severity: Severity,
    latched: bool,
    active: bool,
    acked: bool,
    shelved_until: Option<i64>,
    silenced: bool,
    suppressed: bool,
    /// Since when `active` has its value.
    since_ns: i64,
    value: Option<f64>,
    /// The conditions hold now (after hysteresis, before the delays).
    raw: bool,
    raw_since: i64,
    /// Per condition: held at the last evaluation (the hysteresis state).
    held: Vec<bool>,
}

impl Alarm {
    /// A new alarm in the normal state, its conditions not holding.
    fn normal(
        kind: Kind,
        key: &Key,
        severity: Severity,
        latched: bool,
        conditions: usize,
        now: i64,
    ) -> Alarm {
        Alarm {
            kind,
            rule: key.0.clone(),
            instance: key.1.clone(),
            severity,
            latched,
            active: false,
            acked: true,
            shelved_until: None,
            silenced: false,
            suppressed: false,
            since_ns: now,
            value: None,
            raw: false,
            raw_since: now,
            held: vec![false; conditions],
        }
    }

    fn state(&self) -> State {
        match (self.active, self.acked) {
            (false, true) => State::Normal,
            (true, false) => State::ActiveUnacknowledged,
            (true, true) => State::ActiveAcknowledged,
            (false, false) => State::ClearedUnacknowledged,
        }
    }
}

/// What the store keeps of an alarm so a restart never clears it silently.
#[derive(Debug, Clone, PartialEq)]
pub struct Persisted {
    pub rule: String,
    pub instance: String,
    pub severity: Severity,
    pub active: bool,
    pub acked: bool,
    pub latched: bool,
    pub shelved_until: Option<i64>,
    pub silenced: bool,
    pub since_ns: i64,
    pub value: Option<f64>,
}

/// The message of a quantity's stale alarm.
pub const STALE_MESSAGE: &str = "no good reading: the rules that read it are suppressed";
/// The gateway's disk is full (`store::disk`): its alarm's rule name, instance and message.
pub const DISK_FULL: &str = "gateway.disk_full";
pub const GATEWAY_INSTANCE: &str = "gateway";
pub const DISK_FULL_MESSAGE: &str =
    "the gateway's disk is full: the oldest readings are removed to keep the newest; free space on the SD card";
/// The message of a restored alarm whose rule is gone from the config.
pub const ORPHAN_MESSAGE: &str = "its rule is no longer configured: acknowledge and reset it";

/// An alarm as the API and the status page show it.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub id: String,
    pub rule: Arc<str>,
    pub instance: Arc<str>,
    pub severity: Severity,
    pub state: State,
    pub latched: bool,
    pub shelved_until: Option<i64>,
    pub silenced: bool,
    pub suppressed: bool,
    /// The condition holds now (a latched alarm can be reset once it does not).
    pub condition: bool,
    pub since_ns: i64,
    pub value: Option<f64>,
    pub message: String,
    pub quantity: String,
}

#[derive(Debug, Default)]
struct Track {
    value: Option<f64>,
    text: Option<String>,
    unit: String,
    first_seen: i64,
    last_good: Option<i64>,
    manual: bool,
    /// The local day of `day_start` and the counter's first good value in it.
    day: i64,
    day_start: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    idx: i64,
    t_sum: f64,
    v_sum: f64,
    n: u32,
}

/// The recent samples of one quantity at one instance, as bucket means over one window.
#[derive(Debug)]
struct RateBuf {
    window: i64,
    width: i64,
    buckets: VecDeque<Bucket>,
}

impl RateBuf {
    fn new(window: i64) -> RateBuf {
        RateBuf {
            window,
            width: (window / RATE_BUCKETS).max(1),
            buckets: VecDeque::new(),
        }
    }

    fn push(&mut self, now: i64, v: f64) {
        let idx = now.div_euclid(self.width);
        let t = now as f64 / 1e9;
        match self.buckets.back_mut() {
            Some(b) if b.idx == idx => {
                b.t_sum += t;
                b.v_sum += v;
                b.n += 1;
            }
            Some(b) if b.idx > idx => {} // time went back: ignore until it catches up
            _ => self.buckets.push_back(Bucket {
                idx,
                t_sum: t,
                v_sum: v,
                n: 1,
            }),
        }
        self.expire(now);
    }

    fn expire(&mut self, now: i64) {
        let oldest = (now - self.window).div_euclid(self.width);
        while self.buckets.front().is_some_and(|b| b.idx < oldest) {
            self.buckets.pop_front();
        }
    }

    /// Change per second between the oldest and the newest bucket's means, once they cover
    /// enough of the window.
    fn rate(&self) -> Option<f64> {
        let (a, b) = (self.buckets.front()?, self.buckets.back()?);
        let (ta, tb) = (a.t_sum / f64::from(a.n), b.t_sum / f64::from(b.n));
        if tb - ta < RATE_COVERAGE * self.window as f64 / 1e9 * (1.0 - 1.0 / RATE_BUCKETS as f64) {
            return None;
        }
        Some((b.v_sum / f64::from(b.n) - a.v_sum / f64::from(a.n)) / (tb - ta))
    }
}

/// Why a condition has no verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Holds(Option<f64>),
    Not(Option<f64>),
    /// No reading yet, or a rate still filling its window: no change.
    Unknown,
    /// A quantity it reads is stale: suppress.
    Stale,
}

type Key = (Arc<str>, Arc<str>);

/// The alarm engine (see the module doc).
pub struct Engine {
    rules: Vec<Rule>,
    outputs: Vec<OutputConfig>,
    max_shelve_ns: i64,
    utc_offset_ns: i64,
    /// By (rule name, instance).
    alarms: BTreeMap<Key, Alarm>,
    /// By (quantity, instance).
    tracks: HashMap<Key, Track>,
    /// By (quantity, instance, window).
    rates: HashMap<(Arc<str>, Arc<str>, i64), RateBuf>,
    /// Devices and meters: last time anything came from them.
    devices: BTreeMap<Arc<str>, (i64, bool)>,
    /// Quantity → (rule, condition) pairs that read it.
    readers: HashMap<Arc<str>, Vec<(usize, usize)>>,
    /// Quantity → its shortest stale time over the rules reading it.
    stale_after: HashMap<Arc<str>, i64>,
    /// Quantity → the rate windows kept for it.
    windows: HashMap<Arc<str>, Vec<i64>>,
    seq: u64,
}

impl Engine {
    /// `next_seq`: the first sequence number to give (one past the last stored event).
    /// `utc_offset_s`: the site's zone, for meters' use per local day.
    pub fn new(
        rules: Vec<Rule>,
        outputs: Vec<OutputConfig>,
        max_shelve_hours: u64,
        utc_offset_s: i64,
        next_seq: u64,
    ) -> Engine {
        let mut readers: HashMap<Arc<str>, Vec<(usize, usize)>> = HashMap::new();
        let mut stale_after: HashMap<Arc<str>, i64> = HashMap::new();
        let mut windows: HashMap<Arc<str>, Vec<i64>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            for (k, c) in r.conditions.iter().enumerate() {
                readers.entry(c.quantity.clone()).or_default().push((i, k));
                if let Some(s) = c.stale_ns {
                    let e = stale_after.entry(c.quantity.clone()).or_insert(s);
                    *e = (*e).min(s);
                }
                if let Some(w) = c.test.window_ns() {
                    let ws = windows.entry(c.quantity.clone()).or_default();
                    if !ws.contains(&w) {
                        ws.push(w);
                    }
                }
            }
        }
        Engine {
            rules,
            outputs,
            max_shelve_ns: max_shelve_hours as i64 * 3600 * S,
            utc_offset_ns: utc_offset_s * S,
            alarms: BTreeMap::new(),
            tracks: HashMap::new(),
            rates: HashMap::new(),
            devices: BTreeMap::new(),
            readers,
            stale_after,
            windows,
            seq: next_seq.max(1),
        }
    }

    /// Whether any rule reads `quantity` (the task skips the others).
    pub fn reads(&self, quantity: &str) -> bool {
        self.readers.contains_key(quantity)
    }

    /// Brings back what the store kept. Active alarms start as holding their condition, so
    /// they clear only on fresh readings that say so (after the off-delay).
    pub fn restore(&mut self, now: i64, saved: Vec<Persisted>) {
        for p in saved {
            let kind = if let Some(q) = p.rule.strip_prefix("stale.") {
                Kind::Stale(q.into())
            } else if p.rule == DISK_FULL {
                Kind::Gateway
            } else if let Some(i) = self.rules.iter().position(|r| *r.name == p.rule) {
                Kind::Rule(i)
            } else {
                Kind::Orphan
            };
            let n = match kind {
                Kind::Rule(i) => self.rules[i].conditions.len(),
                _ => 0,
            };
            let latched = match kind {
                Kind::Rule(i) => self.rules[i].latched,
                _ => p.latched,
            };
            let key: Key = (p.rule.as_str().into(), p.instance.as_str().into());
            self.alarms.insert(
                key.clone(),
                Alarm {
                    kind,
                    rule: key.0,
                    instance: key.1.clone(),
                    severity: p.severity,
                    latched,
                    active: p.active,
                    acked: p.acked,
                    shelved_until: p.shelved_until,
                    silenced: p.silenced,
                    suppressed: false,
                    since_ns: p.since_ns,
                    value: p.value,
                    raw: p.active,
                    raw_since: now,
                    held: vec![p.active; n],
                },
            );
            // Its device is expected to report (and is offline if it does not).
            self.devices
                .entry(key.1)
                .or_insert((now, p.rule.starts_with("meter_")));
        }
    }

    /// A device the gateway polls (Modbus, GPIO, 1-Wire): offline if nothing comes from it.
    pub fn expect_device(&mut self, now: i64, device: &str) {
        self.devices.entry(device.into()).or_insert((now, false));
    }

    /// Something came from `device` (a meter when `meter`).
    pub fn seen(&mut self, now: i64, device: &str, meter: bool) -> Vec<Event> {
        match self.devices.get_mut(device) {
            Some(d) => d.0 = now,
            None => {
                self.devices.insert(device.into(), (now, meter));
            }
        }
        let mut out = Vec::new();
        let name = if meter {
            "meter_offline"
        } else {
            "device_offline"
        };
        if let Some(i) = self.rules.iter().position(|r| &*r.name == name) {
            let key: Key = (self.rules[i].name.clone(), device.into());
            if self.alarms.contains_key(&key) {
                self.evaluate_offline(now, i, &key, &mut out);
            }
        }
        out
    }

    /// One reading of one quantity.
    pub fn input(&mut self, now: i64, inp: &Input<'_>) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(readers) = self.readers.get(inp.quantity).cloned() else {
            return out;
        };
        let q: Arc<str> = readers_key(&self.readers, inp.quantity);
        let inst: Arc<str> = inp.instance.into();
        let utc = self.utc_offset_ns;
        let track = self
            .tracks
            .entry((q.clone(), inst.clone()))
            .or_insert_with(|| Track {
                first_seen: now,
                ..Track::default()
            });
        track.unit.clear();
        track.unit.push_str(inp.unit);
        track.manual = inp.manual;
        match inp.sample {
            Sample::Number(v) => {
                track.value = Some(v);
                track.text = None;
                track.last_good = Some(now);
                let day = (now + utc).div_euclid(DAY_NS);
                if track.day != day || track.day_start.is_none() {
                    track.day = day;
                    track.day_start = Some(v);
                }
                for w in self.windows.get(&q).into_iter().flatten() {
                    self.rates
                        .entry((q.clone(), inst.clone(), *w))
                        .or_insert_with(|| RateBuf::new(*w))
                        .push(now, v);
                }
            }
            Sample::Text(t) => {
                track.text = Some(t.to_owned());
                track.value = None;
                track.last_good = Some(now);
            }
            Sample::Bad => {}
        }
        self.evaluate_stale(now, &q, &inst, &mut out);
        for (i, k) in readers {
            let rule = &self.rules[i];
            let c = &rule.conditions[k];
            if k == 0 {
                if c.instance.as_deref().is_some_and(|x| x != inp.instance)
                    || c.unit.as_deref().is_some_and(|u| u != inp.unit)
                {
                    continue;
                }
                let key: Key = (rule.name.clone(), inst.clone());
                self.ensure(i, &key, now);
                self.evaluate(now, &key, &mut out);
            } else {
                let keys: Vec<Key> = self
                    .alarms
                    .iter()
                    .filter(|(_, a)| a.kind == Kind::Rule(i))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    self.evaluate(now, &key, &mut out);
                }
            }
        }
        out
    }

    /// The gateway's own condition [`DISK_FULL`] (instance [`GATEWAY_INSTANCE`]): raised at
    /// once while `active` (severity alarm, not latched), cleared at once when not; `value`:
    /// the readings removed to make room so far.
    pub fn gateway(&mut self, now: i64, active: bool, value: f64) -> Vec<Event> {
        let mut out = Vec::new();
        let key: Key = (DISK_FULL.into(), GATEWAY_INSTANCE.into());
        if !active && !self.alarms.contains_key(&key) {
            return out;
        }
        let a = self
            .alarms
            .entry(key.clone())
            .or_insert_with(|| Alarm::normal(Kind::Gateway, &key, Severity::Alarm, false, 0, now));
        a.value = Some(value);
        if active != a.raw {
            a.raw = active;
            a.raw_since = now;
        }
        step(&mut self.seq, a, now, 0, 0, false, &mut out);
        if a.state() == State::Normal && a.shelved_until.is_none() {
            self.alarms.remove(&key);
        }
        out
    }

    /// Time passes: delays, stale data, offline devices, shelves that expire.
    pub fn tick(&mut self, now: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for b in self.rates.values_mut() {
            b.expire(now);
        }
        let tracks: Vec<Key> = self.tracks.keys().cloned().collect();
        for (q, inst) in tracks {
            self.evaluate_stale(now, &q, &inst, &mut out);
        }
        for i in 0..self.rules.len() {
            if let Scope::Offline { meters } = self.rules[i].scope {
                let name = self.rules[i].name.clone();
                let keys: Vec<Key> = self
                    .devices
                    .iter()
                    .filter(|(_, (_, m))| *m == meters)
                    .map(|(d, _)| (name.clone(), d.clone()))
                    .collect();
                for key in keys {
                    self.evaluate_offline(now, i, &key, &mut out);
                }
            }
        }
        let keys: Vec<Key> = self.alarms.keys().cloned().collect();
        for key in keys {
            if let Some(until) = self.alarms[&key].shelved_until {
                if until <= now {
                    let a = self.alarms.get_mut(&key).expect("present");
                    a.shelved_until = None;
                    out.push(emit(&mut self.seq, a, Action::Unshelved, now, None, None));
                }
            }
            if matches!(self.alarms[&key].kind, Kind::Rule(i) if self.rules[i].scope == Scope::Quantity)
            {
                self.evaluate(now, &key, &mut out);
            }
        }
        out
    }

    /// An operator's action on alarm `id` (`{rule}:{instance}`).
    pub fn operate(
        &mut self,
        now: i64,
        id: &str,
        op: Op,
        by: &str,
        note: &str,
    ) -> Result<Vec<Event>, OpError> {
        let key = self
            .alarms
            .keys()
            .find(|(r, i)| id.strip_prefix(&**r).and_then(|x| x.strip_prefix(':')) == Some(&**i))
            .cloned()
            .ok_or_else(|| OpError::Unknown(id.to_owned()))?;
        let max_hours = (self.max_shelve_ns / 3600 / S) as u64;
        let max = self.max_shelve_ns;
        let a = self.alarms.get_mut(&key).expect("found");
        let action = match op {
            Op::Acknowledge => {
                if a.acked {
                    return Err(OpError::AlreadyAcknowledged(id.to_owned()));
                }
                a.acked = true;
                Action::Acknowledged
            }
            Op::Reset => {
                if !a.latched && a.kind != Kind::Orphan {
                    return Err(OpError::NotLatched(id.to_owned()));
                }
                if !a.active {
                    return Err(OpError::NotActive(id.to_owned()));
                }
                if a.raw && a.kind != Kind::Orphan {
                    return Err(OpError::StillPresent(id.to_owned()));
                }
                a.active = false;
                a.since_ns = now;
                Action::Reset
            }
            Op::Shelve(d) => {
                if d < 60 * S || d > max {
                    return Err(OpError::ShelveTooLong(max_hours));
                }
                a.shelved_until = Some(now + d);
                Action::Shelved
            }
            Op::Unshelve => {
                if a.shelved_until.is_none() {
                    return Err(OpError::NotShelved(id.to_owned()));
                }
                a.shelved_until = None;
                Action::Unshelved
            }
            Op::Silence => {
                if !a.active {
                    return Err(OpError::NotActive(id.to_owned()));
                }
                a.silenced = true;
                Action::Silenced
            }
        };
        let by = (!by.is_empty()).then(|| by.to_owned());
        let note = (!note.is_empty()).then(|| note.to_owned());
        let e = emit(&mut self.seq, a, action, now, by, note);
        // An orphan back to normal has nothing left to say.
        if a.kind == Kind::Orphan && a.state() == State::Normal {
            self.alarms.remove(&key);
        }
        Ok(vec![e])
    }

    /// Silences every active alarm (the "silence" button: outputs quiet, nothing acknowledged).
    pub fn silence_all(&mut self, now: i64, by: &str, note: &str) -> Vec<Event> {
        let mut out = Vec::new();
        for a in self.alarms.values_mut() {
            if a.active && !a.silenced {
                a.silenced = true;
                out.push(emit(
                    &mut self.seq,
                    a,
                    Action::Silenced,
                    now,
                    (!by.is_empty()).then(|| by.to_owned()),
                    (!note.is_empty()).then(|| note.to_owned()),
                ));
            }
        }
        out
    }

    /// Whether output `name` is demanded on: some alarm of its severity or worse is active
    /// (and unacknowledged, for `until = acknowledged`), not shelved, silenced or suppressed.
    pub fn output_on(&self, name: &str) -> bool {
        self.outputs.iter().filter(|o| o.output == name).any(|o| {
            self.alarms.values().any(|a| {
                a.severity >= o.min_severity
                    && a.active
                    && (o.until == Until::Cleared || !a.acked)
                    && a.shelved_until.is_none()
                    && !a.silenced
            })
        })
    }

    /// The outputs the alarms drive.
    pub fn output_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.outputs.iter().map(|o| o.output.clone()).collect();
        v.dedup();
        v
    }

    /// Every alarm not in the normal state (and every shelved, silenced or suppressed one),
    /// worst first, then newest.
    pub fn list(&self) -> Vec<View> {
        let mut v: Vec<View> = self
            .alarms
            .values()
            .filter(|a| a.state() != State::Normal || a.shelved_until.is_some() || a.suppressed)
            .map(|a| self.view(a))
            .collect();
        v.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.since_ns.cmp(&a.since_ns))
        });
        v
    }

    /// One alarm, also in the normal state.
    pub fn get(&self, id: &str) -> Option<View> {
        self.alarms
            .values()
            .find(|a| {
                id.strip_prefix(&*a.rule).and_then(|x| x.strip_prefix(':')) == Some(&*a.instance)
            })
            .map(|a| self.view(a))
    }

    fn view(&self, a: &Alarm) -> View {
        let (message, quantity) = match &a.kind {
            Kind::Rule(i) => (
                self.rules[*i].message.clone(),
                self.rules[*i]
                    .conditions
                    .first()
                    .map(|c| c.quantity.to_string())
                    .unwrap_or_default(),
            ),
            Kind::Stale(q) => (STALE_MESSAGE.to_owned(), q.to_string()),
            Kind::Orphan => (ORPHAN_MESSAGE.to_owned(), String::new()),
            Kind::Gateway => (DISK_FULL_MESSAGE.to_owned(), String::new()),
        };
        View {
            id: format!("{}:{}", a.rule, a.instance),
            rule: a.rule.clone(),
            instance: a.instance.clone(),
            severity: a.severity,
            state: a.state(),
            latched: a.latched,
            shelved_until: a.shelved_until,
            silenced: a.silenced,
            suppressed: a.suppressed,
            condition: a.raw,
            since_ns: a.since_ns,
            value: a.value,
            message,
            quantity,
        }
    }

    /// What the store keeps: every alarm not in the normal state, or shelved.
    pub fn persisted(&self) -> Vec<Persisted> {
        self.alarms
            .values()
            .filter(|a| a.state() != State::Normal || a.shelved_until.is_some())
            .map(|a| Persisted {
                rule: a.rule.to_string(),
                instance: a.instance.to_string(),
                severity: a.severity,
                active: a.active,
                acked: a.acked,
                latched: a.latched,
                shelved_until: a.shelved_until,
                silenced: a.silenced,
                since_ns: a.since_ns,
                value: a.value,
            })
            .collect()
    }

    /// The wall clock stepped by `delta` ns: every time the engine keeps moves with it, so
    /// durations (delays, stale and offline times, rate windows, shelves) are unchanged.
    pub fn shift(&mut self, delta: i64) {
        for a in self.alarms.values_mut() {
            a.raw_since += delta;
            a.since_ns += delta;
            if let Some(u) = a.shelved_until.as_mut() {
                *u += delta;
            }
        }
        for t in self.tracks.values_mut() {
            t.first_seen += delta;
            if let Some(g) = t.last_good.as_mut() {
                *g += delta;
            }
        }
        for d in self.devices.values_mut() {
            d.0 += delta;
        }
        for b in self.rates.values_mut() {
            let width = b.width;
            for k in b.buckets.iter_mut() {
                k.t_sum += delta as f64 / 1e9 * f64::from(k.n);
                k.idx += delta.div_euclid(width);
            }
        }
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    fn ensure(&mut self, i: usize, key: &Key, now: i64) {
        let r = &self.rules[i];
        let a = self.alarms.entry(key.clone()).or_insert_with(|| {
            Alarm::normal(
                Kind::Rule(i),
                key,
                r.severity,
                r.latched,
                r.conditions.len(),
                now,
            )
        });
        // Two rules share a name (a meter's credit in kg or kWh): the one that matched owns it.
        if a.kind != Kind::Rule(i) {
            a.kind = Kind::Rule(i);
            a.held.resize(r.conditions.len(), a.raw);
        }
    }

    fn verdict(
        &self,
        now: i64,
        c: &Condition,
        instance: &Arc<str>,
        own: bool,
        held: bool,
    ) -> Verdict {
        let instances: Vec<Arc<str>> = match (&c.instance, own) {
            (_, true) => vec![instance.clone()],
            (Some(i), false) => vec![i.clone()],
            (None, false)
                if self
                    .tracks
                    .contains_key(&(c.quantity.clone(), instance.clone())) =>
            {
                vec![instance.clone()]
            }
            (None, false) => self
                .tracks
                .iter()
                .filter(|((q, _), t)| {
                    *q == c.quantity && c.unit.as_deref().is_none_or(|u| u == t.unit)
                })
                .map(|((_, i), _)| i.clone())
                .collect(),
        };
        if instances.is_empty() {
            return Verdict::Unknown;
        }
        let mut first = None;
        let mut all = true;
        for inst in &instances {
            let Some(t) = self.tracks.get(&(c.quantity.clone(), inst.clone())) else {
                return Verdict::Unknown;
            };
            if let (Some(stale), false) = (c.stale_ns, t.manual) {
                if now - t.last_good.unwrap_or(t.first_seen) > stale {
                    return Verdict::Stale;
                }
            }
            let d = if held { c.deadband } else { 0.0 };
            let (holds, value) = match &c.test {
                Test::Above(l) => match t.value {
                    Some(v) => (v > l - d, Some(v)),
                    None => return Verdict::Unknown,
                },
                Test::Below(l) => match t.value {
                    Some(v) => (v < l + d, Some(v)),
                    None => return Verdict::Unknown,
                },
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
                    let Some(rate) = self
                        .rates
                        .get(&(c.quantity.clone(), inst.clone(), *window_ns))
                        .and_then(RateBuf::rate)
                    else {
                        return Verdict::Unknown;
                    };
                    let r = rate * per_s;
                    let holds = if matches!(c.test, Test::RateAbove { .. }) {
                        r > limit - d
                    } else {
                        r < limit + d
                    };
                    (holds, Some(r))
                }
                Test::Is(words) => {
                    let text = match (&t.text, t.value) {
                        (Some(s), _) => s.clone(),
                        (None, Some(0.0)) => "false".into(),
                        (None, Some(1.0)) => "true".into(),
                        (None, Some(v)) => v.to_string(),
                        (None, None) => return Verdict::Unknown,
                    };
                    (words.contains(&text), t.value)
                }
                Test::DailyIncreaseAbove(l) => match (t.value, t.day_start) {
                    (Some(v), Some(s)) => {
                        let used = v - s;
                        (used > l - d, Some(used))
                    }
                    _ => return Verdict::Unknown,
                },
            };
            first.get_or_insert(value);
            all &= holds;
        }
        let value = first.flatten();
        if all {
            Verdict::Holds(value)
        } else {
            Verdict::Not(value)
        }
    }

    fn evaluate(&mut self, now: i64, key: &Key, out: &mut Vec<Event>) {
        let Some(a) = self.alarms.get(key) else {
            return;
        };
        let Kind::Rule(i) = a.kind else { return };
        let rule = &self.rules[i];
        let mut verdicts = Vec::with_capacity(rule.conditions.len());
        for (k, c) in rule.conditions.iter().enumerate() {
            let held = a.held.get(k).copied().unwrap_or(false);
            verdicts.push(self.verdict(now, c, &a.instance, k == 0, held));
        }
        let (on_delay, off_delay, latched) = (rule.on_delay_ns, rule.off_delay_ns, rule.latched);
        let a = self.alarms.get_mut(key).expect("present");
        if verdicts.contains(&Verdict::Stale) {
            if !a.suppressed {
                a.suppressed = true;
                out.push(emit(&mut self.seq, a, Action::Suppressed, now, None, None));
            }
            return;
        }
        if verdicts.contains(&Verdict::Unknown) {
            return;
        }
        if a.suppressed {
            a.suppressed = false;
            out.push(emit(
                &mut self.seq,
                a,
                Action::Unsuppressed,
                now,
                None,
                None,
            ));
        }
        let mut raw = true;
        for (k, v) in verdicts.iter().enumerate() {
            let holds = matches!(v, Verdict::Holds(_));
            a.held[k] = holds;
            raw &= holds;
        }
        if let Verdict::Holds(v) | Verdict::Not(v) = verdicts[0] {
            a.value = v;
        }
        if raw != a.raw {
            a.raw = raw;
            a.raw_since = now;
        }
        step(&mut self.seq, a, now, on_delay, off_delay, latched, out);
    }

    fn evaluate_stale(&mut self, now: i64, q: &Arc<str>, inst: &Arc<str>, out: &mut Vec<Event>) {
        let Some(after) = self.stale_after.get(q).copied() else {
            return;
        };
        let Some(t) = self.tracks.get(&(q.clone(), inst.clone())) else {
            return;
        };
        if t.manual {
            return;
        }
        let stale = now - t.last_good.unwrap_or(t.first_seen) > after;
        let key: Key = (format!("stale.{q}").into(), inst.clone());
        if !stale && !self.alarms.contains_key(&key) {
            return;
        }
        let a = self.alarms.entry(key.clone()).or_insert_with(|| {
            Alarm::normal(Kind::Stale(q.clone()), &key, STALE_SEVERITY, false, 0, now)
        });
        a.value = t.value;
        if stale != a.raw {
            a.raw = stale;
            a.raw_since = now;
        }
        step(&mut self.seq, a, now, 0, 0, false, out);
        // Back to normal with nothing to say: forget it (tracks re-create it).
        if a.state() == State::Normal && a.shelved_until.is_none() {
            self.alarms.remove(&key);
        }
        // The rules that read it: suppressed or back (evaluated on their own turn).
        if let Some(readers) = self.readers.get(q).cloned() {
            for (i, _) in readers {
                let keys: Vec<Key> = self
                    .alarms
                    .iter()
                    .filter(|(_, a)| a.kind == Kind::Rule(i))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    self.evaluate(now, &key, out);
                }
            }
        }
    }

    fn evaluate_offline(&mut self, now: i64, i: usize, key: &Key, out: &mut Vec<Event>) {
        let Some((last, _)) = self.devices.get(&key.1).copied() else {
            return;
        };
        let r = &self.rules[i];
        let offline = now - last > r.offline_ns;
        if !offline && !self.alarms.contains_key(key) {
            return;
        }
        let a = self
            .alarms
            .entry(key.clone())
            .or_insert_with(|| Alarm::normal(Kind::Rule(i), key, r.severity, false, 0, now));
        a.value = Some((now - last) as f64 / 1e9);
        if offline != a.raw {
            a.raw = offline;
            a.raw_since = now;
        }
        step(&mut self.seq, a, now, 0, 0, false, out);
        if a.state() == State::Normal && a.shelved_until.is_none() {
            self.alarms.remove(key);
        }
    }
}

fn readers_key(readers: &HashMap<Arc<str>, Vec<(usize, usize)>>, q: &str) -> Arc<str> {
    readers
        .get_key_value(q)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| q.into())
}

/// Applies the delays and the latch to an alarm whose `raw` condition is current.
fn step(
    seq: &mut u64,
    a: &mut Alarm,
    now: i64,
    on_delay: i64,
    off_delay: i64,
    latched: bool,
    out: &mut Vec<Event>,
) {
    if !a.active && a.raw && now - a.raw_since >= on_delay {
        a.active = true;
        a.acked = false;
        a.silenced = false;
        a.since_ns = now;
        out.push(emit(seq, a, Action::Raised, now, None, None));
    } else if a.active && !a.raw && !latched && now - a.raw_since >= off_delay {
        a.active = false;
        a.since_ns = now;
        out.push(emit(seq, a, Action::Cleared, now, None, None));
    }
}

fn emit(
    seq: &mut u64,
    a: &Alarm,
    action: Action,
    now: i64,
    by: Option<String>,
    note: Option<String>,
) -> Event {
    let e = Event {
        seq: *seq,
        ts_ns: now,
        rule: a.rule.clone(),
        instance: a.instance.clone(),
        severity: a.severity,
        action,
        state: a.state(),
        value: a.value,
        shelved: a.shelved_until.is_some(),
        by,
        note,
    };
    *seq += 1;
    e
}
