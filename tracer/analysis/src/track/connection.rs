//! What the tracker knows of one socket, and what it tells the findings layer: the model shared
//! by the state machine, the verdicts and every output.
use std::{borrow::Cow, net::SocketAddr};

use serde::Serialize;

use crate::decode::{Event, IcmpError, Process, Segment, SocketId, SocketTotals, TcpState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// We called connect().
    Client,
    /// Accepted from one of our listeners.
    Server,
    Listener,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseClass {
    Graceful,
    /// The peer reset it: the RST's TTL matches the peer's own packets.
    ResetByPeer,
    /// A device on the path reset it in the peer's name (the RST's TTL says so).
    ResetByPath,
    /// A RST in the peer's name reset it, whose sender could not be checked (its packet unseen,
    /// or no steady packet of the peer to compare its TTL with): the peer or the path.
    ResetUnverified,
    ResetByUs,
    PeerSilent,
    Refused,
    ConnectTimeout,
    Aborted,
    /// It died silent while this host dropped the peer's packets: this host's doing.
    DroppedHere,
    /// Our packets were answered with an ICMP unreachable error (the socket's error says which)
    /// instead of the peer's: a router on the path, or the peer's host, would not deliver them.
    Unreachable,
    /// connect() found no local port free for its destination (the ephemeral range is
    /// exhausted, `EADDRNOTAVAIL`): no SYN was ever sent.
    NoLocalPort,
    /// It timed out retransmitting only full-size segments while the peer acknowledged smaller
    /// ones (SACK), with no ICMP error: a router on the path drops large packets silently.
    MtuBlackHole,
    /// The tracer could not see how it ended (a timewait socket it could not follow); the
    /// detail says what it last saw. Never a guess.
    Unresolved,
}

impl CloseClass {
    pub const ALL: [CloseClass; 14] = [
        CloseClass::Graceful,
        CloseClass::ResetByPeer,
        CloseClass::ResetByPath,
        CloseClass::ResetUnverified,
        CloseClass::ResetByUs,
        CloseClass::PeerSilent,
        CloseClass::Refused,
        CloseClass::ConnectTimeout,
        CloseClass::Aborted,
        CloseClass::DroppedHere,
        CloseClass::Unreachable,
        CloseClass::NoLocalPort,
        CloseClass::MtuBlackHole,
        CloseClass::Unresolved,
    ];

    /// A RST in the peer's name ended it, whoever sent it.
    pub fn reset_received(self) -> bool {
        matches!(self, CloseClass::ResetByPeer | CloseClass::ResetByPath | CloseClass::ResetUnverified)
    }

    /// It died of a silence or a reset from the other end: an idle gap before it is the death's.
    pub fn died(self) -> bool {
        self.reset_received() || matches!(self, CloseClass::PeerSilent | CloseClass::DroppedHere | CloseClass::MtuBlackHole)
    }

    pub fn name(self) -> &'static str {
        match self {
            CloseClass::Graceful => "graceful",
            CloseClass::ResetByPeer => "reset_by_peer",
            CloseClass::ResetByPath => "reset_by_path",
            CloseClass::ResetUnverified => "reset_unverified",
            CloseClass::ResetByUs => "reset_by_us",
            CloseClass::PeerSilent => "peer_silent",
            CloseClass::Refused => "refused",
            CloseClass::ConnectTimeout => "connect_timeout",
            CloseClass::Aborted => "aborted",
            CloseClass::DroppedHere => "dropped_here",
            CloseClass::Unreachable => "unreachable",
            CloseClass::NoLocalPort => "no_local_port",
            CloseClass::MtuBlackHole => "mtu_black_hole",
            CloseClass::Unresolved => "unresolved",
        }
    }
}

/// Which side sent the first FIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstFin {
    Us,
    Peer,
    Both,
}

/// A RST we sent on this socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetSent {
    pub reason: Option<u32>,
    /// Sent from a system call (close/shutdown/disconnect) rather than by the stack on its own.
    pub by_application: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub at_ns: u64,
    pub from: TcpState,
    pub by_application: bool,
    /// For FIN_WAIT2 → CLOSE, what became of the timewait socket that took over...
    pub lingered: Option<Lingered>,
    /// ... and when that was known to have happened: the connection's real end...
    pub resolved_ns: Option<u64>,
    /// ... or, where a lookup found it rather than an event, only a bound: the end lies at or
    /// before `resolved_ns`, after the socket was last seen lingering.
    pub resolved_by_lookup: bool,
    /// Its CLOSE event never came (lost or skipped), and a lookup found instead what this says;
    /// `at_ns` is then that lookup. `None`: the CLOSE event came.
    pub close_lost: Option<CloseLost>,
}

