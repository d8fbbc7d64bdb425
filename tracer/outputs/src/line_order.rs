//! Connection lines waiting to come out in the order the connections ended: a verdict can be
//! reached a while after its connection's end (a lingering timewait socket is looked up a second
//! later), so a line waits until every connection that ended before it has its verdict (the
//! tracker says when), or for [`LINE_DELAY_NS`] at most; and what waits is bounded in bytes,
//! whatever the connection rate.
use std::collections::BTreeMap;

/// How long a connection line waits at most for the verdicts of connections that ended before
/// it: a verdict is known at most this long after its end (a lingering timewait socket is looked
/// up every second, then the events before the lookup are awaited). Later verdicts (a namespace
/// that could not be reached) are printed when they come.
pub const LINE_DELAY_NS: u64 = 3_000_000_000;

/// Bytes of lines [`InOrder`] holds at most. Past it the oldest go out before their delay is
/// over: still in the order connections ended, except that a verdict reached later for an
/// earlier end then follows them. Without it the delay held three seconds of lines at any rate
/// (160 MB of JSON lines in a 36 000 connections/s churn).
pub const MAX_WAITING_BYTES: usize = 16 << 20;
/// What a waiting line costs beyond its bytes: its place in the map and its buffers' handles.
const LINE_OVERHEAD_BYTES: usize = 96;

/// Connection lines waiting for the verdicts before them, in end order, with their sizes.
#[derive(Default)]
pub struct InOrder<T> {
    waiting: BTreeMap<(u64, u64), (T, usize)>,
    next: u64,
    bytes: usize,
}

impl<T> InOrder<T> {
    /// `size`: the line's bytes, counted against [`MAX_WAITING_BYTES`].
    pub fn push(&mut self, end_ns: u64, line: T, size: usize) {
        let size = size + LINE_OVERHEAD_BYTES;
        self.waiting.insert((end_ns, self.next), (line, size));
        self.next += 1;
        self.bytes += size;
    }

    /// The lines that ended before `final_before_ns` (no verdict still to come can go before
    /// them) or [`LINE_DELAY_NS`] before `horizon_ns` (all with `u64::MAX`), and the oldest others
    /// while more than [`MAX_WAITING_BYTES`] wait, in order.
    pub fn due(&mut self, horizon_ns: u64, final_before_ns: u64) -> Vec<T> {
        let mut due = Vec::new();
        let first_waiting =
            (horizon_ns != u64::MAX).then(|| (horizon_ns.saturating_sub(LINE_DELAY_NS).saturating_add(1).max(final_before_ns), 0));
        self.take_before(first_waiting, &mut due);
        if self.bytes > MAX_WAITING_BYTES {
            let mut excess = self.bytes - MAX_WAITING_BYTES;
            let first_kept = self.waiting.iter().find_map(|(key, (_, size))| {
                let kept = excess == 0;
                excess = excess.saturating_sub(*size);
                kept.then_some(*key)
            });
            self.take_before(first_kept, &mut due);
        }
        due
    }

    /// Moves the lines before `key` (all with `None`) to `due`, in order. Split off in one
    /// piece, not removed one by one: at thousands of lines a second, the map's rebalancing
    /// after each removal showed in the tracer's profile.
    fn take_before(&mut self, key: Option<(u64, u64)>, due: &mut Vec<T>) {
        let kept = key.map_or_else(BTreeMap::new, |key| self.waiting.split_off(&key));
        for (line, size) in std::mem::replace(&mut self.waiting, kept).into_values() {
            self.bytes -= size;
            due.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_out_in_the_order_connections_ended_once_their_delay_passed() {
        let mut lines = InOrder::default();
        let s = 1_000_000_000;
        lines.push(10 * s, "resolved late, ended first", 30);
        lines.push(12 * s, "ended at 12", 30);
        lines.push(11 * s, "ended at 11", 30);
        assert_eq!(lines.due(12 * s, 0), Vec::<&str>::new(), "nothing is 3 s old yet");
        assert_eq!(lines.due(14 * s + 500_000_000, 0), ["resolved late, ended first", "ended at 11"]);
        lines.push(13 * s, "ended at 13", 30);
        assert_eq!(lines.due(u64::MAX, 0), ["ended at 12", "ended at 13"], "at exit, everything");
    }

    #[test]
    fn lines_whose_verdicts_are_all_final_go_at_once_in_order() {
        let mut lines = InOrder::default();
        let s = 1_000_000_000;
        lines.push(11 * s, "ended at 11", 30);
        lines.push(10 * s, "resolved late, ended first", 30);
        lines.push(12 * s, "ended at 12", 30);
        assert_eq!(lines.due(12 * s, 12 * s), ["resolved late, ended first", "ended at 11"], "every verdict before 12 s is in");
        assert_eq!(lines.due(12 * s, 12 * s), Vec::<&str>::new(), "one that ended at 12 s may still be on its way");
        assert_eq!(lines.due(13 * s, 12 * s + 1), ["ended at 12"]);
    }

    #[test]
    fn past_the_byte_cap_the_oldest_lines_go_out_before_their_delay_and_in_order() {
        let mut lines = InOrder::default();
        let s = 1_000_000_000;
        let quarter = MAX_WAITING_BYTES / 4;
        for (end, name) in [(3, "third"), (1, "first"), (2, "second"), (4, "fourth")] {
            lines.push(end * s, name, quarter);
        }
        assert_eq!(lines.due(4 * s, 0), ["first"], "four quarters and their overhead are over the cap: the oldest goes");
        lines.push(5 * s, "fifth", 10);
        assert_eq!(lines.due(4 * s, 0), Vec::<&str>::new(), "back under the cap, the rest wait for their delay");
        assert_eq!(lines.due(8 * s, 0), ["second", "third", "fourth", "fifth"]);
        assert_eq!(lines.bytes, 0);
    }
}
