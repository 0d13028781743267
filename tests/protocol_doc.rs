//! Every JSON example in PROTOCOL.md is parsed: client messages by the server's own parser,
//! server messages checked for the fields the document promises. The document cannot drift.

use pubsub::error::ErrorCode;
use pubsub::protocol;
use serde_json::Value;

const DOC: &str = include_str!("../PROTOCOL.md");

fn json_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        match (&mut current, line.trim()) {
            (None, "```json") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unterminated json block");
    blocks
}

fn is_rfc3339_utc(ts: &str) -> bool {
    ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T"
}

#[test]
fn every_example_is_valid_for_its_message_type() {
    let blocks = json_blocks();
    assert!(blocks.len() >= 12, "found only {} examples", blocks.len());
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for block in &blocks {
        let v: Value = serde_json::from_str(block).unwrap_or_else(|e| panic!("{e}: {block}"));
        let kind = v["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no type: {block}"));
        seen.insert(kind.to_string());
        match kind {
            "subscribe" | "unsubscribe" | "publish" | "ping" => {
                if let Err(e) = protocol::parse(block.as_bytes()) {
                    panic!("the server refuses the example ({e}): {block}");
                }
            }
            "ack" => {
                assert_eq!(v["status"], "ok", "{block}");
                assert!(v["topic"].is_string(), "{block}");
            }
            "event" => {
                assert!(v["topic"].is_string() && v["seq"].is_u64(), "{block}");
                assert!(
                    uuid::Uuid::try_parse(v["message"]["id"].as_str().unwrap()).is_ok(),
                    "{block}"
                );
                assert!(v["message"].get("payload").is_some(), "{block}");
            }
            "error" => {
                let code = v["error"]["code"].as_str().unwrap();
                assert!(codes.contains(&code), "unknown code {code}");
                assert!(v["error"]["message"].is_string(), "{block}");
            }
            "pong" => {}
            "info" => assert!(v["msg"].is_string(), "{block}"),
            other => panic!("unknown message type {other} in {block}"),
        }
        if matches!(kind, "ack" | "event" | "error" | "pong" | "info") {
            assert!(is_rfc3339_utc(v["ts"].as_str().unwrap()), "{block}");
        }
    }
    for kind in [
        "subscribe",
        "unsubscribe",
        "publish",
        "ping",
        "ack",
        "event",
        "error",
        "pong",
        "info",
    ] {
        assert!(seen.contains(kind), "PROTOCOL.md has no {kind} example");
    }
}

/// The codes in the rows of PROTOCOL.md's error tables (section 5).
fn documented_codes() -> Vec<String> {
    let section = DOC
        .split("## 5. Error codes")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("PROTOCOL.md has a section 5");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(code, _)| code.to_string())
        .collect()
}

#[test]
fn every_error_code_the_server_can_send_is_documented_and_no_other() {
    // `ALL` is generated with the enum, so it is every code the server has.
    let ours: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    let documented = documented_codes();
    for code in &ours {
        assert!(documented.contains(code), "{code} missing from section 5");
    }
    for code in &documented {
        assert!(
            ours.contains(code),
            "section 5 documents {code}, which the server never sends"
        );
    }
}

#[test]
fn the_server_produces_what_the_examples_show() {
    let payload: &serde_json::value::RawValue =
        serde_json::from_str(r#"{"order_id": "ORD-123", "amount": 99.5, "currency": "USD"}"#)
            .unwrap();
    let frame = protocol::event_frame(
        "orders",
        "550e8400-e29b-41d4-a716-446655440000",
        payload,
        43,
        "2025-08-25T10:01:00.000Z",
    );
    let ours: Value = serde_json::from_slice(&frame[4..]).unwrap();
    let doc = json_blocks()
        .into_iter()
        .map(|b| serde_json::from_str::<Value>(&b).unwrap())
        .find(|v| v["type"] == "event")
        .unwrap();
    assert_eq!(ours, doc);
}
