//! The cluster (issue 19, docs/CLUSTER.md) end to end: the real binary as several nodes
//! sharing rooms through a real redis-server (Debian's, started here on a loopback port;
//! each test says so and passes when it is not installed), clients spread over the nodes.
//! Every protocol rule holds across nodes as on one node; and the failures: a node
//! killed or shut down, Redis killed and restarted empty, Redis paused, a wrong password;
//! and Redis over TLS (`rediss://`, module `over_tls`): client certificates, a wrong CA,
//! the flags, SIGHUP.
//!
//! Scenarios that can share a cluster run on one, in parallel threads, each with rooms of
//! its own; the failure tests start their own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::collections::HashMap;
use std::process::Command;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use common::{
    CLUSTER_PATIENCE, Client, Cluster, NODE_TIMEOUT_SECS, Node, Paused, QUIET, RedisServer, SERVER_BIN,
    closed_within, error_code, expect_set, leftovers, recv_soon, recv_within, wait_for_redis,
};
use serde_json::{Value, json};
use tungstenite::Message;

/// Flags of the shared cluster: no rate limit in the way of the order test, and a short
/// probe timeout for the probe tests.
const SHARED_FLAGS: &[&str] = &["--rate", "100000", "--burst", "100000", "--probe-timeout", "1"];
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Asserts that `reply` refuses `call` with `code`, in the four-element form.
fn assert_refused(reply: &Value, call: &str, code: &str) {
    assert_eq!(reply.as_array().map(Vec::len), Some(4), "not a 4-element error: {reply}");
    assert_eq!(error_code(reply), code, "{reply}");
    assert_eq!(reply[1], call, "{reply}");
    assert!(reply[3].as_str().is_some_and(|detail| !detail.is_empty()), "{reply}");
}

fn stun(own: &str, peer: &str, initiator: bool) -> Value {
    json!(["stun", own, peer, initiator])
}

fn peer_left(own: &str, gone: &str) -> Value {
    json!(["leave", own, gone])
}

/// Sends a join and returns the address (the reply is not read).
fn send_join(client: &mut Client, ident: &str, room: &str) -> String {
    client.send(&json!(["join", ident, room]).to_string());
    format!("{room}:{ident}")
}

/// Joins, checking the acknowledgement within [`CLUSTER_PATIENCE`].
fn join(client: &mut Client, ident: &str, room: &str) -> String {
    let address = send_join(client, ident, room);
    assert_eq!(recv_soon(client), json!(["join", address]), "join of {address}");
    address
}

