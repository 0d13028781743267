//! One connection to Redis as the event loop will drive it, sans-IO: commands are encoded into
//! one output buffer and written pipelined, replies are decoded as they arrive and matched to
//! their commands in order, and the commands in flight are bounded (by count and by bytes), so a
//! caller that cannot send paces whoever asked it to. A command whose reply is overdue means the
//! link is dead: every command still waiting is handed back, to be answered `UNAVAILABLE`.
//!
//! Out-of-band data (RESP3 pushes) never takes a command's place, and is handed on in the order
//! it arrived among the replies: a subscription's message before a reply was published before
//! that command ran, one after it was published after.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::resp::{self, Decoder, RespError, Value};

/// What bounds a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLimits {
    /// Commands sent and not yet answered, each counted by what it carries (a batch of
    /// publishes as many as it holds).
    pub max_in_flight: usize,
    /// Bytes of commands encoded and not yet written.
    pub max_unwritten: usize,
    /// How long a reply may take before the link is taken for dead.
    pub reply_timeout: Duration,
    pub resp: resp::Limits,
}

impl Default for LinkLimits {
    fn default() -> LinkLimits {
        LinkLimits {
            max_in_flight: 10_000,
            max_unwritten: 8 << 20,
            reply_timeout: Duration::from_secs(2),
            resp: resp::Limits::default(),
        }
    }
}

/// Why a command was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The window is full: send again once replies have come back.
    Full,
}

/// A link to Redis; `T` is what the caller needs to know, per command, when its reply comes.
#[derive(Debug)]
pub struct Link<T> {
    limits: LinkLimits,
    /// Encoded commands; the first `written` bytes have gone to the socket.
    out: Vec<u8>,
    written: usize,
    /// Commands sent (or waiting to be written), oldest first, each with its deadline and its
    /// weight.
    waiting: VecDeque<(T, Instant, usize)>,
    /// The weights of `waiting`, summed.
    weight: usize,
    decoder: Decoder,
    input: Vec<u8>,
    /// Replies and pushes decoded and not yet taken, in the order they arrived.
    arrived: VecDeque<Arrived<T>>,
}

/// What came from Redis.
#[derive(Debug, PartialEq)]
pub enum Arrived<T> {
    /// A reply, with the tag of the command it answers.
    Reply(T, Value),
    /// Out-of-band data (a RESP3 push).
    Push(Value),
}

impl<T> Link<T> {
    pub fn new(limits: LinkLimits) -> Link<T> {
        Link {
            limits,
            out: Vec::new(),
            written: 0,
            waiting: VecDeque::new(),
            weight: 0,
            decoder: Decoder::new(limits.resp),
            input: Vec::new(),
            arrived: VecDeque::new(),
        }
    }

    /// Whether a command would be taken now.
    pub fn has_room(&self) -> bool {
        self.has_room_beside(0, 0)
    }

    /// Whether a command would be taken once `weight` and `bytes` more were queued: for a
    /// caller that gathers requests before it sends them.
    pub fn has_room_beside(&self, weight: usize, bytes: usize) -> bool {
        self.weight + weight < self.limits.max_in_flight
            && self.unwritten().len() + bytes < self.limits.max_unwritten
    }

    /// Queues a command; its reply will come back with `tag`.
    pub fn send(&mut self, tag: T, args: &[&[u8]], now: Instant) -> Result<(), Refused> {
        self.send_weighted(tag, 1, args, now)
    }

    /// Queues a command that counts as `weight` in the window (a batch of that many requests).
    /// Refused only when the window is full already, so a batch gathered while it had room is
    /// taken whole.
    pub fn send_weighted(
        &mut self,
        tag: T,
        weight: usize,
        args: &[&[u8]],
        now: Instant,
    ) -> Result<(), Refused> {
        if !self.has_room() {
            return Err(Refused::Full);
        }
        resp::command(&mut self.out, args);
        self.push_waiting(tag, weight, now);
        Ok(())
    }

    fn push_waiting(&mut self, tag: T, weight: usize, now: Instant) {
        self.weight += weight;
        self.waiting
            .push_back((tag, now + self.limits.reply_timeout, weight));
    }

