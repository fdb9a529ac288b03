//! Request planning: which reads to send for the fields due this cycle.
//!
//! On a 2400-baud RS-485 line every request costs ~20 characters of framing
//! and silence (~90 ms) before any data moves, so reading fields one by one
//! would starve the bus. The planner merges fields of the same table into as
//! few reads as possible, reading across small holes, within the per-request
//! limit. Some devices reject reads that cross unimplemented registers or
//! exceed an undocumented size; [`Planner::on_exception`] learns where to stop
//! merging instead of failing every cycle. All of it is pure: time is passed
//! in, requests are returned, the caller does the I/O.

use super::profile::{Field, Limits, RegisterKind};
use std::collections::BTreeSet;
use std::time::Duration;

/// A field's footprint on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub kind: RegisterKind,
    pub address: u16,
    pub count: u16,
}

impl Span {
    pub const fn new(kind: RegisterKind, address: u16, count: u16) -> Self {
        Span {
            kind,
            address,
            count,
        }
    }

    /// One past the last address, as u32 so 0xFFFF + 1 does not overflow.
    pub fn end(self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

impl From<&Field> for Span {
    fn from(f: &Field) -> Self {
        Span {
            kind: f.kind,
            address: f.address,
            count: f.count,
        }
    }
}

/// One Modbus read and the fields (indices into the planner's fields) it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub kind: RegisterKind,
    pub address: u16,
    pub count: u16,
    pub fields: Vec<usize>,
}

impl ReadRequest {
    /// The part of this request's response (`data`, one entry per register
    /// or bit) that belongs to `span`; `None` if it is not inside.
    pub fn slice<'a, T>(&self, span: Span, data: &'a [T]) -> Option<&'a [T]> {
        let start = usize::from(span.address.checked_sub(self.address)?);
        data.get(start..start + usize::from(span.count))
    }
}

/// Greedy merge over spans sorted by (kind, address): extend the current
/// request with the next span while the hole before it is ≤ `max_gap`, the
/// request stays within the kind's limit and crosses no barrier (an address
/// `b` such that no request may contain both `b - 1` and `b`).
///
/// Why greedy is optimal (fewest requests): a valid request covers a run of
/// consecutive sorted spans, and any sub-run of a valid run is valid too
/// (shorter, holes a subset, fewer barriers crossed). Compare greedy with any
/// valid plan O, both as runs left to right. If after k requests greedy has
/// covered the first i spans and O the first j ≤ i, O's next run j+1..m is
/// valid, so its sub-run i+1..m is valid, and greedy, extending as far as
/// validity allows, reaches at least m. Greedy therefore never falls behind
/// and uses no more requests than O. (A plan whose requests interleave can be
/// rearranged into runs without adding requests; the brute-force test over
/// all set partitions checks the claim for small cases.)
fn greedy(items: &[(usize, Span)], limits: &Limits, barriers: &Barriers) -> Vec<ReadRequest> {
    let mut sorted = items.to_vec();
    sorted.sort_by_key(|(i, s)| (s.kind, s.address, s.end(), *i));
    let mut out: Vec<ReadRequest> = Vec::new();
    for (i, s) in sorted {
        if let Some(r) = out.last_mut() {
            let start = u32::from(r.address);
            let end = start + u32::from(r.count);
            let new_end = end.max(s.end());
            let near = u32::from(s.address) <= end + u32::from(limits.max_gap);
            let small = new_end - start <= u32::from(limits.max_request(s.kind));
            let mut crossed = barriers.range((s.kind, start + 1)..(s.kind, new_end));
            if r.kind == s.kind && near && small && crossed.next().is_none() {
                r.count = (new_end - start) as u16; // ≤ the limit, itself a u16
                r.fields.push(i);
                continue;
            }
        }
        let (kind, address, count) = (s.kind, s.address, s.count);
        out.push(ReadRequest {
            kind,
            address,
            count,
            fields: vec![i],
        });
    }
    out
}

