//! The server's logic without its sockets: connections, their phases and deadlines, the broker
//! and the statistics. The event loop (`server`) hands it bytes that arrived and writes out what
//! it queued; tests and fuzz targets drive it the same way with no socket at all.

mod http;
mod timers;
mod ws;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::broker::{Broker, BrokerLimits, ConnId};
use crate::config::Config;
use crate::guard::TokenBucket;
use crate::log::Level;
use crate::outq::{Bound, Chunk, OutQueue};
use crate::stats::Stats;
use crate::ws::Session;

pub use http::HTTP_OUTQ_PAUSE_BYTES;

/// A connection's state apart from its socket.
#[derive(Debug)]
pub enum Phase {
    Http(HttpState),
    WebSocket(Box<WsState>),
    /// Nothing more is read: flush what is queued, then close.
    Draining {
        write_shut: bool,
    },
}

#[derive(Debug, Default)]
pub struct HttpState {
    continue_sent: bool,
}

#[derive(Debug)]
pub struct WsState {
    session: Session,
    echo: bool,
    /// The server's close frame is queued: nothing else is sent, the peer's close is awaited.
    close_sent: bool,
    /// The publish rate limiter, when `PUBLISH_RATE_LIMIT` is set (boxed: most servers run
    /// without one, and every idle WebSocket would pay for its room).
    bucket: Option<Box<TokenBucket>>,
}

#[derive(Debug)]
pub struct Conn<S> {
    pub socket: S,
    pub id: ConnId,
    pub peer: IpAddr,
    pub phase: Phase,
    /// Bytes received but not yet usable (an unfinished request or frame header).
    inbuf: Vec<u8>,
    pub outq: OutQueue,
    /// When the connection expires (header, idle, or close linger), if it can.
    deadline: Option<Instant>,
    /// The earliest entry this connection has in the timer heap.
    scheduled: Option<Instant>,
    last_seen: Instant,
    dirty: bool,
    doomed: bool,
    /// A WebSocket that takes events: upgraded, not closing, not doomed. Kept in the connection
    /// itself so the fan-out loop never looks behind the WebSocket state's Box.
    receiving: bool,
    /// Loop bookkeeping owned by the server: write interest registered, reading stopped early.
    pub writable_registered: bool,
    pub read_stalled: bool,
    /// Whether this connection counts against `MAX_CONNECTIONS_PER_IP`.
    ip_counted: bool,
}

impl<S> Conn<S> {
    /// Memory this connection holds for itself beyond its fixed size (buffers and queues).
    pub fn footprint(&self) -> usize {
        let session = match &self.phase {
            Phase::WebSocket(ws) => ws.session.buffered() + std::mem::size_of::<WsState>(),
            _ => 0,
        };
        self.inbuf.capacity() + self.outq.footprint() + session
    }
}

/// What the server must do after flushing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFlush {
    Nothing,
    /// Everything is written: send FIN and wait (bounded) for the peer to close.
    ShutdownWrite,
}

pub struct Engine<S> {
    config: Config,
    conns: Slab<Conn<S>>,
    generation: u32,
    broker: Broker,
    stats: Stats,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    dirty: Vec<usize>,
    doomed: Vec<usize>,
    /// Connections cut as slow consumers during a fan-out, taken off their topics after it.
    slow: Vec<ConnId>,
    /// Reused for each publish's subscriber list.
    fanout: Vec<ConnId>,
    /// Reused to serialise each publish's event frame.
    event_buf: Vec<u8>,
    /// Open connections per peer address, kept only when `MAX_CONNECTIONS_PER_IP` is set.
    per_ip: HashMap<IpAddr, u32>,
    started: Instant,
    next_heartbeat: Instant,
    shutting_down: bool,
}

fn slot(id: ConnId) -> usize {
    (id & 0xFFFF_FFFF) as usize
}

