//! pubsub-bench: load scenarios against the pubsub server (or any server speaking its protocol),
//! bounded in time, printing a table or, with --json, one JSON line.

mod ceiling;
mod client;
mod cluster;
mod hostile;
mod measure;
mod noisy;
mod report;
mod scenario;
mod sendcost;
mod timer;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const USAGE: &str = "usage: pubsub-bench <scenario> [options]

scenarios
  fanout    one topic, N subscribers, one publisher as fast as the server acks; runs `ceiling`
            first in the same invocation and reports the server as a percentage of it
  ceiling   the same fan-out against a minimal raw mio loop inside this tool
  topics    many topics, two subscribers each, several publishers
  latency   a fixed publish rate to N subscribers; latency percentiles, whether all survived;
            runs the same rate against `ceiling` first and reports both
  conns     N idle subscribed connections: connect+handshake rate, server RSS per connection
  slow      one subscriber that never reads among normal ones: it must be cut, others lose nothing
  noisy     --attackers clients flooding the server (and reading all it answers) beside one probe
            doing ping round trips: the probe's latency quiet and under attack, in one run
  hostile   --attackers clients of ten hostile kinds (slow heads and bodies, endless chunk
            extensions, ping floods and replay bursts that never read, dribbled and half-sent
            messages, 60 KB publishers, error floods, publishers deaf to their acks) against a
            server at its defaults beside one probe: peak server RSS against the README's bound,
            the probe's latency (try --attackers 100 --duration 20)
  cluster   three instances on one redis-server (started here), against one server alone in
            the same run: latency to subscribers spread over the instances at --rate, CPU per
            delivery on a subscriber instance, acked publishes a second, ack latency at 10,000/s,
            since_seq resume of 100 events on another instance (needs redis-server)
  send-cost what one small write to a loopback socket costs by system call (writev, sendmsg,
            send), over --subscribers sockets (default 100) of --payload bytes; no server
  report    all the scenarios above, one process each, into one HTML page with plots and the JSON
            lines it was made from (pubsub-bench report --help)
  compare   the same page for two results files, the second against the first as baseline

options
  --server PATH       the pubsub binary to start (default target/release/pubsub)
  --addr HOST:PORT    use a running server instead (with --pid PID for its CPU and memory)
  --subscribers N     fanout 1000, latency 100, slow 10
  --topics N          topics scenario: number of topics (default 1000)
  --publishers N      topics scenario: publishers (default 4)
  --payload BYTES     publish payload size (default 128)
  --window N          unacknowledged publishes per publisher (default 64)
  --rate N            latency: publishes per second (default 2000)
  --busy-poll         latency: the tool polls without sleeping while it measures, so its own
                      wake-up is not in the figures (it then takes a whole core)
  --attackers N       noisy: flooding clients (default 4); hostile: hostile clients
  --attack KIND       noisy: pings (empty ping frames), texts (empty text messages), replays
                      (subscribes asking for the whole ring) or mix (default: the three in turn)
  --conns N           conns: connections (default 1000)
  --workers N         conns: processes opening them (default 2, so the tool can use both cores)
  --duration SECS     measured time (default 5; a 1 s warm-up comes first)
  --json              print one JSON line instead of a table";

