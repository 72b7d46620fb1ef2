//! `Sum` in both regimes (spec semantics.md §4): `U64` operands (wrapping) and V8 Number/BigInt
//! operands with optional bounds and clamping, including error texts.

use kv_traits::{Database, KvError, KvValue, Mutation};
use num_bigint::BigInt;

use crate::util::v8::{self, Num};
use crate::util::*;

const NOT_V8: &str = "Some of the parameters are not valid V8 values";
const BOUND_KIND: &str = "Min/max parameters have different types than the operand";
const OUT_OF_RANGE: &str = "The result of a Sum operation would exceed its range limit";
const NON_U64_VALUE: &str = "Failed to perform 'sum' mutation on a non-U64 value in the database";

fn big(n: i128) -> BigInt {
    BigInt::from(n)
}

async fn value(db: &dyn Database, k: &[u8]) -> KvValue {
    get(db, k)
        .await
        .unwrap_or_else(|| panic!("{k:?} should exist"))
        .value
}

async fn bigint_at(db: &dyn Database, k: &[u8]) -> BigInt {
    v8::expect_bigint(&value(db, k).await)
}

async fn number_at(db: &dyn Database, k: &[u8]) -> f64 {
    let (f, tag) = v8::expect_number(&value(db, k).await);
    assert_eq!(
        tag, b'N',
        "a Number sum result must be stored as a V8 double"
    );
    f
}

fn v8sum(
    k: &[u8],
    operand: Vec<u8>,
    min: Option<Vec<u8>>,
    max: Option<Vec<u8>>,
    clamp: bool,
) -> Mutation {
    sum(k, KvValue::V8(operand), min, max, clamp)
}

/// A `U64` operand on an absent key stores the operand.
pub async fn u64_operand_on_absent_key(db: &dyn Database) {
    let k = key("n");
    let vs = commit(db, write_of(vec![sum_u64(&k, 42)])).await;
    let e = get(db, &k).await.expect("n");
    assert_eq!((e.value, e.versionstamp), (KvValue::U64(42), vs));
}

/// `U64` sums wrap: `2^64−1 + 2 = 1`.
pub async fn u64_operand_wraps(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::U64(u64::MAX)).await;
    commit(db, write_of(vec![sum_u64(&k, 2)])).await;
    assert_eq!(value(db, &k).await, KvValue::U64(1));
}

/// A `U64` operand on a stored value of another encoding fails with the reference text and
/// applies nothing.
pub async fn u64_operand_on_non_u64_value_fails(db: &dyn Database) {
    for (name, v) in [
        ("bytes", bytes(b"x")),
        ("v8", KvValue::V8(v8::smi(1))),
        ("bigint", KvValue::V8(v8::big(1))),
    ] {
        let k = key(name);
        set(db, &k, v.clone()).await;
        let r = try_write(db, write_of(vec![sum_u64(&k, 1)])).await;
        assert_mutation_error(r, NON_U64_VALUE);
        assert_eq!(value(db, &k).await, v);
    }
}

/// Bounds and clamp are ignored for `U64` operands.
pub async fn u64_operand_ignores_bounds(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::U64(u64::MAX)).await;
    commit(
        db,
        write_of(vec![sum(
            &k,
            KvValue::U64(5),
            Some(v8::big(0)),
            Some(v8::big(10)),
            false,
        )]),
    )
    .await;
    assert_eq!(
        value(db, &k).await,
        KvValue::U64(4),
        "U64 sum wraps and ignores bounds"
    );
    commit(
        db,
        write_of(vec![sum(
            &k,
            KvValue::U64(100),
            Some(v8::big(0)),
            Some(v8::big(10)),
            true,
        )]),
    )
    .await;
    assert_eq!(
        value(db, &k).await,
        KvValue::U64(104),
        "U64 sum ignores clamp"
    );
}

/// A `Bytes` operand is not a valid V8 number: error, nothing applied.
pub async fn bytes_operand_is_rejected(db: &dyn Database) {
    let k = key("n");
    for stored in [None, Some(KvValue::U64(1)), Some(KvValue::V8(v8::smi(1)))] {
        if let Some(v) = &stored {
            set(db, &k, v.clone()).await;
        }
        let r = try_write(
            db,
            write_of(vec![
                Mutation::set(key("other"), bytes(b"o")),
                sum(&k, bytes(&[1, 0, 0, 0, 0, 0, 0, 0]), None, None, false),
            ]),
        )
        .await;
        assert_mutation_error(r, NOT_V8);
        assert_eq!(
            get(db, &key("other")).await,
            None,
            "nothing of the write may be applied"
        );
        assert_eq!(get(db, &k).await.map(|e| e.value), stored);
    }
}

