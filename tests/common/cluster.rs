//! [`Cluster`]: one redis-server ([`RedisServer`]) and N nodes of the real binary, each with
//! `--redis-url` to it, on loopback ports of their own; [`Node`]: one such node, its
//! `/health` and `/metrics`, and signals to it. Plus reading helpers for clients whose
//! messages come from several nodes: bounded waits, sets of messages in any order.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;

use super::{
    Client, PATIENCE, QUIET, RedisServer, RedisTls, Spawned, TlsOptions, is_timeout_or_interrupted,
    server_command, spawn_server,
};

/// How long a test waits for something across the cluster: a node's lease, a reconnect
/// to Redis, a loaded 2-core CI machine.
pub const CLUSTER_PATIENCE: Duration = Duration::from_secs(10);

/// The node timeout the cluster tests run with, in seconds: short, so that a dead node is
/// noticed quickly, yet long enough for lease renewals (every quarter of it) on a busy machine.
pub const NODE_TIMEOUT_SECS: u64 = 2;

/// One diva-signal node of a cluster.
pub struct Node {
    pub addr: SocketAddr,
    pid: u32,
    /// The process (behind a lock, so that threads can share a node: its log receiver is
    /// not `Sync`); killed on drop.
    spawned: Mutex<Spawned>,
}

impl Node {
    /// Starts the binary with `--redis-url url --node-timeout NODE_TIMEOUT_SECS` and `extra`.
    pub fn start(url: &str, extra: &[&str]) -> Node {
        Node::start_with_env(url, extra, &[])
    }

    /// Like [`Node::start`], with `env` set (and `REDIS_*` and `SSL_CERT_FILE` of the
    /// caller's environment removed).
    pub fn start_with_env(url: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let timeout = NODE_TIMEOUT_SECS.to_string();
        let mut args = vec!["--redis-url", url, "--node-timeout", &timeout];
        args.extend_from_slice(extra);
        let mut command = server_command(&args);
        for name in ["REDIS_URL", "REDIS_CA", "REDIS_CERT", "REDIS_KEY", "SSL_CERT_FILE", "NODE_TIMEOUT"] {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let spawned = spawn_server(command);
        let addr = spawned.addr.parse().expect("node address");
        let pid = spawned.child.id();
        Node { addr, pid, spawned: Mutex::new(spawned) }
    }

    /// A WebSocket client connected to this node.
    pub fn client(&self) -> Client {
        let ws = super::ws_handshake(self.addr, format!("ws://{}/", self.addr)).expect("WebSocket handshake");
        Client { ws }
    }

    /// `GET path` and the whole response text.
    pub fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).expect("request");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    /// `/health` as JSON.
    pub fn health(&self) -> Value {
        let response = self.get("/health");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_else(|| panic!("no health body: {response}"));
        serde_json::from_str(body).unwrap_or_else(|_| panic!("health is not JSON: {body}"))
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    }

    /// The value of the sample `name` (without labels) in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    }

