//! pubsub: an in-memory publish/subscribe server over WebSocket on a single mio event loop.
//!
//! Everything but `server`, `conn` and `signal` is pure: bytes and values in, bytes and values
//! out, so it is unit-tested and fuzzed without sockets.

#![deny(unsafe_code)]

pub mod config;
pub mod error;
pub mod http;
pub mod log;
pub mod time;
pub mod ws;
pub mod broker;
pub mod protocol;
pub mod outq;
pub mod stats;
pub mod routes;
pub mod engine;
pub mod server;
pub mod signal;
