//! `GET /`: the web console, one self-contained page embedded in the binary.

use crate::http::Response;

const CONSOLE_HTML: &str = include_str!("../console.html");

/// SHA-256 of the page's one `<script>` and one `<style>` element, so the policy allows those
/// two and nothing else inline (an injected script has another hash). A unit test recomputes
/// both from the page and says the new value when the page changes.
const SCRIPT_SHA256: &str = "JHr9cKmor5RckZsXAfwuoVvJmEBaphXRsSrV1DMTbuI=";
const STYLE_SHA256: &str = "IjH9ZexReawtiNf7adUqyKJJD4WcprjavtPtJhRPTLI=";

/// The page's own script and style only, and connections to its own origin only (`'self'`
/// covers `ws:`/`wss:` to the same host in CSP Level 3).
fn policy() -> String {
    format!(
        "default-src 'none'; script-src 'sha256-{SCRIPT_SHA256}'; \
         style-src 'sha256-{STYLE_SHA256}'; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

pub fn page() -> Response {
    let mut r = Response::new(200);
    r.body = CONSOLE_HTML.as_bytes().to_vec();
    r.headers
        .push(("Content-Type", "text/html; charset=utf-8".into()));
    r.headers.push(("Content-Security-Policy", policy()));
    r.headers.push(("X-Content-Type-Options", "nosniff".into()));
    r.headers.push(("Cache-Control", "no-cache".into()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use sha2::Digest;

    /// The text of the page's only `<tag>` element.
    fn only(tag: &str) -> &'static str {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        assert_eq!(CONSOLE_HTML.matches(&open).count(), 1, "one {open}");
        let start = CONSOLE_HTML.find(&open).unwrap() + open.len();
        let end = CONSOLE_HTML[start..].find(&close).unwrap() + start;
        &CONSOLE_HTML[start..end]
    }

    fn sha256(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn the_policy_names_the_hashes_of_the_page_as_it_is() {
        assert_eq!(SCRIPT_SHA256, sha256(only("script")), "the script changed");
        assert_eq!(STYLE_SHA256, sha256(only("style")), "the style changed");
    }

    #[test]
    fn nothing_inline_is_allowed_but_the_page_itself() {
        let p = policy();
        // SAFETY: a CSP keyword looked for in the policy's text, not Rust.
        assert!(!p.contains("unsafe"), "{p}");
        assert!(p.contains("connect-src 'self';"), "{p}");
        assert!(!p.contains("ws:"), "{p}");
        // No attribute handlers or inline styles, which the hashes would not allow.
        assert!(!CONSOLE_HTML.contains(" style="));
        assert!(!CONSOLE_HTML.contains(" onclick="));
    }
}