    /// Queues a command past the window: for the link's own few commands (reads that fill a
    /// gap), which must not be lost when requests have filled it.
    pub fn send_forced(&mut self, tag: T, args: &[&[u8]], now: Instant) {
        resp::command(&mut self.out, args);
        self.push_waiting(tag, 1, now);
    }

    /// Queues a command Redis answers out of band (under RESP3, `SUBSCRIBE`, `PSUBSCRIBE` and
    /// their opposites are confirmed by pushes): no reply is waited for. Counted against the
    /// unwritten bytes only.
    pub fn send_unanswered(&mut self, args: &[&[u8]]) -> Result<(), Refused> {
        if self.unwritten().len() >= self.limits.max_unwritten {
            return Err(Refused::Full);
        }
        resp::command(&mut self.out, args);
        Ok(())
    }

    /// The bytes to write to the socket.
    pub fn unwritten(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// The socket took `n` of them.
    pub fn wrote(&mut self, n: usize) {
        self.written = self.written.saturating_add(n).min(self.out.len());
        // Moved down only once most of it has gone, so partial writes cost no more than the bytes.
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written > self.out.len() / 2 {
            self.out.drain(..self.written);
            self.written = 0;
        }
    }

    /// Bytes read from the socket: every reply they complete is matched to its command. A
    /// reply with no command waiting for it means the stream is not what was asked for.
    pub fn received(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.input.extend_from_slice(bytes);
        let mut pos = 0;
        let result = loop {
            match self.decoder.decode(&self.input[pos..]) {
                Ok((used, Some(value))) => {
                    pos += used;
                    if let Value::Push(_) = value {
                        self.arrived.push_back(Arrived::Push(value));
                        continue;
                    }
                    match self.waiting.pop_front() {
                        Some((tag, _, weight)) => {
                            self.weight -= weight;
                            self.arrived.push_back(Arrived::Reply(tag, value));
                        }
                        None => break Err(LinkError::Unexpected),
                    }
                }
                Ok((used, None)) => {
                    pos += used;
                    break Ok(());
                }
                Err(e) => break Err(LinkError::Resp(e)),
            }
        };
        self.input.drain(..pos);
        result
    }

    /// The next reply or push, in the order they came.
    pub fn next_arrived(&mut self) -> Option<Arrived<T>> {
        self.arrived.pop_front()
    }

    /// Commands waiting for their replies, by weight.
    pub fn in_flight(&self) -> usize {
        self.weight
    }

    /// When the oldest command's reply is due, if one is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.front().map(|&(_, due, _)| due)
    }

    /// Whether a reply is overdue: the link is then dead (or Redis is stopped) and must be
    /// given up with [`Link::fail`].
    pub fn overdue(&self, now: Instant) -> bool {
        self.next_deadline().is_some_and(|due| now >= due)
    }

    /// The link is gone: every command still waiting, oldest first, whose outcome is unknown
    /// (it may or may not have run), and the link emptied for a new connection.
    pub fn fail(&mut self) -> Vec<T> {
        self.out.clear();
        self.written = 0;
        self.input.clear();
        self.decoder = Decoder::new(self.limits.resp);
        self.arrived.clear();
        self.weight = 0;
        self.waiting.drain(..).map(|(tag, _, _)| tag).collect()
    }
}

