//! A path MTU black hole: a router on the path drops packets too large for its next link and
//! its ICMP "fragmentation needed" (ICMPv6 "packet too big") never reaches us, so our MSS never
//! shrinks. Full-size segments are retransmitted until the connection times out, while smaller
//! ones get through: the peer acknowledges them selectively (SACK), so it is alive. That is the
//! evidence the retransmit hook collects per connection; without the SACKs, only full-size
//! segments lost says nothing the peer's silence would not.
use super::{classify::Verdict, CloseClass, Connection};
use crate::decode::Resent;

/// What a connection's data retransmissions said of their size. (A smaller one before the
/// first full-size one is usually the tail loss probe, which resends the last, short segment:
/// it passes, and is what the peer SACKs.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MtuEvidence {
    /// Retransmitted segments as large as the MSS, and smaller ones after the first of those.
    pub full_size: u16,
    pub smaller: u16,
    /// A full-size one was retransmitted while the peer had SACKed later segments.
    pub sacked: bool,
    pub mss: u16,
}

impl MtuEvidence {
    pub(super) fn record(&mut self, resent: &Resent) {
        if resent.full_size() {
            self.full_size = self.full_size.saturating_add(1);
            self.sacked |= resent.peer_sacked;
        } else if self.full_size > 0 {
            self.smaller = self.smaller.saturating_add(1);
        }
        self.mss = resent.mss;
    }
}

/// A connection that timed out after retransmitting only full-size segments: a black hole where
/// the peer SACKed smaller segments meanwhile (no ICMP error came, or it would have shrunk the
/// MSS); else its silence, with what the sizes suggest.
pub(super) fn judge(connection: &Connection, verdict: &mut Verdict) {
    let evidence = connection.mtu;
    let timed_out = verdict.class == CloseClass::PeerSilent && !verdict.keepalive && !verdict.fin_wait2_expired;
    if !timed_out || evidence.full_size == 0 || evidence.smaller > 0 || connection.icmp.is_some() {
        return;
    }
    let (count, mss) = (evidence.full_size, evidence.mss);
    if evidence.sacked {
        verdict.class = CloseClass::MtuBlackHole;
        verdict.detail = format!(
            "path MTU black hole: {count} full-size segment(s) ({mss} bytes, the MSS) were retransmitted unanswered while the peer \
             acknowledged smaller ones sent after them (SACK), and no ICMP 'fragmentation needed' reached us: a router on the \
             path drops packets this large and its ICMP is lost ({})",
            verdict.detail
        )
        .into();
    } else {
        verdict.detail = format!(
            "{} (every retransmitted segment was full-size, {mss} bytes: if smaller packets pass, a path MTU black hole)",
            verdict.detail
        )
        .into();
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        decode::{Event, Resent, TcpState::*},
        track::{fixtures::*, CloseClass, TrackerConfig},
    };

    const S: u64 = 1_000_000_000;

    /// A server whose response's full-size segments a router drops (the tail, smaller, passes
    /// and is SACKed), timed out after `sizes` retransmitted.
    fn timed_out_after(sizes: &[(u32, bool)]) -> crate::track::Ended {
        let s = Script::new(0xe5, "10.0.0.2:80", "10.0.1.1:40000");
        let mut events = vec![s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1)];
        for (i, (length, peer_sacked)) in sizes.iter().enumerate() {
            let resent = Resent { length: *length, mss: 1448, peer_sacked: *peer_sacked };
            events.push(Event { resent: Some(resent), ..s.retransmit(Established, 2 * S + i as u64 * S) });
        }
        let mut close = s.closed(Established, false, 30 * S);
        close.totals.as_mut().unwrap().error = 110;
        events.push(close);
        let (_, out) = run(TrackerConfig::default(), &events);
        ended(&out)[0].clone()
    }

    #[test]
    fn full_size_segments_lost_while_smaller_ones_are_sacked_is_a_path_mtu_black_hole() {
        let black_hole = timed_out_after(&[(1448, true), (1448, false), (1448, false)]);
        assert_eq!(black_hole.class, CloseClass::MtuBlackHole, "{}", black_hole.detail);
        assert!(
            black_hole.detail.starts_with("path MTU black hole: 3 full-size segment(s) (1448 bytes, the MSS)"),
            "{}",
            black_hole.detail
        );
        // Without SACKs the peer may be dead: its silence, with a hint.
        let silent = timed_out_after(&[(1448, false), (1448, false)]);
        assert_eq!(silent.class, CloseClass::PeerSilent);
        assert!(
            silent
                .detail
                .ends_with("(every retransmitted segment was full-size, 1448 bytes: if smaller packets pass, a path MTU black hole)"),
            "{}",
            silent.detail
        );
        // The tail loss probe's short segment first, then the full-size head again and again.
        let probed = timed_out_after(&[(1104, false), (1448, true), (1448, true)]);
        assert_eq!(probed.class, CloseClass::MtuBlackHole, "{}", probed.detail);
        // A small segment lost after a full-size one: not the size.
        let lossy = timed_out_after(&[(1448, true), (200, true)]);
        assert_eq!(lossy.class, CloseClass::PeerSilent);
        assert!(!lossy.detail.contains("black hole"), "{}", lossy.detail);
    }
}
