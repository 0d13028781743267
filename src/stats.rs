//! Counters behind `/health`, `/stats` and `/metrics`: what the server has done and what its
//! loop does, with the label tables both views list them by.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Why an upgrade request was refused: the labels of `/stats` and `/metrics` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRefusal {
    Unauthorized,
    Origin,
    BadHandshake,
    UnsupportedVersion,
    ShuttingDown,
}

impl UpgradeRefusal {
    pub const ALL: [UpgradeRefusal; 5] = [
        UpgradeRefusal::Unauthorized,
        UpgradeRefusal::Origin,
        UpgradeRefusal::BadHandshake,
        UpgradeRefusal::UnsupportedVersion,
        UpgradeRefusal::ShuttingDown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpgradeRefusal::Unauthorized => "unauthorized",
            UpgradeRefusal::Origin => "origin",
            UpgradeRefusal::BadHandshake => "bad_handshake",
            UpgradeRefusal::UnsupportedVersion => "unsupported_version",
            UpgradeRefusal::ShuttingDown => "shutting_down",
        }
    }
}

/// Refused upgrades counted by reason; serialised with every label, zeros included.
#[derive(Debug, Default, Clone)]
pub struct UpgradeRefusals([u64; UpgradeRefusal::ALL.len()]);

impl UpgradeRefusals {
    pub fn add(&mut self, reason: UpgradeRefusal) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: UpgradeRefusal) -> u64 {
        self.0[reason as usize]
    }
}

impl Serialize for UpgradeRefusals {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(UpgradeRefusal::ALL.len()))?;
        for reason in UpgradeRefusal::ALL {
            map.serialize_entry(reason.label(), &self.get(reason))?;
        }
        map.end()
    }
}

static ALLOCATION_COUNTER: OnceLock<fn() -> u64> = OnceLock::new();

/// A binary built with a counting allocator (the benchmark's `pubsub-counting`) registers it
/// here, and `/stats` then reports `loop.allocations`.
pub fn count_allocations_with(counter: fn() -> u64) {
    let _ = ALLOCATION_COUNTER.set(counter);
}

/// Heap allocations since start, when a counting allocator is registered.
pub fn allocations() -> Option<u64> {
    ALLOCATION_COUNTER.get().map(|count| count())
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ConnectionStats {
    /// Connections open now, in the HTTP phase and upgraded to WebSocket.
    pub http: usize,
    pub websocket: usize,
    /// Connections accepted since start, and those refused for `MAX_CONNECTIONS`.
    pub accepted: u64,
    pub refused: u64,
    /// Connections refused for `MAX_CONNECTIONS_PER_IP`.
    pub refused_per_ip: u64,
    /// Connections answered 503 and closed because no descriptor was free.
    pub refused_no_descriptor: u64,
    pub upgrades: u64,
    /// Connections closed because a request's head or body did not arrive in time.
    pub request_timeouts: u64,
    /// Upgrade requests refused, by reason.
    pub upgrades_refused: UpgradeRefusals,
    /// Close frames the server sent, by status code.
    pub closes_sent: BTreeMap<u16, u64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct MessageStats {
    pub published: u64,
    pub delivered: u64,
    pub replayed: u64,
    /// Publishes not published again: the topic retained an event with their message id.
    pub duplicates: u64,
    /// Shown once, at the top of `/stats`.
    #[serde(skip)]
    pub slow_consumer_disconnects: u64,
    pub heartbeat_timeouts: u64,
    /// WebSocket messages begun and not completed within `MESSAGE_TIMEOUT_SECS`.
    pub message_timeouts: u64,
    pub rate_limited: u64,
}

/// Cluster mode: what this instance did with Redis since start.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ClusterStats {
    /// Connections to Redis made after the first.
    pub reconnects: u64,
    /// Gaps in a topic's stream filled from its stored history.
    pub gaps_filled: u64,
    /// Reconnects that found Redis had lost its data; its topics were created again.
    pub data_lost: u64,
    /// Topics found gone back under their epoch after a reconnect (Redis restored older data)
    /// and given a new one.
    pub renewed: u64,
    /// Topics whose subscribers were told `reset` (a new epoch, or events lost for good).
    pub resets: u64,
    /// Requests answered `UNAVAILABLE` (Redis away, or its answer overdue).
    pub unavailable: u64,
    /// Idle probes of the connection.
    pub probes: u64,
    /// How long requests took from being asked of Redis to its answer, in microseconds.
    pub round_trip_us: Histogram,
}

/// Event-loop internals, for people studying how the loop behaves under load.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LoopStats {
    pub ticks: u64,
    pub events: u64,
    pub read_calls: u64,
    pub bytes_in: u64,
    pub write_calls: u64,
    pub frames_written: u64,
    pub bytes_out: u64,
    /// How many events each poll returned, and how many frames each write call carried.
    pub events_per_tick: Histogram,
    pub frames_per_write: Histogram,
}

/// Counts in power-of-two buckets: bucket `i` holds values up to `2^i` (the last one, the rest).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Histogram {
    pub buckets: [u64; HISTOGRAM_BUCKETS],
    pub count: u64,
    pub sum: u64,
}

pub const HISTOGRAM_BUCKETS: usize = 12;

impl Histogram {
    pub fn record(&mut self, value: u64) {
        let bucket = if value <= 1 {
            0
        } else {
            (64 - (value - 1).leading_zeros()) as usize
        };
        self.buckets[bucket.min(HISTOGRAM_BUCKETS - 1)] += 1;
        self.count += 1;
        self.sum += value;
    }

    /// The upper bound of bucket `i` (`None` for the last, unbounded one).
    pub fn bound(i: usize) -> Option<u64> {
        (i < HISTOGRAM_BUCKETS - 1).then(|| 1u64 << i)
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub connections: ConnectionStats,
    pub messages: MessageStats,
    #[serde(rename = "loop")]
    pub event_loop: LoopStats,
    pub cluster: ClusterStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 3, 4, 5, 1024, 1025, 1 << 40] {
            h.record(v);
        }
        assert_eq!(&h.buckets[..4], &[2, 1, 2, 1]);
        assert_eq!(h.buckets[10], 1);
        assert_eq!(h.buckets[11], 2);
        assert_eq!(h.count, 9);
        assert_eq!(Histogram::bound(3), Some(8));
        assert_eq!(Histogram::bound(11), None);
    }

    #[test]
    fn refusals_serialise_with_every_label() {
        let mut r = UpgradeRefusals::default();
        r.add(UpgradeRefusal::Origin);
        r.add(UpgradeRefusal::Origin);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v.as_object().unwrap().len(), UpgradeRefusal::ALL.len());
        assert_eq!(
            (v["origin"].as_u64(), v["shutting_down"].as_u64()),
            (Some(2), Some(0))
        );
    }
}
