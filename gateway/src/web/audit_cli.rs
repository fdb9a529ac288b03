//! `gkgw audit list`: the audit log, newest first: what people did (logins, failed logins,
//! logouts, user changes, logbook writes, alarm operations, commands submitted, each with the
//! user) and every platform command's events (accepted, delivered, applied, refused with the
//! reason). Read from the store of the state directory (as `gkgw user` does), so it works
//! whether or not the gateway runs, and needs no login: reading the state directory is the
//! permission.

use std::fmt::Write as _;
use std::path::Path;

use super::logbook_cli::{cell, columns};
use super::users::{merged, AuditDto};
use super::users_cli::Error;
use crate::store::users::Users;

/// The newest `limit` rows of both logs; `commands_enabled` (None: not known, no config) adds
/// a note when commands are off. Returns what to print.
pub fn list(
    state_dir: &Path,
    limit: usize,
    commands_enabled: Option<bool>,
) -> Result<String, Error> {
    if !state_dir.is_dir() || !crate::store::db_path(state_dir).exists() {
        return Err(Error::NoStateDir(state_dir.to_owned()));
    }
    let u = Users::open(&crate::store::db_path(state_dir))?;
    let rows = u.recent_audit(limit)?;
    let (commands, pending) = u.recent_commands(limit)?;
    let mut out = table(&merged(rows, commands, limit));
    let _ = writeln!(
        out,
        "{pending} command(s) pending{}",
        if commands_enabled == Some(false) {
            " (commands disabled: no commands.platform_key_file)"
        } else {
            ""
        }
    );
    Ok(out)
}

/// One row per event: WHEN, WHO, ACTION, TARGET, DETAIL, VIA.
pub fn table(rows: &[AuditDto]) -> String {
    let mut out: Vec<[String; 6]> = vec![[
        "WHEN".into(),
        "WHO".into(),
        "ACTION".into(),
        "TARGET".into(),
        "DETAIL".into(),
        "VIA".into(),
    ]];
    let opt = |s: &Option<String>| cell(s.as_deref().unwrap_or("-"));
    for r in rows {
        out.push([
            r.at.clone(),
            opt(&r.user),
            cell(&r.action),
            opt(&r.target),
            cell(r.detail.as_deref().unwrap_or("")),
            cell(&r.via),
        ]);
    }
    columns(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_who_did_what() {
        let r = |user: Option<&str>, action: &str, target: &str, detail: &str| AuditDto {
            at: "2026-12-02T04:00:00.000Z".into(),
            ts_ns: 0,
            user: user.map(Into::into),
            action: action.into(),
            target: Some(target.into()),
            detail: Some(detail.into()),
            via: "web 10.0.0.5".into(),
        };
        let t = table(&[
            r(
                Some("amina"),
                "alarm",
                "gas_leak:kitchen",
                "ack: ventilated\nvalve closed",
            ),
            r(None, "command_refused", "c-1 GM-0001 top_up", "replayed"),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("WHEN"));
        assert!(
            lines[1].contains("amina") && lines[1].contains("ack: ventilated valve closed"),
            "{t}"
        );
        assert!(lines[2].contains("command_refused") && lines[2].contains("replayed"));
    }

    #[test]
    fn a_missing_store_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = list(&dir.path().join("nowhere"), 10, None).expect_err("missing");
        assert!(err.to_string().contains("no state directory"), "{err}");
    }
}
