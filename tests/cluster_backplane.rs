//! Two instances' backplanes against one real redis-server, each driven over its own unix
//! socket as the loop would drive it: topics appear everywhere, events reach both in seq order
//! (an instance's own before the reply that published it), retries are duplicates, an instance
//! that lost its connection fills what it missed from the history when it is back, requests
//! without Redis are answered `Unavailable`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::redis::Redis;
use pubsub::cluster::backplane::{Backplane, Event, Outcome, Settings, State};
use pubsub::cluster::link::LinkLimits;

struct Instance {
    bp: Backplane<u32>,
    socket: Option<UnixStream>,
    /// Every event taken so far, in order.
    seen: Vec<Event<u32>>,
}

fn settings() -> Settings {
    Settings {
        max_topics: 3,
        history_size: 100,
        history_bytes: 1 << 20,
        max_held: 100,
        link: LinkLimits::default(),
    }
}

impl Instance {
    fn connect(redis: &Redis) -> Instance {
        let mut i = Instance {
            bp: Backplane::new(
                settings(),
                pubsub::cluster::url::RedisUrl::parse(&format!(
                    "unix://{}",
                    redis.socket.display()
                ))
                .unwrap(),
                Instant::now(),
            ),
            socket: None,
            seen: Vec::new(),
        };
        i.reconnect(redis);
        i.until("connected", |seen| seen.contains(&Event::Up));
        i
    }

    fn reconnect(&mut self, redis: &Redis) {
        let s = UnixStream::connect(&redis.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        self.socket = Some(s);
        self.bp.connected(Instant::now());
    }

    fn drop_connection(&mut self) {
        self.socket = None;
        self.bp.connection_lost(Instant::now());
    }

    /// Moves bytes both ways once.
    fn pump(&mut self) {
        let now = Instant::now();
        if let Some(s) = self.socket.as_mut() {
            while !self.bp.unwritten().is_empty() {
                match s.write(self.bp.unwritten()) {
                    Ok(n) => self.bp.wrote(n),
                    Err(_) => return self.drop_connection(),
                }
            }
            let mut buf = [0u8; 16 * 1024];
            match s.read(&mut buf) {
                Ok(0) => self.drop_connection(),
                Ok(n) => self.bp.received(&buf[..n], now).expect("valid replies"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.drop_connection(),
            }
        }
        self.bp.tick(now);
        while let Some(e) = self.bp.next_event() {
            self.seen.push(e);
        }
    }

    fn until(&mut self, what: &str, cond: impl Fn(&[Event<u32>]) -> bool) {
        let deadline = Instant::now() + common::TIMEOUT;
        while !cond(&self.seen) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.seen
            );
            self.pump();
        }
    }

    fn answer(&mut self, ticket: u32) -> Outcome {
        self.until("the answer", |seen| {
            seen.iter()
                .any(|e| matches!(e, Event::Answer { ticket: t, .. } if *t == ticket))
        });
        self.seen
            .iter()
            .find_map(|e| match e {
                Event::Answer { ticket: t, outcome } if *t == ticket => Some(outcome.clone()),
                _ => None,
            })
            .unwrap()
    }

    fn publish(&mut self, ticket: u32, topic: &str, id: &str) {
        let head = format!(
            r#"{{"type":"event","topic":"{topic}","message":{{"id":"{id}","payload":{ticket}}},"seq":"#
        );
        self.bp.publish(
            ticket,
            topic,
            id,
            head.into_bytes(),
            br#","ts":"2026-12-02T00:00:00.000Z"}"#.to_vec(),
            Instant::now(),
        );
    }

    fn delivered(&self, topic: &str) -> Vec<u64> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Deliver { topic: t, seq, .. } if t == topic => Some(*seq),
                _ => None,
            })
            .collect()
    }
}

fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

