//! Turning raw registers into readings, and showing a register block every
//! possible way for commissioning.
//!
//! Everything here is a pure function of the registers and the field spec so
//! it can be tested exhaustively without a device. A device saying "no
//! reading" (sentinel, NaN) or an implausible value is not an error: it is a
//! [`Reading`] with a [`Quality`] other than `Good`, so the value can still be
//! logged and shown while downstream logic knows not to trust it.

use super::profile::{DataType, Field, WordOrder};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    /// The device said "no reading": a sentinel, or NaN where `nan_is_missing`.
    Missing,
    /// Not a finite number though the profile does not expect that; often a
    /// wrong word order.
    Invalid,
    /// Outside the profile's plausible `min`/`max`.
    OutOfRange,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Scaled value, also for bad quality (useful in logs and commissioning).
    pub value: Value,
    pub quality: Quality,
}

impl Reading {
    fn good(value: Value) -> Self {
        Reading {
            value,
            quality: Quality::Good,
        }
    }
}

/// Only a mismatch between the data handed in and the field spec is an
/// error; it means the caller sliced a response wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("field \"{field}\": expected {expected} values, got {got}")]
    Length {
        field: String,
        expected: usize,
        got: usize,
    },
    #[error("field \"{field}\": {kind} field cannot be decoded from {given}")]
    WrongKind {
        field: String,
        kind: &'static str,
        given: &'static str,
    },
}

