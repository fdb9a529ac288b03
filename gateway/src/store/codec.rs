//! The record codec: how a reading's fields are packed into the `fields` BLOB of a row.
//!
//! Layout (all integers are LEB128 varints unless noted):
//! ```text
//! count, then per field: name_id, tag, payload
//!   tag 0  f64, 8 bytes little-endian
//!   tag 1  f64 stored as f32 (4 bytes LE) because the f32 round-trips exactly
//!   tag 2  i64, zigzag varint
//!   tag 3  false      tag 4  true   (no payload)
//!   tag 5  string: byte length, UTF-8 bytes
//!   tag 16 + k (k = 0..=15)  f64 that is exactly m / 10^k: m as a zigzag varint
//! ```
//! A float is stored in the shortest of the three float forms that gives back the same f64
//! bit for bit: a meter's `1234.5` or `-71` is a decimal of 2 or 3 bytes instead of 8.
//! `m / 10^k` is exact to decode because both are exact f64s and IEEE division is correctly
//! rounded: it is the f64 nearest the decimal, which is what parsing the decimal gave. Stores
//! written with tags 16..=31 cannot be read by a gateway older than this codec.
//! Field names are interned in the `names` table; the caller supplies the id mapping.
//! Why not JSON or bincode: a meter message is ~6 fields, and this keeps a row near 40 bytes,
//! which is what keeps bytes written per reading low on an SD card.

use crate::model::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("record truncated")]
    Truncated,
    #[error("unknown value tag {0}")]
    BadTag(u8),
    #[error("string field is not utf-8")]
    BadUtf8,
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(DecodeError::Truncated)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::Truncated)
}

pub fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], DecodeError> {
    let end = pos.checked_add(n).ok_or(DecodeError::Truncated)?;
    let s = buf.get(*pos..end).ok_or(DecodeError::Truncated)?;
    *pos = end;
    Ok(s)
}

