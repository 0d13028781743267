//! Every error the server reports to a client, and the one place that says how each appears on
//! the wire: its HTTP status, its protocol error code and any header the status calls for, and,
//! for WebSocket violations, the close code. Each layer keeps its own error enum with its own
//! messages; only this module knows what they become.

use std::fmt;

use serde_json::value::RawValue;

use crate::broker::BrokerError;
use crate::guard::GuardError;
use crate::http::{RequestError, Response};
use crate::protocol::MessageError;
use crate::rest::{BodyError, RouteError};
use crate::ws::handshake::HandshakeError;
use crate::ws::{CloseCode, WsError};

macro_rules! error_codes {
    ($($variant:ident => $text:literal,)*) => {
        /// Every code that appears in an `error` object, over REST or WebSocket.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order (generated with the enum, so it is complete).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    BadRequest => "BAD_REQUEST",
    TopicNotFound => "TOPIC_NOT_FOUND",
    TopicExists => "TOPIC_EXISTS",
    NotSubscribed => "NOT_SUBSCRIBED",
    LimitExceeded => "LIMIT_EXCEEDED",
    SlowConsumer => "SLOW_CONSUMER",
    RateLimited => "RATE_LIMITED",
    Unauthorized => "UNAUTHORIZED",
    Forbidden => "FORBIDDEN",
    NotFound => "NOT_FOUND",
    MethodNotAllowed => "METHOD_NOT_ALLOWED",
    PayloadTooLarge => "PAYLOAD_TOO_LARGE",
    HeadersTooLarge => "HEADERS_TOO_LARGE",
    UpgradeRequired => "UPGRADE_REQUIRED",
    ServiceUnavailable => "SERVICE_UNAVAILABLE",
    Unavailable => "UNAVAILABLE",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a client is told about, from whichever layer found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Request(RequestError),
    Route(RouteError),
    Guard(GuardError),
    Handshake(HandshakeError),
    Body(BodyError),
    Broker(BrokerError),
    Message(MessageError),
    /// A publish beyond `PUBLISH_RATE_LIMIT`.
    RateLimited {
        per_second: u32,
    },
    /// A connection's queue of live events went past its bound.
    SlowConsumer {
        frames: usize,
        bytes: usize,
        max_frames: usize,
        max_bytes: usize,
    },
    /// A connection past `MAX_CONNECTIONS` or `MAX_CONNECTIONS_PER_IP`.
    AtCapacity,
    /// An upgrade that arrived after shutdown began.
    ShuttingDown,
    /// Cluster mode: Redis could not be asked, or did not answer in time. Whether a change was
    /// made is unknown; a publish retried with the same message id is never published twice.
    Unavailable,
}

/// How a failure appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    pub status: u16,
    pub code: ErrorCode,
    /// A header the status calls for (`Allow` on 405, `Sec-WebSocket-Version` on 426, ...).
    pub header: Option<(&'static str, &'static str)>,
}

const fn wire(status: u16, code: ErrorCode) -> Wire {
    Wire {
        status,
        code,
        header: None,
    }
}

