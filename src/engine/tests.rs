//! The engine driven as the event loop drives it, with an in-memory transport: bytes in, bytes
//! out, the time given. Each test names the rule it holds the engine to.

use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Engine, Readiness, Received, INPUT_BUDGET};
use crate::config::Config;
use crate::ws::frame::{decode_header, encode_client_frame, OpCode, Role};

/// One peer's end: what it has sent that the engine has not read, what the engine wrote to
/// it, and how much more its socket takes before it refuses.
struct Peer {
    /// The key it was opened with (kept after the engine lets it go).
    key: usize,
    unread: Vec<u8>,
    /// New bytes arrived since readiness was last reported (an edge).
    edge: bool,
    hangup: bool,
    sent: Vec<u8>,
    room: usize,
    write_shut: bool,
}

fn send(peer: &mut Peer, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
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
        self.engine.begin_tick(unix_ms);
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

fn publish(topic: &str, i: u64) -> Value {
    json!({"type": "publish", "topic": topic, "request_id": i,
        "message": {"id": "550e8400-e29b-41d4-a716-446655440000", "payload": i}})
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

#[test]
fn http_then_upgrade_then_messages_in_one_read() {
    let mut rig = Rig::new(Config::default());
    let key = rig.open();
    let mut input = b"GET /health HTTP/1.1\r\n\r\n".to_vec();
    input.extend_from_slice(UPGRADE);
    let mut frame = Vec::new();
    encode_client_frame(
        &mut frame,
        OpCode::Text,
        ping(1).to_string().as_bytes(),
        [1, 2, 3, 4],
    );
    input.extend_from_slice(&frame);
    rig.write(key, &input);
    rig.tick();
    let out = rig.taken(key);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let upgrade_at = text.find("HTTP/1.1 101").expect("the upgrade is answered");
    let head_end = text[upgrade_at..].find("\r\n\r\n").unwrap() + upgrade_at + 4;
    let after = frames(&out[head_end..]);
    assert_eq!(
        after,
        [Frame::Text(
            json!({"type":"pong","request_id":1,"ts":"1970-01-01T00:00:00.000Z"})
        )]
    );
    assert_eq!(rig.engine.stats().connections.websocket, 1);
    assert_eq!(rig.engine.stats().connections.http, 0);
}

#[test]
fn a_burst_that_the_socket_takes_never_cuts_a_subscriber() {
    // The defaults: at most 100 live events may wait for a connection.
    let mut rig = Rig::new(Config::default());
    create(&mut rig, "t");
    let subs: Vec<usize> = (0..10).map(|_| rig.websocket()).collect();
    for &s in &subs {
        subscribe(&mut rig, s, "t");
    }
    let publisher = rig.websocket();
    let burst: Vec<u8> = (1..=400)
        .flat_map(|i| {
            let mut f = Vec::new();
            let text = publish("t", i).to_string();
            encode_client_frame(&mut f, OpCode::Text, text.as_bytes(), [1, 2, 3, 4]);
            f
        })
        .collect();
    rig.write(publisher, &burst);
    rig.settle(10);
    for &s in &subs {
        assert_eq!(event_seqs(&rig.received(s)), (1..=400).collect::<Vec<_>>());
    }
    assert_eq!(rig.engine.stats().messages.slow_consumer_disconnects, 0);
}

#[test]
fn a_subscriber_whose_socket_refuses_is_cut_once_over_its_bound() {
    let config = Config {
        subscriber_queue_size: 5,
        ..Config::default()
    };
    let mut rig = Rig::new(config);
    create(&mut rig, "t");
    let slow = rig.websocket();
    let fine = rig.websocket();
    subscribe(&mut rig, slow, "t");
    subscribe(&mut rig, fine, "t");
    rig.peer(slow).room = 0;
    let publisher = rig.websocket();
    for i in 1..=5 {
        rig.message(publisher, publish("t", i));
    }
    rig.settle(5);
    // Five wait for the slow one: at its bound, not over it.
    assert_eq!(rig.engine.stats().messages.slow_consumer_disconnects, 0);
    rig.message(publisher, publish("t", 6));
    rig.settle(5);
    let stats = rig.engine.stats();
    assert_eq!(stats.messages.slow_consumer_disconnects, 1);
    assert_eq!(stats.connections.closes_sent.get(&1008), Some(&1));
    assert_eq!(rig.engine.broker().subscription_count(), 1);
    assert_eq!(event_seqs(&rig.received(fine)), [1, 2, 3, 4, 5, 6]);
    // Once it reads, it finds the notice and the close frame, and none of the events.
    rig.peer(slow).room = usize::MAX;
    rig.settle(5);
    let got = rig.received(slow);
    assert_eq!(kinds(&got), ["error", "Close(1008)"]);
    match &got[0] {
        Frame::Text(v) => assert_eq!(v["error"]["code"], "SLOW_CONSUMER"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_that_does_not_read_its_answers_is_paced_not_cut() {
    let mut rig = Rig::new(Config::default());
    let key = rig.websocket();
    rig.peer(key).room = 0;
    let many: Vec<u8> = (0..20_000)
        .flat_map(|i| {
            let mut f = Vec::new();
            encode_client_frame(
                &mut f,
                OpCode::Text,
                ping(i).to_string().as_bytes(),
                [1, 2, 3, 4],
            );
            f
        })
        .collect();
    rig.write(key, &many);
    for _ in 0..100 {
        rig.tick();
    }
    // Reading stopped once the answers waiting passed the pause threshold; nothing is lost.
    let unread = rig.peer(key).unread.len();
    assert!(
        unread > 0,
        "the server kept reading a client that does not read"
    );
    assert!(rig.is_open(key));
    rig.peer(key).room = usize::MAX;
    rig.settle(1000);
    let got = rig.received(key);
    assert_eq!(got.len(), 20_000);
    for (i, f) in got.iter().enumerate() {
        match f {
            Frame::Text(v) => assert_eq!(v["request_id"], i as u64),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rig.engine.stats().messages.slow_consumer_disconnects, 0);
}

#[test]
fn a_flooding_client_gets_its_budget_per_tick_and_others_are_served_in_the_same_tick() {
    let mut rig = Rig::new(Config::default());
    let floods: Vec<usize> = (0..2).map(|_| rig.websocket()).collect();
    let probe = rig.websocket();
    // Empty WebSocket pings, as many as one read holds.
    let mut flood = Vec::new();
    while flood.len() < READ_BYTES {
        encode_client_frame(&mut flood, OpCode::Ping, b"", [1, 2, 3, 4]);
    }
    for &f in &floods {
        rig.write(f, &flood);
    }
    rig.message(probe, ping(7));
    rig.tick();
    assert_eq!(kinds(&rig.received(probe)), ["pong"]);
    for &f in &floods {
        let pongs = rig.received(f).len();
        assert_eq!(pongs, INPUT_BUDGET as usize, "one tick's share");
    }
    assert!(
        rig.engine.has_pending_work(),
        "the rest is left for later ticks"
    );
    let ticks = rig.settle(100);
    assert!(ticks > 10, "{ticks}");
    for &f in &floods {
        assert!(rig.received(f).iter().all(|p| *p == Frame::Pong(vec![])));
    }
}

#[test]
fn pipelined_requests_are_all_answered_without_waiting_for_a_timer() {
    let mut rig = Rig::new(Config::default());
    let key = rig.open();
    let total = 2400;
    rig.write(key, "GET / HTTP/1.1\r\n\r\n".repeat(total).as_bytes());
    // The time stands still: only ticks the engine asks for may finish the work.
    rig.settle(200);
    let out = String::from_utf8_lossy(&rig.taken(key)).to_string();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), total);
    assert!(rig.is_open(key));
}

#[test]
fn a_request_head_must_arrive_within_the_header_timeout_however_it_is_dribbled() {
    let config = Config {
        header_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let mut rig = Rig::new(config);
    let key = rig.open();
    for b in b"GET /health HTTP/1.1\r\nX-Slow: aaaa".iter() {
        rig.write(key, &[*b]);
        rig.tick();
        rig.advance(Duration::from_millis(100));
        if !rig.is_open(key) {
            break;
        }
    }
    assert!(!rig.is_open(key), "the head was still accepted after 3.5 s");
}

#[test]
fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let config = Config {
        idle_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut rig = Rig::new(config);
    let key = rig.open();
    rig.http(key, "GET /health HTTP/1.1\r\n\r\n");
    rig.tick();
    rig.advance(Duration::from_secs(4));
    rig.tick();
    assert!(rig.is_open(key));
    rig.advance(Duration::from_secs(2));
    rig.tick();
    assert!(!rig.is_open(key));
}

#[test]
fn a_closing_connection_lingers_for_the_peer_then_is_dropped() {
    let config = Config {
        close_linger: Duration::from_millis(300),
        ..Config::default()
    };
    let mut rig = Rig::new(config);
    let key = rig.websocket();
    // A one-byte close payload is a protocol error: close 1002, then drain.
    let mut bad = Vec::new();
    encode_client_frame(&mut bad, OpCode::Close, &[3], [1, 2, 3, 4]);
    rig.write(key, &bad);
    rig.tick();
    assert_eq!(rig.received(key), [Frame::Close(1002)]);
    assert!(
        rig.peer(key).write_shut,
        "the write side is shut once all is out"
    );
    rig.advance(Duration::from_millis(200));
    rig.tick();
    assert!(rig.is_open(key), "waits for the peer's FIN");
    rig.advance(Duration::from_millis(200));
    rig.tick();
    assert!(!rig.is_open(key), "dropped after the linger");
    assert_eq!(
        rig.engine.stats().connections.closes_sent.get(&1002),
        Some(&1)
    );
}

#[test]
fn the_close_handshake_ends_when_the_peer_answers() {
    let mut rig = Rig::new(Config::default());
    let key = rig.websocket();
    rig.engine.begin_shutdown(rig.now);
    rig.tick();
    assert_eq!(rig.received(key), [Frame::Close(1001)]);
    assert_eq!(
        rig.engine.stats().connections.closes_sent.get(&1001),
        Some(&1)
    );
    // Data after the server's close is ignored; the peer's close ends it.
    rig.message(key, ping(1));
    let mut close = Vec::new();
    encode_client_frame(
        &mut close,
        OpCode::Close,
        &1001u16.to_be_bytes(),
        [1, 2, 3, 4],
    );
    rig.write(key, &close);
    rig.tick();
    assert!(rig.received(key).is_empty());
    assert!(rig.peer(key).write_shut);
    rig.peer(key).hangup = true;
    rig.peer(key).edge = true;
    rig.tick();
    assert!(!rig.is_open(key));
    assert_eq!(rig.engine.conn_count(), 0);
}

#[test]
fn silent_websockets_are_closed_after_two_heartbeat_intervals() {
    let config = Config {
        heartbeat_interval: Duration::from_secs(10),
        ..Config::default()
    };
    let mut rig = Rig::new(config);
    let silent = rig.websocket();
    let alive = rig.websocket();
    for _ in 0..3 {
        rig.advance(Duration::from_secs(10));
        rig.tick();
        rig.message(alive, ping(1));
        rig.tick();
    }
    assert!(!rig.is_open(silent));
    assert!(rig.is_open(alive));
    assert_eq!(rig.engine.stats().messages.heartbeat_timeouts, 1);
    assert!(kinds(&rig.received(alive)).contains(&"Ping".to_string()));
}

#[test]
fn answers_keep_request_order_behind_a_deferred_one_and_events_do_not_wait() {
    let mut rig = Rig::new(Config::default());
    create(&mut rig, "t");
    let key = rig.websocket();
    subscribe(&mut rig, key, "t");
    let ticket = rig.engine.defer_answer(key).unwrap();
    rig.message(key, ping(2));
    rig.tick();
    // Held: the answer to the request before it has not arrived.
    assert!(rig.received(key).is_empty());
    let publisher = rig.websocket();
    rig.message(publisher, publish("t", 9));
    rig.tick();
    // An event answers no request of this connection: it is not held.
    assert_eq!(event_seqs(&rig.received(key)), [1]);
    let earlier = crate::protocol::pong_frame(None, "then");
    rig.engine.complete_answer(key, ticket, vec![earlier]);
    rig.tick();
    let got = rig.received(key);
    assert_eq!(kinds(&got), ["pong", "pong"]);
    match (&got[0], &got[1]) {
        (Frame::Text(a), Frame::Text(b)) => {
            assert_eq!(
                (a["ts"].as_str(), b["request_id"].as_u64()),
                (Some("then"), Some(2))
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deleted_topic_tells_its_subscribers() {
    let mut rig = Rig::new(Config::default());
    create(&mut rig, "gone");
    let key = rig.websocket();
    subscribe(&mut rig, key, "gone");
    let admin = rig.open();
    rig.http(admin, "DELETE /topics/gone HTTP/1.1\r\n\r\n");
    rig.tick();
    assert!(rig.taken(admin).starts_with(b"HTTP/1.1 200"));
    let got = rig.received(key);
    match &got[..] {
        [Frame::Text(v)] => assert_eq!(
            (v["type"].as_str(), v["msg"].as_str()),
            (Some("info"), Some("topic_deleted"))
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.engine.broker().subscription_count(), 0);
}

#[test]
fn a_peer_that_closes_its_side_after_many_requests_still_gets_every_answer() {
    let mut rig = Rig::new(Config::default());
    let key = rig.open();
    let total = 3 * INPUT_BUDGET as usize;
    rig.write(key, "GET /health HTTP/1.1\r\n\r\n".repeat(total).as_bytes());
    rig.peer(key).hangup = true;
    rig.settle(20);
    assert!(!rig.is_open(key), "closed once everything was answered");
    let out = String::from_utf8(rig.taken(key)).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), total);
}

#[test]
fn a_closing_answer_is_written_in_full_even_when_the_peer_has_closed_its_side() {
    let mut rig = Rig::new(Config::default());
    let key = rig.open();
    rig.peer(key).room = 1000;
    rig.http(key, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    rig.peer(key).hangup = true;
    rig.tick();
    rig.tick();
    assert!(rig.is_open(key), "the console page is not written yet");
    rig.peer(key).room = usize::MAX;
    rig.tick();
    assert!(!rig.is_open(key));
    let out = rig.taken(key);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("</html>\n"),
        "{text}"
    );
}
