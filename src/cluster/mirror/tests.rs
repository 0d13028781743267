//! The mirror's unit tests: channel messages parsed, events in order, gaps fetched and held
//! for, resets, deletion after the last event, and a history gone back told apart.

use super::*;

fn event(epoch: &'static str, seq: u64) -> ChannelMessage<'static> {
    ChannelMessage::Event {
        epoch: epoch.as_bytes(),
        seq,
        event: b"{}",
    }
}

fn delivered(steps: &[Step]) -> Vec<u64> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Deliver { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn channel_messages_parse_and_nonsense_does_not() {
    assert_eq!(
        ChannelMessage::parse(b"e1:42:{\"a\":\"x:y\"}"),
        Some(ChannelMessage::Event {
            epoch: b"e1",
            seq: 42,
            event: b"{\"a\":\"x:y\"}"
        })
    );
    assert_eq!(
        ChannelMessage::parse(b"e1:0:D"),
        Some(ChannelMessage::Deleted { epoch: b"e1" })
    );
    for bad in [
        &b"e1:0:x"[..],
        b"e1:x:{}",
        b":1:{}",
        b"e1:1",
        b"e1::{}",
        b"e1:99999999999999999999:{}",
    ] {
        assert_eq!(
            ChannelMessage::parse(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_read_after_a_reconnect_fills_what_was_missed_and_keeps_what_arrived() {
    let mut m = Mirror::new(b"e", 5, 100);
    m.expect(8);
    let history: Vec<(u64, &[u8])> = (6..=8).map(|s| (s, &b"{}"[..])).collect();
    assert_eq!(delivered(&m.filled(b"e", &history)), [6, 7, 8]);
    // An event that arrived live (held behind a gap) but was too big to be stored.
    let mut m = Mirror::new(b"e", 5, 100);
    m.on_message(&event("e", 7));
    m.expect(7);
    assert_eq!(delivered(&m.filled(b"e", &[(6, b"{}")])), [6, 7]);
}

#[test]
fn events_in_order_are_delivered_and_repeats_dropped() {
    let mut m = Mirror::new(b"e", 5, 100);
    assert_eq!(delivered(&m.on_message(&event("e", 6))), [6]);
    assert_eq!(m.on_message(&event("e", 6)), []);
    assert_eq!(m.on_message(&event("e", 3)), []);
    assert_eq!(delivered(&m.on_message(&event("e", 7))), [7]);
    assert_eq!(m.last(), 7);
}

#[test]
fn a_gap_is_fetched_and_what_follows_waits_for_it() {
    let mut m = Mirror::new(b"e", 5, 100);
    assert_eq!(
        m.on_message(&event("e", 9)),
        [Step::Fetch { after: 5, until: 8 }]
    );
    // Arriving while the fetch is out: held, not fetched again.
    assert_eq!(m.on_message(&event("e", 10)), []);
    let history: Vec<(u64, &[u8])> = (6..=9).map(|s| (s, &b"{}"[..])).collect();
    // The fetch also brought 9 (it was stored by then): delivered once.
    assert_eq!(delivered(&m.filled(b"e", &history)), [6, 7, 8, 9, 10]);
    assert_eq!(m.last(), 10);
    assert_eq!(delivered(&m.on_message(&event("e", 11))), [11]);
}

#[test]
fn a_gap_history_cannot_fill_is_told_and_what_follows_goes_on() {
    let mut m = Mirror::new(b"e", 5, 100);
    m.on_message(&event("e", 20));
    // History kept only 15 onwards: 6..14 are gone for good.
    let history: Vec<(u64, &[u8])> = (15..=19).map(|s| (s, &b"{}"[..])).collect();
    let steps = m.filled(b"e", &history);
    assert_eq!(
        steps[0],
        Step::Reset {
            epoch: b"e".to_vec()
        }
    );
    assert_eq!(delivered(&steps), [15, 16, 17, 18, 19, 20]);
    assert_eq!(delivered(&m.on_message(&event("e", 21))), [21]);
}

#[test]
fn a_new_epoch_is_told_and_followed_from_its_start() {
    let mut m = Mirror::new(b"e", 7, 100);
    let steps = m.on_message(&event("f", 1));
    assert_eq!(
        steps[0],
        Step::Reset {
            epoch: b"f".to_vec()
        }
    );
    assert_eq!(delivered(&steps), [1]);
    // Seen first at its third event: the first two are fetched from its history.
    let mut m = Mirror::new(b"e", 7, 100);
    let steps = m.on_message(&event("g", 3));
    assert_eq!(steps[1], Step::Fetch { after: 0, until: 2 });
    let history: Vec<(u64, &[u8])> = vec![(1, b"{}"), (2, b"{}")];
    assert_eq!(delivered(&m.filled(b"g", &history)), [1, 2, 3]);
    assert_eq!((m.epoch(), m.last()), (&b"g"[..], 3));
}

#[test]
fn a_fill_read_in_pages_delivers_each_and_releases_the_held_after_the_last() {
    let mut m = Mirror::new(b"e", 2, 10);
    // Events 3..=6 are missed; 7 arrives and is held while they are read.
    assert_eq!(
        m.on_message(&event("e", 7)),
        [Step::Fetch { after: 2, until: 6 }]
    );
    let page = |seqs: &[u64]| -> Vec<(u64, &'static [u8])> {
        seqs.iter().map(|&s| (s, &b"{}"[..])).collect()
    };
    let steps = m.filled_page(b"e", &page(&[3, 4]), true);
    assert_eq!(delivered(&steps), [3, 4]);
    assert_eq!(steps.last(), Some(&Step::Fetch { after: 4, until: 6 }));
    let steps = m.filled_page(b"e", &page(&[5, 6]), false);
    assert_eq!(delivered(&steps), [5, 6, 7]);
    assert_eq!(steps.len(), 3, "no reset: {steps:?}");
}

#[test]
fn a_connection_lost_during_a_fill_reads_everything_missed_after_the_reconnect() {
    let mut m = Mirror::new(b"e", 2, 10);
    let page = |seqs: std::ops::RangeInclusive<u64>| -> Vec<(u64, &'static [u8])> {
        seqs.map(|s| (s, &b"{}"[..])).collect()
    };
    // 3..=6 missed, 7 and 8 held while the gap is read; the connection goes before the reply.
    assert_eq!(
        m.on_message(&event("e", 7)),
        [Step::Fetch { after: 2, until: 6 }]
    );
    assert_eq!(m.on_message(&event("e", 8)), []);
    m.connection_lost();
    // 9..=20 were published while away, and nothing after: no channel brings them, so the
    // read after the reconnect must go on to the last seq Redis has, past the held.
    m.expect(20);
    let steps = m.filled_page(b"e", &page(3..=10), true);
    assert_eq!(delivered(&steps), (3..=10).collect::<Vec<_>>());
    assert_eq!(
        steps.last(),
        Some(&Step::Fetch {
            after: 10,
            until: 20
        })
    );
    let steps = m.filled_page(b"e", &page(11..=20), false);
    assert_eq!(delivered(&steps), (11..=20).collect::<Vec<_>>());
    assert!(
        !steps.iter().any(|s| matches!(s, Step::Reset { .. })),
        "{steps:?}"
    );
    // What arrives on the new connection follows on.
    assert_eq!(delivered(&m.on_message(&event("e", 21))), [21]);
}

#[test]
fn held_events_are_bounded_and_deletion_comes_after_the_last_event() {
    let mut m = Mirror::new(b"e", 0, 2);
    m.on_message(&event("e", 3));
    m.on_message(&event("e", 4));
    // A third would pass the bound: the gap (1, 2) is given up and told; 3, 4, 5 go on.
    let steps = m.on_message(&event("e", 5));
    assert_eq!(
        steps[0],
        Step::Reset {
            epoch: b"e".to_vec()
        }
    );
    assert_eq!(delivered(&steps), [3, 4, 5]);
    // The fetch that was out comes back late: ignored.
    assert_eq!(m.filled(b"e", &[(1, b"{}")]), []);
    assert_eq!(m.on_message(&ChannelMessage::Deleted { epoch: b"old" }), []);
    assert_eq!(
        m.on_message(&ChannelMessage::Deleted { epoch: b"e" }),
        [Step::Deleted]
    );
}

#[test]
fn history_ending_short_of_the_gap_resets_and_goes_on_with_what_is_held() {
    let mut m = Mirror::new(b"e", 5, 100);
    m.on_message(&event("e", 10));
    let history: Vec<(u64, &[u8])> = vec![(6, b"{}"), (7, b"{}")];
    let steps = m.filled(b"e", &history);
    assert_eq!(delivered(&steps[..2]), [6, 7]);
    assert_eq!(
        steps[2],
        Step::Reset {
            epoch: b"e".to_vec()
        }
    );
    assert_eq!(delivered(&steps), [6, 7, 10]);
    assert_eq!(m.last(), 10);
}

#[test]
fn a_history_gone_back_is_told_from_one_that_went_on() {
    let mut m = Mirror::new(b"e", 0, 100);
    for seq in 1..=3 {
        m.on_message(&ChannelMessage::Event {
            epoch: b"e",
            seq,
            event: format!("{{\"n\":{seq}}}").as_bytes(),
        });
    }
    let same: [(u64, &[u8]); 2] = [(3, b"{\"n\":3}"), (4, b"{}")];
    assert!(!m.rolled_back(4, &same), "went on from the event it had");
    assert!(!m.rolled_back(3, &same[..1]), "nothing new");
    assert!(m.rolled_back(2, &[]), "its last seq went back");
    assert!(
        m.rolled_back(4, &[(3, b"{\"n\":33}"), (4, b"{}")]),
        "another event at the seq it had"
    );
    assert!(
        !m.rolled_back(9, &[(5, b"{}")]),
        "its event not retained: unknown"
    );
    // Started from a read: the event it starts at is known only when the read held it.
    let mut m = Mirror::new(b"e", 7, 100);
    assert!(!m.rolled_back(7, &[(7, b"x")]));
    m.knows_last(7, b"y");
    assert!(m.rolled_back(7, &[(7, b"x")]));
}
