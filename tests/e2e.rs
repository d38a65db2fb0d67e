//! End to end in a real browser: Debian's Chromium, headless, loads `/demo` from the real
//! server binary on loopback, and pages in the same room chat over WebRTC data channels; one
//! test does it over `https://` and `wss://` from the server's own TLS.
//!
//! The tests are `#[ignore]`d so that plain `cargo test` skips them; `make e2e` installs
//! Chromium if it is missing and runs them:
//! `cargo test --release --test e2e -- --ignored --test-threads=1`.
//!
//! Chromium is driven over the Chrome DevTools Protocol (CDP), with tungstenite as the
//! WebSocket client: one browser-level connection, one flat session per page. Every wait
//! is bounded by [`TIME_LIMIT`]; the browser (its whole process group), the server and
//! the temporary profile are removed on drop, also when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

pub mod common;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// The browser itself; `/usr/bin/chromium` is a shell wrapper that adds flags.
const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const SERVER: &str = env!("CARGO_BIN_EXE_diva-signal");
/// A test that has not passed by then fails.
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for one answer from the browser.
const CALL_LIMIT: Duration = Duration::from_secs(15);
/// Pages opened together before waiting for them to join: Chromium delays WebSocket
/// handshakes when many are pending.
const OPEN_BATCH: usize = 4;
const POLL: Duration = Duration::from_millis(100);

#[test]
#[ignore = "needs Chromium; run with `make e2e`"]
fn two_pages_chat_over_a_data_channel() {
    let mut e2e = E2e::start();
    let pages = e2e.open_pages(&["pair", "pair"]);
    let [a, b] = [&pages[0], &pages[1]];
    e2e.wait_connected(&[(a, b)]);
    let hello = "hello from a, über WebRTC ✓";
    let reply = "and hello back from b";
    assert_eq!(e2e.send(a, hello), 1, "a has one open data channel");
    assert_eq!(e2e.send(b, reply), 1, "b has one open data channel");
    e2e.wait_delivered(&[(a, b, hello), (b, a, reply)]);
}

#[test]
#[ignore = "needs Chromium and coturn; run with `make e2e`"]
fn two_pages_chat_through_a_turn_relay_only() {
    assert!(
        common::Coturn::installed(),
        "coturn is missing: `make e2e` installs it (apt-get install coturn)"
    );
    let secret = "e2e-turn-secret";
    let coturn = common::Coturn::start(secret);
    let turn_url = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let args = ["--turn-secret", secret, "--turn-url", &turn_url, "--log-level", "debug"];
    // relay=1: iceTransportPolicy "relay", so the pages may use relayed candidates only.
    let mut e2e = E2e::start_with(false, &args, "&relay=1");
    let pages = e2e.open_pages(&["relayed", "relayed"]);
    let [a, b] = [&pages[0], &pages[1]];
    e2e.wait_connected(&[(a, b)]);
    assert_eq!(e2e.send(a, "through the relay"), 1, "a has one open data channel");
    assert_eq!(e2e.send(b, "and back"), 1, "b has one open data channel");
    e2e.wait_delivered(&[(a, b, "through the relay"), (b, a, "and back")]);
    // Both pages were given credentials, and coturn allocated a relay for each.
    let iceservers = e2e.eval(&a.session, "JSON.stringify(demo.iceServers)").unwrap_or_default();
    assert!(iceservers.as_str().unwrap_or_default().contains(&turn_url), "{iceservers}");
    let log = coturn.log();
    let allocations = log.lines().filter(|line| line.contains("ALLOCATE processed, success")).count();
    assert!(allocations >= 2, "coturn allocated {allocations} relay(s):\n{log}");
}

