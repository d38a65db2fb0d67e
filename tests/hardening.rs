//! Findings of a hostile review: one client must not slow, kick or impersonate another.
//! Each test reproduces an attack over real sockets and checks that it no longer works.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Client, MASK, OP_PING, OP_PONG, PATIENCE, TestServer, frame_bytes, read_retrying};
use serde_json::json;
use tungstenite::protocol::frame::coding::CloseCode;

/// Rates high enough that the rate limit plays no part.
fn unlimited_rate(config: &mut diva_signal::Config) {
    config.rate_per_sec = 1_000_000_000;
    config.rate_burst = 1_000_000_000;
}

/// A connection that writes control frames of `opcode` without a pause until stopped, and
/// reads (and drops) whatever the server sends, so that it never counts as not reading.
struct ControlFlood {
    stop: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stream: std::net::TcpStream,
}

impl ControlFlood {
    fn start(server: &TestServer, opcode: u8) -> ControlFlood {
        let flooder = server.raw_client();
        let mut writer_stream = flooder.stream.try_clone().expect("clone");
        let mut reader_stream = flooder.stream.try_clone().expect("clone");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || -> std::io::Result<()> {
                let batch: Vec<u8> =
                    (0..4096).flat_map(|_| frame_bytes(0x80 | opcode, Some(MASK), b"x")).collect();
                while !stop.load(Ordering::SeqCst) {
                    writer_stream.write_all(&batch)?;
                }
                Ok(())
            })
        };
        let reader = std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            while let Ok(1..) = read_retrying(&mut reader_stream, &mut chunk) {}
        });
        ControlFlood { stop, writer: Some(writer), reader: Some(reader), stream: flooder.stream }
    }

    /// Stops the flood; true when every write of it went through (it was never cut off).
    fn stop(mut self) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        let unbroken = self.writer.take().is_some_and(|writer| matches!(writer.join(), Ok(Ok(()))));
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        unbroken
    }
}

/// `rounds` application-level round trips (`["ping"]` / `["pong"]`) by `client`.
fn ping_round_trips(client: &mut Client, rounds: usize) {
    for _ in 0..rounds {
        assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]));
    }
}

// --- 1. Control-frame floods -------------------------------------------------------------

/// One connection sending WebSocket pings (or pongs) back to back, with the rate limit out
/// of play, must not take the loop from everyone else. Before the fix, a flooding connection
/// was queued for reading once per readiness event and once per re-queue, got hundreds of
/// turns per round, and a normal client's round trip took 26-243 ms: 300 of them took
/// 8 s or more. Now a connection gets one turn per round and 300 round trips take well
/// under a second; the bound below is only the usual patience, not a measurement.
#[test]
fn a_control_frame_flood_gets_one_turn_per_round() {
    for opcode in [OP_PING, OP_PONG] {
        let server = TestServer::with(unlimited_rate);
        let mut client = server.client();
        let flood = ControlFlood::start(&server, opcode);
        // Long enough for duplicate queue entries to pile up (they grew by one per round).
        std::thread::sleep(Duration::from_secs(1));
        let start = Instant::now();
        ping_round_trips(&mut client, 500);
        let took = start.elapsed();
        assert!(took < PATIENCE, "500 round trips under a flood of opcode {opcode} took {took:?}");
        assert!(flood.stop(), "the flooder was cut off although the rate limit is off");
        server.health();
    }
}

/// Control frames count against the rate limit as messages do: a client that keeps
/// sending them past it is closed with 1008, and others are served meanwhile.
#[test]
fn control_frames_over_the_rate_limit_close_with_1008() {
    for opcode in [OP_PING, OP_PONG] {
        let server = TestServer::with(|config| {
            config.rate_per_sec = 50;
            config.rate_burst = 100;
        });
        let mut client = server.client();
        let mut flooder = server.raw_client();
        let frames: Vec<u8> = (0..2000).flat_map(|_| frame_bytes(0x80 | opcode, Some(MASK), b"")).collect();
        // The server may close before it has read them all.
        let _ = flooder.try_send_raw(&frames);
        assert_eq!(flooder.expect_close(), Some(u16::from(CloseCode::Policy)), "opcode {opcode}");
        ping_round_trips(&mut client, 3);
    }
}
