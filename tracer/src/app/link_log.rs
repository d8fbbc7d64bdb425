//! The link changes summary mode keeps: this interval's rows for the summary, the recent ones
//! that may explain a finding, and since when each link has been down.
use std::collections::VecDeque;

use crate::{
    find::LinkRow,
    kernel::{
        clock::{self, Clock},
        links::{LinkChange, LinkWhat, Links},
    },
    FastMap,
};

/// How long link changes are remembered to explain findings (a silent peer's connection may end
/// by timeout many minutes after the link that took it down).
pub(super) const LINK_MEMORY_NS: u64 = 15 * 60 * 1_000_000_000;
/// Link changes remembered at most, and shown per summary at most.
const MAX_LINK_CHANGES: usize = 1024;

/// Link changes: the watcher, this interval's rows, the recent ones, and when each link went down.
pub(super) struct LinkLog {
    pub(super) watcher: Links,
    pub(super) interval: Vec<LinkRow>,
    pub(super) recent: VecDeque<LinkChange>,
    down_since: FastMap<(u32, u32), u64>,
    /// Rows left out of a summary because it had [`MAX_LINK_CHANGES`] already.
    pub(super) dropped: u64,
}

impl LinkLog {
    pub(super) fn new(watcher: Links) -> LinkLog {
        LinkLog { watcher, interval: Vec::new(), recent: VecDeque::new(), down_since: FastMap::default(), dropped: 0 }
    }

    pub(super) fn push(&mut self, change: LinkChange, clock: &Clock) {
        let link = (change.netns, change.ifindex);
        let down_for_s = if change.what.is_loss() {
            self.down_since.entry(link).or_insert(change.at_ns);
            None
        } else if matches!(change.what, LinkWhat::Up | LinkWhat::CarrierUp) {
            self.down_since.remove(&link).map(|since| clock::tenths_of_seconds(i128::from(change.at_ns.saturating_sub(since))))
        } else {
            None
        };
        if self.interval.len() < MAX_LINK_CHANGES {
            self.interval.push(LinkRow {
                ts: clock.format(change.at_ns),
                netns: change.netns,
                ifname: change.ifname.clone(),
                what: change.what,
                down_for_s,
            });
        } else {
            self.dropped += 1;
        }
        if self.recent.len() >= MAX_LINK_CHANGES {
            self.recent.pop_front();
        }
        self.recent.push_back(change);
    }

    pub(super) fn forget_before(&mut self, oldest_ns: u64) {
        while self.recent.front().is_some_and(|change| change.at_ns < oldest_ns) {
            self.recent.pop_front();
        }
        if self.down_since.len() > MAX_LINK_CHANGES {
            self.down_since.retain(|_, since| *since >= oldest_ns);
        }
    }
}
