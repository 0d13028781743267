//! The backplane's connection life, and the setup helpers the other modules' tests share.

use super::*;

/// A backplane connected, its setup and the data set's identity answered: the registry's
/// reply is next.
pub(super) fn booted(now: Instant) -> Backplane<u32> {
    let mut b = backplane();
    b.connected(now);
    b.received(&b"+OK\r\n".repeat(3 + scripts::ALL.len()), now)
        .unwrap();
    b.received(b"$4\r\nabcd\r\n", now).unwrap();
    b
}

pub(super) fn backplane() -> Backplane<u32> {
    let settings = Settings {
        max_topics: 10,
        history_size: 100,
        history_bytes: 1 << 20,
        max_held: 10,
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
