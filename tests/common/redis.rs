//! A real `redis-server` for the tests that need one: started on a unix socket in a fresh
//! directory, without persistence, and killed when dropped. Without the binary such tests are
//! skipped with a message, unless `PUBSUB_REQUIRE_REDIS=1` (set by `.ci/run`) makes that a failure.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pubsub::resp::{self, Decoder, Value};

pub struct Redis {
    child: Child,
    dir: PathBuf,
    pub socket: PathBuf,
    /// Arguments beyond the defaults (persistence), kept for a restart.
    extra: Vec<String>,
    /// A TCP port as well as the socket, when asked for.
    pub port: Option<u16>,
    /// The password the server now asks for, if any.
    password: Option<String>,
}

impl Redis {
    /// A fresh server, or `None` (with the reason printed) when there is no `redis-server`.
    pub fn start() -> Option<Redis> {
        Redis::start_with(&[], false)
    }

    /// With more arguments (`--appendonly yes` ...), and listening on a free TCP port too when
    /// `tcp` is set.
    pub fn start_with(extra: &[&str], tcp: bool) -> Option<Redis> {
        if !installed("redis-server", "--version", "redis-server") {
            return None;
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pubsub-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let port = tcp.then(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        });
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Redis::spawn(&dir, &socket, port, &extra);
        let redis = Redis {
            child,
            dir,
            socket,
            extra,
            port,
            password: None,
        };
        redis.wait_ready();
        Some(redis)
    }

    fn spawn(dir: &Path, socket: &Path, port: Option<u16>, extra: &[String]) -> Child {
        let port = port.map_or("0".to_string(), |p| p.to_string());
        Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .arg("--unixsocket")
            .arg(socket)
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + super::TIMEOUT;
        loop {
            if let Ok(mut c) = self.connect_raw() {
                if c.call(&[b"PING"]) == Value::Simple(b"PONG".to_vec()) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `REDIS_URL` for the unix socket.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`) to the server.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} redis-server");
    }

    /// Stops the server (SIGTERM: with persistence on, it writes its data first) and starts it
    /// again on the same socket, port and directory.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// As [`Redis::restart`], with `more` arguments this time (`--requirepass` ...): the test
    /// still reaches it through [`Redis::connect`].
    pub fn restart_with(&mut self, more: &[&str]) {
        self.signal("TERM");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let mut extra = self.extra.clone();
        extra.extend(more.iter().map(|s| s.to_string()));
        self.child = Redis::spawn(&self.dir, &self.socket, self.port, &extra);
        self.password = more
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| more.get(i + 1))
            .map(|p| p.to_string());
        self.wait_ready();
    }

    /// A connection, authenticated when the server asks for a password.
    fn connect_raw(&self) -> std::io::Result<RedisConn> {
        let stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(super::TIMEOUT))?;
        let mut c = RedisConn {
            stream,
            decoder: Decoder::new(resp::Limits::default()),
            buf: Vec::new(),
        };
        if let Some(password) = &self.password {
            c.call(&[b"AUTH", password.as_bytes()]);
        }
        Ok(c)
    }

    /// The server no longer asks for a password.
    pub fn drop_password(&mut self) {
        let ok = self
            .connect()
            .call(&[b"CONFIG", b"SET", b"requirepass", b""]);
        assert_eq!(ok, Value::Simple(b"OK".to_vec()));
        self.password = None;
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

/// Whether `binary` runs (`arg` is its version flag). When it does not, the test is skipped with
/// a message, unless `PUBSUB_REQUIRE_REDIS=1` (set by `.ci/run`) makes that a failure.
pub fn installed(binary: &str, arg: &str, package: &str) -> bool {
    let found = Command::new(binary)
        .arg(arg)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("PUBSUB_REQUIRE_REDIS").as_deref() != Ok("1"),
            "PUBSUB_REQUIRE_REDIS=1 but {binary} is not installed"
        );
        // Past the test harness's capture, so the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {binary} is not installed (apt-get install {package})"
        );
    }
    found
}
