//! The WebSocket phase: frames to messages, the pub/sub protocol on top, fan-out with its
//! backpressure bound, the close handshake and heartbeats.

use std::rc::Rc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::{slot, Consumed, Engine, Phase};
use crate::broker::{BrokerError, ConnId};
use crate::error::ErrorCode;
use crate::log::Level;
use crate::outq::{Bound, Chunk};
use crate::protocol::{self, Ack, ClientMessage, MessageError, Replay};
use crate::ws::frame::{encode_close, encode_frame, OpCode};
use crate::ws::{CloseCode, Event, WsError};

/// An echo connection stops being read while this much waits for it (the echo route is exempt
/// from the event queue bound, which would cut the conformance suite's 16 MiB messages).
pub const ECHO_OUTQ_PAUSE_BYTES: usize = 32 << 20;

/// The event serialisation buffer is kept between publishes up to this size (bigger messages
/// get a buffer of their own each time, so one large publish does not pin its memory).
const EVENT_BUF_KEEP: usize = 64 * 1024 + 1024;

impl<S> Engine<S> {
    pub(super) fn consume_ws(&mut self, key: usize, buf: &mut [u8], now: Instant) -> Consumed {
        let mut pos = 0;
        loop {
            let conn = &mut self.conns[key];
            let Phase::WebSocket(ws) = &mut conn.phase else {
                return Consumed {
                    bytes: buf.len(),
                    phase_changed: false,
                };
            };
            if conn.doomed {
                return Consumed {
                    bytes: buf.len(),
                    phase_changed: false,
                };
            }
            match ws.session.decode(&mut buf[pos..]) {
                Ok((0, None)) => {
                    return Consumed {
                        bytes: pos,
                        phase_changed: false,
                    }
                }
                Ok((n, event)) => {
                    pos += n;
                    if let Some(event) = event {
                        self.on_event(key, event, now);
                    }
                }
                Err(e) => {
                    self.fail(key, e, now);
                    return Consumed {
                        bytes: buf.len(),
                        phase_changed: false,
                    };
                }
            }
        }
    }

    /// A protocol violation: close with its code and stop reading (RFC 6455 §7.1.7).
    fn fail(&mut self, key: usize, e: WsError, now: Instant) {
        let c = &self.conns[key];
        crate::log!(Level::Info, "websocket_protocol_error", "conn" => c.id, "error" => e.to_string(), "code" => e.close_code().as_u16());
        if let Phase::WebSocket(ws) = &c.phase {
            if !ws.close_sent {
                let frame = self.close_frame(e.close_code().as_u16(), &e.to_string());
                self.push(key, Chunk::Owned(frame), Bound::Exempt);
            }
        }
        self.drain(key, now);
    }

    fn on_event(&mut self, key: usize, event: Event<'_>, now: Instant) {
        let Phase::WebSocket(ws) = &self.conns[key].phase else {
            return;
        };
        let (echo, close_sent) = (ws.echo, ws.close_sent);
        match event {
            Event::Ping(payload) => {
                if !close_sent {
                    self.push(
                        key,
                        Chunk::Owned(encode_frame(OpCode::Pong, payload)),
                        Bound::Exempt,
                    );
                }
            }
            Event::Pong(_) => {}
            Event::Close(code, _) => {
                if !close_sent {
                    let reply = match code {
                        Some(code) => self.close_frame(code, ""),
                        None => encode_frame(OpCode::Close, &[]),
                    };
                    self.push(key, Chunk::Owned(reply), Bound::Exempt);
                }
                self.drain(key, now);
            }
            // After the server's close frame, data is read but ignored (§5.5.1).
            _ if close_sent => {}
            Event::Text(text) if echo => {
                self.push(
                    key,
                    Chunk::Owned(encode_frame(OpCode::Text, &text)),
                    Bound::Exempt,
                );
            }
            Event::Binary(data) if echo => {
                self.push(
                    key,
                    Chunk::Owned(encode_frame(OpCode::Binary, &data)),
                    Bound::Exempt,
                );
            }
            Event::Text(text) => self.on_message(key, &text, now),
            Event::Binary(_) => {
                let ts = crate::time::Timestamp::now();
                let e = MessageError::Binary;
                self.reply(
                    key,
                    protocol::error_frame(None, None, e.code(), &e.to_string(), &ts),
                );
            }
        }
    }

    /// Queues a reply to this connection's own request. Replies do not count against the
    /// slow-consumer bound: a client that does not read them is paced instead, by the server
    /// not reading its requests while `MAX_QUEUE_BYTES` of output wait (see `wants_read`).
    fn reply(&mut self, key: usize, frame: Vec<u8>) {
        self.push(key, Chunk::Owned(frame), Bound::Exempt);
    }

