//! Production guards over real sockets: API key, origins and CORS, rate and connection limits,
//! and /metrics moving with traffic.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::json;

const KEY: &str = "s3cret-key";

fn send(server: &Server, raw: &str) -> RawResponse {
    let mut s = server.connect();
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s)
}

#[test]
fn the_api_key_guards_rest_and_the_upgrade_and_never_reaches_the_logs() {
    let server = Server::start_with(&[("API_KEY", KEY), ("LOG_LEVEL", "debug")]);
    let (status, v) = server.request("GET", "/topics", None);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let r = send(
        &server,
        "POST /topics HTTP/1.1\r\nX-API-Key: wrong\r\nContent-Length: 12\r\n\r\n{\"name\":\"a\"}",
    );
    assert_eq!(
        (r.status, r.header("www-authenticate").as_deref()),
        (401, Some("Bearer"))
    );
    // /health stays open for load balancers.
    assert_eq!(server.request("GET", "/health", None).0, 200);
    let ok = send(&server, &format!("POST /topics HTTP/1.1\r\nX-API-Key: {KEY}\r\nContent-Length: 12\r\n\r\n{{\"name\":\"a\"}}"));
    assert_eq!(ok.status, 201);
    let ok = send(
        &server,
        &format!("GET /topics HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\n\r\n"),
    );
    assert_eq!(ok.status, 200);
    for path in ["/stats", "/metrics", "/topics/a"] {
        let method = if path == "/topics/a" { "DELETE" } else { "GET" };
        assert_eq!(
            send(&server, &format!("{method} {path} HTTP/1.1\r\n\r\n")).status,
            401,
            "{path}"
        );
    }
    // The query parameter is only for the upgrade (browsers cannot set headers there).
    assert_eq!(
        send(
            &server,
            &format!("GET /topics?api_key={KEY} HTTP/1.1\r\n\r\n")
        )
        .status,
        401
    );
    let r = send(&server, UPGRADE);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    assert_eq!(
        send(&server, &UPGRADE.replace("/ws", "/ws?api_key=nope")).status,
        401
    );
    assert_eq!(
        send(
            &server,
            &UPGRADE.replace("\r\n\r\n", &format!("\r\nX-API-Key: {KEY}\r\n\r\n"))
        )
        .status,
        101
    );
    let mut ws = Ws::connect(&server.url(&format!("/ws?api_key={KEY}")));
    assert_eq!(ws.subscribe("a")["topic"], "a");
    let mut s = server.connect();
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let metrics = String::from_utf8(read_response(&mut s).body).unwrap();
    assert!(
        metrics.contains("pubsub_upgrades_refused_total{reason=\"unauthorized\"} 2"),
        "{metrics}"
    );
    drop(ws);
    // A last request the log marks, so every line before it has been written.
    let last = format!("POST /topics HTTP/1.1\r\nX-API-Key: {KEY}\r\nContent-Length: 15\r\n\r\n{{\"name\":\"last\"}}");
    assert_eq!(send(&server, &last).status, 201);
    let log = server.log_until(|v| v["event"] == "topic_created" && v["topic"] == "last");
    assert!(log.len() > 5, "debug logging is on");
    assert!(
        log.iter().all(|l| !l.contains(KEY)),
        "the key leaked into the logs"
    );
}

