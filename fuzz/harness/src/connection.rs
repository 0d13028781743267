//! The `connection` target: a whole connection driven through the engine as the event loop
//! drives it, with an in-memory transport instead of a socket.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use super::{chunks, AnyMessage};
use pubsub::config::Config;
use pubsub::engine::{Engine, Readiness, Received, PAUSE_BYTES};
use pubsub::ws::frame::{decode_header, encode_client_frame, OpCode, Role};

/// Checks the bytes a connection wrote: HTTP responses, then (after a 101) server frames whose
/// text is JSON, with nothing after a close frame.
struct OutputChecker {
    buf: Vec<u8>,
    websocket: bool,
    closed: bool,
}

impl OutputChecker {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        loop {
            if self.buf.is_empty() {
                return;
            }
            assert!(
                !self.closed,
                "bytes after the close frame or a closing response"
            );
            if self.websocket {
                let Some(h) =
                    decode_header(&self.buf, Role::Client).expect("server frames are valid")
                else {
                    return;
                };
                let end = h.header_len + h.payload_len as usize;
                if self.buf.len() < end {
                    return;
                }
                assert!(h.fin, "the server never fragments");
                let payload = &self.buf[h.header_len..end];
                match h.opcode {
                    OpCode::Text => {
                        let m: AnyMessage =
                            serde_json::from_slice(payload).expect("text frames are JSON objects");
                        assert!(
                            matches!(m.kind.as_str(), "ack" | "event" | "error" | "pong" | "info"),
                            "{}",
                            m.kind
                        );
                    }
                    OpCode::Close => {
                        assert!(payload.len() >= 2 || payload.is_empty());
                        self.closed = true;
                    }
                    _ => {}
                }
                self.buf.drain(..end);
            } else {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut resp = httparse::Response::new(&mut headers);
                let head = match resp.parse(&self.buf).expect("responses are valid HTTP") {
                    httparse::Status::Complete(n) => n,
                    httparse::Status::Partial => return,
                };
                let code = resp.code.expect("status");
                let length: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value)
                            .expect("ascii")
                            .parse()
                            .expect("number")
                    });
                let closing = resp
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value == b"close");
                // An answer to HEAD announces a length but carries no body: what follows it is
                // the next response, and no body we send starts like a status line.
                if length > 0 && self.buf[head..].starts_with(b"HTTP/") {
                    self.buf.drain(..head);
                    self.closed = closing;
                    continue;
                }
                if self.buf.len() < head + length {
                    return;
                }
                let content_type = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                    .map(|h| h.value);
                if length > 0 {
                    let body = &self.buf[head..head + length];
                    match content_type.expect("a body has a Content-Type") {
                        b"application/json" => {
                            serde_json::from_slice::<serde::de::IgnoredAny>(body)
                                .expect("JSON bodies are JSON");
                        }
                        // The web console at `GET /` and the metrics at `GET /metrics`.
                        b"text/html; charset=utf-8" => {
                            assert!(body.starts_with(b"<!doctype html>"))
                        }
                        t if t.starts_with(b"text/plain; version=0.0.4") => {
                            assert!(body.starts_with(b"# HELP"))
                        }
                        other => {
                            panic!("unexpected Content-Type {}", String::from_utf8_lossy(other))
                        }
                    }
                }
                self.buf.drain(..head + length);
                self.websocket = code == 101;
                self.closed = closing;
            }
        }
    }
}

/// A small server configuration so limits are reached quickly.
pub fn connection_config() -> Config {
    Config {
        max_topics: 4,
        max_subscribers_per_topic: 4,
        topic_history_size: 8,
        subscriber_queue_size: 8,
        max_queue_bytes: 16 * 1024,
        max_body_bytes: 4096,
        max_header_bytes: 2048,
        max_message_bytes: 4096,
        ..Config::default()
    }
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A client text frame (masked, as clients must send).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_client_frame(&mut frame, OpCode::Text, payload, [1, 2, 3, 4]);
    frame
}

/// The transport of one connection: what it was sent, and how much it takes before it
/// refuses (a peer that never reads fills its socket's buffers).
struct Sink {
    sent: Vec<u8>,
    room: usize,
    /// Bytes the peer has sent that the engine has not read yet.
    unread: Vec<u8>,
}

