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

/// `GET /metrics` with the given X-Forwarded-For lines, sent from 127.0.0.1: the status code.
fn metrics_status(server: &TestServer, forwarded_for: &[&str]) -> u16 {
    let lines: String = forwarded_for.iter().map(|value| format!("X-Forwarded-For: {value}\r\n")).collect();
    let response = server.http(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{lines}\r\n").as_bytes());
    response.get(9..12).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status: {response}"))
}

#[test]
fn a_peer_that_is_not_a_trusted_proxy_cannot_claim_to_forward_for_loopback() {
    // The server trusts a proxy elsewhere; this client connects directly and claims to be
    // forwarding for 127.0.0.1. (Before, any peer was believed once trust was on.)
    let server = TestServer::with(|config| config.trust_proxy = vec!["10.0.0.0/8".parse().expect("net")]);
    assert_eq!(metrics_status(&server, &["127.0.0.1"]), 403);
    assert_eq!(metrics_status(&server, &["::1"]), 403);
    assert_eq!(metrics_status(&server, &[]), 200, "without the header it is a local client");
}

#[test]
fn a_trusted_proxy_forwards_the_rightmost_address_it_did_not_write_itself() {
    let server = TestServer::with(|config| {
        config.trust_proxy = vec!["127.0.0.1".parse().expect("net")];
        config.metrics_allow = Some(vec!["203.0.113.0/24".parse().expect("net")]);
    });
    assert_eq!(metrics_status(&server, &["203.0.113.9"]), 200, "an allowed client");
    assert_eq!(metrics_status(&server, &["198.51.100.7"]), 403, "a client not allowed");
    assert_eq!(metrics_status(&server, &[]), 403, "the proxy itself is not allowed");
    // A client that writes an allowed address into the header itself: the proxy appends the
    // address it really came from, in the same line (nginx) or a line of its own (HAProxy).
    assert_eq!(metrics_status(&server, &["203.0.113.9, 198.51.100.7"]), 403);
    assert_eq!(metrics_status(&server, &["203.0.113.9", "198.51.100.7"]), 403);
    // Past a second trusted proxy (here on loopback too) to the client.
    assert_eq!(metrics_status(&server, &["198.51.100.7, 203.0.113.9, 127.0.0.1"]), 200);
    assert_eq!(metrics_status(&server, &["not an address"]), 403);
}

/// Starts the real binary on 127.0.0.1 with `args` and returns it with the lines it logged
/// up to and including the one saying where it listens.
fn spawn_binary(args: &[&str]) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_diva-signal"))
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(args)
        .env_remove("PORT")
        .env_remove("BIND_IP")
        .env_remove("TRUST_PROXY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.expect("log line");
        let done = line.contains("listening on ");
        lines.push(line);
        if done {
            return (child, lines);
        }
    }
    let status = child.wait().expect("wait");
    panic!("the server exited ({status}) without listening: {lines:?}");
}

#[test]
fn trust_proxy_on_as_the_readme_showed_starts_and_says_it_means_loopback() {
    for args in
        [&["--trust-proxy", "on"][..], &["--trust-proxy"][..], &["--trust-proxy", "127.0.0.1,::1"][..]]
    {
        let (mut child, log) = spawn_binary(args);
        let _ = child.kill();
        let _ = child.wait();
        let warned = log.iter().any(|line| line.contains("WARN") && line.contains("loopback proxies only"));
        assert_eq!(warned, args.len() == 1 || args[1] == "on", "{args:?}: {log:#?}");
    }
}
