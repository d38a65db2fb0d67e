//! How often this machine takes the CPU away from a thread that never sleeps.
//!
//! A thread reads the monotonic clock in a tight loop; any gap between two readings longer
//! than a few microseconds is time the thread did not run: a timer interrupt, a kernel
//! thread, or (on a VM) the hypervisor. No server can answer faster than the machine lets
//! it run, so these stalls set a floor under tail latency. Run one probe per CPU, pinned
//! with taskset, at the same time.

use serde_json::{Value, json};

use crate::sys::mono_ns;

/// Upper edges of the gap buckets, in microseconds; the last bucket is open.
const EDGES_US: [u64; 5] = [30, 100, 300, 1_000, 5_000];
/// Gaps at or below this are the loop itself, not a stall.
const STALL_US: u64 = 10;

pub fn probe(duration_ns: u64) -> Value {
    let start = mono_ns();
    let end = start + duration_ns;
    let mut prev = start;
    let mut counts = [0u64; EDGES_US.len() + 1];
    let mut lost_ns = 0u64;
    let mut max_ns = 0u64;
    loop {
        let now = mono_ns();
        let gap = now - prev;
        prev = now;
        if now >= end {
            break;
        }
        if gap > STALL_US * 1000 {
            lost_ns += gap;
            max_ns = max_ns.max(gap);
            let bucket = EDGES_US.iter().position(|&edge| gap <= edge * 1000).unwrap_or(EDGES_US.len());
            counts[bucket] += 1;
        }
    }
    let secs = (prev - start) as f64 / 1e9;
    let per_s = |n: u64| (n as f64 / secs * 10.0).round() / 10.0;
    let stalls: u64 = counts.iter().sum();
    let over_100: u64 = counts[2..].iter().sum();
    json!({
        "mode": "jitter",
        "seconds": (secs * 1000.0).round() / 1000.0,
        "stalls_per_s": per_s(stalls),
        "stalls_over_30us_per_s": per_s(counts[1..].iter().sum()),
        "stalls_over_100us_per_s": per_s(over_100),
        "lost_pct": (lost_ns as f64 / (secs * 1e9) * 10000.0).round() / 100.0,
        "max_stall_us": max_ns / 1000,
        "buckets_us": {
            "10-30": counts[0],
            "30-100": counts[1],
            "100-300": counts[2],
            "300-1000": counts[3],
            "1000-5000": counts[4],
            "over 5000": counts[5],
        },
    })
}

pub fn print_human(v: &Value) {
    let g = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    println!(
        "stalls of a spinning thread: {}/s over 10 us, {}/s over 30 us, {}/s over 100 us; {} % of the time lost; longest {} us",
        g("stalls_per_s"),
        g("stalls_over_30us_per_s"),
        g("stalls_over_100us_per_s"),
        g("lost_pct"),
        g("max_stall_us")
    );
    println!("  by length (us): {}", g("buckets_us"));
}
