//! What arrives on the backplane's connection: replies matched to what asked for them, and
//! pushes (topic channels, the control channel) turned into events through each topic's mirror.

use std::collections::HashMap;
use std::time::Instant;

use super::replies::{outcome, pairs, read_reply, text, History};
use super::{Backplane, Event, Followed, Pending, State, BACKOFF_FIRST};
use crate::cluster::link::LinkError;
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
        loop {
            // Pushes first: on one connection they came before the replies that follow them.
            if let Some(push) = self.link.next_push() {
                self.on_push(push, now);
                continue;
            }
            let Some((pending, value)) = self.link.next_reply() else {
                return Ok(());
            };
            self.on_reply(pending, value, now)?;
        }
    }

    fn on_reply(
        &mut self,
        pending: Pending<T>,
        value: Value,
        now: Instant,
    ) -> Result<(), LinkError> {
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
            Pending::Read { topic } => self.on_read(&topic, value, now),
            Pending::Request { ticket, kind } => {
                let outcome = outcome(kind, &value);
                if let Value::Error(e) = &value {
                    if e.starts_with(b"NOSCRIPT") {
                        // The scripts were flushed: reconnecting loads them again.
                        self.events.push_back(Event::Answer { ticket, outcome });
                        return Err(LinkError::Unexpected);
                    }
                }
                self.events.push_back(Event::Answer { ticket, outcome });
            }
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
            self.counters.data_lost += 1;
            let suffix = String::from_utf8_lossy(&boot[..boot.len().min(8)]).into_owned();
            let known: Vec<(String, String)> = self
                .topics
                .iter()
                .filter_map(|(name, f)| {
                    let m = f.mirror.as_ref()?;
                    let epoch = String::from_utf8_lossy(m.epoch()).into_owned();
                    Some((name.clone(), format!("{epoch}.{suffix}")))
                })
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
        }
        self.boot = Some(boot);
        self.read_registry(now);
    }

    /// The topics Redis holds: follow those not followed, forget those gone, and read each
    /// one's history (all of it for a new one, what was missed for one followed before).
    fn on_registry(&mut self, value: Value, now: Instant) {
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
            let known = self
                .topics
                .get(&name)
                .and_then(|f| f.mirror.as_ref())
                .map(|m| (m.epoch().to_vec(), m.last()));
            match known {
                Some((e, last)) if e == epoch.as_bytes() => {
                    // Followed before: what was missed while away is a gap to fill.
                    self.read(&name, last, now);
                }
                _ => {
                    if known.is_some() {
                        self.events.push_back(Event::Reset {
                            topic: name.clone(),
                            epoch: epoch.clone(),
                        });
                    } else {
                        self.events.push_back(Event::TopicCreated {
                            name: name.clone(),
                            epoch: epoch.clone(),
                        });
                    }
                    self.topics.insert(name.clone(), Followed { mirror: None });
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

    fn on_read(&mut self, topic: &str, value: Value, now: Instant) {
        self.reads_out = self.reads_out.saturating_sub(1);
        self.read_page(topic, value, now);
        while self.reads_out < super::READS_OUT {
            let Some((topic, after)) = self.reads_waiting.pop_front() else {
                break;
            };
            self.read(&topic, after, now);
        }
    }

    fn read_page(&mut self, topic: &str, value: Value, now: Instant) {
        let Some(History {
            epoch,
            last,
            events: entries,
        }) = read_reply(value)
        else {
            // The topic went while the read was out: its deletion marker says so.
            return;
        };
        let Some(followed) = self.topics.get_mut(topic) else {
            return;
        };
        let events: Vec<(u64, &[u8])> = entries.iter().map(|(s, e)| (*s, e.as_slice())).collect();
        // A full page short of the last seq: more follows.
        let more = events.len() >= super::READ_PAGE && events.last().is_some_and(|e| e.0 < last);
        let mut steps = Vec::new();
        match &mut followed.mirror {
            None if more => {
                // Its history as the local ring, a page at a time; what arrives meanwhile waits.
                let start = events[0].0 - 1;
                let mut mirror = Mirror::new(epoch.as_bytes(), start, self.settings.max_held);
                mirror.expect(last);
                steps = mirror.filled_page(epoch.as_bytes(), &events, true);
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
                followed.mirror = Some(Mirror::new(epoch.as_bytes(), last, self.settings.max_held));
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
        if self
            .topics
            .get(name)
            .and_then(|f| f.mirror.as_ref())
            .is_some_and(|m| m.epoch() == epoch.as_bytes())
        {
            return;
        }
        // Created just now: nothing to read, its events follow on the channel.
        let _ = now;
        self.events.push_back(Event::TopicCreated {
            name: name.to_string(),
            epoch: epoch.to_string(),
        });
        self.topics.insert(
            name.to_string(),
            Followed {
                mirror: Some(Mirror::new(epoch.as_bytes(), 0, self.settings.max_held)),
            },
        );
    }

    fn on_channel(&mut self, topic: String, message: &ChannelMessage<'_>, now: Instant) {
        let Some(followed) = self.topics.get_mut(&topic) else {
            return;
        };
        let Some(mirror) = followed.mirror.as_mut() else {
            return;
        };
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
                Step::Reset { epoch } => self.events.push_back(Event::Reset {
                    topic: topic.to_string(),
                    epoch: String::from_utf8_lossy(&epoch).into_owned(),
                }),
                Step::Deleted => {
                    self.topics.remove(topic);
                    self.events.push_back(Event::TopicDeleted {
                        name: topic.to_string(),
                    });
                }
            }
        }
    }
}
