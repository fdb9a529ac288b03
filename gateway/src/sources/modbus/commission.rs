//! The technician's commissioning tools behind `gkgw modbus read|scan|poll`: one register block
//! shown as every type and word order side by side, the unit ids that answer on a bus, and a
//! profile's fields decoded live. Output is plain text for a slow SSH link.

use std::fmt::Write as _;
use std::time::Duration;

use super::link::{Data, Error, Link};
use super::profile::{Profile, RegisterKind};
use super::{decode, plan};

/// Reads one block and formats it. Registers get the side-by-side table; bits a list.
pub async fn read(
    link: &mut Link,
    unit: u8,
    kind: RegisterKind,
    address: u16,
    count: u16,
) -> Result<String, Error> {
    let (data, latency) = link.read(unit, kind, address, count).await?;
    let mut out = format!(
        "{} unit {unit}, {kind:?} {address}..{} ({} ms)\n",
        link.transport(),
        address as u32 + count as u32,
        latency.as_millis()
    );
    match data {
        Data::Registers(regs) => out.push_str(&decode::format_dump(&decode::dump(address, &regs))),
        Data::Bits(bits) => {
            for (i, b) in bits.iter().enumerate() {
                let _ = writeln!(out, "{:>6}  {}", address as usize + i, u8::from(*b));
            }
        }
    }
    Ok(out)
}

