//! HTTP/2 connection settings: how many streams one connection may carry at once and how much
//! outbound data one stream may buffer.
//!
//! # Contract
//!
//! - Deno multiplexes every request of one `Deno.Kv`, each `watch()` stream included, over one
//!   HTTP/2 connection. [`Http2Settings::max_concurrent_streams`] (default
//!   [`DEFAULT_MAX_CONCURRENT_STREAMS`]) is announced in `SETTINGS_MAX_CONCURRENT_STREAMS`;
//!   a client at the limit queues further requests until a stream ends, so it must be above the
//!   number of watches one client keeps open (hyper's own default, 200, made a Deno process with
//!   more than about 200 watches hang).
//! - Memory per stream is bounded: a stream buffers at most
//!   [`Http2Settings::max_send_buf_size`] bytes of response data (plus the one frame being
//!   handed over) before its producer waits for the client to read; request bodies are bounded
//!   by the receive windows, which stay hyper's (1 MiB per stream and per connection, so a
//!   connection holds at most 1 MiB of unread request data whatever its stream count).
//! - An open `/watch` stream of one key costs about 6.5 KiB of server RSS (10,000 streams on
//!   one or on 100 connections: 6.1–6.6 KiB each, `benches/watch.sh`), so the default limit
//!   bounds one connection's streams to about 100 MiB.

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Http2Builder;

/// Default of [`Http2Settings::max_concurrent_streams`].
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 16_384;

/// Default of [`Http2Settings::max_send_buf_size`].
pub const DEFAULT_MAX_SEND_BUF_SIZE: usize = 64 * 1024;

/// HTTP/2 settings of every served connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Settings {
    /// Streams one connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Response bytes one stream buffers before its producer waits (the client has not read
    /// them or its flow-control window is closed).
    pub max_send_buf_size: usize,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_send_buf_size: DEFAULT_MAX_SEND_BUF_SIZE,
        }
    }
}

impl Http2Settings {
    /// Applies the settings to a connection builder.
    pub(crate) fn apply(&self, builder: &mut Http2Builder<'_, TokioExecutor>) {
        builder
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_send_buf_size(self.max_send_buf_size);
    }
}
