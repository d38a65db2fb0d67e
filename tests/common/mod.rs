//! Test harness: a real server on a loopback port, real WebSocket and TCP clients.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diva_signal::{Config, Server, ShutdownHandle};
use serde_json::Value;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);

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
        let mut config = Config { bind: [127, 0, 0, 1].into(), port: 0, ..Config::default() };
        tweak(&mut config);
        let server = Server::bind(config).expect("bind test server");
        let addr = server.local_addr();
        let handle = server.shutdown_handle().expect("shutdown handle");
        let thread = std::thread::spawn(move || server.run());
        TestServer { addr, handle, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A WebSocket client connected on path `/`.
    pub fn client(&self) -> Client {
        self.client_at("/")
    }

    pub fn client_at(&self, path: &str) -> Client {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let (ws, _) = tungstenite::client(self.url(path), stream).expect("WebSocket handshake");
        Client { ws }
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

    /// Connections other than the one asking for `/health`.
    pub fn wait_for_clients(&self, n: u64) -> Value {
        self.wait_for_health(&format!("{n} client connection(s)"), |h| h["connections"] == n + 1)
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

/// A WebSocket client speaking JSON arrays.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

impl Client {
    pub fn send(&mut self, json: &str) {
        self.ws.send(Message::text(json)).expect("send");
    }

    pub fn send_binary(&mut self, json: &str) {
        self.ws.send(Message::binary(json.as_bytes().to_vec())).expect("send");
    }

    /// The next text message, raw; panics on timeout, close or error.
    pub fn recv_text(&mut self) -> String {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return text.to_string(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message as JSON.
    pub fn recv(&mut self) -> Value {
        let text = self.recv_text();
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("reply is not JSON: {text}"))
    }

    /// Sends `json` and returns the next message.
    pub fn call(&mut self, json: &str) -> Value {
        self.send(json);
        self.recv()
    }

    /// Asks for a fresh ident.
    pub fn ident(&mut self) -> String {
        let reply = self.call(r#"["ident"]"#);
        reply[1].as_str().expect("ident string").to_owned()
    }

    /// Joins `room` as `ident` and checks the acknowledgement (not the stun messages).
    pub fn join(&mut self, ident: &str, room: &str) -> String {
        let reply = self.call(&serde_json::json!(["join", ident, room]).to_string());
        let address = format!("{room}:{ident}");
        assert_eq!(reply, serde_json::json!(["join", address]));
        address
    }

    /// Asserts that no message arrives for [`QUIET`].
    pub fn expect_silence(&mut self) {
        self.ws.get_mut().set_read_timeout(Some(QUIET)).expect("timeout");
        match self.ws.read() {
            Err(tungstenite::Error::Io(err))
                if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?}"),
        }
        self.ws.get_mut().set_read_timeout(Some(PATIENCE)).expect("timeout");
    }

    /// Reads until the server closes; returns its close frame (None if it just hung up).
    pub fn expect_close(&mut self) -> Option<CloseFrame> {
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < PATIENCE, "server did not close");
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return None,
                Err(tungstenite::Error::Io(err)) if err.kind() == ErrorKind::WouldBlock => {
                    panic!("server did not close in time")
                }
                Err(tungstenite::Error::Io(_) | tungstenite::Error::Protocol(_)) => return None,
                Err(other) => panic!("unexpected error while waiting for close: {other:?}"),
            }
        }
    }
}

/// The `error` reply's code, or panics if `reply` is not an error.
pub fn error_code(reply: &Value) -> &str {
    assert_eq!(reply[0], "error", "expected an error reply, got {reply}");
    reply[2].as_str().expect("error code")
}
