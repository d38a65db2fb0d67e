//! HTTP on the signal port: reading a bounded request head, routing it, and
//! writing the response (a page, an error, or the WebSocket 101 handshake).
//! Parsing and routing are pure functions of bytes; the server does the I/O.

use std::fmt::Write as _;
use std::time::Duration;

use crate::metrics::Stats;

/// Longest request head we read; a longer one is refused with 431.
pub const MAX_HEAD_LEN: usize = 8 * 1024;
/// Most header lines we parse; more are refused with 431 (documented in README.md and
/// docs/PROTOCOL.md with the other limits: change them together).
const MAX_HEADERS: usize = 48;

const LANDING_PAGE: &str = include_str!("pages/index.html");
const NOT_FOUND_PAGE: &str = include_str!("pages/404.html");
const DEMO_PAGE: &str = include_str!("pages/demo.html");

/// The parts of a request this server looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    /// The request target as sent, query included.
    pub target: String,
    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// The `Host` header's value.
    pub host: Option<String>,
    /// Values of the headers we use, in the order they are kept here.
    pub upgrade: Option<String>,
    pub connection: Option<String>,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    pub ws_protocol: Option<String>,
    pub origin: Option<String>,
    /// Every X-Forwarded-For line, joined with commas in the order received.
    pub forwarded_for: Option<String>,
}

impl Request {
    /// The path without its query string.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(path, _)| path)
    }

    /// The value of query parameter `name`, undecoded, if present.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            None if pair == name => Some(""),
            _ => None,
        })
    }

    /// True when the client asks for a WebSocket (the `Upgrade: websocket` header).
    pub fn wants_websocket(&self) -> bool {
        self.upgrade.as_deref().is_some_and(|value| has_token(value, "websocket"))
    }
}

/// What the bytes read so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadStatus {
    /// No complete head yet; read more.
    Partial,
    /// A complete head of `len` bytes; anything after it belongs to the next protocol.
    Complete { request: Box<Request>, len: usize },
    /// Not a request we accept: answer with this status and close.
    Invalid(Status),
}

