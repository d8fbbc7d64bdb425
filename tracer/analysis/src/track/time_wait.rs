//! TIME_WAIT and timewait sockets left in FIN_WAIT2: they outlive the socket the events were
//! about, so the tracker keeps them by 4-tuple, dates them, and lets snapshots correct them.
use std::net::SocketAddr;

use super::{Lingered, Lingering, Observation, ResetSent, Role, Tracker, Tuple, Unresolved, LINGER_PROBE_NS, SETTLE_NS, TIME_WAIT_NS};
use crate::{
    decode::{Event, TcpState},
    FastSet,
};

impl Tracker {
    /// Timewait sockets left in FIN_WAIT2, not yet resolved by a snapshot.
    pub fn lingering(&self) -> impl Iterator<Item = &Lingering> {
        self.lingering.values()
    }

    /// TIME_WAIT sockets believed to exist at `now_ns`.
    pub fn time_wait(&self, now_ns: u64) -> impl Iterator<Item = (&Tuple, u64)> {
        self.time_wait.iter().filter(move |(_, since)| now_ns.saturating_sub(**since) < TIME_WAIT_NS).map(|(tuple, since)| (tuple, *since))
    }

    /// Replaces what we believe about one namespace's TIME_WAIT sockets with a snapshot taken at
    /// `taken_ns`: sockets it lacks are gone (unless they entered TIME_WAIT after it was taken);
    /// new ones are dated to the snapshot, as sock_diag does not say when they began.
    pub fn refresh_time_wait(&mut self, netns: u32, taken_ns: u64, snapshot: impl IntoIterator<Item = (SocketAddr, SocketAddr)>) {
        let present: FastSet<Tuple> = snapshot.into_iter().map(|(local, remote)| Tuple { netns, local, remote }).collect();
        self.time_wait.retain(|tuple, since| tuple.netns != netns || present.contains(tuple) || *since >= taken_ns);
        for tuple in present {
            if !self.time_wait.contains_key(&tuple) {
                self.remember_time_wait(tuple, taken_ns);
            }
        }
    }

    /// Forgets the TIME_WAIT sockets of a namespace that is gone: the kernel purges them with
    /// the namespace, without an event.
    pub fn namespace_gone(&mut self, netns: u32) {
        self.time_wait.retain(|tuple, _| tuple.netns != netns);
    }

    pub(super) fn remember_time_wait(&mut self, tuple: Tuple, since_ns: u64) {
        if self.time_wait.make_room(&tuple, self.config.max_time_wait).is_some() {
            self.stats.evicted_time_wait += 1;
        }
        self.time_wait.insert(tuple, since_ns);
    }

    /// A SYN hit a timewait socket (exact, from fexit): accepted, or answered with a bare ACK.
    pub(super) fn syn_on_time_wait(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let (Some(status), Some(known)) = (event.tw_status, self.config.time_wait_status) else { return };
        let accepted = match status {
            status if status == known.syn => true,
            status if status == known.ack => false,
            _ => return,
        };
        let tuple = Tuple::of(event);
        let since = if accepted { self.time_wait.remove(&tuple) } else { self.time_wait.get(&tuple).copied() };
        let age = since.map(|since| event.timestamp_ns.saturating_sub(since));
        out.push(Observation::PortReuse { tuple, role: Role::Server, time_wait_age_ns: age, accepted, at_ns: event.timestamp_ns });
    }

    pub(super) fn linger(&mut self, lingering: Lingering, out: &mut Vec<Observation>) {
        let tuple = lingering.connection.tuple();
        self.verdict_pending_lingering(lingering.connection.end_ns(), tuple);
        if let Some((_, oldest)) = self.lingering.make_room(&tuple, self.config.max_time_wait) {
            self.finish(oldest.connection, out);
        }
        if let Some(replaced) = self.lingering.insert(tuple, lingering) {
            self.finish(replaced.connection, out);
        }
    }

    /// What a periodic snapshot of `netns`, taken from `taken_ns` on, shows of the lingering
    /// FIN_WAIT2 timewait sockets: given as (local, remote, state) of its TIME_WAIT and FIN_WAIT2
    /// sockets. Only what is there counts; a socket missing from a dump is left to the lookups,
    /// whose times are exact.
    pub fn reconcile(
        &mut self,
        netns: u32,
        taken_ns: u64,
        sockets: impl IntoIterator<Item = (SocketAddr, SocketAddr, TcpState)>,
        out: &mut Vec<Observation>,
    ) {
        for (local, remote, state) in sockets {
            let tuple = Tuple { netns, local, remote };
            if self.lingering.contains_key(&tuple) {
                self.probed(&tuple, taken_ns, Some(state), out);
            }
        }
    }

