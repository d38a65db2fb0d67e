//! Who a client is: IPv4-mapped peers on `::` binds, trusted proxies and X-Forwarded-For,
//! over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{PATIENCE, TestServer, connect_from};

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
    let server = TestServer::with(|config| config.bind = Some("::".parse().expect("ip")));
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
    let server =
        TestServer::with(|config| config.trust_proxy = Some(vec!["10.0.0.0/8".parse().expect("net")]));
    assert_eq!(metrics_status(&server, &["127.0.0.1"]), 403);
    assert_eq!(metrics_status(&server, &["::1"]), 403);
    assert_eq!(metrics_status(&server, &[]), 200, "without the header it is a local client");
}

#[test]
fn a_trusted_proxy_forwards_the_rightmost_address_it_did_not_write_itself() {
    let server = TestServer::with(|config| {
        config.trust_proxy = Some(vec!["127.0.0.1".parse().expect("net")]);
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

// ---------------------------------------------------------------------------
// The connection table: a share per address, and slots kept for local HTTP.
// ---------------------------------------------------------------------------

/// Sends a WebSocket upgrade (with `extra` header lines) over `stream` and returns the
/// response's status code and the stream, still open when the answer was 101.
fn upgrade(mut stream: TcpStream, extra: &str) -> (u16, TcpStream) {
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("no response head ({other:?}): {}", String::from_utf8_lossy(&head)),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.get(9..12).and_then(|code| code.parse().ok());
    (status.unwrap_or_else(|| panic!("no status: {head}")), stream)
}

fn upgrade_from(server: &TestServer, source: [u8; 4], extra: &str) -> (u16, TcpStream) {
    upgrade(connect_from(source.into(), server.addr), extra)
}

/// What the server answers a connection that sends nothing, at once; panics when it keeps
/// the connection open instead.
fn answer_to_silence(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("timeout");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("an answer, then the end, without being asked");
    String::from_utf8_lossy(&response).into_owned()
}

/// `GET path` from the local address `source`: the whole response.
fn get_from(source: [u8; 4], server: &TestServer, path: &str) -> String {
    let mut stream = connect_from(source.into(), server.addr);
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).expect("send");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn sample(metrics: &str, series: &str) -> u64 {
    let line = metrics.lines().find(|line| line.starts_with(series)).unwrap_or_else(|| panic!("no {series}"));
    line.rsplit(' ').next().and_then(|value| value.parse().ok()).expect("value")
}

#[test]
fn one_address_gets_its_share_and_other_addresses_still_get_in() {
    let server = TestServer::with(|config| {
        config.max_connections_per_ip = 3;
        // Clients straight from loopback addresses, not through a proxy there.
        config.trust_proxy = Some(Vec::new());
    });
    let mut held: Vec<TcpStream> = (0..3)
        .map(|n| {
            let (status, stream) = upgrade_from(&server, [127, 0, 0, 1], "");
            assert_eq!(status, 101, "connection {n} within the share");
            stream
        })
        .collect();
    // The fourth from 127.0.0.1 is refused; 127.0.0.2 is another address with its own share.
    assert_eq!(upgrade_from(&server, [127, 0, 0, 1], "").0, 429);
    let (status, other) = upgrade_from(&server, [127, 0, 0, 2], "");
    assert_eq!(status, 101, "another address is not affected");
    // Once one leaves, its place is free again: the count went down.
    held.pop();
    let start = std::time::Instant::now();
    loop {
        let (status, stream) = upgrade_from(&server, [127, 0, 0, 1], "");
        if status == 101 {
            held.push(stream);
            break;
        }
        assert_eq!(status, 429);
        assert!(start.elapsed() < PATIENCE, "the departed connection was never uncounted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(upgrade_from(&server, [127, 0, 0, 1], "").0, 429);
    let metrics = server.get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 "), "a local scrape over the share still works: {metrics}");
    assert!(sample(&metrics, "diva_signal_limit_hits_total{limit=\"connections_per_address\"}") >= 2);
    drop((held, other));
}

#[test]
fn silent_connections_over_the_share_are_refused_at_once_after_the_reserve() {
    let server = TestServer::with(|config| {
        config.max_connections_per_ip = 2;
        // Clients straight from loopback addresses, not through a proxy there.
        config.trust_proxy = Some(Vec::new());
    });
    let _share: Vec<TcpStream> = (0..2).map(|_| connect_from([127, 0, 0, 1].into(), server.addr)).collect();
    // Loopback may still take the few slots kept for local HTTP (a health check)...
    let _reserve: Vec<TcpStream> = (0..8).map(|_| connect_from([127, 0, 0, 1].into(), server.addr)).collect();
    // (Asked from another address: 127.0.0.1 has no slot left for the question.)
    let start = std::time::Instant::now();
    while !get_from([127, 0, 0, 3], &server, "/health").contains("\"connections\":10") {
        assert!(start.elapsed() < PATIENCE, "the silent connections were not all taken in");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // ...but no more: the next silent connection gets 429 without waiting for a request.
    let mut over = connect_from([127, 0, 0, 1].into(), server.addr);
    let response = answer_to_silence(&mut over);
    assert!(response.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{response}");
    assert!(response.contains("Too many connections from your address"), "{response}");
}

#[test]
fn health_answers_when_the_table_is_full_of_silent_connections() {
    let server = TestServer::with(|config| {
        config.max_connections = Some(4);
        config.max_connections_per_ip = 0;
    });
    let silent: Vec<TcpStream> = (0..4).map(|_| connect_from([127, 0, 0, 2].into(), server.addr)).collect();
    server.wait_for_clients(4);
    for _ in 0..3 {
        let health = server.get("/health");
        assert!(health.starts_with("HTTP/1.1 200 "), "{health}");
    }
    assert!(server.get("/metrics").starts_with("HTTP/1.1 200 "));
    // The reserve serves HTTP only: a WebSocket from loopback is told the server is full.
    assert_eq!(upgrade_from(&server, [127, 0, 0, 1], "").0, 503);
    drop(silent);
    let start = std::time::Instant::now();
    while upgrade_from(&server, [127, 0, 0, 1], "").0 != 101 {
        assert!(start.elapsed() < PATIENCE, "no room after the silent connections left");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_proxied_remote_client_cannot_use_the_reserve() {
    let server = TestServer::with(|config| {
        config.max_connections = Some(2);
        config.max_connections_per_ip = 0;
        config.trust_proxy = Some(vec!["127.0.0.1".parse().expect("net")]);
    });
    let _silent: Vec<TcpStream> = (0..2).map(|_| connect_from([127, 0, 0, 2].into(), server.addr)).collect();
    server.wait_for_clients(2);
    // The proxy on loopback may take a reserved slot, but what it forwards for a remote
    // client is then refused; for a local one (a health check through it) it is served.
    let remote = server.http(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n");
    assert!(remote.starts_with("HTTP/1.1 503 "), "{remote}");
    let local = server.http(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 127.0.0.3\r\n\r\n");
    assert!(local.starts_with("HTTP/1.1 200 "), "{local}");
}

#[test]
fn a_trusted_proxys_connections_count_against_the_clients_it_forwards_for() {
    let server = TestServer::with(|config| {
        config.max_connections_per_ip = 2;
        config.trust_proxy = Some(vec!["127.0.0.1".parse().expect("net")]);
    });
    let forwarded = |client: &str| format!("X-Forwarded-For: {client}\r\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let (status, stream) = upgrade_from(&server, [127, 0, 0, 1], &forwarded("198.51.100.7"));
        assert_eq!(status, 101);
        held.push(stream);
    }
    assert_eq!(upgrade_from(&server, [127, 0, 0, 1], &forwarded("198.51.100.7")).0, 429);
    // The proxy itself is not held to one client's share: other clients get in through it.
    for client in ["198.51.100.8", "198.51.100.8", "2001:db8::1"] {
        let (status, stream) = upgrade_from(&server, [127, 0, 0, 1], &forwarded(client));
        assert_eq!(status, 101, "{client}");
        held.push(stream);
    }
    // A /64 is one client.
    let (status, _same_64) = upgrade_from(&server, [127, 0, 0, 1], &forwarded("2001:db8::2"));
    assert_eq!(status, 101);
    assert_eq!(upgrade_from(&server, [127, 0, 0, 1], &forwarded("2001:db8::3")).0, 429);
    assert_eq!(upgrade_from(&server, [127, 0, 0, 1], &forwarded("2001:db8:0:1::3")).0, 101);
}

#[test]
fn the_healthcheck_command_passes_while_one_address_fills_the_table() {
    let (mut child, log) = spawn_binary(&["--max-connections", "20", "--max-connections-per-ip", "0"]);
    let addr: SocketAddr = log
        .last()
        .and_then(|line| line.split_once("listening on "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .expect("address in the start line");
    // Twenty silent connections from one address take every regular slot (before, the
    // health check then got 503, and a container runtime would restart a healthy server).
    let silent: Vec<TcpStream> = (0..20).map(|_| connect_from([127, 0, 0, 2].into(), addr)).collect();
    assert_eq!(upgrade(connect_from([127, 0, 0, 3].into(), addr), "").0, 503, "the table is full");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_diva-signal"))
        .args(["--healthcheck", "--bind", "0.0.0.0", "--port", &addr.port().to_string()])
        .env_remove("PORT")
        .env_remove("BIND_IP")
        .output()
        .expect("run the health check");
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    drop(silent);
    let _ = child.kill();
    let _ = child.wait();
}

/// Drop-in: behind the original's nginx block (on the same host, with X-Forwarded-For), the
/// per-address limit counts each client nginx forwards for, not nginx itself, with no flag.
#[test]
fn behind_a_local_proxy_by_default_each_forwarded_client_has_its_own_share() {
    let server = TestServer::with(|config| config.max_connections_per_ip = 2);
    let mut held = Vec::new();
    for n in 1..=5 {
        let (status, stream) =
            upgrade_from(&server, [127, 0, 0, 1], &format!("X-Forwarded-For: 198.51.100.{n}\r\n"));
        assert_eq!(status, 101, "client {n} behind the proxy");
        held.push(stream);
    }
    let same = "X-Forwarded-For: 198.51.100.9\r\n";
    held.push(upgrade_from(&server, [127, 0, 0, 1], same).1);
    held.push(upgrade_from(&server, [127, 0, 0, 1], same).1);
    assert_eq!(upgrade_from(&server, [127, 0, 0, 1], same).0, 429, "one forwarded client over its share");
    drop(held);
}
