//! Cluster mode end to end: several real `pubsub` processes sharing one real `redis-server`,
//! spoken to by independent clients (tungstenite, raw HTTP). Every test checks what each
//! subscriber got: every event once, in seq order, without a gap.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;

use common::cluster::{
    events, health, http, instances, kill_client, publish_many, seqs, until_seq,
};
use common::redis::Redis;
use common::{wait_until, Ws};
use serde_json::{json, Value};

#[test]
fn events_published_on_three_instances_reach_every_subscriber_once_in_seq_order() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 3, &[]);
    nodes[0].create_topic("orders");
    // The topic appears on the others as Redis tells them.
    for node in &nodes {
        wait_until("topic everywhere", || {
            node.get("/topics")["topics"][0]["name"] == "orders"
        });
    }
    let mut subscribers: Vec<Ws> = nodes
        .iter()
        .flat_map(|node| [node.ws(), node.ws()])
        .collect();
    for ws in &mut subscribers {
        ws.subscribe("orders");
    }
    const EACH: usize = 300;
    let acked: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let addr = node.addr;
                s.spawn(move || publish_many(addr, "orders", EACH, &format!("p{i}")))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let total = 3 * EACH;
    let unique: HashSet<u64> = acked.iter().copied().collect();
    assert_eq!(unique.len(), total, "every ack has a seq of its own");
    assert_eq!(
        (unique.iter().min(), unique.iter().max()),
        (Some(&1), Some(&(total as u64)))
    );
    let expected: Vec<u64> = (1..=total as u64).collect();
    let mut first: Option<Vec<Value>> = None;
    for ws in &mut subscribers {
        let got = events(ws, total);
        assert_eq!(seqs(&got), expected, "gap-free, in order, once");
        // Every instance delivers the same event under each seq.
        let bodies: Vec<Value> = got.iter().map(|e| e["message"].clone()).collect();
        match &first {
            None => first = Some(bodies),
            Some(f) => assert_eq!(&bodies, f),
        }
    }
}