#[test]
#[ignore = "needs Chromium; run with `make e2e`"]
fn ten_rooms_of_pairs_at_once() {
    const ROOMS: usize = 10;
    let mut e2e = E2e::start();
    // The first of each pair in every room, then the second ones: the ten rooms negotiate at once.
    let names: Vec<String> = (0..ROOMS).map(|n| format!("room{n}")).collect();
    let rooms: Vec<&str> = names.iter().chain(&names).map(String::as_str).collect();
    let pages = e2e.open_pages(&rooms);
    let (first, second) = pages.split_at(ROOMS);
    let pairs: Vec<(&Page, &Page)> = first.iter().zip(second).collect();
    e2e.wait_connected(&pairs);
    let texts: Vec<(String, String)> = (0..ROOMS)
        .map(|n| (format!("to room{n} from its first"), format!("to room{n} from its second")))
        .collect();
    for ((a, b), (ab, ba)) in pairs.iter().zip(&texts) {
        assert_eq!(e2e.send(a, ab), 1, "{} has one open data channel", a.own);
        assert_eq!(e2e.send(b, ba), 1, "{} has one open data channel", b.own);
    }
    let deliveries: Vec<(&Page, &Page, &str)> = pairs
        .iter()
        .zip(&texts)
        .flat_map(|((a, b), (ab, ba))| [(*a, *b, ab.as_str()), (*b, *a, ba.as_str())])
        .collect();
    e2e.wait_delivered(&deliveries);
    // Nothing crossed between rooms: every page heard from its partner only, exactly once.
    for (a, b) in &pairs {
        for (page, partner) in [(a, b), (b, a)] {
            let state = e2e.state(page).unwrap_or_default();
            assert_eq!(state["received"].as_array().map(Vec::len), Some(1), "{}: {state}", page.own);
            assert_eq!(state["received"][0]["from"], partner.own.as_str(), "{}: {state}", page.own);
            assert_eq!(state["peers"].as_object().map(|peers| peers.len()), Some(1), "{}: {state}", page.own);
        }
    }
}

/// The same over TLS: the page on `https://`, its WebSocket on `wss://`, from the server's
/// own TLS (a throwaway self-signed certificate; Chromium ignores certificate errors).
#[test]
#[ignore = "needs Chromium; run with `make e2e`"]
fn two_pages_chat_over_wss() {
    let mut e2e = E2e::start_with(true, &[], "");
    assert!(e2e.origin.starts_with("https://"));
    let pages = e2e.open_pages(&["secure", "secure"]);
    let [a, b] = [&pages[0], &pages[1]];
    e2e.wait_connected(&[(a, b)]);
    assert_eq!(e2e.send(a, "over wss"), 1, "a has one open data channel");
    assert_eq!(e2e.send(b, "and back"), 1, "b has one open data channel");
    e2e.wait_delivered(&[(a, b, "over wss"), (b, a, "and back")]);
    let handshakes = e2e.server.log_lines();
    assert!(handshakes.iter().any(|line| line.contains("with TLS")), "{handshakes:?}");
}

/// One demo page in the browser.
struct Page {
    session: String,
    room: String,
    /// The address the page joined as, `ROOM:IDENT`.
    own: String,
}

/// A server, a browser with a CDP connection, and the time limit of one test.
/// Fields drop in order: the CDP connection, then the browser, then the server.
struct E2e {
    cdp: Cdp,
    _browser: Browser,
    server: ServerProcess,
    origin: String,
    /// Added to every page's query, after `room=`.
    page_query: String,
    deadline: Instant,
    /// Every page opened, for the report when something fails.
    sessions: Vec<String>,
}

impl E2e {
    fn start() -> E2e {
        E2e::start_with(false, &[], "")
    }

    /// A server that speaks TLS when `tls`, with these extra arguments, a browser, and the
    /// page origin; `page_query` is added to every page's URL.
    fn start_with(tls: bool, server_args: &[&str], page_query: &str) -> E2e {
        let deadline = Instant::now() + TIME_LIMIT;
        let server = ServerProcess::start(deadline, tls, server_args);
        let mut browser = Browser::start();
        let mut cdp = Cdp::connect(&browser.devtools_url(deadline));
        let origin = format!("{}://{}", if tls { "https" } else { "http" }, server.addr);
        // Without camera or microphone permission a page gathers ICE candidates only on the
        // default route's address, of which a loopback-only host has none. Granting the
        // permission (no getUserMedia needed) lets Chromium use every interface, loopback too.
        let permissions = json!({"origin": origin, "permissions": ["audioCapture", "videoCapture"]});
        if let Err(error) = cdp.call(None, "Browser.grantPermissions", permissions) {
            panic!("Browser.grantPermissions failed: {error}");
        }
        let page_query = page_query.to_owned();
        E2e { cdp, _browser: browser, server, origin, page_query, deadline, sessions: Vec::new() }
    }

