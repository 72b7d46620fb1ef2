//! kv-connect-client (skeleton)
