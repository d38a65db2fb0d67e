//! `redis::RedisLink` against a real redis-server (Debian's, started here on a loopback
//! port; each test says so and passes when it is not installed): the handshake, pipelined
//! replies in order, push messages in socket order with replies, AUTH, SELECT, Redis
//! killed and restarted, Redis paused past the reply timeout, and backoff; and all of
//! that over TLS (`rediss://`, module `over_tls`): trust, names, client certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::time::{Duration, Instant};

use common::RedisServer;
use diva_signal::redis::{LinkConfig, LinkEvent, RedisLink, RedisUrl, SendRefused};
use diva_signal::resp::Value;
use mio::{Events, Poll, Token};

const PATIENCE: Duration = Duration::from_secs(10);
const LINK: Token = Token(7);

/// A mio loop with one link in it, as the server drives one.
struct Driver {
    poll: Poll,
    events: Events,
    link: RedisLink,
    /// Everything the link reported, in order.
    seen: Vec<LinkEvent>,
}

impl Driver {
    fn new(url: &str, config: LinkConfig) -> Driver {
        let url = RedisUrl::parse(url).unwrap();
        Driver {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(64),
            link: RedisLink::new(&url, LINK, config).unwrap(),
            seen: Vec::new(),
        }
    }

    /// One loop round: timers, flush, poll (at most until the link's deadline), events.
    fn round(&mut self) {
        let now = Instant::now();
        let mut out = Vec::new();
        self.link.on_timer(self.poll.registry(), now, &mut out);
        self.link.flush(self.poll.registry(), now);
        let wait = self
            .link
            .next_deadline()
            .map_or(Duration::from_millis(20), |at| at.saturating_duration_since(now));
        self.poll.poll(&mut self.events, Some(wait.min(Duration::from_millis(20)))).unwrap();
        let now = Instant::now();
        for event in self.events.iter() {
            assert_eq!(event.token(), LINK);
            self.link.on_event(self.poll.registry(), event, now, &mut out);
        }
        self.seen.extend(out);
    }

    /// Runs rounds until `done` holds for what was seen since the call, and returns that.
    fn until(&mut self, what: &str, done: impl Fn(&[LinkEvent]) -> bool) -> Vec<LinkEvent> {
        let start = self.seen.len();
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.seen[start..]) {
            assert!(
                Instant::now() < deadline,
                "waited for {what}; saw {:?}; stats {:?}",
                &self.seen[start..],
                self.link.stats()
            );
            self.round();
        }
        self.seen[start..].to_vec()
    }

    /// Runs rounds for `time` and returns what was seen.
    fn run_for(&mut self, time: Duration) -> Vec<LinkEvent> {
        let start = self.seen.len();
        let deadline = Instant::now() + time;
        while Instant::now() < deadline {
            self.round();
        }
        self.seen[start..].to_vec()
    }

    fn up(&mut self) {
        self.until("Up", |seen| seen.contains(&LinkEvent::Up));
    }

    fn send(&mut self, args: &[&str]) {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.link.send(&args, Instant::now()).unwrap();
    }

    /// Sends one command and waits for its reply.
    fn call(&mut self, args: &[&str]) -> Value {
        self.send(args);
        let seen = self.until("a reply", |seen| replies(seen) == 1);
        seen.into_iter().find_map(|e| if let LinkEvent::Reply(v) = e { Some(v) } else { None }).unwrap()
    }
}

fn config() -> LinkConfig {
    LinkConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..LinkConfig::new("diva-test")
    }
}

