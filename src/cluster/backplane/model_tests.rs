//! The whole backplane against a model of one Redis, over seeded random runs: the commands it
//! writes are decoded and run in order as Redis would (setup, subscriptions, the registry,
//! history reads, this instance's publish batches with their message ids), other instances
//! publish at random, pushes reach it while it is subscribed, its bytes arrive in random
//! pieces, and the connection is lost and made again at random. For every topic a subscriber
//! sees seqs in increasing order, a skipped one only after a reset, none told lost while
//! history holds them, and once all is answered the last seq Redis gave; every publish is
//! answered once, with the seq Redis gave its message id.

use std::collections::{HashMap, VecDeque};

use super::tests::backplane_with;
use super::*;
use crate::resp::{self, Decoder, Value};

/// splitmix64: a seeded sequence, so a failing run is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn bulk(b: impl AsRef<[u8]>) -> Value {
    Value::Bulk(b.as_ref().to_vec())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const TOPICS: usize = 6;

fn name(topic: usize) -> String {
    format!("t{topic}")
}

/// One topic as Redis holds it (all under epoch `e1`).
#[derive(Default, Clone)]
struct Stream {
    last: u64,
    /// Message id → seq, of every event published (the model keeps them all; only those
    /// still retained count as duplicates).
    ids: HashMap<String, u64>,
}

/// Redis as one connection sees it.
struct Redis {
    streams: Vec<Stream>,
    retained: u64,
    subscribed: bool,
    /// What it sent and the backplane has not read.
    wire: Vec<u8>,
    /// Commands written and not yet run.
    commands: VecDeque<Vec<Vec<u8>>>,
    decoder: Decoder,
    unparsed: Vec<u8>,
}

impl Redis {
    fn new(streams: Vec<Stream>, retained: u64) -> Redis {
        Redis {
            streams,
            retained,
            subscribed: false,
            wire: Vec::new(),
            commands: VecDeque::new(),
            decoder: Decoder::new(resp::Limits::default()),
            unparsed: Vec::new(),
        }
    }

    fn send(&mut self, v: &Value) {
        resp::encode(&mut self.wire, v);
    }

    fn take_written(&mut self, b: &mut Backplane<u32>) {
        let n = b.unwritten().len();
        self.unparsed.extend_from_slice(b.unwritten());
        b.wrote(n);
        loop {
            let (used, value) = self
                .decoder
                .decode(&self.unparsed)
                .expect("commands decode");
            self.unparsed.drain(..used);
            let Some(Value::Array(parts)) = value else {
                break;
            };
            let parts = parts.iter().map(|p| p.as_bytes().unwrap().to_vec());
            self.commands.push_back(parts.collect());
        }
    }

    fn topic(&self, name: &[u8]) -> usize {
        let name = text(name);
        name[1..].parse().unwrap_or_else(|_| panic!("topic {name}"))
    }

    fn oldest(&self, topic: usize) -> u64 {
        self.streams[topic].last.saturating_sub(self.retained) + 1
    }

    /// A publish by anyone: the next seq, pushed to this connection when it is subscribed.
    fn publish(&mut self, topic: usize, id: String) -> i64 {
        if let Some(&seq) = self.streams[topic].ids.get(&id) {
            if seq >= self.oldest(topic) {
                return -(seq as i64);
            }
        }
        let s = &mut self.streams[topic];
        s.last += 1;
        s.ids.insert(id, s.last);
        let seq = s.last;
        if self.subscribed {
            let message = format!("e1:{seq}:{{}}");
            let channel = format!("{{ps}}:c:{}", name(topic));
            let push = ["pmessage", "{ps}:c:*", &channel, &message];
            self.send(&Value::Push(push.iter().map(bulk).collect()));
        }
        seq as i64
    }