impl Failure {
    /// The one mapping from every layer's errors to statuses, codes and headers.
    pub fn wire(&self) -> Wire {
        use ErrorCode::*;
        match self {
            Failure::Request(e) => match e {
                RequestError::HeadTooLarge => wire(431, HeadersTooLarge),
                RequestError::BodyTooLarge { .. } => wire(413, PayloadTooLarge),
                RequestError::UnsupportedTransferEncoding => wire(501, BadRequest),
                RequestError::Malformed(_)
                | RequestError::BadContentLength
                | RequestError::BadChunk(_) => wire(400, BadRequest),
            },
            Failure::Route(e) => match e {
                RouteError::NotFound => wire(404, NotFound),
                RouteError::MethodNotAllowed { allow } => Wire {
                    header: Some(("Allow", allow)),
                    ..wire(405, MethodNotAllowed)
                },
                RouteError::BadPath => wire(400, BadRequest),
            },
            Failure::Guard(e) => match e {
                GuardError::MissingKey | GuardError::WrongKey => Wire {
                    header: Some(("WWW-Authenticate", "Bearer")),
                    ..wire(401, Unauthorized)
                },
                GuardError::OriginNotAllowed => wire(403, Forbidden),
            },
            Failure::Handshake(e) => match e {
                HandshakeError::NotGet => Wire {
                    header: Some(("Allow", "GET")),
                    ..wire(405, MethodNotAllowed)
                },
                HandshakeError::UnsupportedVersion => Wire {
                    header: Some(("Sec-WebSocket-Version", "13")),
                    ..wire(426, UpgradeRequired)
                },
                HandshakeError::NotHttp11
                | HandshakeError::MissingUpgrade
                | HandshakeError::MissingConnectionUpgrade
                | HandshakeError::MissingKey
                | HandshakeError::RepeatedKey
                | HandshakeError::InvalidKey => wire(400, BadRequest),
            },
            Failure::Body(_) | Failure::Message(_) => wire(400, BadRequest),
            Failure::Broker(e) => match e {
                BrokerError::TopicExists(_) => wire(409, TopicExists),
                BrokerError::TopicNotFound(_) => wire(404, TopicNotFound),
                BrokerError::TopicLimit(_) | BrokerError::SubscriberLimit(_) => {
                    wire(403, LimitExceeded)
                }
                BrokerError::NotSubscribed(_) => wire(409, NotSubscribed),
            },
            Failure::RateLimited { .. } => wire(429, RateLimited),
            Failure::SlowConsumer { .. } => wire(503, SlowConsumer),
            Failure::AtCapacity | Failure::ShuttingDown => wire(503, ServiceUnavailable),
            Failure::Unavailable => wire(503, Unavailable),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.wire().code
    }

    /// The HTTP answer: `{"error":{"code":"...","message":"..."}}` with its status and header.
    pub fn response(&self) -> Response {
        let wire = self.wire();
        let mut r = Response::error(wire.status, wire.code.as_str(), &self.to_string());
        if let Some((name, value)) = wire.header {
            r.headers.push((name, value.into()));
        }
        r
    }

    /// The WebSocket answer: an `error` message, with the request id and topic it concerns.
    pub fn frame(&self, request_id: Option<&RawValue>, topic: Option<&str>, ts: &str) -> Vec<u8> {
        let code = self.code().as_str();
        crate::protocol::error_frame(request_id, topic, code, &self.to_string(), ts)
    }
}

/// The close code a WebSocket protocol violation fails the connection with (RFC 6455 §7.4.1).
pub fn close_code(e: &WsError) -> CloseCode {
    match e {
        WsError::InvalidUtf8 => CloseCode::InvalidPayload,
        WsError::MessageTooBig { .. } => CloseCode::TooBig,
        WsError::Frame(_)
        | WsError::UnexpectedContinuation
        | WsError::ExpectedContinuation
        | WsError::InvalidClosePayload
        | WsError::InvalidCloseCode(_) => CloseCode::ProtocolError,
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Request(e) => e.fmt(f),
            Failure::Route(e) => e.fmt(f),
            Failure::Guard(e) => e.fmt(f),
            Failure::Handshake(e) => e.fmt(f),
            Failure::Body(e) => e.fmt(f),
            Failure::Broker(e) => e.fmt(f),
            Failure::Message(e) => e.fmt(f),
            Failure::RateLimited { per_second } => {
                write!(f, "publish rate limit of {per_second} per second exceeded")
            }
            Failure::SlowConsumer {
                frames,
                bytes,
                max_frames,
                max_bytes,
            } => write!(
                f,
                "outbound queue exceeded ({frames} frames, {bytes} bytes; limits {max_frames} frames, {max_bytes} bytes)"
            ),
            Failure::AtCapacity => {
                f.write_str("the server is at its connection limit; try again later")
            }
            Failure::ShuttingDown => f.write_str("the server is shutting down"),
            Failure::Unavailable => f.write_str(
                "the cluster's Redis is not reachable from this instance; retrying is safe",
            ),
        }
    }
}

