//! What this host dropped: TCP packets its kernel freed as drops (`kfree_skb`, with the
//! kernel's reason), tied to their connection when the packet had a socket, else remembered by
//! its two endpoints (a namespace that forwards it has no socket for it). A connection that died
//! silent while this host was dropping its packets did not die of the peer's silence: its
//! verdict says so.
use std::{collections::BTreeMap, net::SocketAddr};

use super::{classify::Verdict, CloseClass, Connection, Observation, Tracker, Tuple};
use crate::decode::Event;

/// The kernel's drop reasons that mean this host lost a packet (its firewall, a full queue or
/// buffer, memory, a bad checksum, a filter): what can starve a connection. The others (a RST
/// consumed, old or out-of-window data, a segment for no socket) are TCP doing its work.
const LOSSES: &[&str] = &[
    "NETFILTER_DROP",
    "PKT_TOO_BIG",
    "SOCKET_FILTER",
    "SOCKET_RCVBUFF",
    "SOCKET_BACKLOG",
    "PROTO_MEM",
    "NOMEM",
    "PFMEMALLOC",
    "TCP_CSUM",
    "IP_CSUM",
    "SKB_CSUM",
    "IP_INHDR",
    "IP_RPFILTER",
    "TCP_ZEROWINDOW",
    "TCP_OFO_DROP",
    "TCP_LISTEN_OVERFLOW",
    "TCP_MINTTL",
    "XFRM_POLICY",
    "BPF_CGROUP_EGRESS",
    "SECURITY_HOOK",
    "CPU_BACKLOG",
    "QDISC_DROP",
    "QDISC_OVERLIMIT",
    "QDISC_CONGESTED",
    "FULL_RING",
    "XDP",
    "TC_INGRESS",
    "TC_EGRESS",
    "NEIGH_FAILED",
    "NEIGH_QUEUEFULL",
];

/// [`LOSSES`] as the kernel's bitmap of reason values (`KernelConfig::drop_reasons_wanted`).
pub fn losses(names: &BTreeMap<u32, String>) -> [u64; 4] {
    let mut bits = [0u64; 4];
    for (value, name) in names {
        if *value < 256 && LOSSES.contains(&name.as_str()) {
            bits[(*value / 64) as usize] |= 1 << (*value % 64);
        }
    }
    bits
}

/// Most distinct reasons kept per connection (the rest count under the last).
const REASONS_PER_CONNECTION: usize = 4;

/// Most endpoint pairs whose drops are remembered (≈ 130 bytes each).
pub(super) const MAX_DROP_PAIRS: usize = 16_384;

/// Most namespace names kept (beyond, a namespace is named by its inode alone).
pub(super) const MAX_NAMED_NETNS: usize = 4_096;

/// Drops of one pair of endpoints' packets, the lower endpoint first, wherever this host dropped
/// them: `drops.incoming` counts the packets sent to the lower one. A connection's other end
/// reads them here: the namespace that forwarded its packets, or the peer's own namespace on
/// this host, dropped them. `netns` is where the last was dropped, `socketless` whether a socket
/// held it there.
#[derive(Clone, Debug, Default)]
pub(super) struct PairDrops {
    pub(super) netns: u32,
    pub(super) socketless: bool,
    pub(super) drops: Drops,
}

impl PairDrops {
    /// When the pair last dropped a packet: the stalest pair makes room for a new one.
    pub(super) fn last_drop_ns(&self) -> u64 {
        self.drops.last_ns
    }
}

/// Two endpoints in order, and whether `to` is the lower: the key of [`PairDrops`].
fn pair(to: SocketAddr, from: SocketAddr) -> ((SocketAddr, SocketAddr), bool) {
    if to <= from {
        ((to, from), true)
    } else {
        ((from, to), false)
    }
}

/// Drops of one connection's packets, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Packets from the peer this host dropped, and packets to it.
    pub incoming: u32,
    pub outgoing: u32,
    /// (reason, count), the first reasons seen.
    pub reasons: Vec<(u32, u32)>,
    /// When the last one was dropped.
    pub last_ns: u64,
}

