//! Helpers shared by the fuzz targets and the seed generator (`examples/gen_seeds.rs`).

pub mod http_input {
    //! The input format of the `http_handlers` target: one selector byte, then the raw body.

    /// The access token of the fuzzed server.
    pub const ACCESS_TOKEN: &str = "fuzz-access-token";

    /// Which handler a request goes to (selector bits 0-1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Route {
        /// `POST /v2/snapshot_read`
        SnapshotRead,
        /// `POST /v2/atomic_write`
        AtomicWrite,
        /// `POST /v2/watch`
        Watch,
        /// `POST /` (metadata exchange)
        Metadata,
    }

    impl Route {
        /// The request path.
        pub fn path(self) -> &'static str {
            match self {
                Route::SnapshotRead => "/v2/snapshot_read",
                Route::AtomicWrite => "/v2/atomic_write",
                Route::Watch => "/v2/watch",
                Route::Metadata => "/",
            }
        }
    }

    /// Which protocol headers the request carries (selector bits 2-4).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Headers {
        /// `x-denokv-version: 3` and the right database id.
        V3,
        /// `x-denokv-version: 2` and the right database id.
        V2,
        /// No version header, `x-transaction-domain-id` (protocol 1).
        V1,
        /// Version 3 with another database's id.
        WrongId,
        /// The right database id but no version header.
        NoVersion,
        /// A token the server did not issue.
        BadToken,
    }

    const ROUTES: [Route; 4] = [
        Route::SnapshotRead,
        Route::AtomicWrite,
        Route::Watch,
        Route::Metadata,
    ];
    const HEADERS: [Headers; 8] = [
        Headers::V3,
        Headers::V2,
        Headers::V1,
        Headers::WrongId,
        Headers::NoVersion,
        Headers::BadToken,
        Headers::V3,
        Headers::V3,
    ];

    /// Splits an input into route, headers and body; `None` for the empty input.
    pub fn split(data: &[u8]) -> Option<(Route, Headers, &[u8])> {
        let (&sel, body) = data.split_first()?;
        Some((
            ROUTES[usize::from(sel & 3)],
            HEADERS[usize::from((sel >> 2) & 7)],
            body,
        ))
    }

    /// The input that [`split`]s into `route`, `headers` and `body`.
    pub fn join(route: Route, headers: Headers, body: &[u8]) -> Vec<u8> {
        let r = ROUTES.iter().position(|&x| x == route).unwrap_or(0) as u8;
        let h = HEADERS.iter().position(|&x| x == headers).unwrap_or(0) as u8;
        let mut out = vec![r | (h << 2)];
        out.extend_from_slice(body);
        out
    }
}
