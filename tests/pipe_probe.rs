mod common;
use std::io::Write;
use std::time::{Duration, Instant};
use common::*;

#[test]
fn pipelined_heavy() {
    let server = Server::start();
    let mut s = server.connect();
    let total = 2400;
    let batch = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(total);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(batch.as_bytes()).unwrap());
    let start = Instant::now();
    let mut last = Instant::now();
    let mut worst = Duration::ZERO;
    for i in 0..total {
        let r = read_response(&mut s);
        assert_eq!(r.status, 200, "answer {i}");
        worst = worst.max(last.elapsed());
        last = Instant::now();
    }
    writer.join().unwrap();
    eprintln!("all in {:?}, worst gap {:?}", start.elapsed(), worst);
}
