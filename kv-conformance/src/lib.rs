//! kv-conformance (skeleton)
