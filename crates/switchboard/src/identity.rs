//! Signing keys and JWTs: app-only Graph access tokens and notification tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
pub const TOKEN_LIFETIME_S: u64 = 3599;
pub const NOTIFICATION_TOKEN_LIFETIME_S: u64 = 3900;
const LEEWAY_S: u64 = 60;
const KEY_FILE: &str = "signing-key.pem";
const NOTIFICATION_KEY_FILE: &str = "notification-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot access signing key file '{}': {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid signing key: {0}")]
    Key(String),
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// Why a bearer token was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token is not signed by this server's key (kid '{0}')")]
    UnknownKey(String),
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not yet valid")]
    NotYetValid,
    #[error("the token's audience '{0}' is not Microsoft Graph")]
    WrongAudience(String),
    #[error("the token's issuer '{0}' does not match its tenant")]
    WrongIssuer(String),
    #[error("the token lacks the required claim '{0}'")]
    MissingClaim(&'static str),
}

/// The RSA signing key, persisted as PKCS#8 PEM so tokens stay valid across restarts.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    n: String,
    e: String,
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn key_err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> IdentityError + '_ {
    move |e| IdentityError::Key(format!("{what}: {e}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    |source| IdentityError::Io { path: path.to_path_buf(), source }
}

impl SigningKey {
    /// Loads `dir/signing-key.pem` (access tokens), or generates a 2048-bit key and writes it there
    /// (mode 0600).
    pub fn load_or_generate(dir: &Path) -> Result<SigningKey, IdentityError> {
        Self::load_or_generate_file(dir, KEY_FILE)
    }

    /// The same for the key that signs notification tokens (`dir/notification-key.pem`): a key of its
    /// own, so that neither kind of token can ever pass for the other.
    pub fn load_or_generate_notification(dir: &Path) -> Result<SigningKey, IdentityError> {
        Self::load_or_generate_file(dir, NOTIFICATION_KEY_FILE)
    }

    fn load_or_generate_file(dir: &Path, file: &str) -> Result<SigningKey, IdentityError> {
        let path = dir.join(file);
        let private = match std::fs::read_to_string(&path) {
            Ok(pem) => RsaPrivateKey::from_pkcs8_pem(&pem).map_err(key_err(&format!("'{}' is not a PKCS#8 RSA key", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(key_err("cannot generate RSA key"))?;
                let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(key_err("cannot encode RSA key"))?;
                std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                write_private(&path, pem.as_bytes()).map_err(io_err(&path))?;
                key
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        Self::from_private(&private)
    }

    /// A new 2048-bit key as PKCS#8 PEM (for nodes that share their key through the database).
    pub fn generate_pem() -> Result<String, IdentityError> {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(key_err("cannot generate RSA key"))?;
        Ok(key.to_pkcs8_pem(LineEnding::LF).map_err(key_err("cannot encode RSA key"))?.to_string())
    }

    /// The key in `pem` (PKCS#8).
    pub fn from_pem(pem: &str) -> Result<SigningKey, IdentityError> {
        Self::from_private(&RsaPrivateKey::from_pkcs8_pem(pem).map_err(key_err("the shared signing key is not a PKCS#8 RSA key"))?)
    }

    fn from_private(private: &RsaPrivateKey) -> Result<SigningKey, IdentityError> {
        let der = private.to_pkcs1_der().map_err(key_err("cannot encode RSA key"))?;
        let n_bytes = private.n().to_bytes_be();
        let n = URL_SAFE_NO_PAD.encode(&n_bytes);
        let e = URL_SAFE_NO_PAD.encode(private.e().to_bytes_be());
        let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(key_err("cannot build public key"))?;
        let kid = format!("{:016x}", fnv1a64(&n_bytes));
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        Ok(SigningKey { kid, encoding, decoding, n, e })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":..,"n":..,"e":..}]}`
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256",
            "kid": self.kid, "n": self.n, "e": self.e,
        }]})
    }

    /// RS256 JWT with header kid and typ "JWT".
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, IdentityError> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".to_string());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| IdentityError::Sign(e.to_string()))
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

/// Claims of an app-only access token for Graph.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub tid: String,
    pub appid: String,
    pub azp: String,
    pub roles: Vec<String>,
    pub oid: String,
    pub sub: String,
    pub idtyp: String,
    pub ver: String,
    pub uti: String,
}

/// Claims of the JWT sent in `Authorization: Bearer` on notification POSTs to a bot.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NotificationClaims {
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub tid: String,
}

