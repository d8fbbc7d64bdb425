//! The connection tracker: follows each socket from its first event to its end, infers who sent
//! the first FIN and who reset whom, and classifies how every connection ended.
//!
//! Pure: no I/O, no clock; time comes from event timestamps and the caller's `now`. Everything it
//! learns leaves as [`Observation`]s for the findings layer. Memory is bounded by
//! [`TrackerConfig`]; every eviction is counted in [`TrackerStats`].
//!
//! The parts: [`connection`] (what is known of one socket), the state machine here, [`time_wait`]
//! (TIME_WAIT and FIN_WAIT2 timewait sockets, which outlive their socket), [`classify`] (the verdict
//! on a connection that ended), [`provenance`] (who sent a RST), [`drops`] (what this host
//! dropped), and [`reorder`] (timestamp order before any of it).
mod classify;
mod connection;
mod drops;
#[cfg(test)]
pub(crate) mod fixtures;
mod provenance;
pub mod reorder;
mod time_wait;

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use tracer_common::EventKind;

pub use self::{
    classify::{guess_role, KEEPALIVE_TIMEOUT_REASON},
    connection::{
        CloseClass, Connection, Ended, Ending, FirstFin, Lingered, Lingering, Observation, ResetSent, Role, RstFrom, Tuple, Unresolved,
    },
    drops::{losses, Drops},
    provenance::describe as describe_rst_origin,
};
use crate::{
    decode::{Event, SocketId, TcpState},
    kernel::sock_diag::NamespaceSettings,
    FastMap, FastSet,
};

/// How long after its CLOSE a connection waits for late facts (a reset is sent after the
/// socket is already CLOSE; events from other CPUs may trail) before it is classified.
pub const SETTLE_NS: u64 = 200_000_000;
/// TCP_TIMEWAIT_LEN: fixed at 60 s in Linux.
pub const TIME_WAIT_NS: u64 = 60_000_000_000;

/// Most (namespace, port) pairs remembered as serving (16 bytes each with the table's overhead).
const MAX_SERVICE_PORTS: usize = 65_536;

