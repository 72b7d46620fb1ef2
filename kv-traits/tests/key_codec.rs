//! Key codec: the worked examples of key-codec.md §4, ordering, ranges, error cases and
//! property tests (round trip, order preservation, no panics on arbitrary bytes).

use kv_traits::key::{
    decode_key, encode_key, prefix_range, single_key_range, versionstamped_key, KeyError, KeyPart,
};
use kv_traits::Versionstamp;
use num_bigint::BigInt;
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn big(s: &str) -> KeyPart {
    KeyPart::Int(s.parse::<BigInt>().unwrap())
}

fn pow2(n: u32) -> BigInt {
    BigInt::from(1) << n
}

/// Every row of key-codec.md §4.
fn vectors() -> Vec<(Vec<KeyPart>, &'static str)> {
    use KeyPart::*;
    vec![
        (vec!["hello".into()], "02 68 65 6c 6c 6f 00"),
        (vec!["".into()], "02 00"),
        (vec!["f\0o".into()], "02 66 00 ff 6f 00"),
        (vec!["é".into()], "02 c3 a9 00"),
        (vec!["foo".into()], "02 66 6f 6f 00"),
        (vec![Bytes(vec![1, 0, 2])], "01 01 00 ff 02 00"),
        (vec![Bytes(vec![4, 0, 4])], "01 04 00 ff 04 00"),
        (vec![Bytes(vec![])], "01 00"),
        (vec![0i64.into()], "14"),
        (vec![1i64.into()], "15 01"),
        (vec![200i64.into()], "15 c8"),
        (vec![255i64.into()], "15 ff"),
        (vec![256i64.into()], "16 01 00"),
        (vec![600i64.into()], "16 02 58"),
        (vec![70000i64.into()], "17 01 11 70"),
        (vec![(-1i64).into()], "13 fe"),
        (vec![(-200i64).into()], "13 37"),
        (vec![(-255i64).into()], "13 00"),
        (vec![(-256i64).into()], "12 fe ff"),
        (vec![u64::MAX.into()], "1c ff ff ff ff ff ff ff ff"),
        (vec![Int(pow2(64))], "1d 09 01 00 00 00 00 00 00 00 00"),
        (vec![Int(-pow2(64))], "0b f6 fe ff ff ff ff ff ff ff ff"),
        (
            vec![Int(BigInt::parse_bytes(b"112233445566778899", 16).unwrap())],
            "1d 09 11 22 33 44 55 66 77 88 99",
        ),
        (vec![0.0.into()], "21 80 00 00 00 00 00 00 00"),
        (vec![(-0.0).into()], "21 7f ff ff ff ff ff ff ff"),
        (vec![1.0.into()], "21 bf f0 00 00 00 00 00 00"),
        (vec![(-1.0).into()], "21 40 0f ff ff ff ff ff ff"),
        (vec![1.5.into()], "21 bf f8 00 00 00 00 00 00"),
        (vec![123.456.into()], "21 c0 5e dd 2f 1a 9f be 77"),
        (vec![(-300.0).into()], "21 3f 8d 3f ff ff ff ff ff"),
        (vec![f64::INFINITY.into()], "21 ff f0 00 00 00 00 00 00"),
        (vec![f64::NEG_INFINITY.into()], "21 00 0f ff ff ff ff ff ff"),
        (vec![f64::NAN.into()], "21 ff f8 00 00 00 00 00 00"),
        (vec![false.into()], "26"),
        (vec![true.into()], "27"),
        (
            vec!["users".into(), 42i64.into(), true.into()],
            "02 75 73 65 72 73 00 15 2a 27",
        ),
        (
            vec!["users".into(), 42.0.into()],
            "02 75 73 65 72 73 00 21 c0 45 00 00 00 00 00 00",
        ),
        (
            vec![
                "n".into(),
                1.5.into(),
                (-0.0).into(),
                true.into(),
                Bytes(vec![0, 1]),
            ],
            "02 6e 00 21 bf f8 00 00 00 00 00 00 21 7f ff ff ff ff ff ff ff 27 01 00 ff 01 00",
        ),
    ]
}

#[test]
fn worked_examples_encode() {
    for (key, bytes) in vectors() {
        assert_eq!(encode_key(&key).unwrap(), h(bytes), "encoding {key:?}");
    }
}

#[test]
fn worked_examples_decode() {
    for (key, bytes) in vectors() {
        let decoded = decode_key(&h(bytes)).unwrap();
        assert_eq!(decoded, key, "decoding {bytes}");
        // Floats must come back bit-exact (apart from NaN, which is canonical anyway).
        for (d, k) in decoded.iter().zip(&key) {
            if let (KeyPart::Float(d), KeyPart::Float(k)) = (d, k) {
                if !k.is_nan() {
                    assert_eq!(d.to_bits(), k.to_bits());
                }
            }
        }
    }
}

