//! What the cluster scenarios need beyond a single server: the CPU of several processes
//! (two nodes and Redis) added up and each on its own, what Redis did (`INFO commandstats`
//! and `INFO cpu`, read over a plain RESP connection), and the comparison with a one-node
//! run of the same load in the same round.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::sys;

/// Each process's CPU time, in microseconds (0 when unreadable).
pub fn cpu_each(pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|&pid| sys::proc_stats(pid).map_or(0, |s| s.cpu_us)).collect()
}

/// What Redis says at one moment: calls per command, and its own CPU time.
#[derive(Clone, Debug, Default)]
pub struct RedisSnap {
    pub calls: BTreeMap<String, u64>,
    pub cpu_us: u64,
}

/// One moment of everything the cluster scenario watches.
#[derive(Clone, Debug, Default)]
pub struct Snap {
    pub cpu_each: Vec<u64>,
    pub redis: Option<RedisSnap>,
}

pub fn snap(pids: &[u32], redis: Option<SocketAddrV4>) -> Snap {
    Snap {
        cpu_each: if pids.len() > 1 { cpu_each(pids) } else { Vec::new() },
        redis: redis.and_then(redis_info),
    }
}

/// `INFO commandstats cpu` over a fresh connection (loopback, 2 s limit). The INFO call
/// itself is counted by Redis as `info`, which the figures leave out.
pub fn redis_info(addr: SocketAddrV4) -> Option<RedisSnap> {
    let text = redis_call(addr, &["INFO", "commandstats", "cpu"]).ok()?;
    let mut snap = RedisSnap::default();
    let mut cpu = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let Some((name, fields)) = rest.split_once(':') else { continue };
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            snap.calls.insert(name.to_string(), calls);
        } else if let Some(v) =
            line.strip_prefix("used_cpu_sys:").or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            cpu += v.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    snap.cpu_us = (cpu * 1e6) as u64;
    Some(snap)
}

/// One command as a RESP array; the reply read as one bulk string.
fn redis_call(addr: SocketAddrV4, args: &[&str]) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { continue };
        if buf.first() != Some(&b'$') {
            return Err(io::Error::other(String::from_utf8_lossy(&buf[..eol]).into_owned()));
        }
        let len: usize = std::str::from_utf8(&buf[1..eol])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(io::ErrorKind::InvalidData)?;
        if buf.len() >= eol + 2 + len {
            return Ok(String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into_owned());
        }
    }
}

