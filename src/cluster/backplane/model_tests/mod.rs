//! The whole backplane against a model of one Redis (`redis.rs`), over seeded random runs: the
//! commands it writes are decoded and run in order as Redis would, other instances publish,
//! delete and create topics, Redis restarts empty, pushes reach it while it is subscribed, its
//! bytes arrive in random pieces, and the connection is lost and made again. For every topic a
//! subscriber sees seqs in increasing order within an epoch, a skipped one or a new epoch only
//! after a reset, none told lost while history holds them; at every quiet moment the instance
//! holds exactly the topics Redis holds, each at its epoch and last seq; every publish, create
//! and delete of its own is answered once, with what the script gave it, and `Unavailable` only
//! when the connection was lost after it was taken.

mod redis;

use std::collections::HashMap;

use self::redis::{index, name, Redis, TOPICS};
use super::tests::backplane_with;
use super::*;
use crate::cluster::seeded::Rng;

#[derive(Default, Clone)]
struct Seen {
    /// The epoch subscribers know; `None` while the instance does not hold the topic.
    epoch: Option<String>,
    last: u64,
    /// Until the first event: a topic first followed starts at the oldest event Redis kept.
    started: bool,
    reset_pending: bool,
    /// The JSON of the event delivered as `last`.
    body: Vec<u8>,
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
    /// Creates and deletes asked and not yet answered: ticket → (topic, the epoch a create
    /// asks for, or `None` for a delete).
    changes: HashMap<u32, (usize, Option<String>)>,
    /// Connections lost so far, and for each request asked while the backplane took requests,
    /// how many had been lost then: `Unavailable` for it means one was lost since.
    losses: u64,
    taken: HashMap<u32, u64>,
    /// Whether other instances delete topics in this run.
    churn: bool,
}

impl Observed {
    fn take(&mut self, b: &mut Backplane<u32>, redis: &mut Redis, seed: u64) {
        while let Some(e) = b.next_event() {
            match e {
                Event::Deliver { topic, seq, event } => {
                    let seen = &mut self.topics[index(&topic)];
                    assert!(seen.epoch.is_some(), "seed {seed}: {topic} {seq} not held");
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
                    seen.body = event;
                    seen.started = true;
                    seen.reset_pending = false;
                }
                Event::Reset { topic, epoch } => {
                    let seen = &mut self.topics[index(&topic)];
                    assert!(seen.epoch.is_some(), "seed {seed}: {topic} reset, not held");
                    if seen.epoch.as_deref() != Some(&epoch) {
                        seen.epoch = Some(epoch);
                        seen.last = 0;
                    }
                    seen.reset_pending = true;
                    self.resets += 1;
                }
                Event::TopicCreated { name, epoch } => {
                    // The engine holds it from now on (as a reset when it held it already).
                    self.topics[index(&name)] = Seen {
                        epoch: Some(epoch),
                        ..Seen::default()
                    };
                }
                Event::TopicDeleted { name } => {
                    // Redis losing its data is not a deletion: the topics are made again.
                    assert!(self.churn, "seed {seed}: {name} told deleted");
                    self.topics[index(&name)] = Seen::default();
                }
                Event::Answer {
                    ticket,
                    outcome: Outcome::Unavailable,
                } if self.taken.get(&ticket).is_some_and(|&l| l == self.losses) => {
                    panic!("seed {seed}: ticket {ticket} unavailable with Redis there");
                }
                Event::Answer { ticket, outcome } if self.changes.contains_key(&ticket) => {
                    self.taken.remove(&ticket);
                    let (topic, epoch) = self.changes.remove(&ticket).unwrap();
                    match (epoch, outcome) {
                        (_, Outcome::Unavailable) => {}
                        (Some(asked), Outcome::Created { epoch }) => {
                            assert_eq!(epoch, asked, "seed {seed}");
                            assert_eq!(redis.made.get(&asked), Some(&true), "seed {seed}");
                        }
                        (Some(asked), Outcome::Exists) => {
                            assert_eq!(redis.made.get(&asked), Some(&false), "seed {seed}");
                        }
                        (None, outcome @ (Outcome::Deleted | Outcome::NotFound)) => {
                            // Deletes are answered in the order Redis ran them.
                            let (t, found) = redis.conn.unmade.pop_front().expect("a delete ran");
                            assert_eq!(t, topic, "seed {seed}");
                            assert_eq!(found, outcome == Outcome::Deleted, "seed {seed}");
                        }
                        (asked, other) => panic!("seed {seed}: {asked:?} {other:?}"),
                    }
                }
                Event::Answer { ticket, outcome } => {
                    self.taken.remove(&ticket);
                    let (topic, id) = self
                        .asked
                        .remove(&ticket)
                        .unwrap_or_else(|| panic!("seed {seed}: ticket {ticket} answered twice"));
                    let given = redis.given.get(&id).copied();
                    match outcome {
                        Outcome::Published { seq } => {
                            assert_eq!(given, Some(seq as i64), "seed {seed}: {id}");
                        }
                        Outcome::Duplicate { seq } => {
                            assert_eq!(given, Some(-(seq as i64)), "seed {seed}: {id}");
                        }
                        Outcome::NotFound => {
                            assert_eq!(given, Some(0), "seed {seed}: {id} {topic}");
                        }
                        Outcome::Unavailable => self.retry.push((topic, id)),
                        other => panic!("seed {seed}: {other:?}"),
                    }
                }
                _ => {}
            }
        }
    }