fn replies(seen: &[LinkEvent]) -> usize {
    seen.iter().filter(|e| matches!(e, LinkEvent::Reply(_))).count()
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

fn message(channel: &str, payload: &str) -> LinkEvent {
    LinkEvent::Push(Value::Push(vec![bulk("message"), bulk(channel), bulk(payload)]))
}

#[test]
fn comes_up_and_answers_pipelined_commands_in_order() {
    let Some(redis) = RedisServer::start() else { return };
    let mut driver = Driver::new(&redis.url(), config());
    assert!(!driver.link.is_up());
    assert_eq!(driver.link.send(&[b"PING"], Instant::now()), Err(SendRefused::Down));
    driver.up();
    assert!(driver.link.stats().server_version.is_some());
    assert!(redis.cli(&["CLIENT", "LIST"]).contains("name=diva-test"), "CLIENT SETNAME was sent");

    // 200 commands in one flush: their replies in the order sent.
    for _ in 0..100 {
        driver.send(&["INCR", "counter"]);
        driver.send(&["GET", "counter"]);
    }
    assert_eq!(driver.link.owed_replies(), 200);
    let seen = driver.until("200 replies", |seen| replies(seen) == 200);
    let expected: Vec<LinkEvent> = (1..=100)
        .flat_map(|n| [LinkEvent::Reply(Value::Integer(n)), LinkEvent::Reply(bulk(&n.to_string()))])
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(driver.link.owed_replies(), 0);
    assert!(driver.link.stats().smoothed_rtt.is_some() && driver.link.stats().last_rtt.is_some());
    assert!(driver.link.stats().up_since.is_some());
    // RESP3 types come through as such.
    assert!(matches!(driver.call(&["HELLO"]), Value::Map(_)));
    assert!(matches!(driver.call(&["NOSUCHCOMMAND"]), Value::Error(e) if e.starts_with("ERR")));
    assert_eq!(driver.call(&["GET", "missing"]), Value::Nil);
}

#[test]
fn pushes_and_replies_arrive_in_socket_order() {
    let Some(redis) = RedisServer::start() else { return };
    let mut setup = config();
    setup.setup = vec![
        vec![b"SUBSCRIBE".to_vec(), b"ch1".to_vec(), b"ch2".to_vec()],
        vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()],
    ];
    let mut subscriber = Driver::new(&redis.url(), setup);
    let seen = subscriber.until("Up", |seen| seen.contains(&LinkEvent::Up));
    // The subscription's confirmations and the setup's reply are the link's own.
    assert_eq!(seen, [LinkEvent::Up]);
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    assert_eq!(redis.cli(&["PUBSUB", "NUMSUB", "ch1", "ch2"]), "ch1\n1\nch2\n1");

    // One connection subscribes and runs commands: a message its own PUBLISH causes comes
    // before that PUBLISH's reply, as Redis writes them.
    subscriber.send(&["PUBLISH", "ch1", "one"]);
    subscriber.send(&["PING"]);
    subscriber.send(&["PUBLISH", "ch2", "two"]);
    let seen = subscriber.until("3 replies", |seen| replies(seen) == 3);
    assert_eq!(
        seen,
        [
            message("ch1", "one"),
            LinkEvent::Reply(Value::Integer(1)),
            LinkEvent::Reply(Value::Simple("PONG".into())),
            message("ch2", "two"),
            LinkEvent::Reply(Value::Integer(1)),
        ]
    );

    // From another link: the subscriber gets them in the order published.
    let mut publisher = Driver::new(&redis.url(), config());
    publisher.up();
    for n in 0..50 {
        publisher.send(&["PUBLISH", if n % 2 == 0 { "ch1" } else { "ch2" }, &n.to_string()]);
    }
    let seen = publisher.until("50 replies", |seen| replies(seen) == 50);
    assert!(seen.iter().all(|e| *e == LinkEvent::Reply(Value::Integer(1))));
    let seen = subscriber.until("50 messages", |seen| seen.len() == 50);
    let expected: Vec<LinkEvent> =
        (0..50).map(|n| message(if n % 2 == 0 { "ch1" } else { "ch2" }, &n.to_string())).collect();
    assert_eq!(seen, expected);
}

#[test]
fn auth_with_the_right_password_and_backoff_with_a_wrong_one() {
    let Some(redis) = RedisServer::start_with_password("s3cret pw") else { return };
    let url = redis.url().replace("s3cret pw", "s3cret%20pw");
    let mut good = Driver::new(&url, config());
    good.up();
    assert_eq!(good.call(&["ACL", "WHOAMI"]), bulk("default"));

    let wrong = format!("redis://:wrong@127.0.0.1:{}", redis.port());
    let mut bad = Driver::new(&wrong, config());
    let seen = bad.run_for(Duration::from_millis(1500));
    assert!(seen.is_empty(), "never up, never down: {seen:?}");
    let stats = bad.link.stats();
    let why = stats.last_error.clone().unwrap();
    assert!(why.contains("WRONGPASS") && !why.contains("wrong"), "{why}");
    // Backing off from 20 ms to 200 ms: a few attempts, not hundreds.
    assert!((3..=40).contains(&stats.failed_attempts), "{} attempts", stats.failed_attempts);

    // Without a password, HELLO is refused as well.
    let mut none = Driver::new(&format!("redis://127.0.0.1:{}", redis.port()), config());
    none.run_for(Duration::from_millis(300));
    assert!(!none.link.is_up());
    assert!(none.link.stats().last_error.clone().unwrap().contains("NOAUTH"), "{:?}", none.link.stats());
}

