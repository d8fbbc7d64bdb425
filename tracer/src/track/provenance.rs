//! Where a received RST came from: the peer, or a device on the path in its name.
//!
//! A packet's TTL (IPv6: hop limit) falls by one at each router, from an initial value the sender
//! chose (64, 128 or 255 in practice). The peer's own packets arrive having crossed some number
//! of routers; an RST that crossed a different number was not sent by the peer, whatever
//! addresses it carries: a firewall or balancer between us reset the connection in its name. The
//! kernel refusing an RST (out of window, or answered with a challenge ACK) is counted too: a
//! stream of refused RSTs is what a blind injector or a confused middlebox leaves.
use std::net::IpAddr;

use super::{Connection, Observation, RstFrom, Tracker, Tuple};
use crate::decode::Event;

/// Peer addresses whose hops are remembered (a reference for connections without packets yet).
const MAX_PEER_HOPS: usize = 65_536;

impl Tracker {
    /// A segment the peer sent (`tcp_probe`): its first ones are the reference; a RST waits to
    /// see whether the kernel takes it.
    pub(super) fn segment(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let Some(segment) = event.segment else { return };
        if !segment.is_reset() {
            self.remember_peer_hops(event.socket.netns, event.remote.ip(), segment.hops(), event.timestamp_ns);
        }
        let Some(connection) = self.connections.get_mut(&event.socket) else { return };
        if segment.is_reset() {
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

    /// A RST the connection saw last that the kernel never took is a refused one too.
    pub(super) fn last_reset_refused(&mut self, connection: &mut Connection, at_ns: u64, out: &mut Vec<Observation>) {
        if connection.reset_segment.is_some() && !connection.reset_taken {
            connection.reset_segment = None;
            connection.refused_resets += 1;
            let tuple = Tuple { netns: connection.socket.netns, local: connection.local, remote: connection.remote };
            out.push(Observation::ResetRefused { tuple, role: connection.role, at_ns });
        }
    }

    /// Who sent the RST the connection took: compared with the peer's own packets on this
    /// connection, else with its address's on recent ones. `None` when the RST was not seen
    /// (it reached a socket that was not established, or the hook is unavailable).
    pub(super) fn reset_origin(&self, connection: &Connection) -> Option<RstFrom> {
        let reset = connection.reset_segment.filter(|_| connection.reset_taken)?;
        let hops = reset.hops();
        let reference = connection
            .peer_reference
            .map(|segment| segment.hops())
            .or_else(|| self.peer_hops.get(&(connection.socket.netns, connection.remote.ip())).map(|(hops, _)| *hops));
        Some(match reference {
            Some(peer_hops) if peer_hops == hops => RstFrom::Peer { hops },
            Some(peer_hops) => RstFrom::Path { hops, peer_hops },
            None => RstFrom::NoReference { hops },
        })
    }

    fn remember_peer_hops(&mut self, netns: u32, peer: IpAddr, hops: u8, at_ns: u64) {
        if self.peer_hops.len() >= MAX_PEER_HOPS && !self.peer_hops.contains_key(&(netns, peer)) {
            let oldest = self.peer_hops.iter().take(64).min_by_key(|(_, (_, at))| *at).map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.peer_hops.remove(&oldest);
            }
        }
        self.peer_hops.insert((netns, peer), (hops, at_ns));
    }
}

/// The sentence for a RST's origin, to follow "reset by …".
pub fn describe(origin: RstFrom) -> String {
    match origin {
        RstFrom::Peer { hops } => format!("its TTL matches the peer's packets ({hops} hop(s))"),
        RstFrom::Path { hops, peer_hops } => {
            format!("a device {hops} hop(s) from us sent it in the peer's name; the peer's own packets come from {peer_hops} hop(s)")
        }
        RstFrom::NoReference { hops } => format!("{hops} hop(s) away; no packet of the peer to compare with"),
    }
}