#[test]
fn empty_key_is_empty() {
    assert_eq!(encode_key(&[]).unwrap(), Vec::<u8>::new());
    assert_eq!(decode_key(&[]).unwrap(), Vec::<KeyPart>::new());
}

#[test]
fn large_ints_up_to_255_bytes() {
    let max: BigInt = pow2(255 * 8) - 1;
    let enc = encode_key(&[KeyPart::Int(max.clone())]).unwrap();
    assert_eq!(&enc[..2], &[0x1d, 0xff]);
    assert_eq!(enc.len(), 257);
    assert_eq!(decode_key(&enc).unwrap(), vec![KeyPart::Int(max.clone())]);

    let min = -max;
    let enc = encode_key(&[KeyPart::Int(min.clone())]).unwrap();
    assert_eq!(&enc[..2], &[0x0b, 0x00]);
    assert_eq!(decode_key(&enc).unwrap(), vec![KeyPart::Int(min)]);

    assert_eq!(
        encode_key(&[KeyPart::Int(pow2(255 * 8))]),
        Err(KeyError::IntTooLarge { bytes: 256 })
    );
    assert_eq!(
        encode_key(&["ok".into(), KeyPart::Int(-pow2(300 * 8))]),
        Err(KeyError::IntTooLarge { bytes: 301 })
    );
}

#[test]
fn non_minimal_ints_are_accepted() {
    assert_eq!(decode_key(&h("16 00 01")).unwrap(), vec![big("1")]);
    assert_eq!(decode_key(&h("1d 02 00 05")).unwrap(), vec![big("5")]);
    assert_eq!(decode_key(&h("1d 00")).unwrap(), vec![big("0")]);
    assert_eq!(decode_key(&h("12 ff fe")).unwrap(), vec![big("-1")]);
    assert_eq!(decode_key(&h("0b fc ff ff fe")).unwrap(), vec![big("-1")]);
}

#[test]
fn decode_errors() {
    assert_eq!(
        decode_key(&h("00")),
        Err(KeyError::InvalidTag { tag: 0, offset: 0 })
    );
    // Unsupported tuple-layer tags: nested, float32, UUID, versionstamp.
    for tag in [0x05u8, 0x20, 0x30, 0x33, 0xff] {
        assert_eq!(
            decode_key(&[0x26, tag]),
            Err(KeyError::InvalidTag { tag, offset: 1 })
        );
    }
    assert_eq!(
        decode_key(&h("02 61 62")),
        Err(KeyError::Unterminated {
            kind: "string",
            offset: 0
        })
    );
    // An escaped zero at the very end is not a terminator.
    assert_eq!(
        decode_key(&h("27 01 61 00 ff")),
        Err(KeyError::Unterminated {
            kind: "bytes",
            offset: 1
        })
    );
    assert_eq!(
        decode_key(&h("14 02 c3 28 00")),
        Err(KeyError::InvalidUtf8 { offset: 1 })
    );
    assert_eq!(
        decode_key(&h("21 00 01")),
        Err(KeyError::Truncated {
            offset: 0,
            needed: 8,
            available: 2
        })
    );
    assert_eq!(
        decode_key(&h("17 01 02")),
        Err(KeyError::Truncated {
            offset: 0,
            needed: 3,
            available: 2
        })
    );
    assert_eq!(
        decode_key(&h("1d")),
        Err(KeyError::Truncated {
            offset: 0,
            needed: 1,
            available: 0
        })
    );
    assert_eq!(
        decode_key(&h("0b f6 fe ff")),
        Err(KeyError::Truncated {
            offset: 0,
            needed: 10,
            available: 3
        })
    );
    // Errors name the offset in their message.
    let msg = decode_key(&h("15 01 07")).unwrap_err().to_string();
    assert!(msg.contains("0x07") && msg.contains("offset 2"), "{msg}");
}

