//! Safe by default: who may use an address, how it is given up and taken over,
//! and who may connect at all (access token, origin).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::time::Duration;

use common::{PING, TestServer, error_code};
use serde_json::{Value, json};

/// Asserts that `reply` is a refusal of `call` with `code`, in the four-element form.
fn assert_refused(reply: &Value, call: &str, code: &str) {
    assert_eq!(reply.as_array().map(Vec::len), Some(4), "not a 4-element error: {reply}");
    assert_eq!(error_code(reply), code, "{reply}");
    assert_eq!(reply[1], call, "{reply}");
    assert!(reply[3].as_str().is_some_and(|detail| !detail.is_empty()), "{reply}");
}

#[test]
fn signal_from_an_address_not_joined_is_refused_and_not_relayed() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = server.pair();
    let mut mallory = server.client();
    mallory.join("m", "r");
    alice.recv();
    bob.recv();
    mallory.recv();
    mallory.recv();

    // Pretending to be alice, to bob; and from an address no one holds.
    for from in [a.as_str(), "r:nobody", "elsewhere:a"] {
        let reply = mallory.call(&json!(["signal", from, b, {"sdp": "forged"}]).to_string());
        assert_refused(&reply, "signal", "not-owner");
    }
    // Even a connection that holds one address cannot sign with another one.
    let reply = bob.call(&json!(["signal", a, b, "forged"]).to_string());
    assert_refused(&reply, "signal", "not-owner");
    alice.expect_silence();
    bob.expect_silence();
    mallory.expect_silence();
}

