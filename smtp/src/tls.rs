//! TLS for the SMTP client (rustls), with Postfix's security levels:
//!
//! * `none` — never STARTTLS;
//! * `may` (the default) — opportunistic: STARTTLS when offered, no certificate check
//!   (as Postfix's `may`: encryption against passive listeners; an active attacker can
//!   strip it, which is why it is the default only for MX delivery);
//! * `encrypt` — STARTTLS is required, the certificate is not checked;
//! * `verify` — STARTTLS is required, the certificate must chain to a trusted root (the
//!   system store, rustls-native-certs, plus `smtp_tls_CAfile`) and name one of the
//!   `match=` names (default `hostname`: the MX host name or the nexthop host);
//! * `secure` — as `verify`, with the default `match=nexthop:dot-nexthop`.
//!
//! `match=` names (colon-separated, as in Postfix): `hostname` (the host connected to),
//! `nexthop` (the nexthop domain or host), `dot-nexthop` (any subdomain of the nexthop),
//! or a literal name (`.example.com`: any subdomain of example.com). A subdomain pattern
//! is checked against the host connected to: the certificate must name that host, and the
//! host must lie under the pattern's domain — stricter than Postfix, which accepts a
//! certificate naming any subdomain.
//!
//! The level comes from `smtp_tls_security_level`, or per nexthop from
//! `smtp_tls_policy_maps` ([`crate::policy`]).

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::path::Path;
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
    /// Required and verified against the `match=` names (default: the host name).
    Verify,
    /// Required and verified against the `match=` names (default: the nexthop).
    Secure,
}

impl From<postern_lib::config::SmtpTlsLevel> for Level {
    /// `smtp_tls_security_level`, checked when main.toml was loaded.
    fn from(l: postern_lib::config::SmtpTlsLevel) -> Level {
        use postern_lib::config::SmtpTlsLevel as L;
        match l {
            L::None => Level::None,
            L::May => Level::May,
            L::Encrypt => Level::Encrypt,
            L::Verify => Level::Verify,
            L::Secure => Level::Secure,
        }
    }
}

impl Level {
    /// Parses a level name.
    pub fn parse(s: &str) -> Result<Level, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Level::None),
            "may" => Ok(Level::May),
            "encrypt" => Ok(Level::Encrypt),
            "verify" => Ok(Level::Verify),
            "secure" => Ok(Level::Secure),
            other => Err(format!(
                "unknown TLS security level {other:?} (none, may, encrypt, verify, secure)"
            )),
        }
    }

    /// Whether the delivery must fail rather than go out in the clear.
    pub fn required(self) -> bool {
        matches!(self, Level::Encrypt | Level::Verify | Level::Secure)
    }

    /// Whether the server's certificate is checked.
    pub fn verified(self) -> bool {
        matches!(self, Level::Verify | Level::Secure)
    }
}

/// The TLS policy for one nexthop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The level.
    pub level: Level,
    /// The `match=` names; empty: the level's default.
    pub matches: Vec<String>,
}

impl Policy {
    /// A policy with the level's default names.
    pub fn level(level: Level) -> Policy {
        Policy {
            level,
            matches: Vec::new(),
        }
    }

    /// The names a certificate may carry when connected to `host` for `nexthop` (the
    /// nexthop's domain or host name, lower-case).
    pub fn names(&self, host: &str, nexthop: &str) -> Vec<String> {
        let default: &[&str] = match self.level {
            Level::Secure => &["nexthop", "dot-nexthop"],
            _ => &["hostname"],
        };
        let wanted: Vec<&str> = if self.matches.is_empty() {
            default.to_vec()
        } else {
            self.matches.iter().map(String::as_str).collect()
        };
        let host = host.to_ascii_lowercase();
        let under = |domain: &str| host.ends_with(&format!(".{}", domain.trim_start_matches('.')));
        let mut out = Vec::new();
        for w in wanted {
            let name = match w {
                "hostname" => Some(host.clone()),
                "nexthop" => Some(nexthop.to_string()),
                "dot-nexthop" => under(nexthop).then(|| host.clone()),
                literal if literal.starts_with('.') => under(literal).then(|| host.clone()),
                literal => Some(literal.to_ascii_lowercase()),
            };
            if let Some(n) = name
                && !out.contains(&n)
            {
                out.push(n);
            }
        }
        out
    }
}

