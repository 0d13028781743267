//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally: each byte is looked at
//! once however the body arrives, and every part a client controls is bounded: a chunk-size
//! line (extensions included), the decoded body, the framing around it, the trailers.

use super::request::RequestError;

/// The longest chunk-size line, extensions included.
pub const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line; `scanned` bytes of it were searched for its end already.
    Size {
        scanned: usize,
    },
    Data {
        left: usize,
    },
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Reading trailer lines; `scanned` as above, `bytes` the trailers so far.
    Trailers {
        scanned: usize,
        bytes: usize,
    },
}

/// A chunked body being decoded, and how far into its raw bytes the decoding got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    at: usize,
    state: State,
    body: Vec<u8>,
}

/// What the limits allow a chunked body.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    pub max_body: usize,
    /// Raw bytes besides the data: chunk-size lines and CRLFs.
    pub max_framing: usize,
    pub max_trailers: usize,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked {
            at: 0,
            state: State::Size { scanned: 0 },
            body: Vec::new(),
        }
    }
}

fn line_end(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| from + i)
}

impl Chunked {
    /// Goes on decoding `raw` (the body's bytes from its start: those seen before and the new
    /// ones). `Some(used)` once the last chunk and the trailers are complete.
    pub fn feed(
        &mut self,
        raw: &[u8],
        limits: &ChunkLimits,
    ) -> Result<Option<usize>, RequestError> {
        loop {
            if self.at - self.body.len() > limits.max_framing {
                return Err(RequestError::BadChunk(
                    "more chunk framing than data allows",
                ));
            }
            let rest = &raw[self.at..];
            match self.state {
                State::Size { scanned } => {
                    let Some(end) = line_end(rest, scanned) else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(RequestError::BadChunk("chunk-size line too long"));
                        }
                        self.state = State::Size {
                            scanned: rest.len(),
                        };
                        return Ok(None);
                    };
                    let line = &rest[..=end];
                    if line.len() > MAX_CHUNK_LINE {
                        return Err(RequestError::BadChunk("chunk-size line too long"));
                    }
                    let size = match httparse::parse_chunk_size(line) {
                        Ok(httparse::Status::Complete((_, size))) => size,
                        _ => return Err(RequestError::BadChunk("invalid chunk size")),
                    };
                    self.at += line.len();
                    self.state = if size == 0 {
                        State::Trailers {
                            scanned: 0,
                            bytes: 0,
                        }
                    } else if size > (limits.max_body - self.body.len()) as u64 {
                        return Err(RequestError::BodyTooLarge {
                            limit: limits.max_body,
                        });
                    } else {
                        State::Data {
                            left: size as usize,
                        }
                    };
                }
                State::Data { left } => {
                    let take = left.min(rest.len());
                    self.body.extend_from_slice(&rest[..take]);
                    self.at += take;
                    if take < left {
                        self.state = State::Data { left: left - take };
                        return Ok(None);
                    }
                    self.state = State::DataEnd;
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        self.at += 2;
                        self.state = State::Size { scanned: 0 };
                    }
                    [] | [b'\r'] => return Ok(None),
                    _ => return Err(RequestError::BadChunk("chunk data not followed by CRLF")),
                },
                State::Trailers { scanned, bytes } => {
                    let Some(end) = line_end(rest, scanned) else {
                        if bytes + rest.len() > limits.max_trailers {
                            return Err(RequestError::HeadTooLarge);
                        }
                        self.state = State::Trailers {
                            scanned: rest.len(),
                            bytes,
                        };
                        return Ok(None);
                    };
                    let line = &rest[..=end];
                    let bytes = bytes + line.len();
                    if bytes > limits.max_trailers {
                        return Err(RequestError::HeadTooLarge);
                    }
                    self.at += line.len();
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(Some(self.at));
                    }
                    if !line.contains(&b':') {
                        return Err(RequestError::BadChunk("a trailer line without a colon"));
                    }
                    self.state = State::Trailers { scanned: 0, bytes };
                }
            }
        }
    }

    /// The decoded body (once `feed` said it is complete).
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ChunkLimits = ChunkLimits {
        max_body: 1024,
        max_framing: 4096 + 1024,
        max_trailers: 8192,
    };

    fn whole(raw: &[u8]) -> Result<Option<(Vec<u8>, usize)>, RequestError> {
        let mut c = Chunked::default();
        Ok(c.feed(raw, &LIMITS)?.map(|used| (c.into_body(), used)))
    }

    #[test]
    fn chunks_extensions_and_trailers() {
        let raw = b"4\r\n{\"na\r\na;ext=1\r\nme\":\"abc\"}\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, used) = whole(raw).unwrap().unwrap();
        assert_eq!(body, b"{\"name\":\"abc\"}");
        assert_eq!(&raw[used..], b"NEXT");
    }

    #[test]
    fn fed_a_byte_at_a_time_it_gives_the_same_result() {
        let raw = b"4\r\n{\"na\r\na;ext=1\r\nme\":\"abc\"}\r\n0\r\nX-T: 1\r\n\r\n";
        let mut c = Chunked::default();
        let mut done = None;
        for n in 1..=raw.len() {
            done = c.feed(&raw[..n], &LIMITS).unwrap();
            if n < raw.len() {
                assert_eq!(done, None, "complete at {n} of {}", raw.len());
            }
        }
        assert_eq!(done, Some(raw.len()));
        assert_eq!(c.into_body(), b"{\"name\":\"abc\"}");
    }

    #[test]
    fn each_part_a_client_controls_is_bounded() {
        let endless_extension = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert_eq!(
            whole(&endless_extension),
            Err(RequestError::BadChunk("chunk-size line too long"))
        );
        let endless_trailer = [b"0\r\nX: ".as_slice(), &[b'a'; 9000]].concat();
        assert_eq!(whole(&endless_trailer), Err(RequestError::HeadTooLarge));
        assert_eq!(
            whole(b"800\r\n"),
            Err(RequestError::BodyTooLarge { limit: 1024 })
        );
        // One byte of data per 4 KiB of extension: the framing runs out long before the body.
        let mut heavy = Vec::new();
        for _ in 0..4 {
            heavy.extend_from_slice(b"1;");
            heavy.extend(std::iter::repeat_n(b'e', 4000));
            heavy.extend_from_slice(b"\r\nx\r\n");
        }
        assert_eq!(
            whole(&heavy),
            Err(RequestError::BadChunk(
                "more chunk framing than data allows"
            ))
        );
    }

    #[test]
    fn malformed_chunks() {
        for (raw, why) in [
            (&b"zz\r\n"[..], "invalid chunk size"),
            (b"1\r\nxy", "chunk data not followed by CRLF"),
            (b"0\r\nno colon\r\n\r\n", "a trailer line without a colon"),
        ] {
            assert_eq!(whole(raw), Err(RequestError::BadChunk(why)), "{raw:?}");
        }
    }
}
