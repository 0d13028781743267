//! How a request's body is delimited (RFC 9112 §6): by `Content-Length`, by chunked
//! `Transfer-Encoding`, or not at all; and the combinations refused.

use super::request::{Request, RequestError};

pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
}

pub(super) fn body_framing(request: &Request<'_>) -> Result<Framing, RequestError> {
    let mut length: Option<u64> = None;
    let mut transfer_encoding = None;
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(value)
                .map_err(|_| RequestError::BadContentLength)?
                .trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RequestError::BadContentLength);
            }
            let n: u64 = text.parse().map_err(|_| RequestError::BadContentLength)?;
            if length.is_some_and(|prev| prev != n) {
                return Err(RequestError::BadContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(RequestError::UnsupportedTransferEncoding);
            }
            transfer_encoding = Some(*value);
        }
    }
    match (transfer_encoding, length) {
        (Some(_), Some(_)) => Err(RequestError::Malformed(
            "both Content-Length and Transfer-Encoding are present",
        )),
        (Some(te), None) if te.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            if request.http10 {
                Err(RequestError::UnsupportedTransferEncoding)
            } else {
                Ok(Framing::Chunked)
            }
        }
        (Some(_), None) => Err(RequestError::UnsupportedTransferEncoding),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::None),
    }
}
