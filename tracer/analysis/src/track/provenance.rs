//! Where a received RST came from: the peer, or a device on the path in its name.
//!
//! A packet's TTL (IPv6: hop limit) falls by one at each router, from an initial value the sender
//! chose (64, 128 or 255 in practice). The peer's own packets arrive having crossed some number
//! of routers; an RST that crossed a different number was not sent by the peer, whatever
//! addresses it carries: a firewall or balancer between us reset the connection in its name. The
//! kernel refusing an RST (out of window, or answered with a challenge ACK) is counted too: a
//! stream of refused RSTs is what a blind injector or a confused middlebox leaves.
//!
//! The reference, best first: the peer's first data on this connection (`tcp_probe`); else the
//! latest packets from its address in this namespace, its handshakes (the kernel keeps the TTL
//! of every SYN and SYN-ACK and sends it inside the RST's record) or its data on other
//! connections, with their age. An address whose TTL changed lately (hosts at several distances
//! behind one NAT address, a new route) is no reference: the RST is then left unchecked.
use std::net::IpAddr;

use super::{Connection, Observation, RstFrom, Tracker, Tuple};
use crate::decode::{Event, Segment};

/// Peer addresses whose TTL is remembered (a reference for connections without packets yet).
const MAX_PEERS: usize = 65_536;

/// Arrived RSTs remembered until a socket takes one (RSTs no socket takes: to a closed port,
/// refused, forwarded through a namespace of this host).
pub(super) const MAX_ARRIVED_RESETS: usize = 4_096;

/// The errors `tcp_reset` leaves on an established or closing socket (x86-64 and arm64
/// numbers): EPIPE, ECONNRESET. (A refused connect's ECONNREFUSED is also what an ICMP port
/// unreachable leaves: not a RST's sign.)
const RESET_ERRORS: [u16; 2] = [32, 104];

/// An arrived RST older than this was taken by no socket: a socket takes its RST in the same
/// softirq, microseconds later.
const ARRIVED_RESET_TTL_NS: u64 = 1_000_000_000;

/// An address whose packets' TTL changed less than this before a RST gives no reference.
const UNSTEADY_NS: u64 = 600_000_000_000;

/// The TTL an address's packets arrived with lately, by namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AddressTtl {
    ttl: u8,
    pub(super) at_ns: u64,
    /// When it last differed from the TTL before it.
    changed_ns: Option<u64>,
    /// From a SYN or SYN-ACK (else from data on some connection).
    handshake: bool,
}

impl AddressTtl {
    /// No reference at `at_ns`: its TTL changed less than [`UNSTEADY_NS`] before.
    fn unsteady_at(&self, at_ns: u64) -> bool {
        self.changed_ns.is_some_and(|changed| at_ns.saturating_sub(changed) < UNSTEADY_NS)
    }
}

/// What a RST was compared with, for the verdict's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reference {
    ThisConnection(u8),
    Address(AddressTtl),
}

impl Tracker {
    /// A segment the peer sent (`tcp_probe`): its first ones are the reference; a RST waits to
    /// see whether the kernel takes it.
    pub(super) fn segment(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let Some(segment) = event.segment else { return };
        let idle_ns = self.config.idle_ns(event);
        if !segment.is_reset() {
            let seen = AddressTtl { ttl: segment.ttl, at_ns: event.timestamp_ns, changed_ns: None, handshake: false };
            self.remember_peer_ttl(event.socket.netns, event.remote.ip(), seen);
        }
        let Some(connection) = self.connections.get_mut(&event.socket) else { return };
        if let Some(gap_ns) = idle_ns.filter(|gap| !segment.is_reset() && *gap >= super::IDLE_GAP_NS) {
            let (tuple, role) = (Tuple::of(event), connection.role);
            out.push(Observation::IdleSurvived { tuple, role, gap_ns, at_ns: event.timestamp_ns });
        }
        if segment.is_reset() {
            connection.idle_before_ns = idle_ns;
            let refused_before = connection.reset_segment.is_some() && !connection.reset_taken;
            connection.reset_segment = Some(segment);
            connection.reset_taken = false;
            if refused_before {
                connection.refused_resets += 1;
                let (tuple, role) = (Tuple::of(event), connection.role);
                out.push(Observation::ResetRefused { tuple, role, at_ns: event.timestamp_ns });
            }
        } else {
            connection.peer_reference.get_or_insert(segment);
        }
    }