#[test]
fn origins_are_checked_on_upgrade_and_answered_with_cors() {
    let server = Server::start_with(&[("ALLOWED_ORIGINS", "https://app.example")]);
    let with_origin = |o: &str| UPGRADE.replace("\r\n\r\n", &format!("\r\nOrigin: {o}\r\n\r\n"));
    let r = send(&server, &with_origin("https://evil.example"));
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    assert_eq!(
        send(&server, &with_origin("https://app.example")).status,
        101
    );
    assert_eq!(
        send(&server, UPGRADE).status,
        101,
        "no Origin: not a browser, not refused"
    );
    let r = send(&server, "OPTIONS /topics HTTP/1.1\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("X-API-Key"));
    assert_eq!(
        send(
            &server,
            "OPTIONS /topics HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n"
        )
        .status,
        403
    );
    let r = send(
        &server,
        "GET /topics HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n",
    );
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    let r = send(
        &server,
        "GET /topics HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n",
    );
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn publishes_over_the_rate_limit_get_rate_limited_and_the_connection_stays_open() {
    let server = Server::start_with(&[("PUBLISH_RATE_LIMIT", "5")]);
    server.create_topic("t");
    let mut ws = server.ws();
    let mut accepted = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let v = ws.request(publish_msg("t", json!(1)));
        match v["type"].as_str() {
            Some("ack") => accepted += 1,
            Some("error") => {
                assert_eq!(v["error"]["code"], "RATE_LIMITED");
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!((5..=7).contains(&accepted), "accepted {accepted}");
    assert_eq!(accepted + limited, 20);
    assert_eq!(ws.request(json!({"type":"ping"}))["type"], "pong");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        ws.request(publish_msg("t", json!(2)))["type"],
        "ack",
        "tokens come back"
    );
    assert_eq!(server.get("/stats")["messages"]["rate_limited"], limited);
}

fn connect_from(server: &Server, ip: [u8; 4]) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

#[test]
fn per_ip_limits_refuse_only_that_address() {
    let server = Server::start_with(&[("MAX_CONNECTIONS_PER_IP", "3")]);
    let held: Vec<_> = (0..3)
        .map(|_| connect_from(&server, [127, 0, 0, 2]))
        .collect();
    // Accepted in order: the three come before the fourth.
    let mut fourth = connect_from(&server, [127, 0, 0, 2]);
    fourth.write_all(UPGRADE.as_bytes()).unwrap();
    let r = read_response(&mut fourth);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (503, Some("SERVICE_UNAVAILABLE"))
    );
    let mut other = connect_from(&server, [127, 0, 0, 3]);
    other.write_all(UPGRADE.as_bytes()).unwrap();
    assert_eq!(read_response(&mut other).status, 101);
    drop(held);
    wait_until("that address to have room again", || {
        let mut again = connect_from(&server, [127, 0, 0, 2]);
        again.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        read_response(&mut again).status == 200
    });
}

#[test]
fn a_flood_over_max_connections_leaves_the_server_serving_the_others() {
    let server = Server::start_with(&[("MAX_CONNECTIONS", "50"), ("HEADER_TIMEOUT_SECS", "2")]);
    server.create_topic("t");
    let mut sub = server.ws();
    sub.subscribe("t");
    let mut publisher = server.ws();
    let flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    // The connected clients are served while the flood holds every free slot.
    for i in 0..20 {
        publisher.publish("t", json!(i));
        assert_eq!(publisher.recv()["type"], "ack");
        assert_eq!(sub.recv()["message"]["payload"], i);
    }
    drop(flood);
    // A slot for the next request comes once the flood's connections are gone.
    let mut stats = serde_json::Value::Null;
    wait_until("a free slot", || {
        let (status, v) = server.request("GET", "/stats", None);
        stats = v;
        status == 200
    });
    assert!(
        stats["connections"]["refused"].as_u64().unwrap() >= 200,
        "{stats}"
    );
    assert_eq!(stats["connections"]["websocket"], 2, "{stats}");
    // Once the flood is gone, new clients get in again.
    let mut late = server.ws();
    assert_eq!(late.request(json!({"type":"ping"}))["type"], "pong");
}

#[test]
fn metrics_move_as_traffic_flows() {
    let server = Server::start();
    let metric = |name: &str| -> f64 {
        let mut s = server.connect();
        s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(r.body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    assert_eq!(metric("pubsub_messages_published_total"), 0.0);
    server.create_topic("m");
    let mut ws = server.ws();
    ws.subscribe("m");
    for _ in 0..3 {
        ws.publish("m", json!(1));
        ws.recv();
        ws.recv();
    }
    assert_eq!(metric("pubsub_messages_published_total"), 3.0);
    assert_eq!(metric("pubsub_messages_delivered_total"), 3.0);
    assert_eq!(metric("pubsub_topics"), 1.0);
    assert_eq!(metric("pubsub_subscriptions"), 1.0);
    assert_eq!(metric("pubsub_connections{phase=\"websocket\"}"), 1.0);
    assert!(metric("pubsub_bytes_sent_total") > 0.0);
    assert!(metric("pubsub_loop_write_calls_total") > 0.0);
    ws.socket
        .close(Some(tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
    // The echo of the close arrived, so it was counted before it was sent.
    let _ = ws.socket.read();
    assert_eq!(metric("pubsub_closes_sent_total{code=\"1000\"}"), 1.0);
}

#[test]
fn rest_requests_from_origins_not_allowed_are_refused() {
    let server = Server::start_with(&[("ALLOWED_ORIGINS", "https://app.example")]);
    // What any web page may send without a preflight: a text/plain POST.
    let post = |origin: Option<&str>, name: &str| {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        send(
            &server,
            &format!("POST /topics HTTP/1.1\r\n{origin}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        )
    };
    let r = post(Some("https://evil.example"), "evil");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    assert_eq!(post(Some("https://app.example"), "mine").status, 201);
    assert_eq!(post(None, "cli").status, 201, "no Origin: not a browser");
    let topics = server.get("/topics");
    assert_eq!(topics["topics"].as_array().unwrap().len(), 2, "{topics}");
}

#[test]
fn an_invalid_api_key_is_refused_at_start_without_being_written_anywhere() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pubsub"))
        .env("API_KEY", "open sesame")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("API_KEY"), "{text}");
    assert!(!text.contains("sesame"), "the key was logged: {text}");
}
