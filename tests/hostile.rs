//! Hostile and careless clients against the real server: every input gets its specific answer,
//! and no client can make the server spend more than the documented bound of memory, time or
//! connection slots (README "Limits and worst cases").

mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::json;

/// The next text frame's payload from a raw WebSocket (server frames are unmasked).
fn next_text(s: &mut std::net::TcpStream) -> serde_json::Value {
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).unwrap();
        let mut len = (head[1] & 0x7f) as usize;
        if len == 126 {
            let mut ext = [0u8; 2];
            s.read_exact(&mut ext).unwrap();
            len = u16::from_be_bytes(ext) as usize;
        } else if len == 127 {
            let mut ext = [0u8; 8];
            s.read_exact(&mut ext).unwrap();
            len = u64::from_be_bytes(ext) as usize;
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        if head[0] & 0x0f == 1 {
            return serde_json::from_slice(&payload).unwrap();
        }
    }
}

#[test]
fn an_upgrade_with_two_keys_is_refused() {
    let server = Server::start();
    let mut s = server.connect();
    let twice = UPGRADE.replace(
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version",
    );
    s.write_all(twice.as_bytes()).unwrap();
    let r = read_response(&mut s);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("once"));
}

#[test]
fn bad_messages_get_specific_short_answers() {
    let server = Server::start();
    server.create_topic("t");
    let mut s = raw_ws(&server);
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"type":"ping","x":1,"x":2,"request_id":"r1"}"#.into(),
            "x is given twice",
        ),
        (
            format!(
                r#"{{"type":"publish","topic":"t","request_id":"r2","message":{{"id":"{0}","id":"{0}","payload":1}}}}"#,
                uuid_v4()
            ),
            "message.id is given twice",
        ),
        ("[1,2,3,4,5,6,7]".into(), "expected a JSON object"),
    ];
    for (text, expected) in cases {
        s.write_all(&client_frame(true, 1, text.as_bytes()))
            .unwrap();
        let v = next_text(&mut s);
        assert_eq!(v["error"]["code"], "BAD_REQUEST", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{text}: {message}");
    }
    // A null request id is a request id: it is echoed.
    s.write_all(&client_frame(
        true,
        1,
        br#"{"type":"ping","request_id":null}"#,
    ))
    .unwrap();
    let pong = next_text(&mut s);
    assert_eq!(pong["type"], "pong");
    assert!(
        pong.as_object().unwrap().contains_key("request_id"),
        "{pong}"
    );
    // A 42 KB bad message gets an answer of a few hundred bytes, not one bigger than itself.
    let long = json!({"type": "x".repeat(42_000)}).to_string();
    s.write_all(&client_frame(true, 1, long.as_bytes()))
        .unwrap();
    let v = next_text(&mut s);
    assert_eq!(v["error"]["code"], "BAD_REQUEST");
    assert!(v.to_string().len() < 400, "{} bytes", v.to_string().len());
}

