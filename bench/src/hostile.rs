//! `hostile`: the kinds of client README "Limits and worst cases" bounds, all at once against a
//! server at its defaults, beside one probe doing ping round trips. Reported: the server's peak
//! resident memory against the bound the README's formula gives for these connections, the
//! probe's latency, and how often the server cut a hostile client (each comes back at once).
//!
//! Kinds (`--attackers` connections, taken in turn): a request head a byte a second, a body a
//! byte a second, an endless chunk extension, a ping flood that never reads, a burst of 1,000
//! whole-ring replays that never reads, a WebSocket message a byte a second, a message one byte
//! short of the limit then silence, a publisher of 60 KB events filling topic histories, an
//! error flood that reads, and a publisher that never reads its acks.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use pubsub::ws::frame::OpCode;
use serde_json::json;

use crate::client::client_frame;
use crate::measure::{self, Latency};
use crate::noisy::{self, RING, TOPIC};
use crate::scenario::Report;
use crate::{Opts, Target};

/// The server's defaults this scenario's bound is computed from (README "Limits and worst
/// cases"); the server is started without any of them set.
const MAX_MESSAGE_BYTES: u64 = 64 * 1024;
const READ_BYTES: u64 = 64 * 1024;
const PAUSE_BYTES: u64 = 256 * 1024;
const MAX_QUEUE_BYTES: u64 = 1 << 20;
const TOPIC_HISTORY_BYTES: u64 = 1 << 20;
const TOPIC_HISTORY_SIZE: u64 = 100;
const ENTRY_BYTES: u64 = 48;
/// Topics the 60 KB publishers fill.
const BIG_TOPICS: usize = 10;

/// The README's bound on what one connection can hold: input (a read held back, a frame and a
/// message being assembled, each in a buffer that may have doubled) and output (the pause
/// threshold, one answer's replay and the live-event bound).
pub fn per_connection_bound() -> u64 {
    let input = 2 * (READ_BYTES + 2 * MAX_MESSAGE_BYTES);
    let output = PAUSE_BYTES.max(MAX_QUEUE_BYTES)
        + TOPIC_HISTORY_BYTES
        + 2 * TOPIC_HISTORY_SIZE * ENTRY_BYTES;
    input + output
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    SlowHead,
    SlowBody,
    ChunkExtension,
    PingFlood,
    ReplayBurst,
    SlowMessage,
    PartialMessage,
    BigPublisher,
    ErrorFlood,
    DeafPublisher,
}

const KINDS: [Kind; 10] = [
    Kind::SlowHead,
    Kind::SlowBody,
    Kind::ChunkExtension,
    Kind::PingFlood,
    Kind::ReplayBurst,
    Kind::SlowMessage,
    Kind::PartialMessage,
    Kind::BigPublisher,
    Kind::ErrorFlood,
    Kind::DeafPublisher,
];

/// What a connection of one kind sends: once at connect, then a byte a second from `drip`,
/// or `flood` over and over as fast as the server takes it; and whether it reads.
struct Script {
    prefix: Vec<u8>,
    drip: Vec<u8>,
    flood: Vec<u8>,
    reads: bool,
}

fn repeated(frame: impl Fn(&mut Vec<u8>), bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < bytes {
        frame(&mut out);
    }
    out
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SlowHead => "slow_head",
            Kind::SlowBody => "slow_body",
            Kind::ChunkExtension => "chunk_extension",
            Kind::PingFlood => "ping_flood",
            Kind::ReplayBurst => "replay_burst",
            Kind::SlowMessage => "slow_message",
            Kind::PartialMessage => "partial_message",
            Kind::BigPublisher => "big_publisher",
            Kind::ErrorFlood => "error_flood",
            Kind::DeafPublisher => "deaf_publisher",
        }
    }

    fn script(self, n: usize) -> Script {
        let upgrade = noisy::UPGRADE.as_bytes().to_vec();
        let mut s = Script {
            prefix: upgrade.clone(),
            drip: Vec::new(),
            flood: Vec::new(),
            reads: false,
        };
        match self {
            Kind::SlowHead => {
                s.prefix = b"GET /health HTTP/1.1\r\n".to_vec();
                s.drip = b"X-Slow: a\r\n".repeat(1000);
            }
            Kind::SlowBody => {
                s.prefix = b"POST /topics HTTP/1.1\r\nContent-Length: 60000\r\n\r\n".to_vec();
                s.drip = vec![b'a'; 60_000];
            }
            Kind::ChunkExtension => {
                s.prefix =
                    b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
                s.flood = vec![b'a'; 64 * 1024];
            }
            Kind::PingFlood => {
                s.flood = repeated(|o| client_frame(o, OpCode::Ping, b""), 64 * 1024);
            }
            Kind::ReplayBurst => {
                let sub = format!(
                    r#"{{"type":"subscribe","topic":"{TOPIC}","client_id":"h","last_n":{RING}}}"#
                );
                for _ in 0..1000 {
                    client_frame(&mut s.prefix, OpCode::Text, sub.as_bytes());
                }
            }
            Kind::SlowMessage => {
                let frame = framed(60_000);
                s.prefix.extend_from_slice(&frame[..8]);
                s.drip = frame[8..].to_vec();
            }
            Kind::PartialMessage => {
                let frame = framed(MAX_MESSAGE_BYTES as usize);
                s.prefix.extend_from_slice(&frame[..frame.len() - 1]);
            }
            Kind::BigPublisher => {
                let topic = format!("hostile-big-{}", (n / KINDS.len()) % BIG_TOPICS);
                // Ids of their own for 2 MB of events: each topic's history fills to its bound.
                s.flood = publishes(&topic, 60_000, 32);
                s.reads = true;
            }
            Kind::ErrorFlood => {
                s.flood = repeated(|o| client_frame(o, OpCode::Text, b"{}"), 64 * 1024);
                s.reads = true;
            }
            Kind::DeafPublisher => {
                // Repeated ids after the first 500: retries, acknowledged as duplicates.
                s.flood = publishes("hostile-deaf", 100, 500);
            }
        }
        s
    }
}

