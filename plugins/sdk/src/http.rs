//! Outgoing HTTP requests to granted hosts, over `wasi:http`.
//!
//! ```ignore
//! let resp = runloom_sdk::http::Request::get("https://example.org/health")
//!     .header("accept", "application/json")
//!     .timeout(std::time::Duration::from_secs(5))
//!     .send()?;
//! println!("{} {}", resp.status, resp.text());
//! ```
//!
//! A request to a `host:port` the plugin was not granted fails with [`HttpError::Denied`];
//! `?` turns that into [`Error::Denied`], so the engine reports the missing grant.

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::{Denial, Error};
use std::time::Duration;

/// Largest body chunk written per call (the `wasi:io` limit for one blocking write).
const WRITE_CHUNK: usize = 4096;
/// Largest body chunk read per call.
const READ_CHUNK: u64 = 64 * 1024;

/// An HTTP request, built up before [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    max_body_bytes: usize,
}

/// A response with its whole body read.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in the order received; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The body, up to the request's body limit.
    pub body: Vec<u8>,
    /// True when the body was longer than the limit and was cut.
    pub body_truncated: bool,
}

/// Why a request did not produce a response.
#[derive(Debug, Clone)]
pub enum HttpError {
    /// The URL cannot be used (bad syntax, unsupported scheme).
    InvalidUrl(String),
    /// The plugin was not granted this `host:port`.
    Denied(Denial),
    /// The request or response took longer than the timeout.
    Timeout,
    /// No connection: DNS failure, refused, reset, TLS failure.
    Connect(String),
    /// The peer broke the protocol or the transfer failed midway.
    Protocol(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            HttpError::Denied(d) => write!(f, "{}", d.message()),
            HttpError::Timeout => write!(f, "timed out"),
            HttpError::Connect(m) => write!(f, "cannot connect: {m}"),
            HttpError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl From<HttpError> for Error {
    /// A denial stays a denial; a timeout is retryable; everything else is a failure.
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(d) => Error::Denied(d),
            HttpError::InvalidUrl(_) => Error::invalid_input(e),
            HttpError::Timeout | HttpError::Connect(_) => Error::retryable(e),
            HttpError::Protocol(_) => Error::failed(e),
        }
    }
}

/// The parts of an `http(s)://` URL that `wasi:http` needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`.
    pub scheme: String,
    /// `host` or `host:port` as written.
    pub authority: String,
    /// The host without the port.
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
}

