//! Wire-format tests against the hex vectors of the spec (datapath-messages.md §4).

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.split_whitespace().collect();
    hex::decode(clean).unwrap()
}

const KEY_A: &[u8] = b"\x02a\x00";
const V8_ONE: &[u8] = &[0xff, 0x0f, 0x49, 0x02];

fn vs5() -> Versionstamp {
    Versionstamp::from_version(5)
}

#[test]
fn snapshot_read_from_deno_and_npm() {
    let deno: pb::SnapshotRead =
        decode_request(&hex("0a 0d 0a 03 02 61 00 12 04 02 61 00 00 18 01")).unwrap();
    assert_eq!(
        read_ranges_from_wire(deno).unwrap(),
        vec![ReadRange::single(KEY_A)]
    );
    // npm writes reverse=false explicitly (20 00) and uses ff as the end.
    let npm: pb::SnapshotRead =
        decode_request(&hex("0a 0c 0a 03 02 61 00 12 01 ff 18 01 20 00")).unwrap();
    assert_eq!(
        read_ranges_from_wire(npm).unwrap(),
        vec![ReadRange {
            start: KEY_A.to_vec(),
            end: vec![0xff],
            limit: 1,
            reverse: false
        }]
    );
    // Client direction reproduces Deno's bytes.
    assert_eq!(
        read_ranges_to_wire(&[ReadRange::single(KEY_A)]).encode_to_vec(),
        hex("0a 0d 0a 03 02 61 00 12 04 02 61 00 00 18 01")
    );
}

#[test]
fn range_limit_must_be_positive() {
    for limit in [0, -1, i32::MIN] {
        let req = pb::SnapshotRead {
            ranges: vec![pb::ReadRange {
                start: vec![1],
                end: vec![2],
                limit,
                reverse: false,
            }],
        };
        assert_eq!(
            read_ranges_from_wire(req),
            Err(KvError::Limit(LimitError::InvalidRangeLimit))
        );
    }
}

#[test]
fn snapshot_read_outputs() {
    assert_eq!(
        snapshot_read_output(vec![vec![]]).encode_to_vec(),
        hex("0a 00 20 01 40 01")
    );
    let entry = KvEntry {
        key: KEY_A.to_vec(),
        value: KvValue::V8(V8_ONE.to_vec()),
        versionstamp: vs5(),
    };
    let bytes = snapshot_read_output(vec![vec![entry.clone()]]).encode_to_vec();
    assert_eq!(
        bytes,
        hex("0a 1b 0a 19 0a 03 02 61 00 12 04 ff 0f 49 02 18 01 22 0a 00 00 00 00 00 00 00 05 00 00 20 01 40 01")
    );
    let decoded = pb::SnapshotReadOutput::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        snapshot_read_result_from_wire(decoded, 1, Consistency::Strong).unwrap(),
        vec![vec![entry]]
    );
}

#[test]
fn snapshot_read_result_rejects_bad_outputs() {
    let ok = snapshot_read_output(vec![vec![]]);
    assert!(snapshot_read_result_from_wire(ok.clone(), 2, Consistency::Strong).is_err());
    let mut weak = ok.clone();
    weak.read_is_strongly_consistent = false;
    assert!(snapshot_read_result_from_wire(weak.clone(), 1, Consistency::Strong).is_err());
    assert!(snapshot_read_result_from_wire(weak, 1, Consistency::Eventual).is_ok());
    let disabled = snapshot_read_disabled_output();
    let e = snapshot_read_result_from_wire(disabled, 0, Consistency::Eventual).unwrap_err();
    assert!(e.to_string().contains("disabled"), "{e}");
    let mut unspecified = ok.clone();
    unspecified.status = 0;
    assert!(snapshot_read_result_from_wire(unspecified, 1, Consistency::Strong).is_err());
    let mut bad_vs = ok;
    bad_vs.ranges[0].values.push(pb::KvEntry {
        key: vec![1],
        value: vec![],
        encoding: 3,
        versionstamp: vec![1; 9],
    });
    assert!(snapshot_read_result_from_wire(bad_vs, 1, Consistency::Strong).is_err());
}

