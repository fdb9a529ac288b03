//! The simulated GPIO chip: inputs whose edges are made by [`Sim::pulse`] and [`Sim::set`],
//! outputs whose levels [`Sim::get`] reads. For `gkgw demo` (in-process) and, through
//! [`serve`] on `[gpio] sim_socket`, black-box tests. One text command per line, one reply:
//!
//! | command | reply |
//! |---|---|
//! | `pulse LINE N [bounce K]` | `ok N` once the N pulses were made |
//! | `set LINE 0\|1` | `ok` |
//! | `get OUTPUT` | `0` or `1` (its logical level: 1 = on) |
//! | `outputs` | `name=level ...`, sorted by name |
//!
//! anything else `error: …`. LINE is an input's name. A pulse is a closing, held, then an
//! opening, held (each held for twice the input's debounce + 5 ms); with `bounce K` the contact
//! bounces K times after each closing and opening (K short reversals, 2K extra edges, all
//! within the debounce period), which the input source must filter. Edges are stamped with
//! the planned instants and a transition's edges are sent together, so a busy machine cannot
//! stretch a bounce into a pulse.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Backend, Edge, EdgeEvent, Error, InputLine, InputSpec, OutputLine, OutputSpec};

struct SimInput {
    level: bool,
    seqno: u32,
    debounce: Duration,
    edges: mpsc::Sender<EdgeEvent>,
    /// One pulse train at a time per line.
    busy: Arc<tokio::sync::Mutex<()>>,
}

struct Chip {
    start: Instant,
    inputs: BTreeMap<String, SimInput>,
    outputs: BTreeMap<String, bool>,
}

/// The simulated chip: cheap to clone, every clone is the same chip.
#[derive(Clone)]
pub struct Sim {
    chip: Arc<Mutex<Chip>>,
}

impl Default for Sim {
    fn default() -> Sim {
        Sim {
            chip: Arc::new(Mutex::new(Chip {
                start: Instant::now(),
                inputs: BTreeMap::new(),
                outputs: BTreeMap::new(),
            })),
        }
    }
}

struct SimLine {
    chip: Arc<Mutex<Chip>>,
    name: String,
}

impl InputLine for SimLine {
    fn level(&self) -> Result<bool, Error> {
        let chip = self.chip.lock().map_err(|_| poisoned(&self.name))?;
        chip.inputs
            .get(&self.name)
            .map(|i| i.level)
            .ok_or_else(|| poisoned(&self.name))
    }
}

impl OutputLine for SimLine {
    fn set(&mut self, on: bool) -> Result<(), Error> {
        let mut chip = self.chip.lock().map_err(|_| poisoned(&self.name))?;
        chip.outputs.insert(self.name.clone(), on);
        Ok(())
    }
}

fn poisoned(name: &str) -> Error {
    Error::Line {
        name: name.to_owned(),
        reason: "simulated chip unavailable".into(),
    }
}

impl Backend for Sim {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn debounces(&self) -> bool {
        false
    }

    fn input(
        &mut self,
        spec: &InputSpec,
        edges: mpsc::Sender<EdgeEvent>,
    ) -> Result<Box<dyn InputLine>, Error> {
        let mut chip = self.chip.lock().map_err(|_| poisoned(&spec.name))?;
        chip.inputs.insert(
            spec.name.clone(),
            SimInput {
                level: false,
                seqno: 0,
                debounce: spec.debounce,
                edges,
                busy: Arc::default(),
            },
        );
        Ok(Box::new(SimLine {
            chip: self.chip.clone(),
            name: spec.name.clone(),
        }))
    }

    fn output(&mut self, spec: &OutputSpec) -> Result<Box<dyn OutputLine>, Error> {
        let mut chip = self.chip.lock().map_err(|_| poisoned(&spec.name))?;
        chip.outputs.insert(spec.name.clone(), false);
        Ok(Box::new(SimLine {
            chip: self.chip.clone(),
            name: spec.name.clone(),
        }))
    }
}

/// Why a sim command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("no input named {0:?}")]
    NoInput(String),
    #[error("no output named {0:?}")]
    NoOutput(String),
    #[error("simulated chip unavailable")]
    Unavailable,
}

impl Sim {
    /// Sets the line to `level` at `at` (an edge when it changes), and `bounce` reversals after.
    fn transition(
        &self,
        name: &str,
        level: bool,
        at: Instant,
        bounce: u32,
    ) -> Result<(), SimError> {
        let mut chip = self.chip.lock().map_err(|_| SimError::Unavailable)?;
        let start = chip.start;
        let input = chip
            .inputs
            .get_mut(name)
            .ok_or_else(|| SimError::NoInput(name.to_owned()))?;
        if input.level == level {
            return Ok(());
        }
        let step = input.debounce / (2 * bounce + 2);
        let send = |input: &mut SimInput, level: bool, at: Instant| {
            input.level = level;
            input.seqno = input.seqno.wrapping_add(1);
            let e = EdgeEvent {
                edge: if level { Edge::Rising } else { Edge::Falling },
                kernel_ns: at.saturating_duration_since(start).as_nanos() as u64,
                seqno: input.seqno,
                at,
            };
            // Full: dropped, like a kernel buffer overflow; the seqno gap counts it as missed.
            let _ = input.edges.try_send(e);
        };
        send(input, level, at);
        for k in 0..bounce {
            let t = at + step * (2 * k + 1);
            send(input, !level, t);
            send(input, level, t + step);
        }
        Ok(())
    }

