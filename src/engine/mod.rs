//! The server without its sockets. The event loop (`server`) owns the transport and calls the
//! engine in the same order every tick:
//!
//! 1. `begin_tick`, then `readiness` for each event the poll returned;
//! 2. `next_read` / `received`: each readable connection is read (one buffer at a time, every
//!    connection once before any twice) and its input handled within its share of the tick;
//!    what the share leaves waits for the next tick;
//! 3. `tick`: input held back earlier, then deadlines and heartbeats;
//! 4. `next_flush`: each connection with output is offered to its transport once, within a
//!    per-connection write budget; the slow-consumer bound is applied here, to what the
//!    transport refused;
//! 5. `next_closed`: finished connections hand their transport back to be closed.
//!
//! Handlers only queue output and move connections between lists; nothing is written or read
//! from inside a handler, and a flush never handles input. Tests and fuzz targets drive the
//! engine the same way with a `Vec<u8>` as transport. The engine never reads a clock: the loop
//! passes the monotonic and the wall-clock time.

mod answers;
pub mod cluster;
mod conn;
mod http;
mod input;
mod lifecycle;
mod output;
mod timers;
mod ws;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::time::Instant;

use slab::Slab;

use crate::broker::{Broker, BrokerLimits};
use crate::config::Config;
use crate::ids::{ConnId, Epochs};
use crate::log::{Level, Throttle};
use crate::stats::Stats;
use crate::time::Timestamp;
use answers::Ticket;

/// A place in one connection's answers for an answer that comes later, naming the connection
/// by slot and generation, so it can never complete another connection's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredAnswer {
    conn: ConnId,
    ticket: Ticket,
}
use conn::{Conn, Lifecycle};
use input::Stop;

/// Requests, messages and frames one connection may have handled per tick; the rest waits for
/// the next tick, so a client that sends as fast as it can gets the same share as the others.
pub const INPUT_BUDGET: u32 = 256;
/// While this much output waits for a connection, its next request waits too (and its socket
/// is not read): a client that does not read its answers is slowed down, not served ahead.
/// The WebSocket protocol pauses at `MAX_QUEUE_BYTES` if that is lower.
pub const PAUSE_BYTES: usize = 256 * 1024;
/// Log lines a second for connections closed for their clients' doing.
pub const CLOSE_LINES_PER_SECOND: u32 = 20;
/// Bytes offered to one connection per tick (more while it is over its event bound).
pub const WRITE_BUDGET: usize = 1024 * 1024;
/// Reads of one connection per tick (each fills at most the loop's 64 KiB buffer), while its
/// input budget lasts.
pub const READS_PER_TICK: u8 = 16;
/// Requests of one connection whose answers may wait for Redis (cluster mode) before its next
/// request waits too: a publisher pipelines this many publishes, no more.
pub const MAX_DEFERRED: usize = 64;

/// What the transport reported for a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    pub readable: bool,
    /// The peer closed its side or the socket has an error: read on to the end.
    pub hangup: bool,
    pub writable: bool,
}

/// The result of one read from a connection's transport.
#[derive(Debug)]
pub enum Received<'a> {
    /// Bytes arrived. `filled` says they filled the buffer, so more may be waiting.
    Data { bytes: &'a mut [u8], filled: bool },
    /// Nothing to read (`WouldBlock`).
    Empty,
    /// The peer closed its side.
    End,
    /// The transport failed.
    Failed,
}

/// What the loop must do after a connection was flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub key: usize,
    /// Write interest must be turned on (`Some(true)`) or off (`Some(false)`).
    pub write_interest: Option<bool>,
    /// Everything is written and the connection is closing: shut the write side.
    pub shutdown_write: bool,
}

/// The engine's work lists: what to do this tick, and what was left for the next one, each
/// served first in, first out. They hold ids, not keys, so an entry left for a connection that
/// is gone meanwhile never reaches the one that reuses its slot.
#[derive(Debug, Default)]
struct Lists {
    reads: VecDeque<ConnId>,
    reads_next: VecDeque<ConnId>,
    runs: VecDeque<ConnId>,
    runs_next: VecDeque<ConnId>,
    /// In the order output was queued: a publisher's ack goes out after the fan-out it caused.
    dirty: VecDeque<ConnId>,
    dirty_next: VecDeque<ConnId>,
    closed: Vec<ConnId>,
}