#[test]
fn atomic_write_check_and_set() {
    let bytes =
        hex("0a 05 0a 03 02 61 00 12 11 0a 03 02 61 00 12 08 0a 04 ff 0f 49 02 10 01 18 01");
    let w = atomic_write_from_wire(decode_request(&bytes).unwrap()).unwrap();
    let expected = AtomicWrite {
        checks: vec![Check {
            key: KEY_A.to_vec(),
            versionstamp: None,
        }],
        mutations: vec![Mutation::set(KEY_A, KvValue::V8(V8_ONE.to_vec()))],
        enqueues: vec![],
    };
    assert_eq!(w, expected);
    assert_eq!(atomic_write_to_wire(&expected).encode_to_vec(), bytes);
}

fn one_mutation(mutation_hex: &str) -> Result<AtomicWrite, KvError> {
    let m = hex(mutation_hex);
    let mut body = vec![0x12, m.len() as u8];
    body.extend(m);
    atomic_write_from_wire(decode_request(&body)?)
}

#[test]
fn delete_with_and_without_value() {
    // Deno sends an empty VE_BYTES value with the delete.
    let w = one_mutation("0a 03 02 61 00 12 02 10 03 18 02").unwrap();
    assert_eq!(w.mutations, vec![Mutation::delete(KEY_A)]);
    // npm sends none.
    let w = one_mutation("0a 03 02 61 00 18 02").unwrap();
    assert_eq!(w.mutations, vec![Mutation::delete(KEY_A)]);
}

#[test]
fn sum_u64_and_expiring_set() {
    let w = one_mutation("0a 03 02 61 00 12 0c 0a 08 01 00 00 00 00 00 00 00 10 02 18 03").unwrap();
    assert_eq!(
        w.mutations[0].kind,
        MutationKind::Sum {
            value: KvValue::U64(1),
            min: None,
            max: None,
            clamp: false
        }
    );
    let w = one_mutation("0a 03 02 61 00 12 05 0a 01 01 10 03 18 01 20 80 d0 95 ff bc 31").unwrap();
    assert_eq!(
        w.mutations[0],
        Mutation {
            key: KEY_A.to_vec(),
            kind: MutationKind::Set(KvValue::Bytes(vec![1])),
            expire_at_ms: Some(1_700_000_000_000)
        }
    );
    assert_eq!(
        atomic_write_to_wire(&w).mutations[0].encode_to_vec(),
        hex("0a 03 02 61 00 12 05 0a 01 01 10 03 18 01 20 80 d0 95 ff bc 31")
    );
}

#[test]
fn npm_explicit_defaults_are_absent_fields() {
    // sum with explicit empty sum_min (2a 00), sum_max (32 00) and sum_clamp=false (38 00),
    // expire_at_ms = 0 (20 00).
    let w = one_mutation(
        "0a 03 02 61 00 12 0c 0a 08 02 00 00 00 00 00 00 00 10 02 18 03 20 00 2a 00 32 00 38 00",
    )
    .unwrap();
    assert_eq!(
        w.mutations[0],
        Mutation {
            key: KEY_A.to_vec(),
            kind: MutationKind::Sum {
                value: KvValue::U64(2),
                min: None,
                max: None,
                clamp: false
            },
            expire_at_ms: None
        }
    );
}

fn mutation(ty: i32, value: Option<pb::KvValue>) -> pb::Mutation {
    pb::Mutation {
        key: KEY_A.to_vec(),
        value,
        mutation_type: ty,
        ..Default::default()
    }
}

fn write_of(m: pb::Mutation) -> Result<AtomicWrite, KvError> {
    atomic_write_from_wire(pb::AtomicWrite {
        mutations: vec![m],
        ..Default::default()
    })
}

fn bytes_value() -> Option<pb::KvValue> {
    Some(pb::KvValue {
        data: vec![7],
        encoding: 3,
    })
}

