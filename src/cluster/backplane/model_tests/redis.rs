//! The model of Redis the backplane's model check runs against: the keys the scripts keep (the
//! registry, each topic's seq, history and message ids, the data set's identity), what other
//! instances do to them, and one connection's view (subscriptions, commands in order, replies
//! and pushes in the order Redis would write them).

use std::collections::{HashMap, VecDeque};

use super::super::Backplane;
use crate::resp::{self, Decoder, Value};

fn bulk(b: impl AsRef<[u8]>) -> Value {
    Value::Bulk(b.as_ref().to_vec())
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub const TOPICS: usize = 6;

pub fn name(topic: usize) -> String {
    format!("t{topic}")
}

pub fn index(name: &str) -> usize {
    name[1..].parse().unwrap_or_else(|_| panic!("topic {name}"))
}

/// One topic name as Redis holds it.
#[derive(Default, Clone)]
pub struct Stream {
    pub exists: bool,
    pub epoch: String,
    pub last: u64,
    /// Message id → seq, of every event of this incarnation (only those still retained count
    /// as duplicates).
    ids: HashMap<String, u64>,
    /// Each event's JSON, by seq from 1: no two alike, so another event at a seq shows.
    pub bodies: Vec<String>,
}

/// One connection: what it is subscribed to, and the bytes each way.
pub struct Connection {
    control: bool,
    channels: bool,
    /// What Redis sent and the backplane has not read.
    pub wire: Vec<u8>,
    /// Commands written and not yet run.
    pub commands: VecDeque<Vec<Vec<u8>>>,
    /// The deletes run whose replies were sent, in order: the topic, and whether it was found.
    pub unmade: VecDeque<(usize, bool)>,
    decoder: Decoder,
    unparsed: Vec<u8>,
}

impl Connection {
    pub fn new() -> Connection {
        Connection {
            control: false,
            channels: false,
            wire: Vec::new(),
            commands: VecDeque::new(),
            unmade: VecDeque::new(),
            decoder: Decoder::new(resp::Limits::default()),
            unparsed: Vec::new(),
        }
    }

    fn send(&mut self, v: &Value) {
        resp::encode(&mut self.wire, v);
    }

    fn push(&mut self, parts: &[&str]) {
        self.send(&Value::Push(parts.iter().map(bulk).collect()));
    }
}

pub struct Redis {
    pub streams: Vec<Stream>,
    retained: u64,
    boot: Option<String>,
    epochs_made: u64,
    events_made: u64,
    /// What an RDB snapshot taken earlier holds: the topics and the data set's identity.
    snapshot: Option<(Vec<Stream>, Option<String>)>,
    /// What the last run of a publish script answered for each message id.
    pub given: HashMap<String, i64>,
    /// Whether this instance's create asking for each epoch made the topic.
    pub made: HashMap<String, bool>,

    pub conn: Connection,
}

impl Redis {
    /// Every topic created by some instance, under its first epoch.
    pub fn new(retained: u64) -> Redis {
        let mut streams = vec![Stream::default(); TOPICS];
        for s in &mut streams {
            s.exists = true;
            s.epoch = "e1".to_string();
        }
        Redis {
            streams,
            retained,
            boot: Some("0123456789abcdef".to_string()),
            epochs_made: 1,
            events_made: 0,
            snapshot: None,
            given: HashMap::new(),
            made: HashMap::new(),
            conn: Connection::new(),
        }
    }

    pub fn take_written(&mut self, b: &mut Backplane<u32>) {
        let c = &mut self.conn;
        let n = b.unwritten().len();
        c.unparsed.extend_from_slice(b.unwritten());
        b.wrote(n);
        loop {
            let (used, value) = c.decoder.decode(&c.unparsed).expect("commands decode");
            c.unparsed.drain(..used);
            let Some(Value::Array(parts)) = value else {
                break;
            };
            let parts = parts.iter().map(|p| p.as_bytes().unwrap().to_vec());
            c.commands.push_back(parts.collect());
        }
    }

    fn oldest(&self, topic: usize) -> u64 {
        self.streams[topic].last.saturating_sub(self.retained) + 1
    }

    /// A publish by anyone: the next seq (pushed to the connection when it follows the
    /// channels), minus the retained seq of its message id, or 0 for a topic that is not.
    pub fn publish(&mut self, topic: usize, id: String) -> i64 {
        if !self.streams[topic].exists {
            return 0;
        }
        if let Some(&seq) = self.streams[topic].ids.get(&id) {
            if seq >= self.oldest(topic) {
                return -(seq as i64);
            }
        }
        self.events_made += 1;
        let s = &mut self.streams[topic];
        s.last += 1;
        s.ids.insert(id, s.last);
        let body = format!("{{\"n\":{}}}", self.events_made);
        s.bodies.push(body.clone());
        let (seq, epoch) = (s.last, s.epoch.clone());
        if self.conn.channels {
            let channel = format!("{{ps}}:c:{}", name(topic));
            let message = format!("{epoch}:{seq}:{body}");
            self.conn
                .push(&["pmessage", "{ps}:c:*", &channel, &message]);
        }
        seq as i64
    }

    /// Another instance deletes the topic: the marker after its last event, then the control
    /// channel's word.
    pub fn delete(&mut self, topic: usize) {
        if !self.streams[topic].exists {
            return;
        }
        let epoch = std::mem::take(&mut self.streams[topic].epoch);
        self.streams[topic] = Stream::default();
        if self.conn.channels {
            let channel = format!("{{ps}}:c:{}", name(topic));
            self.conn
                .push(&["pmessage", "{ps}:c:*", &channel, &format!("{epoch}:0:D")]);
        }
        if self.conn.control {
            let word = format!("deleted:{epoch}:{}", name(topic));
            self.conn.push(&["message", "{ps}:ctl", &word]);
        }
    }

    /// Someone creates the topic under `epoch` (a new one when `None`), unless it exists.
    pub fn create(&mut self, topic: usize, epoch: Option<String>) -> bool {
        if self.streams[topic].exists {
            return false;
        }
        let epoch = epoch.unwrap_or_else(|| {
            self.epochs_made += 1;
            format!("e{}", self.epochs_made)
        });
        self.streams[topic] = Stream {
            exists: true,
            epoch: epoch.clone(),
            ..Stream::default()
        };
        if self.conn.control {
            let word = format!("created:{epoch}:{}", name(topic));
            self.conn.push(&["message", "{ps}:ctl", &word]);
        }
        true
    }

    /// Redis restarted without persistence: nothing kept, the connection gone. `other_boot`:
    /// another instance was back first and set the data set's identity.
    pub fn restarted_empty(&mut self, other_boot: Option<u64>) {
        for s in &mut self.streams {
            *s = Stream::default();
        }
        self.boot = other_boot.map(|b| format!("{b:016x}"));
        self.conn = Connection::new();
    }

    /// A snapshot of everything, as `SAVE` writes it.
    pub fn save(&mut self) {
        self.snapshot = Some((self.streams.clone(), self.boot.clone()));
    }

    /// Redis restarted from the snapshot: the topics as they were then (same epochs, fewer or
    /// other events), the connection gone. False when there is no snapshot.
    pub fn restored(&mut self) -> bool {
        let Some((streams, boot)) = self.snapshot.clone() else {
            return false;
        };
        self.streams = streams;
        self.boot = boot;
        self.conn = Connection::new();
        true
    }

    /// The epoch an instance that followed `epoch` gives a topic it creates again after Redis
    /// lost its data (`follow::on_boot`).
    pub fn recreated_epoch(&self, epoch: &str) -> Option<String> {
        let boot = self.boot.as_ref()?;
        Some(format!("{epoch}.{}", &boot[..8]))
    }

    pub fn run_one(&mut self) {
        let Some(c) = self.conn.commands.pop_front() else {
            return;
        };
        let command = text(&c[0]).to_ascii_uppercase();
        let keys = c.get(2).map(|k| text(k));
        let reply = match (command.as_str(), keys.as_deref(), c.len()) {
            ("HELLO", ..) => Value::Map(Vec::new()),
            ("SELECT" | "PING", ..) => Value::Simple(b"OK".to_vec()),
            ("SCRIPT", ..) => bulk("sha"),
            ("SUBSCRIBE", ..) => {
                self.conn.control = true;
                Value::Push(vec![bulk("subscribe"), bulk(&c[1]), Value::Integer(1)])
            }
            ("PSUBSCRIBE", ..) => {
                self.conn.channels = true;
                Value::Push(vec![bulk("psubscribe"), bulk(&c[1]), Value::Integer(2)])
            }
            ("SET", ..) if self.boot.is_none() => {
                self.boot = Some(text(&c[2]));
                Value::Simple(b"OK".to_vec())
            }
            ("SET", ..) => Value::Null,
            ("GET", ..) => self.boot.as_ref().map_or(Value::Null, bulk),
            ("HGETALL", ..) => Value::Map(
                (0..TOPICS)
                    .filter(|&t| self.streams[t].exists)
                    .map(|t| (bulk(name(t)), bulk(&self.streams[t].epoch)))
                    .collect(),
            ),
            // READ: <registry> <meta> <history>, <topic> <from> <count>.
            ("EVALSHA", Some("3"), 9) => self.read(index(&text(&c[6])), &c[7], &c[8]),
            // RENEW: <registry> <meta> <history>, <topic> <epoch seen> <new epoch> <channel>.
            ("EVALSHA", Some("3"), 10) => {
                let t = index(&text(&c[6]));
                let s = &mut self.streams[t];
                if !s.exists {
                    Value::Array(vec![Value::Integer(0)])
                } else {
                    if s.epoch == text(&c[7]) {
                        s.epoch = text(&c[8]);
                        if self.conn.channels {
                            let marker = format!("{}:0:R", s.epoch);
                            let channel = text(&c[9]);
                            self.conn.push(&["pmessage", "{ps}:c:*", &channel, &marker]);
                        }
                    }
                    Value::Array(vec![Value::Integer(1), bulk(&self.streams[t].epoch)])
                }
            }
            // CREATE: four keys, <topic> <epoch> <max topics>.
            ("EVALSHA", Some("4"), 10) => {
                let epoch = text(&c[8]);
                let made = self.create(index(&text(&c[7])), Some(epoch.clone()));
                self.made.insert(epoch.clone(), made);
                if made {
                    Value::Array(vec![Value::Integer(1), bulk(epoch)])
                } else {
                    Value::Array(vec![Value::Integer(0), bulk("exists")])
                }
            }
            // DELETE: four keys, <topic> <channel>.
            ("EVALSHA", Some("4"), 9) => {
                let t = index(&text(&c[7]));
                let found = self.streams[t].exists;
                self.conn.unmade.push_back((t, found));
                if found {
                    let epoch = self.streams[t].epoch.clone();
                    self.delete(t);
                    Value::Array(vec![Value::Integer(1), bulk(epoch)])
                } else {
                    Value::Array(vec![Value::Integer(0)])
                }
            }
            // PUBLISH: four keys, <topic> <size> <bytes> <channel>, then <id> <head> <tail>...
            ("EVALSHA", Some("4"), n) if n >= 14 => {
                let t = index(&text(&c[7]));
                if !self.streams[t].exists {
                    for event in c[11..].chunks(3) {
                        self.given.insert(text(&event[0]), 0);
                    }
                    Value::Array(vec![Value::Integer(0)])
                } else {
                    let mut out = vec![Value::Integer(1), bulk(&self.streams[t].epoch)];
                    for event in c[11..].chunks(3) {
                        let id = text(&event[0]);
                        let answer = self.publish(t, id.clone());
                        self.given.insert(id, answer);
                        out.push(Value::Integer(answer));
                    }
                    Value::Array(out)
                }
            }
            _ => panic!("unexpected command {command} {c:?}"),
        };
        self.conn.send(&reply);
    }

    fn read(&self, t: usize, from: &[u8], count: &[u8]) -> Value {
        let s = &self.streams[t];
        if !s.exists {
            return Value::Array(vec![Value::Integer(0)]);
        }
        let from: u64 = text(from).parse().unwrap();
        let count: usize = text(count).parse().unwrap();
        let entries = (from.max(self.oldest(t)).max(1)..=s.last)
            .take(count)
            .map(|seq| {
                let body = &s.bodies[seq as usize - 1];
                let fields = ["e", body, "i", "a"].iter().map(bulk).collect();
                Value::Array(vec![bulk(format!("{seq}-0")), Value::Array(fields)])
            })
            .collect();
        Value::Array(vec![
            Value::Integer(1),
            bulk(&s.epoch),
            Value::Integer(s.last as i64),
            Value::Array(entries),
        ])
    }
}
