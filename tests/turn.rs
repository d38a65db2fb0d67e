//! TURN credentials (draft-uberti-behave-turn-rest): the `turn` call and `GET /turn`, their
//! access rules, the secret kept out of every output, SIGHUP reloading the secret file, and
//! the credentials checked by a real coturn (Debian's `coturn`, started here on a loopback
//! port; the coturn test says so and passes when coturn is not installed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};

use common::{Coturn, TestServer, error_code};
use common::{SERVER_BIN, Spawned};
use diva_signal::turn::{Secret, TurnConfig, credential};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(10);
const SECRET: &str = "k9-Very-Secret-Turn-Key";

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn turn_config(secret: &str, ttl: u64) -> TurnConfig {
    TurnConfig {
        secret: Some(Secret::new(secret).unwrap()),
        turn_urls: vec![
            "turn:127.0.0.1:3478?transport=udp".into(),
            "turn:127.0.0.1:3478?transport=tcp".into(),
        ],
        stun_urls: vec!["stun:127.0.0.1:3478".into()],
        ttl,
        ..TurnConfig::default()
    }
}

/// The (username, credential) of the TURN entry, checked against `secret` and `ttl`.
fn check_ice_servers(servers: &Value, secret: &str, ttl: u64) -> (String, String) {
    let servers = servers.as_array().expect("an array");
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert_eq!(
        servers[0]["urls"],
        json!(["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"])
    );
    assert_eq!(servers[1], json!({"urls": ["stun:127.0.0.1:3478"]}));
    let username = servers[0]["username"].as_str().expect("username").to_owned();
    let password = servers[0]["credential"].as_str().expect("credential").to_owned();
    let (expiry, tag) = username.split_once(':').expect("EXPIRY:TAG");
    let expiry: u64 = expiry.parse().expect("a Unix time");
    let now = unix_now();
    assert!(expiry >= now + ttl - 5 && expiry <= now + ttl, "expiry {expiry}, now {now}, ttl {ttl}");
    assert!(!tag.is_empty() && tag.bytes().all(|b| b.is_ascii_lowercase()), "{tag}");
    assert_eq!(password, credential(&Secret::new(secret).unwrap(), &username));
    (username, password)
}

fn body(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").expect("head and body").1;
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {response}"))
}

