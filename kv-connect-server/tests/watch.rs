//! `/watch`: framing, first frame, change notifications, keep-alives, shutdown, and streams of
//! the same keys sharing their frames (on one connection or many, overlapping key sets, late
//! joiners, slow readers).

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use kv_proto::{pb, WatchFrameDecoder};
use prost::Message;

struct WatchConn {
    body: Incoming,
    /// Raw bytes received, for keep-alive accounting.
    raw: Vec<u8>,
    decoder: WatchFrameDecoder,
}

impl WatchConn {
    async fn open(kv: &Kv, keys: &[Vec<u8>]) -> WatchConn {
        Self::opened(kv.start_watch(keys).await)
    }

    /// A watch through `client`: streams of one HTTP/2 client share its connection.
    async fn open_on(
        kv: &Kv,
        client: &hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<bytes::Bytes>,
        >,
        keys: &[Vec<u8>],
    ) -> WatchConn {
        Self::opened(kv.start_watch_on(client, keys).await)
    }

    fn opened(res: http::Response<Incoming>) -> WatchConn {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/octet-stream"
        );
        WatchConn {
            body: res.into_body(),
            raw: vec![],
            decoder: WatchFrameDecoder::default(),
        }
    }

    /// The next non-empty frame (fails the test after 30 s, a bound on a hang only).
    async fn next(&mut self) -> pb::WatchOutput {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(f) = self.decoder.next_frame().unwrap() {
                    return f;
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("watch stream ended")
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    self.raw.extend_from_slice(&data);
                    self.decoder.push(&data);
                }
            }
        })
        .await
        .expect("no watch frame within 30 s")
    }

    /// Reads raw bytes until at least `n` arrived (fails the test after 30 s, a bound on a
    /// hang only), returning them.
    async fn read_at_least(&mut self, n: usize) -> Vec<u8> {
        let mut got = vec![];
        tokio::time::timeout(Duration::from_secs(30), async {
            while got.len() < n {
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("watch stream ended")
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} bytes within 30 s: {got:?}"));
        got
    }
}

#[tokio::test]
async fn first_frame_reports_every_key_in_order_then_changes() {
    let server = TestServer::start().await;
    for proto in BOTH {
        let kv = Kv::connect(proto, &server).await;
        let (a, b, c) = (
            key(&format!("a{proto:?}")),
            key(&format!("b{proto:?}")),
            key(&format!("c{proto:?}")),
        );
        assert_eq!(kv.write(&write_of(vec![set(&b, b"B")])).await.status, 1);
        let mut w = WatchConn::open(&kv, &[c.clone(), b.clone(), a.clone()]).await;
        let first = w.next().await;
        assert_eq!(first.status, pb::SnapshotReadStatus::SrSuccess as i32);
        assert_eq!(first.keys.len(), 3);
        assert!(first.keys.iter().all(|k| k.changed), "{first:?}");
        assert!(first.keys[0].entry_if_changed.is_none());
        assert_eq!(first.keys[1].entry_if_changed.as_ref().unwrap().value, b"B");
        assert_eq!(first.keys[1].entry_if_changed.as_ref().unwrap().key, b);
        assert!(first.keys[2].entry_if_changed.is_none());
        // The frame on the wire is `u32 LE length ‖ message`.
        let len = u32::from_le_bytes(
            w.raw[w.raw.len() - first.encoded_len() - 4..][..4]
                .try_into()
                .unwrap(),
        );
        assert_eq!(len as usize, first.encoded_len());

        assert_eq!(kv.write(&write_of(vec![set(&a, b"A")])).await.status, 1);
        let next = w.next().await;
        assert_eq!(next.keys.len(), 3);
        let ka = &next.keys[2];
        assert!(ka.changed);
        assert_eq!(ka.entry_if_changed.as_ref().unwrap().value, b"A");
        // Every frame is a full snapshot in request order.
        assert!(next.keys.iter().all(|k| k.changed), "{next:?}");
        assert!(next.keys[0].entry_if_changed.is_none());
        assert_eq!(next.keys[1].entry_if_changed.as_ref().unwrap().value, b"B");
        // Deleting reports changed with no entry.
        kv.write(&write_of(vec![pb::Mutation {
            key: b.clone(),
            mutation_type: 2,
            ..Default::default()
        }]))
        .await;
        let next = w.next().await;
        assert!(
            next.keys[1].changed && next.keys[1].entry_if_changed.is_none(),
            "{next:?}"
        );
    }
}

#[tokio::test]
async fn keepalive_frames_are_sent() {
    let server = TestServer::start_with(|c| c.watch_keepalive = Duration::from_millis(50)).await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let mut w = WatchConn::open(&kv, &[key("k")]).await;
    w.next().await;
    // At least two keep-alive frames (waited for, not counted within a fixed time).
    let got = w.read_at_least(8).await;
    assert!(got.chunks(4).all(|c| c == [0, 0, 0, 0]), "{got:?}");
}

#[tokio::test]
async fn shutdown_ends_watch_streams_and_closes_the_database() {
    let mut server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let kv1 = Kv {
        proto: Proto::Http1,
        ..Kv::connect(Proto::Http1, &server).await
    };
    let mut w2 = WatchConn::open(&kv, &[key("k")]).await;
    let mut w1 = WatchConn::open(&kv1, &[key("k")]).await;
    w2.next().await;
    w1.next().await;
    // Open watch streams must not hold the shutdown until its 30 s `shutdown_timeout`
    // (the default): well under it is a pass, however loaded the machine.
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), server.shutdown())
        .await
        .expect("shutdown waited for the open watch streams")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    // Both streams end (cleanly or by reset), they do not hang.
    for w in [&mut w1, &mut w2] {
        let end = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match w.body.frame().await {
                    None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "watch stream still open after shutdown");
    }
    // The database was closed.
    use kv_traits::Database;
    assert!(server
        .db
        .snapshot_read(
            vec![kv_traits::ReadRange::single(&key("k"))],
            Default::default()
        )
        .await
        .is_err());
    // And the port no longer accepts connections.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn duplicate_keys_keep_their_values_when_another_key_changes() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let (a, b) = (key("da"), key("db"));
    assert_eq!(kv.write(&write_of(vec![set(&a, b"a0")])).await.status, 1);
    let mut w = WatchConn::open(&kv, &[a.clone(), b.clone(), a.clone()]).await;
    let first = w.next().await;
    assert!(first.keys.iter().all(|k| k.changed));
    assert_eq!(kv.write(&write_of(vec![set(&b, b"b1")])).await.status, 1);
    let next = w.next().await;
    // Deno 2.9.6 shows `changed=false` keys as missing, so the server repeats their entries.
    for i in [0, 2] {
        let k = &next.keys[i];
        assert!(k.changed, "{next:?}");
        assert_eq!(k.entry_if_changed.as_ref().unwrap().value, b"a0");
    }
    assert_eq!(next.keys[1].entry_if_changed.as_ref().unwrap().value, b"b1");
}

