//! The real binary: command line, exit codes, and graceful shutdown on signals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::Duration;

use common::{SERVER_BIN, Spawned};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

const PATIENCE: Duration = Duration::from_secs(10);

fn spawn(args: &[&str]) -> Spawned {
    spawn_with_fd_limit(args, None)
}

/// Spawns the server, optionally with a hard open-file limit (to run it out of descriptors).
fn spawn_with_fd_limit(args: &[&str], fd_limit: Option<u64>) -> Spawned {
    let mut command = common::server_command(args);
    if let Some(limit) = fd_limit {
        common::set_fd_limit_in_child(&mut command, limit);
    }
    common::spawn_server(command)
}

/// A WebSocket client on `addr`, the handshake redone when a read is interrupted.
fn connect(addr: &str, url: &str) -> tungstenite::WebSocket<TcpStream> {
    let addr = addr.parse().expect("a socket address");
    common::ws_handshake(addr, url)
        .unwrap_or_else(|err| panic!("WebSocket handshake with {url} failed: {err}"))
}

/// Every line the server logged, once it has exited: waits for the thread reading its
/// stderr to reach the end, so that no line is still on its way.
fn all_lines(server: &Spawned) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = server.log.recv_timeout(PATIENCE) {
        lines.push(line);
    }
    lines
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(start.elapsed() < PATIENCE, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_zero() {
    let mut server = spawn(&[]);
    let mut clients: Vec<_> = (0..3)
        .map(|n| {
            let mut ws = connect(&server.addr, &format!("ws://{}/", server.addr));
            ws.send(Message::text(format!(r#"["join","peer{n}","room"]"#))).expect("join");
            ws
        })
        .collect();
    // Wait for the last join to be acknowledged so every client is known to the server.
    let last = clients.last_mut().expect("clients");
    assert!(matches!(last.read(), Ok(Message::Text(_))));

    signal(&server.child, libc::SIGTERM);
    for ws in &mut clients {
        let close = loop {
            match ws.read() {
                Ok(Message::Close(frame)) => break frame,
                Ok(_) => continue,
                Err(err) => panic!("expected a close frame, got {err:?}"),
            }
        };
        assert_eq!(close.map(|frame| frame.code), Some(CloseCode::Away));
    }
    drop(clients);
    let status = wait_exit(&mut server.child);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let log = all_lines(&server);
    assert!(log.iter().any(|line| line.contains("shutting down")), "{log:?}");
}

/// Clients that never read the close frame nor hang up: the server waits the documented
/// grace of 2 s for them, no longer (it took 2.9-3.0 s when its poll ignored the deadline),
/// and its last line counts them as dropped.
#[test]
fn sigterm_waits_at_most_the_grace_for_clients_that_do_not_close() {
    let mut server = spawn(&[]);
    let addr: std::net::SocketAddr = server.addr.parse().expect("address");
    let stuck: Vec<common::RawClient> =
        (0..2).map(|_| common::RawClient::handshake(common::connect_small_rcvbuf(addr), "/")).collect();
    let mut live = connect(&server.addr, &format!("ws://{}/", server.addr));
    live.send(Message::text(r#"["ping"]"#)).expect("ping");
    assert!(matches!(live.read(), Ok(Message::Text(_))));

    let start = std::time::Instant::now();
    signal(&server.child, libc::SIGTERM);
    // The live client answers the close at once, as any WebSocket library does (its reply
    // goes out on the read after the close frame), and then sees the end.
    while live.read().is_ok() {}
    drop(live);
    let status = wait_exit(&mut server.child);
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    // The grace is 2 s; a little more for the process to end and be seen ending.
    assert!(took < Duration::from_millis(2600), "shutdown took {took:?}");
    let log = all_lines(&server);
    let last = log.iter().rev().find(|line| line.contains("shut down;")).expect("a last line");
    assert!(last.contains(" 2 connection(s)"), "{log:?}");
    drop(stuck);
}

/// Memory held for clients that overflowed goes back to the system soon after they close
/// (21 MB stayed resident for 15 s, until an unrelated release trimmed the heap).
#[test]
fn memory_of_closed_slow_readers_goes_back_to_the_system() {
    let server = spawn(&["--max-outbound", "4MiB", "--rate", "1000000", "--burst", "1000000"]);
    let addr: std::net::SocketAddr = server.addr.parse().expect("address");
    let pid = server.child.id();
    let mut sender = connect(&server.addr, &format!("ws://{}/", server.addr));
    sender.send(Message::text(r#"["join","sender","r"]"#)).expect("join");
    let rss_before = resident_kib(pid);
    let mut sinks = Vec::new();
    for n in 0..40 {
        let mut sink = common::RawClient::handshake(common::connect_small_rcvbuf(addr), "/");
        sink.send_text(&format!(r#"["join","sink{n}","r"]"#));
        sink.recv();
        sinks.push(sink);
    }
    let data = "x".repeat(60_000);
    for n in 0..40 {
        for _ in 0..20 {
            let signal = format!(r#"["signal","r:sender","r:sink{n}","{data}"]"#);
            sender.write(Message::text(signal)).expect("queue");
        }
        sender.flush().expect("flush");
    }
    // A ping behind the flood: its pong means every signal was handled.
    sender.send(Message::text(r#"["ping"]"#)).expect("ping");
    loop {
        match sender.read() {
            Ok(Message::Text(text)) if text.as_str() == r#"["pong"]"# => break,
            Ok(_) => {}
            Err(err) => panic!("sender lost its connection: {err}"),
        }
    }
    let rss_peak = resident_kib(pid);
    assert!(rss_peak > rss_before + 20_000, "the flood did not take memory: {rss_before} -> {rss_peak} KiB");
    drop(sinks);
    let start = std::time::Instant::now();
    loop {
        let rss = resident_kib(pid);
        if rss < rss_before + (rss_peak - rss_before) / 4 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "still {rss} KiB resident (before {rss_before}, peak {rss_peak})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The resident set of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number")
}

#[test]
fn sigint_also_exits_zero_and_stops_listening() {
    let mut server = spawn(&[]);
    signal(&server.child, libc::SIGINT);
    let status = wait_exit(&mut server.child);
    assert_eq!(status.code(), Some(0));
    let refused = TcpStream::connect(&server.addr).map_err(|err| err.kind());
    assert_eq!(refused.err(), Some(ErrorKind::ConnectionRefused));
}

#[test]
fn bad_configuration_exits_with_2_and_one_clear_line() {
    for (args, env) in [
        (&["--port", "99999"][..], None),
        (&["--no-such-flag"][..], None),
        (&[][..], Some(("LOG_LEVEL", "chatty"))),
        (&[][..], Some(("BIND_IP", "not-an-ip"))),
    ] {
        let mut command = Command::new(SERVER_BIN);
        command.args(args).env_remove("PORT").env_remove("BIND_IP").env_remove("LOG_LEVEL");
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command.output().expect("run");
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("diva-signal: "), "{stderr}");
    }
}

#[test]
fn help_and_version() {
    let help = Command::new(SERVER_BIN).arg("--help").output().expect("run");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--port", "--bind", "--log-level", "PORT", "BIND_IP", "LOG_LEVEL"] {
        assert!(text.contains(flag), "help lacks {flag}");
    }
    let version = Command::new(SERVER_BIN).arg("--version").output().expect("run");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("diva-signal {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn port_in_use_is_a_clear_failure() {
    let server = spawn(&[]);
    let port = server.addr.rsplit(':').next().expect("port");
    let output = Command::new(SERVER_BIN)
        .args(["--bind", "127.0.0.1", "--port", port])
        .env_remove("PORT")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("address"), "{stderr}");
}

#[test]
fn healthcheck_exits_0_for_a_live_server_and_1_for_a_dead_one() {
    let mut server = spawn(&[]);
    let port = server.addr.rsplit(':').next().expect("port").to_owned();
    let check = |port: &str| {
        Command::new(SERVER_BIN)
            .args(["--healthcheck", "--bind", "127.0.0.1", "--port", port])
            .env_remove("PORT")
            .env_remove("BIND_IP")
            .output()
            .expect("run healthcheck")
    };
    let live = check(&port);
    assert_eq!(live.status.code(), Some(0), "{live:?}");
    assert!(String::from_utf8_lossy(&live.stdout).contains("\"status\":\"ok\""));

    signal(&server.child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut server.child).code(), Some(0));
    let dead = check(&port);
    assert_eq!(dead.status.code(), Some(1), "{dead:?}");
    assert!(String::from_utf8_lossy(&dead.stderr).starts_with("unhealthy: "));
}

#[test]
fn healthcheck_uses_port_from_environment_like_the_server() {
    let server = spawn(&[]);
    let port = server.addr.rsplit(':').next().expect("port");
    // PORT set, and an unspecified BIND_IP (0.0.0.0) means "ask loopback".
    let output = Command::new(SERVER_BIN)
        .arg("--healthcheck")
        .env("PORT", port)
        .env("BIND_IP", "0.0.0.0")
        .output()
        .expect("run healthcheck");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn out_of_descriptors_the_server_keeps_serving_and_logs_once() {
    // 32 descriptors: stdio, the listener, the poll, the signal pipe... and room for about 20
    // clients. The connection limit is set far higher, so accept() itself runs out.
    let mut server = spawn_with_fd_limit(&["--max-connections", "1000"], Some(32));
    let url = format!("ws://{}/", server.addr);
    let mut first = connect(&server.addr, &url);
    let mut hogs: Vec<TcpStream> =
        (0..60).map(|_| TcpStream::connect(&server.addr).expect("connect")).collect();
    // The first client is still served while the rest wait in the backlog.
    first.send(Message::text(r#"["ping"]"#)).expect("ping");
    assert_eq!(first.read().expect("pong").into_text().expect("text").as_str(), r#"["pong"]"#);

    // Free the descriptors: the server must pick up new clients again.
    hogs.clear();
    let mut later = connect(&server.addr, &url);
    later.send(Message::text(r#"["ping"]"#)).expect("ping");
    assert_eq!(later.read().expect("pong").into_text().expect("text").as_str(), r#"["pong"]"#);

    signal(&server.child, libc::SIGTERM);
    drop((first, later));
    assert_eq!(wait_exit(&mut server.child).code(), Some(0));
    let log = all_lines(&server);
    let warnings = log.iter().filter(|line| line.contains("accept failed")).count();
    assert_eq!(warnings, 1, "one warning per burst, not per attempt: {log:#?}");
}
