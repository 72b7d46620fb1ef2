//! Running a test of the current test binary as a child process, to kill it or to give it a
//! process of its own (resource limits, a crash).
//!
//! Contract:
//! - The child is one `#[ignore]`d test of the same binary, run with `--exact --ignored
//!   --nocapture --test-threads=1` and an environment variable carrying its instructions; without
//!   that variable (a normal `cargo test -- --ignored` run) the child test must do nothing.
//!   [`test_name`] turns a function name into the name libtest knows it by.
//! - The child prints [`READY`] (see [`announce_ready`]) once it is set up; the parent waits for
//!   it with [`Child::wait_ready`], which fails with the child's stderr if it never comes.
//! - Every complete line the child prints on stdout is collected, in order; a line cut short by
//!   a kill is dropped (a half-printed acknowledgement is no acknowledgement). The child's
//!   stderr goes to a file, returned after the kill so the parent can check for a panic.
//! - [`Child::kill`] sends SIGKILL (on Unix), waits for the process and returns everything it
//!   printed; dropping a [`Child`] kills it too, so a failing parent leaves no process behind.

use std::io::{BufRead, BufReader, Read};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The line a child prints once it is ready to be killed.
pub const READY: &str = "READY";

/// The name libtest gives the test function `function` defined in the module `module_path`
/// (pass `module_path!()`): the module path without the crate name, then the function.
pub fn test_name(module_path: &str, function: &str) -> String {
    match module_path.split_once("::") {
        Some((_, inner)) => format!("{inner}::{function}"),
        None => function.to_string(),
    }
}

/// In the child: the instructions the parent passed in `env`, or `None` when this is not a
/// child run (the child test then returns at once).
pub fn instructions(env: &str) -> Option<String> {
    std::env::var(env).ok()
}

/// In the child: tells the parent that the child is ready.
pub fn announce_ready() {
    println!("{READY}");
}

/// A command re-running the test `test` of the current binary alone, with `env=value`.
pub fn command(test: &str, env: &str, value: &str) -> std::io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(env, value)
    .stdin(Stdio::null());
    Ok(cmd)
}

/// A random delay in `ms` (milliseconds), seeded from the clock so every run differs.
pub fn random_delay(ms: RangeInclusive<u64>) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    let mut x = nanos ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let (lo, hi) = (*ms.start(), *ms.end());
    Duration::from_millis(lo + x % (hi.saturating_sub(lo) + 1))
}

/// A running child test (see the module docs).
pub struct Child {
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
    stderr_path: PathBuf,
    /// Lines taken from `lines` so far, in order.
    seen: Vec<String>,
}

/// What a killed child left behind.
#[derive(Debug)]
pub struct Killed {
    /// How the process ended.
    pub status: ExitStatus,
    /// Every complete stdout line, in order (the test harness's own lines included).
    pub lines: Vec<String>,
    /// Its stderr.
    pub stderr: String,
}

impl Killed {
    /// Panics if the child panicked before the kill.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked"),
            "the child panicked before the kill (status {:?}):\n{}",
            self.status,
            self.stderr
        );
    }
}

impl Child {
    /// Starts the test `test` of the current binary with `env=value`; its stderr goes to
    /// `stderr_path`.
    pub fn spawn(test: &str, env: &str, value: &str, stderr_path: &Path) -> std::io::Result<Self> {
        let mut process = command(test, env, value)?
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_path)?)
            .spawn()?;
        let stdout = process
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the child has no stdout"))?;
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.last() == Some(&b'\n') => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    // Cut short by the kill.
                    Ok(_) => break,
                }
            }
        });
        Ok(Child {
            process,
            lines,
            reader: Some(reader),
            stderr_path: stderr_path.to_path_buf(),
            seen: Vec::new(),
        })
    }

    /// Waits up to `timeout` for the [`READY`] line (libtest may print its own text before it
    /// on the same line). On failure kills the child and returns an error with its stderr.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        self.wait_for_line(timeout, "get ready", |line| line.ends_with(READY))
    }

    /// Waits up to `timeout` for a stdout line matching `wanted` (the lines before it are kept
    /// for [`Child::kill`]). On failure kills the child and returns an error saying it did not
    /// `what`, with its stderr.
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        what: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_line(deadline.saturating_duration_since(Instant::now())) {
                Some(line) if wanted(&line) => return Ok(()),
                Some(_) => continue,
                None => {
                    let _ = self.process.kill();
                    let _ = self.process.wait();
                    return Err(format!(
                        "the child did not {what} within {timeout:?}; its stderr:\n{}",
                        self.stderr()
                    ));
                }
            }
        }
    }

    /// The next stdout line, waiting up to `timeout`; `None` on timeout or once the child's
    /// stdout is closed.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Kills the child (SIGKILL on Unix), waits for it and returns everything it printed.
    pub fn kill(mut self) -> std::io::Result<Killed> {
        self.process.kill()?;
        let status = self.process.wait()?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let mut lines = std::mem::take(&mut self.seen);
        lines.extend(self.lines.try_iter());
        let stderr = self.stderr();
        Ok(Killed {
            status,
            lines,
            stderr,
        })
    }

    fn stderr(&self) -> String {
        let mut err = String::new();
        let _ = std::fs::File::open(&self.stderr_path).and_then(|mut f| f.read_to_string(&mut err));
        err
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}
