//! The embedded MQTT broker (rumqttd) that field meters connect to.
//!
//! Architecture invariant: this is the only module that imports rumqttd. The rest of the gateway
//! sees an [`IngestLink`] (messages in) and an [`Publisher`] (messages out).
//!
//! rumqttd traps handled here (CRATES.md): the local link stalls for good unless every
//! `Notification::Unschedule` is answered with `wake()`; `LinkTx::publish` blocks on a full
//! channel, so we only use `try_publish`; unknown TOML keys are ignored by rumqttd, so the file
//! is checked against what rumqttd actually parsed; memory is set by segment size x count.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, Notification};

use crate::credentials::Verifier;
use crate::metrics::Metrics;

/// The built-in copy of broker-config/rumqttd.toml, used when `broker.config_file` is empty.
pub const DEFAULT_RUMQTTD_TOML: &str = include_str!("../../broker-config/rumqttd.toml");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    #[error("{file}: unknown key {key} (rumqttd would silently ignore it)")]
    UnknownKey { file: String, key: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("broker link: {0}")]
    Link(String),
}

/// Every dotted key path of `v` that is absent in `parsed`.
fn unknown_keys(prefix: &str, v: &toml::Value, parsed: &toml::Value, out: &mut Vec<String>) {
    if let (toml::Value::Table(t), toml::Value::Table(p)) = (v, parsed) {
        for (k, sub) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match p.get(k) {
                Some(ps) => unknown_keys(&path, sub, ps, out),
                None => out.push(path),
            }
        }
    }
}

/// Loads and checks the rumqttd configuration: it must parse, and every key in it must be one
/// rumqttd knows (found by serialising back what it parsed and comparing key sets).
pub fn load_config(path: &Path) -> Result<rumqttd::Config, Error> {
    let (file, text) = if path.as_os_str().is_empty() {
        (
            "built-in rumqttd.toml".to_owned(),
            DEFAULT_RUMQTTD_TOML.to_owned(),
        )
    } else {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: file.clone(),
            message: e.to_string(),
        })?;
        (file, text)
    };
    let cfg_err = |message: String| Error::Config {
        file: file.clone(),
        message,
    };
    let raw: toml::Value = toml::from_str(&text).map_err(|e| cfg_err(e.to_string()))?;
    let config: rumqttd::Config = toml::from_str(&text).map_err(|e| cfg_err(e.to_string()))?;
    let back = toml::Value::try_from(&config).map_err(|e| cfg_err(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_keys("", &raw, &back, &mut unknown);
    if let Some(key) = unknown.into_iter().next() {
        return Err(Error::UnknownKey { file, key });
    }
    if config.v4.as_ref().is_none_or(|v| v.is_empty()) {
        return Err(cfg_err(
            "no [v4.*] listener: field meters speak MQTT 3.1.1".into(),
        ));
    }
    Ok(config)
}

pub struct Options {
    pub listen: Option<SocketAddr>,
    pub allow_anonymous: bool,
    pub verifier: Verifier,
}

/// Messages from the broker to the gateway.
pub struct IngestLink {
    rx: LinkRx,
    /// Our subscriptions and the last log offset seen on each: rumqttd keeps one commit log per
    /// filter, and a reader that falls further behind than the log holds is moved to its head
    /// without a word (only a `warn!` in rumqttd's log). A gap in the offsets is that skip.
    filters: Vec<String>,
    last_offset: Vec<Option<u64>>,
    metrics: Arc<Metrics>,
}

/// Publishes from the gateway into the broker (QoS 0: the local link cannot do more).
pub struct Publisher {
    tx: LinkTx,
}

/// Starts the broker on its own thread (rumqttd's `start` blocks forever and has no shutdown:
/// it ends with the process) and returns the local link subscribed to `filters`.
pub fn start(
    mut config: rumqttd::Config,
    opts: Options,
    filters: &[String],
    metrics: Arc<Metrics>,
) -> Result<(IngestLink, Publisher, Vec<SocketAddr>), Error> {
    let mut addrs = Vec::new();
    let mut names: Vec<String> = config
        .v4
        .as_ref()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let Some(server) = config.v4.as_mut().and_then(|v| v.get_mut(name)) else {
            continue;
        };
        if i == 0 {
            if let Some(listen) = opts.listen {
                server.listen = listen;
            }
        }
        if !opts.allow_anonymous {
            let verifier = opts.verifier.clone();
            let metrics = metrics.clone();
            server.set_auth_handler(move |_client_id: String, user: String, pass: String| {
                let verifier = verifier.clone();
                let metrics = metrics.clone();
                async move {
                    let ok = verifier.verify(user.clone(), pass).await;
                    if ok {
                        metrics.broker_auth_ok.fetch_add(1, Relaxed);
                    } else {
                        metrics.broker_auth_rejected.fetch_add(1, Relaxed);
                        tracing::warn!(user = %user, "mqtt login rejected");
                    }
                    ok
                }
            });
        }
        // rumqttd logs a bind failure on its own thread and carries on without the listener;
        // binding here first turns "port in use" into a start-up error the technician sees.
        let probe = std::net::TcpListener::bind(server.listen).map_err(|source| Error::Listen {
            addr: server.listen,
            source,
        })?;
        addrs.push(probe.local_addr().map_err(|source| Error::Listen {
            addr: server.listen,
            source,
        })?);
        drop(probe);
    }
    let mut broker = Broker::new(config);
    let (mut tx, rx) = broker
        .link("gkgw-ingest")
        .map_err(|e| Error::Link(e.to_string()))?;
    for f in filters {
        tx.subscribe(f.clone())
            .map_err(|e| Error::Link(e.to_string()))?;
    }
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| Error::Link(e.to_string()))?;
    let link = IngestLink {
        rx,
        filters: filters.to_vec(),
        last_offset: vec![None; filters.len()],
        metrics,
    };
    Ok((link, Publisher { tx }, addrs))
}

