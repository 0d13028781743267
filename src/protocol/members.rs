//! A JSON object's members as raw JSON text, read in one pass: each known name into its slot
//! (borrowed from the message, never copied), any other name remembered only so that a name
//! given twice is noticed, known or not (PROTOCOL.md: a field given twice makes a message
//! invalid).

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The members of one object, by the position of their name in the list asked for.
#[derive(Debug)]
pub struct Members<'a, const N: usize> {
    pub values: [Option<&'a RawValue>; N],
    /// The first name given twice, if one was.
    pub duplicate: Option<String>,
}

/// Reads `text` as one JSON object with these member names.
pub fn read<'a, const N: usize>(
    text: &'a [u8],
    names: &'static [&'static str; N],
) -> Result<Members<'a, N>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let members = Names(names).deserialize(&mut de)?;
    de.end()?;
    Ok(members)
}

/// A member name: borrowed from the text unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct Names<const N: usize>(&'static [&'static str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for Names<N> {
    type Value = Members<'de, N>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Names<N> {
    type Value = Members<'de, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = Members {
            values: [None; N],
            duplicate: None,
        };
        // Names the message has beyond the known ones (none, usually: no allocation then).
        let mut others: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
            let twice = match self.0.iter().position(|n| *n == name) {
                Some(i) => {
                    let twice = m.values[i].is_some();
                    m.values[i] = Some(map.next_value::<&'de RawValue>()?);
                    twice
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                    let twice = others.contains(&name);
                    if !twice {
                        others.push(name.clone());
                    }
                    twice
                }
            };
            if twice && m.duplicate.is_none() {
                m.duplicate = Some(name.into_owned());
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str; 2] = &["a", "b"];

    #[test]
    fn members_are_raw_text_and_duplicates_are_noticed() {
        let m = read(br#"{"a": [1, 2], "x": 1, "b": null}"#, NAMES).unwrap();
        assert_eq!(m.values[0].map(|v| v.get()), Some("[1, 2]"));
        assert_eq!(m.values[1].map(|v| v.get()), Some("null"));
        assert_eq!(m.duplicate, None);
        for (text, name) in [
            (&br#"{"a":1,"a":2}"#[..], "a"),
            (br#"{"x":1,"b":2,"x":3}"#, "x"),
            (br#"{"\u0078":1,"x":2}"#, "x"),
        ] {
            assert_eq!(read(text, NAMES).unwrap().duplicate.as_deref(), Some(name));
        }
    }

    #[test]
    fn only_an_object_is_read() {
        for bad in [&b"[1]"[..], b"1", b"\"a\"", b"{", b"{}x", b"null"] {
            assert!(
                read(bad, NAMES).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let err = read(b"[1,2,3,4,5,6,7]", NAMES).unwrap_err().to_string();
        assert!(err.contains("expected a JSON object"), "{err}");
    }
}
