//! The real KV clients installed by `scripts/install-test-clients.sh` (Deno 2.9.6, the
//! `@deno/kv` 0.14.0 npm client, the machine's Node), for tests that run real JavaScript.
//!
//! Contract: [`test_clients`] runs the script once per process (it contacts the npm registry
//! only when the pinned versions are missing) and returns the paths it printed, or an error
//! holding the script's output.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Paths printed by `scripts/install-test-clients.sh`.
#[derive(Debug, Clone)]
pub struct TestClients {
    /// The `deno` binary.
    pub deno: PathBuf,
    /// The `DENO_DIR` to run it with.
    pub deno_dir: PathBuf,
    /// `@deno/kv`'s ESM entry.
    pub npm_entry: PathBuf,
    /// The `node` binary.
    pub node: PathBuf,
}

/// Installs (once per process) and locates the real clients.
pub fn test_clients() -> Result<&'static TestClients, String> {
    static CLIENTS: OnceLock<Result<TestClients, String>> = OnceLock::new();
    CLIENTS.get_or_init(install).as_ref().map_err(Clone::clone)
}

fn install() -> Result<TestClients, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("kv-test-support has no parent directory")?
        .join("scripts")
        .join("install-test-clients.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}); tests with real clients need Deno 2.9.6 and @deno/kv 0.14.0 from the npm registry.\nstdout:\n{stdout}\nstderr:\n{stderr}",
            script.display(),
            out.status
        ));
    }
    let get = |name: &str| crate::script::printed(&stdout, &format!("{name}=")).map(PathBuf::from);
    Ok(TestClients {
        deno: get("DENO")?,
        deno_dir: get("DENO_DIR")?,
        npm_entry: get("DENO_KV_NPM_ENTRY")?,
        node: get("NODE")?,
    })
}
