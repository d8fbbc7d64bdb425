//! Where this host dropped our SYNs. A reject rule (`reject with tcp reset`) of a namespace of
//! this host drops the SYN and answers with a RST in the peer's name: the refusal is that
//! firewall's, and its drop is the refusal, not a finding of its own. A SYN dropped elsewhere
//! on this host (a namespace forwarding it, a source NAT out of ports) is lost before it left:
//! the peer never saw it. A NAT rewrites the packet before it drops it, so those drops are
//! joined to our SYNs by their destination and time: one within [`SYN_DROP_MATCH_NS`] after each
//! SYN we sent.
use std::net::SocketAddr;

use super::{Drops, Observation, Tracker, SETTLE_NS};
use crate::decode::{Event, TcpState};

/// Most drops held before they are reported (beyond, the oldest is reported at once).
pub(super) const MAX_HELD_DROPS: usize = 4_096;

/// Most destinations whose recent drops (where no socket held the packet) are remembered.
pub(super) const MAX_DROP_DESTINATIONS: usize = 4_096;

/// How soon after our SYN left its drop on this host follows (a hop through veth takes
/// microseconds).
pub(super) const SYN_DROP_MATCH_NS: u64 = 5_000_000;

/// A drop where no socket held the packet, waiting to be claimed by a refusal.
#[derive(Clone, Debug)]
pub(super) struct HeldDrop {
    reason: u32,
    observation: Observation,
}

/// The last drops of packets to one destination where no socket held them: what a SYN of ours
/// lost in a NAT (its source rewritten) is joined by.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DestinationDrops {
    netns: u32,
    /// The dropped packet's source, as rewritten where it was dropped.
    source: Option<SocketAddr>,
    reason: u32,
    /// The last few drop times, newest last.
    times: [u64; 8],
}

impl DestinationDrops {
    pub(super) fn last_ns(&self) -> u64 {
        self.times[7]
    }

    fn push(&mut self, at_ns: u64) {
        self.times.rotate_left(1);
        self.times[7] = at_ns;
    }

    /// Whether a drop came within [`SYN_DROP_MATCH_NS`] after `sent_ns`.
    fn followed(&self, sent_ns: u64) -> bool {
        self.times.iter().any(|at| *at >= sent_ns && *at - sent_ns <= SYN_DROP_MATCH_NS)
    }
}

/// What is known of a connect's SYNs lost on this host: each SYN's drop counted, where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynsDropped {
    /// When our last SYN left (its first, then each retransmission).
    pub last_sent_ns: u64,
    /// SYNs sent so far, and those this host dropped (a drop followed each).
    pub sent: u32,
    pub dropped: u32,
    /// Where the last was dropped, and the source it carried there when a NAT rewrote it.
    pub netns: u32,
    pub rewritten: Option<SocketAddr>,
    pub reason: u32,
}

impl Tracker {
    /// Holds a drop where no socket held the packet, for a refusal to claim; remembers it by its
    /// destination for the SYNs it may have been.
    pub(super) fn hold_drop(&mut self, reason: u32, observation: Observation, out: &mut Vec<Observation>) {
        if let Observation::Dropped { tuple, at_ns, incoming: true, .. } = observation {
            if self.drop_destinations.make_room(&tuple.local, MAX_DROP_DESTINATIONS).is_some() {
                self.stats.evicted_drop_destinations += 1;
            }
            let drops = self.drop_destinations.entry(tuple.local).or_default();
            (drops.netns, drops.source, drops.reason) = (tuple.netns, Some(tuple.remote), reason);
            drops.push(at_ns);
        }
        if self.held_drops.len() >= MAX_HELD_DROPS {
            out.extend(self.held_drops.pop_front().map(|held| held.observation));
        }
        self.held_drops.push_back(HeldDrop { reason, observation });
    }

    /// Reports the held drops [`SETTLE_NS`] old at `now_ns`: no refusal claimed them.
    pub(super) fn release_held_drops(&mut self, now_ns: u64, out: &mut Vec<Observation>) {
        while self.held_drops.front().is_some_and(|held| held.observation.started_ns().saturating_add(SETTLE_NS) <= now_ns) {
            out.extend(self.held_drops.pop_front().map(|held| held.observation));
        }
    }