    fn run_one(&mut self) {
        let Some(c) = self.commands.pop_front() else {
            return;
        };
        let command = text(&c[0]).to_ascii_uppercase();
        let reply = match command.as_str() {
            "HELLO" => Value::Map(Vec::new()),
            "SELECT" | "PING" => Value::Simple(b"OK".to_vec()),
            "SCRIPT" => bulk("sha"),
            "SUBSCRIBE" | "PSUBSCRIBE" => {
                self.subscribed |= command == "PSUBSCRIBE";
                let kind = command.to_ascii_lowercase();
                Value::Push(vec![bulk(kind), bulk(&c[1]), Value::Integer(1)])
            }
            "SET" => Value::Null,
            "GET" => bulk("abcd"),
            "HGETALL" => Value::Map((0..TOPICS).map(|t| (bulk(name(t)), bulk("e1"))).collect()),
            // EVALSHA <sha> 3 <registry> <meta> <history> <topic> <from> <count>: READ.
            "EVALSHA" if c.len() == 9 => {
                let t = self.topic(&c[6]);
                let from: u64 = text(&c[7]).parse().unwrap();
                let count: usize = text(&c[8]).parse().unwrap();
                let entries = (from.max(self.oldest(t)).max(1)..=self.streams[t].last)
                    .take(count)
                    .map(|seq| {
                        let fields = ["e", "{}", "i", "a"].iter().map(bulk).collect();
                        Value::Array(vec![bulk(format!("{seq}-0")), Value::Array(fields)])
                    })
                    .collect();
                Value::Array(vec![
                    Value::Integer(1),
                    bulk("e1"),
                    Value::Integer(self.streams[t].last as i64),
                    Value::Array(entries),
                ])
            }
            // EVALSHA <sha> 4 <4 keys> <topic> <size> <bytes> <channel> (<id> <head> <tail>)...
            "EVALSHA" if c.len() >= 14 && text(&c[2]) == "4" => {
                let t = self.topic(&c[7]);
                let mut out = vec![Value::Integer(1), bulk("e1")];
                for event in c[11..].chunks(3) {
                    out.push(Value::Integer(self.publish(t, text(&event[0]))));
                }
                Value::Array(out)
            }
            _ => panic!("unexpected command {command} {c:?}"),
        };
        self.send(&reply);
    }
}

#[derive(Default, Clone)]
struct Seen {
    last: u64,
    /// Until the first event: a topic first followed starts at the oldest event Redis kept.
    started: bool,
    reset_pending: bool,
}

/// What the instance's side observed.
#[derive(Default)]
struct Observed {
    topics: Vec<Seen>,
    resets: usize,
    /// Publishes asked and not yet answered: ticket → (topic, message id).
    asked: HashMap<u32, (usize, String)>,
    /// Message ids answered Unavailable, which the model's client retries.
    retry: Vec<(usize, String)>,
    /// Each message id's seq, as its answers gave it.
    acked: HashMap<String, u64>,
}

impl Observed {
    fn take(&mut self, b: &mut Backplane<u32>, redis: &Redis, seed: u64) {
        while let Some(e) = b.next_event() {
            match e {
                Event::Deliver { topic, seq, .. } => {
                    let seen = &mut self.topics[redis.topic(topic.as_bytes())];
                    assert!(
                        seq > seen.last,
                        "seed {seed}: {topic} {seq} after {}",
                        seen.last
                    );
                    assert!(
                        seq == seen.last + 1 || seen.reset_pending || !seen.started,
                        "seed {seed}: {topic} {seq} after {} with no reset told",
                        seen.last
                    );
                    seen.last = seq;
                    seen.started = true;
                    seen.reset_pending = false;
                }
                Event::Reset { topic, .. } => {
                    self.topics[redis.topic(topic.as_bytes())].reset_pending = true;
                    self.resets += 1;
                }
                Event::Answer { ticket, outcome } => {
                    let (topic, id) = self
                        .asked
                        .remove(&ticket)
                        .unwrap_or_else(|| panic!("seed {seed}: ticket {ticket} answered twice"));
                    match outcome {
                        Outcome::Published { seq } | Outcome::Duplicate { seq } => {
                            let stored = redis.streams[topic].ids.get(&id).copied();
                            assert_eq!(Some(seq), stored, "seed {seed}: {id}");
                            if let Some(before) = self.acked.insert(id.clone(), seq) {
                                assert_eq!(before, seq, "seed {seed}: {id} under two seqs");
                            }
                        }
                        Outcome::Unavailable => self.retry.push((topic, id)),
                        other => panic!("seed {seed}: {other:?}"),
                    }
                }
                Event::TopicDeleted { name } => panic!("seed {seed}: {name} was not deleted"),
                _ => {}
            }
        }
    }
}