#[test]
fn select_picks_the_database() {
    let Some(redis) = RedisServer::start() else { return };
    let mut driver = Driver::new(&format!("{}/3", redis.url()), config());
    driver.up();
    assert_eq!(driver.call(&["SET", "k", "in-3"]), Value::Simple("OK".into()));
    assert_eq!(redis.cli(&["-n", "3", "GET", "k"]), "in-3");
    assert_eq!(redis.cli(&["GET", "k"]), "");
}

#[test]
fn a_refused_setup_command_keeps_the_link_down() {
    let Some(redis) = RedisServer::start() else { return };
    let mut setup = config();
    setup.setup = vec![vec![b"FUNCTION".to_vec(), b"LOAD".to_vec(), b"not a library".to_vec()]];
    let mut driver = Driver::new(&redis.url(), setup);
    let seen = driver.run_for(Duration::from_millis(500));
    assert!(seen.is_empty(), "{seen:?}");
    let why = driver.link.stats().last_error.clone().unwrap();
    assert!(why.contains("setup command #1 (FUNCTION) refused"), "{why}");
}

#[test]
fn killed_redis_is_down_with_unanswered_count_and_up_again_after_restart() {
    let Some(mut redis) = RedisServer::start() else { return };
    let mut driver = Driver::new(&redis.url(), config());
    driver.up();
    assert_eq!(driver.call(&["SET", "k", "v"]), Value::Simple("OK".into()));

    // Paused, it takes the commands and answers none; killed, it never will.
    redis.pause();
    for _ in 0..5 {
        driver.send(&["PING"]);
    }
    driver.run_for(Duration::from_millis(100));
    assert_eq!(driver.link.owed_replies(), 5);
    redis.kill();
    let seen = driver.until("Down", |seen| !seen.is_empty());
    let [LinkEvent::Down { unanswered, why }] = &seen[..] else { panic!("{seen:?}") };
    assert_eq!(*unanswered, 5, "{why}");
    assert!(!driver.link.is_up());
    assert_eq!(driver.link.owed_replies(), 0);
    assert_eq!(driver.link.send(&[b"PING"], Instant::now()), Err(SendRefused::Down));

    // Refused while it is gone; back when it is, empty.
    driver.run_for(Duration::from_millis(300));
    assert!(driver.link.stats().failed_attempts >= 1);
    redis.restart();
    driver.up();
    assert_eq!(driver.link.stats().reconnects, 1);
    assert_eq!(driver.call(&["GET", "k"]), Value::Nil);
}

#[test]
fn paused_redis_times_out_and_the_link_comes_back() {
    let Some(redis) = RedisServer::start() else { return };
    let mut driver =
        Driver::new(&redis.url(), LinkConfig { reply_timeout: Duration::from_millis(300), ..config() });
    driver.up();
    redis.pause();
    let sent = Instant::now();
    driver.send(&["PING"]);
    driver.send(&["PING"]);
    let seen = driver.until("Down", |seen| !seen.is_empty());
    let waited = sent.elapsed();
    let [LinkEvent::Down { unanswered: 2, why }] = &seen[..] else { panic!("{seen:?}") };
    assert!(why.contains("no reply"), "{why}");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "{waited:?}");

    // Attempts while paused connect (the kernel accepts) but are not answered: they time out.
    driver.run_for(Duration::from_millis(800));
    assert!(!driver.link.is_up());
    assert!(
        driver.link.stats().last_error.clone().unwrap().contains("handshake"),
        "{:?}",
        driver.link.stats()
    );
    redis.resume();
    driver.up();
    assert_eq!(driver.call(&["PING"]), Value::Simple("PONG".into()));
}