/// Bytes of the value most significant first, undoing `order`.
pub fn ordered_bytes(regs: &[u16], order: WordOrder) -> Vec<u8> {
    let mut words: Vec<u16> = regs
        .iter()
        .map(|r| {
            if order.swaps_bytes() {
                r.swap_bytes()
            } else {
                *r
            }
        })
        .collect();
    if order.swaps_words() {
        words.reverse();
    }
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// The value's bit pattern (up to 4 registers) as an unsigned integer.
pub fn raw_bits(regs: &[u16], order: WordOrder) -> u64 {
    ordered_bytes(regs, order)
        .iter()
        .fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

/// ASCII text, two characters per register (high byte first unless the
/// order swaps bytes), ending at the first NUL, trailing spaces trimmed.
/// Word order does not apply: strings are register sequences, not numbers.
pub fn text(regs: &[u16], order: WordOrder) -> String {
    let bytes = regs.iter().flat_map(|r| {
        if order.swaps_bytes() {
            r.to_le_bytes()
        } else {
            r.to_be_bytes()
        }
    });
    let s: String = bytes.take_while(|b| *b != 0).map(printable).collect();
    s.trim_end().to_string()
}

fn printable(b: u8) -> char {
    if b.is_ascii_graphic() || b == b' ' {
        char::from(b)
    } else {
        '.'
    }
}

/// Unscaled numeric value of a numeric field's bit pattern.
fn number(t: DataType, raw: u64) -> f64 {
    match t {
        DataType::U16 => f64::from(raw as u16),
        DataType::I16 => f64::from(raw as u16 as i16),
        DataType::U32 => f64::from(raw as u32),
        DataType::I32 => f64::from(raw as u32 as i32),
        DataType::F32 => f64::from(f32::from_bits(raw as u32)),
        DataType::F64 => f64::from_bits(raw),
        // Above 2^53 a u64/i64 loses precision as f64; fine for counters read as readings.
        DataType::U64 => raw as f64,
        DataType::I64 => raw as i64 as f64,
        DataType::Bool | DataType::Bit | DataType::String => f64::NAN,
    }
}

/// Decodes a holding/input register field from exactly `field.count` registers.
pub fn decode_registers(field: &Field, regs: &[u16]) -> Result<Reading, DecodeError> {
    if field.kind.is_bit() {
        return Err(DecodeError::WrongKind {
            field: field.name.clone(),
            kind: "bit",
            given: "registers",
        });
    }
    check_len(field, regs.len())?;
    let order = field.word_order;
    let t = field.data_type;
    match t {
        DataType::String => return Ok(Reading::good(Value::Text(text(regs, order)))),
        DataType::Bit | DataType::Bool => {
            let word = raw_bits(regs, order);
            let bit = field.bit.unwrap_or(0);
            return Ok(Reading::good(Value::Bool((word >> bit) & 1 == 1)));
        }
        _ => {}
    }
    let raw = raw_bits(regs, order);
    let unscaled = number(t, raw);
    let mask = if regs.len() >= 4 {
        u64::MAX
    } else {
        (1u64 << (16 * regs.len())) - 1
    };
    let sentinel = field.sentinels.iter().any(|&s| {
        if t.is_float() {
            s as f64 == unscaled
        } else {
            (s as u64) & mask == raw
        }
    });
    let value = unscaled * field.scale + field.offset;
    let quality = if sentinel || (field.nan_is_missing && unscaled.is_nan()) {
        Quality::Missing
    } else if !value.is_finite() {
        Quality::Invalid
    } else if field.min.is_some_and(|m| value < m) || field.max.is_some_and(|m| value > m) {
        Quality::OutOfRange
    } else {
        Quality::Good
    };
    Ok(Reading {
        value: Value::Number(value),
        quality,
    })
}

/// Decodes a coil/discrete-input field from its bit.
pub fn decode_bits(field: &Field, bits: &[bool]) -> Result<Reading, DecodeError> {
    if !field.kind.is_bit() {
        return Err(DecodeError::WrongKind {
            field: field.name.clone(),
            kind: "register",
            given: "bits",
        });
    }
    check_len(field, bits.len())?;
    Ok(Reading::good(Value::Bool(bits[0])))
}

fn check_len(field: &Field, got: usize) -> Result<(), DecodeError> {
    let expected = usize::from(field.count);
    if got == expected {
        Ok(())
    } else {
        Err(DecodeError::Length {
            field: field.name.clone(),
            expected,
            got,
        })
    }
}

/// The registers a device would hold for `value` (the inverse of
/// [`decode_registers`]); used by the demo's simulated server. `None` for
/// non-numeric types. Integers are rounded and saturate at the type's range.
pub fn encode_number(field: &Field, value: f64) -> Option<Vec<u16>> {
    let x = (value - field.offset) / field.scale;
    let raw: u64 = match field.data_type {
        DataType::U16 => u64::from(x.round() as u16),
        DataType::I16 => u64::from(x.round() as i16 as u16),
        DataType::U32 => u64::from(x.round() as u32),
        DataType::I32 => u64::from(x.round() as i32 as u32),
        DataType::U64 => x.round() as u64,
        DataType::I64 => x.round() as i64 as u64,
        DataType::F32 => u64::from((x as f32).to_bits()),
        DataType::F64 => x.to_bits(),
        DataType::Bool | DataType::Bit | DataType::String => return None,
    };
    let n = usize::from(field.count);
    let be: Vec<u16> = (0..n).map(|i| (raw >> (16 * (n - 1 - i))) as u16).collect();
    // Both swaps are involutions, so applying them to the big-endian words re-encodes.
    let mut regs: Vec<u16> = be
        .iter()
        .map(|w| {
            if field.word_order.swaps_bytes() {
                w.swap_bytes()
            } else {
                *w
            }
        })
        .collect();
    if field.word_order.swaps_words() {
        regs.reverse();
    }
    Some(regs)
}

/// One multi-register reading in one word order, as integer and float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Views {
    pub order: WordOrder,
    pub unsigned: u64,
    pub signed: i64,
    pub float: f64,
}

/// Everything register `offset` of a block could mean: the commissioning
/// CLI shows this so an installer can spot the plausible interpretation
/// (and thereby the type and word order) without knowing them in advance.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpRow {
    pub offset: usize,
    pub address: u16,
    pub u16: u16,
    pub i16: i16,
    /// This register's two bytes as ASCII, unprintables as '.'.
    pub ascii: String,
    /// u32/i32/f32 from this and the next register, in each order of `WordOrder::ALL`.
    pub x32: Option<[Views; 4]>,
    /// u64/i64/f64 from four registers starting here.
    pub x64: Option<[Views; 4]>,
}

