//! `gkgw logbook add|list|revise|withdraw`: a client of the running gateway's `/api/logbook`
//! (writes go through the gateway: it validates them against its clock and wakes the
//! logbook's consumers). It speaks the same DTOs as `logbook.rs`, prints the server's field
//! errors one per line, and formats the list as a table for a technician on a slow SSH link.
//! It signs in with a bearer token (`--token-file`, from `gkgw user token NAME --out FILE`);
//! entries are recorded as that token's user.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::logbook::{EntryDto, ErrorsDto};

/// The values a command gives, as flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    pub waste: Option<String>,
    pub kg: Option<f64>,
    pub litres: Option<f64>,
    pub count: Option<f64>,
    pub ph: Option<f64>,
    pub ratio: Option<f64>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Add {
        kind: String,
        values: Values,
        at: Option<String>,
        note: Option<String>,
    },
    List {
        from: Option<String>,
        to: Option<String>,
        history: bool,
    },
    Revise {
        entry: i64,
        values: Values,
        at: Option<String>,
        note: Option<String>,
    },
    Withdraw {
        entry: i64,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no gateway answers at http://{addr} (http.listen of the config): is it running? ({cause})"
    )]
    NotRunning { addr: SocketAddr, cause: String },
    /// The server's field errors, `field: message` each.
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
    #[error("the gateway wants a login: make a token with `gkgw user token NAME --out FILE` and pass --token-file FILE (or set GKGW_TOKEN_FILE); it answered: {0}")]
    Unauthorized(String),
    #[error("the gateway answered {status}: {body}")]
    Unexpected { status: u16, body: String },
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
}

impl Error {
    /// One line per problem, for `error: …` each.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Error::Refused(l) => l.clone(),
            e => vec![e.to_string()],
        }
    }
}

/// The innermost cause of `e` ("Connection refused (os error 111)"), which says more than
/// reqwest's own "client error (Connect)".
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Reads a bearer token from `path` (its first line).
pub fn read_token(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

/// The address to reach a server listening on `listen` (an unspecified address is this host).
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

fn body(values: &Values, extra: &[(&str, Option<&str>)]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in extra {
        if let Some(v) = v {
            m.insert((*k).into(), (*v).into());
        }
    }
    if let Some(w) = &values.waste {
        m.insert("waste".into(), w.as_str().into());
    }
    for (k, v) in [
        ("kg", values.kg),
        ("litres", values.litres),
        ("count", values.count),
        ("ph", values.ph),
        ("ratio", values.ratio),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.into());
        }
    }
    if let Some(t) = &values.text {
        m.insert("text".into(), t.as_str().into());
    }
    serde_json::Value::Object(m)
}

/// Runs `req` against the gateway at `addr` with the bearer `token`; returns what to print on
/// stdout.
/// Sends `req` and renders the answer; times in `zone` (the site's, from its config), or in
/// the shell's `TZ` when it is not known.
pub async fn run(
    addr: SocketAddr,
    token: Option<&str>,
    req: &Request,
    zone: Option<chrono::FixedOffset>,
) -> Result<String, Error> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let base = format!("http://{addr}/api/logbook");
    let builder = match req {
        Request::Add {
            kind,
            values,
            at,
            note,
        } => client.post(&base).body(
            body(
                values,
                &[
                    ("kind", Some(kind)),
                    ("at", at.as_deref()),
                    ("note", note.as_deref()),
                ],
            )
            .to_string(),
        ),
        Request::List { from, to, history } => {
            let mut q: Vec<(&str, &str)> = Vec::new();
            if let Some(f) = from {
                q.push(("from", f));
            }
            if let Some(t) = to {
                q.push(("to", t));
            }
            if *history {
                q.push(("history", "true"));
            }
            client.get(&base).query(&q)
        }
        Request::Revise {
            entry,
            values,
            at,
            note,
        } => client
            .post(format!("{base}/{entry}/revise"))
            .body(body(values, &[("at", at.as_deref()), ("note", note.as_deref())]).to_string()),
        Request::Withdraw { entry, reason } => client
            .post(format!("{base}/{entry}/withdraw"))
            .body(body(&Values::default(), &[("reason", Some(reason))]).to_string()),
    };
    let builder = match token {
        Some(t) => builder.bearer_auth(t),
        None => builder,
    };
    let resp = builder
        .header("content-type", "application/json")
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                Error::NotRunning {
                    addr,
                    cause: innermost(&e),
                }
            } else {
                Error::Http(e)
            }
        })?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    if status == 401 {
        return Err(Error::Unauthorized(text));
    }
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_str::<ErrorsDto>(&text) {
            Ok(d) => Error::Refused(
                d.errors
                    .into_iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect(),
            ),
            Err(_) => Error::Unexpected { status, body: text },
        });
    }
    let unexpected = |_| Error::Unexpected {
        status,
        body: text.clone(),
    };
    Ok(match req {
        Request::List { .. } => {
            let list: Vec<EntryDto> = serde_json::from_str(&text).map_err(unexpected)?;
            table(&list, zone)
        }
        _ => {
            let e: EntryDto = serde_json::from_str(&text).map_err(unexpected)?;
            let what = match (e.withdrawn, e.revision) {
                (true, _) => "withdrawn".to_owned(),
                (false, 1) => "recorded".to_owned(),
                (false, n) => format!("corrected (revision {n})"),
            };
            let head = format!("entry {} {what}\n", e.entry);
            head + &table(&[e], zone)
        }
    })
}

