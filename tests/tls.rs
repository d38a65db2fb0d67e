//! Native TLS over real sockets with a real TLS client (rustls): wss:// and https://, and
//! what a TLS port does with clients that do not speak TLS or stop half way.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use common::{PATIENCE, TestServer};

type TlsClientStream = StreamOwned<ClientConnection, TcpStream>;

/// A test CA and a certificate for `localhost` it signed, as PEM files in a fresh folder.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertificateDer<'static>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// The common name of the server certificate.
    pub fn name(&self) -> String {
        let n =
            self.dir.file_name().unwrap().to_str().unwrap().trim_start_matches("diva-signal-tls-").to_owned();
        format!("diva-signal test {n}")
    }

    pub fn generate() -> Pki {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let serial = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("diva-signal-tls-{}-{serial}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "diva-signal test CA");
        // GeneralizedTime (from 2050 on), the server's UTCTime: both are read for the gauge.
        ca_params.not_after = rcgen::date_time_ymd(2051, 5, 17);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        // Which certificate a server serves shows in its subject.
        params
            .distinguished_name
            .push(DnType::CommonName, format!("diva-signal test {}-{serial}", std::process::id()));
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        // The full chain, as certbot's fullchain.pem has it.
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), ca_cert.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Pki { dir, ca: ca_cert.der().clone(), cert: cert_path, key: key_path }
    }

    /// A server whose port speaks TLS with this certificate.
    pub fn server(&self, tweak: impl FnOnce(&mut diva_signal::Config)) -> TestServer {
        TestServer::with(|config| {
            config.tls_cert = Some(self.cert.clone());
            config.tls_key = Some(self.key.clone());
            tweak(config);
        })
    }

    /// A client that trusts this CA, offering `versions` and ALPN http/1.1.
    pub fn client_config(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A TLS connection to `addr`, handshake done.
    pub fn connect(&self, addr: SocketAddr) -> TlsClientStream {
        self.connect_with(addr, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    pub fn connect_with(
        &self,
        addr: SocketAddr,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsClientStream {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(self.client_config(versions), name).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).expect("TLS handshake");
        }
        stream
    }

    /// A wss:// client on `/`.
    pub fn ws(&self, addr: SocketAddr) -> WebSocket<TlsClientStream> {
        let stream = self.connect(addr);
        let url = format!("wss://localhost:{}/", addr.port());
        tungstenite::client(url, stream).expect("wss handshake").0
    }

    /// `GET path` over https:// and the whole response.
    pub fn get(&self, addr: SocketAddr, path: &str) -> String {
        let mut stream = self.connect(addr);
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
        let mut response = Vec::new();
        match stream.read_to_end(&mut response) {
            Ok(_) => {}
            Err(err) => {
                panic!("reading the response: {err} (so far {:?})", String::from_utf8_lossy(&response))
            }
        }
        String::from_utf8(response).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn send(ws: &mut WebSocket<TlsClientStream>, value: &Value) {
    ws.send(Message::text(value.to_string())).unwrap();
}

fn recv(ws: &mut WebSocket<TlsClientStream>) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Two wss:// clients joined to room "r": (alice, her address, bob, his address).
fn pair(
    pki: &Pki,
    addr: SocketAddr,
) -> (WebSocket<TlsClientStream>, String, WebSocket<TlsClientStream>, String) {
    let mut alice = pki.ws(addr);
    let mut bob = pki.ws(addr);
    send(&mut alice, &json!(["join", "a", "r"]));
    assert_eq!(recv(&mut alice), json!(["join", "r:a"]));
    send(&mut bob, &json!(["join", "b", "r"]));
    assert_eq!(recv(&mut bob), json!(["join", "r:b"]));
    assert_eq!(recv(&mut alice)[0], "stun");
    assert_eq!(recv(&mut bob)[0], "stun");
    (alice, "r:a".into(), bob, "r:b".into())
}

/// A signal from one to the other and back: both still served.
fn round_trip(
    alice: &mut WebSocket<TlsClientStream>,
    a: &str,
    bob: &mut WebSocket<TlsClientStream>,
    b: &str,
    n: u32,
) {
    send(alice, &json!(["signal", a, b, {"n": n}]));
    assert_eq!(recv(bob), json!(["signal", b, a, {"n": n}]));
    send(bob, &json!(["signal", b, a, n]));
    assert_eq!(recv(alice), json!(["signal", a, b, n]));
}

/// Waits for the server to close `stream` (end of file or reset) and returns what it sent.
fn wait_for_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(within)).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return got,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("not closed within {within:?} ({:?}): {err}", start.elapsed()),
        }
    }
}

