//! Where the cluster's Redis is: `redis://[[user]:password@]host[:port][/db]` (port 6379 unless
//! given, an IPv6 host in brackets, user and password percent-encoded) or
//! `unix:///path/to/redis.sock`. A host name is kept as written: it is resolved at each connect,
//! so a Docker service that moves is found again.

use std::fmt;
use std::path::PathBuf;

use crate::http::target::percent_decode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub address: Address,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

/// Never shows the password, so the URL can be logged.
impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("db", &self.db)
            .finish()
    }
}

/// Why a URL is refused; none of them quotes the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    Scheme,
    NoHost,
    BadPort,
    BadDatabase,
    BadEncoding,
    NoPath,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => "must start with redis:// or unix://",
            UrlError::NoHost => "has no host",
            UrlError::BadPort => "has a port that is not 1-65535",
            UrlError::BadDatabase => "has a database that is not a number",
            UrlError::BadEncoding => "has a broken percent-encoding in its user or password",
            UrlError::NoPath => "has no socket path (unix:///path/to/redis.sock)",
        })
    }
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(UrlError::NoPath);
            }
            return Ok(RedisUrl {
                address: Address::Unix(PathBuf::from(path)),
                username: None,
                password: None,
                db: 0,
            });
        }
        let rest = url.strip_prefix("redis://").ok_or(UrlError::Scheme)?;
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, db)) => (a, db.parse().map_err(|_| UrlError::BadDatabase)?),
            None => (rest, 0),
        };
        // The password may hold '@' when encoded as %40; the last '@' ends the user part.
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |s: &str| percent_decode(s).ok_or(UrlError::BadEncoding);
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    Some(decode(user)?).filter(|s| !s.is_empty()),
                    Some(decode(pass)?),
                ),
                None => (Some(decode(u)?).filter(|s| !s.is_empty()), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(UrlError::NoHost)?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or(UrlError::BadPort)?)),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        // An IPv6 address must be in brackets, or its colons would be taken for the port's.
        if host.is_empty() || (host.contains(':') && !hostport.starts_with('[')) {
            return Err(UrlError::NoHost);
        }
        let port = match port {
            None => 6379,
            Some(p) => p.parse().ok().filter(|&p| p > 0).ok_or(UrlError::BadPort)?,
        };
        Ok(RedisUrl {
            address: Address::Tcp {
                host: host.to_string(),
                port,
            },
            username,
            password,
            db,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn the_forms_a_deployment_writes() {
        let u = RedisUrl::parse("redis://redis").unwrap();
        assert_eq!((u.address, u.password, u.db), (tcp("redis", 6379), None, 0));
        let u = RedisUrl::parse("redis://:s%40cret@10.0.0.5:6380/2").unwrap();
        assert_eq!(u.address, tcp("10.0.0.5", 6380));
        assert_eq!(
            (u.username, u.password.as_deref(), u.db),
            (None, Some("s@cret"), 2)
        );
        let u = RedisUrl::parse("redis://app:pw@[::1]:7000/").unwrap();
        assert_eq!(
            (u.address, u.username.as_deref()),
            (tcp("::1", 7000), Some("app"))
        );
        let u = RedisUrl::parse("unix:///run/redis/redis.sock").unwrap();
        assert_eq!(u.address, Address::Unix("/run/redis/redis.sock".into()));
    }

    #[test]
    fn what_is_not_a_redis_url_says_why_without_the_password() {
        for (url, e) in [
            ("http://redis:6379", UrlError::Scheme),
            ("redis://", UrlError::NoHost),
            ("redis://:pw@:6379", UrlError::NoHost),
            ("redis://::1:6379", UrlError::NoHost),
            ("redis://h:0", UrlError::BadPort),
            ("redis://h:99999", UrlError::BadPort),
            ("redis://[::1]x", UrlError::BadPort),
            ("redis://h/x", UrlError::BadDatabase),
            ("redis://:%zz@h", UrlError::BadEncoding),
            ("unix://", UrlError::NoPath),
            ("unix://relative.sock", UrlError::NoPath),
        ] {
            assert_eq!(RedisUrl::parse(url), Err(e.clone()), "{url}");
            assert!(!e.to_string().contains("pw"));
        }
        let u = RedisUrl::parse("redis://:hunter2@h").unwrap();
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
