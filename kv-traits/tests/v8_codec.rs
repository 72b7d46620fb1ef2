//! V8 scalar codec: the byte examples of semantics.md §2.1, the other scalar tags, V8's
//! string padding rule, error cases and property tests (round trip, no panics).

use kv_traits::v8::{
    parse, parse_sum_operand, serialize, serialize_bigint, serialize_number, SumOperand, V8Error,
    V8Value,
};
use num_bigint::BigInt;
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn num(n: f64) -> V8Value {
    V8Value::Number(n)
}

fn big(s: &str) -> V8Value {
    V8Value::BigInt(s.parse().unwrap())
}

/// Bytes captured from Deno 2.9.6 (V8 15.0, header version 16).
fn deno_vectors() -> Vec<(&'static str, V8Value)> {
    vec![
        ("ff 10 49 04", num(2.0)),
        ("ff 10 49 01", num(-1.0)),
        ("ff 10 4e 00 00 00 00 00 00 e0 41", num(2147483648.0)),
        ("ff 10 4e 00 00 00 00 00 00 70 42", num(1099511627776.0)),
        ("ff 10 4e 9a 99 99 99 99 99 b9 3f", num(0.1)),
        ("ff 10 5a 00", big("0")),
        ("ff 10 5a 10 05 00 00 00 00 00 00 00", big("5")),
        ("ff 10 5a 11 05 00 00 00 00 00 00 00", big("-5")),
        (
            "ff 10 5a 20 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00",
            big("18446744073709551616"),
        ),
    ]
}

/// Bytes written by the Rust `v8_valueserializer` crate (header version 15, minimal bigints).
fn v8_valueserializer_vectors() -> Vec<(&'static str, V8Value)> {
    vec![
        ("ff 0f 5a 02 01", big("1")),
        ("ff 0f 5a 03 01", big("-1")),
        ("ff 0f 5a 02 00", big("0")),
        ("ff 0f 4e 00 00 00 00 00 00 f8 3f", num(1.5)),
        ("ff 0f 49 02", num(1.0)),
        ("ff 0f 55 05", num(5.0)),
        (
            "ff 0f 5a 12 00 00 00 00 00 00 00 00 01",
            big("18446744073709551616"),
        ),
    ]
}

#[test]
fn parses_deno_captures() {
    for (bytes, value) in deno_vectors() {
        assert_eq!(parse(&h(bytes)).unwrap(), value, "{bytes}");
    }
}

#[test]
fn parses_v8_valueserializer_output() {
    for (bytes, value) in v8_valueserializer_vectors() {
        assert_eq!(parse(&h(bytes)).unwrap(), value, "{bytes}");
    }
}

#[test]
fn serializes_like_v8() {
    // The Deno captures with the version byte lowered to 15: V8 writes the same scalars.
    for (bytes, value) in deno_vectors() {
        let expected = h(&bytes.replacen("ff 10", "ff 0f", 1));
        assert_eq!(serialize(&value), expected, "{value:?}");
    }
    assert_eq!(serialize(&num(1.0)), h("ff 0f 49 02"));
    assert_eq!(serialize(&num(1.5)), h("ff 0f 4e 00 00 00 00 00 00 f8 3f"));
    assert_eq!(serialize(&num(5.0)), h("ff 0f 49 0a"));
}