/// Keys listed in strictly increasing tuple order.
fn ascending() -> Vec<Vec<KeyPart>> {
    use KeyPart::*;
    vec![
        vec![],
        vec![Bytes(vec![])],
        vec![Bytes(vec![]), "x".into()],
        vec![Bytes(vec![0])],
        vec![Bytes(vec![0, 0])],
        vec![Bytes(vec![0, 1])],
        vec![Bytes(vec![1])],
        vec![Bytes(vec![0xff])],
        vec!["".into()],
        vec!["a".into()],
        vec!["a".into(), Bytes(vec![])],
        vec!["a".into(), "".into()],
        vec!["a".into(), 0i64.into()],
        vec!["a".into(), 1.0.into()],
        vec!["a".into(), false.into()],
        vec!["a".into(), true.into()],
        vec!["a\0".into()],
        vec!["a\0\0".into()],
        vec!["a\x01".into()],
        vec!["b".into()],
        // UTF-8 byte order: U+FFFF (ef bf bf) < U+10000 (f0 90 80 80), although UTF-16
        // order is the other way round.
        vec!["\u{ffff}".into()],
        vec!["\u{10000}".into()],
        vec![Int(-pow2(2040) + 1)],
        vec![Int(-pow2(64))],
        vec![Int(-pow2(64) + 1)],
        vec![Int(-(pow2(63)))],
        vec![(-256i64).into()],
        vec![(-255i64).into()],
        vec![(-1i64).into()],
        vec![0i64.into()],
        vec![0i64.into(), 0i64.into()],
        vec![1i64.into()],
        vec![255i64.into()],
        vec![256i64.into()],
        vec![u64::MAX.into()],
        vec![Int(pow2(64))],
        vec![Int(pow2(2040) - 1)],
        vec![Float(-f64::NAN)],
        vec![f64::NEG_INFINITY.into()],
        vec![f64::MIN.into()],
        vec![(-1.0).into()],
        vec![(-f64::MIN_POSITIVE).into()],
        vec![(-0.0).into()],
        vec![0.0.into()],
        vec![f64::MIN_POSITIVE.into()],
        vec![1.0.into()],
        vec![1.5.into()],
        vec![f64::MAX.into()],
        vec![f64::INFINITY.into()],
        vec![f64::NAN.into()],
        vec![false.into()],
        vec![false.into(), false.into()],
        vec![true.into()],
        vec![true.into(), Bytes(vec![])],
    ]
}

#[test]
fn ordering_matches_bytes() {
    let keys = ascending();
    let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(k).unwrap()).collect();
    for i in 1..keys.len() {
        assert!(keys[i - 1] < keys[i], "{:?} < {:?}", keys[i - 1], keys[i]);
        assert!(
            encoded[i - 1] < encoded[i],
            "bytes of {:?} < bytes of {:?}",
            keys[i - 1],
            keys[i]
        );
    }
}

#[test]
fn number_and_bigint_are_different_keys() {
    let a = vec![KeyPart::from("a"), KeyPart::from(1.0)];
    let b = vec![KeyPart::from("a"), KeyPart::from(1i64)];
    assert_ne!(a, b);
    assert!(b < a, "every bigint sorts before every number");
    assert_ne!(encode_key(&a).unwrap(), encode_key(&b).unwrap());
}

