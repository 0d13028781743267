//! The mirror driven as the backplane drives it, against a model of one Redis, over many
//! seeded random runs: events published at random, the connection lost and made again at
//! random, each history read answered when Redis reaches it, a page at a time. Whatever
//! happens, a subscriber sees seqs in increasing order, each at most once, a skipped seq only
//! after a reset, and, once everything sent has been answered, the mirror is at Redis's last seq.

use std::collections::VecDeque;

use super::*;
use crate::cluster::seeded::Rng;

const PAGE: usize = 4;

/// What Redis sends on the instance's connection, in the order it sends it.
enum Arrival {
    Event(u64),
    /// The reply of a read from `from`, run when Redis reached it: Redis's last seq then, and
    /// the retained events from `from` on, at most a page and one.
    Read {
        last: u64,
        events: Vec<u64>,
    },
    /// The registry's reply after a (re)connect: the backplane reads from the mirror's last.
    Registry,
}

struct Redis {
    last: u64,
    /// Events kept: the last `retained`.
    retained: u64,
}

impl Redis {
    fn read(&self, from: u64) -> Arrival {
        let oldest = self.last.saturating_sub(self.retained) + 1;
        let events = (from.max(oldest)..=self.last)
            .filter(|&s| s > 0)
            .take(PAGE + 1)
            .collect();
        Arrival::Read {
            last: self.last,
            events,
        }
    }
}

struct Seen {
    last: u64,
    reset_pending: bool,
    resets: usize,
}

impl Seen {
    fn take(&mut self, steps: Vec<Step>, reads: &mut VecDeque<u64>, seed: u64) {
        for step in steps {
            match step {
                Step::Deliver { seq, .. } => {
                    assert!(seq > self.last, "seed {seed}: {seq} after {}", self.last);
                    assert!(
                        seq == self.last + 1 || self.reset_pending,
                        "seed {seed}: {seq} after {} with no reset told",
                        self.last
                    );
                    self.last = seq;
                    self.reset_pending = false;
                }
                Step::Fetch { after, .. } => reads.push_back(after),
                Step::Reset { .. } => {
                    self.reset_pending = true;
                    self.resets += 1;
                }
                Step::Deleted => panic!("seed {seed}: no topic was deleted"),
            }
        }
    }
}

/// The backplane's handling of a read's reply for a mirror it follows (`follow::read_page`).
fn read_reply(m: &mut Mirror, last: u64, events: &[u64]) -> Vec<Step> {
    let events: Vec<(u64, &[u8])> = events.iter().map(|&s| (s, &b"{}"[..])).collect();
    let more = events.len() >= PAGE && events.last().is_some_and(|e| e.0 < last);
    m.expect(last);
    m.filled_page(b"e", &events, more)
}

/// One run; `retained` events kept by Redis, `max_held` by the mirror. Returns the resets told.
fn run(seed: u64, retained: u64, max_held: usize) -> usize {
    let mut rng = Rng(seed);
    let mut redis = Redis { last: 0, retained };
    let mut m = Mirror::new(b"e", 0, max_held);
    let mut seen = Seen {
        last: 0,
        reset_pending: false,
        resets: 0,
    };
    // The connection: what Redis has sent and the instance not yet read, and the reads it
    // has sent and Redis not yet run (in order: Redis runs them one after the other).
    let mut connected = true;
    let mut wire: VecDeque<Arrival> = VecDeque::new();
    let mut asked: VecDeque<u64> = VecDeque::new();
    let mut published = 0;
    let mut turns = 0;
    while published < 200 || !connected || !wire.is_empty() || !asked.is_empty() {
        turns += 1;
        assert!(turns < 100_000, "seed {seed}: never settles");
        match rng.next() % 8 {
            0..=2 if published < 200 => {
                published += 1;
                redis.last += 1;
                if connected {
                    wire.push_back(Arrival::Event(redis.last));
                }
            }
            3 => {
                if let Some(from) = asked.pop_front() {
                    wire.push_back(redis.read(from));
                }
            }
            4 | 5 => {
                let Some(arrival) = wire.pop_front() else {
                    continue;
                };
                let steps = match arrival {
                    Arrival::Event(seq) => m.on_message(&ChannelMessage::Event {
                        epoch: b"e",
                        seq,
                        event: b"{}",
                    }),
                    Arrival::Read { last, events } => read_reply(&mut m, last, &events),
                    Arrival::Registry => vec![Step::Fetch {
                        after: m.last(),
                        until: 0,
                    }],
                };
                seen.take(steps, &mut asked, seed);
            }
            6 if connected && rng.below(8) == 0 => {
                connected = false;
                wire.clear();
                asked.clear();
                m.connection_lost();
            }
            7 if !connected => {
                // Subscribed first, then the registry asked: events published from now on
                // come before its reply or after it.
                connected = true;
                wire.push_back(Arrival::Registry);
            }
            _ => {}
        }
    }
    assert_eq!(
        m.last(),
        redis.last,
        "seed {seed}: the mirror stopped short of Redis"
    );
    assert_eq!(seen.last, redis.last, "seed {seed}");
    seen.resets
}

#[test]
fn with_all_history_kept_every_event_is_delivered_once_in_order_whatever_is_lost() {
    for seed in 0..2_000 {
        // Nothing trimmed and room to hold everything: nothing may be told lost.
        assert_eq!(
            run(seed, 1_000, 1_000),
            0,
            "seed {seed}: a reset with nothing lost"
        );
    }
}

#[test]
fn with_history_trimmed_and_few_held_what_is_lost_is_told_and_the_rest_goes_on() {
    let resets: usize = (0..2_000).map(|seed| run(seed, 6, 3)).sum();
    // The bounds are small enough to be crossed: the runs above did reset.
    assert!(resets > 0);
}