/// Malformed V8 operands, non-numeric V8 operands and malformed bounds are rejected.
pub async fn invalid_v8_operand_is_rejected(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::V8(v8::double(1.0))).await;
    for (operand, min, max) in [
        (vec![1, 2, 3], None, None),
        (vec![], None, None),
        (vec![0xff, 0x0f, b'I'], None, None),
        (v8::string("5"), None, None),
        (vec![0xff, 0x0f, b'T'], None, None),
        (v8::smi(1), Some(vec![9, 9]), None),
        (v8::smi(1), None, Some(v8::string("x"))),
    ] {
        let r = try_write(
            db,
            write_of(vec![v8sum(&k, operand.clone(), min, max, false)]),
        )
        .await;
        assert_mutation_error(r, NOT_V8);
    }
    assert_eq!(number_at(db, &k).await, 1.0);
}

/// On an absent key the operand is stored as is; bounds are not applied (100n with max 10n
/// stores 100n).
pub async fn absent_key_stores_operand_without_bounds(db: &dyn Database) {
    let k = key("big");
    let vs = commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(100),
            None,
            Some(v8::big(10)),
            false,
        )]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(100));
    assert_eq!(get(db, &k).await.map(|e| e.versionstamp), Some(vs));
    let k = key("num");
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::double(-50.5),
            Some(v8::double(0.0)),
            None,
            true,
        )]),
    )
    .await;
    assert_eq!(number_at(db, &k).await, -50.5);
}

/// A Number operand on an absent key is stored as a V8 double (`I` 5 becomes `N` 5.0).
pub async fn absent_key_number_is_stored_as_double(db: &dyn Database) {
    for (name, operand, want) in [
        ("smi", v8::smi(5), 5.0),
        ("uint", v8::uint32(7), 7.0),
        ("neg", v8::smi(-3), -3.0),
    ] {
        let k = key(name);
        commit(db, write_of(vec![v8sum(&k, operand, None, None, false)])).await;
        assert_eq!(number_at(db, &k).await, want, "{name}");
    }
}

/// BigInt + BigInt is exact, beyond 64 bits and below zero, and is stored as a V8 BigInt.
pub async fn bigint_exact_sum(db: &dyn Database) {
    let k = key("n");
    let two64 = 1i128 << 64;
    commit(
        db,
        write_of(vec![v8sum(&k, v8::big(two64), None, None, false)]),
    )
    .await;
    commit(
        db,
        write_of(vec![v8sum(&k, v8::big(two64), None, None, false)]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(two64 * 2));
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(-(two64 * 3) - 7),
            None,
            None,
            false,
        )]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(-two64 - 7));
    // Minimal encodings (as the Rust serializer writes them) are accepted too.
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            vec![0xff, 0x0f, 0x5a, 0x02, 0x01],
            None,
            None,
            false,
        )]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(-two64 - 6));
    commit(
        db,
        write_of(vec![v8sum(&k, v8::big(two64 + 6), None, None, false)]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(0));
}

/// BigInt bounds: out of range without clamp fails the whole write with the reference text;
/// with clamp the result is clamped to the bound; in range is untouched.
pub async fn bigint_bounds_fail_or_clamp(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::V8(v8::big(5))).await;
    let r = try_write(
        db,
        write_of(vec![v8sum(&k, v8::big(10), None, Some(v8::big(10)), false)]),
    )
    .await;
    assert_mutation_error(r, OUT_OF_RANGE);
    assert_eq!(bigint_at(db, &k).await, big(5));
    let r = try_write(
        db,
        write_of(vec![v8sum(&k, v8::big(-10), Some(v8::big(0)), None, false)]),
    )
    .await;
    assert_mutation_error(r, OUT_OF_RANGE);
    assert_eq!(bigint_at(db, &k).await, big(5));
    // Exactly at a bound is in range.
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(5),
            Some(v8::big(0)),
            Some(v8::big(10)),
            false,
        )]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(10));
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(1000),
            Some(v8::big(0)),
            Some(v8::big(12)),
            true,
        )]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(12));
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(-1000),
            Some(v8::big(-3)),
            Some(v8::big(12)),
            true,
        )]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(-3));
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(2),
            Some(v8::big(-3)),
            Some(v8::big(12)),
            true,
        )]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(-1));
}