/// Addresses, per table, that no request may cross (see [`greedy`]).
type Barriers = BTreeSet<(RegisterKind, u32)>;

/// Fewest requests covering `(address, count)` ranges of one table with holes
/// of at most `max_gap` and at most `max_len` per request (see [`greedy`]
/// for why the greedy count is the minimum).
pub fn min_requests(ranges: &[(u16, u16)], max_gap: u16, max_len: u16) -> usize {
    let span = |(i, &(address, count)): (usize, &(u16, u16))| {
        (i, Span::new(RegisterKind::Holding, address, count))
    };
    let items: Vec<(usize, Span)> = ranges.iter().enumerate().map(span).collect();
    let limits = Limits {
        max_gap,
        max_registers: max_len,
        max_bits: max_len,
    };
    greedy(&items, &limits, &BTreeSet::new()).len()
}

/// What to do after a device answered IllegalDataAddress or IllegalDataValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Send these instead, now; the split is remembered for later cycles.
    Retry(Vec<ReadRequest>),
    /// These fields fail on their own: report them once; they are left out of
    /// future plans until [`Planner::reset_learning`].
    Unreadable(Vec<usize>),
}

/// Per-device planning state: the schedule and what was learned from exceptions.
#[derive(Debug, Clone)]
pub struct Planner {
    spans: Vec<Span>,
    intervals: Vec<Duration>,
    next_due: Vec<Duration>,
    limits: Limits,
    barriers: Barriers,
    unreadable: BTreeSet<usize>,
}

impl Planner {
    /// Plans for a profile's fields; field indices in requests are positions in `fields`.
    pub fn new(fields: &[Field], limits: Limits) -> Self {
        Self::from_spans(
            fields
                .iter()
                .map(|f| (Span::from(f), f.poll_interval))
                .collect(),
            limits,
        )
    }

    /// Same from bare spans and poll intervals. Everything is due at time zero.
    pub fn from_spans(spans: Vec<(Span, Duration)>, limits: Limits) -> Self {
        let n = spans.len();
        let (spans, intervals) = spans.into_iter().unzip();
        Planner {
            spans,
            intervals,
            next_due: vec![Duration::ZERO; n],
            limits,
            barriers: BTreeSet::new(),
            unreadable: BTreeSet::new(),
        }
    }

    /// Fields due at `now` (time since the planner started), advancing their
    /// schedule. Fields keep a fixed cadence so fields with related intervals
    /// stay aligned and merge; after a stall missed slots are skipped, not
    /// caught up in a burst.
    pub fn due(&mut self, now: Duration) -> Vec<usize> {
        let mut due = Vec::new();
        for i in 0..self.spans.len() {
            if self.unreadable.contains(&i) || self.next_due[i] > now {
                continue;
            }
            due.push(i);
            let next = self.next_due[i] + self.intervals[i];
            self.next_due[i] = if next > now {
                next
            } else {
                now + self.intervals[i]
            };
        }
        due
    }

    /// Makes `fields` due again at `now`: their read failed, so they wait for the device's
    /// next attempt (gated by its backoff), not for their next interval (maybe "once").
    pub fn retry(&mut self, fields: &[usize], now: Duration) {
        for &i in fields {
            if let Some(d) = self.next_due.get_mut(i) {
                *d = (*d).min(now);
            }
        }
    }

    /// When the next field falls due; `None` if nothing is readable.
    pub fn next_due(&self) -> Option<Duration> {
        (0..self.spans.len())
            .filter(|i| !self.unreadable.contains(i))
            .map(|i| self.next_due[i])
            .min()
    }

    /// Fewest requests for `fields`, respecting learned barriers and skipping unreadable fields.
    pub fn plan(&self, fields: &[usize]) -> Vec<ReadRequest> {
        let items: Vec<(usize, Span)> = fields
            .iter()
            .filter(|i| !self.unreadable.contains(i))
            .filter_map(|&i| self.spans.get(i).map(|s| (i, *s)))
            .collect();
        greedy(&items, &self.limits, &self.barriers)
    }

