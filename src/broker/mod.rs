//! The pub/sub broker: topics by name, subscriptions indexed both ways (topic → connections and
//! connection → topics), history rings and publish. Pure: it never touches a socket or decides
//! a connection's fate; it returns who must receive what and the caller delivers.

mod cluster;
mod topic;

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use slab::Slab;

pub use crate::ids::ConnId;
use crate::ids::{Replay, TopicName};
pub use topic::{StoredEvent, Topic};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerLimits {
    pub max_topics: usize,
    pub max_subscribers_per_topic: usize,
    pub history_size: usize,
    /// Bytes of retained frames per topic.
    pub history_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    TopicExists(String),
    TopicNotFound(String),
    TopicLimit(usize),
    SubscriberLimit(usize),
    NotSubscribed(String),
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::TopicExists(t) => write!(f, "topic '{t}' already exists"),
            BrokerError::TopicNotFound(t) => write!(f, "topic '{t}' does not exist"),
            BrokerError::TopicLimit(max) => {
                write!(f, "the server already holds its maximum of {max} topics")
            }
            BrokerError::SubscriberLimit(max) => {
                write!(f, "the topic already has its maximum of {max} subscribers")
            }
            BrokerError::NotSubscribed(t) => {
                write!(f, "this connection is not subscribed to topic '{t}'")
            }
        }
    }
}

/// What a subscribe did.
#[derive(Debug)]
pub struct Subscribed {
    /// False when the connection was already subscribed (nothing changed but the replay).
    pub newly: bool,
    /// Frames to send before any live event, oldest first.
    pub replay: Vec<Rc<[u8]>>,
    /// The seq of the latest event at the time of subscribing.
    pub last_seq: u64,
    /// For `since_seq`: whether every event after it was still held, and the oldest one held.
    pub recovered: Option<bool>,
    pub first_seq: u64,
    /// The topic's epoch, for the client to resume with.
    pub epoch: Rc<str>,
}

/// What a publish did: the event's seq, its frame, and every subscriber to deliver it to.
#[derive(Debug)]
pub struct Published<'a> {
    pub seq: u64,
    pub frame: Rc<[u8]>,
    pub subscribers: &'a [ConnId],
}

/// What a publish did: a new event, or nothing because the topic holds one with its id.
#[derive(Debug)]
pub enum Publish<'a> {
    New(Published<'a>),
    Duplicate { seq: u64 },
}

#[derive(Debug)]
pub struct Broker {
    limits: BrokerLimits,
    topics: Slab<Topic>,
    by_name: HashMap<Rc<str>, usize>,
    /// Each connection's topics (slab keys); an entry exists only while the list is not empty.
    by_conn: HashMap<ConnId, Vec<usize>>,
    subscriptions: usize,
}

