//! Turning raw registers into readings, and showing a register block every
//! possible way for commissioning.
//!
//! Everything here is a pure function of the registers and the field spec so
//! it can be tested exhaustively without a device. A device saying "no
//! reading" (sentinel, NaN) or an implausible value is not an error: it is a
//! [`Decoded`] with a [`Sanity`] other than `Good`, so the value can still be
//! logged and shown while downstream logic knows not to trust it.
//!
//! Numbers come out as the decimal the device meant: a float32 becomes the shortest decimal
//! that reads back as the same float32 (11.62, not 11.619999885559082), and a scaled value is
//! the exact decimal result of `raw × scale + offset` (116 × 0.1 = 11.6, not
//! 11.600000000000001). Both are what a technician compares with the device's display, and
//! what the store, InfluxDB, the status page and the commissioning tools all show.

use super::profile::{DataType, Field, RegisterKind, WordOrder};

#[derive(Debug, Clone, PartialEq)]
pub enum DecodedValue {
    Number(f64),
    Bool(bool),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanity {
    Good,
    /// The device said "no reading": a sentinel, or NaN where `nan_is_missing`.
    Missing,
    /// Not a finite number though the profile does not expect that; often a
    /// wrong word order.
    Invalid,
    /// Outside the profile's plausible `min`/`max`.
    OutOfRange,
}

impl Sanity {
    /// Whether the value points at a fault (a wrong word order, a broken sensor) that should
    /// mark the device degraded. `Missing` does not: it is the device answering "no reading
    /// here" as its profile says it may (a sentinel, or NaN where `nan_is_missing`), e.g. the
    /// L2/L3 fields of a single-phase meter on a three-phase profile.
    pub fn is_fault(self) -> bool {
        matches!(self, Sanity::Invalid | Sanity::OutOfRange)
    }

