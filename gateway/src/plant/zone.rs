//! The site's time zone, for its local days: a fixed offset from UTC, named the way the config
//! names it (`Africa/Nairobi`, `UTC`, `UTC+03:00`).
//!
//! Why a table and not a time zone database (`chrono-tz`, `tzfile`): the gateway's sites are in
//! Africa, where every zone in [`ZONES`] has kept one offset with no daylight saving for years,
//! and a database would add a large dependency and a yearly update duty for no gain. Zones that
//! do change offset (Africa/Casablanca and El_Aaiun in Ramadan, Africa/Cairo and Ceuta in summer)
//! are deliberately absent: refusing them is better than computing wrong days. A site elsewhere
//! writes its offset (`UTC+05:00`).
//!
//! Only whole-hour offsets are accepted: the aggregator's hour windows are UTC hours, and a local
//! day is exactly 24 of them only when the offset is a whole number of hours.
//!
//! Architecture invariant: pure (no clock, no I/O); time is given as Unix nanoseconds.

use std::fmt;

use chrono::{Datelike as _, FixedOffset, NaiveDate};

const HOUR_S: i32 = 3600;
const DAY_NS: i64 = 86_400_000_000_000;

/// The named zones, with their offset from UTC in hours. None observes daylight saving.
pub const ZONES: &[(&str, i32)] = &[
    // East Africa Time, UTC+3.
    ("Africa/Nairobi", 3),
    ("Africa/Kampala", 3),
    ("Africa/Dar_es_Salaam", 3),
    ("Africa/Addis_Ababa", 3),
    ("Africa/Mogadishu", 3),
    ("Africa/Djibouti", 3),
    ("Africa/Asmara", 3),
    // Central Africa Time and South Africa Standard Time, UTC+2.
    ("Africa/Kigali", 2),
    ("Africa/Bujumbura", 2),
    ("Africa/Lusaka", 2),
    ("Africa/Harare", 2),
    ("Africa/Maputo", 2),
    ("Africa/Blantyre", 2),
    ("Africa/Gaborone", 2),
    ("Africa/Lubumbashi", 2),
    ("Africa/Johannesburg", 2),
    ("Africa/Maseru", 2),
    ("Africa/Mbabane", 2),
    ("Africa/Windhoek", 2),
    ("Africa/Juba", 2),
    ("Africa/Khartoum", 2),
    ("Africa/Tripoli", 2),
    // West Africa Time and Central European Time without DST, UTC+1.
    ("Africa/Lagos", 1),
    ("Africa/Kinshasa", 1),
    ("Africa/Douala", 1),
    ("Africa/Libreville", 1),
    ("Africa/Luanda", 1),
    ("Africa/Malabo", 1),
    ("Africa/Niamey", 1),
    ("Africa/Ndjamena", 1),
    ("Africa/Porto-Novo", 1),
    ("Africa/Brazzaville", 1),
    ("Africa/Bangui", 1),
    ("Africa/Algiers", 1),
    ("Africa/Tunis", 1),
    // Greenwich Mean Time, UTC+0.
    ("Africa/Accra", 0),
    ("Africa/Abidjan", 0),
    ("Africa/Bamako", 0),
    ("Africa/Banjul", 0),
    ("Africa/Bissau", 0),
    ("Africa/Conakry", 0),
    ("Africa/Dakar", 0),
    ("Africa/Freetown", 0),
    ("Africa/Lome", 0),
    ("Africa/Monrovia", 0),
    ("Africa/Nouakchott", 0),
    ("Africa/Ouagadougou", 0),
    ("Africa/Sao_Tome", 0),
];

/// A validated site time zone: a name and a whole-hour offset from UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    name: String,
    offset_h: i32,
}