    /// Opens `/demo?room=R` for each room, a few pages at a time, and waits until each joined.
    fn open_pages(&mut self, rooms: &[&str]) -> Vec<Page> {
        let mut pages = Vec::new();
        for batch in rooms.chunks(OPEN_BATCH) {
            let sessions: Vec<(String, &str)> =
                batch.iter().map(|room| (self.open_tab(room), *room)).collect();
            for (session, room) in sessions {
                let own = self.wait(&format!("a page in room {room} to join"), |e2e| {
                    let state = e2e.state_of(&session)?;
                    state["own"].as_str().map(str::to_owned)
                });
                assert!(own.starts_with(&format!("{room}:")), "joined {own}, not in room {room}");
                pages.push(Page { session, room: room.to_owned(), own });
            }
        }
        pages
    }

    fn open_tab(&mut self, room: &str) -> String {
        let url = format!("{}/demo?room={room}{}", self.origin, self.page_query);
        let target = self.browser_call("Target.createTarget", json!({"url": url, "newWindow": true}));
        let target_id = target["targetId"].as_str().unwrap_or_default().to_owned();
        let attached =
            self.browser_call("Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
        let session = attached["sessionId"].as_str().unwrap_or_default().to_owned();
        assert!(!session.is_empty(), "no CDP session for the page in room {room}: {attached}");
        self.sessions.push(session.clone());
        session
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        match self.cdp.call(None, method, params) {
            Ok(result) => result,
            Err(error) => panic!("{method} failed: {error}"),
        }
    }

    /// Waits until both pages of every pair have an open data channel to each other.
    fn wait_connected(&mut self, pairs: &[(&Page, &Page)]) {
        self.wait(&format!("{} pair(s) of pages to open their data channels", pairs.len()), |e2e| {
            for (a, b) in pairs {
                for (page, peer) in [(a, b), (b, a)] {
                    let state = e2e.state(page)?;
                    (state["peers"][peer.own.as_str()] == "open").then_some(())?;
                }
            }
            Some(())
        });
    }

    /// Sends `text` to every peer of `page` over its data channels; returns how many got it.
    fn send(&mut self, page: &Page, text: &str) -> u64 {
        let text = Value::from(text).to_string();
        let sent = self.eval(&page.session, &format!("window.demo.send({text})"));
        sent.and_then(|n| n.as_u64()).unwrap_or_else(|| panic!("demo.send failed on {}", page.own))
    }

    /// Waits until every `(from, to, text)` has arrived: `to` received `text` from `from`.
    fn wait_delivered(&mut self, deliveries: &[(&Page, &Page, &str)]) {
        self.wait(&format!("{} message(s) to arrive over WebRTC", deliveries.len()), |e2e| {
            for (from, to, text) in deliveries {
                let state = e2e.state(to)?;
                let received = state["received"].as_array()?;
                received
                    .iter()
                    .any(|message| message["from"] == from.own.as_str() && message["text"] == *text)
                    .then_some(())?;
            }
            Some(())
        });
    }

    fn state(&mut self, page: &Page) -> Option<Value> {
        let state = self.state_of(&page.session);
        if let Some(state) = &state {
            assert_eq!(
                state["own"].as_str(),
                Some(page.own.as_str()),
                "page in {} lost its address",
                page.room
            );
        }
        state
    }

    /// The demo page's own view: status, address, peers and received messages (None before it runs).
    fn state_of(&mut self, session: &str) -> Option<Value> {
        self.eval(
            session,
            "window.demo ? {status: demo.status, own: demo.own, peers: demo.peers(), received: demo.received} : null",
        )
        .filter(|state| !state.is_null())
    }

    /// Evaluates `expression` in a page and returns its value (None if it threw, or the page
    /// is between documents).
    fn eval(&mut self, session: &str, expression: &str) -> Option<Value> {
        let params = json!({"expression": expression, "returnByValue": true});
        let result = self.cdp.call(Some(session), "Runtime.evaluate", params).ok()?;
        if result.get("exceptionDetails").is_some() {
            return None;
        }
        Some(result["result"]["value"].clone())
    }

    /// Polls `probe` until it gives a value; fails with a report of every page after the deadline.
    fn wait<T>(&mut self, what: &str, mut probe: impl FnMut(&mut E2e) -> Option<T>) -> T {
        loop {
            if let Some(value) = probe(self) {
                return value;
            }
            if Instant::now() >= self.deadline {
                let report = self.report();
                panic!("e2e: gave up after {TIME_LIMIT:?} waiting for {what}.\n{report}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every page's state and the tail of its on-page log.
    fn report(&mut self) -> String {
        let mut report = String::from("Pages:\n");
        for session in self.sessions.clone() {
            let expression = "JSON.stringify({status: demo.status, own: demo.own, peers: demo.peers(), \
                received: demo.received.length, log: document.getElementById('log').innerText.slice(-400)})";
            match self.eval(&session, expression) {
                Some(state) => report.push_str(&format!("  {}\n", state.as_str().unwrap_or_default())),
                None => report.push_str("  (a page that does not answer)\n"),
            }
        }
        report
    }
}

/// A browser-level CDP connection; commands to pages carry their session id.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let addr = url.trim_start_matches("ws://").split('/').next().unwrap_or_default();
        let stream =
            TcpStream::connect(addr).unwrap_or_else(|error| panic!("connect to DevTools at {url}: {error}"));
        stream.set_read_timeout(Some(CALL_LIMIT)).expect("read timeout");
        stream.set_write_timeout(Some(CALL_LIMIT)).expect("write timeout");
        let (ws, _) =
            tungstenite::client(url, stream).unwrap_or_else(|error| panic!("DevTools handshake: {error}"));
        // From now on reads wake up often, so that every wait can watch its own deadline.
        ws.get_ref().set_read_timeout(Some(POLL)).expect("read timeout");
        Cdp { ws, next_id: 1 }
    }

    /// Sends one command and waits for its answer, skipping events. Err holds CDP's error.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = Value::from(session);
        }
        self.ws
            .send(Message::text(command.to_string()))
            .unwrap_or_else(|error| panic!("CDP send {method}: {error}"));
        let start = Instant::now();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let Ok(mut reply) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    if reply["id"] != id {
                        continue; // an event, or a late answer
                    }
                    return match reply.get_mut("error") {
                        Some(error) => Err(error.take()),
                        None => Ok(reply["result"].take()),
                    };
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(error))
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) => panic!("CDP connection failed during {method}: {error}"),
            }
            assert!(
                start.elapsed() < CALL_LIMIT,
                "the browser did not answer {method} within {CALL_LIMIT:?}"
            );
        }
    }
}

