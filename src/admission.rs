//! Who a client is, as far as the server can tell: the socket's peer, or the address a
//! trusted reverse proxy forwarded for. Pure functions; the server does the I/O.

use std::net::{IpAddr, SocketAddr};

/// The client behind one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The socket's peer itself: the request carried no `X-Forwarded-For`.
    Direct(IpAddr),
    /// The address a trusted proxy put in `X-Forwarded-For`.
    Forwarded(IpAddr),
    /// `X-Forwarded-For` from a peer that is not a trusted proxy, or an entry that is not an
    /// address: the client is someone else, unknown, and gets nothing granted by address.
    Unknown,
}

impl Client {
    /// The client's address, when known.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Client::Direct(ip) | Client::Forwarded(ip) => Some(ip),
            Client::Unknown => None,
        }
    }
}

/// The client of a request from `peer` that carried `forwarded_for` (every X-Forwarded-For
/// line, joined). Each proxy appends the address it got the request from, so the list is
/// read from the right: past the entries that are trusted proxies themselves, the first
/// other entry is the client. Anything to its left was written by the client and is not
/// believed. When every entry is a trusted proxy, the leftmost is the client.
pub fn resolve_client(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> Client {
    let Some(list) = forwarded_for else { return Client::Direct(peer) };
    if !is_trusted(peer) {
        return Client::Unknown;
    }
    let mut client = Client::Unknown;
    for entry in list.rsplit(',') {
        let Some(ip) = parse_entry(entry) else { return Client::Unknown };
        client = Client::Forwarded(ip);
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// One X-Forwarded-For entry: an address, perhaps in brackets or with a port as some proxies
/// write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`), in its plain (IPv4 if mapped) form.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let unbracketed = entry.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(entry);
    let ip = unbracketed.parse::<IpAddr>().or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()));
    ip.ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    /// Trusts 127.0.0.0/8 and 10.0.0.0/8.
    fn trusted(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 10,
            IpAddr::V6(_) => false,
        }
    }

    #[test]
    fn without_the_header_the_peer_is_the_client() {
        assert_eq!(resolve_client(ip("203.0.113.9"), None, trusted), Client::Direct(ip("203.0.113.9")));
        assert_eq!(resolve_client(ip("127.0.0.1"), None, |_| false), Client::Direct(ip("127.0.0.1")));
    }

    #[test]
    fn an_untrusted_peer_that_forwards_is_unknown() {
        // Also from loopback: a proxy the server was not told about must not pass as local.
        assert_eq!(resolve_client(ip("127.0.0.1"), Some("127.0.0.1"), |_| false), Client::Unknown);
        assert_eq!(resolve_client(ip("203.0.113.9"), Some("127.0.0.1"), trusted), Client::Unknown);
    }

    #[test]
    fn the_rightmost_entry_that_is_not_a_trusted_proxy_is_the_client() {
        let resolve = |list: &str| resolve_client(ip("127.0.0.1"), Some(list), trusted);
        assert_eq!(resolve("198.51.100.7"), Client::Forwarded(ip("198.51.100.7")));
        // The client wrote 127.0.0.1 itself; the proxy appended what it saw.
        assert_eq!(resolve("127.0.0.1, 198.51.100.7"), Client::Forwarded(ip("198.51.100.7")));
        // Through two trusted proxies.
        assert_eq!(resolve("1.2.3.4, 198.51.100.7, 10.0.0.2"), Client::Forwarded(ip("198.51.100.7")));
        // Only trusted proxies: the leftmost is where the request came from.
        assert_eq!(resolve("10.0.0.3,10.0.0.2"), Client::Forwarded(ip("10.0.0.3")));
        // Ports, brackets and mapped addresses, as some proxies write them.
        assert_eq!(resolve(" 198.51.100.7:4711 "), Client::Forwarded(ip("198.51.100.7")));
        assert_eq!(resolve("[2001:db8::1]:4711"), Client::Forwarded(ip("2001:db8::1")));
        assert_eq!(resolve("[2001:db8::1]"), Client::Forwarded(ip("2001:db8::1")));
        assert_eq!(resolve("::ffff:127.0.0.1"), Client::Forwarded(ip("127.0.0.1")));
    }

    #[test]
    fn an_entry_that_is_not_an_address_makes_the_client_unknown() {
        let resolve = |list: &str| resolve_client(ip("127.0.0.1"), Some(list), trusted);
        for list in ["", " ", "unknown", "198.51.100.7 garbage", "\u{fffd}, 10.0.0.2", ",", "1.2.3.4:99999"] {
            assert_eq!(resolve(list), Client::Unknown, "{list:?}");
        }
        // Garbage to the left of the client is the client's own business.
        assert_eq!(resolve("garbage, 198.51.100.7"), Client::Forwarded(ip("198.51.100.7")));
    }
}
