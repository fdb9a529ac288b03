//! GPIO inputs as readings: pulse counters (a gas meter's reed contact) and contacts
//! (compressor running, a pressure switch, a door), one task per input.
//!
//! **Pulse input** (`kind = "pulse"`): each debounced closing is one pulse of `pulse_m3`. It
//! feeds `gas.volume` (the meter's total in m³, a counter) and `gas.flow` (m³/h over
//! `flow_window_s`: with n ≥ 2 pulses in the window, (n − 1) pulses over the time from the
//! first to the last, lowered to one pulse over the time since the last when that is longer;
//! 0 with fewer than two). The total is reported every `report_ms` when it (or the flow)
//! changed, and at least every 60 s anyway.
//!
//! **Contact input** (`kind = "contact"`): the debounced state is reported at once on a change
//! and every `report_ms`, bound to the configured state quantity; its run hours
//! (`contact.run_hours`) and starts (`contact.starts`) are derived and reported with it. A
//! contact already active at start-up counts its run time from then, not as a start.
//!
//! **Persistence.** The totals (pulse volume, run hours, starts) are readings like any other,
//! so they are committed to the store; at start-up each input recovers its last committed
//! total ([`recover`]: the newest raw reading of its series, else the aggregator's
//! `agg_latest` once the raw ones were downsampled) and counts on from it. A restart, SIGKILL
//! or power cut loses only pulses counted but not yet committed: those since the last report
//! (≤ `report_ms`) plus the commit interval (≤ `store.commit_interval_ms`). A G4 diaphragm
//! meter at its maximum 6 m³/h with 0.01 m³ per pulse makes 600 pulses an hour, one every 6 s,
//! so with the defaults (10 s + 0.5 s) at most 2 pulses (0.02 m³) are lost; a clean stop
//! reports the final total first and loses none. Nothing is counted twice: the count resumes
//! from what was committed, never from what was only seen.
//!
//! **Missed edges.** Each edge carries its line's sequence number; a gap (a kernel buffer
//! overflow, or the edge channel full) is counted in `gkgw_gpio_missed_edges_total`. Pulses
//! and bounce filtered are counted too (`gkgw_gpio_pulses_total`,
//! `gkgw_gpio_bounces_filtered_total`).
//!
//! **Never stalls.** Readings go through [`Intake::offer`] with a [`Spill`], like the Modbus
//! pollers: the input keeps counting while the store is stuck, and a dead line only leaves its
//! task waiting for edges.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{self, InputKind};
use crate::gpio::debounce::Debouncer;
use crate::gpio::{Edge, EdgeEvent, InputLine};
use crate::intake::{Intake, Spill};
use crate::metrics::{Collector, Encoder, Kind};
use crate::model::{Quality, Reading, Series, Value};
use crate::plant::{self, Instance, Plant};

/// A total is reported at least this often, changed or not.
pub const MAX_REPORT_GAP: Duration = Duration::from_secs(60);

/// A stored name: (measurement, field).
pub type Names = (String, String);

/// What an input feeds, bound in the plant.
#[derive(Debug, Clone)]
pub enum Feeds {
    Pulse {
        weight_m3: f64,
        volume: Names,
        flow: Names,
    },
    Contact {
        state: Names,
        run_hours: Names,
        starts: Names,
    },
}

/// One resolved `[[gpio.input]]`.
#[derive(Debug, Clone)]
pub struct InputPlan {
    pub config: config::GpioInput,
    pub key: String,
    pub feeds: Feeds,
}

