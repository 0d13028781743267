//! The WebSocket phase: frames to messages, the pub/sub protocol on top, fan-out, the
//! slow-consumer cut and the close handshake.

use std::rc::Rc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::conn::Lifecycle;
use super::{Engine, Stop};
use crate::broker::{BrokerError, Publish};
use crate::error::{close_code, Failure};
use crate::ids::{Replay, TopicName};
use crate::log::Level;
use crate::outq::{Bound, Chunk};
use crate::protocol::{self, Ack, ClientMessage, MessageError};
use crate::ws::frame::{encode_close, encode_frame, OpCode};
use crate::ws::{CloseCode, Event, WsError};

/// The event serialisation buffer is kept between publishes up to this size (bigger messages
/// get a buffer of their own each time, so one large publish does not pin its memory).
const EVENT_BUF_KEEP: usize = 64 * 1024 + 1024;

impl<S> Engine<S> {
    /// Decodes frames at the start of `buf` and handles their messages within the budget.
    pub(super) fn consume_ws(
        &mut self,
        key: usize,
        buf: &mut [u8],
        budget: &mut u32,
        now: Instant,
    ) -> (usize, Stop) {
        let mut pos = 0;
        loop {
            if let Some(stop) = self.hold(key, &buf[pos..], *budget) {
                return (pos, stop);
            }
            if pos < buf.len() && self.stall_for_window(key) {
                return (pos, Stop::Paused);
            }
            let c = &mut self.conns[key];
            let (Lifecycle::Open(ws) | Lifecycle::Closing(ws)) = &mut c.state else {
                return (buf.len(), Stop::Done);
            };
            match ws.session.decode(&mut buf[pos..]) {
                Ok((0, None)) => return (pos, Stop::NeedMore),
                Ok((n, event)) => {
                    pos += n;
                    *budget -= 1;
                    if let Some(event) = event {
                        self.on_event(key, event, now);
                    }
                }
                Err(e) => {
                    self.fail(key, e, now);
                    return (buf.len(), Stop::Done);
                }
            }
        }
    }

    /// A protocol violation: close with its code and stop reading (RFC 6455 §7.1.7).
    fn fail(&mut self, key: usize, e: WsError, now: Instant) {
        let c = &self.conns[key];
        let code = close_code(&e).as_u16();
        if let Some(suppressed) = self.close_log.allow(now) {
            crate::log!(Level::Info, "websocket_protocol_error", "conn" => c.id.as_u64(), "error" => e.to_string(), "code" => code, "suppressed" => suppressed);
        }
        if matches!(c.state, Lifecycle::Open(_)) {
            self.queue_close(key, code, &e.to_string());
        }
        self.drain(key, now);
    }

    fn on_event(&mut self, key: usize, event: Event<'_>, now: Instant) {
        let (echo, closing) = match &self.conns[key].state {
            Lifecycle::Open(ws) => (ws.echo, false),
            Lifecycle::Closing(ws) => (ws.echo, true),
            _ => return,
        };
        match event {
            // A control frame's answer, not a request's: never held behind deferred answers.
            Event::Ping(payload) if !closing => self.push(
                key,
                Chunk::Owned(encode_frame(OpCode::Pong, payload)),
                Bound::Exempt,
            ),
            Event::Close(code, _) => {
                if !closing {
                    match code {
                        Some(code) => self.queue_close(key, code, ""),
                        None => self.push(
                            key,
                            Chunk::Owned(encode_frame(OpCode::Close, &[])),
                            Bound::Exempt,
                        ),
                    }
                }
                self.drain(key, now);
            }
            // After the server's close frame, data is read but ignored (§5.5.1).
            Event::Ping(_) | Event::Pong(_) => {}
            _ if closing => {}
            Event::Text(text) if echo => self.answer(key, encode_frame(OpCode::Text, &text)),
            Event::Binary(data) if echo => self.answer(key, encode_frame(OpCode::Binary, &data)),
            Event::Text(text) => self.on_message(key, &text, now),
            Event::Binary(_) => {
                let frame = Failure::from(MessageError::Binary).frame(None, None, &self.ts);
                self.answer(key, frame);
            }
        }
    }