#[test]
fn concurrent_creates_on_three_instances_never_pass_max_topics() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 3, &[("MAX_TOPICS", "4")]);
    let names: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    // Every name asked of every instance at once.
    let results: Vec<(String, u16)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .flat_map(|name| nodes.iter().map(move |node| (name, node.addr)))
            .map(|(name, addr)| {
                s.spawn(move || {
                    let body = format!(r#"{{"name":"{name}"}}"#);
                    let (status, v) = http(addr, "POST", "/topics", &body);
                    assert!(matches!(status, 201 | 403 | 409), "{status} {v}");
                    (name.clone(), status)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<&String> = results
        .iter()
        .filter(|(_, s)| *s == 201)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(created.len(), 4, "{results:?}");
    let once: HashSet<&String> = created.iter().copied().collect();
    assert_eq!(once.len(), 4, "a name gets one 201: {results:?}");
    for node in &nodes {
        wait_until("every instance lists the same topics", || {
            let listed: HashSet<String> = node.get("/topics")["topics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect();
            listed == once.iter().map(|s| s.to_string()).collect()
        });
    }
}

#[test]
fn a_client_resumes_on_another_instance_within_and_beyond_the_ring() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 3, &[("TOPIC_HISTORY_SIZE", "10")]);
    nodes[0].create_topic("feed");
    let mut a = nodes[0].ws();
    let ack = a.subscribe("feed");
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    publish_many(nodes[1].addr, "feed", 5, "first");
    let seen = events(&mut a, 5);
    assert_eq!(seqs(&seen), [1, 2, 3, 4, 5]);
    drop(a);
    // Missed while away: within the ring.
    publish_many(nodes[1].addr, "feed", 4, "missed");
    let mut c = nodes[2].ws();
    wait_until("instance C has the missed events", || {
        nodes[2].get("/stats")["topics"]["feed"]["messages"] == 9
    });
    let ack = c.request(json!({"type":"subscribe","topic":"feed","client_id":"c",
        "since_seq": 5, "epoch": epoch}));
    assert_eq!(
        (&ack["recovered"], &ack["replayed"], &ack["epoch"]),
        (&json!(true), &json!(4), &json!(epoch)),
        "{ack}"
    );
    assert_eq!(seqs(&events(&mut c, 4)), [6, 7, 8, 9]);
    publish_many(nodes[0].addr, "feed", 1, "live");
    assert_eq!(seqs(&events(&mut c, 1)), [10]);
    // Beyond the ring: twenty more, of which the ring keeps ten.
    publish_many(nodes[0].addr, "feed", 20, "more");
    assert_eq!(seqs(&events(&mut c, 20)), (11..=30).collect::<Vec<_>>());
    let mut b = nodes[1].ws();
    wait_until("instance B is at 30", || {
        nodes[1].get("/stats")["topics"]["feed"]["messages"] == 30
    });
    let ack = b.request(json!({"type":"subscribe","topic":"feed","client_id":"b",
        "since_seq": 10, "epoch": epoch}));
    assert_eq!(
        (&ack["recovered"], &ack["first_seq"], &ack["replayed"]),
        (&json!(false), &json!(21), &json!(10)),
        "{ack}"
    );
    assert_eq!(seqs(&events(&mut b, 10)), (21..=30).collect::<Vec<_>>());
}

#[test]
fn a_subscribe_on_one_instance_during_a_fast_stream_on_another_has_no_gap() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 2, &[]);
    nodes[0].create_topic("fast");
    const N: usize = 2000;
    std::thread::scope(|s| {
        let addr = nodes[0].addr;
        let publisher = s.spawn(move || publish_many(addr, "fast", N, "p"));
        // Subscribe once the stream is running.
        wait_until("the stream runs", || {
            nodes[1].get("/stats")["topics"]["fast"]["messages"]
                .as_u64()
                .unwrap_or(0)
                > 100
        });
        let mut ws = nodes[1].ws();
        let ack =
            ws.request(json!({"type":"subscribe","topic":"fast","client_id":"b","last_n": 5}));
        assert_eq!(ack["type"], "ack", "{ack}");
        let at = ack["seq"].as_u64().unwrap();
        let replayed = ack["replayed"].as_u64().unwrap();
        let first = at + 1 - replayed;
        let got = seqs(&events(&mut ws, N - first as usize + 1));
        assert_eq!(got, (first..=N as u64).collect::<Vec<_>>(), "ack at {at}");
        publisher.join().unwrap();
    });
}

#[test]
fn a_retried_publish_is_not_published_twice() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 2, &[]);
    nodes[0].create_topic("pay");
    let mut sub = nodes[1].ws();
    sub.subscribe("pay");
    let id = common::uuid_v4();
    let publish = json!({"type":"publish","topic":"pay","message":{"id": id, "payload": 1}});
    let mut a = nodes[0].ws();
    let first = a.request(publish.clone());
    assert_eq!((&first["seq"], first.get("duplicate")), (&json!(1), None));
    // The same message again, on the other instance: its original seq, nothing published.
    let mut b = nodes[1].ws();
    let again = b.request(publish);
    assert_eq!(
        (&again["seq"], &again["duplicate"]),
        (&json!(1), &json!(true))
    );
    publish_many(nodes[1].addr, "pay", 1, "next");
    assert_eq!(seqs(&events(&mut sub, 2)), [1, 2]);
}

#[test]
fn a_deleted_topic_is_announced_on_every_instance_after_its_last_event() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 2, &[]);
    nodes[0].create_topic("gone");
    let mut sub = nodes[1].ws();
    sub.subscribe("gone");
    let published = std::thread::scope(|s| {
        let addr = nodes[0].addr;
        let publisher = s.spawn(move || {
            let mut ws = Ws::connect(&format!("ws://{addr}/ws"));
            let mut acked = 0u64;
            for i in 0.. {
                let ack = ws.request(common::publish_msg("gone", json!(i)));
                match ack["type"].as_str() {
                    Some("ack") => acked = ack["seq"].as_u64().unwrap(),
                    _ => {
                        assert_eq!(ack["error"]["code"], "TOPIC_NOT_FOUND", "{ack}");
                        return acked;
                    }
                }
            }
            unreachable!()
        });
        wait_until("some events", || {
            nodes[1].get("/stats")["topics"]["gone"]["messages"]
                .as_u64()
                .unwrap_or(0)
                > 50
        });
        let (status, v) = nodes[1].request("DELETE", "/topics/gone", None);
        assert_eq!(status, 200, "{v}");
        publisher.join().unwrap()
    });
    let mut last = 0;
    loop {
        let v = sub.recv();
        if v["type"] == "event" {
            assert_eq!(v["seq"], last + 1);
            last += 1;
        } else {
            assert_eq!(
                (&v["type"], &v["msg"]),
                (&json!("info"), &json!("topic_deleted"))
            );
            break;
        }
    }
    assert!(
        last >= published,
        "every acked event came before the notice"
    );
    let (status, _) = nodes[0].request("DELETE", "/topics/gone", None);
    assert_eq!(status, 404);
}

