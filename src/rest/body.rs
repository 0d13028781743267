//! The body of `POST /topics`: a JSON object whose `name` is a topic name.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ids::{InvalidTopicName, TopicName};

/// A `POST /topics` body that is not what the endpoint takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    NotAnObject(String),
    MissingName,
    NameNotString,
    InvalidName(InvalidTopicName),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotAnObject(e) => write!(
                f,
                "body must be a JSON object like {{\"name\":\"orders\"}}: {e}"
            ),
            BodyError::MissingName => f.write_str("name is required"),
            BodyError::NameNotString => f.write_str("name must be a string"),
            BodyError::InvalidName(e) => e.fmt(f),
        }
    }
}

/// The topic name a create request's body asks for.
pub fn topic_name(body: &[u8]) -> Result<TopicName<'static>, BodyError> {
    #[derive(Deserialize)]
    struct Create<'a> {
        #[serde(borrow)]
        name: Option<&'a RawValue>,
    }
    // serde fills a struct from a JSON array too; the body must be an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(BodyError::NotAnObject("expected an object".into()));
    }
    let parsed: Create<'_> =
        serde_json::from_slice(body).map_err(|e| BodyError::NotAnObject(e.to_string()))?;
    let raw = parsed.name.ok_or(BodyError::MissingName)?;
    let name: String = serde_json::from_str(raw.get()).map_err(|_| BodyError::NameNotString)?;
    TopicName::new(name).map_err(BodyError::InvalidName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_object_and_what_is_not_one() {
        assert_eq!(
            topic_name(br#" {"name":"a:b","x":1}"#).unwrap().as_str(),
            "a:b"
        );
        assert_eq!(topic_name(br#"{"name":"\u0061"}"#).unwrap().as_str(), "a");
        assert!(matches!(
            topic_name(br#"["orders"]"#),
            Err(BodyError::NotAnObject(_))
        ));
        assert!(matches!(topic_name(b"{"), Err(BodyError::NotAnObject(_))));
        assert!(matches!(
            topic_name(br#"{"name":"a","name":"b"}"#),
            Err(BodyError::NotAnObject(_))
        ));
        assert_eq!(topic_name(b"{}"), Err(BodyError::MissingName));
        // null is no name at all, as for every optional field.
        assert_eq!(topic_name(br#"{"name":null}"#), Err(BodyError::MissingName));
        assert_eq!(topic_name(br#"{"name":5}"#), Err(BodyError::NameNotString));
        assert_eq!(
            topic_name(br#"{"name":"a b"}"#),
            Err(BodyError::InvalidName(InvalidTopicName))
        );
    }
}
