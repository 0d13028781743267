//! The cluster tests' common steps: instances of the real binary on one Redis, requests to
//! them, and what their subscribers got.

use std::io::Write;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::redis::Redis;
use super::{wait_until, Server, Ws};

/// Starts an instance of the cluster on `redis_url` and waits until it is in step with Redis.
pub fn instance(redis_url: &str, id: &str, vars: &[(&str, &str)]) -> Server {
    let mut all = vec![("REDIS_URL", redis_url), ("INSTANCE_ID", id)];
    all.extend_from_slice(vars);
    let server = Server::start_with(&all);
    wait_until(&format!("{id} up"), || health(&server).0 == 200);
    server
}

pub fn instances(redis: &Redis, n: usize, vars: &[(&str, &str)]) -> Vec<Server> {
    (0..n)
        .map(|i| instance(&redis.url(), &format!("i{i}"), vars))
        .collect()
}

pub fn health(server: &Server) -> (u16, Value) {
    server.request("GET", "/health", None)
}

/// One request to the instance at `addr` (from any thread: `Server` stays on the test's).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(super::TIMEOUT)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let r = super::read_response(&mut s);
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// Publishes `n` events on `topic` (pipelined, then every ack read); the acks' seqs.
pub fn publish_many(addr: SocketAddr, topic: &str, n: usize, tag: &str) -> Vec<u64> {
    let mut ws = Ws::connect(&format!("ws://{addr}/ws"));
    for i in 0..n {
        ws.send(json!({
            "type": "publish", "topic": topic, "request_id": i,
            "message": {"id": super::uuid_v4(), "payload": {"from": tag, "i": i}},
        }));
    }
    let mut seqs = Vec::with_capacity(n);
    for i in 0..n {
        let ack = ws.recv();
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["request_id"], i, "acks come in request order");
        seqs.push(ack["seq"].as_u64().unwrap());
    }
    seqs
}

/// The next `n` events of a subscriber (anything else fails the test).
pub fn events(ws: &mut Ws, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let v = ws.recv();
            assert_eq!(v["type"], "event", "{v}");
            v
        })
        .collect()
}

pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// What a subscriber got until `last` (events, and notices by their `msg`).
pub fn until_seq(ws: &mut Ws, last: u64) -> (Vec<u64>, Vec<Value>) {
    let mut seen = Vec::new();
    let mut notices = Vec::new();
    while seen.last() != Some(&last) {
        let v = ws.recv();
        match v["type"].as_str() {
            Some("event") => seen.push(v["seq"].as_u64().unwrap()),
            Some("info") => notices.push(v),
            _ => panic!("{v}"),
        }
    }
    (seen, notices)
}

/// `CLIENT KILL` of the connection named `name`, found in `CLIENT LIST`.
pub fn kill_client(control: &mut super::redis::RedisConn, name: &str) {
    let list = control.call(&[b"CLIENT", b"LIST"]);
    let list = String::from_utf8(list.as_bytes().unwrap().to_vec()).unwrap();
    let id = list
        .lines()
        .find(|l| l.split(' ').any(|f| f == format!("name={name}")))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .to_string();
    let killed = control.call(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]);
    assert_eq!(killed, pubsub::resp::Value::Integer(1));
}