#[test]
fn mutation_kinds_map_by_number() {
    let v = KvValue::Bytes(vec![7]);
    let u = Some(pb::KvValue {
        data: 9u64.to_le_bytes().to_vec(),
        encoding: 2,
    });
    assert_eq!(
        write_of(mutation(1, bytes_value())).unwrap().mutations[0].kind,
        MutationKind::Set(v.clone())
    );
    assert_eq!(
        write_of(mutation(4, u.clone())).unwrap().mutations[0].kind,
        MutationKind::Max(KvValue::U64(9))
    );
    assert_eq!(
        write_of(mutation(5, u)).unwrap().mutations[0].kind,
        MutationKind::Min(KvValue::U64(9))
    );
    assert_eq!(
        write_of(mutation(9, bytes_value())).unwrap().mutations[0].kind,
        MutationKind::SetSuffixVersionstampedKey(v)
    );
    let mut sum = mutation(
        3,
        Some(pb::KvValue {
            data: V8_ONE.to_vec(),
            encoding: 1,
        }),
    );
    sum.sum_min = vec![0xff, 0x0f, 0x49, 0x00];
    sum.sum_clamp = true;
    assert_eq!(
        write_of(sum.clone()).unwrap().mutations[0].kind,
        MutationKind::Sum {
            value: KvValue::V8(V8_ONE.to_vec()),
            min: Some(vec![0xff, 0x0f, 0x49, 0x00]),
            max: None,
            clamp: true
        }
    );
    // Round trip through the client direction.
    let domain = write_of(sum).unwrap();
    assert_eq!(
        atomic_write_from_wire(atomic_write_to_wire(&domain)).unwrap(),
        domain
    );
}

