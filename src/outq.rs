//! A connection's outbound queue: whole frames (shared or owned) waiting for the socket,
//! written many per vectored write. It counts what the backpressure bound applies to.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::Rc;

use crate::stats::Histogram;

/// How many buffers one vectored write takes at most (Linux allows 1024; 64 fills a socket buffer).
const MAX_IOVECS: usize = 64;
/// The capacity `VecDeque` allocates first.
const SMALL_QUEUE: usize = 4;
/// A queued frame's cost beyond its bytes: its entry, and the allocator's header of its buffer.
const ENTRY_COST: usize = std::mem::size_of::<Entry>() + 16;

#[derive(Debug, Clone)]
pub enum Chunk {
    /// A frame shared with other connections and the topic history (an event).
    Shared(Rc<[u8]>),
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(b) => b,
            Chunk::Owned(v) => v,
        }
    }
}

/// Whether a chunk counts against the connection's backpressure bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Counted,
    /// Replayed history, close frames and the slow-consumer notice.
    Exempt,
}

#[derive(Debug)]
struct Entry {
    chunk: Chunk,
    bound: Bound,
}

/// How far one flush goes: at least `bytes` (unless the socket refuses first or the queue
/// empties), and on past that while the counted part is over `max_counted_frames` or
/// `max_counted_bytes`, so a connection is never left over its bound by the budget alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimit {
    pub bytes: usize,
    pub max_counted_frames: usize,
    pub max_counted_bytes: usize,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub bytes: usize,
    pub write_calls: usize,
    pub frames: usize,
    /// The socket took less than it was offered (`WouldBlock`): write interest is needed.
    pub refused: bool,
}