/// A time in `zone` (the site's), or the shell's `TZ` without one, with its offset.
fn local(rfc3339: &str, zone: Option<chrono::FixedOffset>) -> String {
    const FORMAT: &str = "%Y-%m-%d %H:%M%:z";
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| match zone {
            Some(z) => t.with_timezone(&z).format(FORMAT).to_string(),
            None => t.with_timezone(&chrono::Local).format(FORMAT).to_string(),
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}

/// The values of an entry in a few words: `household 120 kg`, `pH 7.1`.
pub fn values_text(e: &EntryDto) -> String {
    let mut s = String::new();
    if let Some(w) = &e.waste {
        let _ = write!(s, "{w} ");
    }
    if let Some(kg) = e.kg {
        let _ = write!(s, "{kg} kg");
    }
    if let Some(l) = e.litres {
        let _ = write!(s, "{l} L");
    }
    if let Some(c) = e.count {
        let _ = write!(s, "{c} cylinders");
    }
    if let Some(p) = e.ph {
        let _ = write!(s, "pH {p}");
    }
    if let Some(r) = e.ratio {
        let _ = write!(s, "FOS/TAC {r}");
    }
    if let Some(t) = &e.text {
        s.push_str(t);
    }
    s
}

/// Strips what would break a table row (a newline in a note).
pub(crate) fn cell(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Rows as text columns, each padded to its widest cell, two spaces apart (the CLIs' tables).
pub(crate) fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{c:<w$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table `gkgw logbook list` prints: one row per revision, columns padded to fit.
pub fn table(list: &[EntryDto], zone: Option<chrono::FixedOffset>) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "ENTRY".into(),
        "REV".into(),
        "WHEN".into(),
        "KIND".into(),
        "VALUES".into(),
        "BY".into(),
        "NOTE".into(),
    ]];
    for e in list {
        let note = match (&e.note, e.withdrawn, &e.reason) {
            (n, true, r) => format!(
                "WITHDRAWN: {}{}",
                r.as_deref().unwrap_or(""),
                n.as_deref().map_or(String::new(), |n| format!(" ({n})"))
            ),
            (Some(n), false, _) => n.clone(),
            (None, false, _) => String::new(),
        };
        rows.push([
            e.entry.to_string(),
            e.revision.to_string(),
            local(&e.at, zone),
            e.kind.clone(),
            cell(&values_text(e)),
            cell(&e.by),
            cell(&note),
        ]);
    }
    let mut out = columns(&rows);
    if list.is_empty() {
        out.push_str("(no entries)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dto(entry: i64, revision: u32) -> EntryDto {
        EntryDto {
            id: entry,
            entry,
            revision,
            kind: "waste_fed".into(),
            waste: Some("household".into()),
            kg: Some(120.0),
            litres: None,
            count: None,
            ph: None,
            ratio: None,
            text: None,
            at: "2026-12-01T05:00:00.000Z".into(),
            at_ms: 0,
            by: "amina".into(),
            recorded_at: "2026-12-01T05:00:00.000Z".into(),
            note: Some("morning\nfeed".into()),
            withdrawn: false,
            reason: None,
        }
    }

    #[test]
    fn times_are_shown_in_the_sites_zone() {
        let kigali = chrono::FixedOffset::east_opt(2 * 3600);
        assert_eq!(
            local("2026-11-22T06:30:00Z", kigali),
            "2026-11-22 08:30+02:00"
        );
        assert_eq!(local("not a time", kigali), "not a time");
    }

    #[test]
    fn the_table_lines_up_and_marks_withdrawals() {
        let w = EntryDto {
            withdrawn: true,
            reason: Some("entered twice".into()),
            note: None,
            ..dto(12, 2)
        };
        let t = table(&[dto(1, 1), w], None);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ENTRY  REV  WHEN"), "{t}");
        assert!(
            lines[1].contains("household 120 kg  amina  morning feed"),
            "{t}"
        );
        assert!(lines[2].starts_with("12     2    "), "{t}");
        assert!(lines[2].ends_with("WITHDRAWN: entered twice"), "{t}");
        assert_eq!(
            table(&[], None),
            "ENTRY  REV  WHEN  KIND  VALUES  BY  NOTE\n(no entries)\n"
        );
    }

    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        assert_eq!(
            connect_addr("0.0.0.0:8080".parse().expect("addr")),
            "127.0.0.1:8080".parse().expect("addr")
        );
        assert_eq!(
            connect_addr("10.0.0.2:80".parse().expect("addr")),
            "10.0.0.2:80".parse().expect("addr")
        );
    }
}