    /// `due` then `plan`.
    pub fn poll(&mut self, now: Duration) -> Vec<ReadRequest> {
        let due = self.due(now);
        self.plan(&due)
    }

    /// Learns from an IllegalDataAddress/IllegalDataValue answer to `failed`.
    /// A request serving several fields is cut at the field boundary nearest
    /// its middle and the cut is remembered as a barrier, so repeated
    /// failures bisect down to the offending hole or size; both causes are
    /// handled by where merging stops, without guessing which one it was. A
    /// request that cannot be cut (one field, or fields sharing registers)
    /// marks its fields unreadable.
    pub fn on_exception(&mut self, failed: &ReadRequest) -> Recovery {
        let spans: Vec<Span> = failed
            .fields
            .iter()
            .filter_map(|&i| self.spans.get(i).copied())
            .collect();
        let lo = u32::from(failed.address);
        let hi = lo + u32::from(failed.count);
        let cut = spans
            .iter()
            .map(|s| u32::from(s.address))
            .filter(|&b| {
                b > lo
                    && spans
                        .iter()
                        .all(|s| s.end() <= b || u32::from(s.address) >= b)
            })
            .min_by_key(|&b| (2 * b).abs_diff(lo + hi));
        match cut {
            Some(b) => {
                self.barriers.insert((failed.kind, b));
                Recovery::Retry(self.plan(&failed.fields))
            }
            None => {
                self.unreadable.extend(failed.fields.iter().copied());
                Recovery::Unreadable(failed.fields.clone())
            }
        }
    }

    pub fn unreadable(&self) -> impl Iterator<Item = usize> + '_ {
        self.unreadable.iter().copied()
    }

    /// Learned addresses no request may cross (it may start there).
    pub fn barriers(&self) -> impl Iterator<Item = (RegisterKind, u16)> + '_ {
        self.barriers
            .iter()
            .filter_map(|&(k, b)| u16::try_from(b).ok().map(|b| (k, b)))
    }

    /// Forgets barriers and unreadable fields, e.g. after a device was replaced.
    pub fn reset_learning(&mut self) {
        self.barriers.clear();
        self.unreadable.clear();
    }
}

/// Bits per character on the wire. The Modbus serial-line spec defines an
/// RTU character as 11 bits (start, 8 data, parity or second stop, stop), as
/// sent by 8E1 and 8N2; 8N1 really sends 10, so its times are ~10 % high.
pub const BITS_PER_CHAR: f64 = 11.0;

/// Bytes and line time of a set of reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BusCost {
    pub requests: usize,
    pub bytes: usize,
    pub seconds: f64,
}

/// RTU response size: address, function, byte count, data, CRC.
pub fn response_bytes(kind: RegisterKind, count: u16) -> usize {
    let data = if kind.is_bit() {
        usize::from(count).div_ceil(8)
    } else {
        2 * usize::from(count)
    };
    5 + data
}

/// RTU bytes and time for `reads` of `(kind, count)` at `baud`. Each read is
/// an 8-byte request (address, function, start, quantity, CRC) plus the
/// response, each frame followed by the 3.5-character silence (fixed at
/// 1.75 ms above 19200 baud, as the spec prescribes). Device turnaround
/// time is not included: it depends on the device, not on the plan.
pub fn rtu_cost(reads: impl IntoIterator<Item = (RegisterKind, u16)>, baud: u32) -> BusCost {
    let (mut requests, mut bytes) = (0, 0);
    for (kind, count) in reads {
        requests += 1;
        bytes += 8 + response_bytes(kind, count);
    }
    let char_s = BITS_PER_CHAR / f64::from(baud.max(1));
    let silence = if baud > 19200 { 0.00175 } else { 3.5 * char_s };
    BusCost {
        requests,
        bytes,
        seconds: bytes as f64 * char_s + (2 * requests) as f64 * silence,
    }
}

