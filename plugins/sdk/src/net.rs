//! Outgoing TCP connections to granted hosts, over `wasi:sockets`, for protocols other than
//! HTTP (use [`crate::http`] for HTTP).
//!
//! ```ignore
//! let stream = runloom_sdk::net::connect("db.internal", 5432, Duration::from_secs(5))?;
//! stream.write_all(b"PING\r\n", Duration::from_secs(5))?;
//! let reply = stream.read(4096, Duration::from_secs(5))?;
//! ```
//!
//! Every wait (name lookup, connecting, reading, writing) ends at its timeout with
//! [`NetError::Timeout`]. A `host:port` the plugin was not granted fails with
//! [`NetError::Denied`]; `?` turns that into [`Error::Denied`].
//!
//! Why not `std::net`: on `wasm32-wasip2`, `TcpStream::connect_timeout` can return `Ok` for a
//! connection that was refused (it returns once the socket polls ready without collecting the
//! connect error), and `TcpStream::connect` has no timeout, so a host that drops packets holds
//! the call until the engine's deadline. Driving `wasi:sockets` directly gives each wait its
//! own deadline and reports every failure.

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::io::poll::{Pollable, poll};
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::bindings::wasi::sockets::instance_network::instance_network;
use crate::bindings::wasi::sockets::ip_name_lookup::resolve_addresses;
use crate::bindings::wasi::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    Network,
};
use crate::bindings::wasi::sockets::tcp::TcpSocket;
use crate::bindings::wasi::sockets::tcp_create_socket::create_tcp_socket;
use crate::{Denial, Error};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why a connection, read or write did not succeed.
#[derive(Debug, Clone)]
pub enum NetError {
    /// The plugin was not granted this `host:port`.
    Denied(Denial),
    /// The host name does not resolve.
    Resolve(String),
    /// Nothing listens on the port: the connection was refused.
    Refused,
    /// No answer before the timeout.
    Timeout,
    /// Another failure to connect (host unreachable, connection reset).
    Connect(String),
    /// The connection broke while reading or writing.
    Io(String),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Denied(d) => write!(f, "{}", d.message()),
            NetError::Resolve(m) => write!(f, "cannot resolve: {m}"),
            NetError::Refused => write!(f, "connection refused"),
            NetError::Timeout => write!(f, "timed out"),
            NetError::Connect(m) => write!(f, "cannot connect: {m}"),
            NetError::Io(m) => write!(f, "connection broken: {m}"),
        }
    }
}

impl From<NetError> for Error {
    /// A denial stays a denial; a failure to reach the host is retryable; a broken
    /// connection is a failure.
    fn from(e: NetError) -> Self {
        match e {
            NetError::Denied(d) => Error::Denied(d),
            NetError::Resolve(_) | NetError::Refused | NetError::Timeout | NetError::Connect(_) => {
                Error::retryable(e)
            }
            NetError::Io(_) => Error::failed(e),
        }
    }
}

/// An open TCP connection. Closed when dropped.
pub struct TcpStream {
    // Declared before `socket`: the streams are children of the socket and must be dropped
    // first.
    input: InputStream,
    output: OutputStream,
    #[allow(dead_code, reason = "owns the connection the streams belong to")]
    socket: TcpSocket,
    peer: SocketAddr,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A point on the monotonic clock after which waiting stops.
#[derive(Debug, Clone, Copy)]
struct Deadline(monotonic_clock::Instant);

impl Deadline {
    fn after(timeout: Duration) -> Self {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Deadline(monotonic_clock::now().saturating_add(nanos))
    }

    fn passed(self) -> bool {
        monotonic_clock::now() >= self.0
    }

    /// Wait until `pollable` is ready or the deadline passes; true when it is ready.
    fn wait(self, pollable: &Pollable) -> bool {
        if pollable.ready() {
            return true;
        }
        let timer = monotonic_clock::subscribe_instant(self.0);
        // `poll` returns the indices of the ready pollables; 0 is `pollable`.
        poll(&[pollable, &timer]).contains(&0)
    }
}

/// Connect to `host:port` (a name or an IP address), trying each address the name resolves
/// to in turn, all within `timeout`.
pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, NetError> {
    let deadline = Deadline::after(timeout);
    let target = format!("{host}:{port}");
    let denied = || {
        NetError::Denied(Denial {
            capability: "connect to".into(),
            target: target.clone(),
        })
    };
    let network = instance_network();
    let addresses = match parse_ip(host) {
        Some(ip) => vec![ip],
        None => resolve(&network, host, deadline, &denied)?,
    };
    let mut last = NetError::Resolve(format!("`{host}` has no addresses"));
    for ip in addresses {
        match connect_to(&network, SocketAddr::new(ip, port), deadline) {
            Ok(stream) => return Ok(stream),
            Err(ErrorCode::AccessDenied) => return Err(denied()),
            Err(ErrorCode::Timeout) => return Err(NetError::Timeout),
            Err(ErrorCode::ConnectionRefused) => last = NetError::Refused,
            Err(code) => last = NetError::Connect(describe(code)),
        }
        if deadline.passed() {
            return Err(NetError::Timeout);
        }
    }
    Err(last)
}

/// An IP address as written in a host field: `10.0.0.1`, `::1` or `[::1]`.
fn parse_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn resolve(
    network: &Network,
    host: &str,
    deadline: Deadline,
    denied: &dyn Fn() -> NetError,
) -> Result<Vec<IpAddr>, NetError> {
    let failed = |code: ErrorCode| match code {
        ErrorCode::AccessDenied => denied(),
        // wasmtime answers a lookup the plugin may not make with this code, the same as a
        // genuine resolver failure. A plugin with no `hosts` grant at all cannot create a
        // socket either, which tells the two apart.
        ErrorCode::PermanentResolverFailure if tcp_denied() => denied(),
        ErrorCode::NameUnresolvable => NetError::Resolve(format!("`{host}` does not resolve")),
        code => NetError::Resolve(format!("looking up `{host}` failed: {}", describe(code))),
    };
    let stream = resolve_addresses(network, host).map_err(failed)?;
    let pollable = stream.subscribe();
    let mut addresses = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(address)) => addresses.push(ip_from_wasi(address)),
            Ok(None) => break,
            Err(ErrorCode::WouldBlock) => {
                if !deadline.wait(&pollable) {
                    return Err(NetError::Timeout);
                }
            }
            Err(code) => return Err(failed(code)),
        }
    }
    Ok(addresses)
}

