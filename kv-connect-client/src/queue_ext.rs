//! Messages of the KV Connect queue extension (`queue-v1`, package `com.denokv.ext.queue`; see
//! `docs/queue-extension.md`), defined here until they are generated from
//! `kv-traits/proto/queue_ext.proto`.

/// Body of `POST <endpoint>/queue/dequeue`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DequeueRequest {
    /// How long to wait for a ready message, in ms (the server caps it at 30 000).
    #[prost(uint32, tag = "1")]
    pub wait_ms: u32,
}

/// Answer of `/queue/dequeue`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DequeueResponse {
    /// Opaque lease token; empty when no message became ready in time.
    #[prost(bytes = "vec", tag = "1")]
    pub lease: Vec<u8>,
    /// The V8-serialized payload.
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    /// Delivery attempt, 1 for the first delivery.
    #[prost(uint32, tag = "3")]
    pub attempt: u32,
    /// When the lease expires (server clock, ms since the Unix epoch).
    #[prost(int64, tag = "4")]
    pub lease_deadline_ms: i64,
}

/// Body of `POST <endpoint>/queue/finish`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FinishRequest {
    /// The lease token from [`DequeueResponse::lease`].
    #[prost(bytes = "vec", tag = "1")]
    pub lease: Vec<u8>,
    /// Whether the handler succeeded.
    #[prost(bool, tag = "2")]
    pub success: bool,
}

/// Answer of `/queue/finish` (empty).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FinishResponse {}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn wire_layout() {
        assert_eq!(
            DequeueRequest { wait_ms: 300 }.encode_to_vec(),
            [0x08, 0xac, 0x02]
        );
        assert_eq!(
            FinishRequest {
                lease: vec![1, 2],
                success: true
            }
            .encode_to_vec(),
            [0x0a, 0x02, 1, 2, 0x10, 0x01]
        );
        let r = DequeueResponse {
            lease: vec![9],
            payload: vec![0xff, 0x0f, 0x49, 0x02],
            attempt: 1,
            lease_deadline_ms: 5,
        };
        let bytes = r.encode_to_vec();
        assert_eq!(
            bytes,
            [0x0a, 0x01, 9, 0x12, 0x04, 0xff, 0x0f, 0x49, 0x02, 0x18, 0x01, 0x20, 0x05]
        );
        assert_eq!(DequeueResponse::decode(bytes.as_slice()).unwrap(), r);
        assert!(FinishResponse::decode(&[][..]).is_ok());
    }
}
