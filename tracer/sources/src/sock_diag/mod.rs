//! Periodic socket snapshots through NETLINK_SOCK_DIAG (what `ss` uses), one netlink socket per
//! network namespace the tracer has seen events from.
//!
//! Tracepoints cannot see a timewait socket live, nor sockets that were already open when the
//! tracer started; the snapshot gives exact TIME_WAIT, FIN_WAIT2 and CLOSE_WAIT populations and
//! the sockets' inodes (to name the process that owns a stuck one). Each namespace's ephemeral
//! port range and FIN timeout are read from inside it. Failures are reported, never fatal.
//!
//! A netlink socket opened inside a namespace keeps that namespace alive, so a namespace that is
//! gone (no process and no /run/netns entry refers to it, and no event came from it for a whole
//! round) is let go: its socket closed and its settings dropped, and the release counted. On a
//! Kubernetes node, where pod namespaces come and go all day, holding them would leak kernel
//! memory and descriptors for as long as the tracer runs.
//!
//! The cost scales with what changed, not with what exists: the kernel is asked only for the
//! states the findings read ([`WANTED_STATES`]); a namespace is dumped only when an event came
//! from it or its last dump held such sockets (every change into those states fires a traced
//! event, so skipping the others is exact); and when the dumps take more than their share of the
//! interval, fewer namespaces are dumped per round, the least recently dumped first, the others'
//! last results carried over and said so.
use std::{
    fs,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use netlink_sys::Socket;
pub use tracer_model::sockets::{NamespaceSettings, RoundCost, Snapshot, SocketRecord, WANTED_STATES};

mod netlink;
mod owners;

use self::netlink::{dump, open_socket};
pub use self::owners::{resolve_owners, Owners};
use super::netns;
use tracer_model::FastMap;

/// At most this many namespaces get a netlink socket; more are reported as not covered.
const MAX_NAMESPACES: usize = 256;
/// Namespaces found by looking (not by their events) fill at most this many of those sockets, so
/// that quiet namespaces never crowd out the ones events come from.
const MAX_DISCOVERED: usize = MAX_NAMESPACES * 3 / 4;
/// Namespaces a round dumps before the pace of a dump is known (the first round may have found
/// every namespace of the box at once).
const FIRST_ROUND_DUMPS: usize = 16;
/// Namespaces remembered as not entered, at most (a reason string each).
const MAX_UNREACHABLE: usize = 1024;
/// Namespaces not entered that each round tries again (each try looks through /proc).
const RETRIES_PER_ROUND: usize = 16;

/// The dumps may take a tenth of the summary interval (a tenth of a core, on the blocking thread)
/// before they are spread over rounds.
const BUDGET_SHARE: u32 = 10;

struct Namespace {
    socket: Socket,
    /// Its /proc/net/netstat, opened from inside it (a read gives that namespace's counters).
    netstat: Option<fs::File>,
    /// `TcpExt ListenOverflows` at the last read.
    listen_overflows: Option<u64>,
    settings: NamespaceSettings,
    /// What it belongs to (see [`Snapshots::name`]).
    name: Option<String>,
    /// An event came from it since the last round.
    active: bool,
    /// Its sockets in [`WANTED_STATES`] at its last dump (`None`: never dumped).
    last: Option<Arc<Vec<SocketRecord>>>,
    /// The round of its last dump, for round-robin when over budget.
    dumped_round: u64,
}

pub struct Snapshots {
    namespaces: FastMap<u32, Namespace>,
    /// Namespaces we could not enter: why, and the round of the last try. Each is tried again at
    /// most once a round: on its next event, or among the least recently tried few when a round
    /// starts (its events may never come back). Forgotten once gone; at most [`MAX_UNREACHABLE`].
    unreachable: FastMap<u32, (String, u64)>,
    own_netns: u32,
    /// Namespaces let go because they were gone.
    released: u64,
    /// `--netns`: the one namespace in scope besides our own.
    scope: Option<u32>,
    /// Namespaces in scope left uncovered by the last look, for want of room.
    undiscovered: usize,
    /// What the dumps of one round may take.
    budget: Duration,
    /// What one namespace's dump takes, smoothed over rounds (`None` before the first dump).
    cost_per_namespace: Option<Duration>,
    round: u64,
}

impl Snapshots {
    /// Starts with the tracer's own namespace; fails when sock_diag is unusable here at all. The
    /// dumps of one round should take at most a tenth of `interval`; `scope` is `--netns`.
    pub fn new(interval: Duration, scope: Option<u32>) -> Result<Snapshots> {
        let own_netns = netns::own().context("cannot read /proc/self/ns/net")?;
        let mut snapshots = Snapshots {
            namespaces: FastMap::default(),
            unreachable: FastMap::default(),
            own_netns,
            released: 0,
            scope,
            undiscovered: 0,
            budget: interval / BUDGET_SHARE,
            cost_per_namespace: None,
            round: 0,
        };
        let socket = open_socket().context("cannot open a NETLINK_SOCK_DIAG socket (CAP_NET_ADMIN missing?)")?;
        snapshots.namespaces.insert(own_netns, Namespace::new(socket, None));
        Ok(snapshots)
    }

    pub fn covered(&self) -> usize {
        self.namespaces.len()
    }

    pub fn unreachable(&self) -> usize {
        self.unreachable.len()
    }

    /// One namespace not entered, and why.
    pub fn why_unreachable(&self) -> Option<(u32, &str)> {
        self.unreachable.iter().next().map(|(netns, (why, _))| (*netns, why.as_str()))
    }

    /// Namespaces let go since the start because they were gone.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Namespaces in scope that the last look left uncovered, for want of room.
    pub fn undiscovered(&self) -> usize {
        self.undiscovered
    }

    /// Covers the live namespaces in scope that no event came from. A listener whose accept
    /// queue is full drops every SYN without an event, and a namespace whose events were lost
    /// (or that went quiet before the tracer started) would otherwise never be looked at. Done
    /// at the first round and after events were lost.
    fn discover(&mut self) {
        self.undiscovered = 0;
        let scope = self.scope;
        let mut quiet: Vec<u32> = netns::live()
            .into_iter()
            .filter(|netns| scope.is_none_or(|wanted| wanted == *netns))
            .filter(|netns| !self.namespaces.contains_key(netns) && !self.unreachable.contains_key(netns))
            .collect();
        quiet.sort_unstable();
        for netns in quiet {
            if self.namespaces.len() >= MAX_DISCOVERED {
                self.undiscovered += 1;
                continue;
            }
            self.learn(netns);
            // Due for its first dump all the same, after the namespaces events came from.
            if let Some(namespace) = self.namespaces.get_mut(&netns) {
                namespace.active = false;
            }
        }
    }

    pub fn settings(&self, netns: u32) -> Option<NamespaceSettings> {
        self.namespaces.get(&netns).map(|namespace| namespace.settings)
    }

    /// What namespace `netns` belongs to, for people: the /run/netns name, or "pid P (comm),
    /// cgroup C" of a process in it. `None` for the tracer's own namespace and unknown ones.
    pub fn name(&self, netns: u32) -> Option<&str> {
        self.namespaces.get(&netns).and_then(|namespace| namespace.name.as_deref())
    }

    pub fn own_settings(&self) -> NamespaceSettings {
        self.settings(self.own_netns).unwrap_or_else(read_settings)
    }

    /// Makes sure `netns` (seen in an event) is covered from the next round on, and marks it
    /// active for this round.
    pub fn learn(&mut self, netns: u32) {
        if let Some(namespace) = self.namespaces.get_mut(&netns) {
            namespace.active = true;
            return;
        }
        if netns == 0 || self.unreachable.get(&netns).is_some_and(|(_, tried)| *tried == self.round) {
            return;
        }
        let why = if self.namespaces.len() >= MAX_NAMESPACES {
            format!("more than {MAX_NAMESPACES} namespaces")
        } else {
            match enter(netns) {
                Ok(Some(namespace)) => {
                    self.unreachable.remove(&netns);
                    self.namespaces.insert(netns, namespace);
                    return;
                }
                // Gone already (it lived for a connection or two): nothing is left to cover.
                Ok(None) => {
                    self.unreachable.remove(&netns);
                    return;
                }
                Err(error) => format!("{error:#}"),
            }
        };
        if self.unreachable.len() < MAX_UNREACHABLE || self.unreachable.contains_key(&netns) {
            self.unreachable.insert(netns, (why, self.round));
        }
    }

    /// Lets go of the namespaces that are gone, then dumps the covered namespaces that are due:
    /// active ones, ones whose last dump held wanted sockets, and all of them when `everything`
    /// (events were lost, so activity may have gone unseen).
    pub fn take(&mut self, everything: bool) -> Snapshot {
        let started = Instant::now();
        self.round += 1;
        let mut retry: Vec<(u64, u32)> = self.unreachable.iter().map(|(netns, (_, tried))| (*tried, *netns)).collect();
        retry.sort_unstable();
        for (_, netns) in retry.into_iter().take(RETRIES_PER_ROUND) {
            self.learn(netns);
        }
        let mut snapshot = Snapshot { released: self.release_gone(), ..Snapshot::default() };
        if self.round == 1 || everything {
            self.discover();
        }
        // A full accept queue may drop every SYN without an event in its namespace: the counter
        // makes it due.
        for (netns, namespace) in &mut self.namespaces {
            let Some(now) = namespace.netstat.as_mut().and_then(listen_overflows) else { continue };
            let dropped = namespace.listen_overflows.map_or(0, |before| now.saturating_sub(before));
            namespace.listen_overflows = Some(now);
            if dropped > 0 {
                namespace.active = true;
                snapshot.listen_overflows.insert(*netns, dropped);
            }
        }
        let plan = plan(
            self.namespaces.iter().map(|(netns, namespace)| Standing {
                netns: *netns,
                active: namespace.active,
                // Listeners with nothing waiting do not make a namespace due (its counter does).
                wanted_at_last_dump: namespace
                    .last
                    .as_ref()
                    .map(|last| last.iter().filter(|s| s.accept_queue.is_none_or(|(waiting, _)| waiting > 0)).count()),
                dumped_round: namespace.dumped_round,
            }),
            everything,
            self.per_round(),
        );
        snapshot.round.idle = plan.idle;
        snapshot.round.carried = plan.carried.len();
        for netns in &plan.carried {
            if let Some(last) = self.namespaces[netns].last.as_ref().filter(|last| !last.is_empty()) {
                snapshot.sockets.insert(*netns, Arc::clone(last));
            }
        }
        let mut gone = Vec::new();
        for netns in &plan.dump {
            let namespace = self.namespaces.get_mut(netns).expect("planned namespaces are covered");
            match dump(&namespace.socket) {
                Ok(sockets) => {
                    snapshot.round.sockets += sockets.len();
                    let sockets = Arc::new(sockets);
                    if !sockets.is_empty() {
                        snapshot.sockets.insert(*netns, Arc::clone(&sockets));
                    }
                    snapshot.fresh.insert(*netns);
                    namespace.last = Some(sockets);
                    namespace.dumped_round = self.round;
                }
                Err(error) => {
                    snapshot.failed.insert(*netns, format!("{error:#}"));
                    gone.push(*netns);
                }
            }
        }
        for namespace in self.namespaces.values_mut() {
            namespace.active = false;
        }
        for netns in gone.into_iter().filter(|netns| *netns != self.own_netns) {
            self.namespaces.remove(&netns);
        }
        let took = started.elapsed();
        if !plan.dump.is_empty() {
            self.cost_per_namespace = Some(smoothed(self.cost_per_namespace, took / plan.dump.len() as u32));
        }
        snapshot.round.namespaces = self.namespaces.len();
        snapshot.round.dumped = plan.dump.len();
        snapshot.round.micros = took.as_micros() as u64;
        snapshot.round.per_round = self.per_round().filter(|limit| *limit < plan.dump.len() + plan.carried.len());
        snapshot
    }

    /// How many namespaces fit in the budget at the measured pace ([`FIRST_ROUND_DUMPS`] before
    /// any measure). The kernel walks every socket of the host for each namespace's dump, so the
    /// pace depends on the whole box, and is learnt rather than assumed.
    fn per_round(&self) -> Option<usize> {
        let Some(cost) = self.cost_per_namespace else { return Some(FIRST_ROUND_DUMPS) };
        Some(((self.budget.as_nanos() / cost.as_nanos().max(1)) as usize).max(1))
    }

    /// Closes the sockets of namespaces that had no event this round and that nothing else refers
    /// to any more (our socket is then the last thing keeping them alive). The /proc scan runs
    /// only when some namespace was idle. Returns the released ones.
    fn release_gone(&mut self) -> Vec<u32> {
        let own = self.own_netns;
        let mut released = Vec::new();
        let idle: Vec<u32> =
            self.namespaces.iter().filter(|(netns, namespace)| **netns != own && !namespace.active).map(|(netns, _)| *netns).collect();
        if !idle.is_empty() {
            let live = netns::live();
            for netns in idle.into_iter().filter(|netns| !live.contains(netns)) {
                self.namespaces.remove(&netns);
                self.released += 1;
                released.push(netns);
            }
        }
        released
    }
}

/// This namespace's settings (the calling thread's), Linux's defaults for what cannot be read.
fn read_settings() -> NamespaceSettings {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut ports = range.split_whitespace().filter_map(|port| port.parse().ok());
    let seconds = |name: &str, default: u64| {
        let text = fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap_or_default();
        text.trim().parse().unwrap_or(default)
    };
    let default = NamespaceSettings::DEFAULT;
    NamespaceSettings {
        ephemeral_ports: (ports.next().unwrap_or(default.ephemeral_ports.0), ports.next().unwrap_or(default.ephemeral_ports.1)),
        fin_timeout_s: seconds("tcp_fin_timeout", default.fin_timeout_s),
        keepalive_time_s: seconds("tcp_keepalive_time", default.keepalive_time_s),
    }
}

impl Namespace {
    fn new(socket: Socket, name: Option<String>) -> Namespace {
        let mut netstat = fs::File::open("/proc/thread-self/net/netstat").ok();
        Namespace {
            socket,
            listen_overflows: netstat.as_mut().and_then(listen_overflows),
            netstat,
            settings: read_settings(),
            name,
            active: true,
            last: None,
            dumped_round: 0,
        }
    }
}

/// Where a namespace stands when a round begins.
struct Standing {
    netns: u32,
    active: bool,
    /// Sockets in wanted states at its last dump (`None`: never dumped).
    wanted_at_last_dump: Option<usize>,
    dumped_round: u64,
}

/// Which namespaces a round dumps, which it carries over, and how many it leaves idle.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    dump: Vec<u32>,
    carried: Vec<u32>,
    idle: usize,
}

