//! CPU cost of the hot path, per reading: parsing a meter payload, committing to the store,
//! encoding line protocol. Results and the machine are recorded in docs/PERFORMANCE.md.
//! Run: `cargo bench -p gkgw --bench pipeline`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use gkgw::clock::{wall_ns, Stamp};
use gkgw::sources::mqtt::{parse, Rules};

const PAYLOAD: &str = r#"{"meter_id":"GM-0001","seq":42,"ts":"2026-11-22T08:00:00Z","kind":"gas","cum_kg":12.345,"credit_kg":1.2,"valve":"open","battery_v":3.7,"rssi":-71,"tamper":false}"#;

fn readings(n: usize) -> Vec<gkgw::model::Reading> {
    let rules = Rules::meters_only(4096);
    (0..n)
        .map(|i| {
            let p = PAYLOAD
                .replace("GM-0001", &format!("GM-{:04}", i % 500))
                .replace("\"seq\":42", &format!("\"seq\":{i}"));
            let topic = format!("meters/GM-{:04}/state", i % 500);
            parse(&rules, &topic, p.as_bytes(), Stamp::new(wall_ns(), true))
                .expect("valid")
                .remove(0)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rules = Rules::meters_only(4096);
    let mut g = c.benchmark_group("per_reading");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_meter_payload", |b| {
        b.iter(|| {
            parse(
                &rules,
                "meters/GM-0001/state",
                PAYLOAD.as_bytes(),
                Stamp::new(wall_ns(), true),
            )
            .expect("valid")
        })
    });
    let one = readings(1).remove(0);
    g.bench_function("encode_line_protocol", |b| {
        let mut out = String::with_capacity(512);
        b.iter(|| {
            out.clear();
            gkgw::line_protocol::encode(&mut out, "site-001", &one)
        })
    });
    // The store's record of the same reading (decimal floats where they are exact).
    let named: Vec<(u64, &gkgw::model::Value)> = one
        .fields
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (i as u64 + 1, v))
        .collect();
    let mut record = Vec::new();
    gkgw::store::codec::encode(named.iter().copied(), &mut record);
    g.bench_function("encode_record", |b| {
        let mut out = Vec::with_capacity(128);
        b.iter(|| {
            out.clear();
            gkgw::store::codec::encode(named.iter().copied(), &mut out)
        })
    });
    g.bench_function("decode_record", |b| {
        b.iter(|| gkgw::store::codec::decode(&record).expect("decodes"))
    });
    g.finish();

    let mut g = c.benchmark_group("store");
    let batch = readings(10_000);
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.sample_size(10);
    g.bench_function("append_10k_batch_fsync", |b| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = gkgw::store::Writer::open(&gkgw::store::db_path(dir.path())).expect("open");
        b.iter_batched(
            || (),
            |_| w.append(&batch).expect("append"),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("read_back_10k", |b| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = gkgw::store::db_path(dir.path());
        let mut w = gkgw::store::Writer::open(&path).expect("open");
        w.append(&batch).expect("append");
        let mut r = gkgw::store::Reader::open(&path).expect("reader");
        b.iter(|| r.read_after(0, 10_000).expect("read"))
    });
    g.finish();

    // Aggregation: folding 10k meter readings (500 meters, 4 numeric quantities each, 10
    // readings per second) into minute and hour windows, and committing them with the cursor.
    let plant = std::sync::Arc::new(gkgw::plant::Plant::new(gkgw::plant::Catalogue::builtin()));
    let mut spread = readings(10_000);
    let base = wall_ns() / 1_000_000_000 * 1_000_000_000;
    for (i, r) in spread.iter_mut().enumerate() {
        r.ts_ns = base + i as i64 * 100_000_000;
    }
    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Elements(spread.len() as u64));
    g.sample_size(10);
    g.bench_function("fold_and_commit_10k_meter_readings", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = gkgw::store::db_path(dir.path());
                gkgw::store::Writer::open(&path)
                    .expect("open")
                    .append(&spread)
                    .expect("append");
                (dir, path)
            },
            |(dir, path)| {
                let mut w = gkgw::aggregate::Worker::open(&path, plant.clone(), Default::default())
                    .expect("worker");
                assert_eq!(w.catch_up().expect("aggregate"), 10_000);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // History: a 7-day query of one quantity over a week of 1-second data (604,800 readings,
    // folded into windows once here).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = gkgw::store::db_path(dir.path());
    let pressure = plant
        .catalogue
        .get("digester.pressure")
        .expect("quantity")
        .clone();
    let week_start = base - 7 * 86_400 * 1_000_000_000;
    {
        let mut windows = gkgw::store::windows::Windows::open(&path).expect("windows");
        let mut agg = gkgw::aggregate::Aggregator::load(&windows, plant.clone()).expect("load");
        for day in 0..7i64 {
            let stored: Vec<gkgw::store::Stored> = (0..86_400i64)
                .map(|s| gkgw::store::Stored {
                    id: 0,
                    reading: gkgw::model::Reading {
                        series: gkgw::model::Series::new(
                            pressure.measurement.as_str(),
                            "digester-1",
                        ),
                        ts_ns: week_start + (day * 86_400 + s) * 1_000_000_000,
                        quality: gkgw::model::Quality::Good,
                        fields: vec![(
                            pressure.field.clone(),
                            gkgw::model::Value::Float(20.0 + (s % 600) as f64 / 60.0),
                        )],
                        ack: None,
                        receipt: None,
                    },
                })
                .collect();
            agg.fold(&windows, &stored).expect("fold");
            agg.commit(&mut windows).expect("commit");
        }
    }
    let windows = gkgw::store::windows::Windows::open(&path).expect("windows");
    let mut reader = gkgw::store::Reader::open(&path).expect("reader");
    let mut g = c.benchmark_group("history");
    for points in [300usize, 2_000] {
        let q = gkgw::aggregate::history::Query {
            quantity: "digester.pressure".into(),
            instance: "digester-1".into(),
            from_ns: week_start,
            to_ns: base,
            points,
        };
        g.bench_function(format!("seven_days_of_1s_data_in_{points}_points"), |b| {
            b.iter(|| {
                gkgw::aggregate::history::query(&plant, &mut reader, &windows, &q).expect("query")
            })
        });
    }
    g.finish();

    // Modbus: decoding the registers of every field of every shipped profile, per register.
    let profiles: Vec<_> = gkgw::sources::modbus::BUILTIN_PROFILES
        .iter()
        .map(|(n, _)| gkgw::sources::modbus::builtin_profile(n).expect("profile"))
        .collect();
    let fields: Vec<_> = profiles
        .iter()
        .flat_map(|p| p.fields.iter())
        .filter(|f| !f.kind.is_bit())
        .collect();
    let words: Vec<u16> = (0..64u16)
        .map(|i| 0x4148u16.wrapping_add(i.wrapping_mul(7919)))
        .collect();
    let registers: u64 = fields.iter().map(|f| u64::from(f.count)).sum();
    let mut g = c.benchmark_group("modbus");
    g.throughput(Throughput::Elements(registers));
    g.bench_function("decode_all_shipped_fields_per_register", |b| {
        b.iter(|| {
            for f in &fields {
                let _ = std::hint::black_box(gkgw::sources::modbus::decode::decode_registers(
                    f,
                    &words[..usize::from(f.count)],
                ));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