/// Binds every `[[gpio.input]]` to its quantities at its instance (its name).
pub fn resolve(c: &config::Config, plant: &mut Plant) -> Result<Vec<InputPlan>, plant::Error> {
    let mut out = Vec::new();
    for (i, inp) in c.gpio.inputs.iter().enumerate() {
        let key = format!("gpio.input[{i}]");
        let chip = inp.chip.as_ref().unwrap_or(&c.gpio.chip);
        let source = format!("gpio {} line {}", chip.display(), inp.line);
        let every = format!("{} ms", inp.report_ms);
        // A contact's quantity must be a state (checked before the bindings borrow `plant`).
        let contact_unit = match (&inp.kind, &inp.quantity) {
            (InputKind::Contact, Some(name)) => {
                let q = plant.catalogue.require(&format!("{key}.quantity"), name)?;
                if q.kind != plant::Kind::State {
                    return Err(plant::Error::BadQuantity {
                        key: format!("{key}.quantity"),
                        name: name.clone(),
                        message: format!(
                            "a contact feeds a state quantity, not a {}",
                            q.kind.as_str()
                        ),
                    });
                }
                q.unit.clone()
            }
            _ => String::new(),
        };
        let instance = Instance::Device(inp.name.clone());
        let mut bind = |q: &str, unit: &str, src: String, interval: String| {
            plant
                .bind(&key, q, instance.clone(), src, unit, interval)
                .map(|b| (b.measurement.clone(), b.field.clone()))
        };
        let feeds = match inp.kind {
            InputKind::Pulse => {
                let w = inp.pulse_m3.unwrap_or(c.site.gas_meter_pulse_m3);
                Feeds::Pulse {
                    weight_m3: w,
                    volume: bind(
                        "gas.volume",
                        "m³",
                        format!("{source} pulses × {w} m³"),
                        every.clone(),
                    )?,
                    flow: bind("gas.flow", "m³/h", format!("{source} pulse rate"), every)?,
                }
            }
            InputKind::Contact => Feeds::Contact {
                state: bind(
                    inp.quantity.as_deref().unwrap_or_default(),
                    &contact_unit,
                    format!("{source} contact"),
                    format!("on change, every {} ms", inp.report_ms),
                )?,
                run_hours: bind(
                    "contact.run_hours",
                    "h",
                    format!("{source} time active"),
                    every.clone(),
                )?,
                starts: bind("contact.starts", "", format!("{source} activations"), every)?,
            },
        };
        out.push(InputPlan {
            config: inp.clone(),
            key,
            feeds,
        });
    }
    Ok(out)
}

/// What an input starts from: its last committed totals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Recovered {
    /// Pulse: m³; contact: run hours.
    pub total: f64,
    /// Contact: starts.
    pub starts: f64,
}

/// The last committed totals of `plan`'s series: the newest raw reading, else the windows'
/// `agg_latest` (the raw ones downsampled by the quota), else 0.
pub fn recover(
    plan: &InputPlan,
    raw: &mut crate::store::Reader,
    windows: &crate::store::windows::Windows,
) -> Result<Recovered, crate::store::Error> {
    let device = plan.config.name.as_str();
    let mut one = |names: &Names, quantity: &str| -> Result<f64, crate::store::Error> {
        if let Some((_, v)) = raw.latest(&names.0, device, &names.1)? {
            return Ok(v);
        }
        Ok(windows.latest(quantity, device)?.map_or(0.0, |(_, v)| v))
    };
    Ok(match &plan.feeds {
        Feeds::Pulse { volume, .. } => Recovered {
            total: one(volume, "gas.volume")?,
            starts: 0.0,
        },
        Feeds::Contact {
            run_hours, starts, ..
        } => Recovered {
            total: one(run_hours, "contact.run_hours")?,
            starts: one(starts, "contact.starts")?,
        },
    })
}

/// One input's counters for `/metrics`.
#[derive(Debug, Default)]
pub struct InputStats {
    /// A pulse input (only those have `gkgw_gpio_pulses_total`).
    pub pulse_input: bool,
    pub pulses: AtomicU64,
    pub missed_edges: AtomicU64,
    pub bounces: AtomicU64,
}

/// Every input's counters, by name: the `/metrics` collector.
#[derive(Debug, Clone, Default)]
pub struct Stats(pub Arc<BTreeMap<String, Arc<InputStats>>>);

