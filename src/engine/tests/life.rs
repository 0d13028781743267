//! Phases, deadlines, the close handshake, heartbeats and the order of answers.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::Config;
use crate::engine::INPUT_BUDGET;
use crate::ws::frame::{encode_client_frame, OpCode};

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
    rig.engine.complete_answer(ticket, vec![earlier], rig.now);
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
fn a_deferred_answer_of_a_connection_gone_never_reaches_the_next_one_in_its_slot() {
    let mut rig = Rig::new(Config::default());
    let old = rig.websocket();
    let stale = rig.engine.defer_answer(old).unwrap();
    // Its socket fails (its input is held behind the ticket, so a FIN would wait).
    rig.engine.io_failed(old);
    rig.tick();
    assert!(!rig.is_open(old));
    // A new connection in the same slot, waiting for an answer of its own.
    let new = rig.websocket();
    assert_eq!(new, old, "the slot is reused");
    let mine = rig.engine.defer_answer(new).unwrap();
    rig.message(new, ping(5));
    rig.tick();
    rig.engine.complete_answer(
        stale,
        vec![crate::protocol::pong_frame(None, "stale")],
        rig.now,
    );
    rig.tick();
    assert!(
        rig.received(new).is_empty(),
        "held behind its own ticket still"
    );
    rig.engine.complete_answer(
        mine,
        vec![crate::protocol::pong_frame(None, "mine")],
        rig.now,
    );
    rig.tick();
    let got = rig.received(new);
    assert_eq!(kinds(&got), ["pong", "pong"]);
    assert!(
        matches!(&got[0], Frame::Text(v) if v["ts"] == "mine"),
        "{got:?}"
    );
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

#[test]
fn a_paced_connection_is_left_to_tcp_not_cut_by_the_heartbeat() {
    let config = Config {
        heartbeat_interval: Duration::from_secs(10),
        ..Config::default()
    };
    let mut rig = Rig::new(config);
    create(&mut rig, "t");
    let publisher = rig.websocket();
    let big = "x".repeat(16 * 1024);
    for i in 0..100u64 {
        let msg = json!({"type": "publish", "topic": "t", "request_id": i,
            "message": {"id": message_id(i), "payload": big}});
        rig.message(publisher, msg);
        rig.tick();
    }
    // The publisher leaves (it would be silent for the heartbeat too).
    rig.peer(publisher).hangup = true;
    rig.peer(publisher).edge = true;
    rig.tick();
    // One subscribe asks for the whole 1.6 MB ring; its socket takes almost nothing.
    let key = rig.websocket();
    rig.peer(key).room = 0;
    rig.message(
        key,
        json!({"type": "subscribe", "topic": "t", "client_id": "c", "last_n": 100}),
    );
    rig.tick();
    // Paused: its answers wait and its frames (pongs to the heartbeat too) are not read.
    assert!(rig.engine.paused(key));
    // Its peer's TCP is alive but takes nothing for six intervals: slowed, not cut.
    for _ in 0..12 {
        rig.advance(Duration::from_secs(5));
        rig.tick();
        assert!(rig.is_open(key), "a paced connection cut by the heartbeat");
    }
    assert_eq!(rig.engine.stats().messages.heartbeat_timeouts, 0);
    // Then TCP gives up on the peer (its probes unanswered): the socket reports an error.
    rig.peer(key).failed = true;
    rig.peer(key).hangup = true;
    rig.tick();
    assert!(!rig.is_open(key));
}

#[test]
fn a_started_message_must_end_within_the_message_timeout() {
    let config = Config {
        message_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let mut rig = Rig::new(config);
    // A message finished in time: the clock stops with it.
    let fine = rig.websocket();
    let mut frame = Vec::new();
    encode_client_frame(
        &mut frame,
        OpCode::Text,
        ping(1).to_string().as_bytes(),
        [1, 2, 3, 4],
    );
    let (a, b) = frame.split_at(10);
    rig.write(fine, a);
    rig.tick();
    rig.advance(Duration::from_millis(1500));
    rig.write(fine, b);
    rig.tick();
    rig.advance(Duration::from_secs(3));
    rig.tick();
    assert_eq!(kinds(&rig.received(fine)), ["pong"]);
    // A header announcing 60,000 bytes, then one byte every half second.
    let slow = rig.websocket();
    let mut big = Vec::new();
    encode_client_frame(&mut big, OpCode::Text, &[b' '; 60_000], [1, 2, 3, 4]);
    let began = rig.now;
    rig.write(slow, &big[..20]);
    let mut closed_at = None;
    for i in 20..40 {
        rig.tick();
        if rig.received(slow) == [Frame::Close(1008)] {
            closed_at = Some(rig.now - began);
            break;
        }
        rig.advance(Duration::from_millis(500));
        rig.write(slow, &big[i..i + 1]);
    }
    let at = closed_at.expect("closed 1008 while still dribbling");
    assert!(
        at >= Duration::from_secs(2) && at <= Duration::from_secs(3),
        "{at:?}"
    );
    assert_eq!(rig.engine.stats().messages.message_timeouts, 1);
    assert!(rig.is_open(fine));
}
