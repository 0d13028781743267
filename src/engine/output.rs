//! Output: the flush that offers a connection's queue to its transport (and applies the
//! slow-consumer bound there), the dirty lists, and answers in request order.

use std::io::{self, IoSlice};
use std::time::Instant;

use super::conn::Lifecycle;
use super::{DeferredAnswer, Engine, Flushed, WRITE_BUDGET};
use crate::outq::{Bound, Chunk, WriteLimit};

impl<S> Engine<S> {
    pub(super) fn flush(
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
        if report.refused && c.out.over(max_frames, max_bytes) && c.bounded() {
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

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.marks.on_dirty_list {
                c.marks.on_dirty_list = true;
                self.lists.dirty.push_back(c.id);
            }
        }
    }

    pub(super) fn mark_dirty_next(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.marks.on_dirty_list {
            c.marks.on_dirty_list = true;
            self.lists.dirty_next.push_back(c.id);
        }
    }

    pub(super) fn push(&mut self, key: usize, chunk: Chunk, bound: Bound) {
        if let Some(c) = self.conns.get_mut(key) {
            c.out.push(chunk, bound);
            self.mark_dirty(key);
        }
    }

    /// Queues the answer to one of the connection's requests, in request order.
    pub(super) fn answer(&mut self, key: usize, frame: Vec<u8>) {
        if self.conns[key].answers.is_none() {
            self.push(key, Chunk::Owned(frame), Bound::Exempt);
        } else {
            self.answer_chunks(key, vec![Chunk::Owned(frame)]);
        }
    }

    pub(super) fn answer_chunks(&mut self, key: usize, chunks: Vec<Chunk>) {
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
    pub fn defer_answer(&mut self, key: usize) -> Option<DeferredAnswer> {
        let c = self.conns.get_mut(key)?;
        let ticket = c.answers.get_or_insert_with(Default::default).defer();
        Some(DeferredAnswer { conn: c.id, ticket })
    }

    /// A deferred answer arrived: it, and the answers held behind it, go out in order. One for
    /// a connection that has gone is dropped, even when its slot holds a new connection now.
    pub fn complete_answer(
        &mut self,
        deferred: DeferredAnswer,
        frames: Vec<Vec<u8>>,
        now: Instant,
    ) {
        let DeferredAnswer { conn, ticket } = deferred;
        let Some(key) = self.key_of(conn) else {
            return;
        };
        let c = &mut self.conns[key];
        let Some(order) = &mut c.answers else {
            return;
        };
        let released = order.complete(ticket, frames.into_iter().map(Chunk::Owned).collect());
        let all_out = order.held() == 0;
        if all_out {
            c.answers = None;
        }
        for chunk in released {
            self.push(key, chunk, Bound::Exempt);
        }
        if all_out && self.conns[key].marks.drain_after_answers {
            self.drain(key, now);
            return;
        }
        if !self.paused(key) {
            self.resume_reading(key);
        }
    }
}
