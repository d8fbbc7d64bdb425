//! Findings: what an on-call engineer should act on, aggregated per peer and per interval from
//! the tracker's observations, its live connections and the socket snapshot.
//!
//! The kinds and their fields are a stable contract (JSON consumers depend on them). Endpoints
//! are aggregated by role: for connections we accepted, `local` is our service `ip:port` and
//! `remote` the client `ip:*`; for connections we opened, `local` is `ip:*` and `remote` the
//! service `ip:port`. Every table here is capped; what does not fit is counted in `evicted`.
//!
//! The parts: [`model`] (what consumers see), the aggregation here, [`describe`] (the sentences).
//! Pure: the snapshot, the namespaces' settings and the owners of sockets come in a [`Context`].
mod describe;
mod idle;
mod model;

use std::collections::{BTreeMap, VecDeque};

pub use self::model::{Endpoint, Finding, FindingKind, HandshakeRow, IdleThreshold, LinkRow, NearLink, Owner, PeerKey, PeerRow, Picture};
use crate::{
    decode::TcpState,
    filter::Filter,
    kernel::{
        clock,
        links::LinkChange,
        sock_diag::{self, NamespaceSettings, Snapshot},
    },
    track::{guess_role, CloseClass, Observation, Role, Tracker, Tuple},
    FastMap, FastSet,
};

const NS_PER_S: u64 = 1_000_000_000;

/// Why our SYNs were retransmitted, where the evidence names someone other than a silent peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SynCause {
    /// The server answered with a bare ACK for an older connection on the same 4-tuple, and we
    /// reset it (`port_reuse_in_time_wait`).
    BareAck,
    /// The service is ours, in this namespace, and its accept queue is full (`accept_queue_full`).
    AcceptQueueFull,
}

/// Per (kind, peer) facts gathered during one interval.
#[derive(Clone, Debug, Default)]
struct Tally {
    count: u64,
    /// Newly flagged sockets (state kinds), for `total`.
    newly_flagged: u64,
    refused: u64,
    timed_out: u64,
    expired: u64,
    max_age_ns: u64,
    /// Each stuck socket's age (state kinds), for the median.
    ages_ns: Vec<u64>,
    labels: BTreeMap<String, u64>,
    example: Option<String>,
    owner: Option<Owner>,
    /// Inode of a stuck socket whose owner is not known yet (resolved through /proc).
    inode: Option<u32>,
    /// When the first observation of the interval began (event kinds).
    first_ns: Option<u64>,
    /// Resets reached the storm threshold this interval (reset kinds are reported only then).
    storm: bool,
    /// Our SYNs answered with a bare ACK for an older connection (port reuse, client side).
    bare_acks: u64,
    /// Why our SYNs went unanswered, when another finding of the interval knows.
    syn_cause: Option<SynCause>,
    /// A listener's backlog (`accept_queue_full`).
    backlog: u64,
    /// Connection attempts its namespace's kernel dropped for full accept queues this interval.
    dropped: u64,
    /// The idle gap the path forgets connections after, as an interval (`idle_timeout`).
    idle_threshold: Option<IdleThreshold>,
}

impl Tally {
    fn began(&mut self, at_ns: u64) {
        self.first_ns = Some(self.first_ns.map_or(at_ns, |first| first.min(at_ns)));
    }
}

/// A finding whose trouble begins this soon after a link in its namespace went down names it...
const LINK_BEFORE_NS: u64 = 10_000_000_000;
/// ... and so does one whose trouble began at most this long before (traffic that died first).
const LINK_AFTER_NS: u64 = 2_000_000_000;

#[derive(Clone, Copy, Debug)]
pub struct FindingsConfig {
    pub stuck_after_ns: u64,
    /// Absolute TIME_WAIT count per peer that is too many; default half the ephemeral range.
    pub time_wait_threshold: Option<u64>,
    pub max_peers: usize,
    /// The tracer's own namespace's range: the role guess for sockets whose birth we did not see.
    pub ephemeral_ports: (u16, u16),
    /// Resets each way between us and one peer within [`RST_WINDOW_NS`] that make a storm.
    pub rst_threshold: u64,
}

/// The window a reset storm is counted over: fixed, so that whether resets are a storm never
/// depends on the summary interval.
pub const RST_WINDOW_NS: u64 = 10 * NS_PER_S;

impl Default for FindingsConfig {
    fn default() -> Self {
        FindingsConfig {
            stuck_after_ns: 30 * NS_PER_S,
            time_wait_threshold: None,
            max_peers: 4096,
            ephemeral_ports: NamespaceSettings::DEFAULT.ephemeral_ports,
            rst_threshold: 10,
        }
    }
}

/// Handshake samples kept per peer and interval (the first ones; enough for a p99).
const HANDSHAKE_SAMPLES: usize = 1024;
/// Rows of the slowest handshakes in a summary.
const HANDSHAKE_ROWS: usize = 5;

/// What the end of an interval knows besides the tracker.
pub struct Context<'a> {
    pub now_ns: u64,
    pub snapshot: Option<&'a Snapshot>,
    /// Each namespace's ephemeral port range and FIN timeout.
    pub settings: &'a dyn Fn(u32) -> NamespaceSettings,
    pub filter: &'a Filter,
    /// Names the processes that hold socket inodes: pid and comm (from /proc in the tracer).
    pub owners: &'a Owners,
    /// Recent link changes, oldest first: a finding that began shortly after one says so.
    pub links: &'a [LinkChange],
}