    /// The name used in `{field}_quality` values, on the status page and in `gkgw modbus poll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sanity::Good => "good",
            Sanity::Missing => "missing",
            Sanity::Invalid => "invalid",
            Sanity::OutOfRange => "out_of_range",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Scaled value, also for bad quality (useful in logs and commissioning).
    pub value: DecodedValue,
    pub sanity: Sanity,
}

impl Decoded {
    fn good(value: DecodedValue) -> Self {
        Decoded {
            value,
            sanity: Sanity::Good,
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
    #[error("field \"{field}\": a {kind:?} field cannot be decoded from {given}")]
    WrongKind {
        field: String,
        kind: RegisterKind,
        given: &'static str,
    },
}

fn swap(word: u16, order: WordOrder) -> u16 {
    if order.swaps_bytes() {
        word.swap_bytes()
    } else {
        word
    }
}

/// Bytes of the value most significant first, undoing `order`.
pub fn ordered_bytes(regs: &[u16], order: WordOrder) -> Vec<u8> {
    let mut words: Vec<u16> = regs.iter().map(|&r| swap(r, order)).collect();
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
    let bytes = regs.iter().flat_map(|&r| swap(r, order).to_be_bytes());
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
        DataType::F32 => f32_decimal(f32::from_bits(raw as u32)),
        DataType::F64 => f64::from_bits(raw),
        // Above 2^53 a u64/i64 loses precision as f64; fine for counters read as readings.
        DataType::U64 => raw as f64,
        DataType::I64 => raw as i64 as f64,
        DataType::Bool | DataType::Bit | DataType::String => f64::NAN,
    }
}

/// A float32 widened to the f64 nearest to its shortest round-tripping decimal (Rust's `f32`
/// `Display`): 11.62f32 becomes 11.62, where `f64::from` would give 11.619999885559082, the
/// exact value of the binary float32, seven digits of which are noise the device never meant.
pub fn f32_decimal(x: f32) -> f64 {
    if !x.is_finite() {
        return f64::from(x);
    }
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Digits after the decimal point in `x`'s shortest round-tripping text (Rust's float
/// `Display` never uses an exponent).
fn decimals(x: f64) -> usize {
    if !x.is_finite() {
        return 0;
    }
    x.to_string().split_once('.').map_or(0, |(_, f)| f.len())
}

/// `unscaled × scale + offset` rounded to the decimals its inputs imply: a product has at most
/// as many decimals as its factors together, a sum as many as its longer term. So 116 × 0.1 is
/// 11.6 (one decimal), not 11.600000000000001, and 12000 × 0.003125 − 12.5 is 25.
///
/// `unscaled` is an exact decimal already (an integer, or a float made decimal by
/// [`f32_decimal`]); the binary product differs from the decimal one by a few units in the
/// 16th significant digit, which the rounding removes. Rounding goes through `format!`, whose
/// fixed-point output is correctly rounded from the exact binary value, and the parse then
/// picks the f64 nearest to that decimal.
pub fn scaled(unscaled: f64, scale: f64, offset: f64) -> f64 {
    let value = unscaled * scale + offset;
    if (scale == 1.0 && offset == 0.0) || !value.is_finite() {
        return value;
    }
    let places = (decimals(unscaled) + decimals(scale)).max(decimals(offset));
    format!("{value:.places$}").parse().unwrap_or(value)
}

fn check_len(field: &Field, got: usize, bits: bool) -> Result<(), DecodeError> {
    let (name, expected, kind) = (field.name.clone(), usize::from(field.count), field.kind);
    if kind.is_bit() != bits {
        let given = if bits { "bits" } else { "registers" };
        return Err(DecodeError::WrongKind {
            field: name,
            kind,
            given,
        });
    }
    if got != expected || got == 0 {
        return Err(DecodeError::Length {
            field: name,
            expected,
            got,
        });
    }
    Ok(())
}

/// Decodes a holding/input register field from exactly `field.count` registers.
pub fn decode_registers(field: &Field, regs: &[u16]) -> Result<Decoded, DecodeError> {
    check_len(field, regs.len(), false)?;
    let (t, raw) = (field.data_type, raw_bits(regs, field.word_order));
    match t {
        DataType::String => {
            return Ok(Decoded::good(DecodedValue::Text(text(
                regs,
                field.word_order,
            ))))
        }
        DataType::Bit | DataType::Bool => {
            let set = (raw >> field.bit.unwrap_or(0)) & 1 == 1;
            return Ok(Decoded::good(DecodedValue::Bool(set)));
        }
        _ => {}
    }
    let unscaled = number(t, raw);
    // Integer sentinels compare bit patterns, so 0x8000 and -32768 both match an i16.
    let mask = u64::MAX >> (64 - 16 * regs.len().clamp(1, 4));
    let hit = |&s: &i64| {
        if t.is_float() {
            s as f64 == unscaled
        } else {
            s as u64 & mask == raw
        }
    };
    let value = scaled(unscaled, field.scale, field.offset);
    let low = field.min.is_some_and(|m| value < m);
    let sanity = if field.sentinels.iter().any(hit) || (field.nan_is_missing && unscaled.is_nan()) {
        Sanity::Missing
    } else if !value.is_finite() {
        Sanity::Invalid
    } else if low || field.max.is_some_and(|m| value > m) {
        Sanity::OutOfRange
    } else {
        Sanity::Good
    };
    Ok(Decoded {
        value: DecodedValue::Number(value),
        sanity,
    })
}

/// Decodes a coil/discrete-input field from its bit.
pub fn decode_bits(field: &Field, bits: &[bool]) -> Result<Decoded, DecodeError> {
    check_len(field, bits.len(), true)?;
    Ok(Decoded::good(DecodedValue::Bool(bits[0])))
}

/// The registers a device would hold for `value` (the inverse of
/// [`decode_registers`]); used by the demo's simulated server and by writes. `None` for
/// non-numeric types. Integers are rounded (half away from zero) and saturate at the type's
/// range.
///
/// Unscaling divides by the scale, which leaves binary noise in the last digit (2.55 / 0.1 is
/// 25.499999999999996), so the result is first rounded to 15 significant digits, the most an
/// f64 holds for every decimal: 2.55 becomes 25.5 and then 26, as it would on paper.
pub fn encode_number(field: &Field, value: f64) -> Option<Vec<u16>> {
    let mut x = (value - field.offset) / field.scale;
    if (field.scale != 1.0 || field.offset != 0.0) && x.is_finite() && x != 0.0 {
        x = format!("{x:.14e}").parse().unwrap_or(x);
    }
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
    let (n, order) = (usize::from(field.data_type.width()?), field.word_order);
    // Both swaps are their own inverse, so applying them to big-endian words encodes.
    let mut regs: Vec<u16> = (0..n)
        .map(|i| swap((raw >> (16 * (n - 1 - i))) as u16, order))
        .collect();
    if order.swaps_words() {
        regs.reverse();
    }
    Some(regs)
}

/// A decoded number in full, as a technician compares it with the device's display: the
/// shortest text that reads back as the same f64, integers in full (also 64-bit ones). The
/// decoder already made the value the decimal the device meant ([`scaled`]), so this is also
/// exactly what the store and InfluxDB hold.
pub fn number_text(n: f64) -> String {
    format!("{n}")
}

/// A decoded value as text, with its unit when it is a number. `decimals`: show at most that
/// many decimals (rounded; trailing zeros dropped, so 0.35 and not 0.350); `None`: in full
/// ([`number_text`], what the commissioning tools show).
pub fn value_text(v: &DecodedValue, unit: Option<&str>, decimals: Option<u8>) -> String {
    let text = match (v, decimals) {
        (DecodedValue::Number(n), None) => number_text(*n),
        (DecodedValue::Number(n), Some(d)) if n.is_finite() => {
            let rounded: f64 = format!("{n:.*}", usize::from(d)).parse().unwrap_or(*n);
            // -0.0 (e.g. -0.001 to two decimals) reads as 0.
            number_text(rounded + 0.0)
        }
        (DecodedValue::Number(n), Some(_)) => number_text(*n),
        (DecodedValue::Bool(b), _) => b.to_string(),
        (DecodedValue::Text(t), _) => t.clone(),
    };
    match unit {
        Some(u) if matches!(v, DecodedValue::Number(_)) => format!("{text} {u}"),
        _ => text,
    }
}

/// A field's value as text: the name of an enum value (`idle`), else [`value_text`] with the
/// field's unit.
pub fn field_text(field: &Field, v: &DecodedValue, decimals: Option<u8>) -> String {
    if let DecodedValue::Number(n) = v {
        if let Some(name) = field
            .enum_names
            .get(&(*n as i64))
            .filter(|_| n.fract() == 0.0)
        {
            return name.clone();
        }
    }
    value_text(v, field.unit.as_deref(), decimals)
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
/// (and so the type and word order) without knowing them in advance.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpRow {
    pub offset: usize,
    pub address: u16,
    pub u16: u16,
    pub i16: i16,
    /// This register's two bytes as ASCII, unprintables as '.'.
    pub ascii: String,
    /// u32/i32/f32 from this and the next register, in the orders of `WordOrder::ALL`.
    pub x32: Option<[Views; 4]>,
    /// u64/i64/f64 from four registers starting here.
    pub x64: Option<[Views; 4]>,
}

fn views(regs: &[u16]) -> [Views; 4] {
    WordOrder::ALL.map(|order| {
        let raw = raw_bits(regs, order);
        let (signed, float) = match regs.len() {
            2 => (
                i64::from(raw as u32 as i32),
                f32_decimal(f32::from_bits(raw as u32)),
            ),
            _ => (raw as i64, f64::from_bits(raw)),
        };
        Views {
            order,
            unsigned: raw,
            signed,
            float,
        }
    })
}

/// Interprets a block read from `start` every way at every offset.
pub fn dump(start: u16, regs: &[u16]) -> Vec<DumpRow> {
    let row = |(i, &r): (usize, &u16)| DumpRow {
        offset: i,
        address: start.wrapping_add(i as u16),
        u16: r,
        i16: r as i16,
        ascii: String::from_iter(r.to_be_bytes().map(printable)),
        x32: regs.get(i..i + 2).map(views),
        x64: regs.get(i..i + 4).map(views),
    };
    regs.iter().enumerate().map(row).collect()
}

/// Shortest float text that round-trips, exponent form when very large or small.
fn fmt_float(v: f64, single: bool) -> String {
    let plain = v == 0.0 || !v.is_finite() || (1e-4..1e9).contains(&v.abs());
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
        let (a, o, u, i, s) = (r.address, r.offset, r.u16, r.i16, &r.ascii);
        let b = format!("{u:016b}");
        let bits = [&b[..4], &b[4..8], &b[8..12], &b[12..]].join(" ");
        let line = format!(
            "0x{a:04X} +{o:<3} u16 {u:<5} i16 {i:<6} hex 0x{u:04X} bits {bits} ascii \"{s}\""
        );
        out.push_str(&line);
        out.push('\n');
        for (k, v) in r.x32.iter().flatten().enumerate() {
            let (order, f) = (v.order, fmt_float(v.float, true));
            let mut line = format!(
                "    {order:?}  u32 {:<10} i32 {:<11} f32 {f:<14}",
                v.unsigned, v.signed
            );
            if let Some(w) = r.x64.map(|w| w[k]) {
                let f = fmt_float(w.float, false);
                line += &format!(" u64 {:<20} i64 {:<20} f64 {f}", w.unsigned, w.signed);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    let all: String = rows.iter().map(|r| r.ascii.as_str()).collect();
    out + &format!("ascii \"{all}\"\n")
}

#[cfg(test)]
mod tests {
    use super::super::profile::{parse, Field};
    use super::*;

    /// A field from `;`-separated TOML keys; kind defaults to holding.
    fn field(spec: &str) -> Field {
        let kind = if spec.contains("kind") {
            ""
        } else {
            "kind = 'holding'\n"
        };
        let keys = spec.replace("; ", "\n");
        let head = "[device]\nmodel = 'm'\nmanufacturer = 'x'\n[[field]]\nname = 'f'";
        let body = format!("{head}\nquantity = 't.f'\naddress = 0\n{kind}{keys}\n");
        match parse(&body, "t.toml") {
            Ok(mut p) => p.fields.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

    /// Decodes `regs` with the field `spec` and compares exactly: a number must be the f64
    /// nearest to the decimal written in the case (what the device meant), not merely close to
    /// it. Good numeric readings must also encode back to the same registers.
    fn check(spec: &str, regs: &[u16], expected: &Decoded) {
        let f = field(spec);
        let got = decode_registers(&f, regs).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let same = match (&got.value, &expected.value) {
            (DecodedValue::Number(a), DecodedValue::Number(b)) => {
                a == b || (a.is_nan() && b.is_nan())
            }
            (a, b) => a == b,
        };
        let context = format!("{spec} {regs:04X?}: got {got:?}, expected {expected:?}");
        assert!(same && got.sanity == expected.sanity, "{context}");
        if let (DecodedValue::Number(v), Sanity::Good) = (&got.value, got.sanity) {
            assert_eq!(encode_number(&f, *v).as_deref(), Some(regs), "{context}");
        }
    }

    /// `field keys | registers in hex | value quality`, one case a line.
    /// Values: a number (or NaN/inf), true/false, or 'text'.
    const CASES: &str = "
        type = 'f32'                              | 42F6 E979           | 123.456 good
        type = 'f32'; word_order = 'CDAB'         | E979 42F6           | 123.456 good
        type = 'f32'; word_order = 'BADC'         | F642 79E9           | 123.456 good
        type = 'f32'; word_order = 'DCBA'         | 79E9 F642           | 123.456 good
        type = 'f64'                              | 405E DD2F 1A9F BE77 | 123.456 good
        type = 'f64'; word_order = 'CDAB'         | BE77 1A9F DD2F 405E | 123.456 good
        type = 'f64'; word_order = 'BADC'         | 5E40 2FDD 9F1A 77BE | 123.456 good
        type = 'f64'; word_order = 'DCBA'         | 77BE 9F1A 2FDD 5E40 | 123.456 good
        type = 'u16'                              | FFFE                | 65534 good
        type = 'u16'; word_order = 'BADC'         | 3412                | 4660 good
        type = 'i16'                              | F8F8                | -1800 good
        type = 'u32'                              | 1234 5678           | 305419896 good
        type = 'u32'; word_order = 'CDAB'         | 5678 1234           | 305419896 good
        type = 'i32'                              | FFFF FFFE           | -2 good
        type = 'i32'; word_order = 'DCBA'         | FEFF FFFF           | -2 good
        type = 'u64'                              | 0000 0001 0000 0002 | 4294967298 good
        type = 'u64'; word_order = 'CDAB'         | 0002 0000 0001 0000 | 4294967298 good
        type = 'i64'                              | FFFF FFFF FFFF FFFF | -1 good
        type = 'i64'; word_order = 'BADC'         | FFFF FFFF FFFF FEFF | -2 good
        type = 'i16'; scale = 0.1                 | 00FB                | 25.1 good
        type = 'u16'; scale = 0.003125; offset = -12.5 | 2EE0           | 25 good
        type = 'f32'; scale = 0.0001              | 4A8D 2390           | 462.484 good
        type = 'f32'                              | 4139 EB85           | 11.62 good
        type = 'f32'; word_order = 'CDAB'         | EB85 4139           | 11.62 good
        type = 'f32'                              | C49A 51EC           | -1234.56 good
        type = 'f32'; scale = 0.1                 | 4139 EB85           | 1.162 good
        type = 'f32'; scale = 10                  | 4139 EB85           | 116.2 good
        type = 'i16'; scale = 0.1                 | 0074                | 11.6 good
        type = 'i16'; scale = 0.1; offset = -40   | 0234                | 16.4 good
        type = 'u16'; scale = 0.01                | 091F                | 23.35 good
        type = 'u32'; scale = 0.001               | 0012 D687           | 1234.567 good
        type = 'i32'; scale = 0.01                | FFFF FB2E           | -12.34 good
        type = 'f64'; scale = 0.1                 | 405E DD2F 1A9F BE77 | 12.3456 good
        type = 'bit'; bit = 0                     | 0001                | true good
        type = 'bit'; bit = 15                    | 7FFF                | false good
        type = 'bit'; bit = 8                     | 0100                | true good
        type = 'bit'; bit = 8; word_order = 'BADC' | 0001               | true good
        type = 'string'; length = 3               | 5344 4D31 3230      | 'SDM120' good
        type = 'string'; length = 3; word_order = 'BADC' | 4453 314D 0030 | 'SDM10' good
        type = 'string'; length = 2               | 4142 2000           | 'AB' good
        type = 'i16'; sentinels = [0x7FFF, 0x8000] | 7FFF               | 32767 missing
        type = 'i16'; sentinels = [0x7FFF, 0x8000] | 8000               | -32768 missing
        type = 'i16'; scale = 0.1; sentinels = [-1] | FFFF              | -0.1 missing
        type = 'u32'; sentinels = [-1]            | FFFF FFFF           | 4294967295 missing
        type = 'f32'; sentinels = [-9999]         | C61C 3C00           | -9999 missing
        type = 'f32'; nan_is_missing = true       | 7FC0 0000           | NaN missing
        type = 'f32'                              | 7FC0 0000           | NaN invalid
        type = 'f32'                              | 7F80 0000           | inf invalid
        type = 'i16'; scale = 0.1; min = -50; max = 150 | 1964          | 650 out_of_range
        type = 'i16'; scale = 0.1; min = -50; max = 150 | F8F8          | -180 out_of_range
        type = 'i16'; scale = 0.1; min = -50; max = 150 | 05DC          | 150 good
    ";

    #[test]
    fn every_type_order_and_quality() {
        let cases: Vec<Vec<&str>> = CASES.lines().map(|l| l.split('|').collect()).collect();
        let cases: Vec<&Vec<&str>> = cases.iter().filter(|c| c.len() == 3).collect();
        assert_eq!(cases.len(), 51);
        for case in cases {
            let regs: Vec<u16> = case[1].split_whitespace().map(hex).collect();
            let (value, quality) = case[2].trim().rsplit_once(' ').unwrap_or_default();
            let value = match value {
                "true" | "false" => DecodedValue::Bool(value == "true"),
                v if v.starts_with('\'') => DecodedValue::Text(v.trim_matches('\'').into()),
                v => DecodedValue::Number(v.parse().unwrap_or_else(|_| panic!("bad case {v}"))),
            };
            let quality = match quality {
                "good" => Sanity::Good,
                "missing" => Sanity::Missing,
                "invalid" => Sanity::Invalid,
                _ => Sanity::OutOfRange,
            };
            check(
                case[0].trim(),
                &regs,
                &Decoded {
                    value,
                    sanity: quality,
                },
            );
        }
    }

    /// The cases above are not vacuous: plain f64 arithmetic gets them wrong.
    #[test]
    fn naive_widening_and_scaling_show_float_noise() {
        assert_eq!(f64::from(11.62f32), 11.619999885559082);
        assert_eq!(116.0 * 0.1, 11.600000000000001);
        assert_eq!(564.0 * 0.1 - 40.0, 16.400000000000006);
        assert_eq!(f32_decimal(11.62), 11.62);
        assert_eq!(scaled(116.0, 0.1, 0.0), 11.6);
        assert_eq!(scaled(564.0, 0.1, -40.0), 16.4);
        assert!(scaled(f64::NAN, 0.1, 0.0).is_nan());
        assert_eq!(scaled(f64::INFINITY, 0.1, 0.0), f64::INFINITY);
        assert_eq!(2.55 / 0.1, 25.499999999999996);
        let tenths = field("type = 'i16'; scale = 0.1");
        assert_eq!(encode_number(&tenths, 2.55), Some(vec![26]));
        assert_eq!(encode_number(&tenths, -2.55), Some(vec![(-26i16) as u16]));
    }

    /// `field keys | value | decimals | text`, one case a line.
    const TEXTS: &str = "
        type = 'f32'; unit = 'W'                  | 57.4009284973 | 2 | 57.4 W
        type = 'f32'; unit = 'A'                  | 0.34999999404 | 2 | 0.35 A
        type = 'f32'; unit = 'A'                  | -0.001        | 2 | 0 A
        type = 'f32'                              | 11.62         | 2 | 11.62
        type = 'f32'; scale = 0.001               | 1.23456       | 5 | 1.23456
        type = 'i16'; scale = 0.1; unit = '°C'    | 11.6          | 1 | 11.6 °C
        type = 'i16'; scale = 0.1                 | 20            | 1 | 20
        type = 'u16'; scale = 0.01                | 23.35         | 2 | 23.35
        type = 'u16'; scale = 0.003125; offset = -12.5 | 25.003125 | 3 | 25.003
        type = 'u16'; offset = -12.5              | 3.5           | 1 | 3.5
        type = 'u32'; scale = 10; unit = 'Wh'     | 123450        | 0 | 123450 Wh
        type = 'u64'                              | 9007199254740989 | 0 | 9007199254740989
        type = 'u16'; enum = { 0 = 'idle', 3 = 'running' } | 0  | 0 | idle
        type = 'u16'; enum = { 0 = 'idle', 3 = 'running' } | 3  | 0 | running
        type = 'u16'; enum = { 0 = 'idle', 3 = 'running' } | 4  | 0 | 4
    ";

    /// The status page's text of a decoded number with the decimals its quantity shows.
    #[test]
    fn values_show_the_decimals_their_field_resolves() {
        let mut n = 0;
        for case in TEXTS.lines().map(|l| l.split('|').collect::<Vec<_>>()) {
            let [spec, value, places, text] = case[..] else {
                continue;
            };
            let f = field(spec.trim());
            let value: f64 = value.trim().parse().unwrap_or_else(|_| panic!("{value}"));
            let places: u8 = places.trim().parse().unwrap_or_else(|_| panic!("{places}"));
            let got = field_text(&f, &DecodedValue::Number(value), Some(places));
            assert_eq!(got, text.trim(), "{spec} {value}");
            n += 1;
        }
        assert_eq!(n, 15);
        let flag = field("type = 'bit'; bit = 1");
        assert_eq!(field_text(&flag, &DecodedValue::Bool(true), None), "true");
    }

    #[test]
    fn numbers_print_in_full_without_float_noise() {
        assert_eq!(number_text(9_007_199_254_740_989.0), "9007199254740989");
        assert_eq!(number_text(-12345.0), "-12345");
        assert_eq!(number_text(12345.6789012), "12345.6789012");
        assert_eq!(number_text(12345.678901234567), "12345.678901234567");
        assert_eq!(number_text(f64::NAN), "NaN");
        assert_eq!(number_text(f32_decimal(11.62)), "11.62");
        let n = DecodedValue::Number(0.34999999404);
        assert_eq!(value_text(&n, Some("A"), None), "0.34999999404 A");
    }

    fn hex(h: &str) -> u16 {
        u16::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad hex {h}"))
    }

    #[test]
    fn bits_and_wrong_shapes() {
        let coil = field("kind = 'coil'; type = 'bool'");
        assert_eq!(
            decode_bits(&coil, &[true]),
            Ok(Decoded::good(DecodedValue::Bool(true)))
        );
        let e = decode_registers(&coil, &[1]).map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("field \"f\": a Coil field cannot be decoded from registers".into())
        );
        let e = decode_registers(&field("type = 'f32'"), &[1]).map_err(|e| e.to_string());
        assert_eq!(e, Err("field \"f\": expected 2 values, got 1".into()));
    }

    #[test]
    fn dump_shows_every_view() {
        let rows = dump(0x0010, &[0x42F6, 0xE979, 0x4142]);
        let first = (
            rows[0].address,
            rows[0].u16,
            rows[0].i16,
            rows[2].ascii.as_str(),
        );
        assert_eq!((rows.len(), first), (3, (0x10, 0x42F6, 0x42F6, "AB")));
        let cdab = rows[1].x32.map(|v| (v[1].order, v[1].float as f32));
        assert_eq!(cdab, Some((WordOrder::CDAB, f32::from_bits(0x4142_E979))));
        assert_eq!(rows[0].x32.map(|v| v[0].float as f32), Some(123.456));
        assert!(rows[2].x32.is_none() && rows[0].x64.is_none());
        let text = format_dump(&rows);
        let head =
            "0x0010 +0   u16 17142 i16 17142  hex 0x42F6 bits 0100 0010 1111 0110 ascii \"B.\"";
        assert!(text.contains(head), "{text}");
        assert!(
            text.contains("    ABCD  u32 1123477881 i32 1123477881  f32 123.456\n"),
            "{text}"
        );
        assert!(text.ends_with("ascii \"B..yAB\"\n"), "{text}");
        let wide = dump(0, &[0x405E, 0xDD2F, 0x1A9F, 0xBE77]);
        assert_eq!(wide[0].x64.map(|v| v[0].float), Some(123.456));
        assert!(format_dump(&wide).contains("f64 123.456\n"));
    }
}