#[test]
fn nothing_configured_answers_an_empty_list() {
    let server = TestServer::start();
    let mut client = server.client();
    assert_eq!(client.call(r#"["turn"]"#), json!(["turn", []]));
    // Extra arguments are ignored, as for ping.
    assert_eq!(client.call(r#"["turn", 1, "x"]"#), json!(["turn", []]));
    let response = server.get("/turn");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\r\nCache-Control: no-store\r\n"), "{response}");
    assert!(response.contains("\r\nContent-Type: application/json\r\n"), "{response}");
    assert_eq!(body(&response), json!({"iceServers": [], "ttl": 86400}));
    let metrics = server.get("/metrics");
    assert!(metrics.contains("diva_signal_turn_credentials_total 0\n"), "{metrics}");
    assert!(metrics.contains("diva_signal_messages_received_total{call=\"turn\"} 2\n"), "{metrics}");
    assert!(metrics.contains("diva_signal_messages_sent_total{reply=\"turn\"} 2\n"), "{metrics}");
}

#[test]
fn the_call_and_the_page_hand_out_credentials_and_count_them() {
    let server = TestServer::with(|config| config.turn = turn_config(SECRET, 600));
    let mut client = server.client();
    let reply = client.call(r#"["turn"]"#);
    assert_eq!(reply[0], "turn");
    let (first, _) = check_ice_servers(&reply[1], SECRET, 600);
    // A fresh tag each time: nothing ties two answers together but the server's log.
    let (second, _) = check_ice_servers(&client.call(r#"["turn"]"#)[1], SECRET, 600);
    assert_ne!(first.split_once(':').unwrap().1, second.split_once(':').unwrap().1);
    let response = server.get("/turn");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\r\nCache-Control: no-store\r\n"), "{response}");
    let page = body(&response);
    assert_eq!(page["ttl"], 600);
    check_ice_servers(&page["iceServers"], SECRET, 600);
    let metrics = server.get("/metrics");
    assert!(metrics.contains("diva_signal_turn_credentials_total 3\n"), "{metrics}");
    for output in [metrics, server.get("/health"), server.get("/"), server.get("/nowhere")] {
        assert!(!output.contains(SECRET), "{output}");
    }
}

#[test]
fn the_call_counts_against_the_rate_limit() {
    let server = TestServer::with(|config| {
        config.turn = turn_config(SECRET, 600);
        config.rate_per_sec = 1;
        config.rate_burst = 3;
    });
    let mut client = server.client();
    client.send_batch(r#"["turn"]"#, 6);
    let replies: Vec<Value> = (0..6).map(|_| client.recv()).collect();
    let limited = replies.iter().filter(|reply| reply[0] == "error").count();
    assert!(limited >= 2, "{replies:?}");
    for reply in replies.iter().filter(|reply| reply[0] == "error") {
        assert_eq!(error_code(reply), "rate-limited");
    }
}

#[test]
fn the_page_needs_the_token_and_an_allowed_origin() {
    let server = TestServer::with(|config| {
        config.turn = turn_config(SECRET, 600);
        config.access_tokens = vec!["tok-1".into()];
        config.allowed_origins = vec!["https://app.example".into()];
    });
    let get = |path: &str, origin: Option<&str>| {
        let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
        server.http(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{origin}\r\n").as_bytes())
    };
    for refused in [get("/turn", None), get("/turn?token=nope", None), get("/turn?token=tok-12", None)] {
        assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
        assert!(!refused.contains("iceServers") && !refused.contains(SECRET), "{refused}");
    }
    let foreign = get("/turn?token=tok-1", Some("https://evil.example"));
    assert!(foreign.starts_with("HTTP/1.1 403 "), "{foreign}");
    assert!(!foreign.contains("Access-Control-Allow-Origin"), "{foreign}");
    let allowed = get("/turn?token=tok-1", Some("https://app.example"));
    assert!(allowed.starts_with("HTTP/1.1 200 "), "{allowed}");
    assert!(allowed.contains("\r\nAccess-Control-Allow-Origin: https://app.example\r\n"), "{allowed}");
    assert!(allowed.contains("\r\nVary: Origin\r\n"), "{allowed}");
    check_ice_servers(&body(&allowed)["iceServers"], SECRET, 600);
    // No Origin: not a browser; no CORS headers needed.
    let plain = get("/turn?token=tok-1", None);
    assert!(plain.starts_with("HTTP/1.1 200 ") && !plain.contains("Access-Control-Allow-Origin"), "{plain}");
    let head = server.http(b"HEAD /turn?token=tok-1 HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"), "{head}");
    let post = server.http(b"POST /turn?token=tok-1 HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let metrics = server.get("/metrics");
    assert!(metrics.contains("diva_signal_turn_credentials_total 2\n"), "{metrics}");
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Spawned {
    let mut command = common::server_command(args);
    command.envs(env.iter().copied());
    common::spawn_server(command)
}

/// Waits for a log line containing `needle`; every line read goes into `seen`.
fn wait_for_line(server: &Spawned, needle: &str, seen: &mut Vec<String>) -> String {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if let Ok(line) = server.log.recv_timeout(Duration::from_millis(100)) {
            seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }
    panic!("no log line with {needle:?} in {seen:#?}");
}

fn sighup(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

fn ws_turn(addr: &str) -> Value {
    let mut ws = common::ws_handshake(addr.parse().unwrap(), format!("ws://{addr}/")).expect("handshake");
    ws.send(tungstenite::Message::text(r#"["turn"]"#)).expect("send");
    loop {
        if let tungstenite::Message::Text(text) = ws.read().expect("reply") {
            let reply: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(reply[0], "turn");
            return reply[1].clone();
        }
    }
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diva-turn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn sighup_reads_the_secret_file_again_and_the_secret_stays_out_of_the_logs() {
    let dir = temp_dir("reload");
    let file = dir.join("secret");
    let (old, new) = ("first-Secret-value-1", "second-Secret-value-2");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let server = spawn(
        &["--log-level", "debug", "--turn-url", "turn:127.0.0.1:3478", "--stun-url", "stun:127.0.0.1:3478"],
        &[("TURN_SECRET_FILE", file.to_str().unwrap()), ("TURN_TTL", "120")],
    );
    let mut seen = Vec::new();
    let servers = ws_turn(&server.addr);
    let username = servers[0]["username"].as_str().unwrap();
    assert_eq!(servers[0]["credential"].as_str().unwrap(), credential(&Secret::new(old).unwrap(), username));
    // Its tag is logged (to match coturn's log), the secret is not.
    let tag = username.split_once(':').unwrap().1;
    wait_for_line(&server, &format!("TURN credential issued (tag {tag})"), &mut seen);

    std::fs::write(&file, format!("{new}\n")).unwrap();
    sighup(&server.child);
    wait_for_line(&server, "TURN secret read again", &mut seen);
    let servers = ws_turn(&server.addr);
    let username = servers[0]["username"].as_str().unwrap();
    assert_eq!(servers[0]["credential"].as_str().unwrap(), credential(&Secret::new(new).unwrap(), username));

    // A file that cannot be read: an error, and the secret in use stays.
    std::fs::remove_file(&file).unwrap();
    sighup(&server.child);
    wait_for_line(&server, "TURN secret not reloaded", &mut seen);
    let page = body(&http_get(&server.addr, "/turn"));
    let username = page["iceServers"][0]["username"].as_str().unwrap();
    assert_eq!(
        page["iceServers"][0]["credential"].as_str().unwrap(),
        credential(&Secret::new(new).unwrap(), username)
    );

    let mut outputs = vec![http_get(&server.addr, "/metrics"), http_get(&server.addr, "/health")];
    outputs.push(http_get(&server.addr, "/turn?x=%00"));
    assert!(outputs[0].contains("diva_signal_turn_credentials_total 3\n"), "{}", outputs[0]);
    drop(server);
    outputs.extend(seen);
    for output in outputs {
        assert!(!output.contains(old) && !output.contains(new), "the secret shows in {output:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_turn_settings_refuse_to_start_with_status_2() {
    for (args, env, expected) in [
        (&["--turn-url", "turn:127.0.0.1"][..], &[][..], "--turn-url needs the TURN server's secret"),
        (&["--turn-url", "http://x", "--turn-secret", SECRET][..], &[][..], "not a turn: or turns: URI"),
        (&["--turn-secret", SECRET, "--turn-url", "turn:x?transport=sctp"][..], &[][..], "?transport=udp"),
        (&["--stun-url", "stun:"][..], &[][..], "expected host"),
        (&["--turn-ttl", "0"][..], &[][..], "--turn-ttl"),
        (
            &["--turn-secret-file", "/nonexistent/turn-secret"][..],
            &[][..],
            "cannot read /nonexistent/turn-secret",
        ),
        (&[][..], &[("TURN_URLS", "turn:a,stun:b"), ("TURN_SECRET", SECRET)][..], "TURN_URLS"),
        (&["--turn-secret", "  "][..], &[][..], "the TURN secret is empty"),
    ] {
        let output = Command::new(SERVER_BIN).args(args).envs(env.iter().copied()).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.starts_with("diva-signal: ") && stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
    }
}

#[test]
fn coturn_relays_with_fresh_credentials_and_refuses_tampered_and_expired_ones() {
    if !Coturn::installed() {
        eprintln!("skipped: coturn is not installed (apt-get install coturn; .ci/run installs it as root)");
        return;
    }
    let coturn = Coturn::start(SECRET);
    let server = TestServer::with(|config| config.turn = turn_config(SECRET, 600));
    let servers = server.client().call(r#"["turn"]"#)[1].clone();
    let (username, password) = check_ice_servers(&servers, SECRET, 600);

    // (a) Fresh credentials: an allocation, and data both ways through the relays.
    let (code, output) = coturn.relay_through(&username, &password);
    assert_eq!(code, Some(0), "{output}\n{}", coturn.log());
    // The summary: "start_mclient: tot_send_msgs=20, tot_recv_msgs=20" (-n 5, -m 1, -y: four
    // streams); every message sent came back through the relays.
    let summary =
        output.lines().rfind(|line| line.contains("start_mclient: tot_send_msgs=")).unwrap_or_default();
    let count = |key: &str| -> u64 {
        let rest = summary.split(key).nth(1).unwrap_or_default();
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap_or_default().parse().unwrap_or(0)
    };
    assert!(count("tot_send_msgs=") >= 5 && count("tot_recv_msgs=") == count("tot_send_msgs="), "{output}");
    let log = coturn.log();
    let allocated = format!("user <{username}>");
    assert!(
        log.lines().any(|line| line.contains("ALLOCATE processed, success") && line.contains(&allocated)),
        "{log}"
    );
    eprintln!("fresh credential: {summary}");

    // (b) A tampered credential: one character changed.
    let mut tampered = password.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let (code, output) = coturn.relay_through(&username, &String::from_utf8(tampered).unwrap());
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("Cannot complete Allocation"), "{output}");
    // A username whose expiry was moved: the credential no longer matches it.
    let (expiry, tag) = username.split_once(':').unwrap();
    let later = format!("{}:{tag}", expiry.parse::<u64>().unwrap() + 86_400);
    let (code, output) = coturn.relay_through(&later, &password);
    assert_ne!(code, Some(0), "{output}");

    // (c) An expired credential: a TTL of one second, used after two.
    let short = TestServer::with(|config| config.turn = turn_config(SECRET, 1));
    let page = body(&short.get("/turn"));
    let (username, password) = check_ice_servers(&page["iceServers"], SECRET, 1);
    std::thread::sleep(Duration::from_secs(2));
    let (code, output) = coturn.relay_through(&username, &password);
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("Cannot complete Allocation"), "{output}");
}