pub use crate::kernel::sock_diag::Owners;

pub struct Findings {
    config: FindingsConfig,
    tallies: FastMap<(FindingKind, PeerKey), Tally>,
    peers: FastMap<PeerKey, PeerRow>,
    closes: BTreeMap<CloseClass, u64>,
    totals: FastMap<(FindingKind, PeerKey), u64>,
    /// Snapshot sockets in CLOSE_WAIT or FIN_WAIT2 that the tracker does not know (they predate
    /// the tracer) → when a snapshot first showed them.
    untracked: FastMap<Tuple, u64>,
    /// Stuck sockets already counted in a `total`, for as long as they exist.
    reported: FastSet<(FindingKind, Tuple)>,
    /// The latest resets per (direction, peer), at most `rst_threshold` of them, within
    /// [`RST_WINDOW_NS`]: whether they make a storm.
    recent_resets: FastMap<(FindingKind, PeerKey), VecDeque<u64>>,
    /// Idle gaps of each peer's connections that died and lived (kept across intervals).
    idle: FastMap<PeerKey, idle::IdleEvidence>,
    /// Handshake times of the interval in µs, by peer.
    handshakes: FastMap<PeerKey, Vec<u32>>,
    /// Peers or findings dropped because a table was full.
    pub evicted: u64,
}

impl Findings {
    pub fn new(config: FindingsConfig) -> Findings {
        Findings {
            config,
            tallies: FastMap::default(),
            peers: FastMap::default(),
            closes: BTreeMap::new(),
            totals: FastMap::default(),
            untracked: FastMap::default(),
            reported: FastSet::default(),
            recent_resets: FastMap::default(),
            idle: FastMap::default(),
            handshakes: FastMap::default(),
            evicted: 0,
        }
    }

    fn tally(&mut self, kind: FindingKind, key: PeerKey) -> Option<&mut Tally> {
        if !self.tallies.contains_key(&(kind, key)) && self.tallies.len() >= self.config.max_peers {
            self.evicted += 1;
            return None;
        }
        Some(self.tallies.entry((kind, key)).or_default())
    }

    fn peer(&mut self, key: PeerKey) -> Option<&mut PeerRow> {
        if !self.peers.contains_key(&key) && self.peers.len() >= self.config.max_peers {
            self.evicted += 1;
            return None;
        }
        Some(self.peers.entry(key).or_insert_with(|| PeerRow {
            local: key.local.to_string(),
            remote: key.remote.to_string(),
            netns: key.netns,
            ..PeerRow::default()
        }))
    }

