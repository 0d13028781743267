//! One topic: its history ring of encoded event frames and its subscriber set.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use super::ConnId;

/// An event as it went out: its sequence number, its message id (a UUID) and the complete
/// frame every subscriber gets.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub id: u128,
    pub frame: Rc<[u8]>,
}

#[derive(Debug)]
pub struct Topic {
    pub name: Rc<str>,
    /// This incarnation of the name: a topic deleted and created again has a new one, so a
    /// `since_seq` remembered from the old one is not taken for the new one's.
    pub epoch: Rc<str>,
    history: VecDeque<StoredEvent>,
    /// The seq of each retained event by its message id, so a publish retried with the same
    /// id is recognised instead of published twice.
    ids: HashMap<u128, u64>,
    history_size: usize,
    /// The retained frames' bytes, and their bound.
    history_bytes: usize,
    max_history_bytes: usize,
    /// The seq of the latest event (0 before the first).
    last_seq: u64,
    subscribers: Vec<ConnId>,
    /// Where each subscriber sits in `subscribers`, for O(1) removal.
    positions: HashMap<ConnId, usize>,
}

impl Topic {
    pub fn new(
        name: Rc<str>,
        epoch: Rc<str>,
        history_size: usize,
        max_history_bytes: usize,
    ) -> Topic {
        Topic {
            name,
            epoch,
            history: VecDeque::new(),
            ids: HashMap::new(),
            history_size,
            history_bytes: 0,
            max_history_bytes,
            last_seq: 0,
            subscribers: Vec::new(),
            positions: HashMap::new(),
        }
    }

    pub fn subscribers(&self) -> &[ConnId] {
        &self.subscribers
    }

    pub fn is_subscribed(&self, conn: ConnId) -> bool {
        self.positions.contains_key(&conn)
    }

    /// Adds a subscriber; false if it was already there.
    pub fn add(&mut self, conn: ConnId) -> bool {
        if self.positions.contains_key(&conn) {
            return false;
        }
        self.positions.insert(conn, self.subscribers.len());
        self.subscribers.push(conn);
        true
    }

    /// Removes a subscriber; false if it was not there.
    pub fn remove(&mut self, conn: ConnId) -> bool {
        let Some(pos) = self.positions.remove(&conn) else {
            return false;
        };
        self.subscribers.swap_remove(pos);
        if let Some(&moved) = self.subscribers.get(pos) {
            self.positions.insert(moved, pos);
        }
        true
    }

    /// Takes every subscriber out (topic deletion).
    pub fn drain_subscribers(&mut self) -> Vec<ConnId> {
        self.positions.clear();
        std::mem::take(&mut self.subscribers)
    }

    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The seq of the oldest event still held, or `last_seq + 1` when none is.
    pub fn first_retained_seq(&self) -> u64 {
        self.history.front().map_or(self.last_seq + 1, |e| e.seq)
    }

    /// The seq of the retained event published with this message id, if there is one.
    pub fn seq_of(&self, id: u128) -> Option<u64> {
        self.ids.get(&id).copied()
    }

    /// Records an event whose seq was assigned elsewhere (cluster mode: by Redis); false (and
    /// nothing recorded) for a seq not past the last. History holds consecutive seqs only, so
    /// one that skips some starts it afresh.
    pub fn record_at(&mut self, seq: u64, id: u128, frame: Rc<[u8]>) -> bool {
        if seq <= self.last_seq {
            return false;
        }
        if seq != self.last_seq + 1 {
            self.restart(self.epoch.clone(), seq - 1);
        }
        self.record(id, frame);
        true
    }

    /// Starts the topic over as `epoch` from `last_seq`, its history dropped (cluster mode: the
    /// incarnation changed, or events were lost for good).
    pub fn restart(&mut self, epoch: Rc<str>, last_seq: u64) {
        self.epoch = epoch;
        self.last_seq = last_seq;
        self.history.clear();
        self.ids.clear();
        self.history_bytes = 0;
    }

    /// Records a published event, evicting the oldest past the history's size or bytes (an
    /// event bigger than the byte bound is not retained at all).
    pub fn record(&mut self, id: u128, frame: Rc<[u8]>) -> u64 {
        self.last_seq += 1;
        self.history_bytes += frame.len();
        self.ids.insert(id, self.last_seq);
        self.history.push_back(StoredEvent {
            seq: self.last_seq,
            id,
            frame,
        });
        while self.history.len() > self.history_size || self.history_bytes > self.max_history_bytes
        {
            match self.history.pop_front() {
                Some(old) => {
                    self.history_bytes -= old.frame.len();
                    if self.ids.get(&old.id) == Some(&old.seq) {
                        self.ids.remove(&old.id);
                    }
                }
                None => break,
            }
        }
        self.last_seq
    }

    /// Message ids indexed: exactly the retained events' (tests and fuzzing).
    pub fn ids_match_history(&self) -> bool {
        self.ids.len() == self.history.len()
            && self
                .history
                .iter()
                .all(|e| self.ids.get(&e.id) == Some(&e.seq))
    }

