//! Server configuration, read from environment variables and validated up front.
//!
//! Reading goes through a lookup function rather than `std::env` directly so the rules are
//! unit-tested without touching the process environment.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::cluster::url::RedisUrl;
use crate::log::Level;

/// Everything the server needs to know before it binds its port.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub max_topics: usize,
    pub max_subscribers_per_topic: usize,
    pub topic_history_size: usize,
    /// Bytes of retained events per topic.
    pub topic_history_bytes: usize,
    pub subscriber_queue_size: usize,
    pub max_queue_bytes: usize,
    pub max_connections: usize,
    pub heartbeat_interval: Duration,
    pub log_level: Level,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive once its head has.
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
    /// How long a WebSocket message may take to arrive once it has begun.
    pub message_timeout: Duration,
    pub close_linger: Duration,
    pub shutdown_timeout: Duration,
    pub enable_echo: bool,
    /// When set, REST (but `GET /health`) and the upgrade need this key.
    pub api_key: Option<Secret>,
    /// When set, upgrades from browsers of other origins are refused, and CORS answers these.
    pub allowed_origins: Option<Origins>,
    /// Publishes per second per connection (0: unlimited), and the bucket's burst.
    pub publish_rate_limit: u32,
    pub publish_rate_burst: u32,
    /// Connections one IP address may hold (0: unlimited).
    pub max_connections_per_ip: usize,
    /// Cluster mode: the Redis every instance shares (`REDIS_URL`).
    pub redis_url: Option<RedisUrl>,
    /// This instance's name in `/health`, `/stats` and logs (`INSTANCE_ID`; random when unset).
    pub instance_id: Option<String>,
}

/// A value that never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The `ALLOWED_ORIGINS` list: exact origins, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    pub any: bool,
    pub list: Vec<String>,
}

impl Origins {
    pub fn parse(s: &str) -> Option<Origins> {
        let mut origins = Origins {
            any: false,
            list: Vec::new(),
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                origins.any = true;
            } else if item.starts_with("http://") || item.starts_with("https://") {
                origins
                    .list
                    .push(item.trim_end_matches('/').to_ascii_lowercase());
            } else {
                return None;
            }
        }
        (origins.any || !origins.list.is_empty()).then_some(origins)
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.any
            || self
                .list
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            max_topics: 100,
            max_subscribers_per_topic: 100,
            topic_history_size: 100,
            topic_history_bytes: 1 << 20,
            subscriber_queue_size: 100,
            max_queue_bytes: 1 << 20,
            max_connections: 10_000,
            heartbeat_interval: Duration::from_secs(30),
            log_level: Level::Info,
            max_body_bytes: 64 * 1024,
            max_header_bytes: 8 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_message_bytes: 64 * 1024,
            message_timeout: Duration::from_secs(30),
            close_linger: Duration::from_millis(1000),
            shutdown_timeout: Duration::from_secs(5),
            enable_echo: false,
            api_key: None,
            allowed_origins: None,
            publish_rate_limit: 0,
            publish_rate_burst: 0,
            max_connections_per_ip: 0,
            redis_url: None,
            instance_id: None,
        }
    }
}

