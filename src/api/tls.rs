//! HTTPS for the API (`--tls-cert-file`, `--tls-private-key-file`, the
//! kubelet's flag names). The certificate is read again when either file
//! changes — checked at each new connection's handshake, a `stat` of two
//! files, so a rotated certificate (cert-manager renewing a Secret) is
//! served without a restart and nothing polls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate and key files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("cannot read {path}: {reason}; check --tls-cert-file and --tls-private-key-file")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key does not fit a supported algorithm.
    #[error("the private key in {0} is not a supported RSA, ECDSA or Ed25519 key")]
    Key(PathBuf),
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |path: &Path, reason: String| TlsError::Read {
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| read(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(read(&files.cert, "no certificate in it".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| read(&files.key, e.to_string()))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| TlsError::Key(files.key.clone()))?;
    Ok(Arc::new(CertifiedKey::new(certs, key)))
}

/// Serves the certificate in the files, read again when they change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    /// Loads the files (an error here stops the daemon from starting).
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let stamps = (modified(&files.cert), modified(&files.key));
        let key = load(&files)?;
        Ok(Self {
            files,
            current: RwLock::new((stamps.0, stamps.1, key)),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let stamps = (modified(&self.files.cert), modified(&self.files.key));
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if (current.0, current.1) == stamps {
                return current.2.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match load(&self.files) {
            Ok(key) => {
                tracing::info!(cert = %self.files.cert.display(), "Serving a new TLS certificate.");
                *current = (stamps.0, stamps.1, key);
            }
            Err(error) => {
                // Half-written during a rotation, most likely: keep serving
                // the old one and try again at the next connection.
                tracing::warn!(%error, "The TLS files changed but cannot be read; still serving the previous certificate.");
            }
        }
        current.2.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS acceptor over the files.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let resolver = ReloadingCert::new(files.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
