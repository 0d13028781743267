//! Frames to messages for one connection (RFC 6455 §5.4–5.5): fragmentation with control
//! frames interleaved, UTF-8 checked as payload arrives, the message size limit enforced before
//! anything past it is buffered, close payloads checked.
//!
//! A frame that has fully arrived and is not part of a fragmented message is returned in place
//! (unmasked inside the caller's buffer, no copy). Otherwise payload bytes are taken as they
//! arrive and appended to the message being assembled, so the caller only keeps an unfinished
//! frame header between reads.

use std::fmt;

use super::frame::{self, apply_mask, decode_header, FrameError, OpCode, Role};
use super::utf8::Utf8Validator;

#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message, already checked to be UTF-8.
    Text(Payload<'a>),
    Binary(Payload<'a>),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer's close frame: its status code (if any) and reason.
    Close(Option<u16>, &'a str),
}

/// A violation that fails the connection with a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    Frame(FrameError),
    UnexpectedContinuation,
    ExpectedContinuation,
    InvalidUtf8,
    MessageTooBig { limit: usize },
    InvalidClosePayload,
    InvalidCloseCode(u16),
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Frame(e) => e.fmt(f),
            WsError::UnexpectedContinuation => {
                f.write_str("continuation frame without a message to continue")
            }
            WsError::ExpectedContinuation => {
                f.write_str("new data frame while a fragmented message is unfinished")
            }
            WsError::InvalidUtf8 => f.write_str("text is not valid UTF-8"),
            WsError::MessageTooBig { limit } => write!(f, "message larger than {limit} bytes"),
            WsError::InvalidClosePayload => {
                f.write_str("close frame payload of one byte or with a non-UTF-8 reason")
            }
            WsError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
        }
    }
}

impl From<FrameError> for WsError {
    fn from(e: FrameError) -> Self {
        WsError::Frame(e)
    }
}

/// A data frame whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct Streaming {
    fin: bool,
    mask: [u8; 4],
    remaining: u64,
    offset: usize,
}

#[derive(Debug)]
pub struct Session {
    max_message: usize,
    /// The kind of the message being assembled (`Text` or `Binary`), if one is unfinished.
    message: Option<OpCode>,
    streaming: Option<Streaming>,
    assembly: Vec<u8>,
    utf8: Utf8Validator,
}

impl Session {
    pub fn new(max_message: usize) -> Session {
        Session {
            max_message,
            message: None,
            streaming: None,
            assembly: Vec::new(),
            utf8: Utf8Validator::default(),
        }
    }

    /// Whether a message has begun and not ended (its frames are still arriving).
    pub fn in_message(&self) -> bool {
        self.message.is_some() || self.streaming.is_some()
    }

    /// Bytes held for an unfinished message (memory accounting).
    pub fn buffered(&self) -> usize {
        self.assembly.capacity()
    }

