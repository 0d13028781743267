//! The HTTP phase: requests parsed from the connection's bytes, routed, answered in order;
//! the upgrade to WebSocket; the REST handlers.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Consumed, Engine, HttpState, Phase, WsState};
use crate::broker::BrokerError;
use crate::error::{ErrorCode, HttpFailure};
use crate::guard::{self, TokenBucket};
use crate::http::{parse_request, Parsed, Request, RequestLimits, Response};
use crate::log::Level;
use crate::metrics;
use crate::outq::{Bound, Chunk};
use crate::routes::{resolve, RestRoute, Route};
use crate::ws::{handshake, Session};

/// While this many response bytes wait for a client that does not read them, its further
/// pipelined requests wait too (and are not read from the socket).
pub const HTTP_OUTQ_PAUSE_BYTES: usize = 256 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request body that is not what the endpoint takes.
#[derive(Debug)]
struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl HttpFailure for BodyError {
    fn status(&self) -> u16 {
        400
    }
    fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

/// Refusal of a connection past `MAX_CONNECTIONS`.
#[derive(Debug)]
struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server is at its connection limit; try again later")
    }
}

impl HttpFailure for Unavailable {
    fn status(&self) -> u16 {
        503
    }
    fn code(&self) -> ErrorCode {
        ErrorCode::ServiceUnavailable
    }
}

/// The web console, embedded so the binary needs no files beside it.
const CONSOLE_HTML: &str = include_str!("../console.html");

/// Inline script and style only, talking to this server only.
const CONSOLE_CSP: &str = concat!(
    "default-src 'none'; ",
    "script-src 'unsafe-inline'; ", // SAFETY: a CSP keyword (the page's own script), not Rust
    "style-src 'unsafe-inline'; ",  // SAFETY: a CSP keyword (the page's own style), not Rust
    "connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'; ",
    "frame-ancestors 'none'",
);

fn console() -> Response {
    let mut r = Response::new(200);
    r.body = CONSOLE_HTML.as_bytes().to_vec();
    r.headers
        .push(("Content-Type", "text/html; charset=utf-8".into()));
    r.headers
        .push(("Content-Security-Policy", CONSOLE_CSP.into()));
    r.headers.push(("X-Content-Type-Options", "nosniff".into()));
    r.headers.push(("Cache-Control", "no-cache".into()));
    r
}

enum Answer {
    Respond(Response),
    Upgrade { accept: String, echo: bool },
}

impl<S> Engine<S> {
    pub(super) fn consume_http(&mut self, key: usize, buf: &mut [u8], now: Instant) -> Consumed {
        let limits = RequestLimits {
            max_header_bytes: self.config.max_header_bytes,
            max_body_bytes: self.config.max_body_bytes,
        };
        let mut pos = 0;
        loop {
            let conn = &mut self.conns[key];
            if conn.doomed || conn.outq.bytes() >= HTTP_OUTQ_PAUSE_BYTES {
                return Consumed {
                    bytes: pos,
                    phase_changed: false,
                };
            }
            let was_idle = pos == 0 && conn.inbuf.is_empty();
            let Phase::Http(state) = &mut conn.phase else {
                return Consumed {
                    bytes: pos,
                    phase_changed: true,
                };
            };
            match parse_request(&buf[pos..], &limits) {
                Ok(Parsed::Partial { expects_continue }) => {
                    let send_continue = expects_continue && !state.continue_sent;
                    state.continue_sent |= expects_continue;
                    if send_continue {
                        self.push(key, Chunk::Owned(CONTINUE.to_vec()), Bound::Counted);
                    }
                    if was_idle && pos < buf.len() {
                        // The first bytes of a new request start the header clock.
                        self.set_deadline(key, now + self.config.header_timeout);
                    }
                    return Consumed {
                        bytes: pos,
                        phase_changed: false,
                    };
                }
                Ok(Parsed::Complete(request, used)) => {
                    *state = HttpState::default();
                    pos += used;
                    let keep_alive = request.keep_alive && !self.shutting_down;
                    match self.answer(&request, now) {
                        Answer::Respond(mut response) => {
                            response.head = request.method == "HEAD";
                            let keep_alive = keep_alive && !response.close;
                            let bytes = response.encode(keep_alive, request.http10);
                            self.push(key, Chunk::Owned(bytes), Bound::Counted);
                            if !keep_alive {
                                self.drain(key, now);
                                return Consumed {
                                    bytes: buf.len(),
                                    phase_changed: false,
                                };
                            }
                            let idle = pos == buf.len();
                            let timeout = if idle {
                                self.config.idle_timeout
                            } else {
                                self.config.header_timeout
                            };
                            self.set_deadline(key, now + timeout);
                        }
                        Answer::Upgrade { accept, echo } => {
                            self.upgrade(key, &accept, echo, now);
                            return Consumed {
                                bytes: pos,
                                phase_changed: true,
                            };
                        }
                    }
                }
                Err(e) => {
                    crate::log!(Level::Debug, "bad_request", "conn" => self.conns[key].id, "error" => e.to_string());
                    self.respond_and_close(key, &e, now);
                    return Consumed {
                        bytes: buf.len(),
                        phase_changed: false,
                    };
                }
            }
        }
    }