impl Default for Zone {
    fn default() -> Zone {
        Zone {
            name: "Africa/Nairobi".into(),
            offset_h: 3,
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Zone {
    /// `Africa/Nairobi` (a name of [`ZONES`]), `UTC`, or `UTC+03:00` / `UTC-01:00` (whole hours,
    /// −12 to +14). The error says what is accepted.
    pub fn parse(s: &str) -> Result<Zone, String> {
        if let Some(&(name, offset_h)) = ZONES.iter().find(|(n, _)| *n == s) {
            return Ok(Zone {
                name: name.into(),
                offset_h,
            });
        }
        if s == "UTC" {
            return Ok(Zone {
                name: s.into(),
                offset_h: 0,
            });
        }
        let refuse = || {
            let names: Vec<&str> = ZONES.iter().map(|(n, _)| *n).collect();
            format!(
                "{s:?} is not a time zone the gateway knows (it has no time zone database): write UTC, a whole-hour offset such as UTC+03:00, or one of the zones without daylight saving: {}",
                names.join(", ")
            )
        };
        let Some(rest) = s.strip_prefix("UTC") else {
            return Err(refuse());
        };
        let (sign, hhmm) = match rest.as_bytes().first() {
            Some(b'+') => (1, &rest[1..]),
            Some(b'-') => (-1, &rest[1..]),
            _ => return Err(refuse()),
        };
        let Some((hh, mm)) = hhmm.split_once(':') else {
            return Err(refuse());
        };
        let digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(hh) || !digits(mm) {
            return Err(refuse());
        }
        let (h, m): (i32, i32) = (hh.parse().unwrap_or(99), mm.parse().unwrap_or(99));
        if m != 0 {
            return Err(format!(
                "{s:?}: only whole-hour offsets are accepted (the hour windows are UTC hours, so a local day must be 24 of them)"
            ));
        }
        let offset_h = sign * h;
        if !(-12..=14).contains(&offset_h) {
            return Err(format!(
                "{s:?}: the offset must be from UTC-12:00 to UTC+14:00"
            ));
        }
        Ok(Zone {
            name: s.into(),
            offset_h,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Seconds east of UTC.
    pub fn offset_s(&self) -> i32 {
        self.offset_h * HOUR_S
    }

    /// The offset as chrono's type, for formatting times with it.
    pub fn fixed_offset(&self) -> FixedOffset {
        FixedOffset::east_opt(self.offset_s()).expect("the offset is within ±14 h")
    }

    fn offset_ns(&self) -> i64 {
        i64::from(self.offset_s()) * 1_000_000_000
    }

    /// The local date at the instant `ts_ns`.
    pub fn local_date(&self, ts_ns: i64) -> NaiveDate {
        let days = (ts_ns + self.offset_ns()).div_euclid(DAY_NS);
        NaiveDate::from_num_days_from_ce_opt(UNIX_EPOCH_CE_DAY + days as i32)
            .expect("a time in i64 nanoseconds is within chrono's dates")
    }

    /// The instant (Unix ns) the local day `date` starts; it ends 24 hours later.
    pub fn day_start_ns(&self, date: NaiveDate) -> i64 {
        let days = i64::from(date.num_days_from_ce() - UNIX_EPOCH_CE_DAY);
        days * DAY_NS - self.offset_ns()
    }

    /// The start of the local day holding `ts_ns`.
    pub fn day_start_of(&self, ts_ns: i64) -> i64 {
        (ts_ns + self.offset_ns()).div_euclid(DAY_NS) * DAY_NS - self.offset_ns()
    }
}

/// 1970-01-01 counted from 0001-01-01 (chrono's `num_days_from_ce` of the Unix epoch).
const UNIX_EPOCH_CE_DAY: i32 = 719_163;

impl TryFrom<String> for Zone {
    type Error = String;
    fn try_from(s: String) -> Result<Zone, String> {
        Zone::parse(&s)
    }
}

impl<'de> serde::Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
        let s = String::deserialize(d)?;
        Zone::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;
    /// 2026-12-01T00:00:00Z.
    const T0: i64 = 1_796_083_200_000_000_000;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a date")
    }

    /// At `ts_ns` in `zone`, the local day is `day` and starts at `start_ns`.
    fn check(zone: &str, ts_ns: i64, day: NaiveDate, start_ns: i64) {
        let z = Zone::parse(zone).expect("a zone");
        assert_eq!(z.local_date(ts_ns), day, "{zone} at {ts_ns}");
        assert_eq!(z.day_start_of(ts_ns), start_ns, "{zone} at {ts_ns}");
        assert_eq!(z.day_start_ns(day), start_ns, "{zone} {day}");
    }

    #[test]
    fn local_day_start_in_utc() {
        // Nairobi (UTC+3): 2026-12-01 starts at 2026-11-30T21:00Z.
        check("Africa/Nairobi", T0, date(2026, 12, 1), T0 - 3 * H);
        check("Africa/Nairobi", T0 - 3 * H, date(2026, 12, 1), T0 - 3 * H);
        check(
            "Africa/Nairobi",
            T0 - 3 * H - 1,
            date(2026, 11, 30),
            T0 - 27 * H,
        );
        check("Africa/Nairobi", T0 + 20 * H, date(2026, 12, 1), T0 - 3 * H);
        check(
            "Africa/Nairobi",
            T0 + 21 * H,
            date(2026, 12, 2),
            T0 + 21 * H,
        );
        // Kigali (UTC+2), Lagos (+1), Accra (0).
        check("Africa/Kigali", T0 + 21 * H, date(2026, 12, 1), T0 - 2 * H);
        check("Africa/Lagos", T0 + 23 * H, date(2026, 12, 2), T0 + 23 * H);
        check("Africa/Accra", T0 + 23 * H, date(2026, 12, 1), T0);
        check("UTC", T0 - 1, date(2026, 11, 30), T0 - 24 * H);
        check("UTC-01:00", T0, date(2026, 11, 30), T0 - 23 * H);
        check("UTC+14:00", T0 + 10 * H, date(2026, 12, 2), T0 + 10 * H);
        // Before 1970 and across a leap day.
        check("UTC+03:00", -1, date(1970, 1, 1), -3 * H);
        check(
            "Africa/Nairobi",
            date(2028, 2, 29)
                .and_hms_opt(12, 0, 0)
                .expect("noon")
                .and_utc()
                .timestamp_nanos_opt()
                .expect("ns"),
            date(2028, 2, 29),
            date(2028, 2, 28)
                .and_hms_opt(21, 0, 0)
                .expect("21:00")
                .and_utc()
                .timestamp_nanos_opt()
                .expect("ns"),
        );
    }

    #[test]
    fn names_and_offsets_are_parsed_and_others_refused() {
        let off = |s: &str| Zone::parse(s).map(|z| z.offset_s() / 3600);
        assert_eq!(off("Africa/Nairobi"), Ok(3));
        assert_eq!(off("Africa/Dar_es_Salaam"), Ok(3));
        assert_eq!(off("Africa/Maputo"), Ok(2));
        assert_eq!(off("UTC"), Ok(0));
        assert_eq!(off("UTC+03:00"), Ok(3));
        assert_eq!(off("UTC-05:00"), Ok(-5));
        assert_eq!(Zone::default(), Zone::parse("Africa/Nairobi").expect("ok"));
        for bad in [
            "Europe/Paris",
            "Africa/Casablanca",
            "africa/nairobi",
            "EAT",
            "UTC+3",
            "UTC+03",
            "UTC+3:00",
            "",
        ] {
            let e = Zone::parse(bad).expect_err(bad);
            assert!(
                e.contains("not a time zone")
                    && e.contains("UTC+03:00")
                    && e.contains("Africa/Kigali"),
                "{bad}: {e}"
            );
        }
        assert!(Zone::parse("UTC+05:30")
            .expect_err("half hour")
            .contains("whole-hour"));
        assert!(Zone::parse("UTC+15:00")
            .expect_err("too far")
            .contains("UTC+14:00"));
        assert_eq!(
            Zone::parse("UTC+03:00")
                .expect("ok")
                .fixed_offset()
                .to_string(),
            "+03:00"
        );
    }
}
