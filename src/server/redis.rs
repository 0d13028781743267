//! Cluster mode's socket: the one connection to Redis, driven on the loop without blocking.
//! Each attempt resolves the host afresh (a Docker service may have moved): an address literal
//! or an `/etc/hosts` entry at once, otherwise DNS over UDP with `cluster::lookup` (the static
//! binary has no libc resolver to ask). Then a non-blocking connect, and from then on bytes
//! between the socket and the backplane, which decides everything else (what to send, when the
//! link is dead, when to try again).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket, UnixStream};
use mio::{Interest, Registry, Token};

use crate::cluster::backplane::{Backplane, State};
use crate::cluster::lookup::Lookup;
use crate::cluster::url::Address;
use crate::log::Level;

pub const REDIS: Token = Token(usize::MAX - 3);
pub const DNS: Token = Token(usize::MAX - 4);
/// How long a connect may take before the attempt is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reads of the socket per tick: Redis is read first in a tick, but not without end.
const READS_PER_TICK: usize = 16;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// Whether the connect has completed (`Err` when it failed).
    fn connected(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Stream::Tcp(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
            Stream::Unix(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
        };
        if let Some(e) = error {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

enum Phase {
    Idle,
    Resolving {
        lookup: Lookup,
        port: u16,
        socket: Option<UdpSocket>,
    },
    Connecting {
        stream: Stream,
        until: Instant,
    },
    Open {
        stream: Stream,
        write_interest: bool,
    },
}

pub struct RedisIo {
    address: Address,
    phase: Phase,
    buf: Vec<u8>,
    /// The open socket may have bytes to read: it was reported readable (edge-triggered) and
    /// not read empty since. A tick without it reads nothing, saving a system call per tick
    /// that would find nothing.
    readable: bool,
    /// It was reported closed: read until the end, even past a short read.
    hangup: bool,
}

impl RedisIo {
    pub fn new(address: Address) -> RedisIo {
        RedisIo {
            address,
            phase: Phase::Idle,
            buf: vec![0; 64 * 1024],
            readable: false,
            hangup: false,
        }
    }

    /// What the poll reported for the socket.
    pub fn readiness(&mut self, readable: bool, hangup: bool) {
        self.readable |= readable || hangup;
        self.hangup |= hangup;
    }

    /// Bytes may be waiting that this tick's reads left (the per-tick bound was reached): the
    /// loop must not sleep, since no new readiness will be reported for them.
    pub fn has_unread(&self) -> bool {
        self.readable && matches!(self.phase, Phase::Open { .. })
    }

    /// When this side needs to be woken (a DNS question's or a connect's deadline).
    pub fn next_wakeup(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Resolving { lookup, .. } => lookup.deadline(),
            Phase::Connecting { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// Reads what Redis sent (first thing each tick), and finishes a connect or a lookup that
    /// progressed.
    pub fn receive<T>(&mut self, registry: &Registry, b: &mut Backplane<T>, now: Instant) {
        self.follow(registry, b);
        match &mut self.phase {
            Phase::Resolving { .. } => self.resolve(registry, b, now),
            Phase::Connecting { stream, until } => match stream.connected() {
                Ok(true) => {
                    crate::log!(Level::Info, "redis_connected", "address" => self.describe());
                    let Phase::Connecting { stream, .. } =
                        std::mem::replace(&mut self.phase, Phase::Idle)
                    else {
                        return;
                    };
                    self.phase = Phase::Open {
                        stream,
                        write_interest: true,
                    };
                    // Redis may have answered before the first readiness is seen.
                    self.readable = true;
                    b.connected(now);
                }
                Ok(false) if now < *until => {}
                Ok(false) => self.fail(registry, b, now, "connect timed out".into()),
                Err(e) => self.fail(registry, b, now, e.to_string()),
            },
            Phase::Open { stream, .. } if self.readable => {
                for _ in 0..READS_PER_TICK {
                    match stream.read(&mut self.buf) {
                        Ok(0) => {
                            return self.fail(registry, b, now, "closed by Redis".into());
                        }
                        Ok(n) => {
                            if let Err(e) = b.received(&self.buf[..n], now) {
                                let reason = format!("unexpected reply: {e:?}");
                                return self.fail(registry, b, now, reason);
                            }
                            // Short: the socket is empty, and what comes next is reported
                            // as a new edge (unless the end was already reported).
                            if n < self.buf.len() && !self.hangup {
                                self.readable = false;
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.readable = false;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return self.fail(registry, b, now, e.to_string()),
                    }
                }
            }
            Phase::Open { .. } | Phase::Idle => {}
        }
    }

    /// Starts a connection when the backplane wants one, and writes what it has to send.
    pub fn send<T>(&mut self, registry: &Registry, b: &mut Backplane<T>, now: Instant) {
        self.follow(registry, b);
        if matches!(self.phase, Phase::Idle) && b.wants_connection(now) {
            self.start(registry, b, now);
        }
        let Phase::Open {
            stream,
            write_interest,
        } = &mut self.phase
        else {
            return;
        };
        while !b.unwritten().is_empty() {
            match stream.write(b.unwritten()) {
                Ok(n) => b.wrote(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(registry, b, now, e.to_string()),
            }
        }
        let want = !b.unwritten().is_empty();
        if want != *write_interest {
            *write_interest = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = registry.reregister(stream.source(), REDIS, interest) {
                self.fail(registry, b, now, e.to_string());
            }
        }
    }

    /// The backplane gave the connection up (a reply overdue): drop the socket too.
    fn follow<T>(&mut self, registry: &Registry, b: &Backplane<T>) {
        if matches!(b.state(), State::Down { .. }) && matches!(self.phase, Phase::Open { .. }) {
            self.drop_phase(registry);
        }
    }

    fn start<T>(&mut self, registry: &Registry, b: &mut Backplane<T>, now: Instant) {
        match self.address.clone() {
            Address::Unix(path) => match UnixStream::connect(&path) {
                Ok(stream) => self.connecting(registry, b, Stream::Unix(stream), now),
                Err(e) => self.fail(registry, b, now, e.to_string()),
            },
            Address::Tcp { host, port } => {
                // Read at every attempt: Docker rewrites both files as containers come and go.
                let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let seed = crate::ids::random_u64() as u16;
                self.phase = Phase::Resolving {
                    lookup: Lookup::new(&host, &hosts, &resolv, seed),
                    port,
                    socket: None,
                };
                self.resolve(registry, b, now);
            }
        }
    }

    /// Moves a lookup on: answers read, deadlines applied, the next question sent; connects
    /// once it has an address.
    fn resolve<T>(&mut self, registry: &Registry, b: &mut Backplane<T>, now: Instant) {
        let Phase::Resolving {
            lookup,
            port,
            socket,
        } = &mut self.phase
        else {
            return;
        };
        if let Some(s) = socket.as_ref() {
            loop {
                match s.recv_from(&mut self.buf) {
                    Ok((n, from)) => lookup.answer(from, &self.buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        lookup.tick(now);
        let mut send_error = None;
        if let Some((to, query)) = lookup.next_query(now) {
            let fits = socket
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .is_some_and(|a| a.is_ipv4() == to.is_ipv4());
            if !fits {
                if let Some(mut old) = socket.take() {
                    let _ = registry.deregister(&mut old);
                }
                let any: SocketAddr = if to.is_ipv4() {
                    (IpAddr::from([0, 0, 0, 0]), 0).into()
                } else {
                    (IpAddr::from([0u16; 8]), 0).into()
                };
                match UdpSocket::bind(any) {
                    Ok(mut s) => {
                        if registry.register(&mut s, DNS, Interest::READABLE).is_ok() {
                            *socket = Some(s);
                        }
                    }
                    Err(e) => send_error = Some(e.to_string()),
                }
            }
            // Unreachable nameserver, or no socket: the question's deadline moves the lookup on.
            if let Some(Err(e)) = socket.as_ref().map(|s| s.send_to(&query, to)) {
                send_error = Some(e.to_string());
            }
        }
        let port = *port;
        match lookup.result().cloned() {
            None => {}
            Some(Ok(addrs)) => {
                // The first address the lookup gave (IPv4 answers come first).
                let addr = SocketAddr::new(addrs[0], port);
                self.drop_phase(registry);
                match TcpStream::connect(addr) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        self.connecting(registry, b, Stream::Tcp(stream), now);
                    }
                    Err(e) => self.fail(registry, b, now, e.to_string()),
                }
            }
            Some(Err(e)) => {
                let reason = send_error.unwrap_or_else(|| format!("name not resolved: {e:?}"));
                self.fail(registry, b, now, reason);
            }
        }
    }

    fn connecting<T>(
        &mut self,
        registry: &Registry,
        b: &mut Backplane<T>,
        mut stream: Stream,
        now: Instant,
    ) {
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = registry.register(stream.source(), REDIS, interest) {
            return self.fail(registry, b, now, e.to_string());
        }
        self.phase = Phase::Connecting {
            stream,
            until: now + CONNECT_TIMEOUT,
        };
        // A unix socket is usually connected at once.
        self.receive(registry, b, now);
    }

    fn fail<T>(&mut self, registry: &Registry, b: &mut Backplane<T>, now: Instant, why: String) {
        self.drop_phase(registry);
        let was_up = !matches!(b.state(), State::Down { .. });
        b.connection_lost(now);
        // One line per attempt: the backplane's backoff (up to 5 s) bounds them.
        let level = if was_up { Level::Warn } else { Level::Info };
        crate::log!(level, "redis_connection_failed", "address" => self.describe(), "error" => why);
    }

    fn drop_phase(&mut self, registry: &Registry) {
        self.readable = false;
        self.hangup = false;
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Connecting { mut stream, .. } | Phase::Open { mut stream, .. } => {
                let _ = registry.deregister(stream.source());
            }
            Phase::Resolving {
                socket: Some(mut s),
                ..
            } => {
                let _ = registry.deregister(&mut s);
            }
            _ => {}
        }
    }

    fn describe(&self) -> String {
        match &self.address {
            Address::Tcp { host, port } => format!("{host}:{port}"),
            Address::Unix(path) => path.display().to_string(),
        }
    }
}