/// The value of key `i` of a frame; `None` = absent.
fn value_of(frame: &pb::WatchOutput, i: usize) -> Option<Vec<u8>> {
    let k = &frame.keys[i];
    assert!(k.changed, "{frame:?}");
    k.entry_if_changed.as_ref().map(|e| e.value.clone())
}

#[tokio::test]
async fn watchers_of_the_same_keys_on_one_and_many_connections_see_every_change() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let (a, b) = (key("sa"), key("sb"));
    assert_eq!(kv.write(&write_of(vec![set(&a, b"a0")])).await.status, 1);
    let keys = [a.clone(), b.clone()];
    let shared = client(Proto::H2c);
    let mut watchers = Vec::new();
    for i in 0..24 {
        // Half on one shared connection, half on a connection each.
        let w = if i % 2 == 0 {
            WatchConn::open_on(&kv, &shared, &keys).await
        } else {
            WatchConn::open(&kv, &keys).await
        };
        watchers.push(w);
    }
    for w in &mut watchers {
        let first = w.next().await;
        assert_eq!(value_of(&first, 0).as_deref(), Some(&b"a0"[..]));
        assert_eq!(value_of(&first, 1), None);
    }
    for n in 1..=5u8 {
        let (va, vb) = (vec![b'a', n], vec![b'b', n]);
        let m = if n % 2 == 0 {
            vec![set(&a, &va)]
        } else {
            vec![set(&a, &va), set(&b, &vb)]
        };
        assert_eq!(kv.write(&write_of(m)).await.status, 1);
        let mut frames = Vec::new();
        for w in &mut watchers {
            let f = w.next().await;
            assert_eq!(value_of(&f, 0), Some(va.clone()), "write {n}");
            frames.push(f);
        }
        // Every watcher got the same full snapshot.
        assert!(frames.windows(2).all(|p| p[0] == p[1]), "{frames:?}");
    }
}

