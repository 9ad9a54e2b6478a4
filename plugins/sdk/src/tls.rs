//! TLS facts about remote endpoints, for certificate checks. The engine performs the handshake,
//! so plugins need no TLS stack of their own.

use crate::Error;
use crate::bindings::runloom::plugin::tls;
use std::time::Duration;

pub use crate::bindings::runloom::plugin::tls::{Certificate, Handshake};

/// Why no certificate could be read.
#[derive(Debug, Clone)]
pub enum TlsError {
    /// `host:port` is not granted.
    Denied(crate::Denial),
    /// No connection, or no certificate before the handshake failed.
    Failed(String),
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        match e {
            TlsError::Denied(d) => Error::Denied(d),
            TlsError::Failed(m) => Error::failed(m),
        }
    }
}

/// The certificate `host:port` presents for `server_name`, even if expired or untrusted.
pub fn peer_certificate(
    host: &str,
    port: u16,
    server_name: &str,
    timeout: Duration,
) -> Result<Handshake, TlsError> {
    let ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    tls::peer_certificate(host, port, server_name, ms).map_err(|e| match e {
        tls::TlsError::Denied(d) => TlsError::Denied(d),
        tls::TlsError::Failed(m) => TlsError::Failed(m),
    })
}