    /// Bytes of the retained frames.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// The newest `n` retained events, oldest first.
    pub fn last_n(&self, n: u64) -> impl Iterator<Item = &StoredEvent> {
        let skip = self
            .history
            .len()
            .saturating_sub(n.min(usize::MAX as u64) as usize);
        self.history.iter().skip(skip)
    }

    /// Retained events with a seq greater than `seq`, oldest first.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &StoredEvent> {
        let skip = seq
            .saturating_sub(self.first_retained_seq() - 1)
            .min(self.history.len() as u64) as usize;
        self.history.iter().skip(skip)
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> Rc<[u8]> {
        Rc::from(i.to_string().into_bytes())
    }

    #[test]
    fn the_ring_keeps_the_newest_events_with_growing_seqs() {
        let mut t = Topic::new("t".into(), "e".into(), 3, usize::MAX);
        assert_eq!(t.first_retained_seq(), 1);
        for i in 1..=5 {
            assert_eq!(t.record(i as u128, frame(i)), i);
        }
        let seqs =
            |it: &mut dyn Iterator<Item = &StoredEvent>| it.map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(t.history_len(), 3);
        assert_eq!(t.first_retained_seq(), 3);
        assert_eq!(seqs(&mut t.last_n(2)), [4, 5]);
        assert_eq!(seqs(&mut t.last_n(1_000_000_000)), [3, 4, 5]);
        assert_eq!(seqs(&mut t.since(0)), [3, 4, 5]);
        assert_eq!(seqs(&mut t.since(3)), [4, 5]);
        assert_eq!(seqs(&mut t.since(5)), Vec::<u64>::new());
        assert_eq!(seqs(&mut t.since(99)), Vec::<u64>::new());
    }

    #[test]
    fn a_message_id_is_known_while_its_event_is_retained() {
        let mut t = Topic::new("t".into(), "e".into(), 2, usize::MAX);
        t.record(7, frame(1));
        assert_eq!(t.seq_of(7), Some(1));
        t.record(8, frame(2));
        t.record(9, frame(3));
        assert_eq!(
            (t.seq_of(7), t.seq_of(8), t.seq_of(9)),
            (None, Some(2), Some(3))
        );
        assert!(t.ids_match_history());
        // Past its eviction the same id makes a new event.
        assert_eq!(t.record(7, frame(4)), 4);
        assert_eq!((t.seq_of(7), t.seq_of(8)), (Some(4), None));
        assert!(t.ids_match_history());
    }

    #[test]
    fn events_numbered_elsewhere_keep_the_history_consecutive() {
        let mut t = Topic::new("t".into(), "e".into(), 10, usize::MAX);
        assert!(t.record_at(1, 1, frame(1)));
        assert!(t.record_at(2, 2, frame(2)));
        assert!(!t.record_at(2, 9, frame(2)), "not past the last");
        assert_eq!((t.first_retained_seq(), t.last_seq()), (1, 2));
        // 3..6 never arrived: history restarts at 7, so since_seq never skips them silently.
        t.record_at(7, 7, frame(7));
        assert_eq!(
            (t.first_retained_seq(), t.last_seq(), t.history_len()),
            (7, 7, 1)
        );
        assert_eq!(t.seq_of(1), None);
        assert!(t.ids_match_history());
        t.restart("f".into(), 40);
        assert_eq!(
            (&*t.epoch, t.last_seq(), t.history_len(), t.next_seq()),
            ("f", 40, 0, 41)
        );
    }

    #[test]
    fn the_ring_is_bounded_by_bytes_too() {
        let mut t = Topic::new("t".into(), "e".into(), 100, 10);
        for i in 1..=4u64 {
            t.record(i as u128, Rc::from(vec![0u8; 4]));
            assert_eq!(t.last_seq(), i);
        }
        // 10 bytes hold two 4-byte frames.
        assert_eq!(
            (t.history_len(), t.history_bytes(), t.first_retained_seq()),
            (2, 8, 3)
        );
        t.record(99, Rc::from(vec![0u8; 11]));
        assert_eq!(
            (t.history_len(), t.history_bytes()),
            (0, 0),
            "too big to keep"
        );
        assert_eq!(t.since(0).count(), 0);
    }

    #[test]
    fn subscribers_are_removed_in_constant_time_and_stay_consistent() {
        let mut t = Topic::new("t".into(), "e".into(), 0, usize::MAX);
        let c = |n| ConnId::new(n, 0);
        for n in 0..10 {
            assert!(t.add(c(n)));
        }
        assert!(!t.add(c(3)));
        assert!(t.remove(c(0)));
        assert!(!t.remove(c(0)));
        assert!(t.remove(c(5)));
        let mut left: Vec<usize> = t.subscribers().iter().map(|c| c.slot()).collect();
        left.sort();
        assert_eq!(left, [1, 2, 3, 4, 6, 7, 8, 9]);
        for (i, c) in t.subscribers().iter().enumerate() {
            assert_eq!(t.positions[c], i);
        }
        assert_eq!(t.record(1, frame(1)), 1);
        assert_eq!(t.history_len(), 0);
        assert_eq!(t.seq_of(1), None, "nothing retained, nothing remembered");
    }
}
