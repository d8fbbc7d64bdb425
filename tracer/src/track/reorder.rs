//! Puts events back in timestamp order before they reach the tracker. Records from different
//! CPUs share one ring buffer in the order they reserved space, which can differ slightly from
//! the order their timestamps say; holding the newest few milliseconds back lets late ones in.
use crate::decode::Event;

/// How long an event is held for stragglers from other CPUs, past the moment everything before it
/// is known to have been sent (see `app::Horizon`).
pub const WINDOW_NS: u64 = 10_000_000;
/// Past this many held events everything is released (bounded memory under any burst).
const MAX_HELD: usize = 1 << 20;

#[derive(Default)]
pub struct Reorder {
    held: Vec<Event>,
}

impl Reorder {
    pub fn push(&mut self, event: Event) {
        self.held.push(event);
    }

    /// Hands every event older than `horizon_ns` to `take`, oldest first, and forgets them.
    /// `horizon_ns = u64::MAX` releases everything. The events are lent where they lie, not
    /// copied out: this runs for every event.
    pub fn release(&mut self, horizon_ns: u64, mut take: impl FnMut(&Event)) {
        // Stable and adaptive: nearly sorted input costs about one pass.
        self.held.sort_by_key(|event| event.timestamp_ns);
        let ready =
            if self.held.len() > MAX_HELD { self.held.len() } else { self.held.partition_point(|event| event.timestamp_ns < horizon_ns) };
        self.held[..ready].iter().for_each(&mut take);
        self.held.drain(..ready);
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
}
