//! HTTP/1.1 by hand: request parsing on httparse, request targets and response encoding, all
//! without I/O.

pub mod chunked;
mod framing;
pub mod request;
pub mod response;
pub mod target;

pub use request::{parse_request, Parsed, Progress, Request, RequestError, RequestLimits};
pub use response::Response;
pub use target::percent_decode;