/// Due are the namespaces with events since the last round, those never dumped and those whose
/// last dump held wanted sockets (they may have ended since), or all when `everything`; the others
/// cannot have changed, as every change into a wanted state fires an event. Over budget
/// (`per_round`), the least recently dumped go first.
fn plan(namespaces: impl Iterator<Item = Standing>, everything: bool, per_round: Option<usize>) -> Plan {
    let mut plan = Plan::default();
    let mut due: Vec<(u64, bool, u32)> = Vec::new();
    for standing in namespaces {
        if everything || standing.active || standing.wanted_at_last_dump.is_none_or(|wanted| wanted > 0) {
            due.push((standing.dumped_round, !standing.active, standing.netns));
        } else {
            plan.idle += 1;
        }
    }
    due.sort_unstable();
    let now = due.len().min(per_round.unwrap_or(usize::MAX));
    plan.carried = due.split_off(now).into_iter().map(|(_, _, netns)| netns).collect();
    plan.dump = due.into_iter().map(|(_, _, netns)| netns).collect();
    plan
}

/// A new measure folded into the running one: a quarter weight, so one slow round (a busy
/// moment of the box) does not halve the next rounds.
fn smoothed(running: Option<Duration>, measured: Duration) -> Duration {
    match running {
        Some(running) => (running * 3 + measured) / 4,
        None => measured,
    }
}

