//! `send-cost`: what one small write to a loopback TCP socket costs the writer, by system call.
//! At low publish rates each delivery is one such call (the server makes them through
//! `pubsub::server::sys::SocketSend`), so this is the floor under the `latency` scenario on a machine.
//! The three calls take turns round by round, so the host's noise falls on all of them alike.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use pubsub::server::sys::SocketSend;
use serde_json::json;

use crate::scenario::Report;
use crate::Opts;

#[derive(Clone, Copy)]
enum Call {
    Writev,
    Sendmsg,
    Send,
}

const CALLS: [Call; 3] = [Call::Writev, Call::Sendmsg, Call::Send];

fn one(call: Call, socket: &TcpStream, frame: &[u8]) {
    let n = match call {
        Call::Writev => (&*socket).write_vectored(&[IoSlice::new(frame)]),
        Call::Send => SocketSend(socket).write(frame),
        // One buffer through sendmsg(2), to compare the calls and not the buffer counts.
        Call::Sendmsg => SocketSend(socket).sendmsg(&[IoSlice::new(frame)]),
    };
    assert_eq!(n.expect("send to a loopback socket"), frame.len());
}

/// A reader like a subscriber's client: sleeps in epoll, reads whatever arrives.
fn drain(mut readers: Vec<mio::net::TcpStream>, stop: Arc<AtomicBool>) {
    let mut poll = Poll::new().expect("poll");
    for (i, r) in readers.iter_mut().enumerate() {
        poll.registry()
            .register(r, Token(i), Interest::READABLE)
            .expect("register");
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(10)));
        for e in events.iter() {
            while let Ok(n) = readers[e.token().0].read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

pub fn send_cost(opts: &Opts) -> Report {
    let sockets = opts.subscribers.unwrap_or(100);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut writers = Vec::with_capacity(sockets);
    let mut readers = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let reader = TcpStream::connect(addr).expect("connect");
        let (writer, _) = listener.accept().expect("accept");
        writer.set_nodelay(true).expect("nodelay");
        reader.set_nonblocking(true).expect("nonblocking");
        writers.push(writer);
        readers.push(mio::net::TcpStream::from_std(reader));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || drain(readers, stop))
    };
    let frame = vec![b'x'; opts.payload.max(1)];
    let mut spent = [Duration::ZERO; 3];
    let mut rounds = [0u64; 3];
    let end = Instant::now() + opts.duration;
    let mut turn = 0;
    while Instant::now() < end {
        let i = turn % CALLS.len();
        turn += 1;
        let t0 = Instant::now();
        for w in &writers {
            one(CALLS[i], w, &frame);
        }
        spent[i] += t0.elapsed();
        rounds[i] += 1;
        // Like publishes at a few thousand per second: the reader empties the sockets between.
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let per_send =
        |i: usize| spent[i].as_secs_f64() * 1e6 / (rounds[i].max(1) as f64 * sockets as f64);
    let (writev, sendmsg, send) = (per_send(0), per_send(1), per_send(2));
    Report {
        name: "send-cost".into(),
        rows: vec![
            ("sockets", json!(sockets)),
            ("bytes_per_send", json!(frame.len())),
            ("rounds_per_call", json!(rounds[0])),
            ("writev_us_per_send", json!(writev)),
            ("sendmsg_us_per_send", json!(sendmsg)),
            ("send_us_per_send", json!(send)),
            ("sendmsg_vs_writev_percent", json!(100.0 * sendmsg / writev)),
            ("send_vs_writev_percent", json!(100.0 * send / writev)),
        ],
        ok: true,
    }
}
