//! Arbitrary bytes as one client message into `protocol::parse_call`, and every kind
//! of `Reply` built from fuzzed strings through `Reply::to_json`.
//!
//! Checked: parsing never panics; the fast path for compact signals, wherever it answers,
//! gives what serde_json alone gives; an accepted call says what a plain JSON parser reads
//! in the same message (names, strings, the signal data byte for byte); a refusal has
//! a code that fits the message, and its `error` reply is valid JSON; every reply's
//! JSON parses back to the values it was built from, with strings escaped exactly as
//! `JSON.stringify` (and serde_json) escape them.

#![no_main]

use std::borrow::Cow;

use arbitrary::{Arbitrary, Unstructured};
use diva_signal::fast_path;
use diva_signal::protocol::{Call, ErrorCode, ParseError, RawJson, Reply, parse_call, parse_call_general};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

const KNOWN_CALLS: [&str; 6] = ["ident", "ping", "turn", "join", "signal", "leave"];
/// The calls whose arguments are checked (the original ignores those of `ident` and `ping`;
/// `turn` ignores its own likewise).
const TAKE_ARGUMENTS: [&str; 3] = ["join", "signal", "leave"];

fuzz_target!(|data: &[u8]| {
    let parsed = parse_call(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_fast_path(text);
    }
    match &parsed {
        Ok(call) => check_call(data, call),
        Err(err) => check_refusal(data, err),
    }

    // Replies from fuzzed strings. The same bytes feed them, so the strings are
    // pieces of JSON-looking text, quotes and backslashes included.
    let mut u = Unstructured::new(data);
    let first = String::arbitrary(&mut u).unwrap_or_default();
    let second = String::arbitrary(&mut u).unwrap_or_default();
    let flag = bool::arbitrary(&mut u).unwrap_or_default();
    let code = ErrorCode::ALL[usize::from(u8::arbitrary(&mut u).unwrap_or_default()) % ErrorCode::ALL.len()];
    let candidate = String::arbitrary(&mut u).unwrap_or_default();
    // Signal data from the message itself, else from a fuzzed string sent as data.
    let message = format!(r#"["signal","r:a","r:b",{candidate}]"#);
    check_fast_path(&message);
    let sent = parse_call(message.as_bytes());
    if let Ok(call) = &sent {
        assert!(matches!(call, Call::Signal { .. }), "a signal message parsed as {call:?}");
    }
    let data =
        parsed.as_ref().ok().and_then(signal_data).or_else(|| sent.as_ref().ok().and_then(signal_data));
    check_replies(&first, &second, flag, code, data);
    if let Ok(call) = &parsed {
        // Strings the parser decoded (escapes and all).
        let (a, b) = call_strings(call);
        check_replies(a, b, !flag, code, None);
    }
});

/// Where the fast path takes a message, serde_json takes it too and reads the same call.
fn check_fast_path(text: &str) {
    let Some(fast) = fast_path::compact_signal(text) else { return };
    match parse_call_general(text) {
        Ok(Call::Signal { from, to, data }) => {
            assert_eq!((fast.from, fast.to, fast.data), (from.as_ref(), to.as_ref(), data.get()));
        }
        other => panic!("the fast path took {text:?} as {fast:?}; serde_json: {other:?}"),
    }
}

/// An accepted call agrees with what serde_json reads in the message.
fn check_call(message: &[u8], call: &Call<'_>) {
    let text = std::str::from_utf8(message).expect("an accepted call is UTF-8");
    let items: Vec<&RawValue> = serde_json::from_str(text).expect("an accepted call is a JSON array");
    let name = items.first().map(|raw| serde_json::from_str::<String>(raw.get()));
    assert_eq!(name.and_then(Result::ok).as_deref(), Some(call.name()));
    let strings: Vec<Option<String>> =
        items.iter().skip(1).map(|raw| serde_json::from_str::<String>(raw.get()).ok()).collect();
    let args = items.len() - 1;
    match call {
        // Whatever follows the name is ignored, as the original ignores it.
        Call::Ident | Call::Ping | Call::Turn => {}
        Call::Join { ident, room } => {
            assert_eq!(args, 2);
            assert_eq!(strings[0].as_deref(), Some(ident.as_ref()));
            assert_eq!(strings[1].as_deref(), Some(room.as_ref()));
            assert_borrowed_from(text, ident);
            assert_borrowed_from(text, room);
        }
        Call::Signal { from, to, data } => {
            assert_eq!(args, 3);
            assert_eq!(strings[0].as_deref(), Some(from.as_ref()));
            assert_eq!(strings[1].as_deref(), Some(to.as_ref()));
            assert_borrowed_from(text, from);
            assert_borrowed_from(text, to);
            // The data is the client's text of the fourth element, byte for byte.
            assert_eq!(data.get(), items[3].get());
            assert!(text.contains(data.get()));
            assert_eq!(data.get().trim(), data.get(), "data text carries no surrounding blanks");
            assert_same_json(data.get(), items[3].get());
        }
        Call::Leave { address } => {
            assert_eq!(args, 1);
            assert_eq!(strings[0].as_deref(), Some(address.as_ref()));
            assert_borrowed_from(text, address);
        }
    }
    // A plain parse of the whole message agrees. (serde_json's `Value` is stricter than
    // the JSON grammar in places the signal data may use, such as lone UTF-16 surrogate
    // escapes or numbers beyond f64, so it may fail where the call was rightly taken.)
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let array = value.as_array().expect("an array");
        assert_eq!(array.len(), items.len());
        assert_eq!(array[0].as_str(), Some(call.name()));
    }
}

