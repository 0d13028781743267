//! One HTTP/1.x request out of a byte buffer: `Partial` until all of it has arrived, then the
//! request and how many bytes it used, so pipelined requests are parsed one after another.

use std::borrow::Cow;
use std::fmt;

use super::target::split_target;

/// At most this many headers per request; more is answered like an oversized head.
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded), without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub http10: bool,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: Cow<'a, [u8]>,
    /// Whether the connection stays open after the response (HTTP/1.1 default, 1.0 opt-in).
    pub keep_alive: bool,
}

impl<'a> Request<'a> {
    /// The first header of that name (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Whether any header of that name lists `token` in its comma-separated value.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| header_has_token(v, token))
    }

    /// A query parameter's raw value (`?a=1&b=2`).
    pub fn query_param(&self, key: &str) -> Option<&'a str> {
        self.query?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

pub fn header_has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// More bytes are needed. `expects_continue` is true once a complete head asked for
    /// `Expect: 100-continue` and its body has not arrived.
    Partial {
        expects_continue: bool,
    },
    Complete(Request<'a>, usize),
}

/// Why a request cannot be served; the connection is answered and then closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    Malformed(&'static str),
    HeadTooLarge,
    BodyTooLarge { limit: usize },
    BadContentLength,
    UnsupportedTransferEncoding,
    BadChunk,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Malformed(what) => write!(f, "malformed request: {what}"),
            RequestError::HeadTooLarge => f.write_str("request line and headers are too large"),
            RequestError::BodyTooLarge { limit } => {
                write!(f, "request body is larger than {limit} bytes")
            }
            RequestError::BadContentLength => f.write_str("invalid Content-Length header"),
            RequestError::UnsupportedTransferEncoding => {
                f.write_str("only the chunked transfer-encoding is supported")
            }
            RequestError::BadChunk => f.write_str("malformed chunked body"),
        }
    }
}

fn malformed(e: httparse::Error) -> RequestError {
    match e {
        httparse::Error::TooManyHeaders => RequestError::HeadTooLarge,
        httparse::Error::Version => RequestError::Malformed("unsupported HTTP version"),
        httparse::Error::Token => RequestError::Malformed("invalid token in request line"),
        httparse::Error::HeaderName => RequestError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => RequestError::Malformed("invalid header value"),
        httparse::Error::NewLine => RequestError::Malformed("invalid line ending"),
        httparse::Error::Status => RequestError::Malformed("invalid request line"),
    }
}

