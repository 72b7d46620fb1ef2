//! `enqueue` / `listen_queue` through `Kv` over an embedded database.

mod common;

#[tokio::test]
async fn queue_listener() {
    common::queue_listener(&common::embedded().await).await;
}

#[tokio::test]
async fn queue_concurrent_listener() {
    common::queue_concurrent_listener(&common::embedded().await).await;
}

#[tokio::test]
async fn queue_listener_stops_on_close() {
    common::queue_listener_stops_on_close(common::embedded().await).await;
}
