//! `GET /metrics`: the counters in the Prometheus text exposition format, version 0.0.4.

use std::fmt::Write;
use std::time::Duration;

use crate::stats::{Histogram, Stats, UpgradeRefusal};
use crate::ws::CloseCode;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Gauges {
    pub topics: usize,
    pub subscriptions: usize,
    pub uptime: Duration,
    pub buffered: crate::rest::Buffered,
    /// Cluster mode: the instance's place in its cluster.
    pub cluster: Option<crate::rest::ClusterStatus>,
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.head(name, "histogram", help);
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            match Histogram::bound(i) {
                Some(le) => {
                    let _ = writeln!(self.0, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(self.0, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
    }
}

/// Cluster mode's series: per instance, all of them (each instance is scraped on its own).
fn cluster(out: &mut Out, c: &crate::rest::ClusterStatus) {
    out.one(
        "pubsub_cluster_engine_up",
        "gauge",
        "1 when the instance is connected to Redis and in step with it, else 0.",
        u8::from(c.is_up()),
    );
    out.one(
        "pubsub_cluster_lag_seconds",
        "gauge",
        "How long the oldest command to Redis has waited for its reply.",
        c.lag_ms as f64 / 1000.0,
    );
    out.one(
        "pubsub_cluster_in_flight",
        "gauge",
        "Commands sent to Redis and not yet answered.",
        c.in_flight,
    );
    let k = &c.counters;
    for (name, help, value) in [
        (
            "pubsub_cluster_reconnects_total",
            "Connections to Redis made after the first.",
            k.reconnects,
        ),
        (
            "pubsub_cluster_gaps_filled_total",
            "Gaps in a topic's stream filled from its stored history.",
            k.gaps_filled,
        ),
        (
            "pubsub_cluster_data_lost_total",
            "Reconnects that found Redis had lost its data (its topics were created again).",
            k.data_lost,
        ),
        (
            "pubsub_cluster_renewed_total",
            "Topics found gone back under their epoch after a reconnect (Redis restored older data), given a new epoch.",
            k.renewed,
        ),
        (
            "pubsub_cluster_resets_total",
            "Topics whose subscribers were told reset (a new epoch, or events lost for good).",
            k.resets,
        ),
        (
            "pubsub_cluster_unavailable_total",
            "Requests answered UNAVAILABLE.",
            k.unavailable,
        ),
        (
            "pubsub_cluster_probes_total",
            "Idle probes of the connection to Redis.",
            k.probes,
        ),
    ] {
        out.one(name, "counter", help, value);
    }
    out.histogram(
        "pubsub_cluster_round_trip_microseconds",
        "From a request being asked of Redis to its answer.",
        &k.round_trip_us,
    );
}

pub fn render(stats: &Stats, gauges: &Gauges) -> String {
    let mut out = Out(String::with_capacity(4096));
    let c = &stats.connections;
    let m = &stats.messages;
    let l = &stats.event_loop;
    out.head("pubsub_connections", "gauge", "Open connections by phase.");
    let _ = writeln!(out.0, "pubsub_connections{{phase=\"http\"}} {}", c.http);
    let _ = writeln!(
        out.0,
        "pubsub_connections{{phase=\"websocket\"}} {}",
        c.websocket
    );
    out.one(
        "pubsub_connections_accepted_total",
        "counter",
        "Connections accepted (HTTP) since start.",
        c.accepted,
    );
    out.one(
        "pubsub_request_timeouts_total",
        "counter",
        "Connections closed because a request's head or body did not arrive in time.",
        c.request_timeouts,
    );
    out.one(
        "pubsub_websocket_upgrades_total",
        "counter",
        "Connections upgraded to WebSocket since start.",
        c.upgrades,
    );
    out.head(
        "pubsub_connections_refused_total",
        "counter",
        "Connections refused at accept, by limit.",
    );
    let _ = writeln!(
        out.0,
        "pubsub_connections_refused_total{{reason=\"max_connections\"}} {}",
        c.refused
    );
    let _ = writeln!(
        out.0,
        "pubsub_connections_refused_total{{reason=\"max_connections_per_ip\"}} {}",
        c.refused_per_ip
    );
    let _ = writeln!(
        out.0,
        "pubsub_connections_refused_total{{reason=\"no_descriptor\"}} {}",
        c.refused_no_descriptor
    );
    out.head(
        "pubsub_upgrades_refused_total",
        "counter",
        "WebSocket upgrade requests refused, by reason.",
    );
    // Every label from the start, so the series exist before the first refusal.
    for reason in UpgradeRefusal::ALL {
        let _ = writeln!(
            out.0,
            "pubsub_upgrades_refused_total{{reason=\"{}\"}} {}",
            reason.label(),
            c.upgrades_refused.get(reason)
        );
    }
    out.head(
        "pubsub_closes_sent_total",
        "counter",
        "WebSocket close frames sent by the server, by status code.",
    );
    let sent_by_us = CloseCode::ALL.map(CloseCode::as_u16);
    for code in sent_by_us
        .iter()
        .chain(c.closes_sent.keys().filter(|k| !sent_by_us.contains(k)))
    {
        let n = c.closes_sent.get(code).copied().unwrap_or(0);
        let _ = writeln!(out.0, "pubsub_closes_sent_total{{code=\"{code}\"}} {n}");
    }
    out.one(
        "pubsub_topics",
        "gauge",
        "Topics that exist.",
        gauges.topics,
    );
    out.one(
        "pubsub_subscriptions",
        "gauge",
        "Subscriptions across all topics.",
        gauges.subscriptions,
    );
    out.head(
        "pubsub_buffered_bytes",
        "gauge",
        "Bytes held in connections' buffers: input not yet handled (with messages still arriving) and output waiting.",
    );
    let _ = writeln!(
        out.0,
        "pubsub_buffered_bytes{{direction=\"input\"}} {}",
        gauges.buffered.input_bytes
    );
    let _ = writeln!(
        out.0,
        "pubsub_buffered_bytes{{direction=\"output\"}} {}",
        gauges.buffered.output_bytes
    );
    out.one(
        "pubsub_messages_published_total",
        "counter",
        "Events published.",
        m.published,
    );
    out.one(
        "pubsub_messages_delivered_total",
        "counter",
        "Live events queued to subscribers.",
        m.delivered,
    );
    out.one(
        "pubsub_messages_replayed_total",
        "counter",
        "History events replayed on subscribe.",
        m.replayed,
    );
    out.one(
        "pubsub_duplicate_publishes_total",
        "counter",
        "Publishes not published again: their message id was already retained.",
        m.duplicates,
    );
    out.one(
        "pubsub_slow_consumer_disconnects_total",
        "counter",
        "Connections cut for overflowing their queue.",
        m.slow_consumer_disconnects,
    );
    out.one(
        "pubsub_heartbeat_timeouts_total",
        "counter",
        "Connections closed for silence over two heartbeat intervals.",
        m.heartbeat_timeouts,
    );
    out.one(
        "pubsub_message_timeouts_total",
        "counter",
        "WebSocket messages begun and not completed within MESSAGE_TIMEOUT_SECS.",
        m.message_timeouts,
    );
    out.one(
        "pubsub_publishes_rate_limited_total",
        "counter",
        "Publishes refused by PUBLISH_RATE_LIMIT.",
        m.rate_limited,
    );
    out.one(
        "pubsub_bytes_received_total",
        "counter",
        "Bytes read from sockets.",
        l.bytes_in,
    );
    out.one(
        "pubsub_bytes_sent_total",
        "counter",
        "Bytes written to sockets.",
        l.bytes_out,
    );
    out.one(
        "pubsub_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        gauges.uptime.as_secs(),
    );
    out.one(
        "pubsub_loop_ticks_total",
        "counter",
        "Event-loop iterations.",
        l.ticks,
    );
    out.one(
        "pubsub_loop_events_total",
        "counter",
        "Readiness events handled.",
        l.events,
    );
    out.one(
        "pubsub_loop_read_calls_total",
        "counter",
        "read(2) calls that returned data.",
        l.read_calls,
    );
    out.one(
        "pubsub_loop_write_calls_total",
        "counter",
        "Write system calls to connections (send, or sendmsg for several frames) that wrote data.",
        l.write_calls,
    );
    out.one(
        "pubsub_loop_frames_written_total",
        "counter",
        "Frames and responses completely written.",
        l.frames_written,
    );
    out.histogram(
        "pubsub_loop_events_per_tick",
        "Readiness events returned by one poll.",
        &l.events_per_tick,
    );
    out.histogram(
        "pubsub_loop_frames_per_write",
        "Frames completed by one write call.",
        &l.frames_per_write,
    );
    if let Some(c) = &gauges.cluster {
        cluster(&mut out, c);
    }
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_a_type_line_and_numbers() {
        let mut stats = Stats::default();
        stats.event_loop.events_per_tick.record(3);
        stats.connections.closes_sent.insert(4000, 2);
        let text = render(
            &stats,
            &Gauges {
                topics: 2,
                subscriptions: 5,
                uptime: Duration::from_secs(7),
                cluster: None,
                buffered: crate::rest::Buffered {
                    input_bytes: 11,
                    output_bytes: 13,
                },
            },
        );
        assert!(text.contains("pubsub_buffered_bytes{direction=\"input\"} 11\n"));
        assert!(text.contains("pubsub_buffered_bytes{direction=\"output\"} 13\n"));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                typed.contains(name) || typed.contains(base),
                "{line} has no TYPE"
            );
        }
        assert!(text.contains("pubsub_topics 2\n"));
        assert!(text.contains("pubsub_closes_sent_total{code=\"4000\"} 2\n"));
        assert!(text.contains("pubsub_loop_events_per_tick_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("pubsub_loop_events_per_tick_bucket{le=\"+Inf\"} 1\n"));
    }
}
