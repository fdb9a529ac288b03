//! Debounce in the gateway's own code, for backends whose edges are raw (the simulator), with
//! the kernel's semantics (`gpio-cdev` debounce): a change of level counts once the line has
//! stayed at the new level for the whole period; an edge back inside the period cancels it.
//! A pure state machine on nanosecond times, no clock and no I/O: the source calls
//! [`Debouncer::on_edge`] for every edge, and [`Debouncer::on_time`] when [`Debouncer::deadline`]
//! has passed.

/// A change the debouncer let through: the new level, and when the line first reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub level: bool,
    pub at_ns: u64,
}

#[derive(Debug, Clone)]
pub struct Debouncer {
    period_ns: u64,
    stable: bool,
    pending: Option<Change>,
    /// Edges that did not become a change (bounce), counted.
    pub filtered: u64,
}

impl Debouncer {
    /// `stable`: the line's level at the start. A period of 0 passes every edge at once.
    pub fn new(period_ns: u64, stable: bool) -> Debouncer {
        Debouncer {
            period_ns,
            stable,
            pending: None,
            filtered: 0,
        }
    }

    /// The debounced level.
    pub fn level(&self) -> bool {
        self.stable
    }

    /// When [`Debouncer::on_time`] would let a pending change through.
    pub fn deadline(&self) -> Option<u64> {
        self.pending.map(|p| p.at_ns.saturating_add(self.period_ns))
    }

    /// The line is at `level` from `at_ns` on. Returns the change this edge confirmed (the
    /// pending one, stable for the period before this edge), if any; with a period of 0, the
    /// edge's own change.
    pub fn on_edge(&mut self, level: bool, at_ns: u64) -> Option<Change> {
        let confirmed = self.on_time(at_ns);
        if self.period_ns == 0 {
            if level == self.stable {
                self.filtered += 1;
                return confirmed;
            }
            self.stable = level;
            return Some(Change { level, at_ns });
        }
        match self.pending {
            Some(_) if level == self.stable => {
                // Back to the stable level within the period: that edge and this one were bounce.
                self.pending = None;
                self.filtered += 2;
            }
            Some(_) => {
                // The same level again (an edge missed in between): the period restarts.
                self.filtered += 1;
                self.pending = Some(Change { level, at_ns });
            }
            None if level == self.stable => self.filtered += 1,
            None => self.pending = Some(Change { level, at_ns }),
        }
        confirmed
    }

    /// Lets the pending change through when it has been stable for the period by `now_ns`.
    pub fn on_time(&mut self, now_ns: u64) -> Option<Change> {
        let p = self.pending?;
        if now_ns.saturating_sub(p.at_ns) >= self.period_ns {
            self.pending = None;
            self.stable = p.level;
            Some(p)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Feeds `edges` (level, time in ms) and then the time `end_ms`; returns the changes.
    fn check(period_ms: u64, edges: &[(bool, u64)], end_ms: u64, expected: &[(bool, u64)]) {
        let mut d = Debouncer::new(period_ms * MS, false);
        let mut got = Vec::new();
        for &(level, at) in edges {
            got.extend(d.on_edge(level, at * MS));
        }
        got.extend(d.on_time(end_ms * MS));
        let got: Vec<(bool, u64)> = got.iter().map(|c| (c.level, c.at_ns / MS)).collect();
        assert_eq!(got, expected, "edges {edges:?}");
    }

    #[test]
    fn a_burst_with_contact_bounce_is_one_change_per_transition() {
        // Clean: close at 0, open at 50.
        check(
            10,
            &[(true, 0), (false, 50)],
            100,
            &[(true, 0), (false, 50)],
        );
        // Close with three bounces inside 10 ms, open with two.
        check(
            10,
            &[
                (true, 0),
                (false, 1),
                (true, 2),
                (false, 3),
                (true, 4),
                (false, 5),
                (true, 6),
                (false, 50),
                (true, 51),
                (false, 52),
                (true, 53),
                (false, 54),
            ],
            100,
            &[(true, 6), (false, 54)],
        );
        // A spike shorter than the period is no change at all.
        check(10, &[(true, 0), (false, 9)], 100, &[]);
        // Not yet stable long enough at the end: still pending.
        check(10, &[(true, 0)], 9, &[]);
        // Period 0: every edge counts.
        check(
            0,
            &[(true, 0), (false, 1), (true, 2)],
            3,
            &[(true, 0), (false, 1), (true, 2)],
        );
    }

    #[test]
    fn bounces_are_counted_as_filtered_edges() {
        let mut d = Debouncer::new(10 * MS, false);
        for (i, level) in [true, false, true, false, true].into_iter().enumerate() {
            d.on_edge(level, i as u64 * MS);
        }
        assert_eq!(d.on_time(20 * MS).map(|c| c.level), Some(true));
        assert_eq!(d.filtered, 4);
        assert!(d.level());
        assert_eq!(d.deadline(), None);
    }
}