    /// A RST reached a connect of ours in SYN_SENT: where a namespace of this host dropped our
    /// SYN for the firewall (NETFILTER_DROP) just before, that namespace's reject rule sent it.
    /// Drops held for no socket are claimed: they are this refusal, not a finding of their own.
    pub(super) fn claim_refusal_drops(&mut self, event: &Event) {
        let Some(connection) = self.connections.get(&event.socket).filter(|connection| connection.state == TcpState::SynSent) else {
            return;
        };
        let (local, remote) = (event.local, event.remote);
        let Some(firewall) = self.drop_reason_code("NETFILTER_DROP") else { return };
        let own = connection.drops.outgoing > 0 && connection.drops.reasons.iter().any(|(reason, _)| *reason == firewall);
        let mut claimed = Drops::default();
        let mut refused_in = own.then_some(event.socket.netns);
        self.held_drops.retain(|held| match held.observation {
            Observation::Dropped { tuple, at_ns, .. } if tuple.local == remote && tuple.remote == local && held.reason == firewall => {
                claimed.add(held.reason, false, at_ns);
                refused_in = Some(tuple.netns);
                false
            }
            _ => true,
        });
        if let Some(connection) = self.connections.get_mut(&event.socket) {
            connection.drops.absorb(&claimed, false);
            connection.refused_in = refused_in;
        }
    }

    /// Our connect `event` sent a SYN again (or gave up: `resent` false): was the one before
    /// dropped on this host? Where it was, for people, when every SYN so far was.
    pub(super) fn syn_resent(&mut self, event: &Event, resent: bool) -> Option<String> {
        let connection = self.connections.get(&event.socket)?;
        let mut syns = match &connection.syns_dropped {
            Some(syns) => **syns,
            None => SynsDropped { last_sent_ns: connection.opened_ns?, sent: 1, ..SynsDropped::default() },
        };
        let elsewhere = self.drop_destinations.get(&connection.remote).filter(|drops| drops.netns != event.socket.netns);
        if let Some(drops) = elsewhere.filter(|drops| drops.followed(syns.last_sent_ns)) {
            syns.dropped += 1;
            syns.netns = drops.netns;
            syns.reason = drops.reason;
            syns.rewritten = drops.source.filter(|source| *source != event.local);
        }
        if resent {
            syns.last_sent_ns = event.timestamp_ns;
            syns.sent += 1;
        }
        let every = syns.dropped > 0 && syns.dropped + u32::from(resent) == syns.sent;
        let place = every.then(|| self.netns_label(syns.netns));
        if let Some(connection) = self.connections.get_mut(&event.socket) {
            connection.syns_dropped = Some(Box::new(syns));
        }
        place
    }