    fn on_message(&mut self, key: usize, text: &[u8], now: Instant) {
        let incoming = match protocol::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let rid = protocol::salvage_request_id(text);
                let frame = Failure::from(e).frame(rid, None, &self.ts);
                self.answer(key, frame);
                return;
            }
        };
        let rid = incoming.request_id;
        let id = self.conns[key].id;
        let ts = self.ts;
        let frame = match incoming.message {
            ClientMessage::Ping => protocol::pong_frame(rid, &ts),
            ClientMessage::Subscribe { topic, .. }
                if self.cluster.is_some() && !self.cluster_up() =>
            {
                // The local topics may be behind Redis's: nothing is promised from them.
                self.stats.cluster.unavailable += 1;
                Failure::Unavailable.frame(rid, Some(&topic), &ts)
            }
            ClientMessage::Subscribe {
                topic,
                client_id,
                replay,
                epoch,
            } => match self.broker.subscribe(id, &topic, replay, epoch.as_deref()) {
                Ok(sub) => {
                    let mut ack = Ack::new(rid, &topic, &ts);
                    ack.epoch = Some(&sub.epoch);
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
                    self.stats.messages.replayed += sub.replay.len() as u64;
                    // The ack, then the replay: one answer, so nothing can come between.
                    let mut answer = Vec::with_capacity(1 + sub.replay.len());
                    answer.push(Chunk::Owned(protocol::text_frame(&ack)));
                    answer.extend(sub.replay.into_iter().map(Chunk::Shared));
                    self.answer_chunks(key, answer);
                    crate::log!(Level::Debug, "subscribed", "conn" => id.as_u64(), "topic" => topic.as_str(), "client_id" => &*client_id);
                    return;
                }
                Err(e) => topic_error(rid, &topic, e, &ts),
            },
            ClientMessage::Unsubscribe { topic, .. } => match self.broker.unsubscribe(id, &topic) {
                Ok(()) => protocol::text_frame(&Ack::new(rid, &topic, &ts)),
                Err(e) => topic_error(rid, &topic, e, &ts),
            },
            ClientMessage::Publish { .. } if !self.take_publish_token(key, now) => {
                self.stats.messages.rate_limited += 1;
                let failure = Failure::RateLimited {
                    per_second: self.config.publish_rate_limit,
                };
                failure.frame(rid, None, &ts)
            }
            ClientMessage::Publish {
                topic,
                id: message_id,
                payload,
                ..
            } if self.cluster.is_some() => {
                match self.cluster_publish(key, rid, &topic, &message_id, payload, now) {
                    Some(refused) => refused,
                    None => return,
                }
            }
            ClientMessage::Publish {
                topic,
                id: message_id,
                uuid,
                payload,
            } => match self.publish(&topic, &message_id, uuid, payload) {
                Ok((seq, duplicate)) => {
                    let mut ack = Ack::new(rid, &topic, &ts);
                    ack.seq = Some(seq);
                    ack.duplicate = duplicate.then_some(true);
                    protocol::text_frame(&ack)
                }
                Err(e) => topic_error(rid, &topic, e, &ts),
            },
        };
        self.answer(key, frame);
    }

    fn take_publish_token(&mut self, key: usize, now: Instant) -> bool {
        let (rate, burst) = (
            self.config.publish_rate_limit,
            self.config.publish_rate_burst,
        );
        match &mut self.conns[key].state {
            Lifecycle::Open(ws) => match &mut ws.bucket {
                Some(bucket) => {
                    bucket.take(rate, if burst == 0 { rate.max(1) } else { burst }, now)
                }
                None => true,
            },
            _ => true,
        }
    }

    /// Records the event and queues its one shared frame for every subscriber; returns its
    /// seq, or the seq of the retained event with the same message id and `true` (a retry:
    /// nothing is published). No bound is checked here: whether a subscriber keeps up is decided when its socket
    /// is offered what it was queued. (A publish costs one unit of its connection's budget
    /// however many subscribers it reaches: most of a fan-out's cost is the writes, one per
    /// subscriber per tick, which carry more events each the more publishes a tick handles.)
    fn publish(
        &mut self,
        topic: &TopicName<'_>,
        id: &str,
        uuid: u128,
        payload: &RawValue,
    ) -> Result<(u64, bool), BrokerError> {
        // Serialised into a buffer the engine keeps, then copied once into the shared frame.
        let mut buf = std::mem::take(&mut self.event_buf);
        let ts = self.ts;
        let published = self.broker.publish(topic, uuid, |seq| {
            let start = protocol::event_frame_into(&mut buf, topic, id, payload, seq, &ts);
            Rc::from(&buf[start..])
        });
        if buf.capacity() <= EVENT_BUF_KEEP {
            self.event_buf = buf;
        }
        let published = match published? {
            Publish::New(p) => p,
            Publish::Duplicate { seq } => {
                self.stats.messages.duplicates += 1;
                return Ok((seq, true));
            }
        };
        let (seq, frame) = (published.seq, published.frame);
        let mut targets = std::mem::take(&mut self.fanout);
        targets.clear();
        targets.extend_from_slice(published.subscribers);
        self.fanout = targets;
        self.stats.messages.published += 1;
        self.fan_out(&frame);
        Ok((seq, false))
    }

    /// Queues one shared event frame for every connection in `self.fanout` that still takes
    /// events.
    pub(super) fn fan_out(&mut self, frame: &Rc<[u8]>) {
        let targets = std::mem::take(&mut self.fanout);
        // The hot loop: one slab lookup and a pointer push per subscriber, touching only the
        // connection's own fields (the WebSocket state behind its Box stays cold).
        let mut delivered = 0;
        for &sub in &targets {
            let key = sub.slot();
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.id != sub || !c.takes_events() {
                continue;
            }
            c.out.push(Chunk::Shared(frame.clone()), Bound::Counted);
            if !c.marks.on_dirty_list {
                c.marks.on_dirty_list = true;
                self.lists.dirty.push_back(sub);
            }
            delivered += 1;
        }
        self.stats.messages.delivered += delivered as u64;
        self.fanout = targets;
    }

    /// The socket refused and the live events left are over `SUBSCRIBER_QUEUE_SIZE` frames or
    /// `MAX_QUEUE_BYTES`: what it has not started receiving is dropped, it gets SLOW_CONSUMER
    /// and close 1008, and it leaves every topic.
    pub(super) fn cut_slow_consumer(&mut self, key: usize, now: Instant) {
        let c = &mut self.conns[key];
        let failure = Failure::SlowConsumer {
            frames: c.out.counted_frames(),
            bytes: c.out.counted_bytes(),
            max_frames: self.config.subscriber_queue_size,
            max_bytes: self.config.max_queue_bytes,
        };
        c.out.drop_unstarted();
        // Not an answer: it goes out even while answers are held.
        let notice = failure.frame(None, None, &self.ts);
        c.out.push(Chunk::Owned(notice), Bound::Exempt);
        self.stats.messages.slow_consumer_disconnects += 1;
        let id = c.id;
        if let Some(suppressed) = self.close_log.allow(now) {
            crate::log!(Level::Warn, "slow_consumer", "conn" => id.as_u64(), "error" => failure.to_string(), "suppressed" => suppressed);
        }
        self.broker.disconnect(id);
        // Not marked dirty: the socket just refused, so write interest brings it back.
        self.begin_closing(key, CloseCode::PolicyViolation, "slow consumer", now);
    }

    /// The server closes: queue the close frame and wait (bounded) for the peer's.
    pub(super) fn start_close(&mut self, key: usize, code: CloseCode, reason: &str, now: Instant) {
        self.begin_closing(key, code, reason, now);
        self.mark_dirty(key);
    }

    fn begin_closing(&mut self, key: usize, code: CloseCode, reason: &str, now: Instant) {
        let Lifecycle::Open(_) = self.conns[key].state else {
            return;
        };
        let frame = self.close_frame(code.as_u16(), reason);
        self.conns[key].out.push(frame, Bound::Exempt);
        // Open and Closing count alike in the gauges, so the state moves without them.
        let c = &mut self.conns[key];
        if let Lifecycle::Open(ws) = std::mem::replace(&mut c.state, Lifecycle::Closed) {
            c.state = Lifecycle::Closing(ws);
        }
        self.set_deadline(key, now + self.config.close_linger);
    }

    /// Queues a close frame (closes are not answers: they are never held back).
    fn queue_close(&mut self, key: usize, code: u16, reason: &str) {
        let frame = self.close_frame(code, reason);
        self.push(key, frame, Bound::Exempt);
    }

    /// Every close frame the server sends is made here, and counted by code.
    fn close_frame(&mut self, code: u16, reason: &str) -> Chunk {
        *self.stats.connections.closes_sent.entry(code).or_insert(0) += 1;
        Chunk::Owned(encode_close(code, reason))
    }
}

fn topic_error(rid: Option<&RawValue>, topic: &str, e: BrokerError, ts: &str) -> Vec<u8> {
    Failure::from(e).frame(rid, Some(topic), ts)
}
