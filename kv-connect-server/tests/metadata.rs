//! Metadata exchange: versions, exact JSON shape, content type, endpoint URLs, repeated exchanges.

mod common;

use common::*;
use http::StatusCode;

fn is_lower_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts.iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

#[tokio::test]
async fn exact_shape_for_both_http_versions() {
    let server = TestServer::start().await;
    for proto in BOTH {
        let auth = format!("Bearer {TOKEN}");
        let r = post(
            proto,
            &server.url("/"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            r#"{"supportedVersions":[1,2,3]}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.content_type(), "application/json");
        assert_eq!(
            r.version,
            if proto == Proto::H2c {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let obj = json.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["databaseId", "endpoints", "expiresAt", "token", "version"]
        );
        assert_eq!(json["version"], 3);
        assert!(
            is_lower_uuid(json["databaseId"].as_str().unwrap()),
            "{json}"
        );
        assert_eq!(
            json["endpoints"],
            serde_json::json!([{"url": "/v2", "consistency": "strong"}])
        );
        assert!(!json["token"].as_str().unwrap().is_empty());
        let exp = json["expiresAt"].as_str().unwrap();
        assert!(exp.ends_with('Z'), "{exp}");
        let t = chrono::DateTime::parse_from_rfc3339(exp).unwrap();
        let ahead = t.signed_duration_since(chrono::Utc::now()).num_seconds();
        assert!(
            (3500..=3600).contains(&ahead),
            "expiresAt {exp} is {ahead}s ahead"
        );
        // npm's pattern.
        let b = exp.as_bytes();
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16]),
            (b'-', b'-', b'T', b':', b':')
        );
    }
}

#[tokio::test]
async fn negotiates_the_highest_common_version() {
    let server = TestServer::start().await;
    let auth = format!("Bearer {TOKEN}");
    for (body, version) in [
        (r#"{"supportedVersions":[1,2,3]}"#, 3),
        (r#"{"supportedVersions":[2]}"#, 2),
        (r#"{"supportedVersions":[3,2]}"#, 3),
        (r#"{"supportedVersions":[1]}"#, 1),
        ("", 1),
    ] {
        let r = post(
            Proto::Http1,
            &server.url("/"),
            &[("authorization", &auth)],
            body,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.text());
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(json["version"], version, "{body}");
        let url = json["endpoints"][0]["url"].as_str().unwrap();
        if version == 1 {
            assert_eq!(url, format!("http://{}/v2", server.addr));
        } else {
            assert_eq!(url, "/v2");
        }
    }
    for body in [
        r#"{"supportedVersions":[4]}"#,
        r#"{"supportedVersions":[]}"#,
        "{",
        "[1,2,3]",
    ] {
        let r = post(
            Proto::Http1,
            &server.url("/"),
            &[("authorization", &auth)],
            body,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(!r.text().is_empty());
    }
}

#[tokio::test]
async fn repeated_exchanges_give_working_tokens_and_a_stable_id() {
    let server = TestServer::start().await;
    let a = metadata(Proto::H2c, &server).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let b = metadata(Proto::H2c, &server).await;
    assert_eq!(a.database_id, b.database_id);
    for token in [&a.token, &b.token] {
        let kv = Kv {
            proto: Proto::H2c,
            base: server.url("/v2"),
            token: token.clone(),
            database_id: a.database_id.clone(),
        };
        assert!(kv.get(&key("x")).await.is_none());
    }
}

#[tokio::test]
async fn database_id_is_stable_across_restarts_and_configurable() {
    let mut s1 = TestServer::start().await;
    let id1 = metadata(Proto::Http1, &s1).await.database_id;
    s1.shutdown().await.unwrap();
    let s2 = TestServer::start().await;
    assert_eq!(metadata(Proto::Http1, &s2).await.database_id, id1);
    let fixed = uuid::Uuid::from_u128(0xABCD_EF00_0000_0000_0000_0000_0000_0001);
    let s3 = TestServer::start_with(|c| c.database_id = Some(fixed)).await;
    let id3 = metadata(Proto::Http1, &s3).await.database_id;
    assert_eq!(id3, fixed.hyphenated().to_string());
    assert_eq!(id3, id3.to_lowercase());
}

#[tokio::test]
async fn never_redirects_and_only_post() {
    let server = TestServer::start().await;
    let r = send(
        Proto::Http1,
        http::Request::get(server.url("/"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers.get("allow").unwrap(), "POST");
}
