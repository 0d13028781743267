//! The request target: origin or absolute form to a path and a query, and percent-decoding of
//! path segments and query values.

use super::request::RequestError;

pub(super) fn split_target(target: &str) -> Result<(&str, Option<&str>), RequestError> {
    // Absolute-form (`http://host/path`) must be accepted by servers (RFC 9112 §3.2.2).
    let origin_form = match target.find("://") {
        Some(i)
            if target[..i].eq_ignore_ascii_case("http")
                || target[..i].eq_ignore_ascii_case("https") =>
        {
            let after = &target[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        _ => target,
    };
    if !origin_form.starts_with('/') && origin_form != "*" {
        return Err(RequestError::Malformed(
            "request target must be an absolute path",
        ));
    }
    Ok(match origin_form.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin_form, None),
    })
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_path_and_query() {
        assert_eq!(split_target("/a?b=1"), Ok(("/a", Some("b=1"))));
        assert_eq!(split_target("http://h:1/x"), Ok(("/x", None)));
        assert_eq!(split_target("https://h"), Ok(("/", None)));
        assert_eq!(split_target("*"), Ok(("*", None)));
        assert!(split_target("relative").is_err());
    }

    #[test]
    fn percent_escapes() {
        assert_eq!(percent_decode("a%3Ab").as_deref(), Some("a:b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
