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
                Err(tungstenite::Error::Io(err)) if err.kind() == ErrorKind::Interrupted => continue,
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
        let until = Instant::now() + QUIET;
        while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            self.ws.get_mut().set_read_timeout(Some(left)).expect("timeout");
            match self.ws.read() {
                Err(tungstenite::Error::Io(err)) if is_timeout_or_interrupted(&err) => {}
                other => panic!("expected silence, got {other:?}"),
            }
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
                Err(tungstenite::Error::Io(err)) if err.kind() == ErrorKind::Interrupted => continue,
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

// ---------------------------------------------------------------------------
// Helpers for the ownership and abuse suites.
// ---------------------------------------------------------------------------

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// The Sec-WebSocket-Key example from RFC 6455, section 1.3.
const RAW_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

impl TestServer {
    /// The live figures from `/health`, or `None` when the server does not answer with them
    /// (for example a 503 at the connection limit).
    pub fn try_health(&self) -> Option<Value> {
        let response = self.get("/health");
        if !response.starts_with("HTTP/1.1 200 ") {
            return None;
        }
        serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()
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
}

impl Client {
    /// Sends many messages and flushes once, so that they leave in as few segments as possible.
    pub fn send_batch(&mut self, json: &str, count: usize) {
        for _ in 0..count {
            self.ws.write(Message::text(json)).expect("queue message");
        }
        self.ws.flush().expect("flush");
    }

    /// Hands the client to a thread that reads all the time, so that tungstenite answers
    /// every ping at once, as a live browser would.
    pub fn spawn_reader(mut self) -> Reader {
        self.ws.get_mut().set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let pings = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (stop, pings) = (Arc::clone(&stop), Arc::clone(&pings));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match self.ws.read() {
                        Ok(Message::Text(text)) => {
                            let _ = tx.send(Ok(text.to_string()));
                        }
                        Ok(Message::Ping(_)) => {
                            pings.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(err)) if is_timeout_or_interrupted(&err) => {}
                        Err(err) => {
                            let _ = tx.send(Err(format!("{err:?}")));
                            break;
                        }
                    }
                }
                self
            })
        };
        Reader { stop, pings, rx, thread: Some(thread) }
    }
}

/// A [`Client`] whose reads happen on a thread of their own (see [`Client::spawn_reader`]).
pub struct Reader {
    stop: Arc<AtomicBool>,
    pings: Arc<AtomicUsize>,
    rx: mpsc::Receiver<Result<String, String>>,
    thread: Option<JoinHandle<Client>>,
}

impl Reader {
    /// The next text message as JSON; panics on timeout or when the connection ended.
    pub fn recv(&self) -> Value {
        match self.rx.recv_timeout(PATIENCE) {
            Ok(Ok(text)) => serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
            Ok(Err(err)) => panic!("the connection ended: {err}"),
            Err(_) => panic!("no message within {PATIENCE:?}"),
        }
    }

