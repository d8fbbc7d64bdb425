//! What the findings are told: the operator's thresholds ([`FindingsConfig`]) and, at each
//! interval's end, what is known besides the tracker ([`Context`]).
use tracer_model::{
    links::LinkChange,
    sockets::{NamespaceSettings, Snapshot},
    tenths_of_seconds,
};

use super::{NearLink, Owners, NS_PER_S};
use crate::filter::Filter;

#[derive(Clone, Copy, Debug)]
pub struct FindingsConfig {
    pub stuck_after_ns: u64,
    /// Absolute TIME_WAIT count per peer that is too many; default half the ephemeral range.
    pub time_wait_threshold: Option<u64>,
    pub max_peers: usize,
    /// The tracer's own namespace's range: the role guess for sockets whose birth we did not see.
    pub ephemeral_ports: (u16, u16),
    /// Resets each way between us and one peer within [`RST_WINDOW_NS`] that make a storm.
    pub rst_threshold: u64,
}

/// The window a reset storm is counted over: fixed, so that whether resets are a storm never
/// depends on the summary interval.
pub const RST_WINDOW_NS: u64 = 10 * NS_PER_S;

impl Default for FindingsConfig {
    fn default() -> Self {
        FindingsConfig {
            stuck_after_ns: 30 * NS_PER_S,
            time_wait_threshold: None,
            max_peers: 4096,
            ephemeral_ports: NamespaceSettings::DEFAULT.ephemeral_ports,
            rst_threshold: 10,
        }
    }
}

/// What the end of an interval knows besides the tracker.
pub struct Context<'a> {
    pub now_ns: u64,
    pub snapshot: Option<&'a Snapshot>,
    /// Each namespace's ephemeral port range and FIN timeout.
    pub settings: &'a dyn Fn(u32) -> NamespaceSettings,
    pub filter: &'a Filter,
    /// Names the processes that hold socket inodes: pid and comm (from /proc in the tracer).
    pub owners: &'a Owners,
    /// Recent link changes, oldest first: a finding that began shortly after one says so.
    pub links: &'a [LinkChange],
}

/// A finding whose trouble begins this soon after a link in its namespace went down names it...
const LINK_BEFORE_NS: u64 = 10_000_000_000;
/// ... and so does one whose trouble began at most this long before (traffic that died first).
const LINK_AFTER_NS: u64 = 2_000_000_000;

/// The link of namespace `netns` that went down (or lost carrier, or went away) nearest to
/// `began_ns`: at most [`LINK_BEFORE_NS`] before it or [`LINK_AFTER_NS`] after it.
pub(super) fn near_link(links: &[LinkChange], netns: u32, began_ns: u64) -> Option<NearLink> {
    let offset = |change: &LinkChange| began_ns as i128 - change.at_ns as i128;
    links
        .iter()
        .filter(|change| change.netns == netns && change.what.is_loss())
        .filter(|change| (-(LINK_AFTER_NS as i128)..=LINK_BEFORE_NS as i128).contains(&offset(change)))
        .min_by_key(|change| offset(change).abs())
        .map(|change| NearLink { ifname: change.ifname.clone(), what: change.what, seconds: tenths_of_seconds(offset(change)) })
}
