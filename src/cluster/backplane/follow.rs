//! What arrives on the backplane's connection: replies matched to what asked for them, and
//! pushes (topic channels, the control channel) turned into events through each topic's mirror.

use std::collections::HashMap;
use std::time::Instant;

use super::replies::{outcome, pairs, publish_outcomes, read_reply, renew_reply, text, History};
use super::{Backplane, Event, Followed, Pending, State, BACKOFF_FIRST};
use crate::cluster::link::{Arrived, LinkError};
use crate::cluster::mirror::{ChannelMessage, Mirror, Step};
use crate::cluster::scripts;
use crate::cluster::scripts::{Call, Script, TopicKeys};
use crate::resp::Value;

impl<T> Backplane<T> {
    /// Bytes from the connection. An error means it cannot be trusted: drop it
    /// ([`Backplane::connection_lost`]).
    pub fn received(&mut self, bytes: &[u8], now: Instant) -> Result<(), LinkError> {
        self.last_activity = now;
        self.link.received(bytes)?;
        // In the order they came: a push before a reply was published before its command ran.
        while let Some(arrived) = self.link.next_arrived() {
            match arrived {
                Arrived::Push(push) => self.on_push(push, now),
                Arrived::Reply(pending, value) => self.on_reply(pending, value, now)?,
            }
        }
        Ok(())
    }

    fn on_reply(
        &mut self,
        pending: Pending<T>,
        value: Value,
        now: Instant,
    ) -> Result<(), LinkError> {
        let noscript = matches!(&value, Value::Error(e) if e.starts_with(b"NOSCRIPT"));
        match pending {
            Pending::Probe => {}
            Pending::Setup => {
                if let Value::Error(_) = value {
                    // A wrong password, a missing script command: nothing works without these.
                    return Err(LinkError::Unexpected);
                }
            }
            Pending::Boot => self.on_boot(value, now),
            Pending::Recreate => {}
            Pending::Registry => self.on_registry(value, now),
            // A read or renewal refused (the scripts flushed, Redis busy) leaves the topic
            // unfollowed: the connection is made again, and that reads everything again.
            Pending::Read { .. } | Pending::Renew { .. } if matches!(value, Value::Error(_)) => {
                return Err(LinkError::Unexpected);
            }
            Pending::Read { topic, from } => self.on_read(&topic, from, value, now),
            Pending::Renew { topic } => self.on_renewed(&topic, value, now),
            Pending::Request { ticket, kind } => {
                let outcome = outcome(kind, &value);
                self.events.push_back(Event::Answer { ticket, outcome });
            }
            Pending::Publishes { tickets } => {
                let outcomes = publish_outcomes(&value, tickets.len());
                for (ticket, outcome) in tickets.into_iter().zip(outcomes) {
                    self.events.push_back(Event::Answer { ticket, outcome });
                }
            }
        }
        if noscript {
            // The scripts were flushed: reconnecting loads them again.
            return Err(LinkError::Unexpected);
        }
        Ok(())
    }

    /// The data set's identity. When it changed, Redis lost its data (a restart without
    /// persistence, a flush): every topic followed is created again under a new epoch, before
    /// the registry is read, so its subscribers are told `reset` rather than `topic_deleted`.
    fn on_boot(&mut self, value: Value, now: Instant) {
        let Some(boot) = value.as_bytes().map(<[u8]>::to_vec) else {
            // Someone deleted the key: as good as a lost data set, but with nothing to compare.
            self.read_registry(now);
            return;
        };
        if self.boot.as_ref().is_some_and(|old| *old != boot) {
            if self.recreating.as_ref() != Some(&boot) {
                self.counters.data_lost += 1;
            }
            let suffix = String::from_utf8_lossy(&boot[..boot.len().min(8)]).into_owned();
            let known: Vec<(String, String)> = self
                .topics
                .iter()
                .map(|(name, f)| (name.clone(), format!("{}.{suffix}", f.epoch)))
                .collect();
            for (name, epoch) in known {
                let k = TopicKeys::new(&name);
                let argv: [&[u8]; 3] = [
                    name.as_bytes(),
                    epoch.as_bytes(),
                    self.argv.max_topics.as_bytes(),
                ];
                let call = Call::new(Script::Create, &k, &argv);
                self.link.send_forced(Pending::Recreate, call.parts(), now);
            }
            self.recreating = Some(boot);
        } else {
            self.boot = Some(boot);
        }
        self.read_registry(now);
    }

