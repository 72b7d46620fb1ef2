//! The console page and its assets, embedded in the binary (`kv-connect-server/console/`):
//! plain HTML, CSS and one JavaScript module, no build step.

use http::{Response, StatusCode};

use crate::body::{response, ResponseBody};

/// An embedded file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Asset {
    Page,
    Script,
    Style,
    Icon,
}

impl Asset {
    /// The asset served at `path`.
    pub(super) fn of_path(path: &str) -> Option<Asset> {
        Some(match path {
            "/console" | "/console/" => Asset::Page,
            "/console/app.js" => Asset::Script,
            "/console/app.css" => Asset::Style,
            "/console/icon.svg" => Asset::Icon,
            _ => return None,
        })
    }

    fn content(self) -> (&'static str, &'static str) {
        match self {
            Asset::Page => (
                "text/html; charset=utf-8",
                include_str!("../../console/index.html"),
            ),
            Asset::Script => (
                "text/javascript; charset=utf-8",
                include_str!("../../console/app.js"),
            ),
            Asset::Style => (
                "text/css; charset=utf-8",
                include_str!("../../console/app.css"),
            ),
            Asset::Icon => ("image/svg+xml", include_str!("../../console/icon.svg")),
        }
    }
}

/// The answer for `asset`.
pub(super) fn serve(asset: Asset) -> Response<ResponseBody> {
    let (content_type, body) = asset.content();
    response(StatusCode::OK, content_type, body)
}