fn send(sink: &mut Sink, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let mut n = 0;
    for b in bufs {
        let take = b.len().min(sink.room - n);
        sink.sent.extend_from_slice(&b[..take]);
        n += take;
    }
    sink.room -= n;
    if n == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(n)
}

/// The read buffer the loop uses, smaller here so the budget and pauses are reached.
const READ_BYTES: usize = 4096;

/// One tick as the event loop runs it: readiness, reads, the engine's work, flushes, reaps.
fn tick(engine: &mut Engine<Sink>, readable: &[usize], now: Instant, start: Instant) {
    engine.begin_tick((now - start).as_millis() as u64, readable.len());
    for &key in readable {
        let r = Readiness {
            readable: true,
            ..Readiness::default()
        };
        engine.readiness(key, r);
    }
    let mut buf = vec![0u8; READ_BYTES];
    while let Some(key) = engine.next_read() {
        let Some(sink) = engine.io_mut(key) else {
            continue;
        };
        let n = sink.unread.len().min(READ_BYTES);
        if n == 0 {
            engine.received(key, Received::Empty, now);
            continue;
        }
        buf[..n].copy_from_slice(&sink.unread[..n]);
        sink.unread.drain(..n);
        let bytes = &mut buf[..n];
        engine.received(
            key,
            Received::Data {
                bytes,
                filled: n == READ_BYTES,
            },
            now,
        );
    }
    engine.tick(now);
    while engine.next_flush(now, &mut send).is_some() {}
    while engine.next_closed().is_some() {}
}

pub fn connection(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let sizes_len = ((flags >> 2) as usize % 8).min(rest.len());
    let (sizes, input) = rest.split_at(sizes_len);
    let config = connection_config();
    let start = Instant::now();
    let mut engine: Engine<Sink> = Engine::new(config.clone(), start);
    let mut checker = OutputChecker {
        buf: Vec::new(),
        websocket: false,
        closed: false,
    };
    pubsub::log::set_level(pubsub::log::Level::Error);
    // Another client has created "orders" and subscribed to it, so publishes fan out; with
    // the second flag bit it never reads, so its socket fills and it is cut as slow.
    let room = if flags & 2 == 2 { 8 * 1024 } else { usize::MAX };
    let mut setup =
        b"POST /topics HTTP/1.1\r\nContent-Length: 17\r\n\r\n{\"name\":\"orders\"}".to_vec();
    setup.extend_from_slice(UPGRADE);
    setup.extend(masked_text(
        br#"{"type":"subscribe","topic":"orders","client_id":"other"}"#,
    ));
    let sink = Sink {
        sent: Vec::new(),
        room,
        unread: setup,
    };
    let other = engine.open(sink, std::net::IpAddr::from([127, 0, 0, 2]), start);
    tick(&mut engine, &[other], start, start);
    assert_eq!(
        engine.broker().subscription_count(),
        1,
        "the setup subscribed"
    );
    let sink = Sink {
        sent: Vec::new(),
        room: usize::MAX,
        unread: Vec::new(),
    };
    let key = engine.open(sink, std::net::IpAddr::from([127, 0, 0, 1]), start);
    let mut feed: Vec<u8> = Vec::new();
    if flags & 1 == 1 {
        feed.extend_from_slice(UPGRADE);
    }
    feed.extend_from_slice(input);
    let bound = config.max_header_bytes
        + config.max_body_bytes
        + config.max_message_bytes
        + PAUSE_BYTES
        + config.max_queue_bytes
        + 2 * READ_BYTES
        + 64 * 1024;
    let mut now = start;
    let pieces = chunks(&feed, sizes);
    // Then some quiet ticks, so held input, pauses and deadlines play out.
    for piece in pieces
        .iter()
        .copied()
        .chain(std::iter::repeat_n(&[][..], 4))
    {
        now += Duration::from_millis(50);
        let Some(sink) = engine.io_mut(key) else {
            break;
        };
        sink.unread.extend_from_slice(piece);
        tick(&mut engine, &[key], now, start);
        if let Some(sink) = engine.io_mut(key) {
            checker.feed(&std::mem::take(&mut sink.sent));
        }
        if let Some(held) = engine.footprint(key) {
            assert!(held <= bound, "connection holds {held} bytes");
        }
        engine
            .broker()
            .check_invariants()
            .expect("broker indexes agree");
    }
    engine.begin_shutdown(now);
    let stats = engine.stats();
    assert!(stats.messages.delivered <= stats.messages.published * 4);
}
