//! The one clock: every reading timestamp the gateway makes itself comes from [`Clock::now`].
//!
//! A Raspberry Pi has no real-time clock. It boots at the last saved time (fake-hwclock: minutes
//! to years in the past) and jumps when NTP synchronises. So a timestamp is a [`Stamp`]: the
//! wall time plus whether the kernel said the clock was synchronised when it was taken. Sources
//! mark readings they stamp while unsynced `Quality::ClockUnsynced` ([`Stamp::quality`]).
//!
//! **Steps.** The wall clock minus `CLOCK_BOOTTIME` (which never jumps and counts suspend, so
//! the difference moves only when someone sets the time) is the *offset*; when it moves by more
//! than [`STEP_THRESHOLD_NS`] between two reads, the clock records a [`Step`]. The steps of this
//! process form a [`Timeline`] of epochs (epoch `k` runs between step `k` and step `k + 1` and
//! has one offset). A reading stamped unsynced in an old epoch is corrected by
//! `ts - offset(old) + offset(current)`, i.e. from the monotonic clock and the step, and marked
//! `Quality::Restamped`; the committer does that ([`Timeline::correct`]) for its batch, for
//! readings still in its channel and for rows already stored. Readings with a device's own
//! timestamp are never `ClockUnsynced`, so they are never moved.
//!
//! **Sync state.** `adjtimex(2)` with `modes = 0` (read-only): synchronised unless it returns
//! `TIME_ERROR` or `STA_UNSYNC` is set ([`interpret`]); read at most once a second and again
//! right after a step. A wall time before the build date ([`MIN_VALID_TS_NS`]) is never
//! synchronised, whatever the kernel says.
//!
//! Architecture invariant: only this module reads the system's wall clock
//! (`grep -rn 'SystemTime::now\|Utc::now\|clock_gettime' gateway/src` finds only this file).
//! Timers use `tokio::time::Instant`, which is not a timestamp.

use std::sync::{Arc, Mutex};

use crate::model::{Quality, Reading};

/// The build date (`SOURCE_DATE_EPOCH` at compile time, else the time of the first build,
/// see build.rs), in ns since the Unix epoch.
pub const BUILD_TS_NS: i64 = build_epoch_s() * 1_000_000_000;
/// The earliest timestamp accepted: a year before the build date. Earlier is a device or a Pi
/// whose clock was never set (1970, 2000-01-01, a firmware date). The year of margin is for a
/// meter that delivers a backlog from before the gateway's firmware was built (PRODUCT.md:
/// nothing a meter buffered may be lost to an update).
pub const MIN_VALID_TS_NS: i64 = BUILD_TS_NS - 365 * 24 * 3600 * 1_000_000_000;
/// How far ahead of our synchronised clock a device timestamp may be.
pub const MAX_FUTURE_NS: i64 = 24 * 3600 * 1_000_000_000;
/// While our clock is unsynchronised it may be years behind, so a device's timestamp is only
/// bounded by the floor plus this (or our clock plus [`MAX_FUTURE_NS`], if later).
pub const MAX_UNSYNCED_AHEAD_NS: i64 = 10 * 366 * 24 * 3600 * 1_000_000_000;
/// A change of the wall-clock offset larger than this is a step. NTP clients step above
/// 0.128 s (ntpd), 0.4 s (timesyncd) or 1 s (chrony's makestep); smaller corrections are
/// slewed and never show up here. Reading the two clocks is retried when preempted (see
/// `System::read`), so jitter stays far below this.
pub const STEP_THRESHOLD_NS: i64 = 100_000_000;
/// Steps kept for correcting late readings; older epochs merge into the oldest kept.
const MAX_STEPS: usize = 256;

const fn build_epoch_s() -> i64 {
    // 2020-01-01T00:00:00Z when build.rs could not say.
    const FALLBACK: i64 = 1_577_836_800;
    match option_env!("GKGW_BUILD_EPOCH") {
        Some(s) => match i64::from_str_radix(s, 10) {
            Ok(v) if v > FALLBACK => v,
            _ => FALLBACK,
        },
        None => FALLBACK,
    }
}

/// The wall clock, unmarked and unwatched, for what is not a reading's timestamp: when a line
/// was quarantined, the demo's time of day. Readings are stamped by [`Clock::now`].
pub fn wall_ns() -> i64 {
    System.now().0
}