#[derive(Debug, Default)]
pub struct OutQueue {
    entries: VecDeque<Entry>,
    /// Bytes of the front entry already written.
    // u32: one frame, and the bounded part of a queue, are far below 4 GiB; this keeps an idle
    // connection's queue header small.
    front_written: u32,
    counted_frames: u32,
    counted_bytes: u32,
    bytes: usize,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes - self.front_written as usize
    }

    /// What the waiting output costs in memory: its bytes, and for each frame its place in the
    /// queue and its allocation's bookkeeping (a 2-byte pong costs about 50 bytes, not 2).
    pub fn cost(&self) -> usize {
        self.bytes() + self.entries.len() * ENTRY_COST
    }

    pub fn counted_frames(&self) -> usize {
        self.counted_frames as usize
    }

    pub fn counted_bytes(&self) -> usize {
        self.counted_bytes as usize
    }

    /// Whether the counted part is past either bound.
    pub fn over(&self, max_frames: usize, max_bytes: usize) -> bool {
        self.counted_frames() > max_frames || self.counted_bytes() > max_bytes
    }

    /// Heap memory this queue holds for itself (not the shared frames).
    pub fn footprint(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self
                .entries
                .iter()
                .map(|e| match &e.chunk {
                    Chunk::Owned(v) => v.capacity(),
                    Chunk::Shared(_) => 0,
                })
                .sum::<usize>()
    }

    /// Gives back the queue's memory if nothing is waiting (the periodic idle sweep).
    pub fn release_if_idle(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }

    pub fn push(&mut self, chunk: Chunk, bound: Bound) {
        let len = chunk.bytes().len();
        if len == 0 {
            return;
        }
        if bound == Bound::Counted {
            self.counted_frames += 1;
            self.counted_bytes = self.counted_bytes.saturating_add(len as u32);
        }
        self.bytes += len;
        self.entries.push_back(Entry { chunk, bound });
    }

    /// Drops every frame not yet started; a partly written one stays so framing stays valid.
    pub fn drop_unstarted(&mut self) {
        let keep = usize::from(self.front_written > 0).min(self.entries.len());
        while self.entries.len() > keep {
            if let Some(e) = self.entries.pop_back() {
                self.account_removed(&e);
            }
        }
    }

    fn account_removed(&mut self, e: &Entry) {
        let len = e.chunk.bytes().len();
        self.bytes -= len;
        if e.bound == Bound::Counted {
            self.counted_frames -= 1;
            self.counted_bytes = self.counted_bytes.saturating_sub(len as u32);
        }
    }

    /// Offers the queue to `send` (a vectored write: it returns how many bytes it took), many
    /// frames per call, until the queue empties, the socket refuses (`WouldBlock`, not an error
    /// here) or `limit` is reached. `per_call` records how many frames each call completed.
    pub fn write_to(
        &mut self,
        send: &mut dyn FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        limit: &WriteLimit,
        per_call: &mut Histogram,
    ) -> io::Result<Flushed> {
        let mut report = Flushed::default();
        while !self.entries.is_empty()
            && (report.bytes < limit.bytes
                || self.over(limit.max_counted_frames, limit.max_counted_bytes))
        {
            let written = {
                let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
                let mut n = 0;
                for (i, e) in self.entries.iter().take(MAX_IOVECS).enumerate() {
                    let bytes = e.chunk.bytes();
                    slices[i] = IoSlice::new(if i == 0 {
                        &bytes[self.front_written as usize..]
                    } else {
                        bytes
                    });
                    n = i + 1;
                }
                match send(&slices[..n]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        report.refused = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            report.write_calls += 1;
            report.bytes += written;
            let frames = self.consume(written);
            per_call.record(frames as u64);
            report.frames += frames;
        }
        // An idle connection should hold no queue memory, but a busy one should not allocate
        // per tick: the smallest allocation (what a reply or a lone event needs) is given back
        // as soon as it empties; a grown one stays until `release_if_idle`.
        if self.entries.is_empty() && self.entries.capacity() <= SMALL_QUEUE {
            self.entries = VecDeque::new();
        }
        Ok(report)
    }

    /// Marks `n` bytes as written; returns how many frames were completed.
    fn consume(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        while n > 0 {
            let Some(front) = self.entries.front() else {
                break;
            };
            let left = front.chunk.bytes().len() - self.front_written as usize;
            if n < left {
                self.front_written += n as u32;
                break;
            }
            n -= left;
            self.front_written = 0;
            if let Some(e) = self.entries.pop_front() {
                self.account_removed(&e);
            }
            done += 1;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMIT: WriteLimit = WriteLimit {
        bytes: usize::MAX,
        max_counted_frames: usize::MAX,
        max_counted_bytes: usize::MAX,
    };

    /// A socket that takes at most `cap` bytes per call and refuses after `calls` calls.
    struct Trickle {
        out: Vec<u8>,
        cap: usize,
        calls: usize,
    }

    impl Trickle {
        fn flush(&mut self, q: &mut OutQueue, limit: &WriteLimit) -> Flushed {
            let mut send = |bufs: &[IoSlice<'_>]| -> io::Result<usize> {
                if self.calls == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.calls -= 1;
                let mut n = 0;
                for b in bufs {
                    let take = b.len().min(self.cap - n);
                    self.out.extend_from_slice(&b[..take]);
                    n += take;
                }
                Ok(n)
            };
            q.write_to(&mut send, limit, &mut Histogram::default())
                .unwrap()
        }
    }

    #[test]
    fn partial_writes_keep_order_and_counts() {
        let mut q = OutQueue::default();
        let shared: Rc<[u8]> = Rc::from(&b"abc"[..]);
        q.push(Chunk::Shared(shared.clone()), Bound::Counted);
        q.push(Chunk::Owned(b"defg".to_vec()), Bound::Exempt);
        q.push(Chunk::Shared(shared), Bound::Counted);
        assert_eq!(
            (q.counted_frames(), q.counted_bytes(), q.bytes()),
            (2, 6, 10)
        );
        let mut w = Trickle {
            out: vec![],
            cap: 4,
            calls: 1,
        };
        let r = w.flush(&mut q, &NO_LIMIT);
        assert_eq!(
            (r.bytes, r.frames, r.write_calls, r.refused),
            (4, 1, 1, true)
        );
        assert_eq!((q.counted_frames(), q.bytes()), (1, 6));
        q.drop_unstarted();
        assert_eq!((q.entries.len(), q.bytes(), q.counted_frames()), (1, 3, 0));
        w.calls = 10;
        let r = w.flush(&mut q, &NO_LIMIT);
        assert!(q.is_empty() && !r.refused);
        assert_eq!(w.out, b"abcdefg");
    }

    #[test]
    fn small_frames_cost_what_they_hold() {
        let mut q = OutQueue::default();
        for _ in 0..1000 {
            q.push(Chunk::Owned(vec![0x8a, 0]), Bound::Exempt);
        }
        assert_eq!(q.bytes(), 2000);
        assert!(q.cost() >= 1000 * 48, "{}", q.cost());
    }

    #[test]
    fn many_frames_go_in_one_call() {
        let mut q = OutQueue::default();
        for _ in 0..100 {
            q.push(Chunk::Owned(vec![1; 10]), Bound::Counted);
        }
        let mut w = Trickle {
            out: vec![],
            cap: usize::MAX,
            calls: 10,
        };
        let r = w.flush(&mut q, &NO_LIMIT);
        assert_eq!((r.write_calls, r.frames, r.bytes), (2, 100, 1000));
        assert_eq!(q.counted_frames(), 0);
    }

    #[test]
    fn the_budget_stops_a_flush_unless_the_queue_is_over_its_bound() {
        let fill = |q: &mut OutQueue| {
            for _ in 0..10 {
                q.push(Chunk::Owned(vec![7; 100]), Bound::Counted);
            }
        };
        let mut w = Trickle {
            out: vec![],
            cap: 100,
            calls: 100,
        };
        let mut q = OutQueue::default();
        fill(&mut q);
        let budget = WriteLimit {
            bytes: 300,
            ..NO_LIMIT
        };
        let r = w.flush(&mut q, &budget);
        assert_eq!((r.bytes, r.refused, q.counted_frames()), (300, false, 7));
        // Over a bound of 4 frames: written on past the budget until back under it.
        let bounded = WriteLimit {
            bytes: 100,
            max_counted_frames: 4,
            max_counted_bytes: usize::MAX,
        };
        let r = w.flush(&mut q, &bounded);
        assert_eq!((r.bytes, q.counted_frames()), (300, 4));
    }
}
