//! kv-connect-server (skeleton)
