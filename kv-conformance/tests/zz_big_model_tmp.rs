use kv_conformance::model::{run_model_test, ModelConfig};
use kv_engine_memory::MemoryBackend;
use kv_traits::BackendError;
#[test]
fn big() {
    run_model_test(&|| async { Ok::<_, BackendError>(MemoryBackend::new()) }, ModelConfig { cases: 1500, max_ops: 120 });
}
