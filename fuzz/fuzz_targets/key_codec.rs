//! Any bytes: decoding never panics, and whatever decodes re-encodes to a key that decodes to
//! the same parts (encoding is canonical up to non-minimal integer forms and NaN payloads).
#![no_main]

use kv_traits::key::{decode_key, encode_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parts) = decode_key(data) {
        let encoded = encode_key(&parts).expect("decoded parts re-encode");
        let again = decode_key(&encoded).expect("re-encoded key decodes");
        assert_eq!(again, parts);
    }
});
