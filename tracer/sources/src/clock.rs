//! The kernel's clocks: the conversion from its CLOCK_MONOTONIC timestamps to wall-clock time
//! (in the model, which every output uses), and its tick rate, read from /proc.
use std::time::Duration;

pub use tracer_model::clock::{monotonic_ns, Clock};

/// The kernel's tick: its rate (CONFIG_HZ), which socket clocks count in, and where the jiffies
/// stand against CLOCK_MONOTONIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticks {
    pub hz: u32,
    /// CLOCK_MONOTONIC less `jiffies_64` ticks, in nanoseconds (wrapping): the kernel derives its
    /// jiffies from that clock, so this holds to within the tick the jiffies may lag by.
    pub jiffies_base_ns: u64,
}

/// Two readings of /proc/timer_list (root only) 100 ms apart: the tick rate, snapped to the
/// rates kernels are built with, and the base from the second. `None` when it cannot be read.
pub fn kernel_ticks() -> Option<Ticks> {
    let reading = || -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/timer_list").ok()?;
        let now = text.lines().find_map(|line| line.strip_prefix("now at ")?.strip_suffix(" nsecs")?.parse().ok())?;
        let jiffies = text.lines().find_map(|line| line.trim().strip_prefix("jiffies: ")?.parse().ok())?;
        Some((now, jiffies))
    };
    let (ns0, jiffies0) = reading()?;
    std::thread::sleep(Duration::from_millis(100));
    let (ns1, jiffies1) = reading()?;
    let hz = snap_hz(jiffies1.checked_sub(jiffies0)?, ns1.checked_sub(ns0)?)?;
    Some(Ticks { hz, jiffies_base_ns: ns1.wrapping_sub(jiffies1.wrapping_mul(1_000_000_000 / u64::from(hz))) })
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
        let ticks = kernel_ticks();
        assert!(ticks.is_none_or(|ticks| [100, 250, 300, 1000].contains(&ticks.hz)));
        // The jiffies, read again with the base, tell the time to within a tick or two.
        if let Some(Ticks { hz, jiffies_base_ns }) = ticks {
            let text = std::fs::read_to_string("/proc/timer_list").unwrap();
            let jiffies: u64 = text.lines().find_map(|line| line.trim().strip_prefix("jiffies: ")?.parse().ok()).unwrap();
            let tick_ns = 1_000_000_000 / u64::from(hz);
            let about_now = jiffies.wrapping_mul(tick_ns).wrapping_add(jiffies_base_ns);
            let error_ns = monotonic_ns().abs_diff(about_now);
            assert!(error_ns <= 2 * tick_ns, "{error_ns} ns off");
        }
    }
}