impl Url {
    /// Parse an absolute `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        let bad = |why: &str| HttpError::InvalidUrl(format!("`{url}`: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected `http://` or `https://`"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("only http and https are supported")),
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected a host (user info is not supported)"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // A bare IPv6 address without brackets has colons but no port.
            Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, None),
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad("invalid port"))?)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let tail = tail.split('#').next().unwrap_or("");
        let path_and_query = if tail.is_empty() {
            "/".to_string()
        } else if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_string()
        };
        Ok(Url {
            scheme,
            authority: authority.to_string(),
            host: host.to_string(),
            port: port.unwrap_or(default_port),
            path_and_query,
        })
    }
}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            max_body_bytes: 1024 * 1024,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Set a JSON body and `content-type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// Give up on connecting, and on each wait for response bytes, after this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Read at most this many body bytes (default 1 MiB); the rest is discarded.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Send the request and read the whole response.
    pub fn send(&self) -> Result<Response, HttpError> {
        let url = Url::parse(&self.url)?;
        let entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
            .collect();
        let fields = Fields::from_list(&entries)
            .map_err(|e| HttpError::InvalidUrl(format!("bad header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let invalid = |what: &str| HttpError::InvalidUrl(format!("`{}`: bad {what}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        let scheme = if url.scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&url.path_and_query))
            .map_err(|()| invalid("path"))?;

        let body = request
            .body()
            .map_err(|()| HttpError::Protocol("request body taken twice".into()))?;
        let options = self.timeout.map(|t| {
            let nanos = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            // Setting a timeout fails only when the host does not support it; then the
            // engine's deadline still bounds the call.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });
        let pending = outgoing_handler::handle(request, options).map_err(|e| classify(&url, e))?;
        if let Err(write_error) = write_body(body, &self.body) {
            // The host may refuse the request (a missing grant, a refused connection) before
            // the body is written; that refusal, not the closed stream, is the real error.
            pending.subscribe().block();
            if let Some(Ok(Err(e))) = pending.get() {
                return Err(classify(&url, e));
            }
            return Err(write_error);
        }

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(classify(&url, e)),
            Some(Err(())) | None => {
                return Err(HttpError::Protocol("response polled twice".into()));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Protocol("response body taken twice".into()))?;
        let (body, body_truncated) = read_body(incoming, self.max_body_bytes)?;
        Ok(Response {
            status,
            headers,
            body,
            body_truncated,
        })
    }
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), HttpError> {
    {
        let stream = body
            .write()
            .map_err(|()| HttpError::Protocol("request body stream taken twice".into()))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError::Protocol(format!("sending body: {e:?}")))?;
        }
        // The stream must be dropped before the body is finished.
    }
    OutgoingBody::finish(body, None).map_err(|e| HttpError::Protocol(format!("{e:?}")))
}

fn read_body(incoming: IncomingBody, limit: usize) -> Result<(Vec<u8>, bool), HttpError> {
    let mut body = Vec::new();
    let mut truncated = false;
    {
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Protocol("response body stream taken twice".into()))?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    let room = limit.saturating_sub(body.len());
                    if chunk.len() > room {
                        truncated = true;
                    }
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Protocol(format!(
                        "reading body: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
    Ok((body, truncated))
}

fn classify(url: &Url, e: ErrorCode) -> HttpError {
    match e {
        ErrorCode::HttpRequestDenied => HttpError::Denied(Denial {
            capability: "connect to".into(),
            target: format!("{}:{}", url.host, url.port),
        }),
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => HttpError::Timeout,
        ErrorCode::DnsTimeout => HttpError::Timeout,
        ErrorCode::DnsError(d) => HttpError::Connect(format!(
            "DNS lookup of `{}` failed{}",
            url.host,
            d.rcode.map(|r| format!(" ({r})")).unwrap_or_default()
        )),
        ErrorCode::ConnectionRefused => HttpError::Connect("connection refused".into()),
        ErrorCode::ConnectionTerminated => HttpError::Connect("connection reset".into()),
        ErrorCode::DestinationNotFound => HttpError::Connect("host not found".into()),
        ErrorCode::DestinationUnavailable => HttpError::Connect("host unreachable".into()),
        ErrorCode::DestinationIpUnroutable | ErrorCode::DestinationIpProhibited => {
            HttpError::Connect("address not reachable".into())
        }
        ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => HttpError::Connect(format!("TLS failed: {e:?}")),
        other => HttpError::Protocol(format!("{other:?}")),
    }
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::Protocol(format!("response is not JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_default_and_explicit_ports() {
        let u = Url::parse("https://example.org/health?x=1#frag").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port),
            ("https", "example.org", 443)
        );
        assert_eq!(u.path_and_query, "/health?x=1");
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.authority.as_str(), u.port), ("127.0.0.1:8080", 8080));
        assert_eq!(u.path_and_query, "/");
        let u = Url::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 9000));
    }

    #[test]
    fn rejects_unusable_urls() {
        for bad in [
            "example.org",
            "ftp://example.org/",
            "http:///path",
            "http://user@host/",
            "http://host:99999/",
        ] {
            assert!(
                matches!(Url::parse(bad), Err(HttpError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn denial_names_host_and_port() {
        let url = Url::parse("https://example.org/").unwrap();
        match classify(&url, ErrorCode::HttpRequestDenied) {
            HttpError::Denied(d) => {
                assert_eq!(
                    d.message(),
                    "may not connect to `example.org:443`: not granted"
                )
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }
}