macro_rules! from_layer {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure::$variant(e)
            }
        })*
    };
}

from_layer! {
    RequestError => Request,
    RouteError => Route,
    GuardError => Guard,
    HandshakeError => Handshake,
    BodyError => Body,
    BrokerError => Broker,
    MessageError => Message,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::InvalidTopicName;

    #[test]
    fn codes_are_unique_and_upper_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{s}"
            );
        }
    }

    #[test]
    fn each_layer_maps_to_its_status_code_and_header() {
        let cases: Vec<(Failure, u16, &str, Option<&str>)> = vec![
            (
                RequestError::HeadTooLarge.into(),
                431,
                "HEADERS_TOO_LARGE",
                None,
            ),
            (
                RequestError::BodyTooLarge { limit: 1 }.into(),
                413,
                "PAYLOAD_TOO_LARGE",
                None,
            ),
            (
                RequestError::UnsupportedTransferEncoding.into(),
                501,
                "BAD_REQUEST",
                None,
            ),
            (RouteError::NotFound.into(), 404, "NOT_FOUND", None),
            (
                RouteError::MethodNotAllowed { allow: "GET" }.into(),
                405,
                "METHOD_NOT_ALLOWED",
                Some("Allow"),
            ),
            (
                GuardError::WrongKey.into(),
                401,
                "UNAUTHORIZED",
                Some("WWW-Authenticate"),
            ),
            (GuardError::OriginNotAllowed.into(), 403, "FORBIDDEN", None),
            (
                HandshakeError::UnsupportedVersion.into(),
                426,
                "UPGRADE_REQUIRED",
                Some("Sec-WebSocket-Version"),
            ),
            (HandshakeError::MissingKey.into(), 400, "BAD_REQUEST", None),
            (
                BrokerError::TopicExists("t".into()).into(),
                409,
                "TOPIC_EXISTS",
                None,
            ),
            (
                BrokerError::TopicNotFound("t".into()).into(),
                404,
                "TOPIC_NOT_FOUND",
                None,
            ),
            (
                BrokerError::TopicLimit(3).into(),
                403,
                "LIMIT_EXCEEDED",
                None,
            ),
            (
                BrokerError::NotSubscribed("t".into()).into(),
                409,
                "NOT_SUBSCRIBED",
                None,
            ),
            (MessageError::Binary.into(), 400, "BAD_REQUEST", None),
            (
                BodyError::InvalidName(InvalidTopicName).into(),
                400,
                "BAD_REQUEST",
                None,
            ),
            (
                Failure::RateLimited { per_second: 5 },
                429,
                "RATE_LIMITED",
                None,
            ),
            (Failure::AtCapacity, 503, "SERVICE_UNAVAILABLE", None),
        ];
        for (failure, status, code, header) in cases {
            let w = failure.wire();
            assert_eq!(
                (w.status, w.code.as_str(), w.header.map(|h| h.0)),
                (status, code, header),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn violations_close_with_their_codes() {
        use crate::ws::frame::FrameError;
        let cases = [
            (WsError::InvalidUtf8, 1007),
            (WsError::MessageTooBig { limit: 1 }, 1009),
            (WsError::Frame(FrameError::Unmasked), 1002),
            (WsError::Frame(FrameError::ReservedBits), 1002),
            (WsError::UnexpectedContinuation, 1002),
            (WsError::ExpectedContinuation, 1002),
            (WsError::InvalidClosePayload, 1002),
            (WsError::InvalidCloseCode(1005), 1002),
        ];
        for (e, code) in cases {
            assert_eq!(close_code(&e).as_u16(), code, "{e:?}");
        }
    }
}
