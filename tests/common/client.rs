//! [`Client`]: a WebSocket client (tungstenite) speaking JSON arrays, and [`Reader`], one
//! whose reads happen on a thread of their own.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use super::{PATIENCE, QUIET, is_timeout_or_interrupted};

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

    /// Sends many messages and flushes once, so that they leave in as few segments as possible.
    pub fn send_batch(&mut self, json: &str, count: usize) {
        for _ in 0..count {
            self.ws.write(Message::text(json)).expect("queue message");
        }
        self.ws.flush().expect("flush");
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
