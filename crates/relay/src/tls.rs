//! The relay's TLS identity: a self-signed certificate made on first start,
//! and a TLS 1.3-only server configuration. Clients pin the certificate's
//! SHA-256, so no certificate authority is trusted.

use std::path::Path;
use std::sync::Arc;

use hush_proto::CertificatePin;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Errors setting up TLS.
#[derive(Debug, Error)]
pub enum TlsError {
    /// Reading or writing the key or certificate failed.
    #[error("TLS files: {0}")]
    Io(#[from] std::io::Error),
    /// Generating the certificate failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// The stored key or certificate does not parse.
    #[error("TLS files are corrupt: {0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The relay's certificate and key.
pub struct TlsIdentity {
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// Loads `cert.pem` and `key.pem` from `dir`, creating them on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        if !cert_path.exists() || !key_path.exists() {
            let generated = rcgen::generate_simple_self_signed(vec!["hush-relay".to_owned()])?;
            write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
            std::fs::write(&cert_path, generated.cert.pem())?;
        }
        let certificate =
            CertificateDer::from_pem_file(&cert_path).map_err(|error| TlsError::Pem(error.to_string()))?;
        let key =
            PrivateKeyDer::from_pem_file(&key_path).map_err(|error| TlsError::Pem(error.to_string()))?;
        Ok(Self { certificate, key })
    }

    /// The pin clients check.
    pub fn pin(&self) -> CertificatePin {
        CertificatePin::of_certificate(&self.certificate)
    }

    /// A TLS 1.3-only server configuration whose one key exchange is the
    /// hybrid X25519MLKEM768: a client that cannot do post-quantum key
    /// exchange is refused rather than recorded for later decryption.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768],
            ..rustls::crypto::aws_lc_rs::default_provider()
        });
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![self.certificate.clone()], self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
