//! The shared kv-conformance suite (every test on a fresh schema, plus the persistence tests,
//! which close the backend and connect again to the same schema) and its model-based
//! state-machine test, run against [`PostgresBackend`] on the test server.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use kv_conformance::harness::{block_on, run_backend_suite, BackendFactory, ReopenableBackend};
use kv_conformance::model::{run_model_test, ModelConfig};
use kv_engine_postgres::PostgresBackend;
use kv_traits::{Backend, BackendError};

struct Factory;

#[async_trait]
impl BackendFactory for Factory {
    async fn create(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(common::fresh("conf").await?))
    }

    async fn create_reopenable(&self) -> Result<Option<Box<dyn ReopenableBackend>>, BackendError> {
        let schema = common::fresh_schema("reopen");
        Ok(Some(Box::new(move || {
            let options = common::options(&schema);
            async move { PostgresBackend::connect(common::url(), options).await }
        })))
    }
}

#[test]
fn conformance_suite() {
    block_on(run_backend_suite(&Factory));
}

#[test]
fn conformance_model() {
    run_model_test(&Factory, ModelConfig::default());
}
