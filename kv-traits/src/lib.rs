//! The vocabulary of a Deno KV database: the key codec, values, versionstamps, read ranges,
//! atomic writes, limits and errors, plus the two traits everything else is built on:
//!
//! - [`Backend`]: an ordered, transactional byte store (what a storage engine implements);
//! - [`Database`]: the Deno KV operations (snapshot read, atomic write, watch, queues), implemented
//!   once over any `Backend` by `kv-db`, and over the network by `kv-connect-client`.
//!
//! ```
//! use kv_traits::key::{encode_key, KeyPart};
//! use kv_traits::{AtomicWrite, KvValue, Limits, Mutation};
//!
//! let key = encode_key(&[KeyPart::String("users".into()), KeyPart::Int(42.into())]).unwrap();
//! assert_eq!(key, b"\x02users\x00\x15\x2a");
//! let write = AtomicWrite { mutations: vec![Mutation::set(key, KvValue::U64(1))], ..Default::default() };
//! assert!(Limits::default().validate_write(&write, 0).is_ok());
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod clock;
pub mod database;
pub mod error;
pub mod key;
pub mod limits;
pub mod stats;
pub mod types;
pub mod v8;
pub mod value;
pub mod versionstamp;

pub use backend::{Backend, KvPair, ReadTxn, WriteTxn};
pub use clock::{Clock, ManualClock, SystemClock};
pub use database::{Database, WatchStream};
pub use error::{BackendError, Cause, KvError};
pub use limits::{LimitError, Limits};
pub use stats::{DatabaseStats, HistogramSnapshot, QueueStats};
pub use types::*;
pub use value::{KvValue, ValueEncoding, ValueError};
pub use versionstamp::Versionstamp;
