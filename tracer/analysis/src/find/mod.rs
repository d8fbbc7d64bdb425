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
mod context;
mod describe;
mod ended;
mod idle;
mod model;
mod states;

use std::collections::{BTreeMap, VecDeque};

pub use self::model::{Endpoint, Finding, FindingKind, HandshakeRow, IdleThreshold, LinkRow, NearLink, Owner, PeerKey, PeerRow, Picture};
use tracer_model::sockets::{NamespaceSettings, Snapshot, WANTED_STATES};

use crate::{
    bounded::Bounded,
    decode::TcpState,
    filter::Filter,
    track::{guess_role, CloseClass, Observation, Role, Tracker, Tuple},
    FastMap, FastSet,
};

const NS_PER_S: u64 = 1_000_000_000;

/// A `dropped_here` label that counts a connection the drops killed, not a drop reason.
const DEATH: &str = "died: ";

/// Why our SYNs were retransmitted, where the evidence names someone other than a silent peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SynCause {
    /// The server answered with a bare ACK for an older connection on the same 4-tuple, and we
    /// reset it (`port_reuse_in_time_wait`).
    BareAck,
    /// The service is ours, in this namespace, and its accept queue is full (`accept_queue_full`).
    AcceptQueueFull,
}

/// A port reuse, as the finding's example.
#[derive(Clone, Copy, Debug)]
struct PortReuseExample {
    tuple: Tuple,
    role: Role,
    time_wait_age_ns: Option<u64>,
    accepted: bool,
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
    /// The interval's latest port reuse (`port_reuse_in_time_wait`), worded when shown.
    reuse_example: Option<PortReuseExample>,
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
    /// Sockets we closed first (TIME_WAIT, or FIN_WAIT2 awaiting the peer's FIN) on the path whose
    /// connects found no local port (`local_ports_exhausted`): they hold its ports.
    closed_first: u64,
}

impl Tally {
    fn began(&mut self, at_ns: u64) {
        self.first_ns = Some(self.first_ns.map_or(at_ns, |first| first.min(at_ns)));
    }
}

/// Handshake samples kept per peer and interval (the first ones; enough for a p99).
const HANDSHAKE_SAMPLES: usize = 1024;
/// Rows of the slowest handshakes in a summary.
const HANDSHAKE_ROWS: usize = 5;

use self::context::near_link;
pub use self::context::{Context, FindingsConfig, RST_WINDOW_NS};
pub use tracer_model::sockets::Owners;

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
    recent_resets: Bounded<(FindingKind, PeerKey), VecDeque<u64>>,
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
            recent_resets: Bounded::new(|times| times.back().copied().unwrap_or(0)),
            idle: FastMap::default(),
            handshakes: FastMap::default(),
            evicted: 0,
        }
    }

    fn tally(&mut self, kind: FindingKind, key: PeerKey) -> Option<&mut Tally> {
        if self.tallies.len() >= self.config.max_peers && !self.tallies.contains_key(&(kind, key)) {
            self.evicted += 1;
            return None;
        }
        Some(self.tallies.entry((kind, key)).or_default())
    }

    fn peer(&mut self, key: PeerKey) -> Option<&mut PeerRow> {
        if self.peers.len() >= self.config.max_peers && !self.peers.contains_key(&key) {
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
            Observation::Ended(ended) => self.observe_ended(ended, started),
            Observation::SynRetransmit { tuple, dropped_in, .. } => {
                let key = PeerKey::new(Role::Client, tuple.netns, tuple.local, tuple.remote);
                if let Some(row) = self.peer(key) {
                    row.syn_retransmits += 1;
                }
                if let Some(tally) = self.tally(FindingKind::SynRetransmit, key) {
                    tally.count += 1;
                    tally.began(started);
                    *tally.labels.entry("SYN".into()).or_default() += 1;
                    if dropped_in.is_some() {
                        tally.example.clone_from(dropped_in);
                    }
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
            Observation::Dropped { tuple, role, reason, incoming, socketless, .. } => {
                let key = PeerKey::new(*role, tuple.netns, tuple.local, tuple.remote);
                if let Some(tally) = self.tally(FindingKind::DroppedHere, key) {
                    tally.count += 1;
                    tally.began(started);
                    let way = match (socketless, incoming) {
                        (true, _) => "where no socket held them",
                        (false, true) => "from the peer",
                        (false, false) => "to the peer",
                    };
                    *tally.labels.entry(format!("{reason} {way}")).or_default() += 1;
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
                    // Worded only if the finding is shown: behind a NAT every connection may reuse a port.
                    tally.reuse_example =
                        Some(PortReuseExample { tuple: *tuple, role: *role, time_wait_age_ns: *time_wait_age_ns, accepted: *accepted });
                }
            }
        }
    }

    /// Remembers a reset at `at_ns`; whether the last [`RST_WINDOW_NS`] hold `rst_threshold` of them.
    fn reset_storm(&mut self, kind: FindingKind, key: PeerKey, at_ns: u64) -> bool {
        let threshold = self.config.rst_threshold.max(1) as usize;
        // The peer whose last reset is the oldest makes room: counted when it still had resets
        // in the window (an expired one says nothing more).
        if let Some((_, times)) = self.recent_resets.make_room(&(kind, key), self.config.max_peers) {
            if times.back().is_some_and(|last| last.saturating_add(RST_WINDOW_NS) > at_ns) {
                self.evicted += 1;
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
                FindingKind::ConnectFailed => tally.refused + tally.timed_out,
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
            Some(_) => WANTED_STATES.iter().map(|state| state.name()).collect(),
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
mod tests;
