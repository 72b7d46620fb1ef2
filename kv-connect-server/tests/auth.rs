//! Authentication: access token on the metadata exchange, data-path tokens, 401 messages.

mod common;

use common::*;
use http::StatusCode;
use kv_proto::pb;
use prost::Message;

fn read_body() -> Vec<u8> {
    pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: key("a"),
            end: vec![0xff],
            limit: 1,
            reverse: false,
        }],
    }
    .encode_to_vec()
}

#[tokio::test]
async fn metadata_needs_the_access_token() {
    let server = TestServer::start().await;
    for proto in BOTH {
        for (auth, needle) in [
            (None, "Missing authorization header"),
            (Some("Bearer"), "Malformed authorization header"),
            (Some("Basic dXNlcjpwYXNz"), "Malformed authorization header"),
            (Some("Bearer wrong"), "Invalid access token"),
            (Some("Bearer test-access-tokenX"), "Invalid access token"),
        ] {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let r = post(
                proto,
                &server.url("/"),
                &headers,
                r#"{"supportedVersions":[3]}"#,
            )
            .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert!(r.text().contains(needle), "{auth:?}: {}", r.text());
        }
        // Scheme is case-insensitive.
        let r = post(
            proto,
            &server.url("/"),
            &[("authorization", "bearer test-access-token")],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn data_path_needs_a_valid_token() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let ok = kv.raw("snapshot_read", read_body()).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());

    let forged = {
        let mut t = kv.token.clone();
        let last = t.pop().unwrap();
        t.push(if last == '0' { '1' } else { '0' });
        t
    };
    for (token, needle) in [
        ("garbage".to_string(), "Invalid data-path token"),
        (forged, "Invalid data-path token"),
        ("kvc1.1.00".to_string(), "Invalid data-path token"),
    ] {
        let bad = Kv {
            token,
            ..Kv {
                proto: kv.proto,
                base: kv.base.clone(),
                token: String::new(),
                database_id: kv.database_id.clone(),
            }
        };
        let r = bad.raw("snapshot_read", read_body()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.text().contains(needle), "{}", r.text());
    }
    // No authorization header at all.
    let r = post(
        Proto::Http1,
        &server.url("/v2/snapshot_read"),
        &[
            ("x-denokv-version", "3"),
            ("x-denokv-database-id", &kv.database_id),
        ],
        read_body(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The access token itself is accepted on the data path (what the reference server issues).
    let direct = Kv {
        token: TOKEN.to_string(),
        ..kv
    };
    assert_eq!(
        direct.raw("snapshot_read", read_body()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_survive_a_restart_but_not_a_new_access_token() {
    let mut s1 = TestServer::start().await;
    let kv1 = Kv::connect(Proto::H2c, &s1).await;
    s1.shutdown().await.unwrap();
    // Same access token, new process (new port): the old token still works.
    let s2 = TestServer::start().await;
    let kv = Kv {
        base: s2.url("/v2"),
        ..kv1
    };
    assert_eq!(
        kv.raw("snapshot_read", read_body()).await.status,
        StatusCode::OK
    );
    // Another access token: the database id differs too, so pin it to isolate the token check.
    let id = uuid::Uuid::parse_str(&kv.database_id).unwrap();
    let s3 = TestServer::start_with(|c| {
        c.access_token = "another".into();
        c.database_id = Some(id);
    })
    .await;
    let kv = Kv {
        base: s3.url("/v2"),
        ..kv
    };
    let r = kv.raw("snapshot_read", read_body()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
}

#[tokio::test]
async fn expired_tokens_are_rejected() {
    use kv_connect_server::auth::{AuthError, TokenAuthority};
    use std::time::{Duration, SystemTime};
    let a = TokenAuthority::new(TOKEN, Duration::from_secs(60));
    let (t, exp) = a.issue(SystemTime::now() - Duration::from_secs(3600));
    assert!(exp < SystemTime::now());
    assert_eq!(a.verify(&t, SystemTime::now()), Err(AuthError::Expired));
    // Over HTTP: 401 with a message saying so.
    let server = TestServer::start().await;
    let m = metadata(Proto::Http1, &server).await;
    let kv = Kv {
        proto: Proto::Http1,
        base: server.url("/v2"),
        token: t,
        database_id: m.database_id,
    };
    let r = kv.raw("snapshot_read", read_body()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("expired"), "{}", r.text());
}
