//! `list`: selectors, paging with batch sizes, cursors, reverse, through `Kv` over an embedded
//! database.

mod common;

#[tokio::test]
async fn list_selectors() {
    common::list_selectors(&common::embedded().await).await;
}

#[tokio::test]
async fn list_paging_and_cursors() {
    common::list_paging_and_cursors(&common::embedded().await).await;
}

#[tokio::test]
async fn list_requests_match_deno() {
    common::list_requests_match_deno(common::Recording::new(common::embedded_db().await)).await;
}
