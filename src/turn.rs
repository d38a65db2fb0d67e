//! TURN credentials by the "TURN REST API" scheme (draft-uberti-behave-turn-rest-00), as
//! coturn checks them with `use-auth-secret`: the username is `EXPIRY:TAG` (a Unix time and
//! an opaque word), the password base64(HMAC-SHA1(secret, username)). Pure: the caller
//! passes the time and the tag; nothing here reads a clock or a socket.
//!
//! The secret never leaves this module except as HMAC output: its `Debug` says nothing,
//! and no error text carries it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha1::Sha1;

/// The draft's default lifetime of a credential: one day.
pub const DEFAULT_TTL: u64 = 86_400;

/// The shared secret of the TURN server. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// A secret from its text; surrounding whitespace (a file's last newline) is dropped.
    pub fn new(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the TURN secret is empty".into());
        }
        Ok(Secret(text.as_bytes().into()))
    }

    /// Reads a secret file. Errors name the file, never its contents.
    pub fn read(path: &Path) -> Result<Secret, String> {
        let text =
            std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        Secret::new(&text).map_err(|why| format!("{}: {why}", path.display()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// What the server hands out as ICE servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// The secret shared with the TURN server (`static-auth-secret` in coturn).
    pub secret: Option<Secret>,
    /// Where the secret came from, when from a file: read again on SIGHUP.
    pub secret_file: Option<PathBuf>,
    /// `turn:` and `turns:` URIs, handed out with credentials.
    pub turn_urls: Vec<String>,
    /// `stun:` and `stuns:` URIs, handed out as they are.
    pub stun_urls: Vec<String>,
    /// Seconds a credential is valid.
    pub ttl: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            secret: None,
            secret_file: None,
            turn_urls: Vec::new(),
            stun_urls: Vec::new(),
            ttl: DEFAULT_TTL,
        }
    }
}

impl TurnConfig {
    /// True when an answer carries a TURN credential.
    pub fn issues_credentials(&self) -> bool {
        self.secret.is_some() && !self.turn_urls.is_empty()
    }
}

/// base64(HMAC-SHA1(secret, username)): the password coturn expects for `username`.
pub fn credential(secret: &Secret, username: &str) -> String {
    // HMAC takes keys of any length: this never fails, but the API says it might.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&secret.0) else { return String::new() };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The ICE servers as a JSON array, ready for `new RTCPeerConnection({iceServers})`: one
/// entry with a fresh username and credential for the TURN URIs (valid until `now_unix` plus
/// the TTL; `tag` names the requester), one for the STUN URIs; `[]` when nothing is set up.
pub fn ice_servers(config: &TurnConfig, now_unix: u64, tag: &str) -> String {
    let mut out = String::from("[");
    if let Some(secret) = config.secret.as_ref().filter(|_| !config.turn_urls.is_empty()) {
        let username = format!("{}:{tag}", now_unix.saturating_add(config.ttl));
        let password = credential(secret, &username);
        push_urls(&mut out, &config.turn_urls);
        let _ = write!(
            out,
            ",\"username\":{},\"credential\":{}}}",
            json_string(&username),
            json_string(&password)
        );
    }
    if !config.stun_urls.is_empty() {
        if out.len() > 1 {
            out.push(',');
        }
        push_urls(&mut out, &config.stun_urls);
        out.push('}');
    }
    out.push(']');
    out
}

/// `GET /turn`: `{"iceServers":[...],"ttl":N}`.
pub fn http_body(config: &TurnConfig, now_unix: u64, tag: &str) -> String {
    format!("{{\"iceServers\":{},\"ttl\":{}}}\n", ice_servers(config, now_unix, tag), config.ttl)
}

/// Appends `{"urls":[...]` (the object left open).
fn push_urls(out: &mut String, urls: &[String]) {
    out.push_str("{\"urls\":[");
    for (i, url) in urls.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_string(url));
    }
    out.push(']');
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Checks a TURN URI (RFC 7065): `turn:` or `turns:`, a host (name, IPv4, or IPv6 in
/// brackets), an optional port, and optionally `?transport=udp` or `?transport=tcp`.
pub fn check_turn_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("turn:")
        .or_else(|| url.strip_prefix("turns:"))
        .ok_or_else(|| format!("{url:?} is not a turn: or turns: URI"))?;
    let (authority, query) = rest.split_once('?').map_or((rest, None), |(a, q)| (a, Some(q)));
    if let Some(query) = query
        && !matches!(query, "transport=udp" | "transport=tcp")
    {
        return Err(format!("{url:?}: the only query allowed is ?transport=udp or ?transport=tcp"));
    }
    check_host_port(url, authority)
}

