//! [`RedisServer`]: Debian's redis-server on a free loopback port, without persistence,
//! for the tests of the Redis link and of the cluster. It can be killed, restarted empty
//! on the same port, and paused (SIGSTOP) to play a Redis that hangs. With
//! [`RedisServer::start_tls`] it speaks TLS only (`rediss://`), with a test CA, server and
//! client certificates made here by rcgen ([`RedisTls`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// How long a starting redis-server may take to answer PING.
const STARTUP: Duration = Duration::from_secs(10);

/// A running redis-server; killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    dir: PathBuf,
    /// TLS only, on `port` (`--port 0 --tls-port PORT`).
    tls: Option<RedisTls>,
}

/// How a TLS Redis is set up.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// `--tls-auth-clients yes`: clients must present a certificate the CA signed.
    pub auth_clients: bool,
    /// The server certificate's subject alternative names (an IP address becomes an IP SAN).
    pub server_names: Vec<String>,
    /// `--tls-protocols`, say `"TLSv1.2"`; Redis's default (TLS 1.2 and 1.3) without.
    pub protocols: Option<&'static str>,
}

impl TlsOptions {
    /// A certificate for `127.0.0.1`, `::1` and `localhost`; client certificates required
    /// or not.
    pub fn new(auth_clients: bool) -> TlsOptions {
        TlsOptions {
            auth_clients,
            server_names: vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
            protocols: None,
        }
    }
}

/// The PEM files of a TLS Redis, all in its directory.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// The test CA: it signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// A client certificate the CA signed, and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA, unrelated: it signed neither the server's certificate nor the client's.
    pub other_ca: PathBuf,
    /// A client certificate the other CA signed, and its key: Redis does not trust it.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub auth_clients: bool,
    pub protocols: Option<&'static str>,
}

impl RedisTls {
    /// A CA, a server certificate for `options.server_names`, a client certificate, and
    /// another CA with a client certificate of its own, as PEM files in `dir`.
    pub fn generate(dir: &Path, options: &TlsOptions) -> RedisTls {
        let (ca_pem, ca) = certificate_authority("diva-signal test Redis CA");
        let (other_pem, other) = certificate_authority("diva-signal unrelated CA");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let server =
            leaf(&ca, options.server_names.clone(), "redis server", ExtendedKeyUsagePurpose::ServerAuth);
        let client = leaf(&ca, Vec::new(), "diva-signal node", ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = leaf(&other, Vec::new(), "stranger", ExtendedKeyUsagePurpose::ClientAuth);
        RedisTls {
            ca: write("ca.pem", &ca_pem),
            client_cert: write("client.pem", &client.0),
            client_key: write("client.key", &client.1),
            other_ca: write("other-ca.pem", &other_pem),
            stranger_cert: write("stranger.pem", &stranger.0),
            stranger_key: write("stranger.key", &stranger.1),
            server_cert: write("server.pem", &server.0),
            server_key: write("server.key", &server.1),
            auth_clients: options.auth_clients,
            protocols: options.protocols,
        }
    }
}

/// A self-signed CA: its certificate (PEM) and what signs with it.
fn certificate_authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate `issuer` signed, for `names`: (certificate PEM, key PEM).
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names).expect("params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

impl RedisServer {
    /// Starts redis-server on 127.0.0.1 and a free port; `None` (the test should return)
    /// when it is not installed.
    pub fn start() -> Option<RedisServer> {
        RedisServer::launch(None, None)
    }

    /// Like [`RedisServer::start`], with `--requirepass password`.
    pub fn start_with_password(password: &str) -> Option<RedisServer> {
        RedisServer::launch(Some(password.to_string()), None)
    }

    /// Like [`RedisServer::start`], speaking TLS only, with certificates made for it
    /// ([`RedisServer::tls`]).
    /// It listens on `::1` too when the host has it (`rediss://[::1]:PORT`).
    pub fn start_tls(options: TlsOptions) -> Option<RedisServer> {
        RedisServer::launch(None, Some(options))
    }

    /// Like [`RedisServer::start_tls`], with `--requirepass password`.
    pub fn start_tls_with_password(options: TlsOptions, password: &str) -> Option<RedisServer> {
        RedisServer::launch(Some(password.to_string()), Some(options))
    }

    fn launch(password: Option<String>, tls: Option<TlsOptions>) -> Option<RedisServer> {
        if !installed() {
            eprintln!("skipped: redis-server not installed");
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("diva-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let tls = tls.map(|options| RedisTls::generate(&dir, &options));
        let mut server = RedisServer { child: None, port, password, dir, tls };
        server.spawn();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT` with a password;
    /// `rediss://` when it speaks TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The certificates of a TLS Redis; panics for a plain one.
    pub fn tls(&self) -> &RedisTls {
        self.tls.as_ref().expect("a Redis started with start_tls")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (nothing is persisted); returns once it
    /// answers PING.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: it keeps its connections and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// `redis-cli -p PORT [-a PASSWORD] args...`: its output, trimmed. Over TLS with the
    /// test CA and the client certificate.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.cli_command().args(args).stdin(Stdio::null()).output().expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn cli_command(&self) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            command.arg("--tls").arg("--cacert").arg(&tls.ca);
            command.arg("--cert").arg(&tls.client_cert).arg("--key").arg(&tls.client_key);
        }
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        command
    }

    /// What redis-server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command.args(["--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => {
                command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"]);
            }
            Some(tls) => {
                // `-::1`: that one only if the host has it.
                command.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &self.port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "-::1",
                ]);
                if let Some(protocols) = tls.protocols {
                    command.args(["--tls-protocols", protocols]);
                }
                command.arg("--tls-cert-file").arg(&tls.server_cert);
                command.arg("--tls-key-file").arg(&tls.server_key);
                command.arg("--tls-ca-cert-file").arg(&tls.ca);
                command.args(["--tls-auth-clients", if tls.auth_clients { "yes" } else { "no" }]);
            }
        }
        command.args(["--daemonize", "no", "--protected-mode", "no", "--logfile", ""]);
        command.arg("--dir").arg(&self.dir);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while !self.answers_ping() {
            assert!(start.elapsed() < STARTUP, "redis-server did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when something on the port answers a PING (an error for want of AUTH counts).
    /// Over TLS, redis-cli asks.
    fn answers_ping(&self) -> bool {
        if self.tls.is_some() {
            let output = self.cli_command().arg("PING").stdin(Stdio::null()).output().expect("run redis-cli");
            let reply = String::from_utf8_lossy(&output.stdout);
            return reply.trim() == "PONG" || reply.contains("NOAUTH");
        }
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 64];
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
            && stream.read(&mut reply).is_ok_and(|n| n > 0 && matches!(reply[0], b'+' | b'-'))
    }

    fn signal(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn installed() -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| dir.join("redis-server").is_file() && dir.join("redis-cli").is_file())
    })
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}