    /// Decodes from the start of `input`: how many bytes were used, and the event they completed.
    /// `(0, None)` means nothing more can be done until more bytes arrive.
    pub fn decode<'a>(
        &mut self,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), WsError> {
        if let Some(stream) = self.streaming {
            return self.continue_stream(stream, input);
        }
        let Some(h) = decode_header(input, Role::Server)? else {
            return Ok((0, None));
        };
        let mask = h.mask.unwrap_or([0; 4]);
        let hl = h.header_len;
        if h.opcode.is_control() {
            let end = hl + h.payload_len as usize;
            if input.len() < end {
                return Ok((0, None));
            }
            let payload = &mut input[hl..end];
            apply_mask(payload, mask, 0);
            let payload = &input[hl..end];
            let event = match h.opcode {
                OpCode::Ping => Event::Ping(payload),
                OpCode::Pong => Event::Pong(payload),
                _ => parse_close(payload)?,
            };
            return Ok((end, Some(event)));
        }
        match (h.opcode, self.message) {
            (OpCode::Continuation, None) => return Err(WsError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => return Err(WsError::ExpectedContinuation),
            _ => {}
        }
        if h.payload_len > (self.max_message - self.assembly.len()) as u64 {
            return Err(WsError::MessageTooBig {
                limit: self.max_message,
            });
        }
        let len = h.payload_len as usize;
        if h.fin && self.message.is_none() && input.len() >= hl + len {
            let payload = &mut input[hl..hl + len];
            apply_mask(payload, mask, 0);
            let event = if h.opcode == OpCode::Text {
                std::str::from_utf8(payload).map_err(|_| WsError::InvalidUtf8)?;
                Event::Text(Payload::Borrowed(payload))
            } else {
                Event::Binary(Payload::Borrowed(payload))
            };
            return Ok((hl + len, Some(event)));
        }
        if self.message.is_none() {
            self.message = Some(h.opcode);
            self.utf8.reset();
        }
        let stream = Streaming {
            fin: h.fin,
            mask,
            remaining: h.payload_len,
            offset: 0,
        };
        if len == 0 {
            return Ok((hl, self.end_frame(h.fin)?));
        }
        self.assembly.reserve(len.min(input.len() - hl).max(64));
        self.streaming = Some(stream);
        Ok((hl, None))
    }

    fn continue_stream<'a>(
        &mut self,
        mut s: Streaming,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), WsError> {
        let take = (s.remaining.min(input.len() as u64)) as usize;
        if take == 0 {
            return Ok((0, None));
        }
        let chunk = &mut input[..take];
        apply_mask(chunk, s.mask, s.offset);
        if self.message == Some(OpCode::Text) {
            self.utf8.feed(chunk).map_err(|_| WsError::InvalidUtf8)?;
        }
        self.assembly.extend_from_slice(chunk);
        s.remaining -= take as u64;
        s.offset += take;
        if s.remaining > 0 {
            self.streaming = Some(s);
            return Ok((take, None));
        }
        self.streaming = None;
        Ok((take, self.end_frame(s.fin)?))
    }

    /// A data frame of the assembled message is complete; on the final one, hand the message out.
    fn end_frame<'a>(&mut self, fin: bool) -> Result<Option<Event<'a>>, WsError> {
        if !fin {
            return Ok(None);
        }
        let kind = self.message.take();
        let body = std::mem::take(&mut self.assembly);
        Ok(Some(if kind == Some(OpCode::Text) {
            if !self.utf8.is_complete() {
                return Err(WsError::InvalidUtf8);
            }
            Event::Text(Payload::Owned(body))
        } else {
            Event::Binary(Payload::Owned(body))
        }))
    }
}

