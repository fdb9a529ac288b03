//! The alarm task: feeds the [`Engine`] from the live stream (every reading as it arrives,
//! before the commit), the logbook's lab results and a one-second tick, takes operators'
//! actions from the web, and acts on each transition in this order:
//!
//! 1. the GPIO outputs (buzzer, beacon, relay: `[[alarms.output]]`), at once;
//! 2. `alarms/{rule}` on the embedded broker (JSON, to subscribed integrations), at once;
//! 3. the log;
//! 4. the store (`store::alarms`: the events and the state), by the persister task, which
//!    retries while the store refuses (disk full, read-only) and keeps at most
//!    [`UNSAVED_CAPACITY`] events meanwhile (the oldest dropped, counted).
//!
//! So an alarm fires, sounds and is published with the store failing. The engine's time is the
//! gateway's clock, corrected for steps: when the wall clock jumps (NTP), the engine's
//! timestamps move with it ([`Engine::shift`]), so a step neither raises stale or offline
//! alarms nor shortens a delay.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Event, Input, Op, OpError, Sample, View};
use crate::clock::Clock;
use crate::metrics::{Counter, Gauge, Registry};
use crate::model::{Quality, Reading, Value};
use crate::plant::Plant;
use crate::store::alarms::Alarms;
use crate::store::logbook::Logbook;

/// Events kept in memory while the store refuses them.
pub const UNSAVED_CAPACITY: usize = 100_000;
/// Operator requests waiting for the task: mpsc; full → the web answers 503 at once.
pub const REQUESTS_CAPACITY: usize = 64;
/// The instance the logbook's lab results are readings of.
pub const LAB_INSTANCE: &str = "lab";

pub struct Metrics {
    pub transitions: Arc<Counter>,
    pub raised: Arc<Counter>,
    pub active: Arc<Gauge>,
    pub unacknowledged: Arc<Gauge>,
    pub lagged: Arc<Counter>,
    pub save_errors: Arc<Counter>,
    pub unsaved: Arc<Gauge>,
    pub unsaved_dropped: Arc<Counter>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Metrics {
        Metrics {
            transitions: r.counter("gkgw_alarm_transitions_total", "Alarm transitions (raised, cleared, acknowledged, ...), each an event with a sequence number."),
            raised: r.counter("gkgw_alarms_raised_total", "Alarms raised."),
            active: r.gauge("gkgw_alarms_active", "Alarms active now (acknowledged or not)."),
            unacknowledged: r.gauge("gkgw_alarms_unacknowledged", "Alarms not yet acknowledged (active or cleared)."),
            lagged: r.counter("gkgw_alarm_readings_skipped_total", "Live readings the alarm engine skipped because it fell more than the live stream's capacity behind."),
            save_errors: r.counter("gkgw_alarm_save_errors_total", "Failed attempts to save alarm events and state to the store (retried)."),
            unsaved: r.gauge("gkgw_alarm_events_unsaved", "Alarm events not yet saved to the store."),
            unsaved_dropped: r.counter("gkgw_alarm_events_unsaved_dropped_total", "Alarm events dropped unsaved because the store refused them for too long."),
        }
    }
}

/// The events of an operation, and the alarm after them (None: back to normal, forgotten).
pub type OperateReply = Result<(Vec<Event>, Option<View>), OpError>;

/// What an operator asks for.
pub enum Request {
    Operate {
        id: String,
        op: Op,
        by: String,
        note: String,
        /// The events, and the alarm after them (None: back to normal and forgotten).
        reply: oneshot::Sender<OperateReply>,
    },
    SilenceAll {
        by: String,
        note: String,
        reply: oneshot::Sender<Vec<Event>>,
    },
}

/// What the web shows: the current alarms and the outputs they drive.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub alarms: Vec<View>,
    /// (output, demanded on by the alarms).
    pub outputs: Vec<(String, bool)>,
    pub next_seq: u64,
}

/// The web's side: the snapshot, the request channel and the store for the history.
#[derive(Clone)]
pub struct Handle {
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub requests: mpsc::Sender<Request>,
    pub store: crate::store::Handle<Alarms>,
    pub max_shelve_hours: u64,
}