/// Parses the request at the start of `buf`.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &RequestLimits,
) -> Result<Parsed<'a>, RequestError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut raw = httparse::Request::new(&mut slots);
    let head_len = match raw.parse(buf).map_err(malformed)? {
        httparse::Status::Partial if buf.len() > limits.max_header_bytes => {
            return Err(RequestError::HeadTooLarge)
        }
        httparse::Status::Partial => {
            return Ok(Parsed::Partial {
                expects_continue: false,
            })
        }
        httparse::Status::Complete(n) if n > limits.max_header_bytes => {
            return Err(RequestError::HeadTooLarge)
        }
        httparse::Status::Complete(n) => n,
    };
    let method = raw
        .method
        .ok_or(RequestError::Malformed("missing method"))?;
    let target = raw
        .path
        .ok_or(RequestError::Malformed("missing request target"))?;
    let http10 = raw.version == Some(0);
    let headers: Vec<(&'a str, &'a [u8])> = raw.headers.iter().map(|h| (h.name, h.value)).collect();
    let (path, query) = split_target(target)?;
    let mut request = Request {
        method,
        path,
        query,
        http10,
        headers,
        body: Cow::Borrowed(&[]),
        keep_alive: false,
    };
    request.keep_alive = if http10 {
        request.has_token("connection", "keep-alive")
    } else {
        !request.has_token("connection", "close")
    };

    let rest = &buf[head_len..];
    let expects_continue = !http10 && request.has_token("expect", "100-continue");
    let framing = body_framing(&request)?;
    let body_len = match framing {
        Framing::None => 0,
        Framing::Length(n) if n > limits.max_body_bytes as u64 => {
            return Err(RequestError::BodyTooLarge {
                limit: limits.max_body_bytes,
            })
        }
        Framing::Length(n) => n as usize,
        Framing::Chunked => {
            return match decode_chunked(rest, limits.max_body_bytes)? {
                None => Ok(Parsed::Partial { expects_continue }),
                Some((body, used)) => {
                    request.body = Cow::Owned(body);
                    Ok(Parsed::Complete(request, head_len + used))
                }
            };
        }
    };
    if rest.len() < body_len {
        return Ok(Parsed::Partial { expects_continue });
    }
    request.body = Cow::Borrowed(&rest[..body_len]);
    Ok(Parsed::Complete(request, head_len + body_len))
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn body_framing(request: &Request<'_>) -> Result<Framing, RequestError> {
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

/// Decodes a chunked body: `None` until the last chunk and trailers have arrived.
fn decode_chunked(
    mut rest: &[u8],
    max_body: usize,
) -> Result<Option<(Vec<u8>, usize)>, RequestError> {
    let start_len = rest.len();
    let mut body = Vec::new();
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(v)) => v,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(RequestError::BadChunk),
        };
        if size > (max_body - body.len()) as u64 {
            return Err(RequestError::BodyTooLarge { limit: max_body });
        }
        rest = &rest[size_len..];
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; 16];
            return match httparse::parse_headers(rest, &mut trailers) {
                Ok(httparse::Status::Complete((n, _))) => {
                    Ok(Some((body, start_len - rest.len() + n)))
                }
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(RequestError::BadChunk),
            };
        }
        let size = size as usize;
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(RequestError::BadChunk);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_header_bytes: 8192,
        max_body_bytes: 1024,
    };

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse_request(buf, &LIMITS).unwrap() {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let (r, n) = complete(b"GET /topics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.method, r.path, r.query), ("GET", "/topics", Some("x=1")));
        assert!(r.keep_alive && !r.http10);
        assert_eq!(r.header("HOST"), Some(&b"a"[..]));
        assert_eq!(r.query_param("x"), Some("1"));
        assert_eq!(n, 37);
    }

    #[test]
    fn every_prefix_is_partial_and_the_whole_is_the_request() {
        let full: &[u8] =
            b"POST /topics HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n{\"name\":\"order\"}";
        for cut in 0..full.len() {
            match parse_request(&full[..cut], &LIMITS).unwrap() {
                Parsed::Partial { .. } => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        let (r, n) = complete(full);
        assert_eq!(
            (r.method, r.path, r.query, r.header("host"), &r.body[..], n),
            (
                "POST",
                "/topics",
                None,
                Some(&b"x"[..]),
                &b"{\"name\":\"order\"}"[..],
                full.len()
            )
        );
    }

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let buf = b"GET /health HTTP/1.1\r\n\r\nGET /stats HTTP/1.1\r\n\r\n";
        let (a, n) = complete(buf);
        assert_eq!(a.path, "/health");
        let (b, m) = complete(&buf[n..]);
        assert_eq!(b.path, "/stats");
        assert_eq!(n + m, buf.len());
    }

    #[test]
    fn connection_semantics() {
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            complete(b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n")
                .0
                .has_token("connection", "upgrade")
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let full: &[u8] = b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"na\r\na;ext=1\r\nme\":\"abc\"}\r\n0\r\nX-T: 1\r\n\r\nGET";
        let (r, n) = complete(full);
        assert_eq!(&r.body[..], b"{\"name\":\"abc\"}");
        assert_eq!(&full[n..], b"GET");
        for cut in 0..full.len() - 3 {
            assert!(
                matches!(
                    parse_request(&full[..cut], &LIMITS),
                    Ok(Parsed::Partial { .. })
                ),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn each_malformation_has_its_error() {
        use RequestError::*;
        let cases: &[(&[u8], RequestError)] = &[
            (
                b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                Malformed("invalid header name"),
            ),
            (
                b"GET\x01 / HTTP/1.1\r\n\r\n",
                Malformed("invalid token in request line"),
            ),
            (
                b"GET / HTTP/2.0\r\n\r\n",
                Malformed("unsupported HTTP version"),
            ),
            (
                b"GET relative HTTP/1.1\r\n\r\n",
                Malformed("request target must be an absolute path"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n",
                BodyTooLarge { limit: 1024 },
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Malformed("both Content-Length and Transfer-Encoding are present"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                BadChunk,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n",
                BodyTooLarge { limit: 1024 },
            ),
        ];
        for (input, want) in cases {
            let err = parse_request(input, &LIMITS).unwrap_err();
            assert_eq!(&err, want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn oversized_heads_are_refused_whether_complete_or_not() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(
            parse_request(&big, &LIMITS).unwrap_err(),
            RequestError::HeadTooLarge
        );
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&big, &LIMITS).unwrap_err(),
            RequestError::HeadTooLarge
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..70 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request(&many, &LIMITS).unwrap_err(),
            RequestError::HeadTooLarge
        );
    }

    #[test]
    fn expect_continue_is_reported_while_the_body_is_missing() {
        let head = b"POST /topics HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
        assert_eq!(
            parse_request(head, &LIMITS).unwrap(),
            Parsed::Partial {
                expects_continue: true
            }
        );
    }

    #[test]
    fn absolute_form_targets_are_accepted() {
        let (r, _) = complete(b"GET http://example.com/health HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, "/health");
    }
}
