//! A name looked up over real UDP sockets, as the loop will: a nameserver on a loopback
//! address (port 53, so the test needs the right to bind it, which CI has as root) that answers
//! only the second name resolv.conf says to try.

use std::io::Write as _;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pubsub::cluster::lookup::Lookup;

#[test]
fn a_name_is_found_through_search_domains_over_udp() {
    let Ok(server) = UdpSocket::bind("127.42.0.1:53") else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: cannot bind 127.42.0.1:53 (not root)"
        );
        return;
    };
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        // Two questions for the first name (A, AAAA), then the A question for the second.
        for _ in 0..3 {
            let (n, peer) = server.recv_from(&mut buf).unwrap();
            let q = &buf[..n];
            let mut reply = q.to_vec();
            reply[2] = 0x81;
            let asks_redis_svc = q.windows(10).any(|w| w == b"\x05redis\x03svc");
            if asks_redis_svc && q[n - 3] == 1 {
                reply[3] = 0x80;
                reply[7] = 1;
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 1, 1]);
            } else {
                reply[3] = 0x83; // no such name
            }
            server.send_to(&reply, peer).unwrap();
        }
    });
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let resolv = "nameserver 127.42.0.1\nsearch example svc\noptions ndots:1\n";
    let mut lookup = Lookup::new("redis", "127.0.0.1 localhost\n", resolv, 4242);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lookup.result().is_none() {
        assert!(Instant::now() < deadline, "no answer");
        let now = Instant::now();
        if let Some((to, query)) = lookup.next_query(now) {
            socket.send_to(&query, to).unwrap();
        }
        let mut buf = [0u8; 512];
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            lookup.answer(from, &buf[..n]);
        }
        lookup.tick(Instant::now());
    }
    assert_eq!(
        lookup.result(),
        Some(&Ok(vec!["10.1.1.1".parse().unwrap()]))
    );
    answering.join().unwrap();
}
