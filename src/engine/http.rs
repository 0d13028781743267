//! The HTTP phase: requests parsed from the connection's bytes and answered in order by the
//! REST handlers (`rest`), the effects of their answers applied, and the upgrade to WebSocket.

use std::time::Instant;

use super::conn::{HttpState, Lifecycle, WsState};
use super::{Engine, Stop};
use crate::error::Failure;
use crate::guard::TokenBucket;
use crate::http::{parse_request, Parsed, RequestLimits};
use crate::log::Level;
use crate::outq::{Bound, Chunk};
use crate::rest::{self, Answer, Effect};
use crate::ws::{handshake, Session};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl<S> Engine<S> {
    /// Answers the pipelined requests at the start of `buf`, within the budget; returns how
    /// many bytes were used and why it stopped.
    pub(super) fn consume_http(
        &mut self,
        key: usize,
        buf: &mut [u8],
        budget: &mut u32,
        now: Instant,
    ) -> (usize, Stop) {
        let limits = RequestLimits {
            max_header_bytes: self.config.max_header_bytes,
            max_body_bytes: self.config.max_body_bytes,
        };
        let mut pos = 0;
        loop {
            if let Some(stop) = self.hold(key, &buf[pos..], *budget) {
                return (pos, stop);
            }
            let Lifecycle::Http(state) = &mut self.conns[key].state else {
                return (pos, Stop::Upgraded);
            };
            match parse_request(&buf[pos..], &limits, &mut state.progress) {
                Ok(Parsed::Partial {
                    head_complete,
                    expects_continue,
                }) => {
                    let send_continue = expects_continue && !state.continue_sent;
                    state.continue_sent |= expects_continue;
                    let starts = pos < buf.len() && !state.in_request;
                    state.in_request |= starts;
                    let body_starts = head_complete && !state.body_clock;
                    state.body_clock |= body_starts;
                    if send_continue {
                        self.push(key, Chunk::Owned(CONTINUE.to_vec()), Bound::Exempt);
                    }
                    // The first byte of a request starts the clock of its head, the end of the
                    // head the clock of its body; later bytes restart neither.
                    if starts {
                        self.set_deadline(key, now + self.config.header_timeout);
                    }
                    if body_starts {
                        self.set_deadline(key, now + self.config.body_timeout);
                    }
                    return (pos, Stop::NeedMore);
                }
                Ok(Parsed::Complete(request, used)) => {
                    *budget -= 1;
                    pos += used;
                    **state = HttpState {
                        in_request: pos < buf.len(),
                        ..HttpState::default()
                    };
                    let keep_alive = request.keep_alive && !self.shutting_down;
                    let cluster = self.cluster_status(now);
                    let conns = &self.conns;
                    let buffered = || {
                        conns
                            .iter()
                            .fold(rest::Buffered::default(), |b, (_, c)| rest::Buffered {
                                input_bytes: b.input_bytes + c.input_footprint(),
                                output_bytes: b.output_bytes + c.out.cost(),
                            })
                    };
                    let mut state = rest::State {
                        buffered: &buffered,
                        config: &self.config,
                        broker: &mut self.broker,
                        stats: &self.stats,
                        epochs: &mut self.epochs,
                        unix_ms: self.unix_ms,
                        started: self.started,
                        shutting_down: self.shutting_down,
                        cluster,
                    };
                    let outcome = rest::handle(&mut state, &request, now);
                    self.apply(outcome.effect);
                    match outcome.answer {
                        Answer::Respond(response) => {
                            let keep_alive = keep_alive && !response.close;
                            let bytes = response.encode(keep_alive, request.http10);
                            self.answer(key, bytes);
                            if !keep_alive {
                                self.drain(key, now);
                                return (buf.len(), Stop::Done);
                            }
                            let timeout = if pos == buf.len() {
                                self.config.idle_timeout
                            } else {
                                self.config.header_timeout
                            };
                            self.set_deadline(key, now + timeout);
                        }
                        Answer::Backplane { change, headers } => {
                            self.cluster_change(
                                key,
                                change,
                                headers,
                                keep_alive,
                                request.http10,
                                now,
                            );
                            if !keep_alive {
                                return (buf.len(), Stop::Done);
                            }
                            self.set_deadline(key, now + self.config.idle_timeout);
                        }
                        Answer::Upgrade { accept, echo } => {
                            self.upgrade(key, &accept, echo, now);
                            return (pos, Stop::Upgraded);
                        }
                    }
                }
                Err(e) => {
                    crate::log!(Level::Debug, "bad_request", "conn" => self.conns[key].id.as_u64(), "error" => e.to_string());
                    let bytes = Failure::from(e).response().encode(false, false);
                    self.answer(key, bytes);
                    self.drain(key, now);
                    return (buf.len(), Stop::Done);
                }
            }
        }
    }

    /// What a REST answer means for other connections.
    pub(super) fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::UpgradeRefused(reason) => self.stats.connections.upgrades_refused.add(reason),
            Effect::TopicDeleted { topic, subscribers } => {
                let notice = crate::protocol::info_frame("topic_deleted", Some(&topic), &self.ts);
                for id in subscribers {
                    if let Some(key) = self.live_ws(id) {
                        self.push(key, Chunk::Owned(notice.clone()), Bound::Counted);
                    }
                }
            }
        }
    }

    fn upgrade(&mut self, key: usize, accept: &str, echo: bool, now: Instant) {
        self.answer(key, handshake::response(accept));
        self.stats.connections.upgrades += 1;
        self.clear_deadline(key);
        let burst = match self.config.publish_rate_burst {
            0 => self.config.publish_rate_limit.max(1),
            b => b,
        };
        let ws = WsState {
            session: Session::new(self.config.max_message_bytes),
            echo,
            message_clock: false,
            bucket: (self.config.publish_rate_limit > 0)
                .then(|| Box::new(TokenBucket::new(burst, now))),
        };
        self.set_state(key, Lifecycle::Open(Box::new(ws)));
        crate::log!(Level::Debug, "websocket_opened", "conn" => self.conns[key].id.as_u64(), "echo" => echo);
    }
}
