//! Structured logs: one JSON object per line on stderr, filtered by level.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// For events that may happen thousands of times a second: at most `per_second` lines in any
/// second, and the first line after some were left out says how many.
#[derive(Debug)]
pub struct Throttle {
    per_second: u32,
    window: Option<std::time::Instant>,
    used: u32,
    suppressed: u64,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::per_second(1)
    }
}

impl Throttle {
    pub fn per_second(per_second: u32) -> Throttle {
        Throttle {
            per_second,
            window: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(left out since the last line)` when a line may be written now.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        let second = std::time::Duration::from_secs(1);
        if self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= second)
        {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Builds one log line; kept apart from the writing so it can be tested.
pub fn format_line(ts: &str, level: Level, event: &str, fields: Map<String, Value>) -> String {
    let mut obj = Map::with_capacity(fields.len() + 3);
    obj.insert("ts".into(), Value::from(ts));
    obj.insert("level".into(), Value::from(level.as_str()));
    obj.insert("event".into(), Value::from(event));
    obj.extend(fields);
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    line
}

pub fn write(level: Level, event: &str, fields: Map<String, Value>) {
    let ts = crate::time::rfc3339(crate::time::unix_millis());
    let line = format_line(&ts, level, event, fields);
    // A failed write to stderr has nowhere better to be reported.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `log!(Level::Info, "event_name", "key" => value, ...)`: the fields are only built when the
/// level is enabled.
#[macro_export]
macro_rules! log {
    ($level:expr, $event:expr $(, $key:expr => $value:expr)* $(,)?) => {
        if $crate::log::enabled($level) {
            #[allow(unused_mut)]
            let mut fields = ::serde_json::Map::new();
            $( fields.insert(($key).to_string(), ::serde_json::json!($value)); )*
            $crate::log::write($level, $event, fields);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object() {
        let mut fields = Map::new();
        fields.insert("conn".into(), Value::from(7));
        let line = format_line(
            "2025-01-01T00:00:00.000Z",
            Level::Warn,
            "slow_consumer",
            fields,
        );
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["event"], "slow_consumer");
        assert_eq!(v["conn"], 7);
    }

    #[test]
    fn a_throttle_lets_one_line_a_second_through_and_counts_the_rest() {
        let t0 = std::time::Instant::now();
        let mut t = Throttle::default();
        assert_eq!(t.allow(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(t.allow(t0 + std::time::Duration::from_millis(500)), None);
        }
        assert_eq!(t.allow(t0 + std::time::Duration::from_secs(1)), Some(5));
        let mut t = Throttle::per_second(3);
        let allowed = (0..10).filter(|_| t.allow(t0).is_some()).count();
        assert_eq!(allowed, 3);
        assert_eq!(t.allow(t0 + std::time::Duration::from_secs(1)), Some(7));
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("nope"), None);
        assert!(Level::Error < Level::Debug);
    }
}
