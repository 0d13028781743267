//! The JSON messages of the WebSocket protocol (PROTOCOL.md): client messages parsed and
//! validated into values, server messages encoded into text frames.
//!
//! `payload` and `request_id` stay as raw JSON text from parse to delivery: what a subscriber
//! receives is byte for byte what the publisher sent.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::broker::is_valid_topic_name;
use crate::error::ErrorCode;
use crate::ws::frame::{encode_header, OpCode, MAX_HEADER_LEN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    None,
    LastN(u64),
    SinceSeq(u64),
}

#[derive(Debug)]
pub enum ClientMessage<'a> {
    Subscribe {
        topic: Cow<'a, str>,
        client_id: Cow<'a, str>,
        replay: Replay,
    },
    Unsubscribe {
        topic: Cow<'a, str>,
        client_id: Cow<'a, str>,
    },
    Publish {
        topic: Cow<'a, str>,
        id: Cow<'a, str>,
        payload: &'a RawValue,
    },
    Ping,
}

/// A client message and the `request_id` to echo in the answer.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub request_id: Option<&'a RawValue>,
    pub message: ClientMessage<'a>,
}

/// Why a client message was refused: each one is a `BAD_REQUEST` with its own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    NotJson(String),
    MissingField(&'static str),
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    UnknownType(String),
    InvalidUuid,
    InvalidTopicName,
    ReplayConflict,
    Binary,
}

impl MessageError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::NotJson(e) => write!(f, "message is not a valid JSON object: {e}"),
            MessageError::MissingField(field) => write!(f, "{field} is required"),
            MessageError::WrongType { field, expected } => write!(f, "{field} must be {expected}"),
            MessageError::UnknownType(t) => write!(
                f,
                "unknown message type {t:?}: expected subscribe, unsubscribe, publish or ping"
            ),
            MessageError::InvalidUuid => f.write_str("message.id must be a valid UUID"),
            MessageError::InvalidTopicName => f.write_str(
                "topic must be 1 to 128 characters of letters, digits, '.', '_', '-' or ':'",
            ),
            MessageError::ReplayConflict => {
                f.write_str("last_n and since_seq cannot be used together")
            }
            MessageError::Binary => {
                f.write_str("binary messages are not supported: send JSON as text")
            }
        }
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    topic: Option<&'a RawValue>,
    #[serde(borrow)]
    client_id: Option<&'a RawValue>,
    #[serde(borrow)]
    last_n: Option<&'a RawValue>,
    #[serde(borrow)]
    since_seq: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow)]
    request_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageFields<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// The `request_id` of a message that failed validation, when it can still be read, so the
/// error can be matched to its request.
pub fn salvage_request_id(text: &[u8]) -> Option<&RawValue> {
    serde_json::from_slice::<Fields<'_>>(text).ok()?.request_id
}

/// Parses and validates one client text message.
pub fn parse(text: &[u8]) -> Result<Incoming<'_>, MessageError> {
    let f: Fields<'_> =
        serde_json::from_slice(text).map_err(|e| MessageError::NotJson(e.to_string()))?;
    let kind = required_str(f.kind, "type")?;
    let message = match kind.as_ref() {
        "subscribe" => {
            let replay = match (
                optional_u64(f.last_n, "last_n")?,
                optional_u64(f.since_seq, "since_seq")?,
            ) {
                (Some(_), Some(_)) => return Err(MessageError::ReplayConflict),
                (Some(n), None) => Replay::LastN(n),
                (None, Some(s)) => Replay::SinceSeq(s),
                (None, None) => Replay::None,
            };
            ClientMessage::Subscribe {
                topic: topic(f.topic)?,
                client_id: required_str(f.client_id, "client_id")?,
                replay,
            }
        }
        "unsubscribe" => ClientMessage::Unsubscribe {
            topic: topic(f.topic)?,
            client_id: required_str(f.client_id, "client_id")?,
        },
        "publish" => {
            let topic = topic(f.topic)?;
            let raw = f.message.ok_or(MessageError::MissingField("message"))?;
            let m: MessageFields<'_> =
                serde_json::from_str(raw.get()).map_err(|_| MessageError::WrongType {
                    field: "message",
                    expected: "an object with id and payload",
                })?;
            let id = required_str(m.id, "message.id")?;
            if uuid::Uuid::try_parse(&id).is_err() {
                return Err(MessageError::InvalidUuid);
            }
            let payload = m
                .payload
                .ok_or(MessageError::MissingField("message.payload"))?;
            ClientMessage::Publish { topic, id, payload }
        }
        "ping" => ClientMessage::Ping,
        other => return Err(MessageError::UnknownType(other.to_string())),
    };
    Ok(Incoming {
        request_id: f.request_id,
        message,
    })
}

fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Some(Cow::Borrowed(s)),
        // Strings with escapes cannot be borrowed.
        Err(_) => serde_json::from_str::<String>(raw.get())
            .ok()
            .map(Cow::Owned),
    }
}

fn required_str<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Cow<'a, str>, MessageError> {
    let raw = raw.ok_or(MessageError::MissingField(field))?;
    string(raw).ok_or(MessageError::WrongType {
        field,
        expected: "a string",
    })
}

