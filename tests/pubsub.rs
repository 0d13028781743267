//! The pub/sub protocol end to end: message types and errors, ordering and fan-out, replay and
//! resume, backpressure, topic deletion, heartbeats and counts.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

fn event_seq(v: &Value) -> u64 {
    assert_eq!(v["type"], "event", "{v}");
    v["seq"].as_u64().unwrap()
}

#[test]
fn the_reference_documents_manual_test() {
    let server = Server::start();
    server.create_topic("test-topic");
    let mut sub = server.ws();
    let ack =
        sub.request(json!({"type":"subscribe","topic":"test-topic","client_id":"test-client"}));
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["status"].as_str(),
            ack["topic"].as_str()
        ),
        (Some("ack"), Some("ok"), Some("test-topic"))
    );
    assert!(ack.get("request_id").is_none());
    let mut publisher = server.ws();
    let id = "550e8400-e29b-41d4-a716-446655440000";
    let ack = publisher.request(json!({
        "type":"publish","topic":"test-topic","request_id":"340e8400-e29b-41d4-a716-4466554480098",
        "message":{"id": id,"payload":{"order_id":"ORD-123","amount":99.5,"currency":"USD"}}
    }));
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["request_id"].as_str(),
            ack["seq"].as_u64()
        ),
        (
            Some("ack"),
            Some("340e8400-e29b-41d4-a716-4466554480098"),
            Some(1)
        )
    );
    let ev = sub.recv();
    assert_eq!(ev["type"], "event");
    assert_eq!(ev["topic"], "test-topic");
    assert_eq!(ev["message"]["id"], id);
    assert_eq!(
        ev["message"]["payload"],
        json!({"order_id":"ORD-123","amount":99.5,"currency":"USD"})
    );
    assert_eq!(ev["seq"], 1);
    assert!(ev["ts"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn payloads_arrive_byte_for_byte() {
    let server = Server::start();
    server.create_topic("raw");
    let mut sub = server.ws();
    sub.subscribe("raw");
    let payload = r#"{ "spaced" : [1.50, 2e3, "\u00e9"] , "x":null }"#;
    let text = format!(
        r#"{{"type":"publish","topic":"raw","message":{{"id":"{}","payload":{payload}}}}}"#,
        uuid_v4()
    );
    let mut publisher = server.ws();
    publisher.send_text(&text);
    match sub.socket.read().unwrap() {
        Message::Text(t) => assert!(
            t.as_str().contains(&format!(r#""payload":{payload}"#)),
            "{t}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_client_mistake_gets_its_error_and_the_connection_stays_open() {
    let server = Server::start_with(&[("MAX_SUBSCRIBERS_PER_TOPIC", "1")]);
    server.create_topic("t");
    let mut other = server.ws();
    other.subscribe("t");
    let mut ws = server.ws();
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"type":"dance","request_id":"r1"}),
            "BAD_REQUEST",
            "unknown message type",
        ),
        (
            json!({"type":"subscribe","client_id":"c","request_id":"r2"}),
            "BAD_REQUEST",
            "topic is required",
        ),
        (
            json!({"type":"subscribe","topic":"no such","client_id":"c","request_id":"r3"}),
            "BAD_REQUEST",
            "topic must be",
        ),
        (
            json!({"type":"subscribe","topic":"missing","client_id":"c","request_id":"r4"}),
            "TOPIC_NOT_FOUND",
            "does not exist",
        ),
        (
            json!({"type":"subscribe","topic":"t","client_id":"c","request_id":"r5"}),
            "LIMIT_EXCEEDED",
            "maximum of 1",
        ),
        (
            json!({"type":"subscribe","topic":"t","client_id":"c","last_n":-3,"request_id":"r6"}),
            "BAD_REQUEST",
            "last_n must be a non-negative integer",
        ),
        (
            json!({"type":"unsubscribe","topic":"t","client_id":"c","request_id":"r7"}),
            "NOT_SUBSCRIBED",
            "not subscribed",
        ),
        (
            json!({"type":"publish","topic":"t","message":{"id":"nope","payload":1},"request_id":"r8"}),
            "BAD_REQUEST",
            "message.id must be a valid UUID",
        ),
        (
            json!({"type":"publish","topic":"gone","message":{"id":uuid_v4(),"payload":1},"request_id":"r9"}),
            "TOPIC_NOT_FOUND",
            "does not exist",
        ),
        (
            json!({"type":"publish","topic":"t","message":"x","request_id":"r10"}),
            "BAD_REQUEST",
            "message must be",
        ),
    ];
    for (msg, code, text) in cases {
        let rid = msg["request_id"].clone();
        let v = ws.request(msg);
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(text),
            "{v}"
        );
        assert_eq!(v["request_id"], rid);
    }
    ws.send_text("{not json");
    let v = ws.recv();
    assert_eq!(v["error"]["code"], "BAD_REQUEST");
    let pong = ws.request(json!({"type":"ping","request_id":7}));
    assert_eq!(
        (pong["type"].as_str(), pong["request_id"].as_u64()),
        (Some("pong"), Some(7))
    );
}

#[test]
fn subscribing_twice_does_not_double_deliveries() {
    let server = Server::start();
    server.create_topic("t");
    let mut ws = server.ws();
    ws.subscribe("t");
    let again = ws.subscribe("t");
    assert_eq!(again["already_subscribed"], true);
    assert_eq!(server.get("/health")["subscribers"], 1);
    ws.publish("t", json!(1));
    assert_eq!(event_seq(&ws.recv()), 1);
    assert_eq!(ws.recv()["type"], "ack");
    ws.publish("t", json!(2));
    assert_eq!(
        event_seq(&ws.recv()),
        2,
        "the second event follows the first ack directly"
    );
    let unsub =
        ws.request(json!({"type":"unsubscribe","topic":"t","client_id":"c","request_id":"u"}));
    // The publish ack for seq 2 comes first.
    assert_eq!(unsub["seq"], 2);
    let unsub = ws.recv();
    assert_eq!(
        (unsub["type"].as_str(), unsub["request_id"].as_str()),
        (Some("ack"), Some("u"))
    );
    assert_eq!(server.get("/health")["subscribers"], 0);
}

#[test]
fn fifty_subscribers_receive_ten_thousand_messages_in_order() {
    let server = Server::start_with(&[
        ("SUBSCRIBER_QUEUE_SIZE", "100000"),
        ("MAX_QUEUE_BYTES", "67108864"),
    ]);
    server.create_topic("bulk");
    let mut subs: Vec<Ws> = (0..50).map(|_| server.ws()).collect();
    for s in &mut subs {
        s.subscribe("bulk");
    }
    let addr = server.url("/ws");
    let publisher = std::thread::spawn(move || {
        let mut p = Ws::connect(&addr);
        for i in 0..10_000u64 {
            p.publish("bulk", json!({ "i": i }));
            if i % 100 == 99 {
                p.socket.flush().unwrap();
            }
        }
        p.socket.flush().unwrap();
        for _ in 0..10_000 {
            assert_eq!(p.recv()["type"], "ack");
        }
    });
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                for want in 1..=10_000u64 {
                    let v = s.recv();
                    assert_eq!(event_seq(&v), want);
                    assert_eq!(v["message"]["payload"]["i"], want - 1);
                }
            })
        })
        .collect();
    publisher.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let stats = server.get("/stats");
    assert_eq!(stats["topics"]["bulk"]["messages"], 10_000);
    assert_eq!(stats["messages"]["delivered"], 500_000);
}

