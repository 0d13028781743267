//! Cluster mode's two changes to the broker's topics: events whose seq Redis assigned, and a
//! topic that starts over (a new epoch, or events lost for good).

use std::rc::Rc;

use super::{Broker, ConnId};

impl Broker {
    /// Cluster mode: records an event whose seq Redis assigned and returns who receives it;
    /// `None` for a topic not held or a seq already recorded.
    pub fn deliver(&mut self, name: &str, seq: u64, frame: Rc<[u8]>) -> Option<&[ConnId]> {
        let key = self.key(name).ok()?;
        let topic = &mut self.topics[key];
        // Redis deduplicates by message id; locally the seq stands in for it.
        topic
            .record_at(seq, u128::from(seq), frame)
            .then(|| topic.subscribers())
    }

    /// Cluster mode: the topic starts over as `epoch`, its history dropped: from seq 0 for a new
    /// epoch, from where it was when events of the same epoch were lost for good. Returns that
    /// seq and the subscribers to tell.
    pub fn restart(&mut self, name: &str, epoch: &str) -> Option<(u64, &[ConnId])> {
        let key = self.key(name).ok()?;
        let topic = &mut self.topics[key];
        let last = if &*topic.epoch == epoch {
            topic.last_seq()
        } else {
            0
        };
        topic.restart(Rc::from(epoch), last);
        Some((last, topic.subscribers()))
    }
}