/// Calls per command between two moments (INFO left out), those that changed only.
fn calls_between(a: &RedisSnap, b: &RedisSnap) -> BTreeMap<String, u64> {
    b.calls
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, &n)| (name.clone(), n.saturating_sub(a.calls.get(name).copied().unwrap_or(0))))
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// The cluster figures for the report: CPU per message of each process, Redis's calls per
/// join and per message, its CPU per message, and the ratios against `baseline` (the JSON
/// of a one-node run of the same load).
#[allow(clippy::too_many_arguments)]
pub fn report(
    r: &mut Map<String, Value>,
    start: &Snap,
    joined: &Snap,
    w0: &Snap,
    w1: &Snap,
    joins: usize,
    delivered: u64,
    window_s: f64,
    baseline: Option<&Value>,
) {
    if w0.cpu_each.len() == w1.cpu_each.len() && !w1.cpu_each.is_empty() && delivered > 0 {
        let each: Vec<f64> = w0
            .cpu_each
            .iter()
            .zip(&w1.cpu_each)
            .map(|(a, b)| round(b.saturating_sub(*a) as f64 / delivered as f64, 3))
            .collect();
        r.insert("server_cpu_us_per_msg_each".into(), json!(each));
    }
    if let (Some(s), Some(j)) = (&start.redis, &joined.redis)
        && joins > 0
    {
        let per: Map<String, Value> = calls_between(s, j)
            .into_iter()
            .map(|(k, n)| (k, json!(round(n as f64 / joins as f64, 3))))
            .collect();
        r.insert("redis_evalsha_per_join".into(), per.get("evalsha").cloned().unwrap_or(json!(0)));
        r.insert("redis_publish_per_join".into(), per.get("publish").cloned().unwrap_or(json!(0)));
        r.insert("redis_calls_per_join".into(), Value::Object(per));
        r.insert(
            "redis_cpu_us_per_join".into(),
            json!(round(j.cpu_us.saturating_sub(s.cpu_us) as f64 / joins as f64, 2)),
        );
    }
    if let (Some(a), Some(b)) = (&w0.redis, &w1.redis)
        && delivered > 0
    {
        let calls = calls_between(a, b);
        let per: Map<String, Value> =
            calls.iter().map(|(k, &n)| (k.clone(), json!(round(n as f64 / delivered as f64, 4)))).collect();
        r.insert("redis_publish_per_msg".into(), per.get("publish").cloned().unwrap_or(json!(0)));
        r.insert("redis_calls_per_msg".into(), Value::Object(per));
        if window_s > 0.0 {
            let publishes = calls.get("publish").copied().unwrap_or(0) as f64;
            r.insert("redis_publish_per_s".into(), json!(round(publishes / window_s, 0)));
        }
        let cpu = b.cpu_us.saturating_sub(a.cpu_us) as f64;
        let per_msg = cpu / delivered as f64;
        r.insert("redis_cpu_us_per_msg".into(), json!(round(per_msg, 3)));
        if window_s > 0.0 {
            r.insert("redis_cpu_pct".into(), json!(round(cpu / (window_s * 1e6) * 100.0, 1)));
        }
        if per_msg > 0.0 {
            // Messages a second one Redis core would carry at this batching.
            r.insert("redis_msgs_per_core_s".into(), json!(round(1e6 / per_msg, -3)));
        }
    }
    if let Some(base) = baseline {
        let get = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
        for key in ["lat_p50_us", "lat_p99_us"] {
            if let Some(local) = get(base, key) {
                r.insert(format!("local_{key}"), json!(local));
            }
        }
        for (key, local_key, ratio_key) in [
            ("server_cpu_us_per_msg", "local_cpu_us_per_msg", "cpu_ratio_vs_local"),
            ("msgs_per_s", "local_msgs_per_s", "msgs_ratio_vs_local"),
        ] {
            let here = r.get(key).and_then(Value::as_f64);
            if let (Some(local), Some(here)) = (get(base, key), here) {
                r.insert(local_key.into(), json!(local));
                if local > 0.0 {
                    r.insert(ratio_key.into(), json!(round(here / local, 2)));
                }
            }
        }
    }
}

/// The cluster lines of the human-readable summary.
pub fn print_human(v: &Value) {
    let g = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    if v.get("server_cpu_us_per_msg_each").is_some() {
        println!("CPU us/msg of each process (in --server-pid order): {}", g("server_cpu_us_per_msg_each"));
    }
    if v.get("redis_calls_per_join").is_some() {
        println!(
            "Redis calls per join: {} ({} us Redis CPU per join)",
            g("redis_calls_per_join"),
            g("redis_cpu_us_per_join")
        );
    }
    if v.get("redis_calls_per_msg").is_some() {
        println!(
            "Redis calls per message: {}; {} PUBLISH/s; Redis CPU {} us/msg, {} % of a core (one core: {} msg/s)",
            g("redis_calls_per_msg"),
            g("redis_publish_per_s"),
            g("redis_cpu_us_per_msg"),
            g("redis_cpu_pct"),
            g("redis_msgs_per_core_s")
        );
    }
    if v.get("cpu_ratio_vs_local").is_some() {
        println!(
            "against one node, same load: CPU per message {} x ({} us), throughput {} x ({} msg/s); \
             latency there p50 {} us, p99 {} us",
            g("cpu_ratio_vs_local"),
            g("local_cpu_us_per_msg"),
            g("msgs_ratio_vs_local"),
            g("local_msgs_per_s"),
            g("local_lat_p50_us"),
            g("local_lat_p99_us")
        );
    }
}
