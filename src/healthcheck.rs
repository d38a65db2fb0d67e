//! `diva-signal --healthcheck`: asks the local server's `/health` and reports.
//! For container health checks in a `scratch` image, where there is no curl.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// Longest health response read; the real one is about 150 bytes.
const MAX_RESPONSE: u64 = 16 * 1024;

/// The address to reach the server configured by `config` from this host.
pub fn target(config: &Config) -> SocketAddr {
    let ip = match config.bind {
        // The default listens on IPv4 whether or not the host has IPv6.
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(IpAddr::V4(ip)) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(IpAddr::V6(ip)) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Some(ip) => ip,
    };
    SocketAddr::new(ip, config.port)
}

/// Checks `GET /health` at `addr`, over TLS when `tls`: Ok with the body when the server
/// says it is ok.
pub fn check(addr: SocketAddr, timeout: Duration, tls: bool) -> Result<String, String> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|err| err.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|err| err.to_string())?;
    let response = if tls { ask_over_tls(addr, stream)? } else { ask(addr, stream)? };
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(format!("{addr} answered: {}", head.lines().next().unwrap_or("nothing")));
    }
    if !body.contains("\"status\":\"ok\"") {
        return Err(format!("{addr} is not healthy: {}", body.trim()));
    }
    Ok(body.trim().to_owned())
}

/// Sends the request and reads the response, to the end of the stream.
fn ask(addr: SocketAddr, mut stream: impl Read + Write) -> Result<Vec<u8>, String> {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|err| format!("cannot send to {addr}: {err}"))?;
    let mut response = Vec::new();
    match stream.take(MAX_RESPONSE).read_to_end(&mut response) {
        Ok(_) => Ok(response),
        // The end without TLS's close_notify: what came is the answer all the same.
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => Ok(response),
        Err(err) => Err(format!("no answer from {addr}: {err}")),
    }
}

/// [`ask`] over TLS. The certificate is not verified: the server asked is the one this
/// configuration describes, on this host, and its certificate names a public host, not
/// the loopback address. Its handshake signatures are checked all the same.
#[cfg(feature = "tls")]
fn ask_over_tls(addr: SocketAddr, stream: TcpStream) -> Result<Vec<u8>, String> {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| format!("TLS: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|err| err.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|err| format!("TLS: {err}"))?;
    ask(addr, rustls::StreamOwned::new(conn, stream))
}

#[cfg(not(feature = "tls"))]
fn ask_over_tls(_addr: SocketAddr, _stream: TcpStream) -> Result<Vec<u8>, String> {
    Err("this build has no TLS".into())
}

/// Takes whatever certificate the server shows, and checks its handshake signatures.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

#[cfg(feature = "tls")]
impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_bind_addresses_are_asked_over_loopback() {
        let at = |bind: Option<&str>| {
            let bind = bind.map(|ip| ip.parse().expect("ip"));
            target(&Config { bind, port: 3903, ..Config::default() }).to_string()
        };
        // The default listens on IPv4 even where the host has no IPv6.
        assert_eq!(at(None), "127.0.0.1:3903");
        assert_eq!(at(Some("0.0.0.0")), "127.0.0.1:3903");
        assert_eq!(at(Some("::")), "[::1]:3903");
        assert_eq!(at(Some("192.0.2.7")), "192.0.2.7:3903");
    }
}