/// [`rtu_cost`] of a plan.
pub fn plan_cost(plan: &[ReadRequest], baud: u32) -> BusCost {
    rtu_cost(plan.iter().map(|r| (r.kind, r.count)), baud)
}

/// Theoretical minimum cost of reading `spans`, a lower bound for any plan:
/// per table, the registers (or bits) the fields actually occupy — their
/// union, counting shared registers once and no hole — packed into as few
/// full-size requests as the per-request limit allows. A real plan can only
/// need more requests (fields too far apart to merge) or more data (holes
/// read across), so `plan_cost / minimum_cost` measures planning waste.
pub fn minimum_cost(spans: &[Span], limits: &Limits, baud: u32) -> BusCost {
    let mut sorted = spans.to_vec();
    sorted.sort_by_key(|s| (s.kind, s.address));
    // Per table, the size of the union of the spans.
    let mut used: Vec<(RegisterKind, u32)> = Vec::new();
    let mut reach = 0u32;
    for s in sorted {
        if used.last().map(|u| u.0) != Some(s.kind) {
            used.push((s.kind, 0));
            reach = 0;
        }
        let from = reach.max(u32::from(s.address));
        if let Some(u) = used.last_mut() {
            u.1 += s.end().saturating_sub(from);
        }
        reach = reach.max(s.end());
    }
    let mut reads = Vec::new();
    for (kind, mut n) in used {
        let max = u32::from(limits.max_request(kind));
        while n > 0 {
            let take = n.min(max);
            reads.push((kind, take as u16));
            n -= take;
        }
    }
    rtu_cost(reads, baud)
}

