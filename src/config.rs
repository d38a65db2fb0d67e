//! Configuration from command-line flags and environment variables.
//!
//! Every setting has a flag, an environment variable and a default; a flag
//! wins over the variable. One table, [`SETTINGS`], drives parsing and `--help`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::logging::LogLevel;
use crate::redis::RedisUrl;
use crate::rooms::RoomLimits;
use crate::turn::{self, Secret, TurnConfig};

/// Everything the server needs to know to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on; `None` is the original's default: `::` for IPv6 and IPv4
    /// together, or `0.0.0.0` where the host has no IPv6 (see `listen`).
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub log_level: LogLevel,
    /// Largest WebSocket frame or message a client may send, in bytes.
    pub max_message_size: usize,
    /// Open client connections at most; `None` derives it from the open-file limit.
    pub max_connections: Option<usize>,
    /// Open connections from one IPv4 address or IPv6 /64 at most; 0: no such limit.
    pub max_connections_per_ip: u32,
    pub room_limits: RoomLimits,
    /// Sustained messages per second one connection may send.
    pub rate_per_sec: u32,
    /// Messages one connection may send in a burst above the sustained rate.
    pub rate_burst: u32,
    /// Bytes queued for one client past which signals to it are refused (`peer-busy`).
    pub max_outbound: usize,
    /// Bytes queued for all clients together past which signals are refused and clients
    /// whose sockets take nothing are dropped first.
    pub max_outbound_total: usize,
    /// Time a client's socket may take no bytes while output waits before it is dropped.
    pub stall_timeout: Duration,
    /// Time a client has to send its complete request head.
    pub handshake_timeout: Duration,
    /// Quiet time after which the server pings a client.
    pub ping_interval: Duration,
    /// Quiet time after which a client is dropped.
    pub idle_timeout: Duration,
    /// Time the holder of a contested address has to answer a ping.
    pub probe_timeout: Duration,
    /// When not empty, a WebSocket upgrade must carry `?token=` with one of these.
    pub access_tokens: Vec<String>,
    /// When not empty, browsers from other origins are refused.
    pub allowed_origins: Vec<String>,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// Client networks allowed to read `/metrics`; `None` means loopback only.
    pub metrics_allow: Option<Vec<IpNet>>,
    /// Reverse proxies whose `X-Forwarded-For` names the client; `None` means loopback (a
    /// proxy on the same host, as in the original's nginx setup); empty: none.
    pub trust_proxy: Option<Vec<IpNet>>,
    /// Keep polling without sleeping for this long after the last event (zero: never).
    /// Saves the wake-up latency of an idle process at the cost of a busy core.
    pub busy_poll: Duration,
    /// TURN credentials and STUN servers handed out by `["turn"]` and `GET /turn`.
    pub turn: TurnConfig,
    /// The certificate chain (PEM) and its private key: with both, the port speaks TLS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Cluster: the Redis that the nodes share rooms through; `None`: a single node.
    pub redis_url: Option<RedisUrl>,
    /// Cluster: a node that has not renewed its lease for this long is dead.
    pub node_timeout: Duration,
    /// `rediss://`: the CA certificates (PEM) Redis's certificate must chain to; `None`:
    /// the system's.
    pub redis_ca: Option<PathBuf>,
    /// `rediss://`: the certificate chain and key (PEM) shown to a Redis that asks.
    pub redis_cert: Option<PathBuf>,
    pub redis_key: Option<PathBuf>,
    /// Things in the configuration the operator should hear about, logged at start.
    pub warnings: Vec<String>,
}

/// An IP network: an address and a prefix length, such as 127.0.0.0/8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// True when `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix {
            None => max,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("bad prefix length in {text:?}"))?,
        };
        // ::ffff:10.0.0.0/104 is 10.0.0.0/8: addresses are compared in their IPv4 form.
        match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
                Ok(IpNet { addr: addr.to_canonical(), prefix: prefix - 96 })
            }
            _ => Ok(IpNet { addr, prefix }),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: None,
            port: 3903,
            log_level: LogLevel::Info,
            max_message_size: 64 * 1024,
            max_connections: None,
            max_connections_per_ip: 256,
            room_limits: RoomLimits::default(),
            rate_per_sec: 100,
            rate_burst: 500,
            max_outbound: 1024 * 1024,
            max_outbound_total: 64 * 1024 * 1024,
            stall_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            probe_timeout: Duration::from_secs(5),
            access_tokens: Vec::new(),
            allowed_origins: Vec::new(),
            metrics: true,
            metrics_allow: None,
            trust_proxy: None,
            busy_poll: Duration::ZERO,
            turn: TurnConfig::default(),
            tls_cert: None,
            tls_key: None,
            redis_url: None,
            node_timeout: Duration::from_secs(10),
            redis_ca: None,
            redis_cert: None,
            redis_key: None,
            warnings: Vec::new(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    /// Check the health of the server this configuration describes, then exit.
    Healthcheck(Box<Config>),
    Help,
    Version,
}

type Apply = fn(&mut Config, &str) -> Result<(), String>;

