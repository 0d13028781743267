//! The bodies of the cargo-fuzz targets in `fuzz/`, in a crate of their own so that the
//! fuzzers and `cargo test` (which replays every corpus file through them,
//! `tests/fuzz_corpus.rs`) run exactly the same code against the server's library, while the
//! library itself carries none of it. Each target asserts invariants, not just "no panic".

use std::collections::HashMap;
use std::rc::Rc;

use pubsub::broker::{Broker, BrokerLimits, Publish};
use pubsub::config::Config;
use pubsub::error::Failure;
use pubsub::http::{parse_request, Parsed, Progress, RequestLimits};
use pubsub::ids::{ConnId, Replay, TopicName};
use pubsub::protocol::{self, ClientMessage};
use pubsub::resp::{self, Decoder, RespError};
use pubsub::ws::frame::{
    apply_mask, decode_header, encode_frame, encode_header, OpCode, Role, MAX_HEADER_LEN,
};
use pubsub::ws::handshake;
use pubsub::ws::{Event, Session, WsError};

mod connection;
pub use connection::{connection, connection_config};

/// The limits the server runs with by default.
fn request_limits() -> RequestLimits {
    let c = Config::default();
    RequestLimits {
        max_header_bytes: c.max_header_bytes,
        max_body_bytes: c.max_body_bytes,
    }
}

/// Splits `data` into chunks whose sizes come from `sizes` (cycled), each at least 1 byte.
fn chunks<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let size = sizes
            .get(i % sizes.len().max(1))
            .map_or(data.len(), |&s| s as usize + 1);
        let end = (pos + size).min(data.len());
        out.push(&data[pos..end]);
        pos = end;
        i += 1;
    }
    out
}

/// The request at the start of `buf` parsed as it arrives in pieces of `step` bytes, with one
/// `Progress`, as the server parses a slow client's bytes.
fn parse_in_steps<'a>(
    buf: &'a [u8],
    limits: &RequestLimits,
    step: usize,
) -> Result<Parsed<'a>, pubsub::http::RequestError> {
    let mut progress = Progress::default();
    let mut end = 0;
    loop {
        end = (end + step.max(1)).min(buf.len());
        match parse_request(&buf[..end], limits, &mut progress)? {
            Parsed::Partial { .. } if end < buf.len() => continue,
            other => return Ok(other),
        }
    }
}

pub fn http_request(data: &[u8]) {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let limits = request_limits();
    let mut rest = data;
    // Pipelined: parse request after request, as the server does.
    for _ in 0..16 {
        let whole = parse_request(rest, &limits, &mut Progress::default());
        // The same bytes arriving in pieces give the same answer.
        let stepped = parse_in_steps(rest, &limits, step as usize % 64 + 1);
        match (&whole, &stepped) {
            (Ok(Parsed::Complete(a, n)), Ok(Parsed::Complete(b, m))) => {
                assert_eq!((a, n), (b, m), "in pieces, another request");
            }
            (
                Ok(Parsed::Partial {
                    head_complete: a, ..
                }),
                Ok(Parsed::Partial {
                    head_complete: b, ..
                }),
            ) => {
                assert_eq!(a, b)
            }
            (Err(_), Err(_)) => {}
            (w, s) => panic!("whole {w:?}, in pieces {s:?}"),
        }
        match whole {
            Ok(Parsed::Complete(req, used)) => {
                assert!(used > 0 && used <= rest.len());
                assert!(req.body.len() <= limits.max_body_bytes);
                assert!(req.path.starts_with('/') || req.path == "*");
                // Every shorter prefix of a complete request is incomplete, never an error.
                for cut in [0, used / 2, used.saturating_sub(1)] {
                    if cut < used {
                        assert!(
                            matches!(
                                parse_request(&rest[..cut], &limits, &mut Progress::default()),
                                Ok(Parsed::Partial { .. })
                            ),
                            "prefix {cut} of a complete request was not partial"
                        );
                    }
                }
                let _ = pubsub::rest::resolve(req.method, req.path, true);
                rest = &rest[used..];
            }
            Ok(Parsed::Partial { .. }) => return,
            Err(e) => {
                let bytes = Failure::from(e).response().encode(false, false);
                assert!(bytes.starts_with(b"HTTP/1.1 4") || bytes.starts_with(b"HTTP/1.1 5"));
                return;
            }
        }
    }
}

