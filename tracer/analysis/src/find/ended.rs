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
                CloseClass::NoLocalPort => row.failed_connects += 1,
                _ if failed_connect(ended) => row.failed_connects += 1,
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
            // Its drops are counted as they happen; what they killed is said with them.
            CloseClass::DroppedHere if connection.established_ns.is_some() => {
                if let Some(tally) = self.tally(FindingKind::DroppedHere, key) {
                    tally.began(started);
                    let cause = if ended.keepalive { "keepalive timeout" } else { "retransmission timeout" };
                    *tally.labels.entry(format!("{DEATH}{cause}")).or_default() += 1;
                    tally.owner = tally.owner.take().or_else(owner);
                }
            }
            CloseClass::NoLocalPort => {
                if let Some(tally) = self.tally(FindingKind::LocalPortsExhausted, key) {
                    tally.count += 1;
                    tally.began(started);
                    tally.owner = tally.owner.take().or_else(owner);
                }
            }
            _ if failed_connect(ended) => {
                if let Some(tally) = self.tally(FindingKind::ConnectFailed, key) {
                    tally.began(started);
                    if ended.class == CloseClass::Refused {
                        tally.refused += 1;
                    } else {
                        tally.timed_out += 1;
                    }
                    *tally.labels.entry(how_it_failed(ended)).or_default() += 1;
                    tally.owner = tally.owner.take().or_else(owner);
                }
            }
            _ => {}
        }
    }
}

/// A connect of ours that never reached ESTABLISHED: refused, unanswered, answered with an ICMP
/// error, or starved by this host's drops.
fn failed_connect(ended: &Ended) -> bool {
    let connection = &ended.connection;
    connection.role == Role::Client
        && connection.established_ns.is_none()
        && matches!(ended.class, CloseClass::Refused | CloseClass::ConnectTimeout | CloseClass::Unreachable | CloseClass::DroppedHere)
}

/// How a failed connect failed, as the finding counts it: by whom it was refused (where that
/// was checked), or where its SYNs were lost.
fn how_it_failed(ended: &Ended) -> String {
    use crate::track::RstFrom;
    let place = ended.dropped_in.as_deref();
    match (ended.class, ended.rst_from) {
        (CloseClass::Refused, _) if ended.connection.refused_in.is_some() => {
            format!("refused by this host's firewall in {}", place.unwrap_or("a namespace of this host"))
        }
        (CloseClass::Refused, Some(RstFrom::Peer { .. })) => "refused by the peer".into(),
        (CloseClass::Refused, Some(RstFrom::Path { .. })) => "refused by a device on the path".into(),
        (CloseClass::Refused, _) if !ended.connection.reset_received => "refused with ICMP".into(),
        (CloseClass::Refused, _) => "refused, by a RST whose sender is unchecked".into(),
        (CloseClass::DroppedHere, _) => {
            format!("timed out: this host dropped its SYNs{}", place.map(|place| format!(" in {place}")).unwrap_or_default())
        }
        (CloseClass::Unreachable, _) => "answered with ICMP unreachable".into(),
        _ => "timed out: no answer to its SYNs".into(),
    }
}
