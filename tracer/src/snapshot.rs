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
use std::{
    collections::BTreeMap,
    fs::{self, File},
    net::SocketAddr,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

use crate::{decode::TcpState, FastMap, FastSet};

/// At most this many namespaces get a netlink socket; more are reported as not covered.
const MAX_NAMESPACES: usize = 256;

/// One socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u32,
}

/// Per-namespace settings that shape the findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    pub ephemeral_ports: (u16, u16),
    pub fin_timeout_s: u64,
}

impl NamespaceSettings {
    pub fn ephemeral_port_count(&self) -> u64 {
        u64::from(self.ephemeral_ports.1.saturating_sub(self.ephemeral_ports.0)) + 1
    }

    fn read() -> NamespaceSettings {
        let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let mut ports = range.split_whitespace().filter_map(|port| port.parse().ok());
        let fin_timeout = fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout").unwrap_or_default();
        NamespaceSettings {
            ephemeral_ports: (ports.next().unwrap_or(32768), ports.next().unwrap_or(60999)),
            fin_timeout_s: fin_timeout.trim().parse().unwrap_or(60),
        }
    }
}

struct Namespace {
    socket: Socket,
    settings: NamespaceSettings,
    /// What it belongs to (see [`Snapshots::name`]).
    name: Option<String>,
    /// An event came from it since the last round.
    active: bool,
}

/// What one round of snapshots found, by namespace inode.
#[derive(Default, Debug)]
pub struct Snapshot {
    pub sockets: BTreeMap<u32, Vec<SocketRecord>>,
    /// Namespaces whose dump failed this round, with why.
    pub failed: BTreeMap<u32, String>,
}

pub struct Snapshots {
    namespaces: FastMap<u32, Namespace>,
    /// Namespaces we could not enter this round, with why (retried when they appear in events
    /// after it; forgotten each round, so deleted namespaces do not pile up here either).
    unreachable: FastMap<u32, String>,
    own_netns: u32,
    /// Namespaces let go because they were gone.
    released: u64,
}

impl Snapshots {
    /// Starts with the tracer's own namespace; fails when sock_diag is unusable here at all.
    pub fn new() -> Result<Snapshots> {
        let own_netns = namespace_inode(Path::new("/proc/self/ns/net")).context("cannot read /proc/self/ns/net")?;
        let mut snapshots = Snapshots { namespaces: FastMap::default(), unreachable: FastMap::default(), own_netns, released: 0 };
        let socket = open_socket().context("cannot open a NETLINK_SOCK_DIAG socket (CAP_NET_ADMIN missing?)")?;
        snapshots.namespaces.insert(own_netns, Namespace { socket, settings: NamespaceSettings::read(), name: None, active: true });
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

    /// Lets go of the namespaces that are gone, then dumps every covered namespace's TCP sockets.
    pub fn take(&mut self) -> Snapshot {
        self.release_gone();
        self.unreachable.clear();
        let mut snapshot = Snapshot::default();
        let mut gone = Vec::new();
        for (netns, namespace) in &self.namespaces {
            match dump(&namespace.socket) {
                Ok(sockets) => {
                    snapshot.sockets.insert(*netns, sockets);
                }
                Err(error) => {
                    snapshot.failed.insert(*netns, format!("{error:#}"));
                    gone.push(*netns);
                }
            }
        }
        for netns in gone.into_iter().filter(|netns| *netns != self.own_netns) {
            self.namespaces.remove(&netns);
        }
        snapshot
    }

    /// Closes the sockets of namespaces that had no event this round and that nothing else refers
    /// to any more (our socket is then the last thing keeping them alive). The /proc scan runs
    /// only when some namespace was idle.
    fn release_gone(&mut self) {
        let own = self.own_netns;
        let idle: Vec<u32> = self.namespaces.iter().filter(|(netns, namespace)| **netns != own && !namespace.active).map(|(netns, _)| *netns).collect();
        if !idle.is_empty() {
            let live = live_namespaces();
            for netns in idle.into_iter().filter(|netns| !live.contains(netns)) {
                self.namespaces.remove(&netns);
                self.released += 1;
            }
        }
        for namespace in self.namespaces.values_mut() {
            namespace.active = false;
        }
    }
}

/// Every network namespace a process or a /run/netns entry refers to.
fn live_namespaces() -> FastSet<u32> {
    namespace_files().filter_map(|path| namespace_inode(&path)).collect()
}

/// /run/netns entries first (named namespaces), then every process's.
fn namespace_files() -> impl Iterator<Item = PathBuf> {
    let named = fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|entry| entry.path());
    let processes = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|byte| byte.is_ascii_digit()))
        .map(|entry| entry.path().join("ns/net"));
    named.chain(processes)
}

