//! Kernel timestamps are CLOCK_MONOTONIC nanoseconds; operators read wall-clock time. The offset
//! between the two is taken once at start-up, and every output converts with it.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in nanoseconds.
    realtime_minus_monotonic: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let realtime = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
        Clock { realtime_minus_monotonic: realtime - i128::from(monotonic_ns()) }
    }

    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        let nanos = (i128::from(monotonic_ns) + self.realtime_minus_monotonic).max(0);
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    }

    /// RFC 3339 with microseconds, UTC.
    pub fn format(&self, monotonic_ns: u64) -> String {
        self.rfc3339(monotonic_ns).to_string()
    }

    /// The same, to be written where it goes (no string of its own).
    pub fn rfc3339(&self, monotonic_ns: u64) -> humantime::Rfc3339Timestamp {
        humantime::format_rfc3339_micros(self.wall(monotonic_ns))
    }
}

pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
