//! The TLS policy for `sslmode`, built on rustls with the ring provider.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use super::{Host, PgConfig, SslMode};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read sslrootcert {path}: {source}; point sslrootcert at a PEM file of CA certificates"
    )]
    ReadRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sslrootcert {path} holds no usable PEM certificate: {reason}")]
    BadRoot { path: PathBuf, reason: String },
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{host:?} is not a valid TLS server name for sslmode=verify-full")]
    ServerName { host: String },
    #[error(
        "cannot read the client certificate {what} {path}: {source}; point sslcert and sslkey at PEM files"
    )]
    ReadClient {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the client certificate {what} {path} is not usable: {reason}")]
    BadClient {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("sslcert is set but sslkey is not (or the other way round): give both")]
    ClientPair,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls client configuration for the connection's `sslmode`: `verify-full` verifies the chain
/// (against `sslrootcert`, else the Mozilla roots) and the host name, `verify-ca` only the chain;
/// `prefer` and `require` encrypt without verifying, as libpq does when no root certificate is
/// configured. `sslcert` and `sslkey` are presented when the server asks for a certificate.
pub fn client_config(cfg: &PgConfig) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if cfg.sslmode.verifies() {
        let roots = Arc::new(root_store(cfg)?);
        if cfg.sslmode == SslMode::VerifyFull {
            builder.with_root_certificates(roots)
        } else {
            let inner =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        }
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            )))
    };
    match client_identity(cfg)? {
        Some((certs, key)) => Ok(builder.with_client_auth_cert(certs, key)?),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The certificate chain and key of `sslcert`/`sslkey`, when both are set.
fn client_identity(
    cfg: &PgConfig,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    let (cert_path, key_path) = match (&cfg.sslcert, &cfg.sslkey) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(TlsError::ClientPair),
    };
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsError::ReadClient {
            what,
            path: path.clone(),
            source,
        })
    };
    let bad = |what: &'static str, path: &PathBuf, reason: String| TlsError::BadClient {
        what,
        path: path.clone(),
        reason,
    };
    let pem = read("certificate", cert_path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", cert_path, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("certificate", cert_path, "no CERTIFICATE block".into()));
    }
    let pem = read("key", key_path)?;
    let key =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad("key", key_path, e.to_string()))?;
    Ok(Some((certs, key)))
}

/// The CA certificates a verifying `sslmode` trusts: `sslrootcert`, else the Mozilla roots.
fn root_store(cfg: &PgConfig) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.sslrootcert {
        Some(path) if path.as_os_str() != "system" => {
            let pem = std::fs::read(path).map_err(|source| TlsError::ReadRoot {
                path: path.clone(),
                source,
            })?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> = cert.map_err(|e| TlsError::BadRoot {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| TlsError::BadRoot {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(TlsError::BadRoot {
                    path: path.clone(),
                    reason: "no CERTIFICATE block".to_owned(),
                });
            }
        }
        _ => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// The name the server certificate must carry (used for SNI too).
pub fn server_name(cfg: &PgConfig) -> Result<ServerName<'static>, TlsError> {
    let host = match &cfg.host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "localhost".to_owned(),
    };
    ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName { host })
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the name the certificate is for is
/// not checked, as in libpq. webpki checks the chain before the name, so a name error means the
/// chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `sslmode=require|prefer`: encryption without authentication of the server, but handshake
/// signatures are still checked so the session keys belong to the presented certificate.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