/// Joins, retrying while the cluster is unavailable (a node that has just come back).
fn join_when_available(client: &mut Client, ident: &str, room: &str) -> String {
    let start = Instant::now();
    loop {
        let address = send_join(client, ident, room);
        let reply = recv_soon(client);
        if reply == json!(["join", address]) {
            return address;
        }
        // `taken` too: a join answered `cluster-unavailable` while Redis hung may still be
        // run by Redis when it resumes (its command was on the way); the node then releases
        // the address it holds for no one, and a retry succeeds.
        if error_code(&reply) == "taken" {
            eprintln!("join of {address}: taken while the node comes back; retrying");
        } else {
            assert_refused(&reply, "join", "cluster-unavailable");
        }
        assert!(start.elapsed() < CLUSTER_PATIENCE, "join of {address} refused all along: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(client: &mut Client, from: &str, to: &str, data: &str) {
    client.send(&format!(r#"["signal",{},{},{data}]"#, json!(from), json!(to)));
}

/// Runs `scenarios` in parallel on threads named after them; panics (after all ended)
/// if one did, each panic printed under its scenario's name.
fn run_parallel(scenarios: &[(&str, &(dyn Fn() + Sync))]) {
    std::thread::scope(|scope| {
        let handles: Vec<(&str, ScopedJoinHandle<'_, ()>)> = scenarios
            .iter()
            .map(|&(name, scenario)| {
                let handle =
                    std::thread::Builder::new().name(name.into()).spawn_scoped(scope, scenario).unwrap();
                (name, handle)
            })
            .collect();
        let failed: Vec<&str> =
            handles.into_iter().filter_map(|(name, handle)| handle.join().is_err().then_some(name)).collect();
        assert!(failed.is_empty(), "scenarios failed: {failed:?}");
    });
}

/// One client's view of its pairs: a `stun` pairs it with a peer, a `leave` unpairs them.
/// A second `stun` for a pair not left, or a `leave` for a pair not made, is a failure.
#[derive(Default)]
struct Pairs {
    /// peer -> whether this side initiates.
    paired: HashMap<String, bool>,
    stuns: usize,
}

impl Pairs {
    fn apply(&mut self, own: &str, message: &Value) {
        match message[0].as_str() {
            Some("stun") if message[1] == own => {
                let peer = message[2].as_str().unwrap().to_owned();
                let initiator = message[3].as_bool().unwrap();
                assert!(
                    self.paired.insert(peer, initiator).is_none(),
                    "{own}: a second stun pair: {message}"
                );
                self.stuns += 1;
            }
            Some("leave") if message[1] == own && message.as_array().unwrap().len() == 3 => {
                let gone = message[2].as_str().unwrap();
                // docs/CLUSTER.md: one `leave`, then one fresh stun pair, per pair.
                assert!(self.paired.remove(gone).is_some(), "{own}: leave of a peer not paired: {message}");
            }
            _ => panic!("{own}: unexpected {message}"),
        }
    }
}

/// Reads `client`'s messages into `pairs` until it is paired with exactly `peers`.
fn pair_up(client: &mut Client, own: &str, pairs: &mut Pairs, peers: &[&str]) {
    let mut wanted: Vec<&str> = peers.to_vec();
    wanted.sort_unstable();
    let until = Instant::now() + CLUSTER_PATIENCE;
    loop {
        let mut now: Vec<&str> = pairs.paired.keys().map(String::as_str).collect();
        now.sort_unstable();
        if now == wanted {
            return;
        }
        let left = until.saturating_duration_since(Instant::now());
        let Some(message) = recv_within(client, left) else {
            panic!("{own}: paired with {now:?}, waited in vain for {wanted:?}");
        };
        pairs.apply(own, &message);
    }
}

/// Asserts the two sides of a pair agree: exactly one initiates.
fn one_initiator(a: (&str, &Pairs), b: (&str, &Pairs)) {
    let from_a = a.1.paired.get(b.0).unwrap_or_else(|| panic!("{} not paired with {}", a.0, b.0));
    let from_b = b.1.paired.get(a.0).unwrap_or_else(|| panic!("{} not paired with {}", b.0, a.0));
    assert_ne!(from_a, from_b, "{} and {}: both or neither initiate", a.0, b.0);
}

// ---------------------------------------------------------------------------------------
// The protocol across two nodes, on one shared cluster.

#[test]
fn protocol_rules_hold_across_two_nodes() {
    let Some(cluster) = Cluster::start(2, SHARED_FLAGS) else { return };
    let c = &cluster;
    run_parallel(&[
        ("join_order_and_one_initiator", &|| join_order_and_one_initiator(c)),
        ("signals_reach_the_holder_on_the_other_node", &|| signals_reach_the_holder_on_the_other_node(c)),
        ("taken_across_nodes_a_live_holder_keeps_it", &|| taken_across_nodes_a_live_holder_keeps_it(c)),
        ("taken_across_nodes_a_silent_holder_loses_it", &|| taken_across_nodes_a_silent_holder_loses_it(c)),
        ("leave_close_and_empty_rooms", &|| leave_close_and_empty_rooms(c)),
        ("one_winner_per_address_race", &|| one_winner_per_address_race(c)),
        ("simultaneous_joins_pair_exactly_once", &|| simultaneous_joins_pair_exactly_once(c)),
        ("two_thousand_signals_arrive_in_order", &|| two_thousand_signals_arrive_in_order(c)),
        ("health_and_metrics_show_the_cluster", &|| health_and_metrics_show_the_cluster(c)),
    ]);
}

/// Members join one by one, alternating nodes: each join is acknowledged, then its stun
/// pairs come in join order with the joiner initiating; each earlier member gets one stun
/// with `false`.
fn join_order_and_one_initiator(cluster: &Cluster) {
    let mut members: Vec<(Client, String)> = Vec::new();
    for i in 0..5 {
        let mut client = cluster.nodes[i % 2].client();
        let address = join(&mut client, &format!("m{i}"), "order");
        for (_, earlier) in &members {
            assert_eq!(recv_soon(&mut client), stun(&address, earlier, true));
        }
        for (member, own) in &mut members {
            assert_eq!(recv_soon(member), stun(own, &address, false));
        }
        members.push((client, address));
    }
    for (client, _) in &mut members {
        client.expect_silence();
    }
}

/// A signal reaches the holder on the other node byte for byte, and the answer comes back;
/// to another room it is `other-room`, to an address no one holds `unknown-peer`, from an
/// address not held `not-owner`.
fn signals_reach_the_holder_on_the_other_node(cluster: &Cluster) {
    let mut alice = cluster.nodes[0].client();
    let mut bob = cluster.nodes[1].client();
    let mut carol = cluster.nodes[1].client();
    let a = join(&mut alice, "a", "sig");
    let b = join(&mut bob, "b", "sig");
    assert_eq!(recv_soon(&mut bob), stun(&b, &a, true));
    assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));
    let c = join(&mut carol, "c", "sig-other");

    signal(&mut alice, &a, &b, r#"{"sdp" : "v=0",  "n": 1.50}"#);
    assert_eq!(bob.recv_text(), format!(r#"["signal","{b}","{a}",{{"sdp" : "v=0",  "n": 1.50}}]"#));
    signal(&mut bob, &b, &a, r#""answer""#);
    assert_eq!(recv_soon(&mut alice), json!(["signal", a, b, "answer"]));

    signal(&mut alice, &a, &c, "1");
    assert_refused(&recv_soon(&mut alice), "signal", "other-room");
    signal(&mut alice, &a, "sig:nobody", "1");
    assert_refused(&recv_soon(&mut alice), "signal", "unknown-peer");
    signal(&mut alice, &b, &a, "1");
    assert_refused(&recv_soon(&mut alice), "signal", "not-owner");
    bob.expect_silence();
    carol.expect_silence();
}

/// A join of an address held on the other node is `taken`; the holder there gets the
/// probe, answers it, and keeps the address.
fn taken_across_nodes_a_live_holder_keeps_it(cluster: &Cluster) {
    let mut holder = cluster.nodes[0].client();
    let mut peer = cluster.nodes[1].client();
    let h = join(&mut holder, "h", "live");
    let p = join(&mut peer, "p", "live");
    assert_eq!(recv_soon(&mut peer), stun(&p, &h, true));
    assert_eq!(recv_soon(&mut holder), stun(&h, &p, false));
    let holder = holder.spawn_reader();

    let mut usurper = cluster.nodes[1].client();
    assert_refused(&usurper.call(r#"["join","h","live"]"#), "join", "taken");
    holder.wait_for_pings(1);
    // Well past the probe timeout: still the holder's.
    std::thread::sleep(PROBE_TIMEOUT * 2);
    assert_refused(&usurper.call(r#"["join","h","live"]"#), "join", "taken");
    holder.expect_alive_and_quiet();
    peer.expect_no_message();
    let mut holder = holder.stop();
    signal(&mut peer, &p, &h, r#""still yours""#);
    assert_eq!(recv_soon(&mut holder), json!(["signal", h, p, "still yours"]));
    usurper.expect_silence();
}

/// A holder that does not answer the probe from another node's join is dropped: its peers
/// hear `leave`, and the address can be joined on the other node.
fn taken_across_nodes_a_silent_holder_loses_it(cluster: &Cluster) {
    let mut silent = cluster.nodes[0].client();
    let mut peer = cluster.nodes[1].client();
    let h = join(&mut silent, "h", "silent");
    let p = join(&mut peer, "p", "silent");
    assert_eq!(recv_soon(&mut peer), stun(&p, &h, true));
    assert_eq!(recv_soon(&mut silent), stun(&h, &p, false));
    // From here on `silent` reads nothing, so it never answers a ping.

    let mut newcomer = cluster.nodes[1].client();
    assert_refused(&newcomer.call(r#"["join","h","silent"]"#), "join", "taken");
    assert_eq!(recv_soon(&mut peer), peer_left(&p, &h));
    let start = Instant::now();
    loop {
        let reply = newcomer.call(r#"["join","h","silent"]"#);
        if reply == json!(["join", h]) {
            break;
        }
        assert_refused(&reply, "join", "taken");
        assert!(start.elapsed() < CLUSTER_PATIENCE, "the address was not freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(recv_soon(&mut newcomer), stun(&h, &p, true));
    assert_eq!(recv_soon(&mut peer), stun(&p, &h, false));
    assert!(closed_within(&mut silent, CLUSTER_PATIENCE), "the silent holder was not dropped");
}

/// `leave` and closing tell the members on the other node; an emptied room is gone, in
/// Redis too, and a later joiner of the same name sees no one.
fn leave_close_and_empty_rooms(cluster: &Cluster) {
    let mut alice = cluster.nodes[0].client();
    let mut bob = cluster.nodes[1].client();
    let mut carol = cluster.nodes[1].client();
    let a = join(&mut alice, "a", "gone");
    let b = join(&mut bob, "b", "gone");
    assert_eq!(recv_soon(&mut bob), stun(&b, &a, true));
    assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));
    let c = join(&mut carol, "c", "gone");
    expect_set(&mut carol, &[stun(&c, &a, true), stun(&c, &b, true)]);
    assert_eq!(recv_soon(&mut alice), stun(&a, &c, false));
    assert_eq!(recv_soon(&mut bob), stun(&b, &c, false));

    // leave on node 0: both members on node 1 hear it.
    assert_eq!(alice.call(&json!(["leave", a]).to_string()), json!(["leave", a]));
    assert_eq!(recv_soon(&mut bob), peer_left(&b, &a));
    assert_eq!(recv_soon(&mut carol), peer_left(&c, &a));
    // alice, now in no room, joins it again: paired afresh with both.
    let a = join(&mut alice, "a", "gone");
    expect_set(&mut alice, &[stun(&a, &b, true), stun(&a, &c, true)]);
    assert_eq!(recv_soon(&mut bob), stun(&b, &a, false));
    assert_eq!(recv_soon(&mut carol), stun(&c, &a, false));

    // A close on node 1: the member on node 0 hears it (and the one on node 1 too).
    carol.ws.close(None).unwrap();
    drop(carol);
    assert_eq!(recv_soon(&mut alice), peer_left(&a, &c));
    assert_eq!(recv_soon(&mut bob), peer_left(&b, &c));
    assert_eq!(bob.call(&json!(["leave", b]).to_string()), json!(["leave", b]));
    assert_eq!(recv_soon(&mut alice), peer_left(&a, &b));
    assert_eq!(alice.call(&json!(["leave", a]).to_string()), json!(["leave", a]));

    // Empty: gone from Redis too (the leave reaches it just after the reply), and a later
    // joiner on either node is alone.
    wait_for_redis(&cluster.redis, &["EXISTS", "diva:room:gone"], "0");
    for address in [&a, &b, &c] {
        wait_for_redis(&cluster.redis, &["HEXISTS", "diva:owner", address], "0");
    }
    let mut dave = cluster.nodes[1].client();
    let d = join(&mut dave, "d", "gone");
    assert_eq!(recv_within(&mut dave, QUIET), None);
    let mut erin = cluster.nodes[0].client();
    let e = join(&mut erin, "e", "gone");
    assert_eq!(recv_soon(&mut erin), stun(&e, &d, true));
    assert_eq!(recv_soon(&mut dave), stun(&d, &e, false));
    alice.expect_silence();
    bob.expect_silence();
}

/// Two clients on two nodes join one address at the same moment, many times: exactly one
/// wins, the other gets `taken`, and Redis names the winner's node.
fn one_winner_per_address_race(cluster: &Cluster) {
    let node_ids: Vec<String> =
        cluster.nodes.iter().map(|n| n.health()["cluster"]["node"].as_str().unwrap().to_owned()).collect();
    let mut wins = [0; 2];
    for round in 0..40 {
        let mut clients = [cluster.nodes[0].client(), cluster.nodes[1].client()];
        let join = format!(r#"["join","x","race{round}"]"#);
        // Both joins leave before either answer is read; who goes first alternates.
        let first = round % 2;
        for i in [first, 1 - first] {
            clients[i].ws.write(Message::text(join.clone())).unwrap();
        }
        for i in [first, 1 - first] {
            clients[i].ws.flush().unwrap();
        }
        let replies = [recv_soon(&mut clients[0]), recv_soon(&mut clients[1])];
        let address = format!("race{round}:x");
        let winners: Vec<usize> = (0..2).filter(|&i| replies[i] == json!(["join", address])).collect();
        assert_eq!(winners.len(), 1, "round {round}: {replies:?}");
        let winner = winners[0];
        assert_refused(&replies[1 - winner], "join", "taken");
        assert_eq!(cluster.redis.cli(&["HGET", "diva:owner", &address]), node_ids[winner], "round {round}");
        wins[winner] += 1;
    }
    eprintln!("address race: node 0 won {} rounds, node 1 {}", wins[0], wins[1]);
}

/// Six members join one room at once, three on each node, in several rooms: every pair
/// gets exactly one stun pair with exactly one initiator, the later joiner in Redis's
/// order, and each member's stuns come in that order.
fn simultaneous_joins_pair_exactly_once(cluster: &Cluster) {
    for round in 0..5 {
        let room = format!("crowd{round}");
        let mut clients: Vec<Client> = (0..6).map(|i| cluster.nodes[i % 2].client()).collect();
        let addresses: Vec<String> = (0..6).map(|i| format!("{room}:m{i}")).collect();
        for (i, client) in clients.iter_mut().enumerate() {
            client.ws.write(Message::text(json!(["join", format!("m{i}"), room]).to_string())).unwrap();
        }
        for client in &mut clients {
            client.ws.flush().unwrap();
        }
        let mut seen: Vec<Vec<Value>> = Vec::new();
        for (client, own) in clients.iter_mut().zip(&addresses) {
            assert_eq!(recv_soon(client), json!(["join", own]));
            seen.push((0..5).map(|_| recv_soon(client)).collect());
        }
        let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
        for (extra, own) in leftovers(&mut refs).into_iter().zip(&addresses) {
            assert!(extra.is_empty(), "{own}: more than one stun per pair: {extra:?}");
        }
        let order: Vec<String> = cluster
            .redis
            .cli(&["LRANGE", &format!("diva:room:{room}"), "0", "-1"])
            .lines()
            .map(str::to_owned)
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, addresses, "Redis's room list");
        for (own, messages) in addresses.iter().zip(&seen) {
            // The joiner initiates with each earlier member, in join order; then each later
            // member pairs with it as it comes, in join order.
            let at = order.iter().position(|a| a == own).unwrap();
            let mut expected: Vec<Value> = order[..at].iter().map(|m| stun(own, m, true)).collect();
            expected.extend(order[at + 1..].iter().map(|m| stun(own, m, false)));
            assert_eq!(*messages, expected, "{own} in {room}, join order {order:?}");
        }
    }
}

/// 2000 signals from a member on node 0 to one on node 1 arrive all, in the order sent.
fn two_thousand_signals_arrive_in_order(cluster: &Cluster) {
    const COUNT: usize = 2000;
    let mut alice = cluster.nodes[0].client();
    let mut bob = cluster.nodes[1].client();
    let a = join(&mut alice, "a", "order2000");
    let b = join(&mut bob, "b", "order2000");
    assert_eq!(recv_soon(&mut bob), stun(&b, &a, true));
    assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));
    let out_before = cluster.nodes[0].metric("diva_signal_cluster_messages_out_total");
    let in_before = cluster.nodes[1].metric("diva_signal_cluster_messages_in_total");

    let writer = std::thread::spawn(move || {
        for i in 0..COUNT {
            alice.ws.write(Message::text(format!(r#"["signal","{a}","{b}",{i}]"#))).unwrap();
            if i % 100 == 99 {
                alice.ws.flush().unwrap();
            }
        }
        alice.ws.flush().unwrap();
        alice
    });
    for i in 0..COUNT {
        let message = recv_soon(&mut bob);
        assert_eq!(message[3], i, "signal {i} of {COUNT}: got {message}");
    }
    let mut alice = writer.join().unwrap();
    alice.expect_silence();
    bob.expect_silence();
    assert!(cluster.nodes[0].metric("diva_signal_cluster_messages_out_total") >= out_before + COUNT as f64);
    assert!(cluster.nodes[1].metric("diva_signal_cluster_messages_in_total") >= in_before + COUNT as f64);
}

/// `/health` has the cluster object; `/metrics` the cluster families.
fn health_and_metrics_show_the_cluster(cluster: &Cluster) {
    let mut ids = Vec::new();
    for node in &cluster.nodes {
        let health = node.health();
        let figures = &health["cluster"];
        assert_eq!(figures["redis"], "up", "{health}");
        assert_eq!(figures["live_nodes"], 2, "{health}");
        let id = figures["node"].as_str().unwrap().to_owned();
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{health}");
        ids.push(id);

        let metrics = node.metrics();
        for family in [
            "diva_signal_redis_up",
            "diva_signal_cluster_live_nodes",
            "diva_signal_cluster_messages_out_total",
            "diva_signal_cluster_messages_in_total",
            "diva_signal_redis_reconnects_total",
            "diva_signal_redis_round_trip_seconds",
        ] {
            assert!(metrics.contains(&format!("# TYPE {family} ")), "no {family} in\n{metrics}");
        }
        assert_eq!(node.metric("diva_signal_redis_up"), 1.0);
        assert_eq!(node.metric("diva_signal_cluster_live_nodes"), 2.0);
        assert_eq!(node.metric("diva_signal_redis_reconnects_total"), 0.0);
        assert!(node.metric("diva_signal_redis_round_trip_seconds") >= 0.0);
    }
    assert_ne!(ids[0], ids[1], "two nodes, one id");
    // Each node is registered in Redis under its id.
    let nodes = cluster.redis.cli(&["ZRANGE", "diva:nodes", "0", "-1"]);
    for id in &ids {
        assert!(nodes.lines().any(|line| line == id), "{id} not in diva:nodes: {nodes}");
    }
}

// ---------------------------------------------------------------------------------------
// Each on a cluster of its own.

#[test]
fn room_member_limit_counts_members_on_all_nodes() {
    let Some(cluster) = Cluster::start(2, &["--max-room-members", "3"]) else { return };
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let mut members = [n0.client(), n1.client(), n0.client()];
    for (i, member) in members.iter_mut().enumerate() {
        join(member, &format!("m{i}"), "full");
    }
    let mut late = [n1.client(), n0.client()];
    for client in &mut late {
        assert_refused(&client.call(r#"["join","late","full"]"#), "join", "limit");
    }
    // Another room is not affected.
    join(&mut late[0], "x", "roomy");
    // One leaves on node 1: a place is free, on either node.
    expect_set(&mut members[1], &[stun("full:m1", "full:m0", true), stun("full:m1", "full:m2", false)]);
    assert_eq!(members[1].call(r#"["leave","full:m1"]"#), json!(["leave", "full:m1"]));
    // The registry has it once the members on node 0 hear it (the leave's reply comes first).
    for i in [0, 2] {
        let messages: Vec<Value> = (0..3).map(|_| recv_soon(&mut members[i])).collect();
        assert_eq!(messages.last(), Some(&peer_left(&format!("full:m{i}"), "full:m1")), "{messages:?}");
    }
    join(&mut late[1], "late", "full");
    assert_refused(&late[0].call(r#"["join","later","full"]"#), "join", "limit");
}

#[test]
fn a_node_shut_down_tells_the_other_node_at_once() {
    // A node timeout well beyond the wait below: the `leave` can only come from the
    // shutdown, not from the lease running out (its renewals, a quarter of it apart, also
    // bring the live count that the start waits for).
    let Some(cluster) = Cluster::start(2, &["--node-timeout", "20"]) else { return };
    let mut alice = cluster.nodes[0].client();
    let mut bob = cluster.nodes[1].client();
    let a = join(&mut alice, "a", "term");
    let b = join(&mut bob, "b", "term");
    assert_eq!(recv_soon(&mut bob), stun(&b, &a, true));
    assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));

    cluster.nodes[1].signal(libc::SIGTERM);
    assert_eq!(recv_within(&mut alice, Duration::from_secs(5)), Some(peer_left(&a, &b)));
    assert_eq!(cluster.nodes[1].wait_exit().code(), Some(0));
    wait_for_redis(&cluster.redis, &["ZCARD", "diva:nodes"], "1");
    // Its address is free: joined again on the node that is left.
    let mut again = cluster.nodes[0].client();
    assert_eq!(join(&mut again, "b", "term"), b);
    assert_eq!(recv_soon(&mut again), stun(&b, &a, true));
    assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));
}

#[test]
fn a_node_killed_is_declared_dead_and_its_addresses_freed() {
    let Some(cluster) = Cluster::start(2, &[]) else { return };
    let mut alice = cluster.nodes[0].client();
    let mut bob = cluster.nodes[1].client();
    let mut carol = cluster.nodes[0].client();
    let mut dave = cluster.nodes[1].client();
    let a = join(&mut alice, "a", "dead");
    let b = join(&mut bob, "b", "dead");
    assert_eq!(recv_soon(&mut bob), stun(&b, &a, true));
    assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));
    let d = join(&mut dave, "d", "dead2");
    let c = join(&mut carol, "c", "dead2");
    assert_eq!(recv_soon(&mut carol), stun(&c, &d, true));
    assert_eq!(recv_soon(&mut dave), stun(&d, &c, false));

    cluster.nodes[1].signal(libc::SIGKILL);
    cluster.nodes[1].wait_exit();
    let killed = Instant::now();
    // Within the node timeout plus a quarter of it, plus slack for a loaded machine.
    let bound = Duration::from_secs(NODE_TIMEOUT_SECS) * 5 / 4 + Duration::from_secs(5);
    assert_eq!(recv_within(&mut alice, bound), Some(peer_left(&a, &b)));
    assert_eq!(recv_within(&mut carol, bound), Some(peer_left(&c, &d)));
    eprintln!("node killed: its members' leave came after {:?}", killed.elapsed());
    cluster.nodes[0].wait_for_cluster(1);
    // Both addresses can be joined again.
    let mut bob2 = cluster.nodes[0].client();
    assert_eq!(join(&mut bob2, "b", "dead"), b);
    assert_eq!(recv_soon(&mut bob2), stun(&b, &a, true));
    assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));
    let mut dave2 = cluster.nodes[0].client();
    assert_eq!(join(&mut dave2, "d", "dead2"), d);
    assert_eq!(recv_soon(&mut dave2), stun(&d, &c, true));
    assert_eq!(recv_soon(&mut carol), stun(&c, &d, false));
    wait_for_redis(&cluster.redis, &["ZCARD", "diva:nodes"], "1");
}

#[test]
fn redis_killed_then_restarted_empty_rooms_whole_again() {
    let Some(mut cluster) = Cluster::start(2, &[]) else { return };
    let mut alice = cluster.nodes[0].client();
    let mut bob = cluster.nodes[0].client();
    let mut carol = cluster.nodes[1].client();
    let a = join(&mut alice, "a", "w");
    let b = join(&mut bob, "b", "w");
    let c = join(&mut carol, "c", "w");
    let mut pairs = [Pairs::default(), Pairs::default(), Pairs::default()];
    pair_up(&mut alice, &a, &mut pairs[0], &[&b, &c]);
    pair_up(&mut bob, &b, &mut pairs[1], &[&a, &c]);
    pair_up(&mut carol, &c, &mut pairs[2], &[&a, &b]);

    cluster.redis.kill();
    for node in &cluster.nodes {
        node.wait_for_health("Redis down", |h| h["cluster"]["redis"] == "down");
    }
    // The node keeps relaying among its own members.
    signal(&mut alice, &a, &b, r#""local""#);
    assert_eq!(recv_soon(&mut bob), json!(["signal", b, a, "local"]));
    assert_eq!(bob.call(r#"["ping"]"#), json!(["pong"]));
    // Not to the member elsewhere, and no joins.
    signal(&mut alice, &a, &c, r#""far""#);
    assert_refused(&recv_soon(&mut alice), "signal", "cluster-unavailable");
    let mut erin = cluster.nodes[0].client();
    assert_refused(&erin.call(r#"["join","e","w"]"#), "join", "cluster-unavailable");
    carol.expect_silence();

    // Redis back, empty, on the same port. A member joins on node 1 as soon as it can,
    // maybe before node 0 has registered again.
    cluster.redis.restart();
    cluster.nodes[1].wait_for_health("Redis up", |h| h["cluster"]["redis"] == "up");
    let mut dave = cluster.nodes[1].client();
    let d = join_when_available(&mut dave, "d", "w");
    cluster.wait_whole();
    let mut dave_pairs = Pairs::default();
    pair_up(&mut dave, &d, &mut dave_pairs, &[&a, &b, &c]);
    pair_up(&mut alice, &a, &mut pairs[0], &[&b, &c, &d]);
    pair_up(&mut bob, &b, &mut pairs[1], &[&a, &c, &d]);
    pair_up(&mut carol, &c, &mut pairs[2], &[&a, &b, &d]);
    // Nothing more: no pair twice.
    let extra = leftovers(&mut [&mut alice, &mut bob, &mut carol]);
    for ((own, p), messages) in [&a, &b, &c].into_iter().zip(pairs.iter_mut()).zip(extra) {
        for message in messages {
            p.apply(own, &message);
        }
        assert_eq!(p.paired.len(), 3, "{own}");
    }
    // The pair within node 0 was not touched: one stun each, ever; the pairs across nodes
    // were redone: two each.
    assert_eq!(pairs[0].stuns, 1 + 2 + 1, "alice: b once, c twice, d once");
    assert_eq!(pairs[1].stuns, 1 + 2 + 1, "bob: a once, c twice, d once");
    assert_eq!(pairs[2].stuns, 2 + 2 + 1, "carol: a, b twice, d once");
    let named = [(&a, &pairs[0]), (&b, &pairs[1]), (&c, &pairs[2]), (&d, &dave_pairs)];
    for (i, x) in named.iter().enumerate() {
        for y in &named[i + 1..] {
            one_initiator((x.0, x.1), (y.0, y.1));
        }
    }
    // Everything works again: a signal across nodes, a fresh join.
    signal(&mut alice, &a, &c, r#""far again""#);
    assert_eq!(recv_soon(&mut carol), json!(["signal", c, a, "far again"]));
    let e = join(&mut erin, "e", "w");
    expect_set(&mut erin, &[stun(&e, &a, true), stun(&e, &b, true), stun(&e, &c, true), stun(&e, &d, true)]);
    assert!(cluster.nodes[0].metric("diva_signal_redis_reconnects_total") >= 1.0);
}

#[test]
fn redis_paused_local_traffic_flows_and_joins_are_answered() {
    let Some(cluster) = Cluster::start(2, &[]) else { return };
    let mut alice = cluster.nodes[0].client();
    let mut bob = cluster.nodes[0].client();
    let mut carol = cluster.nodes[1].client();
    let a = join(&mut alice, "a", "p");
    let b = join(&mut bob, "b", "p");
    let c = join(&mut carol, "c", "p");
    let mut pairs = [Pairs::default(), Pairs::default(), Pairs::default()];
    pair_up(&mut alice, &a, &mut pairs[0], &[&b, &c]);
    pair_up(&mut bob, &b, &mut pairs[1], &[&a, &c]);
    pair_up(&mut carol, &c, &mut pairs[2], &[&a, &b]);

    // Bounded, and well within the pause: what must not wait for Redis does not.
    let local = Duration::from_secs(2);
    let pause = Duration::from_secs(5);
    let mut erin = cluster.nodes[0].client();
    let mut joined_in_pause = false;
    {
        let _paused = Paused::new(&cluster.redis);
        let paused_at = Instant::now();
        for round in 0..5 {
            signal(&mut alice, &a, &b, &round.to_string());
            assert_eq!(
                recv_within(&mut bob, local),
                Some(json!(["signal", b, a, round])),
                "during the pause"
            );
            assert_eq!(alice.call(r#"["ping"]"#), json!(["pong"]));
            std::thread::sleep(Duration::from_millis(100));
        }
        erin.send(r#"["join","e","p"]"#);
        // Answered within half the node timeout (clamped to at least 0.5 s) plus slack.
        let answer = recv_within(&mut erin, Duration::from_secs(3));
        assert!(paused_at.elapsed() < pause, "the checks outlasted the pause");
        let answer = answer.expect("a join during the pause was not answered");
        if answer[0] == "error" {
            assert_refused(&answer, "join", "cluster-unavailable");
        } else {
            // (Only if Redis ran the script just before it stopped.)
            assert_eq!(answer, json!(["join", "p:e"]));
            joined_in_pause = true;
        }
        // Local traffic still flows after that.
        signal(&mut bob, &b, &a, r#""still""#);
        assert_eq!(recv_within(&mut alice, local), Some(json!(["signal", a, b, "still"])));
        std::thread::sleep(pause.saturating_sub(paused_at.elapsed()));
    }
    // Resumed: everything works. The pause outlasted the node timeout, so the pairs
    // across nodes may be redone (leave, then one fresh stun pair).
    cluster.wait_whole();
    let e = if joined_in_pause { "p:e".to_owned() } else { join_when_available(&mut erin, "e", "p") };
    let mut erin_pairs = Pairs::default();
    pair_up(&mut erin, &e, &mut erin_pairs, &[&a, &b, &c]);
    pair_up(&mut alice, &a, &mut pairs[0], &[&b, &c, &e]);
    pair_up(&mut bob, &b, &mut pairs[1], &[&a, &c, &e]);
    pair_up(&mut carol, &c, &mut pairs[2], &[&a, &b, &e]);
    let extra = leftovers(&mut [&mut alice, &mut bob, &mut carol]);
    for ((own, p), messages) in [&a, &b, &c].into_iter().zip(pairs.iter_mut()).zip(extra) {
        for message in messages {
            p.apply(own, &message);
        }
        assert_eq!(p.paired.len(), 3, "{own}");
    }
    let named = [(&a, &pairs[0]), (&b, &pairs[1]), (&c, &pairs[2]), (&e, &erin_pairs)];
    for (i, x) in named.iter().enumerate() {
        for y in &named[i + 1..] {
            one_initiator((x.0, x.1), (y.0, y.1));
        }
    }
    signal(&mut carol, &c, &a, r#""across""#);
    assert_eq!(recv_soon(&mut alice), json!(["signal", a, c, "across"]));
    signal(&mut alice, &a, &c, r#""back""#);
    assert_eq!(recv_soon(&mut carol), json!(["signal", c, a, "back"]));
}

#[test]
fn redis_password_right_joins_the_cluster_wrong_does_not() {
    const PASSWORD: &str = "s3cret-pw";
    let Some(redis) = RedisServer::start_with_password(PASSWORD) else { return };
    let right = Node::start(&redis.url(), &[]);
    let wrong_url = redis.url().replace(PASSWORD, "not-the-pw");
    let wrong = Node::start(&wrong_url, &[]);
    right.wait_for_cluster(1);
    let mut client = right.client();
    join(&mut client, "a", "auth");

    // The wrong one keeps trying, is never up, and says why without the password.
    let start = Instant::now();
    let mut refusal = None;
    while refusal.is_none() {
        assert!(start.elapsed() < CLUSTER_PATIENCE, "no log line about the refused AUTH");
        refusal = wrong.log_lines().into_iter().find(|line| line.contains("AUTH"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let refusal = refusal.unwrap();
    assert!(!refusal.contains("not-the-pw"), "the password was logged: {refusal}");
    let health = wrong.health();
    assert_eq!(health["cluster"]["redis"], "down", "{health}");
    assert_eq!(health["cluster"]["live_nodes"], 0, "{health}");
    assert_eq!(wrong.metric("diva_signal_redis_up"), 0.0);
    let mut client = wrong.client();
    assert_refused(&client.call(r#"["join","b","auth"]"#), "join", "cluster-unavailable");
    assert_eq!(redis.cli(&["ZCARD", "diva:nodes"]), "1");
    right.wait_for_cluster(1);
}

#[test]
fn bad_cluster_flags_refuse_to_start_with_one_clear_line() {
    for (args, flag) in [
        (&["--redis-url", "nonsense"][..], "--redis-url"),
        (&["--redis-url", "rediss://127.0.0.1:6379", "--redis-cert", "/nonexistent"][..], "--redis-key"),
        (&["--redis-url", "redis://:hunter2@127.0.0.1:notaport"][..], "--redis-url"),
        (&["--node-timeout", "-1"][..], "--node-timeout"),
        (&["--node-timeout", "soon"][..], "--node-timeout"),
    ] {
        let output = Command::new(SERVER_BIN)
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(args)
            .env_remove("PORT")
            .env_remove("REDIS_URL")
            .env_remove("NODE_TIMEOUT")
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("diva-signal: "), "{stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "the password was shown: {stderr}");
    }
    let output = Command::new(SERVER_BIN)
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .env_remove("PORT")
        .env("REDIS_URL", "nonsense")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Redis over TLS (`rediss://`, `--redis-ca`, `--redis-cert`, `--redis-key`).

#[cfg(feature = "tls")]
mod over_tls {
    use std::io::Read;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;

    use super::*;
    use common::{RedisTls, TlsOptions, tls_flags};

    /// Two nodes, Redis over TLS asking for client certificates (one node given them by
    /// flags, the other by REDIS_CA, REDIS_CERT and REDIS_KEY): a room across the nodes
    /// works as over plain TCP, and again after Redis restarted.
    #[test]
    fn two_nodes_over_rediss_share_a_room() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(true)) else { return };
        let tls = redis.tls();
        let by_flags = Node::start(&redis.url(), &flag_refs(&tls_flags(tls)));
        let env = [
            ("REDIS_CA", path(&tls.ca)),
            ("REDIS_CERT", path(&tls.client_cert)),
            ("REDIS_KEY", path(&tls.client_key)),
        ];
        let by_env = Node::start_with_env(&redis.url(), &[], &env);
        let mut cluster = Cluster { nodes: vec![by_flags, by_env], redis };
        cluster.wait_whole();
        for node in &cluster.nodes {
            let health = node.health();
            assert_eq!(health["cluster"]["redis"], "up", "{health}");
            assert_eq!(health["cluster"]["live_nodes"], 2, "{health}");
            assert_eq!(node.metric("diva_signal_redis_up"), 1.0);
        }
        assert_eq!(cluster.redis.cli(&["ZCARD", "diva:nodes"]), "2");
        let mut alice = cluster.nodes[0].client();
        let mut bob = cluster.nodes[1].client();
        let a = join(&mut alice, "a", "tls");
        let b = join(&mut bob, "b", "tls");
        assert_eq!(recv_soon(&mut bob), stun(&b, &a, true));
        assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));
        signal(&mut alice, &a, &b, r#"{"sdp":"offer"}"#);
        assert_eq!(recv_soon(&mut bob), json!(["signal", b, a, {"sdp": "offer"}]));
        signal(&mut bob, &b, &a, r#"{"sdp":"answer"}"#);
        assert_eq!(recv_soon(&mut alice), json!(["signal", a, b, {"sdp": "answer"}]));

        // Redis restarted (empty) over TLS: the nodes reconnect with their certificate and
        // the pair across them is redone (one leave, one fresh stun pair).
        cluster.redis.restart();
        cluster.wait_whole();
        let mut pairs = [Pairs::default(), Pairs::default()];
        pairs[0].paired.insert(b.clone(), false);
        pairs[1].paired.insert(a.clone(), true);
        let until = Instant::now() + CLUSTER_PATIENCE;
        while pairs[0].stuns == 0 || pairs[1].stuns == 0 {
            assert!(Instant::now() < until, "the pair across the nodes was not redone");
            let [pa, pb] = &mut pairs;
            for (client, own, p) in [(&mut alice, &a, pa), (&mut bob, &b, pb)] {
                if let Some(message) = recv_within(client, Duration::from_millis(100)) {
                    p.apply(own, &message);
                }
            }
        }
        signal(&mut alice, &a, &b, r#""again""#);
        assert_eq!(recv_soon(&mut bob), json!(["signal", b, a, "again"]));
        assert!(cluster.nodes[0].metric("diva_signal_redis_reconnects_total") >= 1.0);
    }

    /// A node whose `--redis-ca` did not sign Redis's certificate, and one without the
    /// client certificate Redis asks for: both run, serve, are not in the cluster, and
    /// log why; a node with the right files next to them is.
    #[test]
    fn a_node_that_tls_keeps_from_redis_stays_up_and_says_why() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(true)) else { return };
        let tls = redis.tls();
        let good = Node::start(&redis.url(), &flag_refs(&tls_flags(tls)));
        // With a password in the URL: it is not shown in the log.
        let wrong_ca = Node::start(
            &format!("rediss://:hunter2@127.0.0.1:{}", redis.port()),
            &[
                "--redis-ca",
                path(&tls.other_ca),
                "--redis-cert",
                path(&tls.client_cert),
                "--redis-key",
                path(&tls.client_key),
            ],
        );
        let no_cert = Node::start(&redis.url(), &["--redis-ca", path(&tls.ca)]);
        good.wait_for_cluster(1);

        let wrong_ca_why = wait_for_log(&wrong_ca, "redis: cannot connect to rediss://");
        assert!(wrong_ca_why.contains("certificate"), "{wrong_ca_why}");
        assert!(wrong_ca_why.contains("UnknownIssuer"), "{wrong_ca_why}");
        assert!(wrong_ca_why.contains("rediss://:***@127.0.0.1:"), "{wrong_ca_why}");
        assert!(!wrong_ca_why.contains("hunter2"), "the password was logged: {wrong_ca_why}");
        let no_cert_why = wait_for_log(&no_cert, "redis: cannot connect to rediss://");
        eprintln!("no client certificate: {no_cert_why}");
        for node in [&wrong_ca, &no_cert] {
            let health = node.health();
            assert_eq!(health["cluster"]["redis"], "down", "{health}");
            assert_eq!(health["cluster"]["live_nodes"], 0, "{health}");
            assert_eq!(node.metric("diva_signal_redis_up"), 0.0);
            let mut client = node.client();
            assert_refused(&client.call(r#"["join","x","tls-down"]"#), "join", "cluster-unavailable");
            assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]));
        }
        // Still trying, with backoff, and still running.
        std::thread::sleep(Duration::from_millis(500));
        for node in [&wrong_ca, &no_cert] {
            assert_eq!(node.health()["cluster"]["redis"], "down");
        }
        assert_eq!(redis.cli(&["ZCARD", "diva:nodes"]), "1");
        let mut client = good.client();
        join(&mut client, "g", "tls-up");
    }

    /// SIGTERM: the node gives up its addresses in Redis before it exits, over TLS too
    /// (what rustls holds is written out before the socket is closed), so the member on
    /// the other node hears the leave at once, not after the node timeout (10 s: its lease
    /// runs out 7.5 s after the SIGTERM at the earliest).
    #[test]
    fn a_node_shut_down_over_tls_tells_the_other_node_at_once() {
        let Some(cluster) = Cluster::start_tls(2, &["--node-timeout", "10"], TlsOptions::new(true)) else {
            return;
        };
        let mut alice = cluster.nodes[0].client();
        let mut bob = cluster.nodes[1].client();
        let a = join(&mut alice, "a", "tls-term");
        let b = join(&mut bob, "b", "tls-term");
        assert_eq!(recv_soon(&mut bob), stun(&b, &a, true));
        assert_eq!(recv_soon(&mut alice), stun(&a, &b, false));
        cluster.nodes[1].signal(libc::SIGTERM);
        assert_eq!(recv_within(&mut alice, Duration::from_secs(5)), Some(peer_left(&a, &b)));
        assert_eq!(cluster.nodes[1].wait_exit().code(), Some(0));
        wait_for_redis(&cluster.redis, &["ZCARD", "diva:nodes"], "1");
        wait_for_redis(&cluster.redis, &["HEXISTS", "diva:owner", &b], "0");
    }

    /// SIGHUP reads the `rediss://` files again: the next connection uses them. A CA file
    /// that does not load keeps what was loaded before, and the node runs on.
    #[test]
    fn sighup_reads_the_rediss_files_again() {
        let Some(mut redis) = RedisServer::start_tls(TlsOptions::new(true)) else { return };
        let tls = redis.tls().clone();
        let dir = temp_dir("reload");
        let ca = dir.join("ca.pem");
        std::fs::copy(&tls.other_ca, &ca).unwrap();
        let node = Node::start(
            &redis.url(),
            &[
                "--redis-ca",
                path(&ca),
                "--redis-cert",
                path(&tls.client_cert),
                "--redis-key",
                path(&tls.client_key),
            ],
        );
        let why = wait_for_log(&node, "redis: cannot connect to rediss://");
        assert!(why.contains("UnknownIssuer"), "{why}");

        // Not a CA file: the reload fails, the node keeps the old CA and runs on.
        std::fs::write(&ca, "not a PEM file\n").unwrap();
        node.signal(libc::SIGHUP);
        let failed = wait_for_log(&node, "rediss:// reload failed");
        assert!(failed.contains(path(&ca)), "{failed}");
        assert_eq!(node.health()["cluster"]["redis"], "down");

        // The right CA: the next attempt is up.
        std::fs::copy(&tls.ca, &ca).unwrap();
        node.signal(libc::SIGHUP);
        wait_for_log(&node, "reloaded the rediss://");
        node.wait_for_cluster(1);
        let mut client = node.client();
        join(&mut client, "a", "reloaded");

        // A CA that does not fit is read again while the link is up: the link stays up,
        // and only its next connection (after Redis restarts) fails.
        std::fs::copy(&tls.other_ca, &ca).unwrap();
        node.signal(libc::SIGHUP);
        wait_for_log(&node, "reloaded the rediss://");
        assert_eq!(node.health()["cluster"]["redis"], "up");
        assert_eq!(client.call(r#"["ping"]"#), json!(["pong"]));
        let mut other = node.client();
        join(&mut other, "b", "reloaded");
        redis.restart();
        let why = wait_for_log(&node, "redis: cannot connect to rediss://");
        assert!(why.contains("UnknownIssuer"), "{why}");
        node.wait_for_health("Redis down", |h| h["cluster"]["redis"] == "down");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without `--redis-ca`, the system's CA certificates: `SSL_CERT_FILE` first.
    #[test]
    fn without_redis_ca_the_system_trust_is_used() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(false)) else { return };
        let tls = redis.tls();
        let trusted = Node::start_with_env(&redis.url(), &[], &[("SSL_CERT_FILE", path(&tls.ca))]);
        trusted.wait_for_cluster(1);
        // The system's own bundle (or whatever SSL_CERT_FILE names) knows no test CA.
        let untrusted = Node::start_with_env(&redis.url(), &[], &[("SSL_CERT_FILE", path(&tls.other_ca))]);
        let why = wait_for_log(&untrusted, "redis: cannot connect to rediss://");
        assert!(why.contains("certificate"), "{why}");
        assert_eq!(untrusted.health()["cluster"]["redis"], "down");
    }

    #[test]
    fn bad_rediss_flags_refuse_to_start_with_one_line() {
        let dir = temp_dir("flags");
        let tls = RedisTls::generate(&dir, &TlsOptions::new(true));
        let missing = dir.join("missing.pem");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a PEM file\n").unwrap();
        let rediss = "rediss://:hunter2@127.0.0.1:6380";
        let (ca, cert, key) = (path(&tls.ca), path(&tls.client_cert), path(&tls.client_key));
        type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (vec!["--redis-url", rediss, "--redis-cert", cert], vec![], vec!["--redis-cert", "--redis-key"]),
            (vec!["--redis-url", rediss, "--redis-key", key], vec![], vec!["--redis-key", "--redis-cert"]),
            (vec!["--redis-url", rediss], vec![("REDIS_CERT", cert)], vec!["REDIS_KEY"]),
            (
                vec!["--redis-url", "redis://127.0.0.1:6379", "--redis-ca", ca],
                vec![],
                vec!["--redis-ca", "rediss://"],
            ),
            (vec!["--redis-ca", ca], vec![], vec!["--redis-ca", "rediss://"]),
            (
                vec!["--redis-url", "redis://127.0.0.1:6379", "--redis-cert", cert, "--redis-key", key],
                vec![],
                vec!["rediss://"],
            ),
            (vec![], vec![("REDIS_URL", "redis://127.0.0.1"), ("REDIS_CA", ca)], vec!["rediss://"]),
            (vec!["--redis-url", rediss, "--redis-ca", path(&missing)], vec![], vec!["CA", path(&missing)]),
            (vec!["--redis-url", rediss, "--redis-ca", path(&dir)], vec![], vec!["CA", path(&dir)]),
            (vec!["--redis-url", rediss, "--redis-ca", path(&garbage)], vec![], vec!["CA", path(&garbage)]),
            (vec!["--redis-url", rediss, "--redis-ca", path(&tls.client_key)], vec![], vec!["CA"]),
            (
                vec![
                    "--redis-url",
                    rediss,
                    "--redis-ca",
                    ca,
                    "--redis-cert",
                    path(&missing),
                    "--redis-key",
                    key,
                ],
                vec![],
                vec!["certificate", path(&missing)],
            ),
            (
                vec![
                    "--redis-url",
                    rediss,
                    "--redis-ca",
                    ca,
                    "--redis-cert",
                    path(&garbage),
                    "--redis-key",
                    key,
                ],
                vec![],
                vec![path(&garbage)],
            ),
            (
                vec![
                    "--redis-url",
                    rediss,
                    "--redis-ca",
                    ca,
                    "--redis-cert",
                    cert,
                    "--redis-key",
                    path(&garbage),
                ],
                vec![],
                vec!["key", path(&garbage)],
            ),
            (
                vec!["--redis-url", rediss, "--redis-cert", cert, "--redis-key", path(&tls.stranger_key)],
                vec![("SSL_CERT_FILE", ca)],
                vec!["do not go together"],
            ),
            // No --redis-ca: the system's, here a file that is not there.
            (vec!["--redis-url", rediss], vec![("SSL_CERT_FILE", path(&missing))], vec![path(&missing)]),
        ];
        for (args, env, expected) in cases {
            let (code, stderr) = run_briefly(&args, &env);
            assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?} {env:?}: {stderr}");
            assert!(stderr.starts_with("diva-signal: "), "{args:?} {env:?}: {stderr}");
            for part in expected {
                assert!(stderr.contains(part), "{args:?} {env:?}: no {part:?} in {stderr}");
            }
            assert!(!stderr.contains("hunter2"), "the password was shown: {stderr}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn flag_refs(flags: &[String]) -> Vec<&str> {
        flags.iter().map(String::as_str).collect()
    }

    fn temp_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("diva-rediss-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Waits for a log line of `node` that contains `text`, within [`CLUSTER_PATIENCE`].
    fn wait_for_log(node: &Node, text: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = node.log_lines().into_iter().find(|line| line.contains(text)) {
                return line;
            }
            assert!(start.elapsed() < CLUSTER_PATIENCE, "no log line with {text:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the binary with `args` and `env` (without the caller's Redis and TLS
    /// settings); its exit code and standard error. One that is still running after 10 s
    /// (it started, though it should not have) is killed: the code is then `None`.
    fn run_briefly(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
        let mut command = Command::new(SERVER_BIN);
        command.args(["--bind", "127.0.0.1", "--port", "0"]).args(args);
        for name in
            ["PORT", "REDIS_URL", "REDIS_CA", "REDIS_CERT", "REDIS_KEY", "SSL_CERT_FILE", "NODE_TIMEOUT"]
        {
            command.env_remove(name);
        }
        let mut child = command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (status.and_then(|s| s.code()), stderr)
    }
}
