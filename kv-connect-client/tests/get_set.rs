//! get / get_many / set / delete / expiry through `Kv` over an embedded database.

mod common;

#[tokio::test]
async fn get_set_delete() {
    common::get_set_delete(&common::embedded().await).await;
}

#[tokio::test]
async fn set_with_expiry() {
    common::set_with_expiry(&common::embedded().await).await;
}
