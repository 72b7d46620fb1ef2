//! The real browser of the web console's test: Debian's Chromium and the `playwright-core` npm
//! package that drives it, installed by `scripts/install-browser.sh`.
//!
//! Contract: [`browser`] runs the script once per process (it installs only what is missing:
//! `apt-get install chromium` as root, `playwright-core` from the npm registry) and returns the
//! paths it printed, or an error holding the script's output. Never skipped silently: a
//! machine that cannot install them fails the test with the script's message.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::script::{printed, run_script};

/// Paths printed by `scripts/install-browser.sh`.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The Chromium binary (`/usr/bin/chromium`).
    pub chromium: PathBuf,
    /// The `playwright-core` package folder (what `require` takes).
    pub playwright_core: PathBuf,
    /// The `node` binary.
    pub node: PathBuf,
}

/// Installs (once per process) and locates the browser and its driver.
pub fn browser() -> Result<&'static Browser, String> {
    static BROWSER: OnceLock<Result<Browser, String>> = OnceLock::new();
    BROWSER
        .get_or_init(|| {
            let out = run_script(
                "install-browser.sh",
                &[],
                "the web console's browser test needs Debian's chromium package and playwright-core from the npm registry",
            )?;
            let get = |name: &str| printed(&out, &format!("{name}=")).map(PathBuf::from);
            Ok(Browser {
                chromium: get("CHROMIUM")?,
                playwright_core: get("PLAYWRIGHT_CORE")?,
                node: get("NODE")?,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}
