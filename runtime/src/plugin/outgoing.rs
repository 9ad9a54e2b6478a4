//! Outgoing HTTP on kept connections, for plugins whose `keep_alive` is set: a request goes
//! out on an idle connection an earlier request of the same plugin left to the same origin
//! (scheme, host and port), or on a fresh one, which is kept for the next request once its
//! response has been read to the end. Without `keep_alive` every request opens a connection
//! of its own, as wasmtime-wasi-http's default does, so a check's latency includes the
//! connect and TLS handshake.
//!
//! Grants are checked per request before this module is reached ([`super::host::Egress`]);
//! connections are never shared between plugins. A kept connection is closed when it has been
//! idle for `keep_alive`, when the server closes it, or when a plugin drops a response before
//! reading all of it. A request a kept connection could not take (the server closed it in the
//! meantime) is sent on the next one: it was never written, so it cannot be repeated. A
//! request written to a connection the server closed at the same moment fails as it would on
//! a fresh connection; it is not sent again, since it may have been received.
//!
//! At most 64 idle connections are kept per plugin and origin, and 256 in all, so that a
//! plugin calling many hosts cannot hold the process's file descriptors.

use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

/// Most idle connections kept per plugin and origin; a connection freed beyond it is closed.
const MAX_IDLE_PER_ORIGIN: usize = 64;
/// Most idle connections kept in all, so that a plugin calling many hosts cannot hold the
/// process's file descriptors; a connection freed beyond it is closed.
const MAX_IDLE: usize = 256;

/// The timeouts of one request, already capped by the call's deadline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) connect: Duration,
    pub(super) first_byte: Duration,
    pub(super) between_bytes: Duration,
}

/// Where a kept connection leads, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    plugin: Arc<str>,
    https: bool,
    host: String,
    port: u16,
}

struct Idle {
    sender: SendRequest<WasiBody>,
    expires: Instant,
}

/// The idle connections by origin, and how many there are in all.
#[derive(Default)]
struct Kept {
    lists: HashMap<Origin, Vec<Idle>>,
    count: usize,
}

/// Idle connections of every plugin with `keep_alive`, shared by a host's calls.
pub(crate) struct ConnectionPool {
    idle: Mutex<Kept>,
    /// Most idle connections in all.
    max_idle: usize,
    /// Whether a task is closing expired connections (changed under the `idle` lock).
    reaping: AtomicBool,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        Self {
            idle: Mutex::default(),
            max_idle: MAX_IDLE,
            reaping: AtomicBool::new(false),
            tls: OnceLock::new(),
        }
    }
}

impl ConnectionPool {
    /// A pool trusting the roots of `tls` for HTTPS (tests use their own authority).
    #[cfg(test)]
    fn with_tls(tls: rustls::ClientConfig) -> Self {
        let pool = Self::default();
        let _ = pool.tls.set(Arc::new(tls));
        pool
    }

    /// The TLS client configuration: the same Mozilla roots as a request on a fresh
    /// connection, built once so that TLS sessions can be resumed.
    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(std::io::Error::other(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(self.tls.get_or_init(|| Arc::new(config)).clone())
    }

    /// Connections idle now, for tests.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap();
        let listed: usize = idle.lists.values().map(Vec::len).sum();
        assert_eq!(idle.count, listed, "the count matches the lists");
        idle.count
    }