/// The issuer of tenant T is "{issuer_base}/{T}/v2.0".
pub fn issuer_for(issuer_base: &str, tenant: &str) -> String {
    format!("{}/{tenant}/v2.0", issuer_base.trim_end_matches('/'))
}

pub fn issue_access_token(
    key: &SigningKey,
    issuer_base: &str,
    tenant: &str,
    app_id: &str,
    roles: &[String],
    now_s: u64,
) -> Result<(String, AccessClaims), IdentityError> {
    let uti = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let claims = AccessClaims {
        aud: GRAPH_AUDIENCE.to_string(),
        iss: issuer_for(issuer_base, tenant),
        iat: now_s,
        nbf: now_s,
        exp: now_s + TOKEN_LIFETIME_S,
        tid: tenant.to_string(),
        appid: app_id.to_string(),
        azp: app_id.to_string(),
        roles: roles.to_vec(),
        oid: app_id.to_string(),
        sub: app_id.to_string(),
        idtyp: "app".to_string(),
        ver: "2.0".to_string(),
        uti,
    };
    let token = key.sign(&claims)?;
    Ok((token, claims))
}

/// Checks header (RS256, known kid), signature, presence of the checked claims and exp/nbf
/// against `now_s` with leeway; returns the raw claims.
fn verify_raw(token: &str, find_key: impl FnOnce(&str) -> Option<DecodingKey>, now_s: u64) -> Result<Value, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(format!("bad header: {e}")))?;
    if header.alg != Algorithm::RS256 {
        let alg = header.alg;
        return Err(TokenError::Malformed(format!("algorithm {alg:?} is not accepted")));
    }
    let kid = header.kid.unwrap_or_default();
    let key = find_key(&kid).ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        _ => TokenError::Malformed(e.to_string()),
    })?;
    let claims = data.claims;
    for name in ["exp", "nbf", "aud", "iss", "tid"] {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(TokenError::MissingClaim(name));
        }
    }
    let time =
        |name: &'static str| claims[name].as_u64().ok_or_else(|| TokenError::Malformed(format!("claim '{name}' is not a timestamp")));
    if now_s > time("exp")?.saturating_add(LEEWAY_S) {
        return Err(TokenError::Expired);
    }
    if time("nbf")? > now_s.saturating_add(LEEWAY_S) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

fn typed<T: serde::de::DeserializeOwned>(claims: Value) -> Result<T, TokenError> {
    serde_json::from_value(claims).map_err(|e| TokenError::Malformed(format!("bad claims: {e}")))
}

/// Validates a bearer token for Graph; returns its claims.
pub fn validate_access_token(key: &SigningKey, issuer_base: &str, token: &str, now_s: u64) -> Result<AccessClaims, TokenError> {
    let find = |kid: &str| (kid == key.kid).then(|| key.decoding.clone());
    let claims: AccessClaims = typed(verify_raw(token, find, now_s)?)?;
    let graph_slash = format!("{GRAPH_AUDIENCE}/");
    if ![GRAPH_AUDIENCE, GRAPH_APP_ID, graph_slash.as_str()].contains(&claims.aud.as_str()) {
        return Err(TokenError::WrongAudience(claims.aud));
    }
    if claims.iss != issuer_for(issuer_base, &claims.tid) {
        return Err(TokenError::WrongIssuer(claims.iss));
    }
    Ok(claims)
}

pub fn issue_notification_token(key: &SigningKey, issuer: &str, app_id: &str, tenant: &str, now_s: u64) -> Result<String, IdentityError> {
    key.sign(&NotificationClaims {
        aud: app_id.to_string(),
        iss: issuer.to_string(),
        iat: now_s,
        nbf: now_s,
        exp: now_s + NOTIFICATION_TOKEN_LIFETIME_S,
        tid: tenant.to_string(),
    })
}

