//! Messages do not leave big buffers behind: a connection that sent or got a message
//! over 4 KiB gets fresh small WebSocket buffers as soon as everything is written, one whose
//! buffers grew less once its client has been quiet for a second, and nothing it was still
//! sending or reading is lost when that happens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::time::Instant;

use common::{
    CONTINUE, PATIENCE, PING, PONG, RawClient, TEXT, TestServer, client_frame, fragment, text_frame,
};
use serde_json::{Value, json};

fn buffers_released(server: &TestServer) -> u64 {
    let response = server.get("/metrics");
    let line = response
        .lines()
        .find(|line| line.starts_with("diva_signal_buffers_released_total "))
        .unwrap_or_else(|| panic!("no buffers_released_total in {response}"));
    line.rsplit(' ').next().and_then(|value| value.parse().ok()).expect("a count")
}

fn wait_for_released(server: &TestServer, at_least: u64) {
    let start = Instant::now();
    while buffers_released(server) < at_least {
        assert!(start.elapsed() < PATIENCE, "buffers were not released: {}", buffers_released(server));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Two raw clients in a room: (alice, her address, bob, his address).
fn raw_pair(server: &TestServer) -> (RawClient, String, RawClient, String) {
    let mut alice = server.raw_client();
    let mut bob = server.raw_client();
    alice.send_text(r#"["join","alice","r"]"#);
    assert_eq!(recv_json(&mut alice), json!(["join", "r:alice"]));
    bob.send_text(r#"["join","bob","r"]"#);
    assert_eq!(recv_json(&mut bob), json!(["join", "r:bob"]));
    assert_eq!(recv_json(&mut alice)[0], "stun");
    assert_eq!(recv_json(&mut bob)[0], "stun");
    (alice, "r:alice".to_owned(), bob, "r:bob".to_owned())
}

fn recv_json(client: &mut RawClient) -> Value {
    let frame = client.read_frame().expect("a frame");
    assert_eq!(frame.header().opcode, TEXT, "{frame:?}");
    serde_json::from_slice(frame.payload()).expect("JSON")
}

fn signal(from: &str, to: &str, data: &str) -> String {
    json!(["signal", from, to, data]).to_string()
}

fn big_data(len: usize, seed: u8) -> String {
    (0..len).map(|i| char::from(b'a' + ((i + usize::from(seed)) % 26) as u8)).collect()
}

#[test]
fn a_big_message_is_followed_by_fresh_buffers_on_both_ends_and_traffic_goes_on() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = raw_pair(&server);
    assert_eq!(buffers_released(&server), 0, "small messages keep the buffers");

    let data = big_data(60_000, 0);
    alice.send_text(&signal(&a, &b, &data));
    assert_eq!(recv_json(&mut bob), json!(["signal", b, a, data]));
    // Alice's incoming side grew with the message, Bob's outgoing side with the reply.
    wait_for_released(&server, 2);

    // Both keep working, in both directions, with small and big messages.
    for round in 0..3u8 {
        let small = format!("small {round}");
        bob.send_text(&signal(&b, &a, &small));
        assert_eq!(recv_json(&mut alice), json!(["signal", a, b, small]));
        let big = big_data(10_000, round);
        bob.send_text(&signal(&b, &a, &big));
        assert_eq!(recv_json(&mut alice), json!(["signal", a, b, big]));
        alice.send_text(&signal(&a, &b, &big));
        assert_eq!(recv_json(&mut bob), json!(["signal", b, a, big]));
    }
    // Each big message: its sender's incoming side and its receiver's outgoing side.
    wait_for_released(&server, 2 + 3 * 4);
}

#[test]
fn a_frame_cut_short_after_a_big_message_is_kept_whole() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = raw_pair(&server);
    let next = text_frame(&signal(&a, &b, "the next one"));
    // Cut inside the header, right after it (mask included), and inside the payload.
    for cut in [1, 2, 8, 20] {
        let big = big_data(20_000, cut as u8);
        let mut bytes = text_frame(&signal(&a, &b, &big));
        bytes.extend_from_slice(next.get(..cut).expect("cut"));
        alice.send_raw(&bytes);
        assert_eq!(recv_json(&mut bob), json!(["signal", b, a, big]));
        // The server has handled the big message and flushed; it now holds part of a frame.
        alice.send_raw(next.get(cut..).expect("rest"));
        assert_eq!(recv_json(&mut bob), json!(["signal", b, a, "the next one"]), "cut {cut}");
    }
    // Bob's outgoing side each time, and Alice's incoming side once her frame was whole.
    wait_for_released(&server, 2 * 4);
}

#[test]
fn a_fragmented_message_survives_big_traffic_in_the_middle_of_it() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = raw_pair(&server);
    let big_from_alice = big_data(30_000, 7);
    let message = signal(&a, &b, &big_from_alice);
    let (head, tail) = message.split_at(message.len() / 2);

    // First fragment (big), then a ping: its pong says the server has read that far.
    alice.send_raw(&fragment(TEXT, false, head.as_bytes()));
    alice.send_raw(&client_frame(PING, b"here"));
    let pong = alice.read_frame().expect("pong");
    assert_eq!((pong.header().opcode, pong.payload()), (PONG, &b"here"[..]));

    // Meanwhile a big message goes out to Alice, and everything is flushed.
    let big_from_bob = big_data(30_000, 3);
    bob.send_text(&signal(&b, &a, &big_from_bob));
    assert_eq!(recv_json(&mut alice), json!(["signal", a, b, big_from_bob]));
    // Bob's incoming side; not Alice's, who is in the middle of a message. Her flush was
    // over before the message reached her.
    wait_for_released(&server, 1);
    assert_eq!(buffers_released(&server), 1);

    // The final fragment completes the message that was begun before.
    alice.send_raw(&fragment(CONTINUE, true, tail.as_bytes()));
    assert_eq!(recv_json(&mut bob), json!(["signal", b, a, big_from_alice]));
    // Now Alice's (incoming and outgoing) and Bob's outgoing side.
    wait_for_released(&server, 3);
}

#[test]
fn messages_read_ahead_behind_a_big_one_are_all_answered() {
    let server = TestServer::with(|config| {
        config.rate_per_sec = 1_000_000;
        config.rate_burst = 1_000_000;
    });
    let (mut alice, a, mut bob, b) = raw_pair(&server);
    // More small messages than one read turn takes (64), behind a big one, in one write:
    // whole frames then wait inside tungstenite when the turn ends, and must not be
    // dropped with its buffers. Tiny frames (a `ping` is 14 bytes) and a big one of many
    // lengths, so that some turn ends exactly where a frame does.
    let ping = text_frame(r#"["ping"]"#);
    for shift in 0..64 {
        let big = big_data(5_000 + shift, shift as u8);
        let mut bytes = text_frame(&signal(&a, &b, &big));
        for _ in 0..100 {
            bytes.extend_from_slice(&ping);
        }
        alice.send_raw(&bytes);
        assert_eq!(recv_json(&mut bob), json!(["signal", b, a, big]));
        for n in 0..100 {
            assert_eq!(recv_json(&mut alice), json!(["pong"]), "shift {shift}, pong {n}");
        }
    }
}

#[test]
fn buffers_grown_by_mid_sized_messages_are_made_fresh_once_the_clients_are_quiet() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = raw_pair(&server);
    // Under the 4 KiB of a big message, so nothing is released right away.
    let data = big_data(2_000, 1);
    alice.send_text(&signal(&a, &b, &data));
    assert_eq!(recv_json(&mut bob), json!(["signal", b, a, data]));
    bob.send_text(&signal(&b, &a, &data));
    assert_eq!(recv_json(&mut alice), json!(["signal", a, b, data]));
    assert_eq!(buffers_released(&server), 0, "released while the clients were busy");
    // Each side read 2 KB and wrote 2 KB; once quiet for a second, both get fresh buffers.
    wait_for_released(&server, 2);

    // And both keep working.
    alice.send_text(&signal(&a, &b, "after"));
    assert_eq!(recv_json(&mut bob), json!(["signal", b, a, "after"]));
    bob.send_text(&signal(&b, &a, &data));
    assert_eq!(recv_json(&mut alice), json!(["signal", a, b, data]));
}