/// Cost of the best plan the protocol allows: reads are contiguous blocks, so the only choice
/// is where to cut. Per table, an exact dynamic programme over the fields sorted by address
/// (shared registers merged) picks the cuts that minimise bus time at `baud`, reading across a
/// hole exactly when that is cheaper than a new request, within the per-request limit. Unlike
/// [`minimum_cost`] (which assumes holes cost nothing) a real plan can reach this, so
/// `plan_cost / optimal_cost` is the waste of the gap heuristic.
pub fn optimal_cost(spans: &[Span], limits: &Limits, baud: u32) -> BusCost {
    let mut sorted = spans.to_vec();
    sorted.sort_by_key(|s| (s.kind, s.address));
    // Per table, the union of the spans as disjoint (start, end) blocks.
    let mut tables: Vec<(RegisterKind, Vec<(u32, u32)>)> = Vec::new();
    for s in sorted {
        if tables.last().map(|t| t.0) != Some(s.kind) {
            tables.push((s.kind, Vec::new()));
        }
        let blocks = &mut tables.last_mut().expect("pushed above").1;
        match blocks.last_mut() {
            Some(b) if u32::from(s.address) <= b.1 => b.1 = b.1.max(s.end()),
            _ => blocks.push((u32::from(s.address), s.end())),
        }
    }
    let mut reads = Vec::new();
    for (kind, blocks) in tables {
        let max = u32::from(limits.max_request(kind));
        let one = |count: u32| rtu_cost([(kind, count as u16)], baud).seconds;
        // best[i]: cheapest (seconds, reads) covering blocks[..i]. A block longer than one
        // request is split into full requests first (no choice there).
        let mut best: Vec<(f64, Vec<u16>)> = vec![(0.0, Vec::new())];
        for i in 1..=blocks.len() {
            let mut choice: Option<(f64, Vec<u16>)> = None;
            for j in (0..i).rev() {
                let len = blocks[i - 1].1 - blocks[j].0;
                if len > max && j + 1 < i {
                    break;
                }
                let mut parts = Vec::new();
                let mut n = len;
                while n > 0 {
                    parts.push(n.min(max) as u16);
                    n -= n.min(max);
                }
                let t = best[j].0 + parts.iter().map(|&c| one(u32::from(c))).sum::<f64>();
                if choice.as_ref().is_none_or(|c| t < c.0) {
                    let mut r = best[j].1.clone();
                    r.extend(parts);
                    choice = Some((t, r));
                }
            }
            best.push(choice.expect("j = i - 1 always fits"));
        }
        let (_, counts) = best.pop().expect("at least the empty plan");
        reads.extend(counts.into_iter().map(|c| (kind, c)));
    }
    rtu_cost(reads, baud)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegisterKind::{Coil, Holding, Input};

    const TEN_S: Duration = Duration::from_secs(10);

    /// Spans written `address+count` (hex with 0x), space-separated.
    fn spans(text: &str) -> Vec<(u16, u16)> {
        let num = |n: &str| match n.strip_prefix("0x") {
            Some(h) => u16::from_str_radix(h, 16),
            None => n.parse(),
        };
        let span = |s: &str| {
            s.split_once('+')
                .and_then(|(a, c)| Some((num(a).ok()?, num(c).ok()?)))
        };
        text.split_whitespace()
            .map(|s| span(s).unwrap_or_else(|| panic!("{s}")))
            .collect()
    }

    fn planner(text: &str, max_gap: u16, max_registers: u16) -> Planner {
        let items = spans(text)
            .into_iter()
            .map(|(a, c)| (Span::new(Holding, a, c), TEN_S));
        let limits = Limits {
            max_gap,
            max_registers,
            max_bits: 2000,
        };
        Planner::from_spans(items.collect(), limits)
    }

    fn ranges(plan: &[ReadRequest]) -> String {
        let r: Vec<String> = plan
            .iter()
            .map(|r| format!("0x{:X}+{}", r.address, r.count))
            .collect();
        r.join(" ")
    }

    /// Plans holding-register spans with `(max_gap, max_registers)` and
    /// compares the requests; also checks that every field is served once
    /// and that `min_requests` agrees.
    fn check(input: &str, (gap, max): (u16, u16), expected: &str) {
        let plan = planner(input, gap, max).poll(Duration::ZERO);
        assert_eq!(ranges(&plan), expected, "{input} gap {gap} max {max}");
        assert_eq!(plan.len(), min_requests(&spans(input), gap, max), "{input}");
        let mut served: Vec<usize> = plan.iter().flat_map(|r| r.fields.clone()).collect();
        served.sort();
        assert_eq!(
            served,
            (0..spans(input).len()).collect::<Vec<_>>(),
            "{input}"
        );
    }

    /// The SDM120 map: ten float32 values.
    const SDM120: &str = "0x0+2 0x6+2 0xC+2 0x12+2 0x18+2 0x1E+2 0x46+2 0x48+2 0x4A+2 0x156+2";

    #[test]
    fn merges_within_gap_and_size() {
        check("0x0+2 0x2+2 0x4+2", (0, 125), "0x0+6");
        check("0x4+2 0x0+2 0x2+2", (0, 125), "0x0+6");
        check("0x0+2 0x6+2", (4, 125), "0x0+8");
        check("0x0+2 0x6+2", (3, 125), "0x0+2 0x6+2");
        check("0x0+1 0x0+1 0x0+2", (0, 125), "0x0+2");
        check("0x0+4 0x1+1 0x5+1", (0, 125), "0x0+4 0x5+1");
        check("0xFFFE+2", (0, 125), "0xFFFE+2");
        let contiguous: Vec<String> = (0..70).map(|i| format!("{}+2", 2 * i)).collect();
        check(&contiguous.join(" "), (0, 125), "0x0+124 0x7C+16");
        check(SDM120, (8, 125), "0x0+32 0x46+6 0x156+2");
        check(
            SDM120,
            (0, 125),
            "0x0+2 0x6+2 0xC+2 0x12+2 0x18+2 0x1E+2 0x46+6 0x156+2",
        );
        let mixed = vec![
            (Span::new(Holding, 0, 1), TEN_S),
            (Span::new(Coil, 1, 1), TEN_S),
            (Span::new(Input, 0, 1), TEN_S),
        ];
        let plan = Planner::from_spans(mixed, Limits::default()).poll(Duration::ZERO);
        let kinds: Vec<RegisterKind> = plan.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [Coil, Holding, Input]);
        assert_eq!(
            plan[1].slice(Span::new(Holding, 0, 1), &[7u16]),
            Some(&[7u16][..])
        );
    }

    #[test]
    fn splits_on_exception_and_remembers() {
        let mut p = planner(SDM120, 8, 125);
        let plan = p.poll(Duration::ZERO);
        let Recovery::Retry(halves) = p.on_exception(&plan[0]) else {
            panic!("expected a split")
        };
        assert_eq!(ranges(&halves), "0x0+14 0x12+14");
        let Recovery::Retry(quarters) = p.on_exception(&halves[1]) else {
            panic!("expected a split")
        };
        assert_eq!(ranges(&quarters), "0x12+2 0x18+8");
        assert_eq!(p.on_exception(&quarters[0]), Recovery::Unreadable(vec![3]));
        assert_eq!(p.unreadable().collect::<Vec<_>>(), [3]);
        let learned: Vec<_> = p.barriers().collect();
        assert_eq!(learned, [(Holding, 0x12), (Holding, 0x18)]);
        let next = p.poll(TEN_S);
        assert_eq!(ranges(&next), "0x0+14 0x18+8 0x46+6 0x156+2");
        assert!(next.iter().all(|r| !r.fields.contains(&3)));
        let mut shared = planner("5+1 5+1", 0, 125);
        let plan = shared.poll(Duration::ZERO);
        assert_eq!(
            shared.on_exception(&plan[0]),
            Recovery::Unreadable(vec![0, 1])
        );
        assert_eq!(shared.next_due(), None);
        shared.reset_learning();
        assert_eq!(shared.poll(TEN_S).len(), 1);
    }

    #[test]
    fn failed_fields_are_due_again_even_when_read_once() {
        let mut p = Planner::from_spans(
            vec![
                (Span::new(Holding, 0, 1), Duration::from_secs(5)),
                (
                    Span::new(Holding, 100, 8),
                    crate::sources::modbus::profile::ONCE,
                ),
            ],
            Limits::default(),
        );
        assert_eq!(p.due(Duration::ZERO), vec![0, 1]);
        // The firmware string's read failed: it is retried, then never read again.
        p.retry(&[1], Duration::from_secs(1));
        assert_eq!(p.next_due(), Some(Duration::from_secs(1)));
        assert_eq!(p.due(Duration::from_secs(1)), vec![1]);
        assert_eq!(p.due(Duration::from_secs(5)), vec![0]);
        assert_eq!(p.due(Duration::from_secs(3600 * 24 * 365)), vec![0]);
    }

    #[test]
    fn schedules_by_interval() {
        let spans = vec![
            (Span::new(Input, 0, 2), Duration::from_secs(5)),
            (Span::new(Input, 2, 2), Duration::from_secs(3600)),
        ];
        let mut p = Planner::from_spans(spans, Limits::default());
        let mut at = |s: u64| ranges(&p.poll(Duration::from_secs(s)));
        assert_eq!(at(0), "0x0+4");
        assert_eq!(at(4), "");
        assert_eq!(at(5), "0x0+2");
        assert_eq!(at(3600), "0x0+4");
        assert_eq!(at(3604), "");
        assert_eq!(p.next_due(), Some(Duration::from_secs(3605)));
    }

    /// Fewest groups over all set partitions, a group being valid when its
    /// extent fits `len` and no hole between its members exceeds `gap`.
    fn brute_force(spans: &[(u16, u16)], gap: u32, len: u32) -> usize {
        fn valid(group: &[(u16, u16)], gap: u32, len: u32) -> bool {
            let mut g = group.to_vec();
            g.sort();
            let start = u32::from(g[0].0);
            let mut end = start;
            for &(a, c) in &g {
                if u32::from(a) > end + gap {
                    return false;
                }
                end = end.max(u32::from(a) + u32::from(c));
            }
            end - start <= len
        }
        // Each span joins one of the groups so far or opens a new one.
        fn rec(
            rest: &[(u16, u16)],
            groups: &mut Vec<Vec<(u16, u16)>>,
            gap: u32,
            len: u32,
        ) -> usize {
            let Some((&first, rest)) = rest.split_first() else {
                let ok = groups.iter().all(|g| valid(g, gap, len));
                return if ok { groups.len() } else { usize::MAX };
            };
            let mut best = usize::MAX;
            for k in 0..=groups.len() {
                if k == groups.len() {
                    groups.push(Vec::new());
                }
                groups[k].push(first);
                best = best.min(rec(rest, groups, gap, len));
                groups[k].pop();
            }
            groups.retain(|g| !g.is_empty());
            best
        }
        rec(spans, &mut Vec::new(), gap, len)
    }

    #[test]
    fn greedy_matches_brute_force() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n) as u16
        };
        for _ in 0..300 {
            let mut at = 0u16;
            let mut spans = Vec::new();
            for _ in 0..1 + rand(7) {
                at += rand(5);
                spans.push((at, 1 + rand(4)));
                at += spans[spans.len() - 1].1;
            }
            let (gap, len) = (rand(4), 4 + rand(8));
            let brute = brute_force(&spans, u32::from(gap), u32::from(len));
            assert_eq!(
                min_requests(&spans, gap, len),
                brute,
                "{spans:?} gap {gap} len {len}"
            );
        }
    }

    #[test]
    fn bus_time_against_minimum() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let one = rtu_cost([(Input, 2)], 9600);
        assert_eq!((one.requests, one.bytes), (1, 17));
        assert!(close(one.seconds, 24.0 * 11.0 / 9600.0), "{one:?}");
        let coils = rtu_cost([(Coil, 9)], 115200);
        assert_eq!(coils.bytes, 8 + 7);
        assert!(
            close(coils.seconds, 15.0 * 11.0 / 115200.0 + 0.0035),
            "{coils:?}"
        );
        let p = planner(SDM120, 8, 125);
        let all: Vec<usize> = (0..10).collect();
        let cost = plan_cost(&p.plan(&all), 2400);
        assert_eq!((cost.requests, cost.bytes), (3, 3 * 13 + 2 * (32 + 6 + 2)));
        let sdm: Vec<Span> = spans(SDM120)
            .iter()
            .map(|&(a, c)| Span::new(Input, a, c))
            .collect();
        let min = minimum_cost(&sdm, &Limits::default(), 2400);
        assert_eq!((min.requests, min.bytes), (1, 13 + 2 * 20));
        assert!(cost.seconds > 2.0 * min.seconds);
        // The best contiguous plan for the SDM120 is the planner's: three reads.
        let opt = optimal_cost(&sdm, &Limits::default(), 2400);
        assert_eq!((opt.requests, opt.bytes), (cost.requests, cost.bytes));
        // Reading across a 20-register hole costs more than a second request; across 4, less.
        let far = [Span::new(Holding, 0, 2), Span::new(Holding, 22, 2)];
        assert_eq!(optimal_cost(&far, &Limits::default(), 9600).requests, 2);
        let near = [Span::new(Holding, 0, 2), Span::new(Holding, 6, 2)];
        assert_eq!(optimal_cost(&near, &Limits::default(), 9600).requests, 1);
        let overlapping = [Span::new(Holding, 0, 4), Span::new(Holding, 2, 1)];
        let min = minimum_cost(&overlapping, &Limits::default(), 9600);
        assert_eq!(min.bytes, 13 + 8);
    }
}