/// What a lookup found of a connection whose CLOSE event never came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseLost {
    /// No socket on its 4-tuple (or only the listener a lookup falls back to).
    Gone,
    /// A TIME_WAIT socket on its 4-tuple: both FINs were exchanged, ours first or both at once.
    InTimeWait,
}

/// What became of a timewait socket left in the FIN_WAIT2 substate (our FIN acknowledged, the
/// full socket handed over to the kernel's timewait handling, which no tracepoint follows).
/// Each outcome rests on evidence that does not depend on when summaries run: an event, or the
/// socket looked up at a fixed cadence ([`super::LINGER_PROBE_NS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lingered {
    /// The peer's FIN arrived: a TIME_WAIT socket.
    PeerFin,
    /// Still in FIN_WAIT2 until its `tcp_fin_timeout` ran out: the peer never sent its FIN.
    Expired,
    /// Gone before `tcp_fin_timeout` without becoming TIME_WAIT and without a reset of ours (which
    /// this kernel would have shown): the peer's RST killed it, after `last_ns` (when a lookup
    /// last found it) and by `gone_ns`.
    PeerReset { last_ns: Option<u64>, gone_ns: u64 },
    /// We answered the peer's late data or SYN with a RST (the kernel's reason, when it gives one).
    OurReset { reason: Option<u32> },
    /// The tracer could not tell; the detail says what it last saw.
    Unresolved(Unresolved),
}

/// Why a lingering timewait socket's end is not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// Gone before `tcp_fin_timeout` without becoming TIME_WAIT: a RST ended it, but this kernel
    /// does not report resets sent from timewait sockets, so it may have been ours.
    ResetEitherWay { last_ns: Option<u64>, gone_ns: u64 },
    /// Last seen in FIN_WAIT2 at `last_ns`, gone by `gone_ns`: its `tcp_fin_timeout` falls between,
    /// so expiry and a reset cannot be told apart.
    ExpiryOrReset { last_ns: Option<u64>, gone_ns: u64 },
    /// Still in FIN_WAIT2 (last seen so at `last_ns`) when the tracer stopped at `stopped_ns`: the
    /// peer's FIN had not come, and nothing says whether it would have.
    StillInFinWait2 { last_ns: Option<u64>, stopped_ns: u64 },
    /// Nothing could follow it: no socket lookups (`--no-snapshot`) and no fentry hooks, or its
    /// namespace could not be reached.
    NotFollowed,
}

/// A connection whose full socket is gone but whose timewait socket may still be in FIN_WAIT2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lingering {
    pub connection: Box<Connection>,
    /// When a lookup last found it in FIN_WAIT2 (or fentry saw it handed over in FIN_WAIT2).
    pub last_in_fin_wait2_ns: Option<u64>,
    /// When a lookup first found it gone (decided once every event before then has arrived).
    pub gone_ns: Option<u64>,
    /// When it was last looked up, to spread lookups fairly.
    pub probed_ns: u64,
}

impl Lingering {
    pub fn seen_in_fin_wait2(&self) -> bool {
        self.last_in_fin_wait2_ns.is_some()
    }
}

