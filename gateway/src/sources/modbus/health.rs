//! Per-device health: the circuit breaker that keeps a dead device from stealing bus time.
//!
//! A pure state machine (no clock inside: `now` is passed in), so its rules are unit-tested.
//! After a failed poll (timeout, I/O or framing error) the device is not tried again before
//! `backoff`, which doubles up to `max_backoff`; each retry costs the bus at most one request
//! timeout. So a device that never answers delays the others on its bus by at most one timeout
//! per backoff interval. Three failures in a row make it `Offline`; one success makes it `Online`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not polled yet.
    Unknown,
    /// The last poll was answered in full.
    Online,
    /// The last poll was answered, but with exceptions or implausible values (not values the
    /// profile allows to be missing); or it failed once.
    Degraded,
    /// Several polls in a row failed; probed once per backoff interval.
    Offline,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Unknown,
        State::Online,
        State::Degraded,
        State::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Online => "online",
            State::Degraded => "degraded",
            State::Offline => "offline",
        }
    }
}

const OFFLINE_AFTER: u32 = 3;

#[derive(Debug, Clone)]
pub struct Health {
    pub state: State,
    pub consecutive_failures: u32,
    backoff: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    /// No poll before this instant (time since the poller started).
    pub next_attempt: Duration,
}

impl Health {
    pub fn new(min_backoff: Duration, max_backoff: Duration) -> Health {
        Health {
            state: State::Unknown,
            consecutive_failures: 0,
            backoff: min_backoff,
            min_backoff,
            max_backoff,
            next_attempt: Duration::ZERO,
        }
    }

    /// A poll got answers; `clean` when every request succeeded and no value was implausible
    /// (`decode::Quality::is_fault`).
    pub fn on_answer(&mut self, clean: bool) {
        self.state = if clean {
            State::Online
        } else {
            State::Degraded
        };
        self.consecutive_failures = 0;
        self.backoff = self.min_backoff;
        self.next_attempt = Duration::ZERO;
    }

    /// A poll failed at `now`: schedule the next attempt and widen the backoff.
    pub fn on_failure(&mut self, now: Duration) {
        self.consecutive_failures += 1;
        self.state = if self.consecutive_failures >= OFFLINE_AFTER {
            State::Offline
        } else {
            State::Degraded
        };
        self.next_attempt = now + self.backoff;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Applies `events` (true = answered, false = failed, at the given second) and checks the
    /// resulting state and next attempt.
    fn check(events: &[(u64, bool)], state: State, next_attempt: u64) {
        let mut h = Health::new(s(5), s(60));
        for (at, ok) in events {
            if *ok {
                h.on_answer(true);
            } else {
                h.on_failure(s(*at));
            }
        }
        assert_eq!(
            (h.state, h.next_attempt),
            (state, s(next_attempt)),
            "{events:?}"
        );
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        check(&[], State::Unknown, 0);
        check(&[(0, true)], State::Online, 0);
        check(&[(0, false)], State::Degraded, 5);
        check(&[(0, false), (5, false)], State::Degraded, 15);
        check(&[(0, false), (5, false), (15, false)], State::Offline, 35);
        check(
            &[
                (0, false),
                (5, false),
                (15, false),
                (35, false),
                (75, false),
            ],
            State::Offline,
            135,
        );
        check(
            &[
                (0, false),
                (5, false),
                (15, false),
                (35, false),
                (75, false),
                (135, false),
            ],
            State::Offline,
            195,
        );
        check(
            &[(0, false), (5, false), (15, false), (35, true)],
            State::Online,
            0,
        );
    }
}
