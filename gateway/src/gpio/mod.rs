//! GPIO behind one trait: input lines that deliver edge events and output lines that are set.
//!
//! Backends ([`Backend`]):
//! - [`cdev`]: the Linux GPIO character device, uAPI v2 (`gpiocdev`): any board, the Pi 5's
//!   RP1 too; debounce in the kernel (the line config's debounce period), a kernel timestamp
//!   and a per-line sequence number on every edge.
//! - [`rppal`]: a Raspberry Pi through `rppal` (its own debounce; one OS thread per pin for
//!   interrupts); off a Pi it fails with `UnknownModel`, reported as the line not opening.
//! - [`simulator`]: a simulated chip for `gkgw demo` and tests: an in-process handle ([`simulator::Sim`])
//!   and, when `[gpio] sim_socket` is set, a Unix socket with text commands. Its edges come
//!   undebounced (bounce is simulated), so the input source debounces them itself
//!   ([`debounce::Debouncer`]) with the kernel's semantics.
//!
//! Edges travel from the backend's thread to the input source over an `mpsc` of
//! [`EDGE_CAPACITY`]; when it is full the edge is dropped by the backend and its sequence
//! number is missing on the next one, so the source counts it as a missed edge.
//!
//! Outputs are driven through [`Outputs`], a cloneable handle of *demanded* states (what the
//! alarm engine asks for); one small task per output ([`drive`]) holds a steady line or blinks
//! a pulsed one. Which alarm drives which output is the alarm config's business, not this
//! module's: there is no alarm logic here.

pub mod cdev;
pub mod debounce;
pub mod rppal;
pub mod simulator;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Bias, GpioBackend, GpioFallback, OutputMode};

/// Edges buffered between a backend's thread and the input source, per line: at 10 ms
/// debounce, ten seconds of the fastest contact; full → the edge is dropped and counted as
/// missed through the sequence gap.
pub const EDGE_CAPACITY: usize = 1024;

/// The direction of an edge, in logical terms (`active_low` already applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The line became active (a contact closed, a pulse started).
    Rising,
    Falling,
}

/// One edge as the backend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeEvent {
    pub edge: Edge,
    /// The backend's own timestamp in ns (the kernel's CLOCK_MONOTONIC for cdev and rppal, the
    /// simulated time for sim); logged, not compared with the gateway's clock.
    pub kernel_ns: u64,
    /// The per-line sequence number: a gap means edges were missed.
    pub seqno: u32,
    /// When the edge happened on the gateway's monotonic clock: the planned instant (sim) or
    /// when the backend's thread read it (cdev, rppal: already debounced by the kernel, so a
    /// few ms of wake-up latency do not matter for counting, flow or run hours).
    pub at: Instant,
}

/// One input line to open.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// The config key, for errors: `gpio.input[0] "gas-meter"`.
    pub key: String,
    pub name: String,
    pub chip: PathBuf,
    pub line: u32,
    pub active_low: bool,
    pub bias: Bias,
    pub debounce: Duration,
}

/// One output line to open.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub key: String,
    pub name: String,
    pub chip: PathBuf,
    pub line: u32,
    pub active_low: bool,
    pub mode: OutputMode,
    pub on: Duration,
    pub off: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line could not be requested (no such chip, not a Pi, line busy, no permission).
    #[error("{key}: cannot open {chip} line {line}: {reason}")]
    Open {
        key: String,
        chip: String,
        line: u32,
        reason: String,
    },
    /// Reading or setting an open line failed.
    #[error("gpio {name}: {reason}")]
    Line { name: String, reason: String },
}

/// An open input line; its edges go to the sender given to [`Backend::input`]. Dropping it
/// releases the line (the backend's thread ends within a second).
pub trait InputLine: Send {
    /// The line's logical level now (true = active).
    fn level(&self) -> Result<bool, Error>;
}

/// An open output line.
pub trait OutputLine: Send {
    /// Sets the logical level (true = on; `active_low` applied by the backend).
    fn set(&mut self, on: bool) -> Result<(), Error>;
}

/// A GPIO driver.
pub trait Backend: Send {
    fn name(&self) -> &'static str;
    /// True when the edges it delivers are already debounced (kernel or driver); false for
    /// the simulator, whose edges the input source debounces.
    fn debounces(&self) -> bool;
    fn input(
        &mut self,
        spec: &InputSpec,
        edges: mpsc::Sender<EdgeEvent>,
    ) -> Result<Box<dyn InputLine>, Error>;
    fn output(&mut self, spec: &OutputSpec) -> Result<Box<dyn OutputLine>, Error>;
}

/// Every configured line, open.
pub struct Lines {
    /// The backend actually used (`sim` after a fallback).
    pub backend: &'static str,
    /// Whether the input source must debounce the edges itself.
    pub software_debounce: bool,
    pub inputs: Vec<(InputSpec, Box<dyn InputLine>, mpsc::Receiver<EdgeEvent>)>,
    pub outputs: Vec<(OutputSpec, Box<dyn OutputLine>)>,
    /// The simulated chip, when the sim backend is in use.
    pub sim: Option<simulator::Sim>,
}

