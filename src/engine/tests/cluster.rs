//! Cluster mode in the engine, with the backplane fed Redis's replies by hand: publishers are
//! paced when the window to Redis is full, never refused or cut, and go on as replies come.

use super::*;
use crate::cluster::link::LinkLimits;

fn cluster_config() -> Config {
    Config {
        redis_url: Some(crate::cluster::url::RedisUrl::parse("redis://h").unwrap()),
        ..Config::default()
    }
}

/// Brings the backplane up (its setup answered, no topics) and announces topic `t`.
fn up(rig: &mut Rig) {
    let now = rig.now;
    let b = rig.engine.backplane_mut().unwrap();
    b.connected(now);
    // HELLO, SELECT, the scripts, SET NX; GET of the data set's identity; HGETALL.
    let setup = 3 + crate::cluster::scripts::ALL.len();
    b.received(&b"+OK\r\n".repeat(setup), now).unwrap();
    b.received(b"$4\r\nabcd\r\n", now).unwrap();
    b.received(b"%0\r\n", now).unwrap();
    let push = b">3\r\n$7\r\nmessage\r\n$8\r\n{ps}:ctl\r\n$12\r\ncreated:e1:t\r\n";
    b.received(push, now).unwrap();
    let n = b.unwritten().len();
    b.wrote(n);
    rig.engine.cluster_events(now);
    assert!(rig.engine.cluster_up());
}

/// Redis's answers to every batch of publishes sent since the last call, seqs from `first`;
/// returns how many publishes they answered.
fn answer_publishes(rig: &mut Rig, first: u64) -> u64 {
    let now = rig.now;
    let b = rig.engine.backplane_mut().unwrap();
    let mut decoder = crate::resp::Decoder::new(crate::resp::Limits::default());
    let sent = b.unwritten().to_vec();
    let mut at = 0;
    let mut replies = Vec::new();
    let mut seq = first;
    while let Ok((used, Some(crate::resp::Value::Array(parts)))) = decoder.decode(&sent[at..]) {
        at += used;
        // EVALSHA, digest, 4, four keys, four arguments, then three per event.
        let events = (parts.len() - 11) / 3;
        replies.extend_from_slice(format!("*{}\r\n:1\r\n$2\r\ne1\r\n", events + 2).as_bytes());
        for _ in 0..events {
            replies.extend_from_slice(format!(":{seq}\r\n").as_bytes());
            seq += 1;
        }
    }
    b.wrote(sent.len());
    b.received(&replies, now).unwrap();
    rig.engine.cluster_events(now);
    seq - first
}

#[test]
fn publishers_past_the_window_to_redis_are_paced_not_refused() {
    let mut rig = Rig::new(cluster_config());
    up(&mut rig);
    let window = LinkLimits::default().max_in_flight as u64;
    // More publishes than the window holds, 64 per connection (as many as wait for Redis).
    let per = crate::engine::MAX_DEFERRED as u64;
    let conns = window / per + 3;
    let publishers: Vec<usize> = (0..conns).map(|_| rig.websocket()).collect();
    for (c, &key) in publishers.iter().enumerate() {
        for i in 0..per {
            rig.message(key, publish("t", c as u64 * per + i));
        }
    }
    rig.tick();
    let b = rig.engine.backplane_mut().unwrap();
    assert_eq!(b.in_flight() as u64, window, "the window is full");
    assert!(!b.has_room());
    for &key in &publishers {
        // Nothing answered yet, nothing refused: the rest waits in their input.
        assert!(rig.received(key).is_empty());
        assert!(rig.is_open(key));
    }
    // Replies make room: the paced ones are asked next, and every publish is acked once.
    assert_eq!(answer_publishes(&mut rig, 1), window);
    rig.settle(10);
    let rest = conns * per - window;
    assert_eq!(rig.engine.backplane_mut().unwrap().in_flight() as u64, rest);
    assert_eq!(answer_publishes(&mut rig, window + 1), rest);
    rig.settle(10);
    let mut seqs = Vec::new();
    for &key in &publishers {
        for f in rig.received(key) {
            match f {
                Frame::Text(v) if v["type"] == "ack" => seqs.push(v["seq"].as_u64().unwrap()),
                other => panic!("{other:?}"),
            }
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=conns * per).collect::<Vec<_>>());
}

#[test]
fn a_topic_change_is_answered_when_redis_has_made_it_then_a_half_closed_connection_drains() {
    let mut rig = Rig::new(cluster_config());
    up(&mut rig);
    let key = rig.open();
    let body = r#"{"name":"u"}"#;
    rig.http(
        key,
        &format!(
            "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    // The client closes its side at once: its answer still comes, then the connection goes.
    rig.peer(key).hangup = true;
    rig.tick();
    rig.tick();
    assert!(rig.is_open(key), "waiting for Redis");
    assert!(rig.taken(key).is_empty());
    let now = rig.now;
    let b = rig.engine.backplane_mut().unwrap();
    b.received(b"*2\r\n:1\r\n$2\r\ne2\r\n", now).unwrap();
    rig.engine.cluster_events(now);
    rig.settle(10);
    let answer = String::from_utf8(rig.taken(key)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(!rig.is_open(key), "drained once answered");
}
