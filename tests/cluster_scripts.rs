//! Cluster mode's Lua scripts against a real redis-server: creates bounded cluster-wide and
//! atomically, seqs gap-free under concurrent publishers, publishes idempotent by message id
//! within the retained history, history bounded by count and bytes, deletion after the last
//! event, reads from any seq.

mod common;

use common::redis::{Redis, RedisConn};
use pubsub::cluster::scripts::{self, TopicKeys};
use pubsub::resp::Value;

fn eval(c: &mut RedisConn, script: &str, keys: &[&str], args: &[&[u8]]) -> Value {
    let n = keys.len().to_string();
    let mut all: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), n.as_bytes()];
    all.extend(keys.iter().map(|k| k.as_bytes()));
    all.extend_from_slice(args);
    c.call(&all)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

fn create(c: &mut RedisConn, name: &str, epoch: &str, max: usize) -> Vec<Value> {
    let k = TopicKeys::new(name);
    let max = max.to_string();
    items(eval(
        c,
        scripts::CREATE,
        &[scripts::TOPICS, &k.meta, &k.history, &k.ids],
        &[name.as_bytes(), epoch.as_bytes(), max.as_bytes()],
    ))
}

/// Publishes `payload` as message `id` with a history of `size` events and `bytes` bytes:
/// (status, seq), status 1 published, 2 a duplicate (of that seq), 0 no such topic.
fn publish(
    c: &mut RedisConn,
    name: &str,
    id: &str,
    payload: &str,
    size: u32,
    bytes: u32,
) -> (i64, i64) {
    let each = publish_batch(c, name, &[(id, payload)], size, bytes);
    match each.first() {
        None => (0, 0),
        Some(&seq) if seq > 0 => (1, seq),
        Some(&seq) => (2, -seq),
    }
}

/// Publishes `events` (message id, payload) in one call: each one's seq, negative for a
/// duplicate; empty for no such topic.
fn publish_batch(
    c: &mut RedisConn,
    name: &str,
    events: &[(&str, &str)],
    size: u32,
    bytes: u32,
) -> Vec<i64> {
    let k = TopicKeys::new(name);
    let heads: Vec<String> = events
        .iter()
        .map(|(id, payload)| {
            format!(
                r#"{{"type":"event","topic":"{name}","message":{{"id":"{id}","payload":{payload}}},"seq":"#
            )
        })
        .collect();
    let (size, bytes) = (size.to_string(), bytes.to_string());
    let mut argv: Vec<&[u8]> = vec![
        name.as_bytes(),
        size.as_bytes(),
        bytes.as_bytes(),
        k.channel.as_bytes(),
    ];
    for ((id, _), head) in events.iter().zip(&heads) {
        argv.extend([
            id.as_bytes(),
            head.as_bytes(),
            br#","ts":"2026-12-02T00:00:00.000Z"}"#,
        ]);
    }
    let reply = items(eval(
        c,
        scripts::PUBLISH,
        &[scripts::TOPICS, &k.meta, &k.history, &k.ids],
        &argv,
    ));
    if int(&reply[0]) == 0 {
        return Vec::new();
    }
    reply[2..].iter().map(int).collect()
}

fn delete(c: &mut RedisConn, name: &str) -> Vec<Value> {
    let k = TopicKeys::new(name);
    items(eval(
        c,
        scripts::DELETE,
        &[scripts::TOPICS, &k.meta, &k.history, &k.ids],
        &[name.as_bytes(), k.channel.as_bytes()],
    ))
}