impl Collector for Stats {
    fn collect(&self, out: &mut Encoder) {
        type Get = fn(&InputStats) -> &AtomicU64;
        let families: [(&'static str, &str, Get); 3] = [
            (
                "gkgw_gpio_pulses_total",
                "Debounced pulses counted per GPIO pulse input.",
                |s| &s.pulses,
            ),
            (
                "gkgw_gpio_missed_edges_total",
                "Edges missed per GPIO input (gaps in the line's sequence numbers).",
                |s| &s.missed_edges,
            ),
            (
                "gkgw_gpio_bounces_filtered_total",
                "Edges filtered as contact bounce per GPIO input (software debounce).",
                |s| &s.bounces,
            ),
        ];
        for (name, help, get) in families {
            let mut f = out.family(name, help, Kind::Counter);
            for (input, s) in self.0.iter() {
                if name == "gkgw_gpio_pulses_total" && !s.pulse_input {
                    continue;
                }
                f.sample(&[("input", input)], get(s).load(Ordering::Relaxed));
            }
        }
    }
}

/// The pure core of one input: debounce, sequence gaps, the pulse count or the contact's run
/// time, on nanoseconds since the input started. No clock, no I/O.
#[derive(Debug, Clone)]
pub struct Counter {
    debouncer: Debouncer,
    last_seq: Option<u32>,
    pub missed: u64,
    pub pulses: u64,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Pulse {
        weight: f64,
        base_m3: f64,
        window_ns: u64,
        recent: VecDeque<u64>,
    },
    Contact {
        base_hours: f64,
        base_starts: f64,
        starts: u64,
        run_ns: u64,
        on_since: Option<u64>,
    },
}

/// What an input reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Values {
    Pulse {
        total_m3: f64,
        flow_m3h: f64,
    },
    Contact {
        active: bool,
        run_hours: f64,
        starts: f64,
    },
}

