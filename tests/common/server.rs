//! [`TestServer`]: a real server on a loopback port, on a thread of its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diva_signal::{Config, Server, ShutdownHandle};
use serde_json::Value;

use super::{Client, PATIENCE, RawClient, ws_handshake};

/// A server running on its own thread; shut down and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    /// Starts a server on 127.0.0.1, port 0, with `tweak` applied to the default config.
    pub fn with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config { bind: Some([127, 0, 0, 1].into()), port: 0, ..Config::default() };
        tweak(&mut config);
        let server = Server::bind(config).expect("bind test server");
        let addr = server.local_addr();
        let handle = server.shutdown_handle().expect("shutdown handle");
        let thread = std::thread::spawn(move || server.run());
        TestServer { addr, handle, thread: Some(thread) }
    }

    /// Two clients joined to room "r" as "a" and "b", each `stun` read:
    /// (alice, her address, bob, his address).
    pub fn pair(&self) -> (Client, String, Client, String) {
        let mut alice = self.client();
        let mut bob = self.client();
        let a = alice.join("a", "r");
        let b = bob.join("b", "r");
        assert_eq!(alice.recv()[0], "stun");
        assert_eq!(bob.recv()[0], "stun");
        (alice, a, bob, b)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A WebSocket client connected on path `/`.
    pub fn client(&self) -> Client {
        self.client_at("/")
    }

    pub fn client_at(&self, path: &str) -> Client {
        let ws = ws_handshake(self.addr, self.url(path)).expect("WebSocket handshake");
        Client { ws }
    }

    /// A WebSocket client on `path` with extra request headers, or the HTTP status it was refused with.
    pub fn try_client(&self, path: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
        use tungstenite::client::IntoClientRequest;
        use tungstenite::http::{HeaderName, HeaderValue};

        let mut request = self.url(path).into_client_request().expect("request");
        for &(name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request.headers_mut().insert(name, HeaderValue::from_str(value).expect("header value"));
        }
        match ws_handshake(self.addr, request).map_err(|err| *err) {
            Ok(ws) => Ok(Client { ws }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("WebSocket handshake failed: {other:?}"),
        }
    }

    /// A raw client that has done the WebSocket handshake on `/` by hand.
    pub fn raw_client(&self) -> RawClient {
        let stream = TcpStream::connect(self.addr).expect("connect");
        RawClient::handshake(stream, "/")
    }

    /// Sends raw bytes as an HTTP request and returns the whole response text.
    pub fn http(&self, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.write_all(request).expect("send request");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    /// `GET path` and the response text.
    pub fn get(&self, path: &str) -> String {
        self.http(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }

    /// The live figures from `/health`, as JSON.
    pub fn health(&self) -> Value {
        let response = self.get("/health");
        let body = response.split("\r\n\r\n").nth(1).expect("health body");
        serde_json::from_str(body).expect("health JSON")
    }

    /// The live figures from `/health`, or `None` when the server does not answer with them
    /// (for example a 503 at the connection limit).
    pub fn try_health(&self) -> Option<Value> {
        let response = self.get("/health");
        if !response.starts_with("HTTP/1.1 200 ") {
            return None;
        }
        serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()
    }

    /// Waits until `/health` reports what `done` wants; panics after [`PATIENCE`].
    pub fn wait_for_health(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let health = self.health();
            if done(&health) {
                return health;
            }
            assert!(start.elapsed() < PATIENCE, "waited in vain for {what}: {health}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `/health` counts `n` client connections (never the one asking it).
    pub fn wait_for_clients(&self, n: u64) -> Value {
        self.wait_for_health(&format!("{n} client connection(s)"), |h| h["connections"] == n)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.expect("server thread panicked").expect("server returned an error");
            }
        }
    }
}
