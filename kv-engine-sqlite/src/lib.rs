//! kv-engine-sqlite (skeleton)
