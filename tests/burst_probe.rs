mod common;
use std::io::Write;
use common::*;
use serde_json::json;

#[test]
fn a_burst_of_publishes_does_not_cut_subscribers_that_keep_up() {
    let server = Server::start();
    server.create_topic("burst");
    let mut subs: Vec<Ws> = (0..10).map(|_| server.ws()).collect();
    for s in &mut subs {
        s.subscribe("burst");
    }
    let total = 400u64;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                for want in 1..=total {
                    let v = s.recv();
                    assert_eq!(v["type"], "event", "{v}");
                    assert_eq!(v["seq"], want);
                }
            })
        })
        .collect();
    let mut publisher = raw_ws(&server);
    let burst: Vec<u8> = (0..total)
        .flat_map(|i| client_frame(true, 1, publish_msg("burst", json!(i)).to_string().as_bytes()))
        .collect();
    eprintln!("burst {} bytes", burst.len());
    publisher.write_all(&burst).unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(server.get("/stats")["slow_consumer_disconnects"], 0);
}
