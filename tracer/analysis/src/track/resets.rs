//! The resets a socket sends and receives, as they happen: which connection, its owner, and
//! what a reset in SYN_SENT reveals (the peer still holds the 4-tuple: port reuse). Who sent a
//! received one is [`super::provenance`]'s question; a refusal that this host's firewall sent is
//! [`super::syn_drops`]'.
use super::{Observation, ResetSent, Role, Tracker, Tuple};
use crate::decode::{Event, TcpState};

impl Tracker {
    /// `tcp_send_reset`: we reset a connection (or a timewait socket did).
    pub(super) fn reset_sent(&mut self, event: &Event, out: &mut Vec<Observation>) {
        if !self.connections.contains_key(&event.socket) {
            // A timewait socket left in FIN_WAIT2 answered the peer's late data or SYN.
            self.reset_from_lingering(event, out);
        }
        let keepalive_idle_ns = self.config.keepalive_idle_ns(event);
        let owner = self.connections.get_mut(&event.socket).map(|connection| {
            connection.reset_sent = Some(ResetSent { reason: event.reset_reason, by_application: event.process.is_some() });
            connection.keepalive_idle_ns = keepalive_idle_ns;
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

    /// `tcp_receive_reset`: a RST reached one of our sockets and the kernel took it.
    pub(super) fn reset_received(&mut self, event: &Event, out: &mut Vec<Observation>) {
        // The RST as it arrived, for a socket `tcp_probe` does not see (not established).
        let arrived = self.arrived_resets.remove(&Tuple::of(event)).map(|(segment, _)| segment);
        self.claim_refusal_drops(event);
        let owner = self.connections.get_mut(&event.socket).map(|connection| {
            if connection.reset_segment.is_none() {
                connection.reset_segment = arrived;
            }
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
}
