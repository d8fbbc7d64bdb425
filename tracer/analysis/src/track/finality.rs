//! When no verdict still to come can precede a line: connection lines come out in the order
//! connections ended, and a line may go as soon as every connection that ended before it has
//! its verdict, instead of after a fixed delay of seconds, long enough for the slowest verdict.
//!
//! What waits for a verdict: a CLOSE still settling, a lingering timewait socket, a quiet
//! connection found gone. Each of them will end at or after the time it is queued with here, and
//! every queue is in time order, so the fronts bound them all.
use std::collections::VecDeque;

use super::{Lingering, Tracker, Tuple};
use crate::{bounded::Bounded, decode::SocketId};

#[derive(Default)]
pub(super) struct Pending {
    /// The smallest time a CLOSE came with that was earlier than the one queued before it (an
    /// event from past the reorder window), while any CLOSE is settling.
    straggler_floor: Option<u64>,
    /// The lingering connections by when they handed over: (a floor of it, it, tuple), floors in
    /// order. Those resolved since are dropped when they reach the front.
    lingering: VecDeque<(u64, u64, Tuple)>,
}

impl Tracker {
    /// A connection reached CLOSE at `at_ns`: its verdict comes once it settles.
    pub(super) fn verdict_pending(&mut self, at_ns: u64, socket: SocketId) {
        if self.endings.back().is_some_and(|(last, _)| *last > at_ns) {
            self.finality.straggler_floor = Some(self.finality.straggler_floor.map_or(at_ns, |floor| floor.min(at_ns)));
        }
        self.endings.push_back((at_ns, socket));
    }

    /// A connection handed over to a timewait socket at `at_ns`: its verdict comes once that
    /// socket is followed to its end.
    pub(super) fn verdict_pending_lingering(&mut self, at_ns: u64, tuple: Tuple) {
        let queue = &mut self.finality.lingering;
        // Floors stay in order: one from past the reorder window lowers those before it.
        for (floor, _, _) in queue.iter_mut().rev().take_while(|(floor, _, _)| *floor > at_ns) {
            *floor = at_ns;
        }
        queue.push_back((at_ns, at_ns, tuple));
        if queue.len() > 2 * self.lingering.len() + 1024 {
            let lingering = &self.lingering;
            queue.retain(|(_, at, tuple)| still_lingering(lingering, tuple, *at));
        }
    }

    /// Every connection that ended before the returned time has its verdict; `horizon_ns`, past
    /// which events are still to come, bounds it.
    pub fn verdicts_final_before(&mut self, horizon_ns: u64) -> u64 {
        if self.endings.is_empty() {
            self.finality.straggler_floor = None;
        }
        let queue = &mut self.finality.lingering;
        while let Some(&(_, at, tuple)) = queue.front() {
            if still_lingering(&self.lingering, &tuple, at) {
                break;
            }
            queue.pop_front();
        }
        let pending = [
            self.endings.front().map(|(at, _)| *at),
            self.finality.straggler_floor,
            queue.front().map(|(floor, _, _)| *floor),
            self.watch.first_gone_ns(),
        ];
        pending.into_iter().flatten().fold(horizon_ns, u64::min)
    }
}

/// Whether the connection queued as lingering at `at_ns` on `tuple` still waits (not resolved,
/// nor replaced by a later one on the same tuple).
fn still_lingering(lingering: &Bounded<Tuple, Lingering>, tuple: &Tuple, at_ns: u64) -> bool {
    lingering.get(tuple).is_some_and(|entry| entry.connection.end_ns() == at_ns)
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures::*, *};
    use crate::{
        decode::TcpState::*,
        track::{Lingered, TrackerConfig},
    };

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_connection_waiting_for_its_verdict_holds_back_the_lines_after_its_end() {
        let config = TrackerConfig { probes: true, ..TrackerConfig::default() };
        let (orphan, graceful) = (client(), Script::new(0x2000, "10.0.0.1:40001", "10.0.0.2:80"));
        let mut tracker = Tracker::new(config, reasons());
        let mut out = Vec::new();
        let events = [
            orphan.syscall(Close, SynSent, S),
            orphan.state(SynSent, Established, S + 1),
            graceful.syscall(Close, SynSent, S + 2),
            graceful.state(SynSent, Established, S + 3),
            orphan.syscall(Established, FinWait1, 2 * S),
            orphan.state(FinWait1, FinWait2, 2 * S + 1),
            // Handed over to a timewait socket in FIN_WAIT2: lingering until it is followed.
            orphan.state(FinWait2, Close, 2 * S + 2),
            graceful.closed(LastAck, true, 3 * S),
        ];
        for event in &events {
            tracker.observe(event, &mut out);
        }
        assert_eq!(tracker.verdicts_final_before(4 * S), 2 * S + 2, "the orphan's end bounds what is final");
        tracker.settle(4 * S, &mut out);
        assert_eq!(ended(&out).len(), 1, "the other connection has its verdict, ending after the orphan");
        assert_eq!(tracker.verdicts_final_before(4 * S), 2 * S + 2, "its line waits behind the orphan's");
        let tuple = tracker.lingering().next().expect("lingering").connection.tuple();
        tracker.probed(&tuple, 5 * S, Some(TimeWait), &mut out);
        assert_eq!(ended(&out)[1].connection.ending.and_then(|ending| ending.lingered), Some(Lingered::PeerFin));
        assert_eq!(tracker.verdicts_final_before(6 * S), 6 * S, "nothing waits: everything before the horizon is final");
    }

    #[test]
    fn a_close_from_past_the_reorder_window_holds_back_the_lines_after_it() {
        let (late, early) = (client(), Script::new(0x2000, "10.0.0.1:40001", "10.0.0.2:80"));
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let mut out = Vec::new();
        for event in [early.syscall(Close, SynSent, S), late.syscall(Close, SynSent, S + 1)] {
            tracker.observe(&event, &mut out);
        }
        tracker.observe(&early.closed(SynSent, false, 3 * S), &mut out);
        tracker.observe(&late.closed(SynSent, false, 2 * S), &mut out);
        assert_eq!(tracker.verdicts_final_before(10 * S), 2 * S);
        tracker.settle(10 * S, &mut out);
        assert_eq!(tracker.verdicts_final_before(10 * S), 10 * S, "once both settled, the floor is gone");
    }
}
