//! diva-load: a load generator for diva-signal (and, for comparison, matchbox_server).
//!
//! One thread, one mio poll loop, all connections non-blocking (flood-latency: a second thread
//! for its flooders). Every run stops by itself (a join time limit, then fixed warm-up, window
//! or hold times) and targets only loopback addresses (127.0.0.0/8). `diva-load --help` says
//! how to use it.

mod cluster;
mod engine;
mod flood;
mod floor;
mod hist;
mod jitter;
mod merge;
mod sys;
mod table;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::process::ExitCode;

use serde_json::{Map, Value, json};

use engine::{Cfg, Engine, Mode, Outcome, Proto};

const HELP: &str = "\
diva-load: load generator for diva-signal (and matchbox_server, for comparison)

Usage:
  diva-load relay [OPTIONS]     rooms of K connections relay `signal` messages to a room peer
                                closed loop (W in flight per connection), or open loop with --rate
  diva-load idle  [OPTIONS]     join N connections (a join storm: reports connections/s), hold
                                them, report the server's RSS before/after (memory per connection)
  diva-load storm [OPTIONS]     idle with --hold 0: just the join storm
  diva-load stat --server-pid PID [--binary FILE] [--label L] [--json FILE]
                                the server's RSS and CPU now (e.g. right after start), binary size
  diva-load table DIR           one table from DIR/<server>/<scenario>.json (written by --json)
  diva-load merge OUT IN...      one result from several rounds of a scenario (median of each
                                figure, lowest and highest beside it; errors add up)
  diva-load floor-relay --listen ADDR:PORT [--spin on]
                                a zero-work relay (pairs each room, then copies bytes between
                                the two unchanged): the kernel's share of relaying a message,
                                which any server pays; runs until killed
  diva-load flood-latency [OPTIONS]
                                what a control-frame flood does to others: a probe's
                                [\"ping\"] round trip and /health, unloaded, then while
                                --flooders connections send ping frames back to back
  diva-load jitter [--duration S] [--json FILE]
                                how often the machine stalls a thread that never sleeps (run
                                one per CPU with taskset): the floor under tail latency

Options (relay, idle, storm):
  --target ADDR:PORT     server address, must be in 127.0.0.0/8        [127.0.0.1:3903]
  --protocol P           diva or matchbox                              [diva]
  --connections N        connections                                   [relay 1000, idle 10000]
  --room-size K          connections per room                          [2]
  --inflight W           closed loop: messages in flight per connection [1]
  --rate R               open loop: R messages/s in total, spread round-robin over the
                         connections, stamped with their scheduled send time [closed loop]
  --payload BYTES        size of the relayed DATA (a JSON string)      [500]
  --warmup S             relay: seconds before the measured window     [2]
  --duration S           relay: seconds of the measured window         [10]
  --settle S             relay: then S seconds without new messages, and the server's
                         RSS once more (what it keeps once traffic stops) [0: not read]
  --hold S               idle: seconds to hold the joined connections  [5]
  --join-timeout S       time limit for connecting and joining         [60]
  --concurrency C        connections being set up at once              [256]
  --source-addrs X       bind client sockets to 127.0.0.1 .. 127.0.0.X in turn [16]
  --ident self|server    diva: bring own idents, or ask the server (`[\"ident\"]`) [self]
  --tls on|off           speak wss:// (TLS, certificate not verified: loopback only) [off]
  --spin on|off          relay: poll without sleeping, so the generator adds no wake-up
                         latency (it then uses all of its core)          [off]
  --server-pid PID[,PID...]
                         read the server's CPU time and memory from /proc/PID; with several
                         (a list, or the option repeated), their sum: a server and a proxy
                         in front of it, a cluster's nodes and Redis (relay: the first
                         one's CPU is also shown alone)
  --target2 ADDR:PORT    relay: a second node of a cluster; the second member of each
                         pair in a room connects there, so every pair spans the two nodes
  --redis ADDR:PORT      relay: the cluster's Redis, for its calls per join and per
                         message and its CPU (INFO commandstats, INFO cpu)
  --baseline FILE        relay: the --json of a one-node run of the same load, for the
                         ratios of CPU per message and throughput against it
  --label NAME           scenario name for --json and the table
  --json FILE            also write the results as JSON

Options (flood-latency; also --target, --server-pid, --label, --json, --source-addrs):
  --flooders N           flooding connections                          [1]
  --frames F             ping, pong (unsolicited) or mixed             [ping]
  --frame-payload BYTES  payload of each flood frame (at most 125)     [0]
  --pace-ms MS           the probe sends [\"ping\"] every MS (open loop; round trip from the
                         scheduled send time)                          [2]
  --health-every-ms MS   a fresh connection fetches /health every MS in the windows (0: none) [50]
  --warmup S             before each window: probe running, samples not kept; the flood
                         starts at the warm-up before the flood window  [2]
  --duration S           seconds of each window (unloaded, then under flood) [5]
  --reconnect on|off     a flooder the server closes connects again at once [off]

The generator raises its own open-file soft limit to the hard limit; with a hard limit of
20,000 one generator process can hold at most about 19,900 connections.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("diva-load: {why}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let Some(cmd) = args.first().cloned() else {
        print!("{HELP}");
        return Ok(());
    };
    if cmd == "-h" || cmd == "--help" || cmd == "help" {
        print!("{HELP}");
        return Ok(());
    }
    if cmd == "table" {
        let dir = args.get(1).ok_or("table needs a directory")?;
        print!("{}", table::render(std::path::Path::new(dir))?);
        return Ok(());
    }
    if cmd == "merge" {
        let (Some(out), inputs) = (args.get(1), args.get(2..).unwrap_or_default()) else {
            return Err("merge needs OUT and at least one input".into());
        };
        let mut runs = Vec::new();
        for path in inputs {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            runs.push(serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?);
        }
        return write_json(Some(out), merge::merge(&runs)?);
    }
    let mut opts: HashMap<String, String> = HashMap::new();
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else { return Err(format!("unexpected argument {flag}")) };
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match opts.get_mut(name) {
            // --server-pid A --server-pid B: the same as --server-pid A,B.
            Some(pids) if name == "server-pid" => {
                pids.push(',');
                pids.push_str(value);
            }
            _ => {
                opts.insert(name.to_string(), value.clone());
            }
        }
    }
    let known = [
        "target",
        "protocol",
        "connections",
        "room-size",
        "inflight",
        "rate",
        "payload",
        "warmup",
        "duration",
        "settle",
        "hold",
        "join-timeout",
        "concurrency",
        "source-addrs",
        "ident",
        "server-pid",
        "target2",
        "redis",
        "baseline",
        "label",
        "json",
        "binary",
        "spin",
        "tls",
        "listen",
        "flooders",
        "frames",
        "frame-payload",
        "pace-ms",
        "health-every-ms",
        "reconnect",
    ];
    if let Some(bad) = opts.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown option --{bad} (see --help)"));
    }
    let num = |name: &str, default: f64| -> Result<f64, String> {
        match opts.get(name) {
            None => Ok(default),
            Some(v) => {
                v.parse::<f64>().ok().filter(|x| *x >= 0.0).ok_or(format!("--{name}: not a number: {v}"))
            }
        }
    };
    let server_pids = match opts.get("server-pid") {
        None => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|pid| pid.trim().parse::<u32>().map_err(|_| format!("--server-pid: {v}")))
            .collect::<Result<Vec<u32>, String>>()?,
    };
    let label = opts.get("label").cloned().unwrap_or_else(|| cmd.clone());

    if cmd == "jitter" {
        let duration = (num("duration", 5.0)? * 1e9) as u64;
        let mut v = jitter::probe(duration);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("label".into(), json!(label));
        }
        jitter::print_human(&v);
        return write_json(opts.get("json"), v);
    }
    if cmd == "floor-relay" {
        let listen: SocketAddrV4 = opts
            .get("listen")
            .ok_or("floor-relay needs --listen ADDR:PORT")?
            .parse()
            .map_err(|_| "--listen: expected IPv4 ADDR:PORT".to_string())?;
        if listen.ip().octets()[0] != 127 {
            return Err(format!("--listen {listen}: loopback addresses (127.0.0.0/8) only"));
        }
        sys::raise_nofile();
        let spin = opts.get("spin").is_some_and(|v| v == "on" || v == "1" || v == "true");
        let mut relay = floor::FloorRelay::bind(listen, spin).map_err(|e| format!("{listen}: {e}"))?;
        return relay.run().map_err(|e| e.to_string());
    }
    if cmd == "stat" {
        if server_pids.is_empty() {
            return Err("stat needs --server-pid".into());
        }
        let pid = server_pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let s = sys::proc_stats_sum(&server_pids).ok_or(format!("/proc/{pid}: cannot be read"))?;
        let mut r = Map::new();
        r.insert("label".into(), json!(label));
        r.insert("mode".into(), json!("stat"));
        r.insert("server_rss_before_kb".into(), json!(s.rss_kb));
        r.insert("server_hwm_kb".into(), json!(s.hwm_kb));
        r.insert("server_threads".into(), json!(s.threads));
        r.insert("server_cpu_us".into(), json!(s.cpu_us));
        if let Some(bin) = opts.get("binary") {
            let len = std::fs::metadata(bin).map_err(|e| format!("{bin}: {e}"))?.len();
            r.insert("binary_bytes".into(), json!(len));
        }
        println!("server pid {pid}: VmRSS {} KiB, VmHWM {} KiB, {} threads", s.rss_kb, s.hwm_kb, s.threads);
        if let Some(b) = r.get("binary_bytes") {
            println!("binary: {b} bytes");
        }
        return write_json(opts.get("json"), Value::Object(r));
    }

    let loopback = |name: &str| -> Result<Option<SocketAddrV4>, String> {
        let Some(v) = opts.get(name) else { return Ok(None) };
        let addr: SocketAddrV4 = v.parse().map_err(|_| format!("--{name}: expected IPv4 ADDR:PORT"))?;
        if addr.ip().octets()[0] != 127 {
            return Err(format!("--{name} {addr}: only loopback addresses (127.0.0.0/8) may be loaded"));
        }
        Ok(Some(addr))
    };
    let target =
        loopback("target")?.unwrap_or(SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 1), 3903));
    let target2 = loopback("target2")?;
    let redis = loopback("redis")?;
    let on = |name: &str| opts.get(name).is_some_and(|v| v == "on" || v == "1" || v == "true");
    if cmd == "flood-latency" {
        if opts.get("protocol").is_some_and(|p| p != "diva") {
            return Err("flood-latency speaks diva's protocol only ([\"ping\"])".into());
        }
        let ms = |name: &str, d: f64| -> Result<u64, String> { Ok((num(name, d)? * 1e6) as u64) };
        let cfg = flood::FloodCfg {
            target,
            flooders: num("flooders", 1.0)? as usize,
            frames: match opts.get("frames").map(String::as_str).unwrap_or("ping") {
                "ping" => flood::Frames::Ping,
                "pong" => flood::Frames::Pong,
                "mixed" => flood::Frames::Mixed,
                v => return Err(format!("--frames: ping, pong or mixed, not {v}")),
            },
            frame_payload: (num("frame-payload", 0.0)? as usize).min(125),
            pace_ns: ms("pace-ms", 2.0)?.max(10_000),
            health_every_ns: ms("health-every-ms", 50.0)?,
            warmup_ns: (num("warmup", 2.0)? * 1e9) as u64,
            duration_ns: (num("duration", 5.0)? * 1e9) as u64,
            reconnect: on("reconnect"),
            server_pids: server_pids.clone(),
            source_addrs: (num("source-addrs", 16.0)? as usize).clamp(1, 250) as u8,
        };
        sys::tight_timer_slack();
        eprintln!(
            "diva-load flood-latency -> {target}: {} flooder(s) of {:?} frames, probe every {} us{}",
            cfg.flooders,
            cfg.frames,
            cfg.pace_ns / 1000,
            if cfg.reconnect { ", flooders reconnect when closed" } else { "" }
        );
        let mut run = flood::Flood::new(cfg).map_err(|e| e.to_string())?;
        let result = run.run(&label).map_err(|e| e.to_string())?;
        return write_json(opts.get("json"), result);
    }

    let mode = match cmd.as_str() {
        "relay" => Mode::Relay,
        "idle" | "storm" => Mode::Idle,
        _ => return Err(format!("unknown mode {cmd} (see --help)")),
    };
    let protocol = match opts.get("protocol").map(String::as_str).unwrap_or("diva") {
        "diva" => Proto::Diva,
        "matchbox" => Proto::Matchbox,
        p => return Err(format!("--protocol: diva or matchbox, not {p}")),
    };
    let default_conns = if mode == Mode::Relay { 1000.0 } else { 10000.0 };
    let connections = num("connections", default_conns)? as usize;
    let room_size = (num("room-size", 2.0)? as usize).max(1);
    let secs = |name: &str, d: f64| -> Result<u64, String> { Ok((num(name, d)? * 1e9) as u64) };
    let cfg = Cfg {
        mode,
        protocol,
        target,
        connections,
        room_size,
        inflight: (num("inflight", 1.0)? as u32).max(1),
        rate: num("rate", 0.0)? as u64,
        payload: (num("payload", 500.0)? as usize).max(engine_min_payload()),
        warmup_ns: secs("warmup", 2.0)?,
        duration_ns: secs("duration", 10.0)?,
        settle_ns: secs("settle", 0.0)?,
        hold_ns: if cmd == "storm" { 0 } else { secs("hold", 5.0)? },
        join_timeout_ns: secs("join-timeout", 60.0)?,
        concurrency: (num("concurrency", 256.0)? as usize).max(1),
        source_addrs: (num("source-addrs", 16.0)? as usize).clamp(1, 254) as u8,
        server_ident: match opts.get("ident").map(String::as_str).unwrap_or("self") {
            "self" => false,
            "server" => true,
            v => return Err(format!("--ident: self or server, not {v}")),
        },
        server_pids,
        target2,
        redis,
        spin: on("spin"),
        tls: on("tls"),
    };
    let limit = sys::raise_nofile();
    if connections as u64 + 16 > limit {
        return Err(format!(
            "{connections} connections need more descriptors than the open-file limit ({limit}) allows: \
             one generator process holds at most {}",
            limit.saturating_sub(16)
        ));
    }
    sys::tight_timer_slack();
    eprintln!(
        "diva-load {cmd} ({:?}) -> {target}: {connections} connections, rooms of {room_size}{}",
        protocol,
        match (mode, cfg.rate) {
            (Mode::Relay, 0) => format!(", closed loop, {} in flight each", cfg.inflight),
            (Mode::Relay, r) => format!(", open loop at {r} msg/s"),
            _ => String::new(),
        }
    );
    let baseline = match opts.get("baseline") {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            Some(serde_json::from_str::<Value>(&text).map_err(|e| format!("{path}: {e}"))?)
        }
    };
    let mut eng = Engine::new(cfg.clone()).map_err(|e| e.to_string())?;
    let out = eng.run().map_err(|e| e.to_string())?;
    let result = report(&cfg, &cmd, &label, &eng, &out, baseline.as_ref());
    write_json(opts.get("json"), result)
}

