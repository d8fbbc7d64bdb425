//! What the findings are told: the operator's thresholds ([`FindingsConfig`]) and, at each
//! interval's end, what is known besides the tracker ([`Context`]).
use tracer_model::{
    links::LinkChange,
    sockets::{NamespaceSettings, Snapshot},
};

use super::{Owners, NS_PER_S};
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
