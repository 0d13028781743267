//! Budgets, pauses, fair shares and the slow-consumer bound.

use super::*;
use crate::config::Config;
use crate::engine::INPUT_BUDGET;
use serde_json::json;

use crate::ws::frame::{encode_client_frame, OpCode};

#[test]
fn a_burst_that_the_socket_takes_never_cuts_a_subscriber() {
    // The defaults: at most 100 live events may wait for a connection.
    let mut rig = Rig::new(Config::default());
    create(&mut rig, "t");
    let subs: Vec<usize> = (0..10).map(|_| rig.websocket()).collect();
    for &s in &subs {
        subscribe(&mut rig, s, "t");
    }
    let publisher = rig.websocket();
    let burst: Vec<u8> = (1..=400)
        .flat_map(|i| {
            let mut f = Vec::new();
            let text = publish("t", i).to_string();
            encode_client_frame(&mut f, OpCode::Text, text.as_bytes(), [1, 2, 3, 4]);
            f
        })
        .collect();
    rig.write(publisher, &burst);
    rig.settle(10);
    for &s in &subs {
        assert_eq!(event_seqs(&rig.received(s)), (1..=400).collect::<Vec<_>>());
    }
    assert_eq!(rig.engine.stats().messages.slow_consumer_disconnects, 0);
}

