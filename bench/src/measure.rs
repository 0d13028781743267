//! Measuring: a latency histogram, process CPU time and resident memory.

use std::time::Duration;

/// Log-linear buckets: 64 sub-buckets per power of two of nanoseconds, ~1.5% precision.
pub struct Latency {
    counts: Vec<u64>,
    pub n: u64,
    pub max_ns: u64,
}

const SUB: u64 = 64;

impl Latency {
    pub fn new() -> Latency {
        Latency {
            counts: vec![0; 64 * SUB as usize],
            n: 0,
            max_ns: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < SUB {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros() as u64; // >= 6
        let shift = exp - 6;
        let sub = (ns >> shift) - SUB; // 0..64
        ((exp - 5) * SUB + sub) as usize
    }

    fn value(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        let exp = index / SUB + 5;
        let sub = index % SUB;
        (SUB + sub) << (exp - 6)
    }

    pub fn record(&mut self, ns: u64) {
        let i = Self::index(ns).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.n += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The value at quantile `q` (0..1), in nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        if q >= 1.0 {
            return self.max_ns;
        }
        let target = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::value(i).min(self.max_ns);
            }
        }
        self.max_ns
    }
}

/// Nanoseconds as milliseconds, the unit every report gives latencies in.
pub fn ms(ns: u64) -> serde_json::Value {
    serde_json::json!(ns as f64 / 1e6)
}

/// The probe's figures of a run with attackers (`noisy`, `hostile`): its round trips and
/// latencies before the attack and under it.
pub fn probe_rows(quiet: &Latency, loaded: &Latency) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("probe_round_trips_unloaded", serde_json::json!(quiet.n)),
        ("probe_unloaded_p50_ms", ms(quiet.quantile(0.50))),
        ("probe_unloaded_p99_ms", ms(quiet.quantile(0.99))),
        ("probe_round_trips_loaded", serde_json::json!(loaded.n)),
        ("probe_loaded_p50_ms", ms(loaded.quantile(0.50))),
        ("probe_loaded_p99_ms", ms(loaded.quantile(0.99))),
        ("probe_loaded_max_ms", ms(loaded.max_ns)),
    ]
}

/// User plus system CPU time of a process, from /proc/<pid>/stat.
pub fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line; 12 and 13 after the ')'.
    let total = ticks(11) + ticks(12);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(total * 1_000_000_000 / hz)
}

/// This process's own CPU time (getrusage), precise to microseconds.
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv =
        |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident memory of a process in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Raises the soft open-file limit to the hard one (20,000 per process on these machines).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            return lim.rlim_cur;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut l = Latency::new();
        for v in 1..=100_000u64 {
            l.record(v * 10);
        }
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0), (0.999, 999_000.0)] {
            let got = l.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "{q}: {got} vs {want}");
        }
        assert_eq!(l.quantile(1.0), 1_000_000);
    }
}
