//! The pure part of summary mode, shared by the event loop and the benchmarks: decoded events →
//! timestamp order → tracker → observations → findings, and at each interval's end the snapshot's
//! corrections and the picture. No I/O, no clock: time comes from the events and the caller.
use tracer_model::sockets::Snapshot;

use crate::{
    decode::{Event, TcpState},
    filter::{Admission, Filter},
    find::{self, Context, Findings, Picture},
    track::{reorder::Reorder, Observation, Tracker, Tuple, LINGER_PROBE_NS},
};

pub struct Pipeline {
    pub filter: Filter,
    reorder: Reorder,
    /// Sockets whose ports are not known yet wait there: the filter takes connections whole.
    admission: Admission,
    pub tracker: Tracker,
    pub findings: Findings,
    observations: Vec<Observation>,
}

impl Pipeline {
    pub fn new(filter: Filter, tracker: Tracker, findings: Findings) -> Pipeline {
        Pipeline { filter, reorder: Reorder::default(), admission: Admission::default(), tracker, findings, observations: Vec::new() }
    }

    /// Events the reorder stage had no room for (it holds everything while a snapshot is taken).
    pub fn dropped_while_held(&self) -> u64 {
        self.reorder.dropped
    }

    /// Takes in one event; `false` when `--netns` leaves it out.
    pub fn push(&mut self, event: &Event) -> bool {
        if self.filter.netns.is_some_and(|netns| netns != event.socket.netns) {
            return false;
        }
        self.reorder.push(event);
        true
    }

    /// Feeds the tracker every event older than `horizon_ns` (each is shown to `released` first,
    /// with the operator's filter and the state its socket passed through unseen before the
    /// event's old state, which only some consumers need) and classifies the connections that
    /// ended long enough before it.
    pub fn advance(&mut self, horizon_ns: u64, mut released: impl FnMut(&Event, &Filter, Option<TcpState>)) {
        let (tracker, observations, filter, admission) = (&mut self.tracker, &mut self.observations, &self.filter, &mut self.admission);
        self.reorder.release(horizon_ns, |event| {
            admission.admit(filter, event, |event| {
                released(event, filter, tracker.folded_before(event));
                tracker.observe(event, observations);
            });
        });
        self.admission.expire(horizon_ns);
        self.tracker.settle(horizon_ns, &mut self.observations);
    }

    /// Hands what the tracker learnt to the findings, then each observation to `report` with
    /// whether the operator's filters let it through and the tracker (for reset reason names).
    pub fn report(&mut self, mut report: impl FnMut(Observation, bool, &Tracker)) {
        let tracker = &self.tracker;
        let reason_name = |code| tracker.reason_name(code).map(str::to_string);
        for observation in self.observations.drain(..) {
            let scoped = find::in_scope(&observation, &self.filter);
            if scoped {
                self.findings.observe(&observation, reason_name);
            }
            report(observation, scoped, tracker);
        }
    }

    /// The end of an interval, before its snapshot: TIME_WAIT sockets expire, and lingering
    /// FIN_WAIT2 ones no snapshot could resolve are given up.
    pub fn expire(&mut self, now_ns: u64) {
        self.tracker.expire(now_ns, &mut self.observations);
    }

    /// What a snapshot taken at `now_ns` corrects: namespaces released, and for each namespace
    /// dumped this round, its FIN_WAIT2 timewait sockets and its TIME_WAIT population.
    pub fn apply_snapshot(&mut self, now_ns: u64, snapshot: &Snapshot) {
        for netns in &snapshot.released {
            self.tracker.namespace_gone(*netns);
        }
        // Only a namespace dumped this round can say what ended since its last dump.
        for netns in &snapshot.fresh {
            let sockets = snapshot.sockets.get(netns).map_or(&[][..], |sockets| &sockets[..]);
            let timewait = sockets.iter().filter(|socket| matches!(socket.state, TcpState::TimeWait | TcpState::FinWait2));
            self.tracker.reconcile(
                *netns,
                now_ns,
                timewait.map(|socket| (socket.local, socket.remote, socket.state)),
                &mut self.observations,
            );
            let time_wait = sockets.iter().filter(|socket| socket.state == TcpState::TimeWait);
            self.tracker.refresh_time_wait(*netns, now_ns, time_wait.map(|socket| (socket.local, socket.remote)));
        }
    }

