//! The ceiling: the least a server of this design can do for a fan-out. One mio loop; it takes
//! the handshake, answers subscribes, and for each publish builds one event frame (the message
//! bytes copied in, a seq) shared by every subscriber's queue, flushed once per tick with the
//! server's own writer (`pubsub::server::sys::SocketSend`: send(2), or sendmsg(2) for several frames).
//! No JSON parsing, no validation, no topics, no limits. `fanout` and `latency` report the real
//! server next to this, measured in the same run.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use pubsub::server::sys::SocketSend;
use pubsub::ws::frame::{apply_mask, decode_header, encode_header, OpCode, Role, MAX_HEADER_LEN};
use pubsub::ws::handshake;

const LISTENER: Token = Token(usize::MAX);
const TS: &str = "2026-01-01T00:00:00.000Z";

struct Conn {
    stream: TcpStream,
    open: bool,
    inbuf: Vec<u8>,
    queue: VecDeque<Rc<[u8]>>,
    front_written: usize,
    subscriber: bool,
    writable_registered: bool,
}

fn frame(payload: &[u8]) -> Rc<[u8]> {
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = encode_header(true, OpCode::Text, payload.len(), &mut h);
    let mut v = Vec::with_capacity(n + payload.len());
    v.extend_from_slice(&h[..n]);
    v.extend_from_slice(payload);
    Rc::from(v)
}

pub fn serve(port: u16) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening {}", listener.local_addr()?);
    io::stdout().flush()?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut subscribers: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut dirty: Vec<usize> = Vec::new();
    let ack = frame(format!(r#"{{"type":"ack","status":"ok","ts":"{TS}"}}"#).as_bytes());
    let mut seq = 0u64;
    let mut event_buf = Vec::with_capacity(512);
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let key = conns.len();
                    poll.registry()
                        .register(&mut stream, Token(key), Interest::READABLE)?;
                    conns.push(Some(Conn {
                        stream,
                        open: false,
                        inbuf: Vec::new(),
                        queue: VecDeque::new(),
                        front_written: 0,
                        subscriber: false,
                        writable_registered: false,
                    }));
                }
                continue;
            }
            let key = ev.token().0;
            if ev.is_writable() {
                dirty.push(key);
            }
            if !(ev.is_readable() || ev.is_read_closed()) {
                continue;
            }
            while let Some(c) = conns[key].as_mut() {
                let n = match c.stream.read(&mut scratch) {
                    Ok(n) if n > 0 => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    _ => {
                        conns[key] = None;
                        subscribers.retain(|&s| s != key);
                        break;
                    }
                };
                c.inbuf.extend_from_slice(&scratch[..n]);
                let mut buf = std::mem::take(&mut c.inbuf);
                let mut pos = 0;
                if !c.open {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        c.inbuf = buf;
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let key_line = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                        .unwrap_or("");
                    let resp = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                        handshake::accept_key(key_line.trim().as_bytes())
                    );
                    c.queue.push_back(Rc::from(resp.into_bytes()));
                    dirty.push(key);
                    c.open = true;
                    pos = end + 4;
                }
                loop {
                    let rest = &mut buf[pos..];
                    let Ok(Some(h)) = decode_header(rest, Role::Server) else {
                        break;
                    };
                    let end = h.header_len + h.payload_len as usize;
                    if rest.len() < end {
                        break;
                    }
                    let payload = &mut rest[h.header_len..end];
                    apply_mask(payload, h.mask.unwrap_or([0; 4]), 0);
                    pos += end;
                    if payload.starts_with(b"{\"type\":\"subscribe\"") {
                        let c = conns[key].as_mut().expect("reading conn exists");
                        c.subscriber = true;
                        c.queue.push_back(ack.clone());
                        subscribers.push(key);
                        dirty.push(key);
                    } else if payload.starts_with(b"{\"type\":\"publish\"") {
                        // The message object, copied as is: from `"message":` to the last `}`.
                        let Some(m) = payload.windows(10).position(|w| w == b"\"message\":") else {
                            continue;
                        };
                        let message = &payload[m + 10..payload.len() - 1];
                        seq += 1;
                        event_buf.clear();
                        event_buf
                            .extend_from_slice(br#"{"type":"event","topic":"bench","message":"#);
                        event_buf.extend_from_slice(message);
                        event_buf
                            .extend_from_slice(format!(r#","seq":{seq},"ts":"{TS}"}}"#).as_bytes());
                        let ev = frame(&event_buf);
                        for &s in &subscribers {
                            if let Some(sc) = conns[s].as_mut() {
                                sc.queue.push_back(ev.clone());
                                dirty.push(s);
                            }
                        }
                        conns[key]
                            .as_mut()
                            .expect("reading conn exists")
                            .queue
                            .push_back(ack.clone());
                        dirty.push(key);
                    }
                }
                buf.drain(..pos);
                if let Some(c) = conns[key].as_mut() {
                    c.inbuf = buf;
                }
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty.drain(..) {
            let Some(c) = conns[key].as_mut() else {
                continue;
            };
            while !c.queue.is_empty() {
                let slices: Vec<IoSlice<'_>> = c
                    .queue
                    .iter()
                    .take(64)
                    .enumerate()
                    .map(|(i, f)| IoSlice::new(if i == 0 { &f[c.front_written..] } else { f }))
                    .collect();
                match SocketSend(&c.stream).write_vectored(&slices) {
                    Ok(mut n) => {
                        while n > 0 {
                            let left = c.queue[0].len() - c.front_written;
                            if n >= left {
                                n -= left;
                                c.front_written = 0;
                                c.queue.pop_front();
                            } else {
                                c.front_written += n;
                                n = 0;
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
            let want = !c.queue.is_empty();
            if want != c.writable_registered {
                c.writable_registered = want;
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                poll.registry()
                    .reregister(&mut c.stream, Token(key), interest)?;
            }
        }
    }
}