/// `f(i, connection)` on `n` threads at once, each with its own connection: their results.
fn at_once<R: Send>(redis: &Redis, n: usize, f: impl Fn(usize, RedisConn) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let c = redis.connect();
                s.spawn(move || f(i, c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The retained seqs from `from` on, and the topic's last seq.
fn read(c: &mut RedisConn, name: &str, from: u64) -> (Vec<u64>, i64) {
    let k = TopicKeys::new(name);
    let reply = items(eval(
        c,
        scripts::READ,
        &[scripts::TOPICS, &k.meta, &k.history],
        &[name.as_bytes(), from.to_string().as_bytes(), b"1000"],
    ));
    assert_eq!(int(&reply[0]), 1, "{reply:?}");
    let seqs = items(reply[3].clone())
        .into_iter()
        .map(|entry| {
            let entry = items(entry);
            let id = String::from_utf8(entry[0].as_bytes().unwrap().to_vec()).unwrap();
            id.trim_end_matches("-0").parse().unwrap()
        })
        .collect();
    (seqs, int(&reply[2]))
}

#[test]
fn concurrent_creates_on_several_connections_never_pass_the_limit_and_a_name_wins_once() {
    let Some(redis) = Redis::start() else { return };
    // Four "instances" create the same 60 names at once, with a limit of 50.
    let wins: Vec<Vec<String>> = at_once(&redis, 4, |i, mut c| {
        (0..60)
            .filter_map(|n| {
                let name = format!("t{n}");
                let reply = create(&mut c, &name, &format!("e{i}"), 50);
                (int(&reply[0]) == 1).then_some(name)
            })
            .collect()
    });
    let mut all: Vec<String> = wins.into_iter().flatten().collect();
    assert_eq!(all.len(), 50, "exactly the limit");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 50, "no name created twice");
    let mut c = redis.connect();
    assert_eq!(
        c.call(&[b"HLEN", scripts::TOPICS.as_bytes()]),
        Value::Integer(50)
    );
    let again = create(&mut c, &all[0], "e9", 100);
    assert_eq!(again[1], Value::Bulk(b"exists".to_vec()));
    let over = create(&mut c, "one-more", "e9", 50);
    assert_eq!(over[1], Value::Bulk(b"limit".to_vec()));
}

#[test]
fn seqs_are_gap_free_under_concurrent_publishers_and_reach_subscribers_in_order() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.connect();
    create(&mut c, "t", "ep1", 10);
    let mut sub = redis.connect();
    sub.call(&[b"SUBSCRIBE", TopicKeys::new("t").channel.as_bytes()]);
    let seqs: Vec<i64> = at_once(&redis, 3, |p, mut c| {
        (0..300)
            .map(|n| {
                let id = format!("00000000-0000-4000-8000-{p:04x}{n:08x}");
                let (status, seq) = publish(&mut c, "t", &id, "1", 100, 1 << 20);
                assert_eq!(status, 1);
                seq
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=900).collect::<Vec<i64>>(),
        "every seq once, none missing"
    );
    // The channel carried them in seq order, each as epoch:seq:event.
    for want in 1..=900 {
        let msg = items(sub.recv());
        let text = String::from_utf8(msg[2].as_bytes().unwrap().to_vec()).unwrap();
        let prefix = format!("ep1:{want}:");
        assert!(text.starts_with(&prefix), "{text}");
        assert!(
            text.ends_with(&format!(
                r#""seq":{want},"ts":"2026-12-02T00:00:00.000Z"}}"#
            )),
            "{text}"
        );
    }
    // The history keeps the newest 100, readable from any seq.
    let (retained, last) = read(&mut c, "t", 0);
    assert_eq!(
        (retained.first(), retained.last(), retained.len(), last),
        (Some(&801), Some(&900), 100, 900)
    );
    // From a seq on, that one included: the reader sees whether it still holds the same event.
    assert_eq!(read(&mut c, "t", 896).0, [896, 897, 898, 899, 900]);
}

#[test]
fn a_message_id_is_published_once_while_retained_and_history_holds_its_byte_bound() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.connect();
    create(&mut c, "t", "ep1", 10);
    let a = "00000000-0000-4000-8000-00000000000a";
    assert_eq!(publish(&mut c, "t", a, "1", 3, 1 << 20), (1, 1));
    assert_eq!(
        publish(&mut c, "t", a, "2", 3, 1 << 20),
        (2, 1),
        "a retry: the original seq"
    );
    for n in 0..3 {
        let id = format!("00000000-0000-4000-8000-{n:012x}");
        publish(&mut c, "t", &id, "3", 3, 1 << 20);
    }
    // `a` has left the three-event history: the same id is a new event now.
    assert_eq!(publish(&mut c, "t", a, "4", 3, 1 << 20), (1, 5));
    let k = TopicKeys::new("t");
    let Value::Array(fields) = c.call(&[b"HKEYS", k.ids.as_bytes()]) else {
        panic!("no ids hash")
    };
    let mut fields: Vec<String> = fields
        .iter()
        .map(|f| String::from_utf8(f.as_bytes().unwrap().to_vec()).unwrap())
        .collect();
    fields.sort();
    // Each retained event's id and its record for trimming (`#<seq>`), and the padding.
    let mut want: Vec<String> = ["#3", "#4", "#5", a, "~"].map(String::from).into();
    want.extend([1, 2].map(|n| format!("00000000-0000-4000-8000-{n:012x}")));
    want.sort();
    assert_eq!(fields, want, "ids only of what is retained");
    assert_eq!(
        c.call(&[b"OBJECT", b"ENCODING", k.ids.as_bytes()]),
        Value::Bulk(b"hashtable".to_vec()),
        "a lookup by id is not a scan"
    );
    // By bytes: events of about 140 bytes under a 400-byte bound keep two.
    let pad = format!("\"{}\"", "x".repeat(40));
    for n in 0x20..0x2a {
        let id = format!("00000000-0000-4000-8000-{n:012x}");
        publish(&mut c, "t", &id, &pad, 100, 400);
    }
    let (retained, last) = read(&mut c, "t", 0);
    assert_eq!((retained, last), (vec![14, 15], 15));
    let Value::Bulk(b) = c.call(&[b"HGET", k.meta.as_bytes(), b"b"]) else {
        panic!("no byte count")
    };
    let bytes: usize = String::from_utf8(b).unwrap().parse().unwrap();
    assert!(bytes <= 400 && bytes > 200, "{bytes}");
    // An event larger than the byte bound is published but not retained.
    let big = format!("\"{}\"", "y".repeat(500));
    assert_eq!(
        publish(
            &mut c,
            "t",
            "00000000-0000-4000-8000-0000000000ff",
            &big,
            100,
            400
        ),
        (1, 16)
    );
    assert_eq!(read(&mut c, "t", 0).0, [14, 15]);
    // Trimming steps over the seq that was not retained.
    for n in 0x30..0x32 {
        let id = format!("00000000-0000-4000-8000-{n:012x}");
        publish(&mut c, "t", &id, &pad, 100, 400);
    }
    assert_eq!(read(&mut c, "t", 0), (vec![17, 18], 18));
}

#[test]
fn a_batch_publishes_in_order_and_an_id_twice_in_it_is_a_duplicate_of_the_first() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.connect();
    create(&mut c, "t", "ep1", 10);
    let [a, b] = ["a", "b"].map(|n| format!("00000000-0000-4000-8000-00000000000{n}"));
    let each = publish_batch(
        &mut c,
        "t",
        &[(&a, "1"), (&b, "2"), (&a, "3")],
        100,
        1 << 20,
    );
    assert_eq!(each, [1, 2, -1]);
    assert_eq!(read(&mut c, "t", 0), (vec![1, 2], 2));
    assert!(publish_batch(&mut c, "gone", &[(&a, "1")], 100, 1 << 20).is_empty());
}

#[test]
fn deletion_follows_the_last_event_and_a_new_incarnation_starts_over() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.connect();
    let k = TopicKeys::new("t");
    create(&mut c, "t", "ep1", 10);
    let mut sub = redis.connect();
    sub.call(&[b"SUBSCRIBE", k.channel.as_bytes()]);
    publish(
        &mut c,
        "t",
        "00000000-0000-4000-8000-000000000001",
        "1",
        10,
        1 << 20,
    );
    let deleted = delete(&mut c, "t");
    assert_eq!(deleted, [Value::Integer(1), Value::Bulk(b"ep1".to_vec())]);
    assert!(items(sub.recv())[2]
        .as_bytes()
        .unwrap()
        .starts_with(b"ep1:1:"));
    assert_eq!(
        items(sub.recv())[2],
        Value::Bulk(b"ep1:0:D".to_vec()),
        "after the last event"
    );
    assert_eq!(
        publish(
            &mut c,
            "t",
            "00000000-0000-4000-8000-000000000002",
            "1",
            10,
            1 << 20
        ),
        (0, 0)
    );
    // Created again: a new epoch, seqs from 1, no history or ids of the old one.
    create(&mut c, "t", "ep2", 10);
    assert_eq!(
        publish(
            &mut c,
            "t",
            "00000000-0000-4000-8000-000000000001",
            "1",
            10,
            1 << 20
        ),
        (1, 1)
    );
    assert_eq!(read(&mut c, "t", 0), (vec![1], 1));
    let gone = delete(&mut c, "nope");
    assert_eq!(gone, [Value::Integer(0)]);
}

