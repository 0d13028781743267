//! Many WebSocket clients on one mio loop: connect (from spread source addresses), handshake,
//! subscribe, then publish and check what arrives. Frames are decoded with the server crate's
//! own codec (client role: unmasked server frames).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use pubsub::ws::frame::{decode_header, encode_client_frame, OpCode, Role};

use crate::measure::Latency;
use crate::timer::Timer;

/// The pacing timer's token: past any client's index.
const TIMER: Token = Token(usize::MAX);

const MASK: [u8; 4] = [0x5a, 0xa5, 0x3c, 0xc3];
const UPGRADE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Handshaking,
    Open,
    Closed,
}

#[derive(Debug, Default)]
pub struct SubStats {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub slow_consumer: bool,
    pub close_code: Option<u16>,
}

pub enum Kind {
    /// Subscribed to one topic; counts what arrives.
    Subscriber {
        topic: String,
        sub: SubStats,
        acked: bool,
    },
    /// Publishes to its topics round-robin.
    Publisher {
        topics: Vec<String>,
        next: usize,
        unacked: usize,
        /// When each publish not yet answered was queued (answers come in order).
        sent: VecDeque<u64>,
        acked: u64,
        errors: u64,
    },
    /// Subscribes, then stops reading (the slow consumer) until `reading` is set again.
    Stalled {
        topic: String,
        acked: bool,
        reading: bool,
        notice: bool,
        close_code: Option<u16>,
    },
}

pub struct Client {
    pub stream: TcpStream,
    pub phase: Phase,
    pub kind: Kind,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    writable: bool,
}

/// One poll event, copied out so the handlers can borrow the fleet.
struct Ready {
    token: usize,
    readable: bool,
    read_closed: bool,
    writable: bool,
}

pub struct Fleet {
    pub poll: Poll,
    pub clients: Vec<Client>,
    events: Events,
    ready: Vec<Ready>,
    scratch: Vec<u8>,
    pub start: Instant,
    pub latency: Latency,
    /// From a publish queued to its answer read.
    pub ack_latency: Latency,
    pub published: u64,
    /// Events received by all subscribers (kept as a running total: the publish loop reads it
    /// once per publish, and summing 10,000 subscribers there made the tool the bottleneck).
    pub received: u64,
    seq_counter: u64,
    payload_pad: usize,
    server: SocketAddr,
    /// Connections come from 127.<source>.0.2-9.
    pub source: u8,
    /// Made on the first `wake_after`.
    timer: Option<Timer>,
}

/// A publish message as a masked client frame; `t` is the send time in ns since `start`.
fn publish_frame(out: &mut Vec<u8>, topic: &str, counter: u64, t: u64, pad: usize) {
    let json = format!(
        r#"{{"type":"publish","topic":"{topic}","message":{{"id":"00000000-0000-4000-8000-{counter:012x}","payload":{{"t":"{t:020}","p":"{}"}}}}}}"#,
        "x".repeat(pad)
    );
    client_frame(out, OpCode::Text, json.as_bytes());
}

/// A masked client frame, with the server crate's own encoder.
pub fn client_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    encode_client_frame(out, opcode, payload, MASK);
}

/// Parses the digits ending just before `end` (walking backwards).
fn digits_before(text: &[u8], end: usize) -> Option<u64> {
    let mut i = end;
    while i > 0 && text[i - 1].is_ascii_digit() {
        i -= 1;
    }
    std::str::from_utf8(&text[i..end]).ok()?.parse().ok()
}

/// `seq` and the publisher's `t` from an event frame's text, at the positions our own payload
/// layout puts them (`..."payload":{"t":<20 digits>,...},"seq":N,"ts":"<24 chars>"}`).
fn parse_event(text: &[u8]) -> Option<(u64, u64)> {
    // `,"ts":"2026-11-28T02:35:40.422Z"}` is 33 bytes.
    let seq = digits_before(text, text.len().checked_sub(33)?)?;
    let at = text.windows(6).position(|w| w == b"{\"t\":\"")? + 6;
    let t = std::str::from_utf8(text.get(at..at + 20)?)
        .ok()?
        .parse()
        .ok()?;
    Some((seq, t))
}

impl Fleet {
    pub fn new(server: SocketAddr, payload_bytes: usize) -> io::Result<Fleet> {
        // The publish payload is {"t":"<20 digits>","p":"<pad>"}: 33 bytes plus the padding.
        let payload_pad = payload_bytes.saturating_sub(33);
        Ok(Fleet {
            poll: Poll::new()?,
            clients: Vec::new(),
            events: Events::with_capacity(4096),
            ready: Vec::new(),
            scratch: vec![0; 256 * 1024],
            start: Instant::now(),
            latency: Latency::new(),
            ack_latency: Latency::new(),
            published: 0,
            received: 0,
            seq_counter: 0,
            payload_pad,
            server,
            source: 0,
            timer: None,
        })
    }

