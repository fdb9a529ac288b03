//! The engine's behaviour, each case one scenario through [`check`]: inputs with their times,
//! and the transitions expected, in order.

use super::engine::{Engine, Input, Op, OpError, Sample};
use super::rules::{self, Config, OutputConfig, RuleConfig, Severity, Until};

const S: i64 = 1_000_000_000;
/// Scenario time 0 (Unix seconds): a Monday 00:00 UTC.
const BASE: i64 = 1_800_489_600;

fn ns(t: f64) -> i64 {
    BASE * S + (t * 1e9) as i64
}

/// One step of a scenario, at scenario second `t`.
#[derive(Clone)]
enum Step {
    /// A reading of quantity at instance.
    V(f64, &'static str, &'static str, f64),
    /// A reading in a unit.
    U(f64, &'static str, &'static str, &'static str, f64),
    /// A text reading.
    T(f64, &'static str, &'static str, &'static str),
    Bad(f64, &'static str, &'static str),
    /// A manual (logbook) reading.
    Manual(f64, &'static str, &'static str, f64),
    Tick(f64),
    /// Ticks every second from the first time to the second.
    Ticks(f64, f64),
    Seen(f64, &'static str, bool),
    Op(f64, &'static str, Op),
    /// The operation must fail with this error.
    Refused(f64, &'static str, Op, OpError),
    /// Output `name` must be on (true) or off.
    Output(&'static str, bool),
}
use Step::*;

fn engine(rules_toml: &str, meters: bool, offline_s: u64) -> Engine {
    #[derive(serde::Deserialize)]
    struct F {
        #[serde(default)]
        rule: Vec<RuleConfig>,
        #[serde(default)]
        output: Vec<OutputConfig>,
    }
    let f: F = toml::from_str(rules_toml).expect("rules parse");
    let mut cfg = Config {
        rule: f.rule,
        output: f.output,
        offline_s,
        ..Config::default()
    };
    cfg.meter.enabled = meters;
    let cat = crate::plant::Catalogue::builtin();
    let compiled = rules::compile(&cfg, &|q| cat.get(q).is_some()).expect("rules compile");
    Engine::new(compiled, cfg.output, cfg.max_shelve_hours, 3 * 3600, 1)
}

/// Runs `scenario` on `engine` and returns every transition as (t, id, action, state).
fn run(e: &mut Engine, scenario: &[Step]) -> Vec<(f64, String, &'static str, &'static str)> {
    let mut got = Vec::new();
    let push = |t: f64, evs: Vec<super::Event>, got: &mut Vec<_>| {
        for ev in evs {
            got.push((t, ev.id(), ev.action.as_str(), ev.state.as_str()));
        }
    };
    for step in scenario {
        match step.clone() {
            V(t, q, i, v) => {
                let evs = e.input(ns(t), &input(q, i, "", Sample::Number(v), false));
                push(t, evs, &mut got);
            }
            U(t, q, i, u, v) => {
                let evs = e.input(ns(t), &input(q, i, u, Sample::Number(v), false));
                push(t, evs, &mut got);
            }
            T(t, q, i, s) => {
                let evs = e.input(ns(t), &input(q, i, "", Sample::Text(s), false));
                push(t, evs, &mut got);
            }
            Bad(t, q, i) => {
                let evs = e.input(ns(t), &input(q, i, "", Sample::Bad, false));
                push(t, evs, &mut got);
            }
            Manual(t, q, i, v) => {
                let evs = e.input(ns(t), &input(q, i, "", Sample::Number(v), true));
                push(t, evs, &mut got);
            }
            Tick(t) => push(t, e.tick(ns(t)), &mut got),
            Ticks(a, b) => {
                let mut t = a;
                while t <= b {
                    push(t, e.tick(ns(t)), &mut got);
                    t += 1.0;
                }
            }
            Seen(t, d, m) => push(t, e.seen(ns(t), d, m), &mut got),
            Op(t, id, op) => {
                let evs = e.operate(ns(t), id, op, "amina", "checked").expect(id);
                push(t, evs, &mut got);
            }
            Refused(t, id, op, err) => {
                assert_eq!(
                    e.operate(ns(t), id, op, "amina", ""),
                    Err(err),
                    "{id} at {t}"
                );
            }
            Output(name, on) => assert_eq!(e.output_on(name), on, "output {name}"),
        }
    }
    got
}

fn input<'a>(q: &'a str, i: &'a str, unit: &'a str, sample: Sample<'a>, manual: bool) -> Input<'a> {
    Input {
        quantity: q,
        instance: i,
        unit,
        sample,
        manual,
    }
}

/// The one helper every case goes through: the scenario's transitions must be `expected`.
#[track_caller]
fn check(rules_toml: &str, scenario: &[Step], expected: &[(f64, &str, &str, &str)]) {
    let mut e = engine(rules_toml, false, 0);
    check_on(&mut e, scenario, expected);
}

#[track_caller]
fn check_on(e: &mut Engine, scenario: &[Step], expected: &[(f64, &str, &str, &str)]) {
    let got = run(e, scenario);
    let got: Vec<(f64, &str, &str, &str)> = got
        .iter()
        .map(|(t, id, a, s)| (*t, id.as_str(), *a, *s))
        .collect();
    assert_eq!(got, expected);
}

const OVERPRESSURE: &str = r#"
[[rule]]
name = "over"
severity = "alarm"
quantity = "digester.pressure"
above = 53.0
deadband = 3.0
stale_s = 60
[[output]]
output = "buzzer"
min_severity = "alarm"
[[output]]
output = "beacon"
min_severity = "warning"
until = "cleared"
"#;

/// A noisy signal at the threshold raises once and does not flap; it clears only below the
/// deadband.
#[test]
fn hysteresis_stops_flapping_on_a_noisy_signal() {
    let mut steps = Vec::new();
    for i in 0..40 {
        let noise = if i % 2 == 0 { 1.2 } else { -1.2 };
        steps.push(V(f64::from(i), "digester.pressure", "d1", 53.0 + noise));
    }
    steps.push(V(41.0, "digester.pressure", "d1", 50.5));
    steps.push(V(42.0, "digester.pressure", "d1", 49.9));
    check(
        OVERPRESSURE,
        &steps,
        &[
            (0.0, "over:d1", "raised", "active_unacknowledged"),
            (42.0, "over:d1", "cleared", "cleared_unacknowledged"),
        ],
    );
    // Without a deadband the same signal flaps on every sample.
    let mut e = engine(&OVERPRESSURE.replace("deadband = 3.0", ""), false, 0);
    let got = run(&mut e, &steps[..10]);
    assert_eq!(got.len(), 10, "{got:?}");
}

/// Active and acknowledged are two axes: acknowledged while active, then clear → normal;
/// cleared before acknowledged → cleared_unacknowledged, then acknowledged → normal.
#[test]
fn acknowledgement_is_its_own_axis() {
    check(
        OVERPRESSURE,
        &[
            V(0.0, "digester.pressure", "d1", 55.0),
            Output("buzzer", true),
            Output("beacon", true),
            Op(5.0, "over:d1", Op::Acknowledge),
            Output("buzzer", false),
            Output("beacon", true),
            Refused(
                6.0,
                "over:d1",
                Op::Acknowledge,
                OpError::AlreadyAcknowledged("over:d1".into()),
            ),
            V(10.0, "digester.pressure", "d1", 40.0),
            Output("beacon", false),
            V(20.0, "digester.pressure", "d1", 56.0),
            V(30.0, "digester.pressure", "d1", 40.0),
            Output("buzzer", false),
            Op(40.0, "over:d1", Op::Acknowledge),
            Refused(
                41.0,
                "over:d1",
                Op::Reset,
                OpError::NotLatched("over:d1".into()),
            ),
        ],
        &[
            (0.0, "over:d1", "raised", "active_unacknowledged"),
            (5.0, "over:d1", "acknowledged", "active_acknowledged"),
            (10.0, "over:d1", "cleared", "normal"),
            (20.0, "over:d1", "raised", "active_unacknowledged"),
            (30.0, "over:d1", "cleared", "cleared_unacknowledged"),
            (40.0, "over:d1", "acknowledged", "normal"),
        ],
    );
}

/// On-delay: a short excursion raises nothing; a long one raises when the delay is over.
/// Off-delay: it clears only once the condition has been gone that long.
#[test]
fn on_and_off_delays() {
    let rules = r#"
[[rule]]
name = "hot"
quantity = "compressor.temperature"
above = 90.0
on_delay_s = 10
off_delay_s = 5
"#;
    check(
        rules,
        &[
            V(0.0, "compressor.temperature", "c1", 95.0),
            Ticks(1.0, 5.0),
            V(6.0, "compressor.temperature", "c1", 80.0),
            Ticks(7.0, 20.0),
            V(21.0, "compressor.temperature", "c1", 95.0),
            Ticks(22.0, 40.0),
            V(41.0, "compressor.temperature", "c1", 80.0),
            Ticks(42.0, 44.0),
            V(45.0, "compressor.temperature", "c1", 95.0),
            Ticks(46.0, 47.0),
            V(48.0, "compressor.temperature", "c1", 80.0),
            Ticks(49.0, 60.0),
        ],
        &[
            (31.0, "hot:c1", "raised", "active_unacknowledged"),
            (53.0, "hot:c1", "cleared", "cleared_unacknowledged"),
        ],
    );
}

/// A latched rule stays active after its condition clears; reset is refused while the
/// condition is present and works once it is gone.
#[test]
fn latched_alarms_stay_until_reset() {
    let rules = r#"
[[rule]]
name = "lel20"
severity = "alarm"
quantity = "kitchen.ch4_lel"
above = 20.0
deadband = 2.0
latched = true
stale_s = 30
"#;
    check(
        rules,
        &[
            V(0.0, "kitchen.ch4_lel", "k", 25.0),
            Refused(
                1.0,
                "lel20:k",
                Op::Reset,
                OpError::StillPresent("lel20:k".into()),
            ),
            V(2.0, "kitchen.ch4_lel", "k", 0.0),
            V(10.0, "kitchen.ch4_lel", "k", 0.0),
            Op(11.0, "lel20:k", Op::Reset),
            Op(12.0, "lel20:k", Op::Acknowledge),
            Refused(
                13.0,
                "lel20:k",
                Op::Reset,
                OpError::NotActive("lel20:k".into()),
            ),
        ],
        &[
            (0.0, "lel20:k", "raised", "active_unacknowledged"),
            (11.0, "lel20:k", "reset", "cleared_unacknowledged"),
            (12.0, "lel20:k", "acknowledged", "normal"),
        ],
    );
}

/// No good reading for stale_s: the stale alarm is raised and the rule that reads the
/// quantity is suppressed (neither raised nor cleared on old data); bad readings do not count
/// as fresh; a good reading brings both back.
#[test]
fn stale_data_is_an_alarm_and_suppresses_its_dependants() {
    check(
        OVERPRESSURE,
        &[
            V(0.0, "digester.pressure", "d1", 55.0),
            Ticks(1.0, 60.0),
            Bad(61.0, "digester.pressure", "d1"),
            Tick(62.0),
            Output("buzzer", true),
            // While stale, the old 55 mbar neither clears nor re-raises anything.
            Ticks(63.0, 70.0),
            V(71.0, "digester.pressure", "d1", 40.0),
        ],
        &[
            (0.0, "over:d1", "raised", "active_unacknowledged"),
            (
                61.0,
                "stale.digester.pressure:d1",
                "raised",
                "active_unacknowledged",
            ),
            (61.0, "over:d1", "suppressed", "active_unacknowledged"),
            (
                71.0,
                "stale.digester.pressure:d1",
                "cleared",
                "cleared_unacknowledged",
            ),
            (71.0, "over:d1", "unsuppressed", "active_unacknowledged"),
            (71.0, "over:d1", "cleared", "cleared_unacknowledged"),
        ],
    );
}

const LEAK: &str = r#"
[[rule]]
name = "leak"
severity = "alarm"
quantity = "digester.pressure"
rate_below = -2.0
per = "hour"
window_s = 1800
and = [{ quantity = "gas.flow", below = 0.01 }]
on_delay_s = 300
stale_s = 600
"#;

fn night(flow: f64, fall_per_h: f64) -> Vec<Step> {
    let mut steps = Vec::new();
    for m in 0..=90 {
        let t = f64::from(m) * 60.0;
        steps.push(V(
            t,
            "digester.pressure",
            "digester-1",
            40.0 - fall_per_h * t / 3600.0,
        ));
        steps.push(V(t, "gas.flow", "gas-meter", flow));
        steps.push(Tick(t));
    }
    steps
}

/// Pressure falling with no gas flowing: a leak, once the rate's window is covered and the
/// on-delay has passed. The same fall while gas flows (the kitchen cooking) is no leak, and a
/// still night is no leak.
#[test]
fn leak_fires_on_its_scenario_and_not_on_a_normal_night() {
    check(
        LEAK,
        &night(0.0, 4.0),
        &[(1920.0, "leak:digester-1", "raised", "active_unacknowledged")],
    );
    check(LEAK, &night(1.5, 4.0), &[]);
    check(LEAK, &night(0.0, 0.0), &[]);
    check(LEAK, &night(0.0, 1.0), &[]);
}

/// CH4 falling while O2 rises, at the same analyser: air ingress. CH4 falling alone (souring)
/// is not.
#[test]
fn air_ingress_needs_both() {
    let rules = r#"
[[rule]]
name = "air_ingress"
quantity = "biogas.ch4"
rate_below = -1.0
window_s = 3600
and = [{ quantity = "biogas.o2", rate_above = 0.2, window_s = 3600 }]
"#;
    let scenario = |o2_rise: f64| {
        let mut steps = Vec::new();
        for m in 0..=70 {
            let t = f64::from(m) * 60.0;
            steps.push(V(t, "biogas.ch4", "ga", 60.0 - 3.0 * t / 3600.0));
            steps.push(V(t, "biogas.o2", "ga", 0.1 + o2_rise * t / 3600.0));
            // Another analyser's O2 is not this one's.
            steps.push(V(t, "biogas.o2", "other", 0.1));
        }
        steps
    };
    check(
        rules,
        &scenario(1.0),
        &[(3240.0, "air_ingress:ga", "raised", "active_unacknowledged")],
    );
    check(rules, &scenario(0.0), &[]);
}

/// A shelved alarm is still evaluated but drives no output; the shelf expires by itself and
/// the alarm comes back. Silence quiets outputs without acknowledging.
#[test]
fn shelving_expires_and_silence_does_not_acknowledge() {
    check(
        OVERPRESSURE,
        &[
            V(0.0, "digester.pressure", "d1", 55.0),
            Op(1.0, "over:d1", Op::Shelve(120 * S)),
            Output("buzzer", false),
            Refused(
                2.0,
                "over:d1",
                Op::Shelve(25 * 3600 * S),
                OpError::ShelveTooLong(24),
            ),
            V(50.0, "digester.pressure", "d1", 40.0),
            V(60.0, "digester.pressure", "d1", 56.0),
            Output("buzzer", false),
            V(100.0, "digester.pressure", "d1", 56.0),
            Ticks(101.0, 121.0),
            Output("buzzer", true),
            Op(130.0, "over:d1", Op::Silence),
            Output("buzzer", false),
            V(140.0, "digester.pressure", "d1", 40.0),
            V(150.0, "digester.pressure", "d1", 56.0),
            Output("buzzer", true),
        ],
        &[
            (0.0, "over:d1", "raised", "active_unacknowledged"),
            (1.0, "over:d1", "shelved", "active_unacknowledged"),
            (50.0, "over:d1", "cleared", "cleared_unacknowledged"),
            (60.0, "over:d1", "raised", "active_unacknowledged"),
            (121.0, "over:d1", "unshelved", "active_unacknowledged"),
            (130.0, "over:d1", "silenced", "active_unacknowledged"),
            (140.0, "over:d1", "cleared", "cleared_unacknowledged"),
            (150.0, "over:d1", "raised", "active_unacknowledged"),
        ],
    );
}

/// A restart keeps an active unacknowledged alarm so: it comes back from the store as it was,
/// and clears only when a fresh reading says so; it still needs its acknowledgement.
#[test]
fn restored_alarms_keep_their_state() {
    let mut e = engine(OVERPRESSURE, false, 0);
    run(&mut e, &[V(0.0, "digester.pressure", "d1", 55.0)]);
    let saved = e.persisted();
    assert_eq!(saved.len(), 1);
    let mut again = engine(OVERPRESSURE, false, 0);
    again.restore(ns(100.0), saved);
    let list = again.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "over:d1");
    assert_eq!(list[0].state.as_str(), "active_unacknowledged");
    assert!(again.output_on("buzzer"));
    check_on(
        &mut again,
        &[
            Ticks(101.0, 110.0),
            V(111.0, "digester.pressure", "d1", 40.0),
        ],
        &[(111.0, "over:d1", "cleared", "cleared_unacknowledged")],
    );
}

/// Every field meter gets the meter rules, by the unit its credit is in.
#[test]
fn meter_rules_apply_to_every_meter() {
    let mut e = engine("", true, 0);
    check_on(
        &mut e,
        &[
            U(0.0, "meter.credit", "GM-1", "kg", 0.4),
            U(0.0, "meter.credit", "GM-2", "kg", 3.0),
            U(0.0, "meter.credit", "EM-1", "kWh", 1.5),
            U(0.0, "meter.credit", "EM-2", "kWh", 3.0),
            U(10.0, "meter.credit", "GM-1", "kg", 0.52),
            U(20.0, "meter.credit", "GM-1", "kg", 0.6),
            U(30.0, "meter.credit", "GM-2", "kg", 0.0),
            T(30.0, "meter.valve", "GM-2", "closed"),
            T(31.0, "meter.tamper", "GM-3", "false"),
            V(32.0, "meter.tamper", "GM-3", 1.0),
            V(33.0, "meter.tamper", "GM-3", 0.0),
            V(40.0, "meter.battery", "GM-1", 3.3),
            // Use per local day (UTC+3): 2.5 kg by 20:00 local, then 3.5.
            V(3600.0, "meter.gas_used", "GM-1", 100.0),
            V(7200.0, "meter.gas_used", "GM-1", 102.5),
            V(10800.0, "meter.gas_used", "GM-1", 103.5),
            // A new local day (21:00 UTC) starts from its first reading.
            V(75700.0, "meter.gas_used", "GM-1", 104.0),
        ],
        &[
            (
                0.0,
                "meter_low_credit:GM-1",
                "raised",
                "active_unacknowledged",
            ),
            (
                0.0,
                "meter_low_credit:EM-1",
                "raised",
                "active_unacknowledged",
            ),
            (
                20.0,
                "meter_low_credit:GM-1",
                "cleared",
                "cleared_unacknowledged",
            ),
            (
                30.0,
                "meter_low_credit:GM-2",
                "raised",
                "active_unacknowledged",
            ),
            (
                30.0,
                "meter_credit_exhausted:GM-2",
                "raised",
                "active_unacknowledged",
            ),
            (
                30.0,
                "meter_valve_closed:GM-2",
                "raised",
                "active_unacknowledged",
            ),
            (32.0, "meter_tamper:GM-3", "raised", "active_unacknowledged"),
            (
                40.0,
                "meter_low_battery:GM-1",
                "raised",
                "active_unacknowledged",
            ),
            (
                10800.0,
                "meter_daily_use:GM-1",
                "raised",
                "active_unacknowledged",
            ),
            (
                75700.0,
                "meter_daily_use:GM-1",
                "cleared",
                "cleared_unacknowledged",
            ),
        ],
    );
}

/// Offline: a meter silent for `offline_s`, a polled device that never answers.
#[test]
fn offline_meters_and_devices() {
    let mut e = engine("", true, 120);
    e.expect_device(ns(0.0), "digester-1");
    check_on(
        &mut e,
        &[
            Seen(0.0, "GM-1", true),
            Ticks(1.0, 121.0),
            Seen(500.0, "digester-1", false),
            Ticks(1700.0, 1801.0),
            Seen(1900.0, "GM-1", true),
        ],
        &[
            (
                121.0,
                "device_offline:digester-1",
                "raised",
                "active_unacknowledged",
            ),
            (
                500.0,
                "device_offline:digester-1",
                "cleared",
                "cleared_unacknowledged",
            ),
            (
                1700.0,
                "device_offline:digester-1",
                "raised",
                "active_unacknowledged",
            ),
            (
                1801.0,
                "meter_offline:GM-1",
                "raised",
                "active_unacknowledged",
            ),
            (
                1900.0,
                "meter_offline:GM-1",
                "cleared",
                "cleared_unacknowledged",
            ),
        ],
    );
}

/// Lab results from the logbook are manual: never stale, however long ago.
#[test]
fn manual_lab_results_are_never_stale() {
    let rules = r#"
[[rule]]
name = "fos_tac_high"
quantity = "digester.fos_tac"
above = 0.4
[[rule]]
name = "ph_low"
quantity = "digester.ph"
below = 6.8
stale_s = 60
"#;
    check(
        rules,
        &[
            Manual(0.0, "digester.fos_tac", "lab", 0.45),
            Manual(0.0, "digester.ph", "lab", 6.5),
            Ticks(1.0, 100.0),
            Manual(7.0 * 86400.0, "digester.fos_tac", "lab", 0.3),
        ],
        &[
            (0.0, "fos_tac_high:lab", "raised", "active_unacknowledged"),
            (0.0, "ph_low:lab", "raised", "active_unacknowledged"),
            (
                604800.0,
                "fos_tac_high:lab",
                "cleared",
                "cleared_unacknowledged",
            ),
        ],
    );
}

/// The default rules are quiet on a normal simulated plant day (the demo plant's physics, no
/// faults), sampled every 10 s for 24 h.
#[test]
fn the_default_rules_are_quiet_on_a_normal_day() {
    use rand::SeedableRng;
    let cat = crate::plant::Catalogue::builtin();
    let cfg = Config::default();
    let rules = rules::compile(&cfg, &|q| cat.get(q).is_some()).expect("compiles");
    let mut e = Engine::new(rules, Vec::new(), 24, 3 * 3600, 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut p = crate::sim::plant::Physics::default();
    let mut events = Vec::new();
    for i in 0..8640 {
        let t = ns(f64::from(i) * 10.0);
        let hour = f64::from(i) * 10.0 / 3600.0;
        p.step(10.0, hour % 24.0, false, &mut rng);
        for (q, v) in [
            ("digester.pressure", p.pressure()),
            ("digester.temperature", p.slurry_c),
            ("digester.ph", p.ph),
            ("biogas.ch4", p.ch4),
            ("gas.flow", crate::sim::plant::kitchen_use(hour % 24.0)),
        ] {
            events.extend(e.input(t, &input(q, "plant", "", Sample::Number(v), false)));
        }
        events.extend(e.tick(t));
    }
    assert!(events.is_empty(), "{events:?}");
}

/// Sequence numbers are gapless, across every kind of transition, and go on from `next_seq`.
#[test]
fn sequence_numbers_are_gapless() {
    let mut e = engine(OVERPRESSURE, true, 0);
    let mut seqs = Vec::new();
    for (i, v) in [55.0, 40.0, 56.0, 39.0].iter().enumerate() {
        seqs.extend(
            e.input(
                ns(i as f64),
                &input("digester.pressure", "d1", "", Sample::Number(*v), false),
            )
            .into_iter()
            .map(|ev| ev.seq),
        );
    }
    seqs.extend(
        e.operate(ns(5.0), "over:d1", Op::Acknowledge, "", "")
            .unwrap()
            .into_iter()
            .map(|ev| ev.seq),
    );
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(e.next_seq(), 6);
    let e = Engine::new(Vec::new(), Vec::new(), 24, 0, 42);
    assert_eq!(e.next_seq(), 42);
    let _ = (Severity::Alarm, Until::Cleared);
}