/// The client configurations, built once per process.
#[derive(Clone)]
pub struct Configs {
    /// For `may` and `encrypt`: any certificate.
    pub unverified: Arc<ClientConfig>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Chain verification; `None` when there is no trust anchor at all.
    webpki: Option<Arc<WebPkiServerVerifier>>,
}

impl Configs {
    /// Builds them; verification trusts the system's root store and the certificates in
    /// `ca_file` (PEM), when given.
    pub fn new(ca_file: Option<&Path>) -> Result<Configs, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(f) = ca_file {
            let what = |e: &dyn std::fmt::Display| format!("smtp_tls_CAfile {}: {e}", f.display());
            let mut n = 0;
            for cert in CertificateDer::pem_file_iter(f).map_err(|e| what(&e))? {
                roots.add(cert.map_err(|e| what(&e))?).map_err(|e| what(&e))?;
                n += 1;
            }
            if n == 0 {
                return Err(what(&"no certificate in the file"));
            }
        }
        let webpki = if roots.is_empty() {
            None
        } else {
            let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("TLS trust anchors: {e}"))?;
            Some(v)
        };
        let unverified = client_config(&provider, &webpki, None)?;
        Ok(Configs {
            unverified,
            provider,
            webpki,
        })
    }

    /// The configuration for `policy` when connected to `host` for `nexthop`.
    pub fn for_policy(&self, policy: &Policy, host: &str, nexthop: &str) -> Result<Arc<ClientConfig>, String> {
        if !policy.level.verified() {
            return Ok(self.unverified.clone());
        }
        client_config(&self.provider, &self.webpki, Some(policy.names(host, nexthop)))
    }
}

/// A client configuration checking certificates against `names` (`None`: not at all).
fn client_config(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    webpki: &Option<Arc<WebPkiServerVerifier>>,
    names: Option<Vec<String>>,
) -> Result<Arc<ClientConfig>, String> {
    let checker = Checker {
        provider: provider.clone(),
        webpki: webpki.clone(),
        names,
    };
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(checker))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate check: none at all (`names` is `None`: `may`, `encrypt`), or webpki's
/// chain verification accepted when the certificate is valid for one of `names`. The
/// handshake signatures are always checked, so the session is encrypted to whoever holds
/// the key the server presented.
#[derive(Debug)]
struct Checker {
    provider: Arc<rustls::crypto::CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    names: Option<Vec<String>>,
}

impl ServerCertVerifier for Checker {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(names) = &self.names else {
            return Ok(ServerCertVerified::assertion());
        };
        let Some(webpki) = &self.webpki else {
            return Err(rustls::Error::General(
                "no trust anchors (the system has none and smtp_tls_CAfile is empty)".into(),
            ));
        };
        let mut last = rustls::Error::General("no name to match the certificate against".into());
        for n in names {
            let Ok(name) = ServerName::try_from(n.as_str()) else {
                continue;
            };
            match webpki.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(level: Level, m: &[&str]) -> Policy {
        Policy {
            level,
            matches: m.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn match_names_per_level() {
        assert_eq!(
            p(Level::Verify, &[]).names("MX.example.com", "example.com"),
            ["mx.example.com"]
        );
        assert_eq!(
            p(Level::Secure, &[]).names("mx.example.com", "example.com"),
            ["example.com", "mx.example.com"]
        );
        assert_eq!(
            p(Level::Secure, &[]).names("mx.other.net", "example.com"),
            ["example.com"]
        );
        assert_eq!(
            p(Level::Verify, &["hostname", "relay.test", ".example.com"]).names("a.example.com", "x"),
            ["a.example.com", "relay.test"]
        );
        assert!(Level::parse("dane").is_err());
        assert!(Level::parse("Secure").unwrap().verified());
        assert!(!Level::May.required() && Level::Encrypt.required() && !Level::Encrypt.verified());
    }
}