#[test]
fn two_instances_share_topics_seqs_and_history_and_one_catches_up_after_losing_redis() {
    let Some(redis) = Redis::start() else { return };
    let mut a = Instance::connect(&redis);
    let mut b = Instance::connect(&redis);
    a.bp.create(1, "t", "ep1", Instant::now());
    assert_eq!(
        a.answer(1),
        Outcome::Created {
            epoch: "ep1".into()
        }
    );
    b.until("the topic on b", |seen| {
        seen.contains(&Event::TopicCreated {
            name: "t".into(),
            epoch: "ep1".into(),
        })
    });
    a.bp.create(2, "t", "ep9", Instant::now());
    assert_eq!(a.answer(2), Outcome::Exists);
    // Three publishes on a: acknowledged with their seqs, delivered on both in order, and on a
    // each event before its own answer.
    for n in 10..13 {
        a.publish(n, "t", &id(n));
    }
    for (n, seq) in (10..13).zip(1..) {
        assert_eq!(a.answer(n), Outcome::Published { seq });
        let event_at = a
            .seen
            .iter()
            .position(|e| matches!(e, Event::Deliver { seq: s, .. } if *s == seq));
        let answer_at = a
            .seen
            .iter()
            .position(|e| matches!(e, Event::Answer { ticket, .. } if *ticket == n));
        assert!(event_at < answer_at, "own event first: {:?}", a.seen);
    }
    b.until("three events on b", |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Deliver { .. }))
            .count()
            == 3
    });
    assert_eq!(b.delivered("t"), [1, 2, 3]);
    // A retry of the second is a duplicate.
    a.publish(20, "t", &id(11));
    assert_eq!(a.answer(20), Outcome::Duplicate { seq: 2 });
    // b loses Redis; a publishes two more meanwhile; b back: it reads what it missed.
    b.drop_connection();
    assert!(matches!(b.bp.state(), State::Down { .. }));
    b.publish(30, "t", &id(30));
    b.pump();
    assert_eq!(b.answer(30), Outcome::Unavailable);
    for n in 40..42 {
        a.publish(n, "t", &id(n));
        a.answer(n);
    }
    b.reconnect(&redis);
    b.until("the missed events", |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Deliver { .. }))
            .count()
            == 5
    });
    assert_eq!(
        b.delivered("t"),
        [1, 2, 3, 4, 5],
        "nothing lost, nothing twice"
    );
    // A fresh instance gets the history as the topic's ring, then live events.
    let mut c = Instance::connect(&redis);
    c.until("the history", |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Deliver { .. }))
            .count()
            == 5
    });
    a.publish(50, "t", &id(50));
    assert_eq!(a.answer(50), Outcome::Published { seq: 6 });
    c.until("a live event", |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Deliver { .. }))
            .count()
            == 6
    });
    assert_eq!(c.delivered("t"), [1, 2, 3, 4, 5, 6]);
    // Deletion reaches everyone after the last event.
    a.bp.delete(60, "t", Instant::now());
    assert_eq!(a.answer(60), Outcome::Deleted);
    for i in [&mut b, &mut c] {
        i.until("the deletion", |seen| {
            seen.contains(&Event::TopicDeleted { name: "t".into() })
        });
        let last_event = i
            .seen
            .iter()
            .rposition(|e| matches!(e, Event::Deliver { .. }));
        let deleted = i
            .seen
            .iter()
            .position(|e| *e == Event::TopicDeleted { name: "t".into() });
        assert!(last_event < deleted);
    }
}

#[test]
fn topics_are_bounded_cluster_wide_and_requests_without_redis_are_unavailable() {
    let Some(redis) = Redis::start() else { return };
    let mut a = Instance::connect(&redis);
    let mut b = Instance::connect(&redis);
    for (n, name) in ["x", "y", "z"].iter().enumerate() {
        let i = if n % 2 == 0 { &mut a } else { &mut b };
        i.bp.create(n as u32, name, "e", Instant::now());
        assert_eq!(i.answer(n as u32), Outcome::Created { epoch: "e".into() });
    }
    b.bp.create(9, "w", "e", Instant::now());
    assert_eq!(
        b.answer(9),
        Outcome::Limit,
        "three topics across both instances"
    );
    // Redis gone: the request waiting is answered when its reply is overdue.
    drop(redis);
    a.publish(10, "x", &id(10));
    a.until("the link given up", |seen| {
        seen.contains(&Event::Down)
            || seen
                .iter()
                .any(|e| matches!(e, Event::Answer { ticket: 10, .. }))
    });
    a.until("the publish answered", |seen| {
        seen.iter()
            .any(|e| matches!(e, Event::Answer { ticket: 10, .. }))
    });
    assert_eq!(a.answer(10), Outcome::Unavailable);
}
