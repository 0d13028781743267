//! Backpressure end to end (PROTOCOL.md section 8): subscribers that keep up are never cut,
//! whatever arrives at once; one that does not read is cut alone; a client that does not read
//! its answers is slowed down, not cut.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn event_seq(v: &Value) -> u64 {
    assert_eq!(v["type"], "event", "{v}");
    v["seq"].as_u64().unwrap()
}

#[test]
fn last_n_of_the_whole_ring_is_served_in_full_not_cut_as_slow() {
    let server = Server::start_with(&[
        ("TOPIC_HISTORY_SIZE", "500"),
        ("SUBSCRIBER_QUEUE_SIZE", "10"),
    ]);
    server.create_topic("full");
    let mut p = server.ws();
    for i in 0..600 {
        p.publish("full", json!(i));
        p.recv();
    }
    for last_n in [500u64, 1_000_000_000] {
        let mut sub = server.ws();
        let ack =
            sub.request(json!({"type":"subscribe","topic":"full","client_id":"c","last_n":last_n}));
        assert_eq!(ack["replayed"], 500);
        for want in 101..=600 {
            assert_eq!(event_seq(&sub.recv()), want);
        }
    }
    assert_eq!(server.get("/stats")["slow_consumer_disconnects"], 0);
}

#[test]
fn a_subscriber_that_never_reads_is_cut_and_the_others_get_everything() {
    // The longest close linger: the slow peer reads only after the publishing, however long a
    // busy machine takes for it, and must still find the notice and the close frame waiting.
    let server = Server::start_with(&[
        ("SUBSCRIBER_QUEUE_SIZE", "50"),
        ("MAX_QUEUE_BYTES", "65536"),
        ("CLOSE_LINGER_MS", "60000"),
    ]);
    server.create_topic("hot");
    // The slow one: a tiny receive window, so the kernel cannot absorb what it does not read.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut slow: std::net::TcpStream = socket.into();
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    slow.write_all(UPGRADE.as_bytes()).unwrap();
    assert_eq!(read_response(&mut slow).status, 101);
    slow.write_all(&client_frame(
        true,
        1,
        br#"{"type":"subscribe","topic":"hot","client_id":"slow"}"#,
    ))
    .unwrap();
    let mut healthy = server.ws();
    healthy.subscribe("hot");
    wait_until("the slow peer's subscription", || {
        server.get("/health")["subscribers"] == 2
    });
    let rss_before = server.rss_kib();
    let mut p = server.ws();
    let payload = json!("y".repeat(2000));
    let total = 3000u64;
    let reader = std::thread::spawn(move || {
        for want in 1..=total {
            assert_eq!(event_seq(&healthy.recv()), want);
        }
        healthy
    });
    for _ in 0..total {
        p.publish("hot", payload.clone());
        assert_eq!(p.recv()["type"], "ack");
    }
    let healthy = reader.join().unwrap();
    server.wait_log("slow_consumer");
    let stats = server.get("/stats");
    assert_eq!(stats["slow_consumer_disconnects"], 1, "{stats}");
    assert_eq!(stats["topics"]["hot"]["subscribers"], 1, "{stats}");
    assert_eq!(stats["connections"]["closes_sent"]["1008"], 1, "{stats}");
    // Far less than the 6 MB published is held for the slow peer.
    assert!(
        server.rss_kib() < rss_before + 4096,
        "rss grew from {rss_before} to {}",
        server.rss_kib()
    );
    // Now read what the slow peer was sent: some events, then SLOW_CONSUMER, then close 1008
    // (the server then waits for our close frame, so read up to its own). A bigger buffer now
    // lets the backlog in the kernel drain faster.
    socket2::SockRef::from(&slow)
        .set_recv_buffer_size(1 << 20)
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    while close_code_in(&data).is_none() {
        let n = slow
            .read(&mut buf)
            .expect("the notice and close frame arrive");
        assert!(n > 0, "closed before the close frame");
        data.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&data);
    assert!(text.contains("SLOW_CONSUMER"), "no SLOW_CONSUMER notice");
    assert_eq!(close_code_in(&data), Some(1008));
    drop(healthy);
}

#[test]
fn a_burst_of_publishes_does_not_cut_subscribers_that_keep_up() {
    // The defaults: 100 live events may wait for a subscriber. 400 publishes arrive at once;
    // every subscriber reads as fast as it can, so each must get all 400.
    let server = Server::start();
    server.create_topic("burst");
    let mut subs: Vec<Ws> = (0..10).map(|_| server.ws()).collect();
    for s in &mut subs {
        s.subscribe("burst");
    }
    let total = 400u64;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                for want in 1..=total {
                    assert_eq!(event_seq(&s.recv()), want);
                }
            })
        })
        .collect();
    let mut publisher = raw_ws(&server);
    publisher.write_all(&publishes("burst", total)).unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let stats = server.get("/stats");
    assert_eq!(stats["slow_consumer_disconnects"], 0, "{stats}");
    assert_eq!(stats["messages"]["delivered"], 4000, "{stats}");
}

/// The status code of the close frame that ends `data`, if it ends with one.
fn close_code_in(data: &[u8]) -> Option<u16> {
    let i = data.windows(2).rposition(|w| w[0] == 0x88)?;
    let len = data[i + 1] as usize;
    (i + 2 + len == data.len() && len >= 2).then(|| u16::from_be_bytes([data[i + 2], data[i + 3]]))
}

