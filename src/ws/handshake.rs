//! The opening handshake (RFC 6455 §4.2): validate the upgrade request, compute
//! `Sec-WebSocket-Accept`, produce the 101 response.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::http::Request;

/// RFC 6455 §1.3: the GUID appended to the client's key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    NotGet,
    NotHttp11,
    MissingUpgrade,
    MissingConnectionUpgrade,
    UnsupportedVersion,
    MissingKey,
    /// RFC 6455 §11.3.1: the field must not appear more than once.
    RepeatedKey,
    InvalidKey,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::NotGet => "a WebSocket upgrade must use GET",
            HandshakeError::NotHttp11 => "a WebSocket upgrade needs HTTP/1.1",
            HandshakeError::MissingUpgrade => "missing 'Upgrade: websocket' header",
            HandshakeError::MissingConnectionUpgrade => {
                "the Connection header must contain 'upgrade'"
            }
            HandshakeError::UnsupportedVersion => {
                "unsupported Sec-WebSocket-Version: only 13 is supported"
            }
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key header",
            HandshakeError::RepeatedKey => "Sec-WebSocket-Key must appear once",
            HandshakeError::InvalidKey => {
                "Sec-WebSocket-Key must be the base64 encoding of 16 bytes"
            }
        })
    }
}

/// `Sec-WebSocket-Accept` for a client key: base64(sha1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

/// Checks an upgrade request and returns the accept key to answer with.
pub fn validate(request: &Request<'_>) -> Result<String, HandshakeError> {
    if request.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if request.http10 {
        return Err(HandshakeError::NotHttp11);
    }
    if !request.has_token("upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !request.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    match request.header("sec-websocket-version") {
        Some(v) if v.trim_ascii() == b"13" => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let mut keys = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"));
    let key = keys
        .next()
        .ok_or(HandshakeError::MissingKey)?
        .1
        .trim_ascii();
    if keys.next().is_some() {
        return Err(HandshakeError::RepeatedKey);
    }
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
        _ => Err(HandshakeError::InvalidKey),
    }
}

/// The 101 response. No extension is ever accepted, so permessage-deflate offers are declined by
/// leaving `Sec-WebSocket-Extensions` out.
pub fn response(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Parsed, RequestLimits};

    fn check(raw: &str) -> Result<String, HandshakeError> {
        let limits = RequestLimits {
            max_header_bytes: 8192,
            max_body_bytes: 1024,
        };
        match parse_request(raw.as_bytes(), &limits, &mut Default::default()).unwrap() {
            Parsed::Complete(r, _) => validate(&r),
            Parsed::Partial { .. } => panic!("partial"),
        }
    }

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(check(GOOD).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_rule_has_its_error() {
        let cases = [
            (GOOD.replace("GET", "POST"), HandshakeError::NotGet),
            (
                GOOD.replace("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::NotHttp11,
            ),
            (
                GOOD.replace("Upgrade: WebSocket\r\n", ""),
                HandshakeError::MissingUpgrade,
            ),
            (
                GOOD.replace("keep-alive, Upgrade", "keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
            ),
            (
                GOOD.replace("Version: 13", "Version: 8"),
                HandshakeError::UnsupportedVersion,
            ),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                HandshakeError::MissingKey,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
                HandshakeError::InvalidKey,
            ),
            (
                GOOD.replace(
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
                ),
                HandshakeError::RepeatedKey,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!"),
                HandshakeError::InvalidKey,
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(check(&raw), Err(want), "{raw}");
        }
    }
}