impl<S> Engine<S> {
    pub fn new(config: Config, now: Instant) -> Engine<S> {
        let broker = Broker::new(BrokerLimits {
            max_topics: config.max_topics,
            max_subscribers_per_topic: config.max_subscribers_per_topic,
            history_size: config.topic_history_size,
        });
        Engine {
            next_heartbeat: now + config.heartbeat_interval,
            config,
            conns: Slab::new(),
            generation: 0,
            broker,
            stats: Stats::default(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            slow: Vec::new(),
            fanout: Vec::new(),
            event_buf: Vec::new(),
            per_ip: HashMap::new(),
            started: now,
            shutting_down: false,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    pub fn conn(&self, key: usize) -> Option<&Conn<S>> {
        self.conns.get(key)
    }

    pub fn conn_mut(&mut self, key: usize) -> Option<&mut Conn<S>> {
        self.conns.get_mut(key)
    }

    /// A connection and the statistics at once, for the flush that updates both.
    pub fn conn_and_stats(&mut self, key: usize) -> (Option<&mut Conn<S>>, &mut Stats) {
        (self.conns.get_mut(key), &mut self.stats)
    }

    /// Takes a new connection; returns its slab key (also its poll token). Past
    /// `MAX_CONNECTIONS` it is still taken, but only to be answered 503 and closed.
    pub fn open(&mut self, socket: S, peer: IpAddr, now: Instant) -> usize {
        self.generation = self.generation.wrapping_add(1);
        let over_limit = self.conns.len() >= self.config.max_connections;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let id = (u64::from(self.generation) << 32) | key as u64;
        entry.insert(Conn {
            socket,
            id,
            peer,
            phase: Phase::Http(HttpState::default()),
            inbuf: Vec::new(),
            outq: OutQueue::default(),
            deadline: None,
            scheduled: None,
            last_seen: now,
            dirty: false,
            doomed: false,
            receiving: false,
            writable_registered: false,
            read_stalled: false,
            ip_counted: false,
        });
        let per_ip_limit = self.config.max_connections_per_ip;
        let per_ip_full = per_ip_limit > 0
            && self
                .per_ip
                .get(&peer)
                .is_some_and(|&n| n as usize >= per_ip_limit);
        if over_limit {
            self.stats.connections.refused += 1;
            crate::log!(Level::Warn, "connection_refused", "conn" => id, "reason" => "max_connections");
            self.refuse_unavailable(key, now);
        } else if per_ip_full {
            self.stats.connections.refused_per_ip += 1;
            crate::log!(Level::Info, "connection_refused", "conn" => id, "reason" => "max_connections_per_ip", "peer" => peer.to_string());
            self.refuse_unavailable(key, now);
        } else {
            if per_ip_limit > 0 {
                *self.per_ip.entry(peer).or_insert(0) += 1;
                self.conns[key].ip_counted = true;
            }
            self.stats.connections.accepted += 1;
            self.stats.connections.http += 1;
            crate::log!(Level::Debug, "connection_opened", "conn" => id, "peer" => peer.to_string());
            self.set_deadline(key, now + self.config.header_timeout);
        }
        key
    }

    /// Bytes arrived on a connection.
    pub fn receive(&mut self, key: usize, input: &mut [u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_seen = now;
        if conn.doomed || matches!(conn.phase, Phase::Draining { .. }) {
            return;
        }
        if conn.inbuf.is_empty() {
            let used = self.consume(key, input, now);
            if let Some(conn) = self.conns.get_mut(key) {
                conn.inbuf.extend_from_slice(&input[used..]);
            }
        } else {
            conn.inbuf.extend_from_slice(input);
            self.consume_buffered(key, now);
        }
    }

    /// Processes what a connection has buffered (after more input, or after a pause ends).
    fn consume_buffered(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut buf = std::mem::take(&mut conn.inbuf);
        let used = self.consume(key, &mut buf, now);
        buf.drain(..used);
        if let Some(conn) = self.conns.get_mut(key) {
            if buf.is_empty() {
                buf = Vec::new();
            }
            conn.inbuf = buf;
        }
    }

    /// Runs the connection's phase over `buf`; returns how many bytes were used.
    fn consume(&mut self, key: usize, buf: &mut [u8], now: Instant) -> usize {
        let mut pos = 0;
        loop {
            let Some(conn) = self.conns.get(key) else {
                return buf.len();
            };
            if conn.doomed {
                return buf.len();
            }
            let used = match conn.phase {
                Phase::Http(_) => self.consume_http(key, &mut buf[pos..], now),
                Phase::WebSocket(_) => self.consume_ws(key, &mut buf[pos..], now),
                Phase::Draining { .. } => return buf.len(),
            };
            pos += used.bytes;
            if !used.phase_changed || pos == buf.len() {
                return pos;
            }
        }
    }

    /// Whether the server should keep reading this connection now.
    pub fn wants_read(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(|c| {
            !c.doomed
                && match c.phase {
                    Phase::Http(_) => c.outq.bytes() < HTTP_OUTQ_PAUSE_BYTES,
                    Phase::WebSocket(ref ws) if ws.echo => {
                        c.outq.bytes() < ws::ECHO_OUTQ_PAUSE_BYTES
                    }
                    Phase::WebSocket(_) => c.outq.bytes() <= self.config.max_queue_bytes,
                    Phase::Draining { .. } => true,
                }
        })
    }

    /// The peer closed its side (read returned 0).
    pub fn peer_closed(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            // Answers to requests already received still go out.
            Phase::Http(_) if !conn.outq.is_empty() => self.drain(key, now),
            _ => self.doom(key, "peer_closed"),
        }
    }

    /// The socket failed (reset, broken pipe): nothing more can be sent.
    pub fn socket_failed(&mut self, key: usize) {
        self.doom(key, "socket_error");
    }

    /// Keys of connections with something new to write, each once.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        let keys = std::mem::take(&mut self.dirty);
        for &k in &keys {
            if let Some(c) = self.conns.get_mut(k) {
                c.dirty = false;
            }
        }
        keys
    }

    /// Puts a used `take_dirty` vector back so its capacity is reused.
    pub fn return_dirty(&mut self, mut keys: Vec<usize>) {
        if self.dirty.is_empty() {
            keys.clear();
            self.dirty = keys;
        }
    }

    /// Called after the server wrote a connection's queue out as far as the socket took it.
    pub fn after_flush(&mut self, key: usize, now: Instant) -> AfterFlush {
        let Some(conn) = self.conns.get_mut(key) else {
            return AfterFlush::Nothing;
        };
        if !conn.outq.is_empty() || conn.doomed {
            return AfterFlush::Nothing;
        }
        match conn.phase {
            Phase::Draining { write_shut: false } => {
                conn.phase = Phase::Draining { write_shut: true };
                AfterFlush::ShutdownWrite
            }
            Phase::Http(_) | Phase::WebSocket(_) if !conn.inbuf.is_empty() => {
                // A pause for a full queue has ended: serve what was held back.
                self.consume_buffered(key, now);
                AfterFlush::Nothing
            }
            _ => AfterFlush::Nothing,
        }
    }

    /// Keys of connections to close and forget, each once.
    pub fn take_doomed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.doomed)
    }

