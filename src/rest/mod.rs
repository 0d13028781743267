//! The HTTP API as pure handlers: a request, the state it reads or changes and the time go in;
//! an answer (a response, or the go-ahead for a WebSocket upgrade) and the effect the engine
//! must apply to other connections come out. Routing is in `routes`, the read-only views in
//! `views`, the console page in `console`.

pub mod body;
pub mod console;
pub mod routes;
mod views;

use std::time::{Duration, Instant};

use crate::broker::{Broker, ConnId};
use crate::config::Config;
use crate::error::Failure;
use crate::guard::{self, GuardError};
use crate::http::{Request, Response};
use crate::ids::Epochs;
use crate::log::Level;
use crate::stats::{Stats, UpgradeRefusal};
use crate::ws::handshake::{self, HandshakeError};
pub use body::BodyError;
pub use routes::{resolve, RestRoute, Route, RouteError};

/// What the handlers see of the server.
pub struct State<'a> {
    pub config: &'a Config,
    pub broker: &'a mut Broker,
    pub stats: &'a Stats,
    pub epochs: &'a mut Epochs,
    /// The wall-clock time of this request (for new topics' epochs).
    pub unix_ms: u64,
    pub started: Instant,
    pub shutting_down: bool,
    /// What the connections hold in their buffers now; counted only when asked (`/stats`,
    /// `/metrics`), since it visits every connection.
    pub buffered: &'a dyn Fn() -> Buffered,
    /// Cluster mode: where this instance stands with Redis. Topics are then created and
    /// deleted by Redis ([`Answer::Backplane`]).
    pub cluster: Option<ClusterStatus>,
}

/// An instance's place in its cluster, as `/health`, `/stats` and `/metrics` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    pub instance: String,
    /// `up`, `syncing` (connected, reading the topics) or `down`.
    pub engine: &'static str,
    /// How long the oldest command to Redis has waited for its reply.
    pub lag_ms: u64,
    pub in_flight: usize,
    #[serde(flatten)]
    pub counters: crate::stats::ClusterStats,
}

impl ClusterStatus {
    pub fn is_up(&self) -> bool {
        self.engine == "up"
    }
}

/// A change only Redis can make, in cluster mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create { name: String, epoch: String },
    Delete { name: String },
}

/// Bytes held in connections' buffers, server-wide.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Buffered {
    /// Input read and not yet handled, and WebSocket messages still arriving.
    pub input_bytes: usize,
    /// Output waiting for sockets, by what it costs (bytes plus each frame's bookkeeping).
    pub output_bytes: usize,
}

impl State<'_> {
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

#[derive(Debug)]
pub enum Answer {
    Respond(Response),
    /// The upgrade passed every check: answer 101 with this accept key.
    Upgrade {
        accept: String,
        echo: bool,
    },
    /// Cluster mode: the change is asked of Redis; its answer ([`change_response`]) carries
    /// these headers.
    Backplane {
        change: Change,
        headers: Vec<(&'static str, String)>,
    },
}

/// What a handler's answer means for the rest of the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// These connections were subscribed to the deleted topic and must be told.
    TopicDeleted {
        topic: String,
        subscribers: Vec<ConnId>,
    },
    UpgradeRefused(UpgradeRefusal),
}

#[derive(Debug)]
pub struct Outcome {
    pub answer: Answer,
    pub effect: Effect,
}

impl Outcome {
    fn respond(response: Response) -> Outcome {
        Outcome {
            answer: Answer::Respond(response),
            effect: Effect::None,
        }
    }
}

/// Answers one request. HEAD gets the GET answer's head (the encoder leaves the body out).
pub fn handle(state: &mut State<'_>, request: &Request<'_>, now: Instant) -> Outcome {
    let mut outcome = route(state, request, now);
    if let Answer::Respond(r) = &mut outcome.answer {
        r.head = request.method == "HEAD";
    }
    outcome
}