pub fn ws_handshake(data: &[u8]) {
    let Ok(Parsed::Complete(req, _)) =
        parse_request(data, &request_limits(), &mut Progress::default())
    else {
        return;
    };
    match handshake::validate(&req) {
        Ok(accept) => {
            let key = req
                .header("sec-websocket-key")
                .expect("validated requests have a key");
            assert_eq!(accept, handshake::accept_key(key.trim_ascii()));
            assert_eq!(accept.len(), 28);
            let resp = handshake::response(&accept);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut parsed = httparse::Response::new(&mut headers);
            assert!(
                matches!(parsed.parse(&resp), Ok(httparse::Status::Complete(n)) if n == resp.len())
            );
            assert_eq!(parsed.code, Some(101));
        }
        Err(e) => {
            let failure = Failure::from(e);
            assert!(matches!(failure.wire().status, 400 | 405 | 426));
            let _ = failure.response().encode(false, false);
        }
    }
}

pub fn ws_frame(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    // Decoding a header from any prefix gives "need more" or the same answer as the whole.
    for role in [Role::Server, Role::Client] {
        let whole = decode_header(rest, role);
        let cut = (split as usize).min(rest.len());
        match decode_header(&rest[..cut], role) {
            Ok(None) => {}
            other => assert_eq!(other, whole, "prefix {cut} disagrees"),
        }
        if let Ok(Some(h)) = whole {
            assert!(h.header_len <= MAX_HEADER_LEN && h.header_len <= rest.len());
            assert!(!h.opcode.is_control() || (h.fin && h.payload_len <= 125));
        }
    }
    // Round trip: a frame the encoder produces decodes to what was encoded.
    let opcode = [
        OpCode::Text,
        OpCode::Binary,
        OpCode::Continuation,
        OpCode::Ping,
        OpCode::Pong,
        OpCode::Close,
    ][split as usize % 6];
    let fin = opcode.is_control() || split & 0x80 != 0;
    let payload = if opcode.is_control() {
        &rest[..rest.len().min(125)]
    } else {
        rest
    };
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(fin, opcode, payload.len(), &mut header);
    let h = decode_header(&header[..n], Role::Client)
        .expect("own header decodes")
        .expect("complete");
    assert_eq!(
        (h.fin, h.opcode, h.payload_len, h.header_len, h.mask),
        (fin, opcode, payload.len() as u64, n, None)
    );
    if opcode == OpCode::Text || opcode == OpCode::Binary {
        let frame = encode_frame(opcode, payload);
        assert_eq!(frame.len(), n + payload.len());
    }
    // Masking is its own inverse at any offset.
    let mut masked = payload.to_vec();
    let mask = [split, split ^ 0x5a, split.wrapping_mul(7), 0xA5];
    let at = split as usize % (masked.len() + 1);
    apply_mask(&mut masked[..at], mask, 0);
    apply_mask(&mut masked[at..], mask, at);
    apply_mask(&mut masked, mask, 0);
    assert_eq!(masked, payload);
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Error(WsError),
}

fn run_session(chunks: &[&[u8]], max: usize) -> Vec<Seen> {
    let mut session = Session::new(max);
    let mut pending: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            let available = pending.len() - pos;
            match session.decode(&mut pending[pos..]) {
                Ok((0, None)) => break,
                Ok((n, event)) => {
                    assert!(n <= available);
                    pos += n;
                    match event {
                        Some(Event::Text(t)) => {
                            assert!(std::str::from_utf8(&t).is_ok(), "text events are UTF-8");
                            seen.push(Seen::Text(t.to_vec()));
                        }
                        Some(Event::Binary(b)) => seen.push(Seen::Binary(b.to_vec())),
                        Some(Event::Ping(p)) => seen.push(Seen::Ping(p.to_vec())),
                        Some(Event::Pong(p)) => seen.push(Seen::Pong(p.to_vec())),
                        Some(Event::Close(c, r)) => seen.push(Seen::Close(c, r.to_string())),
                        None => {}
                    }
                    if let Some(Seen::Text(t) | Seen::Binary(t)) = seen.last() {
                        assert!(t.len() <= max);
                    }
                }
                Err(e) => {
                    seen.push(Seen::Error(e));
                    return seen;
                }
            }
            assert!(
                session.buffered() <= max.max(64) * 2 + 64,
                "assembly beyond the message limit"
            );
        }
        pending.drain(..pos);
        // Only an unfinished header or control frame is ever left over.
        assert!(
            pending.len() < MAX_HEADER_LEN + 125,
            "{} bytes left unconsumed",
            pending.len()
        );
    }
    seen
}

