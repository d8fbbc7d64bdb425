//! The connection tracker: follows each socket from its first event to its end, infers who sent
//! the first FIN and who reset whom, and classifies how every connection ended.
//!
//! Pure: no I/O, no clock; time comes from event timestamps and the caller's `now`. Everything it
//! learns leaves as [`Observation`]s for the findings layer. Memory is bounded by
//! [`TrackerConfig`]; every eviction is counted in [`TrackerStats`].
//!
//! The parts: [`config`] (what it is told of the host), [`connection`] (what is known of one
//! socket), the state machine here, [`time_wait`] (TIME_WAIT and FIN_WAIT2 timewait sockets,
//! which outlive their socket), [`classify`] (the verdict on a connection that ended),
//! [`provenance`] (who sent a RST), [`drops`] (what this host dropped), [`vanished`]
//! (connections whose CLOSE event never came), [`finality`] (when no verdict still to come can
//! precede a line), [`reorder`] (timestamp order before any of it); [`Bounded`] is how every
//! table here stays within its bound.
mod classify;
mod config;
mod connection;
mod drops;
mod finality;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod icmp;
mod mtu;
mod provenance;
pub mod reorder;
mod resets;
mod syn_drops;
mod time_wait;
mod vanished;

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use tracer_common::EventKind;

pub use self::{
    classify::{guess_role, left_by_icmp},
    config::{TrackerConfig, IDLE_GAP_NS, LINGER_PROBE_NS},
    connection::{
        CloseClass, CloseLost, Connection, Ended, Ending, FirstFin, Lingered, Lingering, Observation, ResetSent, Role, RstFrom, Tuple,
        Unresolved,
    },
    drops::{losses, Drops},
    provenance::describe as describe_rst_origin,
    syn_drops::SynsDropped,
    vanished::QUIET_NS,
};
use crate::{
    bounded::Bounded,
    decode::{Event, SocketId, TcpState},
    FastMap, FastSet,
};

/// How long after its CLOSE a connection waits for late facts (a reset is sent after the
/// socket is already CLOSE; events from other CPUs may trail) before it is classified.
pub const SETTLE_NS: u64 = 200_000_000;
/// TCP_TIMEWAIT_LEN: fixed at 60 s in Linux.
pub const TIME_WAIT_NS: u64 = 60_000_000_000;

/// Most (namespace, port) pairs remembered as serving (16 bytes each with the table's overhead).
const MAX_SERVICE_PORTS: usize = 65_536;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackerStats {
    pub tracked: u64,
    pub evicted_connections: u64,
    pub evicted_time_wait: u64,
    /// Endpoint pairs whose socketless drops were forgotten to make room.
    pub evicted_drop_pairs: u64,
    /// Destinations whose socketless drops (what joins our SYNs to a NAT's) were forgotten.
    pub evicted_drop_destinations: u64,
    /// Arrived RSTs forgotten to make room before any socket took them (none older than a
    /// second is counted: a socket takes its RST within microseconds or never).
    pub evicted_arrived_resets: u64,
    /// Peers whose TTL reference was forgotten to make room (their next RST reads "no reference").
    pub evicted_peer_ttls: u64,
    /// ICMP errors forgotten to make room before their connection ended.
    pub evicted_arrived_icmp: u64,
    /// Events about sockets first seen mid-life (they predate the tracer, or their birth was lost).
    pub joined_mid_life: u64,
    /// Connections found gone whose CLOSE event never came (lost or skipped): ended unresolved.
    pub closes_unseen: u64,
}

