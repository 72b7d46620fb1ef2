//! Any bytes: the V8 parser never panics, and every parsed value survives a serialize/parse
//! round trip.
#![no_main]

use kv_traits::v8::{parse, serialize, V8Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = parse(data) {
        let again = parse(&serialize(&value)).expect("serialized value parses");
        match (&value, &again) {
            (V8Value::Number(a), V8Value::Number(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            _ => assert_eq!(value, again),
        }
    }
});
