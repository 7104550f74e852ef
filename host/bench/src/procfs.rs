//! A process's resident memory and CPU time, and the machine's idle time, from Linux `/proc`.

/// Resident memory of process `pid`, bytes (Linux `/proc`; `None` elsewhere).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time process `pid` has spent, user and system, all threads, seconds (Linux `/proc`;
/// `None` elsewhere). `/proc` counts it in the kernel's user-visible tick of 1/100 s.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`;
    // `utime` and `stime` are fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The machine's CPU time so far, all CPUs, in the kernel's ticks: `/proc/stat`'s `cpu` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// Idle, and idle waiting on I/O.
    pub unused: u64,
    /// Everything: user, nice, system, idle, I/O wait, interrupts, soft interrupts, steal.
    pub total: u64,
}

impl CpuTicks {
    /// The share of the time between `start` and `self` that went unused, percent; `None` if
    /// no time passed.
    pub fn idle_percent_since(&self, start: &CpuTicks) -> Option<f64> {
        let total = self.total.checked_sub(start.total).filter(|t| *t > 0)?;
        let unused = self.unused.saturating_sub(start.unused);
        Some(100.0 * unused as f64 / total as f64)
    }

    /// Parses `/proc/stat`.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal, then guest time already counted
        // in user and nice.
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .ok()?;
        Some(Self {
            unused: ticks.get(3)? + ticks.get(4).copied().unwrap_or(0),
            total: ticks.iter().sum(),
        })
    }
}

/// The machine's CPU time so far (Linux `/proc`; `None` elsewhere).
pub fn machine_cpu_ticks() -> Option<CpuTicks> {
    CpuTicks::parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_is_read_from_proc_stat() {
        let at = |user: u64, idle: u64, iowait: u64| {
            CpuTicks::parse(&format!(
                "cpu  {user} 0 100 {idle} {iowait} 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2\n"
            ))
            .expect("parses")
        };
        assert_eq!(
            at(1000, 400, 100),
            CpuTicks {
                unused: 500,
                total: 1610
            }
        );
        // 900 more ticks, of which 90 idle and 10 waiting on I/O.
        let percent = at(1800, 490, 110).idle_percent_since(&at(1000, 400, 100));
        assert_eq!(percent, Some(100.0 * 100.0 / 900.0));
        assert_eq!(
            at(1000, 400, 100).idle_percent_since(&at(1000, 400, 100)),
            None
        );
        assert_eq!(CpuTicks::parse("cpu0 1 2 3\n"), None);
        assert_eq!(CpuTicks::parse("cpu  1 x 3 4\n"), None);
        if cfg!(target_os = "linux") {
            assert!(machine_cpu_ticks().is_some_and(|t| t.total >= t.unused));
        }
    }
}
