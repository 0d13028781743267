//! The event loop: one mio `Poll` on one thread. It accepts, reads into one loop-wide scratch
//! buffer, hands the bytes to the engine, writes out what the engine queued (many frames per
//! write call, once per connection per tick) and closes what the engine is done with.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::config::Config;
use crate::engine::{AfterFlush, Engine};
use crate::log::Level;
use crate::signal::Signals;

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const SCRATCH_BYTES: usize = 64 * 1024;
/// Reads one connection may do per tick before others get their turn.
const READS_PER_TICK: usize = 16;
/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How far one readiness event is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Until a read comes back shorter than the buffer: on Linux that read emptied the socket
    /// and the edge-triggered poll reports anything that arrives later, so the `read` that
    /// would only say `WouldBlock` is saved (one syscall per readiness event instead of two).
    ToShortRead,
    /// Until `WouldBlock` or the end of the stream: when the event reported the peer's FIN, or
    /// when reading resumes after a pause, the data may end in a FIN that no later event will
    /// announce again.
    ToWouldBlock,
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    engine: Engine<TcpStream>,
    scratch: Vec<u8>,
    /// Connections whose reading stopped at the per-tick budget, to continue next tick.
    resume: Vec<usize>,
    accept_paused_until: Option<Instant>,
    local_addr: SocketAddr,
}

impl Server {
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(SocketAddr::new(config.host, config.port))?;
        crate::sys::set_listen_backlog(&listener, crate::sys::LISTEN_BACKLOG)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::install()?;
        poll.registry()
            .register(signals.source(), SIGNALS, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener: Some(listener),
            signals,
            engine: Engine::new(config, Instant::now()),
            scratch: vec![0; SCRATCH_BYTES],
            resume: Vec::new(),
            accept_paused_until: None,
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
            let now = Instant::now();
            let mut wake = self.engine.next_wakeup();
            if let Some(t) = shutdown_deadline {
                wake = wake.min(t);
            }
            if let Some(t) = self.accept_paused_until {
                wake = wake.min(t);
            }
            let timeout = if self.resume.is_empty() {
                wake.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            match self
                .poll
                .poll(&mut events, Some(timeout + Duration::from_micros(500)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            let stats = self.engine.stats_mut();
            let n = events.iter().count() as u64;
            stats.event_loop.ticks += 1;
            stats.event_loop.events += n;
            stats.event_loop.events_per_tick.record(n);

            for key in std::mem::take(&mut self.resume) {
                self.read(key, now, Drain::ToWouldBlock);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
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
                    Token(key) => {
                        if event.is_read_closed() || event.is_error() {
                            self.read(key, now, Drain::ToWouldBlock);
                        } else if event.is_readable() {
                            self.read(key, now, Drain::ToShortRead);
                        }
                        if event.is_writable() {
                            self.flush(key, now);
                        }
                    }
                }
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            self.engine.tick(now);
            self.flush_dirty(now);
            self.reap();
            if let Some(deadline) = shutdown_deadline {
                if self.engine.conn_count() == 0 || now >= deadline {
                    crate::log!(Level::Info, "shutdown_complete", "connections_left" => self.engine.conn_count());
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let key = self.engine.open(stream, peer.ip(), now);
                    let registry = self.poll.registry();
                    if let Some(conn) = self.engine.conn_mut(key) {
                        if registry
                            .register(&mut conn.socket, Token(key), Interest::READABLE)
                            .is_err()
                        {
                            self.engine.socket_failed(key);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or a transient network error: the
                    // listener stays readable, so wait a moment instead of spinning.
                    crate::log!(Level::Warn, "accept_failed", "error" => e.to_string());
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn read(&mut self, key: usize, now: Instant, drain: Drain) {
        for _ in 0..READS_PER_TICK {
            if !self.engine.wants_read(key) {
                if let Some(conn) = self.engine.conn_mut(key) {
                    conn.read_stalled = true;
                }
                return;
            }
            let Some(conn) = self.engine.conn_mut(key) else {
                return;
            };
            match conn.socket.read(&mut self.scratch) {
                Ok(0) => {
                    self.engine.peer_closed(key, now);
                    return;
                }
                Ok(n) => {
                    let stats = &mut self.engine.stats_mut().event_loop;
                    stats.read_calls += 1;
                    stats.bytes_in += n as u64;
                    self.engine.receive(key, &mut self.scratch[..n], now);
                    if drain == Drain::ToShortRead && n < self.scratch.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.engine.socket_failed(key);
                    return;
                }
            }
        }
        self.resume.push(key);
    }

    fn flush_dirty(&mut self, now: Instant) {
        // Flushing can resume paused reading, which can queue more output: loop until quiet.
        for _ in 0..8 {
            let keys = self.engine.take_dirty();
            if keys.is_empty() {
                return;
            }
            for &key in &keys {
                self.flush(key, now);
            }
            self.engine.return_dirty(keys);
        }
    }

    fn flush(&mut self, key: usize, now: Instant) {
        let (conn, stats) = self.engine.conn_and_stats(key);
        let Some(conn) = conn else { return };
        let report = match conn.outq.write_to(
            &mut crate::sys::SocketSend(&conn.socket),
            &mut stats.event_loop.frames_per_write,
        ) {
            Ok(r) => r,
            Err(_) => {
                self.engine.socket_failed(key);
                return;
            }
        };
        let pending = !conn.outq.is_empty();
        if pending != conn.writable_registered {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            conn.writable_registered = pending;
            if self
                .poll
                .registry()
                .reregister(&mut conn.socket, Token(key), interest)
                .is_err()
            {
                self.engine.socket_failed(key);
                return;
            }
        }
        let stats = &mut self.engine.stats_mut().event_loop;
        stats.write_calls += report.write_calls as u64;
        stats.frames_written += report.frames as u64;
        stats.bytes_out += report.bytes as u64;
        match self.engine.after_flush(key, now) {
            AfterFlush::ShutdownWrite => {
                if let Some(conn) = self.engine.conn_mut(key) {
                    let _ = conn.socket.shutdown(Shutdown::Write);
                }
            }
            AfterFlush::Nothing => {}
        }
        let stalled = self.engine.conn(key).is_some_and(|c| c.read_stalled);
        if stalled && self.engine.wants_read(key) {
            if let Some(conn) = self.engine.conn_mut(key) {
                conn.read_stalled = false;
            }
            // The readiness that arrived while paused may have carried the peer's FIN.
            self.read(key, now, Drain::ToWouldBlock);
        }
    }

    fn reap(&mut self) {
        for key in self.engine.take_doomed() {
            if let Some(mut socket) = self.engine.remove(key) {
                let _ = self.poll.registry().deregister(&mut socket);
            }
        }
    }
}
