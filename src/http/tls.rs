//! Native TLS (rustls): the certificate and key files of `--tls-cert`/`--tls-key`, re-read on
//! SIGHUP. The server's rustls configuration never changes; its certificate resolver hands each
//! new handshake the certificate loaded last, so a reload touches no open connection (they keep
//! the session they negotiated) and needs no restart. A reload that fails (a half-written file,
//! a key that does not match) keeps the certificate in use and logs why.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// The TLS side of a server: its acceptor, and the certificate the acceptor's handshakes use.
pub(super) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
}

/// The certificate handed to new handshakes, replaced whole on reload.
#[derive(Debug)]
struct Current {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Tls {
    /// Loads the files; an unreadable file, or a key that is not the certificate's, fails the
    /// start rather than the first handshake.
    pub(super) fn load(files: &TlsFiles) -> std::io::Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(files, &provider)?;
        let current = Arc::new(Current {
            files: files.clone(),
            provider: provider.clone(),
            key: RwLock::new(Arc::new(key)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
        })
    }

    pub(super) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Re-reads the files; on success new handshakes use them.
    pub(super) fn reload(&self) -> std::io::Result<()> {
        let key = certified_key(&self.current.files, &self.current.provider)?;
        *self.current.key.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads on every SIGHUP until the server stops (the task is aborted).
    pub(super) fn reload_on_sighup(
        self: &Arc<Self>,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let tls = self.clone();
        Ok(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        cert = %tls.current.files.cert.display(),
                        "reloaded the TLS certificate"
                    ),
                    Err(error) => tracing::error!(
                        %error,
                        cert = %tls.current.files.cert.display(),
                        "could not reload the TLS certificate; keeping the one in use"
                    ),
                }
            }
        }))
    }
}

/// The chain and key of `files`, checked to belong together.
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> std::io::Result<CertifiedKey> {
    let invalid = |path: &Path, what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| invalid(&files.key, e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| invalid(&files.key, format!("not usable with the certificate: {e}")))
}