    /// The topics Redis holds: follow those not followed, forget those gone, and read each
    /// one's history (all of it for a new one, what was missed for one followed before).
    fn on_registry(&mut self, value: Value, now: Instant) {
        // Every topic was created again before this reply (replies come in order).
        if let Some(boot) = self.recreating.take() {
            self.boot = Some(boot);
        }
        let listed: HashMap<String, String> = pairs(value)
            .into_iter()
            .filter_map(|(k, v)| Some((text(&k)?, text(&v)?)))
            .collect();
        let gone: Vec<String> = self
            .topics
            .keys()
            .filter(|t| !listed.contains_key(*t))
            .cloned()
            .collect();
        for name in gone {
            self.topics.remove(&name);
            self.events.push_back(Event::TopicDeleted { name });
        }
        for (name, epoch) in listed {
            let Some(followed) = self.topics.get_mut(&name) else {
                self.events.push_back(Event::TopicCreated {
                    name: name.clone(),
                    epoch: epoch.clone(),
                });
                self.topics.insert(name.clone(), Followed::unread(&epoch));
                self.read(&name, 0, now);
                continue;
            };
            match &followed.mirror {
                Some(m) if m.epoch() == epoch.as_bytes() => {
                    // Followed before: what was missed while away is a gap to fill.
                    let last = m.last();
                    self.read(&name, last, now);
                }
                None if followed.renewing && followed.epoch == epoch => {
                    // Its renewal was lost with the connection: its seqs still went back.
                    self.renew(&name, &epoch, now);
                }
                _ => {
                    // Another incarnation, or one whose read from the start was lost with the
                    // connection: read from the start, under the epoch its subscribers are told.
                    followed.renewing = false;
                    followed.mirror = None;
                    self.tell_reset(&name, &epoch);
                    self.read(&name, 0, now);
                }
            }
        }
        // In step once every read is answered; requests are taken from now on anyway, since
        // the channel is followed and each topic's events wait for its read.
        self.state = State::Up;
        self.backoff = BACKOFF_FIRST;
        self.events.push_back(Event::Up);
    }

    fn on_read(&mut self, topic: &str, from: u64, value: Value, now: Instant) {
        self.reads_out = self.reads_out.saturating_sub(1);
        self.read_page(topic, from, value, now);
        while self.reads_out < super::READS_OUT {
            let Some((topic, after)) = self.reads_waiting.pop_front() else {
                break;
            };
            self.read(&topic, after, now);
        }
    }

    fn read_page(&mut self, topic: &str, from: u64, value: Value, now: Instant) {
        let Some(followed) = self.topics.get_mut(topic) else {
            return;
        };
        let Some(History {
            epoch,
            last,
            events: entries,
        }) = read_reply(value)
        else {
            // The topic went while the read was out. A mirror is told by the deletion marker on
            // the channel; without one, the marker was dropped, and this says it instead.
            if followed.mirror.is_none() {
                self.forget(topic);
            }
            return;
        };
        if followed.mirror.is_none() && from > 0 {
            // Asked for before the mirror was dropped (renewed): a read from the start follows.
            return;
        }
        let events: Vec<(u64, &[u8])> = entries.iter().map(|(s, e)| (*s, e.as_slice())).collect();
        // A full page short of the last seq: more follows.
        let more = events.len() >= super::READ_PAGE && events.last().is_some_and(|e| e.0 < last);
        let mut steps = Vec::new();
        if followed.mirror.is_none() && followed.epoch != epoch {
            // Renewed again before its history was read: its subscribers are told first.
            steps.push(Step::Reset {
                epoch: epoch.as_bytes().to_vec(),
            });
        }
        match &mut followed.mirror {
            None if more => {
                // Its history as the local ring, a page at a time; what arrives meanwhile waits.
                let start = events[0].0 - 1;
                let mut mirror = Mirror::new(epoch.as_bytes(), start, self.settings.max_held);
                mirror.expect(last);
                steps.extend(mirror.filled_page(epoch.as_bytes(), &events, true));
                followed.mirror = Some(mirror);
            }
            None => {
                // Its history as the local ring, then what arrived meanwhile.
                for &(seq, event) in &events {
                    steps.push(Step::Deliver {
                        seq,
                        event: event.to_vec(),
                    });
                }
                let mut mirror = Mirror::new(epoch.as_bytes(), last, self.settings.max_held);
                if let Some(&(seq, event)) = events.last() {
                    mirror.knows_last(seq, event);
                }
                followed.mirror = Some(mirror);
            }
            Some(mirror)
                if mirror.epoch() == epoch.as_bytes() && mirror.rolled_back(last, &events) =>
            {
                // Redis came back with older data than this instance saw: the seqs from here
                // would be reused for other events. The topic goes on under a new epoch, and its
                // subscribers are told once Redis has it.
                self.counters.renewed += 1;
                followed.mirror = None;
                followed.renewing = true;
                self.renew(topic, &epoch, now);
            }
            Some(mirror) => {
                if mirror.epoch() != epoch.as_bytes() {
                    steps.push(Step::Reset {
                        epoch: epoch.as_bytes().to_vec(),
                    });
                    *mirror = Mirror::new(epoch.as_bytes(), 0, self.settings.max_held);
                }
                // What Redis has up to `last` and this instance lacks is filled, or told lost.
                mirror.expect(last);
                steps.extend(mirror.filled_page(epoch.as_bytes(), &events, more));
            }
        }
        self.apply(topic, steps, now);
    }

