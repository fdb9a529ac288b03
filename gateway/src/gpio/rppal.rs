//! A Raspberry Pi through `rppal` 0.22 (BCM pin numbers; `chip` is ignored). Where it adds
//! something over cdev: it identifies the Pi model and needs no chip path. Its async
//! interrupts run one OS thread per pin with the debounce built in; the callback bridges each
//! event into the input source's channel (`try_send`: full → dropped, seen as a seqno gap).
//! Outputs keep their level when the gateway exits (`set_reset_on_drop(false)`), so a
//! restart does not blink the relays. Off a Pi `Gpio::new()` returns `UnknownModel`, which
//! [`super::open`] reports naming the first line.
//!
//! Not exercised here (no Pi); the sim backend stands in for it in the tests.

use std::time::Instant;

use rppal::gpio::{Gpio, InputPin, Level, OutputPin, Trigger};
use tokio::sync::mpsc;

use super::{Backend, Edge, EdgeEvent, Error, InputLine, InputSpec, OutputLine, OutputSpec};
use crate::config::Bias;

pub struct Rppal {
    gpio: Gpio,
}

impl Rppal {
    /// Fails off a Pi (`UnknownModel`) or without access to `/dev/gpiomem`.
    pub fn new() -> Result<Rppal, Error> {
        Gpio::new()
            .map(|gpio| Rppal { gpio })
            .map_err(|e| Error::Line {
                name: "rppal".into(),
                reason: e.to_string(),
            })
    }
}

struct In {
    pin: InputPin,
    active_low: bool,
}

impl InputLine for In {
    fn level(&self) -> Result<bool, Error> {
        Ok((self.pin.read() == Level::High) != self.active_low)
    }
}

struct Out {
    pin: OutputPin,
    active_low: bool,
}

impl OutputLine for Out {
    fn set(&mut self, on: bool) -> Result<(), Error> {
        if on != self.active_low {
            self.pin.set_high();
        } else {
            self.pin.set_low();
        }
        Ok(())
    }
}

fn open_err(key: &str, line: u32, e: impl std::fmt::Display) -> Error {
    Error::Open {
        key: key.to_owned(),
        chip: "the Raspberry Pi GPIO (rppal), BCM".into(),
        line,
        reason: e.to_string(),
    }
}

impl Backend for Rppal {
    fn name(&self) -> &'static str {
        "rppal"
    }

    fn debounces(&self) -> bool {
        true
    }

    fn input(
        &mut self,
        spec: &InputSpec,
        edges: mpsc::Sender<EdgeEvent>,
    ) -> Result<Box<dyn InputLine>, Error> {
        let bcm = u8::try_from(spec.line).map_err(|e| open_err(&spec.key, spec.line, e))?;
        let pin = self
            .gpio
            .get(bcm)
            .map_err(|e| open_err(&spec.key, spec.line, e))?;
        let mut pin = match spec.bias {
            Bias::None => pin.into_input(),
            Bias::PullUp => pin.into_input_pullup(),
            Bias::PullDown => pin.into_input_pulldown(),
        };
        let active_low = spec.active_low;
        let debounce = (!spec.debounce.is_zero()).then_some(spec.debounce);
        pin.set_async_interrupt(Trigger::Both, debounce, move |e| {
            let rising = (e.trigger == Trigger::RisingEdge) != active_low;
            let _ = edges.try_send(EdgeEvent {
                edge: if rising { Edge::Rising } else { Edge::Falling },
                kernel_ns: e.timestamp.as_nanos() as u64,
                seqno: e.seqno,
                at: Instant::now(),
            });
        })
        .map_err(|e| open_err(&spec.key, spec.line, e))?;
        Ok(Box::new(In { pin, active_low }))
    }

    fn output(&mut self, spec: &OutputSpec) -> Result<Box<dyn OutputLine>, Error> {
        let bcm = u8::try_from(spec.line).map_err(|e| open_err(&spec.key, spec.line, e))?;
        let mut pin = self
            .gpio
            .get(bcm)
            .map_err(|e| open_err(&spec.key, spec.line, e))?
            .into_output();
        pin.set_reset_on_drop(false);
        let mut out = Out {
            pin,
            active_low: spec.active_low,
        };
        out.set(false)?;
        Ok(Box::new(out))
    }
}
