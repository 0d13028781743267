//! The whole backplane against a model of one Redis, over seeded random runs: the commands it
//! writes are decoded and answered in order as Redis would (setup, subscriptions, the
//! registry, history reads a page at a time, probes), events are published at random and
//! pushed to it while it is subscribed, its bytes arrive in random pieces, and the connection
//! is lost and made again at random. A subscriber of its events sees seqs in increasing order,
//! a skipped one only after a reset, none told lost while history holds them, and once all is
//! answered the last seq Redis gave.

use std::collections::VecDeque;

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

/// Redis with one topic `t` (epoch `e1`), seen from one connection.
struct Redis {
    last: u64,
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

    fn publish(&mut self) {
        self.last += 1;
        if self.subscribed {
            let message = format!("e1:{}:{{}}", self.last);
            let push = ["pmessage", "{ps}:c:*", "{ps}:c:t", &message];
            self.send(&Value::Push(push.iter().map(bulk).collect()));
        }
    }

    fn run_one(&mut self) {
        let Some(c) = self.commands.pop_front() else {
            return;
        };
        let name = String::from_utf8_lossy(&c[0]).to_ascii_uppercase();
        let reply = match name.as_str() {
            "HELLO" => Value::Map(Vec::new()),
            "SELECT" | "PING" => Value::Simple(b"OK".to_vec()),
            "SCRIPT" => bulk("sha"),
            "SUBSCRIBE" | "PSUBSCRIBE" => {
                self.subscribed |= name == "PSUBSCRIBE";
                let kind = name.to_ascii_lowercase();
                Value::Push(vec![bulk(kind), bulk(&c[1]), Value::Integer(1)])
            }
            "SET" => Value::Null,
            "GET" => bulk("abcd"),
            "HGETALL" => Value::Map(vec![(bulk("t"), bulk("e1"))]),
            // EVALSHA <sha> 3 <registry> <meta> <history> <topic> <from> <count>: READ.
            "EVALSHA" if c.len() == 9 => {
                let from: u64 = String::from_utf8_lossy(&c[7]).parse().unwrap();
                let count: usize = String::from_utf8_lossy(&c[8]).parse().unwrap();
                let oldest = self.last.saturating_sub(self.retained) + 1;
                let entries = (from.max(oldest).max(1)..=self.last)
                    .take(count)
                    .map(|seq| {
                        let fields = ["e", "{}", "i", "a"].iter().map(bulk).collect();
                        Value::Array(vec![bulk(format!("{seq}-0")), Value::Array(fields)])
                    })
                    .collect();
                Value::Array(vec![
                    Value::Integer(1),
                    bulk("e1"),
                    Value::Integer(self.last as i64),
                    Value::Array(entries),
                ])
            }
            _ => panic!("unexpected command {name} {c:?}"),
        };
        self.send(&reply);
    }
}

struct Seen {
    last: u64,
    /// Until the first event: a topic first followed starts at the oldest event Redis kept.
    started: bool,
    reset_pending: bool,
    resets: usize,
}

impl Seen {
    fn take(&mut self, b: &mut Backplane<u32>, seed: u64) {
        while let Some(e) = b.next_event() {
            match e {
                Event::Deliver { seq, .. } => {
                    assert!(seq > self.last, "seed {seed}: {seq} after {}", self.last);
                    assert!(
                        seq == self.last + 1 || self.reset_pending || !self.started,
                        "seed {seed}: {seq} after {} with no reset told",
                        self.last
                    );
                    self.last = seq;
                    self.started = true;
                    self.reset_pending = false;
                }
                Event::Reset { .. } => {
                    self.reset_pending = true;
                    self.resets += 1;
                }
                Event::TopicDeleted { .. } => panic!("seed {seed}: t was not deleted"),
                _ => {}
            }
        }
    }
}

/// One run with `retained` events kept by Redis and `max_held` by the instance; the resets
/// told.
fn run(seed: u64, retained: u64, max_held: usize) -> usize {
    const EVENTS: u64 = 300;
    let mut rng = Rng(seed);
    let mut now = Instant::now();
    let mut b = backplane_with(retained as usize, max_held);
    let fresh = || Redis {
        last: 0,
        retained,
        subscribed: false,
        wire: Vec::new(),
        commands: VecDeque::new(),
        decoder: Decoder::new(resp::Limits::default()),
        unparsed: Vec::new(),
    };
    let mut redis = fresh();
    let mut seen = Seen {
        last: 0,
        started: false,
        reset_pending: false,
        resets: 0,
    };
    let mut connected = false;
    for turn in 0.. {
        assert!(turn < 200_000, "seed {seed}: never settles");
        now += if connected {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(50)
        };
        let settled = connected
            && b.state() == State::Up
            && redis.commands.is_empty()
            && redis.wire.is_empty()
            && b.unwritten().is_empty();
        if redis.last >= EVENTS && settled {
            break;
        }
        match rng.below(16) {
            0..=3 if redis.last < EVENTS => redis.publish(),
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
                seen.take(&mut b, seed);
            }
            12 if connected && rng.below(16) == 0 => {
                b.connection_lost(now);
                connected = false;
                let last = redis.last;
                redis = fresh();
                redis.last = last;
                seen.take(&mut b, seed);
            }
            _ => {}
        }
        b.tick(now);
        if !connected && b.wants_connection(now) {
            b.connected(now);
            connected = true;
        }
        seen.take(&mut b, seed);
    }
    assert_eq!(seen.last, redis.last, "seed {seed}: stopped short of Redis");
    seen.resets
}

#[test]
fn with_all_history_kept_every_event_is_delivered_once_in_order_whatever_is_lost() {
    for seed in 0..300 {
        assert_eq!(
            run(seed, 1_000, 1_000),
            0,
            "seed {seed}: a reset with nothing lost"
        );
    }
}

#[test]
fn with_history_trimmed_and_few_held_what_is_lost_is_told_and_the_rest_goes_on() {
    let resets: usize = (0..300).map(|seed| run(seed, 40, 8)).sum();
    assert!(resets > 0, "the bounds were never crossed");
}
