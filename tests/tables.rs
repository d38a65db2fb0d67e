//! The enum tables are complete: `CloseReason::ALL`, `ErrorCode::ALL`, the call names
//! `metrics::CALLS`, `ReplyKind::NAMES` and `TlsFailure::ALL`. Each test holds an exhaustive `match`, so a new
//! variant stops the build here until it is added to the match, and to the table the test
//! names. Then the test checks that every variant has its own place in the table, that the
//! names are unique, and that counting a variant bumps its own counter and no other.
//!
//! `ALL` tables are in declaration order (a `const` assertion beside each makes sure), so a
//! variant inserted without its place fails the build; one appended to the enum and to the
//! match here but not to `ALL` is caught when counted: `Metrics` asserts in debug builds
//! (all tests) that nothing it counts falls outside its table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

use std::collections::HashSet;

use diva_signal::metrics::{CALLS, CloseReason, Metrics, TlsFailure};
use diva_signal::protocol::{Call, ErrorCode, Reply, ReplyKind, parse_call};

/// Names are unique and none is empty.
fn assert_unique(what: &str, names: &[&str]) {
    let set: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(set.len(), names.len(), "{what}: a name is there twice: {names:?}");
    assert!(!set.contains(""), "{what}: an empty name");
}

#[test]
fn close_reasons_are_all_in_the_table() {
    // Add a new reason here, and to CloseReason::ALL: with the label it has in /metrics.
    let label = |reason: CloseReason| match reason {
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
    };
    let labels: Vec<&str> = CloseReason::ALL.iter().map(|&reason| label(reason)).collect();
    assert_unique("CloseReason", &labels);
    for (place, reason) in CloseReason::ALL.into_iter().enumerate() {
        assert_eq!(reason as usize, place, "{reason:?}");
        assert_eq!(reason.as_str(), label(reason));
        let mut metrics = Metrics::default();
        metrics.count_close(reason);
        assert_eq!(metrics.closes.get(place), Some(&1), "{reason:?}");
        assert_eq!(metrics.closes.iter().sum::<u64>(), 1, "{reason:?}");
    }
}

#[test]
fn tls_failures_are_all_in_the_table() {
    // Add a new reason here, and to TlsFailure::ALL: with the label it has in /metrics.
    let label = |failure: TlsFailure| match failure {
        TlsFailure::Timeout => "timeout",
        TlsFailure::Closed => "closed",
        TlsFailure::NotTls => "not_tls",
        TlsFailure::Incompatible => "incompatible",
        TlsFailure::Alert => "alert",
        TlsFailure::Error => "error",
    };
    let labels: Vec<&str> = TlsFailure::ALL.iter().map(|&failure| label(failure)).collect();
    assert_unique("TlsFailure", &labels);
    for (place, failure) in TlsFailure::ALL.into_iter().enumerate() {
        assert_eq!(failure as usize, place, "{failure:?}");
        assert_eq!(failure.as_str(), label(failure));
        let mut metrics = Metrics::default();
        metrics.count_tls_failure(failure);
        assert_eq!(metrics.tls_handshake_failures.get(place), Some(&1), "{failure:?}");
        assert_eq!(metrics.tls_handshake_failures.iter().sum::<u64>(), 1, "{failure:?}");
    }
}

#[test]
fn error_codes_are_all_in_the_table() {
    // Add a new code here, and to ErrorCode::ALL: with the word sent in `error` replies.
    let word = |code: ErrorCode| match code {
        ErrorCode::BadJson => "bad-json",
        ErrorCode::BadRequest => "bad-request",
        ErrorCode::UnknownCall => "unknown-call",
        ErrorCode::Taken => "taken",
        ErrorCode::AlreadyJoined => "already-joined",
        ErrorCode::NotOwner => "not-owner",
        ErrorCode::UnknownPeer => "unknown-peer",
        ErrorCode::OtherRoom => "other-room",
        ErrorCode::PeerBusy => "peer-busy",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::Limit => "limit",
        ErrorCode::RateLimited => "rate-limited",
        ErrorCode::Internal => "internal",
        ErrorCode::ClusterUnavailable => "cluster-unavailable",
    };
    let words: Vec<&str> = ErrorCode::ALL.iter().map(|&code| word(code)).collect();
    assert_unique("ErrorCode", &words);
    for (place, code) in ErrorCode::ALL.into_iter().enumerate() {
        assert_eq!(code as usize, place, "{code:?}");
        assert_eq!(code.as_str(), word(code));
        let mut metrics = Metrics::default();
        metrics.count_sent(ReplyKind::Error(code));
        assert_eq!(metrics.errors.get(place), Some(&1), "{code:?}");
        assert_eq!(metrics.errors.iter().sum::<u64>(), 1, "{code:?}");
    }
}