#[test]
fn a_subscriber_whose_socket_refuses_is_cut_once_over_its_bound() {
    let config = Config {
        subscriber_queue_size: 5,
        ..Config::default()
    };
    let mut rig = Rig::new(config);
    create(&mut rig, "t");
    let slow = rig.websocket();
    let fine = rig.websocket();
    subscribe(&mut rig, slow, "t");
    subscribe(&mut rig, fine, "t");
    rig.peer(slow).room = 0;
    let publisher = rig.websocket();
    for i in 1..=5 {
        rig.message(publisher, publish("t", i));
    }
    rig.settle(5);
    // Five wait for the slow one: at its bound, not over it.
    assert_eq!(rig.engine.stats().messages.slow_consumer_disconnects, 0);
    rig.message(publisher, publish("t", 6));
    rig.settle(5);
    let stats = rig.engine.stats();
    assert_eq!(stats.messages.slow_consumer_disconnects, 1);
    assert_eq!(stats.connections.closes_sent.get(&1008), Some(&1));
    assert_eq!(rig.engine.broker().subscription_count(), 1);
    assert_eq!(event_seqs(&rig.received(fine)), [1, 2, 3, 4, 5, 6]);
    // Once it reads, it finds the notice and the close frame, and none of the events.
    rig.peer(slow).room = usize::MAX;
    rig.settle(5);
    let got = rig.received(slow);
    assert_eq!(kinds(&got), ["error", "Close(1008)"]);
    match &got[0] {
        Frame::Text(v) => assert_eq!(v["error"]["code"], "SLOW_CONSUMER"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_that_does_not_read_its_answers_is_paced_not_cut() {
    let mut rig = Rig::new(Config::default());
    let key = rig.websocket();
    rig.peer(key).room = 0;
    let many: Vec<u8> = (0..20_000)
        .flat_map(|i| {
            let mut f = Vec::new();
            encode_client_frame(
                &mut f,
                OpCode::Text,
                ping(i).to_string().as_bytes(),
                [1, 2, 3, 4],
            );
            f
        })
        .collect();
    rig.write(key, &many);
    for _ in 0..100 {
        rig.tick();
    }
    // Reading stopped once the answers waiting passed the pause threshold; nothing is lost.
    let unread = rig.peer(key).unread.len();
    assert!(
        unread > 0,
        "the server kept reading a client that does not read"
    );
    assert!(rig.is_open(key));
    rig.peer(key).room = usize::MAX;
    rig.settle(1000);
    let got = rig.received(key);
    assert_eq!(got.len(), 20_000);
    for (i, f) in got.iter().enumerate() {
        match f {
            Frame::Text(v) => assert_eq!(v["request_id"], i as u64),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rig.engine.stats().messages.slow_consumer_disconnects, 0);
}

#[test]
fn a_flooding_client_gets_its_budget_per_tick_and_others_are_served_in_the_same_tick() {
    let mut rig = Rig::new(Config::default());
    let floods: Vec<usize> = (0..2).map(|_| rig.websocket()).collect();
    let probe = rig.websocket();
    // Empty WebSocket pings, as many as one read holds.
    let mut flood = Vec::new();
    while flood.len() < READ_BYTES {
        encode_client_frame(&mut flood, OpCode::Ping, b"", [1, 2, 3, 4]);
    }
    for &f in &floods {
        rig.write(f, &flood);
    }
    rig.message(probe, ping(7));
    rig.tick();
    assert_eq!(kinds(&rig.received(probe)), ["pong"]);
    for &f in &floods {
        let pongs = rig.received(f).len();
        assert_eq!(pongs, INPUT_BUDGET as usize, "one tick's share");
    }
    assert!(
        rig.engine.has_pending_work(),
        "the rest is left for later ticks"
    );
    let ticks = rig.settle(100);
    assert!(ticks > 10, "{ticks}");
    for &f in &floods {
        assert!(rig.received(f).iter().all(|p| *p == Frame::Pong(vec![])));
    }
}

#[test]
fn pipelined_requests_are_all_answered_without_waiting_for_a_timer() {
    let mut rig = Rig::new(Config::default());
    let key = rig.open();
    let total = 2400;
    rig.write(key, "GET / HTTP/1.1\r\n\r\n".repeat(total).as_bytes());
    // The time stands still: only ticks the engine asks for may finish the work.
    rig.settle(200);
    let out = String::from_utf8_lossy(&rig.taken(key)).to_string();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), total);
    assert!(rig.is_open(key));
}

#[test]
fn big_messages_get_several_reads_a_tick_and_the_others_still_theirs() {
    let mut rig = Rig::new(Config::default());
    create(&mut rig, "t");
    let sub = rig.websocket();
    subscribe(&mut rig, sub, "t");
    let publisher = rig.websocket();
    let probe = rig.websocket();
    let big = "x".repeat(16 * 1024);
    let mut input = Vec::new();
    for i in 1..=40u64 {
        let msg = json!({"type": "publish", "topic": "t", "request_id": i,
            "message": {"id": message_id(i), "payload": big}});
        encode_client_frame(
            &mut input,
            OpCode::Text,
            msg.to_string().as_bytes(),
            [1, 2, 3, 4],
        );
    }
    // 650 KiB: ten of the loop's reads, all in one tick while the budget lasts.
    rig.write(publisher, &input);
    rig.message(probe, ping(1));
    rig.tick();
    assert_eq!(event_seqs(&rig.received(sub)), (1..=40).collect::<Vec<_>>());
    assert_eq!(kinds(&rig.received(probe)), ["pong"]);
    assert!(!rig.engine.has_pending_work());
}

#[test]
fn a_ping_flood_that_is_never_read_holds_what_the_pause_allows_in_memory() {
    let mut rig = Rig::new(Config::default());
    let key = rig.websocket();
    rig.peer(key).room = 0;
    let mut flood = Vec::new();
    for _ in 0..200_000 {
        encode_client_frame(&mut flood, OpCode::Ping, b"", [1, 2, 3, 4]);
    }
    rig.write(key, &flood);
    for _ in 0..1000 {
        rig.tick();
    }
    // Each queued pong costs about 50 bytes of memory, not its 2 bytes on the wire.
    let held = rig.engine.conns[key].out.cost();
    assert!(held < crate::engine::PAUSE_BYTES + 64 * 1024, "{held}");
    let pongs = rig.engine.conns[key].out.bytes() / 2;
    assert!(pongs < 10_000, "{pongs} pongs wait");
    assert!(!rig.peer(key).unread.is_empty(), "the rest was not read");
}