impl Drops {
    /// Whether these drops explain a connection that died silent: this host kept dropping its
    /// packets, either way, after the peer's silence showed (its first unanswered
    /// retransmission, where one was seen: a retransmission this host's egress drops is never
    /// sent, so none is seen). Drops that stopped before then did not starve it.
    pub fn explain_silence(&self, silence_showed_ns: Option<u64>) -> bool {
        self.incoming + self.outgoing > 0 && silence_showed_ns.is_none_or(|showed| self.last_ns >= showed)
    }

    pub(super) fn add(&mut self, reason: u32, incoming: bool, at_ns: u64) {
        self.last_ns = self.last_ns.max(at_ns);
        if incoming {
            self.incoming += 1;
        } else {
            self.outgoing += 1;
        }
        self.count_reason(reason, 1);
    }

    fn count_reason(&mut self, reason: u32, by: u32) {
        let full = self.reasons.len() >= REASONS_PER_CONNECTION;
        match self.reasons.iter().position(|(known, _)| *known == reason) {
            Some(index) => self.reasons[index].1 += by,
            None if !full => self.reasons.push((reason, by)),
            None => {
                if let Some((_, count)) = self.reasons.last_mut() {
                    *count += by;
                }
            }
        }
    }

    /// Adds `other`'s drops; `flipped` when its incoming ones were our outgoing ones.
    pub(super) fn absorb(&mut self, other: &Drops, flipped: bool) {
        let (incoming, outgoing) = if flipped { (other.outgoing, other.incoming) } else { (other.incoming, other.outgoing) };
        self.incoming += incoming;
        self.outgoing += outgoing;
        self.last_ns = self.last_ns.max(other.last_ns);
        for (reason, count) in &other.reasons {
            self.count_reason(*reason, *count);
        }
    }
}

impl Tracker {
    /// The names of the kernel's drop reasons, for the verdicts' sentences.
    pub fn with_drop_reasons(self, drop_reason_names: BTreeMap<u32, String>) -> Tracker {
        Tracker { drop_reason_names, ..self }
    }

    pub fn drop_reason_name(&self, reason: u32) -> String {
        crate::decode::drop_reason_name(&self.drop_reason_names, reason)
    }

    /// The value of the kernel's drop reason `name`, where this kernel has it.
    pub(super) fn drop_reason_code(&self, name: &str) -> Option<u32> {
        self.drop_reason_names.iter().find(|(_, known)| *known == name).map(|(code, _)| *code)
    }

    /// Names namespace `netns` (its /run/netns name, or a process in it) in the verdicts.
    pub fn name_netns(&mut self, netns: u32, name: &str) {
        if self.netns_names.get(&netns).is_some_and(|known| known == name) {
            return;
        }
        if self.netns_names.len() < MAX_NAMED_NETNS || self.netns_names.contains_key(&netns) {
            self.netns_names.insert(netns, name.to_string());
        }
    }

    /// "namespace NAME (netns N)", or "netns N" where no name is known.
    pub(super) fn netns_label(&self, netns: u32) -> String {
        match self.netns_names.get(&netns) {
            Some(name) => format!("namespace {name} (netns {netns})"),
            None => format!("netns {netns}"),
        }
    }

    pub(super) fn dropped(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let Some(drop) = event.drop else { return };
        let owner = self.connections.get_mut(&event.socket).map(|connection| {
            connection.drops.add(drop.reason, drop.incoming, event.timestamp_ns);
            connection.role
        });
        // A socketless drop's addresses are the packet's (`local` is where it was going, and it
        // counts as incoming); a socket's are the socket's.
        let socketless = event.socket.address == 0;
        let (to, from) = if drop.incoming { (event.local, event.remote) } else { (event.remote, event.local) };
        self.remember_pair_drop(event.socket.netns, socketless, to, from, drop.reason, event.timestamp_ns);
        let observation = Observation::Dropped {
            tuple: Tuple::of(event),
            role: owner.unwrap_or_else(|| self.socketless_role(event)),
            reason: self.drop_reason_name(drop.reason),
            incoming: drop.incoming,
            socketless,
            at_ns: event.timestamp_ns,
        };
        if socketless {
            self.hold_drop(drop.reason, observation, out);
        } else {
            out.push(observation);
        }
    }

    fn remember_pair_drop(&mut self, netns: u32, socketless: bool, to: SocketAddr, from: SocketAddr, reason: u32, at_ns: u64) {
        let (key, to_lower) = pair(to, from);
        if self.pair_drops.make_room(&key, MAX_DROP_PAIRS).is_some() {
            self.stats.evicted_drop_pairs += 1;
        }
        let pair = self.pair_drops.entry(key).or_default();
        (pair.netns, pair.socketless) = (netns, socketless);
        pair.drops.add(reason, to_lower, at_ns);
    }