    /// A RST as it arrived at this host, kept for the socket it is for: a refused connect's, or a
    /// closing socket's, which `tcp_probe` does not see. The handshake it carries is its
    /// address's latest reference.
    pub(super) fn reset_arrived(&mut self, event: &Event) {
        let Some(segment) = event.segment else { return };
        if let Some(handshake) = event.handshake {
            let seen = AddressTtl { ttl: handshake.ttl, at_ns: handshake.seen_ns, changed_ns: handshake.changed_ns, handshake: true };
            self.remember_peer_ttl(event.socket.netns, event.remote.ip(), seen);
        }
        let (now, tuple) = (event.timestamp_ns, Tuple::of(event));
        // The oldest goes; it is counted only when it may still have been taken.
        if let Some((_, (_, at))) = self.arrived_resets.make_room(&tuple, MAX_ARRIVED_RESETS) {
            if now.saturating_sub(at) < ARRIVED_RESET_TTL_NS {
                self.stats.evicted_arrived_resets += 1;
            }
        }
        self.arrived_resets.insert(tuple, (segment, now));
    }

    /// A timewait socket gone early took a RST: the one the packet hook saw arriving for its
    /// tuple after `since_ns` (its handover), if it saw one.
    pub(super) fn take_arrived_reset(&mut self, connection: &mut Connection, since_ns: u64) {
        if let Some((segment, _)) = self.arrived_resets.remove(&connection.tuple()).filter(|(_, at)| *at >= since_ns) {
            connection.reset_segment = Some(segment);
            connection.reset_taken = true;
        }
    }

    /// The socket's error at its end says the kernel took a RST (`tcp_reset` sets ECONNRESET,
    /// EPIPE in CLOSE_WAIT; no path of ours does without a RST of our own) although no `tcp_receive_reset` event came: that event was lost. The last RST seen
    /// arriving for the socket, if any, is the one it took. (Not after our FIN: the timewait
    /// socket's end is judged by what followed it.)
    pub(super) fn reset_from_error(connection: &mut Connection) {
        let before_our_fin = connection.ending.is_some_and(|ending| ending.lingered.is_none());
        let Some(totals) = connection.totals.filter(|_| before_our_fin) else { return };
        if connection.reset_received || connection.reset_sent.is_some() || !RESET_ERRORS.contains(&totals.error) {
            return;
        }
        connection.reset_received = true;
        connection.reset_event_lost = true;
        connection.reset_taken = connection.reset_segment.is_some();
    }

    /// A RST the connection saw last that the kernel never took is a refused one too.
    pub(super) fn last_reset_refused(&mut self, connection: &mut Connection, at_ns: u64, out: &mut Vec<Observation>) {
        if connection.reset_segment.is_some() && !connection.reset_taken {
            connection.reset_segment = None;
            connection.refused_resets += 1;
            let tuple = connection.tuple();
            out.push(Observation::ResetRefused { tuple, role: connection.role, at_ns });
        }
    }