/// A variable that is set but does not hold an accepted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    /// What was given; never kept for a secret, so it cannot reach a log line.
    pub value: Option<String>,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(
                f,
                "invalid {}={value:?}: expected {}",
                self.variable, self.expected
            ),
            None => write!(
                f,
                "invalid {} (its value is not shown): expected {}",
                self.variable, self.expected
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn hide_value(mut self) -> ConfigError {
        self.value = None;
        self
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every variable through `lookup`; unset variables keep their defaults, set ones must
    /// be valid.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let d = Config::default();
        let env = Env { lookup: &lookup };
        let config = Config {
            host: env.parse("HOST", d.host, "an IPv4 or IPv6 address", |s| {
                s.parse().ok()
            })?,
            port: env.int("PORT", d.port as u64, 0, 65_535)? as u16,
            max_topics: env.size("MAX_TOPICS", d.max_topics, 1, 1_000_000)?,
            max_subscribers_per_topic: env.size(
                "MAX_SUBSCRIBERS_PER_TOPIC",
                d.max_subscribers_per_topic,
                1,
                1_000_000,
            )?,
            topic_history_size: env.size(
                "TOPIC_HISTORY_SIZE",
                d.topic_history_size,
                0,
                1_000_000,
            )?,
            topic_history_bytes: env.size(
                "TOPIC_HISTORY_BYTES",
                d.topic_history_bytes,
                0,
                1 << 30,
            )?,
            subscriber_queue_size: env.size(
                "SUBSCRIBER_QUEUE_SIZE",
                d.subscriber_queue_size,
                1,
                1_000_000,
            )?,
            max_queue_bytes: env.size("MAX_QUEUE_BYTES", d.max_queue_bytes, 1024, 1 << 30)?,
            max_connections: env.size("MAX_CONNECTIONS", d.max_connections, 1, 1_000_000)?,
            heartbeat_interval: env.secs(
                "HEARTBEAT_INTERVAL_SECS",
                d.heartbeat_interval,
                1,
                3600,
            )?,
            log_level: env.parse(
                "LOG_LEVEL",
                d.log_level,
                "one of error, warn, info, debug",
                Level::parse,
            )?,
            max_body_bytes: env.size("MAX_BODY_BYTES", d.max_body_bytes, 1, 16 << 20)?,
            max_header_bytes: env.size("MAX_HEADER_BYTES", d.max_header_bytes, 1024, 1 << 20)?,
            header_timeout: env.secs("HEADER_TIMEOUT_SECS", d.header_timeout, 1, 3600)?,
            body_timeout: env.secs("BODY_TIMEOUT_SECS", d.body_timeout, 1, 3600)?,
            idle_timeout: env.secs("IDLE_TIMEOUT_SECS", d.idle_timeout, 1, 86_400)?,
            max_message_bytes: env.size("MAX_MESSAGE_BYTES", d.max_message_bytes, 125, 64 << 20)?,
            message_timeout: env.secs("MESSAGE_TIMEOUT_SECS", d.message_timeout, 1, 3600)?,
            close_linger: Duration::from_millis(env.int(
                "CLOSE_LINGER_MS",
                d.close_linger.as_millis() as u64,
                1,
                60_000,
            )?),
            shutdown_timeout: env.secs("SHUTDOWN_TIMEOUT_SECS", d.shutdown_timeout, 1, 3600)?,
            enable_echo: env.parse("ENABLE_ECHO", d.enable_echo, "true or false", parse_bool)?,
            api_key: env
                .parse(
                    "API_KEY",
                    None,
                    "a non-empty key of printable ASCII without spaces",
                    |s| {
                        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
                            .then(|| Some(Secret(s.to_string())))
                    },
                )
                .map_err(ConfigError::hide_value)?,
            allowed_origins: env.parse(
                "ALLOWED_ORIGINS",
                None,
                "a comma-separated list of origins like https://app.example, or *",
                |s| Origins::parse(s).map(Some),
            )?,
            publish_rate_limit: env.int("PUBLISH_RATE_LIMIT", 0, 0, 1_000_000)? as u32,
            publish_rate_burst: env.int("PUBLISH_RATE_BURST", 0, 0, 1_000_000)? as u32,
            max_connections_per_ip: env.size("MAX_CONNECTIONS_PER_IP", 0, 0, 1_000_000)?,
            redis_url: env
                .parse(
                    "REDIS_URL",
                    None,
                    "redis://[[user]:password@]host[:port][/db] or unix:///path/to/redis.sock",
                    |s| RedisUrl::parse(s).ok().map(Some),
                )
                .map_err(ConfigError::hide_value)?,
            instance_id: env.parse(
                "INSTANCE_ID",
                None,
                "1 to 64 letters, digits, '-', '_' or '.'",
                |s| {
                    let ok = (1..=64).contains(&s.len())
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                    ok.then(|| Some(s.to_string()))
                },
            )?,
        };
        Ok(config)
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn parse<T>(
        &self,
        variable: &'static str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let Some(raw) = (self.lookup)(variable) else {
            return Ok(default);
        };
        parse(raw.trim()).ok_or_else(|| ConfigError {
            variable,
            value: Some(raw),
            expected: expected.to_string(),
        })
    }

    fn int(
        &self,
        variable: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let expected = format!("an integer from {min} to {max}");
        self.parse(variable, default, &expected, |s| {
            s.parse::<u64>().ok().filter(|v| (min..=max).contains(v))
        })
    }

    fn size(
        &self,
        variable: &'static str,
        default: usize,
        min: u64,
        max: u64,
    ) -> Result<usize, ConfigError> {
        self.int(variable, default as u64, min, max)
            .map(|v| v as usize)
    }

    fn secs(
        &self,
        variable: &'static str,
        default: Duration,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        self.int(variable, default.as_secs(), min, max)
            .map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_reference_document() {
        let c = load(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.port, 8080);
        assert_eq!(c.max_topics, 100);
        assert_eq!(c.subscriber_queue_size, 100);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
    }

    #[test]
    fn values_are_read() {
        let c = load(&[
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("MAX_TOPICS", "5"),
            ("LOG_LEVEL", "debug"),
            ("ENABLE_ECHO", "true"),
        ])
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.max_topics, 5);
        assert_eq!(c.log_level, Level::Debug);
        assert!(c.enable_echo);
    }

    #[test]
    fn invalid_values_name_the_variable_and_range() {
        for (var, value) in [
            ("PORT", "abc"),
            ("PORT", "65536"),
            ("MAX_TOPICS", "-1"),
            ("MAX_TOPICS", "0"),
            ("SUBSCRIBER_QUEUE_SIZE", "0"),
            ("HEARTBEAT_INTERVAL_SECS", "0"),
            ("HOST", "localhost:80"),
            ("LOG_LEVEL", "loud"),
            ("ENABLE_ECHO", "maybe"),
            ("API_KEY", ""),
            ("API_KEY", "with space"),
            ("ALLOWED_ORIGINS", "example.com"),
            ("ALLOWED_ORIGINS", ","),
            ("PUBLISH_RATE_LIMIT", "-5"),
            ("REDIS_URL", "http://x"),
            ("INSTANCE_ID", "has space"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var);
            let text = err.to_string();
            assert!(text.contains(var) && text.contains("expected"), "{text}");
        }
        assert!(load(&[("PORT", "abc")])
            .unwrap_err()
            .to_string()
            .contains("0 to 65535"));
    }

    #[test]
    fn a_redis_url_is_read_and_a_bad_one_never_repeated() {
        let c = load(&[
            ("REDIS_URL", "redis://:pw@cache:6380/2"),
            ("INSTANCE_ID", "a-1"),
        ])
        .unwrap();
        let url = c.redis_url.unwrap();
        assert_eq!((url.password.as_deref(), url.db), (Some("pw"), 2));
        assert_eq!(c.instance_id.as_deref(), Some("a-1"));
        let err = load(&[("REDIS_URL", "redis://:s3cret@h:99999")]).unwrap_err();
        assert!(
            err.value.is_none() && !err.to_string().contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_api_key_is_refused_without_being_repeated() {
        let err = load(&[("API_KEY", "s3cret with a space")]).unwrap_err();
        assert_eq!((err.variable, err.value.as_deref()), ("API_KEY", None));
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("not shown"), "{err}");
    }
}
