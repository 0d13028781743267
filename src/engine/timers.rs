//! Deadlines (a request head's arrival, keep-alive idleness, close linger) in one binary heap
//! with at most one live entry per connection, and the heartbeat sweep's schedule: nothing is
//! scanned per tick.

use std::cmp::Reverse;
use std::time::Instant;

use super::conn::Lifecycle;
use super::Engine;
use crate::log::Level;
use crate::outq::{Bound, Chunk};
use crate::ws::frame::{encode_frame, OpCode};

impl<S> Engine<S> {
    pub(super) fn set_deadline(&mut self, key: usize, at: Instant) {
        let c = &mut self.conns[key];
        c.deadline = Some(at);
        if c.scheduled.is_none_or(|s| at < s) {
            c.scheduled = Some(at);
            self.timers.push(Reverse((at, c.id)));
        }
    }

    pub(super) fn clear_deadline(&mut self, key: usize) {
        self.conns[key].deadline = None;
    }

    /// When the engine next has timed work: the nearest deadline or heartbeat.
    pub fn next_wakeup(&self) -> Instant {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let backplane = self
            .cluster
            .as_ref()
            .and_then(|c| c.backplane.next_wakeup());
        [timer, backplane]
            .into_iter()
            .flatten()
            .fold(self.next_heartbeat, Instant::min)
    }

    /// Expires deadlines and sends heartbeats due by `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(key) = self.key_of(id) else {
                continue;
            };
            let c = &mut self.conns[key];
            if c.scheduled == Some(at) {
                c.scheduled = None;
            }
            match c.deadline {
                Some(d) if d <= now => {
                    c.deadline = None;
                    self.deadline_passed(key, now);
                }
                // The deadline moved later: schedule it anew unless an entry is pending.
                Some(d) if c.scheduled.is_none() => {
                    c.scheduled = Some(d);
                    self.timers.push(Reverse((d, id)));
                }
                _ => {}
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.config.heartbeat_interval;
            self.heartbeat(now);
        }
    }

    fn deadline_passed(&mut self, key: usize, now: Instant) {
        let c = &self.conns[key];
        let reason = match &c.state {
            Lifecycle::Http(h) if h.body_clock => "body_timeout",
            Lifecycle::Http(h) if h.in_request => "header_timeout",
            Lifecycle::Http(_) => "idle_timeout",
            Lifecycle::Open(ws) if ws.message_clock => {
                let id = c.id.as_u64();
                if let Some(suppressed) = self.close_log.allow(now) {
                    crate::log!(Level::Info, "message_timeout", "conn" => id, "suppressed" => suppressed);
                }
                self.stats.messages.message_timeouts += 1;
                let code = crate::ws::CloseCode::PolicyViolation;
                self.start_close(key, code, "message not completed in time", now);
                return;
            }
            Lifecycle::Open(_) | Lifecycle::Closing(_) => "close_linger_expired",
            Lifecycle::Draining { .. } => "drain_expired",
            Lifecycle::Closed => return,
        };
        if reason == "header_timeout" || reason == "body_timeout" {
            if let Some(suppressed) = self.close_log.allow(now) {
                crate::log!(Level::Info, reason, "conn" => c.id.as_u64(), "peer" => c.peer.to_string(), "suppressed" => suppressed);
            }
            self.stats.connections.request_timeouts += 1;
        }
        self.close(key, reason);
    }

    /// Pings every open WebSocket and closes those silent for two intervals; gives back the
    /// buffer memory of idle ones.
    fn heartbeat(&mut self, now: Instant) {
        let silent_limit = self.config.heartbeat_interval * 2;
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.takes_events())
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let c = &mut self.conns[key];
            c.out.release_if_idle();
            if c.input.is_empty() && c.input.capacity() > 0 {
                c.input = Vec::new();
            }
            // A connection whose input waits for its output to drain is not read, so its
            // answers to pings cannot be seen: it is slowed, not cut. Its peer's TCP answers
            // the zero-window probes for as long as it lives; when they go unanswered the
            // kernel gives up on it (tcp_retries2) and the socket reports the error.
            let heard = now.saturating_duration_since(c.last_seen) < silent_limit;
            if !(heard || self.paused(key)) {
                let c = &self.conns[key];
                self.stats.messages.heartbeat_timeouts += 1;
                if let Some(suppressed) = self.close_log.allow(now) {
                    crate::log!(Level::Info, "heartbeat_timeout", "conn" => c.id.as_u64(), "suppressed" => suppressed);
                }
                self.close(key, "heartbeat_timeout");
            } else {
                // Not an answer: never held behind deferred ones.
                self.push(
                    key,
                    Chunk::Owned(encode_frame(OpCode::Ping, b"")),
                    Bound::Exempt,
                );
            }
        }
    }
}