/// Tries every unit id in `units` with a one-register read; an exception also means "present".
/// Fails when the bus itself cannot be reached (no such serial port, nothing listening).
pub async fn scan(
    link: &mut Link,
    units: impl IntoIterator<Item = u8>,
    kind: RegisterKind,
    address: u16,
) -> Result<Vec<(u8, String)>, Error> {
    let mut found = Vec::new();
    for unit in units {
        match link.read(unit, kind, address, 1).await {
            Ok((_, latency)) => found.push((unit, format!("answers ({} ms)", latency.as_millis()))),
            Err(e @ Error::Exception(_)) => found.push((unit, format!("present, {e}"))),
            Err(e @ Error::Connect { .. }) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(found)
}

/// What [`poll`] read: the table to print, and how many fields were decoded at all.
#[derive(Debug, Clone)]
pub struct PollReport {
    pub text: String,
    pub fields: usize,
    /// Fields decoded from a reply, whatever their quality.
    pub read: usize,
}

/// Nothing could be read: every request was refused.
#[derive(Debug, thiserror::Error)]
#[error("none of the {fields} fields could be read")]
pub struct NothingRead {
    pub fields: usize,
}

impl PollReport {
    /// `gkgw modbus poll` fails when the device answered nothing but exceptions.
    pub fn ensure_something_read(&self) -> Result<(), NothingRead> {
        if self.read == 0 && self.fields > 0 {
            return Err(NothingRead {
                fields: self.fields,
            });
        }
        Ok(())
    }
}

/// Polls every field of `profile` once and formats name, quantity, value, unit and quality.
pub async fn poll(link: &mut Link, unit: u8, profile: &Profile) -> Result<PollReport, Error> {
    let mut planner = plan::Planner::new(&profile.fields, profile.device.limits);
    let requests = planner.plan(&(0..profile.fields.len()).collect::<Vec<_>>());
    let mut out = format!(
        "{} unit {unit}: {} ({} fields in {} requests)\n",
        link.transport(),
        profile.device.model,
        profile.fields.len(),
        requests.len()
    );
    let _ = writeln!(
        out,
        "{:<24} {:<32} {:>16} {:<8} quality",
        "field", "quantity", "value", "unit"
    );
    let mut queue: std::collections::VecDeque<_> = requests.into();
    let mut read = 0;
    while let Some(req) = queue.pop_front() {
        match link.read(unit, req.kind, req.address, req.count).await {
            Ok((data, _)) => {
                for &fi in &req.fields {
                    let f = &profile.fields[fi];
                    let (value, quality) = match super::decode_field(&req, f, &data) {
                        Some(Ok(r)) => {
                            read += 1;
                            (value_text(&r.value, None), r.quality.as_str().to_owned())
                        }
                        Some(Err(e)) => ("-".into(), e.to_string()),
                        None => ("-".into(), "reply does not cover the field".into()),
                    };
                    let _ = writeln!(
                        out,
                        "{:<24} {:<32} {:>16} {:<8} {quality}",
                        f.name,
                        f.quantity,
                        value,
                        f.unit.as_deref().unwrap_or("")
                    );
                }
            }
            Err(e @ Error::Exception(_)) => match planner.on_exception(&req) {
                plan::Recovery::Retry(parts) => {
                    let _ = writeln!(
                        out,
                        "(request {:?} {}+{} refused: {e}; split)",
                        req.kind, req.address, req.count
                    );
                    for p in parts.into_iter().rev() {
                        queue.push_front(p);
                    }
                }
                plan::Recovery::Unreadable(fields) => {
                    for fi in fields {
                        let f = &profile.fields[fi];
                        let _ = writeln!(
                            out,
                            "{:<24} {:<32} {:>16} {:<8} {e}",
                            f.name,
                            f.quantity,
                            "-",
                            f.unit.as_deref().unwrap_or("")
                        );
                    }
                }
            },
            Err(e) => return Err(e),
        }
    }
    Ok(PollReport {
        text: out,
        fields: profile.fields.len(),
        read,
    })
}

/// `gkgw modbus write`: writes one field through [`super::write`], logged as done by
/// [`operator`], and says what the device was sent (which may differ from `value` by the
/// register's resolution).
pub async fn write(
    link: &mut Link,
    unit: u8,
    profile: &Profile,
    field: &str,
    value: f64,
    why: &str,
) -> Result<String, super::WriteError> {
    let who = format!("cli:{}", operator());
    let reason = super::WriteReason { who: &who, why };
    let written = super::write(link, unit, profile, field, value, reason).await?;
    let unit_text = profile.field(field).and_then(|f| f.unit.as_deref());
    let mut out = format!(
        "wrote {field} = {} to unit {unit} on {}",
        value_text(&written, unit_text),
        link.transport()
    );
    if matches!(written, decode::Value::Number(w) if w != value) {
        let _ = write!(
            out,
            " ({} asked; this is the nearest value the register holds)",
            number_text(value)
        );
    }
    Ok(out)
}

/// Who runs this command, for the audit line of a write: the login user (what `getlogin`
/// reports, from the session's audit login uid, which `sudo` and `su` keep), else the user
/// `sudo` was run by, else the name of the real uid. `$USER` is not used: it is often unset
/// (cron, systemd, `sudo -i` rewrites it) and says nothing `getlogin` does not.
pub fn operator() -> String {
    let sudo_user = || std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty());
    if let Some(name) = login_name().or_else(sudo_user) {
        return name;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// `getlogin`: the user logged in on this session, if there is one.
fn login_name() -> Option<String> {
    // SAFETY: getlogin returns null or a NUL-terminated string in a static buffer, valid until
    // the next getlogin call; it is copied at once, and nothing else in gkgw calls getlogin.
    // (libc exposes no getlogin_r for every target.)
    let name = unsafe { libc::getlogin() };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null, so a NUL-terminated string (above).
    let name = unsafe { std::ffi::CStr::from_ptr(name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

/// The user name of `uid` from the passwd database (NSS: files, LDAP, ...).
fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut size = 1024;
    while size <= 1 << 20 {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids); it is only
        // read after getpwuid_r filled it in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the strings in `pwd` point into `buf`,
        // which outlives their use below.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        match rc {
            libc::ERANGE => size *= 4,
            0 if !found.is_null() && !pwd.pw_name.is_null() => {
                // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
                let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
                return Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty());
            }
            _ => return None,
        }
    }
    None
}

/// A decoded value as text, with its unit when given.
pub fn value_text(v: &decode::Value, unit: Option<&str>) -> String {
    let text = match v {
        decode::Value::Number(n) => number_text(*n),
        decode::Value::Bool(b) => b.to_string(),
        decode::Value::Text(t) => t.clone(),
    };
    match unit {
        Some(u) if matches!(v, decode::Value::Number(_)) => format!("{text} {u}"),
        _ => text,
    }
}

/// A decoded number as a technician compares it with the device's display: the shortest text
/// that reads back as the same f64, integers in full (also 64-bit ones). The decoder already
/// made the value the decimal the device meant (`decode::scaled`), so this is also exactly
/// what the store and InfluxDB hold.
pub fn number_text(n: f64) -> String {
    format!("{n}")
}

pub fn default_timeout() -> Duration {
    Duration::from_millis(1000)
}

/// The read plan of a whole profile (every field due at once) and its RTU bus time at `bauds`,
/// against the theoretical minimum: what an installer checks before putting a device on a slow bus.
pub fn plan_report(profile: &Profile, bauds: &[u32]) -> String {
    let planner = plan::Planner::new(&profile.fields, profile.device.limits);
    let requests = planner.plan(&(0..profile.fields.len()).collect::<Vec<_>>());
    let limits = &profile.device.limits;
    let mut out = format!(
        "{}: {} fields, {} read requests per full cycle (max gap {}, max {} registers per request)\n",
        profile.device.model,
        profile.fields.len(),
        requests.len(),
        limits.max_gap,
        limits.max_registers
    );
    for r in &requests {
        let names: Vec<&str> = r
            .fields
            .iter()
            .map(|&i| profile.fields[i].name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "  {:?} {}+{}: {}",
            r.kind,
            r.address,
            r.count,
            names.join(", ")
        );
    }
    let spans: Vec<plan::Span> = profile.fields.iter().map(plan::Span::from).collect();
    for &baud in bauds {
        let cost = plan::plan_cost(&requests, baud);
        let best = plan::optimal_cost(&spans, limits, baud);
        let bound = plan::minimum_cost(&spans, limits, baud);
        let _ = writeln!(
            out,
            "  {baud} baud: {} requests, {} bytes, {:.1} ms on the bus; best contiguous plan {} requests, {:.1} ms (ratio {:.2}); holes-free bound {} requests, {:.1} ms (ratio {:.2})",
            cost.requests,
            cost.bytes,
            cost.seconds * 1e3,
            best.requests,
            best.seconds * 1e3,
            cost.seconds / best.seconds,
            bound.requests,
            bound.seconds * 1e3,
            cost.seconds / bound.seconds
        );
    }
    out
}

#[cfg(test)]
mod operator_tests {
    #[test]
    fn the_operator_has_a_name() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        assert!(super::user_name(u32::MAX - 7).is_none());
        assert!(!super::operator().is_empty());
    }
}

#[cfg(test)]
mod number_tests {
    #[test]
    fn numbers_print_in_full_without_float_noise() {
        assert_eq!(
            super::number_text(9_007_199_254_740_989.0),
            "9007199254740989"
        );
        assert_eq!(super::number_text(-12345.0), "-12345");
        assert_eq!(super::number_text(12345.6789012), "12345.6789012");
        assert_eq!(super::number_text(12345.678901234567), "12345.678901234567");
        assert_eq!(super::number_text(f64::NAN), "NaN");
        let f32_field = super::super::decode::f32_decimal(11.62);
        assert_eq!(super::number_text(f32_field), "11.62");
    }
}

/// What [`bench`] measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub requests: u64,
    pub registers: u64,
    pub failures: u64,
    pub seconds: f64,
}

/// Polls every field of `profile` back to back for `cycles` full cycles through the same
/// planner, link and decoder the bus poller uses (the Modbus load tool).
pub async fn bench(link: &mut Link, unit: u8, profile: &Profile, cycles: u64) -> BenchResult {
    let planner = plan::Planner::new(&profile.fields, profile.device.limits);
    let requests = planner.plan(&(0..profile.fields.len()).collect::<Vec<_>>());
    let mut r = BenchResult {
        requests: 0,
        registers: 0,
        failures: 0,
        seconds: 0.0,
    };
    let started = std::time::Instant::now();
    for _ in 0..cycles {
        for req in &requests {
            r.requests += 1;
            match link.read(unit, req.kind, req.address, req.count).await {
                Ok((data, _)) => {
                    r.registers += u64::from(req.count);
                    for &fi in &req.fields {
                        let _ = std::hint::black_box(super::decode_field(
                            req,
                            &profile.fields[fi],
                            &data,
                        ));
                    }
                }
                Err(_) => r.failures += 1,
            }
        }
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}
