//! The WebSocket layer: the handshake, an independent client (tungstenite) on /echo, and raw
//! sockets for each protocol violation and its close code.

mod common;

use std::io::Write;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

/// The echo route with room for the big messages these tests send.
fn echo_server() -> Server {
    Server::start_with(&[("ENABLE_ECHO", "true"), ("MAX_MESSAGE_BYTES", "1048576")])
}

#[test]
fn echo_round_trip_ping_and_close_handshake_with_tungstenite() {
    let server = echo_server();
    let mut ws = Ws::connect(&server.url("/echo"));
    ws.socket.send(Message::text("hello κόσμε")).unwrap();
    assert_eq!(ws.socket.read().unwrap(), Message::text("hello κόσμε"));
    ws.socket.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(ws.socket.read().unwrap(), Message::binary(vec![1u8, 2, 3]));
    let big = "x".repeat(200_000);
    ws.socket.send(Message::text(big.clone())).unwrap();
    assert_eq!(ws.socket.read().unwrap(), Message::text(big));
    ws.socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    assert_eq!(
        ws.socket.read().unwrap(),
        Message::Pong(b"are you there".to_vec().into())
    );
    ws.socket.close(None).unwrap();
    loop {
        match ws.socket.read() {
            Ok(Message::Close(_)) => continue,
            Ok(other) => panic!("{other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn fragmented_messages_with_interleaved_pings() {
    let server = echo_server();
    let mut ws = Ws::connect(&server.url("/echo"));
    let frames = [
        Frame::message(b"frag".to_vec(), OpCode::Data(Data::Text), false),
        Frame::ping(b"p".to_vec()),
        Frame::message(b"mented".to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for f in frames {
        ws.socket.write(Message::Frame(f)).unwrap();
    }
    ws.socket.flush().unwrap();
    assert_eq!(
        ws.socket.read().unwrap(),
        Message::Pong(b"p".to_vec().into())
    );
    assert_eq!(ws.socket.read().unwrap(), Message::text("fragmented"));
}

#[test]
fn handshake_errors() {
    let server = Server::start();
    let cases = [
        (
            UPGRADE.replace("Version: 13", "Version: 8"),
            426,
            Some("13"),
        ),
        (UPGRADE.replace("Upgrade: websocket\r\n", ""), 400, None),
        (
            UPGRADE.replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
            None,
        ),
        (
            UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
            400,
            None,
        ),
        (UPGRADE.replace("GET /ws", "POST /ws"), 405, None),
    ];
    for (raw, status, version) in cases {
        let mut s = server.connect();
        s.write_all(raw.as_bytes()).unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, status, "{raw}");
        assert_eq!(r.header("sec-websocket-version").as_deref(), version);
        assert!(r.json()["error"]["code"].is_string());
    }
}

#[test]
fn the_accept_key_and_frames_sent_with_the_upgrade() {
    let server = Server::start();
    server.create_topic("t");
    let mut s = server.connect();
    // The first frame rides in the same write as the upgrade request.
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend(client_frame(
        true,
        1,
        br#"{"type":"ping","request_id":"first"}"#,
    ));
    s.write_all(&bytes).unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(r.header("sec-websocket-extensions").is_none());
    let mut head = [0u8; 2];
    std::io::Read::read_exact(&mut s, &mut head).unwrap();
    assert_eq!(head[0], 0x81);
    let mut body = vec![0u8; head[1] as usize];
    std::io::Read::read_exact(&mut s, &mut body).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["request_id"].as_str()),
        (Some("pong"), Some("first"))
    );
}

#[test]
fn permessage_deflate_offers_are_declined() {
    let server = Server::start();
    let mut s = server.connect();
    let raw = UPGRADE.replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    s.write_all(raw.as_bytes()).unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 101);
    assert!(r.header("sec-websocket-extensions").is_none());
}

#[test]
fn each_violation_gets_its_close_code_and_others_keep_being_served() {
    let server = Server::start_with(&[("MAX_MESSAGE_BYTES", "1000")]);
    let unmasked = {
        let mut f = vec![0x81, 0x02];
        f.extend_from_slice(b"hi");
        f
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", unmasked, 1002),
        (
            "reserved bits",
            {
                let mut f = client_frame(true, 1, b"x");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        ("reserved opcode", client_frame(true, 3, b""), 1002),
        ("fragmented control", client_frame(false, 9, b""), 1002),
        ("long control", client_frame(true, 9, &[0; 126]), 1002),
        ("orphan continuation", client_frame(true, 0, b"x"), 1002),
        (
            "invalid utf-8",
            client_frame(true, 1, b"\xce\xba\xff"),
            1007,
        ),
        ("too big", client_frame(true, 1, &[b'a'; 1001]), 1009),
        ("bad close code", client_frame(true, 8, &[0x03, 0xEC]), 1002),
        ("one-byte close", client_frame(true, 8, &[0x03]), 1002),
    ];
    let mut healthy = server.ws();
    for (name, bytes, code) in cases {
        let mut s = raw_ws(&server);
        s.write_all(&bytes).unwrap();
        assert_eq!(read_close_code(&mut s), Some(code), "{name}");
        assert_eq!(
            healthy.request(serde_json::json!({"type":"ping"}))["type"],
            "pong",
            "{name}"
        );
    }
}

#[test]
fn close_handshake_echoes_the_peer_code() {
    let server = Server::start();
    let mut s = raw_ws(&server);
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    s.write_all(&client_frame(true, 8, &payload)).unwrap();
    assert_eq!(read_close_code(&mut s), Some(4000));
}

#[test]
fn binary_messages_get_bad_request_and_the_connection_stays_open() {
    let server = Server::start();
    let mut ws = server.ws();
    ws.socket.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    let v = ws.recv();
    assert_eq!(
        (v["type"].as_str(), v["error"]["code"].as_str()),
        (Some("error"), Some("BAD_REQUEST"))
    );
    assert_eq!(
        ws.request(serde_json::json!({"type":"ping"}))["type"],
        "pong"
    );
}

#[test]
fn the_echo_route_is_off_by_default() {
    let server = Server::start();
    let mut s = server.connect();
    s.write_all(UPGRADE.replace("/ws", "/echo").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut s).status, 404);
}

#[test]
fn shutdown_sends_close_1001() {
    let mut server = Server::start();
    let mut ws = server.ws();
    assert_eq!(
        ws.request(serde_json::json!({"type":"ping"}))["type"],
        "pong"
    );
    server.signal("TERM");
    match ws.socket.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("{other:?}"),
    }
    let _ = ws.socket.close(None);
    let _ = ws.socket.flush();
    let status = server.terminate();
    assert!(status.success());
}

#[test]
fn the_echo_route_keeps_the_message_size_limit() {
    let server = Server::start_with(&[("ENABLE_ECHO", "true"), ("MAX_MESSAGE_BYTES", "1024")]);
    let mut s = server.connect();
    s.write_all(UPGRADE.replace("/ws", "/echo").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut s).status, 101);
    s.write_all(&client_frame(true, 1, &[b'a'; 1000])).unwrap();
    s.write_all(&client_frame(true, 1, &[b'b'; 2000])).unwrap();
    let data = read_to_close(&mut s);
    // The first comes back, the second is refused from its header with 1009.
    assert!(data.windows(1000).any(|w| w.iter().all(|&b| b == b'a')));
    assert!(!data.windows(100).any(|w| w.iter().all(|&b| b == b'b')));
    let close = data
        .windows(2)
        .position(|w| w == [0x88, 0x02] || w[0] == 0x88)
        .unwrap();
    assert_eq!(&data[close + 2..close + 4], &1009u16.to_be_bytes());
}