    /// A live idle connection to `origin`, the most recently used first.
    fn checkout(&self, origin: &Origin) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.idle.lock().ok()?;
        let Kept { lists, count } = &mut *idle;
        let list = lists.get_mut(origin)?;
        let now = Instant::now();
        while let Some(kept) = list.pop() {
            *count -= 1;
            if kept.expires > now && kept.sender.is_ready() {
                return Some(kept.sender);
            }
        }
        None
    }

    /// Keep `sender` for the next request to `origin` once its response has been read.
    fn release(
        self: &Arc<Self>,
        origin: Origin,
        mut sender: SendRequest<WasiBody>,
        keep: Duration,
    ) {
        let pool = self.clone();
        tokio::spawn(async move {
            // Ready once the response body has been read to its end; an error once the
            // connection closed (the server closed it, or the plugin dropped the body early).
            if sender.ready().await.is_err() {
                return;
            }
            let start_reaper = {
                let Ok(mut idle) = pool.idle.lock() else {
                    return;
                };
                if idle.count >= pool.max_idle {
                    return;
                }
                let Kept { lists, count } = &mut *idle;
                let list = lists.entry(origin).or_default();
                if list.len() >= MAX_IDLE_PER_ORIGIN {
                    list.remove(0);
                    *count -= 1;
                }
                *count += 1;
                list.push(Idle {
                    sender,
                    expires: Instant::now() + keep,
                });
                !pool.reaping.swap(true, Ordering::Relaxed)
            };
            if start_reaper {
                tokio::spawn(reap(pool, keep));
            }
        });
    }
}

/// Close expired and closed connections every `every` (at most 1 s) until none is idle.
async fn reap(pool: Arc<ConnectionPool>, every: Duration) {
    let every = every.min(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Ok(mut idle) = pool.idle.lock() else {
            return;
        };
        let now = Instant::now();
        idle.lists.retain(|_, list| {
            list.retain(|kept| kept.expires > now && !kept.sender.is_closed());
            !list.is_empty()
        });
        idle.count = idle.lists.values().map(Vec::len).sum();
        if idle.lists.is_empty() {
            pool.reaping.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// Send `request` for `plugin` on a kept connection to its origin, or a fresh one, keeping
/// the connection for `keep` once the response has been read.
pub(super) async fn send(
    pool: &Arc<ConnectionPool>,
    plugin: Arc<str>,
    keep: Duration,
    mut request: http::Request<WasiBody>,
    timeouts: Timeouts,
) -> Result<http::Response<WasiBody>, Error> {
    let uri = request.uri();
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let origin = Origin {
        plugin,
        https,
        host: uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string(),
        port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
    };
    // On the wire the request names only its path; the origin is the connection's.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    loop {
        let (mut sender, kept) = match pool.checkout(&origin) {
            Some(sender) => (sender, true),
            None => (connect(pool, &origin, timeouts.connect).await?, false),
        };
        let sent = tokio::time::timeout(timeouts.first_byte, sender.try_send_request(request));
        match sent.await {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Ok(response)) => {
                pool.release(origin, sender, keep);
                return Ok(response.map(|incoming| {
                    BetweenBytes::new(incoming, timeouts.between_bytes).boxed_unsync()
                }));
            }
            Ok(Err(mut failed)) => match failed.take_message() {
                // Never written: the kept connection closed before it could take it.
                Some(unsent) if kept => request = unsent,
                _ => return Err(Error::from(failed.into_error())),
            },
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Open a connection to `origin` (TLS for HTTPS) and start driving it.
async fn connect(
    pool: &ConnectionPool,
    origin: &Origin,
    timeout: Duration,
) -> Result<SendRequest<WasiBody>, Error> {
    let open = async {
        let tcp = TcpStream::connect((origin.host.trim_matches(['[', ']']), origin.port))
            .await
            .map_err(Error::Connect)?;
        let stream: Box<dyn Stream> = if origin.https {
            let name = server_name(&origin.host)?;
            let tls = tokio_rustls::TlsConnector::from(pool.tls()?)
                .connect(name, tcp)
                .await
                .map_err(Error::Tls)?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a plugin's kept HTTP connection ended");
            }
        });
        Ok(sender)
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| Error::ConnectionTimeout)?
}

/// The name TLS verifies: an IP address, or a DNS name.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    let bare = host.trim_matches(['[', ']']);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(rustls::pki_types::ServerName::from(ip));
    }
    rustls::pki_types::ServerName::try_from(bare.to_string())
        .map_err(|e| Error::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))
}

/// A response body that fails when the server pauses longer than `between` between frames.
struct BetweenBytes {
    incoming: hyper::body::Incoming,
    pause: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl BetweenBytes {
    fn new(incoming: hyper::body::Incoming, pause: Duration) -> Self {
        Self {
            incoming,
            pause,
            timer: Box::pin(tokio::time::sleep(pause)),
        }
    }
}

impl http_body::Body for BetweenBytes {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.pause;
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// What a test server saw.
    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: AtomicUsize,
        closed: AtomicUsize,
    }

