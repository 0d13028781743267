//! The backplane's connection life, and the setup helpers the other modules' tests share.

use super::*;

/// The registry's reply: one topic, `t`, at epoch `e1`.
pub(super) const REGISTRY_T: &[u8] = b"%1\r\n$1\r\nt\r\n$2\r\ne1\r\n";

/// A backplane connected, its setup and the data set's identity answered: the registry's
/// reply is next.
pub(super) fn booted(now: Instant) -> Backplane<u32> {
    let mut b = backplane();
    set_up(&mut b, now, "abcd");
    b
}

/// A connection made, its setup answered and the data set's identity read as `boot`: the
/// registry's reply is next.
fn set_up(b: &mut Backplane<u32>, at: Instant, boot: &str) {
    b.connected(at);
    b.received(&b"+OK\r\n".repeat(3 + scripts::ALL.len()), at)
        .unwrap();
    let boot = format!("${}\r\n{boot}\r\n", boot.len());
    b.received(boot.as_bytes(), at).unwrap();
}

/// The connection lost and made again, as [`set_up`].
fn reconnected(b: &mut Backplane<u32>, at: Instant, boot: &str) {
    b.connection_lost(at);
    set_up(b, at, boot);
}

pub(super) fn backplane() -> Backplane<u32> {
    backplane_with(100, 10)
}

pub(super) fn backplane_with(history_size: usize, max_held: usize) -> Backplane<u32> {
    let settings = Settings {
        max_topics: 10,
        history_size,
        history_bytes: 1 << 20,
        max_held,
        link: LinkLimits::default(),
    };
    Backplane::new(
        settings,
        RedisUrl::parse("redis://:pw@h/3").unwrap(),
        Instant::now(),
    )
}

#[test]
fn without_a_connection_every_request_is_unavailable_at_once() {
    let mut b = backplane();
    let now = Instant::now();
    assert!(b.wants_connection(now) && !b.has_room());
    b.publish(1, "t", "id", b"{".to_vec(), b"}".to_vec(), now);
    b.create(2, "t", "e", now);
    assert_eq!(
        [b.next_event(), b.next_event()],
        [1, 2].map(|ticket| Some(Event::Answer {
            ticket,
            outcome: Outcome::Unavailable
        }))
    );
    assert!(b.unwritten().is_empty(), "nothing was sent");
}

#[test]
fn a_connection_starts_with_its_credentials_database_scripts_and_subscriptions() {
    let mut b = backplane();
    b.connected(Instant::now());
    let setup = String::from_utf8_lossy(b.unwritten()).into_owned();
    for part in [
        "HELLO",
        "AUTH",
        "default",
        "pw",
        "SELECT",
        "$1\r\n3",
        "SCRIPT",
        "PSUBSCRIBE",
        "{ps}:c:*",
        "{ps}:boot",
    ] {
        assert!(setup.contains(part), "{part} in {setup}");
    }
    // The registry is read once the data set's identity has come back.
    assert!(!setup.contains("HGETALL"));
    let n = b.unwritten().len();
    b.wrote(n);
    let now = Instant::now();
    // HELLO, SELECT, the scripts, SET NX: their content does not matter; then GET.
    b.received(&b"+OK\r\n".repeat(3 + scripts::ALL.len()), now)
        .unwrap();
    b.received(b"$4\r\nabcd\r\n", now).unwrap();
    let next = String::from_utf8_lossy(b.unwritten()).into_owned();
    assert!(next.contains("HGETALL"), "{next}");
    // A lost connection gives up the waiting setup and backs off, doubling.
    let now = Instant::now();
    b.connection_lost(now);
    assert!(!b.wants_connection(now) && b.wants_connection(now + BACKOFF_FIRST));
    b.connected(now);
    b.connection_lost(now);
    assert!(
        !b.wants_connection(now + BACKOFF_FIRST) && b.wants_connection(now + 2 * BACKOFF_FIRST)
    );
    assert_eq!(b.next_event(), Some(Event::Down));
}

/// A history read's reply: topic `t` under `e1`, Redis's last seq, and the entries `seqs`.
fn history(last: u64, seqs: impl Iterator<Item = u64>) -> String {
    let entries: Vec<String> = seqs
        .map(|seq| {
            let id = format!("{seq}-0");
            format!(
                "*2\r\n${}\r\n{id}\r\n*4\r\n$1\r\ne\r\n$2\r\n{{}}\r\n$1\r\ni\r\n$1\r\na\r\n",
                id.len()
            )
        })
        .collect();
    format!(
        "*4\r\n:1\r\n$2\r\ne1\r\n:{last}\r\n*{}\r\n{}",
        entries.len(),
        entries.concat()
    )
}

