//! The order of a connection's answers. Answers go out in the order of the requests they
//! answer, even when one of them is not ready when its request is handled (in cluster mode, an
//! answer that waits for the backplane's reply). Such a request takes a ticket: answers made
//! after it are held until the ticket is completed, then released in request order. Events
//! that answer no request are not held.
//!
//! Every answer is immediate today, so a connection holds no `AnswerOrder` at all unless a
//! ticket is taken.

use std::collections::VecDeque;

use crate::outq::Chunk;

/// A place in a connection's answer order, for an answer that comes later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

#[derive(Debug, Default)]
pub struct AnswerOrder {
    next: u64,
    /// From the oldest unanswered ticket on: each slot is a ticket still waiting (`None`) or
    /// the answers made ready behind it.
    waiting: VecDeque<(u64, Option<Vec<Chunk>>)>,
}

impl AnswerOrder {
    /// Requests whose answers are held (by a ticket, or behind one).
    pub fn held(&self) -> usize {
        self.waiting.len()
    }

    /// A place for an answer that comes later.
    pub fn defer(&mut self) -> Ticket {
        let t = self.next;
        self.next += 1;
        self.waiting.push_back((t, None));
        Ticket(t)
    }

    /// An answer ready now: handed back to be sent at once when nothing waits before it,
    /// otherwise kept behind the tickets.
    pub fn ready(&mut self, answer: Vec<Chunk>) -> Option<Vec<Chunk>> {
        if self.waiting.is_empty() {
            return Some(answer);
        }
        let t = self.next;
        self.next += 1;
        self.waiting.push_back((t, Some(answer)));
        None
    }

    /// A ticket's answer arrived: returns every answer that may now go out, in order.
    /// An unknown or already completed ticket releases nothing new.
    pub fn complete(&mut self, ticket: Ticket, answer: Vec<Chunk>) -> Vec<Chunk> {
        if let Some(slot) = self.waiting.iter_mut().find(|(t, _)| *t == ticket.0) {
            if slot.1.is_none() {
                slot.1 = Some(answer);
            }
        }
        let mut out = Vec::new();
        while let Some((_, Some(_))) = self.waiting.front() {
            if let Some((_, Some(chunks))) = self.waiting.pop_front() {
                out.extend(chunks);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(chunks: &[Chunk]) -> String {
        chunks
            .iter()
            .map(|c| match c {
                Chunk::Owned(v) => String::from_utf8(v.clone()).unwrap(),
                Chunk::Shared(s) => String::from_utf8(s.to_vec()).unwrap(),
            })
            .collect()
    }

    fn answer(s: &str) -> Vec<Chunk> {
        vec![Chunk::Owned(s.as_bytes().to_vec())]
    }

    #[test]
    fn answers_behind_a_ticket_wait_for_it_and_keep_their_order() {
        let mut order = AnswerOrder::default();
        assert_eq!(text(&order.ready(answer("a")).unwrap()), "a");
        let first = order.defer();
        assert!(order.ready(answer("c")).is_none());
        let second = order.defer();
        assert!(order.ready(answer("e")).is_none());
        assert_eq!(order.held(), 4);
        // The later ticket completing first releases nothing: the earlier still waits.
        assert!(order.complete(second, answer("d")).is_empty());
        assert_eq!(text(&order.complete(first, answer("b"))), "bcde");
        assert_eq!(order.held(), 0);
        assert_eq!(text(&order.ready(answer("f")).unwrap()), "f");
        assert!(order.complete(first, answer("again")).is_empty());
    }
}
