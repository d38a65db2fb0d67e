//! Native TLS (feature `tls`): the server's certificate and key, and [`TlsStream`], a
//! [`ByteStream`] that speaks TLS over a non-blocking TCP stream on the same mio loop.
//!
//! rustls does no I/O of its own: the stream moves ciphertext between the socket and
//! rustls (`read_tls`, `write_tls`) and plaintext between rustls and the connection
//! (`reader`, `writer`). The handshake happens inside the first reads, while the
//! connection is reading its request head, so the handshake timeout bounds it.
//!
//! Two things keep edge-triggered readiness honest:
//! - A read returns less than asked only when the socket itself would block (or ended):
//!   rustls may hold decrypted plaintext after the socket is drained, so a read keeps
//!   taking plaintext until the buffer is full or both rustls and the socket are empty.
//!   A connection that trusts "a short read means drained" strands nothing.
//! - Plaintext is taken only while rustls holds no unsent ciphertext, and [`Write::flush`]
//!   says WouldBlock while it does: the connection's flush (tungstenite's ends with the
//!   stream's) keeps it queued for the next writable edge, as with TCP.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::stream::ByteStream;

/// Ciphertext one read may take from the socket without finding any plaintext in it:
/// a handshake needs far less; a client sending only empty or control records is cut off.
const MAX_CIPHERTEXT_WITHOUT_DATA: usize = 256 * 1024;

/// Reads the certificate chain and key and builds the server's TLS settings: TLS 1.2 and
/// 1.3 with the ring provider, ALPN `http/1.1`. The error is one line for the operator.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|err| format!("cannot read the TLS certificate {}: {err}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| format!("cannot read the TLS key {}: {err}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| format!("TLS: {err}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|err| {
            format!(
                "the TLS certificate {} and key {} do not go together: {err}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS server connection over a non-blocking TCP stream.
pub struct TlsStream {
    tcp: TcpStream,
    tls: ServerConnection,
    /// The socket reported end of file: no more ciphertext will come.
    eof: bool,
}

impl TlsStream {
    pub fn new(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream { tcp, tls, eof: false })
    }

    /// True once the handshake is over.
    pub fn is_handshake_done(&self) -> bool {
        !self.tls.is_handshaking()
    }

    /// Writes ciphertext rustls holds until it holds none: WouldBlock when the socket
    /// takes no more.
    fn write_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Reads ciphertext from the socket once and lets rustls take it: `Ok(0)` at end of
    /// file. Handshake replies and alerts go out at once, as far as the socket takes them.
    fn read_ciphertext(&mut self) -> io::Result<usize> {
        let n = loop {
            match self.tls.read_tls(&mut self.tcp) {
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 0 {
            self.eof = true;
        }
        let processed = self.tls.process_new_packets();
        // Handshake messages, or the alert that tells a bad client why; a blocked socket
        // keeps the rest for the next writable edge (the connection's flush).
        match self.write_pending() {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) if processed.is_ok() => return Err(err),
            Err(_) => {}
        }
        processed.map_err(|err| io::Error::new(ErrorKind::InvalidData, err))?;
        Ok(n)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        let mut ciphertext = 0;
        loop {
            // Plaintext rustls holds first: it must be taken before more records fit in.
            while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
                match self.tls.reader().read(rest) {
                    // The client sent close_notify: the end of the stream.
                    Ok(0) => return Ok(filled),
                    Ok(n) => filled += n,
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    // The socket ended without close_notify: an end all the same.
                    Err(err) if err.kind() == ErrorKind::UnexpectedEof => return Ok(filled),
                    Err(err) => return Err(err),
                }
            }
            if filled == buf.len() || self.eof {
                return Ok(filled);
            }
            match self.read_ciphertext() {
                Ok(n) => ciphertext += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(err) => return Err(err),
            }
            if filled == 0 && ciphertext > MAX_CIPHERTEXT_WITHOUT_DATA {
                return Err(io::Error::new(ErrorKind::InvalidData, "TLS records without data"));
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Like a full socket buffer: nothing more is taken while ciphertext waits.
        self.write_pending()?;
        let n = self.tls.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        match self.write_pending() {
            Ok(()) => {}
            // Taken: the rest goes out on the next write or flush.
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }
}

impl Source for TlsStream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp.register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp.deregister(registry)
    }
}

impl ByteStream for TlsStream {
    /// Sends close_notify (as far as the socket takes it) and shuts the socket's sending side.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        match self.write_pending() {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        self.tcp.shutdown(Shutdown::Write)
    }
}
