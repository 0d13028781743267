//! HTTP/1.1 by hand: request parsing on httparse and response encoding, both without I/O.

pub mod request;
pub mod response;

pub use request::{parse_request, Parsed, Request, RequestError, RequestLimits};
pub use response::Response;
