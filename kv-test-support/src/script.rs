//! Test servers started by the project's scripts (`scripts/start-*-test-server.sh`).
//!
//! Contract: [`run_start_script`] runs `scripts/<name> --exit-with <this process>` from the
//! repository root with no standard input (each script starts its server, or reuses the
//! running one, and stops it once every registered process has exited). It returns the
//! script's standard output, which names the server as `KEY=value` lines ([`printed`] reads
//! one), or an error holding the script's output and `hint`, which tells what the tests need.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Runs `scripts/<name> --exit-with <pid>`; the script's stdout, or an error naming `hint`.
pub fn run_start_script(name: &str, hint: &str) -> Result<String, String> {
    let pid = std::process::id().to_string();
    run_script(name, &["--exit-with", &pid], hint)
}

/// Runs `scripts/<name> <args>` from the repository root with no standard input; its stdout,
/// or an error holding its output and `hint` (used by the install scripts too).
pub fn run_script(name: &str, args: &[&str], hint: &str) -> Result<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("kv-test-support has no parent directory")?
        .join("scripts")
        .join(name);
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {hint}.\nstdout:\n{stdout}\nstderr:\n{stderr}",
            script.display(),
            out.status
        ));
    }
    Ok(stdout)
}

/// The value of the `KEY=` line (`prefix` includes the `=`) in a script's `stdout`.
pub fn printed(stdout: &str, prefix: &str) -> Result<String, String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::to_string)
        .ok_or_else(|| format!("the script printed no {prefix}; stdout:\n{stdout}"))
}
