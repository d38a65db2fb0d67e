//! Counters of what the server does, and their Prometheus text exposition.
//! Plain integers bumped by the loop; rendering happens only when scraped.

use std::fmt::Write as _;
use std::time::Duration;

use crate::protocol::{ErrorCode, ReplyKind};

/// Live figures, for the health page and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub connections: usize,
    pub rooms: usize,
    pub addresses: usize,
    /// Bytes queued for all clients and not yet taken by their sockets.
    pub queued_output: u64,
    /// With `--redis-url`: this node in the cluster.
    pub cluster: Option<ClusterStats>,
}

/// A cluster node's figures, for /health and /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterStats {
    /// This node's id for this run (shown as 16 hex digits).
    pub node: u64,
    pub redis_up: bool,
    /// Nodes whose lease is current, as of the last renewal (0 while Redis is away).
    pub live_nodes: u64,
    /// Signals relayed to and from other nodes.
    pub messages_out: u64,
    pub messages_in: u64,
    pub reconnects: u64,
    /// Smoothed time Redis took to answer, in microseconds.
    pub round_trip_micros: u64,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or hung up.
    Client,
    /// An HTTP request was answered.
    HttpDone,
    /// A malformed WebSocket frame.
    ProtocolError,
    /// A frame or message over the size limit.
    TooLarge,
    /// Kept sending over the rate limit.
    RateLimited,
    /// Did not read what it was sent.
    NotReading,
    /// Quiet for longer than the idle timeout.
    Idle,
    /// Did not answer the ping sent when someone else asked for its address.
    ProbeTimeout,
    /// Did not send its request head in time.
    HandshakeTimeout,
    /// The server is shutting down.
    Shutdown,
    /// A socket error.
    Error,
}

impl CloseReason {
    pub const ALL: [CloseReason; 11] = [
        CloseReason::Client,
        CloseReason::HttpDone,
        CloseReason::ProtocolError,
        CloseReason::TooLarge,
        CloseReason::RateLimited,
        CloseReason::NotReading,
        CloseReason::Idle,
        CloseReason::ProbeTimeout,
        CloseReason::HandshakeTimeout,
        CloseReason::Shutdown,
        CloseReason::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::HttpDone => "http_done",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::TooLarge => "too_large",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::NotReading => "not_reading",
            CloseReason::Idle => "idle",
            CloseReason::ProbeTimeout => "probe_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error => "error",
        }
    }
}

// `ALL` is in declaration order, so that `reason as usize` is a reason's place in it and in
// `Metrics::closes`. (tests/tables.rs checks that no variant is missing from it.)
const _: () = {
    let mut rest: &[CloseReason] = &CloseReason::ALL;
    let mut place = 0;
    while let [reason, tail @ ..] = rest {
        assert!(*reason as usize == place, "CloseReason::ALL is not in declaration order");
        rest = tail;
        place += 1;
    }
};

/// Why a TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// Not done within the handshake timeout (a silent client, half a ClientHello).
    Timeout,
    /// The client hung up during it.
    Closed,
    /// What came was not TLS (plain HTTP, random bytes) or broke its rules.
    NotTls,
    /// No version, cipher suite or application protocol in common.
    Incompatible,
    /// The client sent an alert: it did not accept the certificate, say.
    Alert,
    /// Anything else.
    Error,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 6] = [
        TlsFailure::Timeout,
        TlsFailure::Closed,
        TlsFailure::NotTls,
        TlsFailure::Incompatible,
        TlsFailure::Alert,
        TlsFailure::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::Closed => "closed",
            TlsFailure::NotTls => "not_tls",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::Alert => "alert",
            TlsFailure::Error => "error",
        }
    }
}

// As for `CloseReason::ALL`: `failure as usize` is its place in `ALL`.
const _: () = {
    let mut rest: &[TlsFailure] = &TlsFailure::ALL;
    let mut place = 0;
    while let [failure, tail @ ..] = rest {
        assert!(*failure as usize == place, "TlsFailure::ALL is not in declaration order");
        rest = tail;
        place += 1;
    }
};