/// A timestamp taken by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Nanoseconds since the Unix epoch, UTC, by the wall clock as it is.
    pub ts_ns: i64,
    /// The kernel said the clock was synchronised.
    pub synced: bool,
    /// The earliest plausible timestamp: [`MIN_VALID_TS_NS`], except in tests that must not
    /// expire when the build date moves on.
    pub floor_ns: i64,
}

impl Stamp {
    /// A stamp with the production floor.
    pub fn new(ts_ns: i64, synced: bool) -> Stamp {
        Stamp {
            ts_ns,
            synced,
            floor_ns: MIN_VALID_TS_NS,
        }
    }

    /// The quality of a reading stamped with this: `q`, or `ClockUnsynced` when the clock was
    /// not synchronised. The time's quality wins over `Bad`: a bad value is already visible
    /// in its `{field}_quality` field, but a reading left `Bad` would never be re-stamped and
    /// its good fields would keep a wrong time.
    pub fn quality(self, q: Quality) -> Quality {
        if self.synced {
            q
        } else {
            Quality::ClockUnsynced
        }
    }

    /// Whether a device's own timestamp is possible: not before the build date, and not more
    /// than a day ahead of us (while we are synchronised; see [`MAX_UNSYNCED_AHEAD_NS`]).
    pub fn plausible(self, device_ts_ns: i64) -> bool {
        let ahead = self.ts_ns.saturating_add(MAX_FUTURE_NS);
        let max = if self.synced {
            ahead
        } else {
            ahead.max(self.floor_ns.saturating_add(MAX_UNSYNCED_AHEAD_NS))
        };
        (self.floor_ns..=max).contains(&device_ts_ns)
    }
}

/// What the kernel says about the clock's discipline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kernel {
    pub synced: bool,
    /// NTP's current offset correction, in ns.
    pub offset_ns: i64,
    /// Estimated and maximum error, in ns.
    pub est_error_ns: i64,
    pub max_error_ns: i64,
}

/// The sync state from `adjtimex`'s return value and `timex` fields (`status`, and `offset` in
/// µs or, with `STA_NANO`, ns; `esterror`, `maxerror` in µs).
pub fn interpret(ret: i32, status: i32, offset: i64, esterror: i64, maxerror: i64) -> Kernel {
    const TIME_ERROR: i32 = 5;
    const STA_UNSYNC: i32 = 0x0040;
    const STA_NANO: i32 = 0x2000;
    Kernel {
        synced: ret >= 0 && ret != TIME_ERROR && status & STA_UNSYNC == 0,
        offset_ns: if status & STA_NANO != 0 {
            offset
        } else {
            offset.saturating_mul(1000)
        },
        est_error_ns: esterror.saturating_mul(1000),
        max_error_ns: maxerror.saturating_mul(1000),
    }
}

/// Where the clock's readings come from: the kernel ([`System`]) or a test's [`FakeTime`].
pub trait TimeSource: Send + Sync + 'static {
    /// (wall clock, boot clock), both in ns.
    fn now(&self) -> (i64, i64);
    fn kernel(&self) -> Kernel;
}

/// The real clocks: `CLOCK_REALTIME`, `CLOCK_BOOTTIME` and `adjtimex`.
pub struct System;

#[cfg(target_os = "linux")]
#[allow(clippy::unnecessary_cast)] // time_t and c_long are 32 bits on armv7
fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on every Linux since 2.6.39.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as i64)
}

impl TimeSource for System {
    #[cfg(target_os = "linux")]
    fn now(&self) -> (i64, i64) {
        // Boot, wall, boot: if the thread was preempted in between, read again, so a slow
        // read never looks like a step.
        let mut best = (0, 0);
        for _ in 0..4 {
            let b1 = clock_ns(libc::CLOCK_BOOTTIME);
            let wall = clock_ns(libc::CLOCK_REALTIME);
            let b2 = clock_ns(libc::CLOCK_BOOTTIME);
            best = (wall, b1 + (b2 - b1) / 2);
            if b2 - b1 < 1_000_000 {
                break;
            }
        }
        best
    }

    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> (i64, i64) {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let boot = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as i64;
        (wall, boot)
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn kernel(&self) -> Kernel {
        // SAFETY: an all-zero timex is valid input; modes = 0 makes adjtimex read-only.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid, writable timex.
        let ret = unsafe { libc::adjtimex(&mut t) };
        interpret(
            ret,
            t.status,
            t.offset as i64,
            t.esterror as i64,
            t.maxerror as i64,
        )
    }

    /// Without adjtimex the state is unknown; the clock is taken as synchronised rather than
    /// marking every reading.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn kernel(&self) -> Kernel {
        Kernel {
            synced: true,
            ..Kernel::default()
        }
    }
}