/// Encodes `(name_id, value)` pairs.
pub fn encode<'a>(fields: impl ExactSizeIterator<Item = (u64, &'a Value)>, out: &mut Vec<u8>) {
    put_varint(out, fields.len() as u64);
    for (name, value) in fields {
        put_varint(out, name);
        match value {
            Value::Float(f) => {
                let narrow = *f as f32;
                let narrow_ok = f64::from(narrow) == *f || f.is_nan();
                if let Some((k, z)) = decimal(*f) {
                    if 1 + varint_len(z) < if narrow_ok { 5 } else { 9 } {
                        out.push(DECIMAL + k);
                        put_varint(out, z);
                        continue;
                    }
                }
                if narrow_ok {
                    out.push(1);
                    out.extend_from_slice(&narrow.to_le_bytes());
                } else {
                    out.push(0);
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
            Value::Int(i) => {
                out.push(2);
                put_varint(out, zigzag(*i));
            }
            Value::Bool(b) => out.push(if *b { 4 } else { 3 }),
            Value::Str(s) => {
                out.push(5);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// The first of the decimal tags: `DECIMAL + k` for `m / 10^k`.
const DECIMAL: u8 = 16;
/// 10^0 ..= 10^15, all exact in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

/// The smallest `k` with `f == m / 10^k` exactly (bit for bit, so not `-0.0`) and
/// `|m| < 2^53`, with `m` zigzagged.
fn decimal(f: f64) -> Option<(u8, u64)> {
    if !f.is_finite() || (f == 0.0 && f.is_sign_negative()) {
        return None;
    }
    const EXACT: f64 = (1u64 << 53) as f64;
    for (k, p) in POW10.iter().enumerate() {
        let m = (f * p).round();
        if m.abs() >= EXACT {
            return None;
        }
        if (m / p).to_bits() == f.to_bits() {
            return Some((k as u8, zigzag(m as i64)));
        }
    }
    None
}

pub fn decode(buf: &[u8]) -> Result<Vec<(u64, Value)>, DecodeError> {
    let mut pos = 0;
    let n = get_varint(buf, &mut pos)?;
    let mut out = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        let name = get_varint(buf, &mut pos)?;
        let tag = *take(buf, &mut pos, 1)?
            .first()
            .ok_or(DecodeError::Truncated)?;
        let value = match tag {
            0 => {
                let b = take(buf, &mut pos, 8)?;
                Value::Float(f64::from_le_bytes(
                    b.try_into().map_err(|_| DecodeError::Truncated)?,
                ))
            }
            1 => {
                let b = take(buf, &mut pos, 4)?;
                let f = f32::from_le_bytes(b.try_into().map_err(|_| DecodeError::Truncated)?);
                Value::Float(f64::from(f))
            }
            2 => {
                let z = get_varint(buf, &mut pos)?;
                Value::Int(unzigzag(z))
            }
            3 => Value::Bool(false),
            4 => Value::Bool(true),
            5 => {
                let len = get_varint(buf, &mut pos)? as usize;
                let b = take(buf, &mut pos, len)?;
                Value::Str(
                    std::str::from_utf8(b)
                        .map_err(|_| DecodeError::BadUtf8)?
                        .to_owned(),
                )
            }
            t @ DECIMAL..=31 => {
                let m = unzigzag(get_varint(buf, &mut pos)?);
                Value::Float(m as f64 / POW10[usize::from(t - DECIMAL)])
            }
            t => return Err(DecodeError::BadTag(t)),
        };
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fields: Vec<(u64, Value)>, expected_len: usize) {
        let mut buf = Vec::new();
        encode(fields.iter().map(|(n, v)| (*n, v)), &mut buf);
        assert_eq!(buf.len(), expected_len, "encoded size of {fields:?}");
        assert_eq!(decode(&buf).expect("round trip"), fields);
    }

    #[test]
    fn round_trips_every_type_compactly() {
        check(vec![], 1);
        // Decimals: tag, then the zigzagged mantissa (1.5 = 15 / 10: one byte).
        check(vec![(1, Value::Float(1.5))], 1 + 1 + 1 + 1);
        check(vec![(1, Value::Float(0.1))], 1 + 1 + 1 + 1);
        check(vec![(1, Value::Float(1234.5))], 1 + 1 + 1 + 3);
        check(vec![(1, Value::Float(-71.0))], 1 + 1 + 1 + 2);
        check(vec![(1, Value::Float(0.0))], 1 + 1 + 1 + 1);
        // Not a short decimal: f32 when that is exact, else the 8 bytes.
        check(vec![(1, Value::Float(f64::from(1e-30f32)))], 1 + 1 + 1 + 4);
        check(vec![(1, Value::Float(0.1 + 0.2))], 1 + 1 + 1 + 8);
        check(vec![(1, Value::Float(f64::MAX))], 1 + 1 + 1 + 8);
        check(vec![(1, Value::Float(1e300))], 1 + 1 + 1 + 8);
        check(vec![(1, Value::Float(f64::INFINITY))], 1 + 1 + 1 + 4);
        check(vec![(300, Value::Int(-3))], 1 + 2 + 1 + 1);
        check(
            vec![(2, Value::Int(i64::MIN)), (3, Value::Int(i64::MAX))],
            1 + 2 * (1 + 1 + 10),
        );
        check(
            vec![(1, Value::Bool(true)), (2, Value::Bool(false))],
            1 + 2 + 2,
        );
        check(vec![(7, Value::Str("open".into()))], 1 + 1 + 1 + 1 + 4);
    }

    #[test]
    fn every_float_comes_back_bit_for_bit() {
        // Decimals as a meter prints them, their neighbours (not decimals), and odd values.
        let mut values = vec![-0.0, 5e-324, f64::MIN_POSITIVE, 9_007_199_254_740_993.0];
        for i in -20_000i64..20_000 {
            for k in [0, 1, 2, 3, 6, 9, 15] {
                let f: f64 = format!("{}e-{k}", i * 7919).parse().expect("decimal");
                values.extend([f, f64::from_bits(f.to_bits() + 1), f * 1e10, f / 3.0]);
            }
        }
        let mut decimals = 0;
        for f in values {
            let mut buf = Vec::new();
            encode([(1u64, &Value::Float(f))].into_iter(), &mut buf);
            decimals += usize::from(buf[2] >= DECIMAL);
            match decode(&buf).expect("decodes").as_slice() {
                [(1, Value::Float(g))] => assert_eq!(g.to_bits(), f.to_bits(), "{f:e}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(decimals > 200_000, "{decimals} stored as decimals");
    }

    #[test]
    fn nan_survives() {
        let mut buf = Vec::new();
        encode([(1u64, &Value::Float(f64::NAN))].into_iter(), &mut buf);
        match decode(&buf).expect("decodes").as_slice() {
            [(1, Value::Float(f))] => assert!(f.is_nan()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[1, 1, 9]), Err(DecodeError::BadTag(9)));
        assert_eq!(decode(&[1, 1, 32, 1]), Err(DecodeError::BadTag(32)));
        assert_eq!(decode(&[1, 1, 17]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[1, 1, 0, 1, 2]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[1, 1, 5, 2, 0xff, 0xfe]), Err(DecodeError::BadUtf8));
        assert_eq!(decode(&[1, 1, 5, 200, 1]), Err(DecodeError::Truncated));
    }
}
