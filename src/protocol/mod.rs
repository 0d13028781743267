//! The JSON messages of the WebSocket protocol (PROTOCOL.md): client messages parsed and
//! validated into values here, server messages encoded into text frames in `server`.
//!
//! `payload` and `request_id` stay as raw JSON text from parse to delivery: what a subscriber
//! receives is byte for byte what the publisher sent.

use std::borrow::Cow;
use std::fmt;

use serde_json::value::RawValue;

pub use crate::ids::Replay;
use crate::ids::{InvalidTopicName, TopicName};

mod members;
mod server;
pub use server::{
    error_frame, event_frame, event_frame_into, event_parts, frame_in_place, info_frame,
    pong_frame, reset_frame, text_frame, Ack, MAX_SERVER_HEADER,
};

#[derive(Debug)]
pub enum ClientMessage<'a> {
    Subscribe {
        topic: TopicName<'a>,
        client_id: Cow<'a, str>,
        replay: Replay,
        /// The topic's epoch when `since_seq` was read from it.
        epoch: Option<Cow<'a, str>>,
    },
    Unsubscribe {
        topic: TopicName<'a>,
        client_id: Cow<'a, str>,
    },
    Publish {
        topic: TopicName<'a>,
        /// As the client wrote it (echoed in the event), and the UUID it names (the key a
        /// retried publish is recognised by, whatever its spelling).
        id: Cow<'a, str>,
        uuid: u128,
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

/// Why a client message was refused, each with its own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    NotJson(String),
    DuplicateField(String),
    MissingField(&'static str),
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    UnknownType(String),
    InvalidUuid,
    InvalidTopicName(InvalidTopicName),
    ReplayConflict,
    Binary,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::NotJson(e) => write!(f, "message is not a valid JSON object: {e}"),
            MessageError::DuplicateField(field) => write!(f, "{field} is given twice"),
            MessageError::MissingField(field) => write!(f, "{field} is required"),
            MessageError::WrongType { field, expected } => write!(f, "{field} must be {expected}"),
            MessageError::UnknownType(t) => write!(
                f,
                "unknown message type {t:?}: expected subscribe, unsubscribe, publish or ping"
            ),
            MessageError::InvalidUuid => f.write_str("message.id must be a valid UUID"),
            MessageError::InvalidTopicName(e) => e.fmt(f),
            MessageError::ReplayConflict => {
                f.write_str("last_n and since_seq cannot be used together")
            }
            MessageError::Binary => {
                f.write_str("binary messages are not supported: send JSON as text")
            }
        }
    }
}

/// The members a client message may have, in the order of the indexes below.
const FIELDS: &[&str; 8] = &[
    "type",
    "topic",
    "client_id",
    "last_n",
    "since_seq",
    "message",
    "request_id",
    "epoch",
];
const TYPE: usize = 0;
const TOPIC: usize = 1;
const CLIENT_ID: usize = 2;
const LAST_N: usize = 3;
const SINCE_SEQ: usize = 4;
const MESSAGE: usize = 5;
const REQUEST_ID: usize = 6;
const EPOCH: usize = 7;

/// At most this much of a client's own text is quoted back in an error.
const QUOTE_CHARS: usize = 64;

/// `s` cut to `QUOTE_CHARS` characters, marked when cut.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// The `request_id` of a message that failed validation, when it can still be read, so the
/// error can be matched to its request.
pub fn salvage_request_id(text: &[u8]) -> Option<&RawValue> {
    members::read(text, FIELDS).ok()?.values[REQUEST_ID]
}