    /// The new epoch in force for a topic whose seqs went back: its subscribers are told, and
    /// it is followed again from its history.
    fn on_renewed(&mut self, topic: &str, value: Value, now: Instant) {
        let Some(followed) = self.topics.get(topic) else {
            return;
        };
        if followed.mirror.is_some() {
            // Deleted and created again meanwhile: followed as that.
            return;
        }
        match renew_reply(value) {
            Some(epoch) => self.start_over(topic, epoch, now),
            None => self.forget(topic),
        }
    }

    /// `topic` goes on as `epoch`, from its stored history: the mirror is dropped, the
    /// subscribers are told, and the history is read from its start.
    fn start_over(&mut self, topic: &str, epoch: String, now: Instant) {
        if let Some(followed) = self.topics.get_mut(topic) {
            followed.mirror = None;
            followed.renewing = false;
        }
        self.tell_reset(topic, &epoch);
        self.read(topic, 0, now);
    }

    /// Subscribers of `topic` are told it goes on as `epoch`, unless they were already.
    fn tell_reset(&mut self, topic: &str, epoch: &str) {
        let Some(followed) = self.topics.get_mut(topic) else {
            return;
        };
        if followed.epoch != epoch {
            followed.epoch = epoch.to_string();
            self.events.push_back(Event::Reset {
                topic: topic.to_string(),
                epoch: epoch.to_string(),
            });
        }
    }

    /// The mirror's reset: under the epoch the subscribers know, events were lost for good,
    /// which is told every time; under another, the topic goes on as that (told once).
    fn reset(&mut self, topic: &str, epoch: &str) {
        let lost = self.topics.get(topic).is_some_and(|f| f.epoch == epoch);
        if lost {
            self.events.push_back(Event::Reset {
                topic: topic.to_string(),
                epoch: epoch.to_string(),
            });
        } else {
            self.tell_reset(topic, epoch);
        }
    }

    fn forget(&mut self, topic: &str) {
        self.topics.remove(topic);
        self.events.push_back(Event::TopicDeleted {
            name: topic.to_string(),
        });
    }

    fn on_push(&mut self, push: Value, now: Instant) {
        let Value::Push(items) = push else { return };
        let parts: Vec<&[u8]> = items.iter().filter_map(Value::as_bytes).collect();
        match parts.as_slice() {
            [b"message", channel, payload] if *channel == scripts::CONTROL.as_bytes() => {
                self.on_control(payload, now);
            }
            [b"pmessage", _, channel, payload] => {
                let Some(topic) = channel.strip_prefix(b"{ps}:c:") else {
                    return;
                };
                let Ok(topic) = std::str::from_utf8(topic) else {
                    return;
                };
                let Some(message) = ChannelMessage::parse(payload) else {
                    return;
                };
                self.on_channel(topic.to_string(), &message, now);
            }
            _ => {}
        }
    }

    fn on_control(&mut self, payload: &[u8], now: Instant) {
        let Some(rest) = payload.strip_prefix(b"created:") else {
            return;
        };
        let Some(colon) = rest.iter().position(|&b| b == b':') else {
            return;
        };
        let (Ok(epoch), Ok(name)) = (
            std::str::from_utf8(&rest[..colon]),
            std::str::from_utf8(&rest[colon + 1..]),
        ) else {
            return;
        };
        if self.topics.get(name).is_some_and(|f| f.epoch == epoch) {
            // Known already (from the registry, its history being read).
            return;
        }
        // Created just now: nothing to read, its events follow on the channel.
        let _ = now;
        self.events.push_back(Event::TopicCreated {
            name: name.to_string(),
            epoch: epoch.to_string(),
        });
        let mut followed = Followed::unread(epoch);
        followed.mirror = Some(Mirror::new(epoch.as_bytes(), 0, self.settings.max_held));
        self.topics.insert(name.to_string(), followed);
    }