    /// Waits until `/health` satisfies `done`; panics after [`CLUSTER_PATIENCE`].
    pub fn wait_for_health(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let health = self.health();
            if done(&health) {
                return health;
            }
            assert!(
                start.elapsed() < CLUSTER_PATIENCE,
                "node {}: waited in vain for {what}: {health}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until this node has Redis and sees `live` live nodes.
    pub fn wait_for_cluster(&self, live: u64) -> Value {
        self.wait_for_health(&format!("Redis up and {live} live node(s)"), |h| {
            h["cluster"]["redis"] == "up" && h["cluster"]["live_nodes"] == live
        })
    }

    /// Sends `signal` (a libc constant) to the node's process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid).expect("pid");
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the node's process to exit.
    pub fn wait_exit(&self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.spawned.lock().unwrap().child.try_wait().expect("wait") {
                return status;
            }
            assert!(start.elapsed() < CLUSTER_PATIENCE, "node did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines the node wrote since last asked, without waiting.
    pub fn log_lines(&self) -> Vec<String> {
        self.spawned.lock().unwrap().log.try_iter().collect()
    }
}

/// A redis-server and nodes sharing rooms through it. The nodes are dropped (killed)
/// before Redis.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub redis: RedisServer,
}

impl Cluster {
    /// Redis and `n` nodes with `extra` flags, each node up in the cluster and seeing all
    /// `n`; `None` (the test should return) when redis-server is not installed.
    pub fn start(n: usize, extra: &[&str]) -> Option<Cluster> {
        let redis = RedisServer::start()?;
        let url = redis.url();
        let nodes: Vec<Node> = (0..n).map(|_| Node::start(&url, extra)).collect();
        let cluster = Cluster { nodes, redis };
        cluster.wait_whole();
        Some(cluster)
    }

    /// Like [`Cluster::start`] with Redis over TLS ([`RedisServer::start_tls`]): each node
    /// has `--redis-ca` and the client certificate ([`tls_flags`]).
    pub fn start_tls(n: usize, extra: &[&str], options: TlsOptions) -> Option<Cluster> {
        let redis = RedisServer::start_tls(options)?;
        let url = redis.url();
        let mut flags = tls_flags(redis.tls());
        flags.extend(extra.iter().map(|flag| flag.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let nodes: Vec<Node> = (0..n).map(|_| Node::start(&url, &flags)).collect();
        let cluster = Cluster { nodes, redis };
        cluster.wait_whole();
        Some(cluster)
    }

    /// Waits until every node has Redis and sees all nodes live.
    pub fn wait_whole(&self) {
        let live = self.nodes.len() as u64;
        for node in &self.nodes {
            node.wait_for_cluster(live);
        }
    }
}

/// `--redis-ca CA --redis-cert CLIENT --redis-key KEY` for a Redis over TLS.
pub fn tls_flags(tls: &RedisTls) -> Vec<String> {
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_owned();
    vec![
        "--redis-ca".into(),
        path(&tls.ca),
        "--redis-cert".into(),
        path(&tls.client_cert),
        "--redis-key".into(),
        path(&tls.client_key),
    ]
}

/// Pauses Redis (SIGSTOP) and resumes it (SIGCONT) when dropped, even on a panic.
pub struct Paused<'a>(&'a RedisServer);

impl<'a> Paused<'a> {
    pub fn new(redis: &'a RedisServer) -> Paused<'a> {
        redis.pause();
        Paused(redis)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// The next text message within `wait`, as JSON; `None` when none came (pings are
/// answered and skipped). Panics when the connection ends.
pub fn recv_within(client: &mut Client, wait: Duration) -> Option<Value> {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        client.ws.get_mut().set_read_timeout(Some(left)).expect("timeout");
        match client.ws.read() {
            Ok(Message::Text(text)) => {
                client.ws.get_mut().set_read_timeout(Some(PATIENCE)).expect("timeout");
                let text = text.to_string();
                return Some(serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(err)) if is_timeout_or_interrupted(&err) => {}
            Err(err) => panic!("the connection ended: {err:?}"),
        }
    }
}

/// The next text message within [`CLUSTER_PATIENCE`]; panics when none came.
pub fn recv_soon(client: &mut Client) -> Value {
    recv_within(client, CLUSTER_PATIENCE).unwrap_or_else(|| panic!("no message within {CLUSTER_PATIENCE:?}"))
}

/// Reads until every message of `expected` has come, in any order, within
/// [`CLUSTER_PATIENCE`]; panics on a message not expected (or expected fewer times).
pub fn expect_set(client: &mut Client, expected: &[Value]) {
    let mut missing: Vec<Value> = expected.to_vec();
    let until = Instant::now() + CLUSTER_PATIENCE;
    while !missing.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        let Some(message) = recv_within(client, left) else {
            panic!("still missing {missing:?}");
        };
        let Some(at) = missing.iter().position(|m| *m == message) else {
            panic!("unexpected {message}; still missing {missing:?}");
        };
        missing.remove(at);
    }
}

/// Every message that comes until none has for `quiet`, at most [`CLUSTER_PATIENCE`] long.
pub fn drain(client: &mut Client, quiet: Duration) -> Vec<Value> {
    let until = Instant::now() + CLUSTER_PATIENCE;
    let mut seen = Vec::new();
    while Instant::now() < until {
        match recv_within(client, quiet) {
            Some(message) => seen.push(message),
            None => break,
        }
    }
    seen
}

/// What each client got after a quiet spell of [`QUIET`] (all waiting together): reads
/// what has come until none comes for a moment.
pub fn leftovers(clients: &mut [&mut Client]) -> Vec<Vec<Value>> {
    std::thread::sleep(QUIET);
    clients.iter_mut().map(|client| drain(client, Duration::from_millis(50))).collect()
}

/// Waits until `redis-cli args` prints `expected`.
pub fn wait_for_redis(redis: &RedisServer, args: &[&str], expected: &str) {
    let start = Instant::now();
    loop {
        let got = redis.cli(args);
        if got == expected {
            return;
        }
        assert!(
            start.elapsed() < CLUSTER_PATIENCE,
            "redis-cli {args:?}: {got:?}, waited in vain for {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the client's connection has ended (the server closed it), within `wait`.
pub fn closed_within(client: &mut Client, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        client.ws.get_mut().set_read_timeout(Some(left)).expect("timeout");
        match client.ws.read() {
            Ok(Message::Close(_)) => return true,
            Ok(_) => {}
            Err(tungstenite::Error::Io(err)) if is_timeout_or_interrupted(&err) => {}
            Err(tungstenite::Error::Io(err)) if err.kind() == ErrorKind::UnexpectedEof => return true,
            Err(_) => return true,
        }
    }
}