fn views(regs: &[u16], wide: bool) -> [Views; 4] {
    WordOrder::ALL.map(|order| {
        let raw = raw_bits(regs, order);
        if wide {
            Views {
                order,
                unsigned: raw,
                signed: raw as i64,
                float: f64::from_bits(raw),
            }
        } else {
            Views {
                order,
                unsigned: raw,
                signed: i64::from(raw as u32 as i32),
                float: f64::from(f32::from_bits(raw as u32)),
            }
        }
    })
}

/// Interprets a block read from `start` every way at every offset.
pub fn dump(start: u16, regs: &[u16]) -> Vec<DumpRow> {
    (0..regs.len())
        .map(|i| DumpRow {
            offset: i,
            address: start.wrapping_add(i as u16),
            u16: regs[i],
            i16: regs[i] as i16,
            ascii: regs[i]
                .to_be_bytes()
                .iter()
                .map(|b| printable(*b))
                .collect(),
            x32: regs.get(i..i + 2).map(|r| views(r, false)),
            x64: regs.get(i..i + 4).map(|r| views(r, true)),
        })
        .collect()
}

/// Shortest float text that round-trips, exponent form when very large or small.
fn fmt_float(v: f64, single: bool) -> String {
    let a = v.abs();
    let plain = v == 0.0 || !v.is_finite() || (1e-4..1e9).contains(&a);
    match (single, plain) {
        (true, true) => format!("{}", v as f32),
        (true, false) => format!("{:e}", v as f32),
        (false, true) => format!("{v}"),
        (false, false) => format!("{v:e}"),
    }
}

/// Text table of [`dump`] rows: per register a line with u16/i16/hex/bits/
/// ASCII, then one line per word order with the 32- and 64-bit views
/// starting there, and finally the whole block as one string.
pub fn format_dump(rows: &[DumpRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let bits = format!("{:016b}", r.u16);
        let _ = writeln!(
            out,
            "0x{:04X} +{:<3} u16 {:<5} i16 {:<6} hex 0x{:04X} bits {} {} {} {} ascii \"{}\"",
            r.address,
            r.offset,
            r.u16,
            r.i16,
            r.u16,
            &bits[..4],
            &bits[4..8],
            &bits[8..12],
            &bits[12..],
            r.ascii
        );
        for k in 0..4 {
            let Some(v32) = r.x32.map(|v| v[k]) else {
                break;
            };
            let _ = write!(
                out,
                "    {:?}  u32 {:<10} i32 {:<11} f32 {:<14}",
                v32.order,
                v32.unsigned,
                v32.signed,
                fmt_float(v32.float, true)
            );
            if let Some(v64) = r.x64.map(|v| v[k]) {
                let _ = write!(
                    out,
                    " u64 {:<20} i64 {:<20} f64 {}",
                    v64.unsigned,
                    v64.signed,
                    fmt_float(v64.float, false)
                );
            }
            out = out.trim_end().to_string();
            out.push('\n');
        }
    }
    let all: String = rows.iter().map(|r| r.ascii.as_str()).collect();
    let _ = writeln!(out, "ascii \"{all}\"");
    out
}

#[cfg(test)]
mod tests {
    use super::super::profile::{parse, Field};
    use super::*;

