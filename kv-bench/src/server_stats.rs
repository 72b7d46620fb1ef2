//! CPU time and memory of the server process under load, read from Linux `/proc/<pid>` (the
//! server runs on the same machine: kv-bench only loads loopback targets).

use std::time::Duration;

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// User + system CPU time of all its threads so far.
    pub cpu: Duration,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> Result<Sample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    parse(&stat, &status, clock_ticks()).ok_or_else(|| format!("unexpected /proc/{pid} format"))
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux port
/// that matters; `getconf CLK_TCK` would say otherwise only on exotic kernels).
fn clock_ticks() -> u64 {
    100
}

fn parse(stat: &str, status: &str, ticks: u64) -> Option<Sample> {
    // Fields after the command name (which may hold spaces, hence the last ')').
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ticks_total = utime + stime;
    Some(Sample {
        cpu: Duration::from_millis(ticks_total * 1000 / ticks.max(1)),
        rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (kv connect) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 2000000 500";
        let status = "Name:\tkv\nVmHWM:\t  9000 kB\nVmRSS:\t  8192 kB\nThreads:\t9\n";
        assert_eq!(
            parse(stat, status, 100),
            Some(Sample {
                cpu: Duration::from_secs(3),
                rss_kib: 8192
            })
        );
        assert_eq!(parse("garbage", status, 100), None);
        assert_eq!(parse(stat, "Name:\tkv\n", 100), None);
    }

    #[test]
    fn reads_its_own_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }
}
