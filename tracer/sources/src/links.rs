//! Link state beside the sockets: rtnetlink link notifications (`RTMGRP_LINK`) from every
//! namespace the tracer watches, turned into [`LinkChange`]s (a device added or removed, its
//! operational state down or up, its carrier lost or back). An interface reported "down" is often
//! traffic that died first; only a common time axis tells which came first.
//!
//! One thread owns a NETLINK_ROUTE socket per watched namespace (opened inside it), learns each
//! device's state from a dump, and reports changes as they arrive. Namespaces that are gone are
//! let go, like the snapshots' sockets (at once when the snapshots release them, else at the
//! next liveness check), so that watching a Kubernetes node's pods leaks nothing.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        mpsc::{Receiver, Sender, TryRecvError},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage, State},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr as NetlinkAddr};

use super::{clock, netns};
use tracer_model::{FastMap, FastSet};

/// `RTMGRP_LINK`: the multicast group of link notifications.
const RTMGRP_LINK: u32 = 1;
/// Namespaces watched at most (as for the snapshots).
const MAX_NAMESPACES: usize = 256;
/// How often the thread checks for namespaces that are gone.
const RELEASE_EVERY: Duration = Duration::from_secs(10);
/// The sequence number of our dumps; notifications carry 0.
const DUMP_SEQUENCE: u32 = 1;

pub use tracer_model::links::{LinkChange, LinkWhat};

/// What the tracer knows of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LinkState {
    name: String,
    operstate: State,
    carrier: bool,
}

/// The changes between what was known of a link and what a message says of it: at most one
/// (a message that takes a veth down also drops its carrier: that is "down").
fn change(before: Option<&LinkState>, after: Option<&LinkState>) -> Option<LinkWhat> {
    match (before, after) {
        (None, Some(_)) => Some(LinkWhat::Added),
        (Some(_), None) => Some(LinkWhat::Removed),
        (Some(before), Some(after)) => {
            let (was_up, is_up) = (before.operstate == State::Up, after.operstate == State::Up);
            if was_up != is_up {
                Some(if is_up { LinkWhat::Up } else { LinkWhat::Down })
            } else if before.carrier != after.carrier {
                Some(if after.carrier { LinkWhat::CarrierUp } else { LinkWhat::CarrierLost })
            } else {
                None
            }
        }
        (None, None) => None,
    }
}

fn operstate_name(state: State) -> &'static str {
    match state {
        State::Up => "up",
        State::Down => "down",
        State::LowerLayerDown => "lowerlayerdown",
        State::Dormant => "dormant",
        State::Testing => "testing",
        State::NotPresent => "notpresent",
        _ => "unknown",
    }
}

/// One rtnetlink message about a link: (ifindex, its state, or `None` when it was removed), and
/// whether it answers our dump rather than announcing a change.
fn parse(message: &NetlinkMessage<RouteNetlinkMessage>) -> Option<(u32, Option<LinkState>, bool)> {
    let from_dump = message.header.sequence_number == DUMP_SEQUENCE;
    let (link, removed): (&LinkMessage, bool) = match &message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => (link, false),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => (link, true),
        _ => return None,
    };
    if removed {
        return Some((link.header.index, None, from_dump));
    }
    let mut state = LinkState { name: String::new(), operstate: State::Unknown, carrier: false };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => state.name = name.clone(),
            LinkAttribute::OperState(operstate) => state.operstate = *operstate,
            LinkAttribute::Carrier(carrier) => state.carrier = *carrier != 0,
            _ => {}
        }
    }
    Some((link.header.index, Some(state), from_dump))
}

/// The links of one namespace and the socket that hears about them.
struct Watched {
    netns: u32,
    socket: Socket,
    links: FastMap<u32, LinkState>,
}

impl Watched {
    /// Reads every waiting message; appends the changes (none for what the dump tells).
    fn read(&mut self, changes: &mut Vec<LinkChange>) {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(size) = self.socket.recv(&mut &mut buffer[..], libc::MSG_DONTWAIT) {
            if size == 0 {
                break;
            }
            self.take(&buffer[..size], clock::monotonic_ns(), changes);
        }
    }