/// Whether this plugin may not open TCP sockets at all.
fn tcp_denied() -> bool {
    matches!(
        create_tcp_socket(IpAddressFamily::Ipv4),
        Err(ErrorCode::AccessDenied)
    )
}

fn connect_to(
    network: &Network,
    addr: SocketAddr,
    deadline: Deadline,
) -> Result<TcpStream, ErrorCode> {
    let family = match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    };
    let socket = create_tcp_socket(family)?;
    socket.start_connect(network, socket_to_wasi(addr))?;
    let pollable = socket.subscribe();
    let (input, output) = loop {
        match socket.finish_connect() {
            Ok(streams) => break streams,
            Err(ErrorCode::WouldBlock) => {
                if !deadline.wait(&pollable) {
                    return Err(ErrorCode::Timeout);
                }
            }
            Err(code) => return Err(code),
        }
    };
    drop(pollable);
    Ok(TcpStream {
        input,
        output,
        socket,
        peer: addr,
    })
}

impl TcpStream {
    /// The address connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Wait up to `timeout` for data and return what has arrived, at most `max` bytes. An
    /// empty result means the peer closed the connection.
    pub fn read(&self, max: usize, timeout: Duration) -> Result<Vec<u8>, NetError> {
        let deadline = Deadline::after(timeout);
        let pollable = self.input.subscribe();
        let len = u64::try_from(max.max(1)).unwrap_or(u64::MAX);
        loop {
            match self.input.read(len) {
                Ok(bytes) if bytes.is_empty() => {
                    if !deadline.wait(&pollable) {
                        return Err(NetError::Timeout);
                    }
                }
                Ok(bytes) => return Ok(bytes),
                Err(StreamError::Closed) => return Ok(Vec::new()),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(NetError::Io(e.to_debug_string()));
                }
            }
        }
    }

    /// Write all of `bytes` and flush them, within `timeout`.
    pub fn write_all(&self, bytes: &[u8], timeout: Duration) -> Result<(), NetError> {
        let deadline = Deadline::after(timeout);
        let pollable = self.output.subscribe();
        let broken = |e: StreamError| match e {
            StreamError::Closed => NetError::Io("closed by the peer".into()),
            StreamError::LastOperationFailed(e) => NetError::Io(e.to_debug_string()),
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = self.output.check_write().map_err(broken)?;
            if room == 0 {
                if !deadline.wait(&pollable) {
                    return Err(NetError::Timeout);
                }
                continue;
            }
            let n = rest.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.output.write(&rest[..n]).map_err(broken)?;
            rest = &rest[n..];
        }
        self.output.flush().map_err(broken)?;
        // The flush is done once the stream accepts writes again.
        while self.output.check_write().map_err(broken)? == 0 {
            if !deadline.wait(&pollable) {
                return Err(NetError::Timeout);
            }
        }
        Ok(())
    }
}

fn describe(code: ErrorCode) -> String {
    code.name().replace('-', " ")
}

fn ip_from_wasi(address: IpAddress) -> IpAddr {
    match address {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

fn socket_to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: v4.port(),
                address: (a, b, c, d),
            })
        }
        SocketAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: v6.port(),
                flow_info: v6.flowinfo(),
                address: (a, b, c, d, e, f, g, h),
                scope_id: v6.scope_id(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_are_recognised_with_or_without_brackets() {
        assert_eq!(parse_ip("127.0.0.1"), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(parse_ip("::1"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(parse_ip("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(parse_ip("db.internal"), None);
    }

    #[test]
    fn addresses_convert_both_ways() {
        let v6: SocketAddr = "[2001:db8::7]:5432".parse().unwrap();
        match socket_to_wasi(v6) {
            IpSocketAddress::Ipv6(a) => {
                assert_eq!(a.port, 5432);
                assert_eq!(
                    ip_from_wasi(IpAddress::Ipv6(a.address)),
                    "2001:db8::7".parse::<IpAddr>().unwrap()
                );
            }
            IpSocketAddress::Ipv4(_) => panic!("family changed"),
        }
        assert_eq!(
            ip_from_wasi(IpAddress::Ipv4((10, 1, 2, 3))),
            IpAddr::from([10, 1, 2, 3])
        );
    }

    #[test]
    fn failures_to_reach_a_host_are_retryable_and_denials_stay_denials() {
        let d = Denial {
            capability: "connect to".into(),
            target: "db:5432".into(),
        };
        assert!(matches!(Error::from(NetError::Denied(d)), Error::Denied(_)));
        assert!(matches!(
            Error::from(NetError::Refused),
            Error::Retryable(m) if m == "connection refused"
        ));
        assert!(matches!(
            Error::from(NetError::Io("reset".into())),
            Error::Failed(_)
        ));
    }
}
