//! HTTP responses: a status, headers and a body, encoded to bytes in one place.

use std::io::Write;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The server closes the connection after this response whatever the client asked.
    pub close: bool,
    /// An answer to HEAD: the headers (Content-Length included) of the GET answer, no body.
    pub head: bool,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
            head: false,
        }
    }

    pub fn json(status: u16, value: &impl Serialize) -> Response {
        let mut r = Response::new(status);
        // Serialising our own plain structs cannot fail; an empty body would be the only result.
        r.body = serde_json::to_vec(value).unwrap_or_default();
        r.headers.push(("Content-Type", "application/json".into()));
        r
    }

    /// `{"error":{"code":"...","message":"..."}}` (`error::Failure::response` says which).
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        Response::json(status, &body)
    }

    /// The bytes on the wire. `keep_alive` is whether the connection stays open afterwards.
    pub fn encode(&self, keep_alive: bool, http10: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{version} {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if self.status != 101 && self.status != 100 && self.status != 204 {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if self.status != 101 {
            if !keep_alive {
                out.extend_from_slice(b"Connection: close\r\n");
            } else if http10 {
                out.extend_from_slice(b"Connection: keep-alive\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        if !self.head {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_headers_and_body() {
        let r = Response::json(201, &serde_json::json!({"status":"created"}));
        let text = String::from_utf8(r.encode(true, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 201 Created\r\n"));
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains("Content-Length: 20\r\n"));
        assert!(!text.contains("Connection"));
        assert!(text.ends_with("\r\n\r\n{\"status\":\"created\"}"));
        let closing = String::from_utf8(r.encode(false, true)).unwrap();
        assert!(closing.starts_with("HTTP/1.0 201") && closing.contains("Connection: close\r\n"));
    }

    #[test]
    fn an_answer_to_head_keeps_the_length_and_drops_the_body() {
        let mut r = Response::json(200, &serde_json::json!({"status":"ok"}));
        r.head = true;
        let text = String::from_utf8(r.encode(true, false)).unwrap();
        assert!(text.contains("Content-Length: 15\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}
