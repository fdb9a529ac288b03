//! JWS compact serialization (RFC 7515) with `alg: EdDSA` over Ed25519 (RFC 8037), verified
//! with `ed25519-dalek` directly, and the platform's public key read from a PEM (SPKI) or a JWK.
//!
//! Pure: no I/O, no clock. The checks, in this order, each with its refusal:
//! 1. three dot-separated parts, else [`Reason::Unsigned`] (not a JWS);
//! 2. the header is base64url (no padding) of a JSON object, else [`Reason::Malformed`];
//! 3. its `alg` is exactly `EdDSA`: `none` (or no `alg`, or an empty signature) is
//!    [`Reason::Unsigned`], anything else (`HS256`, `RS256`, `ES256`, `Ed25519`…) is
//!    [`Reason::WrongAlg`]; a `crit` header is [`Reason::Malformed`] (we implement no
//!    extension, RFC 7515 §4.1.11); a `kid` that differs from the key's is [`Reason::BadSignature`];
//! 4. the signature (64 bytes, base64url) verifies over the ASCII bytes `header.payload` with
//!    the platform's key (`verify_strict`: no small-order keys, no malleable signatures), else
//!    [`Reason::BadSignature`];
//! 5. only then is the payload decoded (base64url, else [`Reason::Malformed`]).
//!
//! Why not `jsonwebtoken`: its EdDSA support comes with its `rust_crypto` feature, which also
//! pulls the `rsa` crate and its unfixed advisory (RUSTSEC-2023-0071); the compact form is small.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;

use super::Reason;

/// The DER of an Ed25519 SubjectPublicKeyInfo (RFC 8410) before its 32 key bytes:
/// SEQUENCE(42) { SEQUENCE(5) { OID 1.3.101.112 }, BIT STRING(33) 0x00 … }.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER of an Ed25519 PKCS#8 private key (RFC 8410) before its 32 seed bytes (the signer).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM ({0}) nor an Ed25519 JWK")]
    Format(&'static str),
    #[error("not an Ed25519 key (expected the OID 1.3.101.112 and 32 key bytes)")]
    NotEd25519,
    #[error("the key bytes are not a valid Ed25519 point")]
    Invalid,
    #[error("JWK: {0}")]
    Jwk(String),
}

/// The platform's public key, with the `kid` its JWK named (if any).
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub key: VerifyingKey,
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: String,
    x: String,
    #[serde(default)]
    d: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// The base64 body of a PEM block with this label.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or(KeyError::Format("no BEGIN line"))? + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or(KeyError::Format("no END line"))?
        + start;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|_| KeyError::Format("bad base64"))
}

fn key_bytes(der: &[u8], prefix: &[u8]) -> Result<[u8; 32], KeyError> {
    der.strip_prefix(prefix)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or(KeyError::NotEd25519)
}

fn jwk(text: &str) -> Result<Jwk, KeyError> {
    let j: Jwk = serde_json::from_str(text).map_err(|e| KeyError::Jwk(e.to_string()))?;
    if j.kty != "OKP" || j.crv != "Ed25519" {
        return Err(KeyError::Jwk(format!(
            "kty {:?} crv {:?}: expected OKP and Ed25519",
            j.kty, j.crv
        )));
    }
    Ok(j)
}

fn b64_32(s: &str, what: &str) -> Result<[u8; 32], KeyError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| KeyError::Jwk(format!("{what}: expected 32 bytes of base64url")))
}

impl PublicKey {
    /// A `-----BEGIN PUBLIC KEY-----` PEM (SPKI) or a JWK `{"kty":"OKP","crv":"Ed25519","x":…}`.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        let (bytes, kid) = if text.starts_with('{') {
            let j = jwk(text)?;
            (b64_32(&j.x, "x")?, j.kid)
        } else {
            (
                key_bytes(&pem_body(text, "PUBLIC KEY")?, &SPKI_PREFIX)?,
                None,
            )
        };
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Invalid)?;
        Ok(PublicKey { key, kid })
    }
}

