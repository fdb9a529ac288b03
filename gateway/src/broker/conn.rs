//! One client connection: CONNECT, login, then packets until either side closes.
//!
//! The loop only moves data: bytes in → packets (rumqttc's codec) → [`Conn::on_packet`];
//! commit receipts and outbound messages → packets out. What is allowed is decided by
//! `acl` and `auth`, where sessions live by `hub`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::acl::{self, Identity};
use super::auth::Verdict;
use super::hub::{Link, Outbound, QUEUE};
use super::{Ctx, Inbound, Refusal, Refused};
use crate::model::{Confirmation, Receipt};

/// A client may leave this many QoS 2 messages unreleased before it is cut off.
const MAX_QOS2_OPEN: usize = 1024;
/// A read buffer that grew beyond this (a large packet) is given back once it is empty.
const KEEP_BUFFER: usize = 4096;

/// Logs one line per kind of event at most every 10 s, with how many were suppressed, so an
/// attacker cannot fill the disk through our log.
#[derive(Default)]
pub(super) struct LogLimiter {
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl LogLimiter {
    pub(super) fn note(&self, key: &'static str, log: impl FnOnce(u64)) {
        let now = Instant::now();
        let Ok(mut m) = self.last.lock() else { return };
        let e = m.entry(key).or_insert((now - Duration::from_secs(3600), 0));
        if now.duration_since(e.0) >= Duration::from_secs(10) {
            log(e.1);
            *e = (now, 0);
        } else {
            e.1 += 1;
        }
    }
}

/// Removes a connection from the pending list however its CONNECT phase ends.
struct PendingGuard<'a, I: Inbound> {
    ctx: &'a Ctx<I>,
    id: u64,
}

impl<I: Inbound> Drop for PendingGuard<'_, I> {
    fn drop(&mut self) {
        self.ctx.pending.remove(self.id);
    }
}

/// Why a connection ended; decides whether its will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// DISCONNECT from the client: no will.
    Disconnect,
    /// Gateway stopping, or told to close (taken over, account removed): no will.
    Closed,
    /// The client vanished or broke the protocol: its will is published.
    Abnormal,
}

enum ReadError {
    Eof,
    Io,
    Codec(CodecError),
}

/// Reads until one whole packet is in `buf` and returns it.
async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, ReadError> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(CodecError::InsufficientBytes(n)) => {
                buf.reserve(n);
                match rd.read_buf(buf).await {
                    Ok(0) => return Err(ReadError::Eof),
                    Ok(_) => {}
                    Err(_) => return Err(ReadError::Io),
                }
            }
            Err(e) => return Err(ReadError::Codec(e)),
        }
    }
}

fn write(out: &mut BytesMut, p: Packet) {
    // Only our own small packets and outbound publishes (bounded by the payloads we make)
    // are written; the size check is rumqttc's, against a limit nothing of ours reaches.
    let _ = p.write(out, usize::MAX);
}

pub(super) async fn serve<I: Inbound>(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    ctx: Arc<Ctx<I>>,
    evict: CancellationToken,
) {
    let (rd, wr) = stream.into_split();
    serve_halves(rd, wr, peer, id, ctx, evict).await;
}

