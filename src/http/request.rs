//! One HTTP/1.x request out of a byte buffer: `Partial` until all of it has arrived, then the
//! request and how many bytes it used, so pipelined requests are parsed one after another.
//! Parsing is incremental: a `Progress` kept beside the buffer remembers how far the search for
//! the head's end got, the head once it is complete, and the chunked body decoded so far, so
//! each byte is looked at a bounded number of times however slowly a request arrives.

use std::borrow::Cow;
use std::fmt;

use super::chunked::{ChunkLimits, Chunked};
use super::framing::{body_framing, Framing};
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
    /// More bytes are needed. `head_complete` once the head has arrived and the body has not;
    /// `expects_continue` if that head asked for `Expect: 100-continue`.
    Partial {
        head_complete: bool,
        expects_continue: bool,
    },
    Complete(Request<'a>, usize),
}

impl Parsed<'_> {
    const MORE: Parsed<'static> = Parsed::Partial {
        head_complete: false,
        expects_continue: false,
    };
}

/// How far the request at the start of a buffer has been parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes already searched for the end of the head.
    scanned: usize,
    head: Option<Head>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    len: usize,
    expects_continue: bool,
    body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    None,
    Length(usize),
    Chunked(Chunked),
}

impl Progress {
    /// The head has arrived (the body is what is awaited).
    pub fn head_complete(&self) -> bool {
        self.head.is_some()
    }
}

/// Why a request cannot be served; the connection is answered and then closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    Malformed(&'static str),
    HeadTooLarge,
    BodyTooLarge { limit: usize },
    BadContentLength,
    UnsupportedTransferEncoding,
    BadChunk(&'static str),
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
            RequestError::BadChunk(what) => write!(f, "malformed chunked body: {what}"),
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

/// Where the head of the request at the start of `buf` ends (after its empty line), searching
/// from `scanned`; empty lines before the request line are skipped as httparse skips them.
fn head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let from = (*scanned).max(start);
    for i in from..buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
    }
    // The last two bytes may begin the empty line: search them again with what comes next.
    *scanned = buf.len().saturating_sub(2).max(from);
    None
}

/// The head `buf[..len]` as a request (with no body yet).
fn parse_head(buf: &[u8]) -> Result<Request<'_>, RequestError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut raw = httparse::Request::new(&mut slots);
    match raw.parse(buf).map_err(malformed)? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => {
            return Err(RequestError::Malformed("incomplete request head"))
        }
    }
    let method = raw
        .method
        .ok_or(RequestError::Malformed("missing method"))?;
    let target = raw
        .path
        .ok_or(RequestError::Malformed("missing request target"))?;
    let http10 = raw.version == Some(0);
    let headers: Vec<(&str, &[u8])> = raw.headers.iter().map(|h| (h.name, h.value)).collect();
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
    Ok(request)
}

/// Parses the request at the start of `buf`, going on from `progress` (which must have been
/// made on the same request's earlier bytes, and is reset when the request is complete).
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &RequestLimits,
    progress: &mut Progress,
) -> Result<Parsed<'a>, RequestError> {
    if progress.head.is_none() {
        let Some(len) = head_end(buf, &mut progress.scanned) else {
            if buf.len() > limits.max_header_bytes {
                return Err(RequestError::HeadTooLarge);
            }
            return Ok(Parsed::MORE);
        };
        if len > limits.max_header_bytes {
            return Err(RequestError::HeadTooLarge);
        }
        let request = parse_head(&buf[..len])?;
        let body = match body_framing(&request)? {
            Framing::None => Body::None,
            Framing::Length(n) if n > limits.max_body_bytes as u64 => {
                return Err(RequestError::BodyTooLarge {
                    limit: limits.max_body_bytes,
                })
            }
            Framing::Length(n) => Body::Length(n as usize),
            Framing::Chunked => Body::Chunked(Chunked::default()),
        };
        let expects_continue = !request.http10 && request.has_token("expect", "100-continue");
        progress.head = Some(Head {
            len,
            expects_continue,
            body,
        });
    }
    let Some(head) = progress.head.as_mut() else {
        return Ok(Parsed::MORE);
    };
    let raw_body = &buf[head.len..];
    let waiting = Parsed::Partial {
        head_complete: true,
        expects_continue: head.expects_continue,
    };
    let (body, used) = match &mut head.body {
        Body::None => (Cow::Borrowed(&raw_body[..0]), 0),
        Body::Length(n) if raw_body.len() < *n => return Ok(waiting),
        Body::Length(n) => (Cow::Borrowed(&raw_body[..*n]), *n),
        Body::Chunked(chunked) => {
            let chunk_limits = ChunkLimits {
                max_body: limits.max_body_bytes,
                max_framing: limits.max_body_bytes.max(64 * 1024),
                max_trailers: limits.max_header_bytes,
            };
            match chunked.feed(raw_body, &chunk_limits)? {
                None => return Ok(waiting),
                Some(used) => (Cow::Owned(std::mem::take(chunked).into_body()), used),
            }
        }
    };
    let len = head.len;
    *progress = Progress::default();
    let mut request = parse_head(&buf[..len])?;
    request.body = body;
    Ok(Parsed::Complete(request, len + used))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_header_bytes: 8192,
        max_body_bytes: 1024,
    };

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse_request(buf, &LIMITS, &mut Progress::default()).unwrap() {
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
            match parse_request(&full[..cut], &LIMITS, &mut Progress::default()).unwrap() {
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
                    parse_request(&full[..cut], &LIMITS, &mut Progress::default()),
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
                BadChunk("invalid chunk size"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n",
                BodyTooLarge { limit: 1024 },
            ),
        ];
        for (input, want) in cases {
            let err = parse_request(input, &LIMITS, &mut Progress::default()).unwrap_err();
            assert_eq!(&err, want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn oversized_heads_are_refused_whether_complete_or_not() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(
            parse_request(&big, &LIMITS, &mut Progress::default()).unwrap_err(),
            RequestError::HeadTooLarge
        );
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&big, &LIMITS, &mut Progress::default()).unwrap_err(),
            RequestError::HeadTooLarge
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..70 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request(&many, &LIMITS, &mut Progress::default()).unwrap_err(),
            RequestError::HeadTooLarge
        );
    }

    #[test]
    fn expect_continue_is_reported_while_the_body_is_missing() {
        let head = b"POST /topics HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
        assert_eq!(
            parse_request(head, &LIMITS, &mut Progress::default()).unwrap(),
            Parsed::Partial {
                head_complete: true,
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
