//! The scripts' replies, read into what the backplane acts on.

use super::{Kind, Outcome};
use crate::resp::Value;

pub(super) fn text(v: &Value) -> Option<String> {
    v.as_bytes()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// A map reply (RESP3), or a flat array of keys and values (RESP2).
pub(super) fn pairs(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut it = items.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(n) => Some(*n),
        _ => None,
    }
}

/// A topic's history as `READ` returns it.
pub(super) struct History {
    pub epoch: String,
    pub last: u64,
    /// `(seq, event)`, oldest first.
    pub events: Vec<(u64, Vec<u8>)>,
}

/// `{1, epoch, last, entries}`; `None` for `{0}` (no such topic).
pub(super) fn read_reply(v: Value) -> Option<History> {
    let Value::Array(items) = v else { return None };
    if items.first().and_then(int) != Some(1) {
        return None;
    }
    let epoch = text(items.get(1)?)?;
    let last = u64::try_from(int(items.get(2)?)?).ok()?;
    let Value::Array(entries) = items.get(3)?.clone() else {
        return None;
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(entry) = entry else {
            return None;
        };
        let id = text(entry.first()?)?;
        let seq: u64 = id.strip_suffix("-0")?.parse().ok()?;
        let Value::Array(fields) = entry.get(1)? else {
            return None;
        };
        let event = fields.get(1)?.as_bytes()?.to_vec();
        out.push((seq, event));
    }
    Some(History {
        epoch,
        last,
        events: out,
    })
}

/// `RENEW`'s `{1, epoch}`: the epoch in force; `None` for `{0}` (no such topic).
pub(super) fn renew_reply(v: Value) -> Option<String> {
    let Value::Array(items) = v else { return None };
    if items.first().and_then(int) != Some(1) {
        return None;
    }
    text(items.get(1)?)
}

pub(super) fn outcome(kind: Kind, v: &Value) -> Outcome {
    let Value::Array(items) = v else {
        return Outcome::Unavailable;
    };
    let status = items.first().and_then(int);
    match (kind, status) {
        (Kind::Create, Some(1)) => match items.get(1).and_then(text) {
            Some(epoch) => Outcome::Created { epoch },
            None => Outcome::Unavailable,
        },
        (Kind::Create, Some(0)) => match items.get(1).and_then(Value::as_bytes) {
            Some(b"exists") => Outcome::Exists,
            Some(b"limit") => Outcome::Limit,
            _ => Outcome::Unavailable,
        },
        (Kind::Delete, Some(1)) => Outcome::Deleted,
        (Kind::Delete, Some(0)) => Outcome::NotFound,
        _ => Outcome::Unavailable,
    }
}

/// A batch of `n` publishes answered (`PUBLISH`'s `{1, epoch, r...}`): each event's outcome,
/// in order. An event the reply says nothing of (its append failed, or the reply is not the
/// script's) is `Unavailable`: whether it was published is unknown to the caller, and a retry
/// with its message id is safe.
pub(super) fn publish_outcomes(v: &Value, n: usize) -> Vec<Outcome> {
    let items = match v {
        Value::Array(items) => items.as_slice(),
        _ => &[],
    };
    let each = match items.first().and_then(int) {
        Some(0) => return vec![Outcome::NotFound; n],
        Some(1) => items.get(2..).unwrap_or(&[]),
        _ => &[],
    };
    (0..n)
        .map(|i| match each.get(i).and_then(int) {
            Some(0) | None => Outcome::Unavailable,
            Some(seq) if seq > 0 => Outcome::Published { seq: seq as u64 },
            Some(seq) => Outcome::Duplicate {
                seq: seq.unsigned_abs(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replies_become_outcomes() {
        let int = Value::Integer;
        let bulk = |s: &str| Value::Bulk(s.as_bytes().to_vec());
        let cases = [
            (
                Kind::Create,
                Value::Array(vec![int(1), bulk("e")]),
                Outcome::Created { epoch: "e".into() },
            ),
            (
                Kind::Create,
                Value::Array(vec![int(0), bulk("exists")]),
                Outcome::Exists,
            ),
            (
                Kind::Create,
                Value::Array(vec![int(0), bulk("limit")]),
                Outcome::Limit,
            ),
            (
                Kind::Delete,
                Value::Array(vec![int(1), bulk("e")]),
                Outcome::Deleted,
            ),
            (Kind::Delete, Value::Array(vec![int(0)]), Outcome::NotFound),
            (
                Kind::Delete,
                Value::Error(b"OOM command not allowed".to_vec()),
                Outcome::Unavailable,
            ),
        ];
        for (kind, value, want) in cases {
            assert_eq!(outcome(kind, &value), want, "{kind:?} {value:?}");
        }
    }

    #[test]
    fn a_batch_reply_answers_each_publish_in_order() {
        let int = Value::Integer;
        let epoch = Value::Bulk(b"e".to_vec());
        let published = |seq| Outcome::Published { seq };
        let reply = Value::Array(vec![int(1), epoch.clone(), int(7), int(-3), int(8)]);
        assert_eq!(
            publish_outcomes(&reply, 3),
            [published(7), Outcome::Duplicate { seq: 3 }, published(8)]
        );
        // An append refused after the first: the rest are unknown.
        let short = Value::Array(vec![int(1), epoch, int(9)]);
        assert_eq!(
            publish_outcomes(&short, 3),
            [published(9), Outcome::Unavailable, Outcome::Unavailable]
        );
        let unknown = Value::Array(vec![int(0)]);
        assert_eq!(publish_outcomes(&unknown, 2), vec![Outcome::NotFound; 2]);
        let error = Value::Error(b"OOM command not allowed".to_vec());
        assert_eq!(publish_outcomes(&error, 2), vec![Outcome::Unavailable; 2]);
    }
}