    fn on_channel(&mut self, topic: String, message: &ChannelMessage<'_>, now: Instant) {
        let Some(followed) = self.topics.get_mut(&topic) else {
            return;
        };
        let Some(mirror) = followed.mirror.as_mut() else {
            return;
        };
        if let ChannelMessage::Renewed { epoch } = *message {
            // Another instance found the topic's seqs gone back; this one starts over too.
            if epoch != mirror.epoch() {
                let epoch = String::from_utf8_lossy(epoch).into_owned();
                self.start_over(&topic, epoch, now);
            }
            return;
        }
        let steps = mirror.on_message(message);
        self.apply(&topic, steps, now);
    }

    fn apply(&mut self, topic: &str, steps: Vec<Step>, now: Instant) {
        for step in steps {
            match step {
                Step::Deliver { seq, event } => self.events.push_back(Event::Deliver {
                    topic: topic.to_string(),
                    seq,
                    event,
                }),
                Step::Fetch { after, .. } => {
                    self.counters.gaps_fetched += 1;
                    self.read(topic, after, now);
                }
                Step::Reset { epoch } => self.reset(topic, &String::from_utf8_lossy(&epoch)),
                Step::Deleted => self.forget(topic),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{booted, REGISTRY_T};
    use super::*;

    fn entry(seq: u64) -> String {
        format!(
            "*2\r\n${}\r\n{seq}-0\r\n*4\r\n$1\r\ne\r\n$2\r\n{{}}\r\n$1\r\ni\r\n$1\r\na\r\n",
            format!("{seq}-0").len()
        )
    }

    #[test]
    fn an_event_published_just_after_a_read_ran_is_delivered_after_the_read() {
        let now = Instant::now();
        let mut b = booted(now);
        // The registry: topic t, never followed, so its history is read from the start.
        b.received(REGISTRY_T, now).unwrap();
        let sent = String::from_utf8_lossy(b.unwritten()).into_owned();
        assert!(sent.contains("{ps}:h:t"), "{sent}");
        // The read's reply (events 1 and 2), and in the same bytes event 3, published after.
        let mut bytes = format!(
            "*4\r\n:1\r\n$2\r\ne1\r\n:2\r\n*2\r\n{}{}",
            entry(1),
            entry(2)
        );
        bytes.push_str(
            ">4\r\n$8\r\npmessage\r\n$8\r\n{ps}:c:*\r\n$8\r\n{ps}:c:t\r\n$7\r\ne1:3:{}\r\n",
        );
        b.received(bytes.as_bytes(), now).unwrap();
        let mut delivered = Vec::new();
        while let Some(e) = b.next_event() {
            if let Event::Deliver { seq, .. } = e {
                delivered.push(seq);
            }
        }
        assert_eq!(delivered, [1, 2, 3]);
    }

    #[test]
    fn a_renewal_seen_on_the_channel_and_then_in_the_registry_is_told_once() {
        let now = Instant::now();
        let mut b = booted(now);
        b.received(REGISTRY_T, now).unwrap();
        let read = format!("*4\r\n:1\r\n$2\r\ne1\r\n:1\r\n*1\r\n{}", entry(1));
        b.received(read.as_bytes(), now).unwrap();
        while b.next_event().is_some() {}
        // Away and back; another instance renews the topic between the subscription and the
        // registry's reply, so this one hears of e2 first on the channel, then in the registry.
        b.connection_lost(now);
        let later = now + std::time::Duration::from_secs(5);
        b.connected(later);
        let setup = b"+OK\r\n".repeat(3 + scripts::ALL.len());
        b.received(&setup, later).unwrap();
        b.received(b"$4\r\nabcd\r\n", later).unwrap();
        b.received(
            b">4\r\n$8\r\npmessage\r\n$8\r\n{ps}:c:*\r\n$8\r\n{ps}:c:t\r\n$6\r\ne2:0:R\r\n",
            later,
        )
        .unwrap();
        b.received(b"%1\r\n$1\r\nt\r\n$2\r\ne2\r\n", later).unwrap();
        let read = format!("*4\r\n:1\r\n$2\r\ne2\r\n:1\r\n*1\r\n{}", entry(1));
        b.received(read.as_bytes(), later).unwrap();
        b.received(read.as_bytes(), later).unwrap();
        let mut told = Vec::new();
        while let Some(e) = b.next_event() {
            match e {
                Event::Reset { epoch, .. } => told.push(format!("reset {epoch}")),
                Event::TopicCreated { epoch, .. } => told.push(format!("created {epoch}")),
                Event::Deliver { seq, .. } => told.push(format!("deliver {seq}")),
                _ => {}
            }
        }
        assert_eq!(told, ["reset e2", "deliver 1"]);
    }
}
