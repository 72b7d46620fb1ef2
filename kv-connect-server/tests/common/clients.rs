//! The real KV clients of the end-to-end tests (Deno 2.9.6 and `@deno/kv` 0.14.0 on Node,
//! installed by `scripts/install-test-clients.sh`) and how to run them: shared by
//! `real_clients.rs` and `multi_server.rs`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Access token given to the server and to both clients.
pub const TOKEN: &str = "real-clients-e2e-token";

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn js_dir() -> PathBuf {
    crate_dir().join("tests").join("js")
}

/// Paths printed by `scripts/install-test-clients.sh` (found by `kv-test-support`, which the
/// kv-v8 vector tests share).
pub use kv_test_support::clients::TestClients as Tools;

pub fn tools() -> &'static Tools {
    kv_test_support::clients::test_clients()
        .unwrap_or_else(|e| panic!("installing the real KV clients failed:\n{e}"))
}

/// Kills (and reaps) the child process when dropped, also when a test panics.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct RunOutput {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `cmd` to completion (killing it after `timeout`), capturing stdout and stderr.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> RunOutput {
    // Never let a proxy from the environment intercept loopback traffic.
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = ChildGuard(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")));
    let mut out = child.0.stdout.take().unwrap();
    let mut err = child.0.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.0.kill();
                let _ = child.0.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
    RunOutput {
        status,
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

pub fn deno_command(script: &str, url: &str) -> Command {
    let t = tools();
    let mut cmd = Command::new(&t.deno);
    cmd.args([
        "run",
        "--unstable-kv",
        "--no-remote",
        "--no-npm",
        "--no-config",
        "--no-lock",
        "--no-prompt",
        "--allow-net=127.0.0.1",
        "--allow-env=DENO_KV_ACCESS_TOKEN,KV_URL",
    ])
    .arg(js_dir().join(script))
    .arg(url)
    .current_dir(js_dir())
    .env("DENO_DIR", &t.deno_dir)
    .env("DENO_NO_UPDATE_CHECK", "1")
    .env("DENO_NO_PROMPT", "1")
    .env("NO_COLOR", "1")
    .env("DENO_KV_ACCESS_TOKEN", TOKEN)
    .env_remove("KV_URL");
    cmd
}

pub fn node_command(script: &str, url: &str) -> Command {
    let t = tools();
    let mut cmd = Command::new(&t.node);
    cmd.arg(js_dir().join(script))
        .arg(url)
        .current_dir(js_dir())
        .env("DENO_KV_NPM_ENTRY", &t.npm_entry)
        .env("DENO_KV_ACCESS_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .env_remove("KV_URL")
        .env_remove("NODE_OPTIONS");
    cmd
}

pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Runs `interop.mjs MODE PREFIX` with `client` (`deno` or `node`) against `url` and returns its
/// output lines; a failing run panics with its stderr and `context` (who served it, and that
/// server's log).
pub fn run_interop(
    client: &str,
    url: &str,
    mode: &str,
    prefix: &str,
    context: impl FnOnce() -> String,
) -> Vec<String> {
    run_js(client, "interop.mjs", url, &[mode, prefix], context)
}

/// Runs `tests/js/<script> URL ARGS...` (a script that runs under both Deno and Node) with
/// `client` (`deno` or `node`) and returns its output lines; a failing run panics with its
/// stderr and `context`.
pub fn run_js(
    client: &str,
    script: &str,
    url: &str,
    args: &[&str],
    context: impl FnOnce() -> String,
) -> Vec<String> {
    let mut cmd = if client == "deno" {
        deno_command(script, url)
    } else {
        node_command(script, url)
    };
    cmd.args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(true),
        "{script} ({client} {args:?}) failed: {}\n{}",
        tail(&out.stderr, 3000),
        context()
    );
    out.stdout.lines().map(str::to_string).collect()
}
