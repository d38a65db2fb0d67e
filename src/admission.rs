//! Who a client is and whether it may come in: the socket's peer or the address a trusted
//! reverse proxy forwarded for, and the connection table with its per-address counts and
//! the few slots kept for health checks. Pure; the server does the I/O.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::rooms::ConnId;

/// Slots above `--max-connections` that only local and monitoring peers (loopback, this
/// host's own addresses, `--metrics-allow`) may take, for plain HTTP such as `/health` and
/// `/metrics`, so that a full table does not make a container's health check fail and get
/// a healthy server restarted. A peer from elsewhere can never take one.
pub const HTTP_RESERVE: usize = 8;

/// What may happen to a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A regular slot.
    Admit,
    /// One of the [`HTTP_RESERVE`] slots: HTTP only, no WebSocket.
    AdmitReserved,
    /// Refused: the table is full (HTTP 503).
    RefuseFull,
    /// Refused: its address holds its share already (HTTP 429).
    RefuseAddress,
}

/// The bookkeeping of one admitted connection.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The address group it counts against; `None` while it counts against none (a
    /// connection from a trusted proxy, until the proxy says whom it forwards for).
    charged: Option<IpAddr>,
    reserved: bool,
    /// The table was full when it came in (else it was its address that had no room):
    /// what a reserved connection that may not stay is told.
    table_was_full: bool,
}

/// The connection table's admission rules: at most `max_connections` regular connections,
/// at most `per_address` of them from one address group (0: no such limit), and
/// [`HTTP_RESERVE`] more for local HTTP.
#[derive(Debug)]
pub struct Admission {
    max_connections: usize,
    per_address: u32,
    /// Connections per address group ([`address_group`]); groups at zero are removed.
    counts: HashMap<IpAddr, u32>,
    /// By connection id, as the server's slab hands them out.
    slots: Vec<Option<Slot>>,
    regular: usize,
    reserved: usize,
}

impl Admission {
    pub fn new(max_connections: usize, per_address: u32) -> Admission {
        Admission {
            max_connections,
            per_address,
            counts: HashMap::new(),
            slots: Vec::new(),
            regular: 0,
            reserved: 0,
        }
    }

    /// Whether a new connection may come in. `charge` is the address it will count against
    /// (`None` for a trusted proxy); `privileged` says whether the peer may use the reserve,
    /// asked only when the reserve is the only way in.
    pub fn judge(&self, charge: Option<IpAddr>, privileged: impl FnOnce() -> bool) -> Decision {
        let table_full = self.table_full();
        let address_full = charge.is_some_and(|ip| !self.has_room_for(ip));
        if !table_full && !address_full {
            Decision::Admit
        } else if self.reserved < HTTP_RESERVE && privileged() {
            Decision::AdmitReserved
        } else if table_full {
            Decision::RefuseFull
        } else {
            Decision::RefuseAddress
        }
    }

    /// Records connection `key` as admitted (after [`Admission::judge`]), counted against
    /// `charge`. Every connection admitted must be [`Admission::release`]d exactly once.
    pub fn admit(&mut self, key: ConnId, charge: Option<IpAddr>, reserved: bool) {
        self.release(key);
        if self.slots.len() <= key {
            self.slots.resize(key + 1, None);
        }
        let charged = charge.map(address_group);
        if let Some(group) = charged {
            *self.counts.entry(group).or_insert(0) += 1;
        }
        let table_was_full = self.table_full();
        if let Some(slot) = self.slots.get_mut(key) {
            *slot = Some(Slot { charged, reserved, table_was_full });
        }
        if reserved {
            self.reserved += 1;
        } else {
            self.regular += 1;
        }
    }

    /// Counts connection `key` against `ip` from now on instead of what it counted against:
    /// the client a trusted proxy forwards for. False, and nothing changes, when that
    /// address has no room left.
    pub fn charge(&mut self, key: ConnId, ip: IpAddr) -> bool {
        let group = address_group(ip);
        let Some(Some(slot)) = self.slots.get(key).copied() else { return false };
        if slot.charged == Some(group) {
            return true;
        }
        if !self.has_room_for(ip) {
            return false;
        }
        if let Some(old) = slot.charged {
            self.uncount(old);
        }
        *self.counts.entry(group).or_insert(0) += 1;
        if let Some(Some(slot)) = self.slots.get_mut(key) {
            slot.charged = Some(group);
        }
        true
    }

    /// Forgets connection `key`, which has left the table. Harmless for a key not admitted.
    pub fn release(&mut self, key: ConnId) {
        let Some(slot) = self.slots.get_mut(key).and_then(Option::take) else { return };
        if let Some(group) = slot.charged {
            self.uncount(group);
        }
        if slot.reserved {
            self.reserved = self.reserved.saturating_sub(1);
        } else {
            self.regular = self.regular.saturating_sub(1);
        }
    }

    /// True when connection `key` came in while the table was full.
    pub fn came_in_full(&self, key: ConnId) -> bool {
        matches!(self.slots.get(key), Some(Some(Slot { table_was_full: true, .. })))
    }

    /// True when connection `key` holds one of the reserved HTTP slots.
    pub fn is_reserved(&self, key: ConnId) -> bool {
        matches!(self.slots.get(key), Some(Some(Slot { reserved: true, .. })))
    }