#[test]
fn wss_join_and_signal_between_two_tls_clients() {
    let pki = Pki::generate();
    let server = pki.server(|_| {});
    let (mut alice, a, mut bob, b) = pair(&pki, server.addr);
    for n in 0..5 {
        round_trip(&mut alice, &a, &mut bob, &b, n);
    }
}

#[test]
fn https_health_over_tls_1_2_and_1_3_with_alpn() {
    let pki = Pki::generate();
    let server = pki.server(|_| {});
    let response = pki.get(server.addr, "/health");
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut stream = pki.connect_with(server.addr, &[version]);
        assert_eq!(stream.conn.protocol_version(), Some(version.version));
        assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 "), "{version:?}: {response}");
    }
}

#[test]
fn the_tls_port_does_not_speak_plain_http() {
    let pki = Pki::generate();
    let server = pki.server(|_| {});
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let got = wait_for_close(&mut plain, PATIENCE);
    assert!(!got.starts_with(b"HTTP"), "{:?}", String::from_utf8_lossy(&got));
    // Still serving.
    assert!(pki.get(server.addr, "/health").starts_with("HTTP/1.1 200 "));
}

/// Many signals in one burst: TLS records bigger and smaller than a read, plaintext left
/// inside rustls after the socket is drained. All arrive, in order.
#[test]
fn bursts_and_large_messages_arrive_whole_and_in_order() {
    let pki = Pki::generate();
    let server = pki.server(|_| {});
    let (mut alice, a, mut bob, b) = pair(&pki, server.addr);
    let count = 300;
    for n in 0..count {
        alice.write(Message::text(json!(["signal", a, b, n]).to_string())).unwrap();
    }
    alice.flush().unwrap();
    for n in 0..count {
        assert_eq!(recv(&mut bob), json!(["signal", b, a, n]));
    }
    let big = "x".repeat(60 * 1024);
    for n in 0..8 {
        alice.write(Message::text(json!(["signal", a, b, {"n": n, "sdp": big}]).to_string())).unwrap();
    }
    alice.flush().unwrap();
    for n in 0..8 {
        assert_eq!(recv(&mut bob), json!(["signal", b, a, {"n": n, "sdp": big}]));
    }
    round_trip(&mut alice, &a, &mut bob, &b, 1);
}