/// One setting: its flag, its environment variable, its help line and how to apply a value.
struct Setting {
    flag: &'static str,
    /// The value may be left out on the command line: `--flag` alone means `on`.
    switch: bool,
    env: &'static str,
    default: &'static str,
    help: &'static str,
    apply: Apply,
}

const SETTINGS: &[Setting] = &[
    Setting {
        switch: false,
        flag: "--port",
        env: "PORT",
        default: "3903",
        help: "TCP port to listen on (0 picks a free one)",
        apply: |c, v| parse_into(&mut c.port, v, "a port number from 0 to 65535"),
    },
    Setting {
        switch: false,
        flag: "--bind",
        env: "BIND_IP",
        default: "::, else 0.0.0.0",
        help: "IP address to listen on (:: takes IPv6 and IPv4); unset: ::, or 0.0.0.0 without IPv6",
        apply: |c, v| {
            let ip = v.trim().parse().map_err(|_| "expected an IP address such as 0.0.0.0 or ::1")?;
            c.bind = Some(ip);
            Ok(())
        },
    },
    Setting {
        switch: false,
        flag: "--log-level",
        env: "LOG_LEVEL",
        default: "info",
        help: "fatal, error, warn, info, debug, trace or silent (as the original's)",
        apply: |c, v| {
            c.log_level = v.parse()?;
            Ok(())
        },
    },
    Setting {
        switch: false,
        flag: "--max-message-size",
        env: "MAX_MESSAGE_SIZE",
        default: "64KiB",
        help: "largest message a client may send (bytes, or with KiB/MiB)",
        apply: |c, v| size_into(&mut c.max_message_size, v, 1024, 16 * 1024 * 1024),
    },
    Setting {
        switch: false,
        flag: "--max-connections",
        env: "MAX_CONNECTIONS",
        default: "open-file limit - 40",
        help: "open client connections at most; more get HTTP 503 (8 more kept for local HTTP)",
        apply: |c, v| {
            let mut n = 0usize;
            parse_into(&mut n, v, "a whole number of at least 1")?;
            if n == 0 {
                return Err("must be at least 1".into());
            }
            c.max_connections = Some(n);
            Ok(())
        },
    },
    Setting {
        switch: false,
        flag: "--max-connections-per-ip",
        env: "MAX_CONNECTIONS_PER_IP",
        default: "256",
        help: "open connections from one IPv4 address or IPv6 /64; more get HTTP 429 (0: no limit)",
        apply: |c, v| parse_into(&mut c.max_connections_per_ip, v, "a whole number (0: no limit)"),
    },
    Setting {
        switch: false,
        flag: "--max-idents",
        env: "MAX_IDENTS_PER_CONNECTION",
        default: "32",
        help: "addresses one connection may hold",
        apply: |c, v| count_into(&mut c.room_limits.max_idents_per_conn, v),
    },
    Setting {
        switch: false,
        flag: "--max-room-members",
        env: "MAX_ROOM_MEMBERS",
        default: "256",
        help: "members one room may have",
        apply: |c, v| count_into(&mut c.room_limits.max_room_members, v),
    },
    Setting {
        switch: false,
        flag: "--max-name-length",
        env: "MAX_NAME_LENGTH",
        default: "256",
        help: "longest ident or room name, in bytes",
        apply: |c, v| count_into(&mut c.room_limits.max_name_len, v),
    },
    Setting {
        switch: false,
        flag: "--rate",
        env: "RATE_LIMIT",
        default: "100",
        help: "messages per second one connection may send, sustained",
        apply: |c, v| count_into(&mut c.rate_per_sec, v),
    },
    Setting {
        switch: false,
        flag: "--burst",
        env: "RATE_BURST",
        default: "500",
        help: "messages one connection may send at once above the rate",
        apply: |c, v| count_into(&mut c.rate_burst, v),
    },
    Setting {
        switch: false,
        flag: "--max-outbound",
        env: "MAX_OUTBOUND_BUFFER",
        default: "1MiB",
        help: "bytes queued for one client past which signals to it are refused (peer-busy)",
        apply: |c, v| size_into(&mut c.max_outbound, v, 64 * 1024, 1024 * 1024 * 1024),
    },
    Setting {
        switch: false,
        flag: "--max-outbound-total",
        env: "MAX_OUTBOUND_TOTAL",
        default: "64MiB",
        help: "bytes queued for all clients together: past it signals are refused, the slowest readers dropped",
        apply: |c, v| size_into(&mut c.max_outbound_total, v, 1024 * 1024, usize::MAX),
    },
    Setting {
        switch: false,
        flag: "--stall-timeout",
        env: "STALL_TIMEOUT",
        default: "15",
        help: "seconds a client's socket may take no bytes while output waits before it is dropped",
        apply: |c, v| seconds_into(&mut c.stall_timeout, v),
    },
    Setting {
        switch: false,
        flag: "--handshake-timeout",
        env: "HANDSHAKE_TIMEOUT",
        default: "10",
        help: "seconds a client has to send its request head",
        apply: |c, v| seconds_into(&mut c.handshake_timeout, v),
    },
    Setting {
        switch: false,
        flag: "--ping-interval",
        env: "PING_INTERVAL",
        default: "30",
        help: "seconds of quiet before the server pings a client",
        apply: |c, v| seconds_into(&mut c.ping_interval, v),
    },
    Setting {
        switch: false,
        flag: "--idle-timeout",
        env: "IDLE_TIMEOUT",
        default: "90",
        help: "seconds of quiet before a client is dropped",
        apply: |c, v| seconds_into(&mut c.idle_timeout, v),
    },
    Setting {
        switch: false,
        flag: "--probe-timeout",
        env: "PROBE_TIMEOUT",
        default: "5",
        help: "seconds the holder of a contested address has to answer a ping",
        apply: |c, v| seconds_into(&mut c.probe_timeout, v),
    },
    Setting {
        switch: false,
        flag: "--access-token",
        env: "ACCESS_TOKEN",
        default: "none",
        help: "require ?token=TOKEN on WebSocket upgrades (repeatable; env: comma-separated)",
        apply: |c, v| list_into(&mut c.access_tokens, v),
    },
    Setting {
        switch: false,
        flag: "--access-token-file",
        env: "ACCESS_TOKEN_FILE",
        default: "none",
        help: "read accepted tokens from a file, one per line",
        apply: |c, v| {
            let text = std::fs::read_to_string(v).map_err(|err| format!("cannot read {v}: {err}"))?;
            let tokens =
                text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'));
            c.access_tokens.extend(tokens.map(str::to_owned));
            Ok(())
        },
    },
    Setting {
        switch: false,
        flag: "--allowed-origin",
        env: "ALLOWED_ORIGINS",
        default: "any",
        help: "accept browsers only from this Origin (repeatable; env: comma-separated)",
        apply: |c, v| list_into(&mut c.allowed_origins, v),
    },
    Setting {
        switch: false,
        flag: "--metrics",
        env: "METRICS",
        default: "on",
        help: "serve Prometheus metrics at /metrics: on or off",
        apply: |c, v| bool_into(&mut c.metrics, v),
    },
    Setting {
        switch: false,
        flag: "--metrics-allow",
        env: "METRICS_ALLOW",
        default: "127.0.0.0/8,::1",
        help: "client networks that may read /metrics (replaces the default; env: comma-separated)",
        apply: |c, v| {
            let nets = v
                .split(',')
                .filter(|n| !n.trim().is_empty())
                .map(str::parse)
                .collect::<Result<Vec<IpNet>, _>>()?;
            if nets.is_empty() {
                return Err("must not be empty (use --metrics off to turn metrics off)".into());
            }
            c.metrics_allow.get_or_insert_with(Vec::new).extend(nets);
            Ok(())
        },
    },
    Setting {
        switch: true,
        flag: "--trust-proxy",
        env: "TRUST_PROXY",
        default: "127.0.0.0/8,::1",
        help: "reverse proxies (networks) whose X-Forwarded-For is read (replaces the default; \
               repeatable; env: comma-separated; off: none)",
        apply: trust_proxy_into,
    },
    Setting {
        switch: false,
        flag: "--turn-secret",
        env: "TURN_SECRET",
        default: "none",
        help: "secret shared with the TURN server (coturn: static-auth-secret); prefer the file",
        apply: |c, v| {
            c.turn.secret = Some(Secret::new(v)?);
            // A flag wins over the environment: no file to read again then.
            c.turn.secret_file = None;
            Ok(())
        },
    },
    Setting {
        switch: false,
        flag: "--turn-secret-file",
        env: "TURN_SECRET_FILE",
        default: "none",
        help: "read the TURN secret from this file (read again on SIGHUP)",
        apply: |c, v| {
            let path = std::path::PathBuf::from(v.trim());
            c.turn.secret = Some(Secret::read(&path)?);
            c.turn.secret_file = Some(path);
            Ok(())
        },
    },
    Setting {
        switch: false,
        flag: "--turn-url",
        env: "TURN_URLS",
        default: "none",
        help: "TURN server handed out with credentials: turn:HOST[:PORT][?transport=udp|tcp] \
               or turns: (repeatable; env: comma-separated)",
        apply: |c, v| urls_into(&mut c.turn.turn_urls, v, turn::check_turn_url),
    },
    Setting {
        switch: false,
        flag: "--stun-url",
        env: "STUN_URLS",
        default: "none",
        help: "STUN server handed out: stun:HOST[:PORT] or stuns: (repeatable; env: comma-separated)",
        apply: |c, v| urls_into(&mut c.turn.stun_urls, v, turn::check_stun_url),
    },
    Setting {
        switch: false,
        flag: "--turn-ttl",
        env: "TURN_TTL",
        default: "86400",
        help: "seconds a TURN credential is valid",
        apply: |c, v| {
            let mut ttl = 0u64;
            parse_into(&mut ttl, v, "a whole number of seconds")?;
            if !(1..=10 * 365 * 86_400).contains(&ttl) {
                return Err("must be between 1 and 315360000 seconds".into());
            }
            c.turn.ttl = ttl;
            Ok(())
        },
    },
    Setting {
        switch: false,
        flag: "--busy-poll",
        env: "BUSY_POLL",
        default: "0",
        help: "microseconds to keep polling without sleeping after the last event (0: off)",
        apply: |c, v| {
            let micros: u64 =
                v.trim().parse().map_err(|_| "expected a whole number of microseconds".to_owned())?;
            if micros > 1_000_000 {
                return Err("must be at most 1000000 (one second)".into());
            }
            c.busy_poll = Duration::from_micros(micros);
            Ok(())
        },
    },
    Setting {
        switch: false,
        flag: "--redis-url",
        env: "REDIS_URL",
        default: "none",
        help: "cluster: share rooms with other nodes through this Redis \
               (redis://[[user]:password@]host[:port][/db], rediss:// for TLS)",
        apply: |c, v| redis_url_into(&mut c.redis_url, v),
    },
    Setting {
        switch: false,
        flag: "--node-timeout",
        env: "NODE_TIMEOUT",
        default: "10",
        help: "cluster: seconds after which a node that stopped renewing its lease is dead",
        apply: |c, v| seconds_into(&mut c.node_timeout, v),
    },
    Setting {
        switch: false,
        flag: "--redis-ca",
        env: "REDIS_CA",
        default: "the system's",
        help: "rediss://: CA certificates (PEM) that Redis's certificate must chain to",
        apply: |c, v| path_into(&mut c.redis_ca, v),
    },
    Setting {
        switch: false,
        flag: "--redis-cert",
        env: "REDIS_CERT",
        default: "none",
        help: "rediss://: client certificate chain (PEM) for a Redis with tls-auth-clients (needs --redis-key)",
        apply: |c, v| path_into(&mut c.redis_cert, v),
    },
    Setting {
        switch: false,
        flag: "--redis-key",
        env: "REDIS_KEY",
        default: "none",
        help: "the private key of --redis-cert (PEM: PKCS#8, PKCS#1 or SEC1)",
        apply: |c, v| path_into(&mut c.redis_key, v),
    },
    Setting {
        switch: false,
        flag: "--tls-cert",
        env: "TLS_CERT",
        default: "none",
        help: "serve https:// and wss:// only, with this certificate chain (PEM; needs --tls-key)",
        apply: |c, v| path_into(&mut c.tls_cert, v),
    },
    Setting {
        switch: false,
        flag: "--tls-key",
        env: "TLS_KEY",
        default: "none",
        help: "the private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)",
        apply: |c, v| path_into(&mut c.tls_key, v),
    },
];

