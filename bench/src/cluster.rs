//! `cluster`: three instances on one redis-server (started here, on a unix socket, without
//! persistence), against one instance alone in the same run:
//!
//! 1. latency at `--rate` publishes a second to `--subscribers` spread over the three instances,
//!    the publisher on the first; lost, duplicated and out-of-order events counted; the server
//!    CPU per delivered message on the second instance (subscribers only) against one server
//!    with as many subscribers (a third) and the publisher, the same fan-out per event, and
//!    against one server with all of them;
//! 2. publishes a second through one Redis with acks: sixteen publishers on the first
//!    instance, 64 unacknowledged each, a subscriber on each instance;
//! 3. the ack's latency at 10,000 publishes a second, from the publish queued to its ack read,
//!    against one server alone at the same rate; beside it the same run's events to a
//!    subscriber on the publishing instance;
//! 4. `since_seq` resume of 100 events on the third instance: connect, subscribe, the 100th
//!    replayed event, 200 times.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pubsub::ws::frame::OpCode;
use serde_json::json;

use crate::client::{client_frame, Fleet};
use crate::measure::{ms, Latency};
use crate::scenario::{
    drive, lag_events_up_to, percentiles, publisher, publishes_per_write, run_rows, server_env,
    subscriber, Pace, Report, Run,
};
use crate::{noisy, Opts, Target};

