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
mod tests {
    use super::*;

    fn event(epoch: &'static str, seq: u64) -> ChannelMessage<'static> {
        ChannelMessage::Event {
            epoch: epoch.as_bytes(),
            seq,
            event: b"{}",
        }
    }

    fn delivered(steps: &[Step]) -> Vec<u64> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Deliver { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn channel_messages_parse_and_nonsense_does_not() {
        assert_eq!(
            ChannelMessage::parse(b"e1:42:{\"a\":\"x:y\"}"),
            Some(ChannelMessage::Event {
                epoch: b"e1",
                seq: 42,
                event: b"{\"a\":\"x:y\"}"
            })
        );
        assert_eq!(
            ChannelMessage::parse(b"e1:0:D"),
            Some(ChannelMessage::Deleted { epoch: b"e1" })
        );
        for bad in [
            &b"e1:0:x"[..],
            b"e1:x:{}",
            b":1:{}",
            b"e1:1",
            b"e1::{}",
            b"e1:99999999999999999999:{}",
        ] {
            assert_eq!(
                ChannelMessage::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_read_after_a_reconnect_fills_what_was_missed_and_keeps_what_arrived() {
        let mut m = Mirror::new(b"e", 5, 100);
        m.expect(8);
        let history: Vec<(u64, &[u8])> = (6..=8).map(|s| (s, &b"{}"[..])).collect();
        assert_eq!(delivered(&m.filled(b"e", &history)), [6, 7, 8]);
        // An event that arrived live (held behind a gap) but was too big to be stored.
        let mut m = Mirror::new(b"e", 5, 100);
        m.on_message(&event("e", 7));
        m.expect(7);
        assert_eq!(delivered(&m.filled(b"e", &[(6, b"{}")])), [6, 7]);
    }

    #[test]
    fn events_in_order_are_delivered_and_repeats_dropped() {
        let mut m = Mirror::new(b"e", 5, 100);
        assert_eq!(delivered(&m.on_message(&event("e", 6))), [6]);
        assert_eq!(m.on_message(&event("e", 6)), []);
        assert_eq!(m.on_message(&event("e", 3)), []);
        assert_eq!(delivered(&m.on_message(&event("e", 7))), [7]);
        assert_eq!(m.last(), 7);
    }

    #[test]
    fn a_gap_is_fetched_and_what_follows_waits_for_it() {
        let mut m = Mirror::new(b"e", 5, 100);
        assert_eq!(
            m.on_message(&event("e", 9)),
            [Step::Fetch { after: 5, until: 8 }]
        );
        // Arriving while the fetch is out: held, not fetched again.
        assert_eq!(m.on_message(&event("e", 10)), []);
        let history: Vec<(u64, &[u8])> = (6..=9).map(|s| (s, &b"{}"[..])).collect();
        // The fetch also brought 9 (it was stored by then): delivered once.
        assert_eq!(delivered(&m.filled(b"e", &history)), [6, 7, 8, 9, 10]);
        assert_eq!(m.last(), 10);
        assert_eq!(delivered(&m.on_message(&event("e", 11))), [11]);
    }

    #[test]
    fn a_gap_history_cannot_fill_is_told_and_what_follows_goes_on() {
        let mut m = Mirror::new(b"e", 5, 100);
        m.on_message(&event("e", 20));
        // History kept only 15 onwards: 6..14 are gone for good.
        let history: Vec<(u64, &[u8])> = (15..=19).map(|s| (s, &b"{}"[..])).collect();
        let steps = m.filled(b"e", &history);
        assert_eq!(
            steps[0],
            Step::Reset {
                epoch: b"e".to_vec()
            }
        );
        assert_eq!(delivered(&steps), [15, 16, 17, 18, 19, 20]);
        assert_eq!(delivered(&m.on_message(&event("e", 21))), [21]);
    }

    #[test]
    fn a_new_epoch_is_told_and_followed_from_its_start() {
        let mut m = Mirror::new(b"e", 7, 100);
        let steps = m.on_message(&event("f", 1));
        assert_eq!(
            steps[0],
            Step::Reset {
                epoch: b"f".to_vec()
            }
        );
        assert_eq!(delivered(&steps), [1]);
        // Seen first at its third event: the first two are fetched from its history.
        let mut m = Mirror::new(b"e", 7, 100);
        let steps = m.on_message(&event("g", 3));
        assert_eq!(steps[1], Step::Fetch { after: 0, until: 2 });
        let history: Vec<(u64, &[u8])> = vec![(1, b"{}"), (2, b"{}")];
        assert_eq!(delivered(&m.filled(b"g", &history)), [1, 2, 3]);
        assert_eq!((m.epoch(), m.last()), (&b"g"[..], 3));
    }

    #[test]
    fn a_fill_read_in_pages_delivers_each_and_releases_the_held_after_the_last() {
        let mut m = Mirror::new(b"e", 2, 10);
        // Events 3..=6 are missed; 7 arrives and is held while they are read.
        assert_eq!(
            m.on_message(&event("e", 7)),
            [Step::Fetch { after: 2, until: 6 }]
        );
        let page = |seqs: &[u64]| -> Vec<(u64, &'static [u8])> {
            seqs.iter().map(|&s| (s, &b"{}"[..])).collect()
        };
        let steps = m.filled_page(b"e", &page(&[3, 4]), true);
        assert_eq!(delivered(&steps), [3, 4]);
        assert_eq!(steps.last(), Some(&Step::Fetch { after: 4, until: 6 }));
        let steps = m.filled_page(b"e", &page(&[5, 6]), false);
        assert_eq!(delivered(&steps), [5, 6, 7]);
        assert_eq!(steps.len(), 3, "no reset: {steps:?}");
    }

    #[test]
    fn held_events_are_bounded_and_deletion_comes_after_the_last_event() {
        let mut m = Mirror::new(b"e", 0, 2);
        m.on_message(&event("e", 3));
        m.on_message(&event("e", 4));
        // A third would pass the bound: the gap (1, 2) is given up and told; 3, 4, 5 go on.
        let steps = m.on_message(&event("e", 5));
        assert_eq!(
            steps[0],
            Step::Reset {
                epoch: b"e".to_vec()
            }
        );
        assert_eq!(delivered(&steps), [3, 4, 5]);
        // The fetch that was out comes back late: ignored.
        assert_eq!(m.filled(b"e", &[(1, b"{}")]), []);
        assert_eq!(m.on_message(&ChannelMessage::Deleted { epoch: b"old" }), []);
        assert_eq!(
            m.on_message(&ChannelMessage::Deleted { epoch: b"e" }),
            [Step::Deleted]
        );
    }

    #[test]
    fn history_ending_short_of_the_gap_resets_and_goes_on_with_what_is_held() {
        let mut m = Mirror::new(b"e", 5, 100);
        m.on_message(&event("e", 10));
        let history: Vec<(u64, &[u8])> = vec![(6, b"{}"), (7, b"{}")];
        let steps = m.filled(b"e", &history);
        assert_eq!(delivered(&steps[..2]), [6, 7]);
        assert_eq!(
            steps[2],
            Step::Reset {
                epoch: b"e".to_vec()
            }
        );
        assert_eq!(delivered(&steps), [6, 7, 10]);
        assert_eq!(m.last(), 10);
    }

    #[test]
    fn a_history_gone_back_is_told_from_one_that_went_on() {
        let mut m = Mirror::new(b"e", 0, 100);
        for seq in 1..=3 {
            m.on_message(&ChannelMessage::Event {
                epoch: b"e",
                seq,
                event: format!("{{\"n\":{seq}}}").as_bytes(),
            });
        }
        let same: [(u64, &[u8]); 2] = [(3, b"{\"n\":3}"), (4, b"{}")];
        assert!(!m.rolled_back(4, &same), "went on from the event it had");
        assert!(!m.rolled_back(3, &same[..1]), "nothing new");
        assert!(m.rolled_back(2, &[]), "its last seq went back");
        assert!(
            m.rolled_back(4, &[(3, b"{\"n\":33}"), (4, b"{}")]),
            "another event at the seq it had"
        );
        assert!(
            !m.rolled_back(9, &[(5, b"{}")]),
            "its event not retained: unknown"
        );
        // Started from a read: the event it starts at is known only when the read held it.
        let mut m = Mirror::new(b"e", 7, 100);
        assert!(!m.rolled_back(7, &[(7, b"x")]));
        m.knows_last(7, b"y");
        assert!(m.rolled_back(7, &[(7, b"x")]));
    }
}
