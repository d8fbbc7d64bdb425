//! The `process_*` series every Prometheus exporter serves (CPU, memory, descriptors, start
//! time), read from /proc/self at each scrape, so a fleet sees what the tracer itself costs
//! with the queries it already has. Linux only, like the tracer.
use std::fs;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

#[derive(Debug)]
pub struct ProcessMetrics {
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    ticks: f64,
    page_bytes: f64,
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        ProcessMetrics { ticks: ticks.max(1) as f64, page_bytes: page.max(1) as f64 }
    }
}

/// What /proc says of this process.
#[derive(Debug, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: f64,
    open_fds: f64,
    max_fds: f64,
}

impl ProcessMetrics {
    fn read(&self) -> Option<Reading> {
        let stat = fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ").and_then(|seconds| seconds.trim().parse::<f64>().ok()))?;
        let mut reading = self.read_stat(&stat, boot_time)?;
        reading.open_fds = fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count()) as f64;
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            reading.max_fds = limit.rlim_cur as f64;
        }
        Some(reading)
    }

    /// The fields of /proc/self/stat after the command name (which may hold spaces): utime and
    /// stime (14, 15), starttime (22), vsize (23), rss (24), counting from 1.
    fn read_stat(&self, stat: &str, boot_time: f64) -> Option<Reading> {
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3).and_then(|value| value.parse::<f64>().ok());
        Some(Reading {
            cpu_seconds: (field(14)? + field(15)?) / self.ticks,
            resident_bytes: field(24)? * self.page_bytes,
            virtual_bytes: field(23)?,
            start_time_seconds: boot_time + field(22)? / self.ticks,
            open_fds: 0.0,
            max_fds: 0.0,
        })
    }
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(reading) = self.read() else { return Ok(()) };
        let cpu = ConstCounter::new(reading.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, value) in [
            ("process_resident_memory_bytes", "Resident memory size in bytes", reading.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", reading.virtual_bytes),
            ("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds", reading.start_time_seconds),
            ("process_open_fds", "Open file descriptors", reading.open_fds),
            ("process_max_fds", "The limit on open file descriptors", reading.max_fds),
        ] {
            ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_is_read_by_field_number() {
        let metrics = ProcessMetrics { ticks: 100.0, page_bytes: 4096.0 };
        let stat = "42 (tracer (x y)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 123456 10 18446744073709551615";
        let reading = metrics.read_stat(stat, 1_700_000_000.0).unwrap();
        assert_eq!(
            reading,
            Reading {
                cpu_seconds: 3.0,
                resident_bytes: 40960.0,
                virtual_bytes: 123456.0,
                start_time_seconds: 1_700_000_010.0,
                open_fds: 0.0,
                max_fds: 0.0
            }
        );
        let live = ProcessMetrics::default().read().expect("/proc/self");
        assert!(live.resident_bytes > 0.0 && live.open_fds >= 3.0 && live.start_time_seconds > 1.6e9, "{live:?}");
    }
}