/// Classifies the bytes received so far. `searched` is how many leading bytes were
/// already known not to contain the end of the head, so that a head arriving a byte
/// at a time costs linear, not quadratic, work; it is updated.
pub fn parse_head(buf: &[u8], searched: &mut usize) -> HeadStatus {
    // Look for the blank line again only from just before where the last search ended,
    // and not among the empty lines that may precede the request line (httparse skips
    // those; a blank line there ends nothing).
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let from = searched.saturating_sub(3).max(start).min(buf.len());
    let window = buf.get(from..).unwrap_or_default();
    // A line end (LF or CRLF) and then an empty line: "\n\n" or "\n\r\n" covers all four.
    let found =
        window.windows(2).any(|pair| pair == b"\n\n") || window.windows(3).any(|three| three == b"\n\r\n");
    *searched = buf.len();
    if !found {
        return if buf.len() >= MAX_HEAD_LEN {
            HeadStatus::Invalid(Status::HeadTooLarge)
        } else {
            HeadStatus::Partial
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_LEN => {
            HeadStatus::Complete { request: Box::new(request_from(&parsed)), len }
        }
        Ok(httparse::Status::Complete(_)) => HeadStatus::Invalid(Status::HeadTooLarge),
        Ok(httparse::Status::Partial) => {
            // A blank line was seen, yet httparse wants more: the line break was inside a header.
            if buf.len() >= MAX_HEAD_LEN {
                HeadStatus::Invalid(Status::HeadTooLarge)
            } else {
                HeadStatus::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => HeadStatus::Invalid(Status::HeadTooLarge),
        Err(_) => HeadStatus::Invalid(Status::BadRequest),
    }
}

fn request_from(parsed: &httparse::Request<'_, '_>) -> Request {
    let mut request = Request {
        method: parsed.method.unwrap_or_default().to_owned(),
        target: parsed.path.unwrap_or_default().to_owned(),
        minor_version: parsed.version.unwrap_or_default(),
        ..Request::default()
    };
    for header in parsed.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        if name == "x-forwarded-for" {
            // Several lines are one list (RFC 9110, 5.3): a proxy may add its own line after
            // the client's, and the last entry is the one it vouches for. A value that is not
            // text still counts, with its bad bytes replaced, so that dropping it cannot hide
            // the entries after it.
            let value = String::from_utf8_lossy(header.value);
            let list = request.forwarded_for.get_or_insert_with(String::new);
            if !list.is_empty() {
                list.push_str(", ");
            }
            list.push_str(value.trim());
            continue;
        }
        let slot = match name.as_str() {
            "host" => &mut request.host,
            "upgrade" => &mut request.upgrade,
            "connection" => &mut request.connection,
            "sec-websocket-key" => &mut request.ws_key,
            "sec-websocket-version" => &mut request.ws_version,
            "sec-websocket-protocol" => &mut request.ws_protocol,
            "origin" => &mut request.origin,
            _ => continue,
        };
        // Header values are bytes; ones that are not text are treated as absent.
        if let (None, Ok(value)) = (&slot, std::str::from_utf8(header.value)) {
            *slot = Some(value.trim().to_owned());
        }
    }
    request
}

/// True when comma-separated `list` contains `token`, ignoring ASCII case.
fn has_token(list: &str, token: &str) -> bool {
    list.split(',').any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// The HTTP statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    TooManyRequests,
    ServiceUnavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeadTooLarge => 431,
            Status::TooManyRequests => 429,
            Status::ServiceUnavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadTooLarge => "Request Header Fields Too Large",
            Status::TooManyRequests => "Too Many Requests",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// How the server answers one request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Write these bytes, then close the connection.
    Close(Vec<u8>),
    /// Write these bytes (the 101 response), then speak WebSocket.
    Upgrade(Vec<u8>),
}

/// Routes a complete request: WebSocket upgrade on any path, pages otherwise.
/// `stats` fills in the live figures on the landing page.
pub fn answer(request: &Request, stats: Stats) -> Answer {
    if request.wants_websocket() {
        return match handshake(request) {
            Ok(response) => Answer::Upgrade(response),
            Err(refusal) => Answer::Close(refusal.response()),
        };
    }
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        return Answer::Close(error_response(Status::MethodNotAllowed, "Only GET and HEAD are served here."));
    }
    let (status, page) = match request.path() {
        "/" | "/index.html" => (Status::Ok, landing_page(stats)),
        "/demo" => (Status::Ok, DEMO_PAGE.to_owned()),
        _ => (Status::NotFound, NOT_FOUND_PAGE.to_owned()),
    };
    Answer::Close(response(status, "text/html; charset=utf-8", page.as_bytes(), head_only))
}

/// The landing page with the live figures filled in.
fn landing_page(stats: Stats) -> String {
    LANDING_PAGE
        .replace("{{connections}}", &stats.connections.to_string())
        .replace("{{rooms}}", &stats.rooms.to_string())
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
}

/// `GET /metrics`: the Prometheus text exposition.
pub fn metrics_response(request: &Request, exposition: &str) -> Vec<u8> {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    response(Status::Ok, content_type, exposition.as_bytes(), request.method == "HEAD")
}

/// Why an upgrade request is refused (always with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    /// The text of the error page.
    detail: &'static str,
    /// The client asked for a WebSocket version other than ours: the response must name
    /// the one we speak (RFC 6455, section 4.4), so that the client can retry with it.
    wrong_version: bool,
}

impl Refusal {
    fn new(detail: &'static str) -> Self {
        Refusal { detail, wrong_version: false }
    }

    fn response(self) -> Vec<u8> {
        let extra = if self.wrong_version { "Sec-WebSocket-Version: 13\r\n" } else { "" };
        error_page(Status::BadRequest, self.detail, extra)
    }
}

