//! The wire protocol: bytes of one WebSocket message in, a typed [`Call`] out;
//! a typed [`Reply`] in, JSON text out. Pure: no sockets, no state.
//!
//! Calls and replies are JSON arrays whose first element names them, as in the
//! original DIVA.EXCHANGE signal server v2.2.x (see docs/PROTOCOL.md).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::value::RawValue;

use crate::fast_path;
use crate::json_text::needs_escape;

/// One parsed client call. Strings borrow from the message where they can.
#[derive(Debug, PartialEq)]
pub enum Call<'a> {
    /// `["ident"]`: ask for a fresh random ident. Arguments after the name are ignored,
    /// as the original ignores them.
    Ident,
    /// `["join", IDENT, ROOM]`: take the address `ROOM:IDENT`.
    Join { ident: Cow<'a, str>, room: Cow<'a, str> },
    /// `["signal", FROM, TO, DATA]`: relay DATA from address FROM to address TO.
    Signal {
        from: Cow<'a, str>,
        to: Cow<'a, str>,
        /// The client's JSON text of DATA, forwarded byte for byte.
        data: RawJson<'a>,
    },
    /// `["leave", ADDRESS]`: give an address up.
    Leave { address: Cow<'a, str> },
    /// `["ping"]`: liveness check, answered with `["pong"]`. Arguments after the name (a
    /// client's timestamp, say) are ignored, as the original ignores them.
    Ping,
    /// `["turn"]`: ask for ICE servers (TURN credentials, STUN URIs). Arguments after the
    /// name are ignored, as for `ping`. The server answers it, not the room table: the
    /// answer needs the configuration and the clock.
    Turn,
}

impl Call<'_> {
    /// The call's name as it appears on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Ident => "ident",
            Call::Join { .. } => "join",
            Call::Signal { .. } => "signal",
            Call::Leave { .. } => "leave",
            Call::Ping => "ping",
            Call::Turn => "turn",
        }
    }
}

/// The text of one JSON value exactly as the client sent it. Only the parser makes
/// these, so the text is always valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    pub fn get(&self) -> &'a str {
        self.0
    }
}

/// Why a call was refused. The code is the stable word sent in `error` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message is not JSON.
    BadJson,
    /// JSON, but not an array whose first element is a string, or wrong arguments.
    BadRequest,
    /// The call's name is not one we know.
    UnknownCall,
    /// The address is held by another connection.
    Taken,
    /// This connection already holds the address.
    AlreadyJoined,
    /// The address named as sender is not held by this connection.
    NotOwner,
    /// No connection holds the address named as recipient.
    UnknownPeer,
    /// `signal` between addresses of different rooms.
    OtherRoom,
    /// `signal` to a client whose queue is full, or holds all this sender may queue for it.
    PeerBusy,
    /// A message over the size limit.
    TooLarge,
    /// A per-connection or per-room limit is reached.
    Limit,
    /// Too many messages in too short a time.
    RateLimited,
    /// The server could not do it (for example, no randomness available).
    Internal,
    /// A cluster node without its Redis connection: the call needs the other nodes.
    ClusterUnavailable,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownCall,
        ErrorCode::Taken,
        ErrorCode::AlreadyJoined,
        ErrorCode::NotOwner,
        ErrorCode::UnknownPeer,
        ErrorCode::OtherRoom,
        ErrorCode::PeerBusy,
        ErrorCode::TooLarge,
        ErrorCode::Limit,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::ClusterUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
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
        }
    }
}

// `ALL` is in declaration order: `code as usize` is a code's place in it. (tests/tables.rs
// checks that no variant is missing from it.)
const _: () = {
    let mut rest: &[ErrorCode] = &ErrorCode::ALL;
    let mut place = 0;
    while let [code, tail @ ..] = rest {
        assert!(*code as usize == place, "ErrorCode::ALL is not in declaration order");
        rest = tail;
        place += 1;
    }
};

/// A call that could not be parsed: what to answer with.
#[derive(Debug, PartialEq)]
pub struct ParseError {
    /// The call's name when it could be read, else "".
    pub call: String,
    pub code: ErrorCode,
    pub detail: &'static str,
}

impl ParseError {
    fn new(call: &str, code: ErrorCode, detail: &'static str) -> Self {
        ParseError { call: call.to_owned(), code, detail }
    }