#[test]
fn zero_signs_are_distinct_and_nans_equal() {
    use std::collections::HashSet;
    assert_ne!(KeyPart::Float(0.0), KeyPart::Float(-0.0));
    assert!(KeyPart::Float(-0.0) < KeyPart::Float(0.0));
    let other_nan = f64::from_bits(0x7ff4_0000_0000_1234);
    assert_eq!(KeyPart::Float(other_nan), KeyPart::Float(f64::NAN));
    assert_eq!(
        encode_key(&[KeyPart::Float(other_nan)]).unwrap(),
        h("21 ff f8 00 00 00 00 00 00")
    );
    let negative_nan = f64::from_bits(0xfff4_0000_0000_0001);
    assert_eq!(
        encode_key(&[KeyPart::Float(negative_nan)]).unwrap(),
        h("21 00 07 ff ff ff ff ff ff")
    );
    let set: HashSet<KeyPart> = [
        KeyPart::Float(f64::NAN),
        KeyPart::Float(other_nan),
        KeyPart::Float(0.0),
        KeyPart::Float(-0.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(set.len(), 3);
}

#[test]
fn npm_nan_decodes_as_negative_subnormal() {
    // key-codec.md §4: npm writes NaN as 21 7f f8 00…, which the Rust codec reads back as a
    // tiny negative number.
    let parts = decode_key(&h("21 7f f8 00 00 00 00 00 00")).unwrap();
    match parts.as_slice() {
        [KeyPart::Float(f)] => {
            assert!(*f < 0.0 && *f > -1.2e-308, "{f}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn from_impls() {
    assert_eq!(KeyPart::from("x"), KeyPart::String("x".into()));
    assert_eq!(
        KeyPart::from(String::from("x")),
        KeyPart::String("x".into())
    );
    assert_eq!(KeyPart::from(vec![1u8]), KeyPart::Bytes(vec![1]));
    assert_eq!(KeyPart::from(&[1u8][..]), KeyPart::Bytes(vec![1]));
    assert_eq!(KeyPart::from(-3i64), KeyPart::Int(BigInt::from(-3)));
    assert_eq!(KeyPart::from(3u64), KeyPart::Int(BigInt::from(3)));
    assert_eq!(
        KeyPart::from(BigInt::from(9)),
        KeyPart::Int(BigInt::from(9))
    );
    assert_eq!(KeyPart::from(2.5), KeyPart::Float(2.5));
    assert_eq!(KeyPart::from(true), KeyPart::Bool(true));
}

#[test]
fn versionstamped_key_matches_spec() {
    let prefix = encode_key(&["log".into()]).unwrap();
    let vs: Versionstamp = "00000000000000260000".parse().unwrap();
    let key = versionstamped_key(&prefix, &vs);
    assert_eq!(
        key,
        h("02 6c 6f 67 00 02 30 30 30 30 30 30 30 30 30 30 30 30 30 30 32 36 30 30 30 30 00")
    );
    assert_eq!(
        decode_key(&key).unwrap(),
        vec![KeyPart::from("log"), KeyPart::from("00000000000000260000")]
    );
    assert_eq!(key.len(), prefix.len() + 22);
}

#[test]
fn ranges() {
    let p = encode_key(&["users".into()]).unwrap();
    let (start, end) = prefix_range(&p);
    assert_eq!(start, h("02 75 73 65 72 73 00 00"));
    assert_eq!(end, h("02 75 73 65 72 73 00 ff"));
    let inside = encode_key(&["users".into(), Vec::<u8>::new().into()]).unwrap();
    let inside_last = encode_key(&["users".into(), true.into(), true.into()]).unwrap();
    let sibling = encode_key(&["users\0".into()]).unwrap();
    for k in [&inside, &inside_last] {
        assert!(start <= *k && *k < end);
    }
    assert!(p < start, "the prefix itself is not listed");
    assert!(sibling >= end);

    let (s, e) = prefix_range(&[]);
    assert_eq!((s, e), (vec![0x00], vec![0xff]));

    let (s, e) = single_key_range(&p);
    assert_eq!(s, p);
    assert_eq!(e, h("02 75 73 65 72 73 00 00"));
    assert!(inside >= e);
}

fn key_part() -> impl Strategy<Value = KeyPart> {
    prop_oneof![
        proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff), any::<u8>()], 0..12)
            .prop_map(KeyPart::Bytes),
        "(\\PC|\0){0,8}".prop_map(KeyPart::String),
        any::<i64>().prop_map(KeyPart::from),
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(neg, m)| {
            let v = BigInt::from_bytes_be(num_bigint::Sign::Plus, &m);
            KeyPart::Int(if neg { -v } else { v })
        }),
        any::<f64>().prop_map(KeyPart::Float),
        prop_oneof![Just(0.0), Just(-0.0), Just(f64::NAN), Just(-f64::NAN)]
            .prop_map(KeyPart::Float),
        any::<u64>().prop_map(|b| KeyPart::Float(f64::from_bits(b))),
        any::<bool>().prop_map(KeyPart::Bool),
    ]
}

fn key() -> impl Strategy<Value = Vec<KeyPart>> {
    proptest::collection::vec(key_part(), 0..5)
}

/// Pairs of keys that often share a prefix, so that ordering is tested beyond the first part.
fn key_pair() -> impl Strategy<Value = (Vec<KeyPart>, Vec<KeyPart>)> {
    (key(), key(), key()).prop_map(|(common, a, b)| {
        let mut x = common.clone();
        x.extend(a);
        let mut y = common;
        y.extend(b);
        (x, y)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(k in key()) {
        let bytes = encode_key(&k).unwrap();
        let decoded = decode_key(&bytes).unwrap();
        prop_assert_eq!(&decoded, &k);
        prop_assert_eq!(encode_key(&decoded).unwrap(), bytes);
    }

    #[test]
    fn byte_order_is_tuple_order((a, b) in key_pair()) {
        let ea = encode_key(&a).unwrap();
        let eb = encode_key(&b).unwrap();
        prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
        prop_assert_eq!(ea == eb, a == b);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(parts) = decode_key(&bytes) {
            // Whatever decodes re-encodes to a key that decodes to the same parts.
            let again = encode_key(&parts).unwrap();
            prop_assert_eq!(decode_key(&again).unwrap(), parts);
        }
    }

    #[test]
    fn decode_never_panics_on_tag_heavy_input(
        bytes in proptest::collection::vec(
            prop_oneof![
                Just(0x00u8), Just(0x01), Just(0x02), Just(0x0b), Just(0x14), Just(0x1d),
                Just(0x21), Just(0x26), Just(0xff), 0x0cu8..=0x1c, any::<u8>()
            ],
            0..64,
        )
    ) {
        let _ = decode_key(&bytes);
    }

    #[test]
    fn prefix_range_contains_exactly_extensions(p in key(), rest in key()) {
        let ep = encode_key(&p).unwrap();
        let (start, end) = prefix_range(&ep);
        let mut ext = p.clone();
        ext.extend(rest.iter().cloned());
        let ek = encode_key(&ext).unwrap();
        prop_assert_eq!(start <= ek && ek < end, !rest.is_empty());
    }
}
