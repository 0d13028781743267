//! `noisy`: what flooding clients cost everybody else. K attackers send as fast as the server
//! reads them and read everything it answers (so none is ever cut as slow), while one probe
//! does ping round trips; the probe's round-trip times are reported with the attackers quiet
//! and then under attack, in the same run.
//!
//! Attack kinds: `pings` (empty WebSocket ping frames), `texts` (empty text messages, each
//! answered with an error), `replays` (subscribes asking for the whole 100-event ring), or
//! `mix` (the attackers take the three kinds in turn). The attackers share one mio loop and the
//! probe has its own thread, so the tool needs two threads whatever K is.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use pubsub::ws::frame::{decode_header, OpCode, Role};
use serde_json::json;

use crate::client::client_frame;
use crate::measure::{self, Latency};
use crate::scenario::Report;
use crate::{Opts, Target};

pub const TOPIC: &str = "noisy";
pub const RING: usize = 100;
pub const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[derive(Clone, Copy, Debug)]
enum Attack {
    Pings,
    Texts,
    Replays,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Pings => "pings",
            Attack::Texts => "texts",
            Attack::Replays => "replays",
        }
    }

    /// About 64 KiB of this attack's frames, written over and over.
    fn block(self) -> Vec<u8> {
        let mut block = Vec::new();
        while block.len() < 64 * 1024 {
            match self {
                Attack::Pings => client_frame(&mut block, OpCode::Ping, b""),
                Attack::Texts => client_frame(&mut block, OpCode::Text, b""),
                Attack::Replays => {
                    let msg = format!(
                        r#"{{"type":"subscribe","topic":"{TOPIC}","client_id":"a","last_n":{RING}}}"#
                    );
                    client_frame(&mut block, OpCode::Text, msg.as_bytes());
                }
            }
        }
        block
    }
}

fn attacks(kind: &str, n: usize) -> Result<Vec<Attack>, String> {
    let all = [Attack::Pings, Attack::Texts, Attack::Replays];
    let one = |a| Ok(vec![a; n]);
    match kind {
        "pings" => one(Attack::Pings),
        "texts" => one(Attack::Texts),
        "replays" => one(Attack::Replays),
        "mix" => Ok((0..n).map(|i| all[i % 3]).collect()),
        other => Err(format!("unknown attack kind {other}")),
    }
}

/// A blocking WebSocket connection past its handshake.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(UPGRADE.as_bytes())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other("the upgrade was refused"));
    }
    Ok(s)
}