/// A borrowed string must point into the message (no copies unless there were escapes).
#[allow(clippy::ptr_arg)] // Which variant the Cow is, is the point.
fn assert_borrowed_from(text: &str, value: &Cow<'_, str>) {
    if let Cow::Borrowed(s) = value {
        let start = text.as_ptr() as usize;
        let at = s.as_ptr() as usize;
        assert!(at >= start && at + s.len() <= start + text.len(), "borrowed string outside the message");
    }
}

/// Two JSON texts denote the same value (when serde_json can read them as values).
fn assert_same_json(a: &str, b: &str) {
    if let (Ok(x), Ok(y)) = (serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)) {
        assert_eq!(x, y);
    }
}

/// A refusal's code fits the message; its reply is valid JSON.
fn check_refusal(message: &[u8], err: &ParseError) {
    let json = err.reply().to_json();
    let value: Value = serde_json::from_str(&json).expect("error reply is JSON");
    assert_eq!(value, serde_json::json!(["error", err.call, err.code.as_str(), err.detail]));
    assert!(!err.detail.is_empty());
    let Ok(text) = std::str::from_utf8(message) else {
        assert_eq!((err.code, err.call.as_str()), (ErrorCode::BadJson, ""));
        return;
    };
    let items = serde_json::from_str::<Vec<&RawValue>>(text);
    match err.code {
        ErrorCode::BadJson => {
            assert!(err.call.is_empty());
            assert!(serde_json::from_str::<&RawValue>(text).is_err(), "BadJson for valid JSON");
        }
        ErrorCode::BadRequest => {
            assert!(serde_json::from_str::<&RawValue>(text).is_ok(), "BadRequest for invalid JSON");
            if err.call.is_empty() {
                // Not an array, an empty one, or one whose first element is no string.
                let first = items.as_ref().ok().and_then(|items| items.first().copied());
                assert!(first.is_none_or(|raw| serde_json::from_str::<String>(raw.get()).is_err()));
            } else {
                // Only calls whose arguments matter; `ident` and `ping` take anything.
                assert!(TAKE_ARGUMENTS.contains(&err.call.as_str()), "BadRequest for {:?}", err.call);
            }
        }
        ErrorCode::UnknownCall => {
            assert!(!KNOWN_CALLS.contains(&err.call.as_str()));
            let items = items.expect("UnknownCall for a JSON array");
            let first = items.first().expect("a first element");
            assert_eq!(serde_json::from_str::<String>(first.get()).ok().as_deref(), Some(err.call.as_str()));
        }
        other => panic!("parse_call refused with {other:?}"),
    }
}

