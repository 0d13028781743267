//! The Redis serialization protocol (RESP2, and the RESP3 types a Redis 7 may send), sans-IO:
//! [`Decoder`] turns bytes as they arrive into [`Value`]s, each byte looked at a bounded number
//! of times however the bytes are split; [`command`] and [`encode`] write values. The groundwork
//! of cluster mode (issue #11): the server does not talk to Redis yet.

mod decode;

pub use decode::Decoder;

use std::fmt;

/// One RESP value. Strings are bytes: Redis does not promise UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`
    Simple(Vec<u8>),
    /// `-ERR ...`, and RESP3's bulk error `!`.
    Error(Vec<u8>),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc`
    Bulk(Vec<u8>),
    /// RESP2's `$-1` and `*-1`, RESP3's `_`.
    Null,
    /// `#t` / `#f`
    Boolean(bool),
    /// `,3.14` as written (`inf`, `-inf` and `nan` included), so it round-trips exactly.
    Double(Vec<u8>),
    /// `(3492890328409238509324850943850943825024385`
    BigNumber(Vec<u8>),
    /// `=15\r\ntxt:Some string`: the format's three letters, then the text.
    Verbatim { format: [u8; 3], text: Vec<u8> },
    /// `*`
    Array(Vec<Value>),
    /// `~`
    Set(Vec<Value>),
    /// `>`: out-of-band data (pub/sub messages under RESP3).
    Push(Vec<Value>),
    /// `%`, as key/value pairs in the order sent. (RESP3 attributes, `|`, are read and dropped:
    /// they annotate the value that follows, which is returned.)
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The bytes of a simple or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }
}

/// What the decoder will hold for one value, so a peer (or a corrupted stream) cannot make it
/// allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (Redis's own `proto-max-bulk-len` is 512 MiB).
    pub max_bulk: usize,
    /// Most elements of one array, set, push or map (pairs count twice).
    pub max_elements: usize,
    /// Deepest nesting of aggregates.
    pub max_depth: usize,
    /// Longest line: a simple string, an error, a number.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk: 64 << 20,
            max_elements: 1 << 20,
            max_depth: 16,
            max_line: 64 * 1024,
        }
    }
}

/// Why bytes are not RESP; after one, the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    UnknownType(u8),
    /// A line not ended by CRLF (a lone CR or LF inside it).
    BadLineEnd,
    /// A bulk string's data not followed by CRLF.
    BadBulkEnd,
    BadInteger,
    BadLength,
    BadBoolean,
    BadDouble,
    BadBigNumber,
    BadVerbatim,
    /// A bulk string, an aggregate or a line past its limit.
    TooLarge {
        limit: usize,
    },
    TooDeep {
        limit: usize,
    },
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            RespError::BadLineEnd => f.write_str("a RESP line not ended by CRLF"),
            RespError::BadBulkEnd => f.write_str("a bulk string not followed by CRLF"),
            RespError::BadInteger => f.write_str("not a RESP integer"),
            RespError::BadLength => f.write_str("not a valid RESP length"),
            RespError::BadBoolean => f.write_str("a RESP boolean other than t or f"),
            RespError::BadDouble => f.write_str("not a RESP double"),
            RespError::BadBigNumber => f.write_str("not a RESP big number"),
            RespError::BadVerbatim => f.write_str("a verbatim string without its format"),
            RespError::TooLarge { limit } => write!(f, "a RESP value larger than {limit}"),
            RespError::TooDeep { limit } => write!(f, "RESP aggregates nested deeper than {limit}"),
        }
    }
}

impl std::error::Error for RespError {}

/// A command as Redis takes it: an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    header(out, b'*', args.len());
    for arg in args {
        bulk(out, b'$', arg);
    }
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    header(out, kind, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// Writes `value` in RESP3 (RESP2 for the types RESP2 has). A simple string or an error holding
/// CR or LF is written as a bulk string or a bulk error, which hold any bytes; doubles and big
/// numbers are written as held (the decoder checked them).
pub fn encode(out: &mut Vec<u8>, value: &Value) {
    let plain = |b: &[u8]| !b.contains(&b'\r') && !b.contains(&b'\n');
    match value {
        Value::Simple(s) if plain(s) => line(out, b'+', s),
        Value::Simple(s) => bulk(out, b'$', s),
        Value::Error(e) if plain(e) => line(out, b'-', e),
        Value::Error(e) => bulk(out, b'!', e),
        Value::Integer(n) => line(out, b':', n.to_string().as_bytes()),
        Value::Bulk(b) => bulk(out, b'$', b),
        Value::Null => out.extend_from_slice(b"_\r\n"),
        Value::Boolean(b) => line(out, b'#', if *b { b"t" } else { b"f" }),
        Value::Double(d) => line(out, b',', d),
        Value::BigNumber(n) => line(out, b'(', n),
        Value::Verbatim { format, text } => {
            header(out, b'=', text.len() + 4);
            out.extend_from_slice(format);
            out.push(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            let kind = match value {
                Value::Array(_) => b'*',
                Value::Set(_) => b'~',
                _ => b'>',
            };
            header(out, kind, items.len());
            for item in items {
                encode(out, item);
            }
        }
        Value::Map(pairs) => {
            header(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode(out, k);
                encode(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SET", b"k", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn strings_with_line_ends_are_written_as_bulk() {
        let mut out = Vec::new();
        encode(&mut out, &Value::Simple(b"a\nb".to_vec()));
        encode(&mut out, &Value::Error(b"x\ry".to_vec()));
        assert_eq!(out, b"$3\r\na\nb\r\n!3\r\nx\ry\r\n");
    }
}
