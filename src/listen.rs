//! The listening socket, opened as the original's Node.js server opens it.
//!
//! Node's `listen(port)` with no address listens on `::` with `IPV6_V6ONLY` off, so one
//! socket takes IPv6 and IPv4 clients (IPv4 ones appear as `::ffff:a.b.c.d`), and falls
//! back to `0.0.0.0` where the host has no IPv6. Without `--bind` we do the same. mio's
//! `TcpListener::bind` leaves `IPV6_V6ONLY` to the `net.ipv6.bindv6only` sysctl, so the
//! socket is made here with libc, as libuv makes it: every IPv6 socket gets
//! `IPV6_V6ONLY` = 0 explicitly, an explicit `--bind ::` included, so the behaviour does
//! not depend on the host's sysctl.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use log::info;

/// Opens a non-blocking listening socket on `bind` (or, when `None`, on the original's
/// default: `::` for IPv6 and IPv4, else `0.0.0.0`) and `port`, with `backlog` pending
/// connections. Errors name the address that failed.
pub fn open(bind: Option<IpAddr>, port: u16, backlog: libc::c_int) -> io::Result<TcpListener> {
    let open_one = |addr| open_socket(addr, backlog);
    match bind {
        Some(ip) => {
            let addr = SocketAddr::new(ip, port);
            open_one(addr).map_err(|err| naming(addr, err))
        }
        None => open_default(port, open_one),
    }
}

/// The original's default: `[::]:port`, or `0.0.0.0:port` when `open_one` says that IPv6
/// is not available here. Other failures (the port in use, say) are reported as they are:
/// the IPv4 socket would meet them too.
fn open_default<L>(port: u16, mut open_one: impl FnMut(SocketAddr) -> io::Result<L>) -> io::Result<L> {
    let dual_stack = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    match open_one(dual_stack) {
        Err(err) if ipv6_unavailable(&err) => {
            info!("IPv6 is not available ({err}): serving IPv4 clients only, on 0.0.0.0");
            let ipv4_only = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
            open_one(ipv4_only).map_err(|err| naming(ipv4_only, err))
        }
        result => result.map_err(|err| naming(dual_stack, err)),
    }
}

/// `err` with the address it is about. Only after the fallback decision: the new error no
/// longer carries the OS error code that decision reads.
fn naming(addr: SocketAddr, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}"))
}

/// True for the errors of a host without IPv6: a kernel without it (`ipv6.disable=1`, some
/// container runtimes) refuses the socket; one that has it but no usable address refuses
/// the bind.
fn ipv6_unavailable(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL))
}

fn open_socket(addr: SocketAddr, backlog: libc::c_int) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket() takes no pointers; a non-negative result is a descriptor we own.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | SOCKET_FLAGS, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it; it is closed on any error below.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    close_on_exec(&socket)?;
    // As mio and std do: a restarted server may listen again while old connections linger
    // in TIME_WAIT.
    set_option(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        set_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    }
    bind(&socket, addr)?;
    // SAFETY: listen() on a bound socket we own.
    if unsafe { libc::listen(socket.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let listener = TcpListener::from(socket);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Close-on-exec from the start where socket() can say so, as std's sockets are.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SOCKET_FLAGS: libc::c_int = libc::SOCK_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SOCKET_FLAGS: libc::c_int = 0;

#[cfg(any(target_os = "linux", target_os = "android"))]
fn close_on_exec(_socket: &OwnedFd) -> io::Result<()> {
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn close_on_exec(socket: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with an int argument.
    if unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_option(socket: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the value is a c_int that outlives the call, and its size is passed with it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn bind(socket: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    // Zeroed first: the structures have padding (and on some systems a length field) that
    // must be zero; all-zero bytes are a valid value of both.
    let result = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_in is plain old data; all zeroes is valid.
            let mut raw: libc::sockaddr_in = unsafe { mem::zeroed() };
            raw.sin_family = libc::AF_INET as libc::sa_family_t;
            raw.sin_port = v4.port().to_be();
            raw.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) };
            // SAFETY: the pointer and length describe `raw`, alive for the call.
            unsafe {
                libc::bind(
                    socket.as_raw_fd(),
                    (&raw as *const libc::sockaddr_in).cast(),
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_in6 is plain old data; all zeroes is valid.
            let mut raw: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            raw.sin6_port = v6.port().to_be();
            raw.sin6_flowinfo = v6.flowinfo();
            raw.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            raw.sin6_scope_id = v6.scope_id();
            // SAFETY: the pointer and length describe `raw`, alive for the call.
            unsafe {
                libc::bind(
                    socket.as_raw_fd(),
                    (&raw as *const libc::sockaddr_in6).cast(),
                    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_error(code: libc::c_int) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    /// Runs `open_default` with a fake opener that fails IPv6 with `ipv6_error`:
    /// the addresses it was asked for, and what it returned.
    fn default_with(ipv6_error: Option<libc::c_int>) -> (Vec<SocketAddr>, io::Result<SocketAddr>) {
        let mut tried = Vec::new();
        let result = open_default(3903, |addr: SocketAddr| {
            tried.push(addr);
            match ipv6_error {
                Some(code) if addr.is_ipv6() => Err(os_error(code)),
                _ => Ok(addr),
            }
        });
        (tried, result)
    }

    #[test]
    fn default_is_dual_stack_where_ipv6_works() {
        let (tried, result) = default_with(None);
        assert_eq!(tried, ["[::]:3903".parse().expect("addr")]);
        assert_eq!(result.expect("listens").to_string(), "[::]:3903");
    }

    #[test]
    fn default_falls_back_to_ipv4_without_ipv6() {
        for code in [libc::EAFNOSUPPORT, libc::EPROTONOSUPPORT, libc::EADDRNOTAVAIL] {
            let (tried, result) = default_with(Some(code));
            assert_eq!(tried.len(), 2, "{code}");
            assert_eq!(result.expect("listens").to_string(), "0.0.0.0:3903", "{code}");
        }
    }

    #[test]
    fn a_failing_fallback_names_the_ipv4_address() {
        let err = open_default(3903, |addr: SocketAddr| -> io::Result<()> {
            Err(os_error(if addr.is_ipv6() { libc::EAFNOSUPPORT } else { libc::EADDRINUSE }))
        })
        .expect_err("fails");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().starts_with("cannot listen on 0.0.0.0:3903: "), "{err}");
    }

    #[test]
    fn other_failures_are_not_hidden_by_the_fallback() {
        for code in [libc::EADDRINUSE, libc::EACCES] {
            let (tried, result) = default_with(Some(code));
            assert_eq!(tried.len(), 1, "{code}");
            let err = result.expect_err("fails");
            assert_eq!(err.kind(), os_error(code).kind());
            assert!(err.to_string().starts_with("cannot listen on [::]:3903: "), "{err}");
        }
    }

    #[test]
    fn explicit_addresses_are_obeyed_and_errors_name_them() {
        let listener = open(Some(Ipv4Addr::LOCALHOST.into()), 0, 16).expect("listen on loopback");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(addr.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
        let taken = open(Some(addr.ip()), addr.port(), 16).expect_err("port in use");
        assert_eq!(taken.kind(), io::ErrorKind::AddrInUse);
        assert!(taken.to_string().contains(&addr.to_string()), "{taken}");
    }
}