#[test]
fn scripts_load_under_the_digest_computed_here() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.connect();
    for script in scripts::ALL {
        let digest = scripts::digest(script);
        assert_eq!(
            c.call(&[b"SCRIPT", b"LOAD", script.as_bytes()]),
            Value::Bulk(digest.clone().into_bytes())
        );
        assert_eq!(
            c.call(&[b"SCRIPT", b"EXISTS", digest.as_bytes()]),
            Value::Array(vec![Value::Integer(1)])
        );
    }
    // Called by digest, as instances will.
    let k = TopicKeys::new("t");
    let reply = c.call(&[
        b"EVALSHA",
        scripts::digest(scripts::CREATE).as_bytes(),
        b"4",
        scripts::TOPICS.as_bytes(),
        k.meta.as_bytes(),
        k.history.as_bytes(),
        k.ids.as_bytes(),
        b"t",
        b"ep",
        b"10",
    ]);
    assert_eq!(
        reply,
        Value::Array(vec![Value::Integer(1), Value::Bulk(b"ep".to_vec())])
    );
}

fn renew(c: &mut RedisConn, name: &str, seen: &str, new: &str) -> Vec<Value> {
    let k = TopicKeys::new(name);
    items(eval(
        c,
        scripts::RENEW,
        &[scripts::TOPICS, &k.meta, &k.history],
        &[
            name.as_bytes(),
            seen.as_bytes(),
            new.as_bytes(),
            k.channel.as_bytes(),
        ],
    ))
}

