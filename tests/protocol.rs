//! The wire protocol of the original v2.2.x, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::collections::HashSet;

use common::{TestServer, error_code};
use serde_json::json;

#[test]
fn ident_is_fresh_lowercase_letters() {
    let server = TestServer::start();
    let mut client = server.client();
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let reply = client.call(r#"["ident"]"#);
        assert_eq!(reply.as_array().map(Vec::len), Some(2), "{reply}");
        assert_eq!(reply[0], "ident");
        let ident = reply[1].as_str().expect("string ident");
        assert!((12..=23).contains(&ident.len()), "{ident}");
        assert!(ident.bytes().all(|b| b.is_ascii_lowercase()), "{ident}");
        assert!(seen.insert(ident.to_owned()), "ident repeated: {ident}");
    }
}

#[test]
fn ping_gets_pong() {
    let server = TestServer::start();
    let mut client = server.client();
    assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]));
}

/// The original answers `["pong"]` to `["ping", ...]` whatever follows, and a fresh ident
/// to `["ident", ...]`: a client that sends a timestamp with its ping must keep working.
#[test]
fn ping_and_ident_ignore_extra_arguments_like_the_original() {
    let server = TestServer::start();
    let mut client = server.client();
    for ping in [r#"["ping",1]"#, r#"["ping",1712345678901,"x",{"a":[null]}]"#, r#"["ping",null]"#] {
        assert_eq!(client.call(ping), json!(["pong"]), "{ping}");
    }
    for ident in [r#"["ident","mine"]"#, r#"["ident",1,2,3,4,5,6]"#, r#"["ident",{}]"#] {
        let reply = client.call(ident);
        assert_eq!(reply[0], "ident", "{ident}: {reply}");
        let fresh = reply[1].as_str().expect("string ident");
        assert!((12..=23).contains(&fresh.len()) && fresh.bytes().all(|b| b.is_ascii_lowercase()), "{reply}");
    }
    // The extras must still be JSON: the message as a whole is read first.
    assert_eq!(error_code(&client.call(r#"["ping",oops]"#)), "bad-json");
    assert_eq!(error_code(&client.call(r#"["ident",1,]"#)), "bad-json");
}

#[test]
fn two_peers_join_stun_and_signal() {
    let server = TestServer::start();
    let mut alice = server.client();
    let mut bob = server.client();
    let a = alice.ident();
    let b = bob.ident();
    let room = "iroha";
    let alice_address = alice.join(&a, room);
    alice.expect_silence();
    let bob_address = bob.join(&b, room);
    assert_eq!(alice.recv(), json!(["stun", alice_address, bob_address, false]));
    assert_eq!(bob.recv(), json!(["stun", bob_address, alice_address, true]));

    bob.send(&json!(["signal", bob_address, alice_address, {"type": "offer", "sdp": "v=0"}]).to_string());
    assert_eq!(alice.recv(), json!(["signal", alice_address, bob_address, {"type": "offer", "sdp": "v=0"}]));
    alice.send(&json!(["signal", alice_address, bob_address, "answer"]).to_string());
    assert_eq!(bob.recv(), json!(["signal", bob_address, alice_address, "answer"]));
}

#[test]
fn stun_order_and_initiator_flags_in_rooms_of_three_and_four() {
    let server = TestServer::start();
    let mut clients: Vec<_> = (0..4).map(|_| server.client()).collect();
    let mut addresses = Vec::new();
    for (n, client) in clients.iter_mut().enumerate() {
        let address = client.join(&format!("peer{n}"), "mesh");
        addresses.push(address);
    }
    // Each newcomer got one stun per older member, in join order, as initiator.
    for (n, client) in clients.iter_mut().enumerate() {
        for older in &addresses[..n] {
            assert_eq!(client.recv(), json!(["stun", addresses[n], older, true]));
        }
        // ...and one per later member, as the side that waits for the offer.
        for newer in &addresses[n + 1..] {
            assert_eq!(client.recv(), json!(["stun", addresses[n], newer, false]));
        }
        client.expect_silence();
    }
}

#[test]
fn one_connection_holds_several_idents() {
    let server = TestServer::start();
    let mut multi = server.client();
    let mut other = server.client();
    let first = multi.join("one", "r");
    let second = multi.join("two", "r");
    // The same connection gets both sides of the stun between its own idents.
    assert_eq!(multi.recv(), json!(["stun", first, second, false]));
    assert_eq!(multi.recv(), json!(["stun", second, first, true]));
    let elsewhere = multi.join("one", "s");
    let peer = other.join("p", "s");
    assert_eq!(multi.recv(), json!(["stun", elsewhere, peer, false]));
    other.send(&json!(["signal", peer, elsewhere, 1]).to_string());
    assert_eq!(multi.recv(), json!(["signal", elsewhere, peer, 1]));
}

#[test]
fn signal_data_is_forwarded_byte_exact() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = server.pair();
    for data in [
        r#""a plain string""#,
        r#"{ "type" : "offer",  "sdp" : "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n" }"#,
        r#""ünïcødé ✓ \u00e9 😀""#,
        r#"{"candidate":{"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0,"nested":[1,[2,[3,{"x":null}]],true,-1.5e3]}}"#,
        "null",
        "[]",
        r#""quote \" backslash \\ slash \/ controls \b\f\n\r\t and more than sixteen bytes""#,
        r#"[0,-0,12.5e-3,1E+400,123456789012345678901234567890,true,false,{},{"":""}]"#,
    ] {
        alice.send(&format!(r#"["signal","{a}","{b}",{data}]"#));
        assert_eq!(bob.recv_text(), format!(r#"["signal","{b}","{a}",{data}]"#));
    }
}

#[test]
fn binary_frames_are_treated_like_text() {
    let server = TestServer::start();
    let mut client = server.client();
    client.send_binary(r#"["ping"]"#);
    assert_eq!(client.recv(), json!(["pong"]));
    client.send_binary(r#"["join","a","r"]"#);
    assert_eq!(client.recv(), json!(["join", "r:a"]));
}

#[test]
fn bad_input_keeps_the_connection_and_reaches_no_one() {
    let server = TestServer::start();
    let mut sender = server.client();
    let mut bystander = server.client();
    let from = sender.join("s", "r");
    let to = bystander.join("b", "r");
    sender.recv();
    bystander.recv();
    for (bad, code) in [
        ("not json", "bad-json"),
        ("{\"a\": 1}", "bad-request"),
        ("42", "bad-request"),
        ("[]", "bad-request"),
        ("[1, 2]", "bad-request"),
        ("[\"fly\"]", "unknown-call"),
        ("[\"join\", \"x\"]", "bad-request"),
        ("[\"join\", 1, \"r\"]", "bad-request"),
        ("[\"signal\", \"r:s\", \"r:b\"]", "bad-request"),
        ("[\"signal\", \"r:s\", 5, {}]", "bad-request"),
        ("[\"signal\", \"r:s\", \"r:nobody\", {}]", "unknown-peer"),
        ("[\"signal\", \"r:b\", \"r:s\", {}]", "not-owner"),
        // Compact, as clients send signals, to a real peer, with DATA that is not JSON.
        (r#"["signal","r:s","r:b",{"sdp":"v=0\r\n",}]"#, "bad-json"),
        (r#"["signal","r:s","r:b",01]"#, "bad-json"),
        ("[\"signal\",\"r:s\",\"r:b\",\"a raw\ttab\"]", "bad-json"),
        (r#"["signal","r:s","r:b",[1,2]"#, "bad-json"),
    ] {
        let reply = sender.call(bad);
        assert_eq!(error_code(&reply), code, "for {bad}: {reply}");
        assert_eq!(reply.as_array().map(Vec::len), Some(4), "{reply}");
    }
    bystander.expect_silence();
    // Still usable after all that.
    assert_eq!(sender.call(r#"["ping"]"#), json!(["pong"]));
    sender.send(&json!(["signal", from, to, "ok"]).to_string());
    assert_eq!(bystander.recv(), json!(["signal", to, from, "ok"]));
}

#[test]
fn disconnect_removes_exactly_that_connections_addresses() {
    let server = TestServer::start();
    let mut leaving = server.client();
    let mut staying = server.client();
    leaving.join("x", "r1");
    leaving.join("x", "r2");
    staying.join("x", "r3");
    let kept = staying.join("y", "r1");
    assert_eq!(staying.recv()[0], "stun");
    server.wait_for_health("3 rooms", |h| h["rooms"] == 3 && h["addresses"] == 4);
    drop(leaving);
    assert_eq!(staying.recv(), json!(["leave", kept, "r1:x"]));
    let health = server.wait_for_health("rooms r2 gone", |h| h["addresses"] == 2);
    assert_eq!(health["rooms"], 2);
    // r1:x and r2:x are free again; r3:x still belongs to `staying`.
    let mut newcomer = server.client();
    newcomer.join("x", "r2");
    assert_eq!(error_code(&newcomer.call(r#"["join","x","r3"]"#)), "taken");
}

#[test]
fn a_burst_larger_than_one_turn_is_answered_completely_and_in_order() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = server.pair();
    // 400 signals in one write: more than one connection's turn (64 messages, 64 KiB), so
    // the server must carry the rest over to later turns without losing or reordering any.
    let payload = "x".repeat(300);
    for n in 0..400 {
        alice
            .ws
            .write(tungstenite::Message::text(json!(["signal", a, b, [n, payload]]).to_string()))
            .expect("queue");
    }
    alice.ws.flush().expect("flush");
    for n in 0..400 {
        assert_eq!(bob.recv()[3][0], n);
    }
    bob.expect_silence();
}

#[test]
fn signals_of_every_size_up_to_the_message_limit_arrive_byte_for_byte() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = server.pair();
    // Around the server's 256-byte read steps and up to near the 64 KiB default limit,
    // with content that differs at every position, so a lost or repeated step shows.
    let sizes = [0, 1, 200, 255, 256, 257, 511, 512, 513, 1000, 4096, 20_000, 60_000];
    for size in sizes {
        let data: String = (0..size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        alice.ws.write(tungstenite::Message::text(json!(["signal", a, b, data]).to_string())).expect("queue");
        alice.ws.flush().expect("flush");
        assert_eq!(bob.recv(), json!(["signal", b, a, data]), "size {size}");
    }
    bob.expect_silence();
}
