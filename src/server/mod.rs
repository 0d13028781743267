//! The event loop: one mio `Poll` on one thread, the only part of the server that touches
//! sockets, signals and the clock. Each tick it polls, accepts, reads each readable
//! connection once into one loop-wide buffer, lets the engine do its own work, writes out what
//! the engine queued, and closes what the engine is done with (the order is the engine's,
//! see `engine`).

mod redis;
mod signal;
pub mod sys;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::config::Config;
use crate::engine::{Engine, Flushed, Readiness, Received};
use crate::log::Level;
use signal::Signals;
use sys::SocketSend;

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// One read per connection per tick goes into this buffer, which the engine parses in place.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Connections accepted per tick; the rest wait in the backlog for the next tick.
const ACCEPTS_PER_TICK: usize = 256;
/// How long accepting pauses after an accept error other than running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Descriptors kept free of connections: the listener, the poll, the signal pipe, the reserve,
/// and what the process may open besides.
const SPARE_DESCRIPTORS: u64 = 32;
/// Slack added to the poll timeout so a deadline is not woken for a moment too early.
const WAKE_SLACK: Duration = Duration::from_micros(500);

/// Binds, logs the address and serves until SIGTERM or SIGINT; the process's exit code.
pub fn serve(config: Config) -> ExitCode {
    crate::log::set_level(config.log_level);
    let server = match Server::bind(config.clone()) {
        Ok(s) => s,
        Err(e) => {
            let addr = format!("{}:{}", config.host, config.port);
            crate::log!(Level::Error, "bind_failed", "addr" => addr, "error" => e.to_string());
            return ExitCode::from(1);
        }
    };
    crate::log!(Level::Info, "listening", "addr" => server.local_addr().to_string(), "echo" => config.enable_echo);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::log!(Level::Error, "event_loop_failed", "error" => e.to_string());
            ExitCode::from(1)
        }
    }
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    /// A descriptor held back so that, when none is left, one connection can still be
    /// accepted, answered 503 and closed instead of waiting in the backlog unanswered.
    reserve: Option<std::os::fd::OwnedFd>,
    accept_log: crate::log::Throttle,
    /// The listener may hold more connections than this tick accepted.
    accept_pending: bool,
    accept_paused_until: Option<Instant>,
    signals: Signals,
    /// Cluster mode: the connection to Redis.
    redis: Option<redis::RedisIo>,
    engine: Engine<TcpStream>,
    scratch: Vec<u8>,
    local_addr: SocketAddr,
}