pub fn ws_session(data: &[u8]) {
    let Some((&sizes_len, rest)) = data.split_first() else {
        return;
    };
    let sizes_len = (sizes_len as usize % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(sizes_len);
    let max = 1024;
    let whole = run_session(&[stream], max);
    let split = run_session(&chunks(stream, sizes), max);
    assert_eq!(
        whole, split,
        "the result depends on how the bytes were split"
    );
}

#[derive(serde::Deserialize)]
struct EventJson<'a> {
    #[serde(rename = "type")]
    kind: String,
    topic: String,
    #[serde(borrow)]
    message: EventMessage<'a>,
}

#[derive(serde::Deserialize)]
struct EventMessage<'a> {
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// Any server message: an object whose `type` is a string (the other fields are skipped, which
/// checks their JSON grammar but not the range of their numbers).
#[derive(serde::Deserialize)]
struct AnyMessage {
    #[serde(rename = "type")]
    kind: String,
}

pub fn client_message(data: &[u8]) {
    let Ok(incoming) = protocol::parse(data) else {
        return;
    };
    if let Some(rid) = incoming.request_id {
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(rid.get()).is_ok());
    }
    let ts = "2025-01-01T00:00:00.000Z";
    match incoming.message {
        ClientMessage::Publish {
            topic,
            id,
            uuid,
            payload,
        } => {
            assert!(TopicName::new(topic.as_str()).is_ok());
            assert_eq!(uuid::Uuid::try_parse(&id).map(|u| u.as_u128()), Ok(uuid));
            let frame = protocol::event_frame(&topic, &id, payload, 1, ts);
            let h = decode_header(&frame, Role::Client)
                .expect("valid")
                .expect("complete");
            let body = &frame[h.header_len..];
            // Checked against the JSON grammar, not serde_json's f64 range: a payload number
            // like 1e400 is valid JSON and is passed on as written (PROTOCOL.md, publish).
            let event: EventJson<'_> = serde_json::from_slice(body).expect("events are JSON");
            assert_eq!(
                (event.kind.as_str(), event.topic.as_str()),
                ("event", topic.as_str())
            );
            assert_eq!(
                event.message.payload.get(),
                payload.get(),
                "the payload is carried verbatim"
            );
        }
        ClientMessage::Subscribe { topic, .. } | ClientMessage::Unsubscribe { topic, .. } => {
            assert!(TopicName::new(topic.as_str()).is_ok());
        }
        ClientMessage::Ping => {
            let frame = protocol::pong_frame(incoming.request_id, ts);
            let h = decode_header(&frame, Role::Client)
                .expect("valid")
                .expect("complete");
            let pong: AnyMessage =
                serde_json::from_slice(&frame[h.header_len..]).expect("pongs are JSON");
            assert_eq!(pong.kind, "pong");
        }
    }
}

/// Every value the decoder completes, and the error that stopped it if one did, for `input`
/// fed in pieces of `step` bytes (0: whole).
fn resp_values(
    input: &[u8],
    step: usize,
    limits: resp::Limits,
) -> (Vec<resp::Value>, Option<RespError>) {
    let mut d = Decoder::new(limits);
    let (mut values, mut buf) = (Vec::new(), Vec::new());
    let step = if step == 0 { input.len().max(1) } else { step };
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&buf) {
                Ok((used, v)) => {
                    assert!(used <= buf.len());
                    buf.drain(..used);
                    match v {
                        Some(v) => values.push(v),
                        None => break,
                    }
                }
                Err(e) => return (values, Some(e)),
            }
        }
    }
    (values, None)
}

