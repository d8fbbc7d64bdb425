//! The findings read from socket states at an interval's end rather than from events: sockets
//! stuck in CLOSE_WAIT or FIN_WAIT2, full accept queues, TIME_WAIT buildup, and who holds them;
//! and what they explain of the interval's unanswered SYNs.
use super::*;

impl Findings {
    /// Sockets by state: those in [`WANTED_STATES`] from the snapshot when there is one
    /// (exact, and including sockets older than the tracer), the others from tracked connections.
    pub(super) fn count_states(
        &self,
        now_ns: u64,
        tracker: &Tracker,
        snapshot: Option<&Snapshot>,
        filter: &Filter,
    ) -> BTreeMap<&'static str, u64> {
        let mut states = BTreeMap::new();
        let from_snapshot = |state: &TcpState| snapshot.is_some() && WANTED_STATES.contains(state);
        if let Some(snapshot) = snapshot {
            for (netns, sockets) in &snapshot.sockets {
                for socket in sockets.iter().filter(|s| filter.matches_socket(*netns, s.local, s.remote)) {
                    *states.entry(socket.state.name()).or_default() += 1;
                }
            }
        }
        for connection in tracker.connections().filter(|connection| !from_snapshot(&connection.state)) {
            if filter.matches(connection.socket.netns, connection.local, connection.remote, connection.process.as_ref()) {
                *states.entry(connection.state.name()).or_default() += 1;
            }
        }
        if !from_snapshot(&TcpState::TimeWait) {
            let time_wait = tracker.time_wait(now_ns).filter(|(t, _)| filter.matches_socket(t.netns, t.local, t.remote)).count();
            if time_wait > 0 {
                states.insert(TcpState::TimeWait.name(), time_wait as u64);
            }
        }
        states
    }

    /// CLOSE_WAIT and FIN_WAIT2 sockets older than `--stuck-after`, tracked or only in the snapshot.
    /// A socket counts as new in `total` the first time it is found; [`Findings::reported`] holds
    /// what was found for as long as the socket exists.
    pub(super) fn find_stuck(&mut self, context: &Context, tracker: &Tracker) {
        let (now_ns, filter, stuck_after) = (context.now_ns, context.filter, self.config.stuck_after_ns);
        let mut known = FastSet::default();
        let mut found = Vec::new();
        let flow_idle = context.snapshot.map(flow_idle_by_tuple).unwrap_or_default();
        let stuck_kind = |state: TcpState| match state {
            TcpState::CloseWait => Some(FindingKind::CloseWaitStuck),
            TcpState::FinWait2 => Some(FindingKind::FinUnanswered),
            _ => None,
        };
        for connection in tracker.connections() {
            let tuple = Tuple { netns: connection.socket.netns, local: connection.local, remote: connection.remote };
            known.insert(tuple);
            let Some(kind) = stuck_kind(connection.state) else { continue };
            let age = idle_age(now_ns.saturating_sub(connection.state_since_ns), flow_idle.get(&tuple).copied());
            if age >= stuck_after && filter.matches(tuple.netns, tuple.local, tuple.remote, connection.process.as_ref()) {
                found.push((
                    kind,
                    PeerKey::new(connection.role, tuple.netns, tuple.local, tuple.remote),
                    age,
                    connection.process.map(Owner::from),
                    tuple,
                ));
            }
        }
        for lingering in tracker.lingering() {
            let connection = &lingering.connection;
            let tuple = Tuple { netns: connection.socket.netns, local: connection.local, remote: connection.remote };
            known.insert(tuple);
            let age = now_ns.saturating_sub(connection.state_since_ns);
            if lingering.seen_in_fin_wait2()
                && age >= stuck_after
                && filter.matches(tuple.netns, tuple.local, tuple.remote, connection.process.as_ref())
            {
                found.push((
                    FindingKind::FinUnanswered,
                    PeerKey::new(connection.role, tuple.netns, tuple.local, tuple.remote),
                    age,
                    connection.process.map(Owner::from),
                    tuple,
                ));
            }
        }
        if let Some(snapshot) = context.snapshot {
            let mut present = FastSet::default();
            for (netns, sockets) in &snapshot.sockets {
                for socket in sockets.iter() {
                    let Some(kind) = stuck_kind(socket.state) else { continue };
                    let tuple = Tuple { netns: *netns, local: socket.local, remote: socket.remote };
                    if known.contains(&tuple) || !filter.matches_socket(tuple.netns, tuple.local, tuple.remote) {
                        continue;
                    }
                    present.insert(tuple);
                    if self.untracked.len() >= self.config.max_peers * 4 && !self.untracked.contains_key(&tuple) {
                        self.evicted += 1;
                        continue;
                    }
                    let first_seen_ns = *self.untracked.entry(tuple).or_insert(now_ns);
                    let age = idle_age(now_ns.saturating_sub(first_seen_ns), socket.flow_idle_ns());
                    if age >= stuck_after {
                        let role = guess_role(self.config.ephemeral_ports, tuple.local, tuple.remote);
                        found.push((kind, PeerKey::new(role, tuple.netns, tuple.local, tuple.remote), age, None, tuple));
                    }
                }
            }
            self.untracked.retain(|tuple, _| present.contains(tuple));
            known.extend(present);
        }
        // A socket that is gone can be reported again only as a new one.
        self.reported.retain(|(kind, tuple)| *kind == FindingKind::AcceptQueueFull || known.contains(tuple));
        // Inodes only for the stuck sockets whose owner no event named (the snapshot may hold
        // tens of thousands of TIME_WAIT sockets; most intervals have nothing to look up).
        let unowned: FastSet<Tuple> = found.iter().filter(|f| f.3.is_none()).map(|f| f.4).collect();
        let inodes: FastMap<Tuple, u32> = match context.snapshot {
            Some(snapshot) if !unowned.is_empty() => snapshot
                .sockets
                .iter()
                .flat_map(|(netns, sockets)| {
                    sockets.iter().map(move |s| (Tuple { netns: *netns, local: s.local, remote: s.remote }, s.inode))
                })
                .filter(|(tuple, _)| unowned.contains(tuple))
                .collect(),
            _ => FastMap::default(),
        };
        for (kind, key, age, owner, tuple) in found {
            let newly = self.reported.insert((kind, tuple));
            if let Some(tally) = self.tally(kind, key) {
                tally.count += 1;
                tally.newly_flagged += u64::from(newly);
                tally.max_age_ns = tally.max_age_ns.max(age);
                tally.ages_ns.push(age);
                if tally.owner.is_none() {
                    tally.owner = owner;
                    tally.inode = inodes.get(&tuple).copied().filter(|inode| *inode != 0);
                }
            }
        }
    }

    /// Listeners whose accept queue is past its backlog in this round's snapshot (or at it while
    /// the namespace's kernel counted dropped connection attempts): the application is not
    /// calling accept() fast enough. Only namespaces dumped this round: a queue is a now-fact.
    pub(super) fn find_full_accept_queues(&mut self, context: &Context) {
        let Some(snapshot) = context.snapshot else { return };
        let mut full_now = FastSet::default();
        for netns in &snapshot.fresh {
            let dropped = snapshot.listen_overflows.get(netns).copied().unwrap_or(0);
            let Some(sockets) = snapshot.sockets.get(netns) else { continue };
            for socket in sockets.iter() {
                let Some((waiting, backlog)) = socket.accept_queue else { continue };
                let full = waiting > backlog || (dropped > 0 && waiting >= backlog && waiting > 0);
                if !full || !context.filter.matches_socket(*netns, socket.local, socket.remote) {
                    continue;
                }
                let tuple = Tuple { netns: *netns, local: socket.local, remote: socket.remote };
                full_now.insert(tuple);
                let newly = self.reported.insert((FindingKind::AcceptQueueFull, tuple));
                if let Some(tally) =
                    self.tally(FindingKind::AcceptQueueFull, PeerKey::new(Role::Listener, *netns, socket.local, socket.remote))
                {
                    tally.count += u64::from(waiting);
                    tally.newly_flagged += u64::from(newly);
                    tally.backlog = u64::from(backlog);
                    tally.dropped = dropped;
                    tally.inode = Some(socket.inode).filter(|inode| *inode != 0);
                }
            }
        }
        // A queue that drained and fills again is a new episode; carried-over namespaces keep theirs.
        self.reported.retain(|(kind, tuple)| {
            *kind != FindingKind::AcceptQueueFull || full_now.contains(tuple) || !snapshot.fresh.contains(&tuple.netns)
        });
    }

    pub(super) fn find_time_wait_buildup(
        &mut self,
        now_ns: u64,
        tracker: &Tracker,
        settings: &dyn Fn(u32) -> NamespaceSettings,
        filter: &Filter,
    ) {
        let mut per_peer: FastMap<PeerKey, u64> = FastMap::default();
        for (tuple, _) in tracker.time_wait(now_ns) {
            if !filter.matches_socket(tuple.netns, tuple.local, tuple.remote) {
                continue;
            }
            let role = guess_role(settings(tuple.netns).ephemeral_ports, tuple.local, tuple.remote);
            *per_peer.entry(PeerKey::new(role, tuple.netns, tuple.local, tuple.remote)).or_default() += 1;
        }
        // Connects that found no local port: how many ports the sockets we closed first hold on the
        // same path, in TIME_WAIT or still in FIN_WAIT2 waiting for the peer's FIN (until a lookup
        // sees them pass to TIME_WAIT, a second later, they are only lingering).
        if self.tallies.keys().any(|(kind, _)| *kind == FindingKind::LocalPortsExhausted) {
            let mut closed_first = per_peer.clone();
            for lingering in tracker.lingering() {
                let connection = &lingering.connection;
                let key = PeerKey::new(connection.role, connection.socket.netns, connection.local, connection.remote);
                *closed_first.entry(key).or_default() += 1;
            }
            for ((kind, key), tally) in self.tallies.iter_mut() {
                if *kind == FindingKind::LocalPortsExhausted {
                    tally.closed_first = closed_first.get(key).copied().unwrap_or(0);
                }
            }
        }
        for (key, count) in per_peer {
            let threshold = self.config.time_wait_threshold.unwrap_or(settings(key.netns).ephemeral_port_count() / 2);
            if count > threshold {
                if let Some(tally) = self.tally(FindingKind::TimeWaitBuildup, key) {
                    tally.count = count;
                }
            }
        }
    }

    /// Names the owners of stuck sockets whose process no event revealed (server-side sockets
    /// only ever change state in softirq until the application calls close()).
    pub(super) fn name_owners(&mut self, owners: &Owners) {
        for tally in self.tallies.values_mut().filter(|t| t.owner.is_none()) {
            if let Some((pid, comm)) = tally.inode.and_then(|inode| owners.get(&inode)) {
                tally.owner = Some(Owner { pid: *pid, comm: comm.clone() });
            }
        }
    }

    /// A SYN retransmit finding says who did not answer: what the port-reuse or accept-queue
    /// findings of the same interval show, rather than "the peer did not answer".
    pub(super) fn explain_syn_retransmits(&mut self) {
        let bare_acks: FastSet<PeerKey> = self
            .tallies
            .iter()
            .filter(|((kind, _), tally)| *kind == FindingKind::PortReuseInTimeWait && tally.bare_acks > 0)
            .map(|((_, key), _)| *key)
            .collect();
        let full_queues: Vec<(u32, Endpoint)> =
            self.tallies.keys().filter(|(kind, _)| *kind == FindingKind::AcceptQueueFull).map(|(_, key)| (key.netns, key.local)).collect();
        for ((kind, key), tally) in self.tallies.iter_mut() {
            if *kind != FindingKind::SynRetransmit {
                continue;
            }
            if bare_acks.contains(key) {
                tally.syn_cause = Some(SynCause::BareAck);
            } else if full_queues.iter().any(|(netns, listener)| *netns == key.netns && listener.takes(key.remote)) {
                tally.syn_cause = Some(SynCause::AcceptQueueFull);
            }
        }
    }
}

/// A half-close still flowing (the direction left open still moves data) is not stuck: its age
/// counts from the last data in that direction, where the snapshot says (`flow_idle_ns`).
fn idle_age(age_ns: u64, flow_idle_ns: Option<u64>) -> u64 {
    flow_idle_ns.map_or(age_ns, |idle| age_ns.min(idle))
}

/// The snapshot's full sockets in CLOSE_WAIT or FIN_WAIT2, with how long their open direction has
/// been idle: for the tracked connections, which know their tuple but not their socket record.
fn flow_idle_by_tuple(snapshot: &Snapshot) -> FastMap<Tuple, u64> {
    let mut idle = FastMap::default();
    for (netns, sockets) in &snapshot.sockets {
        for socket in sockets.iter() {
            if let Some(ns) = socket.flow_idle_ns() {
                idle.insert(Tuple { netns: *netns, local: socket.local, remote: socket.remote }, ns);
            }
        }
    }
    idle
}