/// Calls as counted on the way in; `invalid` for messages that did not parse.
pub const CALLS: [&str; 7] = ["ident", "join", "signal", "leave", "ping", "turn", "invalid"];

/// Every counter the server keeps.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub connections_accepted: u64,
    pub websocket_upgrades: u64,
    /// Indexed like [`CALLS`].
    pub messages_received: [u64; CALLS.len()],
    /// Indexed like [`ReplyKind::NAMES`].
    pub messages_sent: [u64; ReplyKind::NAMES.len()],
    /// Indexed like [`ErrorCode::ALL`].
    pub errors: [u64; ErrorCode::ALL.len()],
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Indexed like [`CloseReason::ALL`].
    pub closes: [u64; CloseReason::ALL.len()],
    /// Connections refused with 503 at the connection limit.
    pub connection_limit_hits: u64,
    /// Connections refused with 429 at the limit per address (IPv4 address or IPv6 /64).
    pub address_limit_hits: u64,
    /// Requests answered with an HTTP error instead of a WebSocket (400, 401, 403, 431).
    pub handshake_failures: u64,
    pub accept_errors: u64,
    pub probes_sent: u64,
    /// Connections whose WebSocket buffers were swapped for fresh small ones.
    pub buffers_released: u64,
    /// Stalled clients dropped because queued output reached the server-wide bound.
    pub pressure_drops: u64,
    /// TURN credentials handed out, by `["turn"]` or `GET /turn`.
    pub turn_credentials: u64,
    /// TLS handshakes completed, and failed (indexed like [`TlsFailure::ALL`]).
    pub tls_handshakes: u64,
    pub tls_handshake_failures: [u64; TlsFailure::ALL.len()],
    /// When the served certificate expires, in seconds since the Unix epoch (TLS only).
    pub tls_certificate_expiry: Option<u64>,
    /// Reloads of the certificate and key (SIGHUP) that took, and that failed.
    pub tls_reloads: u64,
    pub tls_reload_failures: u64,
}

impl Metrics {
    pub fn count_call(&mut self, call: Option<&str>) {
        let name = call.unwrap_or("invalid");
        let index = CALLS.iter().position(|&c| c == name);
        debug_assert!(index.is_some(), "the call {name:?} is missing from CALLS");
        if let Some(slot) = self.messages_received.get_mut(index.unwrap_or(CALLS.len() - 1)) {
            *slot += 1;
        }
    }

    pub fn count_sent(&mut self, kind: ReplyKind) {
        let slot = self.messages_sent.get_mut(kind.index());
        debug_assert!(slot.is_some(), "{kind:?} has no place in ReplyKind::NAMES");
        if let Some(slot) = slot {
            *slot += 1;
        }
        if let ReplyKind::Error(code) = kind
            && let Some(slot) = self.errors.get_mut(error_index(code))
        {
            *slot += 1;
        }
    }

    pub fn count_close(&mut self, reason: CloseReason) {
        let slot = self.closes.get_mut(reason as usize);
        debug_assert!(slot.is_some(), "{reason:?} is missing from CloseReason::ALL");
        if let Some(slot) = slot {
            *slot += 1;
        }
    }

    pub fn count_tls_failure(&mut self, failure: TlsFailure) {
        if let Some(slot) = self.tls_handshake_failures.get_mut(failure as usize) {
            *slot += 1;
        }
    }

