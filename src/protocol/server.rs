//! Server messages encoded into complete text frames, header included, serialised once.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::ws::frame::{encode_header, OpCode, MAX_HEADER_LEN};

/// Serialises `value` as JSON straight into a text frame, header included.
pub fn text_frame(value: &impl Serialize) -> Vec<u8> {
    text_frame_sized(value, 160)
}

/// `text_frame` with room for `capacity` bytes from the start, so it is built in one allocation.
fn text_frame_sized(value: &impl Serialize, capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity);
    buf.resize(MAX_SERVER_HEADER, 0);
    // Serialising our own message structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, value);
    let start = frame_in_place(&mut buf);
    buf.drain(..start);
    buf
}

/// The longest header the server writes (unmasked, 64-bit length).
pub const MAX_SERVER_HEADER: usize = 10;

/// `buf` holds `MAX_SERVER_HEADER` placeholder bytes and then a text payload: writes the header
/// just before the payload and returns where the frame starts.
pub fn frame_in_place(buf: &mut [u8]) -> usize {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(
        true,
        OpCode::Text,
        buf.len() - MAX_SERVER_HEADER,
        &mut header,
    );
    let start = MAX_SERVER_HEADER - n;
    buf[start..MAX_SERVER_HEADER].copy_from_slice(&header[..n]);
    start
}

#[derive(Serialize)]
pub struct Ack<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a RawValue>,
    pub topic: &'a str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_subscribed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    pub ts: &'a str,
}

impl<'a> Ack<'a> {
    pub fn new(request_id: Option<&'a RawValue>, topic: &'a str, ts: &'a str) -> Ack<'a> {
        Ack {
            kind: "ack",
            request_id,
            topic,
            status: "ok",
            seq: None,
            replayed: None,
            recovered: None,
            first_seq: None,
            already_subscribed: None,
            epoch: None,
            duplicate: None,
            ts,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    error: ErrorBody<'a>,
    ts: &'a str,
}

/// An `error` message (`error::Failure::frame` says which code and message).
pub fn error_frame(
    request_id: Option<&RawValue>,
    topic: Option<&str>,
    code: &str,
    message: &str,
    ts: &str,
) -> Vec<u8> {
    text_frame(&ErrorMessage {
        kind: "error",
        request_id,
        topic,
        error: ErrorBody { code, message },
        ts,
    })
}

#[derive(Serialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a RawValue>,
    ts: &'a str,
}

pub fn pong_frame(request_id: Option<&RawValue>, ts: &str) -> Vec<u8> {
    text_frame(&Pong {
        kind: "pong",
        request_id,
        ts,
    })
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    ts: &'a str,
}

pub fn info_frame(msg: &str, topic: Option<&str>, ts: &str) -> Vec<u8> {
    text_frame(&Info {
        kind: "info",
        msg,
        topic,
        ts,
    })
}

#[derive(Serialize)]
struct ResetNotice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    msg: &'static str,
    topic: &'a str,
    epoch: &'a str,
    seq: u64,
    ts: &'a str,
}

/// Cluster mode: the topic's stream broke (a new epoch, or events lost for good); the next
/// event follows `seq` of `epoch`, and what came between is not coming.
pub fn reset_frame(topic: &str, epoch: &str, seq: u64, ts: &str) -> Vec<u8> {
    text_frame(&ResetNotice {
        kind: "info",
        msg: "reset",
        topic,
        epoch,
        seq,
        ts,
    })
}

#[derive(Serialize)]
struct EventMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    topic: &'a str,
    message: EventBody<'a>,
    seq: u64,
    ts: &'a str,
}

#[derive(Serialize)]
struct EventBody<'a> {
    id: &'a str,
    payload: &'a RawValue,
}

/// An `event` as a complete text frame, built once per publish and shared by every subscriber.
pub fn event_frame(topic: &str, id: &str, payload: &RawValue, seq: u64, ts: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let start = event_frame_into(&mut buf, topic, id, payload, seq, ts);
    buf.drain(..start);
    buf
}