    /// A request about to be asked: whether the backplane takes it.
    fn ask(&mut self, ticket: u32, b: &Backplane<u32>) {
        if b.has_room() {
            self.taken.insert(ticket, self.losses);
        }
    }

    /// With nothing on its way either way, the instance is in step with Redis.
    fn in_step(&self, redis: &Redis, seed: u64) {
        for (t, (seen, stream)) in self.topics.iter().zip(&redis.streams).enumerate() {
            if stream.exists {
                assert_eq!(
                    (seen.epoch.as_deref(), seen.last),
                    (Some(stream.epoch.as_str()), stream.last),
                    "seed {seed}: t{t} not in step"
                );
                if seen.last > 0 {
                    let body = stream.bodies[seen.last as usize - 1].as_bytes();
                    assert_eq!(
                        seen.body, body,
                        "seed {seed}: t{t} another event at its seq"
                    );
                }
            } else {
                assert_eq!(seen.epoch, None, "seed {seed}: t{t} is gone");
            }
        }
    }
}

/// What may happen in a run besides publishes and lost connections.
#[derive(Clone, Copy)]
struct Faults {
    /// Topics deleted and created again by other instances.
    churn: bool,
    /// Redis restarted without persistence.
    restarts: bool,
    /// Redis restarted from a snapshot taken earlier.
    restores: bool,
}