    fn on_message(&mut self, key: usize, text: &[u8], now: Instant) {
        let ts = crate::time::Timestamp::now();
        let incoming = match protocol::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let rid = protocol::salvage_request_id(text);
                self.reply(
                    key,
                    protocol::error_frame(rid, None, e.code(), &e.to_string(), &ts),
                );
                return;
            }
        };
        let rid = incoming.request_id;
        let id = self.conns[key].id;
        let frame = match incoming.message {
            ClientMessage::Ping => protocol::pong_frame(rid, &ts),
            ClientMessage::Subscribe {
                topic,
                client_id,
                replay,
            } => match self.broker.subscribe(id, &topic, replay) {
                Ok(sub) => {
                    let mut ack = Ack::new(rid, &topic, &ts);
                    ack.seq = Some(sub.last_seq);
                    if replay != Replay::None {
                        ack.replayed = Some(sub.replay.len());
                    }
                    if let Some(recovered) = sub.recovered {
                        ack.recovered = Some(recovered);
                        ack.first_seq = Some(sub.first_seq);
                    }
                    if !sub.newly {
                        ack.already_subscribed = Some(true);
                    }
                    self.reply(key, protocol::text_frame(&ack));
                    self.stats.messages.replayed += sub.replay.len() as u64;
                    for frame in sub.replay {
                        self.push(key, Chunk::Shared(frame), Bound::Exempt);
                    }
                    crate::log!(Level::Debug, "subscribed", "conn" => id, "topic" => &*topic, "client_id" => &*client_id);
                    return;
                }
                Err(e) => broker_error(rid, &topic, &e, &ts),
            },
            ClientMessage::Unsubscribe { topic, .. } => match self.broker.unsubscribe(id, &topic) {
                Ok(()) => protocol::text_frame(&Ack::new(rid, &topic, &ts)),
                Err(e) => broker_error(rid, &topic, &e, &ts),
            },
            ClientMessage::Publish { .. } if !self.take_publish_token(key, now) => {
                self.stats.messages.rate_limited += 1;
                let message = format!(
                    "publish rate limit of {} per second exceeded",
                    self.config.publish_rate_limit
                );
                protocol::error_frame(rid, None, ErrorCode::RateLimited, &message, &ts)
            }
            ClientMessage::Publish {
                topic,
                id: message_id,
                payload,
            } => match self.publish(&topic, &message_id, payload, &ts, now) {
                Ok(seq) => {
                    let mut ack = Ack::new(rid, &topic, &ts);
                    ack.seq = Some(seq);
                    protocol::text_frame(&ack)
                }
                Err(e) => broker_error(rid, &topic, &e, &ts),
            },
        };
        self.reply(key, frame);
    }

    fn take_publish_token(&mut self, key: usize, now: Instant) -> bool {
        let (rate, burst) = (
            self.config.publish_rate_limit,
            self.config.publish_rate_burst,
        );
        match &mut self.conns[key].phase {
            Phase::WebSocket(ws) => match &mut ws.bucket {
                Some(bucket) => {
                    bucket.take(rate, if burst == 0 { rate.max(1) } else { burst }, now)
                }
                None => true,
            },
            _ => true,
        }
    }

    /// A close frame, counted by code.
    fn close_frame(&mut self, code: u16, reason: &str) -> Vec<u8> {
        *self.stats.connections.closes_sent.entry(code).or_insert(0) += 1;
        encode_close(code, reason)
    }

    /// Records the event and queues its one shared frame for every subscriber.
    fn publish(
        &mut self,
        topic: &str,
        id: &str,
        payload: &RawValue,
        ts: &str,
        now: Instant,
    ) -> Result<u64, BrokerError> {
        // Serialised into a buffer the engine keeps, then copied once into the shared frame.
        let mut buf = std::mem::take(&mut self.event_buf);
        let published = self.broker.publish(topic, |seq| {
            let start = protocol::event_frame_into(&mut buf, topic, id, payload, seq, ts);
            Rc::from(&buf[start..])
        });
        if buf.capacity() <= EVENT_BUF_KEEP {
            self.event_buf = buf;
        }
        let published = published?;
        let seq = published.seq;
        let frame = published.frame;
        let mut targets = std::mem::take(&mut self.fanout);
        targets.clear();
        targets.extend_from_slice(published.subscribers);
        self.stats.messages.published += 1;
        // The hot loop: one slab lookup and a pointer push per subscriber, touching only the
        // connection's own fields (the WebSocket state behind its Box stays cold).
        let (max_frames, max_bytes) = (
            self.config.subscriber_queue_size,
            self.config.max_queue_bytes,
        );
        let mut delivered = 0;
        for &sub in &targets {
            let key = slot(sub);
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.id != sub || !c.receiving {
                continue;
            }
            c.outq.push(Chunk::Shared(frame.clone()), Bound::Counted);
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
            delivered += 1;
            if c.outq.counted_frames() > max_frames || c.outq.counted_bytes() > max_bytes {
                self.check_bound(key, now);
            }
        }
        self.stats.messages.delivered += delivered;
        self.fanout = targets;
        self.reap_slow();
        Ok(seq)
    }

    /// The slab key of a WebSocket connection that can still be sent events.
    pub(super) fn live_ws(&self, id: ConnId) -> Option<usize> {
        let key = slot(id);
        self.conns
            .get(key)
            .filter(|c| c.id == id && c.receiving)
            .map(|_| key)
    }

    /// Past `SUBSCRIBER_QUEUE_SIZE` frames or `MAX_QUEUE_BYTES`, the connection is a slow
    /// consumer: what it has not started receiving is dropped, it gets SLOW_CONSUMER and close
    /// 1008, and it leaves every topic.
    pub(super) fn check_bound(&mut self, key: usize, now: Instant) {
        let c = &mut self.conns[key];
        let over = c.outq.counted_frames() > self.config.subscriber_queue_size
            || c.outq.counted_bytes() > self.config.max_queue_bytes;
        let Phase::WebSocket(ws) = &mut c.phase else {
            return;
        };
        if !over || ws.close_sent || ws.echo {
            return;
        }
        let (frames, bytes) = (c.outq.counted_frames(), c.outq.counted_bytes());
        c.outq.drop_unstarted();
        let ts = crate::time::Timestamp::now();
        let message = format!(
            "outbound queue exceeded ({frames} frames, {bytes} bytes; limits {} frames, {} bytes)",
            self.config.subscriber_queue_size, self.config.max_queue_bytes
        );
        let notice = protocol::error_frame(None, None, ErrorCode::SlowConsumer, &message, &ts);
        c.outq.push(Chunk::Owned(notice), Bound::Exempt);
        self.stats.messages.slow_consumer_disconnects += 1;
        self.slow.push(c.id);
        crate::log!(Level::Warn, "slow_consumer", "conn" => c.id, "frames" => frames, "bytes" => bytes);
        self.start_close(key, CloseCode::PolicyViolation, "slow consumer", now);
    }

    /// Takes slow consumers off every topic (after a fan-out, whose subscriber list it changes).
    pub(super) fn reap_slow(&mut self) {
        for id in std::mem::take(&mut self.slow) {
            self.broker.disconnect(id);
        }
    }

    /// The server closes: queue the close frame and wait (bounded) for the peer's.
    pub(super) fn start_close(&mut self, key: usize, code: CloseCode, reason: &str, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::WebSocket(ws) = &mut c.phase else {
            return;
        };
        if ws.close_sent {
            return;
        }
        ws.close_sent = true;
        c.outq.push(
            Chunk::Owned(encode_close(code.as_u16(), reason)),
            Bound::Exempt,
        );
        self.mark_dirty(key);
        self.set_deadline(key, now + self.config.close_linger);
    }

    /// Pings every WebSocket; closes those silent for two intervals.
    pub(super) fn heartbeat(&mut self, now: Instant) {
        let silent_limit = self.config.heartbeat_interval * 2;
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(&c.phase, Phase::WebSocket(ws) if !ws.close_sent) && !c.doomed
            })
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let c = &mut self.conns[key];
            c.outq.release_if_idle();
            if c.inbuf.is_empty() && c.inbuf.capacity() > 0 {
                c.inbuf = Vec::new();
            }
            if now.saturating_duration_since(c.last_seen) >= silent_limit {
                self.stats.messages.heartbeat_timeouts += 1;
                crate::log!(Level::Info, "heartbeat_timeout", "conn" => c.id);
                self.doom(key, "heartbeat_timeout");
            } else {
                self.push(
                    key,
                    Chunk::Owned(encode_frame(OpCode::Ping, b"")),
                    Bound::Exempt,
                );
            }
        }
    }
}

fn broker_error(rid: Option<&RawValue>, topic: &str, e: &BrokerError, ts: &str) -> Vec<u8> {
    use crate::error::HttpFailure;
    protocol::error_frame(rid, Some(topic), e.code(), &e.to_string(), ts)
}