/// The event frame written into `buf` (cleared first, so a reused buffer allocates nothing);
/// returns where the frame starts in it.
pub fn event_frame_into(
    buf: &mut Vec<u8>,
    topic: &str,
    id: &str,
    payload: &RawValue,
    seq: u64,
    ts: &str,
) -> usize {
    buf.clear();
    // The fixed keys, the seq and the timestamp take under 128 bytes; strings may grow by escaping.
    buf.reserve(MAX_SERVER_HEADER + 128 + topic.len() + id.len() + payload.get().len() + ts.len());
    buf.resize(MAX_SERVER_HEADER, 0);
    let event = EventMessage {
        kind: "event",
        topic,
        message: EventBody { id, payload },
        seq,
        ts,
    };
    // Serialising our own message structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, &event);
    frame_in_place(buf)
}

/// An event's JSON text in the two parts around its seq, for a seq assigned elsewhere (by
/// Redis, in cluster mode): `head`, the seq's digits, then `tail` is exactly the text the
/// event frame carries.
pub fn event_parts(topic: &str, id: &str, payload: &RawValue, ts: &str) -> (Vec<u8>, Vec<u8>) {
    let event = EventMessage {
        kind: "event",
        topic,
        message: EventBody { id, payload },
        seq: 0,
        ts,
    };
    // Serialising our own message structs into a Vec cannot fail.
    let mut head = serde_json::to_vec(&event).unwrap_or_default();
    let mut tail = b",\"ts\":".to_vec();
    let _ = serde_json::to_writer(&mut tail, ts);
    tail.push(b'}');
    // The text ends with the seq, 0, then the tail: the head is what precedes them.
    head.truncate(head.len() - tail.len() - 1);
    (head, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_in_parts_is_the_event_with_its_seq_between_them() {
        // A payload holding the very text the split looks for.
        let payload: &RawValue = serde_json::from_str(r#"{"seq":0,"ts":"x"}"#).unwrap();
        let ts = "2025-01-01T00:00:00.000Z";
        let (head, tail) = event_parts(
            "t\u{e9}",
            "550e8400-e29b-41d4-a716-446655440000",
            payload,
            ts,
        );
        for seq in [1u64, 42, u64::MAX] {
            let frame = event_frame(
                "t\u{e9}",
                "550e8400-e29b-41d4-a716-446655440000",
                payload,
                seq,
                ts,
            );
            let h = crate::ws::frame::decode_header(&frame, crate::ws::frame::Role::Client)
                .unwrap()
                .unwrap();
            let joined = [head.as_slice(), seq.to_string().as_bytes(), &tail].concat();
            assert_eq!(&frame[h.header_len..], joined.as_slice());
        }
    }

    #[test]
    fn event_frames_carry_the_payload_verbatim() {
        let payload: &RawValue = serde_json::from_str(r#"{ "b" : 1.50 }"#).unwrap();
        let frame = event_frame(
            "orders",
            "550e8400-e29b-41d4-a716-446655440000",
            payload,
            3,
            "2025-01-01T00:00:00.000Z",
        );
        let h = crate::ws::frame::decode_header(&frame, crate::ws::frame::Role::Client)
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.opcode), (true, OpCode::Text));
        let body = std::str::from_utf8(&frame[h.header_len..]).unwrap();
        assert_eq!(h.payload_len as usize, body.len());
        assert!(body.contains(r#""payload":{ "b" : 1.50 }"#), "{body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["seq"], 3);
        assert_eq!(v["type"], "event");
    }
    #[test]
    fn long_frames_get_extended_headers() {
        let big = "x".repeat(70_000);
        let frame = info_frame(&big, None, "t");
        assert_eq!(&frame[..2], &[0x81, 127]);
        let len = u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 10);
    }
}