impl IngestLink {
    /// The next published message as `(topic, payload)`; `None` when the broker is gone.
    pub async fn next(&mut self) -> Option<(Bytes, Bytes)> {
        loop {
            match self.rx.next().await {
                Ok(Some(Notification::Forward(f))) => {
                    if let Some((_, offset)) = f.cursor {
                        self.count_skips(&f.publish.topic, offset);
                    }
                    return Some((f.publish.topic, f.publish.payload));
                }
                Ok(Some(Notification::Unschedule)) => {
                    if self.rx.wake().await.is_err() {
                        return None;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "broker link closed");
                    return None;
                }
            }
        }
    }
}

impl IngestLink {
    fn count_skips(&mut self, topic: &[u8], offset: u64) {
        let topic = String::from_utf8_lossy(topic);
        let Some(i) = self
            .filters
            .iter()
            .position(|f| crate::sources::mqtt::topic_matches(f, &topic))
        else {
            return;
        };
        if let Some(prev) = self.last_offset[i] {
            if offset > prev + 1 {
                let skipped = offset - prev - 1;
                self.metrics.broker_skipped.fetch_add(skipped, Relaxed);
                tracing::warn!(filter = %self.filters[i], skipped, "ingest fell behind the broker's log: messages skipped (meters that wait for their ack will resend)");
            }
        }
        self.last_offset[i] = Some(offset);
    }
}

impl Publisher {
    /// Publishes, blocking while the router's channel is full: call it from a thread of its
    /// own, never from an async task. `false` when the broker is gone.
    pub fn publish(&mut self, topic: String, payload: String) -> bool {
        self.tx.publish(topic, payload).is_ok()
    }
}

/// Established TCP connections to `port`, read from /proc/net/tcp{,6}: the number of connected
/// MQTT clients. rumqttd's own gauges read 0 under load (CRATES.md), and counting at the socket
/// level also sees clients that connected but never authenticated.
pub fn established_connections(port: u16) -> Option<usize> {
    let mut found = false;
    let mut n = 0;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        found = true;
        n += count_established(&text, port);
    }
    found.then_some(n)
}

fn count_established(proc_net_tcp: &str, port: u16) -> usize {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && cols.get(3) == Some(&"01")
        })
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_only_established_connections_to_the_port() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 0100007F:075B 00000000:0000 0A 00000000:00000000\n\
   1: 0100007F:075B 0100007F:D2F0 01 00000000:00000000\n\
   2: 0100007F:075B 0100007F:D2F2 01 00000000:00000000\n\
   3: 0100007F:D2F0 0100007F:075B 01 00000000:00000000\n\
   4: 0100007F:075B 0100007F:D2F4 06 00000000:00000000\n";
        assert_eq!(super::count_established(text, 1883), 2);
    }

    use super::*;

    #[test]
    fn shipped_config_loads() {
        let c = load_config(Path::new("")).expect("built-in config is valid");
        assert_eq!(c.router.max_segment_size, 1 << 20);
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            DEFAULT_RUMQTTD_TOML.replace(
                "max_inflight_count = 100",
                "max_inflight_count = 100\nmax_infligth = 3",
            ),
        )
        .expect("write");
        let err = load_config(&p)
            .expect_err("typo must be caught")
            .to_string();
        assert!(
            err.ends_with(
                "unknown key v4.1.connections.max_infligth (rumqttd would silently ignore it)"
            ),
            "{err}"
        );
    }
}
