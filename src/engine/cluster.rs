//! Cluster mode in the engine: publishes and topic changes asked of the backplane, and what it
//! reports applied to the local topics. Every instance follows every topic, so the local broker
//! is a mirror of the cluster's topics and histories: subscribes, replays and resumes are
//! answered from it, while publishes, creates and deletes wait for Redis (their answers are
//! deferred, in request order). Events reach subscribers when they come back from Redis, in seq
//! order, the same way on every instance, the publishing one included.

use std::rc::Rc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::{DeferredAnswer, Engine};
use crate::broker::BrokerError;
use crate::cluster::backplane::{Backplane, Event, Outcome, Settings, State};
use crate::cluster::link::LinkLimits;
use crate::cluster::url::RedisUrl;
use crate::error::Failure;
use crate::ids::{ConnId, TopicName};
use crate::log::Level;
use crate::outq::{Bound, Chunk};
use crate::protocol::{self, Ack};
use crate::rest::{self, Change, ClusterStatus};
use crate::ws::frame::{encode_frame, OpCode};

/// What a request to the backplane was for, to answer it when Redis has.
#[derive(Debug)]
pub enum Waiting {
    Publish {
        answer: DeferredAnswer,
        request_id: Option<Box<RawValue>>,
        topic: String,
        sent: Instant,
    },
    Change {
        answer: DeferredAnswer,
        change: Change,
        headers: Vec<(&'static str, String)>,
        keep_alive: bool,
        http10: bool,
        sent: Instant,
    },
}

pub struct Cluster {
    pub backplane: Backplane<Waiting>,
    instance: String,
    /// WebSocket connections whose input waits for room in the backplane's window.
    stalled: Vec<ConnId>,
}

impl Cluster {
    pub fn new(url: RedisUrl, settings: Settings, instance: String, now: Instant) -> Cluster {
        Cluster {
            backplane: Backplane::new(settings, url, now).named(&format!("pubsub-{instance}")),
            instance,
            stalled: Vec::new(),
        }
    }
}

/// The backplane's settings for a server's configuration.
pub fn settings(config: &crate::config::Config) -> Settings {
    Settings {
        max_topics: config.max_topics,
        history_size: config.topic_history_size,
        history_bytes: config.topic_history_bytes,
        // Past a gap, no more events than a history holds are kept while it is read: with more,
        // the gap's events have left the stored history too, and the gap cannot be filled.
        max_held: config.topic_history_size.max(1),
        link: LinkLimits::default(),
    }
}

impl<S> Engine<S> {
    /// Cluster mode: the backplane, for the loop to move its bytes.
    pub fn backplane_mut(&mut self) -> Option<&mut Backplane<Waiting>> {
        self.cluster.as_mut().map(|c| &mut c.backplane)
    }

    /// Cluster mode: whether the backplane is up.
    pub(super) fn cluster_up(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.backplane.state() == State::Up)
    }

    pub(super) fn cluster_status(&self, now: Instant) -> Option<ClusterStatus> {
        let c = self.cluster.as_ref()?;
        let b = &c.backplane;
        let mut counters = self.stats.cluster.clone();
        let own = b.counters();
        counters.reconnects = own.reconnects;
        counters.gaps_filled = own.gaps_fetched;
        counters.data_lost = own.data_lost;
        counters.renewed = own.renewed;
        counters.probes = own.probes;
        Some(ClusterStatus {
            instance: c.instance.clone(),
            engine: match b.state() {
                State::Up => "up",
                State::Syncing => "syncing",
                State::Down { .. } => "down",
            },
            lag_ms: b.lag(now).as_millis() as u64,
            in_flight: b.in_flight(),
            counters,
        })
    }

    /// The window is full: the connection's input waits until replies make room (a publisher
    /// is paced, not cut). False when there is room, or outside cluster mode.
    pub(super) fn stall_for_window(&mut self, key: usize) -> bool {
        let Some(cluster) = self.cluster.as_mut() else {
            return false;
        };
        if cluster.backplane.state() != State::Up || cluster.backplane.has_room() {
            return false;
        }
        let id = self.conns[key].id;
        if !cluster.stalled.contains(&id) {
            cluster.stalled.push(id);
        }
        true
    }