    /// The failure for a message that is not UTF-8 text (a binary frame can be anything).
    pub fn not_utf8() -> Self {
        ParseError::new("", ErrorCode::BadJson, "message is not UTF-8 text")
    }

    /// The `error` reply for this failure.
    pub fn reply(&self) -> Reply<'_> {
        Reply::Error { call: &self.call, code: self.code, detail: self.detail }
    }
}

/// Parses one message (text or binary frame payload) into a call.
pub fn parse_call(message: &[u8]) -> Result<Call<'_>, ParseError> {
    let text = std::str::from_utf8(message).map_err(|_| ParseError::not_utf8())?;
    parse_call_text(text)
}

/// Parses one message already known to be text (a WebSocket text frame, whose UTF-8
/// tungstenite has checked).
pub fn parse_call_text(text: &str) -> Result<Call<'_>, ParseError> {
    if let Some(signal) = fast_path::compact_signal(text) {
        return Ok(Call::Signal {
            from: Cow::Borrowed(signal.from),
            to: Cow::Borrowed(signal.to),
            data: RawJson(signal.data),
        });
    }
    parse_call_general(text)
}

/// [`parse_call_text`] by serde_json alone, for any message: what it does when the fast
/// path for compact signals declines. Public so that the fuzz target can compare the two.
pub fn parse_call_general(text: &str) -> Result<Call<'_>, ParseError> {
    let items: CallItems<'_> = serde_json::from_str(text).map_err(|_| {
        // serde_json gives up at the first sign that this is no array (a `{`, or a number
        // too large for an f64) without reading on, so whether the message is JSON at
        // all takes a look of its own.
        if serde_json::from_str::<&RawValue>(text).is_ok() {
            ParseError::new("", ErrorCode::BadRequest, "message must be a JSON array")
        } else {
            ParseError::new("", ErrorCode::BadJson, "message is not valid JSON")
        }
    })?;
    let Some((&name, args)) = items.kept().split_first() else {
        return Err(ParseError::new("", ErrorCode::BadRequest, "empty array: no call name"));
    };
    let name = string_arg(name)
        .ok_or_else(|| ParseError::new("", ErrorCode::BadRequest, "call name must be a string"))?;
    let call = match (name.as_ref(), args) {
        // The original answers these whatever follows the name; so do we.
        ("ident", _) => Call::Ident,
        ("ping", _) => Call::Ping,
        ("turn", _) => Call::Turn,
        ("join", [ident, room]) => Call::Join {
            ident: string_arg(ident).ok_or_else(|| bad_args("join"))?,
            room: string_arg(room).ok_or_else(|| bad_args("join"))?,
        },
        ("signal", [from, to, data]) => Call::Signal {
            from: string_arg(from).ok_or_else(|| bad_args("signal"))?,
            to: string_arg(to).ok_or_else(|| bad_args("signal"))?,
            data: RawJson(data.get()),
        },
        ("leave", [address]) => {
            Call::Leave { address: string_arg(address).ok_or_else(|| bad_args("leave"))? }
        }
        ("join" | "signal" | "leave", _) => return Err(bad_args(&name)),
        (other, _) => {
            return Err(ParseError::new(other, ErrorCode::UnknownCall, "unknown call"));
        }
    };
    Ok(call)
}

/// The elements of a call array, without a heap allocation: every call takes at most three
/// arguments, so keeping the first [`CallItems::KEPT`] elements is enough to tell a call with
/// too many arguments (the rest are still checked to be valid JSON, then dropped).
struct CallItems<'a> {
    items: [&'a RawValue; CallItems::KEPT],
    len: usize,
}

impl<'a> CallItems<'a> {
    const KEPT: usize = 5;

    fn kept(&self) -> &[&'a RawValue] {
        self.items.get(..self.len.min(Self::KEPT)).unwrap_or_default()
    }
}

impl<'de> serde_core::Deserialize<'de> for CallItems<'de> {
    fn deserialize<D: serde_core::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> serde_core::de::Visitor<'de> for Items {
            type Value = CallItems<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON array")
            }

            fn visit_seq<A: serde_core::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = CallItems { items: [RawValue::NULL; CallItems::KEPT], len: 0 };
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    if let Some(slot) = out.items.get_mut(out.len) {
                        *slot = item;
                    }
                    out.len += 1;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Items)
    }
}