impl Handle {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Drives a GPIO output (name, on).
pub type Drive = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// Everything the task needs.
pub struct Parts {
    pub engine: Engine,
    pub plant: Arc<Plant>,
    pub live: broadcast::Receiver<Arc<Reading>>,
    pub requests: mpsc::Receiver<Request>,
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub drive: Option<Drive>,
    pub hub: Option<Arc<crate::broker::Hub>>,
    pub clock: Arc<Clock>,
    pub store: crate::store::Handle<Alarms>,
    pub logbook: Option<(crate::store::Handle<Logbook>, watch::Receiver<i64>)>,
    pub metrics: Arc<Metrics>,
    /// The store's disk: `gateway.disk_full` while it is full.
    pub disk: Arc<crate::store::disk::Disk>,
    /// How long alarm events are gathered before they are saved ([`SAVE_GATHER`] or the
    /// commit interval, the longer).
    pub save_gather: Duration,
}

#[derive(Default)]
struct Unsaved {
    events: std::collections::VecDeque<Event>,
    state: Option<Vec<super::Persisted>>,
}

/// The engine's clock: the gateway's, with steps of the wall clock detected against the
/// monotonic clock so the engine can be shifted by them.
struct EngineClock {
    clock: Arc<Clock>,
    last_wall: i64,
    last_mono: Instant,
}

impl EngineClock {
    /// Now, and the wall clock's step since the last call (0 without one).
    fn now(&mut self) -> (i64, i64) {
        let wall = self.clock.now().ts_ns;
        let mono = Instant::now();
        let expected = self.last_wall + (mono - self.last_mono).as_nanos() as i64;
        let step = wall - expected;
        self.last_wall = wall;
        self.last_mono = mono;
        if step.abs() > 2_000_000_000 {
            (wall, step)
        } else {
            (wall, 0)
        }
    }
}

/// Runs the engine until `cancel`; saves what is unsaved before returning (bounded by the
/// store's busy timeout).
pub async fn run(mut p: Parts, cancel: CancellationToken) {
    let unsaved = Arc::new(Mutex::new(Unsaved::default()));
    let wake = Arc::new(Notify::new());
    let persister = tokio::spawn(persist(
        p.save_gather,
        p.store.clone(),
        unsaved.clone(),
        wake.clone(),
        p.metrics.clone(),
        cancel.clone(),
    ));
    let mut clock = EngineClock {
        last_wall: p.clock.now().ts_ns,
        clock: p.clock.clone(),
        last_mono: Instant::now(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lab_seen: [Option<(i64, u32)>; 2] = [None, None];
    let mut logbook_rx = p.logbook.as_ref().map(|(_, rx)| rx.clone());
    if let Some((book, _)) = &p.logbook {
        let (now, _) = clock.now();
        let evs = feed_lab(&mut p.engine, book, now, &mut lab_seen).await;
        act(&mut p, evs, &unsaved, &wake);
    }
    publish_snapshot(&p);
    loop {
        let mut events = Vec::new();
        let mut ticked = false;
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = p.live.recv() => match r {
                Ok(reading) => {
                    let (now, step) = clock.now();
                    if step != 0 {
                        p.engine.shift(step);
                    }
                    feed(&mut p.engine, &p.plant, now, &reading, &mut events);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    p.metrics.lagged.add(n);
                    tracing::warn!(skipped = n, "the alarm engine fell behind the live stream");
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // Every source is gone (shutting down): keep ticking until cancelled.
                    cancel.cancelled().await;
                    break;
                }
            },
            Some(req) = p.requests.recv() => {
                let (now, step) = clock.now();
                if step != 0 {
                    p.engine.shift(step);
                }
                match req {
                    Request::Operate { id, op, by, note, reply } => {
                        let r = p.engine.operate(now, &id, op, &by, &note);
                        if let Ok(evs) = &r {
                            events.extend(evs.iter().cloned());
                        }
                        let _ = reply.send(r.map(|evs| (evs, p.engine.get(&id))));
                    }
                    Request::SilenceAll { by, note, reply } => {
                        let evs = p.engine.silence_all(now, &by, &note);
                        events.extend(evs.iter().cloned());
                        let _ = reply.send(evs);
                    }
                }
            }
            _ = tick.tick() => {
                let (now, step) = clock.now();
                if step != 0 {
                    tracing::info!(step_ms = step / 1_000_000, "clock step: alarm timers moved with it");
                    p.engine.shift(step);
                }
                events.extend(p.engine.tick(now));
                events.extend(p.engine.gateway(now, p.disk.full(), p.disk.removed() as f64));
                ticked = true;
            }
            Ok(()) = async {
                match logbook_rx.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((book, _)) = &p.logbook {
                    let (now, _) = clock.now();
                    events.extend(feed_lab(&mut p.engine, book, now, &mut lab_seen).await);
                }
            }
        }
        let changed = !events.is_empty();
        act(&mut p, events, &unsaved, &wake);
        // Conditions and values change without a transition: the web's view is refreshed
        // once a second anyway.
        if ticked && !changed {
            publish_snapshot(&p);
        }
    }
    wake.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(5), persister).await;
}

/// The readings of one live reading the engine reads.
fn feed(engine: &mut Engine, plant: &Plant, now: i64, r: &Reading, out: &mut Vec<Event>) {
    let measurement = &*r.series.measurement;
    let meter = measurement.ends_with("_meter") || measurement == "meter_event";
    out.extend(engine.seen(now, &r.series.device, meter));
    for (name, value) in &r.fields {
        if name.ends_with("_quality") {
            continue;
        }
        let Some((q, unit)) = plant.stored(measurement, name) else {
            continue;
        };
        if !engine.reads(&q.name) {
            continue;
        }
        let flagged = r.fields.iter().any(|(n, _)| {
            n.len() == name.len() + 8 && n.starts_with(name.as_str()) && n.ends_with("_quality")
        });
        let sample = if flagged || r.quality == Quality::Bad {
            Sample::Bad
        } else {
            match value {
                Value::Float(f) if f.is_finite() => Sample::Number(*f),
                Value::Float(_) => Sample::Bad,
                Value::Int(i) => Sample::Number(*i as f64),
                Value::Bool(b) => Sample::Number(f64::from(u8::from(*b))),
                Value::Str(s) => Sample::Text(s),
            }
        };
        out.extend(engine.input(
            now,
            &Input {
                quantity: &q.name,
                instance: &r.series.device,
                unit,
                sample,
                manual: false,
            },
        ));
    }
}

/// The newest current lab results of the logbook (pH, FOS/TAC) as manual readings at the
/// instance `lab`, when they changed (a new entry, a correction, a withdrawal).
async fn feed_lab(
    engine: &mut Engine,
    book: &crate::store::Handle<Logbook>,
    now: i64,
    seen: &mut [Option<(i64, u32)>; 2],
) -> Vec<Event> {
    use crate::logbook::Values;
    let from = now - 400 * 86_400 * 1_000_000_000;
    let entries = match book
        .run(move |b| b.list(from, now + 86_400_000_000_000, false))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "alarms cannot read the logbook's lab results");
            return Vec::new();
        }
    };
    let mut latest: [Option<(i64, u32, f64)>; 2] = [None, None];
    for e in &entries {
        let (slot, v) = match e.values {
            Values::LabPh { ph } => (0, ph),
            Values::LabFosTac { ratio } => (1, ratio),
            _ => continue,
        };
        // Ordered by time: the last one wins.
        latest[slot] = Some((e.entry, e.revision, v));
    }
    let mut out = Vec::new();
    for (slot, quantity) in [(0, "digester.ph"), (1, "digester.fos_tac")] {
        let Some((entry, revision, v)) = latest[slot] else {
            continue;
        };
        if seen[slot] == Some((entry, revision)) {
            continue;
        }
        seen[slot] = Some((entry, revision));
        out.extend(engine.input(
            now,
            &Input {
                quantity,
                instance: LAB_INSTANCE,
                unit: "",
                sample: Sample::Number(v),
                manual: true,
            },
        ));
    }
    out
}

