//! The kernel's clocks: the conversion from its CLOCK_MONOTONIC timestamps to wall-clock time
//! (in the model, which every output uses), and its tick rate, read from /proc.
use std::time::Duration;

pub use tracer_model::clock::{monotonic_ns, Clock};

/// The kernel's tick rate (CONFIG_HZ), which socket clocks count in: two readings of
/// /proc/timer_list (root only) 100 ms apart, snapped to the rates kernels are built with.
/// `None` when it cannot be read.
pub fn kernel_hz() -> Option<u32> {
    let reading = || -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/timer_list").ok()?;
        let now = text.lines().find_map(|line| line.strip_prefix("now at ")?.strip_suffix(" nsecs")?.parse().ok())?;
        let jiffies = text.lines().find_map(|line| line.trim().strip_prefix("jiffies: ")?.parse().ok())?;
        Some((now, jiffies))
    };
    let (ns0, jiffies0) = reading()?;
    std::thread::sleep(Duration::from_millis(100));
    let (ns1, jiffies1) = reading()?;
    snap_hz(jiffies1.checked_sub(jiffies0)?, ns1.checked_sub(ns0)?)
}

/// The tick rate `jiffies` over `ns` measure, when it is near one kernels use (within 10 %).
fn snap_hz(jiffies: u64, ns: u64) -> Option<u32> {
    let measured = jiffies as f64 * 1e9 / ns.max(1) as f64;
    [100u32, 250, 300, 1000].into_iter().find(|hz| (measured - f64::from(*hz)).abs() <= f64::from(*hz) * 0.1)
}

pub use tracer_model::tenths_of_seconds;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_rate_is_one_kernels_use_or_unknown() {
        assert_eq!(snap_hz(26, 101_000_000), Some(250));
        assert_eq!(snap_hz(30, 100_000_000), Some(300));
        assert_eq!(snap_hz(100, 100_000_000), Some(1000));
        assert_eq!(snap_hz(60, 100_000_000), None, "600 Hz is no kernel's");
        assert!(kernel_hz().is_none_or(|hz| [100, 250, 300, 1000].contains(&hz)));
    }
}