    /// The Prometheus text exposition (version 0.0.4) of every counter and gauge.
    pub fn render(&self, stats: Stats, uptime: Duration) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP diva_signal_{name} {help}\n# TYPE diva_signal_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "diva_signal_{name}{labels} {value}");
            }
        };
        let one = |value: u64| [(String::new(), value)];
        let by = |label: &str, names: &mut dyn Iterator<Item = &'static str>, values: &[u64]| {
            names
                .zip(values)
                .map(|(name, &value)| (format!("{{{label}=\"{name}\"}}"), value))
                .collect::<Vec<_>>()
        };
        let gauge = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);

        family("uptime_seconds", "gauge", "Seconds since the server started.", &one(uptime.as_secs()));
        family("connections_open", "gauge", "Open client connections.", &one(gauge(stats.connections)));
        family("rooms", "gauge", "Rooms with at least one member.", &one(gauge(stats.rooms)));
        family("addresses", "gauge", "Addresses (room:ident) held.", &one(gauge(stats.addresses)));
        family(
            "outbound_queued_bytes",
            "gauge",
            "Bytes queued for all clients and not yet taken by their sockets.",
            &one(stats.queued_output),
        );
        family(
            "connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            &one(self.connections_accepted),
        );
        family(
            "websocket_upgrades_total",
            "counter",
            "WebSocket handshakes completed.",
            &one(self.websocket_upgrades),
        );
        family(
            "messages_received_total",
            "counter",
            "WebSocket messages received, by call (invalid: did not parse).",
            &by("call", &mut CALLS.into_iter(), &self.messages_received),
        );
        family(
            "messages_sent_total",
            "counter",
            "WebSocket messages sent, by reply type.",
            &by("reply", &mut ReplyKind::NAMES.into_iter(), &self.messages_sent),
        );
        family(
            "errors_total",
            "counter",
            "Error replies sent, by code.",
            &by("code", &mut ErrorCode::ALL.into_iter().map(ErrorCode::as_str), &self.errors),
        );
        family(
            "received_bytes_total",
            "counter",
            "Bytes read from client sockets.",
            &one(self.bytes_received),
        );
        family("sent_bytes_total", "counter", "Bytes written to client sockets.", &one(self.bytes_sent));
        family(
            "closes_total",
            "counter",
            "Connections ended, by reason.",
            &by("reason", &mut CloseReason::ALL.into_iter().map(CloseReason::as_str), &self.closes),
        );
        let errors_of = |code: ErrorCode| self.errors.get(error_index(code)).copied().unwrap_or(0);
        family(
            "rate_limited_total",
            "counter",
            "Messages refused for going over the rate limit.",
            &one(errors_of(ErrorCode::RateLimited)),
        );
        family(
            "limit_hits_total",
            "counter",
            "Requests refused at a limit, by limit.",
            &[
                ("{limit=\"connections\"}".to_owned(), self.connection_limit_hits),
                ("{limit=\"connections_per_address\"}".to_owned(), self.address_limit_hits),
                ("{limit=\"idents_or_room\"}".to_owned(), errors_of(ErrorCode::Limit)),
                (
                    "{limit=\"message_size\"}".to_owned(),
                    self.closes.get(CloseReason::TooLarge as usize).copied().unwrap_or(0),
                ),
                (
                    "{limit=\"outbound_buffer\"}".to_owned(),
                    self.closes.get(CloseReason::NotReading as usize).copied().unwrap_or(0),
                ),
            ],
        );
        family(
            "handshake_failures_total",
            "counter",
            "HTTP requests refused instead of upgraded (bad head, token, origin).",
            &one(self.handshake_failures),
        );
        family("accept_errors_total", "counter", "Failed accept() calls.", &one(self.accept_errors));
        family(
            "probes_total",
            "counter",
            "Liveness pings sent to holders of contested addresses.",
            &one(self.probes_sent),
        );
        family(
            "buffers_released_total",
            "counter",
            "Connections given fresh small WebSocket buffers: after a message over 4 KiB, or quiet for a second after more than 512 bytes.",
            &one(self.buffers_released),
        );
        family(
            "pressure_drops_total",
            "counter",
            "Stalled clients dropped because queued output reached --max-outbound-total.",
            &one(self.pressure_drops),
        );
        family(
            "turn_credentials_total",
            "counter",
            "TURN credentials handed out (the turn call and GET /turn).",
            &one(self.turn_credentials),
        );
        if let Some(expiry) = self.tls_certificate_expiry {
            family("tls_handshakes_total", "counter", "TLS handshakes completed.", &one(self.tls_handshakes));
            family(
                "tls_handshake_failures_total",
                "counter",
                "TLS handshakes failed, by reason.",
                &by(
                    "reason",
                    &mut TlsFailure::ALL.into_iter().map(TlsFailure::as_str),
                    &self.tls_handshake_failures,
                ),
            );
            family(
                "tls_certificate_expiry_timestamp_seconds",
                "gauge",
                "When the served certificate expires (its notAfter), in seconds since the Unix epoch.",
                &one(expiry),
            );
            family(
                "tls_reloads_total",
                "counter",
                "Reloads of the certificate and key (SIGHUP), by result.",
                &[
                    ("{result=\"ok\"}".to_owned(), self.tls_reloads),
                    ("{result=\"failed\"}".to_owned(), self.tls_reload_failures),
                ],
            );
        }
        if let Some(cluster) = stats.cluster {
            family(
                "redis_up",
                "gauge",
                "1 while the cluster's Redis connection is up.",
                &one(u64::from(cluster.redis_up)),
            );
            family(
                "cluster_live_nodes",
                "gauge",
                "Cluster nodes with a current lease.",
                &one(cluster.live_nodes),
            );
            family(
                "cluster_messages_out_total",
                "counter",
                "Signals relayed to clients on other nodes.",
                &one(cluster.messages_out),
            );
            family(
                "cluster_messages_in_total",
                "counter",
                "Signals from other nodes for clients here.",
                &one(cluster.messages_in),
            );
            family(
                "redis_reconnects_total",
                "counter",
                "Redis connections made again after one was lost.",
                &one(cluster.reconnects),
            );
            let seconds = cluster.round_trip_micros as f64 / 1e6;
            let _ = writeln!(
                out,
                "# HELP diva_signal_redis_round_trip_seconds Smoothed time Redis takes to answer.\n# TYPE diva_signal_redis_round_trip_seconds gauge\ndiva_signal_redis_round_trip_seconds {seconds}"
            );
        }
        out
    }
}

