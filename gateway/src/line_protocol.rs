//! InfluxDB line protocol: the encoder every Influx-compatible sink uses, and the small parser
//! for MQTT topics configured with `format = "line_protocol"`.
//!
//! Schema (PRODUCT.md): one measurement per equipment kind, tags `site` and `device` (plus any
//! extra tags of the series), fields named after the quantity with the unit in the name where
//! ambiguous. A reading whose quality is not good carries a string field `quality`.
//! Non-finite floats cannot be written in line protocol: such a field is left out, and a
//! reading with no field left produces no line.
//!
//! Hand-written rather than the `influxdb-line-protocol` crate: the encoder is forty lines, is
//! checked against InfluxDB 1.6.7's parser by the integration tests, and writes straight into
//! the request buffer without building an intermediate point per reading.

use std::fmt::Write as _;

use crate::model::{Quality, Reading, Series, Value};

fn escape(out: &mut String, s: &str, specials: &[char]) {
    for c in s.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if specials.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

const MEASUREMENT: &[char] = &[',', ' '];
const KEY: &[char] = &[',', '=', ' '];

fn push_value(out: &mut String, v: &Value) -> bool {
    match v {
        Value::Float(f) if !f.is_finite() => return false,
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Int(i) => {
            let _ = write!(out, "{i}i");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Str(s) => {
            out.push('"');
            escape(out, s, &['"', '\\']);
            out.push('"');
        }
    }
    true
}

/// Appends one line (with trailing `\n`) for `r`; returns false and appends nothing when the
/// reading has no writable field.
pub fn encode(out: &mut String, site: &str, r: &Reading) -> bool {
    let start = out.len();
    escape(out, &r.series.measurement, MEASUREMENT);
    let mut tags: Vec<(&str, &str)> = vec![("device", &r.series.device), ("site", site)];
    tags.extend(r.series.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    tags.sort_unstable();
    for (k, v) in tags {
        if k.is_empty() || v.is_empty() {
            continue;
        }
        out.push(',');
        escape(out, k, KEY);
        out.push('=');
        escape(out, v, KEY);
    }
    let mut sep = ' ';
    for (k, v) in &r.fields {
        let mark = out.len();
        out.push(sep);
        escape(out, k, KEY);
        out.push('=');
        if push_value(out, v) {
            sep = ',';
        } else {
            out.truncate(mark);
        }
    }
    if r.quality != Quality::Good {
        let _ = write!(out, "{sep}quality=\"{}\"", r.quality.as_str());
        sep = ',';
    }
    if sep == ' ' {
        out.truncate(start);
        return false;
    }
    let _ = writeln!(out, " {}", r.ts_ns);
    true
}

/// Appends the line of one logbook revision: measurement `logbook`, tags `site`, `kind` and
/// (waste fed) `waste`, fields for its values plus `entry`, `revision`, `withdrawn`, `by` and
/// `note`/`reason` where present, timestamp = the time the entry refers to (`at`). A later
/// revision of the same entry with the same `at` and waste overwrites the point in InfluxDB.
/// One alarm transition as the point `alarm` (tags rule, instance, severity, site; the
/// sequence number is a field, so a re-sent event overwrites itself).
pub fn encode_alarm(out: &mut String, site: &str, e: &crate::alarm::Event) {
    out.push_str("alarm,instance=");
    escape(out, &e.instance, KEY);
    out.push_str(",rule=");
    escape(out, &e.rule, KEY);
    out.push_str(",severity=");
    escape(out, e.severity.as_str(), KEY);
    if !site.is_empty() {
        out.push_str(",site=");
        escape(out, site, KEY);
    }
    out.push_str(" action=");
    push_value(out, &Value::Str(e.action.as_str().into()));
    out.push_str(",state=");
    push_value(out, &Value::Str(e.state.as_str().into()));
    let _ = write!(out, ",seq={}i,shelved={}", e.seq, e.shelved);
    if let Some(v) = e.value.filter(|v| v.is_finite()) {
        let _ = write!(out, ",value={v}");
    }
    for (k, v) in [("by", &e.by), ("note", &e.note)] {
        if let Some(v) = v {
            let _ = write!(out, ",{k}=");
            push_value(out, &Value::Str(v.clone()));
        }
    }
    let _ = writeln!(out, " {}", e.ts_ns);
}

pub fn encode_entry(out: &mut String, site: &str, e: &crate::logbook::Entry) {
    let f = e.values.fields();
    out.push_str("logbook,kind=");
    escape(out, e.values.kind().as_str(), KEY);
    if !site.is_empty() {
        out.push_str(",site=");
        escape(out, site, KEY);
    }
    if let Some(w) = &f.waste {
        out.push_str(",waste=");
        escape(out, w, KEY);
    }
    let _ = write!(out, " by=");
    push_value(out, &Value::Str(e.by.clone()));
    if let Some(c) = f.count {
        let _ = write!(out, ",count={}i", c as i64);
    }
    let _ = write!(out, ",entry={}i", e.entry);
    for (k, v) in [
        ("kg", f.kg),
        ("litres", f.litres),
        ("ph", f.ph),
        ("ratio", f.ratio),
    ] {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            let _ = write!(out, ",{k}={v}");
        }
    }
    for (k, v) in [("note", &e.note), ("reason", &e.reason), ("text", &f.text)] {
        if let Some(v) = v {
            let _ = write!(out, ",{k}=");
            push_value(out, &Value::Str(v.clone()));
        }
    }
    let _ = writeln!(
        out,
        ",revision={}i,withdrawn={} {}",
        e.revision, e.withdrawn, e.at_ns
    );
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line protocol: {0}")]
pub struct ParseError(&'static str);

/// Splits at the first unescaped `sep` outside double quotes.
fn split_unescaped(s: &str, sep: char) -> (&str, Option<&str>) {
    let mut escaped = false;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => return (&s[..i], Some(&s[i + c.len_utf8()..])),
            _ => {}
        }
    }
    (s, None)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_field_value(v: &str) -> Result<Value, ParseError> {
    if let Some(q) = v.strip_prefix('"') {
        let inner = q
            .strip_suffix('"')
            .ok_or(ParseError("unterminated string"))?;
        return Ok(Value::Str(unescape(inner)));
    }
    match v {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Some(i) = v.strip_suffix('i') {
        return i
            .parse()
            .map(Value::Int)
            .map_err(|_| ParseError("bad integer"));
    }
    if let Some(u) = v.strip_suffix('u') {
        return u
            .parse::<u64>()
            .ok()
            .and_then(|u| i64::try_from(u).ok())
            .map(Value::Int)
            .ok_or(ParseError("bad unsigned"));
    }
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Value::Float)
        .ok_or(ParseError("bad number"))
}

/// Parses one line. A missing timestamp gives `ts_ns = 0` (the caller stamps arrival time); the
/// `device` tag becomes the series' device, other tags (except `site`) its extra tags.
pub fn parse_line(line: &str) -> Result<Reading, ParseError> {
    let (key, rest) = split_unescaped(line, ' ');
    let rest = rest.ok_or(ParseError("no fields"))?;
    let (fields_part, ts_part) = split_unescaped(rest, ' ');
    let ts_ns = match ts_part.map(str::trim) {
        None | Some("") => 0,
        Some(t) => t.parse().map_err(|_| ParseError("bad timestamp"))?,
    };
    let (measurement, mut tags_rest) = split_unescaped(key, ',');
    if measurement.is_empty() {
        return Err(ParseError("no measurement"));
    }
    let mut series = Series::new(unescape(measurement), "");
    while let Some(t) = tags_rest {
        let (tag, next) = split_unescaped(t, ',');
        tags_rest = next;
        let (k, v) = split_unescaped(tag, '=');
        let v = v
            .filter(|v| !v.is_empty() && !k.is_empty())
            .ok_or(ParseError("bad tag"))?;
        match unescape(k).as_str() {
            "device" => series.device = unescape(v).into(),
            "site" => {}
            k => series.extra.push((k.to_owned(), unescape(v))),
        }
    }
    series.extra.sort();
    let mut fields = Vec::new();
    let mut rest = Some(fields_part);
    while let Some(f) = rest {
        let (field, next) = split_unescaped(f, ',');
        rest = next;
        let (k, v) = split_unescaped(field, '=');
        let v = v
            .filter(|v| !v.is_empty() && !k.is_empty())
            .ok_or(ParseError("bad field"))?;
        fields.push((unescape(k), parse_field_value(v)?));
    }
    Ok(Reading {
        series,
        ts_ns,
        quality: Quality::Good,
        fields,
        ack: None,
        receipt: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: Reading, expected: &str) {
        let mut out = String::new();
        let wrote = encode(&mut out, "site-1", &r);
        assert_eq!(out, expected);
        assert_eq!(wrote, !expected.is_empty());
        if wrote {
            let mut back = parse_line(out.trim_end()).expect("own output parses");
            back.quality = r.quality;
            let mut want = r.clone();
            want.fields
                .retain(|(_, v)| !matches!(v, Value::Float(f) if !f.is_finite()));
            if r.quality != Quality::Good {
                back.fields.retain(|(k, _)| k != "quality");
            }
            assert_eq!(back, want);
        }
    }

    fn r(fields: Vec<(&str, Value)>) -> Reading {
        Reading {
            series: Series::new("gas_meter", "GM-1"),
            ts_ns: 1_700_000_000_000_000_000,
            quality: Quality::Good,
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ack: None,
            receipt: None,
        }
    }

    #[test]
    fn a_logbook_revision_is_one_line_at_its_time() {
        use crate::logbook::{Entry, Values};
        let e = Entry {
            id: 7,
            entry: 3,
            revision: 2,
            values: Values::WasteFed {
                waste: crate::plant::kpi::Waste::Market,
                kg: 120.5,
            },
            at_ns: 1_796_101_200_000_000_000,
            by: "amina k".into(),
            recorded_ns: 0,
            first_recorded_ns: 0,
            note: Some("said \"fresh\"".into()),
            withdrawn: false,
            reason: None,
        };
        let mut out = String::new();
        encode_entry(&mut out, "s 1", &e);
        assert_eq!(
            out,
            "logbook,kind=waste_fed,site=s\\ 1,waste=market by=\"amina k\",entry=3i,kg=120.5,note=\"said \\\"fresh\\\"\",revision=2i,withdrawn=false 1796101200000000000\n"
        );
        let c = Entry {
            values: Values::CylindersFilled { count: 4 },
            note: None,
            withdrawn: true,
            reason: Some("wrong day".into()),
            ..e
        };
        out.clear();
        encode_entry(&mut out, "s1", &c);
        assert_eq!(
            out,
            "logbook,kind=cylinders_filled,site=s1 by=\"amina k\",count=4i,entry=3i,reason=\"wrong day\",revision=2i,withdrawn=true 1796101200000000000\n"
        );
    }

    #[test]
    fn encodes_every_type() {
        check(
            r(vec![("credit_kg", Value::Float(1.25)), ("seq", Value::Int(-4)), ("tamper", Value::Bool(false)), ("valve", Value::Str("open".into()))]),
            "gas_meter,device=GM-1,site=site-1 credit_kg=1.25,seq=-4i,tamper=false,valve=\"open\" 1700000000000000000\n",
        );
        check(r(vec![("big", Value::Float(1e21)), ("small", Value::Float(-0.000001))]), "gas_meter,device=GM-1,site=site-1 big=1000000000000000000000,small=-0.000001 1700000000000000000\n");
    }

    #[test]
    fn escapes_what_line_protocol_needs() {
        let mut x = r(vec![("a b,c=d", Value::Str("say \"hi\" \\ there".into()))]);
        x.series = Series::new("my meas,ure", "dev ice=1");
        x.series.extra = vec![("zone".into(), "north, east".into())];
        check(x, "my\\ meas\\,ure,device=dev\\ ice\\=1,site=site-1,zone=north\\,\\ east a\\ b\\,c\\=d=\"say \\\"hi\\\" \\\\ there\" 1700000000000000000\n");
    }

    #[test]
    fn non_finite_fields_are_dropped_and_empty_readings_skipped() {
        check(
            r(vec![
                ("a", Value::Float(f64::NAN)),
                ("b", Value::Float(2.0)),
            ]),
            "gas_meter,device=GM-1,site=site-1 b=2 1700000000000000000\n",
        );
        check(r(vec![("a", Value::Float(f64::INFINITY))]), "");
        let mut bad = r(vec![("a", Value::Float(f64::NAN))]);
        bad.quality = Quality::Bad;
        check(
            bad,
            "gas_meter,device=GM-1,site=site-1 quality=\"bad\" 1700000000000000000\n",
        );
    }

    #[test]
    fn parser_rejects_garbage() {
        for bad in [
            "",
            "m",
            "m f=",
            "m f=\"open",
            "m,t f=1",
            "m f=1 notatime",
            "m f=12abc",
            "m f=1x",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            parse_line("m f=1u").expect("unsigned").fields,
            vec![("f".to_owned(), Value::Int(1))]
        );
    }
}