pub struct Tracker {
    config: TrackerConfig,
    reason_names: BTreeMap<u32, String>,
    /// Boxed: an entry moves in and out of the table, into a lingering record and a verdict, as one pointer.
    connections: Bounded<SocketId, Box<Connection>>,
    /// TIME_WAIT sockets (seen entering it, or reported by a snapshot) → when they entered it.
    time_wait: Bounded<Tuple, u64>,
    /// Orphans that left FIN_WAIT2 for a timewait socket, until a lookup or an event says what
    /// it became.
    lingering: Bounded<Tuple, Lingering>,
    /// What connection lines wait for (see [`finality`]).
    finality: finality::Pending,
    /// Lingering sockets found gone, in lookup order, waiting for the events before then.
    gone: VecDeque<(u64, Tuple)>,
    /// Ports we have seen serving (a listener starting, a connection accepted), by namespace:
    /// what gives a socketless reset its role (our port serves: we are the server; theirs, in
    /// our namespace: we called it). Kept after the listener closes, as its peers' late segments
    /// keep coming; at most [`MAX_SERVICE_PORTS`].
    service_ports: FastSet<(u32, u16)>,
    /// The TTL each peer address's packets (its handshakes, its data) arrived with lately, by
    /// namespace: the reference for a RST on a connection that has no data of the peer yet.
    peer_ttls: Bounded<(u32, std::net::IpAddr), provenance::AddressTtl>,
    /// RSTs as they arrived at this host (`netif_receive_skb`), by the tuple of the socket they
    /// are for, until its `tcp_receive_reset` takes one; at most [`provenance::MAX_ARRIVED_RESETS`].
    arrived_resets: Bounded<Tuple, (crate::decode::Segment, u64)>,
    /// ICMP unreachable errors as they arrived, by the tuple of the connection they answered,
    /// until it ends; at most [`icmp::MAX_ARRIVED_ICMP`].
    arrived_icmp: Bounded<Tuple, (crate::decode::IcmpError, u64)>,
    /// The kernel's drop reasons by value (`enum skb_drop_reason`).
    drop_reason_names: BTreeMap<u32, String>,
    /// Every drop, by its packet's two endpoints (for the other end of a connection on this
    /// host, and for drops no socket held); at most [`drops::MAX_DROP_PAIRS`].
    pair_drops: Bounded<(std::net::SocketAddr, std::net::SocketAddr), drops::PairDrops>,
    /// Drops where no socket held the packet, held for [`SETTLE_NS`] before they are reported:
    /// a refusal by a firewall of this host (its RST comes microseconds after it dropped our
    /// SYN) claims them, and reports them as its own; at most [`syn_drops::MAX_HELD_DROPS`].
    held_drops: VecDeque<syn_drops::HeldDrop>,
    /// The last drops to each destination where no socket held the packet (what joins our SYNs
    /// to their drops in a NAT of this host); at most [`syn_drops::MAX_DROP_DESTINATIONS`].
    drop_destinations: Bounded<std::net::SocketAddr, syn_drops::DestinationDrops>,
    /// Names of this host's namespaces, as the snapshots found them (for verdicts that name
    /// one); at most [`drops::MAX_NAMED_NETNS`].
    netns_names: FastMap<u32, String>,
    /// Connections that reached CLOSE, in event order, waiting for [`SETTLE_NS`] to pass.
    endings: VecDeque<(u64, SocketId)>,
    /// Quiet connections to look up, and those found gone (see [`vanished`]).
    watch: vanished::Watch,
    pub stats: TrackerStats,
}

