//! The byte stream under a client connection. A connection reads and writes it without
//! blocking and registers it with mio; plain TCP is one such stream, and a TLS stream
//! or an in-memory one (tests, benches, fuzzing) can take its place without the loop
//! changing. Connections are generic over it, so each use is compiled for its stream:
//! no dynamic dispatch on the hot path.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// A non-blocking byte stream a connection can own: reads and writes end with
/// WouldBlock when they would wait, and mio reports its readiness.
pub trait ByteStream: Read + Write + Source {
    /// Shuts the sending side, so the client sees the end of the stream (after TLS's
    /// close_notify, over TLS).
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl ByteStream for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// TCP, plain or with TLS over it: a client's stream when the port speaks TLS, the Redis
/// link's with `rediss://`. One match per call, no dynamic dispatch; the TLS state is
/// boxed so that a plain server's connections stay small.
pub enum NetStream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsStream>),
}

impl NetStream {
    /// The TCP stream under it: for connect errors, the peer's address, socket options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            NetStream::Plain(s) => s,
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.tcp(),
        }
    }

    /// True once, when a TLS handshake is found complete (never for plain TCP).
    pub fn take_handshake_completed(&mut self) -> bool {
        match self {
            NetStream::Plain(_) => false,
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.take_handshake_completed(),
        }
    }

    /// Why the TLS handshake failed, for a connection that ends before it completed.
    pub fn handshake_failure(&self, timed_out: bool) -> Option<crate::metrics::TlsFailure> {
        match self {
            NetStream::Plain(_) => {
                let _ = timed_out;
                None
            }
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.handshake_failure(timed_out),
        }
    }
}

impl Read for NetStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            NetStream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for NetStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            NetStream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.flush(),
        }
    }
}

impl Source for NetStream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.register(registry, token, interests),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.reregister(registry, token, interests),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.deregister(registry),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.deregister(registry),
        }
    }
}

impl ByteStream for NetStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.shutdown_write(),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => s.shutdown_write(),
        }
    }
}

/// Tunes a freshly accepted TCP stream for signaling, which is small messages that want
/// to go out at once.
pub fn tune_for_signaling(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    keep_unsent_small(stream);
}

/// Unsent bytes the kernel may hold for one client beyond what is in flight.
#[cfg(any(target_os = "linux", target_os = "android"))]
const UNSENT_LOW_WATER: libc::c_int = 64 * 1024;

/// Keeps the kernel from taking more for a client than it can soon send. Without this,
/// Linux grows a socket's send buffer to megabytes (4 MiB on loopback) even for a client
/// that reads 150 KB/s: output would leave the server's queue, where queue limits and
/// per-sender shares apply, long before the client gets it, and a liveness ping that
/// "reached the socket" could still be seconds away from it. Bytes in flight are not
/// limited, so fast links keep their speed.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn keep_unsent_small(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let value = UNSENT_LOW_WATER;
    // SAFETY: setsockopt on a socket we own, with a c_int that outlives the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn keep_unsent_small(_stream: &TcpStream) {}

/// True for errors after which retrying accept() later can succeed.
pub fn is_resource_exhaustion(err: &io::Error) -> bool {
    // Out of descriptors or memory for now.
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