/// One run with `retained` events kept by Redis and `max_held` by the instance; the resets
/// told.
fn run(seed: u64, retained: u64, max_held: usize) -> usize {
    const PUBLISHES: u64 = 600;
    let mut rng = Rng(seed);
    let mut now = Instant::now();
    let mut b = backplane_with(retained as usize, max_held);
    let mut redis = Redis::new(vec![Stream::default(); TOPICS], retained);
    let mut seen = Observed {
        topics: vec![Seen::default(); TOPICS],
        ..Observed::default()
    };
    let mut connected = false;
    let (mut published, mut tickets) = (0, 0u32);
    for turn in 0.. {
        assert!(turn < 400_000, "seed {seed}: never settles");
        now += if connected {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(50)
        };
        // Nothing on its way either way: whatever was missed has been read, at every such
        // moment and not only at the end.
        let quiet = connected
            && b.state() == State::Up
            && b.in_flight() == 0
            && redis.commands.is_empty()
            && redis.wire.is_empty()
            && b.unwritten().is_empty();
        if quiet {
            for (t, s) in seen.topics.iter().enumerate() {
                let last = redis.streams[t].last;
                assert_eq!(s.last, last, "seed {seed}: t{t} stopped short of Redis");
            }
        }
        if published >= PUBLISHES && quiet && seen.asked.is_empty() && seen.retry.is_empty() {
            break;
        }
        match rng.below(16) {
            // Another instance publishes.
            0 | 1 if published < PUBLISHES => {
                published += 1;
                let t = rng.below(TOPICS as u64) as usize;
                redis.publish(t, format!("other-{published}"));
            }
            // This one: a new message, or one answered Unavailable again (as a client retries).
            2 | 3 if published < PUBLISHES || !seen.retry.is_empty() => {
                let (t, id) = match seen.retry.pop() {
                    Some(again) if rng.below(2) == 0 || published >= PUBLISHES => again,
                    other => {
                        seen.retry.extend(other);
                        published += 1;
                        (
                            rng.below(TOPICS as u64) as usize,
                            format!("own-{published}"),
                        )
                    }
                };
                tickets += 1;
                seen.asked.insert(tickets, (t, id.clone()));
                b.publish(tickets, &name(t), &id, b"{".to_vec(), b"}".to_vec(), now);
            }
            4..=7 if connected => {
                redis.take_written(&mut b);
                redis.run_one();
            }
            8..=11 if connected && !redis.wire.is_empty() => {
                let n = 1 + rng.below(redis.wire.len() as u64) as usize;
                let bytes: Vec<u8> = redis.wire.drain(..n).collect();
                if b.received(&bytes, now).is_err() {
                    panic!("seed {seed}: the model's bytes were refused");
                }
            }
            // A burst on one topic: gaps of several pages when it comes while away.
            12 if published < PUBLISHES && rng.below(16) == 0 => {
                let t = rng.below(TOPICS as u64) as usize;
                for _ in 0..rng.below(80) {
                    published += 1;
                    redis.publish(t, format!("other-{published}"));
                }
            }
            13 if connected && rng.below(6) == 0 => {
                b.connection_lost(now);
                connected = false;
                redis = Redis::new(std::mem::take(&mut redis.streams), retained);
            }
            _ => {}
        }
        // Not at every turn: a tick sends the publishes gathered since, a batch per topic.
        if rng.below(3) == 0 {
            b.tick(now);
        }
        if !connected && b.wants_connection(now) {
            b.connected(now);
            connected = true;
        }
        seen.take(&mut b, &redis, seed);
    }
    seen.resets
}

#[test]
fn with_all_history_kept_every_event_is_delivered_once_in_order_whatever_is_lost() {
    for seed in 0..200 {
        assert_eq!(
            run(seed, 10_000, 10_000),
            0,
            "seed {seed}: a reset with nothing lost"
        );
    }
}

#[test]
fn with_history_trimmed_and_few_held_what_is_lost_is_told_and_the_rest_goes_on() {
    let resets: usize = (0..200).map(|seed| run(seed, 8, 3)).sum();
    assert!(resets > 0, "the bounds were never crossed");
}
