//! What an instance knows of one topic it follows through Redis, and what each message of the
//! topic's channel means for its local subscribers, sans-IO. Redis delivers a channel's messages
//! in the order the publish scripts ran, and a script gives each event the next seq, so an
//! instance sees seqs in increasing order; what it can miss (a dropped subscription connection,
//! an output buffer Redis cut) shows as a seq past the next one. Such a gap is filled from the
//! stored history before anything after it is delivered; one that history cannot fill, or a new
//! epoch, is a reset the subscribers are told of, never a silent gap.

use std::collections::BTreeMap;

/// One message of a topic's channel: `<epoch>:<seq>:<event JSON>`, or `<epoch>:0:D` when the
/// topic is deleted (after its last event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage<'a> {
    Event {
        epoch: &'a [u8],
        seq: u64,
        event: &'a [u8],
    },
    Deleted {
        epoch: &'a [u8],
    },
    /// `<epoch>:0:R`: the topic goes on as a new incarnation, its seqs no longer trusted
    /// (Redis came back with older data); what it holds is read again from its history.
    Renewed {
        epoch: &'a [u8],
    },
}

impl<'a> ChannelMessage<'a> {
    pub fn parse(bytes: &'a [u8]) -> Option<ChannelMessage<'a>> {
        let colon = |b: &[u8]| b.iter().position(|&c| c == b':');
        let e = colon(bytes)?;
        let (epoch, rest) = (&bytes[..e], &bytes[e + 1..]);
        let s = colon(rest)?;
        let (seq, event) = (&rest[..s], &rest[s + 1..]);
        if epoch.is_empty() || seq.is_empty() || !seq.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let seq: u64 = std::str::from_utf8(seq).ok()?.parse().ok()?;
        match (seq, event) {
            (0, b"D") => Some(ChannelMessage::Deleted { epoch }),
            (0, b"R") => Some(ChannelMessage::Renewed { epoch }),
            (0, _) => None,
            _ => Some(ChannelMessage::Event { epoch, seq, event }),
        }
    }
}

/// What to do about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Deliver this event to the local subscribers (and keep it in the local ring).
    Deliver { seq: u64, event: Vec<u8> },
    /// Read the stored history after `after` (up to `until`) and pass it to
    /// [`Mirror::filled`]; what arrives meanwhile is held.
    Fetch { after: u64, until: u64 },
    /// The topic is not what the subscribers followed any more (a new epoch, or events lost
    /// for good): tell them, with the epoch now in force.
    Reset { epoch: Vec<u8> },
    /// The topic was deleted: tell the subscribers, after everything delivered before.
    Deleted,
}

/// An instance's view of one topic.
#[derive(Debug)]
pub struct Mirror {
    epoch: Vec<u8>,
    /// The last seq delivered to the local subscribers.
    last: u64,
    /// Events past a gap, waiting for it to be filled; at most `max_held`.
    held: BTreeMap<u64, Vec<u8>>,
    max_held: usize,
    /// The gap being fetched, if one is.
    fetching: Option<u64>,
    /// A digest of the event delivered as `last`, when it is known: after a reconnect, Redis
    /// holding another event at that seq means it came back with older data.
    last_digest: Option<u64>,
}

/// What tells two events apart cheaply (once per event and instance, not per subscriber).
fn digest(event: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(event);
    h.finish()
}

impl Mirror {
    /// A mirror that has delivered everything up to `last` under `epoch` (read from Redis when
    /// the instance started following the topic).
    pub fn new(epoch: &[u8], last: u64, max_held: usize) -> Mirror {
        Mirror {
            epoch: epoch.to_vec(),
            last,
            held: BTreeMap::new(),
            max_held,
            fetching: None,
            last_digest: None,
        }
    }

    /// The event at `last`, when the history read to start the mirror holds it.
    pub fn knows_last(&mut self, seq: u64, event: &[u8]) {
        if seq == self.last {
            self.last_digest = Some(digest(event));
        }
    }

