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
    pub id_prefix: String,
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

async fn connect(
    broker: SocketAddr,
    client_id: String,
    cap: usize,
) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(100);
    o.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(o, cap)
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let acked = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let start = Instant::now();

    let counter = if opts.count_delivered {
        let (c, mut el) = connect(opts.broker, format!("{}-counter", opts.id_prefix), 10).await;
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
    let interval = (opts.rate > 0)
        .then(|| Duration::from_secs_f64(opts.connections as f64 / opts.rate as f64));
    let mut tasks = Vec::new();
    for i in 0..opts.connections {
        let id = format!("{}-{i:05}", opts.id_prefix);
        let (client, mut el) = connect(opts.broker, id.clone(), 1000).await;
        if opts.acks {
            client
                .subscribe(format!("meters/{id}/ack"), QoS::AtMostOnce)
                .await?;
        }
        let (acked, published) = (acked.clone(), published.clone());
        let qos = opts.qos;
        let topic = format!("meters/{id}/state");
        let pub_client = client.clone();
        let publisher = tokio::spawn(async move {
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
        tasks.push((publisher, poller, client));
    }
    for (p, _, _) in &mut tasks {
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
    for (_, poller, client) in tasks {
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