/// Why a link's input cannot be trusted any more; the link must be failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    Resp(RespError),
    /// A reply arrived with no command waiting for it.
    Unexpected,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Resp(e) => write!(f, "{e}"),
            LinkError::Unexpected => f.write_str("a reply with no command waiting for it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(max_in_flight: usize) -> Link<u32> {
        Link::new(LinkLimits {
            max_in_flight,
            ..LinkLimits::default()
        })
    }

    #[test]
    fn pipelined_commands_get_their_replies_in_order_however_the_bytes_come() {
        let now = Instant::now();
        let mut l = link(10);
        l.send(1, &[b"PING"], now).unwrap();
        l.send(2, &[b"GET", b"k"], now).unwrap();
        assert_eq!(
            l.unwritten(),
            b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
        l.wrote(4);
        assert!(l.unwritten().starts_with(b"$4\r\nPING"));
        l.wrote(10);
        assert!(l.unwritten().starts_with(b"*2\r\n$3\r\nGET"));
        l.wrote(usize::MAX);
        assert!(l.unwritten().is_empty());
        let replies = b"+PONG\r\n>2\r\n$7\r\nmessage\r\n$1\r\nx\r\n$3\r\nabc\r\n";
        for chunk in replies.chunks(4) {
            l.received(chunk).unwrap();
        }
        assert_eq!(
            l.next_arrived(),
            Some(Arrived::Reply(1, Value::Simple(b"PONG".to_vec())))
        );
        // The push came between the two replies, and is taken between them.
        assert!(matches!(l.next_arrived(), Some(Arrived::Push(Value::Push(v))) if v.len() == 2));
        assert_eq!(
            l.next_arrived(),
            Some(Arrived::Reply(2, Value::Bulk(b"abc".to_vec())))
        );
        assert_eq!(l.next_arrived(), None);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn a_subscription_confirmed_by_a_push_waits_for_no_reply() {
        let now = Instant::now();
        let mut l = link(10);
        l.send_unanswered(&[b"SUBSCRIBE", b"ch"]).unwrap();
        l.send(1, &[b"PING"], now).unwrap();
        assert_eq!(l.in_flight(), 1);
        l.received(b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n+PONG\r\n")
            .unwrap();
        assert!(matches!(l.next_arrived(), Some(Arrived::Push(Value::Push(v))) if v.len() == 3));
        assert_eq!(
            l.next_arrived(),
            Some(Arrived::Reply(1, Value::Simple(b"PONG".to_vec())))
        );
    }

    #[test]
    fn the_window_is_bounded_and_opens_as_replies_come_back() {
        let now = Instant::now();
        let mut l = link(2);
        l.send(1, &[b"PING"], now).unwrap();
        l.send(2, &[b"PING"], now).unwrap();
        assert!(!l.has_room());
        assert_eq!(l.send(3, &[b"PING"], now), Err(Refused::Full));
        l.received(b"+PONG\r\n").unwrap();
        assert!(l.has_room());
        l.send(3, &[b"PING"], now).unwrap();
        let mut small = Link::<u32>::new(LinkLimits {
            max_unwritten: 10,
            ..LinkLimits::default()
        });
        small.send(1, &[b"SET", b"k", b"v"], now).unwrap();
        assert_eq!(
            small.send(2, &[b"PING"], now),
            Err(Refused::Full),
            "unwritten bytes"
        );
    }

    #[test]
    fn an_overdue_reply_fails_the_link_and_hands_back_every_waiting_command() {
        let now = Instant::now();
        let mut l = link(10);
        l.send(1, &[b"PING"], now).unwrap();
        l.send(2, &[b"PING"], now + Duration::from_secs(1)).unwrap();
        assert!(!l.overdue(now + Duration::from_millis(1999)));
        assert!(l.overdue(now + Duration::from_secs(2)));
        // Half a reply had arrived: it goes with the link.
        l.received(b"+PO").unwrap();
        assert_eq!(l.fail(), [1, 2]);
        assert_eq!((l.in_flight(), l.unwritten().len()), (0, 0));
        l.send(3, &[b"PING"], now).unwrap();
        l.received(b"+PONG\r\n").unwrap();
        assert_eq!(
            l.next_arrived(),
            Some(Arrived::Reply(3, Value::Simple(b"PONG".to_vec())))
        );
    }

    #[test]
    fn a_reply_nobody_asked_for_or_broken_bytes_are_errors() {
        let mut l = link(10);
        assert_eq!(l.received(b"+OK\r\n"), Err(LinkError::Unexpected));
        let mut l = link(10);
        l.send(1, &[b"PING"], Instant::now()).unwrap();
        assert_eq!(
            l.received(b"?\r\n"),
            Err(LinkError::Resp(RespError::UnknownType(b'?')))
        );
    }
}