/// Random bytes, half a ClientHello and a silent client on the TLS port are closed within
/// the handshake timeout; meanwhile everyone else is served without delay.
#[test]
fn garbage_half_hellos_and_stalled_handshakes_are_closed_without_harm() {
    let pki = Pki::generate();
    let server = pki.server(|config| config.handshake_timeout = Duration::from_secs(1));
    let (mut alice, a, mut bob, b) = pair(&pki, server.addr);

    let mut random = TcpStream::connect(server.addr).unwrap();
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    random.write_all(&noise).unwrap();

    // The first bytes of a real ClientHello, and then nothing.
    let hello = {
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(pki.client_config(&[&rustls::version::TLS13]), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    };
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut silent = TcpStream::connect(server.addr).unwrap();

    // While they hang on, others connect, hand-shake and talk at once.
    let start = Instant::now();
    round_trip(&mut alice, &a, &mut bob, &b, 1);
    assert!(pki.get(server.addr, "/health").starts_with("HTTP/1.1 200 "));
    let mut carol = pki.ws(server.addr);
    send(&mut carol, &json!(["ident"]));
    assert_eq!(recv(&mut carol)[0], "ident");
    assert!(start.elapsed() < Duration::from_millis(900), "served in {:?}", start.elapsed());

    wait_for_close(&mut random, PATIENCE);
    let within = Duration::from_secs(3);
    wait_for_close(&mut half, within);
    wait_for_close(&mut silent, within);
    round_trip(&mut alice, &a, &mut bob, &b, 2);

    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    wait_for_close(&mut plain, PATIENCE);
    let metrics = pki.get(server.addr, "/metrics");
    let sample = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // alice, bob, carol and two GETs of /health and /metrics.
    assert_eq!(sample("diva_signal_tls_handshakes_total "), 5);
    assert_eq!(sample("diva_signal_tls_handshake_failures_total{reason=\"not_tls\"} "), 2);
    assert_eq!(sample("diva_signal_tls_handshake_failures_total{reason=\"timeout\"} "), 2);
    assert_eq!(sample("diva_signal_tls_handshake_failures_total{reason=\"closed\"} "), 0);
    assert_eq!(sample("diva_signal_tls_certificate_expiry_timestamp_seconds "), 1_936_742_400);
}

#[test]
fn certificate_expiry_is_read_from_utc_and_generalized_times() {
    let pki = Pki::generate();
    let settings = diva_signal::tls::load(&pki.cert, &pki.key).unwrap();
    assert_eq!(settings.expires, Some(1_936_742_400)); // 2031-05-17, UTCTime
    assert_eq!(diva_signal::tls::not_after(&pki.ca), Some(2_567_894_400)); // 2051-05-17, GeneralizedTime
}

/// Run the binary with `args` and return its exit code and standard error.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_diva-signal"))
        .args(args)
        .env_remove("TLS_CERT")
        .env_remove("TLS_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn bad_tls_settings_refuse_to_start_with_one_line() {
    let pki = Pki::generate();
    let other = Pki::generate();
    let missing = pki.dir.join("missing.pem");
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--tls-cert", path(&pki.cert)], vec![], "needs --tls-key"),
        (vec!["--tls-key", path(&pki.key)], vec![], "needs --tls-cert"),
        (vec![], vec![("TLS_CERT", path(&pki.cert))], "needs --tls-key"),
        (
            vec!["--tls-cert", path(&missing), "--tls-key", path(&pki.key)],
            vec![],
            "cannot read the TLS certificate",
        ),
        (vec!["--tls-cert", path(&pki.cert), "--tls-key", path(&missing)], vec![], "cannot read the TLS key"),
        (vec!["--tls-cert", path(&garbage), "--tls-key", path(&pki.key)], vec![], "certificate"),
        (vec!["--tls-cert", path(&pki.cert), "--tls-key", path(&garbage)], vec![], "cannot read the TLS key"),
        (vec!["--tls-cert", path(&pki.cert), "--tls-key", path(&other.key)], vec![], "do not go together"),
    ];
    for (args, env, expected) in cases {
        let mut all = vec!["--port", "0", "--bind", "127.0.0.1"];
        all.extend(&args);
        let (code, stderr) = run_binary(&all, &env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
    }
}

/// PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys all load; made with the openssl command.
#[test]
fn keys_in_pkcs8_pkcs1_and_sec1_load() {
    let dir = Pki::generate();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl").args(args).current_dir(&dir.dir).status();
        assert!(status.is_ok_and(|s| s.success()), "openssl {args:?}");
    };
    run(&["genrsa", "-traditional", "-out", "rsa1.pem", "2048"]);
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sec1.pem"]);
    run(&["genpkey", "-algorithm", "ed25519", "-out", "p8.pem"]);
    for key in ["rsa1.pem", "sec1.pem", "p8.pem"] {
        let first = std::fs::read_to_string(dir.dir.join(key)).unwrap();
        let expected = match key {
            "rsa1.pem" => "-----BEGIN RSA PRIVATE KEY-----",
            "sec1.pem" => "-----BEGIN EC PRIVATE KEY-----",
            _ => "-----BEGIN PRIVATE KEY-----",
        };
        assert!(first.starts_with(expected), "{key}: {first}");
        let cert = format!("{key}.crt");
        run(&["req", "-x509", "-new", "-key", key, "-subj", "/CN=localhost", "-days", "1", "-out", &cert]);
        let loaded = diva_signal::tls::load(&dir.dir.join(&cert), &dir.dir.join(key));
        assert!(loaded.is_ok(), "{key}: {:?}", loaded.err());
    }
}

/// The subject of the certificate a server at `addr` serves, as `openssl s_client` reads it.
fn served_subject(addr: SocketAddr) -> String {
    let output = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let subject = text.lines().find(|line| line.starts_with("subject=")).unwrap_or_else(|| panic!("{text}"));
    subject.to_owned()
}

/// The binary with TLS from `pki`'s files, and the address it logged; its log lines go on.
struct Spawned {
    process: common::Spawned,
    addr: SocketAddr,
}

impl Spawned {
    fn start(pki: &Pki) -> Spawned {
        let args = ["--tls-cert", path(&pki.cert), "--tls-key", path(&pki.key)];
        let process = common::spawn_server(common::server_command(&args));
        assert!(process.start_line.contains("with TLS"), "{}", process.start_line);
        let addr = process.addr.parse().unwrap();
        Spawned { process, addr }
    }

    fn hang_up(&self) {
        let status =
            std::process::Command::new("kill").args(["-HUP", &self.process.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()));
    }

