//! pubsub: an in-memory publish/subscribe server over WebSocket on a single mio event loop.
//!
//! Everything but `server`, `signal` and `sys` is pure: bytes and values in, bytes and values
//! out, so it is unit-tested and fuzzed without sockets.

#![deny(unsafe_code)] // SAFETY: allowed only in signal.rs and sys.rs, each block justified.

#[cfg(feature = "count-allocations")]
pub mod alloc_count;
pub mod broker;
pub mod config;
pub mod engine;
pub mod error;
pub mod fuzz;
pub mod guard;
pub mod http;
pub mod log;
pub mod metrics;
pub mod outq;
pub mod protocol;
pub mod routes;
pub mod server;
pub mod signal;
pub mod stats;
pub mod sys;
pub mod time;
pub mod ws;
