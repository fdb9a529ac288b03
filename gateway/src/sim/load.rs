//! `gkgw load`: an MQTT load generator for the benchmarks in docs/PERFORMANCE.md. It publishes
//! meter state messages from M connections at a total rate, and counts either the gateway's
//! application acks (`--acks`, end to end: committed) or, against a plain broker such as
//! Mosquitto, the messages a subscriber receives (`--count-delivered`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub struct Options {
    pub broker: SocketAddr,
    pub connections: usize,
    pub messages: u64,
    /// Messages per second over all connections; 0 = as fast as possible.
    pub rate: u64,
    pub qos: QoS,
    pub acks: bool,
    pub count_delivered: bool,
    /// How long to wait for outstanding acks/deliveries after the last publish.
    pub drain: Duration,
    /// Keep the connections open this long after the last ack (idle-memory measurements).
    pub hold: Duration,
    /// Wait this long between "all connected" (printed) and the first publish, so a
    /// benchmark can leave the logins out of what it measures.
    pub pause: Duration,
    pub id_prefix: String,
    /// Create accounts for the load's meters in this credentials file first.
    pub credentials: Option<std::path::PathBuf>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub published: u64,
    pub acked: u64,
    pub delivered: u64,
    pub publish_secs: f64,
    pub total_secs: f64,
}

fn payload(id: &str, seq: u64) -> String {
    format!(
        r#"{{"meter_id":"{id}","seq":{seq},"kind":"gas","cum_kg":{:.3},"credit_kg":2.5,"valve":"open","battery_v":3.9,"rssi":-70,"tamper":false}}"#,
        seq as f64 * 0.01
    )
}

fn mqtt_client(
    broker: SocketAddr,
    client_id: String,
    password: Option<&str>,
    cap: usize,
) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(client_id.clone(), broker.ip().to_string(), broker.port());
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(100);
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(p) = password {
        o.set_credentials(client_id, p);
    }
    AsyncClient::new(o, cap)
}

/// Polls until the broker answers CONNACK: an error for a broker that is not there or refuses
/// the login, so a load run never reports success against nothing.
async fn connected(el: &mut rumqttc::EventLoop, who: &str) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                anyhow::bail!("{who}: the broker refused the login: {code:?}")
            }
            Err(e) if Instant::now() >= until => {
                anyhow::bail!("{who}: cannot connect to the broker: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let ids: Vec<String> = (0..opts.connections)
        .map(|i| format!("{}-{i:05}", opts.id_prefix))
        .collect();
    let passwords: Option<Vec<String>> = match &opts.credentials {
        None => None,
        Some(file) => {
            let accounts: Vec<(String, String)> = ids
                .iter()
                .map(|id| (id.clone(), crate::credentials::new_password()))
                .collect();
            let (f, a) = (file.clone(), accounts.clone());
            tokio::task::spawn_blocking(move || {
                crate::credentials::add_accounts(&f, crate::credentials::Kind::Meter, &a, true)
            })
            .await??;
            // The gateway looks at its accounts file every 2 s.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            Some(accounts.into_iter().map(|(_, p)| p).collect())
        }
    };
    let acked = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));

    let counter = if opts.count_delivered {
        let (c, mut el) = mqtt_client(opts.broker, format!("{}-counter", opts.id_prefix), None, 10);
        connected(&mut el, "counter").await?;
        c.subscribe("meters/+/state", opts.qos).await?;
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await? {
                break;
            }
        }
        let delivered = delivered.clone();
        Some(tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = ev {
                    delivered.fetch_add(1, Relaxed);
                }
            }
        }))
    } else {
        None
    };

    let per_conn = opts.messages / opts.connections as u64;
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let interval = (opts.rate > 0)
        .then(|| Duration::from_secs_f64(opts.connections as f64 / opts.rate as f64));
    let mut tasks = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let password = passwords.as_ref().map(|p| p[i].as_str());
        let (client, mut el) = mqtt_client(opts.broker, id.clone(), password, 1000);
        connected(&mut el, &id).await?;
        if opts.acks {
            client
                .subscribe(format!("meters/{id}/ack"), QoS::AtMostOnce)
                .await?;
        }
        let (acked, published) = (acked.clone(), published.clone());
        let qos = opts.qos;
        let topic = format!("meters/{id}/state");
        let pub_client = client.clone();
        let mut go = start_rx.clone();
        let publisher = tokio::spawn(async move {
            let _ = go.wait_for(|g| *g).await;
            let mut tick = interval.map(|d| {
                let mut t = tokio::time::interval(d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            for seq in 1..=per_conn {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                if pub_client
                    .publish(&topic, qos, false, payload(&id, seq))
                    .await
                    .is_err()
                {
                    break;
                }
                published.fetch_add(1, Relaxed);
            }
        });
        let poller = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        acked.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tasks.push((publisher, poller, client, start_tx.clone()));
    }
    {
        use std::io::Write;
        println!("all {} connected", opts.connections);
        let _ = std::io::stdout().flush();
    }
    tokio::time::sleep(opts.pause).await;
    let start = Instant::now();
    for (_, _, _, go) in &tasks {
        let _ = go.send(true);
    }
    for (p, _, _, _) in &mut tasks {
        let _ = p.await;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let total = published.load(Relaxed);
    let done = || {
        (!opts.acks || acked.load(Relaxed) >= total)
            && (!opts.count_delivered || delivered.load(Relaxed) >= total)
    };
    let drain_until = Instant::now() + opts.drain;
    while !done() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(opts.hold).await;
    for (_, poller, client, _) in tasks {
        let _ = client.try_disconnect();
        poller.abort();
    }
    if let Some(c) = counter {
        c.abort();
    }
    Ok(Report {
        published: total,
        acked: acked.load(Relaxed),
        delivered: delivered.load(Relaxed),
        publish_secs,
        total_secs,
    })
}
