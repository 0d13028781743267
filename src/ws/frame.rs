//! The frame codec (RFC 6455 §5.2): header decoding with every rule checked once, header
//! encoding with the minimal length form, and masking a word at a time.

use std::fmt;

/// The longest header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;
/// Control frames carry at most 125 bytes (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Close status codes the server sends (§7.4.1). 1000 is the one it sends only as an echo of
/// the peer's own close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    Normal = 1000,
    GoingAway = 1001,
    ProtocolError = 1002,
    InvalidPayload = 1007,
    PolicyViolation = 1008,
    TooBig = 1009,
}

impl CloseCode {
    pub const ALL: [CloseCode; 6] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::TooBig,
    ];

    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

/// Whether a peer may send this code in a close frame (§7.4: 1004–1006 and 1015 are reserved,
/// 1012–1014 were not defined by the RFC, 3000–4999 belong to libraries and applications).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    ReservedBits,
    ReservedOpcode(u8),
    Unmasked,
    MaskedServerFrame,
    FragmentedControl,
    ControlTooLong,
    LengthOverflow,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => {
                f.write_str("reserved bits set without a negotiated extension")
            }
            FrameError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            FrameError::Unmasked => f.write_str("client frames must be masked"),
            FrameError::MaskedServerFrame => f.write_str("server frames must not be masked"),
            FrameError::FragmentedControl => f.write_str("control frames must not be fragmented"),
            FrameError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            FrameError::LengthOverflow => {
                f.write_str("payload length has its most significant bit set")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    pub header_len: usize,
}

/// Which side's frames are being decoded: a server reads masked client frames and vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Decodes a header from the start of `buf`; `Ok(None)` means more bytes are needed.
pub fn decode_header(buf: &[u8], role: Role) -> Result<Option<FrameHeader>, FrameError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::ReservedOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(FrameError::Unmasked),
        (Role::Client, true) => return Err(FrameError::MaskedServerFrame),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if len7 as usize > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong);
        }
    }
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(None);
    }
    let payload_len = match ext {
        2 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err(FrameError::LengthOverflow);
            }
            n
        }
        _ => len7 as u64,
    };
    let mask = masked.then(|| {
        let m = &buf[2 + ext..6 + ext];
        [m[0], m[1], m[2], m[3]]
    });
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len,
    }))
}

/// Writes an unmasked (server) frame header into `out` and returns its length.
pub fn encode_header(
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    out: &mut [u8; MAX_HEADER_LEN],
) -> usize {
    out[0] = (if fin { 0x80 } else { 0 }) | opcode.bits();
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// A complete unmasked frame.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(true, opcode, payload.len(), &mut header);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
    out
}

/// Appends a complete masked frame, as a client sends it, to `out`. The server never writes one;
/// the load generator and the fuzz targets drive the server with it.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(true, opcode, payload.len(), &mut header);
    header[1] |= 0x80;
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// A close frame with a status code and a reason (truncated to fit a control frame).
pub fn encode_close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(OpCode::Close, &payload)
}

/// XORs `buf` with the mask, where `buf` starts `offset` bytes into the masked payload.
/// Eight bytes at a time; the compiler widens it further.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_section_5_7_examples() {
        // A single-frame unmasked text message "Hello".
        assert_eq!(
            encode_frame(OpCode::Text, b"Hello"),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        // A single-frame masked text message "Hello".
        let mut masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = decode_header(&masked, Role::Server).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.header_len),
            (true, OpCode::Text, 5, 6)
        );
        apply_mask(&mut masked[6..], h.mask.unwrap(), 0);
        assert_eq!(&masked[6..], b"Hello");
        // 256 bytes and 64 KiB binary messages use the 16- and 64-bit lengths.
        assert_eq!(
            &encode_frame(OpCode::Binary, &[0; 256])[..4],
            [0x82, 0x7E, 0x01, 0x00]
        );
        assert_eq!(
            &encode_frame(OpCode::Binary, &[0; 65536])[..10],
            [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]
        );
        // Unmasked ping with "Hello", as a client would decode it.
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let h = decode_header(&ping, Role::Client).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len), (OpCode::Ping, 5));
    }

    #[test]
    fn lengths_use_the_minimal_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut h = [0u8; MAX_HEADER_LEN];
            assert_eq!(
                encode_header(true, OpCode::Text, len, &mut h),
                header_len,
                "{len}"
            );
            let d = decode_header(&h[..header_len], Role::Client)
                .unwrap()
                .unwrap();
            assert_eq!(d.payload_len, len as u64);
        }
    }

    #[test]
    fn header_rules() {
        let cases: [(&[u8], FrameError); 6] = [
            (&[0xC1, 0x80, 0, 0, 0, 0], FrameError::ReservedBits),
            (&[0x83, 0x80, 0, 0, 0, 0], FrameError::ReservedOpcode(3)),
            (&[0x81, 0x00], FrameError::Unmasked),
            (&[0x09, 0x80, 0, 0, 0, 0], FrameError::FragmentedControl),
            (
                &[0x89, 0xFE, 0, 126, 0, 0, 0, 0],
                FrameError::ControlTooLong,
            ),
            (
                &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                FrameError::LengthOverflow,
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(decode_header(bytes, Role::Server), Err(err));
        }
        assert_eq!(
            decode_header(&[0x81, 0x00], Role::Client)
                .unwrap()
                .unwrap()
                .payload_len,
            0
        );
        assert_eq!(
            decode_header(&[0x81, 0x80], Role::Client),
            Err(FrameError::MaskedServerFrame)
        );
    }

    #[test]
    fn partial_headers_need_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(decode_header(&full[..cut], Role::Server), Ok(None), "{cut}");
        }
        assert!(decode_header(&full, Role::Server).unwrap().is_some());
    }

    #[test]
    fn masking_matches_bytewise_at_every_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let expected: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        for split in [0, 1, 2, 3, 5, 8, 13, 999] {
            let mut buf = data.clone();
            let (a, b) = buf.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(buf, expected, "{split}");
        }
    }

    #[test]
    fn client_frames_decode_as_the_server_reads_them() {
        for len in [0, 5, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = vec![0xAA];
            encode_client_frame(&mut out, OpCode::Binary, &payload, [9, 8, 7, 6]);
            let h = decode_header(&out[1..], Role::Server).unwrap().unwrap();
            assert_eq!(
                (h.fin, h.opcode, h.payload_len),
                (true, OpCode::Binary, len as u64)
            );
            let body = &mut out[1 + h.header_len..];
            apply_mask(body, h.mask.unwrap(), 0);
            assert_eq!(body, &payload[..], "{len}");
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let frame = encode_close(1000, &"é".repeat(100));
        assert!(frame.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