struct Redis {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Redis {
    fn start() -> Redis {
        let dir = std::env::temp_dir().join(format!("pubsub-bench-redis-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, dir, socket }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

fn instance(opts: &Opts, redis: &Redis, id: &str) -> Target {
    let mut env = server_env(&[]);
    env.push(("REDIS_URL", redis.url()));
    env.push(("INSTANCE_ID", id.to_string()));
    env.push(("TOPIC_HISTORY_SIZE", "1000".to_string()));
    let t = Target::pubsub(opts, &env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.stats()["cluster"]["engine"] != "up" {
        assert!(Instant::now() < deadline, "instance {id} not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    t
}

/// Creates `topic` on the first instance and waits until every instance holds it.
fn topic_everywhere(nodes: &[Target], topic: &str) {
    nodes[0].create_topic(topic);
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in nodes {
        while n.stats()["topics"][topic].is_null() {
            assert!(Instant::now() < deadline, "{topic} not on every instance");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `subscribers` spread round-robin over `subs_on` and one publisher on `nodes[0]`; the run and
/// how many subscribers `nodes[1]` had.
fn spread_run(
    nodes: &[Target],
    subs_on: &[usize],
    topic: &str,
    subscribers: usize,
    publishers: usize,
    pace: Pace,
    opts: &Opts,
) -> (Run, usize) {
    let mut fleet = Fleet::new(nodes[0].addr, opts.payload).expect("poll");
    let mut on_second = 0;
    for i in 0..subscribers {
        let node = subs_on[i % subs_on.len()];
        on_second += usize::from(node == 1);
        fleet
            .add_to(subscriber(topic), nodes[node].addr)
            .expect("connect");
    }
    let ps: Vec<usize> = (0..publishers)
        .map(|_| {
            fleet
                .add_to(publisher(vec![topic.to_string()]), nodes[0].addr)
                .expect("connect")
        })
        .collect();
    // CPU is measured on the second instance: subscribers only, no publisher.
    let run = drive(&mut fleet, &nodes[1], &ps, pace, opts.duration);
    (run, on_second)
}

fn clean(run: &Run) -> bool {
    run.lost == 0
        && run.duplicates == 0
        && run.out_of_order == 0
        && run.cut == 0
        && run.publish_errors == 0
}

/// 200 resumes of 100 events on `node`: connect, subscribe with `since_seq`, the 100th event.
fn resumes(node: &Target, topic: &str, last: u64) -> Latency {
    let mut latency = Latency::new();
    for _ in 0..200 {
        let start = Instant::now();
        let mut s = noisy::connect(node.addr).expect("connect");
        let msg = json!({"type":"subscribe","topic":topic,"client_id":"r",
            "since_seq": last - 100});
        let mut frame = Vec::new();
        client_frame(&mut frame, OpCode::Text, msg.to_string().as_bytes());
        std::io::Write::write_all(&mut s, &frame).expect("write");
        let mut buf = Vec::new();
        let ack = noisy::read_text(&mut s, &mut buf).expect("ack");
        assert!(ack.starts_with(br#"{"type":"ack""#), "resume refused");
        for _ in 0..100 {
            noisy::read_text(&mut s, &mut buf).expect("replayed event");
        }
        latency.record(start.elapsed().as_nanos() as u64);
    }
    latency
}

/// Publishes sent at once in the runs that compare CPU per delivery at the same batching.
const EVEN_BURST: u64 = 4;

/// Publishers of the acked-throughput run, all on the first instance.
const ACKED_PUBLISHERS: usize = 16;

pub fn cluster(opts: &Opts) -> Report {
    let subscribers = opts.subscribers.unwrap_or(100);
    let rate = Pace::Rate {
        per_sec: opts.rate,
        burst: 1,
        busy_poll: opts.busy_poll,
    };
    // Sixteen publishers of 64 in flight each: an event's round trip passes through three
    // processes waiting for a core (the tool, the instance, Redis), so fewer leave Redis idle
    // between batches (4 gave about two thirds of the rate). Their whole window may be on its
    // way to the subscribers: 64 behind would pace them before Redis does.
    let publishers = ACKED_PUBLISHERS;
    let window = Pace::Window {
        window: opts.window,
        lag: lag_events_up_to(opts.payload, publishers * opts.window),
    };
    // One server alone first, the same load; then with as many subscribers as the second
    // instance will have, so CPU per delivery is compared at the same fan-out.
    let ack_pace = Pace::Rate {
        per_sec: 10_000,
        burst: 1,
        busy_poll: opts.busy_poll,
    };
    let alone = |subscribers: usize, pace: Pace| {
        let target = Target::pubsub(opts, &server_env(&[]));
        target.create_topic("bench");
        let mut fleet = Fleet::new(target.addr, opts.payload).expect("poll");
        for _ in 0..subscribers {
            fleet.add(subscriber("bench")).expect("connect");
        }
        let p = fleet.add(publisher(vec!["bench".into()])).expect("connect");
        drive(&mut fleet, &target, &[p], pace, opts.duration)
    };
    let single = alone(subscribers, rate);
    let on_second = (0..subscribers).filter(|i| i % 3 == 1).count();
    let single_same_fanout = alone(on_second.max(1), rate);
    // The same rate in bursts of EVEN_BURST, each in one write: both modes then read the same
    // number of events at a wake (one server from its publisher, an instance from Redis), so
    // the ratio compares what a delivery costs, not how the arrivals happened to bunch.
    let even = Pace::Rate {
        per_sec: opts.rate,
        burst: EVEN_BURST,
        busy_poll: opts.busy_poll,
    };
    let single_even = alone(on_second.max(1), even);
    // The ack run's load on one server: what the round trip through Redis adds to an ack.
    let single_acks = alone(1, ack_pace);
    let redis = Redis::start();
    let nodes: Vec<Target> = ["b0", "b1", "b2"]
        .iter()
        .map(|id| instance(opts, &redis, id))
        .collect();
    topic_everywhere(&nodes, "bench");
    let (spread, spread_on_second) =
        spread_run(&nodes, &[0, 1, 2], "bench", subscribers, 1, rate, opts);
    topic_everywhere(&nodes, "even");
    let (spread_even, _) = spread_run(&nodes, &[0, 1, 2], "even", subscribers, 1, even, opts);
    topic_everywhere(&nodes, "acks");
    let (through, _) = spread_run(&nodes, &[0, 1, 2], "acks", 3, publishers, window, opts);
    topic_everywhere(&nodes, "ack10k");
    let (acks, _) = spread_run(&nodes, &[0], "ack10k", 1, 1, ack_pace, opts);
    let last = nodes[2].stats()["topics"]["acks"]["messages"]
        .as_u64()
        .unwrap_or(0);
    let resume = resumes(&nodes[2], "acks", last);

    let cpu_per = |run: &Run, deliveries: f64| run.server_cpu.as_secs_f64() * 1e6 / deliveries;
    debug_assert_eq!(spread_on_second, on_second);
    let single_cpu = cpu_per(&single, single.delivered.max(1) as f64);
    let same_fanout_cpu = cpu_per(
        &single_same_fanout,
        single_same_fanout.delivered.max(1) as f64,
    );
    // Deliveries on the second instance: its share of the subscribers.
    let second_share = on_second as f64 / subscribers as f64;
    let cluster_cpu = cpu_per(&spread, (spread.delivered as f64 * second_share).max(1.0));
    let even_single_cpu = cpu_per(&single_even, single_even.delivered.max(1) as f64);
    let even_cluster_cpu = cpu_per(
        &spread_even,
        (spread_even.delivered as f64 * second_share).max(1.0),
    );
    let secs = |run: &Run| run.elapsed.as_secs_f64();
    let mut rows = vec![
        ("instances", json!(3)),
        ("subscribers", json!(subscribers)),
        ("rate_per_sec", json!(opts.rate)),
        ("payload_bytes", json!(opts.payload)),
    ];
    run_rows(&spread, &mut rows);
    rows.push(("single_latency_p50_ms", ms(single.latency.quantile(0.50))));
    rows.push(("single_latency_p99_ms", ms(single.latency.quantile(0.99))));
    rows.push((
        "single_latency_percentiles_ms",
        percentiles(&single.latency),
    ));
    rows.push((
        "subscriber_instance_cpu_us_per_delivery",
        json!(cluster_cpu),
    ));
    rows.push(("single_cpu_us_per_delivery", json!(single_cpu)));
    rows.push(("single_subscribers_same_fanout", json!(on_second)));
    rows.push((
        "single_same_fanout_publishes_per_write",
        json!(publishes_per_write(&single_same_fanout)),
    ));
    rows.push((
        "single_same_fanout_cpu_us_per_delivery",
        json!(same_fanout_cpu),
    ));
    rows.push((
        "cpu_per_delivery_ratio",
        json!(cluster_cpu / same_fanout_cpu.max(1e-9)),
    ));
    rows.push((
        "cpu_per_delivery_ratio_vs_all_subscribers",
        json!(cluster_cpu / single_cpu.max(1e-9)),
    ));
    rows.push(("even_burst", json!(EVEN_BURST)));
    rows.push((
        "even_subscriber_instance_cpu_us_per_delivery",
        json!(even_cluster_cpu),
    ));
    rows.push((
        "even_single_same_fanout_cpu_us_per_delivery",
        json!(even_single_cpu),
    ));
    rows.push((
        "even_cpu_per_delivery_ratio",
        json!(even_cluster_cpu / even_single_cpu.max(1e-9)),
    ));
    rows.push((
        "even_latency_p50_ms",
        ms(spread_even.latency.quantile(0.50)),
    ));
    rows.push((
        "even_single_latency_p50_ms",
        ms(single_even.latency.quantile(0.50)),
    ));
    rows.push((
        "acked_publishes_per_sec",
        json!((through.published as f64 / secs(&through)).round()),
    ));
    // How long an event of that run took to its subscribers: with the window full, the time
    // a publish waits in the queues on its way.
    rows.push((
        "acked_run_event_latency_p50_ms",
        ms(through.latency.quantile(0.50)),
    ));
    rows.push(("acked_run_publishers", json!(publishers)));
    rows.push(("ack_rate_per_sec", json!(10_000)));
    // A publish to its ack at the tool; the same run's events reached a subscriber on the
    // publishing instance in about the same time (rows after).
    rows.push(("ack_p50_ms", ms(acks.ack_latency.quantile(0.50))));
    rows.push(("ack_p99_ms", ms(acks.ack_latency.quantile(0.99))));
    rows.push(("ack_samples", json!(acks.ack_latency.n)));
    rows.push(("ack_run_event_p50_ms", ms(acks.latency.quantile(0.50))));
    rows.push(("ack_run_event_p99_ms", ms(acks.latency.quantile(0.99))));
    rows.push((
        "single_ack_p50_ms",
        ms(single_acks.ack_latency.quantile(0.50)),
    ));
    rows.push((
        "single_ack_p99_ms",
        ms(single_acks.ack_latency.quantile(0.99)),
    ));
    rows.push(("resume_100_p50_ms", ms(resume.quantile(0.50))));
    rows.push(("resume_100_p99_ms", ms(resume.quantile(0.99))));
    let ok = clean(&single)
        && clean(&single_same_fanout)
        && clean(&single_acks)
        && clean(&single_even)
        && clean(&spread)
        && clean(&spread_even)
        && clean(&through)
        && clean(&acks);
    Report {
        name: "cluster".into(),
        rows,
        ok,
    }
}