/// A clock a test sets by hand: wall and boot time, and the kernel's sync state.
#[derive(Default)]
pub struct FakeTime {
    state: Mutex<(i64, i64, Kernel)>,
}

impl FakeTime {
    pub fn new(wall_ns: i64, synced: bool) -> Arc<FakeTime> {
        let kernel = Kernel {
            synced,
            ..Kernel::default()
        };
        Arc::new(FakeTime {
            state: Mutex::new((wall_ns, 1_000_000_000, kernel)),
        })
    }

    /// Time passes: both clocks advance.
    pub fn advance(&self, ns: i64) {
        if let Ok(mut s) = self.state.lock() {
            s.0 += ns;
            s.1 += ns;
        }
    }

    /// Someone sets the wall clock: it jumps by `ns`, the boot clock does not.
    pub fn step(&self, ns: i64) {
        if let Ok(mut s) = self.state.lock() {
            s.0 += ns;
        }
    }

    pub fn set_synced(&self, synced: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.2.synced = synced;
        }
    }
}

impl TimeSource for FakeTime {
    fn now(&self) -> (i64, i64) {
        self.state.lock().map_or((0, 0), |s| (s.0, s.1))
    }

    fn kernel(&self) -> Kernel {
        self.state.lock().map_or(Kernel::default(), |s| s.2)
    }
}

/// The wall clock jumped: detected at boot time `at_boot_ns`, the offset (wall − boot) went
/// from `from_offset_ns` to `to_offset_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub at_boot_ns: i64,
    pub from_offset_ns: i64,
    pub to_offset_ns: i64,
}

impl Step {
    pub fn delta_ns(&self) -> i64 {
        self.to_offset_ns - self.from_offset_ns
    }
}

/// The epochs of this process. Epoch numbers count every step since start; only the last
/// [`MAX_STEPS`] are kept, and `dropped` says how many went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// The offset of the oldest epoch kept.
    pub base_offset_ns: i64,
    pub steps: Vec<Step>,
    pub dropped: u64,
}

impl Timeline {
    /// The epoch the clock is in now.
    pub fn current(&self) -> u64 {
        self.dropped + self.steps.len() as u64
    }

    pub fn offset(&self, epoch: u64) -> i64 {
        match epoch.checked_sub(self.dropped) {
            None | Some(0) => self.base_offset_ns,
            Some(i) => self
                .steps
                .get(i as usize - 1)
                .or(self.steps.last())
                .map_or(self.base_offset_ns, |s| s.to_offset_ns),
        }
    }

    /// The epoch a wall-clock stamp was taken in: the one whose boot-time range holds
    /// `ts - offset`. After a backward step two epochs can hold the same wall time; the later
    /// one wins, so an ambiguous reading is left as it is (still `ClockUnsynced`) rather than
    /// moved the wrong way.
    pub fn epoch_of(&self, ts_ns: i64) -> u64 {
        for i in (0..=self.steps.len()).rev() {
            let offset = if i == 0 {
                self.base_offset_ns
            } else {
                self.steps[i - 1].to_offset_ns
            };
            let boot = ts_ns - offset;
            let after_start = i == 0 || boot >= self.steps[i - 1].at_boot_ns;
            let before_end = i == self.steps.len() || boot < self.steps[i].at_boot_ns;
            if after_start && before_end {
                return self.dropped + i as u64;
            }
        }
        self.current()
    }

    /// Brings fresh readings (from the sources, not from the store) to the current epoch: each
    /// own-clock unsynchronised reading (`ClockUnsynced`) stamped in an older epoch is moved by
    /// the steps since and marked `Restamped`. Returns how many moved. A `Restamped` reading
    /// is already in an epoch's terms and is left alone.
    pub fn correct(&self, readings: &mut [Reading]) -> usize {
        if self.steps.is_empty() {
            return 0;
        }
        let now = self.current();
        let to = self.offset(now);
        let mut n = 0;
        for r in readings
            .iter_mut()
            .filter(|r| r.quality == Quality::ClockUnsynced)
        {
            let e = self.epoch_of(r.ts_ns);
            if e < now {
                r.ts_ns += to - self.offset(e);
                r.quality = Quality::Restamped;
                n += 1;
            }
        }
        n
    }
}

