//! When the per-packet RST hook (`netif_receive_skb`, loaded on demand) is worth its cost: from
//! a connect of ours refused with a RST, whose packet no other hook sees, until
//! `--rst-hook-linger` after the last such refusal. Kept apart from the hook itself so that the
//! event loop asks one question each poll: attach, detach, or leave it.
use std::time::{Duration, Instant};

use crate::decode::{Event, TcpState};

pub struct RstHookDemand {
    /// When a RST last refused a connect of ours.
    refused_at: Option<Instant>,
    linger: Duration,
}

impl RstHookDemand {
    pub fn new(linger: Duration) -> RstHookDemand {
        RstHookDemand { refused_at: None, linger }
    }

    /// Notes a refusal: a RST received in SYN_SENT (or, where the kernel's reset hook gives no
    /// state, as 5.10's classic tracepoint, any RST received). Known as the event arrives,
    /// before the reorder stage holds it, so the hook is attached within a poll.
    pub fn saw(&mut self, event: &Event, now: Instant) {
        if event.kind == tracer_common::EventKind::ResetReceived && event.state.is_none_or(|state| state == TcpState::SynSent) {
            self.refused_at = Some(now);
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
        demand.saw(&Event { state: Some(Established), ..script.reset_received(1) }, start);
        demand.saw(&script.state(SynSent, Established, 2), start);
        assert!(!demand.wanted(), "neither a reset on an established socket nor a state change asks");
        let refused = Event { state: Some(SynSent), ..script.reset_received(3) };
        demand.saw(&refused, start);
        assert!(demand.wanted() && !demand.done(start));
        demand.saw(&refused, start + ms(120));
        assert!(!demand.done(start + ms(319)), "200 ms from the second refusal have not passed");
        assert!(demand.done(start + ms(320)) && !demand.wanted(), "done once, then waiting for the next refusal");
        assert!(!demand.done(start + ms(1000)));
    }

    #[test]
    fn where_the_reset_hook_gives_no_state_any_reset_received_asks() {
        let mut demand = RstHookDemand::new(Duration::from_secs(600));
        demand.saw(&Script::new(1, "10.0.0.1:40000", "10.0.0.2:80").reset_received(1), Instant::now());
        assert!(demand.wanted());
    }
}
