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

/// Most runs of keys kept apart; past it a key that fits no run is inserted into one.
const MAX_RUNS: usize = 32;

/// Held events stay where they arrived; only their keys (timestamp, arrival number) are put in
/// order. They arrive in runs already in order (a CPU's batch is in the order its programs ran,
/// and one CPU's batches follow each other), interleaved with the other CPUs' runs: so each key
/// joins the run whose last key is the greatest not above it, and a release merges the runs'
/// fronts. That is a few comparisons per event where sorting the held keys at every release was
/// a sixth of the tracer's time; an event is 200 bytes, and sorting the events themselves had
/// been a quarter of it, in `memmove`.
#[derive(Default)]
pub struct Reorder {
    /// Events in arrival order; a released one leaves a hole until every one before it has gone.
    slots: VecDeque<Option<Event>>,
    /// The arrival number of `slots[0]`.
    first_slot: u64,
    /// (timestamp, arrival number) of every held event, in runs that are each in order and never
    /// empty.
    runs: Vec<VecDeque<(u64, u64)>>,
    /// The run the last key joined: the next key most likely follows it.
    last_run: usize,
    /// Emptied runs, kept for their allocations.
    spare: Vec<VecDeque<(u64, u64)>>,
    /// Events dropped because the stage was full.
    pub dropped: u64,
}

impl Reorder {
    pub fn push(&mut self, event: &Event) {
        if self.slots.len() >= MAX_HELD {
            self.dropped += 1;
            return;
        }
        self.place((event.timestamp_ns, self.first_slot + self.slots.len() as u64));
        self.slots.push_back(Some(*event));
    }

    fn place(&mut self, key: (u64, u64)) {
        // Most keys follow the one before them (the same CPU's batch): that key's run takes them.
        if let Some(run) = self.runs.get_mut(self.last_run).filter(|run| run.back().is_some_and(|last| *last <= key)) {
            run.push_back(key);
            return;
        }
        let last = |run: &VecDeque<(u64, u64)>| *run.back().expect("runs are never empty");
        let fits = self.runs.iter().enumerate().filter(|(_, run)| last(run) <= key).max_by_key(|(_, run)| last(run));
        if let Some((index, _)) = fits {
            self.runs[index].push_back(key);
            self.last_run = index;
        } else if self.runs.len() < MAX_RUNS {
            let mut run = self.spare.pop().unwrap_or_default();
            run.push_back(key);
            self.last_run = self.runs.len();
            self.runs.push(run);
        } else {
            // Every run ends later than this key (many stragglers): it goes inside the first.
            let run = &mut self.runs[0];
            run.insert(run.partition_point(|held| *held < key), key);
        }
    }

    /// Hands every event older than `horizon_ns` to `take`, oldest first (arrival order among
    /// equal timestamps), and forgets them. `horizon_ns = u64::MAX` releases everything, as does
    /// a full stage.
    pub fn release(&mut self, horizon_ns: u64, mut take: impl FnMut(&Event)) {
        let everything = self.slots.len() >= MAX_HELD;
        while let Some((index, next)) = self.earliest_run() {
            // The run with the earliest front gives every key up to the next run's front at once.
            let run = &mut self.runs[index];
            let mut released = 0;
            while let Some(&(at, arrival)) = run.front() {
                if (at >= horizon_ns && !everything) || (at, arrival) > next {
                    break;
                }
                run.pop_front();
                released += 1;
                if let Some(&(_, following)) = run.front() {
                    prefetch(self.slots.get((following - self.first_slot) as usize));
                }
                let slot = &mut self.slots[(arrival - self.first_slot) as usize];
                if let Some(event) = slot {
                    take(event);
                }
                *slot = None;
            }
            if run.is_empty() {
                self.spare.push(self.runs.swap_remove(index));
                self.last_run = usize::MAX;
            } else if released == 0 {
                break; // the earliest key is past the horizon
            }
        }
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.first_slot += 1;
        }
    }

    /// The run whose front key is the earliest, and the earliest front key of the other runs
    /// (the greatest key when there is none), in one pass.
    fn earliest_run(&self) -> Option<(usize, (u64, u64))> {
        let mut earliest: Option<(usize, (u64, u64))> = None;
        let mut next = (u64::MAX, u64::MAX);
        for (index, run) in self.runs.iter().enumerate() {
            let front = *run.front().expect("runs are never empty");
            match earliest {
                Some((_, key)) if key <= front => next = next.min(front),
                _ => {
                    if let Some((_, key)) = earliest {
                        next = next.min(key);
                    }
                    earliest = Some((index, front));
                }
            }
        }
        earliest.map(|(index, _)| (index, next))
    }

    pub fn held(&self) -> usize {
        self.runs.iter().map(VecDeque::len).sum()
    }
}

/// Asks the CPU to load a held event into its cache while the one before it is tracked: held for
/// milliseconds behind thousands of newer ones, an event has left the cache by its release, and
/// the tracker's first read of it was a fifth of its time in `perf`.
#[inline(always)]
fn prefetch<T>(held: Option<&T>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(held) = held {
        let start = (held as *const T).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a hint; the address lies within `held`, and a prefetch never faults.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(start.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = held;
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
    fn interleaved_batches_and_stragglers_come_out_as_a_sort_of_the_held_keys_would_put_them() {
        let script = Script::new(1, "10.0.0.1:1000", "10.0.0.2:80");
        let (mut reorder, mut reference, mut released, mut expected) = (Reorder::default(), Vec::new(), Vec::new(), Vec::new());
        let mut clocks = [0u64; 4];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let mut arrival = 0;
        for round in 0..400 {
            // A batch from one CPU: in order, equal timestamps among them; now and then a
            // straggler from far behind, or an event stamped a little before its predecessor.
            let cpu = random(4) as usize;
            for _ in 0..1 + random(64) {
                clocks[cpu] += random(3);
                let at = match random(50) {
                    0 => clocks[cpu].saturating_sub(random(500)),
                    1 => clocks[cpu].saturating_sub(2),
                    _ => clocks[cpu],
                };
                let mut event = script.state(TcpState::SynSent, TcpState::Established, at);
                event.socket.address = arrival;
                reorder.push(&event);
                reference.push((at, arrival));
                arrival += 1;
            }
            if round % 3 == 0 {
                let horizon = if round == 399 { u64::MAX } else { clocks.iter().min().unwrap().saturating_sub(random(20)) };
                reorder.release(horizon, |event| released.push((event.timestamp_ns, event.socket.address)));
                let (mut ready, held): (Vec<_>, Vec<_>) = reference.iter().partition(|(at, _)| *at < horizon);
                ready.sort();
                expected.extend(ready);
                reference = held;
                assert_eq!(released, expected, "after round {round}");
                assert_eq!(reorder.held(), reference.len());
            }
        }
        assert_eq!((released.len() as u64, reorder.held()), (arrival, 0));
    }

    #[test]
    fn past_its_runs_a_key_that_fits_none_still_comes_out_in_order() {
        let script = Script::new(1, "10.0.0.1:1000", "10.0.0.2:80");
        let mut reorder = Reorder::default();
        // Each key is older than every one before it: a run of its own, until there are too many.
        for at in (0..3 * MAX_RUNS as u64).rev() {
            reorder.push(&script.state(TcpState::SynSent, TcpState::Established, at));
        }
        assert_eq!(reorder.runs.len(), MAX_RUNS);
        let mut out = Vec::new();
        reorder.release(u64::MAX, |event| out.push(event.timestamp_ns));
        assert_eq!(out, (0..3 * MAX_RUNS as u64).collect::<Vec<_>>());
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
