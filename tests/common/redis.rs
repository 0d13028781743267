//! A real `redis-server` for the tests that need one: started on a unix socket in a fresh
//! directory, without persistence, and killed when dropped. Without the binary such tests are
//! skipped with a message, unless `PUBSUB_REQUIRE_REDIS=1` (set by `.ci/run`) makes that a failure.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pubsub::resp::{self, Decoder, Value};

pub struct Redis {
    child: Child,
    dir: PathBuf,
    pub socket: PathBuf,
}

impl Redis {
    /// A fresh server, or `None` (with the reason printed) when there is no `redis-server`.
    pub fn start() -> Option<Redis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("PUBSUB_REQUIRE_REDIS").as_deref() != Ok("1"),
                "PUBSUB_REQUIRE_REDIS=1 but redis-server is not installed"
            );
            // Past the test harness's capture, so the skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: redis-server is not installed (apt-get install redis-server)"
            );
            return None;
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pubsub-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
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
            .expect("spawn redis-server");
        let redis = Redis { child, dir, socket };
        let deadline = Instant::now() + super::TIMEOUT;
        loop {
            if let Ok(mut c) = redis.connect_raw() {
                if c.call(&[b"PING"]) == Value::Simple(b"PONG".to_vec()) {
                    return Some(redis);
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect_raw(&self) -> std::io::Result<RedisConn> {
        let stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(super::TIMEOUT))?;
        Ok(RedisConn {
            stream,
            decoder: Decoder::new(resp::Limits::default()),
            buf: Vec::new(),
        })
    }

    pub fn connect(&self) -> RedisConn {
        self.connect_raw().expect("connect to redis-server")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking connection that speaks through the server's own RESP codec.
pub struct RedisConn {
    stream: UnixStream,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl RedisConn {
    pub fn send(&mut self, args: &[&[u8]]) {
        let mut out = Vec::new();
        resp::command(&mut out, args);
        self.stream.write_all(&out).unwrap();
    }

    /// The next value, read in whatever pieces the socket gives (`chunk` bytes at most a read).
    pub fn recv_in(&mut self, chunk: usize) -> Value {
        let mut piece = vec![0u8; chunk];
        loop {
            let (used, value) = self.decoder.decode(&self.buf).expect("valid RESP");
            self.buf.drain(..used);
            if let Some(v) = value {
                return v;
            }
            let n = self.stream.read(&mut piece).expect("a reply");
            assert!(n > 0, "redis-server closed the connection");
            self.buf.extend_from_slice(&piece[..n]);
        }
    }

    pub fn recv(&mut self) -> Value {
        self.recv_in(64 * 1024)
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Value {
        self.send(args);
        self.recv()
    }
}
