//! Who may come in and what they are answered: whether a new connection gets a slot,
//! and for a complete request head who the client is (the peer or the address a trusted
//! proxy forwarded for), whether the slot it holds and the server's tokens and origins
//! let it in, and which page or upgrade it gets. No I/O: the loop writes the answer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::admission::{self, Admission, Client, Decision};
use crate::config::Config;
use crate::http::{self, Answer, Request, Status};
use crate::metrics::{Metrics, Stats};
use crate::rooms::ConnId;

const AT_CONNECTION_LIMIT: &str = "The server is at its connection limit.";
const AT_ADDRESS_LIMIT: &str =
    "Too many connections from your address (see --max-connections-per-ip); close some and retry.";

/// What happens to a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// It takes a slot, counted against `charge` (none for a trusted proxy, until it
    /// names its client); `reserved`: one kept for local HTTP.
    Admit { charge: Option<IpAddr>, reserved: bool },
    /// It is answered with this response and closed.
    Refuse(Vec<u8>),
}

/// Whether a new connection from `peer` may come in; `local_ip` is the address it reached
/// on this host (asked only when the table is full). Counts refusals.
pub fn admit(
    config: &Config,
    admission: &Admission,
    metrics: &mut Metrics,
    peer: IpAddr,
    local_ip: impl FnOnce() -> Option<IpAddr>,
) -> Entry {
    // A trusted proxy speaks for many clients: its connections count against the client
    // it names, once the request head says who that is.
    let charge = Some(peer).filter(|&ip| !config.is_trusted_proxy(ip));
    // The HTTP reserve is for loopback, an address of this host (`--healthcheck` with a
    // specific `--bind` comes from there), or a network allowed to read `/metrics`.
    let privileged = || peer.is_loopback() || config.may_read_metrics(peer) || local_ip() == Some(peer);
    match admission.judge(charge, privileged) {
        Decision::Admit => Entry::Admit { charge, reserved: false },
        Decision::AdmitReserved => Entry::Admit { charge, reserved: true },
        Decision::RefuseFull => {
            metrics.connection_limit_hits += 1;
            Entry::Refuse(http::error_response(Status::ServiceUnavailable, AT_CONNECTION_LIMIT))
        }
        Decision::RefuseAddress => {
            metrics.address_limit_hits += 1;
            Entry::Refuse(http::error_response(Status::TooManyRequests, AT_ADDRESS_LIMIT))
        }
    }
}

/// What answering a request needs from the server.
pub struct Site<'a> {
    pub config: &'a Config,
    pub admission: &'a mut Admission,
    pub metrics: &'a mut Metrics,
    /// Live figures; `connections` counts the connection asking.
    pub stats: Stats,
    pub uptime: Duration,
    /// Bytes read and written by open connections, for `/metrics` (asked only there).
    pub live_bytes: &'a dyn Fn() -> (u64, u64),
    /// Seconds since the Unix epoch, for TURN credentials.
    pub unix_time: u64,
    /// A fresh opaque tag for a TURN username (asked only for `/turn`).
    pub turn_tag: &'a dyn Fn() -> String,
}

/// A request's answer, and who asked when known.
pub struct Routed {
    pub answer: Answer,
    pub client: Option<IpAddr>,
}

/// Answers `request`, which connection `key` from `peer` sent. Counts refusals at the
/// connection and address limits; the loop counts the rest when it writes the answer.
pub fn route(site: &mut Site<'_>, key: ConnId, peer: SocketAddr, request: &Request) -> Routed {
    let resolved = resolve_client(site.config, peer.ip(), request);
    let client = resolved.ip();
    let answer = if let Some(refusal) = slot_refusal(site, key, resolved, request) {
        Answer::Close(refusal)
    } else if request.wants_websocket() {
        match upgrade_refusal(site.config, request) {
            Some((status, why)) => Answer::Close(http::error_response(status, why)),
            None => http::answer(request, site.stats),
        }
    } else {
        match request.path() {
            "/health" => {
                // The figures are about clients: the request asking for them is not one.
                let mut stats = site.stats;
                stats.connections = stats.connections.saturating_sub(1);
                Answer::Close(http::health_response(request, stats, site.uptime))
            }
            "/turn" => Answer::Close(turn_response(site, request)),
            "/metrics" if site.config.metrics => {
                if client.is_some_and(|ip| site.config.may_read_metrics(ip)) {
                    let exposition = render_metrics(site);
                    Answer::Close(http::metrics_response(request, &exposition))
                } else {
                    let why = "Metrics are not served to this address (see --metrics-allow).";
                    Answer::Close(http::error_response(Status::Forbidden, why))
                }
            }
            _ => http::answer(request, site.stats),
        }
    };
    Routed { answer, client }
}

