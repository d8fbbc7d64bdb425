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
    collections::{BTreeMap, BTreeSet},
    fs,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{NetlinkBuffer, NetlinkHeader, NetlinkMessage, Parseable, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags},
    SockDiagMessage, SOCK_DIAG_BY_FAMILY,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

use super::netns;
use crate::{decode::TcpState, FastMap, FastSet};

/// At most this many namespaces get a netlink socket; more are reported as not covered.
const MAX_NAMESPACES: usize = 256;

/// The states the findings read from a snapshot (stuck sockets, TIME_WAIT populations, the fate
/// of orphaned FIN_WAIT2 sockets, and listeners with their accept queues); the others are counted
/// from events.
pub const WANTED_STATES: [TcpState; 4] = [TcpState::TimeWait, TcpState::FinWait2, TcpState::CloseWait, TcpState::Listen];

/// The dumps may take a tenth of the summary interval (a tenth of a core, on the blocking thread)
/// before they are spread over rounds.
const BUDGET_SHARE: u32 = 10;

/// One socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u32,
    /// For a listener: connections waiting in its accept queue, and its backlog.
    pub accept_queue: Option<(u32, u32)>,
}

/// Per-namespace settings that shape the findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    pub ephemeral_ports: (u16, u16),
    pub fin_timeout_s: u64,
}

impl NamespaceSettings {
    /// Linux's defaults (`ip_local_port_range` 32768 60999, `tcp_fin_timeout` 60): what a
    /// namespace whose settings cannot be read is taken to have.
    pub const DEFAULT: NamespaceSettings = NamespaceSettings { ephemeral_ports: (32768, 60999), fin_timeout_s: 60 };

    pub fn ephemeral_port_count(&self) -> u64 {
        u64::from(self.ephemeral_ports.1.saturating_sub(self.ephemeral_ports.0)) + 1
    }

    fn read() -> NamespaceSettings {
        let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let mut ports = range.split_whitespace().filter_map(|port| port.parse().ok());
        let fin_timeout = fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout").unwrap_or_default();
        let default = NamespaceSettings::DEFAULT;
        NamespaceSettings {
            ephemeral_ports: (ports.next().unwrap_or(default.ephemeral_ports.0), ports.next().unwrap_or(default.ephemeral_ports.1)),
            fin_timeout_s: fin_timeout.trim().parse().unwrap_or(default.fin_timeout_s),
        }
    }
}

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

/// What one round of snapshots found, by namespace inode.
#[derive(Default, Debug)]
pub struct Snapshot {
    /// Sockets in [`WANTED_STATES`] of every covered namespace that has any: dumped this round,
    /// or carried over from an earlier one (see `fresh`). Idle namespaces with none are absent.
    pub sockets: BTreeMap<u32, Arc<Vec<SocketRecord>>>,
    /// The namespaces dumped this round; only these say anything about what ended since.
    pub fresh: BTreeSet<u32>,
    /// Namespaces whose dump failed this round, with why.
    pub failed: BTreeMap<u32, String>,
    /// Namespaces let go this round because they are gone.
    pub released: Vec<u32>,
    /// Connection attempts each namespace's kernel dropped since its last round because an
    /// accept queue was full (`TcpExt ListenOverflows`; only namespaces with drops).
    pub listen_overflows: BTreeMap<u32, u64>,
    pub round: RoundCost,
    /// Who holds the sockets a finding may name (see [`Snapshot::resolve_owners`]).
    pub owners: Owners,
    /// Inodes looked up this round that no process holds (an orphan, or closed meanwhile).
    pub unowned: Vec<u32>,
}

/// Socket inode → (pid, comm) of the process holding it.
pub type Owners = FastMap<u32, (u32, String)>;

/// Most socket owners looked up in one round: each lookup is a walk of `/proc/*/fd`.
const MAX_OWNER_LOOKUPS: usize = 256;

/// What a round of dumps cost, for the header, JSON and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoundCost {
    /// Namespaces covered.
    pub namespaces: usize,
    pub dumped: usize,
    /// Idle namespaces whose last dump held nothing wanted: nothing to ask.
    pub idle: usize,
    /// Due but left for a later round (over budget); their last results stand in.
    pub carried: usize,
    /// Sockets the kernel returned.
    pub sockets: usize,
    pub micros: u64,
    /// At most this many namespaces per round, while over budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_round: Option<usize>,
}