    /// WebSocket pings received (and answered) so far.
    pub fn pings(&self) -> usize {
        self.pings.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` pings have arrived.
    pub fn wait_for_pings(&self, n: usize) {
        let start = Instant::now();
        while self.pings() < n {
            assert!(start.elapsed() < PATIENCE, "waited in vain for {n} ping(s)");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts that the connection has not ended and no text message is waiting.
    pub fn expect_alive_and_quiet(&self) {
        match self.rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    /// Stops the thread and gives the client back.
    pub fn stop(mut self) -> Client {
        self.stop.store(true, Ordering::SeqCst);
        let mut client = self.thread.take().expect("reader thread").join().expect("reader thread panicked");
        client.ws.get_mut().set_read_timeout(Some(PATIENCE)).expect("timeout");
        client
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One WebSocket frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A fixed masking key: clients must mask, and any key will do for tests.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One client frame, byte for byte: `first` is the FIN/RSV/opcode byte; `mask` None sends it unmasked.
pub fn frame_bytes(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked, final text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    frame_bytes(0x80 | OP_TEXT, Some(MASK), text.as_bytes())
}

/// A WebSocket client over a plain TCP socket, doing everything by hand: it answers
/// nothing unless told to, and can send frames no library would.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Upgrades `stream` on `path`; panics unless the server answers 101.
    pub fn handshake(stream: TcpStream, path: &str) -> RawClient {
        let (head, client) = RawClient::try_handshake(stream, path, "");
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        client
    }

    /// Sends an upgrade request (with `extra` header lines, each ending in \r\n) and
    /// returns the response head and the client.
    pub fn try_handshake(stream: TcpStream, path: &str, extra: &str) -> (String, RawClient) {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut client = RawClient { stream, buf: Vec::new() };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {RAW_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        client.send_raw(request.as_bytes());
        loop {
            if let Some(end) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&client.buf[..end + 4]).into_owned();
                client.buf.drain(..end + 4);
                return (head, client);
            }
            assert!(client.fill() > 0, "connection closed during the handshake");
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Like [`RawClient::send_raw`], but a peer that already hung up is not an error.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one masked text frame.
    pub fn send_text(&mut self, text: &str) {
        self.send_raw(&text_frame(text));
    }

    /// Reads more bytes into the buffer; 0 at end of stream (or reset). Panics on timeout.
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("nothing arrived within {PATIENCE:?}")
                }
                Err(_) => return 0,
            }
        }
    }

    /// The next frame from the server, or `None` once the connection has ended.
    pub fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// The next text message as JSON, skipping pings and pongs; panics on anything else.
    pub fn recv(&mut self) -> Value {
        loop {
            let frame = self.read_frame().expect("connection ended before a message arrived");
            match frame.opcode {
                OP_PING | OP_PONG => continue,
                OP_TEXT => return serde_json::from_slice(&frame.payload).expect("JSON message"),
                _ => panic!("expected a text message, got {frame:?}"),
            }
        }
    }

    /// Reads until the server's close frame and returns its status code (`None` when the
    /// connection ended without one), then checks that the server hangs up.
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let frame = self.read_frame()?;
            if frame.opcode == OP_CLOSE {
                let code = frame.payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                self.expect_eof();
                return code;
            }
        }
    }

    /// Asserts that nothing more comes and the server hangs up.
    pub fn expect_eof(&mut self) {
        if let Some(frame) = self.read_frame() {
            panic!("expected the end of the connection, got {frame:?}");
        }
    }
}

/// Parses one unmasked server frame from the front of `buf`: the frame and its length in bytes.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let (&first, rest) = buf.split_first()?;
    let (&second, rest) = rest.split_first()?;
    assert_eq!(second & 0x80, 0, "the server masked a frame");
    let (len, header) = match second & 0x7f {
        126 => (usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)), 4),
        127 => (usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?, 10),
        len => (usize::from(len), 2),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    Some((Frame { fin: first & 0x80 != 0, opcode: first & 0x0f, payload }, header + len))
}

/// Raises this process's open-file soft limit to its hard limit and returns the soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// A TCP connection to `addr` whose receive buffer is as small as the kernel allows, so
/// that a client that does not read stops taking data early.
pub fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;

    let SocketAddr::V4(v4) = addr else { panic!("test servers listen on 127.0.0.1") };
    // SAFETY: plain socket calls on a descriptor we own; the sockaddr_in outlives connect().
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // Set before connect, so that the window offered in the handshake is small too.
        let size: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect: {err}");
        }
        TcpStream::from_raw_fd(fd)
    }
}

impl Client {
    /// Asserts that no data message arrives for [`QUIET`]; pings (such as the probe of
    /// an address someone else asked for) are answered and skipped.
    pub fn expect_no_message(&mut self) {
        let until = Instant::now() + QUIET;
        while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            self.ws.get_mut().set_read_timeout(Some(left)).expect("timeout");
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Err(tungstenite::Error::Io(err)) if is_timeout_or_interrupted(&err) => {}
                other => panic!("expected no message, got {other:?}"),
            }
        }
        self.ws.get_mut().set_read_timeout(Some(PATIENCE)).expect("timeout");
    }
}

impl RawClient {
    /// Wraps a stream whose handshake was already done (and its response read) by hand.
    pub fn handshake_done(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        RawClient { stream, buf: Vec::new() }
    }
}

/// A blocking read with a timeout ended without data: the timeout passed, or the read was
/// interrupted (a stop and continue of the test process makes such reads fail with EINTR).
fn is_timeout_or_interrupted(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

type Handshake = tungstenite::HandshakeError<tungstenite::ClientHandshake<TcpStream>>;

/// Connects to `addr` and does the WebSocket handshake for `request`. Done again on a new
/// connection when a read was interrupted (EINTR, see [`is_timeout_or_interrupted`]).
pub fn ws_handshake<R>(addr: SocketAddr, request: R) -> Result<WebSocket<TcpStream>, Box<Handshake>>
where
    R: tungstenite::client::IntoClientRequest + Clone,
{
    let start = Instant::now();
    loop {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        match tungstenite::client(request.clone(), stream) {
            Ok((ws, _)) => return Ok(ws),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Io(err)))
                if err.kind() == ErrorKind::Interrupted && start.elapsed() < PATIENCE => {}
            Err(err) => return Err(Box::new(err)),
        }
    }
}

/// `stream.read(buf)`, read again when interrupted (EINTR).
pub fn read_retrying(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
