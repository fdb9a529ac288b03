//! The Linux GPIO character device (uAPI v2) through `gpiocdev`: any board with a
//! `/dev/gpiochipN`, the Pi 5's RP1 included. Inputs ask the kernel for edge detection on both
//! edges, its debounce (the line config's debounce period) and the bias; each edge carries
//! the kernel's timestamp and the line's sequence number. One OS thread per input waits for
//! edges (`wait_edge_event` with a 1 s timeout, so it notices a closed channel and ends) and
//! hands them to the input source with `try_send` (full: dropped, seen as a seqno gap).
//!
//! Why a thread and not gpiocdev's `async_tokio` feature: that pulls the whole `futures`
//! crate family in, for a handful of lines that produce a few edges per second.
//!
//! Not exercised here (no gpio chip and no gpio-sim module in the build machine); the sim
//! backend stands in for it in the tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpiocdev::line::{Bias as CBias, EdgeDetection, EdgeKind, Value};
use gpiocdev::Request;
use tokio::sync::mpsc;

use super::{Backend, Edge, EdgeEvent, Error, InputLine, InputSpec, OutputLine, OutputSpec};
use crate::config::Bias;

pub struct Cdev;

struct CdevLine {
    req: Arc<Request>,
    name: String,
}

fn open_err(key: &str, chip: &std::path::Path, line: u32, e: gpiocdev::Error) -> Error {
    let reason = match &e {
        gpiocdev::Error::GpioChip(_, kind) => kind.to_string(),
        gpiocdev::Error::Uapi(_, u) => u.to_string(),
        e => e.to_string(),
    };
    Error::Open {
        key: key.to_owned(),
        chip: chip.display().to_string(),
        line,
        reason,
    }
}

impl InputLine for CdevLine {
    fn level(&self) -> Result<bool, Error> {
        self.req
            .lone_value()
            .map(|v| v == Value::Active)
            .map_err(|e| Error::Line {
                name: self.name.clone(),
                reason: e.to_string(),
            })
    }
}

impl OutputLine for CdevLine {
    fn set(&mut self, on: bool) -> Result<(), Error> {
        let v = if on { Value::Active } else { Value::Inactive };
        self.req.set_lone_value(v).map_err(|e| Error::Line {
            name: self.name.clone(),
            reason: e.to_string(),
        })
    }
}

impl Backend for Cdev {
    fn name(&self) -> &'static str {
        "cdev"
    }

    fn debounces(&self) -> bool {
        true
    }

    fn input(
        &mut self,
        spec: &InputSpec,
        edges: mpsc::Sender<EdgeEvent>,
    ) -> Result<Box<dyn InputLine>, Error> {
        let mut b = Request::builder();
        b.on_chip(&spec.chip)
            .with_consumer(format!("gkgw {}", spec.name))
            .with_line(spec.line)
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges)
            .with_bias(match spec.bias {
                Bias::None => None,
                Bias::PullUp => Some(CBias::PullUp),
                Bias::PullDown => Some(CBias::PullDown),
            });
        if spec.active_low {
            b.as_active_low();
        }
        if !spec.debounce.is_zero() {
            b.with_debounce_period(spec.debounce);
        }
        let req = Arc::new(
            b.request()
                .map_err(|e| open_err(&spec.key, &spec.chip, spec.line, e))?,
        );
        let (thread_req, name) = (req.clone(), spec.name.clone());
        std::thread::Builder::new()
            .name(format!("gpio-{}", spec.name))
            .spawn(move || read_edges(&thread_req, &name, &edges))
            .map_err(|e| Error::Open {
                key: spec.key.clone(),
                chip: spec.chip.display().to_string(),
                line: spec.line,
                reason: format!("cannot start its thread: {e}"),
            })?;
        Ok(Box::new(CdevLine {
            req,
            name: spec.name.clone(),
        }))
    }

    fn output(&mut self, spec: &OutputSpec) -> Result<Box<dyn OutputLine>, Error> {
        let mut b = Request::builder();
        b.on_chip(&spec.chip)
            .with_consumer(format!("gkgw {}", spec.name))
            .with_line(spec.line)
            .as_output(Value::Inactive);
        if spec.active_low {
            b.as_active_low();
        }
        let req = b
            .request()
            .map_err(|e| open_err(&spec.key, &spec.chip, spec.line, e))?;
        Ok(Box::new(CdevLine {
            req: Arc::new(req),
            name: spec.name.clone(),
        }))
    }
}

/// The input's thread: edges → the source, until the source is gone.
fn read_edges(req: &Request, name: &str, edges: &mpsc::Sender<EdgeEvent>) {
    while !edges.is_closed() {
        match req.wait_edge_event(Duration::from_secs(1)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::error!(input = name, error = %e, "gpio: waiting for edges failed; the input stops");
                return;
            }
        }
        match req.read_edge_event() {
            Ok(e) => {
                let _ = edges.try_send(EdgeEvent {
                    edge: match e.kind {
                        EdgeKind::Rising => Edge::Rising,
                        EdgeKind::Falling => Edge::Falling,
                    },
                    kernel_ns: e.timestamp_ns,
                    seqno: e.line_seqno,
                    at: Instant::now(),
                });
            }
            Err(e) => {
                tracing::error!(input = name, error = %e, "gpio: reading an edge failed; the input stops");
                return;
            }
        }
    }
}