fn engine_min_payload() -> usize {
    64
}

fn write_json(path: Option<&String>, v: Value) -> Result<(), String> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

fn report(cfg: &Cfg, cmd: &str, label: &str, eng: &Engine, out: &Outcome, baseline: Option<&Value>) -> Value {
    let mut r = Map::new();
    let mut put = |k: &str, v: Value| {
        r.insert(k.to_string(), v);
    };
    put("label", json!(label));
    put("mode", json!(cmd));
    put("protocol", json!(format!("{:?}", cfg.protocol).to_lowercase()));
    put("connections", json!(cfg.connections));
    put("joined", json!(eng.joined));
    put("failed", json!(eng.failed));
    put("room_size", json!(cfg.room_size));
    put("rooms_ready", json!(out.rooms_used));
    put("join_s", json!(round(out.join_s, 4)));
    put("join_rate", json!(round(out.join_rate, 0)));
    put("join_timed_out", json!(out.join_timed_out));
    put("window_s", json!(round(out.window_s, 3)));
    put("spin", json!(cfg.spin));
    put("tls", json!(cfg.tls));
    let us = |ns: u64| round(ns as f64 / 1000.0, 1);
    let j = &eng.join_hist;
    put("join_lat_p50_us", json!(us(j.quantile(0.5))));
    put("join_lat_p99_us", json!(us(j.quantile(0.99))));
    put("join_lat_max_us", json!(us(j.max())));
    if cfg.mode == Mode::Relay {
        put("loop", json!(if cfg.rate > 0 { "open" } else { "closed" }));
        put("inflight", json!(cfg.inflight));
        put("rate_target", json!(cfg.rate));
        put("payload", json!(cfg.payload));
        put("sent", json!(eng.sent));
        put("delivered", json!(eng.delivered));
        let mps = if out.window_s > 0.0 { eng.delivered as f64 / out.window_s } else { 0.0 };
        put("msgs_per_s", json!(round(mps, 0)));
        let h = &eng.hist;
        put("lat_p50_us", json!(us(h.quantile(0.50))));
        put("lat_p90_us", json!(us(h.quantile(0.90))));
        put("lat_p99_us", json!(us(h.quantile(0.99))));
        put("lat_p999_us", json!(us(h.quantile(0.999))));
        put("lat_max_us", json!(us(h.max())));
        put("lat_mean_us", json!(us(h.mean())));
        put("sched_missed", json!(eng.sched_missed));
    }
    let gen_pct =
        if out.window_s > 0.0 { out.gen_cpu_window_us as f64 / (out.window_s * 1e6) * 100.0 } else { 0.0 };
    put("gen_cpu_pct", json!(round(gen_pct, 1)));
    put("gen_cpu_join_us", json!(out.gen_cpu_join_us));
    if let (Some(s0), Some(sj), Some(w0), Some(w1)) =
        (out.server_start, out.server_joined, out.server_w0, out.server_w1)
    {
        put("server_rss_before_kb", json!(s0.rss_kb));
        put("server_rss_joined_kb", json!(sj.rss_kb));
        put("server_rss_after_kb", json!(w1.rss_kb));
        put("server_hwm_after_kb", json!(w1.hwm_kb));
        put("server_threads", json!(w1.threads));
        if let Some(settled) = out.server_settled {
            put("server_rss_settled_kb", json!(settled.rss_kb));
            put("server_hwm_settled_kb", json!(settled.hwm_kb));
        }
        let cpu = w1.cpu_us.saturating_sub(w0.cpu_us);
        put("server_cpu_window_us", json!(cpu));
        if out.window_s > 0.0 {
            // Everything else the machine ran meanwhile: other processes make the figures noisy.
            let other = out.machine_busy_window_us.saturating_sub(cpu + out.gen_cpu_window_us);
            put("other_cpu_pct", json!(round(other as f64 / (out.window_s * 1e6) * 100.0, 1)));
        }
        if out.window_s > 0.0 {
            put("server_cpu_pct", json!(round(cpu as f64 / (out.window_s * 1e6) * 100.0, 1)));
        }
        if cfg.mode == Mode::Relay && eng.delivered > 0 {
            put("server_cpu_us_per_msg", json!(round(cpu as f64 / eng.delivered as f64, 3)));
            if cfg.server_pids.len() > 1 {
                // The first process's share (bench/run.sh: diva-signal behind nginx).
                let first = w1.first_cpu_us.saturating_sub(w0.first_cpu_us);
                put("server_first_cpu_us_per_msg", json!(round(first as f64 / eng.delivered as f64, 3)));
            }
        }
        let join_cpu = sj.cpu_us.saturating_sub(s0.cpu_us);
        put("server_cpu_join_us", json!(join_cpu));
        if out.join_s > 0.0 {
            let other = out.machine_busy_join_us.saturating_sub(join_cpu + out.gen_cpu_join_us);
            put("other_cpu_join_pct", json!(round(other as f64 / (out.join_s * 1e6) * 100.0, 1)));
        }
        if eng.joined > 0 {
            put("server_cpu_us_per_join", json!(round(join_cpu as f64 / eng.joined as f64, 1)));
            let grown = w1.rss_kb.saturating_sub(s0.rss_kb) as f64 * 1024.0;
            put("rss_per_conn_bytes", json!(round(grown / eng.joined as f64, 0)));
        }
    }
    let c = &eng.c;
    let errors = c.connect_failed
        + c.handshake_failed
        + c.join_failed
        + c.closed_by_server
        + c.eof
        + c.reset
        + c.error_replies
        + c.seq_errors
        // A message refused as rate-limited leaves a gap; any other gap is a lost message.
        + c.seq_gaps.saturating_sub(c.rate_limited)
        + c.bad_messages;
    put("errors_total", json!(errors));
    put("rate_limited", json!(c.rate_limited));
    if out.window_s > 0.0 {
        put("rate_limited_per_s", json!(round(eng.refused as f64 / out.window_s, 0)));
    }
    put(
        "errors",
        json!({
            "connect_failed": c.connect_failed,
            "handshake_failed": c.handshake_failed,
            "handshake_statuses": c.handshake_statuses,
            "join_failed": c.join_failed,
            "closed_by_server": c.closed_by_server,
            "eof": c.eof,
            "reset": c.reset,
            "error_replies": c.error_replies,
            "codes": c.error_codes,
            "seq_errors": c.seq_errors,
            "seq_gaps": c.seq_gaps,
            "bad_messages": c.bad_messages,
            "peer_left": c.peer_left,
            "first": c.first_errors,
        }),
    );
    let [start, joined, w0, w1] = &out.snaps;
    cluster::report(&mut r, start, joined, w0, w1, eng.joined, eng.delivered, out.window_s, baseline);
    let v = Value::Object(r);
    print_human(&v);
    cluster::print_human(&v);
    v
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn print_human(v: &Value) {
    let g = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    println!("== {} ({}, {})", g("label"), g("mode"), g("protocol"));
    println!(
        "joined {}/{} in {} s: {} connections/s{} (generator CPU {} us for it)",
        g("joined"),
        g("connections"),
        g("join_s"),
        g("join_rate"),
        if g("join_timed_out") == json!(true) { " (join time limit reached)" } else { "" },
        g("gen_cpu_join_us")
    );
    println!(
        "connect-to-joined us: p50 {}  p99 {}  max {}",
        g("join_lat_p50_us"),
        g("join_lat_p99_us"),
        g("join_lat_max_us")
    );
    if v.get("msgs_per_s").is_some() {
        println!(
            "{} loop: {} delivered in {} s = {} msg/s (sent {})",
            g("loop"),
            g("delivered"),
            g("window_s"),
            g("msgs_per_s"),
            g("sent")
        );
        println!(
            "latency us: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            g("lat_p50_us"),
            g("lat_p90_us"),
            g("lat_p99_us"),
            g("lat_p999_us"),
            g("lat_max_us"),
            g("lat_mean_us")
        );
        println!(
            "server CPU: {} us/msg, {} % of a core; generator CPU {} %; other processes {} % of a core",
            g("server_cpu_us_per_msg"),
            g("server_cpu_pct"),
            g("gen_cpu_pct"),
            g("other_cpu_pct")
        );
        if v.get("server_first_cpu_us_per_msg").is_some() {
            println!("  of which the first server process: {} us/msg", g("server_first_cpu_us_per_msg"));
        }
    }
    if v.get("server_rss_before_kb").is_some() {
        println!(
            "server RSS KiB: before {}, joined {}, after {} (HWM {}); {} bytes per connection; {} us CPU per join",
            g("server_rss_before_kb"),
            g("server_rss_joined_kb"),
            g("server_rss_after_kb"),
            g("server_hwm_after_kb"),
            g("rss_per_conn_bytes"),
            g("server_cpu_us_per_join")
        );
    }
    if v.get("server_rss_settled_kb").is_some() {
        println!(
            "server RSS KiB once traffic stopped: {} (peak {})",
            g("server_rss_settled_kb"),
            g("server_hwm_settled_kb")
        );
    }
    if v.get("rate_limited").is_some_and(|n| n != &json!(0)) {
        println!(
            "refused as rate-limited (sent again after 10 ms): {} in all, {}/s in the window",
            g("rate_limited"),
            g("rate_limited_per_s")
        );
    }
    println!("errors: {} {}", g("errors_total"), g("errors"));
}
