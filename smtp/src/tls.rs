//! TLS for the SMTP client (rustls), with Postfix's security levels:
//!
//! * `none` — never STARTTLS;
//! * `may` (the default) — opportunistic: STARTTLS when offered, no certificate check
//!   (as Postfix's `may`: encryption against passive listeners; an active attacker can
//!   strip it, which is why it is the default only for MX delivery);
//! * `encrypt` — STARTTLS is required, the certificate is not checked;
//! * `verify` — STARTTLS is required and the certificate must chain to a trusted root
//!   (the system store, rustls-native-certs) and match the host name.
//!
//! The level comes from `smtp_tls_security_level`, or per destination from
//! `smtp_tls_policy_maps` (a table `domain  level`).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// A TLS security level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// No TLS.
    None,
    /// Opportunistic.
    May,
    /// Required, unauthenticated.
    Encrypt,
    /// Required and verified.
    Verify,
}

impl Level {
    /// Parses a level name.
    pub fn parse(s: &str) -> Result<Level, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Level::None),
            "may" => Ok(Level::May),
            "encrypt" => Ok(Level::Encrypt),
            "verify" | "secure" => Ok(Level::Verify),
            other => Err(format!(
                "unknown TLS security level {other:?} (none, may, encrypt, verify)"
            )),
        }
    }

    /// Whether the delivery must fail rather than go out in the clear.
    pub fn required(self) -> bool {
        matches!(self, Level::Encrypt | Level::Verify)
    }
}

/// The two client configurations, built once per process.
#[derive(Clone)]
pub struct Configs {
    /// For `may` and `encrypt`: any certificate.
    pub unverified: Arc<ClientConfig>,
    /// For `verify`.
    pub verified: Arc<ClientConfig>,
}

impl Configs {
    /// Builds both; the verified one trusts the system's root store.
    pub fn new() -> Result<Configs, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let verified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Configs {
            unverified: Arc::new(unverified),
            verified: Arc::new(verified),
        })
    }

    /// The configuration for `level`.
    pub fn for_level(&self, level: Level) -> Arc<ClientConfig> {
        if level == Level::Verify {
            self.verified.clone()
        } else {
            self.unverified.clone()
        }
    }
}

/// Accepts any certificate but still checks the handshake signatures, so the session is
/// encrypted to whoever holds the key the server presented.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