/// RESP replies: fed whole and in pieces (the first byte sets their size) the decoder completes
/// the same values and stops at the same error; every value it completes, written out again,
/// decodes to itself.
pub fn resp(data: &[u8]) {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let limits = resp::Limits {
        max_bulk: 4096,
        max_elements: 64,
        max_depth: 8,
        max_line: 256,
    };
    let whole = resp_values(input, 0, limits);
    let pieces = resp_values(input, usize::from(step % 16) + 1, limits);
    assert_eq!(whole, pieces, "whole and in pieces differ");
    for value in &whole.0 {
        let mut out = Vec::new();
        resp::encode(&mut out, value);
        let again = resp_values(&out, 0, resp::Limits::default());
        assert_eq!(
            again,
            (vec![value.clone()], None),
            "does not round-trip: {out:?}"
        );
    }
}

pub fn broker_ops(data: &[u8]) {
    let limits = BrokerLimits {
        max_topics: 3,
        max_subscribers_per_topic: 4,
        history_size: 5,
        history_bytes: 40,
    };
    let mut broker = Broker::new(limits);
    let names = ["a", "b", "c", "d"];
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    let mut epochs = pubsub::ids::Epochs::default();
    for op in data.chunks(3) {
        let [kind, x, y] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
        let topic = names[x as usize % names.len()];
        let conn = ConnId::new(usize::from(y % 6), 1);
        match kind % 7 {
            0 => {
                let name = TopicName::new(topic).expect("the names are valid");
                if broker.create_topic(&name, &epochs.next(1)).is_ok() {
                    last_seq.insert(topic, 0);
                }
            }
            1 => {
                if let Ok(former) = broker.delete_topic(topic) {
                    assert!(former.len() <= limits.max_subscribers_per_topic);
                    last_seq.remove(topic);
                }
            }
            2 | 3 => {
                let replay = match y >> 4 {
                    0..=4 => Replay::None,
                    5..=9 => Replay::LastN(u64::from(x >> 2)),
                    _ => Replay::SinceSeq(u64::from(x >> 2)),
                };
                // Sometimes with an epoch of no incarnation: a resume from another topic.
                let stale = kind & 0x80 != 0;
                let epoch = stale.then_some("stale");
                if let Ok(s) = broker.subscribe(conn, topic, replay, epoch) {
                    let retained = broker.topic(topic).map_or(0, |t| t.history_len());
                    assert!(s.replay.len() <= retained);
                    if let Replay::LastN(n) = replay {
                        assert_eq!(s.replay.len() as u64, n.min(retained as u64));
                    }
                    if let Replay::SinceSeq(since) = replay {
                        if stale {
                            assert_eq!((s.replay.len(), s.recovered), (retained, Some(false)));
                        } else {
                            let expected = s.last_seq.saturating_sub(since.max(s.first_seq - 1));
                            assert_eq!(s.replay.len() as u64, expected);
                        }
                    }
                }
            }
            4 => {
                let _ = broker.unsubscribe(conn, topic);
            }
            5 => {
                let before = broker.topic(topic).map(|t| t.subscribers().len());
                // Eight ids, so retries of a retained one happen often.
                let id = u128::from(y % 8);
                let retained = broker
                    .topic(topic)
                    .and_then(|t| t.last_n(u64::MAX).find(|e| e.id == id).map(|e| e.seq));
                match broker.publish(topic, id, |seq| Rc::from(seq.to_le_bytes().to_vec())) {
                    Ok(Publish::Duplicate { seq }) => {
                        assert_eq!(Some(seq), retained, "a duplicate names the retained event");
                    }
                    Ok(Publish::New(p)) => {
                        assert_eq!(retained, None, "a retained id published again");
                        let last = last_seq
                            .get_mut(topic)
                            .expect("existing topics are tracked");
                        assert_eq!(p.seq, *last + 1, "seq grows by one");
                        *last = p.seq;
                        assert_eq!(Some(p.subscribers.len()), before);
                        assert_eq!(&*p.frame, p.seq.to_le_bytes());
                    }
                    Err(_) => assert!(before.is_none()),
                }
            }
            _ => broker.disconnect(conn),
        }
        broker
            .check_invariants()
            .unwrap_or_else(|e| panic!("after op {op:?}: {e}"));
        for t in broker.topics() {
            assert!(t.history_len() <= limits.history_size);
        }
    }
}