#[test]
fn queued_output_is_bounded() {
    let Some(redis) = RedisServer::start() else { return };
    let mut driver = Driver::new(&redis.url(), LinkConfig { max_queued_bytes: 1000, ..config() });
    driver.up();
    let mut sent = 0;
    while driver.link.send(&[b"SET", b"key", &[b'x'; 100]], Instant::now()).is_ok() {
        sent += 1;
    }
    assert_eq!(driver.link.send(&[b"SET", b"key", &[b'x'; 100]], Instant::now()), Err(SendRefused::Full));
    let each = diva_signal::resp::encoded_len(&[b"SET", b"key", &[b'x'; 100]]);
    assert!(driver.link.queued_bytes() <= 1000 && sent == 1000 / each, "{sent} commands of {each} bytes");
    driver.until("the replies", |seen| replies(seen) == sent);
    assert_eq!(driver.link.queued_bytes(), 0);
}

#[test]
fn nothing_listening_is_retried_with_backoff() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut driver = Driver::new(&format!("redis://127.0.0.1:{port}"), config());
    let seen = driver.run_for(Duration::from_millis(1000));
    assert!(seen.is_empty());
    let stats = driver.link.stats();
    assert!((3..=30).contains(&stats.failed_attempts), "{stats:?}");
    assert!(stats.last_error.clone().unwrap().contains("refused"), "{stats:?}");
}

#[test]
fn subscribing_later_is_confirmed_by_a_push_not_a_reply() {
    let Some(redis) = RedisServer::start() else { return };
    let mut driver = Driver::new(&redis.url(), config());
    driver.up();
    driver.send(&["SUBSCRIBE", "later"]);
    assert_eq!(driver.link.owed_replies(), 0);
    driver.send(&["PUBLISH", "later", "hi"]);
    let seen = driver.until("the reply", |seen| replies(seen) == 1);
    assert_eq!(
        seen,
        [
            LinkEvent::Push(Value::Push(vec![bulk("subscribe"), bulk("later"), Value::Integer(1)])),
            message("later", "hi"),
            LinkEvent::Reply(Value::Integer(1)),
        ]
    );
}

#[test]
fn big_values_and_long_bursts() {
    let Some(redis) = RedisServer::start() else { return };
    let mut setup = config();
    setup.setup = vec![vec![b"SUBSCRIBE".to_vec(), b"burst".to_vec()]];
    let mut subscriber = Driver::new(&redis.url(), setup);
    subscriber.up();
    let mut publisher = Driver::new(&redis.url(), config());
    publisher.up();

    // 5 MiB in one bulk, both ways.
    let big = "x".repeat(5 << 20);
    assert_eq!(publisher.call(&["SET", "big", &big]), Value::Simple("OK".into()));
    assert_eq!(publisher.call(&["GET", "big"]), bulk(&big));

    // 3 MiB of messages, more than one read turn's worth at once.
    let payload = "y".repeat(1000);
    for n in 0..3000 {
        publisher.send(&["PUBLISH", "burst", &format!("{n}:{payload}")]);
        if n % 500 == 499 {
            publisher.until("replies", |seen| replies(seen) == 500);
        }
    }
    let seen = subscriber.until("3000 messages", |seen| seen.len() == 3000);
    for (n, event) in seen.iter().enumerate() {
        assert_eq!(*event, message("burst", &format!("{n}:{payload}")));
    }
    assert!(subscriber.link.stats().pushes >= 3000);
}

/// `rediss://` against redis-server's own TLS (`--tls-port`, certificates from rcgen):
/// the link over rustls on the non-blocking path, and what it refuses.
#[cfg(feature = "tls")]
mod over_tls {
    use std::io::ErrorKind;
    use std::path::Path;

    use super::*;
    use common::{RedisTls, TlsOptions};
    use diva_signal::tls::redis_client_config;

    /// [`config`] trusting `ca`, with the client certificate of `client` when given.
    fn tls_config(ca: &Path, client: Option<(&Path, &Path)>) -> LinkConfig {
        LinkConfig { tls: Some(redis_client_config(Some(ca), client).unwrap()), ..config() }
    }

    /// Trusting the test CA, showing the client certificate it signed.
    fn trusting(tls: &RedisTls) -> LinkConfig {
        tls_config(&tls.ca, Some((&tls.client_cert, &tls.client_key)))
    }

