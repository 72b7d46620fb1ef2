//! `kv-connect-server import-denokv`: moves a database file of the reference server (`denokv`,
//! or the Deno CLI's local SQLite database) into a new database of any engine, so a primary
//! switching from denokv keeps its data.
//!
//! Contract: the reference file is opened read-only and never modified. The target must be
//! empty (a new file, or a database never written); the entries are imported in pages, each
//! keeping its key, value, versionstamp and expiry, and the target's version ends at the
//! reference's, so clients' versionstamps stay valid and later writes get larger ones. Queue
//! messages cannot be imported: their number is reported. A failure leaves a partly filled
//! target, which the message says to delete.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use kv_db::{ExportEntry, ImportOp};
use kv_engine_sqlite::denokv::DenokvFile;
use kv_traits::{BackendError, KvError, Versionstamp};

use crate::{open_db, DbArgs, MainError};

/// Entries per import call.
const PAGE: usize = 1000;

/// Options of `import-denokv`.
#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    /// The reference server's database file (what `denokv --sqlite-path` named); read-only.
    #[arg(long)]
    pub from: PathBuf,
    /// The new database (`--engine`, `--path`, ...), which must be empty.
    #[command(flatten)]
    pub db: DbArgs,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    #[error("import-denokv: cannot read {path}: {source}")]
    Read { path: String, source: BackendError },
    #[error("import-denokv: the target database is not empty (version {version}); import into a new database")]
    NotEmpty { version: Versionstamp },
    #[error("import-denokv: writing the target database failed ({source}); delete the partly imported target before trying again")]
    Write { source: KvError },
}

/// Runs `import-denokv`.
pub(crate) async fn run(args: &ImportArgs) -> Result<(), MainError> {
    let read = |source| ImportError::Read {
        path: args.from.display().to_string(),
        source,
    };
    let file = DenokvFile::open(&args.from).map_err(read)?;
    let version = file.version().map_err(read)?;
    let queued = file.queued_messages().map_err(read)?;
    let config = kv_db::DbConfig {
        background_tasks: false,
        ..Default::default()
    };
    let db = open_db(&args.db, config).await?;
    let imported = async {
        let current = db
            .current_versionstamp()
            .await
            .map_err(|source| ImportError::Write { source })?;
        if current != Versionstamp::from_version(0) {
            return Err(ImportError::NotEmpty { version: current });
        }
        let mut keys = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = file.entries_after(after.as_deref(), PAGE).map_err(read)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            keys += page.len() as u64;
            let ops = page
                .into_iter()
                .map(|e| {
                    ImportOp::Put(ExportEntry {
                        key: e.key,
                        value: e.value,
                        versionstamp: Versionstamp::from_version(e.version),
                        expire_at_ms: e.expire_at_ms,
                    })
                })
                .collect();
            db.import(ops, None)
                .await
                .map_err(|source| ImportError::Write { source })?;
        }
        db.import(Vec::new(), Some(Versionstamp::from_version(version)))
            .await
            .map_err(|source| ImportError::Write { source })?;
        Ok(keys)
    }
    .await;
    let closed = kv_traits::Database::close(&db).await;
    let keys = imported?;
    closed.map_err(|source| ImportError::Write { source })?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Imported {keys} keys from {} into {} at versionstamp {}",
        args.from.display(),
        args.db.path.display(),
        Versionstamp::from_version(version)
    );
    if queued > 0 {
        let _ = writeln!(
            out,
            "{queued} queue messages were not imported (queues cannot be moved between servers)"
        );
    }
    Ok(())
}
