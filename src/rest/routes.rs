//! Which handler a request goes to: path and method to a `Route`, or the error that says why
//! there is none.

use std::fmt;

use crate::http::percent_decode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /ws`, or `GET /echo` when enabled.
    Upgrade {
        echo: bool,
    },
    /// A CORS preflight (`OPTIONS`) for a known path.
    Preflight,
    /// `GET /`: the web console, a static page (it asks for the API key itself).
    Console,
    Rest(RestRoute),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestRoute {
    ListTopics,
    CreateTopic,
    DeleteTopic(String),
    Health,
    Stats,
    Metrics,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed { allow: &'static str },
    BadPath,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NotFound => f.write_str("no such endpoint"),
            RouteError::MethodNotAllowed { allow } => {
                write!(f, "method not allowed here; allowed: {allow}")
            }
            RouteError::BadPath => f.write_str("the path is not valid percent-encoded UTF-8"),
        }
    }
}

pub fn resolve(method: &str, path: &str, echo_enabled: bool) -> Result<Route, RouteError> {
    if method == "OPTIONS" {
        return resolve("GET", path, echo_enabled)
            .or_else(|e| match e {
                RouteError::MethodNotAllowed { .. } => Ok(Route::Preflight),
                other => Err(other),
            })
            .map(|_| Route::Preflight);
    }
    // HEAD is answered wherever GET is (RFC 9110 §9.3.2), except on the upgrade paths.
    let only = |allow: &'static str, route: Route| {
        if allow.split(", ").any(|m| m == method) {
            Ok(route)
        } else {
            Err(RouteError::MethodNotAllowed { allow })
        }
    };
    match path {
        "/" => only("GET, HEAD", Route::Console),
        "/ws" => only("GET", Route::Upgrade { echo: false }),
        "/echo" if echo_enabled => only("GET", Route::Upgrade { echo: true }),
        "/topics" | "/topics/" => match method {
            "GET" | "HEAD" => Ok(Route::Rest(RestRoute::ListTopics)),
            "POST" => Ok(Route::Rest(RestRoute::CreateTopic)),
            _ => Err(RouteError::MethodNotAllowed {
                allow: "GET, HEAD, POST",
            }),
        },
        "/health" => only("GET, HEAD", Route::Rest(RestRoute::Health)),
        "/stats" => only("GET, HEAD", Route::Rest(RestRoute::Stats)),
        "/metrics" => only("GET, HEAD", Route::Rest(RestRoute::Metrics)),
        _ => match path.strip_prefix("/topics/") {
            Some(segment) if !segment.contains('/') => {
                let name = percent_decode(segment).ok_or(RouteError::BadPath)?;
                only("DELETE", Route::Rest(RestRoute::DeleteTopic(name)))
            }
            _ => Err(RouteError::NotFound),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        let cases: &[(&str, &str, Result<Route, RouteError>)] = &[
            ("GET", "/topics", Ok(Route::Rest(RestRoute::ListTopics))),
            ("POST", "/topics", Ok(Route::Rest(RestRoute::CreateTopic))),
            (
                "PUT",
                "/topics",
                Err(RouteError::MethodNotAllowed {
                    allow: "GET, HEAD, POST",
                }),
            ),
            (
                "DELETE",
                "/topics/orders",
                Ok(Route::Rest(RestRoute::DeleteTopic("orders".into()))),
            ),
            (
                "DELETE",
                "/topics/a%3Ab",
                Ok(Route::Rest(RestRoute::DeleteTopic("a:b".into()))),
            ),
            ("DELETE", "/topics/a%zz", Err(RouteError::BadPath)),
            ("DELETE", "/topics/a%ff", Err(RouteError::BadPath)),
            (
                "GET",
                "/topics/orders",
                Err(RouteError::MethodNotAllowed { allow: "DELETE" }),
            ),
            ("DELETE", "/topics/a/b", Err(RouteError::NotFound)),
            ("GET", "/health", Ok(Route::Rest(RestRoute::Health))),
            (
                "POST",
                "/health",
                Err(RouteError::MethodNotAllowed { allow: "GET, HEAD" }),
            ),
            ("GET", "/stats", Ok(Route::Rest(RestRoute::Stats))),
            ("GET", "/ws", Ok(Route::Upgrade { echo: false })),
            ("GET", "/echo", Err(RouteError::NotFound)),
            ("GET", "/nope", Err(RouteError::NotFound)),
            ("GET", "/metrics", Ok(Route::Rest(RestRoute::Metrics))),
            ("GET", "/", Ok(Route::Console)),
            (
                "POST",
                "/",
                Err(RouteError::MethodNotAllowed { allow: "GET, HEAD" }),
            ),
            ("HEAD", "/", Ok(Route::Console)),
            ("HEAD", "/topics", Ok(Route::Rest(RestRoute::ListTopics))),
            ("HEAD", "/health", Ok(Route::Rest(RestRoute::Health))),
            ("HEAD", "/stats", Ok(Route::Rest(RestRoute::Stats))),
            ("HEAD", "/metrics", Ok(Route::Rest(RestRoute::Metrics))),
            (
                "HEAD",
                "/ws",
                Err(RouteError::MethodNotAllowed { allow: "GET" }),
            ),
            (
                "HEAD",
                "/topics/orders",
                Err(RouteError::MethodNotAllowed { allow: "DELETE" }),
            ),
            ("OPTIONS", "/topics", Ok(Route::Preflight)),
            ("OPTIONS", "/topics/x", Ok(Route::Preflight)),
            ("OPTIONS", "/nope", Err(RouteError::NotFound)),
        ];
        for (method, path, want) in cases {
            assert_eq!(&resolve(method, path, false), want, "{method} {path}");
        }
        assert_eq!(
            resolve("GET", "/echo", true),
            Ok(Route::Upgrade { echo: true })
        );
    }
}
