//! Three instances behind a real HAProxy running the configuration `compose.yaml` ships (its
//! addresses swapped for local ones), one real redis-server: one instance is killed while a
//! publisher and subscribers go through HAProxy; the clients reconnect through it, resume with
//! `since_seq` and `epoch`, retry unacknowledged publishes with the same ids, and every
//! subscriber ends with every event once, in order.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{wait_until, Server, TIMEOUT};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

struct Haproxy {
    child: Child,
    dir: std::path::PathBuf,
    addr: SocketAddr,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The HAProxy configuration in `compose.yaml`, for instances at `backends` and listening on a
/// free local port (Docker's resolver left out: the addresses are literal here).
fn config_from_compose(backends: &[SocketAddr], port: u16) -> String {
    let compose = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml"))
        .expect("compose.yaml");
    let start = compose.find("content: |").expect("the haproxy config") + "content: |".len();
    let mut lines = Vec::new();
    let mut servers = backends.iter();
    let mut in_resolvers = false;
    for line in compose[start..].lines().skip(1) {
        if !line.starts_with("      ") && !line.trim().is_empty() {
            break;
        }
        let line = line.get(6..).unwrap_or("");
        if line.starts_with("resolvers ") {
            in_resolvers = true;
        } else if !line.starts_with(' ') {
            in_resolvers = false;
        }
        if in_resolvers {
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("bind :8080") {
            lines.push(format!("  bind 127.0.0.1:{port}"));
        } else if let Some(rest) = trimmed.strip_prefix("server ") {
            let name = rest.split(' ').next().unwrap();
            let addr = servers.next().expect("a backend for each server line");
            lines.push(format!("  server {name} {addr} check"));
        } else {
            lines.push(line.to_string());
        }
    }
    assert!(
        servers.next().is_none(),
        "compose.yaml has a server per instance"
    );
    lines.join("\n") + "\n"
}

fn start_haproxy(backends: &[SocketAddr]) -> Option<Haproxy> {
    if !common::redis::installed("haproxy", "-v", "haproxy") {
        return None;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pubsub-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, config_from_compose(backends, port)).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn haproxy");
    Some(Haproxy {
        child,
        dir,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

fn connect(addr: SocketAddr) -> Option<Socket> {
    let (ws, _) = tungstenite::connect(format!("ws://{addr}/ws")).ok()?;
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
    }
    Some(ws)
}

fn next_text(ws: &mut Socket) -> Option<Value> {
    loop {
        match ws.read().ok()? {
            Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// A subscriber that goes through HAProxy, and on any failure reconnects through it and resumes
/// from the last seq it has with the epoch it was given; every seq it got, until `last`.
fn follow(addr: SocketAddr, topic: &str, last: u64) -> Vec<u64> {
    let deadline = Instant::now() + 3 * TIMEOUT;
    let mut seen: Vec<u64> = Vec::new();
    let mut epoch: Option<String> = None;
    while seen.last() != Some(&last) {
        assert!(Instant::now() < deadline, "stuck at {:?}", seen.last());
        let Some(mut ws) = connect(addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let mut sub = json!({"type":"subscribe","topic":topic,"client_id":"f",
            "since_seq": seen.last().copied().unwrap_or(0)});
        if let Some(e) = &epoch {
            sub["epoch"] = json!(e);
        }
        if ws.send(Message::text(sub.to_string())).is_err() {
            continue;
        }
        let Some(ack) = next_text(&mut ws) else {
            continue;
        };
        if ack["type"] != "ack" {
            assert_eq!(ack["error"]["code"], "UNAVAILABLE", "{ack}");
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if epoch.is_some() {
            assert_eq!(ack["recovered"], true, "{ack}");
        }
        epoch = ack["epoch"].as_str().map(str::to_string);
        while seen.last() != Some(&last) {
            let Some(v) = next_text(&mut ws) else { break };
            assert_eq!(v["type"], "event", "{v}");
            seen.push(v["seq"].as_u64().unwrap());
        }
    }
    seen
}

/// Publishes `n` messages through HAProxy one at a time, each retried with its own id until
/// acknowledged; whether each ack was a duplicate.
fn publish(addr: SocketAddr, topic: &str, n: usize) -> Vec<(u64, bool)> {
    let mut ws: Option<Socket> = None;
    let mut acks = Vec::new();
    for i in 0..n {
        let msg = json!({"type":"publish","topic":topic,
            "message":{"id": common::uuid_v4(), "payload": i}})
        .to_string();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "publish {i} never acked");
            let Some(s) = ws.as_mut() else {
                ws = connect(addr);
                if ws.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            };
            let answer = s
                .send(Message::text(msg.clone()))
                .ok()
                .and_then(|()| next_text(s));
            match answer {
                None => ws = None,
                Some(v) if v["type"] == "ack" => {
                    acks.push((v["seq"].as_u64().unwrap(), v["duplicate"] == true));
                    break;
                }
                Some(v) => {
                    assert_eq!(v["error"]["code"], "UNAVAILABLE", "{v}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        // Paced, so the kill lands mid-stream.
        std::thread::sleep(Duration::from_millis(2));
    }
    acks
}

#[test]
fn clients_behind_haproxy_survive_an_instance_killed_with_nothing_lost() {
    let Some(redis) = Redis::start() else { return };
    let vars = [("TOPIC_HISTORY_SIZE", "1000")];
    let mut nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let all = [("REDIS_URL", redis.url()), ("INSTANCE_ID", id.to_string())];
            let mut v: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            v.extend_from_slice(&vars);
            Server::start_with(&v)
        })
        .collect();
    for n in &nodes {
        wait_until("instance up", || n.request("GET", "/health", None).0 == 200);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let Some(proxy) = start_haproxy(&addrs) else {
        return;
    };
    let front = proxy.addr;
    wait_until("haproxy serves", || {
        TcpStream::connect(front).is_ok()
            && {
                let mut s = TcpStream::connect(front).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                use std::io::Write;
                let body = r#"{"name":"ha"}"#;
                let _ = write!(s, "POST /topics HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let status = common::read_response(&mut s).status;
                status == 201 || status == 409
            }
    });
    const N: usize = 300;
    let result = std::thread::scope(|s| {
        let followers: Vec<_> = (0..3)
            .map(|_| s.spawn(move || follow(front, "ha", N as u64)))
            .collect();
        let publisher = s.spawn(move || publish(front, "ha", N));
        wait_until("events flowing", || {
            nodes[1].get("/stats")["topics"]["ha"]["messages"]
                .as_u64()
                .unwrap_or(0)
                > 100
        });
        // Whichever clients it held reconnect through HAProxy to the two left.
        let _ = nodes[0].child.kill();
        let acks = publisher.join().unwrap();
        let streams: Vec<Vec<u64>> = followers.into_iter().map(|f| f.join().unwrap()).collect();
        (acks, streams)
    });
    let (acks, streams) = result;
    let mut seqs: Vec<u64> = acks.iter().map(|a| a.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N, "every message under a seq of its own");
    for stream in &streams {
        assert_eq!(stream, &(1..=N as u64).collect::<Vec<_>>());
    }
    drop(nodes.remove(0));
}
