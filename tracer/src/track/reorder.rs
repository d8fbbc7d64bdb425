//! Puts events back in timestamp order before they reach the tracker. Records from different
//! CPUs share one ring buffer in the order they reserved space, which can differ slightly from
//! the order their timestamps say; holding the newest few milliseconds back lets late ones in.
use std::collections::VecDeque;

use crate::decode::Event;

/// How long an event is held for stragglers from other CPUs, past the moment everything before it
/// is known to have been sent (see `app::Horizon`).
pub const WINDOW_NS: u64 = 10_000_000;
/// Past this many held events everything is released (bounded memory under any burst).
const MAX_HELD: usize = 1 << 20;

/// Held events: a sorted run, then what arrived since the last release (in arrival order).
#[derive(Default)]
pub struct Reorder {
    held: VecDeque<Event>,
    sorted: usize,
}

impl Reorder {
    pub fn push(&mut self, event: Event) {
        self.held.push_back(event);
    }

    /// Hands every event older than `horizon_ns` to `take`, oldest first, and forgets them.
    /// `horizon_ns = u64::MAX` releases everything. The events are lent where they lie, not
    /// copied out: this runs for every event. Only the newcomers and the part of the sorted run
    /// they reach into are sorted, and released events leave from the front: the held events,
    /// ten milliseconds of a busy host's, are neither moved nor read again at each release.
    pub fn release(&mut self, horizon_ns: u64, mut take: impl FnMut(&Event)) {
        let held = self.held.make_contiguous();
        if let Some(oldest_new) = held[self.sorted..].iter().map(|event| event.timestamp_ns).min() {
            let from = held[..self.sorted].partition_point(|event| event.timestamp_ns <= oldest_new);
            // Stable and adaptive: a sorted run and a few newcomers cost about one pass.
            held[from..].sort_by_key(|event| event.timestamp_ns);
        }
        let ready = if held.len() > MAX_HELD { held.len() } else { held.partition_point(|event| event.timestamp_ns < horizon_ns) };
        held[..ready].iter().for_each(&mut take);
        self.held.drain(..ready);
        self.sorted = self.held.len();
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode::TcpState, track::fixtures::Script};

    #[test]
    fn events_come_out_in_timestamp_order_once_the_window_has_passed() {
        let script = Script::new(1, "10.0.0.1:1000", "10.0.0.2:80");
        let mut reorder = Reorder::default();
        let ms = 1_000_000;
        for at in [5 * ms, 3 * ms, 40 * ms, 4 * ms, 38 * ms] {
            reorder.push(script.state(TcpState::SynSent, TcpState::Established, at));
        }
        let mut out = Vec::new();
        reorder.release(45 * ms - WINDOW_NS, |event| out.push(*event));
        let times: Vec<u64> = out.iter().map(|event| event.timestamp_ns / ms).collect();
        assert_eq!(times, [3, 4, 5], "38 and 40 ms are still within the window at 45 ms");
        assert_eq!(reorder.held(), 2);
        reorder.release(u64::MAX, |event| out.push(*event));
        assert_eq!(out.iter().map(|event| event.timestamp_ns / ms).collect::<Vec<_>>(), [3, 4, 5, 38, 40]);
    }

    #[test]
    fn a_late_newcomer_goes_before_held_events_that_are_newer() {
        let script = Script::new(1, "10.0.0.1:1000", "10.0.0.2:80");
        let mut reorder = Reorder::default();
        let ms = 1_000_000;
        let mut out = Vec::new();
        for at in [1, 6, 7, 9] {
            reorder.push(script.state(TcpState::SynSent, TcpState::Established, at * ms));
        }
        reorder.release(2 * ms, |event| out.push(event.timestamp_ns / ms));
        // Another CPU's batch arrives late, reaching back into the held run, itself unordered.
        for at in [8, 3, 10, 5] {
            reorder.push(script.state(TcpState::SynSent, TcpState::Established, at * ms));
        }
        reorder.release(6 * ms, |event| out.push(event.timestamp_ns / ms));
        reorder.push(script.state(TcpState::SynSent, TcpState::Established, 2 * ms));
        reorder.release(u64::MAX, |event| out.push(event.timestamp_ns / ms));
        assert_eq!(out, [1, 3, 5, 2, 6, 7, 8, 9, 10], "2 ms came after its time had been released: it goes out next");
    }
}
