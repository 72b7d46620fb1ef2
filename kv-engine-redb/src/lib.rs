//! kv-engine-redb (skeleton)
