//! pubsub: an in-memory publish/subscribe server over WebSocket on a single mio event loop.
//!
//! `server` is the only module that touches the operating system (sockets, signals, the
//! clock); `log` writes its lines to stderr. Everything else takes bytes, values and the time
//! and returns bytes and values, so it is unit-tested and fuzzed without sockets: the HTTP and
//! WebSocket codecs (`http`, `ws`), the protocol messages (`protocol`), the REST handlers
//! (`rest`), the broker, and the engine that runs connections through their phases.

#![deny(unsafe_code)] // SAFETY: allowed only in server/signal.rs and server/sys.rs, each line justified.

pub mod broker;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
pub mod guard;
pub mod http;
pub mod ids;
pub mod log;
pub mod metrics;
pub mod outq;
pub mod protocol;
pub mod resp;
pub mod rest;
pub mod server;
pub mod stats;
pub mod time;
pub mod ws;
