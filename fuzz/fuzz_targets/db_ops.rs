//! Random sequences of atomic writes and reads against the memory engine, compared with a
//! BTreeMap model after every step: a write that fails (bad sum/min/max operand) or fails a
//! check applies nothing; a committed write applies everything under one fresh versionstamp.
//! Commits fail on demand (an injected I/O error): that write applies nothing and every later
//! write is refused (the database is poisoned) while reads still show the last committed state.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_test_support::{Fault, FaultyBackend};
use kv_traits::{
    AtomicWrite, BackendError, Check, CommitResult, Consistency, Database, KvError, KvValue,
    Mutation, MutationKind, ReadRange, Versionstamp,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Set(u8, u8),
    SetU64(u8, u64),
    Delete(u8),
    Sum(u8, u64),
    Max(u8, u64),
    CheckAbsent(u8),
    CheckCurrent(u8),
}

#[derive(Arbitrary, Debug)]
struct Step {
    ops: Vec<Op>,
    read_reverse: bool,
    read_limit: u8,
    /// Make this step's commit fail with an I/O error.
    fail_commit: bool,
}

fn key(k: u8) -> Vec<u8> {
    vec![0x02, b'k', k % 16, 0x00]
}

type Model = BTreeMap<Vec<u8>, (KvValue, Versionstamp)>;

/// Applies one write to a copy of the model; `None` if it fails a check, `Err` on a type error.
fn apply(model: &Model, ops: &[Op], vs: Versionstamp) -> Result<Option<Model>, ()> {
    for &op in ops {
        match op {
            Op::CheckAbsent(k) if model.contains_key(&key(k)) => return Ok(None),
            _ => {}
        }
    }
    let mut next = model.clone();
    for &op in ops {
        match op {
            Op::Set(k, v) => {
                next.insert(key(k), (KvValue::Bytes(vec![v]), vs));
            }
            Op::SetU64(k, v) => {
                next.insert(key(k), (KvValue::U64(v), vs));
            }
            Op::Delete(k) => {
                next.remove(&key(k));
            }
            Op::Sum(k, v) | Op::Max(k, v) => {
                let new = match (next.get(&key(k)).map(|e| &e.0), op) {
                    (None, _) => v,
                    (Some(KvValue::U64(old)), Op::Sum(..)) => old.wrapping_add(v),
                    (Some(KvValue::U64(old)), _) => (*old).max(v),
                    (Some(_), _) => return Err(()),
                };
                next.insert(key(k), (KvValue::U64(new), vs));
            }
            Op::CheckAbsent(_) | Op::CheckCurrent(_) => {}
        }
    }
    Ok(Some(next))
}

fuzz_target!(|steps: Vec<Step>| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Commits fail before reaching the engine while the step says so.
        let backend = FaultyBackend::new(MemoryBackend::new());
        let faults = backend.faults().clone();
        let db = Db::open(
            backend.clone(),
            DbConfig {
                background_tasks: false,
                ..Default::default()
            },
        )
        .await
        .expect("open");
        let mut poisoned = false;
        let mut model = Model::new();
        let mut last = Versionstamp::ZERO;
        for step in steps.iter().take(32) {
            let ops: Vec<Op> = step.ops.iter().take(8).copied().collect();
            let mut write = AtomicWrite::default();
            for op in &ops {
                match *op {
                    Op::CheckAbsent(k) => write.checks.push(Check {
                        key: key(k),
                        versionstamp: None,
                    }),
                    Op::CheckCurrent(k) => {
                        let current = model.get(&key(k)).map(|e| e.1);
                        write.checks.push(Check {
                            key: key(k),
                            versionstamp: current,
                        });
                    }
                    Op::Set(k, v) => write
                        .mutations
                        .push(Mutation::set(key(k), KvValue::Bytes(vec![v]))),
                    Op::SetU64(k, v) => {
                        write.mutations.push(Mutation::set(key(k), KvValue::U64(v)))
                    }
                    Op::Delete(k) => write.mutations.push(Mutation::delete(key(k))),
                    Op::Sum(k, v) => write.mutations.push(Mutation {
                        key: key(k),
                        kind: MutationKind::Sum {
                            value: KvValue::U64(v),
                            min: None,
                            max: None,
                            clamp: false,
                        },
                        expire_at_ms: None,
                    }),
                    Op::Max(k, v) => write.mutations.push(Mutation {
                        key: key(k),
                        kind: MutationKind::Max(KvValue::U64(v)),
                        expire_at_ms: None,
                    }),
                }
            }
            if step.fail_commit {
                faults.fail_always(Fault::CommitBefore);
            } else {
                faults.disarm(Fault::CommitBefore);
            }
            let writes_something = apply(&model, &ops, last).is_ok_and(|m| m.is_some());
            match db.atomic_write(write).await {
                Ok(CommitResult::Committed(vs)) => {
                    assert!(!poisoned, "a poisoned database committed");
                    assert!(
                        !step.fail_commit,
                        "a failed commit was reported as committed"
                    );
                    assert!(vs > last, "versionstamps increase");
                    last = vs;
                    model = apply(&model, &ops, vs)
                        .expect("db committed a write the model rejects")
                        .expect("db committed a write whose check fails in the model");
                }
                Ok(CommitResult::CheckFailed(_)) => {
                    assert!(
                        matches!(apply(&model, &ops, last), Ok(None)),
                        "db failed a check the model passes"
                    );
                }
                Err(KvError::Backend(e)) => {
                    assert!(
                        poisoned || (step.fail_commit && writes_something),
                        "unexpected storage error {e}"
                    );
                    assert!(
                        !poisoned || matches!(e, BackendError::Poisoned(_)),
                        "after a failed commit: {e}"
                    );
                    poisoned = true;
                }
                Err(e) => {
                    assert!(e.is_client_error(), "unexpected error {e}");
                    assert!(
                        apply(&model, &ops, last).is_err(),
                        "db rejected a write the model accepts: {e}"
                    );
                }
            }
            let limit = u32::from(step.read_limit.max(1));
            let range = ReadRange {
                start: vec![0x02],
                end: vec![0x03],
                limit,
                reverse: step.read_reverse,
            };
            let out = db
                .snapshot_read(vec![range], Consistency::Strong)
                .await
                .expect("read");
            let mut want: Vec<_> = model.iter().collect();
            if step.read_reverse {
                want.reverse();
            }
            want.truncate(limit as usize);
            let got: Vec<_> = out[0]
                .iter()
                .map(|e| (&e.key, (&e.value, &e.versionstamp)))
                .collect();
            let want: Vec<_> = want.into_iter().map(|(k, (v, vs))| (k, (v, vs))).collect();
            assert_eq!(got, want);
        }
        db.close().await.expect("close");
    });
});