/// A topic's channel as an instance might see it: events of two epochs, repeats, gaps, late and
/// partial history reads, and reads a page at a time. Within an epoch what the mirror delivers goes up one seq at a time,
/// except right after a reset it announced; it never asks for a second fetch while one is out,
/// and it never holds more than its bound.
pub fn mirror(data: &[u8]) {
    use pubsub::cluster::mirror::{ChannelMessage, Mirror, Step};
    let mut m = Mirror::new(b"a", 0, 4);
    let mut fetch: Option<(u64, u64)> = None;
    let mut last_delivered: Option<(Vec<u8>, u64)> = None;
    for op in data.chunks(2) {
        let [kind, x] = [op[0], *op.get(1).unwrap_or(&0)];
        let epoch: &[u8] = if kind & 0x80 == 0 { b"a" } else { b"b" };
        let steps = match kind % 4 {
            0 | 1 => {
                let seq = m.last().saturating_sub(2) + u64::from(x % 8);
                if seq == 0 {
                    continue;
                }
                m.on_message(&ChannelMessage::Event {
                    epoch,
                    seq,
                    event: b"{}",
                })
            }
            2 => {
                // History holding some of what was asked for, from where the input says.
                let Some((after, until)) = fetch.take() else {
                    assert_eq!(
                        m.filled(epoch, &[]),
                        [],
                        "a fill with no fetch out does nothing"
                    );
                    continue;
                };
                let from = after + 1 + u64::from(x % 3);
                let events: Vec<(u64, &[u8])> = (from..=until + u64::from(x % 2))
                    .map(|s| (s, &b"{}"[..]))
                    .collect();
                if x & 0x10 != 0 && events.len() > 2 {
                    // A read cut at its count: the first page, the rest fetched next.
                    m.filled_page(epoch, &events[..2], true)
                } else {
                    m.filled(epoch, &events)
                }
            }
            _ => m.on_message(&ChannelMessage::Deleted { epoch }),
        };
        let mut reset = false;
        for step in steps {
            match step {
                Step::Reset { epoch } => {
                    reset = true;
                    last_delivered = Some((epoch, 0));
                }
                Step::Deliver { seq, .. } => {
                    if let Some((e, prev)) = &last_delivered {
                        if e.as_slice() == m.epoch() && !reset {
                            assert_eq!(seq, prev + 1, "a gap or a repeat without a reset");
                        }
                        assert!(seq > *prev || reset, "went back without a reset");
                    }
                    last_delivered = Some((m.epoch().to_vec(), seq));
                    reset = false;
                }
                Step::Fetch { after, until } => {
                    assert!(after < until + 1 && after <= m.last());
                    fetch = Some((after, until));
                }
                Step::Deleted => {}
            }
        }
    }
}

/// Name resolution's inputs: DNS answers (a whole message after two bytes of query id),
/// `/etc/hosts` and `/etc/resolv.conf` texts, names to ask for. Nothing panics; a query built
/// for a name is never taken for an answer; an answer gives at most as many addresses as it
/// has records, each of the asked type.
pub fn dns(data: &[u8]) {
    use pubsub::cluster::dns::{self, QType, ResolvConf};
    let Some((head, msg)) = data.split_at_checked(2) else {
        return;
    };
    let id = u16::from_be_bytes([head[0], head[1]]);
    for qtype in [QType::A, QType::Aaaa] {
        if let Ok(addrs) = dns::parse_response(msg, id, qtype) {
            let records = usize::from(u16::from_be_bytes([msg[6], msg[7]]));
            assert!(addrs.len() <= records);
            assert!(addrs.iter().all(|a| a.is_ipv4() == (qtype == QType::A)));
        }
    }
    let text = String::from_utf8_lossy(msg);
    let conf = ResolvConf::parse(&text);
    assert!(!conf.nameservers.is_empty());
    let name = text.lines().next().unwrap_or("");
    let _ = dns::hosts_lookup(&text, name);
    let candidates = conf.candidates(name);
    assert!(candidates.len() == conf.search.len() + 1);
    if let Ok(q) = dns::query(id, name, QType::A) {
        assert_eq!(
            dns::parse_response(&q, id, QType::A),
            Err(dns::DnsError::NotOurs)
        );
    }
}