fn topic<'a>(raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, MessageError> {
    let name = required_str(raw, "topic")?;
    if !is_valid_topic_name(&name) {
        return Err(MessageError::InvalidTopicName);
    }
    Ok(name)
}

fn optional_u64(raw: Option<&RawValue>, field: &'static str) -> Result<Option<u64>, MessageError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => {
            serde_json::from_str::<u64>(r.get())
                .map(Some)
                .map_err(|_| MessageError::WrongType {
                    field,
                    expected: "a non-negative integer",
                })
        }
    }
}

/// Serialises `value` as JSON straight into a text frame, header included.
pub fn text_frame(value: &impl Serialize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(160);
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
            ts,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
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

pub fn error_frame(
    request_id: Option<&RawValue>,
    topic: Option<&str>,
    code: ErrorCode,
    message: &str,
    ts: &str,
) -> Vec<u8> {
    text_frame(&ErrorMessage {
        kind: "error",
        request_id,
        topic,
        error: ErrorBody {
            code: code.as_str(),
            message,
        },
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
    text_frame(&EventMessage {
        kind: "event",
        topic,
        message: EventBody { id, payload },
        seq,
        ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> MessageError {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_the_four_client_messages() {
        let m = parse(br#"{"type":"subscribe","topic":"orders","client_id":"s1","last_n":5,"request_id":"r1"}"#).unwrap();
        assert_eq!(m.request_id.map(|r| r.get()), Some(r#""r1""#));
        assert!(
            matches!(m.message, ClientMessage::Subscribe { ref topic, replay: Replay::LastN(5), .. } if topic == "orders")
        );
        let m = parse(br#"{"type":"subscribe","topic":"orders","client_id":"s1","since_seq":7}"#)
            .unwrap();
        assert!(matches!(
            m.message,
            ClientMessage::Subscribe {
                replay: Replay::SinceSeq(7),
                ..
            }
        ));
        let m = parse(br#"{"type":"unsubscribe","topic":"orders","client_id":"s1"}"#).unwrap();
        assert!(matches!(m.message, ClientMessage::Unsubscribe { .. }));
        let m = parse(br#"{"type":"publish","topic":"orders","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{"a":[1, 2]}}}"#).unwrap();
        match m.message {
            ClientMessage::Publish { payload, .. } => assert_eq!(payload.get(), r#"{"a":[1, 2]}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(br#"{"type":"ping","request_id":42}"#)
                .unwrap()
                .message,
            ClientMessage::Ping
        ));
    }

    #[test]
    fn each_mistake_has_a_specific_message() {
        assert!(matches!(err("nope"), MessageError::NotJson(_)));
        assert!(matches!(err("[1]"), MessageError::NotJson(_)));
        assert_eq!(err("{}"), MessageError::MissingField("type"));
        assert_eq!(
            err(r#"{"type":1}"#),
            MessageError::WrongType {
                field: "type",
                expected: "a string"
            }
        );
        assert_eq!(
            err(r#"{"type":"dance"}"#),
            MessageError::UnknownType("dance".into())
        );
        assert_eq!(
            err(r#"{"type":"subscribe","client_id":"a"}"#),
            MessageError::MissingField("topic")
        );
        assert_eq!(
            err(r#"{"type":"subscribe","topic":"a b","client_id":"a"}"#),
            MessageError::InvalidTopicName
        );
        assert_eq!(
            err(r#"{"type":"subscribe","topic":"a"}"#),
            MessageError::MissingField("client_id")
        );
        assert_eq!(
            err(r#"{"type":"subscribe","topic":"a","client_id":"c","last_n":-1}"#),
            MessageError::WrongType {
                field: "last_n",
                expected: "a non-negative integer"
            }
        );
        assert_eq!(
            err(r#"{"type":"subscribe","topic":"a","client_id":"c","last_n":1,"since_seq":2}"#),
            MessageError::ReplayConflict
        );
        assert_eq!(
            err(r#"{"type":"publish","topic":"a"}"#),
            MessageError::MissingField("message")
        );
        assert_eq!(
            err(r#"{"type":"publish","topic":"a","message":{"id":"x","payload":1}}"#),
            MessageError::InvalidUuid
        );
        assert_eq!(
            err(
                r#"{"type":"publish","topic":"a","message":{"id":"550e8400-e29b-41d4-a716-446655440000"}}"#
            ),
            MessageError::MissingField("message.payload")
        );
        assert_eq!(
            err(MessageError::InvalidUuid.to_string().as_str()).code(),
            ErrorCode::BadRequest
        );
        assert_eq!(
            MessageError::InvalidUuid.to_string(),
            "message.id must be a valid UUID"
        );
    }

    #[test]
    fn payload_numbers_beyond_f64_pass_through_as_written() {
        // Found by the client_message fuzzer: valid JSON grammar, out of serde_json's f64 range.
        let text = br#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":[1e400,123456789012345678901234567890]}}"#;
        match parse(text).unwrap().message {
            ClientMessage::Publish { payload, .. } => {
                assert_eq!(payload.get(), "[1e400,123456789012345678901234567890]")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let m = parse(br#"{"type":"unsubscribe","topic":"ord\u0065rs","client_id":"c"}"#).unwrap();
        assert!(
            matches!(m.message, ClientMessage::Unsubscribe { ref topic, .. } if topic == "orders")
        );
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
