//! Thin wrappers over the system calls the generator needs: clocks, limits, resource usage,
//! sockets bound to a chosen loopback source address, a timerfd, and /proc readings.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// CLOCK_MONOTONIC in nanoseconds (the clock `Instant` and timerfd use).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft open-file limit to the hard one; returns the limit in force.
pub fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        // Raising failed (the hard limit may be more than the kernel allows): what is in force.
        Err(_) => rlimit::Resource::NOFILE.get().map_or(1024, |(soft, _)| soft),
    }
}

/// Timers asleep for less than this wake late: ask for 1 ns of slack instead of 50 µs.
pub fn tight_timer_slack() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// This process's user+system CPU time, in microseconds.
pub fn self_cpu_us() -> u64 {
    // SAFETY: getrusage fills a local struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What /proc says about the server process (or, summed, about the server's processes:
/// diva-signal and an nginx in front of it).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// utime + stime, all threads, in microseconds (clock-tick resolution).
    pub cpu_us: u64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub threads: u64,
    /// Summed over several processes: the first one's `cpu_us` (its share of the sum).
    pub first_cpu_us: u64,
}

/// The processes' figures added up (CPU, RSS, peak RSS, threads); `None` when there are
/// none or one of them cannot be read (it ended: the figures would be wrong).
pub fn proc_stats_sum(pids: &[u32]) -> Option<ProcStats> {
    let mut sum = ProcStats::default();
    for (k, &pid) in pids.iter().enumerate() {
        let s = proc_stats(pid).ok()?;
        if k == 0 {
            sum.first_cpu_us = s.cpu_us;
        }
        sum.cpu_us += s.cpu_us;
        sum.rss_kb += s.rss_kb;
        sum.hwm_kb += s.hwm_kb;
        sum.threads += s.threads;
    }
    (!pids.is_empty()).then_some(sum)
}

pub fn proc_stats(pid: u32) -> io::Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let cpu_us = (field(14) + field(15)) * 1_000_000 / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats {
        cpu_us,
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
        threads: kb("Threads:"),
        first_cpu_us: cpu_us,
    })
}

/// A non-blocking TCP connect from `src` (port chosen at connect time, so many source
/// addresses multiply the ephemeral port range) to `dst`, with TCP_NODELAY.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<mio::net::TcpStream> {
    // SAFETY: a fresh descriptor, owned at once; the sockaddr structs are fully initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let optlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let on = &one as *const libc::c_int as *const libc::c_void;
        libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, on, optlen);
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, on, optlen);
        let sin = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sin(src, 0);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sin(*dst.ip(), dst.port());
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(err);
            }
        }
        Ok(mio::net::TcpStream::from_std(std::net::TcpStream::from(owned)))
    }
}

/// A CLOCK_MONOTONIC timerfd armed at absolute times: wakes the poll loop to the microsecond,
/// where epoll_wait's own timeout has millisecond resolution.
pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create returns a new descriptor or -1.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is ours.
        Ok(Timer { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fire once at `at_ns` (CLOCK_MONOTONIC); 0 disarms.
    pub fn arm_at(&self, at_ns: u64) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and spec.
        unsafe { libc::timerfd_settime(self.raw(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
    }

    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into buf.
        unsafe { libc::read(self.raw(), buf.as_mut_ptr() as *mut libc::c_void, 8) };
    }
}

/// CPU time all processes used so far (user, nice, system, irq, softirq, steal), summed over
/// CPUs, in microseconds; from the first line of /proc/stat.
pub fn machine_busy_us() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0 };
    let line = stat.lines().next().unwrap_or("");
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&k| f.get(k)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    busy * 1_000_000 / hz
}