    /// Lingering timewait sockets due for a lookup at `now_ns` (none looked up less than
    /// `min_age_ns` before), the longest unchecked first, at most `limit`.
    pub fn lingering_due(&self, now_ns: u64, min_age_ns: u64, limit: usize) -> Vec<Tuple> {
        let mut due: Vec<(u64, Tuple)> = self
            .lingering
            .iter()
            .filter(|(_, lingering)| lingering.gone_ns.is_none() && now_ns.saturating_sub(lingering.probed_ns) >= min_age_ns)
            .map(|(tuple, lingering)| (lingering.probed_ns, *tuple))
            .collect();
        due.sort_unstable();
        due.into_iter().take(limit).map(|(_, tuple)| tuple).collect()
    }

    /// What a lookup found of a lingering socket: its state, or `None` when it was gone. A socket
    /// found is dated to the lookup's start, one gone to its end, so neither claims too much.
    pub fn probed(&mut self, tuple: &Tuple, at_ns: u64, state: Option<TcpState>, out: &mut Vec<Observation>) {
        let Some(entry) = self.lingering.get_mut(tuple) else { return };
        let Some(ending) = entry.connection.ending.filter(|ending| ending.at_ns < at_ns) else { return };
        entry.probed_ns = entry.probed_ns.max(at_ns);
        match state {
            Some(TcpState::TimeWait) => {
                let lingering = self.lingering.remove(tuple).expect("present");
                self.remember_time_wait(*tuple, ending.at_ns);
                self.resolve_bounded(lingering, Lingered::PeerFin, at_ns, out);
            }
            Some(TcpState::FinWait2) => entry.last_in_fin_wait2_ns = Some(entry.last_in_fin_wait2_ns.map_or(at_ns, |last| last.max(at_ns))),
            // Gone, or another socket holds the tuple now. Decided once every event before `at_ns`
            // is in (a reset of ours may be on its way).
            _ if entry.gone_ns.is_none() => {
                entry.gone_ns = Some(at_ns);
                self.gone.push_back((at_ns, *tuple));
            }
            _ => {}
        }
    }

    /// A lookup that could not be made (its namespace is not reachable): the socket waits its
    /// turn behind the others; [`Tracker::expire`] gives up on it in the end.
    pub fn lookup_failed(&mut self, tuple: &Tuple, at_ns: u64) {
        if let Some(entry) = self.lingering.get_mut(tuple) {
            entry.probed_ns = entry.probed_ns.max(at_ns);
        }
    }

    /// Decides the lingering sockets found gone before `horizon_ns`, now that every event
    /// before then has arrived: gone before `tcp_fin_timeout` without becoming TIME_WAIT is a
    /// RST (the peer's, where this kernel would have shown ours); gone at it, an expiry.
    pub(super) fn settle_gone(&mut self, horizon_ns: u64, out: &mut Vec<Observation>) {
        while let Some(&(gone_ns, tuple)) = self.gone.front() {
            if gone_ns.saturating_add(SETTLE_NS) > horizon_ns {
                break;
            }
            self.gone.pop_front();
            if self.lingering.get(&tuple).is_none_or(|lingering| lingering.gone_ns != Some(gone_ns)) {
                continue; // resolved meanwhile by an event
            }
            let mut lingering = self.lingering.remove(&tuple).expect("just checked");
            let handed_over_ns = lingering.connection.ending.map_or(lingering.connection.state_since_ns, |ending| ending.at_ns);
            let deadline_ns = self.config.fin_wait2_deadline_ns(handed_over_ns);
            let last_ns = lingering.last_in_fin_wait2_ns;
            let outcome = if gone_ns < deadline_ns {
                if self.config.time_wait_resets_traced {
                    self.take_arrived_reset(&mut lingering.connection, handed_over_ns);
                    Lingered::PeerReset { last_ns, gone_ns }
                } else {
                    Lingered::Unresolved(Unresolved::ResetEitherWay { last_ns, gone_ns })
                }
            } else if last_ns.is_some_and(|last| last + 2 * LINGER_PROBE_NS >= deadline_ns) {
                Lingered::Expired
            } else {
                Lingered::Unresolved(Unresolved::ExpiryOrReset { last_ns, gone_ns })
            };
            self.resolve_bounded(lingering, outcome, gone_ns, out);
        }
    }