/// The 101 response for a valid RFC 6455 upgrade request, or why it is refused.
fn handshake(request: &Request) -> Result<Vec<u8>, Refusal> {
    // RFC 6455, section 4.1: an HTTP/1.1 (or later) GET request, with a Host header.
    if request.method != "GET" {
        return Err(Refusal::new("A WebSocket upgrade must be a GET request."));
    }
    if request.minor_version < 1 {
        return Err(Refusal::new("A WebSocket upgrade must be an HTTP/1.1 request; this one is HTTP/1.0."));
    }
    if request.host.as_deref().is_none_or(str::is_empty) {
        return Err(Refusal::new("A WebSocket upgrade needs a Host header."));
    }
    if !request.connection.as_deref().is_some_and(|value| has_token(value, "upgrade")) {
        return Err(Refusal::new("A WebSocket upgrade needs the header Connection: Upgrade."));
    }
    if request.ws_version.as_deref() != Some("13") {
        let detail = "Only WebSocket version 13 is supported (Sec-WebSocket-Version: 13).";
        return Err(Refusal { detail, wrong_version: true });
    }
    let key = request.ws_key.as_deref().unwrap_or_default();
    if !is_valid_key(key) {
        return Err(Refusal::new("Sec-WebSocket-Key must be 16 bytes in base64."));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut out = String::with_capacity(192);
    out.push_str("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    let _ = write!(out, "Sec-WebSocket-Accept: {accept}\r\n");
    // Like the original, agree to the first subprotocol the client offers.
    if let Some(first) = request.ws_protocol.as_deref().and_then(|list| list.split(',').next()) {
        let first = first.trim();
        if !first.is_empty() && first.bytes().all(|b| b.is_ascii_graphic()) {
            let _ = write!(out, "Sec-WebSocket-Protocol: {first}\r\n");
        }
    }
    out.push_str("\r\n");
    Ok(out.into_bytes())
}

/// A key is the base64 text of a 16-byte nonce: 22 base64 characters and "==".
fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes.iter().take(22).all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `GET /health`: liveness and live figures as JSON.
pub fn health_response(request: &Request, stats: Stats, uptime: Duration) -> Vec<u8> {
    let body = format!(
        "{{\"status\":\"ok\",\"version\":\"{}\",\"uptime_seconds\":{},\"connections\":{},\"rooms\":{},\"addresses\":{}}}\n",
        env!("CARGO_PKG_VERSION"),
        uptime.as_secs(),
        stats.connections,
        stats.rooms,
        stats.addresses
    );
    let body = match stats.cluster {
        None => body,
        Some(cluster) => format!(
            "{},\"cluster\":{{\"redis\":\"{}\",\"node\":\"{:016x}\",\"live_nodes\":{}}}}}\n",
            body.trim_end().trim_end_matches('}'),
            if cluster.redis_up { "up" } else { "down" },
            cluster.node,
            cluster.live_nodes
        ),
    };
    response(Status::Ok, "application/json", body.as_bytes(), request.method == "HEAD")
}

/// `GET /turn`: `body` as JSON, never cached; for a browser of an allowed `origin`, the
/// CORS headers that let its page read it.
pub fn turn_response(body: &str, origin: Option<&str>, head_only: bool) -> Vec<u8> {
    let mut extra = String::from("Vary: Origin\r\n");
    if let Some(origin) = origin {
        let _ = write!(extra, "Access-Control-Allow-Origin: {origin}\r\n");
    }
    response_with(Status::Ok, "application/json", body.as_bytes(), head_only, &extra)
}

/// A small HTML error page with `detail` as its text.
pub fn error_response(status: Status, detail: &str) -> Vec<u8> {
    error_page(status, detail, "")
}

/// [`error_response`] with `extra_headers` (complete lines, each ending in CRLF).
fn error_page(status: Status, detail: &str, extra_headers: &str) -> Vec<u8> {
    let body = format!(
        "<!doctype html><title>{code} {reason}</title><h1>{code} {reason}</h1><p>{detail}</p>\n",
        code = status.code(),
        reason = status.reason()
    );
    response_with(status, "text/html; charset=utf-8", body.as_bytes(), false, extra_headers)
}

/// A complete response that closes the connection after it.
pub fn response(status: Status, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    response_with(status, content_type, body, head_only, "")
}

/// [`response`] with `extra_headers` (complete lines, each ending in CRLF).
fn response_with(
    status: Status,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    extra_headers: &str,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    if status == Status::MethodNotAllowed {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str(extra_headers);
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /any/path?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n";

    const STATS: Stats = Stats { connections: 3, rooms: 2, addresses: 5, queued_output: 0, cluster: None };

    fn parse(buf: &[u8]) -> HeadStatus {
        parse_head(buf, &mut 0)
    }

    fn complete(buf: &[u8]) -> Request {
        match parse(buf) {
            HeadStatus::Complete { request, .. } => *request,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn text(answer: Answer) -> String {
        match answer {
            Answer::Close(bytes) | Answer::Upgrade(bytes) => String::from_utf8(bytes).expect("text"),
        }
    }

    #[test]
    fn upgrade_on_any_path_answers_rfc6455_example() {
        let request = complete(UPGRADE);
        assert_eq!(request.path(), "/any/path");
        let Answer::Upgrade(bytes) = answer(&request, STATS) else { panic!("not an upgrade") };
        let response = String::from_utf8(bytes).expect("text");
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        // The accept value for this key is given in RFC 6455, section 1.3.
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
    }

    #[test]
    fn forwarded_for_lines_make_one_list() {
        let one = complete(b"GET / HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n");
        assert_eq!(one.forwarded_for.as_deref(), Some("192.0.2.1"));
        let two = complete(
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1, 192.0.2.2\r\nx-forwarded-for:  192.0.2.3 \r\n\r\n",
        );
        assert_eq!(two.forwarded_for.as_deref(), Some("192.0.2.1, 192.0.2.2, 192.0.2.3"));
        // A line that is not text keeps its place, so the lines after it still come last.
        let bad = complete(b"GET / HTTP/1.1\r\nX-Forwarded-For: \xff\r\nX-Forwarded-For: 192.0.2.3\r\n\r\n");
        assert_eq!(bad.forwarded_for.as_deref(), Some("\u{fffd}, 192.0.2.3"));
        assert_eq!(complete(b"GET / HTTP/1.1\r\n\r\n").forwarded_for, None);
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let mut buf = UPGRADE.to_vec();
        buf.extend_from_slice(b"\x81\x85frame");
        let HeadStatus::Complete { len, .. } = parse(&buf) else { panic!("incomplete") };
        assert_eq!(len, UPGRADE.len());
    }

    #[test]
    fn bad_upgrades_get_400() {
        let cases: [&[u8]; 7] = [
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            // RFC 6455, section 4.1: HTTP/1.1 or later, with a Host header.
            b"GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ];
        for (n, case) in cases.into_iter().enumerate() {
            let response = text(answer(&complete(case), STATS));
            assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
            // Only the refusal of a version says which one is spoken (RFC 6455, section 4.4).
            let (head, _) = response.split_once("\r\n\r\n").expect("a head");
            assert_eq!(head.contains("\r\nSec-WebSocket-Version: 13"), n == 1, "{response}");
        }
    }

    #[test]
    fn pages_are_served_over_http_1_0_too() {
        for head in [&b"GET / HTTP/1.0\r\n\r\n"[..], b"GET /demo HTTP/1.0\r\nHost: h\r\n\r\n"] {
            let request = complete(head);
            assert_eq!((request.minor_version, request.wants_websocket()), (0, false));
            assert!(text(answer(&request, STATS)).starts_with("HTTP/1.1 200 OK\r\n"));
        }
        let request = complete(UPGRADE);
        assert_eq!((request.minor_version, request.host.as_deref()), (1, Some("h")));
    }

    #[test]
    fn pages_and_statuses() {
        let get = |head: &[u8]| text(answer(&complete(head), STATS));
        let landing = get(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(landing.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(landing.contains("Content-Type: text/html"));
        assert!(landing.contains("<html"));
        assert!(landing.contains("<b id=\"connections\">3</b>"), "{landing}");
        assert!(landing.contains("<b id=\"rooms\">2</b>"), "{landing}");
        let head = get(b"HEAD / HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        assert!(get(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(get(b"DELETE / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    }

    #[test]
    fn demo_page_on_get_and_head() {
        let get = |head: &[u8]| text(answer(&complete(head), STATS));
        let demo = get(b"GET /demo?room=abc HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(demo.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(demo.contains("Content-Type: text/html"));
        assert!(demo.ends_with(DEMO_PAGE) && DEMO_PAGE.contains("RTCPeerConnection"));
        let head = get(b"HEAD /demo HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", DEMO_PAGE.len())));
        assert!(get(b"GET /demo/x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn partial_invalid_and_oversized_heads() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), HeadStatus::Partial);
        assert_eq!(parse(b"\x00\x01garbage\r\n\r\n"), HeadStatus::Invalid(Status::BadRequest));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_LEN, b'a');
        assert_eq!(parse(&huge), HeadStatus::Invalid(Status::HeadTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), HeadStatus::Invalid(Status::HeadTooLarge));
    }

    /// Found by fuzzing (http_head): after empty lines before the request line, a head
    /// with a bad byte was refused when it came in one piece but waited for more when the
    /// empty lines came first, because their blank line was taken for the end of the head.
    #[test]
    fn empty_lines_before_the_request_line_end_no_head() {
        let bad = b"\r\n\r\nGET / HTTP/1.1\r\nHost: local\x00\r\n".as_slice();
        let bad_ended = b"\r\n\r\nGET / HTTP/1.1\r\nHost: local\x00\r\n\r\n".as_slice();
        let good = b"\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice();
        assert_eq!(parse(bad), HeadStatus::Partial);
        assert_eq!(parse(bad_ended), HeadStatus::Invalid(Status::BadRequest));
        assert!(matches!(parse(good), HeadStatus::Complete { len, .. } if len == good.len()));
        // In two pieces, split anywhere, each ends as it does in one.
        for stream in [bad, bad_ended, good] {
            for split in 1..stream.len() {
                let mut searched = 0;
                let status = match parse_head(&stream[..split], &mut searched) {
                    HeadStatus::Partial => parse_head(stream, &mut searched),
                    done => done,
                };
                assert_eq!(status, parse(stream), "{stream:?} split at {split}");
            }
        }
    }

    /// Found by fuzzing (http_head): a head whose last line ended in a bare LF and whose
    /// empty line was CRLF was complete for httparse but never seen to end.
    #[test]
    fn every_mix_of_line_ends_ends_the_head() {
        for head in [
            b"GET / HTTP/1.1\nHost: x\n\n".as_slice(),
            b"GET / HTTP/1.1\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(matches!(parse(head), HeadStatus::Complete { len, .. } if len == head.len()), "{head:?}");
            let mut searched = 0;
            for end in 1..head.len() {
                assert_eq!(parse_head(&head[..end], &mut searched), HeadStatus::Partial, "{head:?} at {end}");
            }
            assert!(matches!(parse_head(head, &mut searched), HeadStatus::Complete { .. }), "{head:?}");
        }
    }

    #[test]
    fn head_arriving_byte_by_byte_is_found() {
        let mut searched = 0;
        for end in 1..UPGRADE.len() {
            assert_eq!(parse_head(&UPGRADE[..end], &mut searched), HeadStatus::Partial, "at {end}");
        }
        assert!(matches!(parse_head(UPGRADE, &mut searched), HeadStatus::Complete { .. }));
    }

    #[test]
    fn query_parameters() {
        let request = Request { target: "/x?a=1&token=s3cret&flag".into(), ..Request::default() };
        assert_eq!(request.query_param("token"), Some("s3cret"));
        assert_eq!(request.query_param("flag"), Some(""));
        assert_eq!(request.query_param("b"), None);
    }
}