    /// Looks up, with `look_up` (a socket's state, `None` when gone, an error when its namespace
    /// cannot be asked), at most `limit` sockets: the lingering FIN_WAIT2 timewait sockets that
    /// are due, then with what is left the quiet connections' (whose CLOSE may have been lost).
    /// `now` reads the caller's clock around each lookup. `last`: the tracer stops, so every
    /// lingering one is due (those still waiting are then given up by
    /// [`Pipeline::stop_following`]).
    pub fn look_up_sockets(
        &mut self,
        limit: usize,
        last: bool,
        now: impl Fn() -> u64,
        mut look_up: impl FnMut(&Tuple) -> anyhow::Result<Option<TcpState>>,
    ) {
        let min_age_ns = if last { 0 } else { LINGER_PROBE_NS / 2 };
        let lingering = self.tracker.lingering_due(now(), min_age_ns, limit);
        let spare = limit - lingering.len();
        for tuple in lingering {
            let before = now();
            match look_up(&tuple) {
                // Found: it existed at the lookup's start; gone: by its end.
                Ok(Some(state)) => self.tracker.probed(&tuple, before, Some(state), &mut self.observations),
                Ok(None) => self.tracker.probed(&tuple, now(), None, &mut self.observations),
                Err(_) => self.tracker.lookup_failed(&tuple, before),
            }
        }
        if last {
            return;
        }
        for (socket, tuple) in self.tracker.quiet_due(now(), spare) {
            match look_up(&tuple) {
                // Dated to the lookup's end: whatever it found (gone, a successor), was so by then.
                Ok(found) => self.tracker.quiet_checked(&socket, now(), found),
                Err(_) => self.tracker.quiet_not_asked(&socket, now()),
            }
        }
    }

    /// The tracer stops, every event in: the lingering sockets still waiting for their peer's
    /// FIN end unresolved, so that none is left without a verdict.
    pub fn stop_following(&mut self, now_ns: u64) {
        self.tracker.stop_following(now_ns, &mut self.observations);
    }

    /// Closes the interval: everything observed must have been reported first.
    pub fn conclude(&mut self, context: &Context) -> Picture {
        debug_assert!(self.observations.is_empty(), "report() before conclude()");
        self.findings.conclude(context, &self.tracker)
    }
}

#[cfg(test)]
mod tests {
    use tracer_model::sockets::NamespaceSettings;

    use super::*;
    use crate::{
        decode::TcpState::*,
        find::{FindingsConfig, Owners},
        track::{
            fixtures::{reasons, Script},
            TrackerConfig,
        },
    };

    const S: u64 = 1_000_000_000;

    /// A server connection on port 80 reset by its client at 2 s, through the pipeline with
    /// `filter`, concluded at 5 s.
    fn picture_of_a_reset(filter: Filter) -> Picture {
        let mut pipeline =
            Pipeline::new(filter, Tracker::new(TrackerConfig::default(), reasons()), Findings::new(FindingsConfig::default()));
        let s = Script::new(1, "10.0.0.2:80", "10.0.0.1:40000");
        for event in
            [s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1), s.reset_received(2 * S), s.state(Established, Close, 2 * S)]
        {
            pipeline.push(&event);
        }
        pipeline.advance(5 * S, |_, _, _| {});
        pipeline.report(|_, _, _| {});
        let (settings, nobody) = (|_: u32| NamespaceSettings::DEFAULT, Owners::default());
        let filter = pipeline.filter.clone();
        pipeline.conclude(&Context { now_ns: 5 * S, snapshot: None, settings: &settings, filter: &filter, owners: &nobody, links: &[] })
    }

    #[test]
    fn the_operators_filters_apply_before_anything_is_counted() {
        let unfiltered = picture_of_a_reset(Filter::default());
        assert_eq!(unfiltered.closes.get("reset_unverified"), Some(&1), "the control: counted without a filter: {unfiltered:?}");
        for filter in [
            Filter { local_ports: vec![443], ..Filter::default() },
            Filter { remote_ports: vec![5432], ..Filter::default() },
            Filter { networks: vec!["192.168.0.0/16".parse().unwrap()], ..Filter::default() },
            Filter { ipv6_only: true, ..Filter::default() },
        ] {
            let picture = picture_of_a_reset(filter.clone());
            assert!(picture.findings.is_empty() && picture.closes.is_empty() && picture.peers.is_empty(), "{filter:?}: {picture:?}");
        }
    }
}
