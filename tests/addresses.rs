//! Who a client is: IPv4-mapped peers on `::` binds, trusted proxies and X-Forwarded-For,
//! over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{PATIENCE, TestServer};

/// Sends `request` to `addr` over a fresh connection and returns the whole response.
fn http_to(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(request).expect("send request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// True when this machine can listen on `::` and reach it from 127.0.0.1 (a dual-stack socket).
fn dual_stack_available() -> bool {
    let Ok(listener) = std::net::TcpListener::bind("[::]:0") else { return false };
    let Ok(port) = listener.local_addr().map(|addr| addr.port()) else { return false };
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn ipv4_loopback_on_a_dual_stack_bind_is_loopback() {
    if !dual_stack_available() {
        println!("skipped: this machine cannot reach a `::` listener from 127.0.0.1");
        return;
    }
    let server = TestServer::with(|config| config.bind = "::".parse().expect("ip"));
    let v4 = SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    // The peer is ::ffff:127.0.0.1 at the socket: it must still count as loopback, so a
    // proxy on 127.0.0.1 that the server was not told to trust gets no metrics...
    let proxied = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n";
    let response = http_to(v4, proxied);
    assert!(response.starts_with("HTTP/1.1 403 "), "{response}");
    // ...while a direct local client does.
    let direct = http_to(v4, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(direct.starts_with("HTTP/1.1 200 "), "{direct}");
}
