//! The error codes the server sends, on the wire as JSON `{"code": ..., "message": ...}` objects,
//! and the trait every layer's error enum implements to become an HTTP response.

use std::fmt;

/// Every code that appears in an `error` object, over REST or WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    TopicNotFound,
    TopicExists,
    NotSubscribed,
    LimitExceeded,
    SlowConsumer,
    RateLimited,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    HeadersTooLarge,
    UpgradeRequired,
    ServiceUnavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadRequest,
        ErrorCode::TopicNotFound,
        ErrorCode::TopicExists,
        ErrorCode::NotSubscribed,
        ErrorCode::LimitExceeded,
        ErrorCode::SlowConsumer,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::HeadersTooLarge,
        ErrorCode::UpgradeRequired,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::TopicNotFound => "TOPIC_NOT_FOUND",
            ErrorCode::TopicExists => "TOPIC_EXISTS",
            ErrorCode::NotSubscribed => "NOT_SUBSCRIBED",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::UpgradeRequired => "UPGRADE_REQUIRED",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that ends an HTTP request: each layer's enum says once which status, code and
/// message it becomes.
pub trait HttpFailure: fmt::Display {
    fn status(&self) -> u16;
    fn code(&self) -> ErrorCode;
    /// Extra headers the status calls for (`Allow` on 405, `Sec-WebSocket-Version` on 426).
    fn extra_header(&self) -> Option<(&'static str, &'static str)> {
        None
    }
}
