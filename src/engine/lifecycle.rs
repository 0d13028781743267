//! A connection's moves from one state of its life to the next, each made in one place so the
//! open-connection gauges and the closed list stay right.

use std::time::Instant;

use super::conn::Lifecycle;
use super::Engine;
use crate::log::Level;
use crate::outq::{Bound, Chunk};

impl<S> Engine<S> {
    /// Moves a connection to a new state, keeping the open-connection gauges right.
    pub(super) fn set_state(&mut self, key: usize, state: Lifecycle) -> Lifecycle {
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
    pub(super) fn close(&mut self, key: usize, reason: &'static str) {
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
    pub(super) fn drain(&mut self, key: usize, now: Instant) {
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
    pub(super) fn refuse(&mut self, key: usize, now: Instant) {
        let bytes = crate::error::Failure::AtCapacity
            .response()
            .encode(false, false);
        self.push(key, Chunk::Owned(bytes), Bound::Exempt);
        // Never counted as open: straight to draining without passing through the gauges.
        self.conns[key].state = Lifecycle::Draining { write_shut: false };
        self.set_deadline(key, now + self.config.close_linger);
    }
}
