//! The watch workload's frame reader: splits a `/watch` byte stream into frames and reads from
//! each only what the workload needs, the sequence number at the head of the first key's value.
//!
//! Contract:
//! - [`SeqDecoder::push`] appends received bytes; [`SeqDecoder::next_seq`] returns the sequence
//!   of the next complete non-empty frame (`u32 LE length ‖ WatchOutput`), `Ok(None)` until
//!   one is complete. Keep-alive (empty) frames are skipped.
//! - It fails on a frame longer than 16 MiB, an undecodable message, a frame whose first key
//!   has no entry, or a value shorter than 8 bytes.
//! - Cost: the message is decoded into a schema of just the fields read (unknown fields are
//!   skipped) and the value is a slice of the received buffer, not a copy, so 10,000 watchers
//!   decoding every write on the machine under test cost little next to the server.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

/// The longest frame accepted (as `kv_proto::WatchFrameDecoder`).
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// `WatchOutput`, only `keys` (tag 2).
#[derive(Clone, PartialEq, Message)]
struct SeqOutput {
    #[prost(message, repeated, tag = "2")]
    keys: Vec<SeqKey>,
}

/// `WatchKeyOutput`, only `entry_if_changed` (tag 2).
#[derive(Clone, PartialEq, Message)]
struct SeqKey {
    #[prost(message, optional, tag = "2")]
    entry_if_changed: Option<SeqEntry>,
}

/// `KvEntry`, only `value` (tag 2).
#[derive(Clone, PartialEq, Message)]
struct SeqEntry {
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// Incremental reader of one watch stream (see the module contract).
#[derive(Default)]
pub(crate) struct SeqDecoder {
    buf: BytesMut,
}

impl SeqDecoder {
    /// Appends received bytes.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The sequence shown by the next complete non-empty frame.
    pub(crate) fn next_seq(&mut self) -> Result<Option<u64>, String> {
        loop {
            let Some(header) = self.buf.get(..4) else {
                return Ok(None);
            };
            let mut len = [0u8; 4];
            len.copy_from_slice(header);
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_FRAME {
                return Err(format!(
                    "watch frame of {len} bytes exceeds the 16 MiB limit"
                ));
            }
            if self.buf.len() < 4 + len {
                return Ok(None);
            }
            self.buf.advance(4);
            let frame = self.buf.split_to(len).freeze();
            if len == 0 {
                continue;
            }
            let out = SeqOutput::decode(frame).map_err(|e| format!("invalid watch frame: {e}"))?;
            return sequence_of(&out).map(Some);
        }
    }
}

fn sequence_of(frame: &SeqOutput) -> Result<u64, String> {
    let entry = frame
        .keys
        .first()
        .and_then(|k| k.entry_if_changed.as_ref())
        .ok_or("a watch frame without the watched key's entry")?;
    let head = entry
        .value
        .get(..8)
        .ok_or("a watched value shorter than its sequence number")?;
    let mut b = [0u8; 8];
    b.copy_from_slice(head);
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::{encode_watch_frame, watch_output, WATCH_KEEPALIVE_FRAME};
    use kv_traits::{KvEntry, KvValue, Versionstamp, WatchKeyOutput};

    fn frame(value: Option<&[u8]>) -> Vec<u8> {
        let entry = value.map(|v| KvEntry {
            key: b"\x02k\x00".to_vec(),
            value: KvValue::Bytes(v.to_vec()),
            versionstamp: Versionstamp::from_version(3),
        });
        encode_watch_frame(&watch_output(vec![
            WatchKeyOutput::Changed(entry),
            WatchKeyOutput::Unchanged,
        ]))
    }

    fn seq_value(seq: u64) -> Vec<u8> {
        let mut v = seq.to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 100]);
        v
    }

    #[test]
    fn reads_sequences_across_chunks_and_skips_keepalives() {
        let mut stream = frame(Some(&seq_value(7)));
        stream.extend_from_slice(&WATCH_KEEPALIVE_FRAME);
        stream.extend(frame(Some(&seq_value(9))));
        let mut d = SeqDecoder::default();
        let mut seen = Vec::new();
        for chunk in stream.chunks(5) {
            d.push(chunk);
            while let Some(s) = d.next_seq().unwrap() {
                seen.push(s);
            }
        }
        assert_eq!(seen, [7, 9]);
        assert_eq!(d.next_seq(), Ok(None));
    }

    #[test]
    fn refuses_frames_it_cannot_read() {
        for bad in [frame(None), frame(Some(b"short"))] {
            let mut d = SeqDecoder::default();
            d.push(&bad);
            assert!(d.next_seq().is_err());
        }
        let mut d = SeqDecoder::default();
        d.push(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(d.next_seq().is_err());
        let mut d = SeqDecoder::default();
        d.push(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
        assert!(d.next_seq().is_err());
    }
}