/// The line specs of `[gpio]`, with their config keys.
pub fn specs(g: &config::Gpio) -> (Vec<InputSpec>, Vec<OutputSpec>) {
    let chip = |c: &Option<PathBuf>| c.clone().unwrap_or_else(|| g.chip.clone());
    let inputs = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, c)| InputSpec {
            key: format!("gpio.input[{i}] {:?}", c.name),
            name: c.name.clone(),
            chip: chip(&c.chip),
            line: c.line,
            active_low: c.active_low,
            bias: c.bias,
            debounce: Duration::from_millis(c.debounce_ms),
        })
        .collect();
    let outputs = g
        .outputs
        .iter()
        .enumerate()
        .map(|(i, c)| OutputSpec {
            key: format!("gpio.output[{i}] {:?}", c.name),
            name: c.name.clone(),
            chip: chip(&c.chip),
            line: c.line,
            active_low: c.active_low,
            mode: c.mode,
            on: Duration::from_millis(c.on_ms),
            off: Duration::from_millis(c.off_ms),
        })
        .collect();
    (inputs, outputs)
}

fn open_all(
    backend: &mut dyn Backend,
    inputs: &[InputSpec],
    outputs: &[OutputSpec],
) -> Result<Lines, Error> {
    let mut lines = Lines {
        backend: backend.name(),
        software_debounce: !backend.debounces(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        sim: None,
    };
    for spec in inputs {
        let (tx, rx) = mpsc::channel(EDGE_CAPACITY);
        let line = backend.input(spec, tx)?;
        lines.inputs.push((spec.clone(), line, rx));
    }
    for spec in outputs {
        let line = backend.output(spec)?;
        lines.outputs.push((spec.clone(), line));
    }
    Ok(lines)
}

/// Opens every line of `[gpio]` with the configured backend. When a line does not open, the
/// error names its key, chip and line, unless `fallback = "sim"`: then every line is simulated
/// instead, with a warning. Nothing is opened when no line is configured.
pub fn open(g: &config::Gpio) -> Result<Lines, Error> {
    let (inputs, outputs) = specs(g);
    let configured: Result<Lines, Error> = match g.backend {
        GpioBackend::Sim => {
            let s = simulator::Sim::default();
            let mut b = s.clone();
            open_all(&mut b, &inputs, &outputs).map(|mut l| {
                l.sim = Some(s);
                l
            })
        }
        _ if inputs.is_empty() && outputs.is_empty() => Ok(Lines {
            backend: "none",
            software_debounce: false,
            inputs: Vec::new(),
            outputs: Vec::new(),
            sim: None,
        }),
        GpioBackend::Cdev => open_all(&mut cdev::Cdev, &inputs, &outputs),
        GpioBackend::Rppal => rppal::Rppal::new()
            .and_then(|mut b| open_all(&mut b, &inputs, &outputs))
            .map_err(|e| rppal_open_error(e, &inputs, &outputs)),
    };
    match configured {
        Ok(l) => Ok(l),
        Err(e) if g.fallback == GpioFallback::Sim => {
            tracing::warn!(error = %e, "gpio: the configured backend cannot open its lines; SIMULATING every GPIO line instead (gpio.fallback = \"sim\"): no real input is counted and no real output is driven");
            let s = simulator::Sim::default();
            let mut b = s.clone();
            let mut l = open_all(&mut b, &inputs, &outputs)?;
            l.sim = Some(s);
            Ok(l)
        }
        Err(e) => Err(e),
    }
}

/// rppal fails before any line when it is not on a Pi: name the first line in the error.
fn rppal_open_error(e: Error, inputs: &[InputSpec], outputs: &[OutputSpec]) -> Error {
    match e {
        Error::Line { reason, .. } => {
            let (key, line) = inputs
                .first()
                .map(|i| (i.key.clone(), i.line))
                .or_else(|| outputs.first().map(|o| (o.key.clone(), o.line)))
                .unwrap_or_default();
            Error::Open {
                key,
                chip: "the Raspberry Pi GPIO (rppal), BCM".into(),
                line,
                reason,
            }
        }
        e => e,
    }
}

/// What the status page and `/api/status` show of one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputState {
    pub name: String,
    /// What was asked for (the alarm engine's demand).
    pub demanded: bool,
    /// The line's logical level now (a pulsed output blinks while demanded).
    pub level: bool,
    pub mode: OutputMode,
}

struct Output {
    mode: OutputMode,
    demanded: watch::Sender<bool>,
    level: Arc<AtomicBool>,
}

/// The handle to every output's demanded state: cheap to clone; [`Outputs::set`] never
/// blocks (a `watch`: the driver task sees the newest demand).
#[derive(Clone, Default)]
pub struct Outputs {
    by_name: Arc<BTreeMap<String, Output>>,
}

/// What one output's driver task needs.
pub struct Driver {
    pub spec: OutputSpec,
    pub line: Box<dyn OutputLine>,
    pub demanded: watch::Receiver<bool>,
    pub level: Arc<AtomicBool>,
}

