//! Helpers shared by the integration tests: start the real `pubsub` binary on an ephemeral
//! port, speak raw HTTP, and open WebSocket clients with the independent `tungstenite` crate.
#![allow(dead_code)]

pub mod cluster;
pub mod redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long any wait may take before the test fails: generous, so a busy machine only makes
/// the tests slower, never wrong.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds, for at most `TIMEOUT`; fails naming `what` otherwise.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: mpsc::Receiver<String>,
    /// The lines logged before `listening`.
    pub startup: Vec<String>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts the binary with `PORT=0` and the given variables; waits for its `listening` line.
    /// `PUBSUB_BIN` runs another build instead (to watch a test fail against an older one).
    pub fn start_with(vars: &[(&str, &str)]) -> Server {
        Server::spawn(Command::new(Server::binary()), vars)
    }

    /// The build under test.
    pub fn binary() -> String {
        std::env::var("PUBSUB_BIN").unwrap_or(env!("CARGO_BIN_EXE_pubsub").into())
    }

    /// Starts `cmd` (the binary, or a shell that execs it) as `start_with` does.
    pub fn spawn(mut cmd: Command, vars: &[(&str, &str)]) -> Server {
        cmd.env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("LOG_LEVEL", "info");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn pubsub");
        let stderr = child.stderr.take();
        let (tx, rx) = mpsc::channel();
        // Owned by a Server at once, so a failed start still kills and reaps the process.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            log: rx,
            startup: Vec::new(),
        };
        let stderr = stderr.expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let line = server
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("no listening line");
            let v: Value = serde_json::from_str(&line).expect("log lines are JSON");
            if v["event"] == "listening" {
                server.addr = v["addr"].as_str().unwrap().parse().unwrap();
                return server;
            }
            server.startup.push(line);
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// One request on a new connection: status and parsed JSON body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut s = self.connect();
        let body = body.unwrap_or("");
        write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let resp = read_response(&mut s);
        let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        (resp.status, json)
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, v) = self.request("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    pub fn create_topic(&self, name: &str) {
        let (status, v) = self.request("POST", "/topics", Some(&format!(r#"{{"name":"{name}"}}"#)));
        assert_eq!(status, 201, "{v}");
    }

    pub fn ws(&self) -> Ws {
        Ws::connect(&self.url("/ws"))
    }

    /// Waits for a log line with this event name.
    pub fn wait_log(&self, event: &str) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let line = self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no {event} log line"));
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Every log line up to and including the first that `last` picks.
    pub fn log_until(&self, last: impl Fn(&Value) -> bool) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut lines = Vec::new();
        loop {
            let line = self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("not logged; so far: {lines:?}"));
            let v: Value = serde_json::from_str(&line).unwrap();
            lines.push(line);
            if last(&v) {
                return lines;
            }
        }
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`) to the server, through the `kill` command, which
    /// keeps the tests free of unsafe code.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} pubsub");
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server process's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Reads one response (head, then a Content-Length body) from the stream.
pub fn read_response(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read response head");
        assert!(
            n > 0,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let mut resp = RawResponse {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = resp
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    resp.body = vec![0; len];
    s.read_exact(&mut resp.body).unwrap();
    resp
}

/// Reads until the server closes the connection (returns what arrived).
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
}

/// A WebSocket client (tungstenite) with JSON helpers.
pub struct Ws {
    pub socket: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub fn connect(url: &str) -> Ws {
        let (socket, resp) = tungstenite::connect(url).expect("websocket connect");
        assert_eq!(resp.status(), 101);
        if let MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        Ws { socket }
    }

    pub fn send(&mut self, v: Value) {
        self.socket.send(Message::text(v.to_string())).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).unwrap();
    }

    /// The next text message as JSON (control frames are answered by tungstenite and skipped).
    pub fn recv(&mut self) -> Value {
        // Heartbeat pings restart the socket's read timeout: the wait is bounded here too.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.socket.read().expect("websocket read") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {
                    assert!(Instant::now() < deadline, "no message within {TIMEOUT:?}");
                    continue;
                }
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    pub fn request(&mut self, v: Value) -> Value {
        self.send(v);
        self.recv()
    }

    pub fn subscribe(&mut self, topic: &str) -> Value {
        let ack = self.request(serde_json::json!({"type":"subscribe","topic":topic,"client_id":"t","request_id":"sub"}));
        assert_eq!(ack["type"], "ack", "{ack}");
        ack
    }

    pub fn publish(&mut self, topic: &str, payload: Value) {
        self.send(publish_msg(topic, payload));
    }
}

pub fn publish_msg(topic: &str, payload: Value) -> Value {
    serde_json::json!({
        "type": "publish",
        "topic": topic,
        "message": {"id": uuid_v4(), "payload": payload},
    })
}

/// A random-enough UUID for tests (version 4 layout).
pub fn uuid_v4() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n)
}

/// A masked client frame built by hand, for sending what a well-behaved client never would.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

pub const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A raw socket past the handshake.
pub fn raw_ws(server: &Server) -> TcpStream {
    let mut s = server.connect();
    s.write_all(UPGRADE.as_bytes()).unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 101);
    s
}

/// An upgraded raw connection with a tiny receive window, so what it does not read backs up
/// into the server's queue quickly.
pub fn raw_ws_with_a_tiny_window(server: &Server) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut s: std::net::TcpStream = socket.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(UPGRADE.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).status, 101);
    s
}

/// Reads frames from a raw socket until a close frame; returns its status code.
pub fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    let data = read_to_close(s);
    let mut pos = 0;
    while pos + 2 <= data.len() {
        let opcode = data[pos] & 0x0F;
        let mut len = (data[pos + 1] & 0x7F) as usize;
        let mut hl = 2;
        if len == 126 {
            len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
            hl = 4;
        } else if len == 127 {
            len = u64::from_be_bytes(data[pos + 2..pos + 10].try_into().unwrap()) as usize;
            hl = 10;
        }
        let payload = &data[pos + hl..(pos + hl + len).min(data.len())];
        if opcode == 8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
        pos += hl + len;
    }
    None
}