    /// Silence that this host's own drops explain is not the peer's: the connection's own drops
    /// (its socket held the packets), else those of its endpoints' packets elsewhere on this
    /// host (where no socket held them: a namespace forwarding them, a firewall before the
    /// socket lookup; or at the peer's socket, in its own namespace here), within its life.
    pub(super) fn blame_drops(&self, connection: &mut Connection, verdict: &mut Verdict) {
        // (An ICMP unreachable this host sent itself, its neighbour unanswered, comes with the
        // drop of the packet it could not send: that drop decides.)
        if !matches!(
            verdict.class,
            CloseClass::PeerSilent | CloseClass::ConnectTimeout | CloseClass::Unreachable | CloseClass::MtuBlackHole
        ) {
            return;
        }
        // Every SYN of a connect dropped elsewhere on this host, a NAT's rewrite included.
        let syns = connection.syns_dropped.as_deref().filter(|_| verdict.class == CloseClass::ConnectTimeout);
        if let Some(dropped) = syns.and_then(|syns| self.describe_syns_dropped(syns)) {
            verdict.class = CloseClass::DroppedHere;
            verdict.detail = format!("{dropped}; the peer never saw them ({})", verdict.detail).into();
            verdict.dropped_in = syns.map(|syns| self.netns_label(syns.netns));
            return;
        }
        let mut place = String::new();
        if !connection.drops.explain_silence(connection.first_retransmit_ns) {
            let (key, local_is_lower) = pair(connection.local, connection.remote);
            let Some(elsewhere) = self.pair_drops.get(&key) else { return };
            let ours = elsewhere.netns == connection.socket.netns && !elsewhere.socketless;
            if ours || !elsewhere.drops.explain_silence(connection.first_retransmit_ns.or(connection.opened_ns)) {
                return;
            }
            connection.drops.absorb(&elsewhere.drops, !local_is_lower);
            let label = self.netns_label(elsewhere.netns);
            place = match (elsewhere.netns == connection.socket.netns, elsewhere.socketless) {
                (true, _) => " before they reached the socket".to_string(),
                (false, true) => format!(" in {label}, which held no socket for them"),
                (false, false) => format!(" in {label}, at the peer's socket"),
            };
            verdict.dropped_in = Some(label);
        }
        verdict.class = CloseClass::DroppedHere;
        let unheard = if connection.drops.incoming > 0 { "the peer was not silent" } else { "our packets never left this host" };
        verdict.detail = format!("{}; {unheard} ({})", self.describe_drops(connection, &place), verdict.detail).into();
    }

