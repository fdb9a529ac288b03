//! The MQTT transport: batches published with QoS 1 on `gkgw/{site}/{gateway}/batch` to a
//! central broker (rumqttc), commands received on `gkgw/{site}/{gateway}/cmd`.
//!
//! - A persistent session (`clean_session = false`, client id `{site}.{gateway}`), so the
//!   broker keeps the command subscription and queued commands while the link is down.
//! - **One batch in flight.** A batch is confirmed by the PUBACK of that very message (its
//!   packet id, learnt from the outgoing PUBLISH), and only then leaves the outbox. After a
//!   disconnect the batch not yet acknowledged is published again from the outbox (same body,
//!   same idempotency key), so what rumqttc keeps or drops across reconnects does not matter
//!   (CRATES.md: a clean session drops in-flight messages).
//! - The user name is the gateway id, the password the token of `token_file`; `mqtts://` uses
//!   rustls with the web roots or `ca_file`.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;

use super::http::Commands;
use super::{update, Config, Metrics, SharedStatus};
use crate::clock::Clock;
use crate::store::outbox::Outbox;
use crate::store::Handle;

/// The topics of one gateway.
pub fn topics(site: &str, gateway: &str) -> (String, String) {
    (
        format!("gkgw/{site}/{gateway}/batch"),
        format!("gkgw/{site}/{gateway}/cmd"),
    )
}

/// What the event loop tells the sender.
enum Seen {
    Connected,
    Disconnected(String),
    Published(u16),
    Acked(u16),
    Command(Vec<u8>),
}

fn options(cfg: &Config, site: &str) -> Result<(MqttOptions, String), String> {
    let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("uplink.url: {e}"))?;
    let host = url.host_str().ok_or("uplink.url: no host")?.to_owned();
    let tls = url.scheme() == "mqtts";
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let mut o = MqttOptions::new(format!("{site}.{}", cfg.gateway), host.clone(), port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(cfg.max_batch_bytes + 4096, 64 * 1024);
    o.set_inflight(1);
    if let Some(p) = &cfg.token_file {
        let token = crate::config::read_secret(p)
            .map_err(|e| format!("uplink.token_file {}: {e}", p.display()))?;
        o.set_credentials(cfg.gateway.clone(), token);
    }
    if tls {
        let mut roots = rustls::RootCertStore::empty();
        match &cfg.ca_file {
            Some(p) => {
                let pem =
                    std::fs::read(p).map_err(|e| format!("uplink.ca_file {}: {e}", p.display()))?;
                for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let c = c.map_err(|e| format!("uplink.ca_file {}: {e}", p.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("uplink.ca_file {}: {e}", p.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("uplink: TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
        ));
    }
    Ok((o, host))
}

/// Sends the outbox over MQTT until `cancel` (see the module doc).
#[allow(clippy::too_many_arguments)] // the task's parts, as topology.rs hands them over
pub async fn run(
    cfg: Config,
    site: String,
    outbox: Handle<Outbox>,
    commands: Option<Commands>,
    metrics: Arc<Metrics>,
    status: SharedStatus,
    clock: Arc<Clock>,
    built: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let (opts, _) = match options(&cfg, &site) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "uplink: MQTT transport not started");
            update(&status, |s| s.last_error = Some(e));
            return;
        }
    };
    let (batch_topic, cmd_topic) = topics(&site, &cfg.gateway);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
    {
        let cancel = cancel.clone();
        let (min, max) = (
            Duration::from_millis(cfg.min_backoff_ms),
            Duration::from_millis(cfg.max_backoff_ms),
        );
        tokio::spawn(async move {
            let mut backoff = min;
            loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => return,
                    ev = eventloop.poll() => ev,
                };
                let seen = match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = min;
                        Some(Seen::Connected)
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => Some(Seen::Acked(a.pkid)),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Some(Seen::Command(p.payload.to_vec()))
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Some(Seen::Published(pkid)),
                    Ok(_) => None,
                    Err(e) => {
                        let _ = tx.send(Seen::Disconnected(e.to_string()));
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(max);
                        None
                    }
                };
                if let Some(s) = seen {
                    if tx.send(s).is_err() {
                        return;
                    }
                }
            }
        });
    }
    let gap = Duration::from_secs_f64(1.0 / cfg.max_batches_per_s);
    let mut connected = false;
    let mut subscribed = false;
    // The batch in flight: its seq and, once the PUBLISH went out, its packet id.
    let mut in_flight: Option<(u64, Option<u16>, usize)> = None;
    let mut next_send = tokio::time::Instant::now();
    loop {
        super::refresh(&outbox, &metrics, &status, clock.now().ts_ns).await;
        if connected && in_flight.is_none() {
            if !subscribed {
                subscribed = client
                    .subscribe(cmd_topic.clone(), QoS::AtLeastOnce)
                    .await
                    .is_ok();
            }
            if tokio::time::Instant::now() >= next_send {
                match outbox.run(|o| o.oldest(1)).await {
                    Ok(mut v) => {
                        if let Some(b) = v.pop() {
                            let len = b.body.len();
                            if client
                                .publish(batch_topic.clone(), QoS::AtLeastOnce, false, b.body)
                                .await
                                .is_ok()
                            {
                                in_flight = Some((b.seq, None, len));
                                next_send = tokio::time::Instant::now() + gap;
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "uplink: cannot read the outbox"),
                }
            }
        }
        let seen = tokio::select! {
            _ = cancel.cancelled() => return,
            s = rx.recv() => s,
            _ = built.notified() => None,
            _ = tokio::time::sleep_until(next_send), if in_flight.is_none() && connected => None,
            _ = tokio::time::sleep(Duration::from_secs(5)) => None,
        };
        let now = clock.now().ts_ns;
        match seen {
            Some(Seen::Connected) => {
                connected = true;
                subscribed = false;
                // Whatever was in flight is sent again from the outbox.
                in_flight = None;
            }
            Some(Seen::Disconnected(e)) => {
                if connected {
                    tracing::warn!(error = %e, "uplink: MQTT link lost; batches wait in the outbox");
                }
                connected = false;
                in_flight = None;
                metrics.errors.inc();
                update(&status, |s| {
                    s.last_error = Some(format!("mqtt: {e}"));
                    s.last_error_ns = Some(now);
                });
            }
            Some(Seen::Published(pkid)) => {
                if let Some((_, id @ None, _)) = in_flight.as_mut() {
                    *id = Some(pkid);
                }
            }
            Some(Seen::Acked(pkid)) => {
                if let Some((seq, Some(id), len)) = in_flight {
                    if id == pkid {
                        if let Err(e) = outbox.run(move |o| o.confirm(seq)).await {
                            tracing::error!(error = %e, seq, "uplink: acknowledged but cannot remove it from the outbox");
                        }
                        metrics.sent.inc();
                        metrics.bytes_sent.add(len as u64);
                        metrics.last_success_s.set(now / 1_000_000_000);
                        update(&status, |s| s.last_success_ns = Some(now));
                        in_flight = None;
                    }
                }
            }
            Some(Seen::Command(payload)) => {
                let text = String::from_utf8_lossy(&payload).trim().to_owned();
                match &commands {
                    Some(c) => c(vec![text]),
                    None => tracing::warn!("uplink: a command came on the MQTT link, but no command relay is configured; refused"),
                }
            }
            None => {}
        }
    }
}