/// Checks a STUN URI (RFC 7064): `stun:` or `stuns:`, a host and an optional port.
pub fn check_stun_url(url: &str) -> Result<(), String> {
    let authority = url
        .strip_prefix("stun:")
        .or_else(|| url.strip_prefix("stuns:"))
        .ok_or_else(|| format!("{url:?} is not a stun: or stuns: URI"))?;
    check_host_port(url, authority)
}

fn check_host_port(url: &str, authority: &str) -> Result<(), String> {
    let bad = || format!("{url:?}: expected host or host:port after the scheme (IPv6 in brackets)");
    let (host_ok, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
        };
        (addr.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = authority.split_once(':').map_or((authority, None), |(h, p)| (h, Some(p)));
        let ok = !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        (ok, port)
    };
    if !host_ok {
        return Err(bad());
    }
    if let Some(port) = port
        && port.parse::<u16>().ok().filter(|&p| p > 0).is_none()
    {
        return Err(format!("{url:?}: the port must be a number from 1 to 65535"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(turn: &[&str], stun: &[&str]) -> TurnConfig {
        TurnConfig {
            secret: Some(Secret::new("north").unwrap_or_else(|_| unreachable!())),
            turn_urls: turn.iter().map(|u| u.to_string()).collect(),
            stun_urls: stun.iter().map(|u| u.to_string()).collect(),
            ..TurnConfig::default()
        }
    }

    #[test]
    fn credential_matches_an_independent_computation() {
        // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'north',
        //   b'1700086400:test', hashlib.sha1).digest()).decode())"
        // printf '1700086400:test' | openssl dgst -sha1 -hmac north -binary | base64
        let secret = Secret::new("north\n").unwrap_or_else(|_| unreachable!());
        assert_eq!(credential(&secret, "1700086400:test"), "RFTLrnLX4AKl3eAj/xMzbzAXjKk=");
    }

    #[test]
    fn ice_servers_carry_expiry_tag_and_credential() {
        let json = ice_servers(
            &config(&["turn:t.example:3478?transport=udp"], &["stun:s.example"]),
            1_700_000_000,
            "test",
        );
        assert_eq!(
            json,
            r#"[{"urls":["turn:t.example:3478?transport=udp"],"username":"1700086400:test","credential":"RFTLrnLX4AKl3eAj/xMzbzAXjKk="},{"urls":["stun:s.example"]}]"#
        );
        let body = http_body(&config(&[], &["stun:s.example"]), 0, "x");
        assert_eq!(body, "{\"iceServers\":[{\"urls\":[\"stun:s.example\"]}],\"ttl\":86400}\n");
    }

    #[test]
    fn nothing_configured_is_an_empty_list() {
        assert_eq!(ice_servers(&TurnConfig::default(), 1, "t"), "[]");
        // A secret without TURN URIs hands out no credential.
        assert_eq!(ice_servers(&config(&[], &[]), 1, "t"), "[]");
        assert!(!config(&[], &["stun:a"]).issues_credentials());
        assert!(config(&["turn:a"], &[]).issues_credentials());
    }

    #[test]
    fn the_secret_is_never_shown() {
        let shown = format!("{:?}", config(&["turn:a"], &[]));
        assert!(!shown.contains("north"), "{shown}");
        assert!(Secret::new(" \n").is_err());
    }

    #[test]
    fn uris_are_checked() {
        for good in [
            "turn:turn.example.org",
            "turn:turn.example.org:3478",
            "turns:turn.example.org:5349?transport=tcp",
            "turn:192.0.2.1:3478?transport=udp",
            "turn:[2001:db8::1]:3478",
            "turn:[::1]",
        ] {
            assert_eq!(check_turn_url(good), Ok(()), "{good}");
        }
        for bad in [
            "turn:",
            "stun:a",
            "http://a",
            "turn:a:0",
            "turn:a:70000",
            "turn:a?transport=sctp",
            "turn:a?foo=bar",
            "turn:user@a",
            "turn:[zz]:1",
            "turn:a b",
        ] {
            assert!(check_turn_url(bad).is_err(), "{bad}");
        }
        assert_eq!(check_stun_url("stun:stun.example.org:19302"), Ok(()));
        assert_eq!(check_stun_url("stuns:[::1]:5349"), Ok(()));
        assert!(check_stun_url("stun:a?transport=udp").is_err());
        assert!(check_stun_url("turn:a").is_err());
    }
}
