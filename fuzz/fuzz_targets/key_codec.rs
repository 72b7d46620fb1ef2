//! Any bytes, split in two keys at a position chosen by the first byte: decoding never panics;
//! whatever decodes re-encodes to the same bytes (unless it holds an integer part, whose
//! non-minimal forms the decoder accepts, or a NaN float, whose payload is canonicalised), and
//! the canonical re-encoding decodes to the same parts and is a fixed point; the order of two
//! encoded keys is the order of their decoded parts.
#![no_main]

use kv_traits::key::{decode_key, encode_key, KeyPart};
use libfuzzer_sys::fuzz_target;

/// Checks one key; returns its parts and canonical encoding if it decodes.
fn check(data: &[u8]) -> Option<(Vec<KeyPart>, Vec<u8>)> {
    let parts = decode_key(data).ok()?;
    let encoded = encode_key(&parts).expect("decoded parts re-encode");
    let lossy = parts.iter().any(|p| match p {
        KeyPart::Int(_) => true,
        KeyPart::Float(f) => f.is_nan(),
        _ => false,
    });
    if !lossy {
        assert_eq!(encoded, data, "re-encoding changed the bytes of {parts:?}");
    }
    let again = decode_key(&encoded).expect("re-encoded key decodes");
    assert_eq!(again, parts);
    assert_eq!(
        encode_key(&again).expect("re-encodes"),
        encoded,
        "canonical form is not a fixed point"
    );
    Some((parts, encoded))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    check(data);
    let split = usize::from(split).min(rest.len());
    let (a, b) = rest.split_at(split);
    if let (Some((pa, ea)), Some((pb, eb))) = (check(a), check(b)) {
        assert_eq!(
            ea.cmp(&eb),
            pa.cmp(&pb),
            "byte order and part order disagree: {pa:?} vs {pb:?}"
        );
    }
});