fn invalid_request(r: Result<AtomicWrite, KvError>, needle: &str) {
    match r {
        Err(e @ KvError::InvalidRequest(_)) => {
            assert!(e.is_client_error());
            assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
        }
        other => panic!("expected InvalidRequest containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn bad_mutations_are_precise_errors() {
    invalid_request(
        write_of(mutation(0, bytes_value())),
        "unknown mutation type 0",
    );
    invalid_request(
        write_of(mutation(6, bytes_value())),
        "unknown mutation type 6",
    );
    invalid_request(
        write_of(mutation(42, bytes_value())),
        "unknown mutation type 42",
    );
    for ty in [1, 3, 4, 5, 9] {
        invalid_request(write_of(mutation(ty, None)), "needs a value");
    }
    // Unknown value encodings are client errors (400), not server errors.
    for enc in [0, 4, 99] {
        let e = write_of(mutation(
            1,
            Some(pb::KvValue {
                data: vec![],
                encoding: enc,
            }),
        ))
        .unwrap_err();
        assert_eq!(
            e,
            KvError::Value(kv_traits::ValueError::UnknownEncoding(enc))
        );
        assert!(e.is_client_error());
    }
    // LE64 must be exactly 8 bytes.
    let e = write_of(mutation(
        3,
        Some(pb::KvValue {
            data: vec![1, 2, 3],
            encoding: 2,
        }),
    ))
    .unwrap_err();
    assert_eq!(e, KvError::Value(kv_traits::ValueError::BadU64Length(3)));
    // Delete ignores even a malformed value.
    assert!(write_of(mutation(
        2,
        Some(pb::KvValue {
            data: vec![],
            encoding: 77
        })
    ))
    .is_ok());
}

#[test]
fn expiry_rules() {
    for (wire, domain) in [
        (0, None),
        (-1, None),
        (1, Some(1)),
        (i64::MAX, Some(i64::MAX as u64)),
    ] {
        let mut m = mutation(1, bytes_value());
        m.expire_at_ms = wire;
        assert_eq!(
            write_of(m).unwrap().mutations[0].expire_at_ms,
            domain,
            "wire {wire}"
        );
    }
    for wire in [-2, i64::MIN] {
        let mut m = mutation(1, bytes_value());
        m.expire_at_ms = wire;
        invalid_request(write_of(m), "Invalid mutation expire at");
    }
}

#[test]
fn check_versionstamps() {
    let check = |vs: Vec<u8>| {
        atomic_write_from_wire(pb::AtomicWrite {
            checks: vec![pb::Check {
                key: KEY_A.to_vec(),
                versionstamp: vs,
            }],
            ..Default::default()
        })
    };
    assert_eq!(check(vec![]).unwrap().checks[0].versionstamp, None);
    assert_eq!(
        check(vs5().0.to_vec()).unwrap().checks[0].versionstamp,
        Some(vs5())
    );
    // Old npm clients: ten zero bytes mean "must not exist".
    assert_eq!(check(vec![0; 10]).unwrap().checks[0].versionstamp, None);
    for n in [1, 9, 11, 20] {
        invalid_request(check(vec![1; n]), "Invalid versionstamp");
    }
}

#[test]
fn enqueue_prost_packed_and_npm_unpacked() {
    let packed = hex("0a 04 ff 0f 49 02 10 80 d0 95 ff bc 31 1a 03 02 61 00 22 03 64 c8 01");
    let e: pb::Enqueue = decode_request(&packed).unwrap();
    assert_eq!(e.backoff_schedule, vec![100, 200]);
    let mut body = vec![0x1a, packed.len() as u8];
    body.extend(&packed);
    let w = atomic_write_from_wire(decode_request(&body).unwrap()).unwrap();
    let expected = Enqueue {
        payload: V8_ONE.to_vec(),
        deadline_ms: 1_700_000_000_000,
        keys_if_undelivered: vec![KEY_A.to_vec()],
        backoff_schedule: Some(vec![100, 200]),
    };
    assert_eq!(w.enqueues, vec![expected.clone()]);
    assert_eq!(atomic_write_to_wire(&w).enqueues[0].encode_to_vec(), packed);

    // npm: unpacked backoff [100, 200, 400, 800].
    let npm = hex("0a 04 ff 0f 49 02 10 80 d0 95 ff bc 31 20 64 20 c8 01 20 90 03 20 a0 06");
    let e: pb::Enqueue = decode_request(&npm).unwrap();
    assert_eq!(e.backoff_schedule, vec![100, 200, 400, 800]);

    // Empty schedule = default (None); negative deadline is an error.
    let w = atomic_write_from_wire(pb::AtomicWrite {
        enqueues: vec![pb::Enqueue {
            payload: V8_ONE.to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(w.enqueues[0].backoff_schedule, None);
    assert_eq!(w.enqueues[0].deadline_ms, 0);
    let r = atomic_write_from_wire(pb::AtomicWrite {
        enqueues: vec![pb::Enqueue {
            payload: V8_ONE.to_vec(),
            deadline_ms: -5,
            ..Default::default()
        }],
        ..Default::default()
    });
    invalid_request(r, "Invalid mutation enqueue deadline");
}

#[test]
fn atomic_write_outputs() {
    let ok = atomic_write_output(CommitResult::Committed(vs5()));
    assert_eq!(
        ok.encode_to_vec(),
        hex("08 01 12 0a 00 00 00 00 00 00 00 05 00 00")
    );
    assert_eq!(
        commit_result_from_wire(ok).unwrap(),
        CommitResult::Committed(vs5())
    );
    let failed = atomic_write_output(CommitResult::CheckFailed(vec![]));
    assert_eq!(failed.encode_to_vec(), hex("08 02"));
    let failed = atomic_write_output(CommitResult::CheckFailed(vec![0, 3]));
    assert_eq!(failed.encode_to_vec(), hex("08 02 22 02 00 03"));
    // Unpacked failed_checks decode the same.
    let unpacked = pb::AtomicWriteOutput::decode(hex("08 02 20 00 20 03").as_slice()).unwrap();
    assert_eq!(
        commit_result_from_wire(unpacked).unwrap(),
        CommitResult::CheckFailed(vec![0, 3])
    );
    assert_eq!(
        commit_result_from_wire(atomic_write_disabled_output()),
        Err(KvError::WriteDisabled)
    );
    assert!(commit_result_from_wire(pb::AtomicWriteOutput {
        status: 3,
        ..Default::default()
    })
    .is_err());
    assert!(commit_result_from_wire(pb::AtomicWriteOutput {
        status: 1,
        ..Default::default()
    })
    .is_err());
}

#[test]
fn watch_messages_and_frames() {
    let req: pb::Watch = decode_request(&hex("0a 05 0a 03 02 61 00")).unwrap();
    assert_eq!(watch_keys_from_wire(req), vec![KEY_A.to_vec()]);
    assert_eq!(
        watch_keys_to_wire(&[KEY_A.to_vec()]).encode_to_vec(),
        hex("0a 05 0a 03 02 61 00")
    );

    let absent = watch_output(vec![WatchKeyOutput::Changed(None)]);
    assert_eq!(
        encode_watch_frame(&absent),
        hex("06 00 00 00 08 01 12 02 08 01")
    );
    let unchanged = watch_output(vec![WatchKeyOutput::Unchanged]);
    assert_eq!(unchanged.encode_to_vec(), hex("08 01 12 00"));

    let entry = KvEntry {
        key: KEY_A.to_vec(),
        value: KvValue::U64(3),
        versionstamp: vs5(),
    };
    let changed = watch_output(vec![
        WatchKeyOutput::Changed(Some(entry.clone())),
        WatchKeyOutput::Unchanged,
    ]);

    // A stream: keep-alive, frame, keep-alive, frame, fed in awkward chunks.
    let mut stream = WATCH_KEEPALIVE_FRAME.to_vec();
    stream.extend(encode_watch_frame(&absent));
    stream.extend(WATCH_KEEPALIVE_FRAME);
    stream.extend(encode_watch_frame(&changed));
    let mut dec = WatchFrameDecoder::default();
    let mut frames = vec![];
    for chunk in stream.chunks(3) {
        dec.push(chunk);
        while let Some(f) = dec.next_frame().unwrap() {
            frames.push(f);
        }
    }
    assert_eq!(dec.pending(), 0);
    assert_eq!(frames, vec![absent.clone(), changed.clone()]);
    assert_eq!(
        watch_keys_output_from_wire(absent, 1).unwrap(),
        vec![WatchKeyOutput::Changed(None)]
    );
    assert_eq!(
        watch_keys_output_from_wire(changed.clone(), 2).unwrap(),
        vec![
            WatchKeyOutput::Changed(Some(entry)),
            WatchKeyOutput::Unchanged
        ]
    );
    assert!(watch_keys_output_from_wire(changed, 1).is_err());

    let mut dec = WatchFrameDecoder::default();
    dec.push(&[0xff, 0xff, 0xff, 0x7f]);
    assert!(dec.next_frame().is_err());
}

#[test]
fn unknown_fields_are_ignored_and_garbage_rejected() {
    // ReadRange with an unknown field 15 (varint) appended.
    let r: pb::SnapshotRead =
        decode_request(&hex("0a 0f 0a 03 02 61 00 12 04 02 61 00 00 18 01 78 05")).unwrap();
    assert_eq!(
        read_ranges_from_wire(r).unwrap(),
        vec![ReadRange::single(KEY_A)]
    );
    let e = decode_request::<pb::AtomicWrite>(&[0x0a, 0x10, 0x01]).unwrap_err();
    assert!(
        e.to_string().starts_with("Request protobuf is invalid:"),
        "{e}"
    );
    assert!(e.is_client_error());
}

mod direct_encoding {
    use super::super::{
        encode_eventual_snapshot_read_output, encode_snapshot_read_output, snapshot_read_output,
    };
    use kv_traits::{KvEntry, KvValue, Versionstamp};
    use proptest::prelude::*;
    use prost::Message;

    fn value() -> impl Strategy<Value = KvValue> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(KvValue::V8),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(KvValue::Bytes),
            any::<u64>().prop_map(KvValue::U64),
        ]
    }

    fn entry() -> impl Strategy<Value = KvEntry> {
        (
            proptest::collection::vec(any::<u8>(), 0..200),
            value(),
            any::<[u8; 10]>(),
        )
            .prop_map(|(key, value, vs)| KvEntry {
                key,
                value,
                versionstamp: Versionstamp(vs),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn equals_prost_encoding(ranges in proptest::collection::vec(proptest::collection::vec(entry(), 0..20), 0..5)) {
            let direct = encode_snapshot_read_output(&ranges);
            let eventual = encode_eventual_snapshot_read_output(&ranges);
            let mut weak = snapshot_read_output(ranges.clone());
            weak.read_is_strongly_consistent = false;
            let via_prost = snapshot_read_output(ranges).encode_to_vec();
            prop_assert_eq!(direct, via_prost);
            prop_assert_eq!(eventual, weak.encode_to_vec());
        }
    }

    #[test]
    fn a_large_list_too() {
        let ranges = vec![(0..10_000u32)
            .map(|i| KvEntry {
                key: format!("key-{i:05}").into_bytes(),
                value: if i % 2 == 0 {
                    KvValue::U64(u64::from(i))
                } else {
                    KvValue::V8(vec![0xff, 0x0f, 0x49, (i % 100) as u8])
                },
                versionstamp: Versionstamp::from_version(u64::from(i) * 1_000_003),
            })
            .collect::<Vec<_>>()];
        assert_eq!(
            encode_snapshot_read_output(&ranges),
            snapshot_read_output(ranges).encode_to_vec()
        );
    }
}
