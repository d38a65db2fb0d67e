//! What operators watch: /metrics in Prometheus text format, its access rules, and the
//! live figures on the landing page; operator settings such as busy polling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::TestServer;
use serde_json::json;

/// Parses the text exposition strictly: every sample belongs to a family declared by
/// `# HELP` and `# TYPE` lines before it, counters end in `_total`, values are numbers.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut types = HashMap::new();
    let mut helped = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name and text");
            assert!(!help.is_empty(), "empty HELP for {name}");
            helped.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name and kind");
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {name}");
            }
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "family twice: {name}");
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample and value");
            let family = series.split('{').next().expect("family name");
            assert!(types.contains_key(family), "sample without TYPE: {line}");
            assert!(family.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{family}");
            if let Some(labels) = series.strip_prefix(family).filter(|l| !l.is_empty()) {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
            samples.insert(series.to_owned(), value);
        }
    }
    samples
}

fn metrics(server: &TestServer) -> HashMap<String, f64> {
    let response = server.get("/metrics");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("Content-Type: text/plain; version=0.0.4"), "{response}");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body).expect("body");
    parse_exposition(body)
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no sample {series}"))
}

#[test]
fn metrics_are_valid_exposition_and_move_with_traffic() {
    let server = TestServer::start();
    let before = metrics(&server);
    assert_eq!(sample(&before, "diva_signal_rooms"), 0.0);
    assert_eq!(sample(&before, "diva_signal_messages_received_total{call=\"signal\"}"), 0.0);

    let (mut alice, a, mut bob, b) = server.pair();
    for n in 0..5 {
        alice.send(&json!(["signal", a, b, n]).to_string());
        assert_eq!(bob.recv()[3], n);
    }
    assert_eq!(alice.call(r#"["join","a","r"]"#)[2], "already-joined");
    alice.send("garbage");
    assert_eq!(alice.recv()[2], "bad-json");

    let after = metrics(&server);
    assert_eq!(sample(&after, "diva_signal_rooms"), 1.0);
    assert_eq!(sample(&after, "diva_signal_addresses"), 2.0);
    assert_eq!(sample(&after, "diva_signal_connections_open"), 3.0, "two clients and the scrape");
    assert_eq!(sample(&after, "diva_signal_messages_received_total{call=\"signal\"}"), 5.0);
    assert_eq!(sample(&after, "diva_signal_messages_received_total{call=\"join\"}"), 3.0);
    assert_eq!(sample(&after, "diva_signal_messages_received_total{call=\"invalid\"}"), 1.0);
    assert_eq!(sample(&after, "diva_signal_messages_sent_total{reply=\"signal\"}"), 5.0);
    assert_eq!(sample(&after, "diva_signal_messages_sent_total{reply=\"stun\"}"), 2.0);
    assert_eq!(sample(&after, "diva_signal_errors_total{code=\"already-joined\"}"), 1.0);
    assert_eq!(sample(&after, "diva_signal_errors_total{code=\"bad-json\"}"), 1.0);
    assert_eq!(sample(&after, "diva_signal_websocket_upgrades_total"), 2.0);
    assert!(
        sample(&after, "diva_signal_received_bytes_total")
            > sample(&before, "diva_signal_received_bytes_total")
    );
    assert!(sample(&after, "diva_signal_sent_bytes_total") > sample(&before, "diva_signal_sent_bytes_total"));
    assert!(sample(&after, "diva_signal_connections_accepted_total") >= 4.0);

    drop(alice);
    server.wait_for_clients(1);
    let closed = metrics(&server);
    assert_eq!(sample(&closed, "diva_signal_closes_total{reason=\"client\"}"), 1.0);
    assert_eq!(sample(&closed, "diva_signal_messages_sent_total{reply=\"leave\"}"), 1.0);
}

#[test]
fn metrics_can_be_turned_off() {
    let server = TestServer::with(|config| config.metrics = false);
    assert!(server.get("/metrics").starts_with("HTTP/1.1 404 "));
}

#[test]
fn metrics_only_for_allowed_clients() {
    let server =
        TestServer::with(|config| config.metrics_allow = Some(vec!["10.0.0.0/8".parse().expect("net")]));
    assert!(server.get("/metrics").starts_with("HTTP/1.1 403 "));
}

#[test]
fn proxied_requests_are_not_local_unless_the_proxy_is_trusted() {
    let proxied = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n";
    let untrusting = TestServer::start();
    assert!(
        untrusting.http(proxied).starts_with("HTTP/1.1 403 "),
        "a proxied stranger must not read metrics"
    );

    let trusting =
        TestServer::with(|config| config.trust_proxy = Some(vec!["127.0.0.1".parse().expect("net")]));
    assert!(trusting.http(proxied).starts_with("HTTP/1.1 403 "));
    // The proxy on 127.0.0.1 forwards for a client on 127.0.0.2 (itself not a proxy).
    let local_via_proxy =
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9, 127.0.0.2\r\n\r\n";
    assert!(trusting.http(local_via_proxy).starts_with("HTTP/1.1 200 "));
}

#[test]
fn landing_page_shows_live_figures() {
    let server = TestServer::start();
    let mut client = server.client();
    client.join("a", "r1");
    client.join("a", "r2");
    let page = server.get("/");
    // The client and the page request itself.
    assert!(page.contains("<b id=\"connections\">2</b>"), "{page}");
    assert!(page.contains("<b id=\"rooms\">2</b>"), "{page}");
}

#[test]
fn busy_polling_server_relays_then_sleeps_and_wakes_again() {
    let server = TestServer::with(|config| config.busy_poll = Duration::from_millis(2));
    let mut alice = server.client();
    let mut bob = server.client();
    let a = alice.join("a", "busy");
    let b = bob.join("b", "busy");
    alice.recv();
    bob.recv();
    for round in 0..50 {
        alice.send(&format!(r#"["signal","{a}","{b}",{round}]"#));
        assert_eq!(bob.recv_text(), format!(r#"["signal","{b}","{a}",{round}]"#));
    }
    // Quiet for far longer than the busy-poll window: the loop goes back to sleeping in
    // epoll_wait and must still wake for the next message and for HTTP.
    std::thread::sleep(Duration::from_millis(50));
    bob.send(&format!(r#"["signal","{b}","{a}","after a pause"]"#));
    assert_eq!(alice.recv_text(), format!(r#"["signal","{a}","{b}","after a pause"]"#));
    assert_eq!(server.health()["addresses"], 2);
}
