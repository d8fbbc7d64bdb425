//! The findings and the summary's other tables, as consumers see them: the kinds and their fields
//! are a stable contract (JSON consumers depend on them).
use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use tracer_model::links::LinkWhat;

use crate::{decode::Process, track::Role};

/// Finding kinds, most serious first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    CloseWaitStuck,
    AcceptQueueFull,
    PeerSilent,
    PortReuseInTimeWait,
    /// Connects that found no local port free for their destination (EADDRNOTAVAIL).
    LocalPortsExhausted,
    TimeWaitBuildup,
    FinUnanswered,
    SynRetransmit,
    /// Connects that failed: refused (by whom, where it was checked), timed out (and where this
    /// host dropped their SYNs).
    ConnectFailed,
    /// RSTs in the peer's name that a device on the path sent (their TTL says so).
    RstFromPath,
    /// RSTs the kernel refused (out of window, or answered with a challenge ACK).
    RstRefused,
    /// Packets of a peer this host's kernel dropped (firewall, backlog, memory, checksum, …).
    DroppedHere,
    /// Connections to a peer die past an idle gap that others stay under: a device in the path
    /// forgets idle flows.
    IdleTimeout,
    RstFromPeer,
    RstToPeer,
}

impl FindingKind {
    pub const ALL: [FindingKind; 15] = [
        FindingKind::CloseWaitStuck,
        FindingKind::AcceptQueueFull,
        FindingKind::PeerSilent,
        FindingKind::PortReuseInTimeWait,
        FindingKind::LocalPortsExhausted,
        FindingKind::TimeWaitBuildup,
        FindingKind::FinUnanswered,
        FindingKind::SynRetransmit,
        FindingKind::ConnectFailed,
        FindingKind::RstFromPath,
        FindingKind::RstRefused,
        FindingKind::DroppedHere,
        FindingKind::IdleTimeout,
        FindingKind::RstFromPeer,
        FindingKind::RstToPeer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FindingKind::CloseWaitStuck => "close_wait_stuck",
            FindingKind::AcceptQueueFull => "accept_queue_full",
            FindingKind::PeerSilent => "peer_silent",
            FindingKind::PortReuseInTimeWait => "port_reuse_in_time_wait",
            FindingKind::LocalPortsExhausted => "local_ports_exhausted",
            FindingKind::TimeWaitBuildup => "time_wait_buildup",
            FindingKind::FinUnanswered => "fin_unanswered",
            FindingKind::SynRetransmit => "syn_retransmit",
            FindingKind::ConnectFailed => "connect_failed",
            FindingKind::RstFromPath => "rst_from_path",
            FindingKind::RstRefused => "rst_refused",
            FindingKind::DroppedHere => "dropped_here",
            FindingKind::IdleTimeout => "idle_timeout",
            FindingKind::RstFromPeer => "rst_from_peer",
            FindingKind::RstToPeer => "rst_to_peer",
        }
    }

    /// Kinds that describe sockets present now (count = now, total = distinct sockets or peak)
    /// rather than events in the interval.
    pub fn is_state(self) -> bool {
        matches!(
            self,
            FindingKind::CloseWaitStuck | FindingKind::AcceptQueueFull | FindingKind::FinUnanswered | FindingKind::TimeWaitBuildup
        )
    }
}

impl Serialize for FindingKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// An address, or an address with any port (`ip:*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (IpAddr::V4(ip), Some(port)) => write!(f, "{ip}:{port}"),
            (IpAddr::V4(ip), None) => write!(f, "{ip}:*"),
            (IpAddr::V6(ip), Some(port)) => write!(f, "[{ip}]:{port}"),
            (IpAddr::V6(ip), None) => write!(f, "[{ip}]:*"),
        }
    }
}

impl Endpoint {
    /// Whether a listener bound here takes connections to `service`: the same port, at the same
    /// address or at a wildcard one (0.0.0.0, ::), which serves every address of its namespace.
    pub fn takes(&self, service: Endpoint) -> bool {
        self.port == service.port && (self.ip == service.ip || self.ip.is_unspecified())
    }
}

