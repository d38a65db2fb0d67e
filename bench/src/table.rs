//! One Markdown table from the JSON results of a `make bench` / `make bench-peers` run:
//! DIR/diva/<scenario>.json and, if present, DIR/matchbox/<scenario>.json and
//! DIR/floor/<scenario>.json (the zero-work relay: the floor any server stands on).

use std::path::Path;

use serde_json::Value;

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

#[derive(Clone, Copy)]
enum Target {
    None,
    /// diva's value at most this.
    Max(f64),
    /// diva's value at least this.
    Min(f64),
    /// at most this, and at least this many times better than matchbox.
    MaxAndRatio(f64, f64),
    /// at least 3x matchbox, or 1.5x where the generator is the bottleneck.
    Throughput,
}

struct Row {
    scenario: &'static str,
    metric: &'static str,
    key: &'static str,
    unit: &'static str,
    better: Better,
    target: Target,
    target_text: &'static str,
}

const fn row(
    scenario: &'static str,
    metric: &'static str,
    key: &'static str,
    unit: &'static str,
    better: Better,
    target: Target,
    target_text: &'static str,
) -> Row {
    Row { scenario, metric, key, unit, better, target, target_text }
}

use Better::*;

const ROWS: &[Row] = &[
    row("start", "stripped binary", "binary_bytes", "bytes", Lower, Target::Max(2.0 * 1048576.0), "<= 2 MiB"),
    row(
        "start",
        "RSS right after start",
        "server_rss_before_kb",
        "KiB",
        Lower,
        Target::Max(1536.0),
        "<= 1.5 MiB",
    ),
    row("closed-1k-w1", "delivered", "msgs_per_s", "msg/s", Higher, Target::Throughput, ">= 3x (1.5x)"),
    row(
        "closed-1k-w1",
        "server CPU per message",
        "server_cpu_us_per_msg",
        "us",
        Lower,
        Target::MaxAndRatio(3.0, 3.0),
        "<= 3 us, >= 3x",
    ),
    // The same relay over wss://, beside it: diva-signal's own TLS, then nginx terminating
    // TLS in front of the plain server (nginx's CPU and diva-signal's added up).
    row("tls-closed-1k-w1", "server CPU per message", "server_cpu_us_per_msg", "us", Lower, Target::None, ""),
    row(
        "nginx-tls-closed-1k-w1",
        "CPU per message, nginx + diva-signal",
        "server_cpu_us_per_msg",
        "us",
        Lower,
        Target::None,
        "",
    ),
    row(
        "nginx-tls-closed-1k-w1",
        "of which diva-signal (plain, behind nginx)",
        "server_first_cpu_us_per_msg",
        "us",
        Lower,
        Target::None,
        "",
    ),
    row("closed-1k-w1", "latency p50", "lat_p50_us", "us", Lower, Target::None, ""),
    row("closed-1k-w1", "latency p99", "lat_p99_us", "us", Lower, Target::Max(10_000.0), "<= 10 ms"),
    row("closed-1k-w1", "latency p99.9", "lat_p999_us", "us", Lower, Target::None, ""),
    row("closed-1k-w1", "latency max", "lat_max_us", "us", Lower, Target::None, ""),
    row("closed-1k-w1", "server CPU", "server_cpu_pct", "% core", Neither, Target::None, ""),
    row("closed-1k-w1", "generator CPU", "gen_cpu_pct", "% core", Neither, Target::None, ""),
    row("closed-1k-w1", "server RSS at end", "server_rss_after_kb", "KiB", Lower, Target::None, ""),
    row("closed-1k-w1", "errors", "errors_total", "", Lower, Target::None, ""),
    row("closed-1k-w1", "other processes' CPU (noise)", "other_cpu_pct", "% core", Neither, Target::None, ""),
    row("closed-1k-w1-limits", "delivered", "msgs_per_s", "msg/s", Higher, Target::None, ""),
    row(
        "closed-1k-w1-limits",
        "refused as rate-limited",
        "rate_limited_per_s",
        "/s",
        Neither,
        Target::None,
        "",
    ),
    row(
        "closed-1k-w1-limits",
        "server CPU per delivered message (refusals included)",
        "server_cpu_us_per_msg",
        "us",
        Lower,
        Target::None,
        "",
    ),
    row("closed-1k-w1-limits", "latency p99", "lat_p99_us", "us", Lower, Target::None, ""),
    row("closed-1k-w1-limits", "server CPU", "server_cpu_pct", "% core", Neither, Target::None, ""),
    row("closed-1k-w1-limits", "generator CPU", "gen_cpu_pct", "% core", Neither, Target::None, ""),
    row("closed-1k-w1-limits", "errors", "errors_total", "", Lower, Target::None, ""),
    row("closed-1k-w16", "delivered", "msgs_per_s", "msg/s", Higher, Target::Throughput, ">= 3x (1.5x)"),
    row("closed-1k-w16", "server CPU per message", "server_cpu_us_per_msg", "us", Lower, Target::None, ""),
    row("closed-1k-w16", "latency p50", "lat_p50_us", "us", Lower, Target::None, ""),
    row("closed-1k-w16", "latency p99", "lat_p99_us", "us", Lower, Target::None, ""),
    row("closed-1k-w16", "latency p99.9", "lat_p999_us", "us", Lower, Target::None, ""),
    row("closed-1k-w16", "server CPU", "server_cpu_pct", "% core", Neither, Target::None, ""),
    row("closed-1k-w16", "generator CPU", "gen_cpu_pct", "% core", Neither, Target::None, ""),
    row("closed-1k-w16", "errors", "errors_total", "", Lower, Target::None, ""),
    row(
        "closed-1k-w16",
        "other processes' CPU (noise)",
        "other_cpu_pct",
        "% core",
        Neither,
        Target::None,
        "",
    ),
    row("open-20k", "delivered", "msgs_per_s", "msg/s", Higher, Target::None, ""),
    row("open-20k", "latency p50", "lat_p50_us", "us", Lower, Target::None, ""),
    row("open-20k", "latency p99", "lat_p99_us", "us", Lower, Target::Max(100.0), "<= 100 us"),
    row("open-20k", "latency p99.9", "lat_p999_us", "us", Lower, Target::None, ""),
    row("open-20k", "latency max", "lat_max_us", "us", Lower, Target::None, ""),
    row("open-20k", "server CPU per message", "server_cpu_us_per_msg", "us", Lower, Target::None, ""),
    row("open-20k", "server CPU", "server_cpu_pct", "% core", Lower, Target::None, ""),
    row("open-20k", "generator CPU", "gen_cpu_pct", "% core", Neither, Target::None, ""),
    row("open-20k", "errors", "errors_total", "", Lower, Target::None, ""),
    row("open-20k", "other processes' CPU (noise)", "other_cpu_pct", "% core", Neither, Target::None, ""),
    row("open-20k-busy", "latency p50", "lat_p50_us", "us", Lower, Target::None, ""),
    row("open-20k-busy", "latency p99", "lat_p99_us", "us", Lower, Target::Max(100.0), "<= 100 us"),
    row("open-20k-busy", "latency p99.9", "lat_p999_us", "us", Lower, Target::None, ""),
    row("open-20k-busy", "latency max", "lat_max_us", "us", Lower, Target::None, ""),
    row("open-20k-busy", "server CPU", "server_cpu_pct", "% core", Neither, Target::None, ""),
    row("open-20k-busy", "generator CPU", "gen_cpu_pct", "% core", Neither, Target::None, ""),
    row("open-20k-busy", "errors", "errors_total", "", Lower, Target::None, ""),
    row(
        "open-20k-busy",
        "other processes' CPU (noise)",
        "other_cpu_pct",
        "% core",
        Neither,
        Target::None,
        "",
    ),
    row("big-1k", "delivered (60 KB signals)", "msgs_per_s", "msg/s", Higher, Target::None, ""),
    row("big-1k", "server CPU per message", "server_cpu_us_per_msg", "us", Lower, Target::None, ""),
    row(
        "big-1k",
        "server RSS, 1k joined, before traffic",
        "server_rss_joined_kb",
        "KiB",
        Lower,
        Target::None,
        "",
    ),
    row("big-1k", "server peak RSS (VmHWM)", "server_hwm_settled_kb", "KiB", Lower, Target::None, ""),
    row(
        "big-1k",
        "server RSS 2 s after traffic stopped",
        "server_rss_settled_kb",
        "KiB",
        Lower,
        Target::None,
        "",
    ),
    row("big-1k", "errors", "errors_total", "", Lower, Target::None, ""),
    row("mid-1k", "delivered (3 KB signals)", "msgs_per_s", "msg/s", Higher, Target::None, ""),
    row(
        "mid-1k",
        "server RSS, 1k joined, before traffic",
        "server_rss_joined_kb",
        "KiB",
        Lower,
        Target::None,
        "",
    ),
    row("mid-1k", "server peak RSS (VmHWM)", "server_hwm_settled_kb", "KiB", Lower, Target::None, ""),
    row(
        "mid-1k",
        "server RSS 3 s after traffic stopped",
        "server_rss_settled_kb",
        "KiB",
        Lower,
        Target::None,
        "",
    ),
    row("mid-1k", "errors", "errors_total", "", Lower, Target::None, ""),
    row("flood-ping", "round trip unloaded p50", "rtt_quiet_p50_us", "us", Lower, Target::None, ""),
    row("flood-ping", "round trip unloaded p99", "rtt_quiet_p99_us", "us", Lower, Target::None, ""),
    row("flood-ping", "round trip under flood p50", "rtt_flood_p50_us", "us", Lower, Target::None, ""),
    row(
        "flood-ping",
        "round trip under flood p99",
        "rtt_flood_p99_us",
        "us",
        Lower,
        Target::Max(5_000.0),
        "<= 5 ms",
    ),
    row("flood-ping", "round trip under flood max", "rtt_flood_max_us", "us", Lower, Target::None, ""),
    row("flood-ping", "round trip p50, flood / unloaded", "rtt_p50_ratio", "x", Lower, Target::None, ""),
    row("flood-ping", "/health unloaded p50", "health_quiet_p50_us", "us", Lower, Target::None, ""),
    row("flood-ping", "/health under flood p50", "health_flood_p50_us", "us", Lower, Target::None, ""),
    row("flood-ping", "/health under flood max", "health_flood_max_us", "us", Lower, Target::None, ""),
    row("flood-ping", "flood: pings answered", "flood_pongs_per_s", "/s", Neither, Target::None, ""),
    row("flood-ping", "server CPU under flood", "server_cpu_flood_pct", "% core", Neither, Target::None, ""),
    row("flood-ping", "generator CPU under flood", "gen_cpu_flood_pct", "% core", Neither, Target::None, ""),
    row("flood-ping", "errors", "errors_total", "", Lower, Target::None, ""),
    row(
        "flood-ping",
        "other processes' CPU (noise)",
        "other_cpu_flood_pct",
        "% core",
        Neither,
        Target::None,
        "",
    ),
    row("flood-ping-limits", "round trip unloaded p50", "rtt_quiet_p50_us", "us", Lower, Target::None, ""),
    row("flood-ping-limits", "round trip unloaded p99", "rtt_quiet_p99_us", "us", Lower, Target::None, ""),
    row("flood-ping-limits", "round trip under flood p50", "rtt_flood_p50_us", "us", Lower, Target::None, ""),
    row("flood-ping-limits", "round trip under flood p99", "rtt_flood_p99_us", "us", Lower, Target::None, ""),
    row(
        "flood-ping-limits",
        "flooder closed with 1008, reconnected",
        "flooders_cut_off_per_s",
        "/s",
        Neither,
        Target::None,
        "",
    ),
    row(
        "flood-ping-limits",
        "server CPU under flood",
        "server_cpu_flood_pct",
        "% core",
        Neither,
        Target::None,
        "",
    ),
    row("flood-ping-limits", "errors", "errors_total", "", Lower, Target::None, ""),
    row(
        "idle-10k",
        "join storm (connect+upgrade+join)",
        "join_rate",
        "conn/s",
        Higher,
        Target::Min(20_000.0),
        ">= 20k/s",
    ),
    row("idle-10k", "server CPU per join", "server_cpu_us_per_join", "us", Lower, Target::None, ""),
    row(
        "idle-10k",
        "other processes' CPU during the storm",
        "other_cpu_join_pct",
        "% core",
        Neither,
        Target::None,
        "",
    ),
    row("idle-10k", "RSS per idle connection", "rss_per_conn_bytes", "bytes", Lower, Target::None, ""),
    row("idle-10k", "server RSS, 10k joined", "server_rss_after_kb", "KiB", Lower, Target::None, ""),
    row("idle-19k", "join rate", "join_rate", "conn/s", Higher, Target::None, ""),
    row(
        "idle-19k",
        "RSS per idle connection",
        "rss_per_conn_bytes",
        "bytes",
        Lower,
        Target::Max(3072.0),
        "<= 3 KiB",
    ),
    row("idle-19k", "server RSS, 19k joined", "server_rss_after_kb", "KiB", Lower, Target::None, ""),
    row("idle-19k", "server peak RSS (VmHWM)", "server_hwm_after_kb", "KiB", Lower, Target::None, ""),
    row("idle-19k", "errors", "errors_total", "", Lower, Target::None, ""),
    row("tls-closed-1k-w1", "delivered", "msgs_per_s", "msg/s", Higher, Target::None, ""),
    row("nginx-tls-closed-1k-w1", "delivered", "msgs_per_s", "msg/s", Higher, Target::None, ""),
    row("tls-closed-1k-w1", "latency p99", "lat_p99_us", "us", Lower, Target::None, ""),
    row("nginx-tls-closed-1k-w1", "latency p99", "lat_p99_us", "us", Lower, Target::None, ""),
    row("tls-closed-1k-w1", "server CPU", "server_cpu_pct", "% core", Neither, Target::None, ""),
    row(
        "nginx-tls-closed-1k-w1",
        "nginx + diva-signal CPU",
        "server_cpu_pct",
        "% core",
        Neither,
        Target::None,
        "",
    ),
    row("tls-closed-1k-w1", "generator CPU", "gen_cpu_pct", "% core", Neither, Target::None, ""),
    row("nginx-tls-closed-1k-w1", "generator CPU", "gen_cpu_pct", "% core", Neither, Target::None, ""),
    row("tls-closed-1k-w1", "errors", "errors_total", "", Lower, Target::None, ""),
    row("nginx-tls-closed-1k-w1", "errors", "errors_total", "", Lower, Target::None, ""),
    row(
        "nginx-tls-closed-1k-w1",
        "other processes' CPU (noise)",
        "other_cpu_pct",
        "% core",
        Neither,
        Target::None,
        "",
    ),
    row("tls-idle-10k", "join rate", "join_rate", "conn/s", Higher, Target::None, ""),
    row("tls-idle-10k", "server CPU per join", "server_cpu_us_per_join", "us", Lower, Target::None, ""),
    row("tls-idle-10k", "RSS per idle connection", "rss_per_conn_bytes", "bytes", Lower, Target::None, ""),
    row("tls-idle-10k", "errors", "errors_total", "", Lower, Target::None, ""),
    // The cluster: nodes and Redis added up, against one node with the same load in the
    // same round (bench/cluster.sh).
    row("cluster-closed-1k-w1", "delivered across nodes", "msgs_per_s", "msg/s", Higher, Target::None, ""),
    row(
        "cluster-closed-1k-w1",
        "throughput / one node's",
        "msgs_ratio_vs_local",
        "x",
        Higher,
        Target::None,
        "",
    ),
    row(
        "cluster-closed-1k-w1",
        "CPU per message, 2 nodes + Redis",
        "server_cpu_us_per_msg",
        "us",
        Lower,
        Target::None,
        "",
    ),
    row(
        "cluster-closed-1k-w1",
        "CPU per message, one node",
        "local_cpu_us_per_msg",
        "us",
        Lower,
        Target::None,
        "",
    ),
    row(
        "cluster-closed-1k-w1",
        "CPU per message / one node's",
        "cpu_ratio_vs_local",
        "x",
        Lower,
        Target::Max(3.0),
        "<= 3x",
    ),
    row(
        "cluster-closed-1k-w1",
        "Redis CPU per message",
        "redis_cpu_us_per_msg",
        "us",
        Lower,
        Target::None,
        "",
    ),
    row(
        "cluster-closed-1k-w1",
        "Redis PUBLISH per message",
        "redis_publish_per_msg",
        "calls",
        Lower,
        Target::None,
        "",
    ),
    row(
        "cluster-closed-1k-w1",
        "Redis EVALSHA per join",
        "redis_evalsha_per_join",
        "calls",
        Lower,
        Target::None,
        "",
    ),
    row(
        "cluster-closed-1k-w1",
        "Redis PUBLISH per join",
        "redis_publish_per_join",
        "calls",
        Lower,
        Target::None,
        "",
    ),
    row("cluster-closed-1k-w1", "Redis CPU per join", "redis_cpu_us_per_join", "us", Lower, Target::None, ""),
    row("cluster-closed-1k-w1", "latency p50", "lat_p50_us", "us", Lower, Target::None, ""),
    row("cluster-closed-1k-w1", "latency p99", "lat_p99_us", "us", Lower, Target::None, ""),
    row("cluster-closed-1k-w1", "latency p99, one node", "local_lat_p99_us", "us", Lower, Target::None, ""),
    row("cluster-closed-1k-w1", "generator CPU", "gen_cpu_pct", "% core", Neither, Target::None, ""),
    row("cluster-closed-1k-w1", "errors", "errors_total", "", Lower, Target::None, ""),
    row(
        "cluster-closed-1k-w1",
        "other processes' CPU (noise)",
        "other_cpu_pct",
        "% core",
        Neither,
        Target::None,
        "",
    ),
    row(
        "cluster-open-20k",
        "CPU per message, 2 nodes + Redis",
        "server_cpu_us_per_msg",
        "us",
        Lower,
        Target::None,
        "",
    ),
    row(
        "cluster-open-20k",
        "CPU per message, one node",
        "local_cpu_us_per_msg",
        "us",
        Lower,
        Target::None,
        "",
    ),
    row(
        "cluster-open-20k",
        "CPU per message / one node's",
        "cpu_ratio_vs_local",
        "x",
        Lower,
        Target::None,
        "",
    ),
    row("cluster-open-20k", "Redis CPU per message", "redis_cpu_us_per_msg", "us", Lower, Target::None, ""),
    row(
        "cluster-open-20k",
        "Redis PUBLISH per message",
        "redis_publish_per_msg",
        "calls",
        Lower,
        Target::None,
        "",
    ),
    row("cluster-open-20k", "latency p50", "lat_p50_us", "us", Lower, Target::None, ""),
    row("cluster-open-20k", "latency p99", "lat_p99_us", "us", Lower, Target::None, ""),
    row("cluster-open-20k", "latency p99, one node", "local_lat_p99_us", "us", Lower, Target::None, ""),
    row("cluster-open-20k", "errors", "errors_total", "", Lower, Target::None, ""),
];