/// A connection on the TLS listener: the handshake (within `connect_timeout`, a client
/// certificate if `tls_client_ca_file` is set), then the same MQTT session as on plain TCP.
pub(super) async fn serve_tls<I: Inbound>(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    peer: SocketAddr,
    id: u64,
    ctx: Arc<Ctx<I>>,
    evict: CancellationToken,
) {
    let shaken = tokio::select! {
        _ = evict.cancelled() => None,
        r = tokio::time::timeout(ctx.settings.connect_timeout, acceptor.accept(stream)) => Some(r),
    };
    let tls = match shaken {
        Some(Ok(Ok(tls))) => tls,
        other => {
            ctx.pending.remove(id);
            if other.is_some() {
                ctx.metrics.refused.inc(Refusal::Tls);
                ctx.log.note("tls", |suppressed| {
                    let why = match &other {
                        Some(Ok(Err(e))) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(%peer, suppressed, error = %why, "mqtt TLS handshake failed");
                });
            }
            return;
        }
    };
    let (rd, wr) = tokio::io::split(tls);
    serve_halves(rd, wr, peer, id, ctx, evict).await;
}

async fn serve_halves<I: Inbound, R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    id: u64,
    ctx: Arc<Ctx<I>>,
    evict: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(256);
    let mut out = BytesMut::new();
    let guard = PendingGuard { ctx: &ctx, id };

    let first = tokio::select! {
        _ = evict.cancelled() => return,
        r = tokio::time::timeout(
            ctx.settings.connect_timeout,
            read_packet(&mut rd, &mut buf, ctx.settings.max_packet_bytes),
        ) => r,
    };
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Err(ReadError::Codec(
            CodecError::InvalidProtocol | CodecError::InvalidProtocolLevel(_),
        ))) => {
            write(
                &mut out,
                Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::RefusedProtocolVersion,
                    false,
                )),
            );
            let _ = wr.write_all(&out).await;
            ctx.metrics.refused.inc(Refusal::Protocol);
            return;
        }
        Err(_) => {
            ctx.metrics.refused.inc(Refusal::ConnectTimeout);
            return;
        }
        Ok(_) => {
            ctx.metrics.refused.inc(Refusal::Protocol);
            ctx.log.note("no-connect", |suppressed| {
                tracing::debug!(%peer, suppressed, "mqtt connection closed before a valid CONNECT");
            });
            return;
        }
    };
    let refuse = |code: ConnectReturnCode| {
        let mut o = BytesMut::new();
        write(&mut o, Packet::ConnAck(ConnAck::new(code, false)));
        o
    };
    if connect.protocol != Protocol::V4 {
        let _ = wr
            .write_all(&refuse(ConnectReturnCode::RefusedProtocolVersion))
            .await;
        ctx.metrics.refused.inc(Refusal::Protocol);
        return;
    }
    let login = connect.login.map(|l| (l.username, l.password));
    let user = login.as_ref().map(|(u, _)| u.clone());
    let verdict = tokio::select! {
        _ = evict.cancelled() => return,
        v = ctx.gate.login(login, peer.ip()) => v,
    };
    let identity = match verdict {
        Verdict::Accepted(i) => i,
        refused => {
            let code = if refused == Verdict::NotAuthorized {
                ConnectReturnCode::NotAuthorized
            } else {
                ConnectReturnCode::BadUserNamePassword
            };
            ctx.log.note("login", |suppressed| {
                tracing::warn!(%peer, user = ?user, suppressed, "mqtt login refused");
            });
            let _ = wr.write_all(&refuse(code)).await;
            return;
        }
    };
    if !acl::client_id_ok(&identity, &connect.client_id) {
        ctx.inbound.refused(Refused::Identity);
        ctx.log.note("client-id", |suppressed| {
            tracing::warn!(%peer, account = ?identity.name(), client_id = ?connect.client_id, suppressed, "mqtt client id must be the meter id: refused");
        });
        let _ = wr.write_all(&refuse(ConnectReturnCode::BadClientId)).await;
        return;
    }
    if let Some(w) = &connect.last_will {
        if !ctx.acl.may_will(&identity, &w.topic) {
            ctx.inbound.refused(Refused::Identity);
            ctx.log.note("will", |suppressed| {
                tracing::warn!(%peer, account = ?identity.name(), topic = ?w.topic, suppressed, "mqtt will outside the account's own topics: refused");
            });
            let _ = wr
                .write_all(&refuse(ConnectReturnCode::NotAuthorized))
                .await;
            return;
        }
    }
    drop(guard);

    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    let link = Link { id, tx: out_tx };
    let meter = match &identity {
        Identity::Meter(m) => Some(m.clone()),
        _ => None,
    };
    let kept = match &meter {
        Some(m) => ctx.hub.attach_meter(m, link, connect.clean_session),
        None => {
            ctx.hub.attach_watcher(link);
            None
        }
    };
    let session_present = kept.is_some();
    ctx.metrics.connected.inc();
    tracing::debug!(%peer, account = ?identity.name(), keep_alive = connect.keep_alive, "mqtt client connected");
    write(
        &mut out,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present)),
    );
    let (rc_tx, rc_rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        ctx: &ctx,
        identity,
        peer,
        will: connect.last_will,
        inflight: 0,
        qos2: HashMap::new(),
        receipts: rc_tx,
        ack_topic: meter.as_ref().map(|m| super::outbox::ack_topic(m)),
        acked: false,
        meter: meter.clone(),
        id,
    };
    conn.note_filters(&kept.unwrap_or_default());
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let end = conn
        .run(&mut rd, &mut wr, buf, out, out_rx, rc_rx, keep_alive)
        .await;
    if end == End::Abnormal {
        if let Some(w) = conn.will.take() {
            conn.publish_will(w).await;
        }
    }
    match &meter {
        Some(m) => ctx.hub.detach_meter(m, id),
        None => ctx.hub.detach_watcher(id),
    }
    ctx.metrics.connected.dec();
    tracing::debug!(%peer, account = ?conn.identity.name(), ?end, "mqtt client disconnected");
}