    /// [`Tracker::resolve`] from a lookup: `at_ns` only bounds the end.
    fn resolve_bounded(&mut self, mut lingering: Lingering, outcome: Lingered, at_ns: u64, out: &mut Vec<Observation>) {
        lingering.connection.ending.iter_mut().for_each(|ending| ending.resolved_by_lookup = true);
        self.resolve(lingering, outcome, at_ns, out);
    }

    /// A reset sent without a full socket on a lingering tuple: its timewait socket answered the
    /// peer's late data or SYN, and is gone.
    pub(super) fn reset_from_lingering(&mut self, event: &Event, out: &mut Vec<Observation>) {
        if let Some(lingering) = self.lingering.remove(&Tuple::of(event)) {
            self.resolve(lingering, Lingered::OurReset { reason: event.reset_reason }, event.timestamp_ns, out);
        }
    }

    /// Ends a lingering connection with what became of its timewait socket, known at `at_ns`.
    pub(super) fn resolve(&mut self, mut lingering: Lingering, outcome: Lingered, at_ns: u64, out: &mut Vec<Observation>) {
        let connection = &mut lingering.connection;
        if let Some(ending) = &mut connection.ending {
            ending.lingered = Some(outcome);
            ending.resolved_ns = Some(at_ns.max(ending.at_ns));
        }
        match outcome {
            Lingered::OurReset { reason } => connection.reset_sent = Some(ResetSent { reason, by_application: false }),
            Lingered::PeerReset { .. } => connection.reset_received = true,
            _ => {}
        }
        self.finish(lingering.connection, out);
    }

    /// The tracer stops: the lingering sockets nothing resolved (their last lookup, or fexit,
    /// still saw them in FIN_WAIT2) end unresolved at `now_ns`, so that each gets its verdict.
    pub fn stop_following(&mut self, now_ns: u64, out: &mut Vec<Observation>) {
        for (_, lingering) in std::mem::take(&mut *self.lingering) {
            let outcome = Unresolved::StillInFinWait2 { last_ns: lingering.last_in_fin_wait2_ns, stopped_ns: now_ns };
            self.resolve(lingering, Lingered::Unresolved(outcome), now_ns, out);
        }
    }

    /// Forgets TIME_WAIT sockets that have expired, and gives up on lingering FIN_WAIT2 ones
    /// nothing resolved. Once per summary.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Observation>) {
        self.time_wait.retain(|_, since| now_ns.saturating_sub(*since) < TIME_WAIT_NS);
        let limit = self.config.fin_timeout_ns + TIME_WAIT_NS;
        let stale: Vec<Tuple> = self
            .lingering
            .iter()
            .filter(|(_, lingering)| lingering.connection.ending.is_some_and(|ending| now_ns.saturating_sub(ending.at_ns) > limit))
            .map(|(tuple, _)| *tuple)
            .collect();
        for tuple in stale {
            let lingering = self.lingering.remove(&tuple).expect("just listed");
            // Lookups would have found it gone long ago: its namespace could not be reached, or
            // nothing looks it up (fentry alone, which saw no late FIN).
            let outcome = if self.config.probes {
                Unresolved::NotFollowed
            } else {
                Unresolved::ExpiryOrReset { last_ns: lingering.last_in_fin_wait2_ns, gone_ns: now_ns }
            };
            self.resolve(lingering, Lingered::Unresolved(outcome), now_ns, out);
        }
    }
}

/// TIME_WAIT and lingering FIN_WAIT2 timewait sockets: what fentry/fexit say exactly, and what
/// lookups by 4-tuple decide, at any interval.
#[cfg(test)]
mod tests {
    use super::super::{fixtures::*, *};
    use TcpState::*;

    const S: u64 = 1_000_000_000;

