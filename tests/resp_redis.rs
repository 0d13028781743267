//! The RESP codec against a real redis-server: every kind of reply the cluster mode will read,
//! decoded in whatever pieces the socket delivers.

mod common;

use common::redis::Redis;
use pubsub::cluster::link::Arrived;
use pubsub::resp::Value;

fn bulk(s: &[u8]) -> Value {
    Value::Bulk(s.to_vec())
}

#[test]
fn replies_of_every_kind_decode_as_redis_sends_them() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.connect();
    // Binary-safe values: CRLF and NUL inside a bulk string.
    let odd = b"a\r\nb\0c";
    assert_eq!(c.call(&[b"SET", b"k", odd]), Value::Simple(b"OK".to_vec()));
    assert_eq!(c.call(&[b"GET", b"k"]), bulk(odd));
    assert_eq!(c.call(&[b"GET", b"missing"]), Value::Null);
    assert_eq!(c.call(&[b"INCRBY", b"n", b"-5"]), Value::Integer(-5));
    let Value::Error(e) = c.call(&[b"NO-SUCH-COMMAND"]) else {
        panic!("an unknown command is an error")
    };
    assert!(
        e.starts_with(b"ERR unknown command"),
        "{}",
        String::from_utf8_lossy(&e)
    );
    // A script's nested reply, and a script's error.
    let script: &[u8] = b"return {1, {'two', ARGV[1]}, redis.call('GET', KEYS[1])}";
    assert_eq!(
        c.call(&[b"EVAL", script, b"1", b"k", b"x"]),
        Value::Array(vec![
            Value::Integer(1),
            Value::Array(vec![bulk(b"two"), bulk(b"x")]),
            bulk(odd),
        ])
    );
    // A megabyte, read 1,000 bytes at a time: decoded once, not again from its start.
    let big = vec![b'z'; 1 << 20];
    c.call(&[b"SET", b"big", &big]);
    c.send(&[b"GET", b"big"]);
    assert_eq!(c.recv_in(1000), Value::Bulk(big));
    // Pipelined: many replies in one read.
    for i in 0..100u32 {
        c.send(&[b"RPUSH", b"list", i.to_string().as_bytes()]);
    }
    for i in 1..=100 {
        assert_eq!(c.recv(), Value::Integer(i));
    }
    // Streams, as history will be kept: entries are arrays of an id and field/value pairs.
    c.call(&[b"XADD", b"s", b"1-0", b"f", b"{\"seq\":1}"]);
    assert_eq!(
        c.call(&[b"XRANGE", b"s", b"-", b"+"]),
        Value::Array(vec![Value::Array(vec![
            bulk(b"1-0"),
            Value::Array(vec![bulk(b"f"), bulk(b"{\"seq\":1}")]),
        ])])
    );
}

#[test]
fn resp3_maps_and_pushes_and_resp2_pubsub_messages() {
    let Some(redis) = Redis::start() else { return };
    // RESP2: a subscription's messages are arrays.
    let mut sub = redis.connect();
    assert_eq!(
        sub.call(&[b"SUBSCRIBE", b"ch"]),
        Value::Array(vec![bulk(b"subscribe"), bulk(b"ch"), Value::Integer(1)])
    );
    let mut publisher = redis.connect();
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"ch", b"hello"]),
        Value::Integer(1)
    );
    assert_eq!(
        sub.recv(),
        Value::Array(vec![bulk(b"message"), bulk(b"ch"), bulk(b"hello")])
    );
    // RESP3: HELLO answers a map; a subscription's messages are pushes.
    let mut c = redis.connect();
    let Value::Map(hello) = c.call(&[b"HELLO", b"3"]) else {
        panic!("HELLO 3 answers a map")
    };
    assert!(
        hello.contains(&(bulk(b"proto"), Value::Integer(3))),
        "{hello:?}"
    );
    assert_eq!(
        c.call(&[b"SUBSCRIBE", b"ch3"]),
        Value::Push(vec![bulk(b"subscribe"), bulk(b"ch3"), Value::Integer(1)])
    );
    publisher.call(&[b"PUBLISH", b"ch3", b"x"]);
    assert_eq!(
        c.recv_in(3),
        Value::Push(vec![bulk(b"message"), bulk(b"ch3"), bulk(b"x")])
    );
    // RESP3 doubles and booleans come back typed.
    let mut d = redis.connect();
    d.call(&[b"HELLO", b"3"]);
    assert_eq!(d.call(&[b"INCRBYFLOAT", b"f", b"1.5"]), bulk(b"1.5"));
    assert_eq!(
        d.call(&[b"EVAL", b"return redis.setresp(3) or {double=2.5}", b"0"]),
        Value::Double(b"2.5".to_vec())
    );
}

#[test]
fn a_link_pipelines_thousands_of_commands_and_matches_every_reply_to_its_own() {
    use pubsub::cluster::link::{Link, LinkLimits};
    use std::io::{Read, Write};
    let Some(redis) = Redis::start() else { return };
    let mut socket = std::os::unix::net::UnixStream::connect(&redis.socket).unwrap();
    socket.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let now = std::time::Instant::now();
    let mut link: Link<u64> = Link::new(LinkLimits {
        max_in_flight: 5000,
        ..LinkLimits::default()
    });
    for i in 0..5000u64 {
        link.send(i, &[b"INCR", b"counter"], now).unwrap();
    }
    assert!(!link.has_room(), "the window is full at 5,000");
    // All of it in as few writes as the socket takes, then the replies in reads of 4 KiB.
    while !link.unwritten().is_empty() {
        let n = socket.write(link.unwritten()).unwrap();
        link.wrote(n);
    }
    let mut buf = [0u8; 4096];
    let mut next = 0;
    while next < 5000 {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0);
        link.received(&buf[..n]).unwrap();
        while let Some(Arrived::Reply(tag, value)) = link.next_arrived() {
            assert_eq!((tag, value), (next, Value::Integer(next as i64 + 1)));
            next += 1;
        }
    }
    assert_eq!(link.in_flight(), 0);
}

/// What cluster mode can build on: on one RESP3 connection subscribed to a topic's channel, the
/// script that publishes to it is answered *after* the event it published reaches that same
/// connection, and further commands are served while subscribed. So an instance that publishes
/// and follows on one connection sees its own event before the publish's reply.
#[test]
fn on_one_resp3_connection_a_published_event_comes_before_the_reply_that_published_it() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.connect();
    c.call(&[b"HELLO", b"3"]);
    c.send(&[b"SUBSCRIBE", b"ch"]);
    assert_eq!(
        c.recv(),
        Value::Push(vec![bulk(b"subscribe"), bulk(b"ch"), Value::Integer(1)])
    );
    let script: &[u8] = b"redis.call('PUBLISH', 'ch', ARGV[1]) return 7";
    for round in 0..50 {
        let n = round.to_string();
        c.send(&[b"EVAL", script, b"0", n.as_bytes()]);
        assert_eq!(
            c.recv(),
            Value::Push(vec![bulk(b"message"), bulk(b"ch"), bulk(n.as_bytes())]),
            "round {round}"
        );
        assert_eq!(c.recv(), Value::Integer(7), "round {round}");
    }
    // Another connection's publish reaches it between its own replies, never inside one.
    let mut other = redis.connect();
    other.call(&[b"PUBLISH", b"ch", b"from-other"]);
    assert_eq!(
        c.recv(),
        Value::Push(vec![bulk(b"message"), bulk(b"ch"), bulk(b"from-other")])
    );
    assert_eq!(c.call(&[b"PING"]), Value::Simple(b"PONG".to_vec()));
}
