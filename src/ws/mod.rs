//! WebSocket (RFC 6455) without a WebSocket crate: the opening handshake, the frame codec, an
//! incremental UTF-8 validator and the per-connection session state machine. All pure.

pub mod frame;
pub mod handshake;
pub mod session;
pub mod utf8;

pub use frame::{CloseCode, OpCode};
pub use session::{Event, Payload, Session, WsError};
