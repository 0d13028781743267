//! Incremental RESP decoding. Complete tokens (a line, or a bulk string with its data) are
//! consumed as they arrive and aggregates are built on a stack, so a reply that arrives in many
//! reads is never parsed again from its start: the caller keeps only the unfinished token.

use super::{Limits, RespError, Value};

/// An aggregate still waiting for elements.
#[derive(Debug)]
struct Open {
    kind: Aggregate,
    /// Elements still to come (a map's pairs count twice).
    left: usize,
    items: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    Array,
    Set,
    Push,
    Map,
    /// Read and dropped, with the value that follows it.
    Attribute,
}

/// A decoder for one connection's stream of replies.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    stack: Vec<Open>,
    /// How far the unfinished line at the start of the input was searched for its end already.
    searched: usize,
}

/// What one token was.
enum Token {
    Value(Value),
    Open(Aggregate, usize),
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            stack: Vec::new(),
            searched: 0,
        }
    }

    /// Decodes from the start of `input`: how many bytes were used, and the value they
    /// completed, if they did. Call again on the rest while it returns a value; the unused
    /// bytes must be passed again, with more after them, on the next call.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Value>), RespError> {
        let mut pos = 0;
        loop {
            let Some((used, token)) = self.token(&input[pos..])? else {
                return Ok((pos, None));
            };
            pos += used;
            self.searched = 0;
            let mut value = match token {
                Token::Open(kind, 0) => empty(kind),
                Token::Open(kind, n) => {
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(RespError::TooDeep {
                            limit: self.limits.max_depth,
                        });
                    }
                    let left = if matches!(kind, Aggregate::Map | Aggregate::Attribute) {
                        n.checked_mul(2).ok_or(RespError::BadLength)?
                    } else {
                        n
                    };
                    if left > self.limits.max_elements {
                        return Err(RespError::TooLarge {
                            limit: self.limits.max_elements,
                        });
                    }
                    self.stack.push(Open {
                        kind,
                        left,
                        // Grown as elements arrive, not from what a header claims.
                        items: Vec::with_capacity(left.min(16)),
                    });
                    continue;
                }
                Token::Value(v) => Some(v),
            };
            // A complete value fills its parent, which may complete in turn.
            while let Some(v) = value.take() {
                let Some(parent) = self.stack.last_mut() else {
                    return Ok((pos, Some(v)));
                };
                parent.items.push(v);
                parent.left -= 1;
                if parent.left > 0 {
                    break;
                }
                let done = self.stack.pop().expect("the parent is there");
                value = finish(done);
            }
        }
    }

    /// The next complete token at the start of `input`, or `None` if it has not all arrived.
    fn token(&mut self, input: &[u8]) -> Result<Option<(usize, Token)>, RespError> {
        let Some(&kind) = input.first() else {
            return Ok(None);
        };
        if !b"+-:$*_#,(!=%~>|".contains(&kind) {
            return Err(RespError::UnknownType(kind));
        }
        let Some(end) = self.line_end(input)? else {
            return Ok(None);
        };
        let text = &input[1..end];
        let after = end + 2;
        let token = match kind {
            b'+' => Token::Value(Value::Simple(text.to_vec())),
            b'-' => Token::Value(Value::Error(text.to_vec())),
            b':' => Token::Value(Value::Integer(integer(text)?)),
            b'_' if text.is_empty() => Token::Value(Value::Null),
            b'_' => return Err(RespError::BadLineEnd),
            b'#' => Token::Value(Value::Boolean(match text {
                b"t" => true,
                b"f" => false,
                _ => return Err(RespError::BadBoolean),
            })),
            b',' if is_double(text) => Token::Value(Value::Double(text.to_vec())),
            b',' => return Err(RespError::BadDouble),
            b'(' if is_big_number(text) => Token::Value(Value::BigNumber(text.to_vec())),
            b'(' => return Err(RespError::BadBigNumber),
            b'$' | b'!' | b'=' => {
                let n = integer(text)?;
                if n == -1 && kind == b'$' {
                    return Ok(Some((after, Token::Value(Value::Null))));
                }
                let n = usize::try_from(n).map_err(|_| RespError::BadLength)?;
                if n > self.limits.max_bulk {
                    return Err(RespError::TooLarge {
                        limit: self.limits.max_bulk,
                    });
                }
                let Some(data) = input.get(after..after + n + 2) else {
                    return Ok(None);
                };
                if &data[n..] != b"\r\n" {
                    return Err(RespError::BadBulkEnd);
                }
                let data = &data[..n];
                let value = match kind {
                    b'$' => Value::Bulk(data.to_vec()),
                    b'!' => Value::Error(data.to_vec()),
                    _ => match data {
                        [a, b, c, b':', text @ ..] => Value::Verbatim {
                            format: [*a, *b, *c],
                            text: text.to_vec(),
                        },
                        _ => return Err(RespError::BadVerbatim),
                    },
                };
                return Ok(Some((after + n + 2, Token::Value(value))));
            }
            _ => {
                let n = integer(text)?;
                if n == -1 && kind == b'*' {
                    return Ok(Some((after, Token::Value(Value::Null))));
                }
                let n = usize::try_from(n).map_err(|_| RespError::BadLength)?;
                let kind = match kind {
                    b'*' => Aggregate::Array,
                    b'~' => Aggregate::Set,
                    b'>' => Aggregate::Push,
                    b'%' => Aggregate::Map,
                    _ => Aggregate::Attribute,
                };
                Token::Open(kind, n)
            }
        };
        Ok(Some((after, token)))
    }

    /// Where the line starting `input` ends (the index of its CR), searching only what was not
    /// searched before.
    fn line_end(&mut self, input: &[u8]) -> Result<Option<usize>, RespError> {
        let from = self.searched.max(1).min(input.len());
        let found = input[from..].iter().position(|&b| b == b'\r' || b == b'\n');
        // However the line arrived, one longer than the limit is refused the same way.
        if found.map_or(input.len(), |i| from + i) > self.limits.max_line {
            return Err(RespError::TooLarge {
                limit: self.limits.max_line,
            });
        }
        match found {
            Some(i) => {
                let cr = from + i;
                match input.get(cr..cr + 2) {
                    Some(b"\r\n") => Ok(Some(cr)),
                    Some(_) => Err(RespError::BadLineEnd),
                    None if input[cr] == b'\n' => Err(RespError::BadLineEnd),
                    None => {
                        self.searched = cr;
                        Ok(None)
                    }
                }
            }
            None => {
                self.searched = input.len();
                Ok(None)
            }
        }
    }
}

