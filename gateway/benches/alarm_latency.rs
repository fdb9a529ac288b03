//! Latency from a reading arriving at the gateway to its alarm: to the `alarms/{rule}` message
//! at a subscribed MQTT client, and to the GPIO output changing (the simulated backend's
//! line). A real gateway in-process (topology::start), a sensor publishing on MQTT (rumqttc,
//! QoS 0) and an integration subscribed to `alarms/#`; the value alternates above and below the
//! rule's threshold, so every reading is a transition (raised, cleared). Prints the
//! distribution. `cargo bench --bench alarm_latency [-- N]` (N round trips, default 500).

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: n={} min {:.2} ms, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        d.len(),
        ms(d[0]),
        ms(percentile(&d, 0.5)),
        ms(percentile(&d, 0.9)),
        ms(percentile(&d, 0.99)),
        ms(d[d.len() - 1])
    );
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(n))
}

async fn run(n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let creds = dir.path().join("meters.toml");
    gkgw::credentials::add_accounts(
        &creds,
        gkgw::credentials::Kind::Meter,
        &[("KS-1".into(), "sensor-password".into())],
        true,
    )?;
    gkgw::credentials::add_accounts(
        &creds,
        gkgw::credentials::Kind::Integration,
        &[("bench".into(), "watch-password".into())],
        true,
    )?;
    let text = format!(
        "[store]\nstate_dir = \"{}\"\n[broker]\nlisten = \"127.0.0.1:0\"\ncredentials_file = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[mqtt.topics]]\nfilter = \"kitchen/ch4\"\nformat = \"number\"\nquantity = \"kitchen.ch4_lel\"\ndevice = \"kitchen\"\npublishers = [\"KS-1\"]\n\
         [gpio]\nbackend = \"sim\"\n[[gpio.output]]\nname = \"buzzer\"\nline = 22\n\
         [alarms]\noffline_s = 0\n[alarms.meter]\nenabled = false\n[[alarms.output]]\noutput = \"buzzer\"\nmin_severity = \"critical\"\n\
         [[alarms.rule]]\nname = \"kitchen_methane\"\nseverity = \"critical\"\nquantity = \"kitchen.ch4_lel\"\nabove = 40.0\nstale_s = 0\n",
        dir.path().display(),
        creds.display()
    );
    let config = gkgw::config::Config::parse("bench.toml", &text)?;
    let gw = gkgw::topology::start(config).await?;
    let addr = gw.mqtt_addrs[0];

    // The buzzer's line level, watched from a thread of its own (every 20 µs).
    let outputs = gw.gpio.clone();
    let (gpio_tx, mut gpio_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, bool)>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        let mut last = false;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let level = outputs
                .snapshot()
                .iter()
                .any(|o| o.name == "buzzer" && o.level);
            if level != last {
                last = level;
                let _ = gpio_tx.send((Instant::now(), level));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    });

    let mut o = MqttOptions::new("bench", addr.ip().to_string(), addr.port());
    o.set_credentials("bench", "watch-password");
    o.set_keep_alive(Duration::from_secs(30));
    let (watch, mut watch_loop) = AsyncClient::new(o, 64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, String)>();
    tokio::spawn(async move {
        loop {
            match watch_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((Instant::now(), String::from_utf8_lossy(&p.payload).into()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    watch.subscribe("alarms/#", QoS::AtMostOnce).await?;

    let mut o = MqttOptions::new("KS-1", addr.ip().to_string(), addr.port());
    o.set_credentials("KS-1", "sensor-password");
    let (sensor, mut sensor_loop) = AsyncClient::new(o, 64);
    tokio::spawn(async move {
        loop {
            if sensor_loop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // Both logged in (argon2 takes a while) before timing starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut mqtt = Vec::with_capacity(n * 2);
    let mut gpio = Vec::with_capacity(n * 2);
    for i in 0..n * 2 {
        let (value, action) = if i % 2 == 0 {
            (50.0, "raised")
        } else {
            (5.0, "cleared")
        };
        let t0 = Instant::now();
        sensor
            .publish("kitchen/ch4", QoS::AtMostOnce, false, format!("{value}"))
            .await?;
        loop {
            let (t, msg) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("watcher gone"))?;
            if msg.contains(&format!("\"action\":\"{action}\"")) {
                mqtt.push(t - t0);
                break;
            }
        }
        let (t, level) = tokio::time::timeout(Duration::from_secs(10), gpio_rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("gpio watcher gone"))?;
        anyhow::ensure!(level == (i % 2 == 0), "buzzer level {level} after {action}");
        gpio.push(t - t0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    report("reading -> alarms/{rule} at a subscriber", mqtt);
    report("reading -> GPIO output line (simulated backend)", gpio);
    gw.stop(Duration::from_secs(10)).await;
    Ok(())
}
