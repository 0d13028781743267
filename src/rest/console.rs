//! `GET /`: the web console, one self-contained page embedded in the binary.

use crate::http::Response;

const CONSOLE_HTML: &str = include_str!("../console.html");

/// Inline script and style only, talking to this server only.
const CONSOLE_CSP: &str = concat!(
    "default-src 'none'; ",
    "script-src 'unsafe-inline'; ", // SAFETY: a CSP keyword (the page's own script), not Rust
    "style-src 'unsafe-inline'; ",  // SAFETY: a CSP keyword (the page's own style), not Rust
    "connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'; ",
    "frame-ancestors 'none'",
);

pub fn page() -> Response {
    let mut r = Response::new(200);
    r.body = CONSOLE_HTML.as_bytes().to_vec();
    r.headers
        .push(("Content-Type", "text/html; charset=utf-8".into()));
    r.headers
        .push(("Content-Security-Policy", CONSOLE_CSP.into()));
    r.headers.push(("X-Content-Type-Options", "nosniff".into()));
    r.headers.push(("Cache-Control", "no-cache".into()));
    r
}
