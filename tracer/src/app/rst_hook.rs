//! When the per-packet hook (`netif_receive_skb`, loaded on demand) is worth its cost: from a
//! connect of ours refused with a RST, or a connection ended by an ICMP error, whose packets no
//! other hook sees (who sent them is the question), until `--rst-hook-linger` after the last.
//! Kept apart from the hook itself so that the event loop asks one question each poll: attach,
//! detach, or leave it.
use std::time::{Duration, Instant};

use tracer_common::EventKind;

use crate::{
    decode::{Event, TcpState},
    track::left_by_icmp,
};

pub struct RstHookDemand {
    /// When a RST last refused a connect of ours, or an ICMP error last ended a connection.
    refused_at: Option<Instant>,
    linger: Duration,
}

impl RstHookDemand {
    pub fn new(linger: Duration) -> RstHookDemand {
        RstHookDemand { refused_at: None, linger }
    }

    /// Notes a refusal: a RST received in SYN_SENT (or, where the kernel's reset hook gives no
    /// state, as 5.10's classic tracepoint, any RST received); a close with the error an ICMP
    /// error leaves (where the hooks read the socket); or a connect its application closed
    /// before it completed (an ICMP error that arrived while connect() held the socket is a soft
    /// error, which the application reads and clears before closing). Known as the event
    /// arrives, before the reorder stage holds it, so the hook is attached within a poll. The
    /// clock is read only for a refusal (reading it per event was 7 % of the tracer's time).
    pub fn saw(&mut self, event: &Event, now: impl FnOnce() -> Instant) {
        let refused = event.kind == EventKind::ResetReceived && event.state.is_none_or(|state| state == TcpState::SynSent);
        let closing = event.kind == EventKind::StateChange && event.state == Some(TcpState::Close);
        let icmp = closing && event.totals.is_some_and(|totals| left_by_icmp(totals.error));
        // (Without a local port it found none free: no SYN left, so no packet can answer it.)
        let connect_abandoned = closing && event.old_state == Some(TcpState::SynSent) && event.process.is_some() && event.local.port() != 0;
        if refused || icmp || connect_abandoned {
            self.refused_at = Some(now());
        }
    }

    /// Whether a refusal wants the hook. (RSTs to closing sockets, also unseen without it, are
    /// common on a busy host and rarely the question: they do not ask for it, and are judged
    /// while it is attached.)
    pub fn wanted(&self) -> bool {
        self.refused_at.is_some()
    }

    /// Whether the last refusal is `linger` old at `now`: the hook may go (its cost is per
    /// packet), and the next refusal asks for it again.
    pub fn done(&mut self, now: Instant) -> bool {
        let done = self.refused_at.is_some_and(|at| now.saturating_duration_since(at) >= self.linger);
        if done {
            self.refused_at = None;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use tracer_analysis::track::fixtures::Script;

    use super::*;
    use crate::decode::TcpState::*;

    #[test]
    fn a_refused_connect_wants_the_hook_until_the_linger_has_passed_since_the_last_one() {
        let script = Script::new(1, "10.0.0.1:40000", "10.0.0.2:80");
        let (start, ms) = (Instant::now(), Duration::from_millis);
        let mut demand = RstHookDemand::new(ms(200));
        demand.saw(&Event { state: Some(Established), ..script.reset_received(1) }, || start);
        demand.saw(&script.state(SynSent, Established, 2), || start);
        let no_port = Script::new(2, "10.0.0.1:0", "10.0.0.2:80");
        demand.saw(&Event { process: Some(tracer_analysis::track::fixtures::process()), ..no_port.state(SynSent, Close, 2) }, || start);
        assert!(!demand.wanted(), "neither a reset on an established socket, a state change nor a connect without a port asks");
        let refused = Event { state: Some(SynSent), ..script.reset_received(3) };
        demand.saw(&refused, || start);
        assert!(demand.wanted() && !demand.done(start));
        demand.saw(&refused, || start + ms(120));
        assert!(!demand.done(start + ms(319)), "200 ms from the second refusal have not passed");
        assert!(demand.done(start + ms(320)) && !demand.wanted(), "done once, then waiting for the next refusal");
        assert!(!demand.done(start + ms(1000)));
    }

    #[test]
    fn where_the_reset_hook_gives_no_state_any_reset_received_asks() {
        let mut demand = RstHookDemand::new(Duration::from_secs(600));
        demand.saw(&Script::new(1, "10.0.0.1:40000", "10.0.0.2:80").reset_received(1), Instant::now);
        assert!(demand.wanted());
    }

    #[test]
    fn a_close_with_an_icmp_error_asks_and_one_with_another_error_does_not() {
        let script = Script::new(1, "10.0.0.1:40000", "10.0.0.2:80");
        let closed = |error| Event {
            totals: Some(crate::decode::SocketTotals { bytes_sent: 0, bytes_received: 0, retransmits: 0, error, peer_fin: false }),
            ..script.state(SynSent, Close, 1)
        };
        let mut demand = RstHookDemand::new(Duration::from_secs(600));
        demand.saw(&closed(110), Instant::now);
        assert!(!demand.wanted(), "ETIMEDOUT is no ICMP error");
        demand.saw(&closed(113), Instant::now);
        assert!(demand.wanted(), "EHOSTUNREACH");
        let mut demand = RstHookDemand::new(Duration::from_secs(600));
        demand.saw(&Event { process: Some(tracer_analysis::track::fixtures::process()), ..closed(0) }, Instant::now);
        assert!(demand.wanted(), "a connect its application closed: its ICMP error may have been read and cleared");
    }
}
