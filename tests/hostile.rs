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
