//! Cluster mode (`REDIS_URL`): the keys and Lua scripts in Redis, one connection's link, each
//! topic's mirror, the URL and name resolution, and the backplane that ties them together.

pub mod backplane;
pub mod dns;
pub mod link;
pub mod lookup;
pub mod mirror;
pub mod scripts;
#[cfg(test)]
pub(crate) mod seeded;
pub mod url;