struct Conn<'a, I: Inbound> {
    ctx: &'a Ctx<I>,
    identity: Identity,
    meter: Option<Arc<str>>,
    id: u64,
    peer: SocketAddr,
    will: Option<LastWill>,
    /// QoS 1/2 messages handed to ingest and not yet committed.
    inflight: usize,
    /// QoS 2 packet ids received and not yet released: committed (PUBREC sent) or not.
    qos2: HashMap<u16, bool>,
    receipts: mpsc::UnboundedSender<Confirmation>,
    /// A meter's `meters/{id}/ack`, and whether its session subscribes to it: then the
    /// application ack of a committed reading is written right behind its PUBACK.
    ack_topic: Option<String>,
    acked: bool,
}

const QOS2_BIT: u32 = 1 << 16;

impl<I: Inbound> Conn<'_, I> {
    #[allow(clippy::too_many_arguments)]
    async fn run<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        mut buf: BytesMut,
        mut out: BytesMut,
        mut out_rx: mpsc::Receiver<Outbound>,
        mut rc_rx: mpsc::UnboundedReceiver<Confirmation>,
        keep_alive: Option<Duration>,
    ) -> End {
        let ctx = self.ctx;
        let max_inflight = ctx.settings.max_inflight;
        let mut last_in = tokio::time::Instant::now();
        // Made once and polled by reference: creating them every turn of the loop costs a
        // timer and a lock of the shared shutdown token per packet.
        let shutdown = ctx.shutdown.cancelled();
        tokio::pin!(shutdown);
        let far = Duration::from_secs(86_400 * 365);
        let idle = tokio::time::sleep(keep_alive.unwrap_or(far));
        tokio::pin!(idle);
        loop {
            if !out.is_empty() {
                if wr.write_all(&out).await.is_err() {
                    return End::Abnormal;
                }
                out.clear();
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => return End::Closed,
                Some(token) = rc_rx.recv() => {
                    // Every receipt that is there goes out in one write.
                    self.committed(token, &mut out);
                    while let Ok(token) = rc_rx.try_recv() {
                        self.committed(token, &mut out);
                    }
                }
                m = out_rx.recv() => {
                    let mut next = m;
                    let mut batch = 0;
                    while let Some(m) = next.take() {
                        match m {
                            Outbound::Publish { topic, payload } => write(
                                &mut out,
                                Packet::Publish(Publish::from_bytes(&*topic, QoS::AtMostOnce, payload)),
                            ),
                            Outbound::Close(why) => {
                                tracing::debug!(peer = %self.peer, account = ?self.identity.name(), why, "mqtt connection closed by the gateway");
                                return End::Closed;
                            }
                        }
                        batch += 1;
                        if batch < 256 {
                            next = out_rx.try_recv().ok();
                        }
                    }
                    if batch == 0 {
                        return End::Closed;
                    }
                },
                r = rd.read_buf(&mut buf), if self.inflight < max_inflight => match r {
                    Ok(0) | Err(_) => return End::Abnormal,
                    Ok(_) => {
                        last_in = tokio::time::Instant::now();
                        if let Some(end) = self.on_bytes(&mut buf, &mut out).await {
                            if !out.is_empty() {
                                let _ = wr.write_all(&out).await;
                            }
                            return end;
                        }
                        if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                            buf = BytesMut::with_capacity(256);
                        }
                    }
                },
                _ = &mut idle => {
                    // The timer is only moved when it fires, not on every packet.
                    let Some(k) = keep_alive else {
                        idle.as_mut().reset(tokio::time::Instant::now() + far);
                        continue;
                    };
                    if tokio::time::Instant::now() < last_in + k {
                        idle.as_mut().reset(last_in + k);
                        continue;
                    }
                    self.ctx.log.note("keep-alive", |suppressed| {
                        tracing::debug!(peer = %self.peer, suppressed, "mqtt keep-alive expired");
                    });
                    return End::Abnormal;
                }
            }
        }
    }

    /// Every whole packet in `buf`; `Some` ends the connection.
    async fn on_bytes(&mut self, buf: &mut BytesMut, out: &mut BytesMut) -> Option<End> {
        loop {
            match Packet::read(buf, self.ctx.settings.max_packet_bytes) {
                Ok(p) => {
                    if let Some(end) = self.on_packet(p, out).await {
                        return Some(end);
                    }
                }
                Err(CodecError::InsufficientBytes(n)) => {
                    buf.reserve(n);
                    return None;
                }
                Err(CodecError::PayloadSizeLimitExceeded(size)) => {
                    self.ctx.inbound.refused(Refused::Oversized);
                    self.ctx.log.note("too-large", |suppressed| {
                        tracing::warn!(peer = %self.peer, account = ?self.identity.name(), size, limit = self.ctx.settings.max_packet_bytes, suppressed, "mqtt packet above broker.max_packet_bytes: connection closed");
                    });
                    return Some(End::Abnormal);
                }
                Err(e) => {
                    self.violation("malformed packet", &e.to_string());
                    return Some(End::Abnormal);
                }
            }
        }
    }

    fn violation(&self, what: &'static str, detail: &str) {
        self.ctx.metrics.refused.inc(Refusal::Protocol);
        self.ctx.log.note(what, |suppressed| {
            tracing::warn!(peer = %self.peer, account = ?self.identity.name(), detail = ?detail, suppressed, "mqtt protocol violation: {what}; connection closed");
        });
    }

    async fn on_packet(&mut self, p: Packet, out: &mut BytesMut) -> Option<End> {
        match p {
            Packet::Publish(p) => return self.on_publish(p, out).await,
            Packet::PubRel(r) => {
                self.qos2.remove(&r.pkid);
                write(out, Packet::PubComp(PubComp::new(r.pkid)));
            }
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                let mut granted = Vec::new();
                for f in s.filters {
                    if self.ctx.acl.may_subscribe(&self.identity, &f.path) {
                        self.note_filters(std::slice::from_ref(&f.path));
                        codes.push(SubscribeReasonCode::Success(QoS::AtMostOnce));
                        granted.push(f.path);
                    } else {
                        codes.push(SubscribeReasonCode::Failure);
                        self.ctx.inbound.refused(Refused::Identity);
                        self.ctx.log.note("subscribe", |suppressed| {
                            tracing::warn!(peer = %self.peer, account = ?self.identity.name(), filter = ?f.path, suppressed, "mqtt subscription outside the account's topics refused");
                        });
                    }
                }
                self.ctx
                    .hub
                    .set_filters(self.meter.as_ref(), self.id, &granted, true);
                write(out, Packet::SubAck(SubAck::new(s.pkid, codes)));
            }
            Packet::Unsubscribe(u) => {
                if let Some(t) = &self.ack_topic {
                    if u.topics.iter().any(|f| acl::topic_matches(f, t)) {
                        self.acked = false;
                    }
                }
                self.ctx
                    .hub
                    .set_filters(self.meter.as_ref(), self.id, &u.topics, false);
                write(out, Packet::UnsubAck(UnsubAck::new(u.pkid)));
            }
            Packet::PingReq => write(out, Packet::PingResp),
            Packet::Disconnect => return Some(End::Disconnect),
            // We only ever send QoS 0, so there is nothing for these to acknowledge.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Connect(_) => {
                // MQTT-3.1.0-2. The packet (with its password) is never logged.
                self.violation("second CONNECT", "");
                return Some(End::Abnormal);
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.violation("server-only packet from a client", "");
                return Some(End::Abnormal);
            }
        }
        None
    }

    async fn on_publish(&mut self, p: Publish, out: &mut BytesMut) -> Option<End> {
        if !acl::valid_topic_name(&p.topic) {
            self.violation("wildcard in a PUBLISH topic", &p.topic);
            return Some(End::Abnormal);
        }
        if !self.ctx.acl.may_publish(&self.identity, &p.topic) {
            self.ctx.inbound.refused(Refused::Identity);
            self.ctx.log.note("identity", |suppressed| {
                tracing::warn!(peer = %self.peer, account = ?self.identity.name(), topic = ?p.topic, suppressed, "mqtt publish outside the account's own topics: refused, connection closed");
            });
            return Some(End::Abnormal);
        }
        if self.ctx.hub.has_watchers() {
            self.ctx.hub.publish(&p.topic, p.payload.clone());
        }
        let receipt = match p.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Receipt::new(self.receipts.clone(), u32::from(p.pkid))),
            QoS::ExactlyOnce => match self.qos2.get(&p.pkid) {
                Some(true) => {
                    write(out, Packet::PubRec(PubRec::new(p.pkid)));
                    return None;
                }
                Some(false) => return None, // a resend of one still being committed
                None if self.qos2.len() >= MAX_QOS2_OPEN => {
                    self.violation("too many unreleased QoS 2 messages", "");
                    return Some(End::Abnormal);
                }
                None => {
                    self.qos2.insert(p.pkid, false);
                    Some(Receipt::new(
                        self.receipts.clone(),
                        u32::from(p.pkid) | QOS2_BIT,
                    ))
                }
            },
        };
        if receipt.is_some() {
            self.inflight += 1;
            if self.inflight == self.ctx.settings.max_inflight {
                // This meter now waits for its PUBACKs: ask for the commit now.
                self.ctx.settings.commit_now.notify_one();
            }
        }
        self.ctx
            .inbound
            .publish(&self.identity, &p.topic, p.payload, receipt)
            .await;
        None
    }

    fn note_filters(&mut self, filters: &[String]) {
        if let Some(t) = &self.ack_topic {
            if filters.iter().any(|f| acl::topic_matches(f, t)) {
                self.acked = true;
            }
        }
    }

    fn committed(&mut self, c: Confirmation, out: &mut BytesMut) {
        self.inflight = self.inflight.saturating_sub(1);
        let pkid = (c.token & 0xffff) as u16;
        if c.token & QOS2_BIT != 0 {
            if let Some(done) = self.qos2.get_mut(&pkid) {
                *done = true;
            }
            write(out, Packet::PubRec(PubRec::new(pkid)));
        } else {
            write(out, Packet::PubAck(PubAck::new(pkid)));
        }
        if let (Some(seq), Some(topic)) = (c.ack_seq, &self.ack_topic) {
            let payload = super::outbox::ack_payload(seq);
            self.ctx.hub.publish_to_watchers(topic, payload.clone());
            if self.acked {
                write(
                    out,
                    Packet::Publish(Publish::from_bytes(
                        topic.as_str(),
                        QoS::AtMostOnce,
                        payload,
                    )),
                );
            }
            self.ctx.metrics.acks_published.inc();
        }
    }

    async fn publish_will(&mut self, w: LastWill) {
        if self.ctx.hub.has_watchers() {
            self.ctx.hub.publish(&w.topic, w.message.clone());
        }
        self.ctx
            .inbound
            .publish(&self.identity, &w.topic, w.message, None)
            .await;
    }
}
