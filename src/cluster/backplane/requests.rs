//! What an instance asks of Redis: creates, deletes and publishes (within the window, each with
//! a ticket; a tick's publishes to one topic gathered into one call), and its own history reads
//! (past the window, a few at a time).

use std::collections::VecDeque;
use std::time::Instant;

use super::{Backplane, Event, Kind, Outcome, Pending, State, READS_OUT};
use crate::cluster::link::Link;
use crate::cluster::scripts::{Call, Script, TopicKeys};

/// Publishes to one topic sent as one call at most, and their bytes: a call stays short for
/// Redis, which runs nothing else meanwhile.
const BATCH_EVENTS: usize = 64;
const BATCH_BYTES: usize = 256 << 10;
/// Topics with publishes gathered at once before all are sent, so finding a topic's batch
/// stays a short search.
const BATCHES_OPEN: usize = 32;
/// A RESP bulk string's framing past its bytes, at most (`$<len>\r\n` and `\r\n`).
const ARG_FRAMING: usize = 16;

/// One topic's publishes gathered during a tick: their tickets, and each event's message id,
/// head and tail, in order; `bytes` their share of the encoded call.
#[derive(Debug)]
pub(super) struct Batch<T> {
    topic: String,
    pub(super) tickets: Vec<T>,
    events: Vec<(String, Vec<u8>, Vec<u8>)>,
    pub(super) bytes: usize,
}

impl<T> Backplane<T> {
    /// Sends a request's call, or answers it `Unavailable` at once when Redis is away or the
    /// window is full (the caller should have asked `has_room`). Takes the fields it needs, so a
    /// call may borrow the others.
    fn request(
        link: &mut Link<Pending<T>>,
        events: &mut VecDeque<Event<T>>,
        state: State,
        ticket: T,
        kind: Kind,
        call: &Call<'_>,
        now: Instant,
    ) {
        if state != State::Up || !link.has_room() {
            events.push_back(Event::Answer {
                ticket,
                outcome: Outcome::Unavailable,
            });
            return;
        }
        let sent = link.send(Pending::Request { ticket, kind }, call.parts(), now);
        debug_assert!(sent.is_ok(), "room was checked");
    }

    /// Creates `name` as `epoch` cluster-wide, within `MAX_TOPICS`. Publishes gathered
    /// before it are sent first, as they were asked.
    pub fn create(&mut self, ticket: T, name: &str, epoch: &str, now: Instant) {
        self.send_batches(now);
        let k = TopicKeys::new(name);
        let argv: [&[u8]; 3] = [
            name.as_bytes(),
            epoch.as_bytes(),
            self.argv.max_topics.as_bytes(),
        ];
        let call = Call::new(Script::Create, &k, &argv);
        Self::request(
            &mut self.link,
            &mut self.events,
            self.state,
            ticket,
            Kind::Create,
            &call,
            now,
        );
    }

    pub fn delete(&mut self, ticket: T, name: &str, now: Instant) {
        self.send_batches(now);
        let k = TopicKeys::new(name);
        let call = Call::new(Script::Delete, &k, &[name.as_bytes(), k.channel.as_bytes()]);
        Self::request(
            &mut self.link,
            &mut self.events,
            self.state,
            ticket,
            Kind::Delete,
            &call,
            now,
        );
    }

    /// Publishes the event `head .. seq .. tail` (`protocol::event_parts`) with message `id`:
    /// gathered with the topic's other publishes of this tick into one call, sent by
    /// [`Backplane::tick`] (or at once when the batch is full).
    pub fn publish(
        &mut self,
        ticket: T,
        topic: &str,
        id: &str,
        head: Vec<u8>,
        tail: Vec<u8>,
        now: Instant,
    ) {
        if !self.has_room() {
            self.events.push_back(Event::Answer {
                ticket,
                outcome: Outcome::Unavailable,
            });
            return;
        }
        let at = match self.batches.iter().position(|b| b.topic == topic) {
            Some(at) => at,
            None => {
                self.batches.push(Batch {
                    topic: topic.to_string(),
                    tickets: Vec::new(),
                    events: Vec::new(),
                    bytes: 0,
                });
                self.batches.len() - 1
            }
        };
        let batch = &mut self.batches[at];
        // Its share of the encoded call: three arguments, each with a length line.
        let bytes = id.len() + head.len() + tail.len() + 3 * ARG_FRAMING;
        batch.tickets.push(ticket);
        batch.events.push((id.to_string(), head, tail));
        batch.bytes += bytes;
        if batch.tickets.len() >= BATCH_EVENTS || batch.bytes >= BATCH_BYTES {
            let batch = self.batches.remove(at);
            self.send_batch(batch, now);
        }
        if self.batches.len() > BATCHES_OPEN {
            self.send_batches(now);
        }
    }

    /// Sends every batch gathered.
    pub(super) fn send_batches(&mut self, now: Instant) {
        for batch in std::mem::take(&mut self.batches) {
            self.send_batch(batch, now);
        }
    }