    /// Connections counted against the address group of `ip`.
    pub fn count(&self, ip: IpAddr) -> u32 {
        self.counts.get(&address_group(ip)).copied().unwrap_or(0)
    }

    /// True when no regular slot is free.
    pub fn table_full(&self) -> bool {
        self.regular >= self.max_connections
    }

    /// Regular and reserved connections admitted and not yet released.
    pub fn open(&self) -> (usize, usize) {
        (self.regular, self.reserved)
    }

    fn has_room_for(&self, ip: IpAddr) -> bool {
        self.per_address == 0 || self.count(ip) < self.per_address
    }

    fn uncount(&mut self, group: IpAddr) {
        if let Some(count) = self.counts.get_mut(&group) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&group);
            }
        }
    }
}

/// What connections are counted per: an IPv4 address (behind a carrier-grade NAT, many
/// subscribers share it), or an IPv6 /64, since a host is given a whole /64 and can pick
/// a new address in it for every connection. IPv4-mapped addresses are IPv4.
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

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

    #[test]
    fn ipv4_counts_per_address_and_ipv6_per_64() {
        assert_eq!(address_group(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(address_group(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(address_group(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(address_group(ip("2001:db8:1:2::1")), address_group(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(address_group(ip("2001:db8:1:2::1")), address_group(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn one_address_gets_its_share_and_others_still_come_in() {
        let mut table = Admission::new(10, 2);
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        for key in 0..2 {
            assert_eq!(table.judge(Some(a), || false), Decision::Admit);
            table.admit(key, Some(a), false);
        }
        assert_eq!(table.judge(Some(a), || false), Decision::RefuseAddress);
        assert_eq!(table.judge(Some(ip("::ffff:192.0.2.1")), || false), Decision::RefuseAddress);
        assert_eq!(table.judge(Some(b), || false), Decision::Admit);
        table.admit(2, Some(b), false);
        // A departure frees the share, once: releasing again changes nothing.
        table.release(0);
        table.release(0);
        assert_eq!(table.count(a), 1);
        assert_eq!(table.open(), (2, 0));
        assert_eq!(table.judge(Some(a), || false), Decision::Admit);
        // Zero: no limit per address.
        let unlimited = Admission::new(10, 0);
        assert_eq!(unlimited.judge(Some(a), || false), Decision::Admit);
    }

    #[test]
    fn the_reserve_is_for_privileged_peers_only_and_is_bounded() {
        let mut table = Admission::new(2, 0);
        table.admit(0, Some(ip("192.0.2.1")), false);
        table.admit(1, Some(ip("192.0.2.2")), false);
        assert_eq!(table.judge(Some(ip("192.0.2.3")), || false), Decision::RefuseFull);
        for key in 2..2 + HTTP_RESERVE {
            assert_eq!(table.judge(Some(ip("127.0.0.1")), || true), Decision::AdmitReserved);
            table.admit(key, Some(ip("127.0.0.1")), true);
            assert!(table.is_reserved(key) && !table.is_reserved(0));
        }
        assert_eq!(table.judge(Some(ip("127.0.0.1")), || true), Decision::RefuseFull);
        table.release(2);
        assert_eq!(table.judge(Some(ip("127.0.0.1")), || true), Decision::AdmitReserved);
        // A regular slot that frees goes to anyone again, and is not taken by the reserve.
        table.release(0);
        assert_eq!(table.judge(Some(ip("192.0.2.3")), || false), Decision::Admit);
        assert_eq!(table.open(), (1, HTTP_RESERVE - 1));
        // Over its address's share, a privileged peer may still use the reserve.
        let mut shared = Admission::new(10, 1);
        shared.admit(0, Some(ip("127.0.0.1")), false);
        assert_eq!(shared.judge(Some(ip("127.0.0.1")), || true), Decision::AdmitReserved);
        assert_eq!(shared.judge(Some(ip("192.0.2.1")), || panic!("not asked")), Decision::Admit);
    }

    #[test]
    fn a_proxied_connection_counts_against_the_client_it_is_for() {
        let mut table = Admission::new(10, 1);
        let proxy = ip("127.0.0.1");
        // Trusted proxies are not counted on their own account...
        for key in 0..3 {
            assert_eq!(table.judge(None, || false), Decision::Admit);
            table.admit(key, None, false);
        }
        assert_eq!(table.count(proxy), 0);
        // ...but against the clients they forward for.
        assert!(table.charge(0, ip("198.51.100.7")));
        assert!(table.charge(0, ip("198.51.100.7")), "charging again is no change");
        assert!(!table.charge(1, ip("198.51.100.7")), "its share is taken");
        assert!(table.charge(1, ip("198.51.100.8")));
        assert_eq!((table.count(ip("198.51.100.7")), table.count(ip("198.51.100.8"))), (1, 1));
        // Moving a charge frees the old one.
        assert!(table.charge(1, ip("198.51.100.9")));
        assert_eq!(table.count(ip("198.51.100.8")), 0);
        table.release(0);
        assert!(table.charge(2, ip("198.51.100.7")));
        assert!(!table.charge(7, ip("198.51.100.1")), "not admitted");
        table.release(1);
        table.release(2);
        assert!(table.counts.is_empty() && table.open() == (0, 0));
    }

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