fn bad_args(call: &str) -> ParseError {
    let detail = match call {
        "join" => "join takes two strings: [\"join\", IDENT, ROOM]",
        "signal" => "signal takes two address strings and data: [\"signal\", FROM, TO, DATA]",
        _ => "leave takes one address string: [\"leave\", ADDRESS]",
    };
    ParseError::new(call, ErrorCode::BadRequest, detail)
}

/// A JSON string argument; borrowed unless it contains escapes.
fn string_arg(raw: &RawValue) -> Option<Cow<'_, str>> {
    let json = raw.get();
    let quoted = json.strip_prefix('"')?.strip_suffix('"')?;
    // serde_json has already checked this is one valid JSON string, so without a
    // backslash its text is exactly what lies between the quotes.
    if !quoted.contains('\\') {
        return Some(Cow::Borrowed(quoted));
    }
    serde_json::from_str::<String>(json).ok().map(Cow::Owned)
}

/// One message from the server to a client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply<'a> {
    /// `["ident", IDENT]`
    Ident(&'a str),
    /// `["join", ADDRESS]`: the joiner now holds ADDRESS.
    Join { address: &'a str },
    /// `["stun", OWN, PEER, INITIATOR]`: connect OWN to PEER; the initiator sends the offer.
    Stun { own: &'a str, peer: &'a str, initiator: bool },
    /// `["signal", TO, FROM, DATA]`
    Signal { to: &'a str, from: &'a str, data: RawJson<'a> },
    /// `["leave", ADDRESS]` to its former holder.
    Left { address: &'a str },
    /// `["leave", OWN, GONE]` to the members still in the room.
    PeerLeft { own: &'a str, gone: &'a str },
    /// `["pong"]`
    Pong,
    /// `["turn", ICE_SERVERS]`: the JSON text of the ICE servers array, made by the server.
    Turn { ice_servers: &'a str },
    /// `["error", CALL, CODE, DETAIL]`
    Error { call: &'a str, code: ErrorCode, detail: &'a str },
}

/// What kind of reply a message is, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Ident,
    Join,
    Stun,
    Signal,
    Leave,
    Pong,
    Turn,
    Error(ErrorCode),
}

impl ReplyKind {
    /// Names of the kinds, indexed by [`ReplyKind::index`].
    pub const NAMES: [&'static str; 8] =
        ["ident", "join", "stun", "signal", "leave", "pong", "turn", "error"];

    pub fn index(self) -> usize {
        match self {
            ReplyKind::Ident => 0,
            ReplyKind::Join => 1,
            ReplyKind::Stun => 2,
            ReplyKind::Signal => 3,
            ReplyKind::Leave => 4,
            ReplyKind::Pong => 5,
            ReplyKind::Turn => 6,
            ReplyKind::Error(_) => 7,
        }
    }
}

impl Reply<'_> {
    pub fn kind(&self) -> ReplyKind {
        match self {
            Reply::Ident(_) => ReplyKind::Ident,
            Reply::Join { .. } => ReplyKind::Join,
            Reply::Stun { .. } => ReplyKind::Stun,
            Reply::Signal { .. } => ReplyKind::Signal,
            Reply::Left { .. } | Reply::PeerLeft { .. } => ReplyKind::Leave,
            Reply::Pong => ReplyKind::Pong,
            Reply::Turn { .. } => ReplyKind::Turn,
            Reply::Error { code, .. } => ReplyKind::Error(*code),
        }
    }

    /// The reply as compact JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.size_hint());
        out.push('[');
        match *self {
            Reply::Ident(ident) => {
                out.push_str("\"ident\",");
                push_json_str(&mut out, ident);
            }
            Reply::Join { address } => {
                out.push_str("\"join\",");
                push_json_str(&mut out, address);
            }
            Reply::Stun { own, peer, initiator } => {
                out.push_str("\"stun\",");
                push_json_str(&mut out, own);
                out.push(',');
                push_json_str(&mut out, peer);
                out.push_str(if initiator { ",true" } else { ",false" });
            }
            Reply::Signal { to, from, data } => {
                out.push_str("\"signal\",");
                push_json_str(&mut out, to);
                out.push(',');
                push_json_str(&mut out, from);
                out.push(',');
                out.push_str(data.get());
            }
            Reply::Left { address } => {
                out.push_str("\"leave\",");
                push_json_str(&mut out, address);
            }
            Reply::PeerLeft { own, gone } => {
                out.push_str("\"leave\",");
                push_json_str(&mut out, own);
                out.push(',');
                push_json_str(&mut out, gone);
            }
            Reply::Pong => out.push_str("\"pong\""),
            Reply::Turn { ice_servers } => {
                out.push_str("\"turn\",");
                out.push_str(ice_servers);
            }
            Reply::Error { call, code, detail } => {
                out.push_str("\"error\",");
                push_json_str(&mut out, call);
                out.push(',');
                push_json_str(&mut out, code.as_str());
                out.push(',');
                push_json_str(&mut out, detail);
            }
        }
        out.push(']');
        out
    }

    /// Exact for `signal`, the reply sent most: a buffer filled to capacity becomes the frame
    /// payload without a second allocation (tungstenite turns it into `Bytes`).
    fn size_hint(&self) -> usize {
        match self {
            // ["signal","TO","FROM",DATA]
            Reply::Signal { to, from, data } => 17 + json_str_len(to) + json_str_len(from) + data.get().len(),
            _ => 64,
        }
    }
}

/// Appends `value` as a JSON string literal, escaped the way JSON.stringify does.
fn push_json_str(out: &mut String, value: &str) {
    out.push('"');
    if is_plain(value) {
        out.push_str(value);
        out.push('"');
        return;
    }
    // Idents and rooms rarely need escapes: copy runs of plain bytes whole. Every byte that
    // needs one is ASCII, so splitting around it keeps the rest valid UTF-8.
    let mut rest = value;
    while let Some(at) = rest.bytes().position(needs_escape) {
        let (plain, special) = rest.split_at(at);
        out.push_str(plain);
        if let Some(&byte) = special.as_bytes().first() {
            push_escaped(out, byte);
        }
        rest = special.get(1..).unwrap_or_default();
    }
    out.push_str(rest);
    out.push('"');
}

/// The length of `value` escaped by [`push_json_str`], without its quotes.
fn json_str_len(value: &str) -> usize {
    if is_plain(value) {
        return value.len();
    }
    value
        .bytes()
        .map(|byte| if needs_escape(byte) { short_escape(byte).map_or(6, str::len) } else { 1 })
        .sum()
}

/// True when no byte of `value` needs an escape, as for nearly every ident and room.
/// Without an early exit the compiler checks many bytes per instruction, which for
/// addresses beats stopping at the first byte to escape.
fn is_plain(value: &str) -> bool {
    !value.bytes().fold(false, |any, byte| any | needs_escape(byte))
}

/// JSON.stringify's two-character escapes; other control characters become `\u00XX`.
fn short_escape(byte: u8) -> Option<&'static str> {
    match byte {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        b'\n' => Some("\\n"),
        b'\r' => Some("\\r"),
        b'\t' => Some("\\t"),
        0x08 => Some("\\b"),
        0x0c => Some("\\f"),
        _ => None,
    }
}

fn push_escaped(out: &mut String, byte: u8) {
    match short_escape(byte) {
        Some(escape) => out.push_str(escape),
        None => {
            let _ = write!(out, "\\u{byte:04x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every control character, the characters JSON escapes, and some that it does not.
    fn every_special_character() -> String {
        let mut all: String = (0u8..0x20).map(char::from).collect();
        all.push_str("\"\\/\u{7f}é😀");
        all
    }

    fn raw(json: &str) -> RawJson<'_> {
        let value: &RawValue = serde_json::from_str(json).expect("test JSON");
        RawJson(value.get())
    }

    #[test]
    fn parses_every_call() {
        assert_eq!(parse_call(br#"["ident"]"#), Ok(Call::Ident));
        assert_eq!(parse_call(br#" [ "ping" ] "#), Ok(Call::Ping));
        assert_eq!(
            parse_call(br#"["join","abc","room"]"#),
            Ok(Call::Join { ident: "abc".into(), room: "room".into() })
        );
        assert_eq!(parse_call(br#"["leave","r:a"]"#), Ok(Call::Leave { address: "r:a".into() }));
        let Ok(Call::Signal { from, to, data }) = parse_call(br#"["signal","r:a","r:b", {"sdp" : "x"} ]"#)
        else {
            panic!("signal did not parse");
        };
        assert_eq!((from.as_ref(), to.as_ref()), ("r:a", "r:b"));
        assert_eq!(data.get(), r#"{"sdp" : "x"}"#);
    }

    #[test]
    fn ping_and_ident_ignore_what_follows_their_name() {
        assert_eq!(parse_call(br#"["ping",1712345678901]"#), Ok(Call::Ping));
        assert_eq!(parse_call(br#"["ping","a",{"b":[]},null,1,2,3,4,5]"#), Ok(Call::Ping));
        assert_eq!(parse_call(br#"["ident","mine"]"#), Ok(Call::Ident));
        assert_eq!(parse_call(br#"["ident",1,2,3,4,5,6,7]"#), Ok(Call::Ident));
        // The whole message is still read as JSON first.
        let err = parse_call(br#"["ping",1,oops]"#).expect_err("not JSON");
        assert_eq!((err.call.as_str(), err.code), ("", ErrorCode::BadJson));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        assert_eq!(
            parse_call(br#"["join","a\u0062c","r\"m"]"#),
            Ok(Call::Join { ident: "abc".into(), room: "r\"m".into() })
        );
    }

    #[test]
    fn rejects_malformed_messages_with_a_code() {
        let code = |bytes: &[u8]| parse_call(bytes).map(|_| ()).map_err(|e| (e.call, e.code));
        assert_eq!(code(b"not json"), Err((String::new(), ErrorCode::BadJson)));
        assert_eq!(code(b"[\"ident\""), Err((String::new(), ErrorCode::BadJson)));
        assert_eq!(code(&[0xff, 0xfe]), Err((String::new(), ErrorCode::BadJson)));
        assert_eq!(code(b"{\"a\":1}"), Err((String::new(), ErrorCode::BadRequest)));
        // Found by fuzzing: an object that is not valid JSON was called a bad request, and
        // a number too large for an f64 (valid JSON) was called bad JSON.
        assert_eq!(code(br#"{"call"io:"j"n}"#), Err((String::new(), ErrorCode::BadJson)));
        assert_eq!(code(b"{"), Err((String::new(), ErrorCode::BadJson)));
        assert_eq!(code(b"7e99999"), Err((String::new(), ErrorCode::BadRequest)));
        assert_eq!(code(b"\"ident\""), Err((String::new(), ErrorCode::BadRequest)));
        assert_eq!(code(b"[]"), Err((String::new(), ErrorCode::BadRequest)));
        assert_eq!(code(b"[1]"), Err((String::new(), ErrorCode::BadRequest)));
        assert_eq!(code(b"[\"nope\"]"), Err(("nope".into(), ErrorCode::UnknownCall)));
        assert_eq!(code(b"[\"join\",\"a\"]"), Err(("join".into(), ErrorCode::BadRequest)));
        assert_eq!(code(b"[\"join\",\"a\",2]"), Err(("join".into(), ErrorCode::BadRequest)));
        assert_eq!(code(b"[\"signal\",\"a\",\"b\"]"), Err(("signal".into(), ErrorCode::BadRequest)));
        assert_eq!(code(b"[\"signal\",1,\"b\",3]"), Err(("signal".into(), ErrorCode::BadRequest)));
        assert_eq!(code(b"[\"leave\"]"), Err(("leave".into(), ErrorCode::BadRequest)));
        // More elements than any call takes: still a bad request for a known call, and
        // the elements past the ones kept must still be valid JSON.
        let long = br#"["signal","a","b",1,2,3,4,5,6,7,8]"#;
        assert_eq!(code(long), Err(("signal".into(), ErrorCode::BadRequest)));
        assert_eq!(code(br#"["nope",1,2,3,4,5,6]"#), Err(("nope".into(), ErrorCode::UnknownCall)));
        assert_eq!(code(br#"["signal","a","b",1,2,3,4,5,oops]"#), Err((String::new(), ErrorCode::BadJson)));
        assert_eq!(code(br#"["join","a","r",1]"#), Err(("join".into(), ErrorCode::BadRequest)));
    }

    #[test]
    fn compact_signals_read_the_same_with_or_without_the_fast_path() {
        let sdp = r#"{"type":"offer","sdp":"v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 1B:7E\r\n"}"#;
        for data in [sdp, "null", "[1,-2.5e3,{\"a\":[]},\"\\u00e9\"]", "\"\"", "{ \"k\" : [ true , false ] }"]
        {
            let text = format!(r#"["signal","room:alice","room:bob",{data}]"#);
            let call = parse_call_text(&text).expect("a valid signal");
            assert_eq!(call, parse_call_general(&text).expect("a valid signal"));
            let Call::Signal { data: read, .. } = call else { panic!("{call:?}") };
            assert_eq!(read.get(), data);
        }
        // DATA that is not JSON: the fast path declines and serde_json says why.
        for data in ["01", "[1,]", "{\"a\"}", "\"tab\there\"", "tru", "\"open"] {
            let text = format!(r#"["signal","room:alice","room:bob",{data}]"#);
            let err = parse_call_text(&text).expect_err(data);
            assert_eq!((err.call.as_str(), err.code), ("", ErrorCode::BadJson), "{data}");
        }
    }

    #[test]
    fn replies_match_the_original_wire_format() {
        assert_eq!(Reply::Ident("abc").to_json(), r#"["ident","abc"]"#);
        assert_eq!(Reply::Join { address: "r:a" }.to_json(), r#"["join","r:a"]"#);
        assert_eq!(
            Reply::Stun { own: "r:a", peer: "r:b", initiator: true }.to_json(),
            r#"["stun","r:a","r:b",true]"#
        );
        assert_eq!(
            Reply::Stun { own: "r:a", peer: "r:b", initiator: false }.to_json(),
            r#"["stun","r:a","r:b",false]"#
        );
        assert_eq!(Reply::Pong.to_json(), r#"["pong"]"#);
        assert_eq!(Reply::Left { address: "r:a" }.to_json(), r#"["leave","r:a"]"#);
        assert_eq!(Reply::PeerLeft { own: "r:b", gone: "r:a" }.to_json(), r#"["leave","r:b","r:a"]"#);
        assert_eq!(
            Reply::Error { call: "join", code: ErrorCode::Taken, detail: "held" }.to_json(),
            r#"["error","join","taken","held"]"#
        );
    }

    #[test]
    fn signal_reply_keeps_data_byte_exact() {
        let data = raw(r#"{ "type":"offer", "sdp":"v=0\r\n", "n": 1.50 }"#);
        let json = Reply::Signal { to: "r:b", from: "r:a", data }.to_json();
        assert_eq!(json, r#"["signal","r:b","r:a",{ "type":"offer", "sdp":"v=0\r\n", "n": 1.50 }]"#);
    }

    #[test]
    fn signal_reply_is_built_in_a_buffer_of_exactly_its_size() {
        let all_specials = every_special_character();
        let data = raw(r#"{"sdp":"v=0\r\n"}"#);
        for address in ["r:a", "", "r:\"q\"", &all_specials] {
            let json = Reply::Signal { to: address, from: "r:b", data }.to_json();
            assert_eq!(json.capacity(), json.len(), "{json}");
        }
    }

    #[test]
    fn strings_are_escaped_like_json_stringify() {
        let json = Reply::Ident("a\"b\\c\n\u{1}é").to_json();
        assert_eq!(json, "[\"ident\",\"a\\\"b\\\\c\\n\\u0001é\"]");
        let back: Vec<String> = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back, ["ident", "a\"b\\c\n\u{1}é"]);
    }

    #[test]
    fn one_special_character_anywhere_in_a_long_address_is_escaped() {
        // Long strings are checked many bytes at a time, then byte by byte at the tail.
        let data = raw("0");
        for len in [15, 16, 17, 31, 32, 33, 64, 100] {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1f}'] {
                    let mut address: Vec<char> = vec!['a'; len];
                    if let Some(slot) = address.get_mut(at) {
                        *slot = special;
                    }
                    let address: String = address.into_iter().collect();
                    let json = Reply::Signal { to: &address, from: "r:b", data }.to_json();
                    assert_eq!(json.capacity(), json.len(), "{json}");
                    let back: (String, String, String, u8) = serde_json::from_str(&json).expect("valid JSON");
                    assert_eq!(back.1, address);
                }
            }
        }
    }

    #[test]
    fn every_string_round_trips_through_its_escaping() {
        let all_specials = every_special_character();
        for text in ["", "plain", "\"", "\\", "tail\n", "\u{1f}head", "a\"b\\c\td", &all_specials] {
            let json = Reply::Ident(text).to_json();
            let back: Vec<String> = serde_json::from_str(&json).expect("valid JSON");
            assert_eq!(back, ["ident", text]);
        }
    }
}