    /// Our connect() and close(), and the peer's ACK of our FIN; then `rest`.
    fn our_fin_acknowledged(c: &Script, rest: impl IntoIterator<Item = Event>) -> Vec<Event> {
        let mut events = vec![
            c.syscall(Close, SynSent, S),
            c.state(SynSent, Established, S + 1),
            c.syscall(Established, FinWait1, 2 * S),
            c.state(FinWait1, FinWait2, 2 * S + 1),
        ];
        events.extend(rest);
        events
    }

    fn time_wait_event(script: &Script, kind: EventKind, state: Option<TcpState>, status: Option<u32>, at: u64) -> Event {
        Event { kind, tw_status: status, old_state: None, state, ..script.state(Close, Close, at) }
    }

    fn exact() -> TrackerConfig {
        TrackerConfig {
            probes: true,
            time_wait_status: Some(tracer_model::sockets::TimeWaitStatus { syn: 3, ack: 2 }),
            ..TrackerConfig::default()
        }
    }

    #[test]
    fn with_fentry_a_fin_wait2_close_into_time_wait_is_graceful_without_a_snapshot() {
        let c = client();
        let (tracker, out) = run(
            exact(),
            &our_fin_acknowledged(
                &c,
                [time_wait_event(&c, EventKind::TimeWaitEnter, Some(TimeWait), None, 2 * S + 2), c.state(FinWait2, Close, 2 * S + 3)],
            ),
        );
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
        assert_eq!(tracker.lingering().count(), 0);
    }

    #[test]
    fn an_orphan_whose_fin_wait2_the_kernel_folded_into_its_handover_lingers_as_if_told() {
        let c = client();
        let handover = c.state(FinWait2, Close, 2 * S + 1);
        let life = |events: Vec<Event>| {
            let mut tracker = Tracker::new(exact(), reasons());
            let (mut out, mut passed) = (Vec::new(), Vec::new());
            for event in &events {
                // What the metrics count: every change, the folded one too.
                passed.extend(tracker.folded_before(event).map(|before| (before, event.old_state.unwrap())));
                passed.extend(event.old_state.zip(event.state));
                tracker.observe(event, &mut out);
            }
            let lingering = tracker.lingering().map(|l| (l.connection.state, l.connection.state_since_ns)).collect::<Vec<_>>();
            tracker.expire(200 * S, &mut out);
            let verdict = ended(&out)[0].clone();
            (lingering, verdict.class, verdict.detail, verdict.connection.first_fin, passed)
        };
        let told = life(our_fin_acknowledged(&c, [handover]));
        // What the kernel sends when FIN_WAIT2 and the CLOSE come from one packet, at one time.
        let mut folded_events = our_fin_acknowledged(&c, [handover]);
        folded_events.retain(|event| event.state != Some(FinWait2));
        let folded = life(folded_events);
        assert_eq!(told.0, [(FinWait2, 2 * S + 1)], "the control: it waits in FIN_WAIT2 since the handover");
        assert!(told.4.contains(&(FinWait1, FinWait2)) && told.4.len() == 5, "{:?}", told.4);
        assert_eq!(folded, told);
    }

