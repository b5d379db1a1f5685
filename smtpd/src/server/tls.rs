//! Loading the server certificate and key (PEM) into a rustls configuration, and naming
//! the negotiated session for the `Received:` header.

use crate::protocol::TlsInfo;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Reads `cert` and `key` and builds the server configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("smtpd_tls_cert_file {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("smtpd_tls_cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("smtpd_tls_cert_file {}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("smtpd_tls_key_file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("smtpd_tls_cert_file/smtpd_tls_key_file: {e}"))?;
    Ok(Arc::new(config))
}

/// The protocol version and cipher of an established session, in Postfix's wording.
pub fn info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let name = format!("{:?}", s.suite());
            name.strip_prefix("TLS13_").map(|r| format!("TLS_{r}")).unwrap_or(name)
        })
        .unwrap_or_else(|| "unknown".into());
    TlsInfo { version, cipher }
}
