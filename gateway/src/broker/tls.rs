//! The broker's TLS listener configuration: rustls with the ring provider (the binary's one TLS
//! stack), the certificate chain and key from PEM files, and optionally a CA whose client
//! certificates are required.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("broker.{key} {}: {e}", path.display()))
}

fn certs(
    key: &str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = read(key, path)?;
    let list: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("broker.{key} {}: {e}", path.display()))?;
    if list.is_empty() {
        return Err(format!(
            "broker.{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(list)
}

/// The acceptor for `broker.tls_listen`. Every problem names the key and the file.
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor, String> {
    let chain = certs("tls_cert_file", cert)?;
    let pem = read("tls_key_file", key)?;
    let private = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("broker.tls_key_file {}: {e}", key.display()))?
        .ok_or_else(|| {
            format!(
                "broker.tls_key_file {}: no PEM private key in it",
                key.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("broker TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("tls_client_ca_file", ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("broker.tls_client_ca_file {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("broker.tls_client_ca_file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, private)
        .map_err(|e| format!("broker.tls_cert_file/tls_key_file: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
