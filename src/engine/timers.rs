//! Deadlines (header, idle, close linger) in one binary heap with at most one live entry per
//! connection, and the heartbeat sweep's schedule: nothing is scanned per tick.

use std::cmp::Reverse;
use std::time::Instant;

use super::{slot, Engine, Phase};
use crate::log::Level;

impl<S> Engine<S> {
    pub(super) fn set_deadline(&mut self, key: usize, at: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.deadline = Some(at);
        if c.scheduled.is_none_or(|s| at < s) {
            c.scheduled = Some(at);
            self.timers.push(Reverse((at, c.id)));
        }
    }

    pub(super) fn clear_deadline(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            c.deadline = None;
        }
    }

    /// When `tick` next has work: the nearest deadline or heartbeat.
    pub fn next_wakeup(&self) -> Instant {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        timer.map_or(self.next_heartbeat, |t| t.min(self.next_heartbeat))
    }

    /// Expires deadlines and sends heartbeats due by `now`.
    pub fn tick(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let key = slot(id);
            let Some(c) = self.conns.get_mut(key).filter(|c| c.id == id) else {
                continue;
            };
            if c.scheduled == Some(at) {
                c.scheduled = None;
            }
            match c.deadline {
                Some(d) if d <= now => {
                    c.deadline = None;
                    self.expire(key);
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

    fn expire(&mut self, key: usize) {
        let Some(c) = self.conns.get(key) else { return };
        let reason = match &c.phase {
            Phase::Http(_) if c.inbuf.is_empty() => "idle_timeout",
            Phase::Http(_) => "header_timeout",
            Phase::WebSocket(_) => "close_linger_expired",
            Phase::Draining { .. } => "drain_expired",
        };
        if reason == "header_timeout" {
            crate::log!(Level::Info, "header_timeout", "conn" => c.id, "peer" => c.peer.to_string());
        }
        self.doom(key, reason);
    }
}
