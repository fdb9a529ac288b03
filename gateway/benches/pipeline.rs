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
