//! What the tracker is told about the host before any event: its caps, the namespace's FIN
//! timeout and port range, and which kernel facts it can count on.
use super::TIME_WAIT_NS;
use crate::decode::Event;
use tracer_model::sockets::NamespaceSettings;

#[derive(Clone, Copy, Debug)]
pub struct TrackerConfig {
    pub max_connections: usize,
    pub max_time_wait: usize,
    /// `net.ipv4.tcp_fin_timeout`: how long an orphaned FIN_WAIT2 lives.
    pub fin_timeout_ns: u64,
    /// `net.ipv4.tcp_keepalive_time`: the keepalive time of sockets that set none of their own.
    pub keepalive_time_ns: u64,
    /// The default ephemeral range, to guess the role of sockets that predate the tracer.
    pub ephemeral_ports: (u16, u16),
    /// The `tcp_tw_status` values, when the fexit hook on `tcp_timewait_state_process` runs.
    pub time_wait_status: Option<tracer_model::sockets::TimeWaitStatus>,
    /// Timewait sockets left in FIN_WAIT2 are looked up every [`LINGER_PROBE_NS`] (socket
    /// snapshots are on): their end is then known from what they became, whatever the interval.
    pub probes: bool,
    /// The kernel reports the resets a timewait socket sends (Linux ≥ 6.10, where
    /// `tcp_send_reset` also fires without a full socket): a lingering socket that vanished early
    /// without one was reset by the peer.
    pub time_wait_resets_traced: bool,
    /// The kernel's tick rate: socket clocks (idle gaps) are in jiffies. `None`: gaps unknown.
    pub hz: Option<u32>,
}

/// The shortest idle gap worth remembering (the kernel sends a survivor's segment after a second).
pub const IDLE_GAP_NS: u64 = 1_000_000_000;

/// How often lingering FIN_WAIT2 timewait sockets are looked up: fixed, so that their verdicts
/// never depend on `--interval`.
pub const LINGER_PROBE_NS: u64 = 1_000_000_000;

impl TrackerConfig {
    /// When a timewait socket handed over in FIN_WAIT2 at `handed_over_ns` expires at the
    /// earliest: `tcp_fin_timeout` later, or past 60 s (TCP_TIMEWAIT_LEN), what exceeds it (the
    /// full socket waited the rest). A per-socket TCP_LINGER2 is not visible here.
    pub(super) fn fin_wait2_deadline_ns(&self, handed_over_ns: u64) -> u64 {
        let lifetime = if self.fin_timeout_ns > TIME_WAIT_NS { self.fin_timeout_ns - TIME_WAIT_NS } else { self.fin_timeout_ns };
        handed_over_ns + lifetime
    }

    /// The keepalive time a reset's socket had: its own (`TCP_KEEPIDLE`, in jiffies), or where it
    /// has none (0) the namespace's default.
    pub(super) fn keepalive_idle_ns(&self, event: &Event) -> Option<u64> {
        match event.keepalive_jiffies? {
            0 => Some(self.keepalive_time_ns),
            jiffies => self.jiffies_ns(jiffies),
        }
    }

    /// How long the event's socket had been idle (from its clocks), where the tick rate is known.
    pub(super) fn idle_ns(&self, event: &Event) -> Option<u64> {
        self.jiffies_ns(event.idle?.idle_jiffies())
    }

    /// A span of socket clock in nanoseconds, where the kernel's tick rate is known.
    fn jiffies_ns(&self, jiffies: u32) -> Option<u64> {
        Some(u64::from(jiffies) * 1_000_000_000 / u64::from(self.hz?))
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_connections: 100_000,
            max_time_wait: 131_072,
            fin_timeout_ns: NamespaceSettings::DEFAULT.fin_timeout_s * 1_000_000_000,
            keepalive_time_ns: NamespaceSettings::DEFAULT.keepalive_time_s * 1_000_000_000,
            ephemeral_ports: NamespaceSettings::DEFAULT.ephemeral_ports,
            time_wait_status: None,
            probes: false,
            time_wait_resets_traced: false,
            hz: None,
        }
    }
}
