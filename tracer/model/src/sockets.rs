//! What the kernel says of sockets besides the events: a snapshot round's sockets (sock_diag),
//! a namespace's settings, the owners of sockets, and the timewait status values of this kernel.
//! Plain data, filled by the sources and read by the analysis.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
};

use crate::{event::TcpState, FastMap, FastSet};

/// The states the findings read from a snapshot (stuck sockets, TIME_WAIT populations, the fate
/// of orphaned FIN_WAIT2 sockets, and listeners with their accept queues); the others are counted
/// from events.
pub const WANTED_STATES: [TcpState; 4] = [TcpState::TimeWait, TcpState::FinWait2, TcpState::CloseWait, TcpState::Listen];

/// Socket inode → (pid, comm) of the process holding it.
pub type Owners = FastMap<u32, (u32, String)>;

/// The `tcp_tw_status` values that answer a SYN hitting a timewait socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimeWaitStatus {
    /// The SYN was accepted: a new connection replaces the timewait socket.
    pub syn: u32,
    /// The SYN was answered with a bare ACK: the connection attempt stalls.
    pub ack: u32,
}

/// One socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u32,
    /// For a listener: connections waiting in its accept queue, and its backlog.
    pub accept_queue: Option<(u32, u32)>,
    /// For a full socket in CLOSE_WAIT or FIN_WAIT2: how long since it last moved data.
    pub last_data: Option<LastData>,
}

/// How long ago a socket last sent and last received data, in milliseconds (`tcp_info`'s
/// `tcpi_last_data_sent`, `tcpi_last_data_recv`): whether a half-closed connection still flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastData {
    pub sent_ms: u32,
    pub received_ms: u32,
}

impl SocketRecord {
    /// How long a socket in CLOSE_WAIT (or a full one in FIN_WAIT2) has been idle in the direction
    /// still open: data we still send after the peer's FIN, or that the peer still sends after
    /// ours. A half-close that still flows is not stuck; it is once the flow stops.
    pub fn flow_idle_ns(&self) -> Option<u64> {
        let last = self.last_data?;
        let ms = match self.state {
            TcpState::CloseWait => last.sent_ms,
            TcpState::FinWait2 => last.received_ms,
            _ => return None,
        };
        Some(u64::from(ms) * 1_000_000)
    }
}

/// Per-namespace settings that shape the findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    pub ephemeral_ports: (u16, u16),
    pub fin_timeout_s: u64,
    /// `net.ipv4.tcp_keepalive_time`.
    pub keepalive_time_s: u64,
}

impl NamespaceSettings {
    /// Linux's defaults (`ip_local_port_range` 32768 60999, `tcp_fin_timeout` 60,
    /// `tcp_keepalive_time` 7200): what a namespace whose settings cannot be read is taken to have.
    pub const DEFAULT: NamespaceSettings = NamespaceSettings { ephemeral_ports: (32768, 60999), fin_timeout_s: 60, keepalive_time_s: 7200 };

    pub fn ephemeral_port_count(&self) -> u64 {
        u64::from(self.ephemeral_ports.1.saturating_sub(self.ephemeral_ports.0)) + 1
    }
}

/// What one round of snapshots found, by namespace inode.
#[derive(Default, Debug)]
pub struct Snapshot {
    /// Sockets in [`WANTED_STATES`] of every covered namespace that has any: dumped this round,
    /// or carried over from an earlier one (see `fresh`). Idle namespaces with none are absent.
    pub sockets: BTreeMap<u32, Arc<Vec<SocketRecord>>>,
    /// The namespaces dumped this round; only these say anything about what ended since.
    pub fresh: BTreeSet<u32>,
    /// Namespaces whose dump failed this round, with why.
    pub failed: BTreeMap<u32, String>,
    /// Namespaces let go this round because they are gone.
    pub released: Vec<u32>,
    /// Connection attempts each namespace's kernel dropped since its last round because an
    /// accept queue was full (`TcpExt ListenOverflows`; only namespaces with drops).
    pub listen_overflows: BTreeMap<u32, u64>,
    pub round: RoundCost,
    /// Who holds the sockets a finding may name (see [`Snapshot::resolve_owners`]).
    pub owners: Owners,
    /// Inodes looked up this round that no process holds (an orphan, or closed meanwhile).
    pub unowned: Vec<u32>,
}

/// What a round of dumps cost, for the header, JSON and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoundCost {
    /// Namespaces covered.
    pub namespaces: usize,
    pub dumped: usize,
    /// Idle namespaces whose last dump held nothing wanted: nothing to ask.
    pub idle: usize,
    /// Due but left for a later round (over budget); their last results stand in.
    pub carried: usize,
    /// Sockets the kernel returned.
    pub sockets: usize,
    pub micros: u64,
    /// At most this many namespaces per round, while over budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_round: Option<usize>,
}

impl Snapshot {
    /// Every socket inode the snapshot holds (dumped or carried over).
    pub fn inodes(&self) -> FastSet<u32> {
        self.sockets.values().flat_map(|sockets| sockets.iter().map(|socket| socket.inode)).collect()
    }
}