#[test]
fn join_of_an_address_held_by_another_is_taken_and_the_holder_keeps_it() {
    let server = TestServer::start();
    let mut holder = server.client();
    let mut peer = server.client();
    let mut usurper = server.client();
    let a = holder.join("a", "r");
    let p = peer.join("p", "r");
    holder.recv();
    peer.recv();

    let reply = usurper.call(r#"["join","a","r"]"#);
    assert_refused(&reply, "join", "taken");
    usurper.expect_silence();
    // No one heard of the attempt (the holder only gets a liveness ping), and signals for
    // the address still reach its holder.
    peer.expect_silence();
    holder.expect_no_message();
    peer.send(&json!(["signal", p, a, "for the holder"]).to_string());
    assert_eq!(holder.recv(), json!(["signal", a, p, "for the holder"]));
    holder.send(&json!(["signal", a, p, "reply"]).to_string());
    assert_eq!(peer.recv(), json!(["signal", p, a, "reply"]));
    // The usurper does not hold it: it cannot speak as it.
    assert_refused(&usurper.call(&json!(["signal", a, p, 1]).to_string()), "signal", "not-owner");
    let health = server.wait_for_clients(3);
    assert_eq!(health["addresses"], 2);
}

#[test]
fn repeated_join_is_already_joined_without_a_second_stun_round() {
    let server = TestServer::start();
    let mut first = server.client();
    let mut second = server.client();
    let a = first.join("a", "r");
    let b = second.join("b", "r");
    assert_eq!(first.recv(), json!(["stun", a, b, false]));
    assert_eq!(second.recv(), json!(["stun", b, a, true]));

    assert_refused(&second.call(r#"["join","b","r"]"#), "join", "already-joined");
    assert_refused(&first.call(r#"["join","a","r"]"#), "join", "already-joined");
    first.expect_silence();
    second.expect_silence();
    let health = server.wait_for_clients(2);
    assert_eq!((health["rooms"].clone(), health["addresses"].clone()), (json!(1), json!(2)));
}

#[test]
fn every_refusal_is_exactly_one_four_element_error() {
    let server = TestServer::with(|config| {
        config.room_limits.max_idents_per_conn = 2;
        // The holder below never reads until the end; do not let a probe drop it meanwhile.
        config.probe_timeout = Duration::from_secs(60);
    });
    let mut holder = server.client();
    let mut bystander = server.client();
    let mut client = server.client();
    holder.join("held", "r");
    bystander.join("b", "r");
    holder.recv();
    bystander.recv();
    let own = client.join("me", "s");
    client.join("me2", "s");
    client.recv();
    client.recv();

    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"not json".to_vec(), "", "bad-json"),
        (b"".to_vec(), "", "bad-json"),
        (vec![0xff, 0xfe, 0x00], "", "bad-json"),
        (b"[\"ping\"] trailing".to_vec(), "", "bad-json"),
        (b"{\"call\":\"ping\"}".to_vec(), "", "bad-request"),
        (b"\"ping\"".to_vec(), "", "bad-request"),
        (b"[]".to_vec(), "", "bad-request"),
        (b"[null]".to_vec(), "", "bad-request"),
        (b"[[\"ping\"]]".to_vec(), "", "bad-request"),
        (b"[\"fly\", 1]".to_vec(), "fly", "unknown-call"),
        (b"[\"PING\"]".to_vec(), "PING", "unknown-call"),
        (b"[\"leave\", \"s:me\", \"x\"]".to_vec(), "leave", "bad-request"),
        (b"[\"join\"]".to_vec(), "join", "bad-request"),
        (b"[\"join\", \"a\", \"r\", \"x\"]".to_vec(), "join", "bad-request"),
        (b"[\"join\", \"\", \"r\"]".to_vec(), "join", "bad-request"),
        (b"[\"join\", \"held\", \"r\"]".to_vec(), "join", "taken"),
        (b"[\"join\", \"me\", \"s\"]".to_vec(), "join", "already-joined"),
        (b"[\"join\", \"third\", \"t\"]".to_vec(), "join", "limit"),
        (b"[\"signal\", \"s:me\"]".to_vec(), "signal", "bad-request"),
        (b"[\"signal\", \"s:me\", \"s:nobody\", 1]".to_vec(), "signal", "unknown-peer"),
        (b"[\"signal\", \"s:me\", \"r:held\", 1]".to_vec(), "signal", "other-room"),
        (b"[\"signal\", \"r:held\", \"r:b\", 1]".to_vec(), "signal", "not-owner"),
        (b"[\"leave\"]".to_vec(), "leave", "bad-request"),
        (b"[\"leave\", 5]".to_vec(), "leave", "bad-request"),
        (b"[\"leave\", \"r:held\"]".to_vec(), "leave", "not-owner"),
        (b"[\"leave\", \"no-colon\"]".to_vec(), "leave", "not-owner"),
    ];
    for (message, call, code) in &cases {
        let shown = String::from_utf8_lossy(message);
        match std::str::from_utf8(message) {
            Ok(text) => client.send(text),
            Err(_) => client.ws.send(tungstenite::Message::binary(message.clone())).expect("send"),
        }
        // A ping right behind: the very next message is the refusal, and the one after it the pong.
        client.send(r#"["ping"]"#);
        let reply = client.recv();
        assert_eq!(reply.as_array().map(Vec::len), Some(4), "for {shown}: {reply}");
        assert_eq!(reply[0], "error", "for {shown}: {reply}");
        assert_eq!(reply[1], *call, "for {shown}: {reply}");
        assert_eq!(reply[2], *code, "for {shown}: {reply}");
        assert!(reply[3].as_str().is_some_and(|d| !d.is_empty()), "for {shown}: {reply}");
        assert_eq!(client.recv(), json!(["pong"]), "more than one reply to {shown}");
    }
    // None of it reached anyone else, and the connection still works.
    bystander.expect_silence();
    // The holder was probed (a WebSocket ping) when its address was asked for; nothing else.
    holder.expect_no_message();
    client.send(&json!(["signal", own, "s:me2", "still here"]).to_string());
    assert_eq!(client.recv(), json!(["signal", "s:me2", own, "still here"]));
}

#[test]
fn leave_tells_the_holder_and_every_remaining_member_and_frees_the_address() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = server.pair();
    let mut carol = server.client();
    let c = carol.join("c", "r");
    for _ in 0..2 {
        carol.recv();
    }
    alice.recv();
    bob.recv();

    assert_eq!(bob.call(&json!(["leave", b]).to_string()), json!(["leave", b]));
    assert_eq!(alice.recv(), json!(["leave", a, b]));
    assert_eq!(carol.recv(), json!(["leave", c, b]));
    bob.expect_silence();
    // Gone means gone: bob cannot speak as it, nor can anyone reach it.
    assert_refused(&bob.call(&json!(["signal", b, a, 1]).to_string()), "signal", "not-owner");
    assert_refused(&alice.call(&json!(["signal", a, b, 1]).to_string()), "signal", "unknown-peer");
    assert_refused(&bob.call(&json!(["leave", b]).to_string()), "leave", "not-owner");

    // The address can be joined again, by anyone; the newcomer meets the remaining members.
    let mut dave = server.client();
    assert_eq!(dave.call(r#"["join","b","r"]"#), json!(["join", b]));
    assert_eq!(dave.recv(), json!(["stun", b, a, true]));
    assert_eq!(dave.recv(), json!(["stun", b, c, true]));
    assert_eq!(alice.recv(), json!(["stun", a, b, false]));
    assert_eq!(carol.recv(), json!(["stun", c, b, false]));
    alice.send(&json!(["signal", a, b, "hi dave"]).to_string());
    assert_eq!(dave.recv(), json!(["signal", b, a, "hi dave"]));
    bob.expect_silence();
}

#[test]
fn leave_by_a_non_holder_is_refused_and_changes_nothing() {
    let server = TestServer::start();
    let mut holder = server.client();
    let mut member = server.client();
    let mut other = server.client();
    let h = holder.join("h", "r");
    let m = member.join("m", "r");
    holder.recv();
    member.recv();

    assert_refused(&other.call(&json!(["leave", h]).to_string()), "leave", "not-owner");
    // Even a member of the same room may not give up someone else's address.
    assert_refused(&member.call(&json!(["leave", h]).to_string()), "leave", "not-owner");
    holder.expect_silence();
    member.send(&json!(["signal", m, h, "still yours"]).to_string());
    assert_eq!(holder.recv(), json!(["signal", h, m, "still yours"]));
    assert_eq!(server.wait_for_clients(3)["addresses"], 2);
}

#[test]
fn leave_of_one_of_several_idents_tells_the_holders_other_ident() {
    let server = TestServer::start();
    let mut multi = server.client();
    let x = multi.join("x", "r");
    let y = multi.join("y", "r");
    multi.recv();
    multi.recv();
    assert_eq!(multi.call(&json!(["leave", x]).to_string()), json!(["leave", x]));
    assert_eq!(multi.recv(), json!(["leave", y, x]));
    multi.expect_silence();
    let health = server.wait_for_clients(1);
    assert_eq!((health["rooms"].clone(), health["addresses"].clone()), (json!(1), json!(1)));
}

#[test]
fn closing_a_connection_is_a_leave_for_the_rest_of_the_room() {
    let server = TestServer::start();
    let (mut alice, a, mut bob, b) = server.pair();
    let mut carol = server.client();
    let c = carol.join("c", "r");
    carol.recv();
    carol.recv();
    alice.recv();
    bob.recv();

    // A clean close...
    bob.ws.close(None).expect("close");
    assert_eq!(alice.recv(), json!(["leave", a, b]));
    assert_eq!(carol.recv(), json!(["leave", c, b]));
    // ...and a hang-up without one.
    drop(carol);
    assert_eq!(alice.recv(), json!(["leave", a, c]));
    alice.expect_silence();
    let health = server.wait_for_health("only alice's address", |h| h["addresses"] == 1);
    assert_eq!(health["rooms"], 1);
    let mut again = server.client();
    assert_eq!(again.call(r#"["join","b","r"]"#), json!(["join", b]));
    assert_eq!(again.recv(), json!(["stun", b, a, true]));
}

#[test]
fn a_silent_holder_is_probed_dropped_and_its_address_handed_over() {
    let server = TestServer::with(|config| config.probe_timeout = Duration::from_millis(300));
    let mut member = server.client();
    let m = member.join("m", "room");
    // The old connection: a hand-made client that joins and from then on reads and answers nothing.
    let mut silent = server.raw_client();
    silent.send_text(r#"["join","a","room"]"#);
    assert_eq!(silent.recv(), json!(["join", "room:a"]));
    assert_eq!(member.recv(), json!(["stun", m, "room:a", false]));

    // The same peer, reconnected: the address is still taken, but the holder gets probed...
    let mut reconnected = server.client();
    let reply = reconnected.call(r#"["join","a","room"]"#);
    assert_refused(&reply, "join", "taken");
    // ...does not answer in time, is dropped, and its room hears that it left.
    assert_eq!(member.recv(), json!(["leave", m, "room:a"]));
    assert_eq!(reconnected.call(r#"["join","a","room"]"#), json!(["join", "room:a"]));
    assert_eq!(reconnected.recv(), json!(["stun", "room:a", m, true]));
    assert_eq!(member.recv(), json!(["stun", m, "room:a", false]));
    member.send(&json!(["signal", m, "room:a", "welcome back"]).to_string());
    assert_eq!(reconnected.recv(), json!(["signal", "room:a", m, "welcome back"]));
    server.wait_for_clients(2);

    // What the silent client was sent, read only now: the probe, then the end (no frame needed).
    let mut frames = Vec::new();
    while let Some(frame) = silent.read_frame() {
        frames.push(frame);
    }
    assert!(frames.iter().any(|f| f.header().opcode == PING), "no probe ping among {frames:?}");
}

#[test]
fn a_live_holder_answers_the_probe_and_is_never_displaced() {
    let probe_timeout = Duration::from_millis(300);
    let server = TestServer::with(|config| config.probe_timeout = probe_timeout);
    let mut holder = server.client();
    let a = holder.join("a", "room");
    // From now on the holder reads all the time, so tungstenite answers pings at once.
    let holder = holder.spawn_reader();
    let mut rival = server.client();
    let r = rival.join("r", "room");
    assert_eq!(holder.recv(), json!(["stun", a, r, false]));
    assert_eq!(rival.recv(), json!(["stun", r, a, true]));

    assert_refused(&rival.call(r#"["join","a","room"]"#), "join", "taken");
    holder.wait_for_pings(1);
    // Well past the probe deadline, the address is still the holder's.
    std::thread::sleep(probe_timeout * 3);
    assert_refused(&rival.call(r#"["join","a","room"]"#), "join", "taken");
    holder.wait_for_pings(2);
    std::thread::sleep(probe_timeout * 3);
    holder.expect_alive_and_quiet();
    rival.send(&json!(["signal", r, a, "still there?"]).to_string());
    assert_eq!(holder.recv(), json!(["signal", a, r, "still there?"]));
    let health = server.wait_for_clients(2);
    assert_eq!(health["addresses"], 2);
    let mut holder = holder.stop();
    assert_eq!(holder.call(r#"["ping"]"#), json!(["pong"]));
    rival.expect_silence();
}

#[test]
fn access_token_is_required_for_websocket_upgrades() {
    let server = TestServer::with(|config| config.access_tokens = vec!["s3cret".into()]);
    for path in
        ["/", "/?token=", "/?token=wrong", "/?token=s3cre", "/?token=s3cret2", "/?tok=s3cret", "/s3cret"]
    {
        assert_eq!(server.try_client(path, &[]).err(), Some(401), "{path}");
    }
    // The refusal is a plain HTTP 401 that closes the connection.
    let response = server.http(
        b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 401 "), "{response}");
    for path in ["/?token=s3cret", "/any/path?x=1&token=s3cret"] {
        let mut client = server.try_client(path, &[]).unwrap_or_else(|status| panic!("{path}: {status}"));
        assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]));
    }
    // Pages need no token.
    assert!(server.get("/").starts_with("HTTP/1.1 200 "));
    assert_eq!(server.health()["status"], "ok");
}

#[test]
fn several_access_tokens_are_each_accepted() {
    let server = TestServer::with(|config| config.access_tokens = vec!["one".into(), "two-2".into()]);
    for token in ["one", "two-2"] {
        let mut client = server.try_client(&format!("/?token={token}"), &[]).expect("accepted");
        assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]));
    }
    assert_eq!(server.try_client("/?token=three", &[]).err(), Some(401));
}

#[test]
fn origin_allow_list_refuses_other_browsers_but_not_plain_clients() {
    let server = TestServer::with(|config| config.allowed_origins = vec!["https://good.example".into()]);
    for evil in ["https://evil.example", "https://good.example.evil.example", "http://good.example", "null"] {
        assert_eq!(server.try_client("/", &[("Origin", evil)]).err(), Some(403), "{evil}");
    }
    let mut good = server.try_client("/", &[("Origin", "https://good.example")]).expect("good origin");
    assert_eq!(good.call(r#"["ping"]"#), json!(["pong"]));
    // Without an Origin header (not a browser) the list does not apply.
    let mut plain = server.client();
    assert_eq!(plain.call(r#"["ping"]"#), json!(["pong"]));
    // The refusal is a plain HTTP 403.
    let response = server.http(
        b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: https://evil.example\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 403 "), "{response}");
    assert!(server.get("/").starts_with("HTTP/1.1 200 "));
}

#[test]
fn token_and_origin_are_both_checked() {
    let server = TestServer::with(|config| {
        config.access_tokens = vec!["s3cret".into()];
        config.allowed_origins = vec!["https://good.example".into()];
    });
    let good = ("Origin", "https://good.example");
    let evil = ("Origin", "https://evil.example");
    assert_eq!(server.try_client("/", &[good]).err(), Some(401));
    assert_eq!(server.try_client("/?token=s3cret", &[evil]).err(), Some(403));
    let mut client = server.try_client("/?token=s3cret", &[good]).expect("token and origin");
    assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]));
}