/// A private key for the development signer (`gkgw command sign`): a PKCS#8 PEM
/// (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey -algorithm ed25519` and Python's
/// `cryptography` write) or a JWK with `d`.
pub fn parse_signing_key(text: &str) -> Result<ed25519_dalek::SigningKey, KeyError> {
    let text = text.trim();
    let seed = if text.starts_with('{') {
        let j = jwk(text)?;
        b64_32(
            j.d.as_deref()
                .ok_or_else(|| KeyError::Jwk("no d: a public key".into()))?,
            "d",
        )?
    } else {
        key_bytes(&pem_body(text, "PRIVATE KEY")?, &PKCS8_PREFIX)?
    };
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// The public key of a signing key as a PEM (SPKI), for the platform key file.
pub fn public_pem(key: &ed25519_dalek::SigningKey) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.verifying_key().as_bytes());
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    )
}

/// A signing key as a PKCS#8 PEM (what Python's `cryptography` and openssl read).
pub fn private_pem(key: &ed25519_dalek::SigningKey) -> String {
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(der)
    )
}

/// Signs `payload` as a compact JWS with `{"alg":"EdDSA"}` (and `kid` if given).
pub fn sign(key: &ed25519_dalek::SigningKey, kid: Option<&str>, payload: &[u8]) -> String {
    use ed25519_dalek::Signer as _;
    let header = match kid {
        Some(k) => serde_json::json!({"alg": "EdDSA", "kid": k}).to_string(),
        None => r#"{"alg":"EdDSA"}"#.to_owned(),
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// A JWS whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub kid: Option<String>,
    pub payload: Vec<u8>,
}

/// Verifies a compact JWS with `key` (the order of the checks is the module doc's).
pub fn verify(compact: &str, key: &PublicKey) -> Result<Verified, Reason> {
    let compact = compact.trim();
    let mut parts = compact.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Unsigned);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Reason::Malformed)?;
    match header.alg.as_deref() {
        None | Some("none") => return Err(Reason::Unsigned),
        Some("EdDSA") => {}
        Some(_) => return Err(Reason::WrongAlg),
    }
    if s.is_empty() {
        return Err(Reason::Unsigned);
    }
    if header.crit.is_some() {
        return Err(Reason::Malformed);
    }
    if let (Some(want), Some(got)) = (&key.kid, &header.kid) {
        if want != got {
            return Err(Reason::BadSignature);
        }
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or(Reason::BadSignature)?;
    let signed = &compact[..h.len() + 1 + p.len()];
    key.key
        .verify_strict(signed.as_bytes(), &sig)
        .map_err(|_| Reason::BadSignature)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| Reason::Malformed)?;
    Ok(Verified {
        kid: header.kid,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 appendix A.1 (the key) and A.4 (the JWS of "Example of Ed25519 signing").
    const A1_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const A1_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const A4_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    fn rfc_key() -> PublicKey {
        PublicKey::parse(&format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{A1_X}"}}"#))
            .expect("RFC 8037 A.1 key")
    }

    fn other_key() -> PublicKey {
        let k = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        PublicKey::parse(&public_pem(&k)).expect("pem")
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn check(jws: &str, key: &PublicKey, expected: Result<&str, Reason>) {
        assert_eq!(
            verify(jws, key).map(|v| String::from_utf8(v.payload).expect("utf-8")),
            expected.map(str::to_owned),
            "{jws}"
        );
    }

    #[test]
    fn the_rfc_8037_vector_verifies() {
        check(A4_JWS, &rfc_key(), Ok("Example of Ed25519 signing"));
        // Ed25519 is deterministic: our signer gives the RFC's signature with the RFC's key.
        let d = parse_signing_key(&format!(
            r#"{{"kty":"OKP","crv":"Ed25519","d":"{A1_D}","x":"{A1_X}"}}"#
        ))
        .expect("A.1 private key");
        assert_eq!(sign(&d, None, b"Example of Ed25519 signing"), A4_JWS);
        // The same key as a PEM verifies too.
        let pem = PublicKey::parse(&public_pem(&d)).expect("pem");
        check(A4_JWS, &pem, Ok("Example of Ed25519 signing"));
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        let key = rfc_key();
        let [h, p, s]: [&str; 3] = A4_JWS
            .split('.')
            .collect::<Vec<_>>()
            .try_into()
            .expect("3 parts");
        let tampered = format!("{h}.{}.{s}", b64("Example of Ed25519 signinG"));
        check(&tampered, &key, Err(Reason::BadSignature));
        check(A4_JWS, &other_key(), Err(Reason::BadSignature));
        let none = format!("{}.{p}.", b64(r#"{"alg":"none"}"#));
        check(&none, &key, Err(Reason::Unsigned));
        let none_sig = format!("{}.{p}.{s}", b64(r#"{"alg":"none"}"#));
        check(&none_sig, &key, Err(Reason::Unsigned));
        let no_alg = format!("{}.{p}.{s}", b64(r#"{"typ":"JWT"}"#));
        check(&no_alg, &key, Err(Reason::Unsigned));
        let empty_sig = format!("{h}.{p}.");
        check(&empty_sig, &key, Err(Reason::Unsigned));
        let hs = format!("{}.{p}.{s}", b64(r#"{"alg":"HS256","typ":"JWT"}"#));
        check(&hs, &key, Err(Reason::WrongAlg));
        let lower = format!("{}.{p}.{s}", b64(r#"{"alg":"eddsa"}"#));
        check(&lower, &key, Err(Reason::WrongAlg));
        check(&format!("{h}.{p}"), &key, Err(Reason::Unsigned));
        check(&format!("{A4_JWS}.x"), &key, Err(Reason::Unsigned));
        check("not a jws", &key, Err(Reason::Unsigned));
        check("", &key, Err(Reason::Unsigned));
        check(&format!("{h}!.{p}.{s}"), &key, Err(Reason::Malformed));
        check(
            &format!("{}.{p}.{s}", b64("[1]")),
            &key,
            Err(Reason::Malformed),
        );
        check(&format!("{h}.{p}.{s}="), &key, Err(Reason::BadSignature));
        check(
            &format!("{h}.{p}.{}", &s[..40]),
            &key,
            Err(Reason::BadSignature),
        );
        let crit = format!(
            "{}.{p}.{s}",
            b64(r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#)
        );
        check(&crit, &key, Err(Reason::Malformed));
        // A payload that is not base64url but carries a valid signature: malformed.
        let k = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let input = format!("{h}.!!");
        use ed25519_dalek::Signer as _;
        let sig = URL_SAFE_NO_PAD.encode(k.sign(input.as_bytes()).to_bytes());
        check(
            &format!("{input}.{sig}"),
            &other_key(),
            Err(Reason::Malformed),
        );
    }

    #[test]
    fn a_kid_must_match_the_keys() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let x = URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes());
        let key = PublicKey::parse(&format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"p1"}}"#
        ))
        .expect("jwk");
        check(&sign(&k, Some("p1"), b"{}"), &key, Ok("{}"));
        check(&sign(&k, None, b"{}"), &key, Ok("{}"));
        check(
            &sign(&k, Some("p2"), b"{}"),
            &key,
            Err(Reason::BadSignature),
        );
    }

    #[test]
    fn key_files() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let pem = public_pem(&k);
        assert_eq!(PublicKey::parse(&pem).expect("pem").key, k.verifying_key());
        assert!(matches!(
            PublicKey::parse(
                "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----"
            ),
            Err(KeyError::NotEd25519)
        ));
        // An RSA/P-256 SPKI has another prefix.
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----";
        assert!(PublicKey::parse(p256).is_err());
        assert!(matches!(
            PublicKey::parse(r#"{"kty":"EC","crv":"P-256","x":"AA"}"#),
            Err(KeyError::Jwk(_))
        ));
        assert!(matches!(
            PublicKey::parse("hello"),
            Err(KeyError::Format(_))
        ));
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&[3; 32]);
        let private = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der)
        );
        assert_eq!(
            parse_signing_key(&private).expect("pkcs8").verifying_key(),
            k.verifying_key()
        );
    }
}