/// Number + Number is an f64 sum with the same bound rules, stored as a double.
pub async fn number_sum_and_bounds(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::V8(v8::double(0.1))).await;
    commit(
        db,
        write_of(vec![v8sum(&k, v8::double(0.2), None, None, false)]),
    )
    .await;
    assert_eq!(number_at(db, &k).await, 0.1 + 0.2);
    set(db, &k, KvValue::V8(v8::smi(2))).await;
    commit(db, write_of(vec![v8sum(&k, v8::smi(3), None, None, false)])).await;
    assert_eq!(number_at(db, &k).await, 5.0);
    let r = try_write(
        db,
        write_of(vec![v8sum(
            &k,
            v8::double(5.5),
            None,
            Some(v8::smi(10)),
            false,
        )]),
    )
    .await;
    assert_mutation_error(r, OUT_OF_RANGE);
    assert_eq!(number_at(db, &k).await, 5.0);
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::double(5.5),
            None,
            Some(v8::smi(10)),
            true,
        )]),
    )
    .await;
    assert_eq!(number_at(db, &k).await, 10.0);
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::smi(-100),
            Some(v8::double(-0.5)),
            Some(v8::smi(10)),
            true,
        )]),
    )
    .await;
    assert_eq!(number_at(db, &k).await, -0.5);
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::double(2f64.powi(52)),
            None,
            None,
            false,
        )]),
    )
    .await;
    assert_eq!(number_at(db, &k).await, -0.5 + 2f64.powi(52));
}

/// NaN is never out of range (the comparisons are `<`/`>`).
pub async fn number_nan_never_out_of_range(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::V8(v8::double(f64::NAN))).await;
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::smi(1),
            Some(v8::smi(0)),
            Some(v8::smi(10)),
            false,
        )]),
    )
    .await;
    assert!(number_at(db, &k).await.is_nan());
}

/// Bounds of a different kind than the operand are rejected.
pub async fn bounds_of_other_kind_are_rejected(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::V8(v8::big(1))).await;
    for (operand, min, max) in [
        (v8::big(1), Some(v8::smi(0)), None),
        (v8::big(1), None, Some(v8::double(10.0))),
        (v8::smi(1), Some(v8::big(0)), None),
        (v8::double(1.0), Some(v8::double(0.0)), Some(v8::big(10))),
    ] {
        let r = try_write(db, write_of(vec![v8sum(&k, operand, min, max, false)])).await;
        assert_mutation_error(r, BOUND_KIND);
    }
    assert_eq!(bigint_at(db, &k).await, big(1));
}

/// Number with BigInt (either way round) fails with `Cannot sum <stored kind> with <operand
/// kind>` (the reference's wording and order).
pub async fn number_with_bigint_fails(db: &dyn Database) {
    let (a, b) = (key("a"), key("b"));
    set(db, &a, KvValue::V8(v8::big(1))).await;
    set(db, &b, KvValue::V8(v8::double(1.0))).await;
    for (k, operand, text) in [
        (&a, v8::smi(1), "Cannot sum BigInt with Number"),
        (&b, v8::big(1), "Cannot sum Number with BigInt"),
    ] {
        let r = try_write(db, write_of(vec![v8sum(k, operand, None, None, false)])).await;
        assert_mutation_error(r, text);
    }
    assert_eq!(bigint_at(db, &a).await, big(1));
    assert_eq!(number_at(db, &b).await, 1.0);
}

/// A stored `U64` plus a BigInt operand in `[0, 2^64−1]`, without bounds and clamp, is a
/// wrapping `U64` sum stored as `U64`.
pub async fn kvu64_with_bigint_compatibility(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::U64(u64::MAX)).await;
    commit(db, write_of(vec![v8sum(&k, v8::big(2), None, None, false)])).await;
    assert_eq!(value(db, &k).await, KvValue::U64(1));
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(u64::MAX as i128),
            None,
            None,
            false,
        )]),
    )
    .await;
    assert_eq!(value(db, &k).await, KvValue::U64(0));
    commit(db, write_of(vec![v8sum(&k, v8::big(0), None, None, false)])).await;
    assert_eq!(value(db, &k).await, KvValue::U64(0));
}

