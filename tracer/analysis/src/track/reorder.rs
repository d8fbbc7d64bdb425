//! Puts events back in timestamp order before they reach the tracker. Records from different
//! CPUs share one ring buffer in the order they reserved space, which can differ slightly from
//! the order their timestamps say; holding the newest few milliseconds back lets late ones in.
use std::collections::VecDeque;

use crate::decode::Event;

/// How long an event is held for stragglers from other CPUs, past the moment everything before it
/// is known to have been sent (see `app::Horizon`).
pub const WINDOW_NS: u64 = 10_000_000;
/// Past this many held events everything is released (bounded memory under any burst); while
/// nothing may be released (a socket snapshot is being taken), newcomers past it are dropped
/// and counted.
const MAX_HELD: usize = 1 << 20;

/// Held events stay where they arrived; only their keys (timestamp, arrival number) are sorted.
/// An event is 200 bytes and a busy host's reorder window holds thousands, arriving from each
/// CPU's batch in runs that interleave: sorting the events themselves was the tracer's largest
/// cost (a quarter of its CPU in `memmove`).
#[derive(Default)]
pub struct Reorder {
    /// Events in arrival order; a released one leaves a hole until every one before it has gone.
    slots: VecDeque<Option<Event>>,
    /// The arrival number of `slots[0]`.
    first_slot: u64,
    /// (timestamp, arrival number) of every held event: sorted up to `sorted`, then newcomers.
    order: VecDeque<(u64, u64)>,
    sorted: usize,
    /// Events dropped because the stage was full.
    pub dropped: u64,
}

impl Reorder {
    pub fn push(&mut self, event: &Event) {
        if self.slots.len() >= MAX_HELD {
            self.dropped += 1;
            return;
        }
        self.order.push_back((event.timestamp_ns, self.first_slot + self.slots.len() as u64));
        self.slots.push_back(Some(*event));
    }

    /// Hands every event older than `horizon_ns` to `take`, oldest first (arrival order among
    /// equal timestamps), and forgets them. `horizon_ns = u64::MAX` releases everything. Only
    /// the newcomers' keys and the part of the sorted keys they reach into are sorted.
    pub fn release(&mut self, horizon_ns: u64, mut take: impl FnMut(&Event)) {
        let order = self.order.make_contiguous();
        if let Some(&oldest_new) = order[self.sorted..].iter().min() {
            let from = order[..self.sorted].partition_point(|key| *key < oldest_new);
            // Keys are unique (arrival numbers), so an unstable sort keeps arrival order.
            order[from..].sort_unstable();
        }
        let ready = if self.slots.len() >= MAX_HELD { order.len() } else { order.partition_point(|(at, _)| *at < horizon_ns) };
        for &(_, arrival) in &order[..ready] {
            let slot = &mut self.slots[(arrival - self.first_slot) as usize];
            if let Some(event) = slot {
                take(event);
            }
            *slot = None;
        }
        self.order.drain(..ready);
        self.sorted = self.order.len();
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.first_slot += 1;
        }
    }

    pub fn held(&self) -> usize {
        self.order.len()
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
            reorder.push(&script.state(TcpState::SynSent, TcpState::Established, at));
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
            reorder.push(&script.state(TcpState::SynSent, TcpState::Established, at * ms));
        }
        reorder.release(2 * ms, |event| out.push(event.timestamp_ns / ms));
        // Another CPU's batch arrives late, reaching back into the held run, itself unordered.
        for at in [8, 3, 10, 5] {
            reorder.push(&script.state(TcpState::SynSent, TcpState::Established, at * ms));
        }
        reorder.release(6 * ms, |event| out.push(event.timestamp_ns / ms));
        reorder.push(&script.state(TcpState::SynSent, TcpState::Established, 2 * ms));
        reorder.release(u64::MAX, |event| out.push(event.timestamp_ns / ms));
        assert_eq!(out, [1, 3, 5, 2, 6, 7, 8, 9, 10], "2 ms came after its time had been released: it goes out next");
    }

    #[test]
    fn a_full_stage_that_cannot_release_drops_newcomers_and_counts_them() {
        let script = Script::new(1, "10.0.0.1:1000", "10.0.0.2:80");
        let mut reorder = Reorder::default();
        for at in 0..MAX_HELD as u64 + 5 {
            reorder.push(&script.state(TcpState::SynSent, TcpState::Established, at));
        }
        assert_eq!((reorder.held(), reorder.dropped), (MAX_HELD, 5));
        let mut released = 0;
        reorder.release(0, |_| released += 1);
        assert_eq!((released, reorder.held()), (MAX_HELD, 0), "at the cap everything goes, whatever the horizon");
    }
}