pub struct Engine<S> {
    config: Config,
    conns: Slab<Conn<S>>,
    generation: u32,
    broker: Broker,
    stats: Stats,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    lists: Lists,
    /// Open connections per peer address, kept only when `MAX_CONNECTIONS_PER_IP` is set.
    per_ip: HashMap<IpAddr, u32>,
    /// Reused for each publish's subscriber list and event frame.
    fanout: Vec<ConnId>,
    event_buf: Vec<u8>,
    /// The wall-clock time of this tick, as every message sent in it carries it.
    ts: Timestamp,
    unix_ms: u64,
    epochs: Epochs,
    /// Counts ticks, so a connection's share is renewed once per tick.
    tick_no: u32,
    /// Refusals can come by the thousand a second: their log lines are throttled.
    refusal_log: Throttle,
    /// So can connections closed for what their clients did (timeouts, violations, slow
    /// consumers): a line each up to `CLOSE_LINES_PER_SECOND`, then a count.
    close_log: Throttle,
    started: Instant,
    next_heartbeat: Instant,
    shutting_down: bool,
    /// Cluster mode (`REDIS_URL`): the backplane and what waits on it.
    cluster: Option<cluster::Cluster>,
}

impl<S> Engine<S> {
    pub fn new(config: Config, now: Instant) -> Engine<S> {
        let broker = Broker::new(BrokerLimits {
            max_topics: config.max_topics,
            max_subscribers_per_topic: config.max_subscribers_per_topic,
            history_size: config.topic_history_size,
            history_bytes: config.topic_history_bytes,
        });
        let cluster = config.redis_url.clone().map(|url| {
            let instance = config
                .instance_id
                .clone()
                .unwrap_or_else(|| format!("{:012x}", crate::ids::random_u64() >> 16));
            cluster::Cluster::new(url, cluster::settings(&config), instance, now)
        });
        Engine {
            cluster,
            next_heartbeat: now + config.heartbeat_interval,
            config,
            conns: Slab::new(),
            generation: 0,
            broker,
            stats: Stats::default(),
            timers: BinaryHeap::new(),
            lists: Lists::default(),
            per_ip: HashMap::new(),
            fanout: Vec::new(),
            event_buf: Vec::new(),
            ts: Timestamp::at(0),
            unix_ms: 0,
            epochs: Epochs::default(),
            tick_no: 0,
            refusal_log: Throttle::default(),
            close_log: Throttle::per_second(CLOSE_LINES_PER_SECOND),
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

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    pub fn io(&self, key: usize) -> Option<&S> {
        self.conns.get(key).map(|c| &c.io)
    }

    pub fn io_mut(&mut self, key: usize) -> Option<&mut S> {
        self.conns.get_mut(key).map(|c| &mut c.io)
    }

    /// Memory a connection holds beyond its fixed size (for the fuzz target's bound).
    pub fn footprint(&self, key: usize) -> Option<usize> {
        self.conns.get(key).map(Conn::footprint)
    }

    /// Takes a new connection; returns its key (also its poll token). Past `MAX_CONNECTIONS`
    /// or `MAX_CONNECTIONS_PER_IP` it is still taken, but only to be answered 503 and closed.
    pub fn open(&mut self, io: S, peer: IpAddr, now: Instant) -> usize {
        self.generation = self.generation.wrapping_add(1);
        let over_limit = self.conns.len() >= self.config.max_connections;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let id = ConnId::new(key, self.generation);
        entry.insert(Conn::new(io, id, peer, now));
        let per_ip_limit = self.config.max_connections_per_ip;
        let per_ip_full = per_ip_limit > 0
            && self
                .per_ip
                .get(&peer)
                .is_some_and(|&n| n as usize >= per_ip_limit);
        if over_limit {
            self.stats.connections.refused += 1;
            if let Some(suppressed) = self.refusal_log.allow(now) {
                crate::log!(Level::Warn, "connection_refused", "reason" => "max_connections", "suppressed" => suppressed);
            }
            self.refuse(key, now);
        } else if per_ip_full {
            self.stats.connections.refused_per_ip += 1;
            if let Some(suppressed) = self.refusal_log.allow(now) {
                crate::log!(Level::Info, "connection_refused", "reason" => "max_connections_per_ip", "peer" => peer.to_string(), "suppressed" => suppressed);
            }
            self.refuse(key, now);
        } else {
            if per_ip_limit > 0 {
                *self.per_ip.entry(peer).or_insert(0) += 1;
                self.conns[key].marks.ip_counted = true;
            }
            self.stats.connections.accepted += 1;
            self.stats.connections.http += 1;
            crate::log!(Level::Debug, "connection_opened", "conn" => id.as_u64(), "peer" => peer.to_string());
            self.set_deadline(key, now + self.config.header_timeout);
        }
        key
    }

    /// A connection the loop could not take for want of a descriptor (it was accepted on a
    /// descriptor kept in reserve for this): counted, and the answer to send it before closing.
    pub fn refused_without_descriptor(&mut self) -> Vec<u8> {
        self.stats.connections.refused_no_descriptor += 1;
        crate::error::Failure::AtCapacity
            .response()
            .encode(false, false)
    }

    /// Starts a tick after a poll that returned `events`: work left over from the last one
    /// becomes this one's, and `unix_ms` is the wall-clock time every message sent in this tick
    /// carries.
    pub fn begin_tick(&mut self, unix_ms: u64, events: usize) {
        self.ts = Timestamp::at(unix_ms);
        self.unix_ms = unix_ms;
        self.tick_no = self.tick_no.wrapping_add(1);
        let stats = &mut self.stats.event_loop;
        stats.ticks += 1;
        stats.events += events as u64;
        stats.events_per_tick.record(events as u64);
        let l = &mut self.lists;
        l.reads.append(&mut l.reads_next);
        l.runs.append(&mut l.runs_next);
        l.dirty.append(&mut l.dirty_next);
    }

    /// Whether work was left for the next tick (the next poll should not wait).
    pub fn has_pending_work(&self) -> bool {
        let l = &self.lists;
        !(l.reads_next.is_empty() && l.runs_next.is_empty() && l.dirty_next.is_empty())
    }

    /// What the transport reported for a connection.
    pub fn readiness(&mut self, key: usize, r: Readiness) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if r.readable || r.hangup {
            c.marks.readable = true;
            c.marks.read_to_end |= r.hangup;
            if self.wants_input(key) {
                self.queue_read(key, false);
            }
        }
        // A hangup may be the transport giving up (an error): a flush of waiting output is
        // what finds out, also while input is held.
        let c = &self.conns[key];
        if (r.writable && c.marks.write_interest) || (r.hangup && !c.out.is_empty()) {
            self.mark_dirty(key);
        }
    }

    /// The next connection to read once, this tick.
    pub fn next_read(&mut self) -> Option<usize> {
        while let Some(id) = self.lists.reads.pop_front() {
            if let Some(key) = self.key_of(id) {
                self.conns[key].marks.on_read_list = false;
                if self.wants_input(key) {
                    return Some(key);
                }
            }
        }
        None
    }

    /// The slot of a connection that still exists.
    fn key_of(&self, id: ConnId) -> Option<usize> {
        let key = id.slot();
        self.conns.get(key).filter(|c| c.id == id).map(|_| key)
    }

    /// The slot of a connection that still exists and takes events.
    fn live_ws(&self, id: ConnId) -> Option<usize> {
        self.key_of(id).filter(|&k| self.conns[k].takes_events())
    }

    /// What one read of a connection's transport gave.
    pub fn received(&mut self, key: usize, read: Received<'_>, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match read {
            Received::Data { bytes, filled } => {
                self.stats.event_loop.read_calls += 1;
                self.stats.event_loop.bytes_in += bytes.len() as u64;
                let more = filled || c.marks.read_to_end;
                c.marks.readable = more;
                let tick = self.tick_no;
                c.share.refreshed(tick).reads += 1;
                self.take_input(key, bytes, now);
                if more && self.wants_input(key) {
                    // Another read this tick while its share lasts (after every other
                    // connection's first), else the next tick.
                    let c = &self.conns[key];
                    let again = c.share.budget > 0 && c.share.reads < READS_PER_TICK;
                    self.queue_read(key, !again);
                }
            }
            Received::Empty => {
                c.marks.readable = false;
                c.marks.read_to_end = false;
            }
            Received::End => {
                c.marks.readable = false;
                c.marks.read_to_end = false;
                c.marks.input_ended = true;
                if c.answers.is_some() && matches!(c.state, Lifecycle::Http(_)) {
                    // Answers still wait for Redis: the connection drains once they are out.
                    c.marks.drain_after_answers = true;
                    return;
                }
                // (A connection holding input back is not read, so every request that came
                // before the end has been handled.) Answers already queued still go out.
                match c.state {
                    Lifecycle::Http(_) | Lifecycle::Draining { write_shut: false }
                        if !c.out.is_empty() =>
                    {
                        self.drain(key, now)
                    }
                    _ => self.close(key, "peer_closed"),
                }
            }
            Received::Failed => self.close(key, "socket_error"),
        }
    }

