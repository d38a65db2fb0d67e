//! Sockets and limits the standard library does not reach: a small receive buffer, a
//! chosen source address (socket2), and the open-file limit (rlimit).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::Command;

use socket2::{Domain, Socket, Type};

/// Raises this process's open-file soft limit to its hard limit and returns the soft limit.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        // Raising failed (the hard limit may be more than the kernel allows): what is in force.
        Err(_) => rlimit::Resource::NOFILE.get().map_or(1024, |(soft, _)| soft),
    }
}

/// Makes `command` start its child with `limit` as the open-file limit, soft and hard (to
/// run it out of descriptors).
pub fn set_fd_limit_in_child(command: &mut Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setrlimit is one, and it allocates nothing.
    unsafe {
        command.pre_exec(move || rlimit::Resource::NOFILE.set(limit, limit));
    }
}

/// A TCP connection to `addr` whose receive buffer is as small as the kernel allows, so
/// that a client that does not read stops taking data early.
pub fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    // Set before connect, so that the window offered in the handshake is small too.
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

/// A TCP connection to `addr` from the local address `source` (any of 127.0.0.0/8).
pub fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddrV4::new(source, 0).into()).unwrap_or_else(|err| panic!("bind {source}: {err}"));
    socket.connect(&addr.into()).unwrap_or_else(|err| panic!("connect from {source}: {err}"));
    socket.into()
}