/// Validates a notification token as a bot would, against a JWKS document.
pub fn validate_notification_token(
    jwks: &Value,
    issuer: &str,
    app_id: &str,
    token: &str,
    now_s: u64,
) -> Result<NotificationClaims, TokenError> {
    let find = |kid: &str| {
        let keys = jwks.get("keys")?.as_array()?;
        let jwk = keys
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid) && k.get("kty").and_then(Value::as_str) == Some("RSA"))?;
        let n = jwk.get("n")?.as_str()?;
        let e = jwk.get("e")?.as_str()?;
        DecodingKey::from_rsa_components(n, e).ok()
    };
    let claims: NotificationClaims = typed(verify_raw(token, find, now_s)?)?;
    if claims.aud != app_id {
        return Err(TokenError::WrongAudience(claims.aud));
    }
    if claims.iss != issuer {
        return Err(TokenError::WrongIssuer(claims.iss));
    }
    Ok(claims)
}

/// Compares a presented secret with the real one in time that does not depend on where they differ.
pub fn same_secret(presented: &str, real: &str) -> bool {
    let (a, b) = (presented.as_bytes(), real.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(!x) ^ x;
    }
    diff == 0
}

/// OpenID configuration document for tenant T (like login.microsoftonline.com's v2.0 one).
pub fn openid_configuration(base: &str, tenant: &str) -> Value {
    let base = base.trim_end_matches('/');
    json!({
        "issuer": issuer_for(base, tenant),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "nbf", "tid", "appid", "azp", "oid", "roles",
            "idtyp", "ver", "uti",
        ],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "request_uri_parameter_supported": false,
    })
}

/// The tenant segment of the keys URL that the notification discovery document names.
pub const COMMON_TENANT: &str = "common";

