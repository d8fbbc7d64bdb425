//! Link changes beside the sockets: what the rtnetlink source reports and the findings and
//! outputs read (a device added or removed, its operational state down or up, its carrier lost
//! or back), on the same clock as kernel events.
use serde::Serialize;

/// What happened to a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkWhat {
    Added,
    Removed,
    /// Its operational state left UP (administratively down, or its lower layer went away).
    Down,
    Up,
    /// The carrier went away while the operational state stayed as it was.
    CarrierLost,
    CarrierUp,
}

impl LinkWhat {
    pub const ALL: [LinkWhat; 6] =
        [LinkWhat::Added, LinkWhat::Removed, LinkWhat::Down, LinkWhat::Up, LinkWhat::CarrierLost, LinkWhat::CarrierUp];

    pub fn name(self) -> &'static str {
        match self {
            LinkWhat::Added => "added",
            LinkWhat::Removed => "removed",
            LinkWhat::Down => "down",
            LinkWhat::Up => "up",
            LinkWhat::CarrierLost => "carrier_lost",
            LinkWhat::CarrierUp => "carrier_up",
        }
    }

    /// Words for a sentence: "veth0 went down".
    pub fn verb(self) -> &'static str {
        match self {
            LinkWhat::Added => "was added",
            LinkWhat::Removed => "was removed",
            LinkWhat::Down => "went down",
            LinkWhat::Up => "came up",
            LinkWhat::CarrierLost => "lost carrier",
            LinkWhat::CarrierUp => "got carrier back",
        }
    }

    /// A change after which traffic through the link stops.
    pub fn is_loss(self) -> bool {
        matches!(self, LinkWhat::Removed | LinkWhat::Down | LinkWhat::CarrierLost)
    }
}

/// One change of one link, when the tracer learnt it (CLOCK_MONOTONIC, like kernel events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkChange {
    pub at_ns: u64,
    pub netns: u32,
    pub ifindex: u32,
    pub ifname: String,
    pub what: LinkWhat,
    /// The operational state after the change (`up`, `down`, `lowerlayerdown`, ...).
    pub operstate: &'static str,
    pub carrier: bool,
}