/// Outputs, MQTT, log, then the persister; then the web's snapshot.
fn act(p: &mut Parts, events: Vec<Event>, unsaved: &Mutex<Unsaved>, wake: &Notify) {
    if let Some(drive) = &p.drive {
        for name in p.engine.output_names() {
            drive(&name, p.engine.output_on(&name));
        }
    }
    if events.is_empty() {
        return;
    }
    for e in &events {
        p.metrics.transitions.inc();
        if e.action == super::Action::Raised {
            p.metrics.raised.inc();
        }
        if let Some(hub) = &p.hub {
            hub.publish_to_watchers(&format!("alarms/{}", e.rule), message(e).into());
        }
        let value = e.value.map(|v| format!("{v:.3}")).unwrap_or_default();
        match e.action {
            super::Action::Raised => tracing::warn!(
                alarm = %e.id(), severity = e.severity.as_str(), value = %value, seq = e.seq,
                "alarm raised"
            ),
            _ => tracing::info!(
                alarm = %e.id(), action = e.action.as_str(), state = e.state.as_str(),
                by = e.by.as_deref().unwrap_or(""), seq = e.seq, "alarm {}", e.action.as_str()
            ),
        }
    }
    {
        let mut u = unsaved.lock().unwrap_or_else(PoisonError::into_inner);
        u.events.extend(events);
        while u.events.len() > UNSAVED_CAPACITY {
            u.events.pop_front();
            p.metrics.unsaved_dropped.inc();
        }
        u.state = Some(p.engine.persisted());
        p.metrics.unsaved.set(u.events.len() as i64);
    }
    wake.notify_one();
    publish_snapshot(p);
}

