//! The writer's side of backup, restore and read replicas: importing raw entries and trimming
//! the change log.
//!
//! Contract:
//! - An import stores its entries as they are (their own versionstamps and expiries), without
//!   checks or limits, and is not logged: the change log is complete only after it (its start
//!   is raised to the import's version if logging was ever on).
//! - An import never lowers the database version; with `advance_to` above it, the version is
//!   raised to it, and the full 10-byte point is reported as [`Cx::import_point`]. Watchers of
//!   touched keys are signalled with the import's version.
//! - A trim deletes up to [`CHUNK`] logged commits with versions up to the requested one, reports
//!   whether more remain, and raises the log's start past what it deleted.

use kv_traits::Versionstamp;

use super::maintenance::CHUNK;
use super::op::Trimmed;
use super::overlay::{ApplyError, Cx};
use crate::changes::{self, ImportOp};
use crate::layout::{self, Record, CHANGE_LOG};

impl Cx<'_> {
    pub(super) async fn apply_import(
        &mut self,
        ops: Vec<ImportOp>,
        advance_to: Option<Versionstamp>,
    ) -> Result<(), ApplyError> {
        // Imports are not logged: they replay history that is already stored elsewhere.
        self.logging = false;
        if self.get(layout::META_FORMAT).await?.is_none() {
            self.put(
                layout::META_FORMAT.to_vec(),
                layout::encode_u64(layout::FORMAT_VERSION).to_vec(),
            );
        }
        // The point the imports reached, with all 10 bytes (a Deno Deploy versionstamp can have a
        // non-zero batch index; the database's own counter is the first 8 bytes).
        self.import_point = match advance_to {
            Some(a) if a.version() >= self.version => {
                self.version = a.version();
                a
            }
            _ => Versionstamp::from_version(self.version),
        };
        let version = self.version;
        // Imported changes are not in the change log either.
        self.raise_change_log_since(version).await?;
        for op in ops {
            match op {
                ImportOp::Put(e) => {
                    let rec = Record {
                        value: e.value,
                        versionstamp: e.versionstamp,
                        expire_at_ms: e.expire_at_ms,
                    };
                    self.set_record(&e.key, rec).await?;
                }
                ImportOp::Delete(k) => self.delete_record(&k, version).await?,
            }
        }
        // Watchers wait for a version above the one they read: signal the import's version.
        for c in &mut self.fx.changed {
            c.1 = version;
        }
        Ok(())
    }

    pub(super) async fn apply_trim(&mut self, through: u64) -> Result<Trimmed, ApplyError> {
        let end = changes::log_key(through.saturating_add(1));
        let old = self.txn.scan(&[CHANGE_LOG], &end, CHUNK, false).await?;
        let more = old.len() == CHUNK;
        let mut newest = None;
        for (k, _) in old {
            newest = Some(layout::split_timed(&k)?.0);
            self.delete(k);
        }
        // What is trimmed is no longer in the log (another reader would otherwise miss it).
        if let Some(newest) = newest {
            self.raise_change_log_since(newest).await?;
        }
        Ok(Trimmed { more })
    }
}
