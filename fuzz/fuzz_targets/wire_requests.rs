//! Any bytes as a KV Connect protobuf body, in both directions.
//!
//! Requests (server side): decoding, conversion to domain requests and limit validation never
//! panic, and whatever converts survives the client's conversion back to the wire and the
//! server's conversion again unchanged (client and server agree on every field).
//!
//! Responses (client side): `SnapshotReadOutput`, `AtomicWriteOutput` and `WatchOutput`
//! interpretation and the `/watch` frame decoder (fed the bytes in two chunks) never panic, and
//! accepted read results survive the server's encoding and the client's decoding unchanged.
#![no_main]

use kv_proto::{self as wire, pb};
use kv_traits::{Consistency, Limits};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(req) = wire::decode_request::<pb::SnapshotRead>(data) {
        if let Ok(ranges) = wire::read_ranges_from_wire(req) {
            let _ = limits.validate_read(&ranges);
            let again = wire::read_ranges_from_wire(wire::read_ranges_to_wire(&ranges))
                .expect("re-encoded ranges convert");
            assert_eq!(again, ranges);
        }
    }
    if let Ok(req) = wire::decode_request::<pb::AtomicWrite>(data) {
        if let Ok(write) = wire::atomic_write_from_wire(req) {
            let _ = limits.validate_write(&write, 1_700_000_000_000);
            let again = wire::atomic_write_from_wire(wire::atomic_write_to_wire(&write))
                .expect("re-encoded write converts");
            assert_eq!(again, write);
        }
    }
    if let Ok(req) = wire::decode_request::<pb::Watch>(data) {
        let keys = wire::watch_keys_from_wire(req);
        let _ = limits.validate_watch(&keys);
        assert_eq!(
            wire::watch_keys_from_wire(wire::watch_keys_to_wire(&keys)),
            keys
        );
    }

    if let Ok(out) = pb::SnapshotReadOutput::decode(data) {
        let n = out.ranges.len();
        if let Ok(result) = wire::snapshot_read_result_from_wire(out, n, Consistency::Strong) {
            let bytes = wire::snapshot_read_output(result.clone()).encode_to_vec();
            let out = pb::SnapshotReadOutput::decode(bytes.as_slice()).expect("decodes");
            let again = wire::snapshot_read_result_from_wire(out, n, Consistency::Strong)
                .expect("re-encoded result accepted");
            assert_eq!(again, result);
        }
    }
    if let Ok(out) = pb::AtomicWriteOutput::decode(data) {
        if let Ok(result) = wire::commit_result_from_wire(out) {
            let out = wire::atomic_write_output(result.clone());
            assert_eq!(wire::commit_result_from_wire(out).ok(), Some(result));
        }
    }
    if let Ok(out) = pb::WatchOutput::decode(data) {
        let n = out.keys.len();
        let _ = wire::watch_keys_output_from_wire(out, n);
    }
    let mut decoder = wire::WatchFrameDecoder::default();
    let (a, b) = data.split_at(data.len() / 2);
    let mut frames = 0;
    for chunk in [a, b] {
        decoder.push(chunk);
        while let Ok(Some(_)) = decoder.next_frame() {
            frames += 1;
        }
    }
    // Every frame has a 4-byte header.
    assert!(frames <= data.len() / 4);
});
