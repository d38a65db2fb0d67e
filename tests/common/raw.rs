//! [`RawClient`]: a WebSocket client over a plain TCP socket that does everything by hand,
//! and the frames it sends.
//!
//! Frames are written and read with tungstenite's frame API ([`FrameHeader`], [`Frame`]), the
//! one codec of the tests. It writes whatever header it is given, so it also makes the
//! malformed frames the abuse tests send: no mask, reserved bits, reserved opcodes, control
//! frames that are too long or not final, and (with [`header_bytes`]) a header announcing
//! any 64-bit length, even one with the top bit set.

use std::io::{Cursor, ErrorKind, Read, Write};
use std::net::TcpStream;

use serde_json::Value;
pub use tungstenite::protocol::frame::coding::OpCode;
use tungstenite::protocol::frame::coding::{Control, Data};
pub use tungstenite::protocol::frame::{Frame, FrameHeader};

use super::PATIENCE;

pub const CONTINUE: OpCode = OpCode::Data(Data::Continue);
pub const TEXT: OpCode = OpCode::Data(Data::Text);
pub const BINARY: OpCode = OpCode::Data(Data::Binary);
pub const CLOSE: OpCode = OpCode::Control(Control::Close);
pub const PING: OpCode = OpCode::Control(Control::Ping);
pub const PONG: OpCode = OpCode::Control(Control::Pong);

/// A fixed masking key: clients must mask, and any key will do for tests.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The Sec-WebSocket-Key example from RFC 6455, section 1.3.
const RAW_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The header of a final client frame of `opcode`, masked with [`MASK`], no reserved bit
/// set; change its fields for anything else.
pub fn header(opcode: OpCode) -> FrameHeader {
    FrameHeader { is_final: true, rsv1: false, rsv2: false, rsv3: false, opcode, mask: Some(MASK) }
}

/// One frame, byte for byte: `header`, then `payload` (masked when the header has a mask).
pub fn frame(header: FrameHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len(payload.len() as u64) + payload.len());
    Frame::from_payload(header, payload.to_vec().into()).format(&mut out).expect("format a frame in memory");
    out
}

/// Only the header of a frame announcing `length` payload bytes, whatever `length` is.
pub fn header_bytes(header: &FrameHeader, length: u64) -> Vec<u8> {
    let mut out = Vec::new();
    header.format(length, &mut out).expect("format a header in memory");
    out
}

/// A masked, final client frame.
pub fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    frame(header(opcode), payload)
}

/// A masked client frame that may be a fragment: `opcode` is [`CONTINUE`] after the first.
pub fn fragment(opcode: OpCode, is_final: bool, payload: &[u8]) -> Vec<u8> {
    frame(FrameHeader { is_final, ..header(opcode) }, payload)
}

/// A masked, final text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    client_frame(TEXT, text.as_bytes())
}

/// Parses one server frame from the front of `buf`: the frame and its length in bytes,
/// or `None` while it is incomplete. Panics on what a server must not send.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let mut cursor = Cursor::new(buf);
    let (header, length) = FrameHeader::parse(&mut cursor).expect("a valid frame header")?;
    assert!(header.mask.is_none(), "the server masked a frame");
    let start = usize::try_from(cursor.position()).ok()?;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    let payload = buf.get(start..end)?.to_vec();
    Some((Frame::from_payload(header, payload.into()), end))
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

    /// Wraps a stream whose handshake was already done (and its response read) by hand.
    pub fn handshake_done(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        RawClient { stream, buf: Vec::new() }
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
            match frame.header().opcode {
                PING | PONG => continue,
                TEXT => return serde_json::from_slice(frame.payload()).expect("JSON message"),
                _ => panic!("expected a text message, got {frame:?}"),
            }
        }
    }

    /// Reads until the server's close frame and returns its status code (`None` when the
    /// connection ended without one), then checks that the server hangs up.
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let frame = self.read_frame()?;
            if frame.header().opcode == CLOSE {
                let code = frame.payload().get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
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
