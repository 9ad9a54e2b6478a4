//! Reading a server's TLS certificate for `tls.peer-certificate`, even when it is expired or
//! untrusted: the handshake records the chain and the verdict of a real verifier, then goes on.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, SignatureScheme};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What the handshake revealed about the leaf certificate.
pub(super) struct Handshake {
    pub(super) subject: String,
    pub(super) issuer: String,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    pub(super) dns_names: Vec<String>,
    pub(super) verify_error: Option<String>,
}

/// Trusted roots: the host's certificate store when it has one, else the Mozilla bundle.
fn roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(store)
        })
        .clone()
}

/// Accepts any certificate, after asking a real verifier and remembering its answer.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    leaf: Mutex<Option<CertificateDer<'static>>>,
    verdict: Mutex<Option<String>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if let Ok(mut leaf) = self.leaf.lock() {
            *leaf = Some(end_entity.clone().into_owned());
        }
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .err()
            .map(|e| e.to_string());
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = verdict;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Connect to `host:port`, handshake for `server_name`, and describe the leaf certificate.
pub(super) async fn peer_certificate(
    host: &str,
    port: u16,
    server_name: &str,
    timeout: Duration,
) -> Result<Handshake, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(roots(), provider.clone())
        .build()
        .map_err(|e| format!("cannot build a certificate verifier: {e}"))?;
    let recorder = Arc::new(Recorder {
        inner,
        leaf: Mutex::new(None),
        verdict: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("`{server_name}` is not a valid server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        // A handshake may fail after the certificate arrived (a client certificate required,
        // say); the certificate is still what we came for.
        let finished = connector.connect(name, tcp).await;
        Ok::<_, String>(finished.err().map(|e| e.to_string()))
    };
    let failure = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| format!("TLS handshake with {host}:{port} timed out"))??;
    let leaf = recorder
        .leaf
        .lock()
        .ok()
        .and_then(|l| l.clone())
        .ok_or_else(|| {
            format!(
                "{host}:{port} sent no certificate: {}",
                failure.unwrap_or_else(|| "handshake ended early".into())
            )
        })?;
    let verify_error = recorder.verdict.lock().ok().and_then(|v| v.clone());
    describe(&leaf, verify_error)
}

fn describe(der: &CertificateDer<'_>, verify_error: Option<String>) -> Result<Handshake, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the server's certificate cannot be parsed: {e}"))?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Handshake {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        verify_error,
    })
}