/// A text frame of `len` bytes of JSON-looking text (never valid: it is never finished).
fn framed(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    client_frame(&mut out, OpCode::Text, &vec![b' '; len]);
    out
}

fn publishes(topic: &str, pad: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let msg = format!(
            r#"{{"type":"publish","topic":"{topic}","message":{{"id":"00000000-0000-4000-8000-{i:012x}","payload":"{}"}}}}"#,
            "p".repeat(pad)
        );
        client_frame(&mut out, OpCode::Text, msg.as_bytes());
    }
    out
}

struct Conn {
    kind: Kind,
    script: Script,
    stream: TcpStream,
    /// Where the flood or the drip is; the prefix is written first.
    prefix_at: usize,
    at: usize,
    next_drip: Instant,
    connected_at: Instant,
}

#[derive(Default)]
struct Tally {
    reconnects: AtomicU64,
    received: AtomicU64,
    /// Seconds hostile connections stayed open before the server cut them, summed by kind.
    held_ms: [AtomicU64; 10],
    cut: [AtomicU64; 10],
}

fn open(addr: SocketAddr, kind: Kind, n: usize) -> io::Result<Conn> {
    let std = std::net::TcpStream::connect(addr)?;
    std.set_nodelay(true)?;
    std.set_nonblocking(true)?;
    Ok(Conn {
        kind,
        script: kind.script(n),
        stream: TcpStream::from_std(std),
        prefix_at: 0,
        at: 0,
        next_drip: Instant::now(),
        connected_at: Instant::now(),
    })
}

