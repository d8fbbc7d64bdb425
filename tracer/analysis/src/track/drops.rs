//! What this host dropped: TCP packets its kernel freed as drops (`kfree_skb`, with the
//! kernel's reason), tied to their connection when the packet had a socket. A connection that
//! died silent while this host was dropping its peer's packets did not die of the peer's
//! silence: its verdict says so.
use std::collections::BTreeMap;

use super::{Connection, Observation, Tracker, Tuple};
use crate::decode::Event;

/// The kernel's drop reasons that mean this host lost a packet (its firewall, a full queue or
/// buffer, memory, a bad checksum, a filter): what can starve a connection. The others (a RST
/// consumed, old or out-of-window data, a segment for no socket) are TCP doing its work.
const LOSSES: &[&str] = &[
    "NETFILTER_DROP",
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

    fn add(&mut self, reason: u32, incoming: bool, at_ns: u64) {
        self.last_ns = self.last_ns.max(at_ns);
        if incoming {
            self.incoming += 1;
        } else {
            self.outgoing += 1;
        }
        let full = self.reasons.len() >= REASONS_PER_CONNECTION;
        match self.reasons.iter().position(|(known, _)| *known == reason) {
            Some(index) => self.reasons[index].1 += 1,
            None if !full => self.reasons.push((reason, 1)),
            None => {
                if let Some((_, count)) = self.reasons.last_mut() {
                    *count += 1;
                }
            }
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

    pub(super) fn dropped(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let Some(drop) = event.drop else { return };
        let owner = self.connections.get_mut(&event.socket).map(|connection| {
            connection.drops.add(drop.reason, drop.incoming, event.timestamp_ns);
            connection.role
        });
        out.push(Observation::Dropped {
            tuple: Tuple::of(event),
            role: owner.unwrap_or_else(|| self.socketless_role(event)),
            reason: self.drop_reason_name(drop.reason),
            incoming: drop.incoming,
            at_ns: event.timestamp_ns,
        });
    }

    /// "this host dropped 6 packet(s) from the peer 10.1.2.3:51000: NETFILTER_DROP ×6".
    pub(super) fn describe_drops(&self, connection: &Connection) -> String {
        let drops = &connection.drops;
        let reasons: Vec<String> =
            drops.reasons.iter().map(|(reason, count)| format!("{} ×{count}", self.drop_reason_name(*reason))).collect();
        let remote = connection.remote;
        let which = match (drops.incoming, drops.outgoing) {
            (incoming, 0) => format!("{incoming} packet(s) from the peer {remote}"),
            (0, outgoing) => format!("{outgoing} packet(s) to the peer {remote}"),
            (incoming, outgoing) => format!("{incoming} packet(s) from the peer {remote} and {outgoing} to it"),
        };
        format!("this host dropped {which}: {}", reasons.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::{Dropped, TcpState::*},
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

    /// An accepted connection that times out at 20 s; `retransmits` and `drops` (when, and
    /// whether the packet was the peer's) happen in between.
    fn timed_out(retransmits: &[u64], drops: &[(u64, bool)]) -> (usize, Ended) {
        let s = Script::new(0xb1, "10.0.0.2:80", "10.0.1.1:40000");
        let names: BTreeMap<u32, String> = [(12, "NETFILTER_DROP".to_string())].into();
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons()).with_drop_reasons(names);
        let mut events = vec![s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1)];
        events.extend(retransmits.iter().map(|at| s.retransmit(Established, *at)));
        events.extend(drops.iter().map(|(at, incoming)| Event {
            kind: tracer_common::EventKind::Drop,
            drop: Some(Dropped { reason: 12, incoming: *incoming }),
            ..s.retransmit(Established, *at)
        }));
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
        let drops: Vec<(u64, bool)> = (0..6).map(|i| (2 * S + i + 1, true)).collect();
        let (dropped, ended) = timed_out(&retransmits, &drops);
        assert_eq!((dropped, ended.class), (6, CloseClass::DroppedHere));
        assert!(ended.detail.contains("this host dropped 6 packet(s) from the peer 10.0.1.1:40000: NETFILTER_DROP ×6"), "{}", ended.detail);
        assert!(ended.detail.contains("the peer was not silent"), "{}", ended.detail);
    }

    /// This host's egress firewall drops every retransmission, so the kernel never reports one
    /// sent: the drops alone say why the peer never answered.
    #[test]
    fn a_connection_whose_own_packets_this_host_dropped_was_dropped_here() {
        let drops: Vec<(u64, bool)> = (0..5).map(|i| (2 * S + i * S, false)).collect();
        let (dropped, ended) = timed_out(&[], &drops);
        assert_eq!((dropped, ended.class), (5, CloseClass::DroppedHere));
        assert!(ended.detail.contains("this host dropped 5 packet(s) to the peer 10.0.1.1:40000: NETFILTER_DROP ×5"), "{}", ended.detail);
        assert!(ended.detail.contains("our packets never left this host"), "{}", ended.detail);
    }

    /// A drop long before the peer fell silent did not starve the connection: the verdict stays
    /// the peer's.
    #[test]
    fn drops_that_stopped_before_the_silence_do_not_take_the_blame() {
        let (dropped, ended) = timed_out(&[10 * S, 11 * S], &[(2 * S, true), (3 * S, false)]);
        assert_eq!((dropped, ended.class), (2, CloseClass::PeerSilent), "{}", ended.detail);
        let (_, ended) = timed_out(&[10 * S, 11 * S], &[(2 * S, true), (12 * S, false)]);
        assert_eq!(ended.class, CloseClass::DroppedHere, "{}", ended.detail);
        assert!(
            ended.detail.contains("this host dropped 1 packet(s) from the peer 10.0.1.1:40000 and 1 to it: NETFILTER_DROP ×2"),
            "{}",
            ended.detail
        );
    }
}
