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
//! ```
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
                if f64::from(narrow) == *f || f.is_nan() {
                    out.push(1);
                    out.extend_from_slice(&narrow.to_le_bytes());
                } else {
                    out.push(0);
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
            Value::Int(i) => {
                out.push(2);
                put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
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
                Value::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
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
        check(vec![(1, Value::Float(1.5))], 1 + 1 + 1 + 4);
        check(vec![(1, Value::Float(0.1))], 1 + 1 + 1 + 8);
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
        assert_eq!(decode(&[1, 1, 0, 1, 2]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[1, 1, 5, 2, 0xff, 0xfe]), Err(DecodeError::BadUtf8));
        assert_eq!(decode(&[1, 1, 5, 200, 1]), Err(DecodeError::Truncated));
    }
}
