//! Input: which connections are worth reading, the per-tick budget, pauses while output
//! drains, and input held back for a later tick.

use std::time::Instant;

use super::conn::Lifecycle;
use super::{Engine, MAX_DEFERRED, PAUSE_BYTES};

impl<S> Engine<S> {
    /// Whether reading this connection's transport is useful now.
    pub(super) fn wants_input(&self, key: usize) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| !c.is_closed() && !c.marks.backlog && !self.paused(key))
    }

    /// Output waits beyond the pause threshold: the next request waits too.
    pub(super) fn paused(&self, key: usize) -> bool {
        let Some(c) = self.conns.get(key) else {
            return false;
        };
        let limit = match &c.state {
            Lifecycle::Open(ws) if !ws.echo => PAUSE_BYTES.min(self.config.max_queue_bytes),
            Lifecycle::Http(_) | Lifecycle::Open(_) => PAUSE_BYTES,
            // Closing connections only look for the peer's close; draining ones drop input.
            Lifecycle::Closing(_) | Lifecycle::Draining { .. } | Lifecycle::Closed => return false,
        };
        c.out.cost() >= limit || c.answers.as_ref().is_some_and(|a| a.held() >= MAX_DEFERRED)
    }

    /// Handles input within one tick's budget: `fresh` bytes just read (parsed where they
    /// lie when nothing was held before), or, when empty, what was held back.
    pub(super) fn take_input(&mut self, key: usize, fresh: &mut [u8], now: Instant) {
        let c = &mut self.conns[key];
        c.last_seen = now;
        if matches!(c.state, Lifecycle::Draining { .. } | Lifecycle::Closed) {
            return;
        }
        let tick = self.tick_no;
        let mut budget = c.share.refreshed(tick).budget;
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
        self.watch_message_clock(key, now);
        let c = &mut self.conns[key];
        c.share.budget = budget;
        c.marks.backlog = matches!(stop, Stop::Budget | Stop::Paused) && !c.input.is_empty();
        if stop == Stop::Budget && c.marks.backlog && !c.marks.on_run_list {
            c.marks.on_run_list = true;
            self.lists.runs_next.push_back(c.id);
        }
    }

    /// A WebSocket message that has begun must end within `MESSAGE_TIMEOUT_SECS`: every byte of
    /// it is a sign of life, so an endless one dribbled a byte at a time would never time out.
    fn watch_message_clock(&mut self, key: usize, now: Instant) {
        let Some(Lifecycle::Open(ws)) = self.conns.get_mut(key).map(|c| &mut c.state) else {
            return;
        };
        let in_message = ws.session.in_message();
        if in_message != ws.message_clock {
            ws.message_clock = in_message;
            if in_message {
                self.set_deadline(key, now + self.config.message_timeout);
            } else {
                self.clear_deadline(key);
            }
        }
    }

    /// Why the next request in `rest` must wait for a later tick, if it must: the budget is
    /// spent, or output must drain first.
    pub(super) fn hold(&self, key: usize, rest: &[u8], budget: u32) -> Option<Stop> {
        if rest.is_empty() {
            None
        } else if budget == 0 {
            Some(Stop::Budget)
        } else if self.paused(key) {
            Some(Stop::Paused)
        } else {
            None
        }
    }

    /// Runs the connection's phases over `buf`; returns how many bytes were used and why
    /// handling stopped.
    pub(super) fn consume(
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
    pub(super) fn resume_reading(&mut self, key: usize) {
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

    pub(super) fn queue_read(&mut self, key: usize, next_tick: bool) {
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
}

/// Why handling a connection's input stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
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
