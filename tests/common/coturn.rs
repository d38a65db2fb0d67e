//! [`Coturn`]: Debian's coturn on a free loopback port, checking credentials by the TURN
//! REST API scheme (`use-auth-secret`), for the tests of TURN credentials and the browser
//! test that relays through it.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running turnserver; killed (and its directory removed) on drop.
pub struct Coturn {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Coturn {
    /// True when `turnserver` and `turnutils_uclient` are on the PATH.
    pub fn installed() -> bool {
        let on_path = |program: &str| {
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        };
        on_path("turnserver") && on_path("turnutils_uclient")
    }

    /// Starts coturn with `static-auth-secret=secret` on 127.0.0.1, relaying on loopback.
    pub fn start(secret: &str) -> Coturn {
        let dir = std::env::temp_dir().join(format!("diva-coturn-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = free_port();
        // Relay ports right above the listening one: away from other tests' coturns.
        let conf = format!(
            "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\nmin-port={}\nmax-port={}\n\
             use-auth-secret\nstatic-auth-secret={secret}\nrealm=diva.test\nallow-loopback-peers\n\
             no-tls\nno-dtls\nno-cli\nno-multicast-peers\nverbose\nsimple-log\nlog-file=stdout\n\
             pidfile={dir}/turnserver.pid\nuserdb={dir}/turndb.sqlite\n",
            port + 1,
            port + 40,
            dir = dir.display()
        );
        std::fs::write(dir.join("turnserver.conf"), conf).expect("write turnserver.conf");
        let log = std::fs::File::create(dir.join("turnserver.log")).expect("log file");
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(dir.join("turnserver.conf"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start turnserver");
        let coturn = Coturn { child, port, dir };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "coturn did not start: {}", coturn.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        coturn
    }

    /// What coturn logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.log")).unwrap_or_default()
    }

    /// Runs `turnutils_uclient -y` (two clients sending to each other through relays) with
    /// these credentials: (exit code, its output).
    pub fn relay_through(&self, username: &str, password: &str) -> (Option<i32>, String) {
        let output = Command::new("turnutils_uclient")
            .args(["-y", "-n", "5", "-m", "1", "-l", "100", "-e", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-u", username, "-w", password, "127.0.0.1"])
            .output()
            .expect("run turnutils_uclient");
        let stdout = String::from_utf8_lossy(&output.stdout);
        (output.status.code(), format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free for both TCP and UDP on 127.0.0.1, with room for relay ports above it.
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("address").port();
        if port < 65_000 && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