    /// A field from `;`-separated TOML keys; kind defaults to holding, address to 0.
    fn field(spec: &str) -> Field {
        let mut body = String::from("[device]\nmodel = \"m\"\nmanufacturer = \"x\"\n[[field]]\nname = \"f\"\nquantity = \"t.f\"\naddress = 0\n");
        if !spec.contains("kind") {
            body.push_str("kind = \"holding\"\n");
        }
        body.push_str(&spec.replace(';', "\n"));
        match parse(&body, "t.toml") {
            Ok(mut p) => p.fields.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

    /// Decodes `regs` with the field `spec` and compares (numbers to 1e-9 relative).
    fn check(spec: &str, regs: &[u16], expected: (Value, Quality)) {
        let f = field(spec);
        let got = decode_registers(&f, regs).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let same = match (&got.value, &expected.0) {
            (Value::Number(a), Value::Number(b)) => {
                a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * b.abs().max(1.0)
            }
            (a, b) => a == b,
        };
        assert!(
            same && got.quality == expected.1,
            "{spec} {regs:04X?}: got {got:?}, expected {expected:?}"
        );
        if got.quality == Quality::Good && f.data_type.is_number() {
            if let Value::Number(v) = got.value {
                assert_eq!(
                    encode_number(&f, v).as_deref(),
                    Some(regs),
                    "{spec}: encode round trip"
                );
            }
        }
    }

    fn num(v: f64) -> (Value, Quality) {
        (Value::Number(v), Quality::Good)
    }

    #[test]
    fn every_type_and_order() {
        let f32v = f64::from(123.456f32);
        check("type = 'f32'", &[0x42F6, 0xE979], num(f32v));
        check(
            "type = 'f32'; word_order = 'CDAB'",
            &[0xE979, 0x42F6],
            num(f32v),
        );
        check(
            "type = 'f32'; word_order = 'BADC'",
            &[0xF642, 0x79E9],
            num(f32v),
        );
        check(
            "type = 'f32'; word_order = 'DCBA'",
            &[0x79E9, 0xF642],
            num(f32v),
        );
        check(
            "type = 'f64'",
            &[0x405E, 0xDD2F, 0x1A9F, 0xBE77],
            num(123.456),
        );
        check(
            "type = 'f64'; word_order = 'CDAB'",
            &[0xBE77, 0x1A9F, 0xDD2F, 0x405E],
            num(123.456),
        );
        check(
            "type = 'f64'; word_order = 'BADC'",
            &[0x5E40, 0x2FDD, 0x9F1A, 0x77BE],
            num(123.456),
        );
        check(
            "type = 'f64'; word_order = 'DCBA'",
            &[0x77BE, 0x9F1A, 0x2FDD, 0x5E40],
            num(123.456),
        );
        check("type = 'u16'", &[0xFFFE], num(65534.0));
        check(
            "type = 'u16'; word_order = 'BADC'",
            &[0x3412],
            num(f64::from(0x1234)),
        );
        check("type = 'i16'", &[0xF8F8], num(-1800.0));
        check("type = 'u32'", &[0x1234, 0x5678], num(305419896.0));
        check(
            "type = 'u32'; word_order = 'CDAB'",
            &[0x5678, 0x1234],
            num(305419896.0),
        );
        check("type = 'i32'", &[0xFFFF, 0xFFFE], num(-2.0));
        check(
            "type = 'i32'; word_order = 'DCBA'",
            &[0xFEFF, 0xFFFF],
            num(-2.0),
        );
        check(
            "type = 'u64'",
            &[0x0000, 0x0001, 0x0000, 0x0002],
            num(4294967298.0),
        );
        check(
            "type = 'u64'; word_order = 'CDAB'",
            &[0x0002, 0x0000, 0x0001, 0x0000],
            num(4294967298.0),
        );
        check("type = 'i64'", &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], num(-1.0));
        check(
            "type = 'i64'; word_order = 'BADC'",
            &[0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
            num(-2.0),
        );
    }

    #[test]
    fn scaling_bits_and_text() {
        check("type = 'i16'; scale = 0.1", &[0x00FB], num(25.1));
        check(
            "type = 'u16'; scale = 0.003125; offset = -12.5",
            &[12000],
            num(25.0),
        );
        check(
            "type = 'f32'; scale = 0.0001",
            &[0x4A8D, 0x2390],
            num(462.484),
        );
        check(
            "type = 'bit'; bit = 0",
            &[0x0001],
            (Value::Bool(true), Quality::Good),
        );
        check(
            "type = 'bit'; bit = 15",
            &[0x7FFF],
            (Value::Bool(false), Quality::Good),
        );
        check(
            "type = 'bit'; bit = 8",
            &[0x0100],
            (Value::Bool(true), Quality::Good),
        );
        check(
            "type = 'bit'; bit = 8; word_order = 'BADC'",
            &[0x0001],
            (Value::Bool(true), Quality::Good),
        );
        check(
            "type = 'string'; length = 3",
            &[0x5344, 0x4D31, 0x3230],
            (Value::Text("SDM120".into()), Quality::Good),
        );
        check(
            "type = 'string'; length = 3; word_order = 'BADC'",
            &[0x4453, 0x314D, 0x0030],
            (Value::Text("SDM10".into()), Quality::Good),
        );
        check(
            "type = 'string'; length = 2",
            &[0x4142, 0x2000],
            (Value::Text("AB".into()), Quality::Good),
        );
        let coil = field("kind = 'coil'; type = 'bool'");
        assert_eq!(
            decode_bits(&coil, &[true]),
            Ok(Reading::good(Value::Bool(true)))
        );
        assert!(decode_registers(&coil, &[1]).is_err());
        assert_eq!(
            decode_registers(&field("type = 'f32'"), &[1]).map_err(|e| e.to_string()),
            Err("field \"f\": expected 2 values, got 1".into())
        );
    }

    #[test]
    fn bad_quality_is_a_value() {
        let sentinels = "type = 'i16'; scale = 0.1; sentinels = [0x7FFF, 0x8000]";
        check(
            sentinels,
            &[0x7FFF],
            (Value::Number(3276.7), Quality::Missing),
        );
        check(
            sentinels,
            &[0x8000],
            (Value::Number(-3276.8), Quality::Missing),
        );
        check(
            "type = 'i16'; sentinels = [-1]",
            &[0xFFFF],
            (Value::Number(-1.0), Quality::Missing),
        );
        check(
            "type = 'u32'; sentinels = [-1]",
            &[0xFFFF, 0xFFFF],
            (Value::Number(4294967295.0), Quality::Missing),
        );
        check(
            "type = 'f32'; sentinels = [-9999]",
            &[0xC61C, 0x3C00],
            (Value::Number(-9999.0), Quality::Missing),
        );
        check(
            "type = 'f32'; nan_is_missing = true",
            &[0x7FC0, 0x0000],
            (Value::Number(f64::NAN), Quality::Missing),
        );
        check(
            "type = 'f32'",
            &[0x7FC0, 0x0000],
            (Value::Number(f64::NAN), Quality::Invalid),
        );
        check(
            "type = 'f32'",
            &[0x7F80, 0x0000],
            (Value::Number(f64::INFINITY), Quality::Invalid),
        );
        let range = "type = 'i16'; scale = 0.1; min = -50; max = 150";
        check(range, &[6500], (Value::Number(650.0), Quality::OutOfRange));
        check(
            range,
            &[(-1800i16) as u16],
            (Value::Number(-180.0), Quality::OutOfRange),
        );
        check(range, &[1500], num(150.0));
    }

    #[test]
    fn dump_shows_every_view() {
        let rows = dump(0x0010, &[0x42F6, 0xE979, 0x4142]);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (
                rows[0].address,
                rows[0].u16,
                rows[0].i16,
                rows[2].ascii.as_str()
            ),
            (0x10, 0x42F6, 0x42F6, "AB")
        );
        let cdab = rows[1].x32.map(|v| v[1]);
        assert_eq!(
            cdab.map(|v| (v.order, v.float as f32)),
            Some((WordOrder::CDAB, f32::from_bits(0x4142_E979)))
        );
        assert_eq!(rows[0].x32.map(|v| v[0].float as f32), Some(123.456));
        assert!(rows[2].x32.is_none() && rows[0].x64.is_none());
        let text = format_dump(&rows);
        assert!(
            text.contains(
                "0x0010 +0   u16 17142 i16 17142  hex 0x42F6 bits 0100 0010 1111 0110 ascii \"B.\""
            ),
            "{text}"
        );
        assert!(
            text.contains("    ABCD  u32 1123477881 i32 1123477881  f32 123.456"),
            "{text}"
        );
        assert!(text.ends_with("ascii \"B..yAB\"\n"), "{text}");
        let wide = dump(0, &[0x405E, 0xDD2F, 0x1A9F, 0xBE77]);
        assert_eq!(wide[0].x64.map(|v| v[0].float), Some(123.456));
        assert!(format_dump(&wide).contains("f64 123.456"));
    }
}
