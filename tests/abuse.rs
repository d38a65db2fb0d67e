//! Safe by default: limits, and clients that misbehave on purpose. Each test checks
//! that the offender alone is refused or dropped and everyone else is served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    BINARY, CLOSE, CONTINUE, Client, FrameHeader, OpCode, PATIENCE, PING, RawClient, TEXT, TestServer,
    client_frame, error_code, fragment, frame, header, header_bytes, read_retrying, text_frame,
};
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// Rates high enough that the rate limit plays no part.
fn unlimited_rate(config: &mut diva_signal::Config) {
    config.rate_per_sec = 1_000_000_000;
    config.rate_burst = 1_000_000_000;
}

fn assert_pong(client: &mut Client) {
    assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]));
}

/// Reads until a pong, skipping anything else (errors queued before it, say).
fn drain_until_pong(client: &mut Client) {
    client.send(r#"["ping"]"#);
    let start = Instant::now();
    while client.recv() != json!(["pong"]) {
        assert!(start.elapsed() < PATIENCE, "no pong");
    }
}

#[test]
fn names_are_validated() {
    let server = TestServer::with(|config| config.room_limits.max_name_len = 16);
    let mut client = server.client();
    let long = "x".repeat(17);
    let long_multibyte = "é".repeat(9); // 9 characters, 18 bytes: the limit is in bytes.
    let bad = [
        json!(["join", "", "r"]),
        json!(["join", "a", ""]),
        json!(["join", "", ""]),
        json!(["join", "a", "r:x"]),
        json!(["join", "a", ":"]),
        json!(["join", "a\u{0}", "r"]),
        json!(["join", "a", "r\u{1f}"]),
        json!(["join", "a\nb", "r"]),
        json!(["join", "a", "r\r"]),
        json!(["join", "a\u{7f}", "r"]),
        json!(["join", "a\u{85}", "r"]),
        json!(["join", "a", "\u{9b}r"]),
        json!(["join", long, "r"]),
        json!(["join", "a", long]),
        json!(["join", long_multibyte, "r"]),
    ];
    for call in &bad {
        let reply = client.call(&call.to_string());
        assert_eq!(error_code(&reply), "bad-request", "{call}: {reply}");
        assert_eq!(reply[1], "join", "{call}: {reply}");
    }
    // The same control character written as a JSON escape is decoded first, then refused.
    assert_eq!(error_code(&client.call(r#"["join","a\u0007","r"]"#)), "bad-request");
    let health = server.wait_for_clients(1);
    assert_eq!((health["rooms"].clone(), health["addresses"].clone()), (json!(0), json!(0)));

    // At the limit is fine, in bytes as in characters; an ident may contain ':'.
    client.join(&"y".repeat(16), &"z".repeat(16));
    client.join(&"é".repeat(8), "r");
    client.join("a:b", "q");
    let health = server.wait_for_clients(1);
    assert_eq!((health["rooms"].clone(), health["addresses"].clone()), (json!(3), json!(3)));
}

/// Names end up in user interfaces and logs: characters that reorder or hide text there
/// (Unicode format characters such as U+202E RIGHT-TO-LEFT OVERRIDE or U+FEFF), and line
/// or paragraph separators, are refused like control characters.
#[test]
fn names_with_invisible_or_reordering_characters_are_refused() {
    let server = TestServer::start();
    let mut client = server.client();
    let mut peer = server.client();
    let own = client.join("me", "r");
    let target = peer.join("a", "r");
    assert_eq!(client.recv()[0], "stun");
    assert_eq!(peer.recv()[0], "stun");
    let sneaky = [
        "\u{202e}",  // RIGHT-TO-LEFT OVERRIDE
        "\u{feff}",  // ZERO WIDTH NO-BREAK SPACE (byte order mark)
        "\u{200b}",  // ZERO WIDTH SPACE
        "\u{200d}",  // ZERO WIDTH JOINER
        "\u{2066}",  // LEFT-TO-RIGHT ISOLATE
        "\u{ad}",    // SOFT HYPHEN
        "\u{61c}",   // ARABIC LETTER MARK
        "\u{2060}",  // WORD JOINER
        "\u{fff9}",  // INTERLINEAR ANNOTATION ANCHOR
        "\u{1343f}", // EGYPTIAN HIEROGLYPH END WALLED ENCLOSURE (Unicode 15)
        "\u{e0041}", // TAG LATIN CAPITAL LETTER A
        "\u{2028}",  // LINE SEPARATOR
        "\u{2029}",  // PARAGRAPH SEPARATOR
    ];
    for bad in sneaky {
        for (ident, room) in [(format!("a{bad}"), "r".to_owned()), ("a".to_owned(), format!("{bad}r"))] {
            let call = json!(["join", ident, room]);
            let reply = client.call(&call.to_string());
            assert_eq!(
                (reply[1].as_str(), error_code(&reply)),
                (Some("join"), "bad-request"),
                "{call}: {reply}"
            );
        }
        // Written as JSON escapes too (UTF-16, so a surrogate pair above U+FFFF): decoded
        // first, then refused.
        let escapes: String = bad.encode_utf16().map(|unit| format!("\\u{unit:04x}")).collect();
        let escaped = format!(r#"["join","a{escapes}","r"]"#);
        assert_eq!(error_code(&client.call(&escaped)), "bad-request", "{escaped}");
        // Nobody can hold such an address, so a signal to one finds no peer and a signal or
        // leave from one is not the sender's, whether the compact form (read without
        // serde_json) or the general one carries it.
        let address = format!("r:a{bad}");
        for signal in [
            format!(r#"["signal","{own}","{address}",{{"sdp":"x"}}]"#),
            format!(r#"["signal", "{own}", "{address}", {{"sdp":"x"}}]"#),
        ] {
            assert_eq!(error_code(&client.call(&signal)), "unknown-peer", "{signal}");
        }
        let from = format!(r#"["signal","{address}","{target}",1]"#);
        assert_eq!(error_code(&client.call(&from)), "not-owner", "{from}");
        assert_eq!(error_code(&client.call(&json!(["leave", address]).to_string())), "not-owner");
    }
    peer.expect_silence();
    let health = server.wait_for_clients(2);
    assert_eq!((health["rooms"].clone(), health["addresses"].clone()), (json!(1), json!(2)));
    // Letters of every script, emoji and combining marks are still fine.
    client.join("\u{627}\u{644}\u{639}\u{631}\u{628}\u{64a}\u{629}", "q");
    client.join("e\u{301}t\u{e9} \u{1f600}", "\u{65e5}\u{672c}");
}

#[test]
fn idents_per_connection_are_limited() {
    let server = TestServer::with(|config| config.room_limits.max_idents_per_conn = 2);
    let mut client = server.client();
    client.join("a", "r1");
    let b = client.join("b", "r2");
    for call in [r#"["join","c","r3"]"#, r#"["join","c","r1"]"#] {
        let reply = client.call(call);
        assert_eq!(error_code(&reply), "limit", "{reply}");
        assert_eq!(reply[1], "join");
    }
    // Another connection has its own allowance.
    let mut other = server.client();
    other.join("c", "r3");
    other.join("d", "r3");
    other.recv();
    // Giving one up makes room again.
    assert_eq!(client.call(&json!(["leave", b]).to_string()), json!(["leave", b]));
    client.join("c", "r1");
    let health = server.wait_for_clients(2);
    assert_eq!(health["addresses"], 4);
}

#[test]
fn room_members_are_limited() {
    let server = TestServer::with(|config| config.room_limits.max_room_members = 2);
    let mut first = server.client();
    let mut second = server.client();
    let mut third = server.client();
    let a = first.join("a", "r");
    second.join("b", "r");
    first.recv();
    second.recv();
    let reply = third.call(r#"["join","c","r"]"#);
    assert_eq!(error_code(&reply), "limit", "{reply}");
    assert_eq!(reply.as_array().map(Vec::len), Some(4));
    // Refused means no one was told about it.
    first.expect_silence();
    second.expect_silence();
    // Other rooms are not affected, and a free place can be taken again.
    third.join("c", "other");
    drop(first);
    assert_eq!(second.recv(), json!(["leave", "r:b", a]));
    assert_eq!(third.call(r#"["join","c","r"]"#), json!(["join", "r:c"]));
}

#[test]
fn message_over_the_size_limit_closes_with_1009() {
    let server = TestServer::with(|config| config.max_message_size = 1024);
    let mut bystander = server.client();
    let mut big = server.client();
    // Exactly at the limit is still a message (a ping: what follows its name is ignored).
    let at_limit = format!("[\"ping\",\"{}\"]", "x".repeat(1024 - 11));
    assert_eq!(at_limit.len(), 1024);
    assert_eq!(big.call(&at_limit), json!(["pong"]));
    big.send(&format!("[\"ping\",\"{}\"]", "x".repeat(2000)));
    let frame = big.expect_close().expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
    drop(big);
    assert_pong(&mut bystander);
    server.wait_for_clients(1);
}

#[test]
fn fragmented_message_over_the_size_limit_closes_with_1009() {
    let server = TestServer::with(|config| config.max_message_size = 1024);
    let mut bystander = server.client();
    let mut raw = server.raw_client();
    // Each fragment is small; together they are over the limit.
    let chunk = [b'x'; 600];
    raw.send_raw(&fragment(TEXT, false, &chunk));
    raw.send_raw(&fragment(CONTINUE, false, &chunk));
    raw.send_raw(&fragment(CONTINUE, true, &chunk));
    assert_eq!(raw.expect_close(), Some(1009));
    drop(raw);
    assert_pong(&mut bystander);
    server.wait_for_clients(1);
}

#[test]
fn two_mebibyte_frame_is_refused_and_others_are_served() {
    let server = TestServer::start();
    let mut bystander = server.client();
    let mut big = server.client();
    let payload = vec![b'x'; 2 * 1024 * 1024];
    // The server refuses it on reading the frame header and reads the rest only to drop it.
    big.ws.send(Message::binary(payload)).expect("send");
    let frame = big.expect_close().expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
    drop(big);
    assert_pong(&mut bystander);
    server.wait_for_clients(1);
    // Same with a raw client that announces 2 MiB and sends only the header.
    let mut raw = server.raw_client();
    raw.send_raw(&header_bytes(&header(BINARY), 2 * 1024 * 1024));
    assert_eq!(raw.expect_close(), Some(1009));
    drop(raw);
    assert_pong(&mut bystander);
    server.wait_for_clients(1);
}

/// A client, retrying while the server answers 503: a connection that just closed (such
/// as a `/health` request) may hold its place for a moment longer.
fn client_when_there_is_room(server: &TestServer) -> Client {
    let start = Instant::now();
    loop {
        match server.try_client("/", &[]) {
            Ok(client) => return client,
            Err(503) if start.elapsed() < PATIENCE => std::thread::sleep(Duration::from_millis(20)),
            Err(status) => panic!("no place for a client: {status}"),
        }
    }
}

#[test]
fn connections_over_the_limit_get_503_and_the_rest_keep_working() {
    let server = TestServer::with(|config| config.max_connections = Some(3));
    let mut first = server.client();
    let mut second = server.client();
    server.wait_for_clients(2);
    let mut third = client_when_there_is_room(&server);
    for _ in 0..3 {
        assert_eq!(server.try_client("/", &[]).err(), Some(503));
    }
    // Loopback may still ask for /health, in one of the few slots kept for that.
    // It counts the three clients, not itself.
    assert_eq!(server.try_health().expect("health at the limit")["connections"], 3);
    for client in [&mut first, &mut second, &mut third] {
        assert_pong(client);
    }
    let a = first.join("a", "r");
    let b = second.join("b", "r");
    first.recv();
    second.recv();
    first.send(&json!(["signal", a, b, "over the limit, still relayed"]).to_string());
    assert_eq!(second.recv(), json!(["signal", b, a, "over the limit, still relayed"]));
    // Once one leaves, a newcomer gets in.
    drop(third);
    let mut newcomer = client_when_there_is_room(&server);
    assert_pong(&mut newcomer);
}

#[test]
fn rate_limit_refuses_then_closes_a_client_that_keeps_going() {
    let server = TestServer::with(|config| {
        config.rate_per_sec = 10;
        config.rate_burst = 20;
    });
    let mut bystander = server.client();
    let mut flooder = server.client();
    // Thirty pings in one go: the burst of twenty is served, the rest refused.
    flooder.send_batch(r#"["ping"]"#, 30);
    for n in 0..20 {
        assert_eq!(flooder.recv(), json!(["pong"]), "reply {n}");
    }
    let mut refused = 0;
    for _ in 20..30 {
        let reply = flooder.recv();
        assert_eq!(reply, json!(["error", "", "rate-limited", "slow down"]));
        refused += 1;
    }
    // Keep going well past a hundred refusals in a row: closed with 1008.
    flooder.send_batch(r#"["ping"]"#, 250);
    let frame = loop {
        match flooder.ws.read() {
            Ok(Message::Text(text)) => {
                let reply: Value = serde_json::from_str(&text).expect("JSON");
                if reply != json!(["pong"]) {
                    assert_eq!(error_code(&reply), "rate-limited");
                    refused += 1;
                }
            }
            Ok(Message::Close(frame)) => break frame.expect("a close frame with a code"),
            other => panic!("expected replies and then a close, got {other:?}"),
        }
    };
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(refused >= 100, "closed after only {refused} refusals");
    drop(flooder);
    // The other client has its own allowance, untouched.
    bystander.send_batch(r#"["ping"]"#, 20);
    for _ in 0..20 {
        assert_eq!(bystander.recv(), json!(["pong"]));
    }
    server.wait_for_clients(1);
}

#[test]
fn a_client_that_does_not_read_is_dropped_and_the_sender_keeps_working() {
    let server = TestServer::with(|config| {
        config.max_outbound = 64 * 1024;
        config.stall_timeout = Duration::from_millis(500);
        unlimited_rate(config);
    });
    let mut sender = server.client();
    let s = sender.join("sender", "r");
    // A small receive buffer, so that the kernel does not soak up megabytes first.
    let mut sink = RawClient::handshake(common::connect_small_rcvbuf(server.addr), "/");
    sink.send_text(r#"["join","sink","r"]"#);
    assert_eq!(sink.recv(), json!(["join", "r:sink"]));
    assert_eq!(sender.recv(), json!(["stun", s, "r:sink", false]));
    // From here on the sink reads nothing.

    let data = "x".repeat(8 * 1024);
    let signal = format!(r#"["signal","{s}","r:sink","{data}"]"#);
    let mut sent = 0usize;
    let limit = 64 * 1024 * 1024;
    sender.ws.get_mut().set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
    let left = 'flood: loop {
        assert!(sent < limit, "still not dropped after {sent} bytes");
        sender.send_batch(&signal, 16);
        sent += 16 * signal.len();
        loop {
            match sender.ws.read() {
                Ok(Message::Text(text)) => {
                    let reply: Value = serde_json::from_str(&text).expect("JSON");
                    if reply[0] == "leave" {
                        break 'flood reply;
                    }
                    // Signals are refused while the sink's queue is full, and find no one
                    // once its socket has taken nothing for the stall timeout.
                    let code = error_code(&reply);
                    assert!(code == "peer-busy" || code == "unknown-peer", "{reply}");
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(err)) if err.kind() == ErrorKind::Interrupted => {}
                Err(tungstenite::Error::Io(err))
                    if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    break;
                }
                Err(err) => panic!("the sender lost its connection: {err}"),
            }
        }
    };
    sender.ws.get_mut().set_read_timeout(Some(PATIENCE)).expect("timeout");
    assert_eq!(left, json!(["leave", s, "r:sink"]));
    // The sink is gone from the server, so its queue is gone too; the sender carries on.
    let health = server.wait_for_clients(1);
    assert_eq!(health["addresses"], 1);
    drain_until_pong(&mut sender);
    let reply = sender.call(&json!(["signal", s, "r:sink", 1]).to_string());
    assert_eq!(error_code(&reply), "unknown-peer");
}

#[test]
fn half_open_connections_do_not_block_others_and_are_reaped() {
    // Each idle connection costs two descriptors here: ours and the server's.
    let available = common::raise_fd_limit();
    let count = usize::try_from(available.saturating_sub(256) / 2).unwrap_or(0).min(1000);
    assert!(count >= 500, "open-file limit {available} is too low for this test");
    let server = TestServer::with(|config| {
        config.handshake_timeout = Duration::from_millis(300);
        config.max_connections = Some(count + 64);
        // All from one address here; other addresses are not what this is about.
        config.max_connections_per_ip = 0;
    });
    let baseline = server.health()["connections"].as_u64().expect("count");
    let mut idle = Vec::with_capacity(count);
    for n in 0..count {
        let mut stream = TcpStream::connect(server.addr).expect("connect");
        if n % 2 == 1 {
            // Half a request head, never finished.
            stream.write_all(b"GET / HTTP/1.1\r\nHost: slowloris\r\nX-a: ").expect("partial head");
        }
        idle.push(stream);
        if n % 64 == 63 {
            // Connecting in a tight loop can outrun the server's turn to accept and overflow
            // the listen queue (128); a dropped SYN is only retried after a second. Pausing
            // now and then keeps the test quick; correctness does not depend on it.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut client = server.client();
    assert_pong(&mut client);
    let a = client.join("a", "r");
    let mut peer = server.client();
    let p = peer.join("p", "r");
    client.recv();
    peer.recv();
    // All of them are dropped once the handshake timeout passes; the clients are not.
    server.wait_for_health("idle connections reaped", |h| h["connections"] == baseline + 2);
    for stream in &mut idle {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut byte = [0u8; 1];
        match read_retrying(stream, &mut byte) {
            Ok(0) => {}
            Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected the server to hang up, got {other:?}"),
        }
    }
    peer.send(&json!(["signal", p, a, "still here"]).to_string());
    assert_eq!(client.recv(), json!(["signal", a, p, "still here"]));
}

#[test]
fn a_flood_does_not_starve_other_clients() {
    let server = TestServer::with(|config| {
        unlimited_rate(config);
        config.max_outbound = 16 * 1024 * 1024;
    });
    let (mut alice, a, mut bob, b) = server.pair();

    // The flooder writes pings for as long as the exchange below lasts, without a pause,
    // and reads its pongs on a thread of its own so that it is never dropped for not reading.
    let flooder = server.raw_client();
    let reader_stream = flooder.stream.try_clone().expect("clone");
    let mut writer_stream = flooder.stream.try_clone().expect("clone");
    let stop = Arc::new(AtomicBool::new(false));
    let pong_bytes = Arc::new(AtomicU64::new(0));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> std::io::Result<()> {
            let batch: Vec<u8> = (0..4096).flat_map(|_| text_frame(r#"["ping"]"#)).collect();
            while !stop.load(Ordering::SeqCst) {
                writer_stream.write_all(&batch)?;
            }
            Ok(())
        })
    };
    let reader = {
        let pong_bytes = Arc::clone(&pong_bytes);
        std::thread::spawn(move || {
            let mut stream = reader_stream;
            let mut chunk = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = read_retrying(&mut stream, &mut chunk) {
                pong_bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
        })
    };
    // The flood is under way before the exchange starts.
    let start = Instant::now();
    while pong_bytes.load(Ordering::SeqCst) < 100_000 {
        assert!(start.elapsed() < PATIENCE, "the flood is not being answered");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = pong_bytes.load(Ordering::SeqCst);

    // Since the flood lasts until this exchange is over, the exchange can only finish if
    // the server keeps serving alice and bob in between the flooder's messages.
    for n in 0..100 {
        alice.send(&json!(["signal", a, b, n]).to_string());
        assert_eq!(bob.recv(), json!(["signal", b, a, n]));
        bob.send(&json!(["signal", b, a, n]).to_string());
        assert_eq!(alice.recv(), json!(["signal", a, b, n]));
    }
    assert_pong(&mut alice);

    // The flooder is still being served too.
    let start = Instant::now();
    while pong_bytes.load(Ordering::SeqCst) <= before {
        assert!(start.elapsed() < PATIENCE, "the flooder got nothing more after the exchange began");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    // Its writes never failed: the flood went on, unbroken, for the whole exchange.
    writer.join().expect("writer thread").expect("the flooder was cut off during the flood");
    let _ = flooder.stream.shutdown(Shutdown::Both);
    reader.join().expect("reader thread");
}

#[test]
fn idle_clients_that_answer_pings_stay_and_silent_ones_are_closed() {
    let server = TestServer::with(|config| {
        config.ping_interval = Duration::from_millis(200);
        config.idle_timeout = Duration::from_millis(600);
    });
    let live = server.client().spawn_reader();
    let mut silent = server.raw_client();
    // The silent client reads, but never answers: it sees a ping and then the close.
    let mut pings = 0;
    let code = loop {
        let frame = silent.read_frame().expect("a ping or a close frame");
        match frame.header().opcode {
            PING => pings += 1,
            CLOSE => {
                let code = frame.payload().get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                silent.expect_eof();
                break code;
            }
            _ => panic!("unexpected {frame:?}"),
        }
    };
    assert!(pings >= 1, "closed without a ping first");
    assert_eq!(code, Some(1001));
    drop(silent);
    // The one that answers is still there, well past the idle timeout.
    std::thread::sleep(Duration::from_millis(1200));
    live.wait_for_pings(2);
    live.expect_alive_and_quiet();
    let mut live = live.stop();
    assert_pong(&mut live);
    server.wait_for_clients(1);
}

#[test]
fn protocol_faults_close_only_the_offending_connection() {
    let server = TestServer::start();
    let mut bystander = server.client();
    bystander.join("b", "r");
    let ping = br#"["ping"]"#;
    // Headers alone, announcing lengths no frame could have.
    let text_too_big = header_bytes(&header(TEXT), 0x7fff_ffff_ffff_ffff);
    // RFC 6455, section 5.2: the most significant bit of a 64-bit length must be 0.
    let length_high_bit = header_bytes(&header(BINARY), u64::MAX);
    let mut small_length_high_bit = header_bytes(&header(TEXT), 1 << 63 | 8);
    small_length_high_bit.extend_from_slice(ping);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", frame(FrameHeader { mask: None, ..header(TEXT) }, ping), 1002),
        ("RSV1 set", frame(FrameHeader { rsv1: true, ..header(TEXT) }, ping), 1002),
        ("RSV2 set", frame(FrameHeader { rsv2: true, ..header(TEXT) }, ping), 1002),
        ("RSV3 set", frame(FrameHeader { rsv3: true, ..header(TEXT) }, ping), 1002),
        ("data opcode 3", client_frame(OpCode::from(0x3), ping), 1002),
        ("control opcode 0xB", client_frame(OpCode::from(0xB), b""), 1002),
        ("continuation first", client_frame(CONTINUE, ping), 1002),
        ("invalid UTF-8 text", client_frame(TEXT, b"[\"\xff\xfe\"]"), 1007),
        ("fragmented ping", fragment(PING, false, b"x"), 1002),
        ("126-byte ping", client_frame(PING, &[b'x'; 126]), 1002),
        ("absurd length", text_too_big, 1009),
        ("length with the high bit", length_high_bit, 1002),
        ("small length with the high bit", small_length_high_bit, 1002),
    ];
    for (what, bytes, expected) in cases {
        let mut raw = server.raw_client();
        // A good message first, to show the connection worked until the fault.
        raw.send_text(r#"["ping"]"#);
        assert_eq!(raw.recv(), json!(["pong"]), "{what}");
        raw.send_raw(&bytes);
        assert_eq!(raw.expect_close(), Some(expected), "{what}");
        assert_pong(&mut bystander);
    }
    // A text message split across frames with a character cut in two is still valid UTF-8.
    let mut raw = server.raw_client();
    let message = "[\"ping\"]".replace("ping", "pi\u{e9}ng");
    let (head, tail) = message.as_bytes().split_at(4); // inside the two bytes of 'é'
    raw.send_raw(&fragment(TEXT, false, head));
    raw.send_raw(&fragment(CONTINUE, true, tail));
    assert_eq!(raw.recv(), json!(["error", "pi\u{e9}ng", "unknown-call", "unknown call"]));
    // ...and a close frame from the client is answered and the connection ends.
    raw.send_raw(&client_frame(CLOSE, &1000u16.to_be_bytes()));
    assert_eq!(raw.expect_close(), Some(1000));
    bystander.expect_silence();
    assert_eq!(server.wait_for_clients(1)["addresses"], 1);
}

#[test]
fn frames_behind_the_handshake_in_the_same_packet_are_read() {
    let server = TestServer::start();
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut bytes = b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    bytes.extend(text_frame(r#"["ping"]"#));
    bytes.extend(text_frame(r#"["join","a","r"]"#));
    stream.write_all(&bytes).expect("send");
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        assert_eq!(read_retrying(&mut stream, &mut byte).expect("response"), 1);
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101 "));
    let mut raw = RawClient::handshake_done(stream);
    assert_eq!(raw.recv(), json!(["pong"]));
    assert_eq!(raw.recv(), json!(["join", "r:a"]));
}

#[test]
fn deeply_nested_json_does_no_harm() {
    let server = TestServer::start();
    let mut client = server.client();
    let a = client.join("a", "r");
    let mut peer = server.client();
    let p = peer.join("p", "r");
    client.recv();
    peer.recv();
    let depth = 20_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let reply = client.call(&nested);
    assert_eq!(reply[0], "error", "{reply}");
    assert_eq!(reply.as_array().map(Vec::len), Some(4));
    // As signal data it is just JSON to forward: it reaches the peer byte for byte.
    client.send(&format!(r#"["signal","{a}","{p}",{nested}]"#));
    assert_eq!(peer.recv_text(), format!(r#"["signal","{p}","{a}",{nested}]"#));
    client.expect_silence();
    assert_pong(&mut client);
    assert_pong(&mut peer);
}

#[test]
fn a_thousand_connect_join_disconnect_cycles_leave_no_trace() {
    let server = TestServer::start();
    let baseline = server.health()["connections"].as_u64().expect("count");
    let mut observer = server.client();
    let o = observer.join("observer", "shared");
    let cycles = 1000;
    for n in 0..cycles {
        let mut client = server.client();
        let mine = client.join(&format!("c{n}"), "shared");
        assert_eq!(client.recv(), json!(["stun", mine, o, true]));
        let solo = client.join("solo", &format!("solo{n}"));
        match n % 3 {
            0 => {
                // A clean WebSocket close.
                client.ws.close(None).expect("close");
                while client.ws.read().is_ok() {}
            }
            1 => drop(client), // A hang-up without a close frame.
            _ => {
                // Leaving explicitly, then hanging up.
                assert_eq!(client.call(&json!(["leave", mine]).to_string()), json!(["leave", mine]));
                assert_eq!(client.call(&json!(["leave", solo]).to_string()), json!(["leave", solo]));
            }
        }
    }
    // The observer heard of every arrival and every departure, in whatever order.
    let mut joined = std::collections::HashSet::new();
    let mut left = std::collections::HashSet::new();
    for _ in 0..2 * cycles {
        let message = observer.recv();
        match message[0].as_str() {
            Some("stun") => {
                assert_eq!(message[1], o);
                assert!(joined.insert(message[2].as_str().expect("address").to_owned()));
            }
            Some("leave") => {
                assert_eq!(message[1], o);
                assert!(left.insert(message[2].as_str().expect("address").to_owned()));
            }
            _ => panic!("unexpected {message}"),
        }
    }
    assert_eq!(joined, left);
    assert_eq!(joined.len(), cycles);
    observer.expect_silence();
    drop(observer);
    let health = server.wait_for_health("an empty room table", |h| {
        h["rooms"] == 0 && h["addresses"] == 0 && h["connections"] == baseline
    });
    assert_eq!(health["status"], "ok");
}

/// A message that never completes is not a message: no read budget counting messages
/// ends its turn. Others must still be served.
#[test]
fn endless_empty_fragments_do_not_starve_other_clients() {
    let server = TestServer::with(unlimited_rate);
    let (mut alice, a, mut bob, b) = server.pair();

    // A text message that never ends: a first fragment, then empty continuation frames
    // without end. The message never grows, so no size limit applies.
    let mut flooder = server.raw_client();
    flooder.send_raw(&fragment(TEXT, false, b"["));
    let mut writer_stream = flooder.stream.try_clone().expect("clone");
    let stop = Arc::new(AtomicBool::new(false));
    let frames_sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, frames_sent) = (Arc::clone(&stop), Arc::clone(&frames_sent));
        std::thread::spawn(move || {
            let batch: Vec<u8> = (0..8192).flat_map(|_| fragment(CONTINUE, false, b"")).collect();
            while !stop.load(Ordering::SeqCst) {
                if writer_stream.write_all(&batch).is_err() {
                    return;
                }
                frames_sent.fetch_add(8192, Ordering::SeqCst);
            }
        })
    };
    let start = Instant::now();
    while frames_sent.load(Ordering::SeqCst) < 100_000 {
        assert!(start.elapsed() < PATIENCE, "the fragments do not flow");
        std::thread::sleep(Duration::from_millis(5));
    }
    for n in 0..20 {
        alice.send(&json!(["signal", a, b, n]).to_string());
        assert_eq!(bob.recv(), json!(["signal", b, a, n]));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = flooder.stream.shutdown(Shutdown::Both);
    writer.join().expect("writer thread");
}