    /// Whether Redis's copy of the topic, as a history read after a reconnect shows it (its
    /// last seq, and the events of the read, from the one at the read's start), went back
    /// under the same epoch: its last seq is below this mirror's, or it holds another event
    /// at this mirror's last seq. Only a data set restored from older data does that.
    pub fn rolled_back(&self, last: u64, events: &[(u64, &[u8])]) -> bool {
        if last < self.last {
            return true;
        }
        let theirs = events.iter().find(|(seq, _)| *seq == self.last);
        matches!((theirs, self.last_digest), (Some((_, e)), Some(d)) if digest(e) != d)
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    pub fn epoch(&self) -> &[u8] {
        &self.epoch
    }

    /// The connection the channel came on is gone: a fetch out is lost with it, and events held
    /// past a gap say nothing of what comes after them any more (what was published while away
    /// comes on no channel), so they are dropped; the read after the reconnect, which comes
    /// before anything else of this topic is delivered, asks history for all of it.
    pub fn connection_lost(&mut self) {
        self.held.clear();
        self.fetching = Some(self.last);
    }

    /// History is about to be read because events may have been missed (after a reconnect),
    /// with `last` the topic's last seq in Redis: the next [`Mirror::filled`] takes it, and
    /// what it lacks up to `last` (or up to the first event held, which did arrive) is lost.
    pub fn expect(&mut self, last: u64) {
        let before_held = self
            .held
            .first_key_value()
            .map_or(u64::MAX, |(&s, _)| s - 1);
        let until = last.min(before_held).max(self.last);
        self.fetching = Some(self.fetching.map_or(until, |u| u.max(until)));
    }

    /// A message of the topic's channel.
    pub fn on_message(&mut self, message: &ChannelMessage<'_>) -> Vec<Step> {
        let mut steps = Vec::new();
        match *message {
            // The deletion of an incarnation already left behind says nothing.
            ChannelMessage::Deleted { epoch } if epoch == self.epoch.as_slice() => {
                steps.push(Step::Deleted);
            }
            // The backplane reads the renewed topic again; the mirror is replaced.
            ChannelMessage::Deleted { .. } | ChannelMessage::Renewed { .. } => {}
            ChannelMessage::Event { epoch, seq, event } => {
                if epoch != self.epoch.as_slice() {
                    self.new_epoch(epoch, &mut steps);
                }
                self.event(seq, event, &mut steps);
            }
        }
        steps
    }

    /// The history read for a [`Step::Fetch`]: `events`, oldest first, as `(seq, event)`, from
    /// the topic's stored history under `epoch`.
    pub fn filled(&mut self, epoch: &[u8], events: &[(u64, &[u8])]) -> Vec<Step> {
        let Some(until) = self.fetching.take() else {
            return Vec::new();
        };
        let mut steps = Vec::new();
        if epoch != self.epoch.as_slice() {
            // The topic changed under the fetch: start the new incarnation from its history.
            self.new_epoch(epoch, &mut steps);
            for &(seq, event) in events {
                self.event(seq, event, &mut steps);
            }
            return steps;
        }
        let mut told = false;
        for &(seq, event) in events {
            if seq <= self.last {
                continue;
            }
            if seq != self.last + 1 && !told {
                // History no longer holds the start of the gap: those events are gone.
                told = true;
                steps.push(Step::Reset {
                    epoch: self.epoch.clone(),
                });
            }
            self.last = seq;
            self.last_digest = Some(digest(event));
            steps.push(Step::Deliver {
                seq,
                event: event.to_vec(),
            });
        }
        if self.last < until {
            // Nor its end (or they were never stored, as events bigger than the byte bound).
            if !told {
                steps.push(Step::Reset {
                    epoch: self.epoch.clone(),
                });
            }
            self.last = until;
            self.last_digest = None;
        }
        self.release(&mut steps);
        steps
    }

    /// One page of the history read for a fetch, when `more` follows it (the read was cut at
    /// its count): its events are delivered and the fetch goes on after them, the events held
    /// waiting until it ends. Without `more`, as [`Mirror::filled`].
    pub fn filled_page(&mut self, epoch: &[u8], events: &[(u64, &[u8])], more: bool) -> Vec<Step> {
        let (Some(until), Some(&(page_end, _))) = (self.fetching, events.last()) else {
            return self.filled(epoch, events);
        };
        if !more || epoch != self.epoch.as_slice() || page_end >= until {
            return self.filled(epoch, events);
        }
        self.fetching = Some(page_end);
        let held = std::mem::take(&mut self.held);
        let mut steps = self.filled(epoch, events);
        self.held = held;
        self.fetching = Some(until);
        steps.push(Step::Fetch {
            after: self.last,
            until,
        });
        steps
    }

    fn event(&mut self, seq: u64, event: &[u8], steps: &mut Vec<Step>) {
        if seq <= self.last || self.held.contains_key(&seq) {
            return;
        }
        if seq == self.last + 1 && self.fetching.is_none() {
            self.last = seq;
            self.last_digest = Some(digest(event));
            steps.push(Step::Deliver {
                seq,
                event: event.to_vec(),
            });
            self.release(steps);
            return;
        }
        if self.held.len() >= self.max_held {
            // Too far behind to hold on: the gap is given up, told, and what is held goes on.
            steps.push(Step::Reset {
                epoch: self.epoch.clone(),
            });
            self.fetching = None;
            if let Some((&first, _)) = self.held.first_key_value() {
                self.last = first - 1;
                self.last_digest = None;
            }
            self.release(steps);
            return self.event(seq, event, steps);
        }
        self.held.insert(seq, event.to_vec());
        if self.fetching.is_none() {
            self.fetching = Some(seq - 1);
            steps.push(Step::Fetch {
                after: self.last,
                until: seq - 1,
            });
        }
    }

    /// Held events that now follow on are delivered; a gap before the rest is fetched.
    fn release(&mut self, steps: &mut Vec<Step>) {
        let last = self.last;
        self.held.retain(|&seq, _| seq > last);
        while let Some(event) = self.held.remove(&(self.last + 1)) {
            self.last += 1;
            self.last_digest = Some(digest(&event));
            steps.push(Step::Deliver {
                seq: self.last,
                event,
            });
        }
        if self.fetching.is_none() {
            if let Some((&next, _)) = self.held.first_key_value() {
                self.fetching = Some(next - 1);
                steps.push(Step::Fetch {
                    after: self.last,
                    until: next - 1,
                });
            }
        }
    }

    /// A new incarnation (the topic made again, or Redis back without its data): the
    /// subscribers are told, and it is followed from its start.
    fn new_epoch(&mut self, epoch: &[u8], steps: &mut Vec<Step>) {
        self.epoch = epoch.to_vec();
        self.last = 0;
        self.last_digest = None;
        self.held.clear();
        self.fetching = None;
        steps.push(Step::Reset {
            epoch: epoch.to_vec(),
        });
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
