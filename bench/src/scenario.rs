//! The scenarios: each sets up clients, runs bounded in time, and reports.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{Fleet, Kind, Phase};
use crate::measure::{self, ms, Latency};
use crate::{Opts, Target};

pub struct Report {
    pub name: String,
    pub rows: Vec<(&'static str, Value)>,
    pub ok: bool,
}

impl Report {
    pub fn print(&self, as_json: bool) {
        if as_json {
            let mut obj = serde_json::Map::new();
            obj.insert("scenario".into(), json!(self.name));
            for (k, v) in &self.rows {
                obj.insert((*k).into(), v.clone());
            }
            obj.insert("ok".into(), json!(self.ok));
            println!("{}", Value::Object(obj));
        } else {
            println!("{} ({})", self.name, if self.ok { "ok" } else { "FAILED" });
            for (k, v) in &self.rows {
                let v = match v {
                    Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
                    other => other.to_string(),
                };
                println!("  {k:<34} {v}");
            }
        }
    }
}

/// Events a subscriber may fall behind: 64, or fewer for big payloads so that the server's
/// per-connection byte bound (MAX_QUEUE_BYTES, 1 MiB by default) is never what the tool hits.
pub(crate) fn lag_events(payload: usize) -> u64 {
    lag_events_up_to(payload, 64)
}

/// The same bound with another cap than 64: for a run whose events pass through more hops (a
/// cluster), where 64 behind would bound the publishers before anything else does.
pub(crate) fn lag_events_up_to(payload: usize, most: usize) -> u64 {
    ((512 * 1024) / (payload + 256)).clamp(1, most.max(1)) as u64
}

/// How publishers send.
#[derive(Clone, Copy)]
pub(crate) enum Pace {
    /// As fast as acks come back, at most `window` in flight per publisher, and subscribers
    /// never more than `lag` events behind on average (so the tool never overruns the queues).
    Window { window: usize, lag: u64 },
    /// A fixed total rate per second, sent `burst` at a time (in one write, when one publisher
    /// sends them); with `busy_poll` the tool never sleeps in `poll` while it measures, so waking
    /// it up is not part of the latency it records.
    Rate {
        per_sec: u64,
        burst: u64,
        busy_poll: bool,
    },
}

pub(crate) struct Run {
    pub(crate) delivered: u64,
    pub(crate) published: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Latency,
    /// Publish to its answer, for every publisher.
    pub(crate) ack_latency: Latency,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    pub(crate) cut: usize,
    pub(crate) server_cpu: Duration,
    pub(crate) tool_cpu: Duration,
    pub(crate) publish_errors: u64,
    pub(crate) allocations: Option<u64>,
    /// Rounds of the rate's pacing that sent publishes while measuring (zero for a window run):
    /// with one publisher, each is one write, what a server finds at a wake.
    pub(crate) publish_writes: u64,
}

/// Connects everything, waits for every subscription, warms up for a second, measures for
/// `duration`, then lets deliveries drain and counts what was lost.
pub(crate) fn drive(
    fleet: &mut Fleet,
    target: &Target,
    publishers: &[usize],
    pace: Pace,
    duration: Duration,
) -> Run {
    drive_watching(fleet, target, publishers, pace, duration, None)
}

/// `drive`, and with `watch` set (a stalled client and the server), polls the server's
/// `slow_consumer_disconnects` and lets the stalled client read again once it is cut, so the
/// SLOW_CONSUMER notice and close frame can reach it within the close linger.
fn drive_watching(
    fleet: &mut Fleet,
    target: &Target,
    publishers: &[usize],
    pace: Pace,
    duration: Duration,
    watch: Option<usize>,
) -> Run {
    let pid = target.pid;
    // The ceiling answers every connection with a handshake, so it is never asked for /stats.
    let counts_allocations = target.is_pubsub() && target.allocations().is_some();
    let mut a0 = 0;
    let mut next_check = Instant::now();
    let subscribers = fleet
        .clients
        .iter()
        .filter(|c| matches!(c.kind, Kind::Subscriber { .. }))
        .count() as u64;
    let setup_deadline = Instant::now() + Duration::from_secs(60);
    let want = fleet
        .clients
        .iter()
        .filter(|c| !matches!(c.kind, Kind::Publisher { .. }))
        .count();
    while fleet.subscribed_count() < want
        || publishers
            .iter()
            .any(|&p| fleet.clients[p].phase != Phase::Open)
    {
        fleet.turn(Duration::from_millis(5)).expect("poll");
        assert!(
            Instant::now() < setup_deadline,
            "setup timed out: {} of {want} subscribed",
            fleet.subscribed_count()
        );
    }
    let mut per_topic: HashMap<String, u64> = HashMap::new();
    let topic_of = |fleet: &Fleet, p: usize| match &fleet.clients[p].kind {
        Kind::Publisher { topics, next, .. } => topics[*next % topics.len()].clone(),
        _ => String::new(),
    };
    // Subscribers per topic, so the expected number of deliveries is known.
    let mut fan: HashMap<String, u64> = HashMap::new();
    for c in &fleet.clients {
        if let Kind::Subscriber { topic, .. } = &c.kind {
            *fan.entry(topic.clone()).or_default() += 1;
        }
    }
    let mut expected_deliveries = 0u64;
    let start = Instant::now();
    let warm = start + Duration::from_secs(1);
    let end = warm + duration;
    let mut measuring = false;
    let (mut d0, mut p0, mut s0, mut t0, mut w0) =
        (0, 0, Duration::ZERO, Duration::ZERO, Instant::now());
    let mut sent_by_rate = 0u64;
    let mut publish_writes = 0u64;
    loop {
        let now = Instant::now();
        if !measuring && now >= warm {
            measuring = true;
            fleet.latency = Latency::new();
            fleet.ack_latency = Latency::new();
            d0 = fleet.received;
            p0 = fleet.published;
            s0 = pid.map_or(Duration::ZERO, measure::process_cpu);
            t0 = measure::own_cpu();
            w0 = now;
            if counts_allocations {
                a0 = target.allocations().unwrap_or(0);
            }
        }
        if now >= end {
            break;
        }
        if let Some(stalled) = watch {
            if now >= next_check {
                next_check = now + Duration::from_millis(20);
                if target.slow_consumer_disconnects() > 0 {
                    fleet.resume(stalled);
                }
            }
        }
        match pace {
            Pace::Window { window, lag } => {
                for &p in publishers {
                    while fleet.unacked(p) < window
                        && expected_deliveries.saturating_sub(fleet.received) < lag * subscribers
                    {
                        let topic = topic_of(fleet, p);
                        *per_topic.entry(topic.clone()).or_default() += 1;
                        expected_deliveries += fan.get(&topic).copied().unwrap_or(0);
                        fleet.publish(p);
                    }
                }
            }
            Pace::Rate { per_sec, burst, .. } => {
                let burst = burst.max(1);
                let due = (now.duration_since(start).as_secs_f64() * per_sec as f64) as u64;
                let due = due / burst * burst;
                publish_writes += u64::from(measuring && sent_by_rate < due);
                while sent_by_rate < due {
                    let p = publishers[sent_by_rate as usize % publishers.len()];
                    let topic = topic_of(fleet, p);
                    *per_topic.entry(topic.clone()).or_default() += 1;
                    expected_deliveries += fan.get(&topic).copied().unwrap_or(0);
                    fleet.publish(p);
                    sent_by_rate += 1;
                }
            }
        }
        fleet.flush_all();
        let timeout = match pace {
            Pace::Window { .. } => Duration::from_millis(1),
            Pace::Rate {
                busy_poll: true, ..
            } if measuring => Duration::ZERO,
            Pace::Rate { per_sec, burst, .. } => {
                // Wake when the next burst is due, by the timer: a poll timeout alone would
                // round the wait up to a millisecond.
                let burst = burst.max(1);
                let next =
                    start + Duration::from_secs_f64((sent_by_rate + burst) as f64 / per_sec as f64);
                fleet
                    .wake_after(next.saturating_duration_since(Instant::now()))
                    .expect("timer");
                Duration::from_millis(10)
            }
        };
        fleet.turn(timeout).expect("poll");
    }
    let delivered = fleet.received - d0;
    let published = fleet.published - p0;
    let elapsed = w0.elapsed();
    let server_cpu = pid
        .map_or(Duration::ZERO, measure::process_cpu)
        .saturating_sub(s0);
    // Two /stats requests fall inside the window: their few allocations are counted too.
    let allocations =
        counts_allocations.then(|| target.allocations().unwrap_or(0).saturating_sub(a0));
    let tool_cpu = measure::own_cpu().saturating_sub(t0);
    let latency = std::mem::replace(&mut fleet.latency, Latency::new());
    let ack_latency = std::mem::replace(&mut fleet.ack_latency, Latency::new());
    // Let everything in flight arrive.
    let drain_until = Instant::now() + Duration::from_secs(5);
    while fleet.received < expected_deliveries && Instant::now() < drain_until {
        fleet.turn(Duration::from_millis(5)).expect("poll");
    }
    let (mut lost, mut duplicates, mut out_of_order, mut cut) = (0, 0, 0, 0);
    for c in &fleet.clients {
        if let Kind::Subscriber { topic, sub, .. } = &c.kind {
            let want = per_topic.get(topic).copied().unwrap_or(0);
            lost += want.saturating_sub(sub.received);
            duplicates += sub.duplicates;
            out_of_order += sub.out_of_order;
            if sub.slow_consumer || c.phase == Phase::Closed {
                cut += 1;
            }
        }
    }
    let publish_errors = fleet.publish_errors();
    Run {
        delivered,
        published,
        elapsed,
        latency,
        ack_latency,
        lost,
        duplicates,
        out_of_order,
        cut,
        server_cpu,
        tool_cpu,
        publish_errors,
        allocations,
        publish_writes,
    }
}

/// The quantiles a latency distribution is reported at, for the report's percentile plots.
const QUANTILES: [f64; 12] = [
    0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999,
];

/// `[[quantile, ms], ...]` at `QUANTILES` (none if nothing was measured).
pub(crate) fn percentiles(latency: &Latency) -> Value {
    if latency.n == 0 {
        return json!([]);
    }
    let points: Vec<Value> = QUANTILES
        .iter()
        .map(|&q| json!([q, latency.quantile(q) as f64 / 1e6]))
        .collect();
    json!(points)
}

/// How many of the rate's publishes a write carried, on average, while measuring.
pub(crate) fn publishes_per_write(run: &Run) -> f64 {
    run.published as f64 / run.publish_writes.max(1) as f64
}

pub(crate) fn run_rows(run: &Run, rows: &mut Vec<(&'static str, Value)>) {
    let secs = run.elapsed.as_secs_f64();
    rows.push((
        "published_per_sec",
        json!((run.published as f64 / secs).round()),
    ));
    rows.push((
        "delivered_per_sec",
        json!((run.delivered as f64 / secs).round()),
    ));
    rows.push(("latency_p50_ms", ms(run.latency.quantile(0.50))));
    rows.push(("latency_p99_ms", ms(run.latency.quantile(0.99))));
    rows.push(("latency_p999_ms", ms(run.latency.quantile(0.999))));
    rows.push(("latency_max_ms", ms(run.latency.max_ns)));
    rows.push(("latency_samples", json!(run.latency.n)));
    rows.push(("latency_percentiles_ms", percentiles(&run.latency)));
    rows.push(("lost", json!(run.lost)));
    rows.push(("duplicates", json!(run.duplicates)));
    rows.push(("out_of_order", json!(run.out_of_order)));
    rows.push(("subscribers_cut", json!(run.cut)));
    rows.push(("publish_errors", json!(run.publish_errors)));
    if run.publish_writes > 0 {
        rows.push(("publishes_per_write", json!(publishes_per_write(run))));
    }
    rows.push((
        "server_cpu_percent",
        json!(100.0 * run.server_cpu.as_secs_f64() / secs),
    ));
    rows.push((
        "tool_cpu_percent",
        json!(100.0 * run.tool_cpu.as_secs_f64() / secs),
    ));
    let per = if run.delivered > 0 {
        run.server_cpu.as_secs_f64() * 1e6 / run.delivered as f64
    } else {
        0.0
    };
    rows.push(("server_cpu_us_per_delivery", json!(per)));
    if let Some(a) = run.allocations {
        rows.push((
            "server_allocations_per_delivery",
            json!(a as f64 / run.delivered.max(1) as f64),
        ));
        rows.push((
            "server_allocations_per_publish",
            json!(a as f64 / run.published.max(1) as f64),
        ));
    }
}

pub(crate) fn server_env(extra: &[(&str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("MAX_TOPICS", "1000000".to_string()),
        ("MAX_SUBSCRIBERS_PER_TOPIC", "1000000".to_string()),
        ("MAX_CONNECTIONS", "1000000".to_string()),
    ];
    for (k, v) in extra {
        let k: &'static str = match *k {
            "SUBSCRIBER_QUEUE_SIZE" => "SUBSCRIBER_QUEUE_SIZE",
            "MAX_QUEUE_BYTES" => "MAX_QUEUE_BYTES",
            _ => continue,
        };
        env.push((k, v.clone()));
    }
    env
}

/// Subscribers on the topic "bench" and one publisher to it.
fn one_topic(target: &Target, opts: &Opts, subscribers: usize) -> (Fleet, usize) {
    let mut fleet = Fleet::new(target.addr, opts.payload).expect("poll");
    for _ in 0..subscribers {
        fleet.add(subscriber("bench")).expect("connect");
    }
    let p = fleet.add(publisher(vec!["bench".into()])).expect("connect");
    (fleet, p)
}

pub(crate) fn subscriber(topic: &str) -> Kind {
    Kind::Subscriber {
        topic: topic.into(),
        sub: Default::default(),
        acked: false,
    }
}

pub(crate) fn publisher(topics: Vec<String>) -> Kind {
    Kind::Publisher {
        topics,
        next: 0,
        unacked: 0,
        sent: VecDeque::new(),
        acked: 0,
        errors: 0,
    }
}

/// One publisher to the topic "bench" and `subscribers` on it, driven at `pace` (the topic is
/// created first on the real server; the ceiling has no topics).
fn one_topic_run(target: &Target, opts: &Opts, subscribers: usize, pace: Pace) -> Run {
    if target.is_pubsub() {
        target.create_topic("bench");
    }
    let (mut fleet, p) = one_topic(target, opts, subscribers);
    drive(&mut fleet, target, &[p], pace, opts.duration)
}

fn fanout_once(target: &Target, opts: &Opts, subscribers: usize) -> Run {
    let pace = Pace::Window {
        window: opts.window,
        lag: lag_events(opts.payload),
    };
    one_topic_run(target, opts, subscribers, pace)
}

pub fn fanout(opts: &Opts, against_server: bool) -> Report {
    let subscribers = opts.subscribers.unwrap_or(1000);
    let mut rows = vec![
        ("subscribers", json!(subscribers)),
        ("payload_bytes", json!(opts.payload)),
    ];
    let ceiling = {
        let target = Target::ceiling();
        fanout_once(&target, opts, subscribers)
    };
    let ceiling_rate = ceiling.delivered as f64 / ceiling.elapsed.as_secs_f64();
    if !against_server {
        run_rows(&ceiling, &mut rows);
        return Report {
            name: "ceiling".into(),
            rows,
            ok: ceiling.lost == 0,
        };
    }
    let target = Target::pubsub(opts, &server_env(&[]));
    let run = fanout_once(&target, opts, subscribers);
    run_rows(&run, &mut rows);
    let rate = run.delivered as f64 / run.elapsed.as_secs_f64();
    rows.push(("ceiling_delivered_per_sec", json!(ceiling_rate.round())));
    rows.push((
        "ceiling_cpu_us_per_delivery",
        json!(ceiling.server_cpu.as_secs_f64() * 1e6 / ceiling.delivered.max(1) as f64),
    ));
    rows.push(("percent_of_ceiling", json!(100.0 * rate / ceiling_rate)));
    rows.push((
        "ceiling_latency_percentiles_ms",
        percentiles(&ceiling.latency),
    ));
    let ok = run.lost == 0
        && run.duplicates == 0
        && run.out_of_order == 0
        && run.cut == 0
        && run.publish_errors == 0;
    Report {
        name: "fanout".into(),
        rows,
        ok,
    }
}

pub fn topics(opts: &Opts) -> Report {
    let target = Target::pubsub(opts, &server_env(&[]));
    let names: Vec<String> = (0..opts.topics).map(|i| format!("t{i}")).collect();
    for n in &names {
        target.create_topic(n);
    }
    let mut fleet = Fleet::new(target.addr, opts.payload).expect("poll");
    for n in &names {
        for _ in 0..2 {
            fleet.add(subscriber(n)).expect("connect");
        }
    }
    let publishers: Vec<usize> = (0..opts.publishers)
        .map(|i| {
            let mine: Vec<String> = names
                .iter()
                .skip(i)
                .step_by(opts.publishers)
                .cloned()
                .collect();
            fleet.add(publisher(mine)).expect("connect")
        })
        .collect();
    let run = drive(
        &mut fleet,
        &target,
        &publishers,
        Pace::Window {
            window: opts.window,
            lag: lag_events(opts.payload),
        },
        opts.duration,
    );
    let mut rows = vec![
        ("topics", json!(opts.topics)),
        ("subscribers_per_topic", json!(2)),
        ("publishers", json!(opts.publishers)),
        ("payload_bytes", json!(opts.payload)),
    ];
    run_rows(&run, &mut rows);
    let ok = run.lost == 0 && run.duplicates == 0 && run.cut == 0;
    Report {
        name: "topics".into(),
        rows,
        ok,
    }
}

fn latency_once(target: &Target, opts: &Opts, subscribers: usize) -> Run {
    let pace = Pace::Rate {
        per_sec: opts.rate,
        burst: 1,
        busy_poll: opts.busy_poll,
    };
    one_topic_run(target, opts, subscribers, pace)
}

pub fn latency(opts: &Opts) -> Report {
    let subscribers = opts.subscribers.unwrap_or(100);
    // The same rate against the ceiling first: on a given machine, that is how low latency can go
    // for a loop that sends one frame per subscriber per publish.
    let ceiling = latency_once(&Target::ceiling(), opts, subscribers);
    let target = Target::pubsub(opts, &server_env(&[]));
    let run = latency_once(&target, opts, subscribers);
    let mut rows = vec![
        ("subscribers", json!(subscribers)),
        ("rate_per_sec", json!(opts.rate)),
        ("payload_bytes", json!(opts.payload)),
        ("busy_poll", json!(opts.busy_poll)),
    ];
    run_rows(&run, &mut rows);
    rows.push(("all_subscribers_survived", json!(run.cut == 0)));
    rows.push(("ceiling_latency_p50_ms", ms(ceiling.latency.quantile(0.50))));
    rows.push(("ceiling_latency_p99_ms", ms(ceiling.latency.quantile(0.99))));
    rows.push((
        "ceiling_latency_percentiles_ms",
        percentiles(&ceiling.latency),
    ));
    rows.push((
        "ceiling_cpu_us_per_delivery",
        json!(ceiling.server_cpu.as_secs_f64() * 1e6 / ceiling.delivered.max(1) as f64),
    ));
    let ok = run.cut == 0 && run.lost == 0 && ceiling.lost == 0;
    Report {
        name: "latency".into(),
        rows,
        ok,
    }
}

/// Connections in their handshake at once.
const IN_FLIGHT: usize = 200;

/// Opens `n` connections subscribed round-robin to `idle0`..`idle99`, at most `IN_FLIGHT` in
/// their handshake at once. Returns the fleet and the seconds until every handshake and every
/// subscription was done.
fn open_idle(
    addr: std::net::SocketAddr,
    n: usize,
    source: u8,
    payload: usize,
) -> (Fleet, f64, f64) {
    let mut fleet = Fleet::new(addr, payload).expect("poll");
    fleet.source = source;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let mut added = 0;
    let mut open_at = None;
    loop {
        // Counting is O(n): once per round, not per connection.
        let open = fleet.open_count();
        if open_at.is_none() && open == n {
            open_at = Some(start.elapsed());
        }
        if fleet.subscribed_count() == n {
            break;
        }
        let closed = fleet
            .clients
            .iter()
            .filter(|c| c.phase == Phase::Closed)
            .count();
        assert!(closed == 0, "{closed} connections were refused or closed");
        assert!(
            Instant::now() < deadline,
            "only {} of {n} subscribed",
            fleet.subscribed_count()
        );
        let in_flight = added - open.min(added);
        for _ in 0..(IN_FLIGHT.saturating_sub(in_flight)).min(n - added) {
            let topic = format!("idle{}", added % IDLE_TOPICS);
            fleet.add(subscriber(&topic)).expect("connect");
            added += 1;
        }
        fleet.turn(Duration::from_millis(1)).expect("poll");
    }
    let handshakes = open_at.unwrap_or_else(|| start.elapsed()).as_secs_f64();
    (fleet, handshakes, start.elapsed().as_secs_f64())
}

const IDLE_TOPICS: usize = 100;

/// `conns-worker`: one share of the `conns` connections in its own process. Prints
/// `ready <handshake secs> <subscribe secs>`, then holds the connections until stdin closes.
pub fn conns_worker(opts: &Opts) {
    let addr = opts.addr.expect("--addr");
    let (_fleet, handshakes, subscribed) = open_idle(addr, opts.conns, opts.worker, opts.payload);
    println!("ready {handshakes} {subscribed}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
}

pub fn conns(opts: &Opts) -> Report {
    let n = opts.conns;
    let target = Target::pubsub(opts, &server_env(&[]));
    for i in 0..IDLE_TOPICS {
        target.create_topic(&format!("idle{i}"));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = target.pid;
    let rss_before = pid.map_or(0, measure::rss_bytes);
    let server_cpu0 = pid.map_or(Duration::ZERO, measure::process_cpu);
    let workers = opts.workers.clamp(1, 8);
    // Each worker is a process of its own (20,000 descriptors each), so the load generator can
    // use both cores.
    let exe = std::env::current_exe().expect("own path");
    let mut children: Vec<std::process::Child> = (0..workers)
        .map(|w| {
            let share = n / workers + usize::from(w < n % workers);
            std::process::Command::new(&exe)
                .args([
                    "conns-worker",
                    "--addr",
                    &target.addr.to_string(),
                    "--conns",
                    &share.to_string(),
                ])
                .args(["--worker", &(w + 1).to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect();
    let mut handshakes: f64 = 0.0;
    let mut subscribed: f64 = 0.0;
    for c in &mut children {
        let mut line = String::new();
        let out = c.stdout.as_mut().expect("piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
            .expect("worker output");
        let parts: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        assert_eq!(parts.len(), 2, "worker failed: {line:?}");
        handshakes = handshakes.max(parts[0]);
        subscribed = subscribed.max(parts[1]);
    }
    let server_cpu = pid
        .map_or(Duration::ZERO, measure::process_cpu)
        .saturating_sub(server_cpu0);
    let tool_cpu: Duration = children.iter().map(|c| measure::process_cpu(c.id())).sum();
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = pid.map_or(0, measure::rss_bytes);
    for mut c in children {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 / n as f64;
    let rows = vec![
        ("connections", json!(n)),
        ("tool_processes", json!(workers)),
        (
            "connect_handshake_per_sec",
            json!((n as f64 / handshakes).round()),
        ),
        (
            "connect_handshake_subscribe_per_sec",
            json!((n as f64 / subscribed).round()),
        ),
        ("server_rss_before_bytes", json!(rss_before)),
        ("server_rss_after_bytes", json!(rss_after)),
        ("server_rss_bytes_per_connection", json!(per_conn.round())),
        (
            "server_cpu_us_per_connection",
            json!(server_cpu.as_secs_f64() * 1e6 / n as f64),
        ),
        (
            "tool_cpu_us_per_connection",
            json!(tool_cpu.as_secs_f64() * 1e6 / n as f64),
        ),
    ];
    Report {
        name: "conns".into(),
        rows,
        ok: true,
    }
}

pub fn slow(opts: &Opts) -> Report {
    let subscribers = opts.subscribers.unwrap_or(10);
    let target = Target::pubsub(opts, &server_env(&[]));
    target.create_topic("bench");
    let mut fleet = Fleet::new(target.addr, opts.payload).expect("poll");
    for _ in 0..subscribers {
        fleet.add(subscriber("bench")).expect("connect");
    }
    let stalled = fleet
        .add(Kind::Stalled {
            topic: "bench".into(),
            acked: false,
            reading: false,
            notice: false,
            close_code: None,
        })
        .expect("connect");
    let p = fleet.add(publisher(vec!["bench".into()])).expect("connect");
    let pace = Pace::Window {
        window: opts.window,
        lag: lag_events(opts.payload),
    };
    let run = drive_watching(
        &mut fleet,
        &target,
        &[p],
        pace,
        opts.duration,
        Some(stalled),
    );
    let (notice, code) = match &fleet.clients[stalled].kind {
        Kind::Stalled {
            notice, close_code, ..
        } => (*notice, *close_code),
        _ => (false, None),
    };
    let mut rows = vec![("subscribers", json!(subscribers))];
    run_rows(&run, &mut rows);
    rows.push(("stalled_got_slow_consumer", json!(notice)));
    rows.push(("stalled_close_code", json!(code)));
    let ok = notice && code == Some(1008) && run.lost == 0 && run.cut == 0;
    Report {
        name: "slow".into(),
        rows,
        ok,
    }
}