/// Reads frames until a text frame arrives (answering pings); returns its payload.
pub fn read_text(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(h) =
            decode_header(buf, Role::Client).map_err(|e| io::Error::other(e.to_string()))?
        {
            let end = h.header_len + h.payload_len as usize;
            if buf.len() >= end {
                let payload = buf[h.header_len..end].to_vec();
                buf.drain(..end);
                match h.opcode {
                    OpCode::Text => return Ok(payload),
                    OpCode::Ping => {
                        let mut pong = Vec::new();
                        client_frame(&mut pong, OpCode::Pong, &payload);
                        s.write_all(&pong)?;
                    }
                    OpCode::Close => return Err(io::ErrorKind::ConnectionAborted.into()),
                    _ => {}
                }
                continue;
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Ping round trips for `duration`.
pub fn probe(s: &mut TcpStream, duration: Duration) -> io::Result<Latency> {
    let mut latency = Latency::new();
    let mut buf = Vec::new();
    let end = Instant::now() + duration;
    let mut id = 0u64;
    while Instant::now() < end {
        id += 1;
        let mut frame = Vec::new();
        let msg = format!(r#"{{"type":"ping","request_id":{id}}}"#);
        client_frame(&mut frame, OpCode::Text, msg.as_bytes());
        let sent = Instant::now();
        s.write_all(&frame)?;
        let answer = read_text(s, &mut buf)?;
        latency.record(sent.elapsed().as_nanos() as u64);
        if !answer.starts_with(br#"{"type":"pong""#) {
            return Err(io::Error::other("the probe's answer was not its pong"));
        }
    }
    Ok(latency)
}

#[derive(Default)]
struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
    closed: AtomicU64,
}

/// The attackers, on one non-blocking loop until `stop`: write as fast as the server reads,
/// read everything it sends.
fn attack(
    conns: Vec<(TcpStream, Attack)>,
    stop: Arc<AtomicBool>,
    traffic: Arc<Traffic>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut streams = Vec::new();
    for (i, (s, kind)) in conns.into_iter().enumerate() {
        s.set_nonblocking(true)?;
        let mut s = mio::net::TcpStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        streams.push((s, kind.block(), 0usize, false));
    }
    let mut events = Events::with_capacity(64);
    let mut scratch = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for e in events.iter() {
            let (s, block, pos, closed) = &mut streams[e.token().0];
            if *closed {
                continue;
            }
            if e.is_readable() || e.is_read_closed() {
                loop {
                    match s.read(&mut scratch) {
                        Ok(0) => {
                            *closed = true;
                            traffic.closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(n) => {
                            traffic.received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            *closed = true;
                            traffic.closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            if e.is_writable() && !*closed {
                loop {
                    match s.write(&block[*pos..]) {
                        Ok(n) => {
                            traffic.sent.fetch_add(n as u64, Ordering::Relaxed);
                            *pos = (*pos + n) % block.len();
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            *closed = true;
                            traffic.closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The topic the replay attacks ask for, with its ring full (100 events of about 200 bytes).
pub fn fill_ring(target: &Target) {
    target.create_topic(TOPIC);
    // A full ring for the replay attack to ask for.
    let mut filler = connect(target.addr).expect("connect");
    let mut buf = Vec::new();
    for i in 0..RING {
        let msg = format!(
            r#"{{"type":"publish","topic":"{TOPIC}","message":{{"id":"00000000-0000-4000-8000-{i:012x}","payload":"{}"}}}}"#,
            "x".repeat(100)
        );
        let mut frame = Vec::new();
        client_frame(&mut frame, OpCode::Text, msg.as_bytes());
        filler.write_all(&frame).expect("publish");
        read_text(&mut filler, &mut buf).expect("ack");
    }
    drop(filler);
}

pub fn noisy(opts: &Opts) -> Report {
    let n = opts.attackers;
    let kinds = match attacks(&opts.attack, n) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("pubsub-bench noisy: {e}");
            std::process::exit(2);
        }
    };
    let target = Target::pubsub(opts, &[]);
    fill_ring(&target);
    let mut probe_conn = connect(target.addr).expect("connect the probe");
    let quiet = probe(&mut probe_conn, opts.duration).expect("the probe, unloaded");

    let conns: Vec<(TcpStream, Attack)> = kinds
        .iter()
        .map(|&k| (connect(target.addr).expect("connect an attacker"), k))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = Arc::new(Traffic::default());
    let attackers = {
        let (stop, traffic) = (stop.clone(), traffic.clone());
        std::thread::spawn(move || attack(conns, stop, traffic))
    };
    // Warm up: the attackers' sockets fill and the server settles into its shares.
    let _ = probe(&mut probe_conn, Duration::from_secs(1));
    let sent0 = traffic.sent.load(Ordering::Relaxed);
    let received0 = traffic.received.load(Ordering::Relaxed);
    let cpu0 = target.pid.map(measure::process_cpu);
    let t0 = Instant::now();
    let loaded = probe(&mut probe_conn, opts.duration);
    let elapsed = t0.elapsed();
    let server_cpu = target
        .pid
        .map(measure::process_cpu)
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a));
    let sent = traffic.sent.load(Ordering::Relaxed) - sent0;
    let received = traffic.received.load(Ordering::Relaxed) - received0;
    stop.store(true, Ordering::Relaxed);
    let attack_result = attackers.join().expect("the attackers' thread");
    let closed = traffic.closed.load(Ordering::Relaxed);
    let loaded_ok = loaded.is_ok();
    let loaded = loaded.unwrap_or_else(|_| Latency::new());
    let p99 = loaded.quantile(0.99);
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let mut rows = vec![
        ("attackers", json!(n)),
        ("attack", json!(opts.attack)),
        ("attack_kinds", json!(kind_names)),
        (
            "attack_mb_per_sec_sent",
            json!(sent as f64 / 1e6 / elapsed.as_secs_f64()),
        ),
        (
            "attack_mb_per_sec_received",
            json!(received as f64 / 1e6 / elapsed.as_secs_f64()),
        ),
        ("attackers_closed", json!(closed)),
        (
            "server_cpu_percent",
            json!(server_cpu.map(|c| 100.0 * c.as_secs_f64() / elapsed.as_secs_f64())),
        ),
        ("target_p99_20ms_met", json!(p99 <= 20_000_000)),
    ];
    rows.splice(3..3, measure::probe_rows(&quiet, &loaded));
    Report {
        name: "noisy".into(),
        rows,
        ok: loaded_ok && attack_result.is_ok() && closed == 0 && loaded.n > 0,
    }
}