    /// Runs the link for 1.5 s: it never comes up (and so is never down); returns why.
    fn never_up(driver: &mut Driver) -> String {
        let seen = driver.run_for(Duration::from_millis(1500));
        assert!(seen.is_empty(), "never up, never down: {seen:?}");
        assert!(!driver.link.is_up());
        let stats = driver.link.stats();
        // Backing off from 20 ms to 200 ms: a few attempts, not hundreds.
        assert!((2..=40).contains(&stats.failed_attempts), "{stats:?}");
        stats.last_error.clone().unwrap()
    }

    #[test]
    fn rediss_urls_parse_and_show_their_scheme() {
        let url = RedisUrl::parse("rediss://:pw@127.0.0.1:6380/2").unwrap();
        assert!(url.tls);
        assert_eq!(url.to_string(), "rediss://:***@127.0.0.1:6380/2");
        assert!(!RedisUrl::parse("redis://127.0.0.1").unwrap().tls);
    }

    #[test]
    fn a_rediss_url_without_tls_settings_is_refused() {
        let url = RedisUrl::parse("rediss://127.0.0.1:6379").unwrap();
        let err = RedisLink::new(&url, LINK, config()).err().expect("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }

    #[test]
    fn comes_up_over_tls_pipelines_in_order_and_carries_pushes() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(false)) else { return };
        let tls = redis.tls();
        // No client certificate: this Redis does not ask for one.
        let mut driver = Driver::new(&redis.url(), tls_config(&tls.ca, None));
        driver.up();
        assert!(driver.link.stats().server_version.is_some());
        assert!(redis.cli(&["CLIENT", "LIST"]).contains("name=diva-test"), "CLIENT SETNAME was sent");

        // 200 commands in one flush: their replies in the order sent.
        for _ in 0..100 {
            driver.send(&["INCR", "counter"]);
            driver.send(&["GET", "counter"]);
        }
        let seen = driver.until("200 replies", |seen| replies(seen) == 200);
        let expected: Vec<LinkEvent> = (1..=100)
            .flat_map(|n| [LinkEvent::Reply(Value::Integer(n)), LinkEvent::Reply(bulk(&n.to_string()))])
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(driver.link.owed_replies(), 0);

        // Pushes in socket order with replies, over TLS too.
        let mut setup = tls_config(&tls.ca, None);
        setup.setup = vec![vec![b"SUBSCRIBE".to_vec(), b"ch".to_vec()]];
        let mut subscriber = Driver::new(&redis.url(), setup);
        assert_eq!(subscriber.until("Up", |seen| seen.contains(&LinkEvent::Up)), [LinkEvent::Up]);
        subscriber.send(&["PUBLISH", "ch", "own"]);
        subscriber.send(&["PING"]);
        let seen = subscriber.until("2 replies", |seen| replies(seen) == 2);
        assert_eq!(
            seen,
            [
                message("ch", "own"),
                LinkEvent::Reply(Value::Integer(1)),
                LinkEvent::Reply(Value::Simple("PONG".into()))
            ]
        );
        for n in 0..20 {
            driver.send(&["PUBLISH", "ch", &n.to_string()]);
        }
        driver.until("20 replies", |seen| replies(seen) == 20);
        let seen = subscriber.until("20 messages", |seen| seen.len() == 20);
        assert_eq!(seen, (0..20).map(|n| message("ch", &n.to_string())).collect::<Vec<_>>());
    }