fn route(state: &mut State<'_>, request: &Request<'_>, now: Instant) -> Outcome {
    let route = match resolve(request.method, request.path, state.config.enable_echo) {
        Ok(route) => route,
        Err(e) => return Outcome::respond(Failure::from(e).response()),
    };
    let origins = state.config.allowed_origins.as_ref();
    let rest = match route {
        Route::Upgrade { echo } => return upgrade(state, request, echo),
        Route::Console => return Outcome::respond(console::page()),
        Route::Preflight => {
            return Outcome::respond(match guard::check_origin(request, origins) {
                Err(e) => Failure::from(e).response(),
                Ok(()) => {
                    let mut r = Response::new(204);
                    r.headers.extend(guard::cors_headers(request, origins));
                    r.headers.extend(
                        guard::PREFLIGHT_HEADERS
                            .iter()
                            .map(|(k, v)| (*k, v.to_string())),
                    );
                    r
                }
            });
        }
        Route::Rest(rest) => rest,
    };
    // A page of another origin may send simple requests without a preflight; with an
    // allow-list set, such requests are refused before they do anything.
    let authorised =
        guard::check_origin(request, origins).and_then(|()| match (&state.config.api_key, &rest) {
            (_, RestRoute::Health) | (None, _) => Ok(()),
            (Some(key), _) => guard::check_api_key(request, key, false),
        });
    let mut effect = Effect::None;
    if let (Ok(()), Some(cluster)) = (&authorised, &state.cluster) {
        let change = match &rest {
            RestRoute::CreateTopic => Some(body::topic_name(&request.body).map(|name| {
                Change::Create {
                    name: name.as_str().to_string(),
                    // Unique across instances too: two may create the name in one millisecond.
                    epoch: format!("{}-{}", state.epochs.next(state.unix_ms), cluster.instance),
                }
            })),
            RestRoute::DeleteTopic(name) => Some(Ok(Change::Delete { name: name.clone() })),
            _ => None,
        };
        let answer = match change {
            None => None,
            Some(Err(e)) => Some(Answer::Respond(Failure::from(e).response())),
            Some(Ok(_)) if !cluster.is_up() => {
                Some(Answer::Respond(Failure::Unavailable.response()))
            }
            Some(Ok(change)) => Some(Answer::Backplane {
                change,
                headers: guard::cors_headers(request, origins),
            }),
        };
        if let Some(mut answer) = answer {
            if let Answer::Respond(r) = &mut answer {
                r.headers.extend(guard::cors_headers(request, origins));
            }
            return Outcome {
                answer,
                effect: Effect::None,
            };
        }
    }
    let result = authorised.map_err(Failure::from).and_then(|()| match rest {
        RestRoute::ListTopics => Ok(views::topics(state)),
        RestRoute::CreateTopic => create_topic(state, &request.body),
        RestRoute::DeleteTopic(name) => {
            let (response, deleted) = delete_topic(state, &name)?;
            effect = deleted;
            Ok(response)
        }
        RestRoute::Health => Ok(views::health(state, now)),
        RestRoute::Stats => Ok(views::stats(state, now)),
        RestRoute::Metrics => Ok(views::metrics(state, now)),
    });
    let mut response = result.unwrap_or_else(|e| e.response());
    response
        .headers
        .extend(guard::cors_headers(request, origins));
    Outcome {
        answer: Answer::Respond(response),
        effect,
    }
}