    /// A publish in cluster mode: asked of Redis, its ack deferred; or refused at once (the
    /// error frame returned).
    pub(super) fn cluster_publish(
        &mut self,
        key: usize,
        request_id: Option<&RawValue>,
        topic: &TopicName<'_>,
        message_id: &str,
        payload: &RawValue,
        now: Instant,
    ) -> Option<Vec<u8>> {
        if !self.cluster_up() {
            self.stats.cluster.unavailable += 1;
            return Some(Failure::Unavailable.frame(request_id, Some(topic), &self.ts));
        }
        if self.broker.topic(topic).is_none() {
            let e = BrokerError::TopicNotFound(topic.to_string());
            return Some(Failure::from(e).frame(request_id, Some(topic), &self.ts));
        }
        let answer = self.defer_answer(key)?;
        let (head, tail) = protocol::event_parts(topic, message_id, payload, &self.ts);
        let waiting = Waiting::Publish {
            answer,
            request_id: request_id.map(|r| r.to_owned()),
            topic: topic.to_string(),
            sent: now,
        };
        let backplane = &mut self.cluster.as_mut()?.backplane;
        backplane.publish(waiting, topic, message_id, head, tail, now);
        None
    }

    /// A topic change in cluster mode, its HTTP answer deferred until Redis has made it.
    pub(super) fn cluster_change(
        &mut self,
        key: usize,
        change: Change,
        headers: Vec<(&'static str, String)>,
        keep_alive: bool,
        http10: bool,
        now: Instant,
    ) {
        let Some(answer) = self.defer_answer(key) else {
            return;
        };
        if !keep_alive {
            self.conns[key].marks.drain_after_answers = true;
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let b = &mut cluster.backplane;
        let (name, epoch) = match &change {
            Change::Create { name, epoch } => (name.clone(), Some(epoch.clone())),
            Change::Delete { name } => (name.clone(), None),
        };
        let waiting = Waiting::Change {
            answer,
            change,
            headers,
            keep_alive,
            http10,
            sent: now,
        };
        match epoch {
            Some(epoch) => b.create(waiting, &name, &epoch, now),
            None => b.delete(waiting, &name, now),
        }
    }

    /// Applies everything the backplane reported since the last call.
    pub fn cluster_events(&mut self, now: Instant) {
        loop {
            let Some(cluster) = self.cluster.as_mut() else {
                return;
            };
            let Some(event) = cluster.backplane.next_event() else {
                break;
            };
            match event {
                Event::Answer { ticket, outcome } => self.on_answer(ticket, outcome, now),
                Event::TopicCreated { name, epoch } => self.on_topic_created(&name, &epoch),
                Event::TopicDeleted { name } => {
                    if let Ok(subscribers) = self.broker.delete_topic(&name) {
                        crate::log!(Level::Debug, "cluster_topic_deleted", "topic" => name.as_str(), "subscribers" => subscribers.len());
                        self.apply(rest::Effect::TopicDeleted {
                            topic: name,
                            subscribers,
                        });
                    }
                }
                Event::Deliver { topic, seq, event } => self.on_deliver(&topic, seq, &event),
                Event::Reset { topic, epoch } => self.on_reset(&topic, &epoch),
                Event::Up => {
                    crate::log!(Level::Info, "cluster_engine_up", "topics" => self.broker.topic_count());
                }
                Event::Down => {
                    crate::log!(Level::Warn, "cluster_engine_down", "topics" => self.broker.topic_count());
                }
            }
        }
        self.resume_stalled();
    }

    /// Connections paced for the window go on once it has room again.
    fn resume_stalled(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.stalled.is_empty()
            || (cluster.backplane.state() == State::Up && !cluster.backplane.has_room())
        {
            return;
        }
        for id in std::mem::take(&mut cluster.stalled) {
            if let Some(key) = self.key_of(id) {
                self.resume_reading(key);
            }
        }
    }

    fn on_answer(&mut self, ticket: Waiting, outcome: Outcome, now: Instant) {
        if outcome == Outcome::Unavailable {
            self.stats.cluster.unavailable += 1;
        }
        let ts = self.ts;
        match ticket {
            Waiting::Publish {
                answer,
                request_id,
                topic,
                sent,
            } => {
                self.record_round_trip(sent, now);
                let rid = request_id.as_deref();
                let frame = match outcome {
                    Outcome::Published { seq } | Outcome::Duplicate { seq } => {
                        let duplicate = matches!(outcome, Outcome::Duplicate { .. });
                        if duplicate {
                            self.stats.messages.duplicates += 1;
                        } else {
                            self.stats.messages.published += 1;
                        }
                        let mut ack = Ack::new(rid, &topic, &ts);
                        ack.seq = Some(seq);
                        ack.duplicate = duplicate.then_some(true);
                        protocol::text_frame(&ack)
                    }
                    Outcome::NotFound => Failure::from(BrokerError::TopicNotFound(topic.clone()))
                        .frame(rid, Some(&topic), &ts),
                    _ => Failure::Unavailable.frame(rid, Some(&topic), &ts),
                };
                self.complete_answer(answer, vec![frame], now);
            }
            Waiting::Change {
                answer,
                change,
                headers,
                keep_alive,
                http10,
                sent,
            } => {
                self.record_round_trip(sent, now);
                let name = match &change {
                    Change::Create { name, .. } | Change::Delete { name } => name.clone(),
                };
                let result = match outcome {
                    Outcome::Created { .. } | Outcome::Deleted => Ok(()),
                    Outcome::Exists => Err(BrokerError::TopicExists(name).into()),
                    Outcome::Limit => Err(BrokerError::TopicLimit(self.config.max_topics).into()),
                    Outcome::NotFound => Err(BrokerError::TopicNotFound(name).into()),
                    _ => Err(Failure::Unavailable),
                };
                let response = rest::change_response(&change, result, headers);
                let bytes = response.encode(keep_alive && !self.shutting_down, http10);
                self.complete_answer(answer, vec![bytes], now);
            }
        }
    }

    fn record_round_trip(&mut self, sent: Instant, now: Instant) {
        let us = now.saturating_duration_since(sent).as_micros() as u64;
        self.stats.cluster.round_trip_us.record(us);
    }

    fn on_topic_created(&mut self, name: &str, epoch: &str) {
        let Ok(topic) = TopicName::new(name) else {
            crate::log!(Level::Warn, "cluster_topic_refused", "topic" => name, "reason" => "invalid name");
            return;
        };
        match self.broker.create_topic(&topic, epoch) {
            Ok(()) => {}
            Err(BrokerError::TopicExists(_)) => self.on_reset(name, epoch),
            Err(e) => {
                crate::log!(Level::Warn, "cluster_topic_refused", "topic" => name, "reason" => e.to_string());
            }
        }
    }

    fn on_deliver(&mut self, topic: &str, seq: u64, event: &[u8]) {
        let frame: Rc<[u8]> = Rc::from(encode_frame(OpCode::Text, event));
        let mut targets = std::mem::take(&mut self.fanout);
        targets.clear();
        match self.broker.deliver(topic, seq, frame.clone()) {
            Some(subscribers) => targets.extend_from_slice(subscribers),
            None => {
                self.fanout = targets;
                return;
            }
        }
        self.fanout = targets;
        self.fan_out(&frame);
    }

    fn on_reset(&mut self, topic: &str, epoch: &str) {
        let Some((seq, subscribers)) = self.broker.restart(topic, epoch) else {
            return;
        };
        let subscribers = subscribers.to_vec();
        self.stats.cluster.resets += 1;
        crate::log!(Level::Warn, "cluster_topic_reset", "topic" => topic, "epoch" => epoch, "subscribers" => subscribers.len());
        let notice = protocol::reset_frame(topic, epoch, seq, &self.ts);
        for id in subscribers {
            if let Some(key) = self.live_ws(id) {
                self.push(key, Chunk::Owned(notice.clone()), Bound::Counted);
            }
        }
    }
}
