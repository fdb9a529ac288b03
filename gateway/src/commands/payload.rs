//! The command payload (the JWS's JSON, docs/uplink.md "Commands", docs/schema/command.schema.json):
//! parsed and checked field by field; anything unexpected is [`Reason::Malformed`]. Pure: the
//! time checks take `now` as an argument.
//!
//! Top-level members other than ours (`iss`, `aud`, `jti`… that a JWT library may add) are
//! ignored; inside `args` nothing unknown is accepted, since it would go to a meter.

use serde_json::{Map, Value};

use super::Reason;

/// What a command does at a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TopUp,
    Valve,
    Relay,
    Tariff,
    TimeSync,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::TopUp,
        Kind::Valve,
        Kind::Relay,
        Kind::Tariff,
        Kind::TimeSync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TopUp => "top_up",
            Kind::Valve => "valve",
            Kind::Relay => "relay",
            Kind::Tariff => "tariff",
            Kind::TimeSync => "time_sync",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A well-formed command (its signature was checked before it was parsed).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub meter: String,
    pub kind: Kind,
    /// The arguments as the platform gave them (checked by [`parse`]); always an object.
    pub args: Value,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

/// A command id: 1 to 128 letters, digits, `-`, `_`, `.` or `:` (a UUID, a ULID, a row id).
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// A token or transaction reference: 1 to 64 printable ASCII characters, passed as given.
fn valid_text(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
}

fn text<'a>(args: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Reason> {
    match args.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if valid_text(s) => Ok(Some(s)),
        Some(_) => Err(Reason::Malformed),
    }
}

fn number(args: &Map<String, Value>, key: &str) -> Result<Option<f64>, Reason> {
    match args.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or(Reason::Malformed),
    }
}

fn one_of(args: &Map<String, Value>, key: &str, allowed: &[&str]) -> Result<(), Reason> {
    match args.get(key).and_then(Value::as_str) {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(Reason::Malformed),
    }
}

fn only(args: &Map<String, Value>, keys: &[&str]) -> Result<(), Reason> {
    if args.keys().all(|k| keys.contains(&k.as_str())) {
        Ok(())
    } else {
        Err(Reason::Malformed)
    }
}

/// Checks the arguments of `kind`.
fn check_args(kind: Kind, args: &Map<String, Value>) -> Result<(), Reason> {
    match kind {
        Kind::TopUp => {
            only(args, &["token", "amount", "unit", "transaction"])?;
            let token = text(args, "token")?;
            let amount = number(args, "amount")?;
            text(args, "transaction")?;
            match (token, amount) {
                (Some(_), None) if !args.contains_key("unit") => Ok(()),
                (None, Some(a)) if a > 0.0 && a <= 1e6 => one_of(args, "unit", &["kg", "kWh"]),
                _ => Err(Reason::Malformed),
            }
        }
        Kind::Valve | Kind::Relay => {
            only(args, &["state"])?;
            one_of(args, "state", &["open", "closed"])
        }
        Kind::Tariff => {
            only(args, &["price", "currency", "unit"])?;
            match number(args, "price")? {
                Some(p) if p >= 0.0 => {}
                _ => return Err(Reason::Malformed),
            }
            match args.get("currency").and_then(Value::as_str) {
                Some(c) if c.len() == 3 && c.chars().all(|c| c.is_ascii_uppercase()) => {}
                _ => return Err(Reason::Malformed),
            }
            one_of(args, "unit", &["kg", "kWh"])
        }
        Kind::TimeSync => {
            only(args, &["time"])?;
            match args.get("time") {
                None => Ok(()),
                Some(t) if t.as_i64().is_some_and(|t| t > 0) => Ok(()),
                Some(_) => Err(Reason::Malformed),
            }
        }
    }
}

/// Parses a verified payload.
pub fn parse(payload: &[u8]) -> Result<Command, Reason> {
    let v: Value = serde_json::from_slice(payload).map_err(|_| Reason::Malformed)?;
    let o = v.as_object().ok_or(Reason::Malformed)?;
    let str_of = |k: &str| o.get(k).and_then(Value::as_str).ok_or(Reason::Malformed);
    let int_of = |k: &str| o.get(k).and_then(Value::as_i64).ok_or(Reason::Malformed);
    let id = str_of("id")?;
    let meter = str_of("meter")?;
    if !valid_id(id) || !crate::credentials::valid_meter_id(meter) {
        return Err(Reason::Malformed);
    }
    let kind = Kind::parse(str_of("kind")?).ok_or(Reason::Malformed)?;
    let args = match o.get("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(Reason::Malformed),
    };
    check_args(kind, &args)?;
    let (iat, exp) = (int_of("iat")?, int_of("exp")?);
    if exp <= iat || iat <= 0 {
        return Err(Reason::Malformed);
    }
    Ok(Command {
        id: id.to_owned(),
        meter: meter.to_owned(),
        kind,
        args: Value::Object(args),
        iat,
        exp,
    })
}