    /// Takes in one datagram of rtnetlink messages received at `at_ns`.
    fn take(&mut self, datagram: &[u8], at_ns: u64, changes: &mut Vec<LinkChange>) {
        let mut offset = 0;
        while offset < datagram.len() {
            let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..]) else { break };
            let length = message.header.length as usize;
            if let Some((ifindex, after, from_dump)) = parse(&message) {
                let before = self.links.get(&ifindex);
                let what = change(before, after.as_ref()).filter(|_| !from_dump);
                let known = after.as_ref().or(before).cloned();
                if let (Some(what), Some(known)) = (what, known) {
                    changes.push(LinkChange {
                        at_ns,
                        netns: self.netns,
                        ifindex,
                        ifname: known.name.clone(),
                        what,
                        operstate: if what == LinkWhat::Removed { "notpresent" } else { operstate_name(known.operstate) },
                        carrier: what != LinkWhat::Removed && known.carrier,
                    });
                }
                match after {
                    Some(after) => self.links.insert(ifindex, after),
                    None => self.links.remove(&ifindex),
                };
            }
            if length == 0 {
                break;
            }
            offset += (length + 3) & !3;
        }
    }
}

/// A NETLINK_ROUTE socket in the current namespace, joined to the link group, with a dump of the
/// links asked for.
fn open_socket() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&NetlinkAddr::new(0, RTMGRP_LINK))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = DUMP_SEQUENCE;
    let mut request = NetlinkMessage::new(header, NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())));
    request.finalize();
    let mut buffer = vec![0; request.buffer_len()];
    request.serialize(&mut buffer);
    socket.send_to(&buffer, &NetlinkAddr::new(0, 0), 0)?;
    Ok(socket)
}

/// What the event loop asks of the watcher thread.
enum Command {
    Watch(u32),
    /// The namespace is gone (the snapshots let it go): close its socket now.
    Release(u32),
}

/// The event loop's side: which namespaces to watch, and the changes.
pub struct Links {
    commands: Sender<Command>,
    /// An eventfd in the thread's poll set, so that a command is taken at once.
    wake: Arc<OwnedFd>,
    asked: FastSet<u32>,
    /// Whether namespaces events come from are watched too, or only those asked for so far.
    following: bool,
}

impl Links {
    /// Starts the watcher; changes arrive on `changes` (dropped and counted when it is full).
    pub fn start(changes: tokio::sync::mpsc::Sender<LinkChange>) -> Result<Links> {
        let (commands, received) = std::sync::mpsc::channel();
        // SAFETY: eventfd(2) with valid flags; the descriptor is owned right away.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            anyhow::bail!("eventfd: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
        let woken = wake.clone();
        std::thread::Builder::new().name("tracer-links".into()).spawn(move || run(received, woken, changes))?;
        Ok(Links { commands, wake, asked: FastSet::default(), following: true })
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            // SAFETY: an 8-byte write to our eventfd.
            unsafe { libc::write(self.wake.as_raw_fd(), (&1u64 as *const u64).cast(), 8) };
        }
    }

    /// Stops watching a namespace that is gone.
    pub fn release(&mut self, netns: u32) {
        self.asked.remove(&netns);
        self.send(Command::Release(netns));
    }

    /// Watches `netns` from now on. The thread ignores namespaces it watches already and, past
    /// [`MAX_NAMESPACES`], new ones; this side only spares it repeated asks.
    pub fn watch(&mut self, netns: u32) {
        if self.asked.len() >= MAX_NAMESPACES * 16 {
            self.asked.clear(); // namespaces come and go: ask again rather than grow
        }
        if netns != 0 && self.asked.insert(netns) {
            self.send(Command::Watch(netns));
        }
    }

    /// A namespace events came from: watched unless [`Links::stop_following`] was called.
    pub fn seen(&mut self, netns: u32) {
        if self.following {
            self.watch(netns);
        }
    }

    /// Watches no namespace beyond those asked for so far (`--netns`, or no rights to enter others).
    pub fn stop_following(&mut self) {
        self.following = false;
    }
}