    /// Who sent the RST the connection took at `at_ns`, and what it was compared with (words
    /// for the verdict): the peer's own packets on this connection, else its address's latest.
    /// `None` when the RST was not seen (the hook that sees it is unavailable or off).
    pub(super) fn reset_origin(&self, connection: &Connection, at_ns: u64) -> Option<(RstFrom, Option<String>)> {
        let reset = connection.reset_segment.filter(|_| connection.reset_taken)?;
        let hops = reset.hops();
        let reference = match connection.peer_reference {
            Some(segment) => Some(Reference::ThisConnection(segment.ttl)),
            None => self.peer_ttls.get(&(connection.socket.netns, connection.remote.ip())).map(|known| Reference::Address(*known)),
        };
        let origin = match reference {
            Some(Reference::Address(known)) if known.unsteady_at(at_ns) => RstFrom::NoReference { hops },
            Some(Reference::ThisConnection(ttl) | Reference::Address(AddressTtl { ttl, .. })) => {
                let peer = Segment { ttl, ..reset };
                // Same distance, same starting TTL: the same sender, as far as TTLs can tell.
                if peer.ttl == reset.ttl {
                    RstFrom::Peer { hops }
                } else {
                    RstFrom::Path { hops, peer_hops: peer.hops(), ttl: reset.ttl, peer_ttl: peer.ttl }
                }
            }
            None => RstFrom::NoReference { hops },
        };
        Some((origin, reference.map(|reference| compared_with(reference, at_ns))))
    }

    /// Keeps the latest of what is known of an address (a fact older than the one held is
    /// ignored), noting when its TTL changed.
    fn remember_peer_ttl(&mut self, netns: u32, peer: IpAddr, mut seen: AddressTtl) {
        let held = self.peer_ttls.get(&(netns, peer)).copied();
        if held.is_some_and(|held| held.at_ns > seen.at_ns) {
            return;
        }
        let changed_here = held.filter(|held| held.ttl != seen.ttl).map(|_| seen.at_ns);
        seen.changed_ns = [seen.changed_ns, held.and_then(|held| held.changed_ns), changed_here].into_iter().flatten().max();
        if self.peer_ttls.make_room(&(netns, peer), MAX_PEERS).is_some() {
            self.stats.evicted_peer_ttls += 1;
        }
        self.peer_ttls.insert((netns, peer), seen);
    }
}

/// What the RST was compared with, and how old it was then.
fn compared_with(reference: Reference, at_ns: u64) -> String {
    let before = |at: u64| format!("{:.1} s before", at_ns.saturating_sub(at) as f64 / 1e9);
    match reference {
        Reference::ThisConnection(ttl) => format!("compared with the peer's data on this connection, TTL {ttl}"),
        Reference::Address(known) => {
            let what = if known.handshake { "handshake" } else { "data on another connection" };
            let latest = format!("compared with the peer's latest {what}, TTL {}, {}", known.ttl, before(known.at_ns));
            match known.changed_ns.filter(|_| known.unsteady_at(at_ns)) {
                Some(changed) => format!(
                    "{latest}; that address's TTL changed {}: hosts at several distances behind it (a NAT) or a new route, no reference",
                    before(changed)
                ),
                None => latest,
            }
        }
    }
}