/// Headless Chromium with a fresh profile in a temporary directory, in its own process
/// group; the group is killed and the directory removed on drop.
struct Browser {
    child: Child,
    dir: PathBuf,
}

impl Browser {
    fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run `make e2e`, or `apt-get install chromium`"
        );
        let dir = temp_dir("chromium");
        let profile = dir.join("profile");
        let log = fs::File::create(dir.join("chromium.log")).expect("chromium log file");
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                // Show host candidates as addresses, not as .local mDNS names.
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--allow-loopback-in-peer-connection",
                // Pages in the background must not be slowed down.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--remote-debugging-port=0",
                // The TLS test's certificate is self-signed, made for the run.
                "--ignore-certificate-errors",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            // Keep what Chromium writes outside its profile (~/.pki, caches) in the temp dir too.
            .env("HOME", &dir)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        die_with_parent(&mut command);
        let child = command.spawn().unwrap_or_else(|error| panic!("start {CHROMIUM}: {error}"));
        Browser { child, dir }
    }

    /// The browser's DevTools WebSocket URL, from `DevToolsActivePort` in the profile.
    fn devtools_url(&mut self, deadline: Instant) -> String {
        let file = self.dir.join("profile").join("DevToolsActivePort");
        loop {
            if let Ok(text) = fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Chromium exited ({status}) before it listened for DevTools");
            }
            assert!(Instant::now() < deadline, "Chromium did not write {}", file.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        kill_stragglers(&self.dir);
        if std::thread::panicking() {
            let log = fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
            // Without a session bus Chromium complains about D-Bus on every occasion; skip that.
            let log: Vec<&str> = log.lines().filter(|line| !line.contains("dbus")).collect();
            eprintln!("--- the last lines Chromium wrote:\n{}", tail(&log.join("\n"), 30));
        }
        remove_dir(&self.dir);
    }
}

