//! The server without its sockets. The event loop (`server`) owns the transport and calls the
//! engine in the same order every tick:
//!
//! 1. `begin_tick`, then `readiness` for each event the poll returned;
//! 2. `next_read` / `received`: each readable connection is read once (one buffer) and its
//!    input handled within a per-connection budget; what the budget leaves waits for the next
//!    tick;
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
mod conn;
mod http;
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
use crate::ids::ConnId;
use crate::log::Level;
use crate::outq::{Bound, Chunk, WriteLimit};
use crate::stats::Stats;
use crate::time::Timestamp;
pub use answers::Ticket;
use conn::{Conn, Lifecycle};

/// Requests, messages and frames one connection may have handled per tick; the rest waits for
/// the next tick, so a client that sends as fast as it can gets the same share as the others.
pub const INPUT_BUDGET: u32 = 256;
/// While this much output waits for a connection, its next request waits too (and its socket
/// is not read): a client that does not read its answers is slowed down, not served ahead.
/// The WebSocket protocol pauses at `MAX_QUEUE_BYTES` if that is lower.
pub const PAUSE_BYTES: usize = 256 * 1024;
/// Bytes offered to one connection per tick (more while it is over its event bound).
pub const WRITE_BUDGET: usize = 256 * 1024;

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
    started: Instant,
    next_heartbeat: Instant,
    shutting_down: bool,
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
            lists: Lists::default(),
            per_ip: HashMap::new(),
            fanout: Vec::new(),
            event_buf: Vec::new(),
            ts: Timestamp::at(0),
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

    /// The loop's own counters (poll, read and write calls) are kept with the engine's.
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
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
            crate::log!(Level::Warn, "connection_refused", "conn" => id.as_u64(), "reason" => "max_connections");
            self.refuse(key, now);
        } else if per_ip_full {
            self.stats.connections.refused_per_ip += 1;
            crate::log!(Level::Info, "connection_refused", "conn" => id.as_u64(), "reason" => "max_connections_per_ip", "peer" => peer.to_string());
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

    /// Starts a tick: work left over from the last one becomes this one's, and `unix_ms` is
    /// the wall-clock time every message sent in this tick carries.
    pub fn begin_tick(&mut self, unix_ms: u64) {
        self.ts = Timestamp::at(unix_ms);
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
        if r.writable && self.conns[key].marks.write_interest {
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
                self.take_input(key, bytes, now);
                if more && self.wants_input(key) {
                    self.queue_read(key, true);
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

    fn flush(
        &mut self,
        key: usize,
        now: Instant,
        send: &mut dyn FnMut(&mut S, &[IoSlice<'_>]) -> io::Result<usize>,
    ) -> Flushed {
        // Only connections that take events hold counted frames, so the bound can be given to
        // every flush; whether a refusal makes one a slow consumer is asked only when it does.
        let (max_frames, max_bytes) = (
            self.config.subscriber_queue_size,
            self.config.max_queue_bytes,
        );
        let limit = WriteLimit {
            bytes: WRITE_BUDGET,
            max_counted_frames: max_frames,
            max_counted_bytes: max_bytes,
        };
        // Whether input may resume after this flush matters only if input is waiting.
        let c = &self.conns[key];
        let was_paused = (c.marks.backlog || c.marks.readable) && self.paused(key);
        let c = &mut self.conns[key];
        let (io, out) = (&mut c.io, &mut c.out);
        let report = out.write_to(
            &mut |bufs: &[IoSlice<'_>]| send(io, bufs),
            &limit,
            &mut self.stats.event_loop.frames_per_write,
        );
        let mut done = Flushed {
            key,
            write_interest: None,
            shutdown_write: false,
        };
        let report = match report {
            Ok(r) => r,
            Err(_) => {
                self.close(key, "socket_error");
                return done;
            }
        };
        let l = &mut self.stats.event_loop;
        l.write_calls += report.write_calls as u64;
        l.frames_written += report.frames as u64;
        l.bytes_out += report.bytes as u64;
        // Slow only when the socket refused and what is left is still over the bound: a burst
        // that the socket takes is never cut, whatever one tick produced.
        if report.refused && c.out.over(max_frames, max_bytes) && self.bounded(key) {
            self.cut_slow_consumer(key, now);
        }
        let c = &mut self.conns[key];
        let want_interest = report.refused && !c.out.is_empty();
        if want_interest != c.marks.write_interest {
            c.marks.write_interest = want_interest;
            done.write_interest = Some(want_interest);
        }
        if !c.out.is_empty() && !report.refused {
            // The write budget ran out: the rest goes out next tick.
            self.mark_dirty_next(key);
        }
        let c = &mut self.conns[key];
        if c.out.is_empty() {
            if let Lifecycle::Draining { write_shut } = &mut c.state {
                if c.marks.input_ended {
                    // The peer has closed its side already: nothing is left to wait for.
                    self.close(key, "closed");
                    return done;
                }
                if !*write_shut {
                    *write_shut = true;
                    done.shutdown_write = true;
                }
            }
        }
        if was_paused && !self.paused(key) {
            self.resume_reading(key);
        }
        done
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

    // ---- the connection's life: moves between states, each counted in one place ----

    /// Moves a connection to a new state, keeping the open-connection gauges right.
    fn set_state(&mut self, key: usize, state: Lifecycle) -> Lifecycle {
        let c = &mut self.conns[key];
        let gauges = &mut self.stats.connections;
        match c.state {
            Lifecycle::Http(_) => gauges.http -= 1,
            Lifecycle::Open(_) | Lifecycle::Closing(_) => gauges.websocket -= 1,
            Lifecycle::Draining { .. } | Lifecycle::Closed => {}
        }
        match state {
            Lifecycle::Http(_) => gauges.http += 1,
            Lifecycle::Open(_) | Lifecycle::Closing(_) => gauges.websocket += 1,
            Lifecycle::Draining { .. } | Lifecycle::Closed => {}
        }
        std::mem::replace(&mut c.state, state)
    }

    /// Finished: nothing more is read or written; the transport is released at reap.
    fn close(&mut self, key: usize, reason: &'static str) {
        let Some(c) = self.conns.get(key) else {
            return;
        };
        if c.is_closed() {
            return;
        }
        crate::log!(Level::Debug, "connection_closed", "conn" => c.id.as_u64(), "reason" => reason);
        self.set_state(key, Lifecycle::Closed);
        let c = &mut self.conns[key];
        c.input = Vec::new();
        c.marks.backlog = false;
        self.lists.closed.push(c.id);
    }

    /// Stops handling input; flushes what is queued, then shuts the write side and waits
    /// (bounded by the close linger) for the peer to close.
    fn drain(&mut self, key: usize, now: Instant) {
        if matches!(
            self.conns[key].state,
            Lifecycle::Draining { .. } | Lifecycle::Closed
        ) {
            return;
        }
        self.set_state(key, Lifecycle::Draining { write_shut: false });
        let c = &mut self.conns[key];
        c.input = Vec::new();
        c.marks.backlog = false;
        self.set_deadline(key, now + self.config.close_linger);
        self.mark_dirty(key);
    }

    /// Answered 503 and closed (past a connection limit).
    fn refuse(&mut self, key: usize, now: Instant) {
        let bytes =
            crate::http::Response::error(&crate::error::Failure::AtCapacity).encode(false, false);
        self.push(key, Chunk::Owned(bytes), Bound::Exempt);
        // Never counted as open: straight to draining without passing through the gauges.
        self.conns[key].state = Lifecycle::Draining { write_shut: false };
        self.set_deadline(key, now + self.config.close_linger);
    }

    // ---- input: budgets and pauses ----

    /// Whether reading this connection's transport is useful now.
    fn wants_input(&self, key: usize) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| !c.is_closed() && !c.marks.backlog && !self.paused(key))
    }

    /// Output waits beyond the pause threshold: the next request waits too.
    fn paused(&self, key: usize) -> bool {
        let Some(c) = self.conns.get(key) else {
            return false;
        };
        let limit = match &c.state {
            Lifecycle::Open(ws) if !ws.echo => PAUSE_BYTES.min(self.config.max_queue_bytes),
            Lifecycle::Http(_) | Lifecycle::Open(_) => PAUSE_BYTES,
            // Closing connections only look for the peer's close; draining ones drop input.
            Lifecycle::Closing(_) | Lifecycle::Draining { .. } | Lifecycle::Closed => return false,
        };
        c.out.bytes() >= limit || c.answers.as_ref().is_some_and(|a| a.held() > 0)
    }

    /// Handles input within one tick's budget: `fresh` bytes just read (parsed where they
    /// lie when nothing was held before), or, when empty, what was held back.
    fn take_input(&mut self, key: usize, fresh: &mut [u8], now: Instant) {
        let c = &mut self.conns[key];
        c.last_seen = now;
        if matches!(c.state, Lifecycle::Draining { .. } | Lifecycle::Closed) {
            return;
        }
        let mut budget = INPUT_BUDGET;
        let stop = if c.input.is_empty() {
            let (used, stop) = self.consume(key, fresh, &mut budget, now);
            if let Some(c) = self.conns.get_mut(key) {
                if !c.is_closed() && !matches!(c.state, Lifecycle::Draining { .. }) {
                    c.input.extend_from_slice(&fresh[used..]);
                }
            }
            stop
        } else {
            let mut buf = std::mem::take(&mut c.input);
            buf.extend_from_slice(fresh);
            let (used, stop) = self.consume(key, &mut buf, &mut budget, now);
            buf.drain(..used);
            if let Some(c) = self.conns.get_mut(key) {
                if !c.is_closed() && !matches!(c.state, Lifecycle::Draining { .. }) {
                    if buf.is_empty() {
                        buf = Vec::new();
                    }
                    c.input = buf;
                }
            }
            stop
        };
        let c = &mut self.conns[key];
        c.marks.backlog = matches!(stop, Stop::Budget | Stop::Paused) && !c.input.is_empty();
        if stop == Stop::Budget && c.marks.backlog && !c.marks.on_run_list {
            c.marks.on_run_list = true;
            self.lists.runs_next.push_back(c.id);
        }
    }

    /// Runs the connection's phases over `buf`; returns how many bytes were used and why
    /// handling stopped.
    fn consume(
        &mut self,
        key: usize,
        buf: &mut [u8],
        budget: &mut u32,
        now: Instant,
    ) -> (usize, Stop) {
        let mut pos = 0;
        loop {
            let (used, stop) = match self.conns[key].state {
                Lifecycle::Http(_) => self.consume_http(key, &mut buf[pos..], budget, now),
                Lifecycle::Open(_) | Lifecycle::Closing(_) => {
                    self.consume_ws(key, &mut buf[pos..], budget, now)
                }
                Lifecycle::Draining { .. } | Lifecycle::Closed => return (buf.len(), Stop::Done),
            };
            pos += used;
            match stop {
                Stop::Upgraded if pos < buf.len() => continue,
                Stop::Upgraded => return (pos, Stop::NeedMore),
                other => return (pos, other),
            }
        }
    }

    /// Reading may go on: input held back is handled next tick, or the transport is read
    /// again (to its end, since a FIN that arrived meanwhile was reported only once).
    fn resume_reading(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.is_closed() {
            return;
        }
        if c.marks.backlog {
            if !c.marks.on_run_list {
                c.marks.on_run_list = true;
                self.lists.runs_next.push_back(c.id);
            }
        } else if c.marks.readable {
            c.marks.read_to_end = true;
            self.queue_read(key, true);
        }
    }

    fn queue_read(&mut self, key: usize, next_tick: bool) {
        let c = &mut self.conns[key];
        if c.marks.on_read_list {
            return;
        }
        c.marks.on_read_list = true;
        if next_tick {
            self.lists.reads_next.push_back(c.id);
        } else {
            self.lists.reads.push_back(c.id);
        }
    }

    // ---- output ----

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.marks.on_dirty_list {
                c.marks.on_dirty_list = true;
                self.lists.dirty.push_back(c.id);
            }
        }
    }

    fn mark_dirty_next(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.marks.on_dirty_list {
            c.marks.on_dirty_list = true;
            self.lists.dirty_next.push_back(c.id);
        }
    }

    fn push(&mut self, key: usize, chunk: Chunk, bound: Bound) {
        if let Some(c) = self.conns.get_mut(key) {
            c.out.push(chunk, bound);
            self.mark_dirty(key);
        }
    }

    /// Queues the answer to one of the connection's requests, in request order.
    fn answer(&mut self, key: usize, frame: Vec<u8>) {
        if self.conns[key].answers.is_none() {
            self.push(key, Chunk::Owned(frame), Bound::Exempt);
        } else {
            self.answer_chunks(key, vec![Chunk::Owned(frame)]);
        }
    }

    fn answer_chunks(&mut self, key: usize, chunks: Vec<Chunk>) {
        let c = &mut self.conns[key];
        let ready = match &mut c.answers {
            None => chunks,
            Some(order) => match order.ready(chunks) {
                Some(ready) => ready,
                None => return,
            },
        };
        for chunk in ready {
            self.push(key, chunk, Bound::Exempt);
        }
    }

    /// Holds the connection's later answers until `complete_answer` is given this ticket's:
    /// for a request whose answer arrives later (cluster mode). Its input pauses meanwhile.
    pub fn defer_answer(&mut self, key: usize) -> Option<Ticket> {
        let c = self.conns.get_mut(key)?;
        Some(c.answers.get_or_insert_with(Default::default).defer())
    }

    /// A deferred answer arrived: it, and the answers held behind it, go out in order.
    pub fn complete_answer(&mut self, key: usize, ticket: Ticket, frames: Vec<Vec<u8>>) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Some(order) = &mut c.answers else {
            return;
        };
        let released = order.complete(ticket, frames.into_iter().map(Chunk::Owned).collect());
        if order.held() == 0 {
            c.answers = None;
        }
        for chunk in released {
            self.push(key, chunk, Bound::Exempt);
        }
        if !self.paused(key) {
            self.resume_reading(key);
        }
    }
}

/// Why handling a connection's input stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The rest is an unfinished request or frame.
    NeedMore,
    /// The tick's budget is spent; the rest waits for the next tick.
    Budget,
    /// Output must drain first.
    Paused,
    /// The HTTP phase became a WebSocket; the rest is frames.
    Upgraded,
    /// The connection takes no more input (closing, failed, or every byte used).
    Done,
}