fn call_strings<'c>(call: &'c Call<'_>) -> (&'c str, &'c str) {
    match call {
        Call::Ident | Call::Ping | Call::Turn => ("", ""),
        Call::Join { ident, room } => (ident, room),
        Call::Signal { from, to, .. } => (from, to),
        Call::Leave { address } => (address, ""),
    }
}

fn signal_data<'c>(call: &Call<'c>) -> Option<RawJson<'c>> {
    match call {
        Call::Signal { data, .. } => Some(*data),
        _ => None,
    }
}

/// Every reply kind built from `a`, `b`, `flag` and `code` (and `data` when given)
/// encodes to JSON that reads back as the same values, strings escaped as serde_json
/// (and JSON.stringify) escape them.
fn check_replies(a: &str, b: &str, flag: bool, code: ErrorCode, data: Option<RawJson<'_>>) {
    let mut replies = vec![
        Reply::Ident(a),
        Reply::Join { address: a },
        Reply::Stun { own: a, peer: b, initiator: flag },
        Reply::Left { address: a },
        Reply::PeerLeft { own: a, gone: b },
        Reply::Pong,
        Reply::Turn { ice_servers: "[]" },
        Reply::Error { call: a, code, detail: b },
    ];
    replies.extend(data.map(|data| Reply::Signal { to: a, from: b, data }));
    for reply in replies {
        let json = reply.to_json();
        let s = |text: &str| serde_json::to_string(text).expect("a string encodes");
        // The exact text, as JSON.stringify would write it.
        let expected = match reply {
            Reply::Ident(ident) => format!(r#"["ident",{}]"#, s(ident)),
            Reply::Join { address } => format!(r#"["join",{}]"#, s(address)),
            Reply::Stun { own, peer, initiator } => format!(r#"["stun",{},{},{initiator}]"#, s(own), s(peer)),
            Reply::Signal { to, from, data } => format!(r#"["signal",{},{},{}]"#, s(to), s(from), data.get()),
            Reply::Left { address } => format!(r#"["leave",{}]"#, s(address)),
            Reply::PeerLeft { own, gone } => format!(r#"["leave",{},{}]"#, s(own), s(gone)),
            Reply::Pong => r#"["pong"]"#.to_owned(),
            Reply::Turn { ice_servers } => format!(r#"["turn",{ice_servers}]"#),
            Reply::Error { call, code, detail } => {
                format!(r#"["error",{},{},{}]"#, s(call), s(code.as_str()), s(detail))
            }
        };
        assert_eq!(json, expected);
        // And it reads back as JSON with the values it was made from.
        match reply {
            Reply::Signal { to, from, data } => {
                let items: Vec<&RawValue> = serde_json::from_str(&json).expect("a reply is a JSON array");
                let string = |i: usize| serde_json::from_str::<String>(items[i].get()).expect("a string");
                assert_eq!(items.len(), 4);
                assert_eq!((string(0), string(1), string(2)), ("signal".into(), to.into(), from.into()));
                assert_eq!(items[3].get(), data.get());
                // Lone surrogate escapes are valid JSON text, yet serde_json's Value refuses them.
                if let Ok(value) = serde_json::from_str::<Value>(&json) {
                    let back: Value = serde_json::from_str(data.get()).expect("data reads as it did");
                    assert_eq!(value[3], back);
                }
            }
            _ => {
                let value: Value = serde_json::from_str(&json).expect("a reply is JSON");
                let expected = match reply {
                    Reply::Ident(ident) => serde_json::json!(["ident", ident]),
                    Reply::Join { address } => serde_json::json!(["join", address]),
                    Reply::Stun { own, peer, initiator } => serde_json::json!(["stun", own, peer, initiator]),
                    Reply::Left { address } => serde_json::json!(["leave", address]),
                    Reply::PeerLeft { own, gone } => serde_json::json!(["leave", own, gone]),
                    Reply::Pong => serde_json::json!(["pong"]),
                    Reply::Turn { .. } => serde_json::json!(["turn", []]),
                    Reply::Error { call, code, detail } => {
                        serde_json::json!(["error", call, code.as_str(), detail])
                    }
                    Reply::Signal { .. } => unreachable!(),
                };
                assert_eq!(value, expected);
            }
        }
    }
}
