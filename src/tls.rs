//! Native TLS (feature `tls`): the server's certificate and key, the trust a Redis link
//! checks its server with, and [`TlsStream`], a [`ByteStream`] that speaks TLS over a
//! non-blocking TCP stream on the same mio loop: as the server to a client, or as the
//! client of Redis (`rediss://`).
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
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, ClientConnection, Connection, InconsistentKeys, RootCertStore, ServerConfig,
    ServerConnection,
};

use crate::metrics::TlsFailure;
use crate::stream::ByteStream;

/// Ciphertext one read may take from the socket without finding any plaintext in it:
/// a handshake needs far less; a client sending only empty or control records is cut off.
const MAX_CIPHERTEXT_WITHOUT_DATA: usize = 256 * 1024;

/// What the server serves TLS with: rustls's settings, and when the certificate expires.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Arc<ServerConfig>,
    /// The end-entity certificate's notAfter, in seconds since the Unix epoch.
    pub expires: Option<u64>,
}

/// Reads the certificate chain and key and builds the server's TLS settings: TLS 1.2 and
/// 1.3 with the ring provider, ALPN `http/1.1`. The error is one line for the operator.
pub fn load(cert: &Path, key: &Path) -> Result<Settings, String> {
    let certs = read_certificates(cert, "the TLS certificate")?;
    let Some(first) = certs.first() else {
        return Err(format!("no certificate in {}", cert.display()));
    };
    let expires = not_after(first);
    let key_der = read_key(key, "the TLS key")?;
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
    Ok(Settings { config: Arc::new(config), expires })
}

/// Where the system's CA certificates are, in the order tried after `SSL_CERT_FILE`:
/// Debian, Ubuntu and Alpine; Fedora and RHEL; openSUSE; Alpine's and the BSDs' other name.
const SYSTEM_CA_FILES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The TLS settings of a Redis link (`rediss://`): Redis's certificate must chain to a CA
/// in `ca` (PEM), or, without it, to one the system trusts; the name checked is the URL's
/// host. `client` is a certificate chain and key to show Redis when it asks (Redis's
/// `tls-auth-clients yes`, its default). Read once, at start; the error is one line.
pub fn redis_client_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let ca_file = match ca {
        Some(path) => path.to_path_buf(),
        None => system_ca_file().ok_or_else(|| {
            format!(
                "rediss:// needs CA certificates to check Redis with: --redis-ca FILE (none of \
                 SSL_CERT_FILE, {} is there)",
                SYSTEM_CA_FILES.join(", ")
            )
        })?,
    };
    let cas = read_certificates(&ca_file, "the CA certificates")?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(format!("no usable CA certificate in {}", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| format!("TLS: {err}"))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certificates(cert, "the Redis client certificate")?;
            if chain.is_empty() {
                return Err(format!("no certificate in {}", cert.display()));
            }
            let key_der = read_key(key, "the Redis client key")?;
            let signing_key = provider
                .key_provider
                .load_private_key(key_der)
                .map_err(|err| format!("the Redis client key {}: {err}", key.display()))?;
            let certified = CertifiedKey::new(chain, signing_key);
            // A key that is not the certificate's is refused here. A certificate webpki
            // cannot read (X.509 v1, as `openssl x509 -req` makes without extensions) is
            // Redis's to judge: OpenSSL takes it.
            if let Err(err @ rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) =
                certified.keys_match()
            {
                return Err(format!(
                    "the Redis client certificate {} and key {} do not go together: {err}",
                    cert.display(),
                    key.display()
                ));
            }
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
    };
    Ok(Arc::new(config))
}

/// [`redis_client_config`] from the files `config` names when its Redis URL is
/// `rediss://`; `None` otherwise.
pub fn redis_settings(config: &crate::config::Config) -> Result<Option<Arc<ClientConfig>>, String> {
    match &config.redis_url {
        Some(url) if url.tls => {
            redis_client_config(config.redis_ca.as_deref(), config.redis_client_files()).map(Some)
        }
        _ => Ok(None),
    }
}

/// Every certificate in a PEM file; `what` names the file in the error.
fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|err| format!("cannot read {what} {}: {err}", path.display()))
}

/// The first private key in a PEM file.
fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| format!("cannot read {what} {}: {err}", path.display()))
}

