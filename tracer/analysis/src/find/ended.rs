//! What an ended connection adds to the interval: its close counted, its handshake time, its
//! peer's row, the idle gap it died after, and the findings its verdict raises.
use super::*;
use crate::track::Ended;

impl Findings {
    pub(super) fn observe_ended(&mut self, ended: &Ended, started: u64) {
        let connection = &ended.connection;
        let netns = connection.socket.netns;
        *self.closes.entry(ended.class).or_default() += 1;
        let key = PeerKey::new(connection.role, netns, connection.local, connection.remote);
        if let (Some(opened), Some(established)) = (connection.opened_ns, connection.established_ns) {
            if self.handshakes.len() < self.config.max_peers || self.handshakes.contains_key(&key) {
                let samples = self.handshakes.entry(key).or_default();
                if samples.len() < HANDSHAKE_SAMPLES {
                    samples.push(u32::try_from(established.saturating_sub(opened) / 1000).unwrap_or(u32::MAX));
                }
            }
        }
        if let Some(row) = self.peer(key) {
            row.ended += 1;
            if matches!(ended.rst_from, Some(crate::track::RstFrom::Path { .. })) {
                row.rst_from_path += 1;
            }
            match ended.class {
                CloseClass::Graceful => row.graceful += 1,
                CloseClass::PeerSilent => row.peer_silent += 1,
                CloseClass::Refused | CloseClass::ConnectTimeout | CloseClass::NoLocalPort => row.failed_connects += 1,
                CloseClass::Unreachable if connection.established_ns.is_none() => row.failed_connects += 1,
                _ => {}
            }
        }
        // Named only where a finding takes it: most connections end in none.
        let owner = || connection.process.map(Owner::from);
        if let Some(gap) = connection.idle_before_ns.filter(|gap| *gap >= crate::track::IDLE_GAP_NS) {
            // A silence this host's drops explain is still a death after that gap.
            if ended.class.died() {
                if let Some(evidence) = self.idle_evidence(key) {
                    evidence.died(gap, ended.class.reset_received());
                }
            }
        }
        if let Some(origin @ crate::track::RstFrom::Path { .. }) = ended.rst_from {
            if let Some(tally) = self.tally(FindingKind::RstFromPath, key) {
                tally.count += 1;
                tally.began(started);
                tally.example = Some(crate::track::describe_rst_origin(origin));
                tally.owner = tally.owner.take().or_else(owner);
            }
        }
        match ended.class {
            CloseClass::PeerSilent => {
                if let Some(tally) = self.tally(FindingKind::PeerSilent, key) {
                    tally.count += 1;
                    tally.began(started);
                    *tally.labels.entry(ended.detail.to_string()).or_default() += 1;
                    tally.owner = tally.owner.take().or_else(owner);
                }
                if ended.fin_wait2_expired {
                    if let Some(tally) = self.tally(FindingKind::FinUnanswered, key) {
                        tally.expired += 1;
                    }
                }
            }
            CloseClass::NoLocalPort => {
                if let Some(tally) = self.tally(FindingKind::LocalPortsExhausted, key) {
                    tally.count += 1;
                    tally.began(started);
                    tally.owner = tally.owner.take().or_else(owner);
                }
            }
            CloseClass::Refused | CloseClass::ConnectTimeout => {
                if let Some(tally) = self.tally(FindingKind::SynRetransmit, key) {
                    tally.began(started);
                    if ended.class == CloseClass::Refused {
                        tally.refused += 1;
                    } else {
                        tally.timed_out += 1;
                    }
                    tally.owner = tally.owner.take().or_else(owner);
                }
            }
            _ => {}
        }
    }
}