fn error_index(code: ErrorCode) -> usize {
    let index = ErrorCode::ALL.iter().position(|&c| c == code);
    debug_assert!(index.is_some(), "{code:?} is missing from ErrorCode::ALL");
    index.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_help_and_type_and_counters_end_in_total() {
        let mut metrics = Metrics::default();
        metrics.count_call(Some("join"));
        metrics.count_call(None);
        metrics.count_sent(ReplyKind::Error(ErrorCode::Taken));
        metrics.count_close(CloseReason::Idle);
        metrics.count_tls_failure(TlsFailure::Timeout);
        metrics.tls_certificate_expiry = Some(1_900_000_000);
        let text = metrics.render(
            Stats { connections: 2, rooms: 1, addresses: 3, queued_output: 0, cluster: None },
            Duration::from_secs(7),
        );
        let mut typed = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type line");
                typed.insert(name.to_owned(), kind.to_owned());
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().expect("sample name");
                assert!(typed.contains_key(name), "sample before its TYPE: {line}");
                let value = line.rsplit(' ').next().expect("value");
                value.parse::<u64>().expect("integer value");
            }
        }
        assert!(text.contains("diva_signal_messages_received_total{call=\"join\"} 1\n"));
        assert!(text.contains("diva_signal_messages_received_total{call=\"invalid\"} 1\n"));
        assert!(text.contains("diva_signal_errors_total{code=\"taken\"} 1\n"));
        assert!(text.contains("diva_signal_messages_sent_total{reply=\"error\"} 1\n"));
        assert!(text.contains("diva_signal_closes_total{reason=\"idle\"} 1\n"));
        assert!(text.contains("diva_signal_addresses 3\n"));
        assert!(text.contains("diva_signal_uptime_seconds 7\n"));
        assert!(text.contains("diva_signal_tls_handshake_failures_total{reason=\"timeout\"} 1\n"));
        assert!(text.contains("diva_signal_tls_certificate_expiry_timestamp_seconds 1900000000\n"));
        let plain = Metrics::default().render(
            Stats { connections: 0, rooms: 0, addresses: 0, queued_output: 0, cluster: None },
            Duration::ZERO,
        );
        assert!(!plain.contains("tls"), "a plain server shows no TLS figures");
    }
}