/// An empty value (`TLS_CERT=`) leaves the path unset.
fn redis_url_into(slot: &mut Option<RedisUrl>, value: &str) -> Result<(), String> {
    let value = value.trim();
    *slot = if value.is_empty() || value == "none" { None } else { Some(RedisUrl::parse(value)?) };
    Ok(())
}

fn path_into(slot: &mut Option<PathBuf>, value: &str) -> Result<(), String> {
    *slot = Some(value.trim()).filter(|v| !v.is_empty()).map(PathBuf::from);
    Ok(())
}

impl Config {
    /// Reads flags (`args`, without the program name) over environment variables (`env`).
    pub fn parse<A, E>(args: A, env: E) -> Result<Command, String>
    where
        A: IntoIterator<Item = String>,
        E: Fn(&str) -> Option<String>,
    {
        let mut config = Config::default();
        for setting in SETTINGS {
            if let Some(value) = env(setting.env) {
                (setting.apply)(&mut config, &value).map_err(|why| {
                    format!("environment variable {}={}: {why}", setting.env, shown(setting, &value))
                })?;
            }
        }
        // Flags replace what the environment said, except repeatable lists, which extend it.
        let mut args = args.into_iter().peekable();
        let mut healthcheck = false;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "-V" | "--version" => return Ok(Command::Version),
                "--healthcheck" => {
                    healthcheck = true;
                    continue;
                }
                _ => {}
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            let setting = SETTINGS
                .iter()
                .find(|s| s.flag == flag)
                .ok_or_else(|| format!("unknown option {flag:?} (see --help)"))?;
            let value = match inline {
                Some(value) => value,
                // `--trust-proxy 10.0.0.1` and a bare `--trust-proxy` (then `on`) both work:
                // no value of a switch starts with a dash, every flag does.
                None if setting.switch => args.next_if(|next| !next.starts_with('-')).unwrap_or("on".into()),
                None => args.next().ok_or_else(|| format!("option {flag} needs a value (see --help)"))?,
            };
            (setting.apply)(&mut config, &value)
                .map_err(|why| format!("option {flag} {}: {why}", shown(setting, &value)))?;
        }
        config.check()?;
        if healthcheck {
            return Ok(Command::Healthcheck(Box::new(config)));
        }
        Ok(Command::Run(Box::new(config)))
    }

    /// True when `ip` is a reverse proxy whose `X-Forwarded-For` is believed.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let nets = self.trust_proxy.as_deref().unwrap_or(&LOOPBACK);
        nets.iter().any(|net| net.contains(ip))
    }

    /// True when a client at `ip` may read `/metrics`.
    pub fn may_read_metrics(&self, ip: IpAddr) -> bool {
        match &self.metrics_allow {
            Some(nets) => nets.iter().any(|net| net.contains(ip)),
            None => ip.to_canonical().is_loopback(),
        }
    }

    /// True when the port speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    fn check(&self) -> Result<(), String> {
        if self.idle_timeout <= self.ping_interval {
            return Err("idle timeout must be longer than the ping interval".into());
        }
        if self.access_tokens.iter().any(|token| !token.bytes().all(is_token_byte)) {
            return Err("access tokens may use only letters, digits and - . _ ~".into());
        }
        if !self.turn.turn_urls.is_empty() && self.turn.secret.is_none() {
            return Err(
                "--turn-url needs the TURN server's secret: --turn-secret-file or --turn-secret".into()
            );
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err("--tls-cert (TLS_CERT) needs --tls-key (TLS_KEY) too".into()),
            (None, Some(_)) => return Err("--tls-key (TLS_KEY) needs --tls-cert (TLS_CERT) too".into()),
            (Some(_), Some(_)) if !cfg!(feature = "tls") => {
                return Err("--tls-cert and --tls-key: this build has no TLS (built without the \
                            `tls` feature)"
                    .into());
            }
            _ => {}
        }
        self.check_redis_tls()
    }

    fn check_redis_tls(&self) -> Result<(), String> {
        match (&self.redis_cert, &self.redis_key) {
            (Some(_), None) => {
                return Err("--redis-cert (REDIS_CERT) needs --redis-key (REDIS_KEY) too".into());
            }
            (None, Some(_)) => {
                return Err("--redis-key (REDIS_KEY) needs --redis-cert (REDIS_CERT) too".into());
            }
            _ => {}
        }
        let files_given = self.redis_ca.is_some() || self.redis_cert.is_some();
        match &self.redis_url {
            Some(url) if url.tls && !cfg!(feature = "tls") => {
                Err("rediss://: this build has no TLS (built without the `tls` feature)".into())
            }
            Some(url) if url.tls => Ok(()),
            _ if files_given => {
                Err("--redis-ca, --redis-cert and --redis-key are for a rediss:// --redis-url".into())
            }
            _ => Ok(()),
        }
    }

    /// `rediss://`'s client certificate and key, when both are given.
    pub fn redis_client_files(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        Some((self.redis_cert.as_deref()?, self.redis_key.as_deref()?))
    }
}