/// One socket's life so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub socket: SocketId,
    pub role: Role,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    pub state_since_ns: u64,
    /// When the state before this one began (how long FIN_WAIT2 lasted before CLOSE).
    pub previous_state_since_ns: u64,
    /// `None` when the socket predates the tracer.
    pub opened_ns: Option<u64>,
    pub established_ns: Option<u64>,
    pub first_fin: Option<FirstFin>,
    pub first_fin_ns: Option<u64>,
    pub reset_sent: Option<ResetSent>,
    pub reset_received: bool,
    /// The RST was known only from the socket's error at its end: its `tcp_receive_reset`
    /// event was lost (the summaries count it).
    pub reset_event_lost: bool,
    pub retransmits: u32,
    pub syn_retransmits: u32,
    pub retransmits_in_state: u32,
    /// The first retransmission of data (not of a SYN): when a silent peer's silence showed.
    pub first_retransmit_ns: Option<u64>,
    pub process: Option<Process>,
    pub ending: Option<Ending>,
    /// The timewait socket's substate, when the fentry hook on `tcp_time_wait` told us.
    pub timewait_substate: Option<TcpState>,
    /// The socket's counters at its end, where the kernel program could read them.
    pub totals: Option<SocketTotals>,
    /// The peer's first segment on the established socket (`tcp_probe`): what its own packets carry.
    pub peer_reference: Option<Segment>,
    /// The last RST segment that reached the socket, and whether the kernel took it (a
    /// `tcp_receive_reset` followed) rather than refusing it (out of window, or answered with a
    /// challenge ACK, RFC 5961).
    pub reset_segment: Option<Segment>,
    pub reset_taken: bool,
    /// RSTs the kernel refused.
    pub refused_resets: u32,
    /// This host's drops of the connection's packets.
    pub drops: super::Drops,
    /// How long it had been idle before the transmission that went unanswered (its first
    /// retransmission, or for a keepalive death its first probe), or before the RST that ended
    /// it; where the socket's clocks were read.
    pub idle_before_ns: Option<u64>,
    /// Its keepalive time (`TCP_KEEPIDLE`, or the namespace's default), read with a RST we sent:
    /// if the keepalive timer sent it, the idle time before the first unanswered probe.
    pub keepalive_idle_ns: Option<u64>,
    /// When a lookup last found its socket still there (0: never looked up).
    pub checked_ns: u64,
    /// The ICMP unreachable error that arrived for it, handed over at its end.
    pub icmp: Option<IcmpError>,
    /// The namespace of this host whose firewall dropped our SYN as a RST came back for it (a
    /// reject rule refused the connect in the peer's name).
    pub refused_in: Option<u32>,
    /// Our SYNs this host dropped elsewhere (kept only for a connect that retransmitted one).
    pub syns_dropped: Option<Box<super::SynsDropped>>,
    /// Its owner was exiting when the socket was closed: the kernel closed it for the process
    /// (killed, or it exited without closing), not the application's choice.
    pub owner_exited: bool,
    /// The sizes of its retransmitted data segments: a path MTU black hole's evidence.
    pub mtu: super::mtu::MtuEvidence,
}

impl Connection {
    /// Its namespace and addresses: what a lookup, a timewait socket or a packet names it by.
    pub fn tuple(&self) -> Tuple {
        Tuple { netns: self.socket.netns, local: self.local, remote: self.remote }
    }

    /// What is known of a socket at its first event: its birth (`opened_ns`), or mid-life.
    pub(super) fn new(event: &Event, role: Role, opened_ns: Option<u64>) -> Connection {
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
            reset_event_lost: false,
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
            drops: super::Drops::default(),
            idle_before_ns: None,
            keepalive_idle_ns: None,
            refused_in: None,
            syns_dropped: None,
            owner_exited: false,
            mtu: super::mtu::MtuEvidence::default(),
            checked_ns: 0,
            icmp: None,
        }
    }

    /// Its retransmissions began before our FIN: the peer stopped acknowledging our data, not
    /// just our FIN.
    pub fn data_unanswered_before_fin(&self) -> bool {
        self.first_retransmit_ns.zip(self.first_fin_ns).is_some_and(|(retransmit, fin)| retransmit < fin)
    }

    /// When it ended: where a timewait socket it lingered in was followed, that socket's end;
    /// else its CLOSE (its last state change while it has not ended).
    pub fn end_ns(&self) -> u64 {
        self.ending.map_or(self.state_since_ns, |ending| ending.resolved_ns.unwrap_or(ending.at_ns))
    }

    pub(super) fn first_fin(&mut self, side: FirstFin, at_ns: u64) {
        self.first_fin.get_or_insert(side);
        self.first_fin_ns.get_or_insert(at_ns);
    }
}

/// A connection that ended, with the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub connection: Box<Connection>,
    pub class: CloseClass,
    /// Fixed text for the common verdicts (no allocation per connection), formatted for the rest.
    pub detail: Cow<'static, str>,
    /// The connection left a TIME_WAIT socket behind (we closed first, graceful).
    pub time_wait: bool,
    /// It ended because our FIN_WAIT2 expired: our FIN was acknowledged, theirs never came.
    pub fin_wait2_expired: bool,
    /// The keepalive timer ended it: the peer (or, where this host's drops explain it, this
    /// host) stopped answering its probes.
    pub keepalive: bool,
    /// For a RST received: who sent it, by the hops its TTL implies.
    pub rst_from: Option<RstFrom>,
    /// Where on this host its packets were dropped, for people ("namespace NAME (netns N)"):
    /// the firewall that refused it, or the drops that starved it.
    pub dropped_in: Option<String>,
}