/// What `/api/status` and `/metrics` show about the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub synced: bool,
    pub kernel: Kernel,
    pub wall_ns: i64,
    /// The last step: when (wall time after it) and by how much.
    pub last_step: Option<(i64, i64)>,
    pub steps: u64,
    /// Readings the committer moved to a corrected time.
    pub restamped: u64,
}

struct Inner {
    timeline: Timeline,
    offset_ns: i64,
    kernel: Kernel,
    /// Boot time of the last `adjtimex` read; `None` forces a read.
    kernel_read_at: Option<i64>,
    last_step_wall_ns: i64,
    restamped: u64,
}

/// The clock every source and the committer share (`Arc<Clock>`).
pub struct Clock {
    source: Arc<dyn TimeSource>,
    inner: Mutex<Inner>,
}

impl Clock {
    /// The kernel's clocks.
    pub fn system() -> Arc<Clock> {
        Clock::new(Arc::new(System))
    }

    pub fn new(source: Arc<dyn TimeSource>) -> Arc<Clock> {
        let (wall, boot) = source.now();
        Arc::new(Clock {
            inner: Mutex::new(Inner {
                timeline: Timeline {
                    base_offset_ns: wall - boot,
                    ..Timeline::default()
                },
                offset_ns: wall - boot,
                kernel: source.kernel(),
                kernel_read_at: Some(boot),
                last_step_wall_ns: 0,
                restamped: 0,
            }),
            source,
        })
    }

    /// The time now, and whether it is synchronised. Notices steps.
    pub fn now(&self) -> Stamp {
        // Read under the lock, so stamps and step detection are in one order: every stamp
        // taken with the new offset comes after the step is recorded.
        let Ok(mut s) = self.inner.lock() else {
            return Stamp::new(self.source.now().0, false);
        };
        let (wall, boot) = self.source.now();
        let offset = wall - boot;
        if (offset - s.offset_ns).abs() > STEP_THRESHOLD_NS {
            let step = Step {
                at_boot_ns: boot,
                from_offset_ns: s.offset_ns,
                to_offset_ns: offset,
            };
            tracing::warn!(
                step_s = step.delta_ns() as f64 / 1e9,
                "wall clock stepped; unsynchronised readings of this run are re-stamped"
            );
            let t = &mut s.timeline;
            t.steps.push(step);
            if t.steps.len() > MAX_STEPS {
                let old = t.steps.remove(0);
                t.base_offset_ns = old.to_offset_ns;
                t.dropped += 1;
            }
            s.offset_ns = offset;
            s.last_step_wall_ns = wall;
            s.kernel_read_at = None;
        }
        if s.kernel_read_at
            .is_none_or(|at| boot - at >= 1_000_000_000 || boot < at)
        {
            let k = self.source.kernel();
            if k.synced != s.kernel.synced {
                tracing::info!(
                    synced = k.synced,
                    est_error_s = k.est_error_ns as f64 / 1e9,
                    "kernel clock synchronisation changed"
                );
            }
            s.kernel = k;
            s.kernel_read_at = Some(boot);
        }
        Stamp::new(wall, s.kernel.synced && wall >= MIN_VALID_TS_NS)
    }

    /// A copy of the epochs so far (for the committer's corrections).
    pub fn timeline(&self) -> Timeline {
        self.inner
            .lock()
            .map(|s| s.timeline.clone())
            .unwrap_or_default()
    }

    /// The number of the epoch the clock is in: changes exactly when a step was detected.
    pub fn epoch(&self) -> u64 {
        self.inner.lock().map_or(0, |s| s.timeline.current())
    }

    pub fn count_restamped(&self, n: u64) {
        if let Ok(mut s) = self.inner.lock() {
            s.restamped += n;
        }
    }

    pub fn status(&self) -> Status {
        let now = self.now();
        self.inner
            .lock()
            .map(|s| Status {
                synced: now.synced,
                kernel: s.kernel,
                wall_ns: now.ts_ns,
                last_step: s
                    .timeline
                    .steps
                    .last()
                    .map(|st| (s.last_step_wall_ns, st.delta_ns())),
                steps: s.timeline.current(),
                restamped: s.restamped,
            })
            .unwrap_or_default()
    }
}