#[test]
fn number_forms() {
    assert_eq!(serialize(&num(0.0)), h("ff 0f 49 00"));
    assert_eq!(
        serialize(&num(-0.0)),
        h("ff 0f 4e 00 00 00 00 00 00 00 80"),
        "-0 is not an int32"
    );
    assert_eq!(serialize(&num(2147483647.0)), h("ff 0f 49 fe ff ff ff 0f"));
    assert_eq!(serialize(&num(-2147483648.0)), h("ff 0f 49 ff ff ff ff 0f"));
    assert_eq!(serialize(&num(-2147483649.0))[2], b'N');
    assert_eq!(serialize(&num(f64::NAN))[2], b'N');
    assert_eq!(serialize(&num(f64::INFINITY))[2], b'N');
    assert_eq!(
        parse(&h("ff 0f 49 fe ff ff ff 0f")).unwrap(),
        num(2147483647.0)
    );
    assert_eq!(
        parse(&h("ff 0f 49 ff ff ff ff 0f")).unwrap(),
        num(-2147483648.0)
    );
    assert_eq!(
        parse(&h("ff 0f 55 ff ff ff ff 0f")).unwrap(),
        num(4294967295.0)
    );
    match parse(&serialize(&num(-0.0))).unwrap() {
        V8Value::Number(n) => assert_eq!(n.to_bits(), (-0.0f64).to_bits()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_scalars() {
    let cases = [
        ("ff 0f 5f", V8Value::Undefined),
        ("ff 0f 30", V8Value::Null),
        ("ff 0f 54", V8Value::Bool(true)),
        ("ff 0f 46", V8Value::Bool(false)),
        ("ff 0f 22 00", V8Value::String(String::new())),
        ("ff 0f 22 02 68 69", V8Value::String("hi".into())),
        ("ff 0f 22 01 e9", V8Value::String("é".into())),
        ("ff 0f 63 02 ac 20", V8Value::String("€".into())),
        ("ff 0f 63 04 3d d8 00 de", V8Value::String("😀".into())),
    ];
    for (bytes, value) in cases {
        assert_eq!(serialize(&value), h(bytes), "{value:?}");
        assert_eq!(parse(&h(bytes)).unwrap(), value, "{bytes}");
    }
    // UTF-8 strings (`S`) are read but never written.
    assert_eq!(
        parse(&h("ff 0d 53 03 e2 82 ac")).unwrap(),
        V8Value::String("€".into())
    );
}

#[test]
fn two_byte_string_padding() {
    // 64 UTF-16 units = 128 payload bytes: the length varint takes 2 bytes, so the payload
    // would start at offset 5; V8 inserts one 00 padding tag to make it 6.
    let s: String = std::iter::repeat_n('€', 64).collect();
    let bytes = serialize(&V8Value::String(s.clone()));
    assert_eq!(&bytes[..6], &h("ff 0f 00 63 80 01")[..]);
    assert_eq!(bytes.len(), 6 + 128);
    assert_eq!(parse(&bytes).unwrap(), V8Value::String(s));
    // 63 units = 126 bytes: one-byte varint, payload at offset 4, no padding.
    let s: String = std::iter::repeat_n('€', 63).collect();
    let bytes = serialize(&V8Value::String(s.clone()));
    assert_eq!(&bytes[..4], &h("ff 0f 63 7e")[..]);
    assert_eq!(parse(&bytes).unwrap(), V8Value::String(s));
    // Padding is accepted before any tag, any number of times.
    assert_eq!(parse(&h("ff 10 00 00 00 49 04")).unwrap(), num(2.0));
}

#[test]
fn one_byte_strings_use_latin1() {
    let s = "\u{0}\u{7f}\u{80}\u{ff}";
    assert_eq!(
        serialize(&V8Value::String(s.into())),
        h("ff 0f 22 04 00 7f 80 ff")
    );
    // One char above U+00FF forces two-byte for the whole string.
    assert_eq!(
        serialize(&V8Value::String("\u{ff}\u{100}".into())),
        h("ff 0f 63 04 ff 00 00 01")
    );
}

#[test]
fn versions() {
    for v in 13u8..=16 {
        assert_eq!(parse(&[0xff, v, 0x49, 0x04]).unwrap(), num(2.0));
    }
    for v in [0u8, 1, 12, 17, 0x7f] {
        assert_eq!(
            parse(&[0xff, v, 0x49, 0x04]),
            Err(V8Error::UnsupportedVersion(u64::from(v)))
        );
    }
    assert_eq!(
        parse(&h("ff 80 01 49 04")),
        Err(V8Error::UnsupportedVersion(128))
    );
    let msg = parse(&h("ff 11 49 04")).unwrap_err().to_string();
    assert!(msg.contains("17"), "{msg}");
}

#[test]
fn parse_errors() {
    assert_eq!(parse(&[]), Err(V8Error::MissingHeader));
    assert_eq!(parse(&h("49 04")), Err(V8Error::MissingHeader));
    assert_eq!(parse(&h("ff")), Err(V8Error::UnexpectedEnd { offset: 1 }));
    assert_eq!(
        parse(&h("ff 0f")),
        Err(V8Error::UnexpectedEnd { offset: 2 })
    );
    assert_eq!(
        parse(&h("ff 0f 00 00")),
        Err(V8Error::UnexpectedEnd { offset: 4 })
    );
    assert_eq!(
        parse(&h("ff 0f 49")),
        Err(V8Error::UnexpectedEnd { offset: 3 })
    );
    assert_eq!(
        parse(&h("ff 0f 49 80")),
        Err(V8Error::UnexpectedEnd { offset: 4 })
    );
    assert_eq!(
        parse(&h("ff 0f 4e 00 00 00 00")),
        Err(V8Error::UnexpectedEnd { offset: 7 })
    );
    assert_eq!(
        parse(&h("ff 0f 5a 10 05 00")),
        Err(V8Error::UnexpectedEnd { offset: 6 })
    );
    assert_eq!(
        parse(&h("ff 0f 22 05 61")),
        Err(V8Error::UnexpectedEnd { offset: 5 })
    );
    // Objects, arrays, dates, host objects… are outside the subset.
    for tag in [b'o', b'A', b'a', b'D', b'\\', b'r', b'?', b'^'] {
        assert_eq!(
            parse(&[0xff, 0x0f, tag]),
            Err(V8Error::UnsupportedTag { tag, offset: 2 })
        );
    }
    assert_eq!(
        parse(&h("ff 0f 49 04 00")),
        Err(V8Error::TrailingBytes { offset: 4 })
    );
    assert_eq!(
        parse(&h("ff 0f 5f 5f")),
        Err(V8Error::TrailingBytes { offset: 3 })
    );
    assert_eq!(
        parse(&h("ff 0f 53 02 c3 28")),
        Err(V8Error::InvalidUtf8 { offset: 2 })
    );
    assert_eq!(
        parse(&h("ff 0f 63 03 61 00 62")),
        Err(V8Error::InvalidUtf16 { offset: 2 })
    );
    // A lone high surrogate.
    assert_eq!(
        parse(&h("ff 0f 00 63 02 3d d8")),
        Err(V8Error::InvalidUtf16 { offset: 3 })
    );
    assert_eq!(
        parse(&h("ff 0f 49 80 80 80 80 10")),
        Err(V8Error::VarintOverflow { offset: 3 })
    );
}

#[test]
fn bigints_of_any_byte_length() {
    // 3 magnitude bytes, not a whole digit.
    assert_eq!(parse(&h("ff 0f 5a 06 01 02 03")).unwrap(), big("197121"));
    // Zero with the sign bit set is still zero.
    assert_eq!(parse(&h("ff 0f 5a 01")).unwrap(), big("0"));
    // Leading zero digits.
    assert_eq!(
        parse(&h(
            "ff 0f 5a 21 07 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
        ))
        .unwrap(),
        big("-7")
    );
}

#[test]
fn bigint_serialization_uses_whole_digits() {
    let cases = [
        ("0", "ff 0f 5a 00"),
        ("1", "ff 0f 5a 10 01 00 00 00 00 00 00 00"),
        ("-1", "ff 0f 5a 11 01 00 00 00 00 00 00 00"),
        (
            "18446744073709551615",
            "ff 0f 5a 10 ff ff ff ff ff ff ff ff",
        ),
        (
            "-18446744073709551616",
            "ff 0f 5a 21 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00",
        ),
    ];
    for (n, bytes) in cases {
        let i: BigInt = n.parse().unwrap();
        assert_eq!(serialize_bigint(&i), h(bytes), "{n}");
        assert_eq!(serialize(&V8Value::BigInt(i.clone())), h(bytes), "{n}");
        assert_eq!(parse(&h(bytes)).unwrap(), V8Value::BigInt(i));
    }
    // 2^1024 needs 129 bytes → 17 digits = 136 bytes; bitfield 272 needs a 2-byte varint.
    let i = BigInt::from(1) << 1024;
    let bytes = serialize_bigint(&i);
    assert_eq!(&bytes[..5], &h("ff 0f 5a 90 02")[..]);
    assert_eq!(bytes.len(), 5 + 136);
    assert_eq!(parse(&bytes).unwrap(), V8Value::BigInt(i));
}

#[test]
fn sum_operands() {
    assert_eq!(
        parse_sum_operand(&h("ff 10 49 04")).unwrap(),
        SumOperand::Number(2.0)
    );
    assert_eq!(
        parse_sum_operand(&h("ff 0f 55 05")).unwrap(),
        SumOperand::Number(5.0)
    );
    assert_eq!(
        parse_sum_operand(&h("ff 10 4e 9a 99 99 99 99 99 b9 3f")).unwrap(),
        SumOperand::Number(0.1)
    );
    assert_eq!(
        parse_sum_operand(&h("ff 10 5a 11 05 00 00 00 00 00 00 00")).unwrap(),
        SumOperand::BigInt(BigInt::from(-5))
    );
    for (bytes, found) in [
        ("ff 0f 5f", "undefined"),
        ("ff 0f 30", "null"),
        ("ff 0f 54", "boolean"),
        ("ff 0f 22 01 35", "string"),
    ] {
        assert_eq!(
            parse_sum_operand(&h(bytes)),
            Err(V8Error::NotNumeric { found }),
            "{bytes}"
        );
    }
    assert_eq!(
        parse_sum_operand(&h("05 00 00 00 00 00 00 00")),
        Err(V8Error::MissingHeader),
        "an LE64 value is not V8"
    );
    assert_eq!(SumOperand::Number(1.0).kind_name(), "Number");
    assert_eq!(SumOperand::BigInt(BigInt::from(1)).kind_name(), "BigInt");
}

#[test]
fn sum_results() {
    // A Number result is always a double, even when integral (`I` 5 is stored as `N` 5.0).
    assert_eq!(serialize_number(5.0), h("ff 0f 4e 00 00 00 00 00 00 14 40"));
    assert_eq!(serialize_number(1.5), h("ff 0f 4e 00 00 00 00 00 00 f8 3f"));
    assert_eq!(SumOperand::Number(5.0).serialize(), serialize_number(5.0));
    assert_eq!(
        SumOperand::BigInt(BigInt::from(7)).serialize(),
        serialize_bigint(&BigInt::from(7))
    );
    assert_eq!(
        parse_sum_operand(&serialize_number(5.0)).unwrap(),
        SumOperand::Number(5.0)
    );
    assert_eq!(
        V8Value::from(SumOperand::BigInt(BigInt::from(3))),
        V8Value::BigInt(BigInt::from(3))
    );
}

fn value() -> impl Strategy<Value = V8Value> {
    prop_oneof![
        Just(V8Value::Undefined),
        Just(V8Value::Null),
        any::<bool>().prop_map(V8Value::Bool),
        any::<f64>().prop_map(V8Value::Number),
        any::<i32>().prop_map(|i| V8Value::Number(f64::from(i))),
        any::<u64>().prop_map(|b| V8Value::Number(f64::from_bits(b))),
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(neg, m)| {
            let v = BigInt::from_bytes_le(num_bigint::Sign::Plus, &m);
            V8Value::BigInt(if neg { -v } else { v })
        }),
        any::<String>().prop_map(V8Value::String),
        "[\\x00-\\xff]{0,20}".prop_map(V8Value::String),
        "[\\x00-\\xff€😀]{0,200}".prop_map(V8Value::String),
    ]
}

/// Equality that treats NaN as equal to itself and keeps -0 distinct from +0.
fn same(a: &V8Value, b: &V8Value) -> bool {
    match (a, b) {
        (V8Value::Number(x), V8Value::Number(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(v in value()) {
        let bytes = serialize(&v);
        prop_assert_eq!(&bytes[..2], &[0xff, 0x0f][..]);
        let back = parse(&bytes).unwrap();
        prop_assert!(same(&back, &v), "{:?} -> {:?} -> {:?}", v, bytes, back);
    }

    #[test]
    fn two_byte_payload_is_aligned(s in "[€😀a]{1,200}") {
        prop_assume!(s.chars().any(|c| u32::from(c) > 0xff));
        let bytes = serialize(&V8Value::String(s));
        let tag = bytes.iter().position(|&b| b == b'c').unwrap();
        let mut varint_len = 1;
        while bytes[tag + varint_len] & 0x80 != 0 {
            varint_len += 1;
        }
        prop_assert_eq!((tag + 1 + varint_len) % 2, 0);
    }

    #[test]
    fn sum_results_round_trip(n in any::<f64>(), m in proptest::collection::vec(any::<u8>(), 0..24), neg in any::<bool>()) {
        match parse_sum_operand(&serialize_number(n)).unwrap() {
            SumOperand::Number(back) => prop_assert!(back.to_bits() == n.to_bits() || (back.is_nan() && n.is_nan())),
            other => prop_assert!(false, "{:?}", other),
        }
        let i = BigInt::from_bytes_le(if neg { num_bigint::Sign::Minus } else { num_bigint::Sign::Plus }, &m);
        prop_assert_eq!(parse_sum_operand(&serialize_bigint(&i)).unwrap(), SumOperand::BigInt(i));
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
        let _ = parse(&bytes);
        let _ = parse_sum_operand(&bytes);
    }

    #[test]
    fn parse_never_panics_with_valid_header(
        version in 12u8..=17,
        body in proptest::collection::vec(
            prop_oneof![
                Just(0x00u8), Just(b'I'), Just(b'U'), Just(b'N'), Just(b'Z'), Just(b'"'),
                Just(b'c'), Just(b'S'), Just(0x80), Just(0xff), any::<u8>()
            ],
            0..48,
        )
    ) {
        let mut bytes = vec![0xff, version];
        bytes.extend(body);
        if let Ok(v) = parse(&bytes) {
            // Anything that parses re-serializes to something that parses to the same value.
            prop_assert!(same(&parse(&serialize(&v)).unwrap(), &v));
        }
    }
}