/// Checks the command's time window at `now_s`: `expired` once `exp` has passed,
/// `not_yet_valid` if issued more than `skew_s` in our future. Applied whether or not our
/// clock is synchronised: a Pi booted at its last saved time is behind, so a command looks
/// issued in the future and is refused until NTP corrects the clock; that is the safe side
/// (a refused command is not recorded as seen, the platform sends it again), while trusting
/// an unsynchronised clock for `exp` already errs towards accepting.
pub fn check_time(c: &Command, now_s: i64, skew_s: i64) -> Result<(), Reason> {
    if c.exp < now_s {
        Err(Reason::Expired)
    } else if c.iat > now_s + skew_s {
        Err(Reason::NotYetValid)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: Result<Kind, Reason>) {
        assert_eq!(parse(json.as_bytes()).map(|c| c.kind), expected, "{json}");
    }

    fn cmd(kind: &str, args: &str) -> String {
        format!(
            r#"{{"id":"c-1","meter":"GM-0001","kind":"{kind}","args":{args},"iat":1795340000,"exp":1795343600}}"#
        )
    }

    #[test]
    fn each_kind_takes_its_arguments() {
        use Kind::*;
        use Reason::Malformed as M;
        check(&cmd("top_up", r#"{"token":"123 456 789"}"#), Ok(TopUp));
        check(&cmd("top_up", r#"{"amount":2.5,"unit":"kg"}"#), Ok(TopUp));
        check(
            &cmd(
                "top_up",
                r#"{"amount":10,"unit":"kWh","transaction":"tx-9"}"#,
            ),
            Ok(TopUp),
        );
        check(&cmd("top_up", r#"{}"#), Err(M));
        check(&cmd("top_up", r#"{"amount":2.5}"#), Err(M));
        check(&cmd("top_up", r#"{"amount":-1,"unit":"kg"}"#), Err(M));
        check(&cmd("top_up", r#"{"amount":"2","unit":"kg"}"#), Err(M));
        check(&cmd("top_up", r#"{"amount":2,"unit":"litre"}"#), Err(M));
        check(
            &cmd("top_up", r#"{"token":"1","amount":2,"unit":"kg"}"#),
            Err(M),
        );
        check(&cmd("top_up", r#"{"token":""}"#), Err(M));
        check(&cmd("top_up", r#"{"token":"a\nb"}"#), Err(M));
        check(&cmd("top_up", r#"{"token":"1","unit":"kg"}"#), Err(M));
        check(&cmd("top_up", r#"{"token":"1","extra":1}"#), Err(M));
        check(&cmd("valve", r#"{"state":"open"}"#), Ok(Valve));
        check(&cmd("valve", r#"{"state":"closed"}"#), Ok(Valve));
        check(&cmd("valve", r#"{"state":"shut"}"#), Err(M));
        check(&cmd("valve", r#"{}"#), Err(M));
        check(&cmd("relay", r#"{"state":"open"}"#), Ok(Relay));
        check(&cmd("relay", r#"{"state":true}"#), Err(M));
        check(
            &cmd("tariff", r#"{"price":120,"currency":"KES","unit":"kg"}"#),
            Ok(Tariff),
        );
        check(
            &cmd("tariff", r#"{"price":120,"currency":"kes","unit":"kg"}"#),
            Err(M),
        );
        check(
            &cmd("tariff", r#"{"price":-1,"currency":"KES","unit":"kg"}"#),
            Err(M),
        );
        check(&cmd("tariff", r#"{"currency":"KES","unit":"kg"}"#), Err(M));
        check(&cmd("time_sync", r#"{}"#), Ok(TimeSync));
        check(&cmd("time_sync", r#"null"#), Ok(TimeSync));
        check(&cmd("time_sync", r#"{"time":1795340000}"#), Ok(TimeSync));
        check(&cmd("time_sync", r#"{"time":"now"}"#), Err(M));
        check(&cmd("reboot", r#"{}"#), Err(M));
        check(&cmd("valve", r#"[]"#), Err(M));
    }

    #[test]
    fn the_envelope_is_checked() {
        use Reason::Malformed as M;
        check("", Err(M));
        check("[]", Err(M));
        check("{", Err(M));
        let good = cmd("valve", r#"{"state":"open"}"#);
        check(&good, Ok(Kind::Valve));
        check(&good.replace(r#""id":"c-1""#, r#""id":"""#), Err(M));
        check(&good.replace(r#""id":"c-1""#, r#""id":"a/b""#), Err(M));
        check(&good.replace(r#""id":"c-1""#, r#""id":7"#), Err(M));
        check(
            &good.replace(r#""meter":"GM-0001""#, r#""meter":"GM/+""#),
            Err(M),
        );
        check(&good.replace(r#","iat":1795340000"#, ""), Err(M));
        check(&good.replace("1795343600", "1795340000"), Err(M));
        check(&good.replace("1795343600", "1795343600.5"), Err(M));
        check(&good.replace("1795343600", "\"1795343600\""), Err(M));
        // Extra JWT claims are ignored.
        check(
            &good.replace("{\"id\"", "{\"iss\":\"platform\",\"id\""),
            Ok(Kind::Valve),
        );
    }

    #[test]
    fn the_docs_examples_parse() {
        let doc = include_str!("../../../docs/uplink.md");
        let section = doc
            .split("\n## Commands")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/uplink.md has a Commands section");
        let examples: Vec<&str> = section
            .split("```json\n")
            .skip(1)
            .filter_map(|b| b.split("\n```").next())
            .collect();
        assert!(examples.len() >= 3);
        for e in examples {
            assert!(parse(e.as_bytes()).is_ok(), "{e}");
        }
    }

    #[test]
    fn expiry_and_issue_time() {
        let c = parse(cmd("valve", r#"{"state":"open"}"#).as_bytes()).expect("valid");
        assert_eq!(check_time(&c, c.iat, 300), Ok(()));
        assert_eq!(check_time(&c, c.exp, 300), Ok(()));
        assert_eq!(check_time(&c, c.exp + 1, 300), Err(Reason::Expired));
        assert_eq!(check_time(&c, c.iat - 300, 300), Ok(()));
        assert_eq!(check_time(&c, c.iat - 301, 300), Err(Reason::NotYetValid));
    }
}
