//! The raw `Backend` contract of the shared suite (`kv_conformance::backend`) against the
//! in-memory engine. Its reopen tests run against one instance that survives `close` (see
//! `SharedInstanceFactory`): there is no file to reopen, so they check the rollback and
//! visibility rules across handles, not durability.

use kv_conformance::harness::SharedInstanceFactory;
use kv_engine_memory::MemoryBackend;
use kv_traits::BackendError;

kv_conformance::backend_contract_tests!(SharedInstanceFactory(|| async {
    Ok::<_, BackendError>(MemoryBackend::new())
}));
