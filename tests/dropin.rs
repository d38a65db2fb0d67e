//! The real binary started as an operator of the original would start it: where it listens
//! without `--bind` (IPv6 and IPv4 on one socket, as Node's `listen(port)`; IPv4 where
//! there is no IPv6), that an explicit address is obeyed exactly, and the original's
//! `LOG_LEVEL` values (pino's: fatal ... trace, silent).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_diva-signal");
const PATIENCE: Duration = Duration::from_secs(10);

/// A spawned server and its output lines (stderr and stdout); killed on drop.
struct Spawned {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stdout: mpsc::Receiver<String>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    /// The address of the start line ("listening on ADDR"); the lines before it are kept.
    fn listening_on(&self, earlier: &mut Vec<String>) -> SocketAddr {
        loop {
            let line = self
                .stderr
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|err| panic!("the server did not log its address ({err}): {earlier:#?}"));
            if let Some((_, rest)) = line.split_once("listening on ") {
                let addr = rest.split_whitespace().next().expect("address");
                return addr.parse().unwrap_or_else(|_| panic!("not an address: {line}"));
            }
            earlier.push(line);
        }
    }

    /// SIGTERM, then the exit code and everything the server printed.
    fn stop(mut self) -> (Option<i32>, Vec<String>) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let code = wait_exit(&mut self.child);
        (code, self.rest_of_output())
    }

    /// What the server printed so far and until its output closes (it has exited).
    fn rest_of_output(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.stdout.iter().collect();
        lines.extend(self.stderr.iter());
        lines
    }
}

/// The server with `args` and `env` over an environment without our settings, `prepare`
/// run in the child before it starts; Err when it cannot be started so.
fn spawn_prepared(
    args: &[&str],
    env: &[(&str, &str)],
    prepare: Option<Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>>,
) -> std::io::Result<Spawned> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(BIN);
    command.args(args);
    for name in ["PORT", "BIND_IP", "LOG_LEVEL", "RUST_LOG"] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(prepare) = prepare {
        // SAFETY: `prepare` only makes system calls (no allocation, no locks).
        unsafe { command.pre_exec(prepare) };
    }
    let mut child = command.spawn()?;
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    let stdout = lines_of(child.stdout.take().expect("stdout"));
    Ok(Spawned { child, stderr, stdout })
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Spawned {
    spawn_prepared(args, env, None).expect("spawn server")
}

fn lines_of(output: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(start.elapsed() < PATIENCE, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when this machine has an IPv6 loopback; says so when it has not.
fn has_ipv6_loopback(test: &str) -> bool {
    match TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => true,
        Err(err) => {
            eprintln!("{test}: skipped, no IPv6 loopback here ([::1]:0: {err})");
            false
        }
    }
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)
}

/// The server at `addr` answers `/health`.
fn assert_answers(addr: SocketAddr) {
    let body = diva_signal::healthcheck::check(addr, PATIENCE, false).unwrap_or_else(|why| panic!("{why}"));
    assert!(body.contains("\"status\":\"ok\""), "{addr}: {body}");
}

fn assert_refused(addr: SocketAddr) {
    let result = TcpStream::connect_timeout(&addr, PATIENCE).map(|_| ()).map_err(|err| err.kind());
    assert_eq!(result, Err(ErrorKind::ConnectionRefused), "{addr} must not answer");
}

/// A port nobody listens on just now (for servers that do not log their address).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("free port").port()
}

