//! The TLS policy for `sslmode`, built on rustls with the ring provider.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

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
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls client configuration for the connection's `sslmode`: `verify-full` verifies the chain
/// (against `sslrootcert`, else the Mozilla roots) and the host name; `prefer` and `require` encrypt
/// without verifying, as libpq does when no root certificate is configured.
pub fn client_config(cfg: &PgConfig) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if cfg.sslmode == SslMode::VerifyFull {
        let mut roots = rustls::RootCertStore::empty();
        match &cfg.sslrootcert {
            Some(path) if path.as_os_str() != "system" => {
                let pem = std::fs::read(path).map_err(|source| TlsError::ReadRoot {
                    path: path.clone(),
                    source,
                })?;
                let mut added = 0;
                for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
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
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    };
    Ok(config)
}

/// The name the server certificate must carry (used for SNI too).
pub fn server_name(cfg: &PgConfig) -> Result<ServerName<'static>, TlsError> {
    let host = match &cfg.host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "localhost".to_owned(),
    };
    ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName { host })
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