    fn send_batch(&mut self, batch: Batch<T>, now: Instant) {
        let Batch {
            topic,
            tickets,
            events,
            ..
        } = batch;
        if self.state != State::Up || !self.link.has_room() {
            // Counted in the window when gathered, so only a connection lost meanwhile.
            for ticket in tickets {
                self.events.push_back(Event::Answer {
                    ticket,
                    outcome: Outcome::Unavailable,
                });
            }
            return;
        }
        let k = TopicKeys::new(&topic);
        let argv: [&[u8]; 4] = [
            topic.as_bytes(),
            self.argv.history_size.as_bytes(),
            self.argv.history_bytes.as_bytes(),
            k.channel.as_bytes(),
        ];
        let call = Call::new(Script::Publish, &k, &argv);
        let parts = call.followed_by(
            events
                .iter()
                .flat_map(|(id, head, tail)| [id.as_bytes(), head, tail]),
        );
        let weight = tickets.len();
        let sent = self
            .link
            .send_weighted(Pending::Publishes { tickets }, weight, &parts, now);
        debug_assert!(sent.is_ok(), "room was checked");
    }

    /// Reads a page of `topic`'s history after `after`, and the event at `after` itself (once
    /// one of the `READS_OUT` places is free); the backplane's own command, sent past the
    /// window rather than lost.
    pub(super) fn read(&mut self, topic: &str, after: u64, now: Instant) {
        if self.reads_out >= READS_OUT {
            self.reads_waiting.push_back((topic.to_string(), after));
            return;
        }
        self.reads_out += 1;
        let k = TopicKeys::new(topic);
        let from = after.to_string();
        let argv: [&[u8]; 3] = [
            topic.as_bytes(),
            from.as_bytes(),
            self.argv.read_count.as_bytes(),
        ];
        let call = Call::new(Script::Read, &k, &argv);
        let pending = Pending::Read {
            topic: topic.to_string(),
            from: after,
        };
        self.link.send_forced(pending, call.parts(), now);
    }

    /// Asks for `topic`, seen as `epoch`, to go on under a new epoch; the backplane's own
    /// command, like a read.
    pub(super) fn renew(&mut self, topic: &str, epoch: &str, now: Instant) {
        let k = TopicKeys::new(topic);
        let renewed = format!("{epoch}.{:08x}", crate::ids::random_u64() as u32);
        let argv: [&[u8]; 4] = [
            topic.as_bytes(),
            epoch.as_bytes(),
            renewed.as_bytes(),
            k.channel.as_bytes(),
        ];
        let call = Call::new(Script::Renew, &k, &argv);
        let pending = Pending::Renew {
            topic: topic.to_string(),
        };
        self.link.send_forced(pending, call.parts(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::booted;
    use super::*;

    /// A backplane up, following no topic (a publish needs none).
    fn up() -> Backplane<u32> {
        let now = Instant::now();
        let mut b = booted(now);
        b.received(b"%0\r\n", now).unwrap();
        while b.next_event().is_some() {}
        let n = b.unwritten().len();
        b.wrote(n);
        b
    }

    fn answers(b: &mut Backplane<u32>) -> Vec<(u32, Outcome)> {
        let mut out = Vec::new();
        while let Some(e) = b.next_event() {
            if let Event::Answer { ticket, outcome } = e {
                out.push((ticket, outcome));
            }
        }
        out
    }

    #[test]
    fn a_ticks_publishes_to_a_topic_go_as_one_call_and_are_answered_in_order() {
        let mut b = up();
        let now = Instant::now();
        b.publish(1, "t", "id1", b"h".to_vec(), b"t".to_vec(), now);
        b.publish(2, "u", "id2", b"h".to_vec(), b"t".to_vec(), now);
        b.publish(3, "t", "id3", b"h".to_vec(), b"t".to_vec(), now);
        assert!(b.unwritten().is_empty(), "gathered until the tick");
        assert_eq!(b.in_flight(), 3);
        b.tick(now);
        let sent = String::from_utf8_lossy(b.unwritten()).into_owned();
        assert_eq!(sent.matches("EVALSHA").count(), 2, "{sent}");
        let t = sent.find("{ps}:c:t").unwrap();
        let u = sent.find("{ps}:c:u").unwrap();
        assert!(t < sent.find("id1").unwrap() && sent.find("id3").unwrap() < u);
        assert_eq!(b.in_flight(), 3);
        // t's batch: 5 published, then a duplicate of 2; u's: 6.
        let replies = "*4\r\n:1\r\n$2\r\ne1\r\n:5\r\n:-2\r\n*3\r\n:1\r\n$2\r\ne1\r\n:6\r\n";
        b.received(replies.as_bytes(), now).unwrap();
        assert_eq!(
            answers(&mut b),
            [
                (1, Outcome::Published { seq: 5 }),
                (3, Outcome::Duplicate { seq: 2 }),
                (2, Outcome::Published { seq: 6 }),
            ]
        );
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn publishes_gathered_or_sent_when_the_connection_goes_are_unavailable() {
        let mut b = up();
        let now = Instant::now();
        b.publish(1, "t", "id1", b"h".to_vec(), b"t".to_vec(), now);
        b.tick(now);
        b.publish(2, "t", "id2", b"h".to_vec(), b"t".to_vec(), now);
        b.connection_lost(now);
        assert_eq!(
            answers(&mut b),
            [(1, Outcome::Unavailable), (2, Outcome::Unavailable)]
        );
        assert_eq!(b.in_flight(), 0);
        assert!(!b.has_room());
    }

    #[test]
    fn a_full_batch_is_sent_at_once() {
        let mut b = up();
        let now = Instant::now();
        for i in 0..BATCH_EVENTS as u32 {
            b.publish(i, "t", "id", b"h".to_vec(), b"t".to_vec(), now);
        }
        let sent = String::from_utf8_lossy(b.unwritten()).into_owned();
        assert_eq!(sent.matches("EVALSHA").count(), 1);
        assert_eq!(sent.matches("$2\r\nid\r\n").count(), BATCH_EVENTS);
    }
}
