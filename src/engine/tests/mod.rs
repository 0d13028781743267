//! The engine driven as the event loop drives it, with an in-memory transport: bytes in, bytes
//! out, the time given. Each test names the rule it holds the engine to: `flow` the budgets,
//! pauses and the slow-consumer bound, `life` phases, deadlines, closing and answer order.

mod cluster;
mod flow;
mod life;

use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Engine, Readiness, Received};
use crate::config::Config;
use crate::ws::frame::{decode_header, encode_client_frame, OpCode, Role};

/// One peer's end: what it has sent that the engine has not read, what the engine wrote to
/// it, and how much more its socket takes before it refuses.
pub(super) struct Peer {
    /// The key it was opened with (kept after the engine lets it go).
    key: usize,
    unread: Vec<u8>,
    /// New bytes arrived since readiness was last reported (an edge).
    edge: bool,
    hangup: bool,
    sent: Vec<u8>,
    room: usize,
    write_shut: bool,
    /// The transport gave up on the connection (TCP's user timeout): writes fail.
    failed: bool,
}

fn send(peer: &mut Peer, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if peer.failed {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let mut n = 0;
    for b in bufs {
        let take = b.len().min(peer.room - n);
        peer.sent.extend_from_slice(&b[..take]);
        n += take;
    }
    peer.room -= n;
    if n == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(n)
}

const READ_BYTES: usize = 64 * 1024;

struct Rig {
    engine: Engine<Peer>,
    now: Instant,
    start: Instant,
    ticks: usize,
    /// Peers whose connections the engine closed, by the key they had.
    gone: std::collections::HashMap<usize, Peer>,
}

impl Rig {
    fn new(config: Config) -> Rig {
        crate::log::set_level(crate::log::Level::Error);
        let start = Instant::now();
        Rig {
            engine: Engine::new(config, start),
            now: start,
            start,
            ticks: 0,
            gone: Default::default(),
        }
    }

    fn open(&mut self) -> usize {
        let peer = Peer {
            key: self.engine.conns.vacant_key(),
            unread: Vec::new(),
            edge: false,
            hangup: false,
            sent: Vec::new(),
            room: usize::MAX,
            write_shut: false,
            failed: false,
        };
        self.engine
            .open(peer, IpAddr::from([127, 0, 0, 1]), self.now)
    }

    fn peer(&mut self, key: usize) -> &mut Peer {
        self.engine.io_mut(key).expect("the connection is open")
    }

    fn is_open(&self, key: usize) -> bool {
        self.engine.io(key).is_some()
    }

    fn write(&mut self, key: usize, bytes: &[u8]) {
        let p = self.peer(key);
        p.unread.extend_from_slice(bytes);
        p.edge = true;
    }

    /// One tick of the loop, as `server` runs it.
    fn tick(&mut self) {
        self.ticks += 1;
        let unix_ms = (self.now - self.start).as_millis() as u64;
        self.engine.begin_tick(unix_ms, 1);
        let keys: Vec<usize> = self.engine.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let p = self.peer(key);
            let r = Readiness {
                readable: std::mem::take(&mut p.edge),
                hangup: p.hangup,
                // The rig's sockets report writable whenever they have room.
                writable: p.room > 0,
            };
            self.engine.readiness(key, r);
        }
        let mut buf = vec![0u8; READ_BYTES];
        while let Some(key) = self.engine.next_read() {
            let p = self.peer(key);
            let n = p.unread.len().min(READ_BYTES);
            let received = if n > 0 {
                buf[..n].copy_from_slice(&p.unread[..n]);
                p.unread.drain(..n);
                Received::Data {
                    bytes: &mut buf[..n],
                    filled: n == READ_BYTES,
                }
            } else if p.hangup {
                Received::End
            } else {
                Received::Empty
            };
            self.engine.received(key, received, self.now);
        }
        self.engine.tick(self.now);
        while let Some(f) = self.engine.next_flush(self.now, &mut send) {
            if f.shutdown_write {
                self.peer(f.key).write_shut = true;
            }
        }
        while let Some(peer) = self.engine.next_closed() {
            self.gone.insert(peer.key, peer);
        }
    }

    /// Ticks until nothing is left for the next tick (at most `limit` ticks).
    fn settle(&mut self, limit: usize) -> usize {
        for n in 1..=limit {
            self.tick();
            if !self.engine.has_pending_work() {
                return n;
            }
        }
        panic!("still busy after {limit} ticks");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// What the peer received and has not looked at yet (also after its connection closed).
    fn taken(&mut self, key: usize) -> Vec<u8> {
        match self.engine.io_mut(key) {
            Some(p) => std::mem::take(&mut p.sent),
            None => std::mem::take(&mut self.gone.get_mut(&key).expect("a peer").sent),
        }
    }

    /// Opens a connection and upgrades it; its 101 is consumed.
    fn websocket(&mut self) -> usize {
        let key = self.open();
        self.write(key, UPGRADE);
        self.tick();
        let out = self.taken(key);
        assert!(
            out.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        key
    }

    fn http(&mut self, key: usize, request: &str) {
        self.write(key, request.as_bytes());
    }

    fn message(&mut self, key: usize, v: Value) {
        let mut frame = Vec::new();
        encode_client_frame(
            &mut frame,
            OpCode::Text,
            v.to_string().as_bytes(),
            [9, 8, 7, 6],
        );
        self.write(key, &frame);
    }

    /// The text messages and control frames the peer received so far (and takes them).
    fn received(&mut self, key: usize) -> Vec<Frame> {
        frames(&self.taken(key))
    }
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[derive(Debug, PartialEq)]
enum Frame {
    Text(Value),
    Ping,
    Pong(Vec<u8>),
    Close(u16),
}

fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Ok(Some(h)) = decode_header(bytes, Role::Client) {
        let end = h.header_len + h.payload_len as usize;
        assert!(bytes.len() >= end, "a frame cut short");
        let payload = &bytes[h.header_len..end];
        out.push(match h.opcode {
            OpCode::Text => Frame::Text(serde_json::from_slice(payload).unwrap()),
            OpCode::Ping => Frame::Ping,
            OpCode::Pong => Frame::Pong(payload.to_vec()),
            OpCode::Close => Frame::Close(u16::from_be_bytes([payload[0], payload[1]])),
            other => panic!("unexpected {other:?}"),
        });
        bytes = &bytes[end..];
    }
    assert!(bytes.is_empty(), "{} bytes left", bytes.len());
    out
}

fn kinds(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Text(v) => v["type"].as_str().unwrap().to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn event_seqs(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Text(v) if v["type"] == "event" => v["seq"].as_u64(),
            _ => None,
        })
        .collect()
}

fn ping(id: u64) -> Value {
    json!({"type": "ping", "request_id": id})
}

/// A message id of its own for each publish (a repeated one is taken for a retry).
fn message_id(i: u64) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

fn publish(topic: &str, i: u64) -> Value {
    json!({"type": "publish", "topic": topic, "request_id": i,
        "message": {"id": message_id(i), "payload": i}})
}

fn create(rig: &mut Rig, topic: &str) {
    let key = rig.open();
    let body = format!(r#"{{"name":"{topic}"}}"#);
    rig.http(
        key,
        &format!(
            "POST /topics HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    rig.tick();
    assert!(rig.taken(key).starts_with(b"HTTP/1.1 201"));
}

fn subscribe(rig: &mut Rig, key: usize, topic: &str) {
    rig.message(
        key,
        json!({"type": "subscribe", "topic": topic, "client_id": "t"}),
    );
    rig.tick();
    assert_eq!(kinds(&rig.received(key)), ["ack"]);
}
