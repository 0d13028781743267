//! Counters behind `/health` and `/stats`: what the server has done and what its loop does.

use serde::Serialize;

#[derive(Debug, Default, Clone, Serialize)]
pub struct ConnectionStats {
    /// Connections open now, in the HTTP phase and upgraded to WebSocket.
    pub http: usize,
    pub websocket: usize,
    /// Connections accepted since start, and those refused for `MAX_CONNECTIONS`.
    pub accepted: u64,
    pub refused: u64,
    pub upgrades: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct MessageStats {
    pub published: u64,
    pub delivered: u64,
    pub replayed: u64,
    pub slow_consumer_disconnects: u64,
    pub heartbeat_timeouts: u64,
}

/// Event-loop internals, for people studying how the loop behaves under load.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LoopStats {
    pub ticks: u64,
    pub events: u64,
    pub read_calls: u64,
    pub bytes_in: u64,
    pub writev_calls: u64,
    pub frames_written: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub connections: ConnectionStats,
    pub messages: MessageStats,
    #[serde(rename = "loop")]
    pub event_loop: LoopStats,
}