fn wait_until_answering(addr: SocketAddr) {
    let start = Instant::now();
    while diva_signal::healthcheck::check(addr, PATIENCE, false).is_err() {
        assert!(start.elapsed() < PATIENCE, "{addr} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn websocket(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    common::ws_handshake(addr, format!("ws://{addr}/")).unwrap_or_else(|err| panic!("{addr}: {err}"))
}

fn send(ws: &mut tungstenite::WebSocket<TcpStream>, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

fn recv(ws: &mut tungstenite::WebSocket<TcpStream>) -> serde_json::Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[test]
fn by_default_one_socket_serves_ipv6_and_ipv4_clients_as_the_original_does() {
    if !has_ipv6_loopback("by_default_one_socket_serves_ipv6_and_ipv4_clients") {
        return;
    }
    let server = spawn(&["--port", "0"], &[]);
    let addr = server.listening_on(&mut Vec::new());
    assert_eq!(addr.ip(), Ipv6Addr::UNSPECIFIED, "{addr}");
    assert_answers(v6(addr.port()));
    assert_answers(v4(addr.port()));

    // A peer over IPv6 and one over IPv4 meet in one room and signal each other.
    let mut over_v6 = websocket(v6(addr.port()));
    let mut over_v4 = websocket(v4(addr.port()));
    send(&mut over_v6, r#"["join","six","r"]"#);
    assert_eq!(recv(&mut over_v6), json!(["join", "r:six"]));
    send(&mut over_v4, r#"["join","four","r"]"#);
    assert_eq!(recv(&mut over_v4), json!(["join", "r:four"]));
    assert_eq!(recv(&mut over_v4), json!(["stun", "r:four", "r:six", true]));
    assert_eq!(recv(&mut over_v6), json!(["stun", "r:six", "r:four", false]));
    send(&mut over_v4, r#"["signal","r:four","r:six",{"type":"offer"}]"#);
    assert_eq!(recv(&mut over_v6), json!(["signal", "r:six", "r:four", {"type": "offer"}]));

    // The container's health check, with only PORT set as there, finds it.
    let port = addr.port().to_string();
    let health = Command::new(BIN)
        .arg("--healthcheck")
        .env("PORT", &port)
        .env_remove("BIND_IP")
        .output()
        .expect("run healthcheck");
    assert_eq!(health.status.code(), Some(0), "{health:?}");
    drop((over_v6, over_v4));
    assert_eq!(server.stop().0, Some(0));
}

#[test]
fn an_explicit_ipv4_address_is_obeyed_exactly() {
    let server = spawn(&["--port", "0"], &[("BIND_IP", "127.0.0.1")]);
    let addr = server.listening_on(&mut Vec::new());
    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
    assert_answers(v4(addr.port()));
    if has_ipv6_loopback("an_explicit_ipv4_address_is_obeyed_exactly ([::1] part)") {
        assert_refused(v6(addr.port()));
    }
}

#[test]
fn an_explicit_ipv6_any_address_is_dual_stack_too() {
    if !has_ipv6_loopback("an_explicit_ipv6_any_address_is_dual_stack_too") {
        return;
    }
    let server = spawn(&["--bind", "::", "--port", "0"], &[]);
    let addr = server.listening_on(&mut Vec::new());
    assert_answers(v6(addr.port()));
    assert_answers(v4(addr.port()));
    let server = spawn(&["--bind", "::1", "--port", "0"], &[]);
    let addr = server.listening_on(&mut Vec::new());
    assert_answers(v6(addr.port()));
    assert_refused(v4(addr.port()));
}

/// Makes `socket(AF_INET6, ...)` fail with EAFNOSUPPORT in the calling process, as on a
/// kernel without IPv6 (`ipv6.disable=1`): a seccomp filter, allowed without privileges
/// once the process gives up gaining any (`PR_SET_NO_NEW_PRIVS`).
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
fn without_ipv6_sockets() -> Box<dyn FnMut() -> std::io::Result<()> + Send + Sync> {
    // Classic BPF opcodes (linux/bpf_common.h) and the offsets of `struct seccomp_data`.
    const LOAD_WORD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RETURN: u16 = 0x06; // BPF_RET | BPF_K
    const SYSCALL_NR: u32 = 0;
    const ARCH: u32 = 4;
    const FIRST_ARGUMENT: u32 = 16; // its low half on these little-endian machines
    #[cfg(target_arch = "x86_64")]
    const THIS_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const THIS_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    let step = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        step(LOAD_WORD, 0, 0, ARCH),
        step(JUMP_IF_EQUAL, 0, 5, THIS_ARCH),
        step(LOAD_WORD, 0, 0, SYSCALL_NR),
        step(JUMP_IF_EQUAL, 0, 3, libc::SYS_socket as u32),
        step(LOAD_WORD, 0, 0, FIRST_ARGUMENT),
        step(JUMP_IF_EQUAL, 0, 1, libc::AF_INET6 as u32),
        step(RETURN, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32),
        step(RETURN, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    Box::new(move || {
        let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
        // SAFETY: prctl with the arguments these options take; `program` points at `filter`,
        // which outlives the call (the kernel copies it).
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

#[test]
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
fn without_ipv6_the_default_listens_on_ipv4_and_says_so_once() {
    let test = "without_ipv6_the_default_listens_on_ipv4_and_says_so_once";
    let server = match spawn_prepared(&["--port", "0"], &[], Some(without_ipv6_sockets())) {
        Ok(server) => server,
        Err(err) => return eprintln!("{test}: skipped, cannot install a seccomp filter: {err}"),
    };
    let mut before = Vec::new();
    let addr = server.listening_on(&mut before);
    assert_eq!(addr.ip(), Ipv4Addr::UNSPECIFIED, "{addr}");
    let fallback: Vec<&String> = before.iter().filter(|line| line.contains("IPv6")).collect();
    assert_eq!(fallback.len(), 1, "{before:?}");
    assert!(fallback[0].contains(" INFO ") && fallback[0].contains("IPv4 clients only"), "{before:?}");
    assert_answers(v4(addr.port()));
    if has_ipv6_loopback(&format!("{test} ([::1] part)")) {
        assert_refused(v6(addr.port()));
    }
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log:?}");

    // An explicit `::` is obeyed exactly: no IPv6, no server.
    let explicit = spawn_prepared(&["--bind", "::", "--port", "0"], &[], Some(without_ipv6_sockets()))
        .expect("spawn server");
    let mut explicit = explicit;
    let code = wait_exit(&mut explicit.child);
    let log = explicit.rest_of_output();
    assert_eq!(code, Some(1), "{log:?}");
    assert!(log.iter().any(|line| line.contains("cannot listen on [::]:0")), "{log:?}");
}

/// In network namespaces of its own (root and `unshare` needed): the default bind is
/// dual-stack even where `net.ipv6.bindv6only=1` would make an IPv6 socket IPv6-only, and
/// serves IPv4 where IPv6 is switched off (`disable_ipv6=1`, as `docker run --sysctl` does).
#[test]
fn in_network_namespaces_the_default_serves_ipv4_whatever_the_ipv6_settings() {
    let test = "in_network_namespaces_the_default_serves_ipv4_whatever_the_ipv6_settings";
    // SAFETY: geteuid only reads.
    if unsafe { libc::geteuid() } != 0 {
        return eprintln!("{test}: skipped, needs root for network namespaces");
    }
    let usable = Command::new("unshare").args(["--net", "ip", "link", "set", "lo", "up"]).output();
    if !usable.as_ref().is_ok_and(|output| output.status.success()) {
        return eprintln!("{test}: skipped, `unshare --net` with `ip` is not usable here: {usable:?}");
    }
    // Each case in a fresh namespace, so port 3903 is free there. The healthcheck runs the
    // binary once more as a client inside the namespace.
    let script = r#"
        set -u
        bin=$1 setting=$2 v6_expected=$3
        ip link set lo up
        for path in $setting; do echo 1 >"/proc/sys/net/ipv6/$path"; done
        PORT=3903 "$bin" & server=$!
        tries=0
        until PORT=3903 "$bin" --healthcheck >/dev/null 2>&1; do
            tries=$((tries + 1))
            if [ $tries -gt 200 ]; then echo "IPv4 never answered"; kill $server; exit 1; fi
            sleep 0.05
        done
        if PORT=3903 BIND_IP=::1 "$bin" --healthcheck >/dev/null 2>&1; then v6=yes; else v6=no; fi
        kill $server; wait $server; status=$?
        if [ "$v6" != "$v6_expected" ]; then echo "IPv6 answered: $v6, expected $v6_expected"; exit 1; fi
        exit $status
    "#;
    for (setting, v6_expected) in [
        ("bindv6only", "yes"),
        ("conf/all/disable_ipv6 conf/default/disable_ipv6 conf/lo/disable_ipv6", "no"),
    ] {
        let output = Command::new("unshare")
            .args(["--net", "sh", "-c", script, "sh", BIN, setting, v6_expected])
            .env_remove("PORT")
            .env_remove("BIND_IP")
            .env_remove("LOG_LEVEL")
            .output()
            .expect("run unshare");
        let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{setting}: {text}");
        assert!(text.contains("listening on [::]:3903"), "{setting}: {text}");
    }
}

#[test]
fn trace_shows_our_events_and_no_dependency_internals() {
    let server = spawn(&["--bind", "127.0.0.1", "--port", "0"], &[("LOG_LEVEL", "trace")]);
    let addr = server.listening_on(&mut Vec::new());
    let mut client = websocket(addr);
    send(&mut client, r#"["join","a","r"]"#);
    assert_eq!(recv(&mut client), json!(["join", "r:a"]));
    send(&mut client, "not json");
    assert_eq!(recv(&mut client)[2], "bad-json");
    drop(client);
    let start = Instant::now();
    let mut log = Vec::new();
    while !log.iter().any(|line: &String| line.contains("closed")) {
        assert!(start.elapsed() < PATIENCE, "no close line: {log:#?}");
        if let Ok(line) = server.stderr.recv_timeout(Duration::from_millis(50)) {
            log.push(line);
        }
    }
    let (code, rest) = server.stop();
    assert_eq!(code, Some(0));
    log.extend(rest);
    assert!(log.iter().any(|line| line.contains("WebSocket on /")), "{log:#?}");
    for line in &log {
        // simple_logger writes "TIME LEVEL [TARGET] message".
        let target = line.split_once(" [").and_then(|(_, rest)| rest.split_once(']')).map(|(t, _)| t);
        assert!(target.is_some_and(|t| t.starts_with("diva_signal")), "not our line: {line}");
    }
}

#[test]
fn silent_prints_nothing_at_all() {
    let port = free_port();
    let server = spawn(&["--bind", "127.0.0.1", "--port", &port.to_string()], &[("LOG_LEVEL", "silent")]);
    wait_until_answering(v4(port));
    let mut client = websocket(v4(port));
    send(&mut client, r#"["join","a","r"]"#);
    assert_eq!(recv(&mut client), json!(["join", "r:a"]));
    send(&mut client, "not json");
    assert_eq!(recv(&mut client)[2], "bad-json");
    drop(client);
    let (code, output) = server.stop();
    assert_eq!(code, Some(0));
    assert!(output.is_empty(), "{output:#?}");
}

#[test]
fn fatal_prints_only_what_stops_the_server() {
    let port = free_port();
    let args = ["--bind", "127.0.0.1", "--port", &port.to_string()];
    let running = spawn(&args, &[("LOG_LEVEL", "fatal")]);
    wait_until_answering(v4(port));
    let mut client = websocket(v4(port));
    send(&mut client, r#"["ping"]"#);
    assert_eq!(recv(&mut client), json!(["pong"]));

    // A second server on the same port cannot start: that, and only that, is logged.
    let mut second = spawn(&args, &[("LOG_LEVEL", "fatal")]);
    assert_eq!(wait_exit(&mut second.child), Some(1));
    let output = second.rest_of_output();
    assert_eq!(output.len(), 1, "{output:#?}");
    assert!(output[0].contains("ERROR") && output[0].contains("cannot listen on"), "{output:#?}");

    drop(client);
    let (code, output) = running.stop();
    assert_eq!(code, Some(0));
    assert!(output.is_empty(), "{output:#?}");
}

/// On the dual-stack socket IPv4 clients arrive as IPv4-mapped IPv6 addresses
/// (`::ffff:127.0.0.1`); the server must treat them as the IPv4 addresses they are, or a
/// request proxied from loopback would stop counting as proxied.
#[test]
fn ipv4_clients_of_the_dual_stack_socket_are_seen_as_ipv4() {
    let server = common::TestServer::with(|config| config.bind = None);
    let local = v4(server.addr.port());
    let ask = |request: &[u8]| {
        let mut stream = TcpStream::connect(local).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        std::io::Write::write_all(&mut stream, request).expect("send");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    assert!(ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200 "));
    let proxied = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n";
    let response = ask(proxied);
    assert!(response.starts_with("HTTP/1.1 403 "), "a proxied stranger must not read metrics: {response}");
}