/// The topic's publish count once it has stood still for a second (polled, within `TIMEOUT`).
fn settled_count(server: &Server, topic: &str) -> u64 {
    let count = || {
        server.get("/stats")["topics"][topic]["messages"]
            .as_u64()
            .unwrap()
    };
    let deadline = Instant::now() + TIMEOUT;
    let (mut last, mut still) = (count(), 0);
    while still < 5 {
        assert!(
            Instant::now() < deadline,
            "the count of {topic} never settled"
        );
        std::thread::sleep(Duration::from_millis(200));
        let now = count();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// `total` publish frames to `topic`, payloads 0, 1, 2...
fn publishes(topic: &str, total: u64) -> Vec<u8> {
    (0..total)
        .flat_map(|i| client_frame(true, 1, publish_msg(topic, json!(i)).to_string().as_bytes()))
        .collect()
}

#[test]
fn a_publisher_that_does_not_read_its_acks_is_paced_not_cut() {
    let server = Server::start_with(&[
        ("MAX_QUEUE_BYTES", "65536"),
        ("HEARTBEAT_INTERVAL_SECS", "1"),
    ]);
    server.create_topic("paced");
    let mut publisher = raw_ws_with_a_tiny_window(&server);
    // About 6 MB of acks: more than the kernel's buffers hold for a peer that does not read.
    let total: u64 = 50_000;
    let frames = publishes("paced", total);
    let mut writer_socket = publisher.try_clone().unwrap();
    let writer = std::thread::spawn(move || writer_socket.write_all(&frames).is_ok());
    // The server stops reading the publisher: its publish count stands still below the total
    // (the rest waits in the kernel's buffers), and nobody is cut.
    let published = settled_count(&server, "paced");
    assert!(published < total, "{published} of {total}: never paused");
    // Its pongs cannot be seen while it is not read, yet the heartbeat leaves it alone: a
    // connection that stays silent from now on is cut (two intervals passed), the publisher not.
    let _silent = raw_ws(&server);
    wait_until("the silent connection cut", || {
        server.get("/stats")["messages"]["heartbeat_timeouts"] == 1
    });
    let stats = server.get("/stats");
    assert_eq!(stats["slow_consumer_disconnects"], 0, "{stats}");
    assert_eq!(stats["connections"]["websocket"], 1, "{stats}");
    // Once the publisher reads, everything goes through: every publish acknowledged, in order.
    socket2::SockRef::from(&publisher)
        .set_recv_buffer_size(1 << 20)
        .unwrap();
    let mut acks = 0;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 65536];
    while acks < total {
        let n = publisher.read(&mut buf).expect("acks keep coming");
        assert!(n > 0, "the publisher was disconnected");
        pending.extend_from_slice(&buf[..n]);
        let mut pos = 0;
        // Acks are short: one-byte lengths only.
        while pending.len() >= pos + 2
            && pending.len() >= pos + 2 + (pending[pos + 1] & 0x7f) as usize
        {
            let len = (pending[pos + 1] & 0x7f) as usize;
            // Heartbeat pings come between the acks.
            if pending[pos] & 0x0f == 1 {
                let ack: Value = serde_json::from_slice(&pending[pos + 2..pos + 2 + len]).unwrap();
                acks += 1;
                assert_eq!(
                    (ack["type"].as_str(), ack["seq"].as_u64()),
                    (Some("ack"), Some(acks))
                );
            }
            pos += 2 + len;
        }
        pending.drain(..pos);
    }
    assert!(writer.join().unwrap());
    assert_eq!(server.get("/stats")["topics"]["paced"]["messages"], total);
}

#[test]
fn a_fin_that_arrives_while_reading_is_paused_is_still_seen() {
    let server = Server::start_with(&[("MAX_QUEUE_BYTES", "65536")]);
    server.create_topic("fin");
    let mut publisher = raw_ws_with_a_tiny_window(&server);
    // Enough unread acks that the server stops reading this client (at ~35,000 publishes here),
    // then the client's FIN queued behind the other ~2.7 MB: its readiness arrives while the
    // server is not reading, and no later event announces it again. Reading after the pause must
    // go on to the end of the stream, or the connection is never closed.
    let total: u64 = 60_000;
    let frames = publishes("fin", total);
    let writer_socket = publisher.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = writer_socket;
        let ok = w.write_all(&frames).is_ok();
        w.shutdown(std::net::Shutdown::Write).unwrap();
        ok
    });
    wait_until("the publishes and the FIN to fit in the buffers", || {
        writer.is_finished()
    });
    let published = settled_count(&server, "fin");
    assert!(
        published < total,
        "reading never paused: {published} of {total}"
    );
    socket2::SockRef::from(&publisher)
        .set_recv_buffer_size(1 << 20)
        .unwrap();
    // Reading everything lets the server read on to the FIN; it then closes its side.
    let mut buf = vec![0u8; 65536];
    loop {
        match publisher.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server never closed: {e}"),
        }
    }
    assert!(writer.join().unwrap());
    let stats = server.get("/stats");
    assert_eq!(stats["topics"]["fin"]["messages"], total, "{stats}");
    assert_eq!(stats["connections"]["websocket"], 0, "{stats}");
}