    /// Forgets a doomed connection and hands its socket back to be closed.
    pub fn remove(&mut self, key: usize) -> Option<S> {
        if !self.conns.get(key).is_some_and(|c| c.doomed) {
            return None;
        }
        let conn = self.conns.remove(key);
        self.broker.disconnect(conn.id);
        if conn.ip_counted {
            if let Some(n) = self.per_ip.get_mut(&conn.peer) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&conn.peer);
                }
            }
        }
        match conn.phase {
            Phase::Http(_) => self.stats.connections.http -= 1,
            Phase::WebSocket(_) => self.stats.connections.websocket -= 1,
            Phase::Draining { .. } => {}
        }
        Some(conn.socket)
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn push(&mut self, key: usize, chunk: Chunk, bound: Bound) {
        if let Some(c) = self.conns.get_mut(key) {
            c.outq.push(chunk, bound);
            self.mark_dirty(key);
        }
    }

    fn doom(&mut self, key: usize, reason: &'static str) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.doomed {
            return;
        }
        c.doomed = true;
        c.receiving = false;
        crate::log!(Level::Debug, "connection_closed", "conn" => c.id, "reason" => reason);
        self.doomed.push(key);
    }

    /// Stops reading; flushes what is queued, then closes (bounded by the close linger).
    fn drain(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match c.phase {
            Phase::Http(_) => self.stats.connections.http -= 1,
            Phase::WebSocket(_) => self.stats.connections.websocket -= 1,
            Phase::Draining { .. } => return,
        }
        c.phase = Phase::Draining { write_shut: false };
        c.receiving = false;
        c.inbuf = Vec::new();
        self.set_deadline(key, now + self.config.close_linger);
        self.mark_dirty(key);
    }

    /// Stop accepting work: idle connections close now, requests in flight finish, WebSockets
    /// get their queued events and then close 1001.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let c = &self.conns[key];
            match &c.phase {
                Phase::Http(_) if c.inbuf.is_empty() && c.outq.is_empty() => {
                    self.doom(key, "shutdown")
                }
                Phase::Http(_) => {}
                Phase::WebSocket(_) => self.start_close(
                    key,
                    crate::ws::CloseCode::GoingAway,
                    "server shutting down",
                    now,
                ),
                Phase::Draining { .. } => {}
            }
        }
    }

    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

/// What one pass of a phase over the input did.
struct Consumed {
    bytes: usize,
    phase_changed: bool,
}