#[test]
fn topics_are_isolated_and_publishers_get_their_own_events() {
    let server = Server::start();
    server.create_topic("a");
    server.create_topic("b");
    let mut on_a = server.ws();
    on_a.subscribe("a");
    let mut on_b = server.ws();
    on_b.subscribe("b");
    on_b.publish("b", json!("to b"));
    assert_eq!(on_b.recv()["message"]["payload"], "to b");
    assert_eq!(on_b.recv()["type"], "ack");
    on_b.publish("a", json!("to a"));
    assert_eq!(on_b.recv()["type"], "ack");
    assert_eq!(on_a.recv()["message"]["payload"], "to a");
    // Nothing else arrived on b: its next message is the pong.
    assert_eq!(on_b.request(json!({"type":"ping"}))["type"], "pong");
}

#[test]
fn replay_then_live_with_no_gap_or_duplicate_while_publishing_continues() {
    let server = Server::start_with(&[("TOPIC_HISTORY_SIZE", "1000")]);
    server.create_topic("live");
    let addr = server.url("/ws");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let publisher = std::thread::spawn(move || {
        let mut p = Ws::connect(&addr);
        let mut n = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..50 {
                p.publish("live", json!(n));
                n += 1;
            }
            for _ in 0..50 {
                assert_eq!(p.recv()["type"], "ack");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        n
    });
    wait_until("publishing under way", || {
        server.get("/stats")["topics"]["live"]["messages"].as_u64() >= Some(100)
    });
    let mut sub = server.ws();
    let ack = sub.request(json!({"type":"subscribe","topic":"live","client_id":"c","last_n":50}));
    let at = ack["seq"].as_u64().unwrap();
    let replayed = ack["replayed"].as_u64().unwrap();
    assert!(at > 0 && replayed == at.min(50), "{ack}");
    let first = at - replayed + 1;
    for want in first..first + 2000 {
        assert_eq!(event_seq(&sub.recv()), want);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
}

#[test]
fn resume_with_since_seq_and_the_evicted_case() {
    let server = Server::start_with(&[("TOPIC_HISTORY_SIZE", "5")]);
    server.create_topic("r");
    let mut p = server.ws();
    for i in 0..3 {
        p.publish("r", json!(i));
        p.recv();
    }
    let mut sub = server.ws();
    let ack = sub.request(json!({"type":"subscribe","topic":"r","client_id":"c","since_seq":1}));
    assert_eq!(
        (
            ack["recovered"].as_bool(),
            ack["replayed"].as_u64(),
            ack["first_seq"].as_u64()
        ),
        (Some(true), Some(2), Some(1))
    );
    assert_eq!(event_seq(&sub.recv()), 2);
    assert_eq!(event_seq(&sub.recv()), 3);
    for i in 3..10 {
        p.publish("r", json!(i));
        p.recv();
    }
    let mut late = server.ws();
    let ack = late.request(json!({"type":"subscribe","topic":"r","client_id":"c","since_seq":2}));
    assert_eq!(
        (
            ack["recovered"].as_bool(),
            ack["replayed"].as_u64(),
            ack["first_seq"].as_u64()
        ),
        (Some(false), Some(5), Some(6))
    );
    for want in 6..=10 {
        assert_eq!(event_seq(&late.recv()), want);
    }
}

#[test]
fn deleting_a_topic_tells_its_subscribers_and_keeps_them_connected() {
    let server = Server::start();
    server.create_topic("doomed");
    server.create_topic("other");
    let mut ws = server.ws();
    ws.subscribe("doomed");
    ws.subscribe("other");
    let (status, _) = server.request("DELETE", "/topics/doomed", None);
    assert_eq!(status, 200);
    let info = ws.recv();
    assert_eq!(
        (
            info["type"].as_str(),
            info["msg"].as_str(),
            info["topic"].as_str()
        ),
        (Some("info"), Some("topic_deleted"), Some("doomed"))
    );
    assert_eq!(ws.request(json!({"type":"ping"}))["type"], "pong");
    assert_eq!(server.get("/health")["subscribers"], 1);
}

#[test]
fn silent_peers_are_closed_after_two_heartbeat_intervals() {
    let server = Server::start_with(&[("HEARTBEAT_INTERVAL_SECS", "1")]);
    server.create_topic("t");
    // A raw client that never answers pings.
    let mut silent = raw_ws(&server);
    silent
        .write_all(&client_frame(
            true,
            1,
            br#"{"type":"subscribe","topic":"t","client_id":"z"}"#,
        ))
        .unwrap();
    // tungstenite answers pings by itself, so this one stays.
    let mut alive = server.ws();
    alive.subscribe("t");
    let started = Instant::now();
    let watcher = std::thread::spawn(move || {
        let mut pings = 0;
        let mut buf = [0u8; 1024];
        loop {
            match silent.read(&mut buf) {
                Ok(0) => return pings,
                Ok(n) => pings += buf[..n].windows(2).filter(|w| w == &[0x89, 0x00]).count(),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return pings,
                Err(e) => panic!("{e}"),
            }
        }
    });
    // Meanwhile the live client keeps talking (and answers pings as it reads).
    while !watcher.is_finished() {
        assert_eq!(alive.request(json!({"type":"ping"}))["type"], "pong");
        std::thread::sleep(Duration::from_millis(200));
        assert!(started.elapsed() < TIMEOUT);
    }
    assert!(watcher.join().unwrap() >= 1);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    server.wait_log("heartbeat_timeout");
    for _ in 0..3 {
        assert_eq!(alive.request(json!({"type":"ping"}))["type"], "pong");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(server.get("/health")["subscribers"], 1);
}

#[test]
fn abrupt_disconnects_leave_counts_at_zero() {
    let server = Server::start();
    server.create_topic("t");
    server.create_topic("u");
    for _ in 0..20 {
        let mut s = raw_ws(&server);
        s.write_all(&client_frame(
            true,
            1,
            br#"{"type":"subscribe","topic":"t","client_id":"a"}"#,
        ))
        .unwrap();
        s.write_all(&client_frame(
            true,
            1,
            br#"{"type":"subscribe","topic":"u","client_id":"a"}"#,
        ))
        .unwrap();
        // Half a frame, then gone.
        s.write_all(&client_frame(true, 1, &[b'x'; 500])[..100])
            .unwrap();
    }
    let mut ws = server.ws();
    ws.subscribe("t");
    ws.publish("t", json!("still fine"));
    assert_eq!(ws.recv()["type"], "event");
    drop(ws);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let health = server.get("/health");
        let stats = server.get("/stats");
        if health["subscribers"] == 0 && stats["connections"]["websocket"] == 0 {
            assert_eq!(server.get("/topics")["topics"][0]["subscribers"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "{health} {stats}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_publish_retried_with_its_message_id_is_not_delivered_twice() {
    let server = Server::start();
    server.create_topic("once");
    let mut sub = server.ws();
    sub.subscribe("once");
    let mut p = server.ws();
    let id = uuid_v4();
    let publish =
        |id: &str, n: u64| json!({"type":"publish","topic":"once","message":{"id":id,"payload":n}});
    let first = p.request(publish(&id, 1));
    assert_eq!(
        (first["seq"].as_u64(), first.get("duplicate")),
        (Some(1), None),
        "{first}"
    );
    // The same UUID again, and once more spelled in capitals: the original's seq, flagged.
    for again in [id.clone(), id.to_uppercase()] {
        let ack = p.request(publish(&again, 2));
        assert_eq!(
            (ack["seq"].as_u64(), ack["duplicate"].as_bool()),
            (Some(1), Some(true)),
            "{ack}"
        );
    }
    let next = p.request(publish(&uuid_v4(), 3));
    assert_eq!(next["seq"], 2, "{next}");
    // The subscriber got the first and the third, nothing in between.
    let events: Vec<_> = (0..2).map(|_| sub.recv()).collect();
    assert_eq!(
        events
            .iter()
            .map(|e| (e["seq"].as_u64(), e["message"]["payload"].as_u64()))
            .collect::<Vec<_>>(),
        [(Some(1), Some(1)), (Some(2), Some(3))]
    );
    let stats = server.get("/stats");
    assert_eq!(stats["messages"]["duplicates"], 2, "{stats}");
    assert_eq!(stats["topics"]["once"]["messages"], 2, "{stats}");
}