fn load(dir: &Path, server: &str, scenario: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(server).join(format!("{scenario}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn fmt(v: f64, unit: &str) -> String {
    let s = if v.abs() >= 1000.0 || unit == "bytes" || unit == "KiB" || unit.is_empty() {
        group(v.round() as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if unit.is_empty() { s } else { format!("{s} {unit}") }
}

fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub fn render(dir: &Path) -> Result<String, String> {
    if !dir.join("diva").is_dir() {
        return Err(format!("{}: no diva/ results in it", dir.display()));
    }
    let peers = dir.join("matchbox").is_dir();
    let floor = dir.join("floor").is_dir();
    let mut out = String::from("| scenario | metric | target | diva-signal |");
    let mut rule = String::from("| --- | --- | --- | ---: |");
    if peers {
        out.push_str(" matchbox_server | diva advantage |");
        rule.push_str(" ---: | ---: |");
    }
    if floor {
        out.push_str(" zero-work relay |");
        rule.push_str(" ---: |");
    }
    out.push_str(" met |\n");
    out.push_str(&rule);
    out.push_str(" --- |\n");
    for r in ROWS {
        let value = |server: &str, present: bool| {
            let v = if present { load(dir, server, r.scenario) } else { None };
            let x = v.as_ref().and_then(|v| v.get(r.key)).and_then(Value::as_f64);
            (v, x)
        };
        let (d, dv) = value("diva", true);
        let (m, mv) = value("matchbox", peers);
        let (f, fv) = value("floor", floor);
        if dv.is_none() && mv.is_none() && fv.is_none() {
            continue;
        }
        let ratio = match (dv, mv, r.better) {
            (Some(d), Some(m), Higher) if m > 0.0 => Some(d / m),
            (Some(d), Some(m), Lower) if d > 0.0 => Some(m / d),
            _ => None,
        };
        let gen_bound = [&d, &m].iter().any(|x| {
            x.as_ref().and_then(|v| v.get("gen_cpu_pct")).and_then(Value::as_f64).is_some_and(|p| p >= 90.0)
        });
        let met = match (r.target, dv) {
            (Target::None, _) | (_, None) => None,
            (Target::Max(t), Some(d)) => Some(d <= t),
            (Target::Min(t), Some(d)) => Some(d >= t),
            (Target::MaxAndRatio(t, k), Some(d)) => Some(d <= t && ratio.is_none_or(|x| x >= k)),
            (Target::Throughput, Some(_)) => ratio.map(|x| x >= if gen_bound { 1.5 } else { 3.0 }),
        };
        let met = match met {
            None if matches!(r.target, Target::None) => String::new(),
            None => "n/a".into(),
            Some(true) => "yes".into(),
            Some(false) => "**no**".into(),
        };
        // The median, and the lowest and highest round where they differ.
        let cell = |result: &Option<Value>, v: Option<f64>| {
            let Some(x) = v else { return "-".to_string() };
            let range = result.as_ref().and_then(|res| res.get("spread")).and_then(|s| s.get(r.key));
            match range
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>())
            {
                Some(lh) if lh.len() == 2 && lh[0] != lh[1] && r.key != "errors_total" => {
                    let bare = |v: f64| fmt(v, r.unit).trim_end_matches(r.unit).trim_end().to_string();
                    format!("{} ({}–{})", fmt(x, r.unit), bare(lh[0]), bare(lh[1]))
                }
                _ => fmt(x, r.unit),
            }
        };
        out.push_str(&format!("| {} | {} | {} | {} |", r.scenario, r.metric, r.target_text, cell(&d, dv)));
        if peers {
            let ratio = ratio.map(|x| format!("{x:.2}x")).unwrap_or_default();
            out.push_str(&format!(" {} | {} |", cell(&m, mv), ratio));
        }
        if floor {
            out.push_str(&format!(" {} |", cell(&f, fv)));
        }
        out.push_str(&format!(" {met} |\n"));
    }
    Ok(out)
}
