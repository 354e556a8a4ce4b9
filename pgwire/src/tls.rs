//! TLS for server connections with libpq's `sslmode` semantics on rustls, so that a
//! connection string that works with `psql` works here with the same security:
//!
//! - `allow`/`prefer`/`require` accept any server certificate (libpq does too), unless a root
//!   certificate file exists (`sslrootcert`, or `~/.postgresql/root.crt`): then the chain is
//!   verified as with `verify-ca`.
//! - `verify-ca` checks the chain against `sslrootcert`, not the host name.
//! - `verify-full` also checks the host name against the certificate's subjectAltName, or its
//!   Common Name when it has no DNS/IP subjectAltName (libpq's rule; PostgreSQL's own docs
//!   create such certificates).
//! - A self-signed server certificate listed in `sslrootcert` is trusted as itself, as OpenSSL
//!   does (webpki alone would refuse a CA certificate used as a server certificate).
//! - `sslrootcert=system` uses the operating system's roots.
//!
//! It also computes the `tls-server-end-point` channel binding for SCRAM-SHA-256-PLUS.
//!
//! The crypto provider is aws-lc-rs: the workspace's S3 client already builds it, so TLS here
//! adds no second crypto library to the build.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::conninfo::{ConnParams, SslMode};
use crate::error::{PgWireError, Result};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Any certificate (libpq's `require` without a root file).
    None,
    /// Chain to a trusted root.
    Chain,
    /// Chain and host name.
    Full,
}

/// A rustls client configuration for one connection's parameters.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The configuration to hand to tokio-rustls.
    pub config: Arc<ClientConfig>,
    /// What the configuration checks.
    pub verification: Verification,
    /// Where the trusted roots come from, for error messages.
    pub roots: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn cfg_err(msg: impl Into<String>) -> PgWireError {
    PgWireError::Config(msg.into())
}

fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| cfg_err(format!("could not read {what} {}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| cfg_err(format!("could not parse {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(cfg_err(format!("{what} {} contains no PEM certificate", path.display())));
    }
    Ok(certs)
}

impl TlsSetup {
    /// Builds the configuration for `params`, or `None` for `sslmode=disable`. Files named by
    /// the parameters (`sslrootcert`, `sslcert`, `sslkey`) are read here, so a wrong path fails
    /// before any connection attempt.
    pub fn new(params: &ConnParams) -> Result<Option<TlsSetup>> {
        if params.sslmode == SslMode::Disable {
            return Ok(None);
        }
        let provider = provider();
        let default_root = params.ssl_dir.as_ref().map(|d| d.join("root.crt"));
        let root_file: Option<PathBuf> = match params.sslrootcert.as_deref() {
            Some("system") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => default_root.clone().filter(|p| p.exists()),
        };
        let system_roots = params.sslrootcert.as_deref() == Some("system");
        let verification = match params.sslmode {
            SslMode::VerifyFull => Verification::Full,
            SslMode::VerifyCa => Verification::Chain,
            _ if root_file.is_some() => Verification::Chain,
            _ => Verification::None,
        };
        if verification != Verification::None && root_file.is_none() && !system_roots {
            let shown =
                default_root.map(|p| p.display().to_string()).unwrap_or_else(|| "~/.postgresql/root.crt".into());
            return Err(cfg_err(format!(
                "root certificate file \"{shown}\" does not exist: either provide the file (sslrootcert=...), use the \
                 system's trusted roots (sslrootcert=system), or change sslmode to disable server certificate verification"
            )));
        }

        let verifier: Arc<dyn ServerCertVerifier> = match verification {
            Verification::None => Arc::new(AcceptAnyCert { provider: provider.clone() }),
            Verification::Chain | Verification::Full => {
                let mut roots = RootCertStore::empty();
                let mut anchors = Vec::new();
                if let Some(path) = &root_file {
                    for cert in load_certs(path, "root certificate file")? {
                        roots.add(cert.clone()).map_err(|e| {
                            cfg_err(format!("could not use a certificate of root file {}: {e}", path.display()))
                        })?;
                        anchors.push(cert);
                    }
                } else {
                    let found = rustls_native_certs::load_native_certs();
                    for cert in found.certs {
                        let _ = roots.add(cert);
                    }
                    if roots.is_empty() {
                        return Err(cfg_err("sslrootcert=system, but no trusted root certificates were found"));
                    }
                }
                let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| cfg_err(format!("could not set up certificate verification: {e}")))?;
                Arc::new(PgCertVerifier {
                    inner,
                    anchors,
                    check_host: verification == Verification::Full,
                    provider: provider.clone(),
                })
            }
        };

        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cfg_err(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match Self::client_cert(params)? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| cfg_err(format!("could not use the client certificate (sslcert/sslkey): {e}")))?,
            None => builder.with_no_client_auth(),
        };
        // PostgreSQL 17+ checks the ALPN protocol when the client sends one; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        let roots = match (&root_file, system_roots) {
            (Some(p), _) => format!("root certificate file {}", p.display()),
            (None, true) => "the system's trusted roots (sslrootcert=system)".to_string(),
            (None, false) => "none".to_string(),
        };
        Ok(Some(TlsSetup { config: Arc::new(config), verification, roots }))
    }

    /// The client certificate and key: `sslcert`/`sslkey`, else `~/.postgresql/postgresql.crt`
    /// and `.key` when the certificate file exists.
    fn client_cert(params: &ConnParams) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
        let dir = params.ssl_dir.clone();
        let cert = match &params.sslcert {
            Some(p) => Some(p.clone()),
            None => dir.as_ref().map(|d| d.join("postgresql.crt")).filter(|p| p.exists()),
        };
        let Some(cert) = cert else { return Ok(None) };
        let key =
            params.sslkey.clone().or_else(|| dir.map(|d| d.join("postgresql.key"))).ok_or_else(|| {
                cfg_err(format!("client certificate {} given without a key (sslkey)", cert.display()))
            })?;
        let chain = load_certs(&cert, "client certificate file")?;
        let key = PrivateKeyDer::from_pem_file(&key)
            .map_err(|e| cfg_err(format!("could not load private key file {}: {e}", key.display())))?;
        Ok(Some((chain, key)))
    }
}