impl Broker {
    pub fn new(limits: BrokerLimits) -> Broker {
        Broker {
            limits,
            topics: Slab::new(),
            by_name: HashMap::new(),
            by_conn: HashMap::new(),
            subscriptions: 0,
        }
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Subscriptions across all topics (a connection on two topics counts twice).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    pub fn topics_of(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, Vec::len)
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<&Topic> {
        let mut all: Vec<&Topic> = self.topics.iter().map(|(_, t)| t).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.by_name.get(name).map(|&k| &self.topics[k])
    }

    /// Creates a topic; `epoch` names this incarnation of it (unique among all the topics of
    /// that name the server ever had).
    pub fn create_topic(&mut self, name: &TopicName<'_>, epoch: &str) -> Result<(), BrokerError> {
        let name = name.as_str();
        if self.by_name.contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        if self.topics.len() >= self.limits.max_topics {
            return Err(BrokerError::TopicLimit(self.limits.max_topics));
        }
        let name: Rc<str> = Rc::from(name);
        let key = self.topics.insert(Topic::new(
            name.clone(),
            Rc::from(epoch),
            self.limits.history_size,
            self.limits.history_bytes,
        ));
        self.by_name.insert(name, key);
        Ok(())
    }

    /// Deletes a topic and returns its former subscribers (to be told).
    pub fn delete_topic(&mut self, name: &str) -> Result<Vec<ConnId>, BrokerError> {
        let key = self
            .by_name
            .remove(name)
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_string()))?;
        let mut topic = self.topics.remove(key);
        let subscribers = topic.drain_subscribers();
        for &conn in &subscribers {
            self.forget(conn, key);
        }
        Ok(subscribers)
    }

    fn key(&self, name: &str) -> Result<usize, BrokerError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_string()))
    }

    /// Subscribes `conn`; a `since_seq` resume that names another `epoch` than the topic's
    /// (it was remembered from an earlier incarnation) replays the whole ring as not recovered.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        name: &str,
        replay: Replay,
        epoch: Option<&str>,
    ) -> Result<Subscribed, BrokerError> {
        let key = self.key(name)?;
        let topic = &mut self.topics[key];
        let newly = !topic.is_subscribed(conn);
        if newly && topic.subscribers().len() >= self.limits.max_subscribers_per_topic {
            return Err(BrokerError::SubscriberLimit(
                self.limits.max_subscribers_per_topic,
            ));
        }
        let frames =
            |it: &mut dyn Iterator<Item = &StoredEvent>| it.map(|e| e.frame.clone()).collect();
        let last_seq = topic.last_seq();
        let first_seq = topic.first_retained_seq();
        let (replay, recovered) = match replay {
            Replay::None => (Vec::new(), None),
            Replay::LastN(n) => (frames(&mut topic.last_n(n)), None),
            Replay::SinceSeq(_) if epoch.is_some_and(|e| e != &*topic.epoch) => {
                (frames(&mut topic.since(0)), Some(false))
            }
            Replay::SinceSeq(s) => {
                let recovered = s <= last_seq && s + 1 >= first_seq;
                (frames(&mut topic.since(s)), Some(recovered))
            }
        };
        if newly {
            topic.add(conn);
            self.by_conn.entry(conn).or_default().push(key);
            self.subscriptions += 1;
        }
        Ok(Subscribed {
            newly,
            replay,
            last_seq,
            recovered,
            first_seq,
            epoch: topic.epoch.clone(),
        })
    }

    pub fn unsubscribe(&mut self, conn: ConnId, name: &str) -> Result<(), BrokerError> {
        let key = self.key(name)?;
        if !self.topics[key].remove(conn) {
            return Err(BrokerError::NotSubscribed(name.to_string()));
        }
        self.forget(conn, key);
        Ok(())
    }

    /// Removes a connection from every topic it is on: O(its topics).
    pub fn disconnect(&mut self, conn: ConnId) {
        let Some(keys) = self.by_conn.remove(&conn) else {
            return;
        };
        for key in keys {
            if self.topics[key].remove(conn) {
                self.subscriptions -= 1;
            }
        }
    }

    fn forget(&mut self, conn: ConnId, key: usize) {
        self.subscriptions -= 1;
        if let Some(keys) = self.by_conn.get_mut(&conn) {
            if let Some(i) = keys.iter().position(|&k| k == key) {
                keys.swap_remove(i);
            }
            if keys.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
    }

    /// Records an event whose frame `encode` builds from its seq, and returns who receives it;
    /// unless the topic still retains an event with message id `id`, whose seq is returned.
    pub fn publish(
        &mut self,
        name: &str,
        id: u128,
        encode: impl FnOnce(u64) -> Rc<[u8]>,
    ) -> Result<Publish<'_>, BrokerError> {
        let key = self.key(name)?;
        let topic = &mut self.topics[key];
        if let Some(seq) = topic.seq_of(id) {
            return Ok(Publish::Duplicate { seq });
        }
        let frame = encode(topic.next_seq());
        let seq = topic.record(id, frame.clone());
        Ok(Publish::New(Published {
            seq,
            frame,
            subscribers: topic.subscribers(),
        }))
    }

    /// Checks that both indexes agree and the counts are right (tests and fuzzing).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut total = 0;
        for (key, topic) in &self.topics {
            if self.by_name.get(&topic.name) != Some(&key) {
                return Err(format!("topic {} missing from the name index", topic.name));
            }
            if !topic.ids_match_history() {
                return Err(format!("topic {}: message ids out of step", topic.name));
            }
            if topic.history_len() > self.limits.history_size
                || topic.history_bytes() > self.limits.history_bytes
            {
                return Err(format!(
                    "topic {} holds more history than allowed",
                    topic.name
                ));
            }
            for conn in topic.subscribers() {
                if !self
                    .by_conn
                    .get(conn)
                    .is_some_and(|keys| keys.contains(&key))
                {
                    return Err(format!(
                        "conn {conn} on {} but not in the connection index",
                        topic.name
                    ));
                }
            }
            total += topic.subscribers().len();
        }
        for (conn, keys) in &self.by_conn {
            if keys.is_empty() {
                return Err(format!("conn {conn} has an empty entry"));
            }
            for key in keys {
                if !self
                    .topics
                    .get(*key)
                    .is_some_and(|t| t.is_subscribed(*conn))
                {
                    return Err(format!(
                        "conn {conn} indexed on topic {key} it is not subscribed to"
                    ));
                }
            }
        }
        if self.by_name.len() != self.topics.len() || total != self.subscriptions {
            return Err("counts disagree".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: usize) -> ConnId {
        ConnId::new(n, 0)
    }

    fn create(b: &mut Broker, name: &str) -> Result<(), BrokerError> {
        b.create_topic(&TopicName::new(name).unwrap(), &format!("{name}-1"))
    }

    fn broker() -> Broker {
        Broker::new(BrokerLimits {
            max_topics: 3,
            max_subscribers_per_topic: 2,
            history_size: 4,
            history_bytes: usize::MAX,
        })
    }

    fn publish(b: &mut Broker, topic: &str) -> (u64, Vec<ConnId>) {
        let id = b.topic(topic).map_or(0, |t| t.next_seq() as u128);
        let Publish::New(p) = b
            .publish(topic, id, |seq| Rc::from(seq.to_string().into_bytes()))
            .unwrap()
        else {
            panic!("a new id taken for a duplicate");
        };
        assert_eq!(&*p.frame, p.seq.to_string().as_bytes());
        (p.seq, p.subscribers.to_vec())
    }

    #[test]
    fn a_publish_with_a_retained_id_is_not_published_again() {
        let mut b = broker();
        create(&mut b, "a").unwrap();
        let encode = |seq: u64| Rc::from(seq.to_string().into_bytes());
        assert!(matches!(b.publish("a", 42, encode), Ok(Publish::New(p)) if p.seq == 1));
        assert!(matches!(b.publish("a", 43, encode), Ok(Publish::New(p)) if p.seq == 2));
        assert!(matches!(
            b.publish("a", 42, encode),
            Ok(Publish::Duplicate { seq: 1 })
        ));
        assert_eq!(b.topic("a").unwrap().last_seq(), 2, "nothing recorded");
        // History holds four: once 42 is evicted, the id is new again.
        for id in 44..48 {
            b.publish("a", id, encode).unwrap();
        }
        assert!(matches!(b.publish("a", 42, encode), Ok(Publish::New(p)) if p.seq == 7));
    }

    #[test]
    fn create_delete_and_limits() {
        let mut b = broker();
        create(&mut b, "a").unwrap();
        assert_eq!(
            create(&mut b, "a"),
            Err(BrokerError::TopicExists("a".into()))
        );
        create(&mut b, "b").unwrap();
        create(&mut b, "c").unwrap();
        assert_eq!(create(&mut b, "d"), Err(BrokerError::TopicLimit(3)));
        assert_eq!(
            b.topics().iter().map(|t| &*t.name).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        b.subscribe(c(1), "a", Replay::None, None).unwrap();
        b.subscribe(c(2), "a", Replay::None, None).unwrap();
        assert_eq!(
            b.subscribe(c(3), "a", Replay::None, None).unwrap_err(),
            BrokerError::SubscriberLimit(2)
        );
        let mut gone = b.delete_topic("a").unwrap();
        gone.sort();
        assert_eq!(gone, [c(1), c(2)]);
        assert_eq!(b.subscription_count(), 0);
        assert_eq!(
            b.delete_topic("a"),
            Err(BrokerError::TopicNotFound("a".into()))
        );
        b.check_invariants().unwrap();
    }

    #[test]
    fn fan_out_reaches_every_subscriber_once() {
        let mut b = broker();
        create(&mut b, "a").unwrap();
        create(&mut b, "b").unwrap();
        assert!(b.subscribe(c(1), "a", Replay::None, None).unwrap().newly);
        assert!(!b.subscribe(c(1), "a", Replay::None, None).unwrap().newly);
        b.subscribe(c(2), "a", Replay::None, None).unwrap();
        b.subscribe(c(2), "b", Replay::None, None).unwrap();
        let (seq, mut to) = publish(&mut b, "a");
        to.sort();
        assert_eq!((seq, to), (1, vec![c(1), c(2)]));
        assert_eq!(publish(&mut b, "b"), (1, vec![c(2)]));
        assert_eq!(b.subscription_count(), 3);
        b.disconnect(c(2));
        assert_eq!(publish(&mut b, "a"), (2, vec![c(1)]));
        assert_eq!(
            b.unsubscribe(c(1), "b"),
            Err(BrokerError::NotSubscribed("b".into()))
        );
        b.unsubscribe(c(1), "a").unwrap();
        assert_eq!(b.subscription_count(), 0);
        assert_eq!(b.topics_of(c(1)), 0);
        b.check_invariants().unwrap();
    }

    #[test]
    fn replay_and_resume() {
        let mut b = Broker::new(BrokerLimits {
            max_topics: 1,
            max_subscribers_per_topic: 10,
            history_size: 4,
            history_bytes: usize::MAX,
        });
        create(&mut b, "a").unwrap();
        for _ in 0..6 {
            publish(&mut b, "a");
        }
        let text = |s: &Subscribed| {
            s.replay
                .iter()
                .map(|f| String::from_utf8(f.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        let s = b.subscribe(c(1), "a", Replay::LastN(2), None).unwrap();
        assert_eq!(
            (text(&s), s.last_seq),
            (vec!["5".to_string(), "6".into()], 6)
        );
        let s = b
            .subscribe(c(2), "a", Replay::LastN(1_000_000_000), None)
            .unwrap();
        assert_eq!(text(&s), ["3", "4", "5", "6"]);
        let s = b.subscribe(c(3), "a", Replay::SinceSeq(4), None).unwrap();
        assert_eq!(
            (text(&s), s.recovered),
            (vec!["5".to_string(), "6".into()], Some(true))
        );
        let s = b.subscribe(c(4), "a", Replay::SinceSeq(1), None).unwrap();
        assert_eq!(
            (text(&s).len(), s.recovered, s.first_seq),
            (4, Some(false), 3)
        );
        let s = b.subscribe(c(5), "a", Replay::SinceSeq(2), None).unwrap();
        assert_eq!(s.recovered, Some(true));
        let s = b.subscribe(c(6), "a", Replay::SinceSeq(6), None).unwrap();
        assert_eq!((text(&s).len(), s.recovered), (0, Some(true)));
    }
}
