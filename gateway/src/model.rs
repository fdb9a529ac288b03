//! The words of the pipeline: a [`Reading`] is one timestamped sample of one or more quantities
//! from one device. Every source produces readings; the store commits them; sinks consume them.
//!
//! These types are internal (not `Serialize`): the store has its own codec and the web module
//! its own DTOs, so changing a field here never silently changes an on-disk or wire format.

use std::sync::Arc;

/// One field value. Influx line protocol has the same four types, which keeps the writer trivial.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

/// How much a reading can be trusted. Bad sensor data is a reading with a flag, never an `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Quality {
    #[default]
    Good = 0,
    /// The device answered but the value is a sentinel, NaN or out of its plausible range.
    Bad = 1,
    /// Stamped by the gateway's clock while it was not synchronised: the timestamp may be
    /// wrong (by as much as the time since the last shutdown). Wins over `Bad`, see
    /// `clock::Stamp::quality`. Never set on a device's own timestamp.
    ClockUnsynced = 2,
    /// Was `ClockUnsynced`; the clock has stepped since, and the timestamp was corrected from
    /// the monotonic clock and the step (`clock::Timeline::correct`).
    Restamped = 3,
}

impl Quality {
    pub fn from_u8(v: u8) -> Quality {
        match v {
            1 => Quality::Bad,
            2 => Quality::ClockUnsynced,
            3 => Quality::Restamped,
            _ => Quality::Good,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Bad => "bad",
            Quality::ClockUnsynced => "clock_unsynced",
            Quality::Restamped => "restamped",
        }
    }
}

/// A field meter's application acknowledgement, published as `meters/{meter_id}/ack` once the
/// reading carrying it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct AckRequest {
    pub meter_id: Arc<str>,
    pub seq: u64,
}

/// The series a reading belongs to: the Influx measurement (equipment kind) and its tags.
/// `device` is always present; `extra` tags are sorted by key so equal series compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Series {
    pub measurement: Arc<str>,
    pub device: Arc<str>,
    pub extra: Vec<(String, String)>,
}

impl Series {
    pub fn new(measurement: impl Into<Arc<str>>, device: impl Into<Arc<str>>) -> Series {
        Series {
            measurement: measurement.into(),
            device: device.into(),
            extra: Vec::new(),
        }
    }
}

/// Owed to whoever handed a reading in, once it is committed: the broker's PUBACK (or PUBREC)
/// of the MQTT message it came from, and the meter's application ack when the reading asks
/// for one, which the connection then writes in the same packet burst. Only the reading that
/// is committed carries it: a clone of a reading never does (see `Clone for Reading`), so
/// nothing is confirmed twice or early.
pub struct Receipt {
    tx: tokio::sync::mpsc::UnboundedSender<Confirmation>,
    token: u32,
}

/// What a [`Receipt`] tells its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmation {
    pub token: u32,
    /// The reading's application-ack sequence number, when the owner is to send that ack too.
    pub ack_seq: Option<u64>,
}

impl Receipt {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<Confirmation>, token: u32) -> Receipt {
        Receipt { tx, token }
    }

    /// Tells the owner; a gone owner (the connection closed) is not an error: the reading is
    /// committed and the device will resend it, which the pipeline tolerates (at-least-once).
    /// With `ack_seq`, the owner sends the application ack; `Err` gives it back when the owner
    /// is gone, so the caller can route the ack another way.
    pub fn confirm(self, ack_seq: Option<u64>) -> Result<(), Option<u64>> {
        self.tx
            .send(Confirmation {
                token: self.token,
                ack_seq,
            })
            .map_err(|e| e.0.ack_seq)
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receipt({})", self.token)
    }
}

#[derive(Debug)]
pub struct Reading {
    pub series: Series,
    /// Nanoseconds since the Unix epoch, UTC.
    pub ts_ns: i64,
    pub quality: Quality,
    /// Field name (the quantity's short name, unit suffix where ambiguous) and value.
    pub fields: Vec<(String, Value)>,
    /// Set by the MQTT meter source: acknowledge to the meter after commit.
    pub ack: Option<AckRequest>,
    /// Set on the last reading of a QoS 1/2 message: confirmed after commit.
    pub receipt: Option<Receipt>,
}

impl Clone for Reading {
    /// A copy for the live view: same data, no receipt.
    fn clone(&self) -> Reading {
        Reading {
            series: self.series.clone(),
            ts_ns: self.ts_ns,
            quality: self.quality,
            fields: self.fields.clone(),
            ack: self.ack.clone(),
            receipt: None,
        }
    }
}

impl PartialEq for Reading {
    /// Equal data; whether a receipt is attached does not matter.
    fn eq(&self, o: &Reading) -> bool {
        self.series == o.series
            && self.ts_ns == o.ts_ns
            && self.quality == o.quality
            && self.fields == o.fields
            && self.ack == o.ack
    }
}
