//! The identities the broker, the protocol and the engine share: topic names with their one
//! rule, connection ids that survive slot reuse, and what a subscriber asks to have replayed.
//! Kept apart so that none of those modules needs another to name these things.

use std::borrow::Cow;
use std::fmt;

/// The longest topic name, in bytes (every allowed character is one byte).
pub const MAX_TOPIC_NAME: usize = 128;

/// A topic name that obeys the rule: 1 to 128 ASCII letters, digits, `.`, `_`, `-` or `:`
/// (the characters a URL path segment carries without escaping). `.` and `..` alone are not
/// names, since clients and proxies normalise them away from paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicName<'a>(Cow<'a, str>);

/// The one error a name that breaks the rule gets, over REST and WebSocket alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTopicName;

impl fmt::Display for InvalidTopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("topic must be 1 to 128 characters of letters, digits, '.', '_', '-' or ':'")
    }
}

impl<'a> TopicName<'a> {
    pub fn new(name: impl Into<Cow<'a, str>>) -> Result<TopicName<'a>, InvalidTopicName> {
        let name = name.into();
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':');
        let ok = (1..=MAX_TOPIC_NAME).contains(&name.len())
            && name.bytes().all(allowed)
            && name != "."
            && name != "..";
        if ok {
            Ok(TopicName(name))
        } else {
            Err(InvalidTopicName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TopicName<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection as the broker and the logs know it: its slot in the connection table and the
/// generation of that slot, so a reused slot is never mistaken for the connection it held before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    generation: u32,
    slot: u32,
}

impl ConnId {
    pub fn new(slot: usize, generation: u32) -> ConnId {
        ConnId {
            generation,
            slot: slot as u32,
        }
    }

    pub fn slot(self) -> usize {
        self.slot as usize
    }

    /// One number for logs: the generation in the high half, the slot in the low half.
    pub fn as_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.slot)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u64())
    }
}

/// Names the incarnations of topics: every create gets an epoch unlike every earlier one of
/// this process (the count) and, by the time in it, unlike those of an earlier process.
#[derive(Debug, Default)]
pub struct Epochs {
    made: u64,
}

impl Epochs {
    pub fn next(&mut self, unix_ms: u64) -> String {
        self.made += 1;
        format!("{unix_ms:x}-{:x}", self.made)
    }
}

/// What a subscribe asks to have replayed from the topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    None,
    /// The newest `n` retained events.
    LastN(u64),
    /// Every retained event with a greater seq.
    SinceSeq(u64),
}

/// 64 random bits, from the keys the standard library draws from the OS for each `RandomState`
/// (no extra crate for the few values the server needs: an instance id, DNS query ids).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_name_rule() {
        for good in ["orders.eu-west_1:v2", "a", "...", "a..b", &"x".repeat(128)] {
            assert!(TopicName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", ".", "..", "a%2F", &"x".repeat(129)] {
            assert_eq!(TopicName::new(bad), Err(InvalidTopicName), "{bad}");
        }
    }

    #[test]
    fn every_epoch_is_new() {
        let mut e = Epochs::default();
        let (a, b) = (e.next(1000), e.next(1000));
        assert_ne!(a, b);
        assert_ne!(Epochs::default().next(2000), a, "a later process");
    }

    #[test]
    fn connection_ids_differ_by_generation_on_the_same_slot() {
        let a = ConnId::new(7, 1);
        let b = ConnId::new(7, 2);
        assert_ne!(a, b);
        assert_eq!((a.slot(), b.slot()), (7, 7));
        assert_eq!(b.as_u64(), (2 << 32) | 7);
        assert_eq!(b.to_string(), b.as_u64().to_string());
    }
}