#[tokio::test]
async fn overlapping_key_sets_each_get_their_own_snapshots() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let (a, b, c) = (key("oa"), key("ob"), key("oc"));
    let shared = client(Proto::H2c);
    let mut ab = WatchConn::open_on(&kv, &shared, &[a.clone(), b.clone()]).await;
    let mut bc = WatchConn::open_on(&kv, &shared, &[b.clone(), c.clone()]).await;
    let mut ba = WatchConn::open_on(&kv, &shared, &[b.clone(), a.clone()]).await;
    let mut only_b = WatchConn::open(&kv, std::slice::from_ref(&b)).await;
    for w in [&mut ab, &mut bc, &mut ba, &mut only_b] {
        w.next().await;
    }
    assert_eq!(kv.write(&write_of(vec![set(&b, b"b1")])).await.status, 1);
    let f = ab.next().await;
    assert_eq!(
        (value_of(&f, 0), value_of(&f, 1)),
        (None, Some(b"b1".to_vec()))
    );
    let f = bc.next().await;
    assert_eq!(
        (value_of(&f, 0), value_of(&f, 1)),
        (Some(b"b1".to_vec()), None)
    );
    let f = ba.next().await;
    assert_eq!(
        (value_of(&f, 0), value_of(&f, 1)),
        (Some(b"b1".to_vec()), None)
    );
    assert_eq!(value_of(&only_b.next().await, 0), Some(b"b1".to_vec()));
    // A write of `a` reaches the sets holding `a` only: the next frame of the others is the
    // write of `c`, then of `b`.
    assert_eq!(kv.write(&write_of(vec![set(&a, b"a2")])).await.status, 1);
    let f = ab.next().await;
    assert_eq!(
        (value_of(&f, 0), value_of(&f, 1)),
        (Some(b"a2".to_vec()), Some(b"b1".to_vec()))
    );
    let f = ba.next().await;
    assert_eq!(
        (value_of(&f, 0), value_of(&f, 1)),
        (Some(b"b1".to_vec()), Some(b"a2".to_vec()))
    );
    assert_eq!(kv.write(&write_of(vec![set(&c, b"c3")])).await.status, 1);
    let f = bc.next().await;
    assert_eq!(
        (value_of(&f, 0), value_of(&f, 1)),
        (Some(b"b1".to_vec()), Some(b"c3".to_vec()))
    );
    assert_eq!(kv.write(&write_of(vec![set(&b, b"b4")])).await.status, 1);
    assert_eq!(value_of(&only_b.next().await, 0), Some(b"b4".to_vec()));
    let f = ab.next().await;
    assert_eq!(
        (value_of(&f, 0), value_of(&f, 1)),
        (Some(b"a2".to_vec()), Some(b"b4".to_vec()))
    );
}

#[tokio::test]
async fn a_watcher_joining_mid_stream_gets_the_current_value_first() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let a = key("ja");
    let shared = client(Proto::H2c);
    let mut early = WatchConn::open_on(&kv, &shared, std::slice::from_ref(&a)).await;
    assert_eq!(value_of(&early.next().await, 0), None);
    for n in 1..=20u8 {
        assert_eq!(kv.write(&write_of(vec![set(&a, &[n])])).await.status, 1);
        // Joins after the write was acknowledged, while `early` has not read it yet: its first
        // frame shows that write (or, never, an older one).
        let mut late = WatchConn::open_on(&kv, &shared, std::slice::from_ref(&a)).await;
        assert_eq!(
            value_of(&late.next().await, 0),
            Some(vec![n]),
            "join after write {n}"
        );
    }
    // `early` catches up, in order, to the last write.
    let mut seen = 0u8;
    while seen < 20 {
        let v = value_of(&early.next().await, 0).unwrap()[0];
        assert!(v > seen, "went from {seen} to {v}");
        seen = v;
    }
}

#[tokio::test]
async fn a_slow_watcher_does_not_hold_up_the_others_and_ends_at_the_latest_value() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let a = key("slow");
    let shared = client(Proto::H2c);
    let mut slow = WatchConn::open_on(&kv, &shared, std::slice::from_ref(&a)).await;
    let mut fast = WatchConn::open_on(&kv, &shared, std::slice::from_ref(&a)).await;
    let mut elsewhere = WatchConn::open(&kv, std::slice::from_ref(&a)).await;
    for w in [&mut slow, &mut fast, &mut elsewhere] {
        assert_eq!(value_of(&w.next().await, 0), None);
    }
    // `slow` reads nothing while 50 writes go by; the others see each one.
    // 60 KiB values: 50 of them overflow the client's stream window (hyper: 2 MiB), so the
    // server must hold `slow`'s frames back and later send the newest state.
    let big = vec![7u8; 60 * 1024];
    for n in 1..=50u8 {
        let mut v = vec![n];
        v.extend_from_slice(&big);
        assert_eq!(kv.write(&write_of(vec![set(&a, &v)])).await.status, 1);
        for w in [&mut fast, &mut elsewhere] {
            assert_eq!(value_of(&w.next().await, 0).unwrap()[0], n);
        }
    }
    // Then it reads: never backwards, ending at the last write.
    let mut seen = 0u8;
    while seen < 50 {
        let v = value_of(&slow.next().await, 0).unwrap()[0];
        assert!(v > seen, "went from {seen} to {v}");
        seen = v;
    }
}