/// Parses and validates one client text message.
pub fn parse(text: &[u8]) -> Result<Incoming<'_>, MessageError> {
    let m =
        members::read(text, FIELDS).map_err(|e| MessageError::NotJson(quote(&e.to_string())))?;
    if let Some(name) = m.duplicate {
        return Err(MessageError::DuplicateField(quote(&name)));
    }
    let f = m.values;
    let kind = required_str(f[TYPE], "type")?;
    let message = match kind.as_ref() {
        "subscribe" => {
            let replay = match (
                optional_u64(f[LAST_N], "last_n")?,
                optional_u64(f[SINCE_SEQ], "since_seq")?,
            ) {
                (Some(_), Some(_)) => return Err(MessageError::ReplayConflict),
                (Some(n), None) => Replay::LastN(n),
                (None, Some(s)) => Replay::SinceSeq(s),
                (None, None) => Replay::None,
            };
            ClientMessage::Subscribe {
                topic: topic(f[TOPIC])?,
                client_id: required_str(f[CLIENT_ID], "client_id")?,
                replay,
                epoch: optional_str(f[EPOCH], "epoch")?,
            }
        }
        "unsubscribe" => ClientMessage::Unsubscribe {
            topic: topic(f[TOPIC])?,
            client_id: required_str(f[CLIENT_ID], "client_id")?,
        },
        "publish" => {
            let topic = topic(f[TOPIC])?;
            let raw = f[MESSAGE].ok_or(MessageError::MissingField("message"))?;
            let m = members::read(raw.get().as_bytes(), &["id", "payload"]).map_err(|_| {
                MessageError::WrongType {
                    field: "message",
                    expected: "an object with id and payload",
                }
            })?;
            if let Some(name) = m.duplicate {
                return Err(MessageError::DuplicateField(format!(
                    "message.{}",
                    quote(&name)
                )));
            }
            let id = required_str(m.values[0], "message.id")?;
            let uuid = uuid::Uuid::try_parse(&id)
                .map_err(|_| MessageError::InvalidUuid)?
                .as_u128();
            let payload = m.values[1].ok_or(MessageError::MissingField("message.payload"))?;
            ClientMessage::Publish {
                topic,
                id,
                uuid,
                payload,
            }
        }
        "ping" => ClientMessage::Ping,
        other => return Err(MessageError::UnknownType(quote(other))),
    };
    Ok(Incoming {
        request_id: f[REQUEST_ID],
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

fn optional_str<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, MessageError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => required_str(Some(r), field).map(Some),
    }
}

fn topic<'a>(raw: Option<&'a RawValue>) -> Result<TopicName<'a>, MessageError> {
    TopicName::new(required_str(raw, "topic")?).map_err(MessageError::InvalidTopicName)
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
            matches!(m.message, ClientMessage::Subscribe { ref topic, replay: Replay::LastN(5), .. } if topic.as_str() == "orders")
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
            MessageError::InvalidTopicName(InvalidTopicName)
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
            MessageError::InvalidUuid.to_string(),
            "message.id must be a valid UUID"
        );
    }

    #[test]
    fn a_field_given_twice_known_or_not_makes_a_message_invalid() {
        for (text, field) in [
            (r#"{"type":"ping","type":"ping"}"#, "type"),
            (r#"{"type":"ping","x":1,"x":2}"#, "x"),
            (
                r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","id":"550e8400-e29b-41d4-a716-446655440000","payload":1}}"#,
                "message.id",
            ),
        ] {
            assert_eq!(
                err(text),
                MessageError::DuplicateField(field.into()),
                "{text}"
            );
        }
        assert_eq!(
            MessageError::DuplicateField("x".into()).to_string(),
            "x is given twice"
        );
    }

    #[test]
    fn a_null_request_id_is_still_a_request_id() {
        let m = parse(br#"{"type":"ping","request_id":null}"#).unwrap();
        assert_eq!(m.request_id.map(|r| r.get()), Some("null"));
        assert_eq!(
            salvage_request_id(br#"{"type":5,"request_id":null}"#).map(|r| r.get()),
            Some("null")
        );
    }

    #[test]
    fn errors_quote_a_short_prefix_of_what_was_sent() {
        let long = "x".repeat(40_000);
        let e = err(&format!(r#"{{"type":"{long}"}}"#));
        assert!(e.to_string().len() < 200, "{}", e.to_string().len());
        assert!(e.to_string().contains('…'));
        let e = err("[1,2,3,4,5,6,7]");
        assert!(
            matches!(&e, MessageError::NotJson(m) if m.contains("expected a JSON object")),
            "{e}"
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
            matches!(m.message, ClientMessage::Unsubscribe { ref topic, .. } if topic.as_str() == "orders")
        );
    }
}