#[test]
fn bodies_and_names_that_are_not_what_they_seem() {
    let server = Server::start();
    // A JSON array is not an object with a name, whatever serde would make of it.
    let (status, v) = server.request("POST", "/topics", Some(r#"["orders"]"#));
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );
    // "." and ".." are removed from paths by clients, so such topics could never be deleted.
    for name in [".", ".."] {
        let (status, _) =
            server.request("POST", "/topics", Some(&format!(r#"{{"name":"{name}"}}"#)));
        assert_eq!(status, 400, "{name}");
    }
    assert_eq!(server.get("/topics")["topics"], json!([]));
}

#[test]
fn a_resume_across_delete_and_create_is_not_taken_for_the_old_topic() {
    let server = Server::start();
    server.create_topic("r");
    let mut p = server.ws();
    let publish_n = |p: &mut Ws, n: usize| {
        for i in 0..n {
            p.publish("r", json!(i));
            assert_eq!(p.recv()["type"], "ack");
        }
    };
    publish_n(&mut p, 5);
    let mut old = server.ws();
    let ack = old.request(json!({"type":"subscribe","topic":"r","client_id":"c","since_seq":0}));
    let epoch = ack["epoch"]
        .as_str()
        .expect("the ack names the epoch")
        .to_string();
    drop(old);
    assert_eq!(server.request("DELETE", "/topics/r", None).0, 200);
    server.create_topic("r");
    publish_n(&mut p, 8);
    // Seq 5 of the old topic is not seq 5 of the new one: everything retained is replayed.
    let mut back = server.ws();
    let ack = back.request(
        json!({"type":"subscribe","topic":"r","client_id":"c","since_seq":5,"epoch":epoch}),
    );
    assert_eq!(
        (ack["recovered"].as_bool(), ack["replayed"].as_u64()),
        (Some(false), Some(8)),
        "{ack}"
    );
    assert_ne!(ack["epoch"].as_str(), Some(epoch.as_str()));
    for want in 1..=8u64 {
        let v = back.recv();
        assert_eq!(v["seq"], want, "{v}");
    }
    // With the current epoch, the same resume is a real one.
    let current = ack["epoch"].as_str().unwrap().to_string();
    let mut again = server.ws();
    let ack = again.request(
        json!({"type":"subscribe","topic":"r","client_id":"c","since_seq":5,"epoch":current}),
    );
    assert_eq!(
        (ack["recovered"].as_bool(), ack["replayed"].as_u64()),
        (Some(true), Some(3)),
        "{ack}"
    );
}

#[test]
fn history_is_bounded_by_bytes_as_well_as_by_count() {
    let server = Server::start_with(&[("TOPIC_HISTORY_BYTES", "50000")]);
    server.create_topic("h");
    let mut p = server.ws();
    for i in 0..20 {
        p.publish("h", json!({"i": i, "pad": "x".repeat(10_000)}));
        assert_eq!(p.recv()["type"], "ack");
    }
    let stats = server.get("/stats");
    let t = &stats["topics"]["h"];
    assert_eq!(t["messages"], 20);
    assert!(t["retained"].as_u64().unwrap() <= 4, "{t}");
    assert!(t["retained_bytes"].as_u64().unwrap() <= 50_000, "{t}");
    let mut sub = server.ws();
    let ack = sub.request(json!({"type":"subscribe","topic":"h","client_id":"c","last_n":100}));
    assert_eq!(ack["replayed"], t["retained"], "{ack}");
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection; returns
/// how long that took and what the server sent (`None`: still open after all of them).
fn dribble(
    s: &mut std::net::TcpStream,
    bytes: &[u8],
    gap: std::time::Duration,
) -> (Option<std::time::Duration>, Vec<u8>) {
    let started = std::time::Instant::now();
    s.set_read_timeout(Some(std::time::Duration::from_millis(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            return (Some(started.elapsed()), got);
        }
        let until = std::time::Instant::now() + gap;
        while std::time::Instant::now() < until {
            match s.read(&mut buf) {
                Ok(0) => return (Some(started.elapsed()), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (Some(started.elapsed()), got)
                }
                Err(_) => {}
            }
        }
    }
    (None, got)
}

#[test]
fn a_request_head_or_body_dribbled_in_is_cut_at_its_timeout() {
    let server = Server::start_with(&[("HEADER_TIMEOUT_SECS", "2"), ("BODY_TIMEOUT_SECS", "2")]);
    let gap = std::time::Duration::from_millis(400);
    // The head, a byte every 0.4 s: 40 bytes would take 16 s.
    let mut s = server.connect();
    let head = b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (closed, got) = dribble(&mut s, head, gap);
    let closed = closed.expect("the head was taken at a crawl");
    assert!(
        closed >= std::time::Duration::from_millis(1500),
        "{closed:?}"
    );
    assert!(
        got.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&got)
    );
    // A complete head, then the body at a crawl.
    let mut s = server.connect();
    let body = br#"{"name":"slowly-but-surely"}"#;
    write!(
        s,
        "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (closed, got) = dribble(&mut s, body, gap);
    assert!(closed.is_some(), "the body was taken at a crawl");
    assert!(
        got.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(server.get("/topics")["topics"], json!([]));
    assert!(server.get("/stats")["connections"]["request_timeouts"].as_u64() >= Some(2));
}

#[test]
fn slow_requests_cannot_hold_every_connection_slot() {
    let server = Server::start_with(&[("MAX_CONNECTIONS", "10"), ("HEADER_TIMEOUT_SECS", "1")]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Ten clients, each sending its head a byte every 0.3 s for as long as it may.
    let dribblers: Vec<_> = (0..10)
        .map(|_| {
            let mut s = server.connect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(b"a").is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
            })
        })
        .collect();
    // However they dribble, their heads' clocks run out and their slots come free.
    wait_until("a slot freed by the header timeout", || {
        server.request("GET", "/health", None).0 == 200
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for d in dribblers {
        d.join().unwrap();
    }
}

#[test]
fn an_endless_chunk_extension_or_trailer_is_refused_at_its_bound() {
    let server = Server::start();
    for tail in [
        [b"1;".as_slice(), &[b'a'; 5000]].concat(),
        [b"0\r\nX-Trailer: ".as_slice(), &[b'b'; 9000]].concat(),
    ] {
        let mut s = server.connect();
        s.write_all(b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        s.write_all(&tail).unwrap();
        let r = read_response(&mut s);
        assert!(matches!(r.status, 400 | 431), "{} {:?}", r.status, r.json());
    }
    assert_eq!(server.get("/health")["topics"], 0);
}

/// The answer a client gets, or how its connection ended; `None` if it is still waiting.
fn first_answer(s: &mut std::net::TcpStream) -> Option<String> {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => Some("closed".into()),
        Ok(n) => Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()?
                .to_string(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some("reset".into()),
        Err(_) => None,
    }
}

#[test]
fn out_of_descriptors_clients_are_answered_and_the_log_stays_quiet() {
    // A hard limit of 64 descriptors, taken as the soft one: room for 32 connections.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -n 64 && exec \"$0\"", &Server::binary()]);
    let server = Server::spawn(cmd, &[("CLOSE_LINGER_MS", "20000")]);
    let lowered = server
        .startup
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "max_connections_lowered")
        .expect("a warning that MAX_CONNECTIONS does not fit");
    assert_eq!(lowered["allowed"], 32, "{lowered}");
    let held: Vec<Ws> = (0..32).map(|_| server.ws()).collect();
    // Refused clients that keep their sockets hold the server's descriptors while it lingers,
    // so most of these arrive when none is free.
    let mut flood: Vec<_> = (0..120)
        .map(|_| {
            let mut s = server.connect();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            s
        })
        .collect();
    for (i, s) in flood.iter_mut().enumerate() {
        let answer = first_answer(s).unwrap_or_else(|| panic!("client {i} got no answer"));
        assert!(
            answer.starts_with("HTTP/1.1 503") || answer == "closed" || answer == "reset",
            "client {i}: {answer}"
        );
    }
    drop(flood);
    drop(held);
    wait_until("a descriptor for /stats", || {
        let mut s = server.connect();
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        first_answer(&mut s).is_some_and(|a| a.starts_with("HTTP/1.1 200"))
    });
    let mut stats = serde_json::Value::Null;
    wait_until("the held connections closed", || {
        stats = server.get("/stats");
        stats["connections"]["websocket"] == 0
    });
    let c = &stats["connections"];
    assert!(c["refused_no_descriptor"].as_u64() > Some(0), "{c}");
    // Every client of the flood (and perhaps a probe of the wait above) was refused.
    let refused = c["refused"].as_u64().unwrap() + c["refused_no_descriptor"].as_u64().unwrap();
    assert!(refused >= 120, "{c}");
    // 120 refusals in about a second: a line or two, each saying what it left out.
    let lines: Vec<serde_json::Value> = server
        .log
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .filter(|v: &serde_json::Value| {
            v["event"] == "connection_refused" || v["event"] == "out_of_descriptors"
        })
        .collect();
    assert!(!lines.is_empty() && lines.len() <= 10, "{lines:?}");
}

/// `read` once it has stood still for a second (polled, within `TIMEOUT`).
fn settled(what: &str, mut read: impl FnMut() -> u64) -> u64 {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (mut last, mut still) = (read(), 0);
    while still < 5 {
        assert!(std::time::Instant::now() < deadline, "{what} never settled");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = read();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// A topic holding `n` events, published in one pipelined burst.
fn filled_topic(server: &Server, topic: &str, n: u64) {
    server.create_topic(topic);
    let mut p = server.ws();
    for i in 0..n {
        p.publish(topic, json!({"i": i, "pad": "p".repeat(100)}));
    }
    for _ in 0..n {
        assert_eq!(p.recv()["type"], "ack");
    }
}

/// `count` subscribe messages replaying the whole of `topic`, as one client's frames.
fn replay_requests(topic: &str, count: usize) -> Vec<u8> {
    let sub = json!({"type":"subscribe","topic":topic,"client_id":"amp","since_seq":0}).to_string();
    (0..count)
        .flat_map(|_| client_frame(true, 1, sub.as_bytes()))
        .collect()
}

#[test]
fn a_burst_of_replays_from_a_client_that_does_not_read_holds_one_replay() {
    let server = Server::start_with(&[
        ("TOPIC_HISTORY_SIZE", "10000"),
        ("TOPIC_HISTORY_BYTES", "16777216"),
    ]);
    filled_topic(&server, "big", 10_000);
    let before = server.rss_kib();
    // About 100 KB of requests for 1,000 replays of 10,000 events: 1.6 GB of output asked for.
    let mut attacker = raw_ws(&server);
    attacker.write_all(&replay_requests("big", 1000)).unwrap();
    let replayed = settled("the replayed count", || {
        server.get("/stats")["messages"]["replayed"]
            .as_u64()
            .unwrap()
    });
    // Its next request waits while a replay's output waits: the socket's buffers take a few.
    assert!((10_000..=100_000).contains(&replayed), "{replayed}");
    let grown = server.rss_kib().saturating_sub(before);
    // A queued replay costs the queue's entries (its frames are shared with the history):
    // 10,000 × 48 bytes, in a queue that grows by doubling. Well under 8 MiB however it is read.
    assert!(grown < 8 * 1024, "the server grew by {grown} KiB");
    // Everyone else is served meanwhile.
    let mut other = server.ws();
    assert_eq!(other.request(json!({"type":"ping"}))["type"], "pong");
    drop(attacker);
}

#[test]
fn every_replay_asked_for_in_a_burst_is_served_in_full_and_in_order() {
    let server = Server::start();
    filled_topic(&server, "small", 100);
    let mut reader = raw_ws(&server);
    reader.write_all(&replay_requests("small", 300)).unwrap();
    for round in 0..300 {
        let ack = next_text(&mut reader);
        assert_eq!(ack["type"], "ack", "round {round}: {ack}");
        assert_eq!(ack["replayed"], 100, "round {round}: {ack}");
        for seq in 1..=100 {
            let event = next_text(&mut reader);
            assert_eq!(event["seq"], seq, "round {round}: {event}");
        }
    }
}

#[test]
fn a_ping_flood_from_clients_that_do_not_read_holds_its_bound() {
    let server = Server::start();
    let before = server.rss_kib();
    let pings: std::sync::Arc<Vec<u8>> = std::sync::Arc::new(
        (0..3_000_000)
            .flat_map(|_| client_frame(true, 9, b""))
            .collect(),
    );
    // Four clients each send pings until their sockets refuse more (the server stopped reading
    // them): 18 MB each, 3,000,000 pongs each asked for, more than the kernel's buffers hold.
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let mut s = raw_ws_with_a_tiny_window(&server);
            let pings = pings.clone();
            std::thread::spawn(move || {
                s.set_write_timeout(Some(std::time::Duration::from_secs(2)))
                    .unwrap();
                let _ = s.write_all(&pings);
                s
            })
        })
        .collect();
    let flooders: Vec<_> = flooders.into_iter().map(|f| f.join().unwrap()).collect();
    // Each look at /stats writes one frame of its own: those are taken off.
    let mut looks = 0;
    let pongs = settled("the frames written", || {
        looks += 1;
        server.get("/stats")["loop"]["frames_written"]
            .as_u64()
            .unwrap()
            - looks
    });
    let grown = server.rss_kib().saturating_sub(before);
    // Each connection's input stops while 256 KiB of output (by what it costs) waits, and at
    // most one 64 KiB read waits behind it: 4 × 320 KiB, with room for the allocator.
    assert!(
        grown < 8 * 1024,
        "the server grew by {grown} KiB ({pongs} frames written)"
    );
    let mut other = server.ws();
    assert_eq!(other.request(json!({"type":"ping"}))["type"], "pong");
    drop(flooders);
}

#[test]
fn a_websocket_message_dribbled_in_is_closed_at_its_timeout() {
    let server = Server::start_with(&[("MESSAGE_TIMEOUT_SECS", "2")]);
    let mut s = raw_ws(&server);
    // A frame header announcing 60,000 bytes, then its bytes 0.4 s apart (6.7 hours for all):
    // 25 of them, 10 s, are five times the timeout.
    let frame = client_frame(true, 1, &[b'a'; 60_000]);
    s.write_all(&frame[..8]).unwrap();
    let (closed, got) = dribble(&mut s, &frame[8..33], std::time::Duration::from_millis(400));
    assert!(closed.is_some(), "the message was taken at a crawl");
    // The close frame says why: policy violation.
    let close = got
        .windows(2)
        .position(|w| w[0] == 0x88)
        .expect("a close frame");
    assert_eq!(&got[close + 2..close + 4], &1008u16.to_be_bytes());
    assert_eq!(server.get("/stats")["messages"]["message_timeouts"], 1);
}

#[test]
fn retained_history_holds_its_byte_bound_in_the_servers_memory() {
    let server = Server::start();
    let before = server.rss_kib();
    // Ten topics, each sent 40 events of 60 KB: 24 MB, of which each topic keeps 1 MiB.
    let mut p = server.ws();
    let pad = "h".repeat(60_000);
    for t in 0..10 {
        let topic = format!("full-{t}");
        server.create_topic(&topic);
        for i in 0..40 {
            p.publish(&topic, json!({"i": i, "pad": pad}));
            assert_eq!(p.recv()["type"], "ack");
        }
    }
    let stats = server.get("/stats");
    for t in 0..10 {
        let kept = &stats["topics"][format!("full-{t}")];
        assert!(kept["retained_bytes"].as_u64() <= Some(1 << 20), "{kept}");
    }
    let grown = server.rss_kib().saturating_sub(before);
    // 10 MiB retained, plus the buffers of one connection and the allocator's slack.
    assert!(grown < 16 * 1024, "the server grew by {grown} KiB");
}

#[test]
fn connections_closed_by_the_hundred_write_a_bounded_number_of_lines() {
    let server = Server::start();
    // A hundred clients, each closed at once for an unmasked frame.
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let mut s = raw_ws(&server);
            s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
            s
        })
        .collect();
    wait_until("a hundred 1002 closes", || {
        server.get("/stats")["connections"]["closes_sent"]["1002"] == 100
    });
    drop(clients);
    // Every line was written before its close; the pipe may still be carrying some.
    let mut lines = vec![server.wait_log("websocket_protocol_error")];
    while let Ok(line) = server
        .log
        .recv_timeout(std::time::Duration::from_millis(500))
    {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "websocket_protocol_error" {
            lines.push(v);
        }
    }
    // Twenty a second, so one or two windows' worth; what was left out is counted on them.
    assert!(
        !lines.is_empty() && lines.len() <= 40,
        "{} lines",
        lines.len()
    );
    let said: u64 = lines
        .iter()
        .map(|v| v["suppressed"].as_u64().unwrap())
        .sum();
    assert!(said + lines.len() as u64 <= 100);
}

#[test]
fn the_memory_of_messages_still_arriving_is_counted() {
    let server = Server::start();
    let input = || {
        server.get("/stats")["buffered"]["input_bytes"]
            .as_u64()
            .unwrap()
    };
    let idle = input();
    // 50,000 bytes of a 60,000-byte message, and then nothing.
    let mut s = raw_ws(&server);
    let frame = client_frame(true, 1, &[b' '; 60_000]);
    s.write_all(&frame[..50_008]).unwrap();
    wait_until("the partial message counted", || input() >= idle + 50_000);
    // Gone with its connection.
    drop(s);
    wait_until("the partial message released", || input() < idle + 50_000);
}
