//! Cluster mode's data in Redis (issue #11): the keys, and the Lua scripts that change them in
//! one atomic step each. Groundwork: tested against a real redis-server, not yet used by the
//! server.

pub mod backplane;
pub mod dns;
pub mod link;
pub mod lookup;
pub mod mirror;
pub mod scripts;
pub mod url;
