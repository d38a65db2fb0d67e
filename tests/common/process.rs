//! The real binary in a child process: started from a command the test prepares, its log
//! (stderr) read line by line on a thread of its own, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_diva-signal");

/// How long a starting server may take to say where it listens.
const STARTUP: Duration = Duration::from_secs(10);

/// A spawned server, the address it logged, and its log lines from then on.
pub struct Spawned {
    pub child: Child,
    pub addr: String,
    /// The line that named the address ("listening on ADDR ...").
    pub start_line: String,
    pub log: mpsc::Receiver<String>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary on 127.0.0.1 and a free port with `args`, without the caller's `PORT` and
/// `BIND_IP`; the test adds what else it needs before [`spawn_server`].
pub fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(SERVER_BIN);
    command.args(["--bind", "127.0.0.1", "--port", "0"]).args(args).env_remove("PORT").env_remove("BIND_IP");
    command
}

/// Starts `command` and waits until it logs where it listens.
pub fn spawn_server(mut command: Command) -> Spawned {
    let mut child = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn server");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (addr, start_line) = loop {
        let line = log.recv_timeout(STARTUP).expect("server logs its address");
        if let Some((_, rest)) = line.split_once("listening on ") {
            break (rest.split_whitespace().next().expect("address").to_owned(), line);
        }
    };
    Spawned { child, addr, start_line, log }
}