    impl Seen {
        fn counts(&self) -> (usize, usize, usize) {
            (
                self.connections.load(Ordering::SeqCst),
                self.requests.load(Ordering::SeqCst),
                self.closed.load(Ordering::SeqCst),
            )
        }
    }

    /// An HTTP/1.1 server on 127.0.0.1 answering `body` to every request, keeping connections
    /// open between requests unless `keep` is false.
    async fn server(keep: bool, body: &'static [u8]) -> (u16, Arc<Seen>) {
        serve(keep, body, None).await
    }

    /// [`server`], over TLS when `tls` is given.
    async fn serve(
        keep: bool,
        body: &'static [u8],
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (u16, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let (counts, tls) = (counts.clone(), tls.clone());
                tokio::spawn(async move {
                    let stream: Box<dyn Stream> = match tls {
                        Some(acceptor) => Box::new(acceptor.accept(tcp).await.unwrap()),
                        None => Box::new(tcp),
                    };
                    let service = hyper::service::service_fn(|_req| {
                        counts.requests.fetch_add(1, Ordering::SeqCst);
                        let full = http_body_util::Full::new(bytes::Bytes::from_static(body));
                        async move { Ok::<_, std::convert::Infallible>(http::Response::new(full)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    counts.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (port, seen)
    }

    fn get(url: &str) -> http::Request<WasiBody> {
        let empty = http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::get(url).body(empty).unwrap()
    }

    fn timeouts() -> Timeouts {
        let t = Duration::from_secs(5);
        Timeouts {
            connect: t,
            first_byte: t,
            between_bytes: t,
        }
    }

    /// Send a GET for `plugin` and read the whole answer.
    async fn fetch(pool: &Arc<ConnectionPool>, plugin: &str, url: &str, keep: Duration) -> String {
        let response = send(pool, plugin.into(), keep, get(url), timeouts())
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Wait (up to 5 s) until `done` holds.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < until, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    const KEEP: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn requests_in_turn_share_one_connection() {
        let (port, seen) = server(true, b"ok").await;
        let pool = Arc::new(ConnectionPool::default());
        let url = format!("http://127.0.0.1:{port}/a?b=c");
        for _ in 0..5 {
            assert_eq!(fetch(&pool, "p", &url, KEEP).await, "ok");
            eventually("the connection is kept", || pool.idle_count() == 1).await;
        }
        assert_eq!(seen.counts(), (1, 5, 0), "five requests on one connection");
    }

    #[tokio::test]
    async fn requests_at_once_open_a_connection_each_and_keep_them() {
        let (port, seen) = server(true, b"ok").await;
        let pool = Arc::new(ConnectionPool::default());
        let url = format!("http://127.0.0.1:{port}/");
        let both = tokio::join!(fetch(&pool, "p", &url, KEEP), fetch(&pool, "p", &url, KEEP));
        assert_eq!(both, ("ok".to_string(), "ok".to_string()));
        eventually("both connections are kept", || pool.idle_count() == 2).await;
        assert_eq!(fetch(&pool, "p", &url, KEEP).await, "ok");
        assert_eq!(seen.counts(), (2, 3, 0));
    }

    #[tokio::test]
    async fn plugins_never_share_a_connection() {
        let (port, seen) = server(true, b"ok").await;
        let pool = Arc::new(ConnectionPool::default());
        let url = format!("http://127.0.0.1:{port}/");
        fetch(&pool, "one", &url, KEEP).await;
        eventually("kept", || pool.idle_count() == 1).await;
        fetch(&pool, "two", &url, KEEP).await;
        eventually("kept", || pool.idle_count() == 2).await;
        assert_eq!(seen.counts().0, 2, "a connection per plugin");
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_kept() {
        let (port, seen) = server(false, b"ok").await;
        let pool = Arc::new(ConnectionPool::default());
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..3 {
            assert_eq!(fetch(&pool, "p", &url, KEEP).await, "ok");
        }
        eventually("the server closed all three", || seen.counts().2 == 3).await;
        assert_eq!(seen.counts(), (3, 3, 3));
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_kept_connection_closed_by_the_server_while_idle_is_replaced() {
        // A server that answers one request, then closes the connection 50 ms later.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut tcp, _)) = listener.accept().await {
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = tcp.read(&mut buf).await.unwrap();
                    assert!(buf[..n].ends_with(b"\r\n\r\n"), "one whole request");
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    tcp.write_all(answer).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    drop(tcp);
                    counts.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let pool = Arc::new(ConnectionPool::default());
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(fetch(&pool, "p", &url, KEEP).await, "ok");
        eventually("kept", || pool.idle_count() == 1).await;
        eventually("closed by the server", || seen.counts().2 == 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(fetch(&pool, "p", &url, KEEP).await, "ok");
        let (connections, requests, _) = seen.counts();
        assert_eq!(
            (connections, requests),
            (2, 2),
            "the second request went out once, on a new connection"
        );
    }

    #[tokio::test]
    async fn no_more_than_the_limit_stay_open_in_all() {
        let (one, seen_one) = server(true, b"ok").await;
        let (two, seen_two) = server(true, b"ok").await;
        let pool = Arc::new(ConnectionPool {
            max_idle: 1,
            ..ConnectionPool::default()
        });
        fetch(&pool, "p", &format!("http://127.0.0.1:{one}/"), KEEP).await;
        eventually("the first is kept", || pool.idle_count() == 1).await;
        fetch(&pool, "p", &format!("http://127.0.0.1:{two}/"), KEEP).await;
        eventually("the second, over the limit, is closed", || {
            seen_two.counts().2 == 1
        })
        .await;
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(seen_one.counts(), (1, 1, 0), "the first stays open");
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_when_keep_alive_passes() {
        let (port, seen) = server(true, b"ok").await;
        let pool = Arc::new(ConnectionPool::default());
        let url = format!("http://127.0.0.1:{port}/");
        fetch(&pool, "p", &url, Duration::from_millis(100)).await;
        eventually("kept", || pool.idle_count() == 1).await;
        eventually("closed after 100 ms idle", || seen.counts().2 == 1).await;
        assert_eq!(pool.idle_count(), 0);
        assert!(!pool.reaping.load(Ordering::Relaxed), "the reaper stopped");
    }

    #[tokio::test]
    async fn a_response_dropped_unread_closes_its_connection() {
        static BIG: [u8; 1 << 20] = [b'x'; 1 << 20];
        let (port, seen) = server(true, &BIG).await;
        let pool = Arc::new(ConnectionPool::default());
        let url = format!("http://127.0.0.1:{port}/");
        let response = send(&pool, "p".into(), KEEP, get(&url), timeouts())
            .await
            .unwrap();
        drop(response);
        eventually("the connection closed", || seen.counts().2 == 1).await;
        assert_eq!(pool.idle_count(), 0, "a half-read connection is not kept");
        assert_eq!(fetch(&pool, "p", &url, KEEP).await.len(), BIG.len());
        assert_eq!(seen.counts().0, 2);
    }

    #[tokio::test]
    async fn https_connections_are_kept_too() {
        use rcgen::{CertificateParams, KeyPair};
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let (port, seen) = serve(true, b"ok", Some(acceptor)).await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let pool = Arc::new(ConnectionPool::with_tls(client));
        let url = format!("https://localhost:{port}/");
        for _ in 0..3 {
            assert_eq!(fetch(&pool, "p", &url, KEEP).await, "ok");
            eventually("kept", || pool.idle_count() == 1).await;
        }
        let (connections, requests, _) = seen.counts();
        assert_eq!(
            (connections, requests),
            (1, 3),
            "three requests on one connection"
        );

        // The default roots do not trust this server: the handshake fails as a TLS error.
        let strict = Arc::new(ConnectionPool::default());
        let refused = send(&strict, "p".into(), KEEP, get(&url), timeouts()).await;
        assert!(matches!(refused, Err(Error::Tls(_))), "{refused:?}");
    }
}
