//! Atomic operations: checks, sum/min/max, through `Kv` over an embedded database.

mod common;

#[tokio::test]
async fn atomic_checks() {
    common::atomic_checks(&common::embedded().await).await;
}

#[tokio::test]
async fn atomic_sum_min_max() {
    common::atomic_sum_min_max(&common::embedded().await).await;
}