pub struct Opts {
    pub scenario: String,
    pub server: String,
    pub addr: Option<SocketAddr>,
    pub pid: Option<u32>,
    pub subscribers: Option<usize>,
    pub topics: usize,
    pub publishers: usize,
    pub payload: usize,
    pub window: usize,
    pub rate: u64,
    pub busy_poll: bool,
    pub conns: usize,
    pub attackers: usize,
    pub attack: String,
    /// conns: load-generating processes; conns-worker: which one this is.
    pub workers: usize,
    pub worker: u8,
    pub duration: Duration,
    pub json: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().ok_or("missing scenario")?;
    let mut o = Opts {
        scenario,
        server: "target/release/pubsub".into(),
        addr: None,
        pid: None,
        subscribers: None,
        topics: 1000,
        publishers: 4,
        payload: 128,
        window: 64,
        rate: 2000,
        conns: 1000,
        attackers: 4,
        attack: "mix".into(),
        workers: 2,
        worker: 1,
        duration: Duration::from_secs(5),
        json: false,
        busy_poll: false,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--json" => {
                o.json = true;
                continue;
            }
            "--busy-poll" => {
                o.busy_poll = true;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--server" => o.server = value.clone(),
            "--addr" => o.addr = Some(value.parse().map_err(|_| format!("--addr: {value}"))?),
            "--pid" => o.pid = Some(num()? as u32),
            "--subscribers" => o.subscribers = Some(num()? as usize),
            "--topics" => o.topics = num()? as usize,
            "--publishers" => o.publishers = num()?.max(1) as usize,
            "--payload" => o.payload = num()? as usize,
            "--window" => o.window = num()?.max(1) as usize,
            "--rate" => o.rate = num()?.max(1),
            "--conns" => o.conns = num()? as usize,
            "--attackers" => o.attackers = num()?.max(1) as usize,
            "--attack" => o.attack = value.clone(),
            "--workers" => o.workers = num()?.max(1) as usize,
            "--worker" => o.worker = num()?.clamp(1, 250) as u8,
            "--duration" => {
                o.duration = Duration::from_secs_f64(
                    value.parse().map_err(|_| format!("--duration: {value}"))?,
                )
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

/// A server under test: started here (and stopped on drop) or given by address.
pub struct Target {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    child: Option<Child>,
    ceiling: bool,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Target {
    pub fn pubsub(opts: &Opts, env: &[(&str, String)]) -> Target {
        if let Some(addr) = opts.addr {
            return Target {
                addr,
                pid: opts.pid,
                child: None,
                ceiling: false,
            };
        }
        let mut cmd = Command::new(&opts.server);
        cmd.env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("LOG_LEVEL", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (build it with cargo build --release)",
                    opts.server
                )
            });
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server exited")
                .expect("readable stderr");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["event"] == "listening" {
                break v["addr"]
                    .as_str()
                    .expect("addr")
                    .parse()
                    .expect("socket address");
            }
        };
        // Keep draining its stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Target {
            addr,
            pid: Some(child.id()),
            child: Some(child),
            ceiling: false,
        }
    }

    pub fn ceiling() -> Target {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .arg("ceiling-server")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the ceiling server");
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).expect("ceiling listening line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .expect("listening line")
            .parse()
            .expect("address");
        Target {
            addr,
            pid: Some(child.id()),
            child: Some(child),
            ceiling: true,
        }
    }

    /// One REST request (keep-alive is not needed at this rate).
    pub fn rest(&self, method: &str, path: &str, body: &str) -> u16 {
        let mut s = TcpStream::connect(self.addr).expect("REST connect");
        write!(s, "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            .expect("REST write");
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// The server's `/stats` (null if it cannot be read).
    pub fn stats(&self) -> serde_json::Value {
        let Ok(mut s) = TcpStream::connect(self.addr) else {
            return serde_json::Value::Null;
        };
        let _ = s.write_all(b"GET /stats HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or_default()
    }

    pub fn slow_consumer_disconnects(&self) -> u64 {
        self.stats()["slow_consumer_disconnects"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Heap allocations so far, when the server is `pubsub-counting` (a counting allocator).
    pub fn allocations(&self) -> Option<u64> {
        self.stats()["loop"]["allocations"].as_u64()
    }

    /// False for the in-tool ceiling, which answers every connection with a handshake.
    pub fn is_pubsub(&self) -> bool {
        !self.ceiling
    }

    pub fn create_topic(&self, name: &str) {
        let status = self.rest("POST", "/topics", &format!(r#"{{"name":"{name}"}}"#));
        assert!(
            status == 201 || status == 409,
            "creating topic {name}: HTTP {status}"
        );
    }
}

fn main() {
    // These two take their own arguments (files, and a plan of runs).
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("report") => std::process::exit(report::report(&args[1..])),
        Some("compare") => std::process::exit(report::compare(&args[1..])),
        _ => {}
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pubsub-bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    measure::raise_fd_limit();
    let report = match opts.scenario.as_str() {
        "ceiling-server" => {
            let port = opts.addr.map_or(0, |a| a.port());
            if let Err(e) = ceiling::serve(port) {
                eprintln!("ceiling server: {e}");
                std::process::exit(1);
            }
            return;
        }
        "fanout" => scenario::fanout(&opts, true),
        "ceiling" => scenario::fanout(&opts, false),
        "topics" => scenario::topics(&opts),
        "latency" => scenario::latency(&opts),
        "conns" => scenario::conns(&opts),
        "conns-worker" => {
            scenario::conns_worker(&opts);
            return;
        }
        "slow" => scenario::slow(&opts),
        "noisy" => noisy::noisy(&opts),
        "hostile" => hostile::hostile(&opts),
        "cluster" => cluster::cluster(&opts),
        "send-cost" => sendcost::send_cost(&opts),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            return;
        }
        other => {
            eprintln!("pubsub-bench: unknown scenario {other}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    report.print(opts.json);
    if !report.ok {
        std::process::exit(1);
    }
}
