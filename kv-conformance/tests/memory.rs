//! The whole conformance suite and the state-machine test against the in-memory engine.

use kv_conformance::harness::SharedInstanceFactory;
use kv_engine_memory::MemoryBackend;
use kv_traits::BackendError;

kv_conformance::backend_conformance_tests!(SharedInstanceFactory(|| async {
    Ok::<_, BackendError>(MemoryBackend::new())
}));

/// Every test of the suite ran (none was skipped), including the persistence tests.
#[test]
fn every_test_runs() {
    let factory = SharedInstanceFactory(|| async { Ok::<_, BackendError>(MemoryBackend::new()) });
    let report =
        kv_conformance::harness::block_on(kv_conformance::harness::backend_suite_report(&factory));
    for (name, msg) in &report.failed {
        eprintln!("FAILED {name}: {msg}");
    }
    let total = kv_conformance::harness::database_tests().len()
        + kv_conformance::harness::clocked_tests().len()
        + kv_conformance::harness::background_tests().len()
        + kv_conformance::harness::persistence_tests().len();
    if std::env::var("KV_CONFORMANCE_FILTER").map_or(true, |f| f.is_empty()) {
        assert_eq!(report.passed.len() + report.failed.len(), total);
    }
    eprintln!(
        "{} passed, {} failed",
        report.passed.len(),
        report.failed.len()
    );
}

/// Every test of the raw backend contract ran against the in-memory engine, the reopen tests
/// included (the engine's own `tests/contract.rs` runs the same contract).
#[test]
fn every_contract_test_runs() {
    let factory = SharedInstanceFactory(|| async { Ok::<_, BackendError>(MemoryBackend::new()) });
    let report = kv_conformance::contract::backend_contract_report(&factory);
    report.assert_ok();
    if std::env::var("KV_CONFORMANCE_FILTER").map_or(true, |f| f.is_empty()) {
        assert_eq!(
            report.passed.len(),
            kv_conformance::contract::backend_contract_cases().len()
        );
    }
}