    #[test]
    fn with_fentry_alone_an_orphan_whose_peer_never_sent_its_fin_is_unresolved_between_expiry_and_reset() {
        let c = client();
        let mut tracker = Tracker::new(TrackerConfig { probes: false, ..exact() }, reasons());
        let mut out = Vec::new();
        for event in our_fin_acknowledged(
            &c,
            [time_wait_event(&c, EventKind::TimeWaitEnter, Some(FinWait2), None, 2 * S + 2), c.state(FinWait2, Close, 2 * S + 3)],
        ) {
            tracker.observe(&event, &mut out);
        }
        assert_eq!(tracker.lingering().filter(|l| l.seen_in_fin_wait2()).count(), 1);
        tracker.expire(200 * S, &mut out);
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.fin_wait2_expired), (CloseClass::Unresolved, false));
        assert!(verdict.detail.contains("tcp_fin_timeout or a RST"), "{}", verdict.detail);
    }

    #[test]
    fn a_socket_still_waiting_in_fin_wait2_when_the_tracer_stops_gets_an_unresolved_verdict() {
        let c = client();
        let mut tracker = Tracker::new(exact(), reasons());
        let mut out = Vec::new();
        for event in our_fin_acknowledged(
            &c,
            [time_wait_event(&c, EventKind::TimeWaitEnter, Some(FinWait2), None, 2 * S + 2), c.state(FinWait2, Close, 2 * S + 3)],
        ) {
            tracker.observe(&event, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        assert!(ended(&out).is_empty(), "waiting for the peer's FIN: no verdict yet");
        tracker.stop_following(4 * S, &mut out);
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Unresolved, false));
        assert!(verdict.detail.contains("the tracer stopped 2.0 s after it"), "{}", verdict.detail);
        assert_eq!(tracker.lingering().count(), 0);
    }

    #[test]
    fn with_fexit_a_late_fin_on_the_fin_wait2_timewait_socket_makes_it_graceful() {
        let c = client();
        let (tracker, out) = run(
            TrackerConfig { probes: false, ..exact() },
            &our_fin_acknowledged(
                &c,
                [
                    time_wait_event(&c, EventKind::TimeWaitEnter, Some(FinWait2), None, 2 * S + 2),
                    c.state(FinWait2, Close, 2 * S + 3),
                    // Later the peer's FIN reaches the timewait socket (another address).
                    Event {
                        socket: SocketId { netns: NETNS, address: 0xdead },
                        ..time_wait_event(&c, EventKind::TimeWaitEnter, Some(TimeWait), None, 5 * S)
                    },
                ],
            ),
        );
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
        assert_eq!(tracker.time_wait(6 * S).count(), 1);
    }

    #[test]
    fn with_fexit_a_syn_answered_by_a_timewait_ack_is_port_reuse_not_accepted() {
        let s = server();
        let (_, out) = run(
            exact(),
            &[
                time_wait_event(&s, EventKind::TimeWaitSyn, None, Some(2), S),
                time_wait_event(&s, EventKind::TimeWaitSyn, None, Some(3), 2 * S),
            ],
        );
        let verdicts: Vec<bool> = out
            .iter()
            .filter_map(|o| match o {
                Observation::PortReuse { accepted, role: Role::Server, .. } => Some(*accepted),
                _ => None,
            })
            .collect();
        assert_eq!(verdicts, [false, true]);
    }

    fn probed_config() -> TrackerConfig {
        TrackerConfig { probes: true, time_wait_resets_traced: true, ..TrackerConfig::default() }
    }

    /// Our FIN acknowledged at 2 s, the orphan handed over in FIN_WAIT2; then the tracker sees
    /// `lookups` (second, state) and, at each summary second in `dumps`, a dump showing `dumped`.
    fn after_our_fin(config: TrackerConfig, lookups: &[(u64, Option<TcpState>)], dumps: &[(u64, &[TcpState])]) -> Vec<Observation> {
        let c = client();
        let mut tracker = Tracker::new(config, reasons());
        let mut out = Vec::new();
        for event in our_fin_acknowledged(&c, [c.closed(FinWait2, false, 2 * S + 2)]) {
            tracker.observe(&event, &mut out);
        }
        let tuple = Tuple { netns: NETNS, local: c.local, remote: c.remote };
        enum Seen<'a> {
            Lookup(Option<TcpState>),
            Dump(&'a [TcpState]),
        }
        let mut moments: Vec<(u64, Seen)> = lookups.iter().map(|(at, state)| (*at, Seen::Lookup(*state))).collect();
        moments.extend(dumps.iter().map(|(at, states)| (*at, Seen::Dump(states))));
        moments.sort_by_key(|moment| moment.0);
        for (at, seen) in moments {
            match seen {
                Seen::Lookup(state) => tracker.probed(&tuple, at * S, state, &mut out),
                Seen::Dump(states) => tracker.reconcile(NETNS, at * S, states.iter().map(|state| (c.local, c.remote, *state)), &mut out),
            }
            tracker.settle(at * S, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        out
    }

    /// Lookups every second from 3 s; gone from `gone_at` on.
    fn lookups_until_gone(gone_at: u64) -> Vec<(u64, Option<TcpState>)> {
        (3..=gone_at).map(|second| (second, (second < gone_at).then_some(FinWait2))).collect()
    }

    #[test]
    fn a_peer_reset_after_our_fin_reads_the_same_whatever_the_summary_interval() {
        // The peer resets the orphan at 7.8 s. A 2 s interval's dumps saw it in FIN_WAIT2, then
        // not; a 10 s interval's first dump came after the reset. Both used to guess (expired,
        // graceful); the lookups, at a fixed cadence, decide instead.
        let lookups = lookups_until_gone(8);
        let every_2s: Vec<(u64, &[TcpState])> = vec![(4, &[FinWait2]), (6, &[FinWait2]), (8, &[]), (10, &[])];
        let every_10s: Vec<(u64, &[TcpState])> = vec![(10, &[])];
        for dumps in [every_2s, every_10s] {
            let out = after_our_fin(probed_config(), &lookups, &dumps);
            let verdict = ended(&out)[0];
            // No packet hook in this test: whose RST it was stays unchecked.
            assert_eq!(verdict.class, CloseClass::ResetUnverified, "{}", verdict.detail);
            assert!(verdict.detail.contains("between 5.0 s and 6.0 s after our FIN"), "{}", verdict.detail);
        }
    }

    #[test]
    fn where_the_kernel_hides_resets_from_timewait_sockets_an_early_end_is_unresolved() {
        let config = TrackerConfig { time_wait_resets_traced: false, ..probed_config() };
        let verdict = ended(&after_our_fin(config, &lookups_until_gone(8), &[]))[0].clone();
        assert_eq!(verdict.class, CloseClass::Unresolved);
        assert!(verdict.detail.contains("the peer's, or ours"), "{}", verdict.detail);
    }

    #[test]
    fn an_orphan_still_in_fin_wait2_at_its_tcp_fin_timeout_expired_unanswered() {
        // Handed over at 2 s; tcp_fin_timeout 60 s: seen at 62 s, gone at 63 s.
        let verdict = ended(&after_our_fin(probed_config(), &lookups_until_gone(63), &[]))[0].clone();
        assert_eq!((verdict.class, verdict.fin_wait2_expired, verdict.time_wait), (CloseClass::PeerSilent, true, false));
    }

    #[test]
    fn an_orphan_gone_across_its_deadline_with_no_lookup_near_it_is_unresolved() {
        let lookups = [(5, Some(FinWait2)), (70, None)];
        let verdict = ended(&after_our_fin(probed_config(), &lookups, &[]))[0].clone();
        assert_eq!(verdict.class, CloseClass::Unresolved);
        assert!(verdict.detail.contains("tcp_fin_timeout or a RST"), "{}", verdict.detail);
    }

    #[test]
    fn an_orphan_found_in_time_wait_got_the_peers_fin_late() {
        let out = after_our_fin(probed_config(), &[(3, Some(FinWait2)), (4, Some(TimeWait))], &[]);
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
    }

    #[test]
    fn a_reset_from_the_timewait_socket_is_ours_even_when_the_lookup_came_first() {
        // The lookup at 5 s finds it gone; our reset at 4.9 s reaches the tracker after it (the
        // reorder stage held it): the verdict waits for the events before the lookup.
        let c = client();
        let mut tracker = Tracker::new(probed_config(), reasons());
        let mut out = Vec::new();
        for event in our_fin_acknowledged(&c, [c.closed(FinWait2, false, 2 * S + 2)]) {
            tracker.observe(&event, &mut out);
        }
        tracker.probed(&Tuple { netns: NETNS, local: c.local, remote: c.remote }, 5 * S, None, &mut out);
        tracker.settle(5 * S, &mut out);
        assert!(ended(&out).is_empty(), "undecided until the events before the lookup are in");
        let socketless = Event { socket: SocketId { netns: NETNS, address: 0x7777 }, ..c.reset_sent(TimeWait, Some(16), 5 * S - 100) };
        tracker.observe(&socketless, &mut out);
        tracker.settle(u64::MAX, &mut out);
        let verdict = ended(&out)[0];
        assert_eq!(verdict.class, CloseClass::ResetByUs);
        assert!(verdict.detail.contains("TCP_TIMEWAIT_SOCKET"), "{}", verdict.detail);
    }

    #[test]
    fn without_lookups_or_fentry_an_orphan_in_fin_wait2_is_unresolved_at_once() {
        let c = client();
        let (tracker, out) = run(TrackerConfig::default(), &our_fin_acknowledged(&c, [c.closed(FinWait2, false, 2 * S + 2)]));
        assert_eq!(ended(&out)[0].class, CloseClass::Unresolved);
        assert_eq!((tracker.lingering().count(), tracker.time_wait(3 * S).count()), (0, 0));
    }
}