    /// The transport could not be set up or changed for this connection: it is closed.
    pub fn io_failed(&mut self, key: usize) {
        self.close(key, "socket_error");
    }

    /// The engine's own work for this tick: input held back earlier, then deadlines and
    /// heartbeats.
    pub fn tick(&mut self, now: Instant) {
        while let Some(id) = self.lists.runs.pop_front() {
            let Some(key) = self.key_of(id) else {
                continue;
            };
            self.conns[key].marks.on_run_list = false;
            if self.conns[key].marks.backlog && !self.paused(key) {
                self.take_input(key, &mut [], now);
                if !self.conns[key].marks.backlog {
                    self.resume_reading(key);
                }
            }
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.backplane.tick(now);
            self.cluster_events(now);
        }
        self.expire(now);
    }

    /// Offers the next connection with output to its transport once. `send` is a vectored
    /// write on the connection's transport. `None` when every dirty connection was offered.
    pub fn next_flush(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(&mut S, &[IoSlice<'_>]) -> io::Result<usize>,
    ) -> Option<Flushed> {
        loop {
            let id = self.lists.dirty.pop_front()?;
            let Some(key) = self.key_of(id) else {
                continue;
            };
            let c = &mut self.conns[key];
            c.marks.on_dirty_list = false;
            if c.is_closed() {
                continue;
            }
            return Some(self.flush(key, now, send));
        }
    }

    /// Removes the next finished connection and hands its transport back to be closed.
    pub fn next_closed(&mut self) -> Option<S> {
        while let Some(id) = self.lists.closed.pop() {
            let Some(key) = self.key_of(id).filter(|&k| self.conns[k].is_closed()) else {
                continue;
            };
            let c = self.conns.remove(key);
            self.broker.disconnect(c.id);
            if c.marks.ip_counted {
                if let Some(n) = self.per_ip.get_mut(&c.peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_ip.remove(&c.peer);
                    }
                }
            }
            return Some(c.io);
        }
        None
    }

    /// Stop accepting work: idle connections close now, requests in flight finish, WebSockets
    /// get their queued events and then close 1001.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let c = &self.conns[key];
            match &c.state {
                Lifecycle::Http(h) if !h.in_request && c.out.is_empty() && !c.marks.backlog => {
                    self.close(key, "shutdown")
                }
                Lifecycle::Open(_) => self.start_close(
                    key,
                    crate::ws::CloseCode::GoingAway,
                    "server shutting down",
                    now,
                ),
                _ => {}
            }
        }
    }
}