/// One run with `retained` events kept by Redis and `max_held` by the instance; the resets
/// told.
fn run(seed: u64, retained: u64, max_held: usize, faults: Faults) -> usize {
    const PUBLISHES: u64 = 600;
    let mut rng = Rng(seed);
    let mut now = Instant::now();
    let mut b = backplane_with(retained as usize, max_held);
    let mut redis = Redis::new(retained);
    let mut seen = Observed {
        topics: vec![Seen::default(); TOPICS],
        churn: faults.churn,
        ..Observed::default()
    };
    let mut connected = false;
    let (mut published, mut tickets) = (0, 0u32);
    // Epochs of topics Redis lost, which other instances create again.
    let mut lost: Vec<(usize, String)> = Vec::new();
    for turn in 0.. {
        assert!(turn < 400_000, "seed {seed}: never settles");
        now += if connected {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(50)
        };
        let quiet = connected
            && b.state() == State::Up
            && b.in_flight() == 0
            && redis.conn.commands.is_empty()
            && redis.conn.wire.is_empty()
            && b.unwritten().is_empty();
        if quiet {
            seen.in_step(&redis, seed);
        }
        let answered = seen.asked.is_empty() && seen.retry.is_empty() && seen.changes.is_empty();
        if published >= PUBLISHES && quiet && answered {
            break;
        }
        let t = rng.below(TOPICS as u64) as usize;
        match rng.below(22) {
            // Another instance publishes.
            0 | 1 if published < PUBLISHES => {
                published += 1;
                redis.publish(t, format!("other-{published}"));
            }
            // This one: a new message, or one answered Unavailable again (as a client retries).
            2 | 3 if published < PUBLISHES || !seen.retry.is_empty() => {
                let (t, id) = match seen.retry.pop() {
                    Some(again) if rng.below(2) == 0 || published >= PUBLISHES => again,
                    other => {
                        seen.retry.extend(other);
                        published += 1;
                        (t, format!("own-{published}"))
                    }
                };
                tickets += 1;
                seen.asked.insert(tickets, (t, id.clone()));
                seen.ask(tickets, &b);
                b.publish(tickets, &name(t), &id, b"{".to_vec(), b"}".to_vec(), now);
            }
            4..=7 if connected => {
                redis.take_written(&mut b);
                redis.run_one();
            }
            8..=11 if connected && !redis.conn.wire.is_empty() => {
                let n = 1 + rng.below(redis.conn.wire.len() as u64) as usize;
                let bytes: Vec<u8> = redis.conn.wire.drain(..n).collect();
                if b.received(&bytes, now).is_err() {
                    panic!("seed {seed}: the model's bytes were refused");
                }
            }
            // A burst on one topic: gaps of several pages when it comes while away.
            12 if published < PUBLISHES && rng.below(16) == 0 => {
                for _ in 0..rng.below(80) {
                    published += 1;
                    redis.publish(t, format!("other-{published}"));
                }
            }
            13 if connected && rng.below(6) == 0 => {
                b.connection_lost(now);
                connected = false;
                seen.losses += 1;
                redis.conn = redis::Connection::new();
            }
            14 if faults.churn && rng.below(24) == 0 => redis.delete(t),
            15 if faults.churn && rng.below(4) == 0 => {
                redis.create(t, None);
            }
            16 if faults.restarts && rng.below(200) == 0 => {
                lost.extend(
                    (0..TOPICS)
                        .filter(|&t| redis.streams[t].exists)
                        .map(|t| (t, redis.streams[t].epoch.clone())),
                );
                let other_boot = (rng.below(2) == 0).then(|| rng.next());
                redis.restarted_empty(other_boot);
                if connected {
                    b.connection_lost(now);
                    connected = false;
                    seen.losses += 1;
                }
            }
            // Another instance, back after the restart, creates again a topic it followed.
            17 if !lost.is_empty() => {
                let (t, epoch) = lost.swap_remove(rng.below(lost.len() as u64) as usize);
                if let Some(again) = redis.recreated_epoch(&epoch) {
                    redis.create(t, Some(again));
                }
            }
            // This instance creates or deletes a topic (a REST request).
            18 if faults.churn && rng.below(8) == 0 => {
                tickets += 1;
                let epoch = format!("own-e{tickets}");
                seen.changes.insert(tickets, (t, Some(epoch.clone())));
                seen.ask(tickets, &b);
                b.create(tickets, &name(t), &epoch, now);
            }
            19 if faults.churn && rng.below(32) == 0 => {
                tickets += 1;
                seen.changes.insert(tickets, (t, None));
                seen.ask(tickets, &b);
                b.delete(tickets, &name(t), now);
            }
            20 if faults.restores && rng.below(100) == 0 => redis.save(),
            21 if faults.restores && rng.below(200) == 0 => {
                // Only once a snapshot was taken: the restart drops the connection.
                let restarted = redis.restored();
                if restarted && connected {
                    b.connection_lost(now);
                    connected = false;
                    seen.losses += 1;
                }
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
        seen.take(&mut b, &mut redis, seed);
    }
    seen.resets
}

/// Runs of each test below.
const SEEDS: u64 = 200;

const CALM: Faults = Faults {
    churn: false,
    restarts: false,
    restores: false,
};

#[test]
fn with_all_history_kept_every_event_is_delivered_once_in_order_whatever_is_lost() {
    for seed in 0..SEEDS {
        assert_eq!(
            run(seed, 10_000, 10_000, CALM),
            0,
            "seed {seed}: a reset with nothing lost"
        );
    }
}

#[test]
fn with_history_trimmed_and_few_held_what_is_lost_is_told_and_the_rest_goes_on() {
    let resets: usize = (0..SEEDS).map(|seed| run(seed, 8, 3, CALM)).sum();
    assert!(resets > 0, "the bounds were never crossed");
}

#[test]
fn redis_restarted_empty_gives_every_topic_followed_a_new_epoch_never_a_deletion() {
    let faults = Faults {
        restarts: true,
        ..CALM
    };
    let resets: usize = (0..SEEDS).map(|seed| run(seed, 50, 20, faults)).sum();
    assert!(resets > 0, "no restart was told");
}

#[test]
fn topics_deleted_and_created_again_and_redis_restarted_empty_are_followed() {
    let faults = Faults {
        churn: true,
        restarts: true,
        restores: true,
    };
    let resets: usize = (0..SEEDS).map(|seed| run(seed, 50, 20, faults)).sum();
    assert!(resets > 0, "no restart was told");
}

#[test]
fn redis_back_with_older_data_gives_the_topics_a_new_epoch_and_every_event_again() {
    let faults = Faults {
        restores: true,
        ..CALM
    };
    let resets: usize = (0..SEEDS).map(|seed| run(seed, 50, 20, faults)).sum();
    assert!(resets > 0, "no restore was told");
}