    /// Takes in one observation from the tracker that the operator's filters let through
    /// ([`in_scope`]: the caller checks, once for every consumer of the observation).
    pub fn observe(&mut self, observation: &Observation, reason_name: impl Fn(u32) -> Option<String>) {
        let started = observation.started_ns();
        match observation {
            Observation::Ended(ended) => {
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
                        CloseClass::Refused | CloseClass::ConnectTimeout => row.failed_connects += 1,
                        _ => {}
                    }
                }
                let owner = connection.process.map(Owner::from);
                let reset = matches!(ended.class, CloseClass::ResetByPeer | CloseClass::ResetByPath);
                if let Some(gap) = connection.idle_before_ns.filter(|gap| *gap >= crate::track::IDLE_GAP_NS) {
                    if reset || ended.class == CloseClass::PeerSilent {
                        if let Some(evidence) = self.idle_evidence(key) {
                            evidence.died(gap, reset);
                        }
                    }
                }
                if let Some(origin @ crate::track::RstFrom::Path { .. }) = ended.rst_from {
                    if let Some(tally) = self.tally(FindingKind::RstFromPath, key) {
                        tally.count += 1;
                        tally.began(started);
                        tally.example = Some(crate::track::describe_rst_origin(origin));
                        tally.owner = tally.owner.take().or(owner.clone());
                    }
                }
                match ended.class {
                    CloseClass::PeerSilent => {
                        if let Some(tally) = self.tally(FindingKind::PeerSilent, key) {
                            tally.count += 1;
                            tally.began(started);
                            *tally.labels.entry(ended.detail.to_string()).or_default() += 1;
                            tally.owner = tally.owner.take().or(owner.clone());
                        }
                        if ended.fin_wait2_expired {
                            if let Some(tally) = self.tally(FindingKind::FinUnanswered, key) {
                                tally.expired += 1;
                            }
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
                            tally.owner = tally.owner.take().or(owner);
                        }
                    }
                    _ => {}
                }
            }
            Observation::SynRetransmit { tuple, .. } => {
                let key = PeerKey::new(Role::Client, tuple.netns, tuple.local, tuple.remote);
                if let Some(row) = self.peer(key) {
                    row.syn_retransmits += 1;
                }
                if let Some(tally) = self.tally(FindingKind::SynRetransmit, key) {
                    tally.count += 1;
                    tally.began(started);
                    *tally.labels.entry("SYN".into()).or_default() += 1;
                }
            }
            Observation::SynAckRetransmit { tuple, .. } => {
                let key = PeerKey::new(Role::Server, tuple.netns, tuple.local, tuple.remote);
                if let Some(row) = self.peer(key) {
                    row.syn_retransmits += 1;
                }
                if let Some(tally) = self.tally(FindingKind::SynRetransmit, key) {
                    tally.count += 1;
                    tally.began(started);
                    *tally.labels.entry("SYN-ACK".into()).or_default() += 1;
                }
            }
            Observation::ResetSent { tuple, role, reason, .. } => {
                let reason = reason.and_then(&reason_name);
                let key = PeerKey::new(*role, tuple.netns, tuple.local, tuple.remote);
                if let Some(row) = self.peer(key) {
                    row.rst_to_peer += 1;
                }
                let storm = self.reset_storm(FindingKind::RstToPeer, key, started);
                if let Some(tally) = self.tally(FindingKind::RstToPeer, key) {
                    tally.count += 1;
                    tally.storm |= storm;
                    tally.began(started);
                    let label = reason.unwrap_or_else(|| "reason not given by this kernel".into());
                    *tally.labels.entry(label).or_default() += 1;
                }
            }
            Observation::ResetReceived { tuple, role, .. } => {
                let key = PeerKey::new(*role, tuple.netns, tuple.local, tuple.remote);
                if let Some(row) = self.peer(key) {
                    row.rst_from_peer += 1;
                }
                let storm = self.reset_storm(FindingKind::RstFromPeer, key, started);
                if let Some(tally) = self.tally(FindingKind::RstFromPeer, key) {
                    tally.count += 1;
                    tally.storm |= storm;
                    tally.began(started);
                }
            }
            Observation::Dropped { tuple, role, reason, incoming, .. } => {
                let key = PeerKey::new(*role, tuple.netns, tuple.local, tuple.remote);
                if let Some(tally) = self.tally(FindingKind::DroppedHere, key) {
                    tally.count += 1;
                    tally.began(started);
                    let direction = if *incoming { "from the peer" } else { "to the peer" };
                    *tally.labels.entry(format!("{reason} {direction}")).or_default() += 1;
                }
            }
            Observation::IdleSurvived { tuple, role, gap_ns, .. } => {
                if let Some(evidence) = self.idle_evidence(PeerKey::new(*role, tuple.netns, tuple.local, tuple.remote)) {
                    evidence.lived(*gap_ns);
                }
            }
            Observation::ResetRefused { tuple, role, .. } => {
                if let Some(tally) = self.tally(FindingKind::RstRefused, PeerKey::new(*role, tuple.netns, tuple.local, tuple.remote)) {
                    tally.count += 1;
                    tally.began(started);
                }
            }
            Observation::PortReuse { tuple, role, time_wait_age_ns, accepted, .. } => {
                let key = PeerKey::new(*role, tuple.netns, tuple.local, tuple.remote);
                if let Some(tally) = self.tally(FindingKind::PortReuseInTimeWait, key) {
                    tally.count += 1;
                    tally.bare_acks += u64::from(*role == Role::Client && !accepted);
                    tally.began(started);
                    let into = time_wait_age_ns.map_or(" in".to_string(), |age| format!(" {:.1}s into", age as f64 / NS_PER_S as f64));
                    tally.example = Some(match (role, accepted) {
                        (_, true) => format!("{} ↔ {} was{into} TIME_WAIT; the SYN was accepted", tuple.local, tuple.remote),
                        (Role::Client, false) => format!(
                            "our SYN {} → {} was answered with a bare ACK: the server still holds the 4-tuple; we reset it and retransmit the SYN",
                            tuple.local, tuple.remote
                        ),
                        (_, false) => format!(
                            "a SYN from {} hit {} ↔ {}{into} TIME_WAIT and was answered with a bare ACK: the client must reset and retransmit its SYN",
                            tuple.remote, tuple.local, tuple.remote
                        ),
                    });
                }
            }
        }
    }

    /// Remembers a reset at `at_ns`; whether the last [`RST_WINDOW_NS`] hold `rst_threshold` of them.
    fn reset_storm(&mut self, kind: FindingKind, key: PeerKey, at_ns: u64) -> bool {
        let threshold = self.config.rst_threshold.max(1) as usize;
        if !self.recent_resets.contains_key(&(kind, key)) && self.recent_resets.len() >= self.config.max_peers {
            self.recent_resets.retain(|_, times| times.back().is_some_and(|last| last.saturating_add(RST_WINDOW_NS) > at_ns));
            if self.recent_resets.len() >= self.config.max_peers {
                self.evicted += 1;
                return false;
            }
        }
        let times = self.recent_resets.entry((kind, key)).or_default();
        times.push_back(at_ns);
        while times.len() > threshold || times.front().is_some_and(|first| first.saturating_add(RST_WINDOW_NS) <= at_ns) {
            times.pop_front();
        }
        times.len() >= threshold
    }

    /// Closes the interval: adds what is true now (stuck sockets, TIME_WAIT), renders every
    /// finding, and starts the next interval empty.
    pub fn conclude(&mut self, context: &Context, tracker: &Tracker) -> Picture {
        let (now_ns, settings) = (context.now_ns, context.settings);
        let states = self.count_states(now_ns, tracker, context.snapshot, context.filter);
        self.find_stuck(context, tracker);
        self.find_full_accept_queues(context);
        self.find_time_wait_buildup(now_ns, tracker, settings, context.filter);
        self.name_owners(context.owners);
        self.explain_syn_retransmits();
        self.find_idle_timeouts();

        let mut findings = Vec::new();
        let now = context.now_ns;
        self.recent_resets.retain(|_, times| times.back().is_some_and(|last| last.saturating_add(RST_WINDOW_NS) > now));
        for ((kind, key), tally) in self.tallies.drain() {
            if matches!(kind, FindingKind::RstFromPeer | FindingKind::RstToPeer) && !tally.storm {
                continue; // below the threshold: in the peer table and the metrics only
            }
            let detail = describe::describe(kind, &tally, key, settings);
            let Some(mut detail) = detail else { continue };
            let near_link = tally.first_ns.and_then(|first| near_link(context.links, key.netns, first));
            if let Some(link) = &near_link {
                detail += &match link.seconds {
                    seconds if seconds >= 0.0 => format!("; it began {seconds:.1} s after {} {}", link.ifname, link.what.verb()),
                    seconds => format!("; it began {:.1} s before {} {}: the traffic died first", -seconds, link.ifname, link.what.verb()),
                };
            }
            let count = match kind {
                FindingKind::FinUnanswered => tally.count + tally.expired,
                // Retransmitted SYNs and the connects that failed, refused ones included.
                FindingKind::SynRetransmit => tally.count + tally.refused + tally.timed_out,
                _ => tally.count,
            };
            let total = self.totals.entry((kind, key)).or_default();
            *total = match kind {
                FindingKind::TimeWaitBuildup => (*total).max(count),
                kind if kind.is_state() => *total + tally.newly_flagged + tally.expired,
                _ => *total + count,
            };
            findings.push(Finding {
                kind,
                local: key.local.to_string(),
                remote: key.remote.to_string(),
                count,
                total: *total,
                detail,
                netns: key.netns,
                netns_name: None,
                process: tally.owner,
                record: None,
                near_link,
                idle_threshold: tally.idle_threshold,
                began_ns: tally.first_ns,
                key,
            });
        }
        if self.totals.len() > self.config.max_peers * 4 {
            // Keep the totals of peers that are in trouble now; forget the rest.
            let active: FastSet<(String, String)> = findings.iter().map(|f| (f.local.clone(), f.remote.clone())).collect();
            let before = self.totals.len();
            self.totals.retain(|(_, key), _| active.contains(&(key.local.to_string(), key.remote.to_string())));
            self.evicted += (before - self.totals.len()) as u64;
        }
        findings.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.count.cmp(&a.count)).then(a.remote.cmp(&b.remote)));

        let mut peers: Vec<PeerRow> = self.peers.drain().map(|(_, row)| row).filter(|row| row.trouble() > 0).collect();
        for finding in findings.iter().filter(|f| f.kind == FindingKind::CloseWaitStuck) {
            match peers.iter_mut().find(|row| row.local == finding.local && row.remote == finding.remote) {
                Some(row) => row.stuck += finding.count,
                None => peers.push(PeerRow {
                    local: finding.local.clone(),
                    remote: finding.remote.clone(),
                    netns: finding.netns,
                    stuck: finding.count,
                    ..PeerRow::default()
                }),
            }
        }
        peers.sort_by(|a, b| b.trouble().cmp(&a.trouble()).then(a.remote.cmp(&b.remote)));
        peers.truncate(10);
        let closes = std::mem::take(&mut self.closes).into_iter().map(|(class, n)| (class.name(), n)).collect();
        let handshakes = self.slowest_handshakes();
        let states_exact = match context.snapshot {
            Some(_) => sock_diag::WANTED_STATES.iter().map(|state| state.name()).collect(),
            None => Vec::new(),
        };
        Picture { states, states_exact, closes, peers, findings, handshakes, links: Vec::new() }
    }

    /// The peers whose handshakes took longest this interval (by p99), and forgets the samples.
    fn slowest_handshakes(&mut self) -> Vec<HandshakeRow> {
        let mut rows: Vec<HandshakeRow> = self
            .handshakes
            .drain()
            .map(|(key, mut samples)| {
                samples.sort_unstable();
                let at = |share: usize| f64::from(samples[(samples.len() * share / 100).min(samples.len() - 1)]) / 1000.0;
                HandshakeRow {
                    local: key.local.to_string(),
                    remote: key.remote.to_string(),
                    netns: key.netns,
                    connections: samples.len() as u64,
                    p50_ms: at(50),
                    p99_ms: at(99),
                }
            })
            .collect();
        rows.sort_by(|a, b| b.p99_ms.total_cmp(&a.p99_ms).then(a.remote.cmp(&b.remote)));
        rows.truncate(HANDSHAKE_ROWS);
        rows
    }

    /// Sockets by state: those in [`sock_diag::WANTED_STATES`] from the snapshot when there is one
    /// (exact, and including sockets older than the tracer), the others from tracked connections.
    fn count_states(&self, now_ns: u64, tracker: &Tracker, snapshot: Option<&Snapshot>, filter: &Filter) -> BTreeMap<&'static str, u64> {
        let mut states = BTreeMap::new();
        let from_snapshot = |state: &TcpState| snapshot.is_some() && sock_diag::WANTED_STATES.contains(state);
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
    fn find_stuck(&mut self, context: &Context, tracker: &Tracker) {
        let (now_ns, filter, stuck_after) = (context.now_ns, context.filter, self.config.stuck_after_ns);
        let mut known = FastSet::default();
        let mut found = Vec::new();
        let stuck_kind = |state: TcpState| match state {
            TcpState::CloseWait => Some(FindingKind::CloseWaitStuck),
            TcpState::FinWait2 => Some(FindingKind::FinUnanswered),
            _ => None,
        };
        for connection in tracker.connections() {
            let tuple = Tuple { netns: connection.socket.netns, local: connection.local, remote: connection.remote };
            known.insert(tuple);
            let Some(kind) = stuck_kind(connection.state) else { continue };
            let age = now_ns.saturating_sub(connection.state_since_ns);
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
                    let age = now_ns.saturating_sub(first_seen_ns);
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

    fn idle_evidence(&mut self, key: PeerKey) -> Option<&mut idle::IdleEvidence> {
        if !self.idle.contains_key(&key) && self.idle.len() >= self.config.max_peers {
            self.evicted += 1;
            return None;
        }
        Some(self.idle.entry(key).or_default())
    }

    /// Peers whose deaths this interval fall past an idle gap their survivors stay under.
    fn find_idle_timeouts(&mut self) {
        let mut found = Vec::new();
        for (key, evidence) in &mut self.idle {
            let (deaths, resets) = (std::mem::take(&mut evidence.new_deaths), std::mem::take(&mut evidence.new_resets));
            if deaths == 0 {
                continue;
            }
            if let Some(estimate) = evidence.estimate() {
                found.push((*key, deaths, idle::describe(&key.remote.to_string(), &estimate, resets > 0), estimate));
            }
        }
        for (key, deaths, detail, estimate) in found {
            if let Some(tally) = self.tally(FindingKind::IdleTimeout, key) {
                tally.count += deaths;
                tally.example = Some(detail);
                tally.idle_threshold = Some(IdleThreshold::of(&estimate));
            }
        }
    }

    /// A SYN retransmit finding says who did not answer: what the port-reuse or accept-queue
    /// findings of the same interval show, rather than "the peer did not answer".
    fn explain_syn_retransmits(&mut self) {
        let bare_acks: FastSet<PeerKey> = self
            .tallies
            .iter()
            .filter(|((kind, _), tally)| *kind == FindingKind::PortReuseInTimeWait && tally.bare_acks > 0)
            .map(|((_, key), _)| *key)
            .collect();
        let full_queues: FastSet<(u32, Endpoint)> =
            self.tallies.keys().filter(|(kind, _)| *kind == FindingKind::AcceptQueueFull).map(|(_, key)| (key.netns, key.local)).collect();
        for ((kind, key), tally) in self.tallies.iter_mut() {
            if *kind != FindingKind::SynRetransmit {
                continue;
            }
            if bare_acks.contains(key) {
                tally.syn_cause = Some(SynCause::BareAck);
            } else if full_queues.contains(&(key.netns, key.remote)) {
                tally.syn_cause = Some(SynCause::AcceptQueueFull);
            }
        }
    }

    /// Listeners whose accept queue is past its backlog in this round's snapshot (or at it while
    /// the namespace's kernel counted dropped connection attempts): the application is not
    /// calling accept() fast enough. Only namespaces dumped this round: a queue is a now-fact.
    fn find_full_accept_queues(&mut self, context: &Context) {
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

    fn find_time_wait_buildup(&mut self, now_ns: u64, tracker: &Tracker, settings: &dyn Fn(u32) -> NamespaceSettings, filter: &Filter) {
        let mut per_peer: FastMap<PeerKey, u64> = FastMap::default();
        for (tuple, _) in tracker.time_wait(now_ns) {
            if !filter.matches_socket(tuple.netns, tuple.local, tuple.remote) {
                continue;
            }
            let role = guess_role(settings(tuple.netns).ephemeral_ports, tuple.local, tuple.remote);
            *per_peer.entry(PeerKey::new(role, tuple.netns, tuple.local, tuple.remote)).or_default() += 1;
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
    fn name_owners(&mut self, owners: &Owners) {
        for tally in self.tallies.values_mut().filter(|t| t.owner.is_none()) {
            if let Some((pid, comm)) = tally.inode.and_then(|inode| owners.get(&inode)) {
                tally.owner = Some(Owner { pid: *pid, comm: comm.clone() });
            }
        }
    }
}

/// The link of namespace `netns` that went down (or lost carrier, or went away) nearest to
/// `began_ns`: at most [`LINK_BEFORE_NS`] before it or [`LINK_AFTER_NS`] after it.
fn near_link(links: &[LinkChange], netns: u32, began_ns: u64) -> Option<NearLink> {
    let offset = |change: &LinkChange| began_ns as i128 - change.at_ns as i128;
    links
        .iter()
        .filter(|change| change.netns == netns && change.what.is_loss())
        .filter(|change| (-(LINK_AFTER_NS as i128)..=LINK_BEFORE_NS as i128).contains(&offset(change)))
        .min_by_key(|change| offset(change).abs())
        .map(|change| NearLink { ifname: change.ifname.clone(), what: change.what, seconds: clock::tenths_of_seconds(offset(change)) })
}

/// Whether the operator's filters let an observation through.
pub fn in_scope(observation: &Observation, filter: &Filter) -> bool {
    match observation {
        Observation::Ended(ended) => {
            let connection = &ended.connection;
            filter.matches(connection.socket.netns, connection.local, connection.remote, connection.process.as_ref())
        }
        Observation::SynRetransmit { tuple, process, .. }
        | Observation::ResetSent { tuple, process, .. }
        | Observation::ResetReceived { tuple, process, .. } => filter.matches(tuple.netns, tuple.local, tuple.remote, process.as_ref()),
        Observation::SynAckRetransmit { tuple, .. }
        | Observation::PortReuse { tuple, .. }
        | Observation::ResetRefused { tuple, .. }
        | Observation::Dropped { tuple, .. }
        | Observation::IdleSurvived { tuple, .. } => filter.matches(tuple.netns, tuple.local, tuple.remote, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::{
        fixtures::{reasons, Script, NETNS},
        TrackerConfig,
    };
    use TcpState::*;

    const S: u64 = 1_000_000_000;

    fn settings(_: u32) -> NamespaceSettings {
        NamespaceSettings::DEFAULT
    }

    /// Feeds events through a tracker into findings, then concludes at `now`.
    fn picture(findings: &mut Findings, tracker: &mut Tracker, events: &[crate::decode::Event], now: u64, filter: &Filter) -> Picture {
        let mut out = Vec::new();
        for event in events {
            tracker.observe(event, &mut out);
        }
        tracker.settle(now, &mut out);
        for observation in &out {
            if in_scope(observation, filter) {
                findings.observe(observation, |code| tracker.reason_name(code).map(str::to_string));
            }
        }
        conclude(findings, tracker, now, filter)
    }

    fn conclude(findings: &mut Findings, tracker: &Tracker, now_ns: u64, filter: &Filter) -> Picture {
        let nobody = Owners::default();
        findings.conclude(&Context { now_ns, snapshot: None, settings: &settings, filter, owners: &nobody, links: &[] }, tracker)
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig::default(), reasons())
    }

    fn server(address: u64, client_port: u16) -> Script {
        Script::new(address, "10.0.0.2:80", &format!("10.0.0.1:{client_port}"))
    }

    fn link_down(netns: u32, at_ns: u64) -> LinkChange {
        LinkChange {
            at_ns,
            netns,
            ifindex: 2,
            ifname: "veth0".into(),
            what: crate::kernel::links::LinkWhat::Down,
            operstate: "lowerlayerdown",
            carrier: false,
        }
    }

    #[test]
    fn a_peer_gone_silent_right_after_its_link_went_down_says_so_and_an_older_change_does_not_count() {
        let s = server(1, 40000);
        // The link goes down at 10 s; our data is retransmitted from 11.2 s; the connection
        // times out at 40 s.
        let events = [
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 1),
            s.retransmit(Established, 11 * S + S / 5),
            s.retransmit(Established, 12 * S),
            s.state(Established, Close, 40 * S),
        ];
        let run = |links: &[LinkChange]| {
            let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
            let mut out = Vec::new();
            for event in &events {
                tracker.observe(event, &mut out);
            }
            tracker.settle(u64::MAX, &mut out);
            for observation in &out {
                findings.observe(observation, |_| None);
            }
            let nobody = Owners::default();
            let context =
                Context { now_ns: 41 * S, snapshot: None, settings: &settings, filter: &Filter::default(), owners: &nobody, links };
            let picture = findings.conclude(&context, &tracker);
            picture.findings.into_iter().find(|f| f.kind == FindingKind::PeerSilent).expect("peer_silent")
        };
        let silent = run(&[link_down(NETNS + 1, 11 * S), link_down(NETNS, 10 * S)]);
        let after = silent.near_link.as_ref().expect("the link in its namespace explains it");
        assert_eq!((after.ifname.as_str(), after.seconds), ("veth0", 1.2));
        assert!(silent.detail.ends_with("; it began 1.2 s after veth0 went down"), "{}", silent.detail);
        assert_eq!(run(&[link_down(NETNS, 0)]).near_link, None, "11 s before: too long ago");
        let first = run(&[link_down(NETNS, 12 * S)]);
        assert_eq!(first.near_link.as_ref().map(|link| link.seconds), Some(-0.8));
        assert!(first.detail.ends_with("; it began 0.8 s before veth0 went down: the traffic died first"), "{}", first.detail);
        assert_eq!(run(&[link_down(NETNS, 14 * S)]).near_link, None, "2.8 s after the trouble: unrelated");
        assert_eq!(run(&[link_down(NETNS + 1, 11 * S)]).near_link, None, "another namespace's link");
        assert_eq!(run(&[]).near_link, None);
    }

    #[test]
    fn close_wait_older_than_stuck_after_is_reported_once_per_socket() {
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
        let s = server(1, 40000);
        let events = [s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1), s.state(Established, CloseWait, 2 * S)];
        let early = picture(&mut findings, &mut tracker, &events, 10 * S, &Filter::default());
        assert!(early.findings.is_empty(), "not stuck yet after 8 s: {:?}", early.findings);
        assert_eq!(early.states.get("CLOSE_WAIT"), Some(&1));

        let stuck = picture(&mut findings, &mut tracker, &[], 40 * S, &Filter::default());
        let finding = &stuck.findings[0];
        assert_eq!(
            (finding.kind, finding.local.as_str(), finding.remote.as_str()),
            (FindingKind::CloseWaitStuck, "10.0.0.2:80", "10.0.0.1:*")
        );
        assert_eq!((finding.count, finding.total), (1, 1));
        assert!(finding.detail.contains("for up to 38s"), "{}", finding.detail);
        assert_eq!(stuck.peers[0].stuck, 1);

        let still = picture(&mut findings, &mut tracker, &[], 50 * S, &Filter::default());
        assert_eq!((still.findings[0].count, still.findings[0].total), (1, 1), "the same socket is not counted twice");
    }

    #[test]
    fn silent_peers_are_aggregated_per_service_and_client_address() {
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
        let mut events = Vec::new();
        for (i, port) in [40000u16, 40001, 40002].into_iter().enumerate() {
            let s = server(10 + i as u64, port);
            events.extend([
                s.state(Listen, SynRecv, S),
                s.state(SynRecv, Established, S + 1),
                s.retransmit(Established, 2 * S),
                s.state(Established, Close, 5 * S),
            ]);
        }
        let picture = picture(&mut findings, &mut tracker, &events, 10 * S, &Filter::default());
        assert_eq!(picture.closes.get("peer_silent"), Some(&3));
        let silent: Vec<_> = picture.findings.iter().filter(|f| f.kind == FindingKind::PeerSilent).collect();
        assert_eq!(silent.len(), 1);
        assert_eq!((silent[0].local.as_str(), silent[0].remote.as_str(), silent[0].count), ("10.0.0.2:80", "10.0.0.1:*", 3));
        assert!(silent[0].detail.contains("×3"), "{}", silent[0].detail);
        assert_eq!((picture.peers[0].peer_silent, picture.peers[0].ended), (3, 3));
    }

    #[test]
    fn a_syn_on_time_wait_is_told_from_the_side_that_saw_it() {
        let tuple = Tuple { netns: NETNS, local: "10.0.0.2:80".parse().unwrap(), remote: "10.0.0.9:40000".parse().unwrap() };
        let detail = |role, time_wait_age_ns, accepted| {
            let (mut findings, tracker) = (Findings::new(FindingsConfig::default()), tracker());
            findings.observe(&Observation::PortReuse { tuple, role, time_wait_age_ns, accepted, at_ns: 0 }, |_| None);
            let picture = conclude(&mut findings, &tracker, S, &Filter::default());
            picture.findings[0].detail.clone()
        };
        assert!(detail(Role::Server, Some(3 * S / 2), true)
            .contains("10.0.0.2:80 ↔ 10.0.0.9:40000 was 1.5s into TIME_WAIT; the SYN was accepted"));
        assert!(detail(Role::Server, None, true).contains("was in TIME_WAIT; the SYN was accepted"));
        let refused = detail(Role::Server, Some(S), false);
        assert!(
            refused.contains(
                "a SYN from 10.0.0.9:40000 hit 10.0.0.2:80 ↔ 10.0.0.9:40000 1.0s into TIME_WAIT and was answered with a bare ACK"
            ),
            "{refused}"
        );
        assert!(detail(Role::Client, None, false).contains("our SYN"));
    }

    #[test]
    fn handshake_times_per_peer_give_the_slowest_p50_and_p99() {
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
        let mut events = Vec::new();
        // 100 connections from one client to our port 80: handshakes of 1..=100 ms.
        for i in 0..100u64 {
            let s = server(100 + i, 40000 + i as u16);
            events.extend([
                s.state(Listen, SynRecv, S),
                s.state(SynRecv, Established, S + (i + 1) * 1_000_000),
                s.state(Established, Close, 2 * S),
            ]);
        }
        let first = picture(&mut findings, &mut tracker, &events, 10 * S, &Filter::default());
        let row = &first.handshakes[0];
        assert_eq!((row.local.as_str(), row.remote.as_str(), row.connections), ("10.0.0.2:80", "10.0.0.1:*", 100));
        assert_eq!((row.p50_ms, row.p99_ms), (51.0, 100.0));
        let next = picture(&mut findings, &mut tracker, &[], 20 * S, &Filter::default());
        assert!(next.handshakes.is_empty(), "one interval's samples only");
    }

    #[test]
    fn resets_sent_without_a_socket_are_counted_for_the_closed_port_with_their_reason() {
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig { rst_threshold: 2, ..FindingsConfig::default() }), tracker());
        let probe = |port: u16, at: u64| {
            let script = Script::new(0, "10.0.0.2:9", &format!("10.0.0.1:{port}"));
            script.reset_sent(Close, Some(1), at)
        };
        let picture = picture(&mut findings, &mut tracker, &[probe(40000, S), probe(40001, S + 1)], 2 * S, &Filter::default());
        let sent = picture.findings.iter().find(|f| f.kind == FindingKind::RstToPeer).unwrap();
        assert_eq!((sent.local.as_str(), sent.remote.as_str(), sent.count), ("10.0.0.2:9", "10.0.0.1:*", 2));
        assert_eq!(sent.detail, "2 RST(s) from us (10.0.0.2:9) to the peer 10.0.0.1:*: NO_SOCKET ×2");
    }

    #[test]
    fn time_wait_above_the_threshold_is_a_buildup_with_its_share_of_the_port_range() {
        let config = FindingsConfig { time_wait_threshold: Some(2), ..FindingsConfig::default() };
        let (mut findings, mut tracker) = (Findings::new(config), tracker());
        let mut events = Vec::new();
        for i in 0..3u16 {
            let s = server(100 + u64::from(i), 40000 + i);
            let at = S + u64::from(i) * 1000;
            events.extend([
                s.state(Listen, SynRecv, at),
                s.state(SynRecv, Established, at + 1),
                s.syscall(Established, FinWait1, at + 2),
                s.state(FinWait1, FinWait2, at + 3),
                s.closed(FinWait2, true, at + 4),
            ]);
        }
        let picture = picture(&mut findings, &mut tracker, &events, 2 * S, &Filter::default());
        let buildup = picture.findings.iter().find(|f| f.kind == FindingKind::TimeWaitBuildup).expect("buildup");
        assert_eq!((buildup.local.as_str(), buildup.remote.as_str(), buildup.count), ("10.0.0.2:80", "10.0.0.1:*", 3));
        assert!(buildup.detail.contains("0% of the 28232 ephemeral ports (32768-60999)"), "{}", buildup.detail);
        assert_eq!(picture.states.get("TIME_WAIT"), Some(&3));
    }

    #[test]
    fn single_resets_are_counted_but_only_a_storm_within_ten_seconds_is_a_finding_at_any_interval() {
        // A health check closing with RST every 2 s: never 10 within 10 s.
        let check = |at: u64| Script::new(0, "10.0.0.2:80", "10.0.0.9:40000").reset_sent(Established, Some(14), at);
        let trickle: Vec<crate::decode::Event> = (0..20u64).map(|i| check(S + i * 2 * S)).collect();
        // Then a storm: 10 in one second.
        let storm: Vec<crate::decode::Event> = (0..10u64).map(|i| check(60 * S + i * 100_000_000)).collect();
        for interval in [S, 10 * S, 30 * S] {
            let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
            let (mut rows, mut reported) = (0, Vec::new());
            let events: Vec<&crate::decode::Event> = trickle.iter().chain(&storm).collect();
            let mut end = interval;
            let mut next = 0;
            while next < events.len() || end <= 62 * S {
                let batch: Vec<crate::decode::Event> = events[next..].iter().take_while(|e| e.timestamp_ns < end).map(|e| **e).collect();
                next += batch.len();
                let picture = picture(&mut findings, &mut tracker, &batch, end, &Filter::default());
                rows += picture.peers.iter().map(|row| row.rst_to_peer).sum::<u64>();
                reported.extend(picture.findings.iter().filter(|f| f.kind == FindingKind::RstToPeer).map(|f| f.count));
                end += interval;
            }
            assert_eq!(rows, 30, "every reset is in the peer table (interval {interval})");
            assert!(!reported.is_empty(), "the storm is a finding (interval {interval})");
            assert!(reported.iter().sum::<u64>() <= 10 + interval / (2 * S), "the trickle alone never was: {reported:?}");
        }
    }

    #[test]
    fn a_syn_retransmitted_because_the_server_held_the_tuple_says_so_and_points_at_port_reuse() {
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
        let c = Script::new(0xa1, "10.0.0.1:40000", "10.0.0.2:80");
        let events = [
            c.syscall(Close, SynSent, S),
            c.reset_sent(SynSent, Some(2), S + 10), // our RST to the server's bare ACK
            c.retransmit(SynSent, 2 * S),
            c.state(SynSent, Established, 2 * S + 5),
        ];
        let reused = picture(&mut findings, &mut tracker, &events, 3 * S, &Filter::default());
        let retransmit = reused.findings.iter().find(|f| f.kind == FindingKind::SynRetransmit).expect("a syn_retransmit finding");
        assert!(retransmit.detail.contains("bare ACK for an older connection") && retransmit.detail.contains("port_reuse_in_time_wait"));
        assert!(!retransmit.detail.contains("did not answer"), "{}", retransmit.detail);
        // Without the bare ACK it is the peer that did not answer.
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), self::tracker());
        let silent = [c.syscall(Close, SynSent, S), c.retransmit(SynSent, 2 * S)];
        let unanswered = picture(&mut findings, &mut tracker, &silent, 3 * S, &Filter::default());
        assert!(unanswered.findings[0].detail.contains("the peer did not answer our SYN"), "{}", unanswered.findings[0].detail);
    }

    #[test]
    fn findings_come_most_serious_first() {
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig { rst_threshold: 1, ..FindingsConfig::default() }), tracker());
        let stuck = server(1, 40000);
        let reset = server(2, 40001);
        let events = [
            reset.state(Listen, SynRecv, S),
            reset.state(SynRecv, Established, S + 1),
            reset.reset_received(S + 2),
            reset.state(Established, Close, S + 2),
            stuck.state(Listen, SynRecv, S),
            stuck.state(SynRecv, Established, S + 1),
            stuck.state(Established, CloseWait, S + 3),
        ];
        let picture = picture(&mut findings, &mut tracker, &events, 60 * S, &Filter::default());
        let kinds: Vec<_> = picture.findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FindingKind::CloseWaitStuck, FindingKind::RstFromPeer]);
    }

    #[test]
    fn a_full_peer_table_drops_and_counts_instead_of_growing() {
        let config = FindingsConfig { max_peers: 2, rst_threshold: 1, ..FindingsConfig::default() };
        let (mut findings, mut tracker) = (Findings::new(config), tracker());
        let events: Vec<_> = (0..5u16)
            .map(|i| Script::new(0, "10.0.0.2:9", &format!("10.0.{i}.1:40000")).reset_sent(Close, Some(1), S + u64::from(i)))
            .collect();
        let picture = picture(&mut findings, &mut tracker, &events, 2 * S, &Filter::default());
        assert_eq!(picture.findings.len(), 2);
        assert_eq!(findings.evicted, 9, "3 peers, 3 findings and 3 reset windows did not fit");
        assert_eq!(NETNS, picture.findings[0].netns);
    }
}
