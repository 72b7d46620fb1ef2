//! `watch` through `Kv` over an embedded database.

mod common;

#[tokio::test]
async fn watch_keys() {
    common::watch_keys(&common::embedded().await).await;
}