/// Outside the compatibility rule (negative, ≥ 2^64, bounds, clamp) a stored `U64` with a
/// BigInt operand fails with `Cannot sum KvU64 with BigInt` (with a Number: `… with Number`),
/// applying nothing.
pub async fn kvu64_with_bigint_outside_rule_fails(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::U64(7)).await;
    for (operand, min, max, clamp, text) in [
        (
            v8::big(-1),
            None,
            None,
            false,
            "Cannot sum KvU64 with BigInt",
        ),
        (
            v8::big(1i128 << 64),
            None,
            None,
            false,
            "Cannot sum KvU64 with BigInt",
        ),
        (
            v8::big(1),
            Some(v8::big(0)),
            None,
            false,
            "Cannot sum KvU64 with BigInt",
        ),
        (
            v8::big(1),
            None,
            Some(v8::big(100)),
            true,
            "Cannot sum KvU64 with BigInt",
        ),
        (v8::big(1), None, None, true, "Cannot sum KvU64 with BigInt"),
        (
            v8::smi(1),
            None,
            None,
            false,
            "Cannot sum KvU64 with Number",
        ),
    ] {
        let r = try_write(
            db,
            write_of(vec![v8sum(
                &k,
                operand.clone(),
                min.clone(),
                max.clone(),
                clamp,
            )]),
        )
        .await;
        let ctx = format!("operand {operand:02x?} min {min:02x?} max {max:02x?} clamp {clamp}");
        match r {
            Err(KvError::Mutation(m))
            | Err(KvError::Remote {
                status: 400,
                message: m,
            }) => {
                assert!(
                    m.contains(text),
                    "{ctx}: error {m:?} should contain {text:?}"
                )
            }
            other => panic!("{ctx}: expected a mutation error {text:?}, got {other:?}"),
        }
    }
    assert_eq!(value(db, &k).await, KvValue::U64(7));
}

/// Empty bounds mean "no bound".
pub async fn empty_bounds_are_no_bounds(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::V8(v8::big(5))).await;
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(1000),
            Some(vec![]),
            Some(vec![]),
            false,
        )]),
    )
    .await;
    assert_eq!(bigint_at(db, &k).await, big(1005));
    // The compatibility rule still applies with empty bounds.
    set(db, &k, KvValue::U64(u64::MAX)).await;
    commit(
        db,
        write_of(vec![v8sum(
            &k,
            v8::big(1),
            Some(vec![]),
            Some(vec![]),
            false,
        )]),
    )
    .await;
    assert_eq!(value(db, &k).await, KvValue::U64(0));
}

/// A V8 operand on a stored value that is not a V8 number (bytes, a V8 string) fails with the
/// reference texts (`unsupported value type` or `Invalid sum operand`).
pub async fn sum_on_non_number_value_fails(db: &dyn Database) {
    let (a, b) = (key("a"), key("b"));
    set(db, &a, bytes(b"x")).await;
    set(db, &b, KvValue::V8(v8::string("x"))).await;
    for k in [&a, &b] {
        let r = try_write(db, write_of(vec![v8sum(k, v8::smi(1), None, None, false)])).await;
        assert_mutation_error_any(r, &["unsupported value type", "Invalid sum operand"]);
    }
    assert_eq!(value(db, &a).await, bytes(b"x"));
    assert_eq!(value(db, &b).await, KvValue::V8(v8::string("x")));
}

/// V8 header versions 13 to 16 (15 = older Deno, 16 = Deno 2.9) are accepted as operands.
pub async fn accepts_v8_versions_13_to_16(db: &dyn Database) {
    let k = key("num");
    let kb = key("big");
    let mut want = 0.0;
    let mut want_big = big(0);
    for version in 13u8..=16 {
        commit(
            db,
            write_of(vec![v8sum(
                &k,
                v8::smi_v(version as i32, version),
                None,
                None,
                false,
            )]),
        )
        .await;
        commit(
            db,
            write_of(vec![v8sum(
                &kb,
                v8::bigint_v(&big(version as i128), version),
                None,
                None,
                false,
            )]),
        )
        .await;
        want += version as f64;
        want_big += version as i64;
        assert_eq!(number_at(db, &k).await, want);
        assert_eq!(bigint_at(db, &kb).await, want_big);
    }
    match v8::parse(&[0xff, 0x10, 0x4e, 0, 0, 0, 0, 0, 0, 0xe0, 0x41]) {
        Some(Num::Number(f, _)) => assert_eq!(f, 2f64.powi(31)),
        other => panic!("codec self-check failed: {other:?}"),
    }
}

/// An out-of-range sum fails the whole write, including earlier mutations on other keys.
pub async fn out_of_range_fails_whole_write(db: &dyn Database) {
    let k = key("n");
    set(db, &k, KvValue::V8(v8::big(9))).await;
    let before = scan_all(db).await;
    let r = try_write(
        db,
        write_of(vec![
            Mutation::set(key("x"), bytes(b"x")),
            v8sum(&k, v8::big(1), None, Some(v8::big(100)), false),
            v8sum(&k, v8::big(1000), None, Some(v8::big(100)), false),
        ]),
    )
    .await;
    assert_mutation_error(r, OUT_OF_RANGE);
    assert_eq!(scan_all(db).await, before);
}
