//! [`SharedStore`]: one in-process store opened by several databases as if each were another
//! server process on one networked database.
//!
//! Contract: every handle from [`SharedStore::open`] is a [`Backend`] over the same inner
//! store that reports [`Backend::shared`] = `true`. The inner engine's own "one write
//! transaction at a time" then plays the role of the networked engine's cross-process write
//! lock, so several `kv_db::Db`s opened on handles of one store behave like servers on one
//! PostgreSQL database: no push notifications ([`Backend::commit_signals`] is `None`), so each
//! follows the others by polling. `close` on a handle closes only that handle; the inner store
//! stays open for the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use kv_traits::{Backend, BackendError, ReadTxn, WriteTxn};

/// A store that several handles open as a shared store.
pub struct SharedStore<B> {
    inner: Arc<B>,
}

impl<B: Backend> SharedStore<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        SharedStore {
            inner: Arc::new(inner),
        }
    }

    /// A new handle ("another process").
    pub fn open(&self) -> SharedHandle<B> {
        SharedHandle {
            inner: self.inner.clone(),
            closed: AtomicBool::new(false),
        }
    }
}

/// One process's handle on a [`SharedStore`].
pub struct SharedHandle<B> {
    inner: Arc<B>,
    closed: AtomicBool,
}

impl<B> SharedHandle<B> {
    fn check(&self) -> Result<(), BackendError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(BackendError::Closed)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for SharedHandle<B> {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        self.check()?;
        self.inner.begin_read().await
    }

    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        self.check()?;
        self.inner.begin_write().await
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_engine_memory::MemoryBackend;

    #[tokio::test]
    async fn handles_share_data_and_close_alone() {
        let store = SharedStore::new(MemoryBackend::new());
        let (a, b) = (store.open(), store.open());
        assert!(a.shared() && b.shared());
        let mut w = a.begin_write().await.unwrap();
        w.put(b"k", b"v").await.unwrap();
        w.commit().await.unwrap();
        a.close().await.unwrap();
        assert!(matches!(a.begin_read().await, Err(BackendError::Closed)));
        let mut r = b.begin_read().await.unwrap();
        assert_eq!(r.get(b"k").await.unwrap(), Some(b"v".to_vec()));
    }
}
