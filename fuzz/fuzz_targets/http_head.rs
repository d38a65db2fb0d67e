//! Arbitrary bytes as what a client sends before the WebSocket handshake, arriving in
//! arbitrary pieces, fed to `http::parse_head` the way `Conn::read_head` does: the
//! buffer grows by what each read brings, never past `MAX_HEAD_LEN`, and is parsed
//! again after every arrival until it is complete or invalid.
//!
//! Input layout: byte 0 says how many of the next bytes (0 to 15) are piece sizes;
//! the rest is the byte stream. No size bytes means one byte at a time.
//!
//! Checked: no panic; every stream ends complete, invalid, or still partial with all
//! of it read, under the limit, and no complete head for httparse either; a complete
//! head's length fits the buffer and the limit; the same bytes arriving in one piece
//! and in many end the same way; and `http::answer` for any complete head is a
//! well-formed HTTP/1.1 response.

#![no_main]

use diva_signal::Stats;
use diva_signal::http::{self, Answer, HeadStatus, MAX_HEAD_LEN, Request, Status};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Outcome {
    /// The stream ended before the head did (the server would wait, then time out).
    Partial,
    Complete(Box<Request>, usize),
    Invalid(Status),
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let count = usize::from(count % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(count);

    let pieces = feed(stream, |i| match sizes.get(i % sizes.len().max(1)) {
        None => 1,
        Some(&b @ 0..200) => usize::from(b) + 1,
        Some(&b) => usize::from(b - 199) * 64,
    });
    let whole = feed(stream, |_| stream.len().max(1));
    assert_eq!(pieces, whole, "the same bytes in one piece and in many");

    if let Outcome::Complete(request, _) = &whole {
        check_answer(request);
    }
});

/// Feeds `stream` in pieces of `size(i)` bytes, as the server reads them.
fn feed(stream: &[u8], size: impl Fn(usize) -> usize) -> Outcome {
    let mut buf = Vec::new();
    let mut searched = 0;
    let mut sent = 0;
    for i in 0.. {
        if sent >= stream.len() {
            // Still waiting: then httparse does not see a complete head either.
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let complete = httparse::Request::new(&mut headers).parse(&buf);
            assert!(!matches!(complete, Ok(httparse::Status::Complete(_))), "a complete head is waited on");
            return Outcome::Partial;
        }
        let piece = stream.get(sent..(sent + size(i)).min(stream.len())).unwrap_or_default();
        assert!(!piece.is_empty());
        sent += piece.len();
        // The server reads what arrived, up to the head limit; the rest stays unread.
        let room = MAX_HEAD_LEN - buf.len();
        buf.extend_from_slice(&piece[..piece.len().min(room)]);
        let status = http::parse_head(&buf, &mut searched);
        assert!(searched <= buf.len());
        match status {
            HeadStatus::Partial => {
                assert!(buf.len() < MAX_HEAD_LEN, "partial at the limit: the server would read no more");
            }
            HeadStatus::Complete { request, len } => {
                assert!(len > 0 && len <= buf.len() && len <= MAX_HEAD_LEN, "len {len} of {}", buf.len());
                // The head ends with a line end and an empty line (LF or CRLF each).
                assert!(buf[..len].ends_with(b"\n\n") || buf[..len].ends_with(b"\n\r\n"));
                return Outcome::Complete(request, len);
            }
            HeadStatus::Invalid(status) => {
                assert!(matches!(status, Status::BadRequest | Status::HeadTooLarge), "{status:?}");
                return Outcome::Invalid(status);
            }
        }
    }
    unreachable!()
}

fn check_answer(request: &Request) {
    let _ = request.path();
    let _ = request.query_param("token");
    let stats = Stats { connections: 7, rooms: 3, addresses: 11, queued_output: 0, cluster: None };
    let (bytes, upgrade) = match http::answer(request, stats) {
        Answer::Close(bytes) => (bytes, false),
        Answer::Upgrade(bytes) => (bytes, true),
    };
    assert!(bytes.starts_with(b"HTTP/1.1 "));
    // The response head parses, and the body is as long as it says.
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = response.parse(&bytes) else {
        panic!("response head does not parse: {:?}", String::from_utf8_lossy(&bytes));
    };
    let code = response.code.unwrap_or_default();
    let header =
        |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let body = &bytes[head_len..];
    if upgrade {
        assert_eq!(code, 101);
        assert!(request.wants_websocket() && request.method == "GET");
        // RFC 6455, section 4.1: HTTP/1.1 or later, with a Host.
        assert!(request.minor_version >= 1 && request.host.as_deref().is_some_and(|host| !host.is_empty()));
        assert!(header("sec-websocket-accept").is_some_and(|v| v.len() == 28));
        assert!(body.is_empty());
    } else {
        assert!([200, 400, 404, 405].contains(&code), "status {code}");
        let length: usize = header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .expect("a Content-Length");
        assert!(body.len() == length || (body.is_empty() && request.method == "HEAD"));
        // A refused version is answered with the one spoken (RFC 6455, section 4.4).
        if code == 400 && header("sec-websocket-version").is_some() {
            assert!(request.wants_websocket() && request.ws_version.as_deref() != Some("13"));
            assert_eq!(header("sec-websocket-version"), Some(&b"13"[..]));
        }
    }
}