fn round(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

/// Flow in m³/h from the pulse times in the window (see the module doc).
pub fn flow_m3h(recent: &VecDeque<u64>, weight: f64, now_ns: u64) -> f64 {
    let (Some(&first), Some(&last)) = (recent.front(), recent.back()) else {
        return 0.0;
    };
    let n = recent.len();
    if n < 2 || last <= first {
        return 0.0;
    }
    let mean = (last - first) as f64 / (n - 1) as f64;
    let interval = mean.max(now_ns.saturating_sub(last) as f64);
    weight / (interval / 3.6e12)
}

impl Counter {
    /// A pulse counter from `base_m3` (the recovered total).
    pub fn pulse(debounce_ns: u64, weight: f64, base_m3: f64, window_ns: u64) -> Counter {
        Counter {
            debouncer: Debouncer::new(debounce_ns, false),
            last_seq: None,
            missed: 0,
            pulses: 0,
            state: State::Pulse {
                weight,
                base_m3,
                window_ns,
                recent: VecDeque::new(),
            },
        }
    }

    /// A contact at `level` at time 0, with its recovered run hours and starts.
    pub fn contact(debounce_ns: u64, level: bool, recovered: Recovered) -> Counter {
        Counter {
            debouncer: Debouncer::new(debounce_ns, level),
            last_seq: None,
            missed: 0,
            pulses: 0,
            state: State::Contact {
                base_hours: recovered.total,
                base_starts: recovered.starts,
                starts: 0,
                run_ns: 0,
                on_since: level.then_some(0),
            },
        }
    }

    pub fn bounces(&self) -> u64 {
        self.debouncer.filtered
    }

    /// When [`Counter::on_time`] must be called next for a pending debounced change.
    pub fn deadline(&self) -> Option<u64> {
        self.debouncer.deadline()
    }

    /// An edge: counts a sequence gap as missed edges. True when the debounced level changed.
    pub fn on_edge(&mut self, edge: Edge, seqno: u32, at_ns: u64) -> bool {
        if let Some(last) = self.last_seq {
            let gap = seqno.wrapping_sub(last).wrapping_sub(1);
            // A seqno going backwards (a re-requested line) is a new sequence, not a gap.
            if gap < u32::MAX / 2 {
                self.missed += u64::from(gap);
            }
        }
        self.last_seq = Some(seqno);
        let change = self.debouncer.on_edge(edge == Edge::Rising, at_ns);
        let mut changed = change.is_some_and(|c| self.apply(c.level, c.at_ns));
        changed |= self.on_time(at_ns);
        changed
    }

    /// Time passed: lets a pending debounced change through. True when the level changed.
    pub fn on_time(&mut self, now_ns: u64) -> bool {
        match self.debouncer.on_time(now_ns) {
            Some(c) => self.apply(c.level, c.at_ns),
            None => false,
        }
    }

    fn apply(&mut self, level: bool, at_ns: u64) -> bool {
        match &mut self.state {
            State::Pulse {
                recent, window_ns, ..
            } => {
                if level {
                    self.pulses += 1;
                    recent.push_back(at_ns);
                    while recent
                        .front()
                        .is_some_and(|&t| at_ns.saturating_sub(t) > *window_ns)
                    {
                        recent.pop_front();
                    }
                }
            }
            State::Contact {
                starts,
                run_ns,
                on_since,
                ..
            } => match (level, *on_since) {
                (true, None) => {
                    *starts += 1;
                    *on_since = Some(at_ns);
                }
                (false, Some(t)) => {
                    *run_ns += at_ns.saturating_sub(t);
                    *on_since = None;
                }
                _ => {}
            },
        }
        true
    }

    /// The values to report at `now_ns`.
    pub fn values(&mut self, now_ns: u64) -> Values {
        let pulses = self.pulses;
        match &mut self.state {
            State::Pulse {
                weight,
                base_m3,
                window_ns,
                recent,
            } => {
                while recent
                    .front()
                    .is_some_and(|&t| now_ns.saturating_sub(t) > *window_ns)
                {
                    recent.pop_front();
                }
                Values::Pulse {
                    total_m3: round(*base_m3 + pulses as f64 * *weight, 6),
                    flow_m3h: round(flow_m3h(recent, *weight, now_ns), 3),
                }
            }
            State::Contact {
                base_hours,
                base_starts,
                starts,
                run_ns,
                on_since,
            } => {
                let running = on_since.map_or(0, |t| now_ns.saturating_sub(t));
                Values::Contact {
                    active: self.debouncer.level(),
                    run_hours: round(*base_hours + (*run_ns + running) as f64 / 3.6e12, 6),
                    starts: *base_starts + *starts as f64,
                }
            }
        }
    }
}

/// The readings of `values` for `plan`, stamped `stamp`.
fn readings(plan: &InputPlan, values: Values, stamp: crate::clock::Stamp) -> Vec<Reading> {
    let fields: Vec<(&Names, Value)> = match (&plan.feeds, values) {
        (Feeds::Pulse { volume, flow, .. }, Values::Pulse { total_m3, flow_m3h }) => vec![
            (volume, Value::Float(total_m3)),
            (flow, Value::Float(flow_m3h)),
        ],
        (
            Feeds::Contact {
                state,
                run_hours: rh,
                starts: st,
            },
            Values::Contact {
                active,
                run_hours,
                starts,
            },
        ) => vec![
            (state, Value::Bool(active)),
            (rh, Value::Float(run_hours)),
            (st, Value::Int(starts as i64)),
        ],
        _ => Vec::new(),
    };
    let mut by_measurement: BTreeMap<&str, Reading> = BTreeMap::new();
    for ((m, f), v) in fields {
        by_measurement
            .entry(m)
            .or_insert_with(|| Reading {
                series: Series::new(m.as_str(), plan.config.name.as_str()),
                ts_ns: stamp.ts_ns,
                quality: stamp.quality(Quality::Good),
                fields: Vec::new(),
                ack: None,
                receipt: None,
            })
            .fields
            .push((f.clone(), v));
    }
    by_measurement.into_values().collect()
}

/// Feeds every edge already in the channel to `counter`; true when the level changed.
fn take_queued(
    edges: &mut mpsc::Receiver<EdgeEvent>,
    counter: &mut Counter,
    ns: &impl Fn(Instant) -> u64,
) -> bool {
    let mut changed = false;
    while let Ok(e) = edges.try_recv() {
        changed |= counter.on_edge(e.edge, e.seqno, ns(e.at));
    }
    changed
}

/// What one input's task is given.
pub struct Task {
    pub plan: InputPlan,
    pub line: Box<dyn InputLine>,
    pub edges: mpsc::Receiver<EdgeEvent>,
    /// Debounce in software (the sim backend); else the backend did.
    pub software_debounce: bool,
    pub recovered: Recovered,
    pub stats: Arc<InputStats>,
}

/// One input's task: edges → [`Counter`] → readings through the intake, until `cancel`; then
/// a last report, so a clean stop loses no pulse.
pub async fn run_input(t: Task, intake: Intake, clock: Arc<Clock>, cancel: CancellationToken) {
    let Task {
        plan,
        line,
        mut edges,
        software_debounce,
        recovered,
        stats,
    } = t;
    let c = &plan.config;
    let debounce_ns = if software_debounce {
        c.debounce_ms * 1_000_000
    } else {
        0
    };
    let start = Instant::now();
    let ns = |at: Instant| at.saturating_duration_since(start).as_nanos() as u64;
    let mut counter = match plan.feeds {
        Feeds::Pulse { weight_m3, .. } => Counter::pulse(
            debounce_ns,
            weight_m3,
            recovered.total,
            c.flow_window_s * 1_000_000_000,
        ),
        Feeds::Contact { .. } => {
            let level = line.level().unwrap_or_else(|e| {
                tracing::warn!(input = %c.name, error = %e, "gpio: cannot read the contact's level; assuming inactive");
                false
            });
            Counter::contact(debounce_ns, level, recovered)
        }
    };
    tracing::info!(input = %c.name, kind = ?c.kind, recovered = recovered.total, "gpio input started");
    let contact = matches!(plan.feeds, Feeds::Contact { .. });
    let report_every = Duration::from_millis(c.report_ms);
    let mut spill = Spill::default();
    let mut next_report = tokio::time::Instant::now() + report_every;
    let mut last_sent: Option<(Values, Instant)> = None;
    // Report once at the start: the recovered total (and a contact's state) is current.
    let mut report_now = true;
    let mut open = true;
    loop {
        let now = Instant::now();
        if report_now {
            report_now = false;
            let v = counter.values(ns(now));
            let due = match last_sent {
                None => true,
                Some((_, at)) if now.duration_since(at) >= MAX_REPORT_GAP => true,
                Some(_) if contact => true,
                Some((last, _)) => last != v,
            };
            if due {
                for r in readings(&plan, v, clock.now()) {
                    if intake.offer(r, &mut spill).is_err() {
                        return;
                    }
                }
                last_sent = Some((v, now));
            }
        }
        stats.pulses.store(counter.pulses, Ordering::Relaxed);
        stats.missed_edges.store(counter.missed, Ordering::Relaxed);
        stats.bounces.store(counter.bounces(), Ordering::Relaxed);
        if intake.flush(&mut spill).is_err() {
            return;
        }
        let debounce_at = counter
            .deadline()
            .map(|d| tokio::time::Instant::from_std(start + Duration::from_nanos(d)));
        let wake = debounce_at.map_or(next_report, |d| d.min(next_report));
        // While readings wait in the spill, look again soon for room in the store's channel.
        let wake = if spill.is_empty() {
            wake
        } else {
            wake.min(tokio::time::Instant::now() + Duration::from_millis(200))
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            e = edges.recv(), if open => match e {
                Some(e) => {
                    let mut changed = counter.on_edge(e.edge, e.seqno, ns(e.at));
                    changed |= take_queued(&mut edges, &mut counter, &ns);
                    report_now |= changed && contact;
                }
                None => {
                    tracing::error!(input = %c.name, "gpio: the input line closed; its last state is kept");
                    open = false;
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                // Edges already queued happened before now: they go first, or a bounce
                // still in the queue would look like a stable level.
                let mut changed = take_queued(&mut edges, &mut counter, &ns);
                changed |= counter.on_time(ns(Instant::now()));
                if changed && contact {
                    report_now = true;
                }
                if tokio::time::Instant::now() >= next_report {
                    next_report += report_every;
                    report_now = true;
                }
            }
        }
    }
    // The last report, then what waits in the spill (the committer drains before it ends).
    counter.on_time(u64::MAX);
    let v = counter.values(ns(Instant::now()));
    for r in readings(&plan, v, clock.now()) {
        if intake.offer(r, &mut spill).is_err() {
            return;
        }
    }
    stats.pulses.store(counter.pulses, Ordering::Relaxed);
    let _ = intake.drain(&mut spill).await;
    tracing::info!(input = %c.name, values = ?v, "gpio input stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Edges (rising?, seqno, ms) into a pulse counter with 10 ms debounce; then the time
    /// `end_ms`; returns pulses, missed, bounces.
    fn check_pulses(edges: &[(bool, u32, u64)], end_ms: u64, expected: (u64, u64, u64)) {
        let mut c = Counter::pulse(10 * MS, 0.01, 0.0, 300_000 * MS);
        for &(rising, seq, at) in edges {
            let edge = if rising { Edge::Rising } else { Edge::Falling };
            c.on_edge(edge, seq, at * MS);
        }
        c.on_time(end_ms * MS);
        assert_eq!((c.pulses, c.missed, c.bounces()), expected, "{edges:?}");
    }

    /// `n` pulses each with `k` bounces after each edge, as the sim makes them.
    fn burst(n: u32, k: u32) -> Vec<(bool, u32, u64)> {
        let mut v = Vec::new();
        let mut seq = 0;
        let mut t = 0;
        for _ in 0..n {
            for level in [true, false] {
                seq += 1;
                v.push((level, seq, t));
                for j in 0..k {
                    seq += 1;
                    v.push((!level, seq, t + 2 * u64::from(j) + 1));
                    seq += 1;
                    v.push((level, seq, t + 2 * u64::from(j) + 2));
                }
                t += 25;
            }
        }
        v
    }

    #[test]
    fn a_burst_with_contact_bounce_counts_each_pulse_once() {
        check_pulses(&burst(120, 0), 10_000, (120, 0, 0));
        check_pulses(&burst(120, 3), 10_000, (120, 0, 120 * 2 * 3 * 2));
        // A spike shorter than the debounce is no pulse.
        check_pulses(&[(true, 1, 0), (false, 2, 3)], 100, (0, 0, 2));
    }

    #[test]
    fn sequence_gaps_are_missed_edges() {
        // Seqnos 1, 2, then 5 (3 and 4 missed), then 6.
        check_pulses(
            &[
                (true, 1, 0),
                (false, 2, 50),
                (true, 5, 100),
                (false, 6, 150),
            ],
            300,
            (2, 2, 0),
        );
        // Wrapping around u32 is no gap.
        let mut c = Counter::pulse(0, 0.01, 0.0, 1_000 * MS);
        c.on_edge(Edge::Rising, u32::MAX, 0);
        c.on_edge(Edge::Falling, 0, MS);
        assert_eq!(c.missed, 0);
    }

    #[test]
    fn flow_comes_from_the_pulse_rate_and_falls_to_zero() {
        // 0.01 m³ every 6 s = 6 m³/h (a G4 meter at its maximum).
        let mut c = Counter::pulse(0, 0.01, 1.0, 300_000 * MS);
        for i in 0..10u64 {
            c.on_edge(Edge::Rising, 2 * i as u32 + 1, i * 6_000 * MS);
            c.on_edge(Edge::Falling, 2 * i as u32 + 2, (i * 6_000 + 100) * MS);
        }
        let at = |c: &mut Counter, ms: u64| c.values(ms * MS);
        assert_eq!(
            at(&mut c, 54_000),
            Values::Pulse {
                total_m3: 1.1,
                flow_m3h: 6.0
            }
        );
        // 12 s after the last pulse: at most one pulse per 12 s = 3 m³/h.
        assert_eq!(
            at(&mut c, 66_000),
            Values::Pulse {
                total_m3: 1.1,
                flow_m3h: 3.0
            }
        );
        // Beyond the window: no pulses in it, flow 0, the total stays.
        assert_eq!(
            at(&mut c, 54_000 + 300_001),
            Values::Pulse {
                total_m3: 1.1,
                flow_m3h: 0.0
            }
        );
    }

    #[test]
    fn a_contact_derives_run_hours_and_starts_from_its_recovered_totals() {
        let h = 3_600_000 * MS;
        let mut c = Counter::contact(
            0,
            false,
            Recovered {
                total: 10.0,
                starts: 4.0,
            },
        );
        assert!(c.on_edge(Edge::Rising, 1, h));
        assert!(c.on_edge(Edge::Falling, 2, 3 * h)); // 2 h on
        assert!(c.on_edge(Edge::Rising, 3, 4 * h));
        assert_eq!(
            c.values(4 * h + h / 2),
            Values::Contact {
                active: true,
                run_hours: 12.5,
                starts: 6.0
            }
        );
        // Active at start-up: runs from 0, no start.
        let mut c = Counter::contact(0, true, Recovered::default());
        assert_eq!(
            c.values(h),
            Values::Contact {
                active: true,
                run_hours: 1.0,
                starts: 0.0
            }
        );
    }

    #[test]
    fn a_contact_bouncing_is_one_start() {
        let mut c = Counter::contact(20 * MS, false, Recovered::default());
        let mut seq = 0;
        for (level, ms) in [(true, 0), (false, 2), (true, 4), (false, 6), (true, 8)] {
            seq += 1;
            let e = if level { Edge::Rising } else { Edge::Falling };
            assert!(!c.on_edge(e, seq, ms * MS), "pending while bouncing");
        }
        assert_eq!(c.deadline(), Some(28 * MS));
        assert!(c.on_time(28 * MS));
        assert!(matches!(
            c.values(28 * MS),
            Values::Contact {
                active: true,
                starts: 1.0,
                ..
            }
        ));
    }

    fn resolved(extra: &str) -> Result<Vec<InputPlan>, String> {
        let config = config::Config::parse("gw.toml", extra).map_err(|e| e.to_string())?;
        let mut plant = Plant::new(plant::Catalogue::with_site(&[]).map_err(|e| e.to_string())?);
        resolve(&config, &mut plant).map_err(|e| e.to_string())
    }

    #[test]
    fn inputs_bind_their_quantities_and_mistakes_name_the_key() {
        let plans = resolved(
            "[[gpio.input]]\nname = \"gas-meter\"\nline = 17\nkind = \"pulse\"\n[[gpio.input]]\nname = \"compressor\"\nline = 27\nkind = \"contact\"\nquantity = \"compressor.status.running\"\n",
        )
        .expect("resolves");
        match &plans[0].feeds {
            Feeds::Pulse {
                weight_m3,
                volume,
                flow,
            } => {
                assert_eq!(*weight_m3, 0.01, "from site.gas_meter_pulse_m3");
                assert_eq!(volume, &("biogas".to_owned(), "volume_m3".to_owned()));
                assert_eq!(flow, &("biogas".to_owned(), "flow_m3h".to_owned()));
            }
            f => panic!("{f:?}"),
        }
        assert!(
            matches!(&plans[1].feeds, Feeds::Contact { state, .. } if state.1 == "status_running")
        );
        let err = resolved(
            "[[gpio.input]]\nname = \"door\"\nline = 4\nkind = \"contact\"\nquantity = \"digester.ph\"\n",
        )
        .expect_err("a gauge");
        assert!(err.contains("gpio.input[0].quantity"), "{err}");
    }
}