/// A value as error text may show it: a secret is never shown.
fn shown(setting: &Setting, value: &str) -> String {
    match setting.flag {
        "--turn-secret" => "(hidden)".into(),
        // A Redis URL may hold a password (`redis://user:password@host`): never shown.
        "--redis-url" => match value.split_once("://").and_then(|(scheme, rest)| {
            rest.rsplit_once('@').map(|(_, host)| format!("{scheme}://(hidden)@{host}"))
        }) {
            Some(redacted) => format!("{redacted:?}"),
            None => format!("{value:?}"),
        },
        _ => format!("{value:?}"),
    }
}

/// Adds checked URIs from a comma-separated list.
fn urls_into(
    list: &mut Vec<String>,
    value: &str,
    check: fn(&str) -> Result<(), String>,
) -> Result<(), String> {
    let mut urls = Vec::new();
    list_into(&mut urls, value)?;
    for url in &urls {
        check(url)?;
    }
    list.extend(urls);
    Ok(())
}

/// Bytes that survive in a URL query unescaped (RFC 3986 unreserved characters).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The text of `--help`.
pub fn help_text() -> String {
    let mut text = format!(
        "diva-signal {}: WebRTC signaling server, compatible with the DIVA.EXCHANGE signal server\n\n\
         Usage: diva-signal [OPTION VALUE]...\n\nOptions (flag, environment variable, default):\n",
        env!("CARGO_PKG_VERSION")
    );
    for s in SETTINGS {
        let _ = writeln!(text, "  {:<22} {:<26} {:<22} {}", s.flag, s.env, s.default, s.help);
    }
    text.push_str(
        "  --healthcheck          ask the server configured by the options above for /health;\n\
         \x20                        exit 0 if healthy, 1 if not (for container health checks)\n\
         \x20 -h, --help             print this help\n\
         \x20 -V, --version          print the version\n",
    );
    text
}