pub struct Snapshots {
    namespaces: FastMap<u32, Namespace>,
    /// Namespaces we could not enter this round, with why (retried when they appear in events
    /// after it; forgotten each round, so deleted namespaces do not pile up here either).
    unreachable: FastMap<u32, String>,
    own_netns: u32,
    /// Namespaces let go because they were gone.
    released: u64,
    /// What the dumps of one round may take.
    budget: Duration,
    /// What one namespace's dump takes, smoothed over rounds (`None` before the first dump).
    cost_per_namespace: Option<Duration>,
    round: u64,
}

impl Snapshots {
    /// Starts with the tracer's own namespace; fails when sock_diag is unusable here at all. The
    /// dumps of one round should take at most a tenth of `interval`.
    pub fn new(interval: Duration) -> Result<Snapshots> {
        let own_netns = netns::own().context("cannot read /proc/self/ns/net")?;
        let mut snapshots = Snapshots {
            namespaces: FastMap::default(),
            unreachable: FastMap::default(),
            own_netns,
            released: 0,
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

    /// Namespaces let go since the start because they were gone.
    pub fn released(&self) -> u64 {
        self.released
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
        self.settings(self.own_netns).unwrap_or_else(NamespaceSettings::read)
    }

    /// Makes sure `netns` (seen in an event) is covered from the next round on, and marks it
    /// active for this round.
    pub fn learn(&mut self, netns: u32) {
        if let Some(namespace) = self.namespaces.get_mut(&netns) {
            namespace.active = true;
            return;
        }
        if netns == 0 || self.unreachable.contains_key(&netns) {
            return;
        }
        if self.namespaces.len() >= MAX_NAMESPACES {
            self.unreachable.insert(netns, format!("more than {MAX_NAMESPACES} namespaces"));
            return;
        }
        match enter(netns) {
            Ok(namespace) => {
                self.namespaces.insert(netns, namespace);
            }
            Err(error) => {
                self.unreachable.insert(netns, format!("{error:#}"));
            }
        }
    }

    /// Lets go of the namespaces that are gone, then dumps the covered namespaces that are due:
    /// active ones, ones whose last dump held wanted sockets, and all of them when `everything`
    /// (events were lost, so activity may have gone unseen).
    pub fn take(&mut self, everything: bool) -> Snapshot {
        let started = Instant::now();
        self.round += 1;
        self.unreachable.clear();
        let mut snapshot = Snapshot { released: self.release_gone(), ..Snapshot::default() };
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

    /// How many namespaces fit in the budget at the measured pace (`None`: no measure yet). The
    /// kernel walks every socket of the host for each namespace's dump, so the pace depends on
    /// the whole box, and is learnt rather than assumed.
    fn per_round(&self) -> Option<usize> {
        let cost = self.cost_per_namespace?.as_nanos().max(1);
        Some(((self.budget.as_nanos() / cost) as usize).max(1))
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

impl Namespace {
    fn new(socket: Socket, name: Option<String>) -> Namespace {
        let mut netstat = fs::File::open("/proc/thread-self/net/netstat").ok();
        Namespace {
            socket,
            listen_overflows: netstat.as_mut().and_then(listen_overflows),
            netstat,
            settings: NamespaceSettings::read(),
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
    let mut due: Vec<(u64, u32)> = Vec::new();
    for standing in namespaces {
        if everything || standing.active || standing.wanted_at_last_dump.is_none_or(|wanted| wanted > 0) {
            due.push((standing.dumped_round, standing.netns));
        } else {
            plan.idle += 1;
        }
    }
    due.sort_unstable();
    let now = due.len().min(per_round.unwrap_or(usize::MAX));
    plan.carried = due.split_off(now).into_iter().map(|(_, netns)| netns).collect();
    plan.dump = due.into_iter().map(|(_, netns)| netns).collect();
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

/// Opens a sock_diag socket inside `netns` and names the namespace.
fn enter(netns: u32) -> Result<Namespace> {
    netns::inside(netns, |name| Ok(Namespace::new(open_socket()?, name)))?.context("no process or /run/netns entry is in it any more")
}

fn open_socket() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    Ok(socket)
}

/// [`WANTED_STATES`] as sock_diag's `idiag_states` bits.
fn wanted_mask() -> StateFlags {
    WANTED_STATES.iter().fold(StateFlags::empty(), |mask, state| mask | StateFlags::from_bits_retain(1 << *state as u32))
}

/// Dumps the namespace's TCP sockets in [`WANTED_STATES`].
///
/// The kernel walks the host's whole established hash for every dump, whatever namespace asks
/// (about 20 ms with 200 000 sockets here), so the legacy TCPDIAG_GETSOCK request, which covers
/// IPv4 and IPv6 in one walk, goes first; a kernel that refuses it gets one request per family.
fn dump(socket: &Socket) -> Result<Vec<SocketRecord>> {
    dump_both_families(socket).or_else(|_| dump_by_family(socket))
}

fn dump_both_families(socket: &Socket) -> Result<Vec<SocketRecord>> {
    let mut sockets = Vec::new();
    socket.send(&legacy_request(), 0)?;
    receive_dump(socket, &mut sockets, TCPDIAG_GETSOCK)?;
    Ok(sockets)
}

fn dump_by_family(socket: &Socket) -> Result<Vec<SocketRecord>> {
    let mut sockets = Vec::new();
    for (family, socket_id) in [(AF_INET, SocketId::new_v4()), (AF_INET6, SocketId::new_v6())] {
        socket.send(&inet_request(family, socket_id, wanted_mask(), NLM_F_REQUEST | NLM_F_DUMP), 0)?;
        receive_dump(socket, &mut sockets, SOCK_DIAG_BY_FAMILY)?;
    }
    Ok(sockets)
}

fn inet_request(family: u8, socket_id: SocketId, states: StateFlags, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest { family, protocol: IPPROTO_TCP, extensions: ExtensionFlags::empty(), states, socket_id })
            .into(),
    );
    request.finalize();
    let mut buffer = vec![0; request.buffer_len()];
    request.serialize(&mut buffer);
    buffer
}

impl Snapshots {
    /// Looks up one socket of a covered namespace by its 4-tuple (the kernel's hash lookup, not a
    /// walk): its state, `None` when it is gone, an error when the namespace is not covered.
    pub fn look_up(&self, netns: u32, local: SocketAddr, remote: SocketAddr) -> Result<Option<TcpState>> {
        let namespace = self.namespaces.get(&netns).context("namespace not covered")?;
        let socket_id = SocketId {
            source_port: local.port(),
            destination_port: remote.port(),
            source_address: local.ip(),
            destination_address: remote.ip(),
            interface_id: 0,
            cookie: [0xff; 8], // INET_DIAG_NOCOOKIE: any socket on that tuple
        };
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        namespace.socket.send(&inet_request(family, socket_id, StateFlags::all(), NLM_F_REQUEST), 0)?;
        let mut buffer = vec![0u8; 4096];
        let size = namespace.socket.recv(&mut &mut buffer[..], 0)?;
        decode_lookup(&buffer[..size])
    }
}

/// The answer to one socket's lookup: the socket, or an error message (ENOENT: there is none).
fn decode_lookup(datagram: &[u8]) -> Result<Option<TcpState>> {
    let message = NetlinkBuffer::new_checked(datagram).map_err(|error| anyhow::anyhow!("undecodable sock_diag reply: {error}"))?;
    match message.message_type() {
        NLMSG_ERROR => {
            let code = message.payload().get(..4).map_or(0, |code| i32::from_ne_bytes(code.try_into().expect("four bytes")));
            if code == -libc::ENOENT {
                return Ok(None);
            }
            bail!("sock_diag refused the lookup: {}", std::io::Error::from_raw_os_error(-code))
        }
        SOCK_DIAG_BY_FAMILY => {
            let header =
                InetResponseHeader::parse(message.payload()).map_err(|error| anyhow::anyhow!("undecodable sock_diag socket: {error}"))?;
            Ok(TcpState::from_kernel(header.state))
        }
        other => bail!("unexpected sock_diag reply type {other}"),
    }
}

/// `nlmsg_type` of the legacy inet_diag request and its answers (`linux/inet_diag.h`).
const TCPDIAG_GETSOCK: u16 = 18;

/// A TCPDIAG_GETSOCK dump request: a netlink header and a `struct inet_diag_req` (family, three
/// lengths, a zero socket id of 48 bytes, the state mask, and `idiag_dbs`). The crate speaks only
/// SOCK_DIAG_BY_FAMILY, whose answers are parsed the same way.
fn legacy_request() -> Vec<u8> {
    const REQUEST_LEN: u32 = 16 + 60;
    let mut request = Vec::with_capacity(REQUEST_LEN as usize);
    request.extend_from_slice(&REQUEST_LEN.to_ne_bytes());
    request.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&[0; 8]); // sequence number and port id
    request.extend_from_slice(&[AF_INET, 0, 0, 0]);
    request.extend_from_slice(&[0; 48]);
    request.extend_from_slice(&wanted_mask().bits().to_ne_bytes());
    request.extend_from_slice(&[0; 4]);
    request
}

/// Reads one dump's answers (of netlink type `answer`) up to its end.
fn receive_dump(socket: &Socket, sockets: &mut Vec<SocketRecord>, answer: u16) -> Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        if decode_answers(&buffer[..size], answer, sockets)? {
            return Ok(());
        }
    }
}

/// Decodes one datagram of a dump's answers into `sockets`; true once the dump is done. Sockets
/// in states the tracer does not know are skipped; an error message from the kernel is an error.
fn decode_answers(datagram: &[u8], answer: u16, sockets: &mut Vec<SocketRecord>) -> Result<bool> {
    let mut offset = 0;
    while offset < datagram.len() {
        let message =
            NetlinkBuffer::new_checked(&datagram[offset..]).map_err(|error| anyhow::anyhow!("undecodable sock_diag reply: {error}"))?;
        let length = message.length() as usize;
        match message.message_type() {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = message.payload().get(..4).map_or(0, |code| i32::from_ne_bytes(code.try_into().expect("four bytes")));
                bail!("sock_diag refused the dump: {}", std::io::Error::from_raw_os_error(-code));
            }
            kind if kind == answer => {
                let header = InetResponseHeader::parse(message.payload())
                    .map_err(|error| anyhow::anyhow!("undecodable sock_diag socket: {error}"))?;
                if let Some(state) = TcpState::from_kernel(header.state) {
                    let id = &header.socket_id;
                    sockets.push(SocketRecord {
                        state,
                        local: SocketAddr::new(id.source_address, id.source_port),
                        remote: SocketAddr::new(id.destination_address, id.destination_port),
                        inode: header.inode,
                        accept_queue: (state == TcpState::Listen).then_some((header.recv_queue, header.send_queue)),
                    });
                }
            }
            _ => {}
        }
        if length == 0 {
            break;
        }
        offset += (length + 3) & !3;
    }
    Ok(false)
}

impl Snapshot {
    /// Finds the processes holding the sockets a finding may name (CLOSE_WAIT and FIN_WAIT2
    /// sockets, listeners with connections waiting), but for the inodes in `known`. It walks
    /// `/proc`, so it runs with the dump on its blocking thread, never on the event loop.
    pub fn resolve_owners(&mut self, known: &FastSet<u32>) {
        let wanted: FastSet<u32> = self
            .sockets
            .values()
            .flat_map(|sockets| sockets.iter())
            .filter(|socket| match socket.state {
                TcpState::CloseWait | TcpState::FinWait2 => true,
                TcpState::Listen => socket.accept_queue.is_some_and(|(waiting, _)| waiting > 0),
                _ => false,
            })
            .map(|socket| socket.inode)
            .filter(|inode| *inode != 0 && !known.contains(inode))
            .take(MAX_OWNER_LOOKUPS)
            .collect();
        self.owners = owners(&wanted);
        self.unowned = wanted.into_iter().filter(|inode| !self.owners.contains_key(inode)).collect();
    }