#[test]
fn a_renewal_wins_once_keeps_the_seqs_and_is_announced_on_the_channel() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.connect();
    let k = TopicKeys::new("t");
    create(&mut c, "t", "ep1", 10);
    let id = "00000000-0000-4000-8000-000000000001";
    publish(&mut c, "t", id, "1", 10, 1 << 20);
    let mut sub = redis.connect();
    sub.call(&[b"SUBSCRIBE", k.channel.as_bytes()]);
    let bulk = |s: &str| Value::Bulk(s.as_bytes().to_vec());
    assert_eq!(
        renew(&mut c, "t", "ep1", "ep1.a"),
        [Value::Integer(1), bulk("ep1.a")]
    );
    assert_eq!(items(sub.recv())[2], bulk("ep1.a:0:R"));
    // A second instance that saw the same: the renewal in force, nothing announced.
    assert_eq!(
        renew(&mut c, "t", "ep1", "ep1.b"),
        [Value::Integer(1), bulk("ep1.a")]
    );
    assert_eq!(renew(&mut c, "nope", "ep1", "x"), [Value::Integer(0)]);
    // The history and the message ids go on under the new epoch.
    assert_eq!(publish(&mut c, "t", id, "1", 10, 1 << 20), (2, 1));
    let next = "00000000-0000-4000-8000-000000000002";
    assert_eq!(publish(&mut c, "t", next, "1", 10, 1 << 20), (1, 2));
    assert!(items(sub.recv())[2]
        .as_bytes()
        .unwrap()
        .starts_with(b"ep1.a:2:"));
    assert_eq!(read(&mut c, "t", 0), (vec![1, 2], 2));
}
