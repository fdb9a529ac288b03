//! The fleet simulation: N gateways' uplink senders (the real `uplink::http` / `uplink::mqtt`
//! code, each with its own store file and outbox) in this one process, all coming back from
//! an outage at once with a backlog of B batches each, against one receiver
//! (`tests/peers/receiver.py`: HTTP, or Mosquitto with the receiver subscribed). Each batch is
//! a real 5-minute batch of a site with M meters (`uplink::batch::assemble`).
//!
//! ```text
//! cargo bench -p gkgw --bench uplink_fleet -- url=http://127.0.0.1:19500/batches gateways=500 batches=10 meters=20
//! cargo bench -p gkgw --bench uplink_fleet -- url=mqtt://127.0.0.1:1883 gateways=500 batches=10 meters=20
//! ```
//! Prints the time until every outbox is empty, the batches/s that took, the peak over any 5 s,
//! and this process's CPU seconds (user + system) per 1,000 batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gkgw::aggregate::window::Window;
use gkgw::clock::Clock;
use gkgw::metrics::Registry;
use gkgw::store::outbox::{Inputs, Outbox, SpanWindow};
use gkgw::store::Handle;
use gkgw::uplink::{self, batch, Config, Metrics, SharedStatus};
use tokio_util::sync::CancellationToken;