/// `SSL_CERT_FILE` (as OpenSSL reads it), else the first of [`SYSTEM_CA_FILES`] there.
fn system_ca_file() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|path| !path.is_empty()) {
        return Some(path.into());
    }
    SYSTEM_CA_FILES.iter().map(std::path::PathBuf::from).find(|path| path.is_file())
}

/// The notAfter of a DER certificate, in seconds since the Unix epoch: read by hand, as
/// nothing in the tree exposes it (Certificate, TBSCertificate, then past version,
/// serial number, signature algorithm and issuer to the validity).
pub fn not_after(der: &[u8]) -> Option<u64> {
    let (_, cert, _) = der_item(der)?;
    let (_, tbs, _) = der_item(cert)?;
    let (tag, _, mut rest) = der_item(tbs)?;
    if tag != 0xa0 {
        rest = tbs;
    }
    for _ in 0..3 {
        rest = der_item(rest)?.2;
    }
    let (_, validity, _) = der_item(rest)?;
    let (_, _, validity) = der_item(validity)?;
    let (tag, time, _) = der_item(validity)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        // UTCTime: YYMMDDHHMMSSZ, years 1950 to 2049.
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        // GeneralizedTime: YYYYMMDDHHMMSSZ.
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if rest.get(10..) != Some("Z") {
        return None;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// One DER item: its tag, its content and what follows it.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    let (content, after) = rest.split_at_checked(len)?;
    Some((tag, content, after))
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A TLS connection over a non-blocking TCP stream: the server's side of a client's, or
/// the client's side of a Redis link.
pub struct TlsStream {
    tcp: TcpStream,
    tls: Connection,
    /// The socket reported end of file: no more ciphertext will come.
    eof: bool,
    /// The completed handshake was counted ([`TlsStream::take_handshake_completed`]).
    counted: bool,
    /// Why rustls gave up, if it did.
    failure: Option<TlsFailure>,
}

impl TlsStream {
    pub fn new(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream { tcp, tls: tls.into(), eof: false, counted: false, failure: None })
    }

    /// The client's side, to `server` (the name or IP address its certificate must show).
    pub fn client(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        server: ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let tls = ClientConnection::new(config, server).map_err(io::Error::other)?;
        Ok(TlsStream { tcp, tls: tls.into(), eof: false, counted: false, failure: None })
    }

    /// The TCP stream under it: for connect errors, the peer's address, socket options.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// True once, when the handshake is found complete: for the metrics.
    pub fn take_handshake_completed(&mut self) -> bool {
        if self.counted || self.tls.is_handshaking() {
            return false;
        }
        self.counted = true;
        true
    }

    /// Why the handshake failed, for a connection that ends before it completed (`None`
    /// when it completed): what rustls said, else a timeout or the client's hang-up.
    pub fn handshake_failure(&self, timed_out: bool) -> Option<TlsFailure> {
        if self.counted || !self.tls.is_handshaking() {
            return None;
        }
        Some(self.failure.unwrap_or(if timed_out { TlsFailure::Timeout } else { TlsFailure::Closed }))
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
        if let Err(err) = processed {
            self.failure.get_or_insert(classify(&err));
            return Err(io::Error::new(ErrorKind::InvalidData, err));
        }
        Ok(n)
    }
}

/// What a rustls error says about the client, for the metrics.
fn classify(err: &rustls::Error) -> TlsFailure {
    use rustls::Error;
    match err {
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::PeerSentOversizedRecord
        | Error::PeerMisbehaved(_)
        | Error::DecryptError => TlsFailure::NotTls,
        Error::PeerIncompatible(_) | Error::NoApplicationProtocol => TlsFailure::Incompatible,
        Error::AlertReceived(_) => TlsFailure::Alert,
        _ => TlsFailure::Error,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn der_items_reject_what_runs_past_the_end() {
        assert_eq!(der_item(&[0x30, 0x02, 1, 2, 9]), Some((0x30, &[1u8, 2][..], &[9u8][..])));
        assert_eq!(der_item(&[0x30, 0x81, 0x01, 7]), Some((0x30, &[7u8][..], &[][..])));
        assert_eq!(der_item(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(der_item(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_item(&[0x30]), None);
        assert_eq!(not_after(&[0x30, 0x00]), None);
        assert_eq!(not_after(b"not a certificate at all"), None);
    }
}
