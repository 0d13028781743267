//! An instance's side of the cluster, sans-IO: one RESP3 connection to Redis over which it runs
//! the scripts and follows every topic's channel, so its own events reach it before the
//! replies that published them. The engine asks it to create, delete and publish, each with a
//! ticket, and takes [`Event`]s back: answers for the tickets, topics appearing and going,
//! events to deliver in seq order, resets. The loop moves the bytes, says when the connection
//! is up or gone, and calls [`Backplane::tick`] for deadlines and reconnection.
//!
//! The server drives it from `server/redis.rs` and `engine/cluster.rs`. This file: the types
//! and the connection's life; `requests.rs`: what is asked of Redis; `follow.rs`: what arrives
//! (replies and pushes) and the events it makes; `replies.rs`: the scripts' replies read.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

mod follow;
mod replies;
mod requests;

use requests::Batch;

use super::link::{Link, LinkLimits};
use super::mirror::Mirror;
use super::scripts;
use super::url::RedisUrl;

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
    /// A PING sent while nothing else was asked, so a connection that died silently is found
    /// by its overdue reply.
    Probe,
    /// The data set's identity ([`scripts::BOOT`]).
    Boot,
    /// A topic created again after Redis lost its data (the reply is the registry's business).
    Recreate,
    Registry,
    /// History of `topic` from `from`: all of it when first followed (0), or what may have
    /// been missed.
    Read {
        topic: String,
        from: u64,
    },
    /// A new epoch asked for `topic`, whose seqs went back ([`scripts::RENEW`]).
    Renew {
        topic: String,
    },
    Request {
        ticket: T,
        kind: Kind,
    },
    /// A batch of one topic's publishes, in order.
    Publishes {
        tickets: Vec<T>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Delete,
}

/// What an instance knows of one topic.
#[derive(Debug)]
struct Followed {
    /// `None` until its history has been read (from its start). Its channel's messages are
    /// dropped meanwhile: one that arrives before the read's reply, on the same connection,
    /// was published before the read ran, so the read holds it.
    mirror: Option<Mirror>,
    /// The epoch its subscribers were last told (created as, or `reset` to): a renewal seen
    /// twice (on the channel, then in the registry) is told once.
    epoch: String,
    /// Its seqs went back under `epoch` (Redis restored older data) and a new epoch is owed:
    /// asked for again if the connection goes before Redis answers.
    renewing: bool,
}

impl Followed {
    /// A topic known as `epoch` whose history is yet to be read.
    fn unread(epoch: &str) -> Followed {
        Followed {
            mirror: None,
            epoch: epoch.to_string(),
            renewing: false,
        }
    }
}

