//! Continuous backup of a Deno KV database to object storage, point-in-time recovery and read
//! replicas, in the continuous-backup layout that Deno Deploy writes (snapshot ranges, mutation
//! log segments and a `differential` marker).

#![warn(missing_docs)]

pub mod consumer;
pub mod format;
pub mod producer;
pub mod restore;