/// The sentence for a RST's origin, to follow "reset by …".
pub fn describe(origin: RstFrom) -> String {
    match origin {
        RstFrom::Peer { hops } => format!("its TTL matches the peer's packets ({hops} hop(s))"),
        RstFrom::Path { hops, peer_hops, ttl, peer_ttl } if hops != peer_hops => format!(
            "a device {hops} hop(s) from us sent it in the peer's name (TTL {ttl}); the peer's own packets come from {peer_hops} hop(s) (TTL {peer_ttl})"
        ),
        RstFrom::Path { hops, ttl, peer_ttl, .. } => format!(
            "another network stack {hops} hop(s) from us sent it in the peer's name: TTL {ttl}, the peer's own packets {peer_ttl}"
        ),
        RstFrom::NoReference { hops } => format!("{hops} hop(s) away; no packet of the peer to compare with"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::TcpState::*,
        track::{fixtures::*, CloseClass, Ended, TrackerConfig},
    };

    const S: u64 = 1_000_000_000;

    fn ended(events: &[Event]) -> (Vec<Ended>, usize) {
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let mut out = Vec::new();
        for event in events {
            tracker.observe(event, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        let refused = out.iter().filter(|o| matches!(o, Observation::ResetRefused { .. })).count();
        let ended = out.into_iter().filter_map(|o| if let Observation::Ended(e) = o { Some(e) } else { None }).collect();
        (ended, refused)
    }

    /// A server connection whose client is one router away (TTL 63), reset at 3 s by a RST with `ttl`.
    fn reset_with(ttl: u8, reference: bool) -> Ended {
        let s = Script::new(0xb1, "10.0.0.2:80", "10.0.1.1:40000");
        let mut events = vec![s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1)];
        if reference {
            events.push(s.segment(63, false, 2 * S));
        }
        events.extend([s.segment(ttl, true, 3 * S), s.reset_received(3 * S + 1), s.state(Established, Close, 3 * S + 2)]);
        ended(&events).0.remove(0)
    }

    #[test]
    fn a_reset_that_crossed_fewer_routers_than_the_peers_packets_came_from_the_path() {
        let forged = reset_with(64, true);
        let path = RstFrom::Path { hops: 0, peer_hops: 1, ttl: 64, peer_ttl: 63 };
        assert_eq!((forged.class, forged.rst_from), (CloseClass::ResetByPath, Some(path)));
        assert!(forged.detail.contains("a device 0 hop(s) from us sent it in the peer's name"), "{}", forged.detail);
        let own = reset_with(63, true);
        assert_eq!((own.class, own.rst_from), (CloseClass::ResetByPeer, Some(RstFrom::Peer { hops: 1 })));
        // As far away as the peer, but from a stack that starts at 128 where the peer's starts at 64.
        let other_stack = reset_with(127, true);
        assert_eq!(other_stack.rst_from, Some(RstFrom::Path { hops: 1, peer_hops: 1, ttl: 127, peer_ttl: 63 }));
        assert!(other_stack.detail.contains("another network stack"), "{}", other_stack.detail);
    }

    #[test]
    fn without_a_packet_of_its_own_the_peer_is_judged_by_its_address_s_other_connections_or_not_at_all() {
        let unchecked = reset_with(64, false);
        assert_eq!((unchecked.class, unchecked.rst_from), (CloseClass::ResetUnverified, Some(RstFrom::NoReference { hops: 0 })));
        assert!(unchecked.detail.contains("whose sender is unchecked: 0 hop(s) away; no packet of the peer"), "{}", unchecked.detail);
        let (earlier, later) = (Script::new(0xa1, "10.0.0.2:80", "10.0.1.1:40001"), Script::new(0xa2, "10.0.0.2:80", "10.0.1.1:40002"));
        let (ended, _) = ended(&[
            earlier.state(Listen, SynRecv, S),
            earlier.state(SynRecv, Established, S + 1),
            earlier.segment(63, false, S + 2),
            later.state(Listen, SynRecv, 2 * S),
            later.state(SynRecv, Established, 2 * S + 1),
            later.segment(64, true, 3 * S),
            later.reset_received(3 * S + 1),
            later.state(Established, Close, 3 * S + 2),
        ]);
        assert_eq!(ended[0].rst_from, Some(RstFrom::Path { hops: 0, peer_hops: 1, ttl: 64, peer_ttl: 63 }));
    }

    #[test]
    fn a_reset_the_kernel_did_not_take_is_counted_refused() {
        let s = Script::new(0xb1, "10.0.0.2:80", "10.0.1.1:40000");
        let (ended, refused) = ended(&[
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 1),
            s.segment(64, true, 2 * S), // out of window: no tcp_receive_reset follows
            s.segment(64, true, 3 * S),
            s.segment(63, true, 4 * S),
            s.reset_received(4 * S + 1),
            s.state(Established, Close, 4 * S + 2),
        ]);
        assert_eq!((refused, ended[0].connection.refused_resets), (2, 2));
        assert_eq!(ended[0].rst_from, Some(RstFrom::NoReference { hops: 1 }), "the one it took");
    }

    /// A connect the server answered before (its data came with TTL 63), refused at 5 s by a RST
    /// with `ttl` that only `netif_receive_skb` saw (the socket was in SYN_SENT).
    fn refused_with(ttl: u8) -> Ended {
        let (earlier, refused) = (Script::new(0xa1, "10.0.1.1:40001", "10.0.0.2:80"), Script::new(0xa2, "10.0.1.1:40002", "10.0.0.2:80"));
        let events = [
            earlier.syscall(Close, SynSent, S),
            earlier.state(SynSent, Established, S + 1),
            earlier.segment(63, false, S + 2),
            refused.syscall(Close, SynSent, 5 * S),
            refused.reset_arrived(ttl, 5 * S + 1),
            refused.reset_received(5 * S + 2),
            refused.state(SynSent, Close, 5 * S + 3),
        ];
        ended(&events).0.into_iter().find(|ended| ended.connection.socket == refused.socket).unwrap()
    }

    #[test]
    fn a_refused_connect_is_judged_by_the_rst_as_it_arrived() {
        let by_path = refused_with(64);
        assert_eq!(
            (by_path.class, by_path.rst_from),
            (CloseClass::Refused, Some(RstFrom::Path { hops: 0, peer_hops: 1, ttl: 64, peer_ttl: 63 }))
        );
        assert!(by_path.detail.contains("by the path, not the peer: a device 0 hop(s) from us"), "{}", by_path.detail);
        let by_peer = refused_with(63);
        assert_eq!((by_peer.class, by_peer.rst_from), (CloseClass::Refused, Some(RstFrom::Peer { hops: 1 })));
        assert!(by_peer.detail.starts_with("connection refused: RST in reply to our SYN; its TTL matches"), "{}", by_peer.detail);
    }

    /// A closing socket's RST (FIN_WAIT1 here) reaches no `tcp_probe` either; one that arrived
    /// for another tuple, or that `tcp_probe` also saw, changes nothing.
    #[test]
    fn a_closing_socket_s_reset_is_judged_by_the_rst_as_it_arrived() {
        let s = Script::new(0xb1, "10.0.0.2:80", "10.0.1.1:40000");
        let other = Script::new(0xb2, "10.0.0.2:80", "10.0.1.1:40009");
        let (ended, _) = ended(&[
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 1),
            s.segment(63, false, S + 2),
            s.syscall(Established, FinWait1, 2 * S),
            other.reset_arrived(63, 3 * S),
            s.reset_arrived(64, 3 * S + 1),
            s.reset_received(3 * S + 2),
            s.state(FinWait1, Close, 3 * S + 3),
        ]);
        assert_eq!(ended[0].rst_from, Some(RstFrom::Path { hops: 0, peer_hops: 1, ttl: 64, peer_ttl: 63 }), "{}", ended[0].detail);
        let seen_twice = reset_with(64, true);
        assert_eq!(seen_twice.rst_from, Some(RstFrom::Path { hops: 0, peer_hops: 1, ttl: 64, peer_ttl: 63 }));
    }

    #[test]
    fn arrived_resets_no_socket_takes_are_bounded_and_expire_uncounted() {
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let mut out = Vec::new();
        let arrive = |port: u16, at: u64| Script::new(0, "10.0.0.2:80", &format!("10.0.1.1:{port}")).reset_arrived(64, at);
        for i in 0..MAX_ARRIVED_RESETS as u64 {
            tracker.observe(&arrive(1024 + i as u16, S + i), &mut out);
        }
        // A second later the old ones have expired: the oldest makes room, uncounted.
        tracker.observe(&arrive(60_000, 3 * S), &mut out);
        assert_eq!((tracker.arrived_resets.len(), tracker.stats.evicted_arrived_resets), (MAX_ARRIVED_RESETS, 0));
        for i in 0..=MAX_ARRIVED_RESETS as u64 {
            tracker.observe(&arrive(1024 + i as u16, 3 * S + i), &mut out);
        }
        assert_eq!((tracker.arrived_resets.len(), tracker.stats.evicted_arrived_resets), (MAX_ARRIVED_RESETS, 2));
    }

    #[test]
    fn peer_ttls_are_bounded_and_their_evictions_counted() {
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let peer = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let seen = |ttl: u8, at_ns: u64| AddressTtl { ttl, at_ns, changed_ns: None, handshake: false };
        for i in 0..MAX_PEERS as u32 {
            tracker.remember_peer_ttl(0, peer(i), seen(63, S + u64::from(i)));
        }
        // A peer already known updates in place, and notes the change; an older fact is ignored.
        tracker.remember_peer_ttl(0, peer(7), seen(62, 2 * S));
        tracker.remember_peer_ttl(0, peer(7), seen(61, S));
        assert_eq!((tracker.peer_ttls.len(), tracker.stats.evicted_peer_ttls), (MAX_PEERS, 0));
        tracker.remember_peer_ttl(0, peer(MAX_PEERS as u32), seen(63, 2 * S));
        assert_eq!((tracker.peer_ttls.len(), tracker.stats.evicted_peer_ttls), (MAX_PEERS, 1));
        let known = tracker.peer_ttls[&(0, peer(7))];
        assert_eq!((known.ttl, known.changed_ns), (62, Some(2 * S)), "the freshest survives the sample");
    }

    /// A client whose request a router one hop away resets in the server's name: no data of the
    /// server came yet, but its SYN-ACK did (the kernel's handshake table, carried in the RST's
    /// record), 1 hop away.
    #[test]
    fn the_handshake_is_every_connection_s_first_reference() {
        let s = Script::new(0xd1, "10.0.1.1:40000", "10.0.0.2:80");
        let (ended, _) = ended(&[
            s.syscall(Close, SynSent, S),
            s.state(SynSent, Established, S + 1),
            s.reset_arrived_after_handshake(64, 63, S, S + 300_000_000),
            s.reset_received(S + 300_000_001),
            s.state(Established, Close, S + 300_000_002),
        ]);
        assert_eq!(
            (ended[0].class, ended[0].rst_from),
            (CloseClass::ResetByPath, Some(RstFrom::Path { hops: 0, peer_hops: 1, ttl: 64, peer_ttl: 63 }))
        );
        assert!(ended[0].detail.contains("(compared with the peer's latest handshake, TTL 63, 0.3 s before)"), "{}", ended[0].detail);
    }

    /// A refusal on one port judged against the handshakes of the same address on another: the
    /// first refusal is judged too.
    #[test]
    fn a_refusal_is_judged_against_the_address_s_handshakes_on_other_ports() {
        let refused = Script::new(0xd2, "10.0.1.1:40001", "10.0.0.2:81");
        let events = [
            refused.syscall(Close, SynSent, 5 * S),
            refused.reset_arrived_after_handshake(64, 63, 2 * S, 5 * S + 1),
            refused.reset_received(5 * S + 2),
            refused.state(SynSent, Close, 5 * S + 3),
        ];
        let (ended, _) = ended(&events);
        assert_eq!(
            (ended[0].class, ended[0].rst_from),
            (CloseClass::Refused, Some(RstFrom::Path { hops: 0, peer_hops: 1, ttl: 64, peer_ttl: 63 }))
        );
        assert!(ended[0].detail.contains("latest handshake, TTL 63, 3.0 s before"), "{}", ended[0].detail);
    }

    /// Behind one address, hosts at two distances (a NAT): its TTL changed a moment ago, so it is
    /// no reference, and the reset names neither the peer nor the path.
    #[test]
    fn an_address_whose_ttl_changed_lately_is_no_reference() {
        let (first, second) = (Script::new(0xd3, "10.0.0.2:80", "10.0.1.1:40003"), Script::new(0xd4, "10.0.0.2:80", "10.0.1.1:40004"));
        let (ended, _) = ended(&[
            first.state(Listen, SynRecv, S),
            first.state(SynRecv, Established, S + 1),
            first.segment(63, false, S + 2),
            second.state(Listen, SynRecv, 2 * S),
            second.state(SynRecv, Established, 2 * S + 1),
            second.reset_arrived_after_handshake(64, 62, 2 * S, 3 * S),
            second.reset_received(3 * S + 1),
            second.state(Established, Close, 3 * S + 2),
        ]);
        let second = ended.iter().find(|ended| ended.connection.socket == second.socket).unwrap();
        assert_eq!((second.class, second.rst_from), (CloseClass::ResetUnverified, Some(RstFrom::NoReference { hops: 0 })));
        assert!(second.detail.contains("that address's TTL changed 1.0 s before"), "{}", second.detail);
    }

    /// Where no hook sees the RST's packet (classic tracepoints), the class names nobody.
    #[test]
    fn a_reset_whose_packet_was_not_seen_is_unverified() {
        let s = Script::new(0xd5, "10.0.1.1:40000", "10.0.0.2:80");
        let (ended, _) = ended(&[
            s.syscall(Close, SynSent, S),
            s.state(SynSent, Established, S + 1),
            s.reset_received(2 * S),
            s.state(Established, Close, 2 * S + 1),
        ]);
        assert_eq!((ended[0].class, ended[0].rst_from), (CloseClass::ResetUnverified, None));
        assert!(ended[0].detail.contains("its packet was not seen"), "{}", ended[0].detail);
    }

    /// A connection to a server one router away whose `tcp_receive_reset` event was lost, closed
    /// with `error`; `rst_ttl`: the RST `tcp_probe` saw, if it saw one.
    fn lost_reset(rst_ttl: Option<u8>, error: u16) -> (Ended, usize) {
        let s = Script::new(0xc1, "10.0.1.1:40000", "10.0.0.2:80");
        let mut events = vec![s.syscall(Close, SynSent, S), s.state(SynSent, Established, S + 1), s.segment(63, false, 2 * S)];
        events.extend(rst_ttl.map(|ttl| s.segment(ttl, true, 3 * S)));
        let mut close = s.closed(Established, false, 3 * S + 2);
        close.totals.as_mut().unwrap().error = error;
        events.push(close);
        let (mut ended, refused) = ended(&events);
        (ended.remove(0), refused)
    }

    #[test]
    fn a_reset_whose_event_was_lost_is_read_from_the_sockets_error_never_as_silence() {
        // The RST was seen and the socket's ECONNRESET says the kernel took it: judged as usual.
        let (seen, refused) = lost_reset(Some(64), 104);
        assert_eq!(
            (seen.class, seen.rst_from, refused),
            (CloseClass::ResetByPath, Some(RstFrom::Path { hops: 0, peer_hops: 1, ttl: 64, peer_ttl: 63 }), 0)
        );
        assert!(seen.detail.contains("its reset event was lost"), "{}", seen.detail);
        // Not seen either: a RST ended it, nobody can say whose.
        let (unseen, _) = lost_reset(None, 104);
        assert_eq!(unseen.class, CloseClass::Unresolved, "{}", unseen.detail);
        assert!(unseen.detail.contains("a RST ended it in ESTABLISHED"), "{}", unseen.detail);
        // Without a reset error the seen RST was refused, and the end is what it was.
        let (timed_out, refused) = lost_reset(Some(64), 110);
        assert_eq!((timed_out.class, refused), (CloseClass::PeerSilent, 1));
        // No error at all: no timeout closed it either (one leaves ETIMEDOUT), so a RST of either
        // side did, whose event was lost.
        let (no_error, _) = lost_reset(None, 0);
        assert_eq!(no_error.class, CloseClass::Unresolved, "{}", no_error.detail);
        assert!(no_error.detail.contains("no timeout error on the socket"), "{}", no_error.detail);
    }
}