/// The numbers every call of a script passes, as text.
#[derive(Debug)]
struct Argv {
    max_topics: String,
    history_size: String,
    history_bytes: String,
    /// Events a read asks for: [`READ_PAGE`], and the one it starts from.
    read_count: String,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Events one history read asks for, and history reads out at once: what a reconnect asks of
/// Redis at a time stays far below its output-buffer limit for subscribed connections (32 MB
/// by default; 4 × 32 events of at most 64 KiB is 8 MiB), which would otherwise cut the
/// connection again and again while it catches up.
pub const READ_PAGE: usize = 32;
const READS_OUT: usize = 4;
/// How long the connection may be idle before it is probed.
const PROBE_AFTER: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Backplane<T> {
    settings: Settings,
    link: Link<Pending<T>>,
    state: State,
    backoff: Duration,
    topics: HashMap<String, Followed>,
    events: VecDeque<Event<T>>,
    /// The settings as script arguments, written once.
    argv: Argv,
    /// Credentials and database for the connection's setup.
    url: RedisUrl,
    /// When anything was last sent or received (the probe is due `PROBE_AFTER` later).
    last_activity: Instant,
    connected_before: bool,
    /// The data set's identity as last seen.
    boot: Option<Vec<u8>>,
    /// A new identity whose topics are being created again: it becomes `boot` once the
    /// registry is read after them, so a connection lost before that does it all again.
    recreating: Option<Vec<u8>>,
    /// History reads waiting for one of the `READS_OUT` places, and those out.
    reads_waiting: VecDeque<(String, u64)>,
    reads_out: usize,
    /// The connection's name in Redis (`CLIENT LIST`), if given.
    name: Option<String>,
    counters: Counters,
    /// Publishes gathered during this tick, a batch per topic, sent by [`Backplane::tick`];
    /// they count against the window.
    batches: Vec<Batch<T>>,
}

/// What the backplane counts since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Connections made after the first.
    pub reconnects: u64,
    /// Gaps in a topic's stream that were asked of its stored history.
    pub gaps_fetched: u64,
    /// Reconnects that found Redis had lost its data (its topics are created again).
    pub data_lost: u64,
    /// Idle probes sent.
    pub probes: u64,
    /// Topics found gone back under their epoch after a reconnect (Redis restored older
    /// data), and given a new one.
    pub renewed: u64,
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
            argv: Argv {
                max_topics: settings.max_topics.to_string(),
                history_size: settings.history_size.to_string(),
                history_bytes: settings.history_bytes.to_string(),
                read_count: (READ_PAGE + 1).to_string(),
            },
            url,
            last_activity: now,
            connected_before: false,
            boot: None,
            recreating: None,
            reads_waiting: VecDeque::new(),
            reads_out: 0,
            name: None,
            counters: Counters::default(),
            batches: Vec::new(),
        }
    }

    /// Names the connection in Redis (`HELLO ... SETNAME`), so an operator sees which
    /// instance it is.
    pub fn named(mut self, name: &str) -> Backplane<T> {
        self.name = Some(name.to_string());
        self
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Requests and the backplane's own commands waiting for their replies.
    pub fn in_flight(&self) -> usize {
        self.link.in_flight() + self.gathered().0
    }

    /// How long the oldest command in flight has waited for its reply (zero when none waits).
    pub fn lag(&self, now: Instant) -> Duration {
        self.link
            .next_deadline()
            .map(|due| now.saturating_duration_since(due - self.settings.link.reply_timeout))
            .unwrap_or_default()
    }

    /// Whether the loop should open a connection now.
    pub fn wants_connection(&self, now: Instant) -> bool {
        matches!(self.state, State::Down { retry_at } if now >= retry_at)
    }

    /// The connection is open: set it up, load the scripts, follow every channel, read the
    /// topics.
    pub fn connected(&mut self, now: Instant) {
        if self.connected_before {
            self.counters.reconnects += 1;
        }
        self.connected_before = true;
        self.state = State::Syncing;
        self.last_activity = now;
        // A new connection starts with an empty link: its setup cannot be refused.
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &self.url.password {
            hello.push(b"AUTH");
            hello.push(self.url.username.as_deref().unwrap_or("default").as_bytes());
            hello.push(password.as_bytes());
        }
        if let Some(name) = &self.name {
            hello.push(b"SETNAME");
            hello.push(name.as_bytes());
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
        // The registry is read once the data set's identity is known (`follow::on_boot`).
        let candidate = format!("{:016x}", crate::ids::random_u64());
        let boot = scripts::BOOT.as_bytes();
        self.link.send_forced(
            Pending::Setup,
            &[b"SET", boot, candidate.as_bytes(), b"NX"],
            now,
        );
        self.link.send_forced(Pending::Boot, &[b"GET", boot], now);
    }

    fn read_registry(&mut self, now: Instant) {
        self.link.send_forced(
            Pending::Registry,
            &[b"HGETALL", scripts::TOPICS.as_bytes()],
            now,
        );
    }

    /// The connection is gone (closed, failed, or a reply overdue): every request waiting is
    /// answered `Unavailable`, and a new connection is due after a backoff.
    pub fn connection_lost(&mut self, now: Instant) {
        let gathered = std::mem::take(&mut self.batches).into_iter();
        let sent = self
            .link
            .fail()
            .into_iter()
            .flat_map(|pending| match pending {
                Pending::Request { ticket, .. } => vec![ticket],
                Pending::Publishes { tickets } => tickets,
                _ => Vec::new(),
            });
        let tickets: Vec<T> = sent.chain(gathered.flat_map(|b| b.tickets)).collect();
        for ticket in tickets {
            self.events.push_back(Event::Answer {
                ticket,
                outcome: Outcome::Unavailable,
            });
        }
        if !matches!(self.state, State::Down { .. }) {
            self.events.push_back(Event::Down);
        }
        // Reads are asked again from the registry on the next connection.
        for mirror in self.topics.values_mut().filter_map(|f| f.mirror.as_mut()) {
            mirror.connection_lost();
        }
        self.reads_waiting.clear();
        self.reads_out = 0;
        self.state = State::Down {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Deadlines: an overdue reply means the connection is dead; one idle for `PROBE_AFTER`
    /// is probed, so a silently dead one is found within the reply timeout.
    pub fn tick(&mut self, now: Instant) {
        self.send_batches(now);
        if self.link.overdue(now) {
            self.connection_lost(now);
        } else if self.state == State::Up
            && self.link.in_flight() == 0
            && now >= self.last_activity + PROBE_AFTER
        {
            self.counters.probes += 1;
            self.last_activity = now;
            self.link.send_forced(Pending::Probe, &[b"PING"], now);
        }
    }

    /// When [`Backplane::tick`] or a new connection is next due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match self.state {
            State::Down { retry_at } => Some(retry_at),
            State::Up if self.link.in_flight() == 0 => Some(self.last_activity + PROBE_AFTER),
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
        let (publishes, bytes) = self.gathered();
        self.state == State::Up && self.link.has_room_beside(publishes, bytes)
    }

    /// The publishes gathered and not yet sent, and their share of the calls' bytes.
    fn gathered(&self) -> (usize, usize) {
        self.batches.iter().fold((0, 0), |(n, bytes), b| {
            (n + b.tickets.len(), bytes + b.bytes)
        })
    }

    pub fn next_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