fn delivered(b: &mut Backplane<u32>) -> Vec<u64> {
    std::iter::from_fn(|| b.next_event())
        .filter_map(|e| match e {
            Event::Deliver { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

#[test]
fn a_connection_lost_while_a_gap_was_read_reads_all_that_was_missed_when_back() {
    let now = Instant::now();
    let mut b = booted(now);
    b.received(REGISTRY_T, now).unwrap();
    b.received(history(2, 1..=2).as_bytes(), now).unwrap();
    // Event 7 comes past a gap and is held while 3..=6 are read; the connection goes first.
    b.received(
        b">4\r\n$8\r\npmessage\r\n$8\r\n{ps}:c:*\r\n$8\r\n{ps}:c:t\r\n$7\r\ne1:7:{}\r\n",
        now,
    )
    .unwrap();
    assert_eq!(delivered(&mut b), [1, 2]);
    // Back: 3..=50 are in Redis, published while away, and nothing after them.
    let later = now + Duration::from_secs(1);
    reconnected(&mut b, later, "abcd");
    b.received(REGISTRY_T, later).unwrap();
    let page = READ_PAGE as u64;
    b.wrote(b.unwritten().len());
    b.received(history(50, 2..=2 + page).as_bytes(), later)
        .unwrap();
    assert_eq!(delivered(&mut b), (3..=2 + page).collect::<Vec<_>>());
    // The read goes on past the event held before, to Redis's last seq.
    let asked = String::from_utf8_lossy(b.unwritten()).into_owned();
    assert!(
        asked.contains(&format!("{{ps}}:h:t\r\n$1\r\nt\r\n$2\r\n{}\r\n", 2 + page)),
        "{asked:?}"
    );
    b.received(history(50, 2 + page..=50).as_bytes(), later)
        .unwrap();
    assert_eq!(delivered(&mut b), (3 + page..=50).collect::<Vec<_>>());
}

#[test]
fn topics_made_again_after_a_data_loss_are_made_again_when_the_connection_went_first() {
    let now = Instant::now();
    let mut b = booted(now);
    b.received(REGISTRY_T, now).unwrap();
    b.received(history(0, std::iter::empty()).as_bytes(), now)
        .unwrap();
    // Redis restarted empty: another data set's identity.
    let back = |b: &mut Backplane<u32>, at: Instant| {
        reconnected(b, at, "wxyz1234");
        String::from_utf8_lossy(b.unwritten()).into_owned()
    };
    let later = now + Duration::from_secs(1);
    assert!(back(&mut b, later).contains("e1.wxyz1234"));
    // Gone again before the creation was answered: the identity is the one seen last time,
    // but t was not made again yet.
    let asked = back(&mut b, later + Duration::from_secs(1));
    assert!(asked.contains("e1.wxyz1234"), "{asked:?}");
    assert_eq!(b.counters().data_lost, 1, "one loss");
}

#[test]
fn a_renewal_lost_with_the_connection_is_asked_for_again() {
    let now = Instant::now();
    let mut b = booted(now);
    b.received(REGISTRY_T, now).unwrap();
    b.received(history(5, 1..=5).as_bytes(), now).unwrap();
    let back = |b: &mut Backplane<u32>, at: Instant| {
        reconnected(b, at, "abcd");
        b.wrote(b.unwritten().len());
        b.received(REGISTRY_T, at).unwrap();
        String::from_utf8_lossy(b.unwritten()).into_owned()
    };
    let later = now + Duration::from_secs(1);
    back(&mut b, later);
    // Redis came back from older data: seq 2 under the same epoch. A new epoch is asked for.
    b.wrote(b.unwritten().len());
    b.received(history(2, 2..=2).as_bytes(), later).unwrap();
    let renew = String::from_utf8_lossy(b.unwritten()).into_owned();
    assert!(renew.contains("$2\r\ne1\r\n$11\r\ne1."), "{renew:?}");
    while b.next_event().is_some() {}
    // Gone before the answer: the registry still says e1, and the seqs still went back.
    let asked = back(&mut b, later + Duration::from_secs(1));
    assert!(asked.contains("$2\r\ne1\r\n$11\r\ne1."), "{asked:?}");
    assert!(
        std::iter::from_fn(|| b.next_event()).all(|e| !matches!(e, Event::Deliver { .. })),
        "nothing delivered under the old epoch"
    );
}