    /// "this host dropped 6 packet(s) from the peer 10.1.2.3:51000: NETFILTER_DROP ×6", with
    /// `place` before the reasons.
    fn describe_drops(&self, connection: &Connection, place: &str) -> String {
        let drops = &connection.drops;
        let reasons: Vec<String> =
            drops.reasons.iter().map(|(reason, count)| format!("{} ×{count}", self.drop_reason_name(*reason))).collect();
        let remote = connection.remote;
        let which = match (drops.incoming, drops.outgoing) {
            (incoming, 0) => format!("{incoming} packet(s) from the peer {remote}"),
            (0, outgoing) => format!("{outgoing} packet(s) to the peer {remote}"),
            (incoming, outgoing) => format!("{incoming} packet(s) from the peer {remote} and {outgoing} to it"),
        };
        // A forwarding namespace that cannot send a packet on (DF set, next link's MTU smaller).
        let too_big =
            self.drop_reason_code("PKT_TOO_BIG").is_some_and(|too_big| drops.reasons.iter().any(|(reason, _)| *reason == too_big));
        let black_hole = if too_big {
            " (too large for the next link's MTU: where its ICMP 'fragmentation needed' does not reach the sender, a path MTU black hole)"
        } else {
            ""
        };
        format!("this host dropped {which}{place}: {}{black_hole}", reasons.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::{Dropped, SocketId, TcpState::*},
        track::{fixtures::*, CloseClass, Ended, TrackerConfig},
    };

    const S: u64 = 1_000_000_000;

    #[test]
    fn only_reasons_that_mean_a_loss_are_asked_of_the_kernel() {
        let names: BTreeMap<u32, String> =
            [(12, "NETFILTER_DROP"), (45, "TCP_RESET"), (3, "NO_SOCKET"), (71, "CPU_BACKLOG"), (300, "NOMEM")]
                .into_iter()
                .map(|(value, name)| (value, name.to_string()))
                .collect();
        assert_eq!(losses(&names), [1 << 12, 1 << (71 - 64), 0, 0], "a value past 255 is not asked for");
    }

    fn script() -> Script {
        Script::new(0xb1, "10.0.0.2:80", "10.0.1.1:40000")
    }

    /// A drop of one of the connection's packets, tied to its socket: the peer's (`incoming`) or ours.
    fn tied(at: u64, incoming: bool) -> Event {
        Event { kind: tracer_common::EventKind::Drop, drop: Some(Dropped { reason: 12, incoming }), ..script().retransmit(Established, at) }
    }

    /// A drop of one of its packets where no socket held it, in namespace `netns`: the kernel
    /// reports the packet's destination as `local`.
    fn stray(netns: u32, at: u64, to_us: bool) -> Event {
        let s = script();
        let (local, remote) = if to_us { (s.local, s.remote) } else { (s.remote, s.local) };
        Event { socket: SocketId { netns, address: 0 }, local, remote, ..tied(at, true) }
    }

    /// An accepted connection (opened at 1 s) that times out at 20 s; `retransmits` and `drops`
    /// happen in between.
    fn timed_out(retransmits: &[u64], drops: &[Event]) -> (usize, Ended) {
        let s = script();
        let names: BTreeMap<u32, String> = [(12, "NETFILTER_DROP".to_string())].into();
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons()).with_drop_reasons(names);
        let mut events = vec![s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1)];
        events.extend(retransmits.iter().map(|at| s.retransmit(Established, *at)));
        events.extend_from_slice(drops);
        events.push(s.state(Established, Close, 20 * S));
        events.sort_by_key(|event| event.timestamp_ns);
        let mut out = Vec::new();
        for event in &events {
            tracker.observe(event, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        let dropped = out.iter().filter(|o| matches!(o, Observation::Dropped { .. })).count();
        (dropped, ended(&out)[0].clone())
    }

    #[test]
    fn a_connection_that_timed_out_while_this_host_dropped_its_peer_s_packets_was_dropped_here() {
        let retransmits: Vec<u64> = (0..6).map(|i| 2 * S + i).collect();
        let drops: Vec<Event> = (0..6).map(|i| tied(2 * S + i + 1, true)).collect();
        let (dropped, ended) = timed_out(&retransmits, &drops);
        assert_eq!((dropped, ended.class), (6, CloseClass::DroppedHere));
        assert!(ended.detail.contains("this host dropped 6 packet(s) from the peer 10.0.1.1:40000: NETFILTER_DROP ×6"), "{}", ended.detail);
        assert!(ended.detail.contains("the peer was not silent"), "{}", ended.detail);
    }

    /// This host's egress firewall drops every retransmission, so the kernel never reports one
    /// sent: the drops alone say why the peer never answered.
    #[test]
    fn a_connection_whose_own_packets_this_host_dropped_was_dropped_here() {
        let drops: Vec<Event> = (0..5).map(|i| tied(2 * S + i * S, false)).collect();
        let (dropped, ended) = timed_out(&[], &drops);
        assert_eq!((dropped, ended.class), (5, CloseClass::DroppedHere));
        assert!(ended.detail.contains("this host dropped 5 packet(s) to the peer 10.0.1.1:40000: NETFILTER_DROP ×5"), "{}", ended.detail);
        assert!(ended.detail.contains("our packets never left this host"), "{}", ended.detail);
    }

    /// A drop long before the peer fell silent did not starve the connection: the verdict stays
    /// the peer's.
    #[test]
    fn drops_that_stopped_before_the_silence_do_not_take_the_blame() {
        let (dropped, ended) = timed_out(&[10 * S, 11 * S], &[tied(2 * S, true), tied(3 * S, false)]);
        assert_eq!((dropped, ended.class), (2, CloseClass::PeerSilent), "{}", ended.detail);
        let (_, ended) = timed_out(&[10 * S, 11 * S], &[tied(2 * S, true), tied(12 * S, false)]);
        assert_eq!(ended.class, CloseClass::DroppedHere, "{}", ended.detail);
        assert!(
            ended.detail.contains("this host dropped 1 packet(s) from the peer 10.0.1.1:40000 and 1 to it: NETFILTER_DROP ×2"),
            "{}",
            ended.detail
        );
    }

    /// A namespace of this host that forwards the connection's packets (a router, a container
    /// host's bridge) dropped them where it had no socket: the connection's silence is this
    /// host's doing, and the verdict names the namespace.
    #[test]
    fn drops_in_another_namespace_that_forwards_the_connection_are_this_host_s() {
        let router = NETNS + 7;
        let drops = [stray(router, 3 * S, false), stray(router, 5 * S, false), stray(router, 6 * S, true)];
        let (dropped, ended) = timed_out(&[4 * S], &drops);
        assert_eq!((dropped, ended.class), (3, CloseClass::DroppedHere), "{}", ended.detail);
        let expected = format!("this host dropped 1 packet(s) from the peer 10.0.1.1:40000 and 2 to it in netns {router}, which held no socket for them: NETFILTER_DROP ×3");
        assert_eq!(ended.dropped_in, Some(format!("netns {router}")), "unnamed: its inode");
        assert!(ended.detail.contains(&expected), "{}", ended.detail);
        assert_eq!((ended.connection.drops.incoming, ended.connection.drops.outgoing), (1, 2), "the line's counts include them");
        // In the socket's own namespace: dropped before the socket lookup (early demux off).
        let (_, ended) = timed_out(&[4 * S], &[stray(NETNS, 5 * S, true)]);
        assert!(
            ended.detail.contains("from the peer 10.0.1.1:40000 before they reached the socket: NETFILTER_DROP ×1"),
            "{}",
            ended.detail
        );
    }

    /// Its peer's socket is on this host too, in its own namespace, and that namespace's firewall
    /// dropped what we sent it: the drop is tied to the peer's socket, and our end reads it.
    #[test]
    fn drops_at_the_peer_s_socket_in_another_namespace_of_this_host_are_this_host_s() {
        let s = script();
        let peer_netns = NETNS + 3;
        let at_peer =
            |at| Event { socket: SocketId { netns: peer_netns, address: 0xc2 }, local: s.remote, remote: s.local, ..tied(at, true) };
        let (_, ended) = timed_out(&[4 * S], &[at_peer(4 * S + 1), at_peer(6 * S)]);
        assert_eq!(ended.class, CloseClass::DroppedHere, "{}", ended.detail);
        let expected = format!(
            "this host dropped 2 packet(s) to the peer 10.0.1.1:40000 in netns {peer_netns}, at the peer's socket: NETFILTER_DROP ×2"
        );
        assert!(ended.detail.contains(&expected), "{}", ended.detail);
    }

    /// Drops of the same endpoints from before the connection opened (an earlier connection on
    /// the same 4-tuple) or that stopped before its silence showed say nothing of it.
    #[test]
    fn socketless_drops_outside_the_connection_s_silence_do_not_take_the_blame() {
        let router = NETNS + 7;
        let (_, ended) = timed_out(&[], &[stray(router, S / 2, false)]);
        assert_eq!(ended.class, CloseClass::PeerSilent, "{}", ended.detail);
        let (_, ended) = timed_out(&[10 * S], &[stray(router, 3 * S, false)]);
        assert_eq!(ended.class, CloseClass::PeerSilent, "{}", ended.detail);
        let (_, ended) = timed_out(&[], &[stray(router, 3 * S, false)]);
        assert_eq!(ended.class, CloseClass::DroppedHere, "no retransmission seen: its own were dropped ({})", ended.detail);
    }

    #[test]
    fn socketless_drop_pairs_are_bounded_and_their_evictions_counted() {
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let mut out = Vec::new();
        for i in 0..=MAX_DROP_PAIRS as u64 {
            let port = 1024 + (i % 60_000) as u16;
            let host = (i / 60_000) as u8;
            let event = Event { remote: SocketAddr::from(([10, 0, 9, host], port)), ..stray(NETNS, S + i, true) };
            tracker.observe(&event, &mut out);
        }
        assert_eq!((tracker.pair_drops.len(), tracker.stats.evicted_drop_pairs), (MAX_DROP_PAIRS, 1));
    }
}
