//! The identity endpoint: client-credentials tokens, OpenID discovery and the JWKS, with the identity
//! platform's error shape.

use serde_json::Value;

use crate::harness::*;

async fn token_request(server: &Server, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = server.http.post(server.url(&format!("/{tenant}/oauth2/v2.0/token"))).form(form).send().await.expect("token request");
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn client_credentials_tokens_and_discovery() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec![] }).await;
    let good = [
        ("grant_type", "client_credentials"),
        ("client_id", DEMO_BOT),
        ("client_secret", SECRET),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let (status, body) = token_request(&server, CONTOSO, &good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);

    // The token's claims, read back through the published keys.
    let config: Value = server
        .http
        .get(server.url(&format!("/{CONTOSO}/v2.0/.well-known/openid-configuration")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["issuer"], format!("{}/{CONTOSO}/v2.0", server.base));
    assert_eq!(config["token_endpoint"], format!("{}/{CONTOSO}/oauth2/v2.0/token", server.base));
    let jwks: Value = server.http.get(config["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header_b64 = body["access_token"].as_str().unwrap().split('.').next().unwrap();
    assert!(!header_b64.is_empty());
    let key = switchboard::identity::SigningKey::load_or_generate(&server.data_dir.join("keys")).expect("the server's persisted key");
    assert_eq!(key.jwks(), jwks, "the JWKS publishes the persisted key");
    let claims =
        switchboard::identity::validate_access_token(&key, &server.base, body["access_token"].as_str().unwrap(), now).expect("valid");
    assert_eq!((claims.appid.as_str(), claims.tid.as_str(), claims.aud.as_str()), (DEMO_BOT, CONTOSO, "https://graph.microsoft.com"));
    assert!(claims.roles.iter().any(|r| r == "Calls.Initiate.All"));
    assert!(claims.exp > claims.iat && claims.nbf <= claims.iat);

    // HTTP Basic client authentication works too.
    let resp = server
        .http
        .post(server.url(&format!("/{CONTOSO}/oauth2/v2.0/token")))
        .basic_auth(DEMO_BOT, Some(SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", "https://graph.microsoft.com/.default")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn token_errors_have_the_identity_platform_shape() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec![] }).await;
    let scope = ("scope", "https://graph.microsoft.com/.default");
    let cases: Vec<(&str, Vec<(&str, &str)>, u16, &str, &str)> = vec![
        (
            CONTOSO,
            vec![("grant_type", "client_credentials"), ("client_id", DEMO_BOT), ("client_secret", "wrong"), scope],
            401,
            "invalid_client",
            "AADSTS7000215",
        ),
        (CONTOSO, vec![("grant_type", "client_credentials"), ("client_id", DEMO_BOT), scope], 401, "invalid_client", "AADSTS7000218"),
        (
            CONTOSO,
            vec![("grant_type", "password"), ("client_id", DEMO_BOT), ("client_secret", SECRET), scope],
            400,
            "unsupported_grant_type",
            "AADSTS70003",
        ),
        (CONTOSO, vec![("client_id", DEMO_BOT), ("client_secret", SECRET), scope], 400, "invalid_request", "'grant_type'"),
        (
            CONTOSO,
            vec![("grant_type", "client_credentials"), ("client_id", DEMO_BOT), ("client_secret", SECRET)],
            400,
            "invalid_request",
            "'scope'",
        ),
        (
            CONTOSO,
            vec![("grant_type", "client_credentials"), ("client_id", DEMO_BOT), ("client_secret", SECRET), ("scope", "User.Read")],
            400,
            "invalid_scope",
            "AADSTS1002012",
        ),
        (
            CONTOSO,
            vec![("grant_type", "client_credentials"), ("client_id", "nobody"), ("client_secret", SECRET), scope],
            400,
            "unauthorized_client",
            "AADSTS700016",
        ),
        (
            "not-a-tenant",
            vec![("grant_type", "client_credentials"), ("client_id", DEMO_BOT), ("client_secret", SECRET), scope],
            400,
            "invalid_request",
            "AADSTS90002",
        ),
        (
            FABRIKAM,
            vec![("grant_type", "client_credentials"), ("client_id", LEGACY_BOT), ("client_secret", SECRET), scope],
            400,
            "unauthorized_client",
            "was not found in the directory",
        ),
    ];
    for (tenant, form, status, error, fragment) in cases {
        let (got, body) = token_request(&server, tenant, &form).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{form:?}: {body}");
        assert!(body["error_description"].as_str().unwrap_or_default().contains(fragment), "{form:?}: {body}");
        assert!(body["error_codes"].is_array() && body["trace_id"].is_string() && body["timestamp"].is_string(), "{body}");
    }
    let resp = server
        .http
        .post(server.url(&format!("/{CONTOSO}/oauth2/v2.0/token")))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = server.http.get(server.url("/nope/v2.0/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

/// The keys answer for the directory's tenants and `common`, and, like the OpenID configuration,
/// refuse an unknown tenant as Entra does.
#[tokio::test]
async fn the_keys_of_an_unknown_tenant_are_refused_like_its_configuration() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec![] }).await;
    for tenant in [CONTOSO, FABRIKAM, "common"] {
        let resp = server.http.get(server.url(&format!("/{tenant}/discovery/v2.0/keys"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{tenant}");
    }
    for path in ["/nope/discovery/v2.0/keys", "/nope/v2.0/.well-known/openid-configuration"] {
        let resp = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            (body["error"].as_str(), &body["error_codes"]),
            (Some("invalid_request"), &serde_json::json!([90002])),
            "{path}: {body}"
        );
    }
    let config: Value =
        server.http.get(server.url("/notifications/v1/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let resp = server.http.get(config["jwks_uri"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the notification keys are published where the discovery document says");
}