    /// Every socket inode the snapshot holds (dumped or carried over).
    pub fn inodes(&self) -> FastSet<u32> {
        self.sockets.values().flat_map(|sockets| sockets.iter().map(|socket| socket.inode)).collect()
    }
}

/// The processes holding these socket inodes (a /proc scan).
fn owners(inodes: &FastSet<u32>) -> Owners {
    let mut found = FastMap::default();
    if inodes.is_empty() {
        return found;
    }
    for process in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<u32>() else { continue };
        for fd in fs::read_dir(process.path().join("fd")).into_iter().flatten().flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            let Some(inode) = target.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']')) else { continue };
            let Ok(inode) = inode.parse::<u32>() else { continue };
            if inodes.contains(&inode) && !found.contains_key(&inode) {
                let comm = fs::read_to_string(process.path().join("comm")).unwrap_or_default();
                found.insert(inode, (pid, comm.trim().to_string()));
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_socket_is_found_once_and_what_is_known_is_not_looked_up_again() {
        use std::{net::TcpListener, os::fd::AsRawFd};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(client); // the accepted socket is now in CLOSE_WAIT, held by this process
                      // SAFETY: fstat on a descriptor we own, into a zeroed stat.
        let inode = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(accepted.as_raw_fd(), &mut stat), 0);
            stat.st_ino as u32
        };
        let record = |state, inode| SocketRecord {
            state,
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
            inode,
            accept_queue: None,
        };
        let mut snapshot = Snapshot::default();
        snapshot
            .sockets
            .insert(1, Arc::new(vec![record(TcpState::CloseWait, inode), record(TcpState::TimeWait, 0), record(TcpState::FinWait2, 1)]));
        snapshot.resolve_owners(&FastSet::default());
        let comm = fs::read_to_string("/proc/self/comm").unwrap_or_default();
        assert_eq!(snapshot.owners.get(&inode), Some(&(std::process::id(), comm.trim().to_string())));
        assert_eq!(snapshot.unowned, [1], "a FIN_WAIT2 orphan is held by nobody: remembered as such");
        snapshot.resolve_owners(&[inode, 1].into_iter().collect());
        assert!(snapshot.owners.is_empty() && snapshot.unowned.is_empty(), "known inodes are not looked up again");
    }

    #[test]
    fn the_pace_of_dumps_is_learnt_and_one_slow_round_moves_it_only_a_quarter() {
        let ms = Duration::from_millis;
        assert_eq!(smoothed(None, ms(20)), ms(20));
        assert_eq!(smoothed(Some(ms(20)), ms(100)), ms(40));
        let mut snapshots = Snapshots::new(Duration::from_secs(2)).unwrap();
        assert_eq!(snapshots.per_round(), None, "no measure yet: no limit");
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
        assert_eq!(plan(namespaces(), true, None), Plan { dump: vec![4, 3, 1, 2], carried: vec![], idle: 0 });
        assert_eq!(plan(namespaces(), false, Some(2)), Plan { dump: vec![4, 3], carried: vec![2], idle: 1 });
    }

    #[test]
    fn one_walk_for_both_families_finds_what_a_request_per_family_finds() {
        // sock_diag answers anyone for their own namespace: no root needed.
        let listener = std::net::TcpListener::bind("[::]:0").unwrap();
        let mut held = Vec::new();
        for ip in ["127.0.0.1", "::1"] {
            let client = std::net::TcpStream::connect((ip, listener.local_addr().unwrap().port())).unwrap();
            drop(client); // the server's end: CLOSE_WAIT
            held.push(listener.accept().unwrap().0);
        }
        std::thread::sleep(Duration::from_millis(50));
        let socket = open_socket().unwrap();
        let ours = |sockets: Vec<SocketRecord>| {
            let mut ours: Vec<_> = sockets
                .into_iter()
                .filter(|s| s.local.port() == listener.local_addr().unwrap().port() && s.state != TcpState::Listen)
                .collect();
            ours.sort_by_key(|s| (s.local, s.remote));
            ours
        };
        let both = ours(dump_both_families(&socket).unwrap());
        assert_eq!(both.len(), 2, "the IPv4-mapped and the IPv6 CLOSE_WAIT socket: {both:?}");
        assert!(both.iter().all(|s| s.state == TcpState::CloseWait && s.inode != 0), "{both:?}");
        assert_eq!(both, ours(dump_by_family(&socket).unwrap()));
    }

    /// One netlink message of type `kind` with `payload`, padded to four bytes.
    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&[0; 10]);
        bytes.extend_from_slice(payload);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    /// A `struct inet_diag_msg` as the kernel sends it (ports and addresses in network order).
    fn inet_diag_msg(family: u8, state: u8, local: SocketAddr, remote: SocketAddr, inode: u32) -> Vec<u8> {
        let address = |address: SocketAddr| match address.ip() {
            std::net::IpAddr::V4(ip) => {
                let mut bytes = [0; 16];
                bytes[..4].copy_from_slice(&ip.octets());
                bytes
            }
            std::net::IpAddr::V6(ip) => ip.octets(),
        };
        let mut bytes = vec![family, state, 0, 0];
        bytes.extend_from_slice(&local.port().to_be_bytes());
        bytes.extend_from_slice(&remote.port().to_be_bytes());
        bytes.extend_from_slice(&address(local));
        bytes.extend_from_slice(&address(remote));
        bytes.extend_from_slice(&[0; 4]); // interface
        bytes.extend_from_slice(&[0xff; 8]); // cookie
        bytes.extend_from_slice(&[0; 16]); // expires, rqueue, wqueue, uid
        bytes.extend_from_slice(&inode.to_ne_bytes());
        bytes
    }

    #[test]
    fn a_dump_datagram_decodes_to_sockets_until_done_and_a_kernel_error_is_an_error() {
        let server: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let client: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let (server6, client6): (SocketAddr, SocketAddr) = ("[fd00::2]:443".parse().unwrap(), "[fd00::1]:50000".parse().unwrap());
        let mut datagram = message(TCPDIAG_GETSOCK, &inet_diag_msg(AF_INET, 6, server, client, 1234));
        datagram.extend(message(TCPDIAG_GETSOCK, &inet_diag_msg(AF_INET6, 8, server6, client6, 99)));
        datagram.extend(message(TCPDIAG_GETSOCK, &inet_diag_msg(AF_INET, 42, server, client, 7))); // no such state
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, &inet_diag_msg(AF_INET, 6, client, server, 8))); // not this dump's type
        let mut sockets = Vec::new();
        assert!(!decode_answers(&datagram, TCPDIAG_GETSOCK, &mut sockets).unwrap(), "no NLMSG_DONE yet");
        let expected = [
            SocketRecord { state: TcpState::TimeWait, local: server, remote: client, inode: 1234, accept_queue: None },
            SocketRecord { state: TcpState::CloseWait, local: server6, remote: client6, inode: 99, accept_queue: None },
        ];
        assert_eq!(sockets, expected);

        let done = message(NLMSG_DONE, &[0; 4]);
        assert!(decode_answers(&done, TCPDIAG_GETSOCK, &mut sockets).unwrap());
        let refused = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        let error = decode_answers(&refused, TCPDIAG_GETSOCK, &mut sockets).unwrap_err().to_string();
        assert!(error.contains("refused the dump") && error.contains("not permitted"), "{error}");
        assert!(decode_answers(&[1, 2, 3], TCPDIAG_GETSOCK, &mut sockets).is_err(), "a truncated header is an error");
    }

    #[test]
    fn a_lookup_by_tuple_finds_a_live_socket_and_says_none_once_it_is_gone() {
        // sock_diag answers anyone for their own namespace: no root needed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let snapshots = Snapshots::new(Duration::from_secs(10)).unwrap();
        let netns = snapshots.own_netns;
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert_eq!(snapshots.look_up(netns, local, remote).unwrap(), Some(TcpState::Established));
        assert_eq!(snapshots.look_up(netns, remote, local).unwrap(), Some(TcpState::Established), "the server's end");
        let stranger: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(snapshots.look_up(netns, local, stranger).unwrap(), None);
        assert!(snapshots.look_up(netns + 1, local, remote).is_err(), "a namespace not covered");
        drop((client, server));
    }

    #[test]
    fn the_kernel_is_asked_only_for_the_wanted_states() {
        let mask = wanted_mask();
        assert_eq!(mask, StateFlags::TIME_WAIT | StateFlags::FIN_WAIT2 | StateFlags::CLOSE_WAIT | StateFlags::LISTEN);
    }

    #[test]
    fn listen_overflows_are_read_by_name_from_netstat_and_from_our_own_namespace() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 72 75\nIpExt: InOctets\nIpExt: 5\n";
        assert_eq!(netstat_field(text, "TcpExt", "ListenOverflows"), Some(72));
        assert_eq!(netstat_field(text, "TcpExt", "Nothing"), None);
        let mut own = fs::File::open("/proc/thread-self/net/netstat").unwrap();
        assert!(listen_overflows(&mut own).is_some(), "every kernel since 2.6 counts them");
    }

    #[test]
    fn a_listener_is_dumped_with_its_accept_queue_and_backlog() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Two connections the application has not accepted yet.
        let _clients: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        let sockets = dump(&open_socket().unwrap()).unwrap();
        let ours = sockets.iter().find(|s| s.state == TcpState::Listen && s.local.port() == port).expect("the listener");
        assert_eq!(ours.accept_queue, Some((2, 128)), "std's backlog is 128: {ours:?}");
    }
}