#[test]
fn call_names_are_all_counted() {
    // One message per call. Add a new call here, and its name to metrics::CALLS.
    let messages = [
        r#"["ident"]"#,
        r#"["join","a","r"]"#,
        r#"["signal","r:a","r:b",{}]"#,
        r#"["leave","r:a"]"#,
        r#"["ping"]"#,
        r#"["turn"]"#,
    ];
    let mut names = Vec::new();
    for message in messages {
        let call = parse_call(message.as_bytes()).expect(message);
        let name = match call {
            Call::Ident => "ident",
            Call::Join { .. } => "join",
            Call::Signal { .. } => "signal",
            Call::Leave { .. } => "leave",
            Call::Ping => "ping",
            Call::Turn => "turn",
        };
        assert_eq!(call.name(), name);
        names.push(name);
    }
    assert_unique("Call", &names);
    // CALLS: every call, then "invalid", where count_call puts what did not parse.
    assert_unique("CALLS", &CALLS);
    assert_eq!(CALLS.last(), Some(&"invalid"));
    let known: HashSet<&str> = CALLS[..CALLS.len() - 1].iter().copied().collect();
    assert_eq!(known, names.iter().copied().collect::<HashSet<_>>(), "CALLS and the calls differ");
    let counted = |call: Option<&str>| {
        let mut metrics = Metrics::default();
        metrics.count_call(call);
        assert_eq!(metrics.messages_received.iter().sum::<u64>(), 1, "{call:?}");
        metrics.messages_received.iter().position(|&n| n == 1)
    };
    for (place, name) in CALLS.into_iter().enumerate() {
        assert_eq!(counted(Some(name)), Some(place), "{name}");
    }
    assert_eq!(counted(None), Some(CALLS.len() - 1));
}

#[test]
fn reply_kinds_are_all_named() {
    let Ok(Call::Signal { data, .. }) = parse_call(br#"["signal","r:a","r:b",{}]"#) else {
        panic!("a signal")
    };
    // One reply of each kind. Add a new reply or kind here, and its name to ReplyKind::NAMES.
    let replies: [Reply<'_>; 9] = [
        Reply::Ident("a"),
        Reply::Join { address: "r:a" },
        Reply::Stun { own: "r:a", peer: "r:b", initiator: true },
        Reply::Signal { to: "r:b", from: "r:a", data },
        Reply::Left { address: "r:a" },
        Reply::PeerLeft { own: "r:b", gone: "r:a" },
        Reply::Pong,
        Reply::Turn { ice_servers: "[]" },
        Reply::Error { call: "join", code: ErrorCode::Taken, detail: "taken" },
    ];
    let mut kinds: Vec<ReplyKind> = Vec::new();
    for reply in replies {
        let kind = match reply {
            Reply::Ident(_) => ReplyKind::Ident,
            Reply::Join { .. } => ReplyKind::Join,
            Reply::Stun { .. } => ReplyKind::Stun,
            Reply::Signal { .. } => ReplyKind::Signal,
            Reply::Left { .. } | Reply::PeerLeft { .. } => ReplyKind::Leave,
            Reply::Pong => ReplyKind::Pong,
            Reply::Turn { .. } => ReplyKind::Turn,
            Reply::Error { code, .. } => ReplyKind::Error(code),
        };
        assert_eq!(reply.kind(), kind);
        // The kind's name is the reply's name on the wire.
        let json: serde_json::Value = serde_json::from_str(&reply.to_json()).expect("JSON");
        assert_eq!(ReplyKind::NAMES.get(kind.index()).copied(), json[0].as_str(), "{reply:?}");
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    assert_unique("ReplyKind::NAMES", &ReplyKind::NAMES);
    let places: HashSet<usize> = kinds.iter().map(|kind| kind.index()).collect();
    assert_eq!(places.len(), kinds.len(), "two kinds share a place");
    assert_eq!(places, (0..ReplyKind::NAMES.len()).collect(), "a name in ReplyKind::NAMES has no kind");
    for kind in kinds {
        let mut metrics = Metrics::default();
        metrics.count_sent(kind);
        assert_eq!(metrics.messages_sent.get(kind.index()), Some(&1), "{kind:?}");
        assert_eq!(metrics.messages_sent.iter().sum::<u64>(), 1, "{kind:?}");
    }
}