    /// Sets an input's level now (one clean edge when it changes).
    pub fn set(&self, name: &str, level: bool) -> Result<(), SimError> {
        self.transition(name, level, Instant::now(), 0)
    }

    /// Makes `n` pulses on an input, each closing and opening followed by `bounce` bounces;
    /// returns once they are made. Pulse trains on one line run one after the other.
    pub async fn pulse(&self, name: &str, n: u32, bounce: u32) -> Result<(), SimError> {
        let (busy, debounce) = {
            let chip = self.chip.lock().map_err(|_| SimError::Unavailable)?;
            let i = chip
                .inputs
                .get(name)
                .ok_or_else(|| SimError::NoInput(name.to_owned()))?;
            (i.busy.clone(), i.debounce)
        };
        let _one_at_a_time = busy.lock().await;
        let hold = debounce * 2 + Duration::from_millis(5);
        let mut at = Instant::now();
        // Start from the open state.
        self.transition(name, false, at, 0)?;
        for _ in 0..n {
            self.transition(name, true, at, bounce)?;
            at += hold;
            tokio::time::sleep_until(at.into()).await;
            self.transition(name, false, at, bounce)?;
            at += hold;
            tokio::time::sleep_until(at.into()).await;
        }
        Ok(())
    }

    /// An output's logical level (`None`: no such output).
    pub fn get(&self, name: &str) -> Option<bool> {
        self.chip.lock().ok()?.outputs.get(name).copied()
    }

    /// Every output as `name=level`, sorted by name, space-separated.
    pub fn outputs_line(&self) -> String {
        let Ok(chip) = self.chip.lock() else {
            return String::new();
        };
        chip.outputs
            .iter()
            .map(|(n, l)| format!("{n}={}", u8::from(*l)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs one command line of the socket protocol; the reply line (without newline).
    pub async fn command(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["pulse", name, n] => self.pulse_reply(name, n, "0").await,
            ["pulse", name, n, "bounce", k] => self.pulse_reply(name, n, k).await,
            ["set", name, v @ ("0" | "1")] => self.set(name, *v == "1").map(|()| "ok".to_owned()),
            ["get", name] => self
                .get(name)
                .map(|l| u8::from(l).to_string())
                .ok_or_else(|| SimError::NoOutput((*name).to_owned())),
            ["outputs"] => Ok(self.outputs_line()),
            _ => {
                return "error: expected pulse LINE N [bounce K] | set LINE 0|1 | get OUTPUT | outputs"
                    .into()
            }
        };
        reply.unwrap_or_else(|e| format!("error: {e}"))
    }

    async fn pulse_reply(&self, name: &str, n: &str, k: &str) -> Result<String, SimError> {
        match (n.parse::<u32>(), k.parse::<u32>()) {
            (Ok(n), Ok(k)) if n <= 100_000 && k <= 16 => {
                self.pulse(name, n, k).await?;
                Ok(format!("ok {n}"))
            }
            _ => Ok("error: N is 0..=100000 and K 0..=16".into()),
        }
    }
}

/// Serves the command protocol on a Unix socket at `path` (replacing a stale socket file)
/// until `cancel`; one task per connection, which ends with its client.
pub async fn serve(sim: Sim, path: PathBuf, cancel: CancellationToken) {
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "gpio sim: cannot listen on the control socket");
            return;
        }
    };
    tracing::info!(path = %path.display(), "gpio sim: control socket listening");
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "gpio sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (sim, cancel) = (sim.clone(), cancel.clone());
        conns.spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            loop {
                let line = tokio::select! {
                    _ = cancel.cancelled() => return,
                    l = lines.next_line() => match l {
                        Ok(Some(l)) => l,
                        _ => return,
                    },
                };
                let mut reply = sim.command(&line).await;
                reply.push('\n');
                if w.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
    conns.close();
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str) -> InputSpec {
        InputSpec {
            key: format!("gpio.input[0] {name:?}"),
            name: name.into(),
            chip: "sim".into(),
            line: 1,
            active_low: false,
            bias: crate::config::Bias::None,
            debounce: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn pulses_with_bounce_make_alternating_edges_with_consecutive_seqnos() {
        let mut sim = Sim::default();
        let (tx, mut rx) = mpsc::channel(1024);
        let line = sim.input(&input("m"), tx).expect("open");
        assert_eq!(sim.command("pulse m 3 bounce 2").await, "ok 3");
        let mut edges = Vec::new();
        while let Ok(e) = rx.try_recv() {
            edges.push(e);
        }
        assert_eq!(edges.len(), 3 * 2 * (1 + 2 * 2));
        for (i, e) in edges.iter().enumerate() {
            assert_eq!(e.seqno as usize, i + 1);
            let rising = i % 2 == 0;
            assert_eq!(e.edge == Edge::Rising, rising, "edges alternate");
        }
        assert!(!line.level().expect("level"));
        assert_eq!(sim.command("set m 1").await, "ok");
        assert!(line.level().expect("level"));
        assert!(sim.command("set x 1").await.starts_with("error: no input"));
        assert!(sim
            .command("get buzzer")
            .await
            .starts_with("error: no output"));
        assert!(sim
            .command("frobnicate")
            .await
            .starts_with("error: expected"));
    }
}