    /// "this host dropped each of our 3 SYNs in namespace nat (netns N), their source rewritten
    /// to 10.0.0.1:40000 (a source NAT): NETFILTER_DROP", for a connect whose every SYN this host
    /// dropped elsewhere.
    pub(super) fn describe_syns_dropped(&self, syns: &SynsDropped) -> Option<String> {
        if syns.dropped == 0 || syns.dropped != syns.sent {
            return None;
        }
        let rewritten = syns.rewritten.map(|source| format!(", their source rewritten to {source} (a source NAT)")).unwrap_or_default();
        Some(format!(
            "this host dropped each of our {} SYN(s) in {} (a drop to the same destination within {} ms of each){rewritten}: {}",
            syns.sent,
            self.netns_label(syns.netns),
            SYN_DROP_MATCH_NS / 1_000_000,
            self.drop_reason_name(syns.reason)
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        decode::{Dropped, SocketId, TcpState::*},
        track::{fixtures::*, CloseClass, TrackerConfig},
    };

    const S: u64 = 1_000_000_000;

    fn tied(at: u64, incoming: bool) -> Event {
        let script = Script::new(0xb1, "10.0.0.2:80", "10.0.1.1:40000");
        Event { kind: tracer_common::EventKind::Drop, drop: Some(Dropped { reason: 12, incoming }), ..script.retransmit(Established, at) }
    }

    fn stray(netns: u32, at: u64, to_us: bool) -> Event {
        let s = Script::new(0xb1, "10.0.0.2:80", "10.0.1.1:40000");
        let (local, remote) = if to_us { (s.local, s.remote) } else { (s.remote, s.local) };
        Event { socket: SocketId { netns, address: 0 }, local, remote, ..tied(at, true) }
    }

    /// A reject rule in a router namespace of this host drops our SYN and sends a RST in the
    /// peer's name: the refusal claims the drop (no finding of its own) and names the namespace.
    #[test]
    fn a_refusal_while_a_namespace_of_this_host_dropped_our_syn_is_that_firewall_s() {
        let (router, client) = (NETNS + 7, Script::new(0xc5, "10.0.1.1:40000", "10.0.0.2:80"));
        let names: BTreeMap<u32, String> = [(12, "NETFILTER_DROP".to_string())].into();
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons()).with_drop_reasons(names);
        tracker.name_netns(router, "edge");
        // The SYN as the router namespace dropped it: no socket there, the packet's addresses.
        let syn_dropped =
            Event { socket: SocketId { netns: router, address: 0 }, local: client.remote, remote: client.local, ..tied(S + 10, true) };
        let mut out = Vec::new();
        for event in [client.syscall(Close, SynSent, S), syn_dropped, client.reset_received(S + 20), client.state(SynSent, Close, S + 21)] {
            tracker.observe(&event, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        assert!(!out.iter().any(|o| matches!(o, Observation::Dropped { .. })), "claimed by the refusal: {out:?}");
        let ended = ended(&out)[0].clone();
        assert_eq!(ended.class, CloseClass::Refused);
        let place = format!("namespace edge (netns {router})");
        assert!(
            ended.detail.starts_with(&format!("refused by this host's firewall in {place}: our SYN was dropped there")),
            "{}",
            ended.detail
        );
        assert_eq!((ended.dropped_in.as_deref(), ended.connection.drops.outgoing), (Some(place.as_str()), 1));
        // Unclaimed, a drop where no socket held the packet is reported once held long enough.
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let mut out = Vec::new();
        tracker.observe(&stray(router, S, false), &mut out);
        tracker.settle(S + SETTLE_NS - 1, &mut out);
        assert!(out.is_empty(), "held: {out:?}");
        tracker.settle(S + SETTLE_NS, &mut out);
        assert!(matches!(out[..], [Observation::Dropped { socketless: true, .. }]), "{out:?}");
    }

    /// Behind a source NAT of this host that has no port left, each SYN of ours is rewritten and
    /// dropped in the NAT's namespace: joined by destination and time, the connect's SYNs were
    /// this host's drops, said on each retransmit and at the end.
    #[test]
    fn syns_a_nat_of_this_host_dropped_are_joined_by_destination_and_time() {
        let (nat, client) = (NETNS + 9, Script::new(0xc6, "10.0.1.1:40000", "10.0.0.2:80"));
        let names: BTreeMap<u32, String> = [(12, "NETFILTER_DROP".to_string())].into();
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons()).with_drop_reasons(names);
        tracker.name_netns(nat, "nat");
        // The SYN as the NAT dropped it, its source rewritten.
        let dropped = |at: u64| Event {
            socket: SocketId { netns: nat, address: 0 },
            local: client.remote,
            remote: "10.9.9.9:61000".parse().unwrap(),
            ..tied(at, true)
        };
        let events = [
            client.syscall(Close, SynSent, S),
            dropped(S + 40_000),
            client.retransmit(SynSent, 2 * S),
            dropped(2 * S + 40_000),
            client.retransmit(SynSent, 4 * S),
            dropped(4 * S + 40_000),
            client.state(SynSent, Close, 8 * S),
        ];
        let mut out = Vec::new();
        for event in &events {
            tracker.observe(event, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        let places: Vec<_> = out
            .iter()
            .filter_map(|o| if let Observation::SynRetransmit { dropped_in, .. } = o { Some(dropped_in.clone()) } else { None })
            .collect();
        let place = format!("namespace nat (netns {nat})");
        assert_eq!(places, [Some(place.clone()), Some(place.clone())]);
        let ended = ended(&out)[0].clone();
        assert_eq!(ended.class, CloseClass::DroppedHere, "{}", ended.detail);
        assert!(
            ended.detail.contains(&format!("this host dropped each of our 3 SYN(s) in {place} (a drop to the same destination within 5 ms of each), their source rewritten to 10.9.9.9:61000 (a source NAT): NETFILTER_DROP")),
            "{}",
            ended.detail
        );
        // A drop to that destination long after our SYN is no drop of it.
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let mut out = Vec::new();
        for event in [client.syscall(Close, SynSent, S), dropped(S + 500_000_000), client.retransmit(SynSent, 2 * S)] {
            tracker.observe(&event, &mut out);
        }
        assert!(out.iter().any(|o| matches!(o, Observation::SynRetransmit { dropped_in: None, .. })), "{out:?}");
    }
}
