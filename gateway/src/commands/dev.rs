//! DEVELOPMENT AND TEST TOOLS: `gkgw command keygen` and `gkgw command sign`, so the demo and
//! the tests can play the platform. In production only the platform holds the private key
//! and signs (docs/uplink.md, "Commands"); the gateway only verifies.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::jws;

pub struct SignArgs {
    pub key: PathBuf,
    pub meter: String,
    pub kind: String,
    /// A JSON object.
    pub args: String,
    pub id: Option<String>,
    /// Seconds from now to `exp`.
    pub ttl: i64,
    pub kid: Option<String>,
}

/// Signs a command payload built from `a` with the private key file; `iat` is now.
pub fn sign_file(a: &SignArgs) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&a.key)
        .with_context(|| format!("cannot read {}", a.key.display()))?;
    let key = jws::parse_signing_key(&text)
        .with_context(|| format!("{}: not an Ed25519 private key", a.key.display()))?;
    let args: serde_json::Value = serde_json::from_str(&a.args).context("--args: not JSON")?;
    let now_ns = crate::clock::wall_ns();
    let now = now_ns.div_euclid(1_000_000_000);
    let payload = serde_json::json!({
        "id": a.id.clone().unwrap_or_else(|| format!("cmd-{now_ns}")),
        "meter": a.meter,
        "kind": a.kind,
        "args": args,
        "iat": now,
        "exp": now + a.ttl,
    });
    Ok(jws::sign(
        &key,
        a.kid.as_deref(),
        payload.to_string().as_bytes(),
    ))
}

/// Writes a new key pair: the private key as PKCS#8 PEM (mode 0600), the public one as SPKI PEM.
pub fn keygen(private: &Path, public: &Path) -> anyhow::Result<()> {
    use rand::RngCore as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private)
        .with_context(|| format!("cannot create {}", private.display()))?;
    f.write_all(jws::private_pem(&key).as_bytes())?;
    std::fs::write(public, jws::public_pem(&key))
        .with_context(|| format!("cannot write {}", public.display()))?;
    Ok(())
}
