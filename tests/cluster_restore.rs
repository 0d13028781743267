//! Cluster mode when a topic cannot go on where its subscribers were. Redis came back with
//! older data than the instances saw (an RDB snapshot, or AOF `everysec` after a crash): a
//! topic's seqs went back under its epoch. The instances that saw the lost events find it and
//! give the topic a new epoch, so no subscriber takes a reused seq for the event it had, and no
//! resume is answered from the wrong events. Or events an instance missed are no longer in the
//! history: its subscribers are told they are lost, never left with a silent gap.

mod common;

use common::cluster::{health, instance, instances, kill_client, publish_many};
use common::redis::Redis;
use common::{wait_until, Ws};
use serde_json::{json, Value};

/// The next message of a subscriber, which must be the `reset` of `topic`; its new epoch.
fn reset_of(ws: &mut Ws, topic: &str) -> String {
    let notice = ws.recv();
    assert_eq!(
        (&notice["type"], &notice["msg"], &notice["topic"]),
        (&json!("info"), &json!("reset"), &json!(topic)),
        "{notice}"
    );
    notice["epoch"].as_str().unwrap().to_string()
}

/// What a subscriber gets from now on until `last`: `(seq, payload's from)` of each event.
fn events_until(ws: &mut Ws, last: u64) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.last().map(|e: &(u64, String)| e.0) != Some(last) {
        let v = ws.recv();
        assert_eq!(v["type"], "event", "{v}");
        let from = v["message"]["payload"]["from"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        got.push((v["seq"].as_u64().unwrap(), from));
    }
    got
}

fn resume(ws: &mut Ws, topic: &str, since: u64, epoch: &str) -> Value {
    ws.request(
        json!({"type": "subscribe", "topic": topic, "client_id": "again",
        "since_seq": since, "epoch": epoch}),
    )
}

#[test]
fn redis_back_from_an_older_snapshot_gives_the_topic_a_new_epoch() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let nodes = instances(&redis, 2, &[]);
    nodes[0].create_topic("s");
    let mut subs = [nodes[0].ws(), nodes[1].ws()];
    let epoch = subs[0].subscribe("s")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    subs[1].subscribe("s");
    publish_many(nodes[0].addr, "s", 5, "kept");
    let saved = redis.connect().call(&[b"SAVE"]);
    assert_eq!(saved, pubsub::resp::Value::Simple(b"OK".to_vec()));
    publish_many(nodes[0].addr, "s", 5, "lost");
    for sub in &mut subs {
        assert_eq!(events_until(sub, 10).len(), 10);
    }
    // Without `--save` nothing is written on the way down: it comes back at seq 5.
    redis.restart();
    for node in &nodes {
        wait_until("back up", || health(node).0 == 200);
    }
    for sub in &mut subs {
        let renewed = reset_of(sub, "s");
        assert!(renewed.starts_with(&format!("{epoch}.")), "{renewed}");
        // What Redis holds, again, under the new epoch; then what is published next.
        let again = events_until(sub, 5);
        assert_eq!(
            again.iter().map(|e| e.0).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert!(again.iter().all(|e| e.1 == "kept"), "{again:?}");
    }
    assert_eq!(publish_many(nodes[1].addr, "s", 1, "next"), [6]);
    for sub in &mut subs {
        assert_eq!(events_until(sub, 6), [(6, "next".to_string())]);
    }
    // A resume from the lost events' epoch is not answered with the new seq 6.
    let mut late = nodes[1].ws();
    let ack = resume(&mut late, "s", 6, &epoch);
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], json!(epoch), "{ack}");
    // Both instances found it; one renewal won.
    let found: u64 = nodes
        .iter()
        .map(|n| n.get("/stats")["cluster"]["renewed"].as_u64().unwrap())
        .sum();
    assert!((1..=2).contains(&found), "{found}");
}

#[test]
fn another_event_at_an_instance_last_seq_is_found_even_when_redis_got_past_it() {
    let Some(mut redis) = Redis::start_with(&[], true) else {
        return;
    };
    let nodes = instances(&redis, 2, &[]);
    nodes[0].create_topic("d");
    let mut subs = vec![nodes[0].ws(), nodes[1].ws()];
    let epoch = subs[0].subscribe("d")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    subs[1].subscribe("d");
    publish_many(nodes[0].addr, "d", 5, "kept");
    redis.connect().call(&[b"SAVE"]);
    publish_many(nodes[0].addr, "d", 5, "lost");
    for sub in &mut subs {
        assert_eq!(events_until(sub, 10).len(), 10);
    }
    // Back at seq 5, and behind a password the two instances lack: a third instance, new and
    // with nothing to compare, publishes six events (seqs 6..=11) before they return.
    redis.restart_with(&["--requirepass", "pw"]);
    let port = redis.port.unwrap();
    let third = instance(&format!("redis://:pw@127.0.0.1:{port}"), "third", &[]);
    subs.push(third.ws());
    subs[2].subscribe("d");
    assert_eq!(
        publish_many(third.addr, "d", 6, "new"),
        [6, 7, 8, 9, 10, 11]
    );
    assert_eq!(events_until(&mut subs[2], 11).len(), 6);
    redis.drop_password();
    for node in &nodes {
        wait_until("back up", || health(node).0 == 200);
    }
    // Redis's seq is past theirs, but the event at their seq 10 is not the one they had.
    for sub in &mut subs {
        let renewed = reset_of(sub, "d");
        assert!(renewed.starts_with(&format!("{epoch}.")), "{renewed}");
        let got = events_until(sub, 11);
        let want: Vec<(u64, String)> = (1..=11)
            .map(|s| (s, if s <= 5 { "kept" } else { "new" }.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn events_published_while_an_instance_was_away_and_trimmed_since_are_told_as_lost() {
    let Some(redis) = Redis::start() else { return };
    let nodes = instances(&redis, 2, &[("TOPIC_HISTORY_SIZE", "5")]);
    nodes[0].create_topic("g");
    let mut sub = nodes[1].ws();
    let epoch = sub.subscribe("g")["epoch"].as_str().unwrap().to_string();
    publish_many(nodes[0].addr, "g", 3, "seen");
    assert_eq!(events_until(&mut sub, 3).len(), 3);
    // The subscriber's instance stops, and its connection to Redis is cut meanwhile: what is
    // published then reaches it only from history, which keeps the last five of 50.
    nodes[1].signal("STOP");
    kill_client(&mut redis.connect(), "pubsub-i1");
    publish_many(nodes[0].addr, "g", 47, "away");
    nodes[1].signal("CONT");
    // Told, under the same epoch and from where the subscriber was; then what history holds.
    let notice = sub.recv();
    assert_eq!(
        (
            &notice["type"],
            &notice["msg"],
            &notice["epoch"],
            &notice["seq"]
        ),
        (&json!("info"), &json!("reset"), &json!(epoch), &json!(3)),
        "{notice}"
    );
    let kept: Vec<u64> = events_until(&mut sub, 50).iter().map(|e| e.0).collect();
    assert_eq!(kept, [46, 47, 48, 49, 50]);
    wait_until("back in step", || health(&nodes[1]).0 == 200);
    assert_eq!(publish_many(nodes[0].addr, "g", 1, "next"), [51]);
    assert_eq!(events_until(&mut sub, 51), [(51, "next".to_string())]);
}