impl Tracker {
    pub fn new(config: TrackerConfig, reason_names: BTreeMap<u32, String>) -> Tracker {
        Tracker {
            config,
            reason_names,
            connections: Bounded::new(|connection| Tracker::eviction_age(connection)),
            time_wait: Bounded::new(|since| *since),
            lingering: Bounded::new(|lingering| lingering.connection.state_since_ns),
            finality: finality::Pending::default(),
            gone: VecDeque::new(),
            peer_ttls: Bounded::new(|known| known.at_ns),
            arrived_resets: Bounded::new(|(_, at)| *at),
            arrived_icmp: Bounded::new(|(_, at)| *at),
            drop_reason_names: BTreeMap::new(),
            pair_drops: Bounded::new(drops::PairDrops::last_drop_ns),
            service_ports: FastSet::default(),
            endings: VecDeque::new(),
            held_drops: VecDeque::new(),
            drop_destinations: Bounded::new(syn_drops::DestinationDrops::last_ns),
            netns_names: FastMap::default(),
            watch: vanished::Watch::default(),
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
            EventKind::ResetSent => self.reset_sent(event, out),
            EventKind::ResetReceived => self.reset_received(event, out),
            EventKind::Retransmit => {
                let idle_ns = self.config.idle_ns(event);
                let connection = self.connections.get_mut(&event.socket);
                let process = connection.as_ref().and_then(|connection| connection.process);
                if let Some(connection) = connection {
                    if event.state == Some(TcpState::SynSent) {
                        // Its SYN_SENT event came before connect() chose the local port.
                        if event.local.port() != 0 {
                            connection.local = event.local;
                        }
                        connection.syn_retransmits += 1;
                    } else {
                        if let Some(resent) = &event.resent {
                            connection.mtu.record(resent);
                        }
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
                    let dropped_in = self.syn_resent(event, true);
                    out.push(Observation::SynRetransmit { tuple: Tuple::of(event), process, dropped_in, at_ns: event.timestamp_ns });
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
            EventKind::ResetArrived => self.reset_arrived(event),
            EventKind::IcmpArrived => self.icmp_arrived(event),
        }
    }

    fn state_change(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let (Some(old), Some(new)) = (event.old_state, event.state) else { return };
        let at = event.timestamp_ns;
        let birth_role = match (old, new) {
            (TcpState::Close, TcpState::SynSent) => Some(Role::Client),
            (TcpState::Listen, TcpState::SynRecv) | (TcpState::NewSynRecv, TcpState::SynRecv) => Some(Role::Server),
            // The kernel program folds a server socket's birth into its next change (it leaves
            // SYN_RECV in the softirq that made it): the first we hear of it is that change.
            (TcpState::SynRecv, _) if self.connections.get(&event.socket).is_none_or(|known| known.ending.is_some()) => Some(Role::Server),
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
            self.make_room(&event.socket, out);
            self.stats.tracked += 1;
            if role != Role::Client && self.service_ports.len() < MAX_SERVICE_PORTS {
                self.service_ports.insert((event.socket.netns, event.local.port()));
            }
            self.connections.insert(event.socket, Box::new(Connection::new(event, role, Some(at))));
        }
        if !self.connections.contains_key(&event.socket) {
            if new == TcpState::Close {
                return; // the end of something we never saw: nothing to learn
            }
            self.stats.joined_mid_life += 1;
            let role = self.guess_role(event);
            self.make_room(&event.socket, out);
            self.connections.insert(event.socket, Box::new(Connection::new(event, role, None)));
        }
        let connection = self.connections.get_mut(&event.socket).expect("inserted above");
        if at < connection.state_since_ns {
            return; // older than what we know: another CPU's late event; timestamps decide
        }
        if Tracker::fin_wait2_folded(connection, event) {
            connection.state_since_ns = at; // it entered FIN_WAIT2 just now
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
        if let Some(process) = event.process.filter(|_| owner_action || event.by_exiting_process) {
            connection.process = Some(process);
            connection.owner_exited = event.by_exiting_process;
        }
        match (old, new) {
            (_, TcpState::Established) => connection.established_ns = Some(at),
            (_, TcpState::FinWait1) => connection.first_fin(FirstFin::Us, at),
            (_, TcpState::CloseWait) => connection.first_fin(FirstFin::Peer, at),
            // Our FIN crossed theirs: simultaneous close.
            (TcpState::FinWait1, TcpState::Closing) => connection.first_fin = Some(FirstFin::Both),
            _ => {}
        }
        if (old, new) == (TcpState::SynSent, TcpState::Close) && connection.syns_dropped.is_some() {
            // Was the last SYN, too, dropped on this host?
            self.syn_resent(event, false);
        }
        let Some(connection) = self.connections.get_mut(&event.socket) else { return };
        let reused_tuple = birth_role.is_none() && matches!((old, new), (TcpState::SynSent, TcpState::Established));
        connection.state = new;
        connection.previous_state_since_ns = connection.state_since_ns;
        connection.state_since_ns = at;
        let tuple = connection.tuple();
        let role = connection.role;
        if new == TcpState::Close {
            connection.totals = event.totals;
            connection.ending = Some(Ending {
                at_ns: at,
                from: old,
                by_application: event.process.is_some(),
                lingered: None,
                resolved_ns: None,
                resolved_by_lookup: false,
                close_lost: None,
            });
            let exact = connection.timewait_substate;
            // tcp_fin() marks the socket before tcp_time_wait() closes it (tp_btf reads the mark);
            // fentry on tcp_time_wait says the substate outright.
            let peer_fin = exact == Some(TcpState::TimeWait) || event.totals.is_some_and(|totals| totals.peer_fin);
            let followed = self.config.probes || self.config.time_wait_status.is_some() || exact == Some(TcpState::FinWait2);
            if old != TcpState::FinWait2 || connection.reset_received {
                self.verdict_pending(at, event.socket);
                if matches!(old, TcpState::Closing | TcpState::TimeWait) {
                    self.remember_time_wait(tuple, at);
                }
            } else if peer_fin {
                if let Some(ending) = &mut connection.ending {
                    ending.lingered = Some(Lingered::PeerFin);
                }
                self.verdict_pending(at, event.socket);
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
                self.verdict_pending(at, event.socket);
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

    /// The state `event`'s socket passed through unseen before the event's old state: FIN_WAIT1,
    /// where the kernel folded an orphan's FIN_WAIT2 into the CLOSE that hands it over in the
    /// same packet (`KernelConfig::fold_transient_states`).
    pub fn folded_before(&self, event: &Event) -> Option<TcpState> {
        if event.old_state != Some(TcpState::FinWait2) {
            return None;
        }
        let connection = self.connections.get(&event.socket)?;
        Tracker::fin_wait2_folded(connection, event).then_some(TcpState::FinWait1)
    }

    fn fin_wait2_folded(connection: &Connection, event: &Event) -> bool {
        event.kind == EventKind::StateChange
            && event.old_state == Some(TcpState::FinWait2)
            && connection.state == TcpState::FinWait1
            && connection.ending.is_none()
    }

    fn guess_role(&self, event: &Event) -> Role {
        if event.old_state == Some(TcpState::Listen) || event.state == Some(TcpState::Listen) {
            Role::Listener
        } else {
            guess_role(self.config.ephemeral_ports, event.local, event.remote)
        }
    }

    /// Evicts the oldest connection when the table is full: an ended one first (its verdict is
    /// given now, early), else the one whose state changed longest ago (counted).
    fn make_room(&mut self, socket: &SocketId, out: &mut Vec<Observation>) {
        let Some((_, connection)) = self.connections.make_room(socket, self.config.max_connections) else { return };
        if connection.ending.is_some() {
            self.finish(connection, out);
        } else {
            self.stats.evicted_connections += 1;
        }
    }

    /// A connection's age for eviction: ended ones rank older than any that still lives.
    fn eviction_age(connection: &Connection) -> u64 {
        let alive = if connection.ending.is_none() { 1 << 63 } else { 0 };
        alive | connection.state_since_ns
    }

    /// Classifies the connections that ended at least [`SETTLE_NS`] before `now_ns`
    /// (all of them with `now_ns = u64::MAX`, at exit).
    pub fn settle(&mut self, now_ns: u64, out: &mut Vec<Observation>) {
        self.release_held_drops(now_ns, out);
        self.settle_gone(now_ns, out);
        self.settle_vanished(now_ns, out);
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
        Tracker::reset_from_error(&mut connection);
        self.take_icmp(&mut connection);
        self.last_reset_refused(&mut connection, ending.at_ns, out);
        let mut verdict = self.classify(&connection, ending);
        if verdict.keepalive && connection.idle_before_ns.is_none() {
            // Nothing in flight went unanswered before: the first keepalive probe did.
            connection.idle_before_ns = connection.keepalive_idle_ns;
        }
        mtu::judge(&connection, &mut verdict);
        if connection.owner_exited {
            let owner = connection.process.map(|p| format!("pid {} ({})", p.tgid, p.comm)).unwrap_or_else(|| "its process".into());
            verdict.detail =
                format!("{} — {owner} exited without closing it (killed, or it ended): the kernel closed its socket", verdict.detail)
                    .into();
        }
        self.blame_drops(&mut connection, &mut verdict);
        out.push(Observation::Ended(Ended {
            connection,
            class: verdict.class,
            detail: verdict.detail,
            time_wait: verdict.time_wait,
            fin_wait2_expired: verdict.fin_wait2_expired,
            keepalive: verdict.keepalive,
            rst_from: verdict.rst_from,
            dropped_in: verdict.dropped_in,
        }));
    }
}

#[cfg(test)]
mod classify_tests;
#[cfg(test)]
mod tests;