fn parse_close(payload: &[u8]) -> Result<Event<'_>, WsError> {
    match payload {
        [] => Ok(Event::Close(None, "")),
        [_] => Err(WsError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !frame::is_valid_close_code(code) {
                return Err(WsError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Event::Close(Some(code), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0xA1, 0xB2, 0xC3, 0xD4];

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        let mut body = payload.to_vec();
        apply_mask(&mut body, MASK, 0);
        out.extend_from_slice(&body);
        out
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Text(Vec<u8>),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    fn own(e: Event<'_>) -> Owned {
        match e {
            Event::Text(p) => Owned::Text(p.to_vec()),
            Event::Binary(p) => Owned::Binary(p.to_vec()),
            Event::Ping(p) => Owned::Ping(p.to_vec()),
            Event::Pong(p) => Owned::Pong(p.to_vec()),
            Event::Close(c, r) => Owned::Close(c, r.to_string()),
        }
    }

    /// Feeds `bytes` in chunks of `chunk` bytes, keeping unconsumed tails like the server does.
    fn run(bytes: &[u8], chunk: usize, max: usize) -> (Vec<Owned>, Option<WsError>) {
        let mut s = Session::new(max);
        let mut pending: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            pending.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match s.decode(&mut pending[pos..]) {
                    Ok((0, None)) => break,
                    Ok((n, e)) => {
                        if let Some(e) = e {
                            events.push(own(e));
                        }
                        pos += n;
                    }
                    Err(err) => return (events, Some(err)),
                }
            }
            pending.drain(..pos);
        }
        (events, None)
    }

    #[test]
    fn messages_are_the_same_at_every_chunk_size() {
        let mut stream = client_frame(true, 1, b"hello");
        stream.extend(client_frame(false, 1, "κό".as_bytes()));
        stream.extend(client_frame(true, 9, b"ping!"));
        stream.extend(client_frame(false, 0, "σμ".as_bytes()));
        stream.extend(client_frame(true, 0, "ε".as_bytes()));
        stream.extend(client_frame(true, 2, &[0u8; 300]));
        stream.extend(client_frame(true, 10, b""));
        stream.extend(client_frame(true, 8, &[0x03, 0xE8, b'b', b'y', b'e']));
        let want = vec![
            Owned::Text(b"hello".to_vec()),
            Owned::Ping(b"ping!".to_vec()),
            Owned::Text("κόσμε".as_bytes().to_vec()),
            Owned::Binary(vec![0; 300]),
            Owned::Pong(vec![]),
            Owned::Close(Some(1000), "bye".into()),
        ];
        for chunk in 1..=stream.len() {
            assert_eq!(
                run(&stream, chunk, 1 << 20),
                (want.clone_owned(), None),
                "chunk {chunk}"
            );
        }
    }

    trait CloneOwned {
        fn clone_owned(&self) -> Vec<Owned>;
    }
    impl CloneOwned for Vec<Owned> {
        fn clone_owned(&self) -> Vec<Owned> {
            self.iter()
                .map(|o| match o {
                    Owned::Text(v) => Owned::Text(v.clone()),
                    Owned::Binary(v) => Owned::Binary(v.clone()),
                    Owned::Ping(v) => Owned::Ping(v.clone()),
                    Owned::Pong(v) => Owned::Pong(v.clone()),
                    Owned::Close(c, r) => Owned::Close(*c, r.clone()),
                })
                .collect()
        }
    }

    #[test]
    fn violations_and_their_close_codes() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (client_frame(true, 0, b"x"), WsError::UnexpectedContinuation),
            (
                [client_frame(false, 1, b"a"), client_frame(true, 1, b"b")].concat(),
                WsError::ExpectedContinuation,
            ),
            (client_frame(true, 1, b"\xff"), WsError::InvalidUtf8),
            (client_frame(true, 8, &[3]), WsError::InvalidClosePayload),
            (
                client_frame(true, 8, &[0x03, 0xED]),
                WsError::InvalidCloseCode(1005),
            ),
            (
                client_frame(true, 8, &[0x03, 0xE8, 0xff]),
                WsError::InvalidUtf8,
            ),
            (
                client_frame(true, 2, &[0; 200]),
                WsError::MessageTooBig { limit: 150 },
            ),
            (
                [
                    client_frame(false, 2, &[0; 100]),
                    client_frame(true, 0, &[0; 100]),
                ]
                .concat(),
                WsError::MessageTooBig { limit: 150 },
            ),
        ];
        for (bytes, err) in cases {
            for chunk in [1, 3, bytes.len()] {
                let (_, got) = run(&bytes, chunk, 150);
                assert_eq!(got, Some(err), "chunk {chunk}");
            }
        }
    }

    #[test]
    fn invalid_text_fails_before_the_frame_ends() {
        let frame = client_frame(
            true,
            1,
            b"valid then \xf4\x90\x80\x80 and much more text after it",
        );
        let mut s = Session::new(1 << 20);
        let mut buf = frame[..2 + 4 + 12].to_vec();
        let (n, e) = s.decode(&mut buf).unwrap();
        assert_eq!((n, e), (6, None));
        let mut rest = frame[6..6 + 14].to_vec();
        assert_eq!(s.decode(&mut rest), Err(WsError::InvalidUtf8));
    }

    #[test]
    fn oversized_messages_are_refused_at_the_header() {
        let mut s = Session::new(1000);
        let mut header = client_frame(true, 2, &vec![0; 5000])[..8].to_vec();
        assert_eq!(
            s.decode(&mut header),
            Err(WsError::MessageTooBig { limit: 1000 })
        );
        assert_eq!(s.buffered(), 0);
    }
}