impl Outputs {
    /// The handle, and one [`Driver`] per output for [`drive`].
    pub fn new(lines: Vec<(OutputSpec, Box<dyn OutputLine>)>) -> (Outputs, Vec<Driver>) {
        let mut by_name = BTreeMap::new();
        let mut drivers = Vec::new();
        for (spec, line) in lines {
            let (tx, rx) = watch::channel(false);
            let level = Arc::new(AtomicBool::new(false));
            by_name.insert(
                spec.name.clone(),
                Output {
                    mode: spec.mode,
                    demanded: tx,
                    level: level.clone(),
                },
            );
            drivers.push(Driver {
                spec,
                line,
                demanded: rx,
                level,
            });
        }
        (
            Outputs {
                by_name: Arc::new(by_name),
            },
            drivers,
        )
    }

    /// Demands `name` on or off. An unknown name is logged and ignored (the alarm config is
    /// checked against the output names at start-up).
    pub fn set(&self, name: &str, on: bool) {
        match self.by_name.get(name) {
            Some(o) => {
                o.demanded
                    .send_if_modified(|d| std::mem::replace(d, on) != on);
            }
            None => tracing::warn!(output = name, "gpio: no such output; ignored"),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn snapshot(&self) -> Vec<OutputState> {
        self.by_name
            .iter()
            .map(|(name, o)| OutputState {
                name: name.clone(),
                demanded: *o.demanded.borrow(),
                level: o.level.load(Ordering::Relaxed),
                mode: o.mode,
            })
            .collect()
    }
}

/// One output's task: holds the line at the demanded state (steady), or blinks it while
/// demanded (pulsed: `on` then `off`, starting on). A failed set is logged once per failure
/// streak and retried at the next change or blink. Ends on `cancel`, leaving the line as it is.
pub async fn drive(mut d: Driver, cancel: CancellationToken) {
    let mut failing = false;
    let mut set = |line: &mut Box<dyn OutputLine>, on: bool| match line.set(on) {
        Ok(()) => {
            d.level.store(on, Ordering::Relaxed);
            failing = false;
        }
        Err(e) => {
            if !failing {
                tracing::error!(output = %d.spec.name, error = %e, "gpio: cannot set the output");
            }
            failing = true;
        }
    };
    set(&mut d.line, false);
    loop {
        let demanded = *d.demanded.borrow_and_update();
        match (d.spec.mode, demanded) {
            (OutputMode::Steady, on) | (OutputMode::Pulsed, on @ false) => {
                set(&mut d.line, on);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = d.demanded.changed() => if r.is_err() { return },
                }
            }
            (OutputMode::Pulsed, true) => {
                let level = !d.level.load(Ordering::Relaxed);
                set(&mut d.line, level);
                let wait = if level { d.spec.on } else { d.spec.off };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = d.demanded.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, mode: OutputMode) -> OutputSpec {
        OutputSpec {
            key: format!("gpio.output[0] {name:?}"),
            name: name.into(),
            chip: "sim".into(),
            line: 1,
            active_low: false,
            mode,
            on: Duration::from_millis(100),
            off: Duration::from_millis(100),
        }
    }

    /// Polls `f` every 5 ms until it holds (10 s at most).
    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < until, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_steady_output_follows_the_demand_and_a_pulsed_one_blinks_while_demanded() {
        let mut sim = simulator::Sim::default();
        let lines = vec![
            (
                spec("buzzer", OutputMode::Steady),
                sim.output(&spec("buzzer", OutputMode::Steady))
                    .expect("open"),
            ),
            (
                spec("beacon", OutputMode::Pulsed),
                sim.output(&spec("beacon", OutputMode::Pulsed))
                    .expect("open"),
            ),
        ];
        let (outputs, drivers) = Outputs::new(lines);
        let cancel = CancellationToken::new();
        let tasks: Vec<_> = drivers
            .into_iter()
            .map(|d| tokio::spawn(drive(d, cancel.clone())))
            .collect();
        assert_eq!(outputs.names(), ["beacon", "buzzer"]);
        outputs.set("buzzer", true);
        outputs.set("beacon", true);
        outputs.set("siren", true); // unknown: ignored
        eventually("the buzzer on", || sim.get("buzzer") == Some(true)).await;
        // The beacon blinks: on, off, on again, while the buzzer stays on.
        for level in [true, false, true, false] {
            eventually("the beacon blinks", || sim.get("beacon") == Some(level)).await;
            assert_eq!(sim.get("buzzer"), Some(true));
        }
        let snap = outputs.snapshot();
        assert!(snap.iter().all(|o| o.demanded), "{snap:?}");
        assert_eq!(snap[0].mode, OutputMode::Pulsed);
        outputs.set("beacon", false);
        outputs.set("buzzer", false);
        eventually("both off", || sim.outputs_line() == "beacon=0 buzzer=0").await;
        let snap = outputs.snapshot();
        assert!(snap.iter().all(|o| !o.demanded && !o.level), "{snap:?}");
        cancel.cancel();
        for t in tasks {
            t.await.expect("driver");
        }
    }
}
