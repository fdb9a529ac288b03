//! The technician's commissioning tools behind `gkgw modbus read|scan|poll`: one register block
//! shown as every type and word order side by side, the unit ids that answer on a bus, and a
//! profile's fields decoded live. Output is plain text for a slow SSH link.

use std::fmt::Write as _;

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
                            // The unit has its own column.
                            let text = decode::field_text(f, &r.value, None);
                            let text = match f.unit.as_deref() {
                                Some(u) => text
                                    .strip_suffix(u)
                                    .map_or(text.as_str(), str::trim_end)
                                    .to_owned(),
                                None => text,
                            };
                            (text, r.sanity.as_str().to_owned())
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
    let reason = super::WriteReason {
        who: format!("cli:{}", operator()),
        why: why.to_owned(),
    };
    let written = super::write(link, unit, profile, field, value, &reason).await?;
    let unit_text = profile.field(field).and_then(|f| f.unit.as_deref());
    let mut out = format!(
        "wrote {field} = {} to unit {unit} on {}",
        decode::value_text(&written, unit_text, None),
        link.transport()
    );
    if matches!(written, decode::DecodedValue::Number(w) if w != value) {
        let _ = write!(
            out,
            " ({} asked; this is the nearest value the register holds)",
            decode::number_text(value)
        );
    }
    Ok(out)
}

pub use crate::os::operator;

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

/// What [`bench_connections`] measured over all its connections.
#[derive(Debug, Clone)]
pub struct BenchSummary {
    pub requests: u64,
    pub registers: u64,
    pub failures: u64,
    pub seconds: f64,
    /// gkgw's own CPU time (user + system) during the run.
    pub cpu_seconds: f64,
}

impl std::fmt::Display for BenchSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (requests, secs, cpu) = (self.requests, self.seconds, self.cpu_seconds);
        write!(
            f,
            "{requests} requests ({} failed), {} registers in {secs:.2} s: {:.0} requests/s, {:.0} registers/s; gkgw CPU {cpu:.2} s = {:.1} µs per request",
            self.failures,
            self.registers,
            requests as f64 / secs,
            self.registers as f64 / secs,
            cpu * 1e6 / requests.max(1) as f64
        )
    }
}

/// `gkgw modbus bench`: [`bench`] on `connections` links to `bus` at once (TCP: one connection
/// each), summed, with the CPU time it cost.
pub async fn bench_connections(
    bus: &crate::config::ModbusBus,
    unit: u8,
    profile: &Profile,
    cycles: u64,
    connections: u32,
) -> Result<BenchSummary, tokio::task::JoinError> {
    let cpu_before = process_cpu_seconds();
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let mut link = Link::for_bus(bus);
        let p = profile.clone();
        tasks.spawn(async move { bench(&mut link, unit, &p, cycles).await });
    }
    let mut sum = BenchSummary {
        requests: 0,
        registers: 0,
        failures: 0,
        seconds: 0.0,
        cpu_seconds: 0.0,
    };
    while let Some(r) = tasks.join_next().await {
        let r = r?;
        sum.requests += r.requests;
        sum.registers += r.registers;
        sum.failures += r.failures;
    }
    sum.seconds = started.elapsed().as_secs_f64();
    sum.cpu_seconds = process_cpu_seconds() - cpu_before;
    Ok(sum)
}

/// User + system CPU time of this process so far (Linux /proc; 0 elsewhere).
pub fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .map(|s| cpu_seconds_of_stat(&s))
        .unwrap_or(0.0)
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds.
fn cpu_seconds_of_stat(stat: &str) -> f64 {
    // Fields after the parenthesised command name (which may hold spaces and parentheses);
    // utime and stime are the 12th and 13th there.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // USER_HZ, which Linux fixes at 100 for /proc whatever the kernel tick
}

#[cfg(test)]
mod cpu_tests {
    #[test]
    fn cpu_time_is_utime_plus_stime() {
        let stat = "4242 (gk (gw) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 5 0";
        assert_eq!(super::cpu_seconds_of_stat(stat), 3.8);
        assert_eq!(super::cpu_seconds_of_stat("garbage"), 0.0);
        assert!(super::process_cpu_seconds() >= 0.0);
    }
}