/// The clock's state in `/metrics`, read at scrape time.
impl crate::metrics::Collector for Clock {
    fn collect(&self, out: &mut crate::metrics::Encoder) {
        use crate::metrics::Kind;
        let c = self.status();
        out.single(
            "gkgw_clock_synced",
            "1 while the kernel says the clock is synchronised.",
            Kind::Gauge,
            u64::from(c.synced),
        );
        out.single(
            "gkgw_clock_last_step_seconds",
            "Size of the last step of the wall clock (0: none since start).",
            Kind::Gauge,
            c.last_step.map_or(0.0, |(_, d)| d as f64 / 1e9),
        );
        out.single(
            "gkgw_clock_steps_total",
            "Steps of the wall clock since start.",
            Kind::Counter,
            c.steps,
        );
        out.single(
            "gkgw_clock_restamped_total",
            "Readings re-stamped after a clock step.",
            Kind::Counter,
            c.restamped,
        );
        out.single(
            "gkgw_clock_offset_seconds",
            "NTP offset correction (adjtimex).",
            Kind::Gauge,
            c.kernel.offset_ns as f64 / 1e9,
        );
        out.single(
            "gkgw_clock_estimated_error_seconds",
            "Estimated clock error (adjtimex).",
            Kind::Gauge,
            c.kernel.est_error_ns as f64 / 1e9,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Series, Value};

    const S: i64 = 1_000_000_000;
    const YEAR: i64 = 365 * 24 * 3600 * S;
    /// 2026-11-22T09:33:20Z.
    const NOW: i64 = 1_795_340_000 * S;

    #[test]
    fn adjtimex_status_is_interpreted() {
        let check = |ret, status, expected: (bool, i64)| {
            let k = interpret(ret, status, 250, 16_000, 32_000);
            assert_eq!(
                (k.synced, k.offset_ns),
                expected,
                "ret {ret} status {status:#x}"
            );
            assert_eq!((k.est_error_ns, k.max_error_ns), (16_000_000, 32_000_000));
        };
        check(0, 0, (true, 250_000)); // TIME_OK
        check(1, 0x2000, (true, 250)); // TIME_INS, STA_NANO
        check(5, 0x0040, (false, 250_000)); // what this VM says: TIME_ERROR, STA_UNSYNC
        check(5, 0, (false, 250_000)); // TIME_ERROR alone (e.g. STA_CLOCKERR)
        check(0, 0x0041, (false, 250_000)); // STA_UNSYNC with STA_PLL
        check(-1, 0, (false, 250_000)); // the call failed
    }

    #[test]
    fn device_timestamps_are_bounded_by_the_build_date_and_our_clock() {
        let floor = NOW - 3 * YEAR;
        let synced = Stamp {
            ts_ns: NOW,
            synced: true,
            floor_ns: floor,
        };
        let unsynced = Stamp {
            ts_ns: NOW - 2 * YEAR,
            synced: false,
            floor_ns: floor,
        };
        assert!(synced.plausible(NOW + MAX_FUTURE_NS));
        assert!(!synced.plausible(NOW + MAX_FUTURE_NS + 1));
        assert!(!synced.plausible(floor - 1));
        assert!(synced.plausible(floor));
        // A meter with a good clock is two years "ahead" of a Pi booted at an old saved time.
        assert!(unsynced.plausible(NOW));
        assert!(
            !unsynced.plausible(4_070_908_800 * S),
            "2099 is never plausible"
        );
        assert!(!unsynced.plausible(floor - 1));
        const { assert!(MIN_VALID_TS_NS >= 1_577_836_800 * S - YEAR) };
        assert_eq!(Stamp::new(NOW, true).floor_ns, MIN_VALID_TS_NS);
    }

    #[test]
    fn time_quality_wins_over_bad() {
        let s = |synced| Stamp::new(NOW, synced);
        assert_eq!(s(true).quality(Quality::Bad), Quality::Bad);
        assert_eq!(s(true).quality(Quality::Good), Quality::Good);
        assert_eq!(s(false).quality(Quality::Good), Quality::ClockUnsynced);
        assert_eq!(s(false).quality(Quality::Bad), Quality::ClockUnsynced);
    }

    #[test]
    fn steps_are_detected_from_the_offset_not_from_time_passing() {
        let fake = FakeTime::new(NOW - 2 * YEAR, false);
        let clock = Clock::new(fake.clone());
        assert_eq!(clock.now().ts_ns, NOW - 2 * YEAR);
        assert!(!clock.now().synced);
        fake.advance(3600 * S);
        fake.step(STEP_THRESHOLD_NS); // a slew-sized correction is not a step
        clock.now();
        assert_eq!(clock.epoch(), 0);
        fake.step(2 * YEAR);
        fake.set_synced(true);
        let after = clock.now();
        assert!(
            after.synced,
            "the sync state is read again right after a step"
        );
        assert_eq!(clock.epoch(), 1);
        let st = clock.status();
        // The small correction before it is part of the step, measured from the last epoch.
        assert_eq!(
            st.last_step,
            Some((after.ts_ns, 2 * YEAR + STEP_THRESHOLD_NS))
        );
        assert_eq!(st.steps, 1);
    }

    #[test]
    fn a_clock_before_the_build_date_is_never_synced() {
        let clock = Clock::new(FakeTime::new(MIN_VALID_TS_NS - S, true));
        assert!(!clock.now().synced);
    }

    fn reading(ts_ns: i64, quality: Quality) -> Reading {
        Reading {
            series: Series::new("m", "d"),
            ts_ns,
            quality,
            fields: vec![("v".into(), Value::Float(1.0))],
            ack: None,
            receipt: None,
        }
    }

    /// `timeline` from (boot time of detection, new offset) pairs after `base`; `readings` are
    /// (ts, quality) before and after `correct`.
    type Stamped = (i64, Quality);

    fn check(base: i64, steps: &[(i64, i64)], readings: &[(Stamped, Stamped)]) {
        let mut from = base;
        let t = Timeline {
            base_offset_ns: base,
            steps: steps
                .iter()
                .map(|&(at, to)| {
                    let s = Step {
                        at_boot_ns: at,
                        from_offset_ns: from,
                        to_offset_ns: to,
                    };
                    from = to;
                    s
                })
                .collect(),
            dropped: 0,
        };
        let mut rs: Vec<Reading> = readings.iter().map(|(a, _)| reading(a.0, a.1)).collect();
        t.correct(&mut rs);
        let got: Vec<(i64, Quality)> = rs.iter().map(|r| (r.ts_ns, r.quality)).collect();
        let want: Vec<(i64, Quality)> = readings.iter().map(|(_, b)| *b).collect();
        assert_eq!(got, want, "steps {steps:?}");
    }

    #[test]
    fn restamping_moves_unsynced_readings_of_old_epochs_by_the_steps_since() {
        use Quality::*;
        let old = NOW - 2 * YEAR; // offset before the step (boot time starts near 0)
                                  // Booted at a saved time two years old; stepped at boot 100 s.
        check(
            old,
            &[(100 * S, NOW)],
            &[
                ((old + 10 * S, ClockUnsynced), (NOW + 10 * S, Restamped)),
                ((old + 99 * S, Bad), (old + 99 * S, Bad)), // not our clock's fault: not moved
                ((old + 50 * S, Good), (old + 50 * S, Good)), // a device's own timestamp
                (
                    (NOW + 101 * S, ClockUnsynced),
                    (NOW + 101 * S, ClockUnsynced),
                ), // new epoch
                ((NOW + 120 * S, Good), (NOW + 120 * S, Good)),
            ],
        );
        // Two steps while unsynced: the first epoch moves by both, a restamped one by the rest.
        check(
            old,
            &[(100 * S, old + 3600 * S), (200 * S, NOW)],
            &[
                ((old + 10 * S, ClockUnsynced), (NOW + 10 * S, Restamped)),
                ((old + 3750 * S, ClockUnsynced), (NOW + 150 * S, Restamped)),
                ((old + 3610 * S, Restamped), (old + 3610 * S, Restamped)),
            ],
        );
        // Backward step of 1 h at boot 7200 s: wall times 3600..7200 s after the base are in
        // both epochs; the later epoch wins, so those stay as they are.
        check(
            NOW,
            &[(7200 * S, NOW - 3600 * S)],
            &[
                ((NOW + 1000 * S, ClockUnsynced), (NOW - 2600 * S, Restamped)),
                (
                    (NOW + 7000 * S, ClockUnsynced),
                    (NOW + 7000 * S, ClockUnsynced),
                ),
            ],
        );
        check(NOW, &[], &[((NOW, ClockUnsynced), (NOW, ClockUnsynced))]);
    }

    #[test]
    fn the_oldest_steps_are_dropped_but_epochs_keep_counting() {
        let fake = FakeTime::new(NOW, false);
        let clock = Clock::new(fake.clone());
        for _ in 0..MAX_STEPS + 3 {
            fake.step(S);
            clock.now();
        }
        let t = clock.timeline();
        assert_eq!(t.current(), MAX_STEPS as u64 + 3);
        assert_eq!(t.steps.len(), MAX_STEPS);
        assert_eq!(t.offset(t.current()), clock.now().ts_ns - 1_000_000_000);
        assert_eq!(t.offset(0), t.base_offset_ns);
    }
}