/// CPU seconds (user + system) this process has used.
fn cpu_s() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .find_map(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One 5-minute span of a site with `meters` gas meters (4 quantities each) and the plant's
/// 12 series.
fn inputs(meters: usize, start_ns: i64) -> Inputs {
    let w = |q: &str, i: String, counter: bool, v: f64| SpanWindow {
        quantity: Arc::from(q),
        instance: Arc::from(i.as_str()),
        start_ns,
        window: Window {
            counter,
            count: 60,
            min: v * 0.98,
            max: v * 1.02,
            sum: 60.0 * v,
            last: Some((start_ns + 299_000_000_000, v)),
            bad: 0,
            unsynced: 0,
            delta: if counter { 0.01 * v } else { 0.0 },
            resets: 0,
            revision: 0,
        },
        revised: false,
    };
    let mut windows = Vec::new();
    for m in 0..meters {
        let id = format!("GM-{m:04}");
        windows.push(w("meter.gas_used", id.clone(), true, 200.0 + m as f64));
        windows.push(w("meter.credit", id.clone(), false, 3.0));
        windows.push(w("meter.battery", id.clone(), false, 3.7));
        windows.push(w("meter.rssi", id, false, -75.0));
    }
    for (q, i, v) in [
        ("digester.pressure", "digester-1", 22.0),
        ("digester.temperature", "digester-1", 36.5),
        ("digester.ph", "digester-1", 7.1),
        ("biogas.ch4", "analyser", 58.0),
        ("biogas.co2", "analyser", 40.0),
        ("biogas.h2s", "analyser", 180.0),
        ("gas.flow", "gas-meter", 0.9),
        ("compressor.pressure", "compressor", 180.0),
        ("compressor.temperature", "compressor", 55.0),
        ("power.active", "compressor-meter", 1.2),
    ] {
        windows.push(w(q, i.into(), false, v));
    }
    windows.push(w("gas.volume", "gas-meter".into(), true, 4000.0));
    windows.push(w(
        "power.energy_import",
        "compressor-meter".into(),
        true,
        900.0,
    ));
    Inputs {
        windows,
        span: Some((start_ns, start_ns + 300_000_000_000)),
        ..Inputs::default()
    }
}

struct Site {
    outbox: Handle<Outbox>,
}

fn main() -> anyhow::Result<()> {
    let url: String = arg("url", String::new());
    anyhow::ensure!(
        !url.is_empty(),
        "url=http://HOST:PORT/batches or url=mqtt://HOST:PORT"
    );
    let gateways: usize = arg("gateways", 500);
    let batches: usize = arg("batches", 10);
    let meters: usize = arg("meters", 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(url, gateways, batches, meters))
}

async fn run(url: String, gateways: usize, batches: usize, meters: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let now = gkgw::clock::wall_ns();
    let t0 = now.div_euclid(300_000_000_000) * 300_000_000_000 - batches as i64 * 300_000_000_000;
    let mut sites = Vec::with_capacity(gateways);
    let mut body_bytes = 0usize;
    let prep = Instant::now();
    for g in 0..gateways {
        let site = format!("site-{g:04}");
        let header = batch::Header {
            site: site.clone(),
            gateway: "gw1".into(),
            now_ns: now,
            clock_synced: true,
            span_s: 300,
        };
        let bodies: Vec<Vec<u8>> = (0..batches)
            .flat_map(|b| {
                let start = t0 + b as i64 * 300_000_000_000;
                batch::assemble(&header, &inputs(meters, start), b as u64 + 1, 256 * 1024)
            })
            .collect();
        body_bytes += bodies.iter().map(Vec::len).sum::<usize>();
        let mut outbox = Outbox::open(&dir.path().join(format!("{site}.db")))?;
        outbox.enqueue(&bodies, now)?;
        sites.push((
            site,
            Site {
                outbox: Handle::new(outbox),
            },
        ));
    }
    let total = gateways * batches;
    println!(
        "{gateways} gateways × {batches} batches ({meters} meters each): {total} batches, {:.1} KB JSON each, prepared in {:.1} s",
        body_bytes as f64 / total as f64 / 1024.0,
        prep.elapsed().as_secs_f64()
    );
    let cancel = CancellationToken::new();
    let cpu0 = cpu_s();
    let start = Instant::now();
    let mut all_metrics = Vec::with_capacity(gateways);
    let mut tasks = Vec::with_capacity(gateways);
    for (site, s) in &sites {
        let cfg = Config {
            enabled: true,
            url: url.clone(),
            gateway: "gw1".into(),
            timeout_ms: 60_000,
            min_backoff_ms: 500,
            max_backoff_ms: 5_000,
            ..Config::default()
        };
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        all_metrics.push(metrics.clone());
        let status = SharedStatus::default();
        let built = Arc::new(tokio::sync::Notify::new());
        if cfg.is_mqtt() {
            tasks.push(tokio::spawn(uplink::mqtt::run(
                cfg,
                site.clone(),
                s.outbox.clone(),
                None,
                metrics,
                status,
                clock.clone(),
                built,
                cancel.clone(),
            )));
        } else {
            let sender = uplink::http::Sender::new(&cfg, site)?;
            tasks.push(tokio::spawn(uplink::http::run(
                sender,
                s.outbox.clone(),
                None,
                metrics,
                status,
                clock.clone(),
                built,
                cancel.clone(),
            )));
        }
    }
    // Every second: how many are still waiting, over all the outboxes.
    let mut history: Vec<(f64, usize)> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut waiting = 0;
        for (_, s) in &sites {
            waiting += s.outbox.run(|o| o.backlog()).await?.batches as usize;
        }
        let t = start.elapsed().as_secs_f64();
        history.push((t, total - waiting));
        if waiting == 0 || t > 1200.0 {
            break;
        }
    }
    let took = start.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
    cancel.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let done = history.last().map_or(0, |h| h.1);
    let peak = history
        .windows(6)
        .map(|w| (w[5].1 - w[0].1) as f64 / (w[5].0 - w[0].0))
        .reduce(f64::max)
        .map_or("n/a (under 5 s)".to_owned(), |p| format!("{p:.1}/s"));
    let errors: u64 = all_metrics.iter().map(|m| m.errors.get()).sum();
    let bytes: u64 = all_metrics.iter().map(|m| m.bytes_sent.get()).sum();
    println!(
        "failed attempts (retried): {errors}; {:.1} MB of JSON sent",
        bytes as f64 / 1e6
    );
    println!(
        "confirmed {done} of {total} in {took:.1} s: {:.1} batches/s sustained, peak {peak} over 5 s; gateways' CPU {cpu:.1} s ({:.2} CPU-s per 1,000 batches, {:.0} % of one core)",
        done as f64 / took,
        cpu / done.max(1) as f64 * 1000.0,
        cpu / took * 100.0
    );
    Ok(())
}