impl Server {
    pub fn bind(mut config: Config) -> io::Result<Server> {
        // As many descriptors as the hard limit allows, and no more connections than fit.
        let fd_limit = sys::raise_fd_limit()?;
        let room = fd_limit.saturating_sub(SPARE_DESCRIPTORS).max(1) as usize;
        if config.max_connections > room {
            crate::log!(Level::Warn, "max_connections_lowered", "configured" => config.max_connections, "allowed" => room, "descriptor_limit" => fd_limit);
            config.max_connections = room;
        }
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(SocketAddr::new(config.host, config.port))?;
        sys::set_listen_backlog(&listener, sys::LISTEN_BACKLOG)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::install()?;
        poll.registry()
            .register(signals.source(), SIGNALS, Interest::READABLE)?;
        let reserve = Some(std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?);
        let redis = config
            .redis_url
            .as_ref()
            .map(|url| redis::RedisIo::new(url.address.clone()));
        Ok(Server {
            redis,
            poll,
            listener: Some(listener),
            reserve,
            accept_log: crate::log::Throttle::default(),
            accept_pending: false,
            accept_paused_until: None,
            signals,
            engine: Engine::new(config, Instant::now()),
            scratch: vec![0; SCRATCH_BYTES],
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until SIGTERM or SIGINT, then drains within the shutdown timeout.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let unread = self.redis.as_ref().is_some_and(redis::RedisIo::has_unread);
            let timeout = if self.engine.has_pending_work() || self.accept_pending || unread {
                Duration::ZERO
            } else {
                let redis_wake = self.redis.as_ref().and_then(redis::RedisIo::next_wakeup);
                let wake = [shutdown_deadline, self.accept_paused_until, redis_wake]
                    .into_iter()
                    .flatten()
                    .fold(self.engine.next_wakeup(), Instant::min);
                wake.saturating_duration_since(Instant::now()) + WAKE_SLACK
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            let n = events.iter().count();
            self.engine.begin_tick(crate::time::unix_millis(), n);

            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_pending = true,
                    // Redis is read after these events, before any client (`receive`).
                    redis::REDIS => {
                        if let Some(io) = self.redis.as_mut() {
                            io.readiness(
                                event.is_readable(),
                                event.is_read_closed() || event.is_error(),
                            );
                        }
                    }
                    // A lookup in progress reads its socket at every tick.
                    redis::DNS => {}
                    SIGNALS => {
                        if self.signals.drain() && shutdown_deadline.is_none() {
                            crate::log!(Level::Info, "shutdown_started", "connections" => self.engine.conn_count());
                            shutdown_deadline = Some(now + self.engine.config().shutdown_timeout);
                            if let Some(mut listener) = self.listener.take() {
                                let _ = self.poll.registry().deregister(&mut listener);
                            }
                            self.engine.begin_shutdown(now);
                        }
                    }
                    Token(key) => self.engine.readiness(
                        key,
                        Readiness {
                            readable: event.is_readable(),
                            hangup: event.is_read_closed() || event.is_error(),
                            writable: event.is_writable(),
                        },
                    ),
                }
            }
            if let (Some(io), Some(b)) = (self.redis.as_mut(), self.engine.backplane_mut()) {
                io.receive(self.poll.registry(), b, now);
                self.engine.cluster_events(now);
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept_pending = true;
            }
            if self.accept_pending {
                self.accept(now);
            }
            while let Some(key) = self.engine.next_read() {
                self.read(key, now);
            }
            self.engine.tick(now);
            if let (Some(io), Some(b)) = (self.redis.as_mut(), self.engine.backplane_mut()) {
                io.send(self.poll.registry(), b, now);
                // A connect that failed at once is an event too (answers UNAVAILABLE).
                self.engine.cluster_events(now);
            }
            let mut send =
                |s: &mut TcpStream, bufs: &[io::IoSlice<'_>]| SocketSend(&*s).write_vectored(bufs);
            while let Some(flushed) = self.engine.next_flush(now, &mut send) {
                self.after_flush(flushed);
            }
            while let Some(mut socket) = self.engine.next_closed() {
                let _ = self.poll.registry().deregister(&mut socket);
            }
            if let Some(deadline) = shutdown_deadline {
                if self.engine.conn_count() == 0 || now >= deadline {
                    crate::log!(Level::Info, "shutdown_complete", "connections_left" => self.engine.conn_count());
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        self.accept_pending = false;
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TICK {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let key = self.engine.open(stream, peer.ip(), now);
                    let registered = self.engine.io_mut(key).map(|s| {
                        self.poll
                            .registry()
                            .register(s, Token(key), Interest::READABLE)
                    });
                    if let Some(Err(_)) = registered {
                        self.engine.io_failed(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if sys::out_of_descriptors(&e) && self.reserve.is_some() => {
                    // Let the reserve go, take the waiting client on it, tell it and let it go,
                    // then hold a descriptor back again.
                    self.reserve = None;
                    if let Ok((mut stream, _)) = listener.accept() {
                        let answer = self.engine.refused_without_descriptor();
                        let _ = SocketSend(&stream).write(&answer);
                        let _ = stream.shutdown(Shutdown::Write);
                        // A request already received would turn the close into a reset that
                        // can destroy the answer before the client reads it.
                        let _ = stream.read(&mut self.scratch);
                    }
                    self.reserve = std::os::fd::AsFd::as_fd(listener).try_clone_to_owned().ok();
                    if let Some(suppressed) = self.accept_log.allow(now) {
                        crate::log!(Level::Warn, "out_of_descriptors", "error" => e.to_string(), "suppressed" => suppressed);
                    }
                }
                Err(e) => {
                    // A transient network error, or out of descriptors with none in reserve:
                    // the listener stays readable, so wait a moment instead of spinning.
                    if let Some(suppressed) = self.accept_log.allow(now) {
                        crate::log!(Level::Warn, "accept_failed", "error" => e.to_string(), "suppressed" => suppressed);
                    }
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        self.accept_pending = true;
    }

    /// One read of a connection into the scratch buffer, handed to the engine.
    fn read(&mut self, key: usize, now: Instant) {
        let Some(mut socket) = self.engine.io(key) else {
            return;
        };
        let result = loop {
            match socket.read(&mut self.scratch) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let received = match result {
            Ok(0) => Received::End,
            Ok(n) => Received::Data {
                filled: n == self.scratch.len(),
                bytes: &mut self.scratch[..n],
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Received::Empty,
            Err(_) => Received::Failed,
        };
        self.engine.received(key, received, now);
    }

    fn after_flush(&mut self, flushed: Flushed) {
        let Flushed {
            key,
            write_interest,
            shutdown_write,
        } = flushed;
        if let Some(on) = write_interest {
            let interest = if on {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let changed = self
                .engine
                .io_mut(key)
                .map(|s| self.poll.registry().reregister(s, Token(key), interest));
            if let Some(Err(_)) = changed {
                self.engine.io_failed(key);
            }
        }
        if shutdown_write {
            if let Some(socket) = self.engine.io(key) {
                let _ = socket.shutdown(Shutdown::Write);
            }
        }
    }
}
