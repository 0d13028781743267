//! An instance's side of the cluster, sans-IO: one RESP3 connection to Redis over which it runs
//! the scripts and follows every topic's channel, so its own events reach it before the
//! replies that published them. The engine asks it to create, delete and publish, each with a
//! ticket, and takes [`Event`]s back: answers for the tickets, topics appearing and going,
//! events to deliver in seq order, resets. The loop moves the bytes, says when the connection
//! is up or gone, and calls [`Backplane::tick`] for deadlines and reconnection.
//!
//! Groundwork for #11: tested against a real redis-server (`tests/cluster_backplane.rs`), not
//! yet driven by the server.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::link::{Link, LinkError, LinkLimits};
use super::mirror::{ChannelMessage, Mirror, Step};
use super::scripts::{self, TopicKeys};
use super::url::RedisUrl;
use crate::resp::Value;

/// What bounds the cluster's topics (the same for every instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub max_topics: usize,
    pub history_size: usize,
    pub history_bytes: usize,
    /// Events past a gap an instance holds while the gap is fetched.
    pub max_held: usize,
    pub link: LinkLimits,
}

/// The outcome of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created {
        epoch: String,
    },
    Exists,
    Limit,
    Deleted,
    NotFound,
    Published {
        seq: u64,
    },
    Duplicate {
        seq: u64,
    },
    /// Redis could not be asked, or did not answer: whether it was done is unknown (a publish
    /// retried with the same message id is safe).
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    Answer {
        ticket: T,
        outcome: Outcome,
    },
    /// A topic exists (created anywhere, or found when connecting): follow it from `last`.
    TopicCreated {
        name: String,
        epoch: String,
    },
    TopicDeleted {
        name: String,
    },
    Deliver {
        topic: String,
        seq: u64,
        event: Vec<u8>,
    },
    /// The topic is not what its subscribers followed (a new epoch, or events lost for good).
    Reset {
        topic: String,
        epoch: String,
    },
    /// Connected and in step with Redis: requests are taken.
    Up,
    /// The connection is gone: requests are answered `Unavailable` until it is back.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected; the next attempt is due at the given time.
    Down {
        retry_at: Instant,
    },
    /// Connected, loading scripts and reading the topics.
    Syncing,
    Up,
}