fn parse_into<T: std::str::FromStr>(slot: &mut T, value: &str, expected: &str) -> Result<(), String> {
    *slot = value.trim().parse().map_err(|_| format!("expected {expected}"))?;
    Ok(())
}

fn count_into<T: std::str::FromStr + PartialEq + From<u8>>(slot: &mut T, value: &str) -> Result<(), String> {
    parse_into(slot, value, "a whole number of at least 1")?;
    if *slot == T::from(0) {
        return Err("must be at least 1".into());
    }
    Ok(())
}

fn size_into(slot: &mut usize, value: &str, min: usize, max: usize) -> Result<(), String> {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    let (number, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => lower.split_at(at),
        None => (lower.as_str(), ""),
    };
    let scale = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err("expected a size such as 65536, 64KiB or 1MiB".into()),
    };
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or("expected a size such as 65536, 64KiB or 1MiB")?;
    if !(min..=max).contains(&bytes) {
        return Err(format!("must be between {min} and {max} bytes"));
    }
    *slot = bytes;
    Ok(())
}

fn seconds_into(slot: &mut Duration, value: &str) -> Result<(), String> {
    let seconds: f64 = value.trim().parse().map_err(|_| "expected a number of seconds".to_owned())?;
    if !(0.01..=86_400.0).contains(&seconds) {
        return Err("must be between 0.01 and 86400 seconds".into());
    }
    *slot = Duration::from_secs_f64(seconds);
    Ok(())
}