    /// Makes the next `turn` return no later than `after` from now, to the microsecond, where
    /// its own timeout would round up to a millisecond.
    pub fn wake_after(&mut self, after: Duration) -> io::Result<()> {
        if self.timer.is_none() {
            self.timer = Some(Timer::new(self.poll.registry(), TIMER)?);
        }
        self.timer.as_ref().map_or(Ok(()), |timer| timer.arm(after))
    }

    /// Opens a connection from 127.0.0.(2 + i % 8) so ephemeral ports last.
    pub fn add(&mut self, kind: Kind) -> io::Result<usize> {
        self.add_to(kind, self.server)
    }

    /// `add`, to another server than the fleet's (the instances of a cluster).
    pub fn add_to(&mut self, kind: Kind, server: SocketAddr) -> io::Result<usize> {
        let i = self.clients.len();
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        if server.ip().is_loopback() {
            // Pick the port at connect time, knowing the whole 4-tuple, so ports still in
            // TIME_WAIT from an earlier run are not reused (IP_BIND_ADDRESS_NO_PORT).
            let one: libc::c_int = 1;
            // SAFETY: setsockopt reads an int we own, on a socket we own.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&socket),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let source = SocketAddr::from(([127, self.source, 0, 2 + (i % 8) as u8], 0));
            socket.bind(&source.into())?;
        }
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        match socket.connect(&server.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(socket.into());
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.clients.push(Client {
            stream,
            phase: Phase::Connecting,
            kind,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            writable: false,
        });
        Ok(i)
    }

    pub fn open_count(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.phase == Phase::Open)
            .count()
    }

    pub fn subscribed_count(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| {
                matches!(
                    c.kind,
                    Kind::Subscriber { acked: true, .. } | Kind::Stalled { acked: true, .. }
                )
            })
            .count()
    }

    /// Queues one publish on publisher `i` (to its next topic).
    pub fn publish(&mut self, i: usize) {
        let t = self.start.elapsed().as_nanos() as u64;
        self.seq_counter += 1;
        let counter = self.seq_counter;
        let pad = self.payload_pad;
        let c = &mut self.clients[i];
        if let Kind::Publisher {
            topics,
            next,
            unacked,
            sent,
            ..
        } = &mut c.kind
        {
            let topic = &topics[*next % topics.len()];
            *next += 1;
            *unacked += 1;
            sent.push_back(t);
            publish_frame(&mut c.out, topic, counter, t, pad);
            self.published += 1;
        }
    }

    pub fn publish_errors(&self) -> u64 {
        self.clients
            .iter()
            .map(|c| match &c.kind {
                Kind::Publisher { errors, .. } => *errors,
                _ => 0,
            })
            .sum()
    }

    pub fn unacked(&self, i: usize) -> usize {
        match &self.clients[i].kind {
            Kind::Publisher { unacked, .. } => *unacked,
            _ => 0,
        }
    }

    /// Writes what is queued on every client that can take it.
    pub fn flush_all(&mut self) {
        for c in &mut self.clients {
            if c.writable && c.out_pos < c.out.len() {
                flush(c);
            }
        }
    }

    /// One poll round (at most `timeout`), handling everything that is ready.
    pub fn turn(&mut self, timeout: Duration) -> io::Result<()> {
        self.poll.poll(&mut self.events, Some(timeout))?;
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        if self.events.iter().any(|e| e.token() == TIMER) {
            if let Some(timer) = &self.timer {
                timer.clear();
            }
        }
        ready.extend(
            self.events
                .iter()
                .filter(|e| e.token() != TIMER)
                .map(|e| Ready {
                    token: e.token().0,
                    readable: e.is_readable() || e.is_read_closed(),
                    read_closed: e.is_read_closed(),
                    writable: e.is_writable(),
                }),
        );
        for r in &ready {
            if r.writable {
                self.on_writable(r.token);
            }
            if r.readable {
                self.on_readable(r.token, r.read_closed);
            }
        }
        self.ready = ready;
        self.flush_all();
        Ok(())
    }

    fn on_writable(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.writable = true;
        if c.phase == Phase::Connecting {
            if c.stream.peer_addr().is_err() {
                c.phase = Phase::Closed;
                return;
            }
            c.phase = Phase::Handshaking;
            let req = format!(
                "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {UPGRADE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            c.out.extend_from_slice(req.as_bytes());
        }
        flush(c);
    }

    /// Reads what has arrived. A read shorter than the buffer emptied the socket, and the
    /// edge-triggered poll reports any later data, so it ends there (one `recv` per delivery
    /// instead of two) unless the peer closed: then it reads on to the end of the stream.
    fn on_readable(&mut self, i: usize, to_end: bool) {
        loop {
            let c = &mut self.clients[i];
            if c.phase == Phase::Closed {
                return;
            }
            if matches!(
                c.kind,
                Kind::Stalled {
                    acked: true,
                    reading: false,
                    ..
                }
            ) {
                return; // not reading, on purpose
            }
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    c.phase = Phase::Closed;
                    return;
                }
                Ok(n) => {
                    let mut data = std::mem::take(&mut c.inbuf);
                    data.extend_from_slice(&self.scratch[..n]);
                    let used = self.process(i, &data);
                    data.drain(..used);
                    self.clients[i].inbuf = data;
                    if n < self.scratch.len() && !to_end {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.phase = Phase::Closed;
                    return;
                }
            }
        }
    }

    /// Handles complete frames (or the 101 response) at the start of `data`; returns bytes used.
    fn process(&mut self, i: usize, data: &[u8]) -> usize {
        let mut pos = 0;
        if self.clients[i].phase == Phase::Handshaking {
            let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                return 0;
            };
            let c = &mut self.clients[i];
            if !data.starts_with(b"HTTP/1.1 101") {
                c.phase = Phase::Closed;
                return data.len();
            }
            c.phase = Phase::Open;
            pos = end + 4;
            let subscribe = match &c.kind {
                Kind::Subscriber { topic, .. } | Kind::Stalled { topic, .. } => Some(format!(
                    r#"{{"type":"subscribe","topic":"{topic}","client_id":"bench"}}"#
                )),
                Kind::Publisher { .. } => None,
            };
            if let Some(msg) = subscribe {
                client_frame(&mut c.out, OpCode::Text, msg.as_bytes());
            }
        }
        let now_ns = self.start.elapsed().as_nanos() as u64;
        loop {
            let rest = &data[pos..];
            let Ok(Some(h)) = decode_header(rest, Role::Client) else {
                return pos;
            };
            let end = h.header_len + h.payload_len as usize;
            if rest.len() < end {
                return pos;
            }
            let payload = &rest[h.header_len..end];
            pos += end;
            let c = &mut self.clients[i];
            match h.opcode {
                OpCode::Text => {
                    let latency = match c.kind {
                        Kind::Publisher { .. } => &mut self.ack_latency,
                        _ => &mut self.latency,
                    };
                    on_text(c, payload, now_ns, latency, &mut self.received)
                }
                OpCode::Ping => client_frame(&mut c.out, OpCode::Pong, payload),
                OpCode::Close => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    match &mut c.kind {
                        Kind::Subscriber { sub, .. } => sub.close_code = code,
                        Kind::Stalled { close_code, .. } => *close_code = code,
                        Kind::Publisher { .. } => {}
                    }
                    c.phase = Phase::Closed;
                    return data.len();
                }
                _ => {}
            }
        }
    }

    /// Lets a stalled client read again (once the server has cut it).
    pub fn resume(&mut self, i: usize) {
        if let Kind::Stalled { reading, .. } = &mut self.clients[i].kind {
            *reading = true;
        }
        self.on_readable(i, true);
    }
}