/// The watcher thread: until the event loop goes away.
fn run(commands: Receiver<Command>, wake: Arc<OwnedFd>, changes: tokio::sync::mpsc::Sender<LinkChange>) {
    let own = netns::own();
    let mut watched: Vec<Watched> = Vec::new();
    let mut found = Vec::new();
    let mut released_at = Instant::now();
    loop {
        let mut drained = 0u64;
        // SAFETY: an 8-byte read from our non-blocking eventfd (EAGAIN when nothing is there).
        unsafe { libc::read(wake.as_raw_fd(), (&raw mut drained).cast(), 8) };
        // Releases first: a namespace asked for and gone by now is not worth entering.
        let mut asked = Vec::new();
        loop {
            match commands.try_recv() {
                Ok(Command::Release(netns)) => {
                    watched.retain(|w| w.netns != netns);
                    asked.retain(|asked| *asked != netns);
                }
                Ok(Command::Watch(netns)) => asked.push(netns),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        for netns in asked {
            if watched.len() >= MAX_NAMESPACES || watched.iter().any(|w| w.netns == netns) {
                continue;
            }
            let socket = if Some(netns) == own { open_socket().map(Some) } else { netns::inside(netns, |_| open_socket()) };
            match socket {
                Ok(Some(socket)) => watched.push(Watched { netns, socket, links: FastMap::default() }),
                Ok(None) => {} // gone already: nothing left to watch
                Err(error) => eprintln!("tracer: warning: link changes in netns {netns} are not watched: {error:#}"),
            }
        }
        let mut polls: Vec<libc::pollfd> =
            watched.iter().map(|w| libc::pollfd { fd: w.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: `polls` is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 100) };
        if ready > 0 {
            for (poll, watched) in polls.iter().zip(&mut watched) {
                if poll.revents != 0 {
                    watched.read(&mut found);
                }
            }
            for change in found.drain(..) {
                if changes.blocking_send(change).is_err() {
                    return;
                }
            }
        } else if ready == 0 && polls.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if released_at.elapsed() >= RELEASE_EVERY {
            released_at = Instant::now();
            let live = netns::live();
            watched.retain(|w| Some(w.netns) == own || live.contains(&w.netns));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkHeader;

    /// An RTM_NEWLINK (or, with `state` `None`, RTM_DELLINK) as the kernel sends it.
    fn message(ifindex: u32, name: &str, state: Option<(State, bool)>, sequence: u32) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header = LinkHeader { index: ifindex, ..LinkHeader::default() };
        link.attributes.push(LinkAttribute::IfName(name.into()));
        let payload = match state {
            Some((operstate, carrier)) => {
                link.attributes.push(LinkAttribute::OperState(operstate));
                link.attributes.push(LinkAttribute::Carrier(u8::from(carrier)));
                RouteNetlinkMessage::NewLink(link)
            }
            None => RouteNetlinkMessage::DelLink(link),
        };
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::from(payload));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn a_dump_teaches_and_notifications_change_one_thing_at_a_time() {
        let mut watched = Watched { netns: 7, socket: Socket::new(NETLINK_ROUTE).unwrap(), links: FastMap::default() };
        let mut changes = Vec::new();
        let mut dump = message(1, "lo", Some((State::Unknown, true)), DUMP_SEQUENCE);
        dump.extend(message(2, "veth0", Some((State::Up, true)), DUMP_SEQUENCE));
        watched.take(&dump, 10, &mut changes);
        assert!(changes.is_empty(), "the dump is what is, not a change: {changes:?}");

        watched.take(&message(2, "veth0", Some((State::LowerLayerDown, false)), 0), 20, &mut changes);
        watched.take(&message(2, "veth0", Some((State::LowerLayerDown, false)), 0), 21, &mut changes);
        watched.take(&message(2, "veth0", Some((State::Up, true)), 0), 30, &mut changes);
        watched.take(&message(1, "lo", Some((State::Unknown, false)), 0), 35, &mut changes);
        let mut both = message(3, "veth1", Some((State::Down, false)), 0);
        both.extend(message(3, "veth1", None, 0));
        watched.take(&both, 40, &mut changes);
        let seen: Vec<(u64, &str, LinkWhat, &str, bool)> =
            changes.iter().map(|c| (c.at_ns, c.ifname.as_str(), c.what, c.operstate, c.carrier)).collect();
        assert_eq!(
            seen,
            [
                (20, "veth0", LinkWhat::Down, "lowerlayerdown", false),
                (30, "veth0", LinkWhat::Up, "up", true),
                (35, "lo", LinkWhat::CarrierLost, "unknown", false),
                (40, "veth1", LinkWhat::Added, "down", false),
                (40, "veth1", LinkWhat::Removed, "notpresent", false),
            ]
        );
        assert!(changes.iter().all(|c| c.netns == 7));
        assert!(LinkWhat::Down.is_loss() && LinkWhat::CarrierLost.is_loss() && !LinkWhat::Up.is_loss());
    }
}
