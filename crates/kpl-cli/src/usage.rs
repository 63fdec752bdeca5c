//! What this process has used: CPU time and memory, from `/proc/self` (Linux; zeros elsewhere).

use std::time::Duration;

/// CPU time and resident memory so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessUsage {
    /// CPU time in user mode.
    pub user: Duration,
    /// CPU time in the kernel.
    pub system: Duration,
    /// Resident memory now, KiB.
    pub rss_kib: u64,
    /// The most resident memory so far, KiB.
    pub peak_rss_kib: u64,
}

impl ProcessUsage {
    /// Reads it now.
    pub fn now() -> Self {
        let mut usage = Self::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which is in parentheses and may hold spaces:
            // utime and stime are the 12th and 13th of them, in USER_HZ ticks, which Linux
            // fixes at 100 per second for user space.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let ticks = |index: usize| {
                fields
                    .get(index)
                    .and_then(|field| field.parse::<u64>().ok())
                    .map_or(Duration::ZERO, |t| Duration::from_millis(t * 10))
            };
            usage.user = ticks(11);
            usage.system = ticks(12);
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kib = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0)
            };
            usage.rss_kib = kib("VmRSS:");
            usage.peak_rss_kib = kib("VmHWM:");
        }
        usage
    }

    /// User plus system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}
