//! The read-only views: `/topics`, `/health`, `/stats` as JSON and `/metrics` as Prometheus
//! text, each built from the broker and the counters.

use std::time::Instant;

use serde::Serialize;

use super::State;
use crate::http::Response;
use crate::metrics;

pub fn topics(state: &State<'_>) -> Response {
    #[derive(Serialize)]
    struct Item<'a> {
        name: &'a str,
        subscribers: usize,
    }
    #[derive(Serialize)]
    struct List<'a> {
        topics: Vec<Item<'a>>,
    }
    let topics = state
        .broker
        .topics()
        .into_iter()
        .map(|t| Item {
            name: &t.name,
            subscribers: t.subscribers().len(),
        })
        .collect();
    Response::json(200, &List { topics })
}

/// In cluster mode 503 while the instance is not in step with Redis, so a load balancer
/// drains it; `topics` is then the cluster's, `subscribers` this instance's.
pub fn health(state: &State<'_>, now: Instant) -> Response {
    let mut body = serde_json::json!({
        "uptime_sec": state.uptime(now).as_secs(),
        "topics": state.broker.topic_count(),
        "subscribers": state.broker.subscription_count(),
    });
    let mut status = 200;
    if let Some(c) = &state.cluster {
        body["instance"] = c.instance.clone().into();
        body["engine"] = c.engine.into();
        body["lag_ms"] = c.lag_ms.into();
        if !c.is_up() {
            status = 503;
        }
    }
    Response::json(status, &body)
}

pub fn stats(state: &State<'_>, now: Instant) -> Response {
    let mut topics = serde_json::Map::new();
    for t in state.broker.topics() {
        topics.insert(
            t.name.to_string(),
            serde_json::json!({
                "messages": t.last_seq(),
                "subscribers": t.subscribers().len(),
                "retained": t.history_len(),
                "retained_bytes": t.history_bytes(),
            }),
        );
    }
    let s = state.stats;
    let mut event_loop = serde_json::to_value(&s.event_loop).unwrap_or_default();
    if let (Some(n), Some(obj)) = (crate::stats::allocations(), event_loop.as_object_mut()) {
        obj.insert("allocations".into(), n.into());
    }
    let mut body = serde_json::json!({
        "topics": topics,
        "uptime_sec": state.uptime(now).as_secs(),
        "slow_consumer_disconnects": s.messages.slow_consumer_disconnects,
        "connections": s.connections,
        "buffered": (state.buffered)(),
        "messages": s.messages,
        "loop": event_loop,
    });
    if let Some(c) = &state.cluster {
        body["cluster"] = serde_json::to_value(c).unwrap_or_default();
    }
    Response::json(200, &body)
}

pub fn metrics(state: &State<'_>, now: Instant) -> Response {
    let gauges = metrics::Gauges {
        topics: state.broker.topic_count(),
        subscriptions: state.broker.subscription_count(),
        uptime: state.uptime(now),
        buffered: (state.buffered)(),
        cluster: state.cluster.clone(),
    };
    let mut r = Response::new(200);
    r.body = metrics::render(state.stats, &gauges).into_bytes();
    r.headers
        .push(("Content-Type", metrics::CONTENT_TYPE.into()));
    r
}