/// The OpenID configuration for notification signing.
pub fn notification_openid_configuration(base: &str, issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/notifications/v1/.well-known/keys", base.trim_end_matches('/')),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use TokenError::*;
    use std::sync::OnceLock;

    const BASE: &str = "http://127.0.0.1:8080";
    const TENANT: &str = "tenant-1";
    const APP: &str = "app-1";
    const BOT_ISS: &str = "https://api.botframework.com";
    const NOW: u64 = 1_700_000_000;

    /// Generates a key in a fresh temp dir and loads it back from disk.
    fn generate() -> (SigningKey, SigningKey, PathBuf) {
        let dir = std::env::temp_dir().join(format!("sb-identity-{}", uuid::Uuid::new_v4()));
        let first = SigningKey::load_or_generate(&dir).unwrap();
        (first, SigningKey::load_or_generate(&dir).unwrap(), dir)
    }
    fn keys() -> &'static (SigningKey, SigningKey, PathBuf) {
        static K: OnceLock<(SigningKey, SigningKey, PathBuf)> = OnceLock::new();
        K.get_or_init(generate)
    }
    fn key() -> &'static SigningKey {
        &keys().0
    }
    fn other_key() -> &'static SigningKey {
        static K: OnceLock<(SigningKey, SigningKey, PathBuf)> = OnceLock::new();
        &K.get_or_init(generate).0
    }
    fn access_claims() -> Value {
        let (_, claims) = issue_access_token(key(), BASE, TENANT, APP, &[], NOW).unwrap();
        serde_json::to_value(claims).unwrap()
    }
    fn validate(token: &str) -> Result<AccessClaims, TokenError> {
        validate_access_token(key(), BASE, token, NOW)
    }
    fn refused(token: &str) -> TokenError {
        validate(token).unwrap_err()
    }
    fn with(field: &str, value: Value) -> String {
        let mut claims = access_claims();
        claims[field] = value;
        key().sign(&claims).unwrap()
    }

    #[test]
    fn access_token_round_trip() {
        let roles = vec!["Calls.AccessMedia.All".to_string()];
        let (token, claims) = issue_access_token(key(), BASE, TENANT, APP, &roles, NOW).unwrap();
        assert_eq!(claims.iss, "http://127.0.0.1:8080/tenant-1/v2.0");
        assert_eq!((claims.azp.as_str(), claims.idtyp.as_str()), (APP, "app"));
        assert_eq!(claims.exp, NOW + TOKEN_LIFETIME_S);
        assert_eq!(validate(&token), Ok(claims.clone()));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key().kid()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        // Within leeway at both ends.
        assert!(validate_access_token(key(), BASE, &token, NOW - 60).is_ok());
        assert!(validate_access_token(key(), BASE, &token, claims.exp + 60).is_ok());
        for aud in [GRAPH_APP_ID, "https://graph.microsoft.com/"] {
            assert!(validate(&with("aud", json!(aud))).is_ok());
        }
    }

    #[test]
    fn notification_token_round_trip() {
        let token = issue_notification_token(key(), BOT_ISS, APP, TENANT, NOW).unwrap();
        let check = |jwks: &Value, iss, app, token: &str| validate_notification_token(jwks, iss, app, token, NOW);
        let claims = check(&key().jwks(), BOT_ISS, APP, &token).unwrap();
        assert_eq!((claims.tid.as_str(), claims.aud.as_str()), (TENANT, APP));
        assert_eq!(claims.exp, NOW + NOTIFICATION_TOKEN_LIFETIME_S);
        let jwks = key().jwks();
        assert_eq!(check(&jwks, BOT_ISS, "x", &token), Err(WrongAudience(APP.into())));
        assert_eq!(check(&jwks, "x", APP, &token), Err(WrongIssuer(BOT_ISS.into())));
        let kid = key().kid().to_string();
        assert_eq!(check(&other_key().jwks(), BOT_ISS, APP, &token), Err(UnknownKey(kid)));
        let no_tid = json!({"aud": APP, "iss": BOT_ISS, "iat": NOW, "nbf": NOW, "exp": NOW});
        let no_tid = key().sign(&no_tid).unwrap();
        assert_eq!(check(&jwks, BOT_ISS, APP, &no_tid), Err(MissingClaim("tid")));
    }

    #[test]
    fn key_is_persisted() {
        let (first, second, dir) = keys();
        assert_eq!((first.kid(), first.kid().len()), (second.kid(), 16));
        assert_eq!(first.jwks(), second.jwks());
        assert_eq!(first.jwks()["keys"][0]["kty"], json!("RSA"));
        let (token, _) = issue_access_token(first, BASE, TENANT, APP, &[], NOW).unwrap();
        assert!(validate_access_token(second, BASE, &token, NOW).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.join(KEY_FILE)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        assert_ne!(first.kid(), other_key().kid());
    }

    #[test]
    fn refusals() {
        assert_eq!(refused(&with("exp", json!(NOW - 61))), Expired);
        assert_eq!(refused(&with("nbf", json!(NOW + 61))), NotYetValid);
        assert_eq!(refused(&with("aud", json!("x"))), WrongAudience("x".into()));
        let res = refused(&with("tid", json!("other")));
        assert_eq!(res, WrongIssuer(issuer_for(BASE, TENANT)));
        let mut no_tid = access_claims();
        no_tid.as_object_mut().unwrap().remove("tid");
        assert_eq!(refused(&key().sign(&no_tid).unwrap()), MissingClaim("tid"));

        // Signed by another key: unknown kid, or our kid with a wrong signature.
        let (foreign, _) = issue_access_token(other_key(), BASE, TENANT, APP, &[], NOW).unwrap();
        assert_eq!(refused(&foreign), UnknownKey(other_key().kid().into()));
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key().kid().to_string());
        let forged = jsonwebtoken::encode(&header, &access_claims(), &other_key().encoding);
        assert_eq!(refused(&forged.unwrap()), BadSignature);

        // Tampered payload.
        let token = with("ver", json!("2.0"));
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = access_claims();
        claims["roles"] = json!(["Everything.All"]);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(refused(&format!("{}.{payload}.{}", parts[0], parts[2])), BadSignature);

        // Garbage, alg none, HS256.
        assert!(matches!(refused("not a token"), Malformed(_)));
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(matches!(refused(&format!("{none_header}.{}.", parts[1])), Malformed(_)));
        header.alg = Algorithm::HS256;
        let hs = jsonwebtoken::encode(&header, &access_claims(), &EncodingKey::from_secret(b"k"));
        assert!(matches!(refused(&hs.unwrap()), Malformed(_)));
        assert_eq!(Expired.to_string(), "the token has expired");
    }

    #[test]
    fn openid_documents() {
        let doc = openid_configuration(BASE, TENANT);
        assert_eq!(doc["issuer"], json!(issuer_for(BASE, TENANT)));
        let url = "http://127.0.0.1:8080/tenant-1/discovery/v2.0/keys";
        assert_eq!(doc["jwks_uri"], json!(url));
        assert_eq!(doc["request_uri_parameter_supported"], json!(false));
        let doc = notification_openid_configuration(BASE, BOT_ISS);
        assert_eq!(doc["issuer"], json!(BOT_ISS));
        let url = "http://127.0.0.1:8080/notifications/v1/.well-known/keys";
        assert_eq!(doc["jwks_uri"], json!(url));
    }
}