    fn respond_and_close(&mut self, key: usize, failure: &dyn HttpFailure, now: Instant) {
        let bytes = Response::error(failure).encode(false, false);
        self.push(key, Chunk::Owned(bytes), Bound::Exempt);
        self.drain(key, now);
    }

    pub(super) fn refuse_unavailable(&mut self, key: usize, now: Instant) {
        let bytes = Response::error(&Unavailable).encode(false, false);
        self.push(key, Chunk::Owned(bytes), Bound::Exempt);
        let c = &mut self.conns[key];
        c.phase = Phase::Draining { write_shut: false };
        self.set_deadline(key, now + self.config.close_linger);
    }

    fn upgrade(&mut self, key: usize, accept: &str, echo: bool, now: Instant) {
        let max_message = if echo {
            crate::config::ECHO_MAX_MESSAGE_BYTES
        } else {
            self.config.max_message_bytes
        };
        self.push(
            key,
            Chunk::Owned(handshake::response(accept)),
            Bound::Exempt,
        );
        self.stats.connections.http -= 1;
        self.stats.connections.websocket += 1;
        self.stats.connections.upgrades += 1;
        self.clear_deadline(key);
        let burst = match self.config.publish_rate_burst {
            0 => self.config.publish_rate_limit.max(1),
            b => b,
        };
        let c = &mut self.conns[key];
        c.receiving = true;
        c.phase = Phase::WebSocket(Box::new(WsState {
            session: Session::new(max_message),
            echo,
            close_sent: false,
            bucket: (self.config.publish_rate_limit > 0)
                .then(|| Box::new(TokenBucket::new(burst, now))),
        }));
        crate::log!(Level::Debug, "websocket_opened", "conn" => c.id, "echo" => echo);
    }

    fn answer(&mut self, request: &Request<'_>, now: Instant) -> Answer {
        let route = match resolve(request.method, request.path, self.config.enable_echo) {
            Ok(route) => route,
            Err(e) => return Answer::Respond(Response::error(&e)),
        };
        let cors = guard::cors_headers(request, self.config.allowed_origins.as_ref());
        let rest = match route {
            Route::Upgrade { echo } => return self.answer_upgrade(request, echo),
            Route::Console => return Answer::Respond(console()),
            Route::Preflight => {
                return Answer::Respond(
                    match guard::check_origin(request, self.config.allowed_origins.as_ref()) {
                        Err(e) => Response::error(&e),
                        Ok(()) => {
                            let mut r = Response::new(204);
                            r.headers.extend(cors);
                            r.headers.extend(
                                guard::PREFLIGHT_HEADERS
                                    .iter()
                                    .map(|(k, v)| (*k, v.to_string())),
                            );
                            r
                        }
                    },
                );
            }
            Route::Rest(rest) => rest,
        };
        let authorised = match (&self.config.api_key, &rest) {
            (_, RestRoute::Health) | (None, _) => Ok(()),
            (Some(key), _) => guard::check_api_key(request, key, false),
        };
        let result = match authorised {
            Err(e) => Err(Response::error(&e)),
            Ok(()) => match rest {
                RestRoute::ListTopics => Ok(self.list_topics()),
                RestRoute::CreateTopic => self.create_topic(&request.body),
                RestRoute::DeleteTopic(name) => self.delete_topic(&name, now),
                RestRoute::Health => Ok(self.health(now)),
                RestRoute::Stats => Ok(self.stats_response(now)),
                RestRoute::Metrics => Ok(self.metrics(now)),
            },
        };
        let mut response = result.unwrap_or_else(|e| e);
        response.headers.extend(cors);
        Answer::Respond(response)
    }

