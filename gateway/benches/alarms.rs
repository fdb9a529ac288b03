//! The alarm engine's throughput: readings per second through `Engine::input` with the
//! shipped default rules and the meter rules loaded, for a plant's quantities and for field
//! meters; and the 1-second tick over many alarms. `cargo bench --bench alarms`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gkgw::alarm::{rules, Engine, Input, Sample};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * S;

fn engine() -> (Engine, usize) {
    let cat = gkgw::plant::Catalogue::builtin();
    let cfg = rules::Config::default();
    let compiled = rules::compile(&cfg, &|q| cat.get(q).is_some()).expect("rules");
    let n = compiled.len();
    (Engine::new(compiled, Vec::new(), 24, 3 * 3600, 1), n)
}

fn bench(c: &mut Criterion) {
    let plant = [
        "digester.pressure",
        "digester.temperature",
        "digester.ph",
        "biogas.ch4",
        "biogas.o2",
        "gas.flow",
        "kitchen.ch4_lel",
        "compressor.fault.overtemperature",
    ];
    let (mut e, n_rules) = engine();
    println!("{n_rules} rules loaded (default site and safety rules, meter rules, device offline)");
    let mut g = c.benchmark_group("alarm_engine");
    g.throughput(Throughput::Elements(plant.len() as u64));
    let mut t = T0;
    g.bench_function("plant_readings", |b| {
        b.iter(|| {
            t += S;
            for (i, q) in plant.iter().enumerate() {
                let v = 10.0 + (t / S % 7) as f64 + i as f64;
                criterion::black_box(e.input(
                    t,
                    &Input {
                        quantity: q,
                        instance: "plant-1",
                        unit: "",
                        sample: Sample::Number(v),
                        manual: false,
                    },
                ));
            }
        })
    });
    let meters: Vec<String> = (0..500).map(|i| format!("GM-{i:04}")).collect();
    let (mut e, _) = engine();
    g.throughput(Throughput::Elements(meters.len() as u64 * 4));
    let mut t = T0;
    g.bench_function("meter_messages_500", |b| {
        b.iter(|| {
            t += S;
            for (i, m) in meters.iter().enumerate() {
                criterion::black_box(e.seen(t, m, true));
                for (q, unit, v) in [
                    ("meter.credit", "kg", 0.3 + (i % 10) as f64 * 0.1),
                    ("meter.gas_used", "kg", 100.0 + (t / S) as f64 * 0.001),
                    ("meter.battery", "V", 3.7),
                ] {
                    criterion::black_box(e.input(
                        t,
                        &Input {
                            quantity: q,
                            instance: m,
                            unit,
                            sample: Sample::Number(v),
                            manual: false,
                        },
                    ));
                }
                criterion::black_box(e.input(
                    t,
                    &Input {
                        quantity: "meter.valve",
                        instance: m,
                        unit: "",
                        sample: Sample::Text("open"),
                        manual: false,
                    },
                ));
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("tick_500_meters", |b| {
        b.iter(|| {
            t += S / 10;
            criterion::black_box(e.tick(t));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