/// `TcpExt ListenOverflows` from a namespace's /proc/net/netstat (a header line of names, then a
/// line of values).
fn listen_overflows(file: &mut fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buffer = vec![0u8; 16 * 1024];
    let size = file.read_at(&mut buffer, 0).ok()?;
    netstat_field(&String::from_utf8_lossy(&buffer[..size]), "TcpExt", "ListenOverflows")
}

fn netstat_field(text: &str, group: &str, field: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|line| line.starts_with(&prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|name| name == field)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// Opens a sock_diag socket inside `netns` and names the namespace; `None` when it is gone.
fn enter(netns: u32) -> Result<Option<Namespace>> {
    netns::inside(netns, |name| Ok(Namespace::new(open_socket()?, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_of_dumps_is_learnt_and_one_slow_round_moves_it_only_a_quarter() {
        let ms = Duration::from_millis;
        assert_eq!(smoothed(None, ms(20)), ms(20));
        assert_eq!(smoothed(Some(ms(20)), ms(100)), ms(40));
        let mut snapshots = Snapshots::new(Duration::from_secs(2), None).unwrap();
        assert_eq!(snapshots.per_round(), Some(FIRST_ROUND_DUMPS), "no measure yet");
        snapshots.cost_per_namespace = Some(ms(20));
        assert_eq!(snapshots.per_round(), Some(10), "200 ms of budget at 20 ms a namespace");
        snapshots.cost_per_namespace = Some(Duration::from_secs(5));
        assert_eq!(snapshots.per_round(), Some(1), "never below one");
    }

    #[test]
    fn a_round_dumps_namespaces_with_events_or_wanted_sockets_and_over_budget_the_least_recently_dumped() {
        let standing = |netns, active, wanted_at_last_dump, dumped_round| Standing { netns, active, wanted_at_last_dump, dumped_round };
        let namespaces = || {
            [
                standing(1, false, Some(0), 5),  // idle, nothing wanted: skipped
                standing(2, true, Some(0), 5),   // an event came from it
                standing(3, false, Some(12), 3), // held TIME_WAIT sockets
                standing(4, false, None, 0),     // never dumped
            ]
            .into_iter()
        };
        assert_eq!(plan(namespaces(), false, None), Plan { dump: vec![4, 3, 2], carried: vec![], idle: 1 });
        assert_eq!(plan(namespaces(), true, None), Plan { dump: vec![4, 3, 2, 1], carried: vec![], idle: 0 });
        assert_eq!(plan(namespaces(), false, Some(2)), Plan { dump: vec![4, 3], carried: vec![2], idle: 1 });
        // Never dumped, one found by its event and one by looking: the event's goes first.
        let first = [standing(4, false, None, 0), standing(5, true, None, 0)].into_iter();
        assert_eq!(plan(first, false, Some(1)), Plan { dump: vec![5], carried: vec![4], idle: 0 });
    }

    #[test]
    fn listen_overflows_are_read_by_name_from_netstat_and_from_our_own_namespace() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 72 75\nIpExt: InOctets\nIpExt: 5\n";
        assert_eq!(netstat_field(text, "TcpExt", "ListenOverflows"), Some(72));
        assert_eq!(netstat_field(text, "TcpExt", "Nothing"), None);
        let mut own = fs::File::open("/proc/thread-self/net/netstat").unwrap();
        assert!(listen_overflows(&mut own).is_some(), "every kernel since 2.6 counts them");
    }
}