/// Writes what the script says is due; `Ok(false)` when the server has closed the connection.
fn push(c: &mut Conn, now: Instant) -> io::Result<bool> {
    let s = &c.script;
    loop {
        let chunk = if c.prefix_at < s.prefix.len() {
            &s.prefix[c.prefix_at..]
        } else if !s.flood.is_empty() {
            &s.flood[c.at..]
        } else if !s.drip.is_empty() && now >= c.next_drip {
            &s.drip[c.at..c.at + 1]
        } else {
            return Ok(true);
        };
        match c.stream.write(chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                if c.prefix_at < s.prefix.len() {
                    c.prefix_at += n;
                } else if !s.flood.is_empty() {
                    c.at = (c.at + n) % s.flood.len();
                } else {
                    c.at = (c.at + 1) % s.drip.len();
                    c.next_drip = now + Duration::from_secs(1);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(false),
        }
    }
}

/// Reads what the server sent (readers only); `Ok(false)` when it has closed the connection.
fn drain(c: &mut Conn, scratch: &mut [u8], tally: &Tally) -> bool {
    loop {
        match c.stream.read(scratch) {
            Ok(0) => return false,
            Ok(n) => {
                tally.received.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// The hostile connections on one loop until `stop`; each one the server cuts is opened again.
fn run(addr: SocketAddr, count: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut conns: Vec<Conn> = Vec::with_capacity(count);
    for n in 0..count {
        let mut c = open(addr, KINDS[n % KINDS.len()], n)?;
        poll.registry().register(
            &mut c.stream,
            Token(n),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(c);
    }
    let mut events = Events::with_capacity(256);
    let mut scratch = vec![0u8; 256 * 1024];
    let mut poll = poll;
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        let now = Instant::now();
        let mut gone = Vec::new();
        for e in events.iter() {
            let n = e.token().0;
            let c = &mut conns[n];
            let closed = e.is_read_closed() || e.is_error();
            let alive = if c.script.reads && e.is_readable() {
                drain(c, &mut scratch, &tally)
            } else {
                !closed
            };
            if !alive {
                gone.push(n);
            }
        }
        // Drips are due by the clock, floods whenever the socket takes more.
        for (n, c) in conns.iter_mut().enumerate() {
            if !gone.contains(&n) && !push(c, now)? {
                gone.push(n);
            }
        }
        for n in gone {
            let kind = conns[n].kind;
            let i = KINDS.iter().position(|&k| k == kind).unwrap_or(0);
            tally.cut[i].fetch_add(1, Ordering::Relaxed);
            tally.held_ms[i].fetch_add(
                conns[n].connected_at.elapsed().as_millis() as u64,
                Ordering::Relaxed,
            );
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
            poll.registry().deregister(&mut conns[n].stream)?;
            let mut c = open(addr, kind, n)?;
            poll.registry().register(
                &mut c.stream,
                Token(n),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns[n] = c;
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> serde_json::Value {
    json!(bytes as f64 / (1024.0 * 1024.0))
}

pub fn hostile(opts: &Opts) -> Report {
    let count = opts.attackers;
    let target = Target::pubsub(opts, &[]);
    let Some(pid) = target.pid else {
        eprintln!("pubsub-bench hostile: the server's pid is needed for its memory (--pid)");
        std::process::exit(2);
    };
    noisy::fill_ring(&target);
    target.create_topic("hostile-deaf");
    for t in 0..BIG_TOPICS {
        target.create_topic(&format!("hostile-big-{t}"));
    }
    let mut probe_conn = noisy::connect(target.addr).expect("connect the probe");
    let quiet = noisy::probe(&mut probe_conn, Duration::from_secs(1)).expect("the probe, unloaded");
    let baseline = measure::rss_bytes(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let attackers = {
        let (stop, tally, addr) = (stop.clone(), tally.clone(), target.addr);
        std::thread::spawn(move || run(addr, count, stop, tally))
    };
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(measure::rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let cpu0 = measure::process_cpu(pid);
    let t0 = Instant::now();
    let loaded = noisy::probe(&mut probe_conn, opts.duration);
    let elapsed = t0.elapsed();
    let server_cpu = measure::process_cpu(pid).saturating_sub(cpu0);
    stop.store(true, Ordering::Relaxed);
    let attack_result = attackers.join().expect("the attackers' thread");
    let _ = sampler.join();
    let peak = peak.load(Ordering::Relaxed);
    let stats = target.stats();

    let per_conn = per_connection_bound();
    let topics = 1 + 1 + BIG_TOPICS as u64;
    // The probe and the attackers, the topics they fill, over what the server held before.
    let bound = baseline + (count as u64 + 1) * per_conn + topics * TOPIC_HISTORY_BYTES;
    let loaded_ok = loaded.is_ok();
    let loaded = loaded.unwrap_or_else(|_| Latency::new());
    let p99 = loaded.quantile(0.99);
    let cut: serde_json::Map<String, serde_json::Value> = KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let cuts = tally.cut[i].load(Ordering::Relaxed);
            let held = tally.held_ms[i].load(Ordering::Relaxed);
            let mean = if cuts > 0 {
                held as f64 / cuts as f64 / 1e3
            } else {
                0.0
            };
            (
                k.name().to_string(),
                json!({"cut": cuts, "mean_held_s": mean}),
            )
        })
        .collect();
    let mut rows = vec![
        ("attackers", json!(count)),
        ("server_rss_before_mib", mib(baseline)),
        ("server_rss_peak_mib", mib(peak)),
        ("server_rss_bound_mib", mib(bound)),
        ("per_connection_bound_kib", json!(per_conn / 1024)),
        (
            "peak_growth_per_connection_kib",
            json!(peak.saturating_sub(baseline) as f64 / 1024.0 / (count as f64 + 1.0)),
        ),
        (
            "reconnects",
            json!(tally.reconnects.load(Ordering::Relaxed)),
        ),
        ("cut_by_kind", serde_json::Value::Object(cut)),
        (
            "server_cpu_percent",
            json!(100.0 * server_cpu.as_secs_f64() / elapsed.as_secs_f64()),
        ),
        (
            "request_timeouts",
            stats["connections"]["request_timeouts"].clone(),
        ),
        (
            "message_timeouts",
            stats["messages"]["message_timeouts"].clone(),
        ),
        (
            "retained_mib_most_per_topic",
            mib((0..BIG_TOPICS)
                .filter_map(|t| {
                    stats["topics"][format!("hostile-big-{t}")]["retained_bytes"].as_u64()
                })
                .max()
                .unwrap_or(0)),
        ),
        ("target_rss_within_bound", json!(peak <= bound)),
        ("target_p99_50ms_met", json!(p99 <= 50_000_000)),
    ];
    rows.splice(1..1, measure::probe_rows(&quiet, &loaded));
    if let Err(e) = &attack_result {
        eprintln!("pubsub-bench hostile: the attackers stopped: {e}");
    }
    Report {
        name: "hostile".into(),
        rows,
        ok: loaded_ok && attack_result.is_ok() && loaded.n > 0,
    }
}
