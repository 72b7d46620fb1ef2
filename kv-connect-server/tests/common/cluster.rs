//! N `kv-connect-server --engine postgres` processes on one fresh schema of the PostgreSQL test
//! server (`kv_test_support::postgres`), all with the real-client token (so the same database
//! id): shared by `multi_server.rs`, `replica_reads.rs` and `real_clients.rs`.
//!
//! A [`Cluster`] starts N servers at once, can SIGKILL one and restart it on the same port, and
//! shows the tails of their logs (in `$CARGO_TARGET_TMPDIR/multi-server/`). Servers are
//! SIGKILLed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use kv_connect_client::RemoteDatabase;

use super::clients::{tail, TOKEN};

/// Upper bound for a killed server's port to be free again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for a server to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

pub fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("multi-server");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One `kv-connect-server --engine postgres` process; SIGKILLed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts a server on `schema` listening on `addr` (port 0: a free one).
    pub fn start(
        schema: &str,
        index: usize,
        addr: SocketAddr,
        extra: &[&str],
    ) -> Result<Server, String> {
        let stderr_path = log_dir().join(format!("{schema}-{index}.stderr"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(super::BIN);
        cmd.args(["--engine", "postgres", "--database-url"])
            .arg(kv_test_support::postgres::test_url())
            .args(["--database-schema", schema, "--database-pool-size", "4"])
            .args(["--access-token", TOKEN, "--addr", &addr.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env("RUST_LOG", "warn");
        super::clear_server_env(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Forward the listening line (or the end of stdout), then keep draining.
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = rx.recv_timeout(STARTUP_TIMEOUT).ok().flatten();
        let listening = line
            .as_deref()
            .and_then(|l| l.strip_prefix("kv-connect-server listening on http://"))
            .and_then(|a| a.trim().parse().ok());
        match listening {
            Some(addr) => Ok(Server {
                child,
                addr,
                stderr_path,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "server {index} on {addr} did not start (first line {line:?}); stderr:\n{}",
                    tail(
                        &std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                        3000
                    )
                ))
            }
        }
    }
}

/// N servers on one fresh schema.
pub struct Cluster {
    pub schema: String,
    pub extra: Vec<&'static str>,
    pub servers: Vec<Option<Server>>,
    pub addrs: Vec<SocketAddr>,
}

impl Cluster {
    /// Starts `n` servers at once on a fresh schema, with `extra` flags.
    pub fn start(n: usize, tag: &str, extra: &[&'static str]) -> Cluster {
        let schema = kv_test_support::postgres::fresh_schema(tag);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let servers: Vec<Server> = thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let schema = &schema;
                    s.spawn(move || Server::start(schema, i, any, extra))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("{e}")))
                .collect()
        });
        Cluster {
            schema,
            extra: extra.to_vec(),
            addrs: servers.iter().map(|s| s.addr).collect(),
            servers: servers.into_iter().map(Some).collect(),
        }
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.addrs[i])
    }

    pub async fn remote(&self, i: usize) -> RemoteDatabase {
        RemoteDatabase::open(self.url(i), TOKEN)
            .await
            .unwrap_or_else(|e| panic!("connecting to server {i} ({}): {e}", self.url(i)))
    }

    /// SIGKILLs server `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let mut server = self.servers[i].take().expect("server is running");
        server.child.kill().unwrap();
        let status = server.child.wait().unwrap();
        assert!(!status.success(), "SIGKILL ends the server: {status}");
    }

    /// Starts server `i` again on its old port (retrying while the port is still taken).
    pub fn restart(&mut self, i: usize) {
        assert!(self.servers[i].is_none(), "server {i} is running");
        let deadline = Instant::now() + RESTART_TIMEOUT;
        let server = loop {
            match Server::start(&self.schema, i, self.addrs[i], &self.extra) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restarting server {i}: {e}; retrying");
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(server.addr, self.addrs[i]);
        self.servers[i] = Some(server);
    }

    pub fn stderr_tails(&self) -> String {
        self.servers
            .iter()
            .flatten()
            .map(|s| {
                let text = std::fs::read_to_string(&s.stderr_path).unwrap_or_default();
                format!("--- {}:\n{}", s.stderr_path.display(), tail(&text, 2000))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