#[derive(Clone, Copy, Debug)]
pub struct TrackerConfig {
    pub max_connections: usize,
    pub max_time_wait: usize,
    /// `net.ipv4.tcp_fin_timeout`: how long an orphaned FIN_WAIT2 lives.
    pub fin_timeout_ns: u64,
    /// The default ephemeral range, to guess the role of sockets that predate the tracer.
    pub ephemeral_ports: (u16, u16),
    /// The `tcp_tw_status` values, when the fexit hook on `tcp_timewait_state_process` runs.
    pub time_wait_status: Option<crate::kernel::btf_offsets::TimeWaitStatus>,
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
    fn fin_wait2_deadline_ns(&self, handed_over_ns: u64) -> u64 {
        let lifetime = if self.fin_timeout_ns > TIME_WAIT_NS { self.fin_timeout_ns - TIME_WAIT_NS } else { self.fin_timeout_ns };
        handed_over_ns + lifetime
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_connections: 100_000,
            max_time_wait: 131_072,
            fin_timeout_ns: NamespaceSettings::DEFAULT.fin_timeout_s * 1_000_000_000,
            ephemeral_ports: NamespaceSettings::DEFAULT.ephemeral_ports,
            time_wait_status: None,
            probes: false,
            time_wait_resets_traced: false,
            hz: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackerStats {
    pub tracked: u64,
    pub evicted_connections: u64,
    pub evicted_time_wait: u64,
    /// Events about sockets first seen mid-life (they predate the tracer, or their birth was lost).
    pub joined_mid_life: u64,
}

pub struct Tracker {
    config: TrackerConfig,
    reason_names: BTreeMap<u32, String>,
    /// Boxed: an entry moves in and out of the table, into a lingering record and a verdict, as one pointer.
    connections: FastMap<SocketId, Box<Connection>>,
    /// TIME_WAIT sockets (seen entering it, or reported by a snapshot) → when they entered it.
    time_wait: FastMap<Tuple, u64>,
    /// Orphans that left FIN_WAIT2 for a timewait socket, until a lookup or an event says what
    /// it became.
    lingering: FastMap<Tuple, Lingering>,
    /// Lingering sockets found gone, in lookup order, waiting for the events before then.
    gone: VecDeque<(u64, Tuple)>,
    /// Ports we have seen serving (a listener starting, a connection accepted), by namespace:
    /// what gives a socketless reset its role (our port serves: we are the server; theirs, in
    /// our namespace: we called it). Kept after the listener closes, as its peers' late segments
    /// keep coming; at most [`MAX_SERVICE_PORTS`].
    service_ports: FastSet<(u32, u16)>,
    /// The TTL each peer address's packets arrived with lately, by namespace: the reference for a
    /// RST on a connection that has no packet of the peer yet.
    peer_ttls: FastMap<(u32, std::net::IpAddr), (u8, u64)>,
    /// The kernel's drop reasons by value (`enum skb_drop_reason`).
    drop_reason_names: BTreeMap<u32, String>,
    /// Connections that reached CLOSE, in event order, waiting for [`SETTLE_NS`] to pass.
    endings: VecDeque<(u64, SocketId)>,
    pub stats: TrackerStats,
}

impl Tracker {
    pub fn new(config: TrackerConfig, reason_names: BTreeMap<u32, String>) -> Tracker {
        Tracker {
            config,
            reason_names,
            connections: FastMap::default(),
            time_wait: FastMap::default(),
            lingering: FastMap::default(),
            gone: VecDeque::new(),
            peer_ttls: FastMap::default(),
            drop_reason_names: BTreeMap::new(),
            service_ports: FastSet::default(),
            endings: VecDeque::new(),
            stats: TrackerStats::default(),
        }
    }

    pub fn reason_name(&self, reason: u32) -> Option<&str> {
        self.reason_names.get(&reason).map(String::as_str)
    }

    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.connections.values().map(|connection| &**connection).filter(|connection| connection.ending.is_none())
    }

    /// Feeds one event (in timestamp order); appends what it reveals to `out`.
    pub fn observe(&mut self, event: &Event, out: &mut Vec<Observation>) {
        match event.kind {
            EventKind::StateChange => self.state_change(event, out),
            EventKind::ResetSent => {
                if !self.connections.contains_key(&event.socket) {
                    // A timewait socket left in FIN_WAIT2 answered the peer's late data or SYN.
                    self.reset_from_lingering(event, out);
                }
                let owner = self.connections.get_mut(&event.socket).map(|connection| {
                    connection.reset_sent = Some(ResetSent { reason: event.reset_reason, by_application: event.process.is_some() });
                    (connection.role, connection.process)
                });
                if event.state == Some(TcpState::SynSent) && owner.is_some_and(|(role, _)| role == Role::Client) {
                    // RFC 793: a SYN_SENT socket answers an unacceptable ACK with RST. The peer
                    // acknowledged something we never sent: it still holds this 4-tuple.
                    out.push(Observation::PortReuse {
                        tuple: Tuple::of(event),
                        role: Role::Client,
                        time_wait_age_ns: None,
                        accepted: false,
                        at_ns: event.timestamp_ns,
                    });
                }
                out.push(Observation::ResetSent {
                    tuple: Tuple::of(event),
                    role: owner.map_or_else(|| self.socketless_role(event), |(role, _)| role),
                    process: owner.and_then(|(_, process)| process),
                    reason: event.reset_reason,
                    at_ns: event.timestamp_ns,
                });
            }
            EventKind::ResetReceived => {
                let owner = self.connections.get_mut(&event.socket).map(|connection| {
                    connection.reset_received = true;
                    connection.reset_taken = connection.reset_segment.is_some();
                    (connection.role, connection.process)
                });
                out.push(Observation::ResetReceived {
                    tuple: Tuple::of(event),
                    role: owner.map_or_else(|| self.socketless_role(event), |(role, _)| role),
                    process: owner.and_then(|(_, process)| process),
                    at_ns: event.timestamp_ns,
                });
            }
            EventKind::Retransmit => {
                let idle_ns = self.idle_ns(event);
                let connection = self.connections.get_mut(&event.socket);
                let process = connection.as_ref().and_then(|connection| connection.process);
                if let Some(connection) = connection {
                    if event.state == Some(TcpState::SynSent) {
                        connection.syn_retransmits += 1;
                    } else {
                        connection.retransmits += 1;
                        connection.retransmits_in_state += 1;
                        connection.first_retransmit_ns.get_or_insert(event.timestamp_ns);
                        if connection.retransmits_in_state == 1 {
                            // The first unanswered transmission of this series: how idle it had been.
                            connection.idle_before_ns = idle_ns;
                        }
                    }
                }
                if event.state == Some(TcpState::SynSent) {
                    out.push(Observation::SynRetransmit { tuple: Tuple::of(event), process, at_ns: event.timestamp_ns });
                }
            }
            EventKind::SynAckRetransmit => out.push(Observation::SynAckRetransmit { tuple: Tuple::of(event), at_ns: event.timestamp_ns }),
            EventKind::TimeWaitEnter => {
                if let Some(connection) = self.connections.get_mut(&event.socket) {
                    connection.timewait_substate = event.state;
                } else if event.state == Some(TcpState::TimeWait) {
                    // The peer's FIN reached a timewait socket left in FIN_WAIT2.
                    let tuple = Tuple::of(event);
                    if let Some(lingering) = self.lingering.remove(&tuple) {
                        self.remember_time_wait(tuple, event.timestamp_ns);
                        self.resolve(lingering, Lingered::PeerFin, event.timestamp_ns, out);
                    }
                }
            }
            EventKind::TimeWaitSyn => self.syn_on_time_wait(event, out),
            EventKind::Segment => self.segment(event, out),
            EventKind::Drop => self.dropped(event, out),
        }
    }

    fn state_change(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let (Some(old), Some(new)) = (event.old_state, event.state) else { return };
        let at = event.timestamp_ns;
        let birth_role = match (old, new) {
            (TcpState::Close, TcpState::SynSent) => Some(Role::Client),
            (TcpState::Listen, TcpState::SynRecv) | (TcpState::NewSynRecv, TcpState::SynRecv) => Some(Role::Server),
            (TcpState::Close, TcpState::Listen) => Some(Role::Listener),
            _ => None,
        };
        if let Some(role) = birth_role {
            let known = self.connections.get(&event.socket).map(|known| known.ending.is_none() && known.state_since_ns > at);
            if known == Some(true) {
                return; // a late copy of this socket's birth; we already know more
            }
            if known.is_some() {
                // The kernel reused the address: the old socket is gone for good.
                let previous = self.connections.remove(&event.socket).expect("present");
                self.finish(previous, out);
            }
            self.make_room(out);
            self.stats.tracked += 1;
            if role != Role::Client && self.service_ports.len() < MAX_SERVICE_PORTS {
                self.service_ports.insert((event.socket.netns, event.local.port()));
            }
            self.connections.insert(event.socket, Box::new(self.new_connection(event, role, Some(at))));
        }
        if !self.connections.contains_key(&event.socket) {
            if new == TcpState::Close {
                return; // the end of something we never saw: nothing to learn
            }
            self.stats.joined_mid_life += 1;
            let role = self.guess_role(event);
            self.make_room(out);
            self.connections.insert(event.socket, Box::new(self.new_connection(event, role, None)));
        }
        let connection = self.connections.get_mut(&event.socket).expect("inserted above");
        if at < connection.state_since_ns {
            return; // older than what we know: another CPU's late event; timestamps decide
        }
        if event.local.port() != 0 {
            connection.local = event.local;
        }
        if event.remote.port() != 0 {
            connection.remote = event.remote;
        }
        // Only a system call the owner makes names the owner: a socket's lock holder (any process
        // reading its TCP_INFO, the tracer's own sock_diag dump) may run deferred timers and
        // backlog in process context too.
        let owner_action = matches!(
            (old, new),
            (TcpState::Close, TcpState::SynSent | TcpState::Listen)
                | (TcpState::Established | TcpState::SynRecv, TcpState::FinWait1)
                | (TcpState::CloseWait, TcpState::LastAck)
        );
        if let Some(process) = event.process.filter(|_| owner_action) {
            connection.process = Some(process);
        }
        match (old, new) {
            (_, TcpState::Established) => connection.established_ns = Some(at),
            (_, TcpState::FinWait1) => connection.first_fin(FirstFin::Us, at),
            (_, TcpState::CloseWait) => connection.first_fin(FirstFin::Peer, at),
            // Our FIN crossed theirs: simultaneous close.
            (TcpState::FinWait1, TcpState::Closing) => connection.first_fin = Some(FirstFin::Both),
            _ => {}
        }
        let reused_tuple = birth_role.is_none() && matches!((old, new), (TcpState::SynSent, TcpState::Established));
        connection.state = new;
        connection.previous_state_since_ns = connection.state_since_ns;
        connection.state_since_ns = at;
        let tuple = Tuple { netns: connection.socket.netns, local: connection.local, remote: connection.remote };
        let role = connection.role;
        if new == TcpState::Close {
            connection.totals = event.totals;
            connection.ending =
                Some(Ending { at_ns: at, from: old, by_application: event.process.is_some(), lingered: None, resolved_ns: None });
            let exact = connection.timewait_substate;
            // tcp_fin() marks the socket before tcp_time_wait() closes it (tp_btf reads the mark);
            // fentry on tcp_time_wait says the substate outright.
            let peer_fin = exact == Some(TcpState::TimeWait) || event.totals.is_some_and(|totals| totals.peer_fin);
            let followed = self.config.probes || self.config.time_wait_status.is_some() || exact == Some(TcpState::FinWait2);
            if old != TcpState::FinWait2 || connection.reset_received {
                self.endings.push_back((at, event.socket));
                if matches!(old, TcpState::Closing | TcpState::TimeWait) {
                    self.remember_time_wait(tuple, at);
                }
            } else if peer_fin {
                if let Some(ending) = &mut connection.ending {
                    ending.lingered = Some(Lingered::PeerFin);
                }
                self.endings.push_back((at, event.socket));
                self.remember_time_wait(tuple, at);
            } else if followed {
                // The full socket handed over to a timewait socket, in FIN_WAIT2 (or, without
                // tp_btf or fentry, in a substate not known yet): its lookups or fentry will say.
                let mut connection = self.connections.remove(&event.socket).expect("present");
                connection.state = TcpState::FinWait2;
                connection.state_since_ns = connection.previous_state_since_ns;
                let last_in_fin_wait2_ns = (exact == Some(TcpState::FinWait2) || event.totals.is_some()).then_some(at);
                self.linger(Lingering { connection, last_in_fin_wait2_ns, gone_ns: None, probed_ns: at }, out);
            } else {
                if let Some(ending) = &mut connection.ending {
                    ending.lingered = Some(Lingered::Unresolved(Unresolved::NotFollowed));
                }
                self.endings.push_back((at, event.socket));
            }
        } else {
            connection.retransmits_in_state = 0;
        }
        // Only now are both ports known: the server side at SYN_RECV (at ESTABLISHED before
        // Linux 6.x, whose child sockets still carry the listener's addresses at SYN_RECV), the
        // client once connected.
        let server_tuple_known = role == Role::Server
            && event.remote.port() != 0
            && matches!(
                (old, new),
                (TcpState::Listen | TcpState::NewSynRecv, TcpState::SynRecv) | (TcpState::SynRecv, TcpState::Established)
            );
        if server_tuple_known || reused_tuple {
            let tuple = Tuple::of(event);
            let time_wait_since = self.time_wait.get(&tuple).copied().filter(|since| *since < at);
            let lingering_since = self.lingering.get(&tuple).and_then(|old| old.connection.ending).map(|ending| ending.at_ns);
            if let Some(since) = time_wait_since.or(lingering_since).filter(|since| *since < at) {
                self.time_wait.remove(&tuple);
                if let Some(old) = self.lingering.remove(&tuple) {
                    // Only a timewait socket in TIME_WAIT takes a new SYN: the peer's FIN had come.
                    self.resolve(old, Lingered::PeerFin, at, out);
                }
                let age = at - since;
                if age < TIME_WAIT_NS.max(self.config.fin_timeout_ns) {
                    out.push(Observation::PortReuse { tuple, role, time_wait_age_ns: Some(age), accepted: true, at_ns: at });
                }
            }
        }
    }

    fn new_connection(&self, event: &Event, role: Role, opened_ns: Option<u64>) -> Connection {
        Connection {
            socket: event.socket,
            role,
            local: event.local,
            remote: event.remote,
            state: event.old_state.unwrap_or(TcpState::Close),
            state_since_ns: event.timestamp_ns,
            previous_state_since_ns: event.timestamp_ns,
            opened_ns,
            established_ns: None,
            first_fin: None,
            first_fin_ns: None,
            reset_sent: None,
            reset_received: false,
            retransmits: 0,
            syn_retransmits: 0,
            retransmits_in_state: 0,
            first_retransmit_ns: None,
            process: None,
            ending: None,
            timewait_substate: None,
            totals: None,
            peer_reference: None,
            reset_segment: None,
            reset_taken: false,
            refused_resets: 0,
            drops: drops::Drops::default(),
            idle_before_ns: None,
        }
    }

    fn guess_role(&self, event: &Event) -> Role {
        if event.old_state == Some(TcpState::Listen) || event.state == Some(TcpState::Listen) {
            Role::Listener
        } else {
            guess_role(self.config.ephemeral_ports, event.local, event.remote)
        }
    }

    /// How long the event's socket had been idle (from its clocks), where the tick rate is known.
    fn idle_ns(&self, event: &Event) -> Option<u64> {
        let (clocks, hz) = (event.idle?, self.config.hz?);
        Some(u64::from(clocks.idle_jiffies()) * 1_000_000_000 / u64::from(hz))
    }

    /// Evicts the stalest of a sample of connections when the table is full.
    fn make_room(&mut self, out: &mut Vec<Observation>) {
        if self.connections.len() < self.config.max_connections {
            return;
        }
        let stalest = self
            .connections
            .values()
            .take(64)
            .min_by_key(|connection| (connection.ending.is_none(), connection.state_since_ns))
            .map(|connection| connection.socket);
        if let Some(socket) = stalest {
            let connection = self.connections.remove(&socket).expect("just found");
            if connection.ending.is_some() {
                self.finish(connection, out);
            } else {
                self.stats.evicted_connections += 1;
            }
        }
    }

    /// Classifies the connections that ended at least [`SETTLE_NS`] before `now_ns`
    /// (all of them with `now_ns = u64::MAX`, at exit).
    pub fn settle(&mut self, now_ns: u64, out: &mut Vec<Observation>) {
        self.settle_gone(now_ns, out);
        while let Some(&(at_ns, socket)) = self.endings.front() {
            if at_ns.saturating_add(SETTLE_NS) > now_ns {
                break;
            }
            self.endings.pop_front();
            // The entry may have been replaced (address reused) or evicted since.
            if self.connections.get(&socket).and_then(|connection| connection.ending).is_some_and(|ending| ending.at_ns == at_ns) {
                let connection = self.connections.remove(&socket).expect("just checked");
                self.finish(connection, out);
            }
        }
    }

    /// The role of a segment no socket of ours answered (a reset to a closed port, a stray
    /// segment's reset): the ports we know serve, else the ephemeral port range.
    fn socketless_role(&self, event: &Event) -> Role {
        let serves = |port: u16| self.service_ports.contains(&(event.socket.netns, port));
        if serves(event.local.port()) {
            Role::Server
        } else if serves(event.remote.port()) {
            Role::Client
        } else {
            guess_role(self.config.ephemeral_ports, event.local, event.remote)
        }
    }

    fn finish(&mut self, mut connection: Box<Connection>, out: &mut Vec<Observation>) {
        let Some(ending) = connection.ending else {
            self.stats.evicted_connections += 1;
            return;
        };
        if connection.role == Role::Listener {
            return;
        }
        self.last_reset_refused(&mut connection, ending.at_ns, out);
        let mut verdict = self.classify(&connection, ending);
        // Silence that this host's own drops explain is not the peer's.
        if matches!(verdict.class, CloseClass::PeerSilent | CloseClass::ConnectTimeout) && connection.drops.incoming > 0 {
            verdict.class = CloseClass::DroppedHere;
            verdict.detail = format!("{}; the peer was not silent ({})", self.describe_drops(&connection), verdict.detail).into();
        }
        out.push(Observation::Ended(Ended {
            connection,
            class: verdict.class,
            detail: verdict.detail,
            time_wait: verdict.time_wait,
            fin_wait2_expired: verdict.fin_wait2_expired,
            rst_from: verdict.rst_from,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode::Process, track::fixtures::*};

    const S: u64 = 1_000_000_000;

    fn run(config: TrackerConfig, events: &[Event]) -> (Tracker, Vec<Observation>) {
        let mut tracker = Tracker::new(config, reasons());
        let mut out = Vec::new();
        for event in events {
            tracker.observe(event, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        (tracker, out)
    }

    fn ended(out: &[Observation]) -> Vec<&Ended> {
        out.iter()
            .filter_map(|observation| match observation {
                Observation::Ended(ended) => Some(ended),
                _ => None,
            })
            .collect()
    }

    use TcpState::*;

    fn client() -> Script {
        Script::new(0xa1, "10.0.0.1:40000", "10.0.0.2:80")
    }

    fn server() -> Script {
        Script::new(0xb1, "10.0.0.2:80", "10.0.0.1:40000")
    }

    #[test]
    fn a_reset_without_a_socket_takes_its_role_from_the_ports_we_serve_even_after_the_listener_closed() {
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let mut out = Vec::new();
        // Both ports are in the ephemeral range: only the listener tells which one serves.
        let listener = Script::new(1, "127.0.0.1:37000", "0.0.0.0:0");
        tracker.observe(&listener.state(TcpState::Close, TcpState::Listen, 1), &mut out);
        tracker.observe(&listener.state(TcpState::Listen, TcpState::Close, 2), &mut out);
        tracker.settle(u64::MAX, &mut out);
        let from_client_port = Script::new(0, "127.0.0.1:40000", "127.0.0.1:37000").reset_sent(TcpState::Close, Some(1), 3);
        let to_client_port = Script::new(0, "127.0.0.1:37000", "127.0.0.1:40001").reset_sent(TcpState::Close, Some(1), 4);
        let unknown = Script::new(0, "127.0.0.1:41000", "127.0.0.1:42000").reset_sent(TcpState::Close, Some(1), 5);
        out.clear();
        for event in [from_client_port, to_client_port, unknown] {
            tracker.observe(&event, &mut out);
        }
        let roles: Vec<Role> =
            out.iter().filter_map(|o| if let Observation::ResetSent { role, .. } = o { Some(*role) } else { None }).collect();
        assert_eq!(roles, [Role::Client, Role::Server, Role::Server], "unknown ports: the ephemeral guess");
    }

    #[test]
    fn a_namespace_that_is_gone_takes_its_time_wait_sockets_with_it() {
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let tuple = |port: u16| ("10.0.0.2:80".parse().unwrap(), format!("10.0.0.1:{port}").parse().unwrap());
        tracker.refresh_time_wait(NETNS, 5, [tuple(40000), tuple(40001)]);
        tracker.refresh_time_wait(NETNS + 1, 5, [tuple(40000)]);
        tracker.namespace_gone(NETNS);
        let left: Vec<u32> = tracker.time_wait(10).map(|(tuple, _)| tuple.netns).collect();
        assert_eq!(left, [NETNS + 1]);
    }

    #[test]
    fn client_that_closes_first_after_the_peer_answers_is_graceful_and_leaves_time_wait() {
        let c = client();
        let (tracker, out) = run(
            TrackerConfig::default(),
            &[
                c.syscall(Close, SynSent, S),
                c.syscall(SynSent, Established, S + 1000),
                c.syscall(Established, FinWait1, 2 * S),
                c.state(FinWait1, FinWait2, 2 * S + 100),
                c.closed(FinWait2, true, 2 * S + 200),
            ],
        );
        let ended = ended(&out);
        assert_eq!(ended.len(), 1);
        let verdict = ended[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
        assert_eq!(verdict.connection.first_fin, Some(FirstFin::Us));
        assert_eq!(verdict.connection.role, Role::Client);
        assert_eq!(verdict.connection.process.map(|p| p.pid), Some(4242));
        assert_eq!(tracker.time_wait(2 * S + 300).count(), 1);
        assert_eq!(tracker.time_wait(2 * S + 200 + TIME_WAIT_NS).count(), 0, "TIME_WAIT lasts 60 s");
    }

    #[test]
    fn server_whose_peer_closes_first_records_the_peers_fin_and_ends_graceful() {
        let s = server();
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                s.state(Listen, SynRecv, S),
                s.state(SynRecv, Established, S + 10),
                s.state(Established, CloseWait, 2 * S),
                s.syscall(CloseWait, LastAck, 2 * S + 50),
                s.state(LastAck, Close, 2 * S + 60),
            ],
        );
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, false));
        assert_eq!((verdict.connection.role, verdict.connection.first_fin), (Role::Server, Some(FirstFin::Peer)));
        assert_eq!(verdict.connection.process, Some(process()), "the pid comes from close(), not softirq");
    }

    #[test]
    fn simultaneous_close_is_both() {
        let c = client();
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                c.syscall(Close, SynSent, S),
                c.state(SynSent, Established, S + 1),
                c.syscall(Established, FinWait1, S + 2),
                c.state(FinWait1, Closing, S + 3),
                c.state(Closing, Close, S + 4),
            ],
        );
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.connection.first_fin, verdict.time_wait), (CloseClass::Graceful, Some(FirstFin::Both), true));
    }

    #[test]
    fn rst_in_reply_to_syn_is_refused() {
        let c = client();
        let (_, out) =
            run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), c.reset_received(S + 10), c.syscall(SynSent, Close, S + 11)]);
        assert_eq!(ended(&out)[0].class, CloseClass::Refused);
        assert!(matches!(out[0], Observation::ResetReceived { role: Role::Client, .. }));
    }

    #[test]
    fn rst_from_the_peer_mid_connection_is_reset_by_peer() {
        let s = server();
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                s.state(Listen, SynRecv, S),
                s.state(SynRecv, Established, S + 1),
                s.reset_received(3 * S),
                s.state(Established, Close, 3 * S),
            ],
        );
        let verdict = ended(&out)[0];
        assert_eq!(verdict.class, CloseClass::ResetByPeer);
        assert!(verdict.detail.contains("ESTABLISHED"), "{}", verdict.detail);
    }

    #[test]
    fn linger_zero_close_is_aborted_even_though_the_reset_follows_the_close() {
        let c = client();
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                c.syscall(Close, SynSent, S),
                c.syscall(SynSent, Established, S + 1),
                c.syscall(Established, Close, 2 * S),
                Event { process: Some(process()), ..c.reset_sent(Close, Some(14), 2 * S + 5) },
            ],
        );
        let verdict = ended(&out)[0];
        assert_eq!(verdict.class, CloseClass::Aborted);
        assert!(verdict.detail.contains("TCP_STATE"), "{}", verdict.detail);
    }

    #[test]
    fn reset_sent_by_the_stack_is_reset_by_us_with_its_reason() {
        let s = server();
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                s.state(Listen, SynRecv, S),
                s.state(SynRecv, Established, S + 1),
                s.reset_sent(Established, Some(2), 2 * S),
                s.state(Established, Close, 2 * S + 1),
            ],
        );
        let verdict = ended(&out)[0];
        assert_eq!(verdict.class, CloseClass::ResetByUs);
        assert!(verdict.detail.contains("TCP_INVALID_ACK_SEQUENCE"), "{}", verdict.detail);
    }

    #[test]
    fn keepalive_reset_means_the_peer_went_silent() {
        let s = server();
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                s.state(Listen, SynRecv, S),
                s.state(SynRecv, Established, S + 1),
                s.reset_sent(Established, Some(15), 90 * S),
                s.state(Established, Close, 90 * S),
            ],
        );
        assert_eq!(ended(&out)[0].class, CloseClass::PeerSilent);
    }

    #[test]
    fn retransmission_timeout_without_fin_or_rst_is_peer_silent() {
        let c = client();
        let mut events = vec![c.syscall(Close, SynSent, S), c.state(SynSent, Established, S + 1)];
        events.extend((0..6).map(|i| c.retransmit(Established, 2 * S + i)));
        events.push(c.state(Established, Close, 20 * S));
        let (_, out) = run(TrackerConfig::default(), &events);
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.connection.retransmits), (CloseClass::PeerSilent, 6));
        assert!(verdict.detail.contains("6 retransmits"), "{}", verdict.detail);
    }

    /// Our connect() and close(), and the peer's ACK of our FIN; then `rest`.
    fn our_fin_acknowledged(c: &Script, rest: impl IntoIterator<Item = Event>) -> Vec<Event> {
        let mut events = vec![
            c.syscall(Close, SynSent, S),
            c.state(SynSent, Established, S + 1),
            c.syscall(Established, FinWait1, 2 * S),
            c.state(FinWait1, FinWait2, 2 * S + 1),
        ];
        events.extend(rest);
        events
    }

    fn time_wait_event(script: &Script, kind: EventKind, state: Option<TcpState>, status: Option<u32>, at: u64) -> Event {
        Event { kind, tw_status: status, ..script.state(Close, Close, at) }.with_state(state)
    }

    impl Event {
        fn with_state(mut self, state: Option<TcpState>) -> Event {
            (self.old_state, self.state) = (None, state);
            self
        }
    }

    fn exact() -> TrackerConfig {
        TrackerConfig {
            probes: true,
            time_wait_status: Some(crate::kernel::btf_offsets::TimeWaitStatus { syn: 3, ack: 2 }),
            ..TrackerConfig::default()
        }
    }

    #[test]
    fn with_fentry_a_fin_wait2_close_into_time_wait_is_graceful_without_a_snapshot() {
        let c = client();
        let (tracker, out) = run(
            exact(),
            &our_fin_acknowledged(
                &c,
                [time_wait_event(&c, EventKind::TimeWaitEnter, Some(TimeWait), None, 2 * S + 2), c.state(FinWait2, Close, 2 * S + 3)],
            ),
        );
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
        assert_eq!(tracker.lingering().count(), 0);
    }

    #[test]
    fn with_fentry_alone_an_orphan_whose_peer_never_sent_its_fin_is_unresolved_between_expiry_and_reset() {
        let c = client();
        let mut tracker = Tracker::new(TrackerConfig { probes: false, ..exact() }, reasons());
        let mut out = Vec::new();
        for event in our_fin_acknowledged(
            &c,
            [time_wait_event(&c, EventKind::TimeWaitEnter, Some(FinWait2), None, 2 * S + 2), c.state(FinWait2, Close, 2 * S + 3)],
        ) {
            tracker.observe(&event, &mut out);
        }
        assert_eq!(tracker.lingering().filter(|l| l.seen_in_fin_wait2()).count(), 1);
        tracker.expire(200 * S, &mut out);
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.fin_wait2_expired), (CloseClass::Unresolved, false));
        assert!(verdict.detail.contains("tcp_fin_timeout or a RST"), "{}", verdict.detail);
    }

    #[test]
    fn with_fexit_a_late_fin_on_the_fin_wait2_timewait_socket_makes_it_graceful() {
        let c = client();
        let (tracker, out) = run(
            TrackerConfig { probes: false, ..exact() },
            &our_fin_acknowledged(
                &c,
                [
                    time_wait_event(&c, EventKind::TimeWaitEnter, Some(FinWait2), None, 2 * S + 2),
                    c.state(FinWait2, Close, 2 * S + 3),
                    // Later the peer's FIN reaches the timewait socket (another address).
                    Event {
                        socket: SocketId { netns: NETNS, address: 0xdead },
                        ..time_wait_event(&c, EventKind::TimeWaitEnter, Some(TimeWait), None, 5 * S)
                    },
                ],
            ),
        );
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
        assert_eq!(tracker.time_wait(6 * S).count(), 1);
    }

    #[test]
    fn with_fexit_a_syn_answered_by_a_timewait_ack_is_port_reuse_not_accepted() {
        let s = server();
        let (_, out) = run(
            exact(),
            &[
                time_wait_event(&s, EventKind::TimeWaitSyn, None, Some(2), S),
                time_wait_event(&s, EventKind::TimeWaitSyn, None, Some(3), 2 * S),
            ],
        );
        let verdicts: Vec<bool> = out
            .iter()
            .filter_map(|o| match o {
                Observation::PortReuse { accepted, role: Role::Server, .. } => Some(*accepted),
                _ => None,
            })
            .collect();
        assert_eq!(verdicts, [false, true]);
    }

    #[test]
    fn a_process_that_only_ran_a_deferred_timer_is_not_taken_for_the_owner() {
        let c = client();
        let intruder = Event { process: Some(Process { pid: 1, tgid: 1, ..process() }), ..c.state(Established, Close, 3 * S) };
        let (_, out) = run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), c.state(SynSent, Established, S + 1), intruder]);
        assert_eq!(ended(&out)[0].connection.process.map(|p| p.pid), Some(4242));
    }

    #[test]
    fn a_timeout_deferred_to_the_application_s_release_sock_is_still_peer_silent() {
        let c = client();
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                c.syscall(Close, SynSent, S),
                c.state(SynSent, Established, S + 1),
                c.retransmit(Established, 2 * S),
                c.syscall(Established, Close, 3 * S),
            ],
        );
        assert_eq!(ended(&out)[0].class, CloseClass::PeerSilent);
    }

    /// Lookups of lingering timewait sockets: the tp_btf close said the peer's FIN had not come.
    fn probed_config() -> TrackerConfig {
        TrackerConfig { probes: true, time_wait_resets_traced: true, ..TrackerConfig::default() }
    }

    /// Our FIN acknowledged at 2 s, the orphan handed over in FIN_WAIT2; then the tracker sees
    /// `lookups` (second, state) and, at each summary second in `dumps`, a dump showing `dumped`.
    fn after_our_fin(config: TrackerConfig, lookups: &[(u64, Option<TcpState>)], dumps: &[(u64, &[TcpState])]) -> Vec<Observation> {
        let c = client();
        let mut tracker = Tracker::new(config, reasons());
        let mut out = Vec::new();
        for event in our_fin_acknowledged(&c, [c.closed(FinWait2, false, 2 * S + 2)]) {
            tracker.observe(&event, &mut out);
        }
        let tuple = Tuple { netns: NETNS, local: c.local, remote: c.remote };
        enum Seen<'a> {
            Lookup(Option<TcpState>),
            Dump(&'a [TcpState]),
        }
        let mut moments: Vec<(u64, Seen)> = lookups.iter().map(|(at, state)| (*at, Seen::Lookup(*state))).collect();
        moments.extend(dumps.iter().map(|(at, states)| (*at, Seen::Dump(states))));
        moments.sort_by_key(|moment| moment.0);
        for (at, seen) in moments {
            match seen {
                Seen::Lookup(state) => tracker.probed(&tuple, at * S, state, &mut out),
                Seen::Dump(states) => tracker.reconcile(NETNS, at * S, states.iter().map(|state| (c.local, c.remote, *state)), &mut out),
            }
            tracker.settle(at * S, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        out
    }

    /// Lookups every second from 3 s; gone from `gone_at` on.
    fn lookups_until_gone(gone_at: u64) -> Vec<(u64, Option<TcpState>)> {
        (3..=gone_at).map(|second| (second, (second < gone_at).then_some(FinWait2))).collect()
    }

    #[test]
    fn a_peer_reset_after_our_fin_reads_the_same_whatever_the_summary_interval() {
        // The peer resets the orphan at 7.8 s. A 2 s interval's dumps saw it in FIN_WAIT2, then
        // not; a 10 s interval's first dump came after the reset. Both used to guess (expired,
        // graceful); the lookups, at a fixed cadence, decide instead.
        let lookups = lookups_until_gone(8);
        let every_2s: Vec<(u64, &[TcpState])> = vec![(4, &[FinWait2]), (6, &[FinWait2]), (8, &[]), (10, &[])];
        let every_10s: Vec<(u64, &[TcpState])> = vec![(10, &[])];
        for dumps in [every_2s, every_10s] {
            let out = after_our_fin(probed_config(), &lookups, &dumps);
            let verdict = ended(&out)[0];
            assert_eq!(verdict.class, CloseClass::ResetByPeer, "{}", verdict.detail);
            assert!(verdict.detail.contains("between 5.0 s and 6.0 s after our FIN"), "{}", verdict.detail);
        }
    }

    #[test]
    fn where_the_kernel_hides_resets_from_timewait_sockets_an_early_end_is_unresolved() {
        let config = TrackerConfig { time_wait_resets_traced: false, ..probed_config() };
        let verdict = ended(&after_our_fin(config, &lookups_until_gone(8), &[]))[0].clone();
        assert_eq!(verdict.class, CloseClass::Unresolved);
        assert!(verdict.detail.contains("the peer's, or ours"), "{}", verdict.detail);
    }

    #[test]
    fn an_orphan_still_in_fin_wait2_at_its_tcp_fin_timeout_expired_unanswered() {
        // Handed over at 2 s; tcp_fin_timeout 60 s: seen at 62 s, gone at 63 s.
        let verdict = ended(&after_our_fin(probed_config(), &lookups_until_gone(63), &[]))[0].clone();
        assert_eq!((verdict.class, verdict.fin_wait2_expired, verdict.time_wait), (CloseClass::PeerSilent, true, false));
    }

    #[test]
    fn an_orphan_gone_across_its_deadline_with_no_lookup_near_it_is_unresolved() {
        let lookups = [(5, Some(FinWait2)), (70, None)];
        let verdict = ended(&after_our_fin(probed_config(), &lookups, &[]))[0].clone();
        assert_eq!(verdict.class, CloseClass::Unresolved);
        assert!(verdict.detail.contains("tcp_fin_timeout or a RST"), "{}", verdict.detail);
    }

    #[test]
    fn an_orphan_found_in_time_wait_got_the_peers_fin_late() {
        let out = after_our_fin(probed_config(), &[(3, Some(FinWait2)), (4, Some(TimeWait))], &[]);
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
    }

    #[test]
    fn a_reset_from_the_timewait_socket_is_ours_even_when_the_lookup_came_first() {
        // The lookup at 5 s finds it gone; our reset at 4.9 s reaches the tracker after it (the
        // reorder stage held it): the verdict waits for the events before the lookup.
        let c = client();
        let mut tracker = Tracker::new(probed_config(), reasons());
        let mut out = Vec::new();
        for event in our_fin_acknowledged(&c, [c.closed(FinWait2, false, 2 * S + 2)]) {
            tracker.observe(&event, &mut out);
        }
        tracker.probed(&Tuple { netns: NETNS, local: c.local, remote: c.remote }, 5 * S, None, &mut out);
        tracker.settle(5 * S, &mut out);
        assert!(ended(&out).is_empty(), "undecided until the events before the lookup are in");
        let socketless = Event { socket: SocketId { netns: NETNS, address: 0x7777 }, ..c.reset_sent(TimeWait, Some(16), 5 * S - 100) };
        tracker.observe(&socketless, &mut out);
        tracker.settle(u64::MAX, &mut out);
        let verdict = ended(&out)[0];
        assert_eq!(verdict.class, CloseClass::ResetByUs);
        assert!(verdict.detail.contains("TCP_TIMEWAIT_SOCKET"), "{}", verdict.detail);
    }

    #[test]
    fn without_lookups_or_fentry_an_orphan_in_fin_wait2_is_unresolved_at_once() {
        let c = client();
        let (tracker, out) = run(TrackerConfig::default(), &our_fin_acknowledged(&c, [c.closed(FinWait2, false, 2 * S + 2)]));
        assert_eq!(ended(&out)[0].class, CloseClass::Unresolved);
        assert_eq!((tracker.lingering().count(), tracker.time_wait(3 * S).count()), (0, 0));
    }

    #[test]
    fn unanswered_syns_are_a_connect_timeout_with_their_retransmits() {
        let c = client();
        let (_, out) = run(
            TrackerConfig::default(),
            &[c.syscall(Close, SynSent, S), c.retransmit(SynSent, 2 * S), c.retransmit(SynSent, 4 * S), c.state(SynSent, Close, 8 * S)],
        );
        assert_eq!(out.iter().filter(|o| matches!(o, Observation::SynRetransmit { .. })).count(), 2);
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.connection.syn_retransmits), (CloseClass::ConnectTimeout, 2));
    }

    #[test]
    fn a_late_event_from_another_cpu_does_not_move_the_state_back() {
        let c = client();
        let (tracker, _) = {
            let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
            let mut out = Vec::new();
            for event in [c.syscall(Close, SynSent, S), c.state(SynSent, Established, 3 * S), c.state(Close, SynSent, 2 * S)] {
                tracker.observe(&Event { old_state: event.old_state, ..event }, &mut out);
            }
            (tracker, out)
        };
        let connection = tracker.connections().next().unwrap();
        assert_eq!((connection.state, connection.state_since_ns), (Established, 3 * S));
    }

    #[test]
    fn a_full_table_evicts_and_counts() {
        let config = TrackerConfig { max_connections: 2, ..TrackerConfig::default() };
        let events: Vec<Event> = (0..5u64)
            .map(|i| Script::new(0x100 + i, &format!("10.0.0.1:{}", 40000 + i), "10.0.0.2:80").syscall(Close, SynSent, S + i))
            .collect();
        let (tracker, _) = run(config, &events);
        assert_eq!(tracker.stats.tracked, 5);
        assert_eq!(tracker.stats.evicted_connections, 3);
        assert_eq!(tracker.connections().count(), 2);
    }

    #[test]
    fn a_new_connection_on_a_tuple_still_in_time_wait_is_port_reuse() {
        let s = server();
        let again = Script { socket: SocketId { netns: NETNS, address: 0xb2 }, ..server() };
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                s.state(Listen, SynRecv, S),
                s.state(SynRecv, Established, S + 1),
                s.syscall(Established, FinWait1, 2 * S),
                s.state(FinWait1, FinWait2, 2 * S + 1),
                s.closed(FinWait2, true, 2 * S + 2),
                again.state(Listen, SynRecv, 12 * S),
            ],
        );
        let reuse = out.iter().find_map(|o| match o {
            Observation::PortReuse { tuple, role, time_wait_age_ns, accepted, .. } => Some((*tuple, *role, *time_wait_age_ns, *accepted)),
            _ => None,
        });
        let (tuple, role, age, accepted) = reuse.expect("port reuse seen");
        assert_eq!((tuple.local, tuple.remote, role, accepted), (server().local, server().remote, Role::Server, true));
        assert_eq!(age, Some(10 * S - 2));
    }

    #[test]
    fn on_older_kernels_the_reused_tuple_is_found_once_the_child_is_established() {
        let s = server();
        let listener_view = Script { socket: SocketId { netns: NETNS, address: 0xb2 }, remote: "0.0.0.0:0".parse().unwrap(), ..server() };
        let again = Script { socket: SocketId { netns: NETNS, address: 0xb2 }, ..server() };
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                s.state(Listen, SynRecv, S),
                s.state(SynRecv, Established, S + 1),
                s.syscall(Established, FinWait1, 2 * S),
                s.state(FinWait1, FinWait2, 2 * S + 1),
                s.closed(FinWait2, true, 2 * S + 2),
                listener_view.state(Listen, SynRecv, 12 * S),
                again.state(SynRecv, Established, 12 * S + 1),
            ],
        );
        assert_eq!(out.iter().filter(|o| matches!(o, Observation::PortReuse { accepted: true, .. })).count(), 1);
    }

    #[test]
    fn a_syn_answered_with_a_bare_ack_is_port_reuse_seen_from_the_client() {
        let c = client();
        let (_, out) = run(
            TrackerConfig::default(),
            &[
                c.syscall(Close, SynSent, S),
                c.reset_sent(SynSent, Some(2), S + 10),
                c.retransmit(SynSent, 2 * S),
                c.state(SynSent, Established, 2 * S + 5),
            ],
        );
        assert!(out.contains(&Observation::PortReuse {
            tuple: Tuple { netns: NETNS, local: c.local, remote: c.remote },
            role: Role::Client,
            time_wait_age_ns: None,
            accepted: false,
            at_ns: S + 10,
        }));
        assert_eq!(out.iter().filter(|o| matches!(o, Observation::PortReuse { .. })).count(), 1);
    }

    #[test]
    fn sockets_that_predate_the_tracer_join_mid_life_with_a_guessed_role() {
        let c = client();
        let (tracker, out) = run(
            TrackerConfig::default(),
            &[c.state(Established, CloseWait, S), c.syscall(CloseWait, LastAck, S + 1), c.state(LastAck, Close, S + 2)],
        );
        assert_eq!(tracker.stats.joined_mid_life, 1);
        let verdict = ended(&out)[0];
        assert_eq!((verdict.connection.role, verdict.connection.opened_ns, verdict.class), (Role::Client, None, CloseClass::Graceful));
    }

    #[test]
    fn the_socket_clocks_say_how_long_a_connection_was_idle_before_it_died_and_which_gaps_others_lived_through() {
        use crate::decode::IdleClocks;
        let config = TrackerConfig { hz: Some(250), ..TrackerConfig::default() };
        let c = client();
        // Last ACK at jiffy 1000, our data after 6 s of silence (jiffy 2500), retransmitted later.
        let clocks = IdleClocks { now: 2600, last_received: 1000, last_sent: 2500 };
        let (_, out) = run(
            config,
            &[
                c.syscall(Close, SynSent, S),
                c.state(SynSent, Established, S + 1),
                Event { idle: Some(clocks), ..c.retransmit(Established, 10 * S) },
                c.retransmit(Established, 11 * S),
                c.state(Established, Close, 20 * S),
            ],
        );
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.connection.idle_before_ns), (CloseClass::PeerSilent, Some(6 * S)));
        // The peer's data 2 s after the last ACK, with nothing sent meanwhile: a gap lived through.
        let other = Script::new(0xa2, "10.0.0.1:40001", "10.0.0.2:80");
        let quiet = IdleClocks { now: 1500, last_received: 1000, last_sent: 900 };
        let (_, out) = run(
            config,
            &[
                other.syscall(Close, SynSent, S),
                other.state(SynSent, Established, S + 1),
                Event { idle: Some(quiet), ..other.segment(64, false, 3 * S) },
            ],
        );
        assert!(out.iter().any(|o| matches!(o, Observation::IdleSurvived { gap_ns, .. } if *gap_ns == 2 * S)), "{out:?}");
        // Without the tick rate, no gap is claimed.
        let (_, out) = run(
            TrackerConfig::default(),
            &[other.syscall(Close, SynSent, S), Event { idle: Some(quiet), ..other.segment(64, false, 3 * S) }],
        );
        assert!(!out.iter().any(|o| matches!(o, Observation::IdleSurvived { .. })));
    }
}
