//! The REST API and the HTTP/1.1 layer, over raw sockets against the real binary.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn rest_api_as_in_the_reference_document() {
    let server = Server::start();
    let (status, v) = server.request("POST", "/topics", Some(r#"{"name": "orders"}"#));
    assert_eq!(
        (status, v),
        (201, json!({"status": "created", "topic": "orders"}))
    );
    server.create_topic("alpha");
    let (status, v) = server.request("POST", "/topics", Some(r#"{"name":"orders"}"#));
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("TOPIC_EXISTS"))
    );
    assert_eq!(
        server.get("/topics"),
        json!({"topics": [{"name": "alpha", "subscribers": 0}, {"name": "orders", "subscribers": 0}]})
    );
    let health = server.get("/health");
    assert_eq!(
        (health["topics"].as_u64(), health["subscribers"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(health["uptime_sec"].is_u64());
    let stats = server.get("/stats");
    assert_eq!(stats["topics"]["orders"]["messages"], 0);
    assert_eq!(stats["topics"]["orders"]["subscribers"], 0);
    let (status, v) = server.request("DELETE", "/topics/orders", None);
    assert_eq!(
        (status, v),
        (200, json!({"status": "deleted", "topic": "orders"}))
    );
    let (status, v) = server.request("DELETE", "/topics/orders", None);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("TOPIC_NOT_FOUND"))
    );
}

#[test]
fn bad_topic_bodies_are_400_with_a_json_error() {
    let server = Server::start();
    for body in [
        r#"{"name": ""}"#,
        r#"{"name": "a b"}"#,
        r#"{"name": 5}"#,
        r#"{}"#,
        "not json",
        r#"{"name":"x""#,
    ] {
        let (status, v) = server.request("POST", "/topics", Some(body));
        assert_eq!(status, 400, "{body}");
        assert_eq!(v["error"]["code"], "BAD_REQUEST", "{body}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Percent-encoded names are decoded before lookup.
    server.create_topic("a:b");
    let (status, _) = server.request("DELETE", "/topics/a%3Ab", None);
    assert_eq!(status, 200);
}

#[test]
fn topic_limit_is_a_403_limit_exceeded() {
    let server = Server::start_with(&[("MAX_TOPICS", "2")]);
    server.create_topic("a");
    server.create_topic("b");
    let (status, v) = server.request("POST", "/topics", Some(r#"{"name":"c"}"#));
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("LIMIT_EXCEEDED"))
    );
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let server = Server::start();
    let mut s = server.connect();
    s.write_all(
        b"GET /nowhere HTTP/1.1\r\n\r\nPUT /topics HTTP/1.1\r\n\r\nPOST /health HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let r = read_response(&mut s);
    assert_eq!(
        (r.status, r.header("allow").as_deref()),
        (405, Some("GET, HEAD, POST"))
    );
    let r = read_response(&mut s);
    assert_eq!(
        (r.status, r.header("allow").as_deref()),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
}

#[test]
fn head_is_answered_like_get_without_a_body() {
    let server = Server::start();
    server.create_topic("h1");
    let mut s = server.connect();
    // Pipelined: if a HEAD answer carried a body, the next status line would not follow the
    // blank line that ends its headers.
    s.write_all(
        b"HEAD /topics HTTP/1.1\r\n\r\nHEAD /ws HTTP/1.1\r\n\r\nHEAD /nowhere HTTP/1.1\r\n\r\nGET /topics HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let text = String::from_utf8(read_to_close(&mut s)).unwrap();
    let parts: Vec<&str> = text.split("\r\n\r\n").collect();
    assert_eq!(parts.len(), 5, "{text}");
    assert!(parts[0].starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(parts[1].starts_with("HTTP/1.1 405 ") && parts[1].contains("Allow: GET\r\n"));
    assert!(parts[2].starts_with("HTTP/1.1 404 "), "{text}");
    assert!(parts[3].starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let length = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.parse::<usize>().unwrap())
    };
    // The HEAD answer announces exactly the length of the GET body.
    assert_eq!(length(parts[0]), Some(parts[4].len()), "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(parts[4]).unwrap()["topics"][0]["name"],
        "h1"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start();
    let mut s = server.connect();
    let body = r#"{"name":"p1"}"#;
    let batch = format!(
        "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET /topics HTTP/1.1\r\n\r\nDELETE /topics/p1 HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
        body.len()
    );
    s.write_all(batch.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).status, 201);
    assert_eq!(read_response(&mut s).json()["topics"][0]["name"], "p1");
    assert_eq!(read_response(&mut s).status, 200);
    assert_eq!(read_response(&mut s).json()["topics"], 0);
}

#[test]
fn thousands_of_pipelined_requests_read_promptly_are_all_answered() {
    // 2,400 console pages (32 MB) asked for in one write: far more answers than may wait for
    // a client at once, so the server pauses and resumes many times, and must never stall.
    let server = Server::start();
    let mut s = server.connect();
    let total = 2400;
    let batch = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(total);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(batch.as_bytes()).unwrap());
    for i in 0..total {
        let r = read_response(&mut s);
        assert_eq!(r.status, 200, "answer {i}");
        assert!(r.body.starts_with(b"<!doctype html>"), "answer {i}");
    }
    writer.join().unwrap();
    assert_eq!(server.get("/health")["topics"], 0);
}

#[test]
fn stats_name_each_figure_once() {
    let server = Server::start();
    let mut s = server.connect();
    s.write_all(b"GET /stats HTTP/1.1\r\n\r\n").unwrap();
    let body = String::from_utf8(read_response(&mut s).body).unwrap();
    assert_eq!(
        body.matches("\"slow_consumer_disconnects\"").count(),
        1,
        "{body}"
    );
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    for key in ["published", "delivered", "replayed", "heartbeat_timeouts"] {
        assert!(stats["messages"][key].is_u64(), "{key}: {body}");
    }
}

#[test]
fn a_request_dribbled_one_byte_at_a_time() {
    let server = Server::start();
    let mut s = server.connect();
    let body = r#"{"name":"slowly"}"#;
    let req = format!(
        "POST /topics HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for b in req.as_bytes() {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read_response(&mut s).status, 201);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start();
    let mut s = server.connect();
    for i in 0..200 {
        write!(s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 200, "request {i}");
        assert!(r.header("connection").is_none());
    }
    write!(s, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(read_to_close(&mut s).is_empty());
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let server = Server::start();
    let mut s = server.connect();
    s.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s);
    assert!(r.head.starts_with("HTTP/1.0 200"));
    assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 200);
    assert!(read_to_close(&mut s).is_empty());
}

#[test]
fn chunked_bodies_and_expect_continue() {
    let server = Server::start();
    let mut s = server.connect();
    s.write_all(b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"nam\r\n9\r\ne\":\"chu\"}\r\n0\r\n\r\n").unwrap();
    let r = read_response(&mut s);
    assert_eq!((r.status, r.json()["topic"].as_str()), (201, Some("chu")));
    let body = r#"{"name":"cont"}"#;
    write!(
        s,
        "POST /topics HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 100);
    s.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).status, 201);
}

#[test]
fn limits_and_malformed_requests_get_their_status_and_others_are_still_served() {
    let server = Server::start_with(&[("MAX_BODY_BYTES", "1024")]);
    let big_header = format!(
        "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let big_body = format!(
        "POST /topics HTTP/1.1\r\nContent-Length: 5000\r\n\r\n{}",
        "a".repeat(5000)
    );
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400, "BAD_REQUEST"),
        (
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n".to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (b"GET /health HTTP/3.0\r\n\r\n".to_vec(), 400, "BAD_REQUEST"),
        (big_header.into_bytes(), 431, "HEADERS_TOO_LARGE"),
        (big_body.into_bytes(), 413, "PAYLOAD_TOO_LARGE"),
        (
            b"POST /topics HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
            "BAD_REQUEST",
        ),
    ];
    for (raw, status, code) in cases {
        let mut s = server.connect();
        s.write_all(&raw).unwrap();
        let r = read_response(&mut s);
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (status, Some(code))
        );
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        read_to_close(&mut s);
        assert_eq!(server.get("/health")["topics"], 0);
    }
}

#[test]
fn slowloris_connections_are_closed_after_the_header_timeout() {
    let server = Server::start_with(&[("HEADER_TIMEOUT_SECS", "1")]);
    let mut slow = server.connect();
    slow.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").unwrap();
    let started = Instant::now();
    // Others are served meanwhile.
    assert_eq!(server.get("/health")["topics"], 0);
    let mut sent_more = false;
    while started.elapsed() < Duration::from_millis(600) {
        sent_more |= slow.write_all(b"a").is_ok();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sent_more);
    assert!(read_to_close(&mut slow).is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    server.wait_log("header_timeout");
}

#[test]
fn connections_past_the_limit_get_503() {
    let server = Server::start_with(&[("MAX_CONNECTIONS", "3")]);
    // Accepted in order: the three come before the fourth.
    let held: Vec<_> = (0..3).map(|_| server.connect()).collect();
    let mut extra = server.connect();
    extra.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    let r = read_response(&mut extra);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (503, Some("SERVICE_UNAVAILABLE"))
    );
    drop(held);
    wait_until("a free connection slot", || {
        server.request("GET", "/health", None).0 == 200
    });
}

#[test]
fn sigterm_exits_zero() {
    let mut server = Server::start();
    server.create_topic("x");
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn invalid_configuration_exits_2_naming_the_variable() {
    for (var, value, range) in [
        ("PORT", "abc", "0 to 65535"),
        ("MAX_TOPICS", "-1", "1 to"),
        ("SUBSCRIBER_QUEUE_SIZE", "0", "1 to"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pubsub"))
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(var) && text.contains(range), "{text}");
    }
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let server = Server::start_with(&[("IDLE_TIMEOUT_SECS", "1")]);
    let mut s = server.connect();
    s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 200);
    let started = Instant::now();
    assert!(read_to_close(&mut s).is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
