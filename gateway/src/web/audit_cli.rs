//! `gkgw audit list`: the commands' audit log through the running gateway's `/api/commands`
//! (the gateway holds the state directory's lock), printed as a table: one row per event,
//! newest first. Logins, acknowledgements and logbook revisions join it with their issues.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::commands::{EventDto, ListDto};
use super::logbook_cli::Error;

use super::logbook_cli::{cell, columns, innermost};

/// Fetches the newest `limit` events; returns what to print.
pub async fn list(addr: SocketAddr, limit: usize) -> Result<String, Error> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let resp = client
        .get(format!("http://{addr}/api/commands"))
        .query(&[("limit", limit.to_string())])
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
    let list: ListDto = match serde_json::from_str(&text) {
        Ok(l) if (200..300).contains(&status) => l,
        _ => return Err(Error::Unexpected { status, body: text }),
    };
    let mut out = table(&list.events);
    let _ = writeln!(
        out,
        "{} pending{}",
        list.pending,
        if list.enabled {
            ""
        } else {
            " (commands disabled: no commands.platform_key_file)"
        }
    );
    Ok(out)
}

/// One row per event: WHEN, COMMAND, METER, KIND, OUTCOME, REASON/DETAIL, CREDIT, VIA.
pub fn table(events: &[EventDto]) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "WHEN".into(),
        "COMMAND".into(),
        "METER".into(),
        "KIND".into(),
        "OUTCOME".into(),
        "REASON".into(),
        "CREDIT".into(),
        "VIA".into(),
    ]];
    let opt = |s: &Option<String>| cell(s.as_deref().unwrap_or("-"));
    for e in events {
        rows.push([
            e.at.clone(),
            opt(&e.id),
            opt(&e.meter),
            opt(&e.kind),
            e.outcome.clone(),
            cell(e.reason.as_deref().or(e.detail.as_deref()).unwrap_or("")),
            e.credit.map_or(String::new(), |c| c.to_string()),
            cell(&e.via),
        ]);
    }
    columns(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_outcome_and_reason() {
        let e = |row, outcome: &str, reason: Option<&str>, detail: Option<&str>| EventDto {
            row,
            at: "2026-12-02T04:00:00.000Z".into(),
            id: Some("c-1".into()),
            meter: Some("GM-0001".into()),
            kind: Some("top_up".into()),
            outcome: outcome.into(),
            reason: reason.map(Into::into),
            detail: detail.map(Into::into),
            credit: None,
            via: "http".into(),
        };
        let t = table(&[
            e(2, "applied", None, Some("credited\n2 kg")),
            e(1, "refused", Some("replayed"), None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("WHEN"));
        assert!(lines[1].contains("applied") && lines[1].contains("credited 2 kg"));
        assert!(lines[2].contains("refused") && lines[2].contains("replayed"));
    }
}
