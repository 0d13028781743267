//! What an instance asks of Redis: creates, deletes and publishes (within the window, each with
//! a ticket), and its own history reads (past the window, a few at a time).

use std::collections::VecDeque;
use std::time::Instant;

use super::{Backplane, Event, Kind, Outcome, Pending, State, READS_OUT};
use crate::cluster::link::Link;
use crate::cluster::scripts::{Call, Script, TopicKeys};

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

    /// Creates `name` as `epoch` cluster-wide, within `MAX_TOPICS`.
    pub fn create(&mut self, ticket: T, name: &str, epoch: &str, now: Instant) {
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
        let argv: [&[u8]; 7] = [
            topic.as_bytes(),
            id.as_bytes(),
            head,
            tail,
            self.argv.history_size.as_bytes(),
            self.argv.history_bytes.as_bytes(),
            k.channel.as_bytes(),
        ];
        let call = Call::new(Script::Publish, &k, &argv);
        Self::request(
            &mut self.link,
            &mut self.events,
            self.state,
            ticket,
            Kind::Publish,
            &call,
            now,
        );
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