fn publish_snapshot(p: &Parts) {
    let alarms = p.engine.list();
    p.metrics.active.set(
        alarms
            .iter()
            .filter(|a| a.state.as_str().starts_with("active"))
            .count() as i64,
    );
    p.metrics.unacknowledged.set(
        alarms
            .iter()
            .filter(|a| a.state.as_str().ends_with("_unacknowledged"))
            .count() as i64,
    );
    let outputs = p
        .engine
        .output_names()
        .into_iter()
        .map(|n| {
            let on = p.engine.output_on(&n);
            (n, on)
        })
        .collect();
    *p.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Snapshot {
        alarms,
        outputs,
        next_seq: p.engine.next_seq(),
    };
}

/// The MQTT message of one transition (`alarms/{rule}`).
pub fn message(e: &Event) -> String {
    serde_json::json!({
        "rule": &*e.rule,
        "instance": &*e.instance,
        "severity": e.severity.as_str(),
        "action": e.action.as_str(),
        "state": e.state.as_str(),
        "value": e.value.filter(|v| v.is_finite()),
        "time": crate::web::rfc3339(e.ts_ns),
        "ts_ns": e.ts_ns,
        "sequence": e.seq,
        "shelved": e.shelved,
        "by": e.by,
        "note": e.note,
    })
    .to_string()
}

/// Saves what the engine produced, oldest first, in one transaction per round; on failure
/// keeps it and tries again in 2 s.
async fn persist(
    gather: Duration,
    store: crate::store::Handle<Alarms>,
    unsaved: Arc<Mutex<Unsaved>>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut failing = false;
    loop {
        let stopping = cancel.is_cancelled();
        let (events, state) = {
            let mut u = unsaved.lock().unwrap_or_else(PoisonError::into_inner);
            (u.events.iter().cloned().collect::<Vec<_>>(), u.state.take())
        };
        if !events.is_empty() || state.is_some() {
            let n = events.len();
            let last = events.last().map(|e| e.seq);
            let st = state.clone().unwrap_or_default();
            let has_state = state.is_some();
            let r = store
                .run(move |a| {
                    if has_state {
                        a.save(&events, &st)
                    } else {
                        a.save_events(&events)
                    }
                })
                .await;
            let mut u = unsaved.lock().unwrap_or_else(PoisonError::into_inner);
            match r {
                Ok(()) => {
                    if failing {
                        tracing::info!("alarm events saved to the store again");
                        failing = false;
                    }
                    // Only what was saved goes; what came meanwhile stays.
                    if let Some(last) = last {
                        while u.events.front().is_some_and(|e| e.seq <= last) {
                            u.events.pop_front();
                        }
                    }
                    let _ = n;
                }
                Err(e) => {
                    metrics.save_errors.inc();
                    if !failing {
                        tracing::error!(error = %e, unsaved = u.events.len(), "cannot save alarm events to the store; the alarms keep working, saving is retried");
                        failing = true;
                    }
                    if u.state.is_none() {
                        u.state = state;
                    }
                }
            }
            metrics.unsaved.set(u.events.len() as i64);
        }
        if stopping {
            break;
        }
        let retry = if failing {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = wake.notified() => {
                // Events come in bursts (a meter out of credit: low credit, exhausted, relay
                // open): gathered for `gather` they take one transaction, one fsync. Not an
                // alarm of severity alarm or critical, nor what a person did: saved at once.
                let urgent = {
                    let u = unsaved.lock().unwrap_or_else(PoisonError::into_inner);
                    u.events.iter().any(|e| e.severity >= super::Severity::Alarm || e.by.is_some())
                };
                if !urgent {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(gather) => {}
                    }
                }
            }
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// How long the persister gathers info and warning events before saving them together (an
/// alarm or critical event, or an operator's action, is saved at once), at least: the
/// store's commit interval when longer (a site saving its SD card with a long
/// `store.commit_interval_ms` saves its alarm history as seldom). The most of the alarm
/// history a power cut can lose; the alarms themselves act at once, and their state is rebuilt
/// from the readings.
pub const SAVE_GATHER: Duration = Duration::from_secs(2);