    /// The checks before an upgrade, in order: origin, API key, the handshake itself.
    fn answer_upgrade(&mut self, request: &Request<'_>, echo: bool) -> Answer {
        let guarded =
            guard::check_origin(request, self.config.allowed_origins.as_ref()).and_then(|()| {
                match &self.config.api_key {
                    Some(key) => guard::check_api_key(request, key, true),
                    None => Ok(()),
                }
            });
        let refused = |this: &mut Self, reason: &'static str, response: Response| {
            *this
                .stats
                .connections
                .upgrades_refused
                .entry(reason)
                .or_insert(0) += 1;
            crate::log!(Level::Debug, "upgrade_refused", "reason" => reason);
            Answer::Respond(response)
        };
        if let Err(e) = guarded {
            return refused(self, e.reason(), Response::error(&e));
        }
        match handshake::validate(request) {
            Ok(_) if self.shutting_down => refused(
                self,
                "shutting_down",
                Response::error(&Unavailable).closing(),
            ),
            Ok(accept) => Answer::Upgrade { accept, echo },
            Err(e @ handshake::HandshakeError::UnsupportedVersion) => {
                refused(self, "unsupported_version", Response::error(&e))
            }
            Err(e) => refused(self, "bad_handshake", Response::error(&e)),
        }
    }

    fn metrics(&self, now: Instant) -> Response {
        let gauges = metrics::Gauges {
            topics: self.broker.topic_count(),
            subscriptions: self.broker.subscription_count(),
            uptime: self.uptime(now),
        };
        let mut r = Response::new(200);
        r.body = metrics::render(&self.stats, &gauges).into_bytes();
        r.headers
            .push(("Content-Type", metrics::CONTENT_TYPE.into()));
        r
    }

    fn list_topics(&self) -> Response {
        #[derive(Serialize)]
        struct Item<'a> {
            name: &'a str,
            subscribers: usize,
        }
        #[derive(Serialize)]
        struct List<'a> {
            topics: Vec<Item<'a>>,
        }
        let topics = self
            .broker
            .topics()
            .into_iter()
            .map(|t| Item {
                name: &t.name,
                subscribers: t.subscribers().len(),
            })
            .collect();
        Response::json(200, &List { topics })
    }

    fn create_topic(&mut self, body: &[u8]) -> Result<Response, Response> {
        #[derive(Deserialize)]
        struct Create<'a> {
            #[serde(borrow)]
            name: Option<&'a RawValue>,
        }
        let bad = |msg: String| Response::error(&BodyError(msg));
        let parsed: Create<'_> = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "body must be a JSON object like {{\"name\":\"orders\"}}: {e}"
            ))
        })?;
        let raw = parsed.name.ok_or_else(|| bad("name is required".into()))?;
        let name: String =
            serde_json::from_str(raw.get()).map_err(|_| bad("name must be a string".into()))?;
        self.broker
            .create_topic(&name)
            .map_err(|e| Response::error(&e))?;
        crate::log!(Level::Info, "topic_created", "topic" => name);
        Ok(Response::json(
            201,
            &serde_json::json!({"status": "created", "topic": name}),
        ))
    }

    fn delete_topic(&mut self, name: &str, now: Instant) -> Result<Response, Response> {
        let former = self
            .broker
            .delete_topic(name)
            .map_err(|e: BrokerError| Response::error(&e))?;
        let ts = crate::time::Timestamp::now();
        let notice = crate::protocol::info_frame("topic_deleted", Some(name), &ts);
        for id in &former {
            if let Some(key) = self.live_ws(*id) {
                self.push(key, Chunk::Owned(notice.clone()), Bound::Counted);
                self.check_bound(key, now);
            }
        }
        self.reap_slow();
        crate::log!(Level::Info, "topic_deleted", "topic" => name, "subscribers" => former.len());
        Ok(Response::json(
            200,
            &serde_json::json!({"status": "deleted", "topic": name}),
        ))
    }

    fn health(&self, now: Instant) -> Response {
        let uptime = self.uptime(now).as_secs();
        Response::json(
            200,
            &serde_json::json!({
                "uptime_sec": uptime,
                "topics": self.broker.topic_count(),
                "subscribers": self.broker.subscription_count(),
            }),
        )
    }

    fn stats_response(&self, now: Instant) -> Response {
        let mut topics = serde_json::Map::new();
        for t in self.broker.topics() {
            topics.insert(
                t.name.to_string(),
                serde_json::json!({
                    "messages": t.last_seq(),
                    "subscribers": t.subscribers().len(),
                    "retained": t.history_len(),
                }),
            );
        }
        let s = &self.stats;
        #[cfg_attr(not(feature = "count-allocations"), allow(unused_mut))]
        let mut event_loop = serde_json::to_value(&s.event_loop).unwrap_or_default();
        #[cfg(feature = "count-allocations")]
        if let Some(obj) = event_loop.as_object_mut() {
            obj.insert(
                "allocations".into(),
                crate::alloc_count::allocations().into(),
            );
        }
        Response::json(
            200,
            &serde_json::json!({
                "topics": topics,
                "uptime_sec": self.uptime(now).as_secs(),
                "slow_consumer_disconnects": s.messages.slow_consumer_disconnects,
                "connections": s.connections,
                "messages": s.messages,
                "loop": event_loop,
            }),
        )
    }
}
