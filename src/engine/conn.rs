//! One connection as the engine keeps it: where it is in its life, the input it has not used
//! yet, the output the transport has not taken, its deadline, and the marks that say which of
//! the engine's work lists it is on.

use std::net::IpAddr;
use std::time::Instant;

use super::answers::AnswerOrder;
use super::INPUT_BUDGET;
use crate::guard::TokenBucket;
use crate::http::Progress;
use crate::ids::ConnId;
use crate::outq::OutQueue;
use crate::ws::Session;

/// Where a connection is in its life. Every connection is in exactly one of these, and only
/// the engine moves it from one to the next.
#[derive(Debug)]
pub(super) enum Lifecycle {
    /// Reading HTTP/1.1 requests and answering them in order. Boxed like the WebSocket
    /// state, so the slab's entries (every connection's) stay small: 72 bytes fewer each.
    Http(Box<HttpState>),
    /// Upgraded: messages in, answers and events out.
    Open(Box<WsState>),
    /// The server's close frame is queued; frames are read only to find the peer's close.
    Closing(Box<WsState>),
    /// Nothing more is handled: queued output is written, then the write side is shut and
    /// the peer's FIN awaited (bounded by the close linger). Input is read and dropped.
    Draining { write_shut: bool },
    /// Finished; the transport is released at the end of the tick.
    Closed,
}

#[derive(Debug, Default)]
pub(super) struct HttpState {
    /// `100 Continue` was sent for the request now arriving.
    pub continue_sent: bool,
    /// A request has begun to arrive (its header clock is running).
    pub in_request: bool,
    /// Its head is complete and the body's clock runs.
    pub body_clock: bool,
    /// How far the request now arriving has been parsed.
    pub progress: Progress,
}

#[derive(Debug)]
pub(super) struct WsState {
    pub session: Session,
    pub echo: bool,
    /// A message has begun and its deadline runs (`MESSAGE_TIMEOUT_SECS`).
    pub message_clock: bool,
    /// The publish rate limiter, when `PUBLISH_RATE_LIMIT` is set (boxed: most servers run
    /// without one, and every idle WebSocket would pay for its room).
    pub bucket: Option<Box<TokenBucket>>,
}

/// A connection's share of one tick: what is left of its input budget and how many reads it
/// had, renewed when a new tick first touches it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Share {
    tick: u32,
    pub budget: u32,
    pub reads: u8,
}

impl Default for Share {
    fn default() -> Share {
        Share {
            tick: 0,
            budget: INPUT_BUDGET,
            reads: 0,
        }
    }
}

impl Share {
    pub fn refreshed(&mut self, tick: u32) -> &mut Share {
        if self.tick != tick {
            *self = Share {
                tick,
                budget: INPUT_BUDGET,
                reads: 0,
            };
        }
        self
    }
}

/// Which of the engine's work lists a connection is on, and what its transport last said.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Marks {
    /// The transport may hold unread bytes: readiness was reported and not read to its end.
    pub readable: bool,
    /// The next read goes on to `WouldBlock`: the readiness carried the peer's FIN or an
    /// error, or reading resumes after a pause (a FIN seen meanwhile is not reported again).
    pub read_to_end: bool,
    /// Input is held unhandled: the tick's budget ran out, or output must drain first.
    pub backlog: bool,
    /// The peer closed its side (a read returned the end of the stream).
    pub input_ended: bool,
    pub on_read_list: bool,
    pub on_run_list: bool,
    pub on_dirty_list: bool,
    /// Write interest is registered with the transport (it refused output earlier).
    pub write_interest: bool,
    /// Counted against `MAX_CONNECTIONS_PER_IP`.
    pub ip_counted: bool,
    /// Drain once the answers waiting for Redis are out (the request asked to close, or the
    /// peer closed its side meanwhile).
    pub drain_after_answers: bool,
}

#[derive(Debug)]
pub(super) struct Conn<S> {
    pub io: S,
    pub id: ConnId,
    pub peer: IpAddr,
    pub state: Lifecycle,
    /// Bytes read but not used yet: an unfinished request head or frame header, or input held
    /// back by the budget or a pause.
    pub input: Vec<u8>,
    pub out: OutQueue,
    /// Answers held back behind one that waits for Redis (cluster mode).
    pub answers: Option<Box<AnswerOrder>>,
    /// When the connection expires (header, idle or close linger), if it can.
    pub deadline: Option<Instant>,
    /// The earliest entry this connection has in the timer heap.
    pub scheduled: Option<Instant>,
    pub last_seen: Instant,
    pub marks: Marks,
    pub share: Share,
}

impl<S> Conn<S> {
    pub fn new(io: S, id: ConnId, peer: IpAddr, now: Instant) -> Conn<S> {
        Conn {
            io,
            id,
            peer,
            state: Lifecycle::Http(Box::default()),
            input: Vec::new(),
            out: OutQueue::default(),
            answers: None,
            deadline: None,
            scheduled: None,
            last_seen: now,
            marks: Marks::default(),
            share: Share::default(),
        }
    }

    /// A WebSocket that takes events (upgraded, not closing). Reads only the discriminant, so
    /// the fan-out loop never looks behind the Box.
    pub fn takes_events(&self) -> bool {
        matches!(self.state, Lifecycle::Open(_))
    }

    /// Whether the slow-consumer bound applies: a pub/sub WebSocket that takes events.
    pub fn bounded(&self) -> bool {
        matches!(&self.state, Lifecycle::Open(ws) if !ws.echo)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, Lifecycle::Closed)
    }

    /// Input held: bytes read and not handled, and a WebSocket message being assembled.
    pub fn input_footprint(&self) -> usize {
        let assembly = match &self.state {
            Lifecycle::Open(ws) | Lifecycle::Closing(ws) => ws.session.buffered(),
            _ => 0,
        };
        self.input.capacity() + assembly
    }

    /// Memory this connection holds for itself beyond its fixed size (buffers and queues).
    pub fn footprint(&self) -> usize {
        let session = match &self.state {
            Lifecycle::Open(ws) | Lifecycle::Closing(ws) => {
                ws.session.buffered() + std::mem::size_of::<WsState>()
            }
            _ => 0,
        };
        self.input.capacity() + self.out.footprint() + session
    }
}