    /// Waits for a log line that contains `text`.
    fn wait_for_log(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let left = PATIENCE.saturating_sub(start.elapsed());
            let line =
                self.process.log.recv_timeout(left).unwrap_or_else(|_| panic!("no log line with {text:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }
}

/// `--healthcheck` with the server's own TLS settings asks it over TLS.
#[test]
fn healthcheck_speaks_tls_to_a_tls_server() {
    let pki = Pki::generate();
    let server = Spawned::start(&pki);
    let port = server.addr.port().to_string();
    let tls = ["--tls-cert", path(&pki.cert), "--tls-key", path(&pki.key)];
    let mut args = vec!["--healthcheck", "--bind", "127.0.0.1", "--port", &port];
    args.extend(tls);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_diva-signal")).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("healthy: "), "{stdout}");
    // Without the TLS settings it speaks plain HTTP, which the TLS port does not answer.
    let plain = std::process::Command::new(env!("CARGO_BIN_EXE_diva-signal"))
        .args(["--healthcheck", "--bind", "127.0.0.1", "--port", &port])
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(1));
}

/// SIGHUP reads the files again: new handshakes get the new certificate, open connections
/// carry on, and files that do not load leave the last good certificate in place.
#[test]
fn sighup_reloads_the_certificate_and_keeps_the_old_one_on_failure() {
    let first = Pki::generate();
    let second = Pki::generate();
    let server = Spawned::start(&first);
    assert!(served_subject(server.addr).contains(&first.name()), "{}", first.name());
    let mut open = first.ws(server.addr);
    send(&mut open, &json!(["join", "a", "r"]));
    assert_eq!(recv(&mut open), json!(["join", "r:a"]));

    // Swap the files (as certbot renews them) and hang up.
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    server.hang_up();
    server.wait_for_log("reloaded the TLS certificate");
    assert!(served_subject(server.addr).contains(&second.name()), "{}", second.name());
    send(&mut open, &json!(["ident"]));
    assert_eq!(recv(&mut open)[0], "ident", "a connection from before the reload carries on");
    assert!(second.get(server.addr, "/health").starts_with("HTTP/1.1 200 "));

    // A broken file, then a key that does not match: the second certificate stays.
    std::fs::write(&first.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    server.hang_up();
    let line = server.wait_for_log("TLS reload failed");
    assert!(line.contains("still serving"), "{line}");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    let third = Pki::generate();
    std::fs::copy(&third.key, &first.key).unwrap();
    server.hang_up();
    let line = server.wait_for_log("TLS reload failed");
    assert!(line.contains("do not go together"), "{line}");
    assert!(served_subject(server.addr).contains(&second.name()));
    let metrics = second.get(server.addr, "/metrics");
    assert!(metrics.contains("diva_signal_tls_reloads_total{result=\"ok\"} 1\n"), "{metrics}");
    assert!(metrics.contains("diva_signal_tls_reloads_total{result=\"failed\"} 2\n"), "{metrics}");
    send(&mut open, &json!(["ident"]));
    assert_eq!(recv(&mut open)[0], "ident");
}

/// Bytes of server RSS per idle TLS connection (wss, joined, quiet): not part of the
/// suite. `TLS_IDLE_CONNECTIONS=10000 cargo test --release --test tls -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run by hand"]
fn memory_per_idle_tls_connection() {
    let count: usize =
        std::env::var("TLS_IDLE_CONNECTIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    common::raise_fd_limit();
    let pki = Pki::generate();
    let server = Spawned::start(&pki);
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.process.child.id())).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap().to_owned();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    // One connection first, so that what every connection shares is counted in the base.
    let mut first = pki.ws(server.addr);
    send(&mut first, &json!(["join", "first", "warm"]));
    recv(&mut first);
    std::thread::sleep(Duration::from_secs(2));
    let before = rss();
    let start = Instant::now();
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let mut ws = pki.ws(server.addr);
        send(&mut ws, &json!(["join", format!("p{i}"), format!("r{i}")]));
        assert_eq!(recv(&mut ws)[0], "join");
        clients.push(ws);
    }
    let connected_in = start.elapsed();
    let busy = rss();
    // Quiet: the sweep releases grown buffers after a second, the allocator trims.
    std::thread::sleep(Duration::from_secs(3));
    let after = rss();
    println!(
        "{count} idle TLS connections (joined) in {connected_in:?}: server RSS {} KiB before, {} KiB right after, \
         {} KiB quiet: {} bytes per connection ({} right after)",
        before / 1024,
        busy / 1024,
        after / 1024,
        (after.saturating_sub(before)) / count as u64,
        (busy.saturating_sub(before)) / count as u64,
    );
}

/// SIGTERM closes TLS clients as it closes plain ones: a close frame with 1001, then the end.
#[test]
fn shutdown_closes_tls_clients_with_1001() {
    let pki = Pki::generate();
    let mut server = Spawned::start(&pki);
    let mut ws = pki.ws(server.addr);
    send(&mut ws, &json!(["ident"]));
    assert_eq!(recv(&mut ws)[0], "ident");
    let status =
        std::process::Command::new("kill").args(["-TERM", &server.process.child.id().to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()));
    let frame = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(err) => panic!("no close frame: {err}"),
        }
    };
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
    // Our close answers; once we hang up, the server has no one left and exits 0 at once.
    let _ = ws.flush();
    drop(ws);
    let start = Instant::now();
    let exit = server.process.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(start.elapsed() < Duration::from_secs(1), "exited after {:?}", start.elapsed());
}