fn namespace_inode(path: &Path) -> Option<u32> {
    fs::metadata(path).ok().map(|meta| meta.ino() as u32)
}

/// Finds a file that refers to namespace `netns`: a named one, or any process's.
fn find_namespace(netns: u32) -> Option<PathBuf> {
    namespace_files().find(|path| namespace_inode(path) == Some(netns))
}

/// Opens a sock_diag socket inside `netns` (from a thread that joins it, so the tracer itself
/// stays where it is) and reads the namespace's settings there.
fn enter(netns: u32) -> Result<Namespace> {
    let path = find_namespace(netns).context("no process or /run/netns entry is in it any more")?;
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let name = namespace_name(&path);
    std::thread::spawn(move || -> Result<Namespace> {
        // SAFETY: setns on a namespace descriptor we own, affecting only this short-lived thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(Namespace { socket: open_socket()?, settings: NamespaceSettings::read(), name, active: true })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

/// A name for the namespace `path` refers to: the /run/netns entry's, or "pid P (comm), cgroup C"
/// for a process's (its cgroup path; on Kubernetes it holds the pod UID and container ID).
fn namespace_name(path: &Path) -> Option<String> {
    if let Ok(named) = path.strip_prefix("/run/netns") {
        return Some(named.to_string_lossy().into_owned());
    }
    let process = path.parent()?.parent()?;
    let pid = process.file_name()?.to_string_lossy().into_owned();
    let comm = fs::read_to_string(process.join("comm")).unwrap_or_default();
    let cgroups = fs::read_to_string(process.join("cgroup")).unwrap_or_default();
    // cgroup v2's single line, or (v1) the first hierarchy's path.
    let cgroup = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .or_else(|| cgroups.lines().next().and_then(|line| line.splitn(3, ':').nth(2)))
        .unwrap_or("?");
    Some(format!("pid {pid} ({}), cgroup {cgroup}", comm.trim()))
}

fn open_socket() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    Ok(socket)
}

fn dump(socket: &Socket) -> Result<Vec<SocketRecord>> {
    let mut sockets = Vec::new();
    for (family, socket_id) in [(AF_INET, SocketId::new_v4()), (AF_INET6, SocketId::new_v6())] {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut buffer = vec![0; request.buffer_len()];
        request.serialize(&mut buffer);
        socket.send(&buffer, 0)?;
        receive_dump(socket, &mut sockets)?;
    }
    Ok(sockets)
}

fn receive_dump(socket: &Socket, sockets: &mut Vec<SocketRecord>) -> Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = <NetlinkMessage<SockDiagMessage>>::deserialize(&buffer[offset..size])
                .map_err(|error| anyhow::anyhow!("undecodable sock_diag reply: {error}"))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let header = &response.header;
                    if let Some(state) = TcpState::from_kernel(header.state) {
                        let id = &header.socket_id;
                        sockets.push(SocketRecord {
                            state,
                            local: SocketAddr::new(id.source_address, id.source_port),
                            remote: SocketAddr::new(id.destination_address, id.destination_port),
                            inode: header.inode,
                        });
                    }
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(error) => bail!("sock_diag refused the dump: {error:?}"),
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

/// The processes holding these socket inodes (a /proc scan: only for the few stuck sockets).
pub fn owners(inodes: &FastSet<u32>) -> FastMap<u32, (u32, String)> {
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
    fn a_namespace_is_named_by_its_run_netns_entry_or_by_a_process_and_its_cgroup() {
        assert_eq!(namespace_name(Path::new("/run/netns/cni-1234")).as_deref(), Some("cni-1234"));
        let pid = std::process::id();
        let name = namespace_name(&PathBuf::from(format!("/proc/{pid}/ns/net"))).expect("a process's namespace has a name");
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(name.starts_with(&format!("pid {pid} ({}), cgroup /", comm.trim())), "{name}");
    }
}