#[test]
fn without_redis_changes_are_unavailable_and_connections_stay_until_it_is_back() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 2, &[]);
    nodes[0].create_topic("t");
    let mut sub = nodes[1].ws();
    sub.subscribe("t");
    publish_many(nodes[0].addr, "t", 3, "before");
    assert_eq!(seqs(&events(&mut sub, 3)), [1, 2, 3]);
    let mut publisher = nodes[0].ws();
    redis.signal("STOP");
    // A publish waits for the reply's deadline, then is UNAVAILABLE; the instance drains.
    let refused = publisher.request(json!({"type":"publish","topic":"t","request_id":"r",
        "message":{"id": common::uuid_v4(), "payload": 0}}));
    assert_eq!(
        (&refused["error"]["code"], &refused["request_id"]),
        (&json!("UNAVAILABLE"), &json!("r")),
        "{refused}"
    );
    for node in &nodes {
        wait_until("health 503", || health(node).0 == 503);
    }
    // Down, or connected again (the kernel takes the connection) and waiting for its setup.
    let engine = health(&nodes[0]).1["engine"].clone();
    assert!(engine == "down" || engine == "syncing", "{engine}");
    let (status, v) = nodes[0].request("POST", "/topics", Some(r#"{"name":"new"}"#));
    assert_eq!((status, &v["error"]["code"]), (503, &json!("UNAVAILABLE")));
    let mut late = nodes[1].ws();
    let v = late.request(json!({"type":"subscribe","topic":"t","client_id":"x"}));
    assert_eq!(v["error"]["code"], "UNAVAILABLE", "{v}");
    redis.signal("CONT");
    for node in &nodes {
        wait_until("health 200 again", || health(node).0 == 200);
    }
    // The same connections go on: nothing lost, nothing repeated.
    publish_many(nodes[0].addr, "t", 2, "after");
    let pong = publisher.request(json!({"type":"ping"}));
    assert_eq!(pong["type"], "pong");
    assert_eq!(seqs(&events(&mut sub, 2)), [4, 5]);
}

/// Publishes `n` distinct messages one at a time, each retried with its own id (on the next
/// instance when one fails or is gone) until it is acked; the acks' seqs, duplicates included.
fn publish_retrying(addrs: &[SocketAddr], topic: &str, n: usize) -> Vec<(u64, bool)> {
    let mut acks = Vec::with_capacity(n);
    let mut at = 0;
    let mut ws: Option<Socket> = None;
    for i in 0..n {
        let msg = json!({"type":"publish","topic":topic,
            "message":{"id": common::uuid_v4(), "payload": i}})
        .to_string();
        let deadline = std::time::Instant::now() + common::TIMEOUT;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "publish {i} never acked"
            );
            if ws.is_none() {
                let url = format!("ws://{}/ws", addrs[at % addrs.len()]);
                match tungstenite::connect(url) {
                    Ok((s, _)) => ws = Some(s),
                    Err(_) => {
                        at += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                }
            }
            let s = ws.as_mut().unwrap();
            let Some(text) = send_and_read(s, &msg) else {
                // The instance is gone: try the next one with the same message.
                ws = None;
                at += 1;
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] == "ack" {
                acks.push((v["seq"].as_u64().unwrap(), v["duplicate"] == true));
                break;
            }
            assert_eq!(v["error"]["code"], "UNAVAILABLE", "{v}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    acks
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// Sends `msg` and reads the next text message; `None` when the connection failed.
fn send_and_read(s: &mut Socket, msg: &str) -> Option<String> {
    s.send(tungstenite::Message::text(msg)).ok()?;
    loop {
        if let tungstenite::Message::Text(t) = s.read().ok()? {
            return Some(t.to_string());
        }
    }
}

#[test]
fn a_killed_subscription_connection_is_repaired_from_the_history_under_load() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 2, &[("TOPIC_HISTORY_SIZE", "10000")]);
    nodes[0].create_topic("k");
    let mut sub = nodes[1].ws();
    sub.subscribe("k");
    let addrs = [nodes[0].addr];
    let mut control = redis.connect();
    const N: usize = 600;
    let acks = std::thread::scope(|s| {
        let publisher = s.spawn(|| publish_retrying(&addrs, "k", N));
        for k in 1..=3 {
            wait_until("events flowing to an instance in step", || {
                health(&nodes[1]).0 == 200
                    && nodes[1].get("/stats")["topics"]["k"]["messages"]
                        .as_u64()
                        .unwrap()
                        > 150 * k
            });
            // The subscribers' instance's connection, killed while events flow.
            kill_client(&mut control, "pubsub-i1");
        }
        publisher.join().unwrap()
    });
    let seqs_acked: Vec<u64> = acks.iter().map(|a| a.0).collect();
    let (seen, notices) = until_seq(&mut sub, *seqs_acked.iter().max().unwrap());
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
    // Retries of publishes whose answers were lost were not published twice.
    let distinct: HashSet<u64> = seqs_acked.iter().copied().collect();
    assert_eq!(distinct.len(), N);
    assert_eq!(seen.len(), N, "one event per message");
    wait_until("back in step", || health(&nodes[1]).0 == 200);
    let cluster = &nodes[1].get("/stats")["cluster"];
    assert_eq!(cluster["reconnects"], 3, "{cluster}");
}

#[test]
fn an_instance_killed_mid_publish_is_retried_on_another_without_a_double() {
    let Some(redis) = Redis::start() else { return };
    let mut nodes = instances(&redis, 3, &[]);
    nodes[0].create_topic("x");
    let mut sub = nodes[2].ws();
    sub.subscribe("x");
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    const N: usize = 400;
    let acks = std::thread::scope(|s| {
        let publisher = s.spawn(|| publish_retrying(&addrs[..2], "x", N));
        wait_until("publishing", || {
            nodes[2].get("/stats")["topics"]["x"]["messages"]
                .as_u64()
                .unwrap()
                > 100
        });
        let _ = nodes[0].child.kill();
        publisher.join().unwrap()
    });
    let distinct: HashSet<u64> = acks.iter().map(|a| a.0).collect();
    assert_eq!(distinct.len(), N, "every message under one seq");
    let (seen, _) = until_seq(&mut sub, N as u64);
    assert_eq!(seen, (1..=N as u64).collect::<Vec<_>>());
    let _ = nodes.remove(0);
}

#[test]
fn redis_restarted_empty_gives_topics_a_new_epoch_and_subscribers_a_reset() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let nodes = instances(&redis, 2, &[]);
    nodes[0].create_topic("r");
    let mut sub = nodes[1].ws();
    let old_epoch = sub.subscribe("r")["epoch"].as_str().unwrap().to_string();
    publish_many(nodes[0].addr, "r", 5, "before");
    assert_eq!(seqs(&events(&mut sub, 5)), [1, 2, 3, 4, 5]);
    redis.restart();
    for node in &nodes {
        wait_until("back up", || health(node).0 == 200);
    }
    // Told, never a silent gap: the stream starts over under a new epoch.
    let notice = sub.recv();
    assert_eq!(
        (&notice["type"], &notice["msg"]),
        (&json!("info"), &json!("reset")),
        "{notice}"
    );
    let new_epoch = notice["epoch"].as_str().unwrap().to_string();
    assert_ne!(new_epoch, old_epoch);
    assert_eq!(notice["seq"], 0);
    let acked = publish_many(nodes[0].addr, "r", 2, "after");
    assert_eq!(acked, [1, 2]);
    assert_eq!(seqs(&events(&mut sub, 2)), [1, 2]);
    // A resume from the old epoch is not taken for the new one.
    let mut again = nodes[0].ws();
    let ack = again.request(json!({"type":"subscribe","topic":"r","client_id":"c",
        "since_seq": 5, "epoch": old_epoch}));
    assert_eq!(
        (&ack["recovered"], &ack["epoch"]),
        (&json!(false), &json!(new_epoch)),
        "{ack}"
    );
    assert_eq!(seqs(&events(&mut again, 2)), [1, 2]);
    assert_eq!(nodes[1].get("/stats")["cluster"]["data_lost"], 1);
}

#[test]
fn redis_restarted_with_its_data_loses_nothing() {
    let Some(mut redis) =
        Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"], false)
    else {
        return;
    };
    let nodes = instances(&redis, 2, &[]);
    nodes[0].create_topic("p");
    let mut sub = nodes[1].ws();
    let epoch = sub.subscribe("p")["epoch"].clone();
    publish_many(nodes[0].addr, "p", 5, "before");
    redis.restart();
    for node in &nodes {
        wait_until("back up", || health(node).0 == 200);
    }
    publish_many(nodes[0].addr, "p", 5, "after");
    let (seen, notices) = until_seq(&mut sub, 10);
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    let mut again = nodes[0].ws();
    let ack = again.request(json!({"type":"subscribe","topic":"p","client_id":"c",
        "since_seq": 3, "epoch": epoch}));
    assert_eq!(
        (&ack["recovered"], &ack["replayed"]),
        (&json!(true), &json!(7)),
        "{ack}"
    );
}

#[test]
fn a_slow_consumer_on_one_instance_is_cut_while_the_others_keep_up() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 2, &[("SUBSCRIBER_QUEUE_SIZE", "10")]);
    nodes[0].create_topic("s");
    let mut slow = common::raw_ws_with_a_tiny_window(&nodes[1]);
    let sub = json!({"type":"subscribe","topic":"s","client_id":"slow"}).to_string();
    slow.write_all(&common::client_frame(true, 1, sub.as_bytes()))
        .unwrap();
    let mut fast = [nodes[0].ws(), nodes[1].ws()];
    for ws in &mut fast {
        ws.subscribe("s");
    }
    wait_until("both subscribed on B", || {
        nodes[1].get("/topics")["topics"][0]["subscribers"] == 2
    });
    let big = "x".repeat(16 * 1024);
    let mut publisher = nodes[0].ws();
    for i in 0..200 {
        publisher.send(common::publish_msg("s", json!({"i": i, "pad": big})));
    }
    for ws in &mut fast {
        let got = events(ws, 200);
        assert_eq!(seqs(&got), (1..=200).collect::<Vec<_>>());
    }
    wait_until("the slow one cut", || {
        nodes[1].get("/stats")["slow_consumer_disconnects"] == 1
    });
}

