//! Production guards that decide before any work is done: the API key, the origin allow-list,
//! CORS answers, and the publish rate limiter. Pure.

use std::fmt;
use std::time::Instant;

use sha1::{Digest, Sha1};

use crate::config::{Origins, Secret};
use crate::http::{percent_decode, Request};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardError {
    MissingKey,
    WrongKey,
    OriginNotAllowed,
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuardError::MissingKey => {
                "an API key is required: send X-API-Key or Authorization: Bearer"
            }
            GuardError::WrongKey => "the API key is not valid",
            GuardError::OriginNotAllowed => "this origin is not allowed to connect",
        })
    }
}

/// Compares digests rather than the keys so neither the content nor the length of the key
/// shows in the time taken.
pub fn keys_match(expected: &str, given: &[u8]) -> bool {
    let a = Sha1::digest(expected.as_bytes());
    let b = Sha1::digest(given);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The key a request presents: `X-API-Key`, `Authorization: Bearer`, or (for the WebSocket
/// upgrade only, since browsers cannot set headers there) the `api_key` query parameter.
fn presented_key(request: &Request<'_>, allow_query: bool) -> Option<Vec<u8>> {
    if let Some(v) = request.header("x-api-key") {
        return Some(v.trim_ascii().to_vec());
    }
    if let Some(v) = request.header("authorization") {
        let v = v.trim_ascii();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(v[7..].trim_ascii().to_vec());
        }
    }
    if allow_query {
        if let Some(raw) = request.query_param("api_key") {
            return Some(percent_decode(raw).unwrap_or_default().into_bytes());
        }
    }
    None
}

pub fn check_api_key(
    request: &Request<'_>,
    key: &Secret,
    allow_query: bool,
) -> Result<(), GuardError> {
    match presented_key(request, allow_query) {
        None => Err(GuardError::MissingKey),
        Some(given) if keys_match(&key.0, &given) => Ok(()),
        Some(_) => Err(GuardError::WrongKey),
    }
}

/// Browsers send `Origin`; other clients usually do not, and are not refused for that.
pub fn check_origin(request: &Request<'_>, origins: Option<&Origins>) -> Result<(), GuardError> {
    let (Some(origins), Some(origin)) = (origins, request.header("origin")) else {
        return Ok(());
    };
    match std::str::from_utf8(origin) {
        Ok(o) if origins.allows(o.trim()) => Ok(()),
        _ => Err(GuardError::OriginNotAllowed),
    }
}

/// The CORS headers for a REST response to an allowed cross-origin request.
pub fn cors_headers(
    request: &Request<'_>,
    origins: Option<&Origins>,
) -> Vec<(&'static str, String)> {
    let (Some(origins), Some(origin)) = (origins, request.header("origin")) else {
        return Vec::new();
    };
    match std::str::from_utf8(origin) {
        Ok(o) if origins.allows(o.trim()) => {
            vec![
                ("Access-Control-Allow-Origin", o.trim().to_string()),
                ("Vary", "Origin".to_string()),
            ]
        }
        _ => Vec::new(),
    }
}

pub const PREFLIGHT_HEADERS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Content-Type, X-API-Key, Authorization",
    ),
    ("Access-Control-Max-Age", "600"),
];

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Parsed, RequestLimits};
    use std::time::Duration;

    fn with_request<T>(raw: &str, f: impl FnOnce(&Request<'_>) -> T) -> T {
        let limits = RequestLimits {
            max_header_bytes: 8192,
            max_body_bytes: 1024,
        };
        match parse_request(raw.as_bytes(), &limits, &mut Default::default()).unwrap() {
            Parsed::Complete(r, _) => f(&r),
            Parsed::Partial { .. } => panic!("partial"),
        }
    }

    #[test]
    fn api_keys_from_headers_and_only_where_allowed_from_the_query() {
        let key = Secret("s3cret".into());
        let check = |raw: &str, q: bool| with_request(raw, |r| check_api_key(r, &key, q));
        assert_eq!(
            check("GET /topics HTTP/1.1\r\nX-API-Key: s3cret\r\n\r\n", false),
            Ok(())
        );
        assert_eq!(
            check(
                "GET /topics HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
                false
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "GET /topics HTTP/1.1\r\nAuthorization: Basic s3cret\r\n\r\n",
                false
            ),
            Err(GuardError::MissingKey)
        );
        assert_eq!(
            check("GET /topics HTTP/1.1\r\nX-API-Key: nope\r\n\r\n", false),
            Err(GuardError::WrongKey)
        );
        assert_eq!(
            check("GET /topics?api_key=s3cret HTTP/1.1\r\n\r\n", false),
            Err(GuardError::MissingKey)
        );
        assert_eq!(
            check("GET /ws?api_key=s3cret HTTP/1.1\r\n\r\n", true),
            Ok(())
        );
        assert_eq!(
            check("GET /ws?x=1&api_key=s3cre%74 HTTP/1.1\r\n\r\n", true),
            Ok(())
        );
        assert!(keys_match("a", b"a") && !keys_match("a", b"ab") && !keys_match("", b"a"));
    }

    #[test]
    fn origins() {
        let origins = Origins::parse("https://app.example").unwrap();
        let check = |raw: &str| with_request(raw, |r| check_origin(r, Some(&origins)));
        assert_eq!(check("GET /ws HTTP/1.1\r\n\r\n"), Ok(()));
        assert_eq!(
            check("GET /ws HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check("GET /ws HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n"),
            Err(GuardError::OriginNotAllowed)
        );
        let headers = with_request(
            "GET / HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n",
            |r| cors_headers(r, Some(&origins)),
        );
        assert_eq!(
            headers[0],
            (
                "Access-Control-Allow-Origin",
                "https://app.example".to_string()
            )
        );
        assert!(with_request(
            "GET / HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n",
            |r| cors_headers(r, Some(&origins))
        )
        .is_empty());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| b.take(10, 3, t0)));
        assert!(!b.take(10, 3, t0));
        assert!(b.take(10, 3, t0 + Duration::from_millis(100)));
        assert!(!b.take(10, 3, t0 + Duration::from_millis(100)));
        assert_eq!(
            (0..10)
                .filter(|_| b.take(10, 3, t0 + Duration::from_secs(60)))
                .count(),
            3
        );
    }
}