/// Why connection `key` may not have `request` from `client` answered in the slot it
/// holds, as the response that says so, if it may not.
fn slot_refusal(site: &mut Site<'_>, key: ConnId, client: Client, request: &Request) -> Option<Vec<u8>> {
    if site.admission.is_reserved(key) {
        // The reserve is for a local health check or scrape: not for a WebSocket, and not
        // for a remote client that a local proxy forwards.
        let local = match client {
            Client::Direct(_) => true,
            Client::Forwarded(ip) => ip.is_loopback() || site.config.may_read_metrics(ip),
            Client::Unknown => false,
        };
        if request.wants_websocket() || !local {
            // It is here because the table was full, or because its address had no room
            // (whatever the table is like by now).
            if site.admission.came_in_full(key) {
                site.metrics.connection_limit_hits += 1;
                return Some(http::error_response(Status::ServiceUnavailable, AT_CONNECTION_LIMIT));
            }
            site.metrics.address_limit_hits += 1;
            return Some(http::error_response(Status::TooManyRequests, AT_ADDRESS_LIMIT));
        }
    } else if let Client::Forwarded(ip) = client
        && !site.admission.charge(key, ip)
    {
        // Only a trusted proxy's connection has a forwarded client; it counts against
        // that client from now on, as a direct connection from there would.
        site.metrics.address_limit_hits += 1;
        return Some(http::error_response(Status::TooManyRequests, AT_ADDRESS_LIMIT));
    }
    None
}

/// Who sent `request` over a connection from `peer`: the peer, or when the peer is a
/// proxy named by `--trust-proxy`, the client it forwarded for. A request that came
/// through a proxy the server does not trust has no known client, so it never counts
/// as local or allowed.
fn resolve_client(config: &Config, peer: IpAddr, request: &Request) -> Client {
    admission::resolve_client(peer, request.forwarded_for.as_deref(), |ip| config.is_trusted_proxy(ip))
}

/// The metrics text, with the byte counts of open connections included.
fn render_metrics(site: &Site<'_>) -> String {
    let (live_read, live_written) = (site.live_bytes)();
    let totals = Metrics {
        bytes_received: site.metrics.bytes_received + live_read,
        bytes_sent: site.metrics.bytes_sent + live_written,
        ..site.metrics.clone()
    };
    totals.render(site.stats, site.uptime)
}

/// `GET /turn`: the ICE servers as JSON, under the WebSocket's rules (token, origin), with
/// CORS headers for the origins allowed so that a page can ask before it connects.
fn turn_response(site: &mut Site<'_>, request: &Request) -> Vec<u8> {
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        return http::error_response(Status::MethodNotAllowed, "Only GET and HEAD are served here.");
    }
    if let Some((status, why)) = upgrade_refusal(site.config, request) {
        return http::error_response(status, why);
    }
    let tag = (site.turn_tag)();
    let body = crate::turn::http_body(&site.config.turn, site.unix_time, &tag);
    if !head_only && site.config.turn.issues_credentials() {
        site.metrics.turn_credentials += 1;
    }
    // Past upgrade_refusal, an Origin is one the list allows (or there is no list).
    let cors = request.origin.as_deref().filter(|origin| origin.bytes().all(|b| b.is_ascii_graphic()));
    http::turn_response(&body, cors, head_only)
}

/// Why a WebSocket upgrade may not proceed (token or origin), if it may not.
fn upgrade_refusal(config: &Config, request: &Request) -> Option<(Status, &'static str)> {
    if !config.access_tokens.is_empty() {
        let offered = request.query_param("token").unwrap_or_default();
        if !config.access_tokens.iter().any(|token| constant_time_eq(token.as_bytes(), offered.as_bytes())) {
            return Some((
                Status::Unauthorized,
                "A valid access token is required: add ?token=... to the URL.",
            ));
        }
    }
    if !config.allowed_origins.is_empty()
        && let Some(origin) = request.origin.as_deref()
        && !config.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        return Some((Status::Forbidden, "This origin may not use this signal server."));
    }
    None
}

/// Compares secrets in time that depends only on their lengths, not their contents.
fn constant_time_eq(expected: &[u8], offered: &[u8]) -> bool {
    let mut diff = expected.len() ^ offered.len();
    for (i, &byte) in expected.iter().enumerate() {
        diff |= usize::from(byte ^ offered.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_keeps_its_reserve_for_local_peers_and_refuses_others_with_503() {
        let config = Config::default();
        let mut admission = Admission::new(1, 0);
        let mut metrics = Metrics::default();
        let remote = IpAddr::from([192, 0, 2, 1]);
        let entry = admit(&config, &admission, &mut metrics, remote, || None);
        assert_eq!(entry, Entry::Admit { charge: Some(remote), reserved: false });
        admission.admit(0, Some(remote), false);
        let Entry::Refuse(response) = admit(&config, &admission, &mut metrics, remote, || None) else {
            panic!("a full table admitted a remote peer")
        };
        assert!(response.starts_with(b"HTTP/1.1 503"));
        assert_eq!(metrics.connection_limit_hits, 1);
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let entry = admit(&config, &admission, &mut metrics, loopback, || None);
        // (Loopback is a trusted proxy by default: it counts against whom it names.)
        assert_eq!(entry, Entry::Admit { charge: None, reserved: true });
        // An address of this host counts as local too.
        let entry = admit(&config, &admission, &mut metrics, remote, || Some(remote));
        assert_eq!(entry, Entry::Admit { charge: Some(remote), reserved: true });
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"secret", b""));
    }
}
