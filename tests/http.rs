//! HTTP on the signal port: pages, errors, and the WebSocket upgrade, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use common::TestServer;
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

#[test]
fn landing_page_on_get_and_head() {
    let server = TestServer::start();
    let page = server.get("/");
    assert_eq!(status_line(&page), "HTTP/1.1 200 OK");
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.contains("WebSocket"), "{page}");
    let head = server.http(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK");
    assert!(head.ends_with("\r\n\r\n"), "HEAD must not carry a body: {head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .expect("content length");
    assert_eq!(length, page.split_once("\r\n\r\n").map(|(_, body)| body.len()).unwrap_or_default());
}

#[test]
fn demo_page_is_served() {
    let server = TestServer::start();
    let page = server.get("/demo?room=lobby");
    assert_eq!(status_line(&page), "HTTP/1.1 200 OK");
    assert!(page.contains("Content-Type: text/html"), "{page}");
    let body = page.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    assert_eq!(body, include_str!("../src/pages/demo.html"));
    let head = server.http(b"HEAD /demo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK");
    assert!(head.ends_with("\r\n\r\n"), "HEAD must not carry a body: {head}");
    assert!(server.get("/").contains("href=\"/demo\""), "the landing page links to the demo");
}

#[test]
fn other_paths_are_404_and_other_methods_405() {
    let server = TestServer::start();
    let missing = server.get("/no/such/page");
    assert_eq!(status_line(&missing), "HTTP/1.1 404 Not Found");
    assert!(missing.contains("<html"), "{missing}");
    let post = server.http(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status_line(&post), "HTTP/1.1 405 Method Not Allowed");
    assert!(!missing.to_ascii_lowercase().contains("x-powered-by"));
}

#[test]
fn malformed_heads_get_400_and_oversized_ones_431() {
    let server = TestServer::start();
    assert_eq!(status_line(&server.http(b"\x16\x03\x01 not http\r\n\r\n")), "HTTP/1.1 400 Bad Request");
    assert_eq!(
        status_line(&server.http(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")),
        "HTTP/1.1 400 Bad Request"
    );
    let mut huge = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    huge.resize(20_000, b'a');
    assert!(status_line(&server.http(&huge)).starts_with("HTTP/1.1 431"));
}

/// The documented bound on header lines: 48 are read (Host included), one more gets 431.
#[test]
fn up_to_48_header_lines_are_read_and_more_get_431() {
    let server = TestServer::start();
    let head = |lines: usize| {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for n in 1..lines {
            head.push_str(&format!("X-Header-{n}: y\r\n"));
        }
        head + "\r\n"
    };
    assert_eq!(status_line(&server.http(head(48).as_bytes())), "HTTP/1.1 200 OK");
    assert_eq!(
        status_line(&server.http(head(49).as_bytes())),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[test]
fn bad_upgrade_requests_get_400() {
    let server = TestServer::start();
    let wrong_version = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    assert_eq!(status_line(&server.http(wrong_version)), "HTTP/1.1 400 Bad Request");
    let no_key = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(status_line(&server.http(no_key)), "HTTP/1.1 400 Bad Request");
}

/// RFC 6455, section 4.4: a server that does not speak the client's version answers with
/// the version it speaks, so that the client can try again with it.
#[test]
fn a_refused_version_is_answered_with_the_version_spoken() {
    let server = TestServer::start();
    for version in ["Sec-WebSocket-Version: 8\r\n", "Sec-WebSocket-Version: 14\r\n", ""] {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{version}\r\n"
        );
        let response = server.http(request.as_bytes());
        assert_eq!(status_line(&response), "HTTP/1.1 400 Bad Request", "{version}");
        let head = response.split_once("\r\n\r\n").map_or(response.as_str(), |(head, _)| head);
        assert!(head.lines().any(|line| line == "Sec-WebSocket-Version: 13"), "{version}: {response}");
    }
    // Other refusals do not name it.
    let no_key = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    assert!(!server.http(no_key).contains("Sec-WebSocket-Version"));
}

/// RFC 6455, section 4.1: the opening handshake is an HTTP/1.1 (or later) GET with a Host
/// header. Plain pages are still served to HTTP/1.0 clients.
#[test]
fn upgrades_over_http_1_0_or_without_host_get_400() {
    let server = TestServer::start();
    let upgrade = |line: &str, host: &str| {
        format!(
            "GET / {line}\r\n{host}Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    for (what, request, says) in [
        ("HTTP/1.0", upgrade("HTTP/1.0", "Host: x\r\n"), "HTTP/1.1"),
        ("HTTP/1.0 without Host", upgrade("HTTP/1.0", ""), "HTTP/1.1"),
        ("no Host", upgrade("HTTP/1.1", ""), "Host"),
        ("empty Host", upgrade("HTTP/1.1", "Host: \r\n"), "Host"),
    ] {
        let response = server.http(request.as_bytes());
        assert_eq!(status_line(&response), "HTTP/1.1 400 Bad Request", "{what}: {response}");
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
        assert!(body.contains(says), "{what}: the body should say why: {body}");
    }
    // The same request over HTTP/1.1 with a Host is an upgrade.
    let stream = std::net::TcpStream::connect(server.addr).expect("connect");
    let (head, _client) = common::RawClient::try_handshake(stream, "/", "");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // Pages over HTTP/1.0, with or without Host, are served as before.
    for request in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.0\r\n\r\n",
    ] {
        assert_eq!(status_line(&server.http(request)), "HTTP/1.1 200 OK");
    }
}

#[test]
fn websocket_on_any_path() {
    let server = TestServer::start();
    for path in ["/", "/signal", "/some/deep/path?x=1", "/index.html"] {
        let mut client = server.client_at(path);
        assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]), "on {path}");
    }
}

#[test]
fn first_offered_subprotocol_is_echoed() {
    let server = TestServer::start();
    let mut request = server.url("/").into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("diva, other"));
    let stream = std::net::TcpStream::connect(server.addr).expect("connect");
    let (mut ws, response) = tungstenite::client(request, stream).expect("handshake");
    assert_eq!(response.headers().get("Sec-WebSocket-Protocol").map(|v| v.as_bytes()), Some(&b"diva"[..]));
    ws.send(tungstenite::Message::text(r#"["ping"]"#)).expect("send");
    assert_eq!(ws.read().expect("pong").into_text().expect("text").as_str(), r#"["pong"]"#);
}

#[test]
fn frames_sent_right_behind_the_handshake_are_not_lost() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(common::PATIENCE)).expect("timeout");
    // Head and a masked text frame ["ping"] in one write.
    let mut bytes = b"GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    let header = common::FrameHeader { mask: Some([1, 2, 3, 4]), ..common::header(common::TEXT) };
    bytes.extend(common::frame(header, br#"["ping"]"#));
    stream.write_all(&bytes).expect("send");
    let mut received = Vec::new();
    let mut chunk = [0u8; 512];
    while !received.ends_with(br#"["pong"]"#) {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed before pong: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
}

#[test]
fn health_reports_live_figures() {
    let server = TestServer::start();
    let health = server.health();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["rooms"], 0);
    let mut client = server.client();
    client.join("a", "r");
    let health = server.wait_for_clients(1);
    assert_eq!((health["rooms"].as_u64(), health["addresses"].as_u64()), (Some(1), Some(1)));
}
