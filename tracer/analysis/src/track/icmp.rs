//! ICMP destination unreachable errors as they arrived at this host (`netif_receive_skb`), kept
//! by the tuple of the connection they answered until it ends: its `unreachable` (or ICMP
//! refused) verdict then names the router or host that sent the error, and how far away it is.
//! A connect's error ends it at once; an established connection's errors come during its
//! retransmissions, so the latest per tuple is kept until the timeout.
use super::{Connection, Tracker, Tuple};
use crate::decode::Event;

/// Tuples with an ICMP error remembered, at most; the stalest make room, counted.
pub(super) const MAX_ARRIVED_ICMP: usize = 4_096;

impl Tracker {
    pub(super) fn icmp_arrived(&mut self, event: &Event) {
        let Some(icmp) = event.icmp else { return };
        let tuple = Tuple::of(event);
        if self.arrived_icmp.make_room(&tuple, MAX_ARRIVED_ICMP).is_some() {
            self.stats.evicted_arrived_icmp += 1;
        }
        self.arrived_icmp.insert(tuple, (icmp, event.timestamp_ns));
    }

    /// Hands a connection that ends the ICMP error that arrived for it in the state it closed
    /// from, if one did (an older one, from before it recovered, says nothing of its end).
    pub(super) fn take_icmp(&mut self, connection: &mut Connection) {
        if self.arrived_icmp.is_empty() {
            return;
        }
        let last_state_ns = connection.previous_state_since_ns;
        connection.icmp = self.arrived_icmp.remove(&connection.tuple()).filter(|(_, at)| *at >= last_state_ns).map(|(icmp, _)| icmp);
    }
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures::*, *};
    use crate::{
        decode::{IcmpError, SocketTotals, TcpState::*},
        track::{CloseClass, TrackerConfig},
    };

    const S: u64 = 1_000_000_000;

    /// A connect answered by an ICMP host unreachable from `sender`, which closes it with
    /// EHOSTUNREACH: its verdict.
    fn connect_answered_by(sender: &str, ttl: u8) -> (Tracker, String, Option<IcmpError>) {
        let c = client();
        let closed = Event {
            totals: Some(SocketTotals { bytes_sent: 0, bytes_received: 0, retransmits: 0, error: 113, peer_fin: false }),
            ..c.state(SynSent, Close, 2 * S + 1)
        };
        let (tracker, out) = run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), c.icmp_arrived(sender, ttl, 2 * S), closed]);
        let verdict = ended(&out)[0];
        assert_eq!(verdict.class, CloseClass::Unreachable);
        (tracker, verdict.detail.to_string(), verdict.connection.icmp)
    }

    #[test]
    fn an_unreachable_connect_names_the_router_that_sent_the_icmp_error_and_its_distance() {
        let (tracker, detail, icmp) = connect_answered_by("10.0.0.254", 63);
        assert!(detail.contains("sent by 10.0.0.254, 1 hop(s) away: a device on the path, not the peer"), "{detail}");
        assert_eq!(icmp.map(|icmp| icmp.sender.to_string()), Some("10.0.0.254".to_string()));
        assert!(tracker.arrived_icmp.is_empty(), "taken by its connection");
    }

    #[test]
    fn an_icmp_error_from_the_peers_own_address_is_its_host() {
        let (_, detail, _) = connect_answered_by("10.0.0.2", 64);
        assert!(detail.contains("sent by the peer's host itself (10.0.0.2, 0 hop(s) away)"), "{detail}");
    }

    #[test]
    fn without_the_icmp_packet_seen_the_verdict_says_either() {
        let c = client();
        let closed = Event {
            totals: Some(SocketTotals { bytes_sent: 0, bytes_received: 0, retransmits: 0, error: 113, peer_fin: false }),
            ..c.state(SynSent, Close, 2 * S)
        };
        let (_, out) = run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), closed]);
        assert!(
            ended(&out)[0].detail.contains("by a router on the path, or the peer's host: one would not deliver it"),
            "{:?}",
            ended(&out)[0]
        );
    }

    /// A connect whose ICMP error arrived while connect() still held the socket (a router on
    /// this host, through veth): the kernel keeps it as a soft error, the application reads it
    /// (SO_ERROR clears it) and closes. Its close carries no error; the ICMP packet decides.
    #[test]
    fn an_application_closing_a_connect_after_reading_its_icmp_error_is_not_an_abandoned_connect() {
        let c = client();
        for (code, class) in [(1, CloseClass::Unreachable), (3, CloseClass::Refused)] {
            let icmp = Event {
                icmp: c.icmp_arrived("10.0.0.254", 64, 2 * S).icmp.map(|icmp| IcmpError { code, ..icmp }),
                ..c.icmp_arrived("10.0.0.254", 64, 2 * S)
            };
            let closed = Event { process: Some(process()), ..c.state(SynSent, Close, 2 * S + 1) };
            let (_, out) = run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), icmp, closed]);
            let verdict = ended(&out)[0];
            assert_eq!(verdict.class, class, "{verdict:?}");
            assert!(verdict.detail.contains("sent by 10.0.0.254, 0 hop(s) away"), "{}", verdict.detail);
        }
    }

    #[test]
    fn an_icmp_error_from_before_the_state_it_closed_from_says_nothing_of_its_end() {
        let c = client();
        let old = c.icmp_arrived("10.0.0.254", 64, S + 1);
        let events = [c.syscall(Close, SynSent, S), old, c.state(SynSent, Established, 2 * S), c.syscall(Established, FinWait1, 3 * S)];
        let (_, out) = run(TrackerConfig::default(), &[&events[..], &[c.state(FinWait1, Close, 3 * S + 1)]].concat());
        assert!(ended(&out)[0].connection.icmp.is_none(), "{:?}", ended(&out)[0]);
    }
}