/// Who sent the RST that ended a connection, judged by the routers it crossed (its TTL) against
/// those the peer's own packets crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RstFrom {
    /// As many hops as the peer's packets: the peer (or a device that copies its TTL).
    Peer { hops: u8 },
    /// A different number of hops, or a different initial TTL (another network stack): a device
    /// on the path sent it in the peer's name. The TTLs as they arrived.
    Path { hops: u8, peer_hops: u8, ttl: u8, peer_ttl: u8 },
    /// No packet of the peer to compare with (on this connection or its address's recent ones).
    NoReference { hops: u8 },
}

/// A 4-tuple within a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Everything the findings layer needs to know, in event order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    Ended(Ended),
    /// We retransmitted a SYN: the server has not answered.
    SynRetransmit {
        tuple: Tuple,
        process: Option<Process>,
        /// Where on this host our SYNs were dropped since the connect began, for people: then
        /// the peer never saw them.
        dropped_in: Option<String>,
        at_ns: u64,
    },
    /// A listener retransmitted its SYN-ACK: the client's final ACK did not arrive.
    SynAckRetransmit {
        tuple: Tuple,
        at_ns: u64,
    },
    /// `role` is the socket's, or for a reset without one, [`Tracker::socketless_role`]'s.
    ResetSent {
        tuple: Tuple,
        role: Role,
        process: Option<Process>,
        reason: Option<u32>,
        at_ns: u64,
    },
    ResetReceived {
        tuple: Tuple,
        role: Role,
        process: Option<Process>,
        at_ns: u64,
    },
    /// A segment from the peer arrived after an idle gap (a second or more without one): the
    /// connection lived through it.
    IdleSurvived {
        tuple: Tuple,
        role: Role,
        gap_ns: u64,
        at_ns: u64,
    },
    /// This host's kernel dropped a TCP packet of this tuple, with its reason's name: one of the
    /// socket's, either way, or (`socketless`) one no socket held where it was dropped (a
    /// namespace forwarding it; a firewall before the socket lookup), sent to `tuple.local`.
    Dropped {
        tuple: Tuple,
        role: Role,
        reason: String,
        incoming: bool,
        socketless: bool,
        at_ns: u64,
    },
    /// A RST reached one of our sockets and the kernel refused it (out of window, or in window
    /// but not exact: a challenge ACK). What a blind injector or a confused middlebox leaves.
    ResetRefused {
        tuple: Tuple,
        role: Role,
        at_ns: u64,
    },
    /// A new connection on a 4-tuple the other end still held. Server side: a SYN accepted on a
    /// tuple still in our TIME_WAIT (`time_wait_age_ns` known). Client side: our SYN was
    /// answered with a bare ACK (we reset it and retransmit the SYN): `accepted` is false.
    PortReuse {
        tuple: Tuple,
        role: Role,
        time_wait_age_ns: Option<u64>,
        accepted: bool,
        at_ns: u64,
    },
}

impl Observation {
    /// When the trouble it reports began: the event's time; for an ended connection, its first
    /// retransmission of data when it had one (a peer gone silent), else its end.
    pub fn started_ns(&self) -> u64 {
        match self {
            Observation::Ended(ended) => ended
                .connection
                .first_retransmit_ns
                .or(ended.connection.ending.map(|ending| ending.at_ns))
                .unwrap_or(ended.connection.state_since_ns),
            Observation::SynRetransmit { at_ns, .. }
            | Observation::SynAckRetransmit { at_ns, .. }
            | Observation::ResetSent { at_ns, .. }
            | Observation::ResetReceived { at_ns, .. }
            | Observation::ResetRefused { at_ns, .. }
            | Observation::Dropped { at_ns, .. }
            | Observation::IdleSurvived { at_ns, .. }
            | Observation::PortReuse { at_ns, .. } => *at_ns,
        }
    }
}

impl Tuple {
    pub fn of(event: &Event) -> Tuple {
        Tuple { netns: event.socket.netns, local: event.local, remote: event.remote }
    }
}