fn bool_into(slot: &mut bool, value: &str) -> Result<(), String> {
    *slot = match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => true,
        "0" | "false" | "off" | "no" => false,
        _ => return Err("expected on or off".into()),
    };
    Ok(())
}

/// `--trust-proxy`: `off`, or networks, where `on` (the switch it used to be, which
/// trusted any peer) stands for loopback, so that old configurations keep starting.
fn trust_proxy_into(config: &mut Config, value: &str) -> Result<(), String> {
    const ON: [&str; 4] = ["1", "true", "on", "yes"];
    const OFF: [&str; 4] = ["0", "false", "off", "no"];
    if OFF.contains(&value.trim().to_ascii_lowercase().as_str()) {
        config.trust_proxy = Some(Vec::new());
        return Ok(());
    }
    let mut nets = Vec::new();
    for item in value.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        if ON.contains(&item.to_ascii_lowercase().as_str()) {
            let warning = format!(
                "--trust-proxy {item} is deprecated and now trusts loopback proxies only \
                 (127.0.0.0/8, ::1); name your proxies' networks instead"
            );
            if !config.warnings.contains(&warning) {
                config.warnings.push(warning);
            }
            nets.extend(LOOPBACK);
        } else {
            nets.push(item.parse()?);
        }
    }
    if nets.is_empty() {
        return Err("expected networks such as 127.0.0.1 or 10.0.0.0/8, or off".into());
    }
    config.trust_proxy.get_or_insert_with(Vec::new).extend(nets);
    Ok(())
}

/// The networks trusted by default, and that `--trust-proxy on` stands for: 127.0.0.0/8 and ::1.
const LOOPBACK: [IpNet; 2] = [
    IpNet { addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), prefix: 8 },
    IpNet { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix: 128 },
];