fn empty(kind: Aggregate) -> Option<Value> {
    finish(Open {
        kind,
        left: 0,
        items: Vec::new(),
    })
}

/// The value of a complete aggregate; `None` for an attribute (dropped).
fn finish(open: Open) -> Option<Value> {
    let items = open.items;
    match open.kind {
        Aggregate::Array => Some(Value::Array(items)),
        Aggregate::Set => Some(Value::Set(items)),
        Aggregate::Push => Some(Value::Push(items)),
        Aggregate::Map => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            Some(Value::Map(pairs))
        }
        Aggregate::Attribute => None,
    }
}

fn integer(text: &[u8]) -> Result<i64, RespError> {
    let digits = text
        .strip_prefix(b"-")
        .or(text.strip_prefix(b"+"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::BadInteger);
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(RespError::BadInteger)
}

fn is_double(text: &[u8]) -> bool {
    matches!(text, b"inf" | b"-inf" | b"nan")
        || (text
            .iter()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
            && std::str::from_utf8(text).is_ok_and(|t| t.parse::<f64>().is_ok()))
}

fn is_big_number(text: &[u8]) -> bool {
    let digits = text
        .strip_prefix(b"-")
        .or(text.strip_prefix(b"+"))
        .unwrap_or(text);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    fn all(input: &[u8]) -> Result<Vec<Value>, RespError> {
        let mut d = Decoder::new(Limits::default());
        let mut values = Vec::new();
        let mut pos = 0;
        loop {
            match d.decode(&input[pos..])? {
                (used, Some(v)) => {
                    pos += used;
                    values.push(v);
                }
                (_, None) => return Ok(values),
            }
        }
    }

    /// Feeds `input` `step` bytes at a time, as reads would bring it.
    fn in_pieces(input: &[u8], step: usize) -> Result<Vec<Value>, RespError> {
        let mut d = Decoder::new(Limits::default());
        let (mut values, mut buf) = (Vec::new(), Vec::new());
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let (used, v) = d.decode(&buf)?;
                buf.drain(..used);
                match v {
                    Some(v) => values.push(v),
                    None => break,
                }
            }
        }
        Ok(values)
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn every_type_redis_sends() {
        let input = b"+OK\r\n-ERR no\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n_\r\n#t\r\n,-1.5e3\r\n,inf\r\n(123456789012345678901234567890\r\n!3\r\nbad\r\n=8\r\ntxt:hiya\r\n*2\r\n$1\r\na\r\n*0\r\n~1\r\n:1\r\n>2\r\n$7\r\nmessage\r\n$1\r\nx\r\n%1\r\n+k\r\n:2\r\n|1\r\n+ttl\r\n:3\r\n+after-attribute\r\n";
        let want = vec![
            Value::Simple(b"OK".to_vec()),
            Value::Error(b"ERR no".to_vec()),
            Value::Integer(-42),
            bulk("he\r\no"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Boolean(true),
            Value::Double(b"-1.5e3".to_vec()),
            Value::Double(b"inf".to_vec()),
            Value::BigNumber(b"123456789012345678901234567890".to_vec()),
            Value::Error(b"bad".to_vec()),
            Value::Verbatim {
                format: *b"txt",
                text: b"hiya".to_vec(),
            },
            Value::Array(vec![bulk("a"), Value::Array(vec![])]),
            Value::Set(vec![Value::Integer(1)]),
            Value::Push(vec![bulk("message"), bulk("x")]),
            Value::Map(vec![(Value::Simple(b"k".to_vec()), Value::Integer(2))]),
            Value::Simple(b"after-attribute".to_vec()),
        ];
        assert_eq!(all(input).unwrap(), want);
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(in_pieces(input, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn encoded_values_decode_to_themselves() {
        let values = [
            Value::Array(vec![
                Value::Map(vec![(bulk("a"), Value::Set(vec![Value::Null]))]),
                Value::Push(vec![Value::Boolean(false), Value::Integer(i64::MIN)]),
                Value::Simple(b"two\nlines".to_vec()),
            ]),
            Value::Verbatim {
                format: *b"mkd",
                text: b"# x".to_vec(),
            },
        ];
        let mut out = Vec::new();
        for v in &values {
            encode(&mut out, v);
        }
        let back = all(&out).unwrap();
        // A simple string with a line end comes back as the bulk string it was written as.
        assert_eq!(back[1], values[1]);
        let Value::Array(items) = &back[0] else {
            panic!("{back:?}")
        };
        assert_eq!(
            items[..2],
            match &values[0] {
                Value::Array(v) => v[..2].to_vec(),
                _ => unreachable!(),
            }[..]
        );
        assert_eq!(items[2], bulk("two\nlines"));
    }

    #[test]
    fn an_unfinished_value_waits_and_nothing_is_consumed_twice() {
        let mut d = Decoder::new(Limits::default());
        // The array's header and first element are consumed; the second is half there.
        assert_eq!(d.decode(b"*2\r\n:1\r\n$5\r\nab").unwrap(), (8, None));
        assert_eq!(d.decode(b"$5\r\nab").unwrap(), (0, None));
        let (used, v) = d.decode(b"$5\r\nabcde\r\n").unwrap();
        assert_eq!(used, 11);
        assert_eq!(
            v,
            Some(Value::Array(vec![Value::Integer(1), bulk("abcde")]))
        );
    }

    #[test]
    fn malformed_input_gets_its_error() {
        let cases: [(&[u8], RespError); 12] = [
            (b"?x\r\n", RespError::UnknownType(b'?')),
            (b"+a\rb\r\n", RespError::BadLineEnd),
            (b"+a\nb", RespError::BadLineEnd),
            (b":12x\r\n", RespError::BadInteger),
            (b":99999999999999999999\r\n", RespError::BadInteger),
            (b"$-2\r\n", RespError::BadLength),
            (b"$1\r\nab\r\n", RespError::BadBulkEnd),
            (b"#x\r\n", RespError::BadBoolean),
            (b",1.2.3\r\n", RespError::BadDouble),
            (b"(12a\r\n", RespError::BadBigNumber),
            (b"=2\r\nab\r\n", RespError::BadVerbatim),
            (b"~-1\r\n", RespError::BadLength),
        ];
        for (input, want) in cases {
            assert_eq!(
                all(input),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_hold_before_anything_is_allocated() {
        let limits = Limits {
            max_bulk: 10,
            max_elements: 3,
            max_depth: 2,
            max_line: 8,
        };
        let run = |input: &[u8]| Decoder::new(limits).decode(input).map(|(_, v)| v);
        assert_eq!(run(b"$11\r\n"), Err(RespError::TooLarge { limit: 10 }));
        assert_eq!(run(b"*4\r\n"), Err(RespError::TooLarge { limit: 3 }));
        assert_eq!(run(b"%2\r\n"), Err(RespError::TooLarge { limit: 3 }));
        assert_eq!(
            run(b"*1\r\n*1\r\n*1\r\n"),
            Err(RespError::TooDeep { limit: 2 })
        );
        assert_eq!(run(b"+123456789"), Err(RespError::TooLarge { limit: 8 }));
        assert_eq!(run(b"+1234567"), Ok(None), "short enough so far");
        assert_eq!(
            run(b":123456789\r\n"),
            Err(RespError::TooLarge { limit: 8 }),
            "found or not"
        );
        assert_eq!(run(b"*9999999\r\n"), Err(RespError::TooLarge { limit: 3 }));
    }
}
