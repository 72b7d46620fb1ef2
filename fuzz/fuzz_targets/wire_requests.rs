//! Any bytes as a KV Connect request body: decoding and conversion to domain requests never
//! panic, and whatever converts passes or fails limit validation without panicking.
#![no_main]

use kv_traits::wire::{self, pb};
use kv_traits::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(req) = wire::decode_request::<pb::SnapshotRead>(data) {
        if let Ok(ranges) = wire::read_ranges_from_wire(req) {
            let _ = limits.validate_read(&ranges);
        }
    }
    if let Ok(req) = wire::decode_request::<pb::AtomicWrite>(data) {
        if let Ok(write) = wire::atomic_write_from_wire(req) {
            let _ = limits.validate_write(&write, 1_700_000_000_000);
        }
    }
    if let Ok(req) = wire::decode_request::<pb::Watch>(data) {
        let keys = wire::watch_keys_from_wire(req);
        let _ = limits.validate_watch(&keys);
    }
});