/// Who we aggregate over: one service and one peer, in one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub netns: u32,
    pub local: Endpoint,
    pub remote: Endpoint,
}

impl PeerKey {
    pub fn new(role: Role, netns: u32, local: SocketAddr, remote: SocketAddr) -> PeerKey {
        let (local_port, remote_port) = match role {
            Role::Client => (None, Some(remote.port())),
            Role::Server | Role::Listener => (Some(local.port()), None),
        };
        PeerKey { netns, local: Endpoint { ip: local.ip(), port: local_port }, remote: Endpoint { ip: remote.ip(), port: remote_port } }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
}

impl From<Process> for Owner {
    fn from(process: Process) -> Owner {
        Owner { pid: process.tgid, comm: process.comm.to_string() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub local: String,
    pub remote: String,
    pub count: u64,
    pub total: u64,
    pub detail: String,
    pub netns: u32,
    /// What the namespace belongs to, when it is not the tracer's own: its /run/netns name, or a
    /// process in it with its cgroup (on Kubernetes the cgroup path carries the pod and container).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Owner>,
    /// The flight record written for this finding (`--record-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// A link in the namespace went down shortly before (or just after) the trouble began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub near_link: Option<NearLink>,
    /// `idle_timeout`: the idle gap after which the path forgets connections lies in this interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_threshold: Option<IdleThreshold>,
    /// When its trouble began this interval (CLOCK_MONOTONIC; event kinds only).
    #[serde(skip)]
    pub began_ns: Option<u64>,
    #[serde(skip)]
    pub key: PeerKey,
}

/// Where the idle timeout of a device in the path lies: above the longest gap connections lived
/// through, at or under the shortest one past it that they died after, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IdleThreshold {
    pub above_s: f64,
    pub at_most_s: f64,
}

impl IdleThreshold {
    pub fn of(estimate: &super::idle::Estimate) -> IdleThreshold {
        IdleThreshold { above_s: estimate.above_ns as f64 / 1e9, at_most_s: estimate.below_ns as f64 / 1e9 }
    }
}

/// The link change nearest the beginning of a finding's trouble.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NearLink {
    pub ifname: String,
    pub what: LinkWhat,
    /// From the link change to the first trouble; negative when the trouble came first (the
    /// kernel announces a carrier change up to a second late, and traffic may die before a link
    /// is declared down).
    pub seconds: f64,
}

/// A link change of the interval, for the summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkRow {
    pub ts: String,
    pub netns: u32,
    pub ifname: String,
    pub what: LinkWhat,
    /// For a link back up: how long it had been down (when the tracer saw it go).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_for_s: Option<f64>,
}

/// One row of "top peers by trouble".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerRow {
    pub local: String,
    pub remote: String,
    pub netns: u32,
    pub ended: u64,
    pub graceful: u64,
    pub rst_from_peer: u64,
    /// Resets in the peer's name that came from a device on the path (counted in `rst_from_peer` too).
    pub rst_from_path: u64,
    pub rst_to_peer: u64,
    pub peer_silent: u64,
    pub syn_retransmits: u64,
    pub failed_connects: u64,
    pub stuck: u64,
}

impl PeerRow {
    pub fn trouble(&self) -> u64 {
        self.rst_from_peer + self.rst_to_peer + 3 * self.peer_silent + self.syn_retransmits + 2 * self.failed_connects + 3 * self.stuck
    }
}

/// The current picture, produced once per interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Picture {
    pub states: BTreeMap<&'static str, u64>,
    /// The states in `states` counted over every socket (the sock_diag snapshot); the others
    /// count only connections the tracer has seen an event of since it started.
    pub states_exact: Vec<&'static str>,
    pub closes: BTreeMap<&'static str, u64>,
    pub peers: Vec<PeerRow>,
    pub findings: Vec<Finding>,
    /// The slowest handshakes of the interval, by peer.
    pub handshakes: Vec<HandshakeRow>,
    /// Link changes of the interval.
    pub links: Vec<LinkRow>,
}

/// Handshake times (SYN → ESTABLISHED) of one peer's connections in one interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandshakeRow {
    pub local: String,
    pub remote: String,
    pub netns: u32,
    pub connections: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}