fn list_into(list: &mut Vec<String>, value: &str) -> Result<(), String> {
    let items: Vec<String> =
        value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect();
    if items.is_empty() {
        return Err("must not be empty".into());
    }
    list.extend(items);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        match Config::parse(args.iter().map(|a| a.to_string()), lookup)? {
            Command::Run(config) => Ok(*config),
            other => Err(format!("not a run: {other:?}")),
        }
    }

    #[test]
    fn defaults_match_the_original() {
        let config = parse(&[], &[]).expect("defaults");
        assert_eq!((config.bind, config.port), (None, 3903));
        assert_eq!(config.log_level, LogLevel::Info);
    }

    #[test]
    fn flags_override_environment() {
        let config = parse(&["--port", "4000", "--log-level=debug"], &[("PORT", "5000"), ("BIND_IP", "::1")])
            .expect("valid");
        assert_eq!(config.port, 4000);
        assert_eq!(config.bind, Some("::1".parse().expect("ip")));
        assert_eq!(config.log_level, LogLevel::Debug);
    }

    #[test]
    fn every_log_level_of_the_original_is_accepted() {
        for (name, level) in [
            ("fatal", LogLevel::Fatal),
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
            ("silent", LogLevel::Silent),
        ] {
            assert_eq!(parse(&[], &[("LOG_LEVEL", name)]).expect(name).log_level, level);
            let upper = name.to_ascii_uppercase();
            assert_eq!(parse(&["--log-level", &upper], &[]).expect(name).log_level, level);
        }
    }

    #[test]
    fn sizes_durations_and_lists() {
        let config = parse(
            &["--max-message-size", "32KiB", "--probe-timeout", "0.5", "--allowed-origin", "https://a"],
            &[("ALLOWED_ORIGINS", "https://b, https://c"), ("ACCESS_TOKEN", "t1,t2")],
        )
        .expect("valid");
        assert_eq!(config.max_message_size, 32 * 1024);
        assert_eq!(config.probe_timeout, Duration::from_millis(500));
        assert_eq!(config.allowed_origins, ["https://b", "https://c", "https://a"]);
        assert_eq!(config.access_tokens, ["t1", "t2"]);
        assert_eq!(parse(&[], &[]).expect("defaults").busy_poll, Duration::ZERO);
        let busy = parse(&["--busy-poll", "200"], &[]).expect("valid");
        assert_eq!(busy.busy_poll, Duration::from_micros(200));
        assert_eq!(parse(&[], &[]).expect("defaults").max_connections_per_ip, 256);
        let per_ip = parse(&["--max-connections-per-ip", "0"], &[("MAX_CONNECTIONS_PER_IP", "9")]);
        assert_eq!(per_ip.expect("valid").max_connections_per_ip, 0);
        let per_ip = parse(&[], &[("MAX_CONNECTIONS_PER_IP", "9")]);
        assert_eq!(per_ip.expect("valid").max_connections_per_ip, 9);
    }

    #[test]
    fn bad_values_are_explained() {
        for (args, env) in [
            (&["--port", "70000"][..], &[][..]),
            (&["--port"][..], &[][..]),
            (&["--bogus", "1"][..], &[][..]),
            (&[][..], &[("LOG_LEVEL", "loud")][..]),
            (&["--max-message-size", "1GiB"][..], &[][..]),
            (&["--rate", "0"][..], &[][..]),
            (&["--busy-poll", "2000000"][..], &[][..]),
            (&["--busy-poll", "-1"][..], &[][..]),
            (&["--max-connections-per-ip", "-1"][..], &[][..]),
            (&["--max-connections-per-ip", "many"][..], &[][..]),
            (&["--idle-timeout", "10", "--ping-interval", "20"][..], &[][..]),
            (&["--access-token", "a b"][..], &[][..]),
        ] {
            let err = parse(args, env).expect_err("must be refused");
            assert!(!err.is_empty());
        }
    }

    #[test]
    fn trusted_proxies_are_networks_and_on_means_loopback() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        let nets = parse(&["--trust-proxy", "10.0.0.0/8", "--trust-proxy=192.0.2.7"], &[]).expect("valid");
        assert!(nets.is_trusted_proxy(ip("10.1.2.3")) && nets.is_trusted_proxy(ip("192.0.2.7")));
        assert!(nets.is_trusted_proxy(ip("::ffff:10.1.2.3")));
        assert!(!nets.is_trusted_proxy(ip("127.0.0.1")) && !nets.is_trusted_proxy(ip("192.0.2.8")));
        assert!(nets.warnings.is_empty());
        // The environment is a comma-separated list; flags add to it.
        let env = parse(&["--trust-proxy", "10.0.0.1"], &[("TRUST_PROXY", "127.0.0.1, ::1")]).expect("valid");
        assert!(env.is_trusted_proxy(ip("127.0.0.1")) && env.is_trusted_proxy(ip("::1")));
        assert!(env.is_trusted_proxy(ip("10.0.0.1")) && !env.is_trusted_proxy(ip("127.0.0.2")));
        // on, true and a bare flag (the old switch) mean loopback only, with a warning.
        for (args, env) in [
            (&["--trust-proxy"][..], &[][..]),
            (&["--trust-proxy", "--port", "1"][..], &[][..]),
            (&["--trust-proxy", "on"][..], &[][..]),
            (&["--trust-proxy=true"][..], &[][..]),
            (&[][..], &[("TRUST_PROXY", "on")][..]),
            (&[][..], &[("TRUST_PROXY", "yes")][..]),
        ] {
            let config = parse(args, env).expect("valid");
            assert!(
                config.is_trusted_proxy(ip("127.0.0.1")) && config.is_trusted_proxy(ip("::1")),
                "{args:?}"
            );
            assert!(
                config.is_trusted_proxy(ip("127.9.9.9")) && config.is_trusted_proxy(ip("::ffff:127.0.0.1"))
            );
            assert!(!config.is_trusted_proxy(ip("203.0.113.9")), "{args:?} {env:?}");
            assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        }
        for off in [&["--trust-proxy", "off"][..], &["--trust-proxy=false"][..], &[][..]] {
            assert_eq!(parse(off, &[("TRUST_PROXY", "0")]).expect("valid").trust_proxy, Some(Vec::new()));
        }
        let cleared = parse(&["--trust-proxy", "off"], &[("TRUST_PROXY", "10.0.0.0/8")]).expect("valid");
        assert_eq!(cleared.trust_proxy, Some(Vec::new()));
        for bad in ["maybe", "10.0.0.0/33", "", " , ", "10.0.0.1, nonsense"] {
            assert!(parse(&["--trust-proxy", bad], &[]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn networks_and_switches() {
        let config = parse(&["--metrics-allow", "10.0.0.0/8", "--metrics-allow=::1"], &[]).expect("valid");
        assert!(config.may_read_metrics("10.1.2.3".parse().expect("ip")));
        assert!(config.may_read_metrics("::1".parse().expect("ip")));
        assert!(!config.may_read_metrics("127.0.0.1".parse().expect("ip")));
        assert!(!config.may_read_metrics("11.0.0.1".parse().expect("ip")));
        let default = parse(&[], &[("METRICS", "off")]).expect("valid");
        assert!(!default.metrics && default.trust_proxy.is_none());
        // By default a proxy on the same host is believed, as the original's nginx setup has it.
        assert!(default.is_trusted_proxy("127.0.0.1".parse().expect("ip")));
        assert!(!default.is_trusted_proxy("192.0.2.1".parse().expect("ip")));
        assert!(default.may_read_metrics("127.0.0.1".parse().expect("ip")));
        assert!(default.may_read_metrics("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!default.may_read_metrics("192.0.2.1".parse().expect("ip")));
        assert!(parse(&["--metrics-allow", "10.0.0.0/33"], &[]).is_err());
        let mapped = parse(&["--metrics-allow", "::ffff:10.0.0.0/104"], &[]).expect("valid");
        assert!(mapped.may_read_metrics("10.9.8.7".parse().expect("ip")));
        assert!(mapped.may_read_metrics("::ffff:10.9.8.7".parse().expect("ip")));
        assert!(!mapped.may_read_metrics("11.0.0.1".parse().expect("ip")));
        assert!(parse(&["--metrics", "maybe"], &[]).is_err());
    }

    #[test]
    fn turn_settings() {
        let dir = std::env::temp_dir().join(format!("diva-turn-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("secret");
        std::fs::write(&file, "from-file\n").expect("write");
        let path = file.to_str().expect("utf-8");
        let config = parse(
            &["--turn-url", "turn:t.example:3478?transport=udp", "--turn-ttl", "600"],
            &[
                ("TURN_URLS", "turns:t.example:5349, turn:[::1]"),
                ("STUN_URLS", "stun:s.example"),
                ("TURN_SECRET_FILE", path),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.turn.turn_urls,
            ["turns:t.example:5349", "turn:[::1]", "turn:t.example:3478?transport=udp"]
        );
        assert_eq!(config.turn.stun_urls, ["stun:s.example"]);
        assert_eq!(config.turn.ttl, 600);
        assert_eq!(config.turn.secret, Some(Secret::new("from-file").expect("secret")));
        assert_eq!(config.turn.secret_file.as_deref(), Some(file.as_path()));
        assert_eq!(parse(&[], &[]).expect("defaults").turn, TurnConfig::default());
        // The flag wins over the file named in the environment.
        let flag = parse(&["--turn-secret", "s3cr3t-value"], &[("TURN_SECRET_FILE", path)]).expect("valid");
        assert_eq!(flag.turn.secret, Some(Secret::new("s3cr3t-value").expect("secret")));
        assert_eq!(flag.turn.secret_file, None);
        for (args, env) in [
            (&["--turn-url", "turn:a"][..], &[][..]),
            (&["--turn-url", "http://a", "--turn-secret", "x"][..], &[][..]),
            (&["--stun-url", "turn:a"][..], &[][..]),
            (&["--turn-ttl", "0"][..], &[][..]),
            (&["--turn-ttl", "soon"][..], &[][..]),
            (&["--turn-secret-file", "/nonexistent/secret"][..], &[][..]),
            (&[][..], &[("TURN_SECRET", " ")][..]),
        ] {
            assert!(parse(args, env).is_err(), "{args:?} {env:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_needs_both_files_and_a_build_with_tls() {
        let plain = parse(&[], &[]).expect("valid");
        assert!(!plain.tls());
        let cleared = parse(&[], &[("TLS_CERT", ""), ("TLS_KEY", " ")]).expect("valid");
        assert!(!cleared.tls());
        let one = parse(&["--tls-cert", "c.pem"], &[]).expect_err("one without the other");
        assert!(one.contains("needs --tls-key"), "{one}");
        let other = parse(&[], &[("TLS_KEY", "k.pem")]).expect_err("one without the other");
        assert!(other.contains("needs --tls-cert"), "{other}");
        let both = parse(&["--tls-cert=c.pem"], &[("TLS_KEY", "k.pem")]);
        if cfg!(feature = "tls") {
            let both = both.expect("valid");
            assert!(both.tls());
            assert_eq!(both.tls_cert.as_deref(), Some(std::path::Path::new("c.pem")));
        } else {
            let why = both.expect_err("no TLS in this build");
            assert!(why.contains("without the `tls` feature"), "{why}");
        }
    }

    #[test]
    fn help_lists_every_setting() {
        let help = help_text();
        for setting in SETTINGS {
            assert!(help.contains(setting.flag) && help.contains(setting.env), "{}", setting.flag);
        }
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_showing_its_password() {
        for (args, env) in [
            (&["--redis-url", "redis://:hunter2@127.0.0.1:notaport"][..], &[][..]),
            (&[][..], &[("REDIS_URL", "redis://u:hunter2@host:0x1/zz")][..]),
        ] {
            let err = parse(args, env).expect_err("must be refused");
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("(hidden)@"), "{err}");
        }
    }

    #[test]
    fn rediss_files_go_with_a_rediss_url_and_each_other() {
        use std::path::Path;
        let url = ["--redis-url", "rediss://h"];
        let with_client =
            parse(&[&url[..], &["--redis-cert", "c.pem", "--redis-key", "k.pem"]].concat(), &[]);
        let with_ca = parse(&url, &[("REDIS_CA", "/etc/ca.pem")]);
        if cfg!(feature = "tls") {
            let config = with_client.expect("rediss with a client certificate");
            assert_eq!(config.redis_client_files(), Some((Path::new("c.pem"), Path::new("k.pem"))));
            assert_eq!(config.redis_ca, None);
            let config = with_ca.expect("rediss with a CA");
            assert_eq!(config.redis_ca.as_deref(), Some(Path::new("/etc/ca.pem")));
            assert_eq!(config.redis_client_files(), None);
        } else {
            for refused in [with_client, with_ca] {
                assert!(refused.expect_err("no TLS in this build").contains("no TLS"));
            }
        }
        for (args, says) in [
            (&["--redis-url", "rediss://h", "--redis-cert", "c.pem"][..], "--redis-key"),
            (&["--redis-url", "rediss://h", "--redis-key", "k.pem"][..], "--redis-cert"),
            (&["--redis-url", "redis://h", "--redis-ca", "ca.pem"][..], "rediss://"),
            (&["--redis-ca", "ca.pem"][..], "rediss://"),
        ] {
            let err = parse(args, &[]).expect_err("must be refused");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}