    /// Plaintext larger than any TLS record and than the socket buffers, both ways: rustls
    /// holds some of it between reads and writes, and the link must not stall on it.
    #[test]
    fn big_values_and_bursts_over_tls() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(true)) else { return };
        let mut setup = trusting(redis.tls());
        setup.setup = vec![vec![b"SUBSCRIBE".to_vec(), b"burst".to_vec()]];
        let mut subscriber = Driver::new(&redis.url(), setup);
        subscriber.up();
        let mut publisher = Driver::new(&redis.url(), trusting(redis.tls()));
        publisher.up();

        // 5 MiB in one bulk, both ways; then a few odd sizes around a record (16 KiB).
        let big = "x".repeat(5 << 20);
        assert_eq!(publisher.call(&["SET", "big", &big]), Value::Simple("OK".into()));
        assert_eq!(publisher.call(&["GET", "big"]), bulk(&big));
        assert_eq!(redis.cli(&["STRLEN", "big"]), (5 << 20).to_string());
        for size in [16_383, 16_384, 16_385, 65_537, (1 << 20) + 3] {
            let value: String = (0..size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            publisher.send(&["SET", "odd", &value]);
            publisher.send(&["GET", "odd"]);
            let seen = publisher.until("2 replies", |seen| replies(seen) == 2);
            assert_eq!(seen, [LinkEvent::Reply(Value::Simple("OK".into())), LinkEvent::Reply(bulk(&value))]);
        }

        // 3 MiB of messages, more than one read turn's worth at once.
        let payload = "y".repeat(1000);
        for n in 0..3000 {
            publisher.send(&["PUBLISH", "burst", &format!("{n}:{payload}")]);
            if n % 500 == 499 {
                publisher.until("replies", |seen| replies(seen) == 500);
            }
        }
        let seen = subscriber.until("3000 messages", |seen| seen.len() == 3000);
        for (n, event) in seen.iter().enumerate() {
            assert_eq!(*event, message("burst", &format!("{n}:{payload}")));
        }
    }

    /// Setup commands are written while the TLS handshake is still under way: more than
    /// rustls buffers before it (64 KiB) must wait for it and then go out whole.
    #[test]
    fn big_setup_commands_wait_for_the_handshake() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(true)) else { return };
        let value = "s".repeat(300 << 10);
        let mut setup = trusting(redis.tls());
        setup.setup = vec![
            vec![b"SET".to_vec(), b"a".to_vec(), value.as_bytes().to_vec()],
            vec![b"SET".to_vec(), b"b".to_vec(), value.as_bytes().to_vec()],
        ];
        let mut driver = Driver::new(&redis.url(), setup);
        driver.up();
        assert_eq!(driver.call(&["STRLEN", "a"]), Value::Integer(300 << 10));
        assert_eq!(driver.call(&["GET", "b"]), bulk(&value));
        // And again on every reconnect.
        assert_eq!(redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]), "1");
        driver.until("Down", |seen| !seen.is_empty());
        driver.up();
        assert_eq!(driver.call(&["STRLEN", "b"]), Value::Integer(300 << 10));
    }

    #[test]
    fn client_certificate_required_up_with_it_refused_without() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(true)) else { return };
        let tls = redis.tls();
        let mut with = Driver::new(&redis.url(), trusting(tls));
        with.up();
        assert_eq!(with.call(&["PING"]), Value::Simple("PONG".into()));

        let mut without = Driver::new(&redis.url(), tls_config(&tls.ca, None));
        let why = never_up(&mut without);
        eprintln!("without a client certificate: {why}");
        assert!(why.contains("TLS") || why.contains("certificate"), "{why}");

        // One from a CA Redis does not trust will not do either.
        let stranger = tls_config(&tls.ca, Some((&tls.stranger_cert, &tls.stranger_key)));
        let mut stranger = Driver::new(&redis.url(), stranger);
        let why = never_up(&mut stranger);
        eprintln!("with a stranger's client certificate: {why}");
        assert!(why.contains("TLS") || why.contains("certificate"), "{why}");
        // The good link was not disturbed.
        assert_eq!(with.call(&["PING"]), Value::Simple("PONG".into()));
    }

    #[test]
    fn an_unknown_ca_is_refused_and_the_reason_names_the_certificate() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(false)) else { return };
        let tls = redis.tls();
        let mut driver = Driver::new(&redis.url(), tls_config(&tls.other_ca, None));
        let why = never_up(&mut driver);
        eprintln!("unknown CA: {why}");
        assert!(why.contains("certificate"), "{why}");
        assert!(why.contains("UnknownIssuer"), "{why}");
    }

    /// The name checked is the URL's host: an IP address against the IP addresses of the
    /// certificate, a name against its names.
    #[test]
    fn the_server_name_is_the_urls_host() {
        let named = |names: &[&str]| {
            RedisServer::start_tls(TlsOptions {
                server_names: names.iter().map(|n| n.to_string()).collect(),
                ..TlsOptions::new(false)
            })
        };
        let url_with_host = |redis: &RedisServer, host: &str| format!("rediss://{host}:{}", redis.port());
        // A certificate for another name altogether.
        let Some(other) = named(&["redis.invalid"]) else { return };
        let mut driver = Driver::new(&other.url(), tls_config(&other.tls().ca, None));
        let why = never_up(&mut driver);
        eprintln!("another name: {why}");
        assert!(why.contains("certificate") && why.contains("not valid for name"), "{why}");

        // The name `localhost` only: reached as localhost it is up, as 127.0.0.1 not.
        let Some(by_name) = named(&["localhost"]) else { return };
        let mut driver =
            Driver::new(&url_with_host(&by_name, "localhost"), tls_config(&by_name.tls().ca, None));
        driver.up();
        let mut driver =
            Driver::new(&url_with_host(&by_name, "127.0.0.1"), tls_config(&by_name.tls().ca, None));
        let why = never_up(&mut driver);
        assert!(why.contains("not valid for name"), "{why}");

        // The address 127.0.0.1 only: reached as 127.0.0.1 it is up, as localhost not.
        let Some(by_ip) = named(&["127.0.0.1"]) else { return };
        let mut driver = Driver::new(&url_with_host(&by_ip, "127.0.0.1"), tls_config(&by_ip.tls().ca, None));
        driver.up();
        let mut driver = Driver::new(&url_with_host(&by_ip, "localhost"), tls_config(&by_ip.tls().ca, None));
        let why = never_up(&mut driver);
        assert!(why.contains("not valid for name"), "{why}");
    }

    #[test]
    fn killed_over_tls_is_down_and_up_again_after_restart() {
        let Some(mut redis) = RedisServer::start_tls(TlsOptions::new(true)) else { return };
        let mut driver = Driver::new(&redis.url(), trusting(redis.tls()));
        driver.up();
        assert_eq!(driver.call(&["SET", "k", "v"]), Value::Simple("OK".into()));
        redis.pause();
        for _ in 0..3 {
            driver.send(&["PING"]);
        }
        driver.run_for(Duration::from_millis(100));
        redis.kill();
        let seen = driver.until("Down", |seen| !seen.is_empty());
        let [LinkEvent::Down { unanswered: 3, .. }] = &seen[..] else { panic!("{seen:?}") };
        assert_eq!(driver.link.send(&[b"PING"], Instant::now()), Err(SendRefused::Down));
        driver.run_for(Duration::from_millis(300));
        assert!(driver.link.stats().failed_attempts >= 1);
        redis.restart();
        driver.up();
        assert_eq!(driver.link.stats().reconnects, 1);
        assert_eq!(driver.call(&["GET", "k"]), Value::Nil);
    }

    /// A Redis that hangs in the middle of the TLS handshake: the attempt times out like
    /// any handshake, and the link is up once it answers again.
    #[test]
    fn paused_over_tls_times_out_in_the_handshake_and_comes_back() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(false)) else { return };
        let config =
            LinkConfig { reply_timeout: Duration::from_millis(300), ..tls_config(&redis.tls().ca, None) };
        let mut driver = Driver::new(&redis.url(), config);
        driver.up();
        redis.pause();
        driver.send(&["PING"]);
        let seen = driver.until("Down", |seen| !seen.is_empty());
        let [LinkEvent::Down { unanswered: 1, why }] = &seen[..] else { panic!("{seen:?}") };
        assert!(why.contains("no reply"), "{why}");
        driver.run_for(Duration::from_millis(800));
        assert!(!driver.link.is_up());
        let why = driver.link.stats().last_error.clone().unwrap();
        assert!(why.contains("handshake"), "{why}");
        redis.resume();
        driver.up();
        assert_eq!(driver.call(&["PING"]), Value::Simple("PONG".into()));
    }

    /// TLS to a port that speaks plain RESP, and plain RESP to a TLS port: never up, and
    /// the link keeps trying without harm. (Redis's TLS port does not close on plain
    /// RESP: the handshake's timeout ends those attempts.)
    #[test]
    fn tls_and_plain_mixed_up_are_refused() {
        let Some(plain) = RedisServer::start() else { return };
        let Some(tls) = RedisServer::start_tls(TlsOptions::new(false)) else { return };
        let rediss_to_plain = format!("rediss://127.0.0.1:{}", plain.port());
        let quick = |config: LinkConfig| LinkConfig { reply_timeout: Duration::from_millis(300), ..config };
        let mut driver = Driver::new(&rediss_to_plain, quick(tls_config(&tls.tls().ca, None)));
        let why = never_up(&mut driver);
        eprintln!("rediss:// to a plain port: {why}");
        let redis_to_tls = format!("redis://127.0.0.1:{}", tls.port());
        let mut driver = Driver::new(&redis_to_tls, quick(config()));
        let why = never_up(&mut driver);
        eprintln!("redis:// to a TLS port: {why}");
        // A redis:// URL ignores TLS settings: plain to a plain port.
        let mut driver = Driver::new(&plain.url(), tls_config(&tls.tls().ca, None));
        driver.up();
    }

    /// A Redis that speaks TLS 1.2 only: the handshake differs (a client certificate is
    /// refused within it, not after), the records too.
    #[test]
    fn tls_1_2_only() {
        let options = TlsOptions { protocols: Some("TLSv1.2"), ..TlsOptions::new(true) };
        let Some(redis) = RedisServer::start_tls(options) else { return };
        let tls = redis.tls();
        let mut driver = Driver::new(&redis.url(), trusting(tls));
        driver.up();
        let big = "z".repeat((2 << 20) + 1);
        assert_eq!(driver.call(&["SET", "big", &big]), Value::Simple("OK".into()));
        assert_eq!(driver.call(&["GET", "big"]), bulk(&big));
        let mut without = Driver::new(&redis.url(), tls_config(&tls.ca, None));
        let why = never_up(&mut without);
        eprintln!("TLS 1.2 without a client certificate: {why}");
        assert!(why.contains("TLS"), "{why}");
        let mut unknown = Driver::new(&redis.url(), tls_config(&tls.other_ca, None));
        let why = never_up(&mut unknown);
        assert!(why.contains("UnknownIssuer"), "{why}");
    }

    /// Redis drops the connection itself (`CLIENT KILL`, Redis up all along): down, and
    /// up again at once on a new TLS session (resumed, if rustls and Redis agree to).
    #[test]
    fn dropped_by_redis_over_tls_comes_back() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(true)) else { return };
        let mut driver = Driver::new(&redis.url(), trusting(redis.tls()));
        driver.up();
        for round in 1..=3 {
            assert_eq!(redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]), "1", "round {round}");
            let seen = driver.until("Down", |seen| !seen.is_empty());
            assert!(matches!(seen[..], [LinkEvent::Down { unanswered: 0, .. }]), "{seen:?}");
            driver.up();
            assert_eq!(driver.link.stats().reconnects, round);
            assert_eq!(driver.call(&["PING"]), Value::Simple("PONG".into()));
        }
    }

    #[test]
    fn auth_over_tls_with_the_right_password_and_a_wrong_one() {
        let Some(redis) = RedisServer::start_tls_with_password(TlsOptions::new(false), "pw over tls") else {
            return;
        };
        let ca = &redis.tls().ca;
        let url = redis.url().replace("pw over tls", "pw%20over%20tls");
        assert!(url.starts_with("rediss://:pw%20over%20tls@127.0.0.1:"), "{url}");
        let mut good = Driver::new(&url, tls_config(ca, None));
        good.up();
        assert_eq!(good.call(&["ACL", "WHOAMI"]), bulk("default"));
        let mut bad =
            Driver::new(&format!("rediss://:wrong@127.0.0.1:{}", redis.port()), tls_config(ca, None));
        let why = never_up(&mut bad);
        assert!(why.contains("WRONGPASS") && !why.contains("wrong@"), "{why}");
    }

    /// `rediss://[::1]:PORT`: the address without brackets is the name checked, against
    /// the certificate's IPv6 addresses. Skipped where the host has no `::1`.
    #[test]
    fn an_ipv6_host_is_checked_against_the_certificates_ipv6_addresses() {
        let Some(redis) = RedisServer::start_tls(TlsOptions::new(false)) else { return };
        if std::net::TcpStream::connect(("::1", redis.port())).is_err() {
            eprintln!("skipped: no ::1 here");
            return;
        }
        let url = format!("rediss://[::1]:{}", redis.port());
        let mut driver = Driver::new(&url, tls_config(&redis.tls().ca, None));
        driver.up();
        assert_eq!(driver.call(&["PING"]), Value::Simple("PONG".into()));

        let options = TlsOptions { server_names: vec!["127.0.0.1".into()], ..TlsOptions::new(false) };
        let Some(v4_only) = RedisServer::start_tls(options) else { return };
        let url = format!("rediss://[::1]:{}", v4_only.port());
        let mut driver = Driver::new(&url, tls_config(&v4_only.tls().ca, None));
        let why = never_up(&mut driver);
        assert!(why.contains("not valid for name"), "{why}");
    }
}
