//! Test fixtures shared by the unit tests of every layer: the events of one socket as the kernel
//! would send them, a process, and a reset reason table.
use std::{collections::BTreeMap, net::SocketAddr};

use tracer_common::EventKind;

use super::{Ended, Observation, Tracker, TrackerConfig};
use crate::{
    decode::{Comm, Event, Handshake, IcmpError, Process, Segment, SocketId, SocketTotals, TcpState},
    find::{Finding, FindingKind, PeerKey},
};

pub const NETNS: u32 = 4026531840;

/// Builds the events of one socket, as the kernel would send them.
pub struct Script {
    pub socket: SocketId,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Script {
    pub fn new(address: u64, local: &str, remote: &str) -> Script {
        Script { socket: SocketId { netns: NETNS, address }, local: local.parse().unwrap(), remote: remote.parse().unwrap() }
    }

    fn event(&self, kind: EventKind, old: Option<TcpState>, state: Option<TcpState>, at: u64) -> Event {
        Event {
            kind,
            timestamp_ns: at,
            socket: self.socket,
            local: self.local,
            remote: self.remote,
            old_state: old,
            state,
            reset_reason: None,
            tw_status: None,
            process: None,
            totals: None,
            segment: None,
            drop: None,
            idle: None,
            keepalive_jiffies: None,
            icmp: None,
            handshake: None,
            by_exiting_process: false,
            resent: None,
        }
    }

    pub fn state(&self, old: TcpState, new: TcpState, at: u64) -> Event {
        self.event(EventKind::StateChange, Some(old), Some(new), at)
    }

    /// A transition made by a system call of pid 4242.
    pub fn syscall(&self, old: TcpState, new: TcpState, at: u64) -> Event {
        Event { process: Some(process()), ..self.state(old, new, at) }
    }

    /// A CLOSE as the tp_btf hooks report it: with the socket's counters, which say whether the
    /// peer's FIN had come.
    pub fn closed(&self, old: TcpState, peer_fin: bool, at: u64) -> Event {
        let totals = SocketTotals { bytes_sent: 0, bytes_received: u64::from(peer_fin), retransmits: 0, error: 0, peer_fin };
        Event { totals: Some(totals), ..self.state(old, TcpState::Close, at) }
    }

    pub fn reset_sent(&self, state: TcpState, reason: Option<u32>, at: u64) -> Event {
        Event { reset_reason: reason, ..self.event(EventKind::ResetSent, None, Some(state), at) }
    }

    pub fn reset_received(&self, at: u64) -> Event {
        self.event(EventKind::ResetReceived, None, None, at)
    }

    /// A segment from the peer as `tcp_probe` reports it: its TTL, and whether it is a RST.
    pub fn segment(&self, ttl: u8, reset: bool, at: u64) -> Event {
        let segment = Segment { ttl, ip_id: 7, window: 512, length: if reset { 0 } else { 100 }, flags: if reset { 0x04 } else { 0x18 } };
        Event { segment: Some(segment), ..self.event(EventKind::Segment, None, Some(TcpState::Established), at) }
    }

    /// A RST for this socket as `netif_receive_skb` reports it, on its way in: no socket yet,
    /// the packet's addresses (which are the socket's tuple), its TTL.
    pub fn reset_arrived(&self, ttl: u8, at: u64) -> Event {
        let segment = Segment { ttl, ip_id: 0, window: 0, length: 0, flags: 0x14 };
        Event {
            socket: SocketId { netns: self.socket.netns, address: 0 },
            segment: Some(segment),
            ..self.event(EventKind::ResetArrived, None, None, at)
        }
    }

    /// The same RST carrying the reference the kernel held for its source: a handshake from the
    /// peer's address with `handshake_ttl` at `seen`.
    pub fn reset_arrived_after_handshake(&self, ttl: u8, handshake_ttl: u8, seen: u64, at: u64) -> Event {
        Event { handshake: Some(Handshake { ttl: handshake_ttl, seen_ns: seen, changed_ns: None }), ..self.reset_arrived(ttl, at) }
    }

    /// An ICMP host unreachable about this socket's segments, from `sender`, as
    /// `netif_receive_skb` reports it: no socket, the quoted segment's tuple (the socket's).
    pub fn icmp_arrived(&self, sender: &str, ttl: u8, at: u64) -> Event {
        let icmp = IcmpError { sender: sender.parse().expect("an IP address"), icmp_type: 3, code: 1, ttl };
        Event {
            socket: SocketId { netns: self.socket.netns, address: 0 },
            icmp: Some(icmp),
            ..self.event(EventKind::IcmpArrived, None, None, at)
        }
    }

    /// We close first at `at`: our FIN, its ACK a nanosecond later, the peer's FIN one more on
    /// (the tp_btf close that hands over to TIME_WAIT).
    pub fn we_close_first(&self, at: u64) -> [Event; 3] {
        [
            self.syscall(TcpState::Established, TcpState::FinWait1, at),
            self.state(TcpState::FinWait1, TcpState::FinWait2, at + 1),
            self.closed(TcpState::FinWait2, true, at + 2),
        ]
    }

    pub fn retransmit(&self, state: TcpState, at: u64) -> Event {
        self.event(EventKind::Retransmit, None, Some(state), at)
    }
}

pub fn process() -> Process {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"curl");
    Process { pid: 4242, tgid: 4242, comm: Comm::from(comm) }
}

pub fn reasons() -> BTreeMap<u32, String> {
    [
        (1, "NO_SOCKET"),
        (11, "TCP_ABORT_ON_CLOSE"),
        (14, "TCP_STATE"),
        (15, "TCP_KEEPALIVE_TIMEOUT"),
        (2, "TCP_INVALID_ACK_SEQUENCE"),
        (16, "TCP_TIMEWAIT_SOCKET"),
    ]
    .into_iter()
    .map(|(code, name)| (code, name.to_string()))
    .collect()
}

/// Feeds `events` to a fresh tracker and settles everything.
pub fn run(config: TrackerConfig, events: &[Event]) -> (Tracker, Vec<Observation>) {
    let mut tracker = Tracker::new(config, reasons());
    let mut out = Vec::new();
    for event in events {
        tracker.observe(event, &mut out);
    }
    tracker.settle(u64::MAX, &mut out);
    (tracker, out)
}

/// The connections that ended, in order.
pub fn ended(out: &[Observation]) -> Vec<&Ended> {
    out.iter()
        .filter_map(|observation| match observation {
            Observation::Ended(ended) => Some(ended),
            _ => None,
        })
        .collect()
}

/// A connection as the tracker would start it from `event`, for tests of what reads connections.
pub fn connection(event: &Event, role: super::Role) -> super::Connection {
    super::Connection::new(event, role, Some(event.timestamp_ns))
}

pub fn client() -> Script {
    Script::new(0xa1, "10.0.0.1:40000", "10.0.0.2:80")
}

pub fn server() -> Script {
    Script::new(0xb1, "10.0.0.2:80", "10.0.0.1:40000")
}

/// A finding of `kind` between the ends of `key` (shown as the key shows them), counted once,
/// nothing optional filled in: a test sets what it looks at with `..finding(kind, key)`.
pub fn finding(kind: FindingKind, key: PeerKey) -> Finding {
    Finding {
        kind,
        local: key.local.to_string(),
        remote: key.remote.to_string(),
        count: 1,
        total: 1,
        detail: String::new(),
        netns: key.netns,
        netns_name: None,
        process: None,
        record: None,
        near_link: None,
        idle_threshold: None,
        began_ns: None,
        key,
    }
}