/// A handshake failure in words an operator can act on.
pub(crate) fn describe_handshake_error(e: &std::io::Error, setup: &TlsSetup) -> String {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match err {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                format!("the server's certificate is not signed by a trusted root ({})", setup.roots)
            }
            CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => format!(
                "the server's certificate is self-signed (a CA certificate) and not one of the trusted roots ({})",
                setup.roots
            ),
            CertificateError::Other(o) => format!("invalid server certificate: {o}"),
            other => format!("invalid server certificate: {other}"),
        },
        other => other.to_string(),
    }
}

/// The name rustls verifies and sends as SNI: an IP address or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|_| cfg_err(format!("host {host:?} is neither a valid DNS name nor an IP address for TLS")))
}

/// For `require` and weaker: any certificate, but the handshake signatures are still checked,
/// so the peer holds the key of the certificate it presents (needed for channel binding).
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` / `verify-full` with libpq's (OpenSSL's) rules on top of webpki.
#[derive(Debug)]
struct PgCertVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// The certificates of the root file, to accept a pinned self-signed server certificate.
    anchors: Vec<CertificateDer<'static>>,
    check_host: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PgCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        use rustls::Error::InvalidCertificate;
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(v) => Ok(v),
            // The chain is good; only the subjectAltName check failed.
            Err(InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host => Ok(ServerCertVerified::assertion()),
            Err(InvalidCertificate(
                e @ (CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }),
            )) => {
                // libpq falls back to the Common Name when there is no DNS/IP subjectAltName.
                check_host_name(end_entity, server_name).map_err(|_| InvalidCertificate(e))?;
                Ok(ServerCertVerified::assertion())
            }
            Err(InvalidCertificate(_)) if self.anchors.iter().any(|a| a.as_ref() == end_entity.as_ref()) => {
                // The server's certificate is itself a trusted root (self-signed, pinned):
                // OpenSSL accepts that; webpki refuses e.g. a CA certificate as end entity.
                let cert = X509Certificate::from_der(end_entity)
                    .map_err(|_| InvalidCertificate(CertificateError::BadEncoding))?
                    .1;
                let at = x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64)
                    .map_err(|_| rustls::Error::FailedToGetCurrentTime)?;
                if !cert.validity().is_valid_at(at) {
                    return Err(InvalidCertificate(CertificateError::Expired));
                }
                if self.check_host {
                    check_host_name(end_entity, server_name)?;
                }
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's host name rule (`pq_verify_peer_name_matches_certificate`): DNS subjectAltNames
/// (with a leading `*.` wildcard for one label) and IP subjectAltNames; only when there are
/// none, the Common Name.
fn check_host_name(cert: &CertificateDer<'_>, server_name: &ServerName<'_>) -> std::result::Result<(), rustls::Error> {
    let bad = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
    let (_, cert) = X509Certificate::from_der(cert).map_err(|_| bad())?;
    let host = server_name.to_str().to_string();
    let host_ip: Option<std::net::IpAddr> = host.parse().ok();
    let mut presented = Vec::new();
    let mut has_san = false;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    has_san = true;
                    if host_ip.is_none() && dns_matches(dns, &host) {
                        return Ok(());
                    }
                    presented.push(dns.to_string());
                }
                GeneralName::IPAddress(bytes) => {
                    has_san = true;
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        if Some(ip) == host_ip {
                            return Ok(());
                        }
                        presented.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if !has_san {
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                let matches = match host_ip {
                    Some(ip) => cn.parse::<std::net::IpAddr>().ok() == Some(ip),
                    None => dns_matches(cn, &host),
                };
                if matches {
                    return Ok(());
                }
                presented.push(format!("CN={cn}"));
            }
        }
    }
    Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
        expected: server_name.to_owned(),
        presented,
    }))
}

/// Case-insensitive match, `*.example.com` matching exactly one leading label.
fn dns_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// The `tls-server-end-point` channel binding data (RFC 5929): the hash of the server's
/// certificate with the hash of its signature algorithm, SHA-256 for MD5/SHA-1/SHA-224/SHA-256.
/// `None` when the algorithm has no defined hash here (e.g. RSASSA-PSS, Ed25519): then the
/// client does not offer channel binding.
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    Some(match oid.as_str() {
        // md5WithRSA, sha1WithRSA, sha224WithRSA, sha256WithRSA; ecdsa-with-SHA1/224/256; dsa-with-sha1/256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.14"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.1"
        | "1.2.840.10045.4.3.2"
        | "1.2.840.10040.4.3"
        | "2.16.840.1.101.3.4.3.2" => sha2::Sha256::digest(cert_der).to_vec(),
        // sha384WithRSA, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(cert_der).to_vec(),
        // sha512WithRSA, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(cert_der).to_vec(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_wildcards_like_libpq() {
        assert!(dns_matches("localhost", "LOCALHOST"));
        assert!(dns_matches("*.example.com", "db.example.com"));
        assert!(!dns_matches("*.example.com", "a.db.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(!dns_matches("db.example.com", "db.example.org"));
        assert!(dns_matches("db.example.com.", "db.example.com"));
    }

    #[test]
    fn server_names() {
        assert!(matches!(server_name("127.0.0.1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("::1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("db.example.com").unwrap(), ServerName::DnsName(_)));
        assert!(server_name("not a host").is_err());
    }

    #[test]
    fn verify_modes_need_a_root_file() {
        let env = crate::env::FakeEnv::new().user("u").home("/nonexistent-home");
        let p = ConnParams::parse_with_env("sslmode=verify-full", &env).unwrap();
        let e = TlsSetup::new(&p).unwrap_err().to_string();
        assert!(e.contains("root certificate file"), "{e}");
        let p = ConnParams::parse_with_env("sslmode=require", &env).unwrap();
        assert_eq!(TlsSetup::new(&p).unwrap().unwrap().verification, Verification::None);
        let p = ConnParams::parse_with_env("sslmode=disable", &env).unwrap();
        assert!(TlsSetup::new(&p).unwrap().is_none());
        let p = ConnParams::parse_with_env("sslmode=require sslrootcert=/nonexistent/root.crt", &env).unwrap();
        let e = TlsSetup::new(&p).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/root.crt"), "{e}");
    }
}