/// What a reply is for.
#[derive(Debug)]
enum Pending<T> {
    /// Replies of the connection's setup whose content does not matter (errors do).
    Setup,
    Registry,
    /// History of `topic`: all of it when first followed, or what may have been missed.
    Read {
        topic: String,
    },
    Request {
        ticket: T,
        kind: Kind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Delete,
    Publish,
}

/// What an instance knows of one topic.
#[derive(Debug)]
struct Followed {
    /// `None` until its history has been read. Its channel's messages are dropped meanwhile:
    /// one that arrives before the read's reply, on the same connection, was published before
    /// the read ran, so the read holds it.
    mirror: Option<Mirror>,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Backplane<T> {
    settings: Settings,
    link: Link<Pending<T>>,
    state: State,
    backoff: Duration,
    topics: HashMap<String, Followed>,
    events: VecDeque<Event<T>>,
    /// The scripts' digests, in the order of `scripts::ALL`.
    digests: [String; 4],
    /// Credentials and database for the connection's setup.
    url: RedisUrl,
}

impl<T> Backplane<T> {
    pub fn new(settings: Settings, url: RedisUrl, now: Instant) -> Backplane<T> {
        Backplane {
            settings,
            link: Link::new(settings.link),
            state: State::Down { retry_at: now },
            backoff: BACKOFF_FIRST,
            topics: HashMap::new(),
            events: VecDeque::new(),
            digests: scripts::ALL.map(scripts::digest),
            url,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the loop should open a connection now.
    pub fn wants_connection(&self, now: Instant) -> bool {
        matches!(self.state, State::Down { retry_at } if now >= retry_at)
    }

    /// The connection is open: set it up, load the scripts, follow every channel, read the
    /// topics.
    pub fn connected(&mut self, now: Instant) {
        self.state = State::Syncing;
        // A new connection starts with an empty link: its setup cannot be refused.
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &self.url.password {
            hello.push(b"AUTH");
            hello.push(self.url.username.as_deref().unwrap_or("default").as_bytes());
            hello.push(password.as_bytes());
        }
        let db = self.url.db.to_string();
        self.link.send_forced(Pending::Setup, &hello, now);
        self.link
            .send_forced(Pending::Setup, &[b"SELECT", db.as_bytes()], now);
        for script in scripts::ALL {
            self.link.send_forced(
                Pending::Setup,
                &[b"SCRIPT", b"LOAD", script.as_bytes()],
                now,
            );
        }
        let _ = self
            .link
            .send_unanswered(&[b"SUBSCRIBE", scripts::CONTROL.as_bytes()]);
        let _ = self.link.send_unanswered(&[b"PSUBSCRIBE", b"{ps}:c:*"]);
        self.link.send_forced(
            Pending::Registry,
            &[b"HGETALL", scripts::TOPICS.as_bytes()],
            now,
        );
    }

    /// The connection is gone (closed, failed, or a reply overdue): every request waiting is
    /// answered `Unavailable`, and a new connection is due after a backoff.
    pub fn connection_lost(&mut self, now: Instant) {
        for pending in self.link.fail() {
            if let Pending::Request { ticket, .. } = pending {
                self.events.push_back(Event::Answer {
                    ticket,
                    outcome: Outcome::Unavailable,
                });
            }
        }
        if !matches!(self.state, State::Down { .. }) {
            self.events.push_back(Event::Down);
        }
        self.state = State::Down {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Deadlines: an overdue reply means the connection is dead.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.link.overdue(now) {
            self.connection_lost(now);
            return false;
        }
        true
    }

    /// When [`Backplane::tick`] or a new connection is next due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match self.state {
            State::Down { retry_at } => Some(retry_at),
            _ => self.link.next_deadline(),
        }
    }

    pub fn unwritten(&self) -> &[u8] {
        self.link.unwritten()
    }

    pub fn wrote(&mut self, n: usize) {
        self.link.wrote(n);
    }

    /// Whether a request would be taken now (the window has room and the link is up).
    pub fn has_room(&self) -> bool {
        self.state == State::Up && self.link.has_room()
    }

    pub fn next_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    fn request(&mut self, ticket: T, kind: Kind, args: &[&[u8]], now: Instant) {
        // Past the window (the caller should have asked `has_room`) it is as if Redis were away.
        if self.state != State::Up || !self.link.has_room() {
            self.events.push_back(Event::Answer {
                ticket,
                outcome: Outcome::Unavailable,
            });
            return;
        }
        let sent = self.link.send(Pending::Request { ticket, kind }, args, now);
        debug_assert!(sent.is_ok(), "room was checked");
    }

    /// Creates `name` as `epoch` cluster-wide, within `MAX_TOPICS`.
    pub fn create(&mut self, ticket: T, name: &str, epoch: &str, now: Instant) {
        let k = TopicKeys::new(name);
        let max = self.settings.max_topics.to_string();
        let digest = self.digests[0].clone();
        self.request(
            ticket,
            Kind::Create,
            &[
                b"EVALSHA",
                digest.as_bytes(),
                b"4",
                scripts::TOPICS.as_bytes(),
                k.meta.as_bytes(),
                k.history.as_bytes(),
                k.ids.as_bytes(),
                name.as_bytes(),
                epoch.as_bytes(),
                max.as_bytes(),
            ],
            now,
        );
    }

    pub fn delete(&mut self, ticket: T, name: &str, now: Instant) {
        let k = TopicKeys::new(name);
        let digest = self.digests[1].clone();
        self.request(
            ticket,
            Kind::Delete,
            &[
                b"EVALSHA",
                digest.as_bytes(),
                b"4",
                scripts::TOPICS.as_bytes(),
                k.meta.as_bytes(),
                k.history.as_bytes(),
                k.ids.as_bytes(),
                name.as_bytes(),
                k.channel.as_bytes(),
            ],
            now,
        );
    }

    /// Publishes the event `head .. seq .. tail` (`protocol::event_parts`) with message `id`.
    pub fn publish(
        &mut self,
        ticket: T,
        topic: &str,
        id: &str,
        head: &[u8],
        tail: &[u8],
        now: Instant,
    ) {
        let k = TopicKeys::new(topic);
        let (size, bytes) = (
            self.settings.history_size.to_string(),
            self.settings.history_bytes.to_string(),
        );
        let digest = self.digests[2].clone();
        self.request(
            ticket,
            Kind::Publish,
            &[
                b"EVALSHA",
                digest.as_bytes(),
                b"4",
                scripts::TOPICS.as_bytes(),
                k.meta.as_bytes(),
                k.history.as_bytes(),
                k.ids.as_bytes(),
                topic.as_bytes(),
                id.as_bytes(),
                head,
                tail,
                size.as_bytes(),
                bytes.as_bytes(),
                k.channel.as_bytes(),
            ],
            now,
        );
    }

    /// Reads `topic`'s history after `after`.
    fn read(&mut self, topic: &str, after: u64, now: Instant) {
        let k = TopicKeys::new(topic);
        let (after, count) = (
            after.to_string(),
            self.settings.history_size.max(1).to_string(),
        );
        let digest = self.digests[3].clone();
        let args: [&[u8]; 9] = [
            b"EVALSHA",
            digest.as_bytes(),
            b"3",
            scripts::TOPICS.as_bytes(),
            k.meta.as_bytes(),
            k.history.as_bytes(),
            topic.as_bytes(),
            after.as_bytes(),
            count.as_bytes(),
        ];
        // Reads are the backplane's own: sent past the window rather than lost.
        self.link.send_forced(
            Pending::Read {
                topic: topic.to_string(),
            },
            &args,
            now,
        );
    }

    /// Bytes from the connection. An error means it cannot be trusted: drop it
    /// ([`Backplane::connection_lost`]).
    pub fn received(&mut self, bytes: &[u8], now: Instant) -> Result<(), LinkError> {
        self.link.received(bytes)?;
        loop {
            // Pushes first: on one connection they came before the replies that follow them.
            if let Some(push) = self.link.next_push() {
                self.on_push(push, now);
                continue;
            }
            let Some((pending, value)) = self.link.next_reply() else {
                return Ok(());
            };
            self.on_reply(pending, value, now)?;
        }
    }

    fn on_reply(
        &mut self,
        pending: Pending<T>,
        value: Value,
        now: Instant,
    ) -> Result<(), LinkError> {
        match pending {
            Pending::Setup => {
                if let Value::Error(_) = value {
                    // A wrong password, a missing script command: nothing works without these.
                    return Err(LinkError::Unexpected);
                }
            }
            Pending::Registry => self.on_registry(value, now),
            Pending::Read { topic } => self.on_read(&topic, value, now),
            Pending::Request { ticket, kind } => {
                let outcome = outcome(kind, &value);
                if let Value::Error(e) = &value {
                    if e.starts_with(b"NOSCRIPT") {
                        // The scripts were flushed: reconnecting loads them again.
                        self.events.push_back(Event::Answer { ticket, outcome });
                        return Err(LinkError::Unexpected);
                    }
                }
                self.events.push_back(Event::Answer { ticket, outcome });
            }
        }
        Ok(())
    }

    /// The topics Redis holds: follow those not followed, forget those gone, and read each
    /// one's history (all of it for a new one, what was missed for one followed before).
    fn on_registry(&mut self, value: Value, now: Instant) {
        let listed: HashMap<String, String> = pairs(value)
            .into_iter()
            .filter_map(|(k, v)| Some((text(&k)?, text(&v)?)))
            .collect();
        let gone: Vec<String> = self
            .topics
            .keys()
            .filter(|t| !listed.contains_key(*t))
            .cloned()
            .collect();
        for name in gone {
            self.topics.remove(&name);
            self.events.push_back(Event::TopicDeleted { name });
        }
        for (name, epoch) in listed {
            let known = self
                .topics
                .get(&name)
                .and_then(|f| f.mirror.as_ref())
                .map(|m| (m.epoch().to_vec(), m.last()));
            match known {
                Some((e, last)) if e == epoch.as_bytes() => {
                    // Followed before: what was missed while away is a gap to fill.
                    self.read(&name, last, now);
                }
                _ => {
                    if known.is_some() {
                        self.events.push_back(Event::Reset {
                            topic: name.clone(),
                            epoch: epoch.clone(),
                        });
                    } else {
                        self.events.push_back(Event::TopicCreated {
                            name: name.clone(),
                            epoch: epoch.clone(),
                        });
                    }
                    self.topics.insert(name.clone(), Followed { mirror: None });
                    self.read(&name, 0, now);
                }
            }
        }
        // In step once every read is answered; requests are taken from now on anyway, since
        // the channel is followed and each topic's events wait for its read.
        self.state = State::Up;
        self.backoff = BACKOFF_FIRST;
        self.events.push_back(Event::Up);
    }

    fn on_read(&mut self, topic: &str, value: Value, now: Instant) {
        let Some(History {
            epoch,
            last,
            events: entries,
        }) = read_reply(value)
        else {
            // The topic went while the read was out: its deletion marker says so.
            return;
        };
        let Some(followed) = self.topics.get_mut(topic) else {
            return;
        };
        let events: Vec<(u64, &[u8])> = entries.iter().map(|(s, e)| (*s, e.as_slice())).collect();
        let mut steps = Vec::new();
        match &mut followed.mirror {
            None => {
                // Its history as the local ring, then what arrived meanwhile.
                for &(seq, event) in &events {
                    steps.push(Step::Deliver {
                        seq,
                        event: event.to_vec(),
                    });
                }
                followed.mirror = Some(Mirror::new(epoch.as_bytes(), last, self.settings.max_held));
            }
            Some(mirror) => {
                if mirror.epoch() != epoch.as_bytes() {
                    steps.push(Step::Reset {
                        epoch: epoch.as_bytes().to_vec(),
                    });
                    *mirror = Mirror::new(epoch.as_bytes(), 0, self.settings.max_held);
                }
                // What Redis has up to `last` and this instance lacks is filled, or told lost.
                mirror.expect(last);
                steps.extend(mirror.filled(epoch.as_bytes(), &events));
            }
        }
        self.apply(topic, steps, now);
    }

    fn on_push(&mut self, push: Value, now: Instant) {
        let Value::Push(items) = push else { return };
        let parts: Vec<&[u8]> = items.iter().filter_map(Value::as_bytes).collect();
        match parts.as_slice() {
            [b"message", channel, payload] if *channel == scripts::CONTROL.as_bytes() => {
                self.on_control(payload, now);
            }
            [b"pmessage", _, channel, payload] => {
                let Some(topic) = channel.strip_prefix(b"{ps}:c:") else {
                    return;
                };
                let Ok(topic) = std::str::from_utf8(topic) else {
                    return;
                };
                let Some(message) = ChannelMessage::parse(payload) else {
                    return;
                };
                self.on_channel(topic.to_string(), &message, now);
            }
            _ => {}
        }
    }

    fn on_control(&mut self, payload: &[u8], now: Instant) {
        let Some(rest) = payload.strip_prefix(b"created:") else {
            return;
        };
        let Some(colon) = rest.iter().position(|&b| b == b':') else {
            return;
        };
        let (Ok(epoch), Ok(name)) = (
            std::str::from_utf8(&rest[..colon]),
            std::str::from_utf8(&rest[colon + 1..]),
        ) else {
            return;
        };
        if self
            .topics
            .get(name)
            .and_then(|f| f.mirror.as_ref())
            .is_some_and(|m| m.epoch() == epoch.as_bytes())
        {
            return;
        }
        // Created just now: nothing to read, its events follow on the channel.
        let _ = now;
        self.events.push_back(Event::TopicCreated {
            name: name.to_string(),
            epoch: epoch.to_string(),
        });
        self.topics.insert(
            name.to_string(),
            Followed {
                mirror: Some(Mirror::new(epoch.as_bytes(), 0, self.settings.max_held)),
            },
        );
    }

    fn on_channel(&mut self, topic: String, message: &ChannelMessage<'_>, now: Instant) {
        let Some(followed) = self.topics.get_mut(&topic) else {
            return;
        };
        let Some(mirror) = followed.mirror.as_mut() else {
            return;
        };
        let steps = mirror.on_message(message);
        self.apply(&topic, steps, now);
    }

    fn apply(&mut self, topic: &str, steps: Vec<Step>, now: Instant) {
        for step in steps {
            match step {
                Step::Deliver { seq, event } => self.events.push_back(Event::Deliver {
                    topic: topic.to_string(),
                    seq,
                    event,
                }),
                Step::Fetch { after, .. } => self.read(topic, after, now),
                Step::Reset { epoch } => self.events.push_back(Event::Reset {
                    topic: topic.to_string(),
                    epoch: String::from_utf8_lossy(&epoch).into_owned(),
                }),
                Step::Deleted => {
                    self.topics.remove(topic);
                    self.events.push_back(Event::TopicDeleted {
                        name: topic.to_string(),
                    });
                }
            }
        }
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_bytes()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// A map reply (RESP3), or a flat array of keys and values (RESP2).
fn pairs(v: Value) -> Vec<(Value, Value)> {
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
struct History {
    epoch: String,
    last: u64,
    /// `(seq, event)`, oldest first.
    events: Vec<(u64, Vec<u8>)>,
}

/// `{1, epoch, last, entries}`; `None` for `{0}` (no such topic).
fn read_reply(v: Value) -> Option<History> {
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

fn outcome(kind: Kind, v: &Value) -> Outcome {
    let Value::Array(items) = v else {
        return Outcome::Unavailable;
    };
    let status = items.first().and_then(int);
    let seq = || {
        items
            .get(1)
            .and_then(int)
            .and_then(|s| u64::try_from(s).ok())
    };
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
        (Kind::Delete | Kind::Publish, Some(0)) => Outcome::NotFound,
        (Kind::Publish, Some(1)) => {
            seq().map_or(Outcome::Unavailable, |seq| Outcome::Published { seq })
        }
        (Kind::Publish, Some(2)) => {
            seq().map_or(Outcome::Unavailable, |seq| Outcome::Duplicate { seq })
        }
        _ => Outcome::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backplane() -> Backplane<u32> {
        let settings = Settings {
            max_topics: 10,
            history_size: 100,
            history_bytes: 1 << 20,
            max_held: 10,
            link: LinkLimits::default(),
        };
        Backplane::new(
            settings,
            RedisUrl::parse("redis://:pw@h/3").unwrap(),
            Instant::now(),
        )
    }

    #[test]
    fn without_a_connection_every_request_is_unavailable_at_once() {
        let mut b = backplane();
        let now = Instant::now();
        assert!(b.wants_connection(now) && !b.has_room());
        b.publish(1, "t", "id", b"{", b"}", now);
        b.create(2, "t", "e", now);
        assert_eq!(
            [b.next_event(), b.next_event()],
            [1, 2].map(|ticket| Some(Event::Answer {
                ticket,
                outcome: Outcome::Unavailable
            }))
        );
        assert!(b.unwritten().is_empty(), "nothing was sent");
    }

    #[test]
    fn a_connection_starts_with_its_credentials_database_scripts_and_subscriptions() {
        let mut b = backplane();
        b.connected(Instant::now());
        let setup = String::from_utf8_lossy(b.unwritten()).into_owned();
        for part in [
            "HELLO",
            "AUTH",
            "default",
            "pw",
            "SELECT",
            "$1\r\n3",
            "SCRIPT",
            "PSUBSCRIBE",
            "{ps}:c:*",
            "HGETALL",
        ] {
            assert!(setup.contains(part), "{part} in {setup}");
        }
        // A lost connection gives up the waiting setup and backs off, doubling.
        let now = Instant::now();
        b.connection_lost(now);
        assert!(!b.wants_connection(now) && b.wants_connection(now + BACKOFF_FIRST));
        b.connected(now);
        b.connection_lost(now);
        assert!(
            !b.wants_connection(now + BACKOFF_FIRST) && b.wants_connection(now + 2 * BACKOFF_FIRST)
        );
        assert_eq!(b.next_event(), Some(Event::Down));
    }

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
                Kind::Publish,
                Value::Array(vec![int(1), int(7), bulk("e")]),
                Outcome::Published { seq: 7 },
            ),
            (
                Kind::Publish,
                Value::Array(vec![int(2), int(3), bulk("e")]),
                Outcome::Duplicate { seq: 3 },
            ),
            (Kind::Publish, Value::Array(vec![int(0)]), Outcome::NotFound),
            (
                Kind::Publish,
                Value::Error(b"OOM command not allowed".to_vec()),
                Outcome::Unavailable,
            ),
        ];
        for (kind, value, want) in cases {
            assert_eq!(outcome(kind, &value), want, "{kind:?} {value:?}");
        }
    }
}