/// The checks before an upgrade, in order: origin, API key, the handshake itself.
fn upgrade(state: &State<'_>, request: &Request<'_>, echo: bool) -> Outcome {
    let guarded =
        guard::check_origin(request, state.config.allowed_origins.as_ref()).and_then(|()| {
            match &state.config.api_key {
                Some(key) => guard::check_api_key(request, key, true),
                None => Ok(()),
            }
        });
    let refused = |reason: UpgradeRefusal, failure: Failure| {
        crate::log!(Level::Debug, "upgrade_refused", "reason" => reason.label());
        let mut response = failure.response();
        // Refused while draining: the connection will not be served again.
        response.close = matches!(failure, Failure::ShuttingDown);
        Outcome {
            answer: Answer::Respond(response),
            effect: Effect::UpgradeRefused(reason),
        }
    };
    match guarded {
        Err(e @ GuardError::OriginNotAllowed) => return refused(UpgradeRefusal::Origin, e.into()),
        Err(e) => return refused(UpgradeRefusal::Unauthorized, e.into()),
        Ok(()) => {}
    }
    match handshake::validate(request) {
        Ok(_) if state.shutting_down => {
            refused(UpgradeRefusal::ShuttingDown, Failure::ShuttingDown)
        }
        Ok(accept) => Outcome {
            answer: Answer::Upgrade { accept, echo },
            effect: Effect::None,
        },
        Err(e @ HandshakeError::UnsupportedVersion) => {
            refused(UpgradeRefusal::UnsupportedVersion, e.into())
        }
        Err(e) => refused(UpgradeRefusal::BadHandshake, e.into()),
    }
}

fn create_topic(state: &mut State<'_>, body: &[u8]) -> Result<Response, Failure> {
    let name = body::topic_name(body)?;
    let epoch = state.epochs.next(state.unix_ms);
    state.broker.create_topic(&name, &epoch)?;
    crate::log!(Level::Info, "topic_created", "topic" => name.as_str());
    Ok(created(name.as_str()))
}

fn created(name: &str) -> Response {
    Response::json(
        201,
        &serde_json::json!({"status": "created", "topic": name}),
    )
}

fn deleted(name: &str) -> Response {
    Response::json(
        200,
        &serde_json::json!({"status": "deleted", "topic": name}),
    )
}