/// The real server binary on an ephemeral loopback port; killed on drop.
struct ServerProcess {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    /// The certificate and key of a TLS server, removed on drop.
    tls_dir: Option<PathBuf>,
}

impl ServerProcess {
    fn start(deadline: Instant, tls: bool, args: &[&str]) -> ServerProcess {
        let mut command = Command::new(SERVER);
        let tls_dir = tls.then(|| {
            let dir = temp_dir("tls");
            let status = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=localhost", "-days", "1"])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(status.is_ok_and(|status| status.success()), "openssl could not make a certificate");
            command.arg("--tls-cert").arg(dir.join("cert.pem")).arg("--tls-key").arg(dir.join("key.pem"));
            dir
        });
        command
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(args)
            .env_remove("PORT")
            .env_remove("BIND_IP")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = command.spawn().unwrap_or_else(|error| panic!("start {SERVER}: {error}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line);
                }
            });
        }
        let mut server = ServerProcess { child, addr: String::new(), log, tls_dir };
        server.addr = loop {
            let lines = server.log_lines();
            let found = lines
                .iter()
                .find_map(|line| line.split_once("listening on "))
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default().to_owned());
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the server exited ({status}) before listening:\n{}", lines.join("\n"));
            }
            assert!(Instant::now() < deadline, "the server did not log its address:\n{}", lines.join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        };
        server
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- the server's log:\n{}", tail(&self.log_lines().join("\n"), 30));
        }
        if let Some(dir) = &self.tls_dir {
            remove_dir(dir);
        }
    }
}

/// Asks the kernel to kill the child if the thread that started it ends without cleaning up.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Kills `child`'s whole process group (Chromium's renderers and helpers too), reaps the
/// child, and waits a little for the rest of the group to be gone.
fn kill_group(child: &mut Child) {
    let _ = child.kill();
    let Ok(group) = libc::pid_t::try_from(child.id()) else {
        let _ = child.wait();
        return;
    };
    // SAFETY: signalling the process group this test created for the child.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
    let start = Instant::now();
    // SAFETY: signal 0 only asks whether any process of the group is left.
    while unsafe { libc::kill(-group, 0) } == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the processes that left the browser's group but work in `dir`: Chromium's crash
/// handlers start sessions of their own (they would exit soon after the browser anyway).
fn kill_stragglers(dir: &Path) {
    let needle = dir.as_os_str().as_bytes();
    let start = Instant::now();
    loop {
        let mut found = false;
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|name| name.parse::<libc::pid_t>().ok()) else { continue };
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
            if cmdline.windows(needle.len()).any(|part| part == needle) {
                found = true;
                // SAFETY: a process started by this test's browser, working in this test's directory.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !found || start.elapsed() > Duration::from_secs(5) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh directory under Cargo's temporary directory for integration tests.
fn temp_dir(what: &str) -> PathBuf {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    remove_stale_dirs(root);
    let name = format!("e2e-{what}-{}-{}-{nanos}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
    dir
}

/// Removes the directories of test processes that were killed outright (their pid is gone).
fn remove_stale_dirs(root: &Path) {
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        // e2e-WHAT-PID-COUNT-NANOS
        let pid =
            name.to_str().and_then(|name| name.strip_prefix("e2e-")).and_then(|rest| rest.split('-').nth(1));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            remove_dir(&entry.path());
        }
    }
}

/// Removes `dir`; processes that were just killed may still be letting go of files, so retry.
fn remove_dir(dir: &Path) {
    for _ in 0..50 {
        match fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(error) if error.kind() == ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    eprintln!("could not remove {}", dir.display());
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