fn on_text(c: &mut Client, payload: &[u8], now_ns: u64, latency: &mut Latency, total: &mut u64) {
    match &mut c.kind {
        Kind::Subscriber { sub, acked, .. } => {
            if payload.starts_with(b"{\"type\":\"event\"") {
                if let Some((seq, t)) = parse_event(payload) {
                    if sub.expected == 0 {
                        sub.expected = seq;
                    }
                    if seq == sub.expected {
                        sub.expected += 1;
                    } else if seq > sub.expected {
                        sub.lost += seq - sub.expected;
                        sub.out_of_order += 1;
                        sub.expected = seq + 1;
                    } else {
                        sub.duplicates += 1;
                    }
                    sub.received += 1;
                    *total += 1;
                    latency.record(now_ns.saturating_sub(t));
                }
            } else if payload.starts_with(b"{\"type\":\"ack\"") {
                *acked = true;
            } else if payload.windows(13).any(|w| w == b"SLOW_CONSUMER") {
                sub.slow_consumer = true;
            }
        }
        Kind::Stalled { acked, notice, .. } => {
            if payload.starts_with(b"{\"type\":\"ack\"") {
                *acked = true;
            } else if payload.windows(13).any(|w| w == b"SLOW_CONSUMER") {
                *notice = true;
            }
        }
        Kind::Publisher {
            unacked,
            sent,
            acked,
            errors,
            ..
        } => {
            *unacked = unacked.saturating_sub(1);
            if let Some(t) = sent.pop_front() {
                latency.record(now_ns.saturating_sub(t));
            }
            if payload.starts_with(b"{\"type\":\"ack\"") {
                *acked += 1;
            } else {
                *errors += 1;
            }
        }
    }
}

fn flush(c: &mut Client) {
    while c.out_pos < c.out.len() {
        match c.stream.write(&c.out[c.out_pos..]) {
            Ok(0) => break,
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.writable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                c.phase = Phase::Closed;
                break;
            }
        }
    }
    if c.out_pos == c.out.len() {
        c.out.clear();
        c.out_pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_at_our_layout() {
        let text = br#"{"type":"event","topic":"bench","message":{"id":"00000000-0000-4000-8000-000000000001","payload":{"t":"00000000000123456789","p":"xx"}},"seq":42,"ts":"2026-11-28T02:35:40.422Z"}"#;
        assert_eq!(parse_event(text), Some((42, 123456789)));
    }
}