#[test]
fn an_instance_that_falls_behind_redis_output_buffer_limit_is_cut_and_fills_the_gap() {
    let Some(redis) = Redis::start() else { return };
    let mut control = redis.connect();
    let set = control.call(&[
        b"CONFIG",
        b"SET",
        b"client-output-buffer-limit",
        b"pubsub 512kb 0 0",
    ]);
    assert_eq!(set, pubsub::resp::Value::Simple(b"OK".to_vec()));
    let nodes = instances(
        &redis,
        2,
        &[
            ("TOPIC_HISTORY_SIZE", "1000"),
            ("TOPIC_HISTORY_BYTES", "8388608"),
        ],
    );
    nodes[0].create_topic("b");
    let mut sub = nodes[1].ws();
    sub.subscribe("b");
    // The instance stops reading Redis: its output buffer grows past the limit.
    nodes[1].signal("STOP");
    let pad = "y".repeat(4096);
    let mut publisher = nodes[0].ws();
    for i in 0..300 {
        publisher.send(common::publish_msg("b", json!({"i": i, "pad": pad})));
    }
    for _ in 0..300 {
        assert_eq!(publisher.recv()["type"], "ack");
    }
    wait_until("Redis cut the stopped instance", || {
        let list = control.call(&[b"CLIENT", b"LIST"]);
        !String::from_utf8_lossy(list.as_bytes().unwrap()).contains("name=pubsub-i1")
    });
    nodes[1].signal("CONT");
    // It reads the history a page at a time, never enough at once to be cut again.
    let (seen, notices) = until_seq(&mut sub, 300);
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(seen, (1..=300).collect::<Vec<_>>());
    wait_until("in step", || health(&nodes[1]).0 == 200);
    let cluster = &nodes[1].get("/stats")["cluster"];
    assert_eq!(cluster["reconnects"], 1, "{cluster}");
}
