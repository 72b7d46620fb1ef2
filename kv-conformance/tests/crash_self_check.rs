//! The crash harness can fail: an "engine" that keeps nothing across processes (every open is a
//! new, empty in-memory store) loses every acknowledged write, and the harness says so.

use std::path::Path;

use kv_conformance::crash::{crash_child, run_crash_test, CrashConfig};
use kv_engine_memory::MemoryBackend;
use kv_traits::BackendError;

fn open(_: &Path) -> Result<MemoryBackend, BackendError> {
    Ok(MemoryBackend::new())
}

fn config() -> CrashConfig {
    CrashConfig {
        rounds: 1,
        ..CrashConfig::default()
    }
}

#[ignore = "child process of a_store_that_forgets_is_caught, started by it"]
#[test]
fn forgetful_child() {
    crash_child(open, &config());
}

#[test]
#[should_panic(expected = "lost")]
fn a_store_that_forgets_is_caught() {
    run_crash_test("forgetful_child", open, &config());
}
