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

/// Checks `GET /health` at `addr`: Ok with the body when the server says it is ok.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|err| err.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|err| err.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|err| format!("cannot send to {addr}: {err}"))?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .map_err(|err| format!("no answer from {addr}: {err}"))?;
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