/// Cluster mode: the answer to a change once Redis has answered (`Err` for a refusal).
pub fn change_response(
    change: &Change,
    result: Result<(), Failure>,
    headers: Vec<(&'static str, String)>,
) -> Response {
    let mut response = match (change, result) {
        (_, Err(e)) => e.response(),
        (Change::Create { name, .. }, Ok(())) => {
            crate::log!(Level::Info, "topic_created", "topic" => name.as_str());
            created(name)
        }
        (Change::Delete { name }, Ok(())) => {
            crate::log!(Level::Info, "topic_deleted", "topic" => name.as_str());
            deleted(name)
        }
    };
    response.headers.extend(headers);
    response
}

fn delete_topic(state: &mut State<'_>, name: &str) -> Result<(Response, Effect), Failure> {
    let subscribers = state.broker.delete_topic(name)?;
    crate::log!(Level::Info, "topic_deleted", "topic" => name, "subscribers" => subscribers.len());
    let response = deleted(name);
    let effect = Effect::TopicDeleted {
        topic: name.to_string(),
        subscribers,
    };
    Ok((response, effect))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerLimits;
    use crate::http::{parse_request, Parsed, RequestLimits};
    use crate::ids::Replay;

    fn with<T>(config: &Config, broker: &mut Broker, raw: &str, f: impl FnOnce(Outcome) -> T) -> T {
        let stats = Stats::default();
        let now = Instant::now();
        let mut epochs = Epochs::default();
        let mut state = State {
            config,
            broker,
            stats: &stats,
            epochs: &mut epochs,
            unix_ms: 1,
            started: now,
            shutting_down: false,
            buffered: &Buffered::default,
            cluster: None,
        };
        let limits = RequestLimits {
            max_header_bytes: 8192,
            max_body_bytes: 1024,
        };
        match parse_request(raw.as_bytes(), &limits, &mut Default::default()).unwrap() {
            Parsed::Complete(r, _) => f(handle(&mut state, &r, now)),
            Parsed::Partial { .. } => panic!("partial"),
        }
    }

    fn status(o: &Outcome) -> u16 {
        match &o.answer {
            Answer::Respond(r) => r.status,
            Answer::Upgrade { .. } => 101,
            Answer::Backplane { .. } => 0,
        }
    }

    fn broker() -> Broker {
        Broker::new(BrokerLimits {
            max_topics: 2,
            max_subscribers_per_topic: 10,
            history_size: 10,
            history_bytes: 1 << 20,
        })
    }

    #[test]
    fn create_list_and_delete_with_the_effect_on_subscribers() {
        let config = Config::default();
        let mut b = broker();
        let post = |name: &str| {
            let body = format!(r#"{{"name":"{name}"}}"#);
            format!(
                "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        assert_eq!(with(&config, &mut b, &post("a"), |o| status(&o)), 201);
        assert_eq!(with(&config, &mut b, &post("a"), |o| status(&o)), 409);
        assert_eq!(with(&config, &mut b, &post("b"), |o| status(&o)), 201);
        assert_eq!(with(&config, &mut b, &post("c"), |o| status(&o)), 403);
        assert_eq!(with(&config, &mut b, &post(".."), |o| status(&o)), 400);
        let sub = ConnId::new(3, 1);
        b.subscribe(sub, "a", Replay::None, None).unwrap();
        let effect = with(&config, &mut b, "DELETE /topics/a HTTP/1.1\r\n\r\n", |o| {
            assert_eq!(status(&o), 200);
            o.effect
        });
        assert_eq!(
            effect,
            Effect::TopicDeleted {
                topic: "a".into(),
                subscribers: vec![sub]
            }
        );
        assert_eq!(b.topic_count(), 1);
    }

    #[test]
    fn bodies_that_are_not_a_name_object() {
        let config = Config::default();
        let mut b = broker();
        for (body, message) in [
            ("[1]", "body must be a JSON object"),
            ("{}", "name is required"),
            (r#"{"name":5}"#, "name must be a string"),
            (r#"{"name":"a b"}"#, "topic must be"),
        ] {
            let raw = format!(
                "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            with(&config, &mut b, &raw, |o| match o.answer {
                Answer::Respond(r) => {
                    assert_eq!(r.status, 400, "{body}");
                    assert!(String::from_utf8_lossy(&r.body).contains(message), "{body}");
                }
                other => panic!("{other:?}"),
            });
        }
    }

    #[test]
    fn upgrades_are_checked_in_order_and_refusals_named() {
        let config = Config {
            api_key: Some(crate::config::Secret("k".into())),
            ..Config::default()
        };
        let mut b = broker();
        let upgrade = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
        let refusal = |extra: &str, b: &mut Broker| {
            with(&config, b, &format!("{upgrade}{extra}\r\n"), |o| o.effect)
        };
        assert_eq!(
            refusal("", &mut b),
            Effect::UpgradeRefused(UpgradeRefusal::Unauthorized)
        );
        let accepted = with(
            &config,
            &mut b,
            &format!("{upgrade}X-API-Key: k\r\n\r\n"),
            |o| matches!(o.answer, Answer::Upgrade { echo: false, ref accept } if accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        assert!(accepted);
        let bad_version = upgrade.replace("Version: 13", "Version: 8");
        let e = with(
            &config,
            &mut b,
            &format!("{bad_version}X-API-Key: k\r\n\r\n"),
            |o| {
                assert_eq!(status(&o), 426);
                o.effect
            },
        );
        assert_eq!(
            e,
            Effect::UpgradeRefused(UpgradeRefusal::UnsupportedVersion)
        );
    }

    #[test]
    fn head_answers_carry_no_body_but_the_length() {
        let config = Config::default();
        let mut b = broker();
        with(
            &config,
            &mut b,
            "HEAD /health HTTP/1.1\r\n\r\n",
            |o| match o.answer {
                Answer::Respond(r) => {
                    assert!(r.head && !r.body.is_empty());
                    let bytes = r.encode(true, false);
                    assert!(bytes.ends_with(b"\r\n\r\n"));
                }
                other => panic!("{other:?}"),
            },
        );
    }
}
