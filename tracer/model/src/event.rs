//! What an event is, once decoded: the typed facts of one kernel record (states, the socket, the
//! process, and the parts only some kinds carry). Every layer above the decoder reads these.
use std::{fmt, net::SocketAddr};

use serde::Serialize;
use tracer_common::{tcp_state, EventKind, TCP_FLAG_RST};

/// TCP states, numbered as the kernel numbers them (`tracer_common::tcp_state`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    Established = tcp_state::ESTABLISHED,
    SynSent = tcp_state::SYN_SENT,
    SynRecv = tcp_state::SYN_RECV,
    FinWait1 = tcp_state::FIN_WAIT1,
    FinWait2 = tcp_state::FIN_WAIT2,
    TimeWait = tcp_state::TIME_WAIT,
    Close = tcp_state::CLOSE,
    CloseWait = tcp_state::CLOSE_WAIT,
    LastAck = tcp_state::LAST_ACK,
    Listen = tcp_state::LISTEN,
    Closing = tcp_state::CLOSING,
    NewSynRecv = tcp_state::NEW_SYN_RECV,
}

// `from_kernel` indexes `ALL` by the kernel's number.
const _: () = {
    let mut index = 0;
    while index < TcpState::ALL.len() {
        assert!(TcpState::ALL[index] as usize == index + 1);
        index += 1;
    }
};

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    pub fn from_kernel(raw: u8) -> Option<TcpState> {
        Self::ALL.get(usize::from(raw).checked_sub(1)?).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A socket for as long as it lives: its kernel address within its network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    pub netns: u32,
    pub address: u64,
}

/// A task name as the kernel keeps it: up to 16 bytes, NUL-padded. Kept inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm([u8; 16]);

impl From<[u8; 16]> for Comm {
    fn from(bytes: [u8; 16]) -> Comm {
        Comm(bytes)
    }
}

impl Comm {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|byte| *byte == 0).unwrap_or(self.0.len());
        String::from_utf8_lossy(&self.0[..end])
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

/// The process an event ran for; only known in process context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub tgid: u32,
    pub comm: Comm,
}

/// One decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub timestamp_ns: u64,
    pub socket: SocketId,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Only for state changes.
    pub old_state: Option<TcpState>,
    /// The new state for state changes; the socket's state for resets and retransmits.
    pub state: Option<TcpState>,
    /// The kernel's `sk_rst_reason` for resets we sent (Linux ≥ 6.10).
    pub reset_reason: Option<u32>,
    /// For a SYN that hit a timewait socket: the `tcp_tw_status` returned.
    pub tw_status: Option<u32>,
    pub process: Option<Process>,
    /// For a state change in a process's context: the process was exiting, so the kernel closed
    /// its sockets for it (killed, or it exited without closing them).
    pub by_exiting_process: bool,
    /// For a state change into CLOSE, where the kernel program could read them (tp_btf).
    pub totals: Option<SocketTotals>,
    /// For a segment the peer sent (`tcp_probe`): what its headers said.
    pub segment: Option<Segment>,
    /// For a packet this host dropped (`kfree_skb`).
    pub drop: Option<Dropped>,
    /// For a retransmission, a segment from the peer or a reset we sent: the socket's clocks, in
    /// jiffies.
    pub idle: Option<IdleClocks>,
    /// For a reset we sent from a full socket: its keepalive time in jiffies (`TCP_KEEPIDLE`; 0
    /// when it uses the namespace's `tcp_keepalive_time`).
    pub keepalive_jiffies: Option<u32>,
    /// For an ICMP destination unreachable about a segment of ours: who sent it, and what.
    pub icmp: Option<IcmpError>,
    /// For a RST as it arrived: what the last handshake from its source address carried.
    pub handshake: Option<Handshake>,
    /// For a retransmission (BTF): the segment's size against the MSS, and whether the peer had
    /// SACKed later segments.
    pub resent: Option<Resent>,
}

/// A retransmitted segment, as the retransmit hook saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Resent {
    /// Its sequence space (payload, + 1 for a SYN or FIN).
    pub length: u32,
    /// The socket's MSS then.
    pub mss: u16,
    /// The peer had acknowledged segments sent after it (SACK): it receives some of ours.
    pub peer_sacked: bool,
}

impl Resent {
    /// As large as a segment gets: what a path that cannot carry large packets loses.
    pub fn full_size(&self) -> bool {
        self.mss >= 536 && self.length >= u32::from(self.mss)
    }
}

/// The last SYN or SYN-ACK that arrived from an address (in one namespace), as the kernel's
/// table of handshakes held it when a RST from that address arrived: the TTL its own packets
/// carry, the reference every connection has from its first exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Handshake {
    pub ttl: u8,
    pub seen_ns: u64,
    /// When the address's TTL last changed (several hosts at different distances behind it, or
    /// a new route), if it ever did.
    pub changed_ns: Option<u64>,
}

/// An ICMP (ICMPv6) destination unreachable that arrived about a TCP segment of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IcmpError {
    /// The router or host that sent it.
    pub sender: std::net::IpAddr,
    pub icmp_type: u8,
    pub code: u8,
    /// Its TTL (hop limit) as it arrived: how far away its sender is.
    pub ttl: u8,
}

impl IcmpError {
    /// Port unreachable (ICMP code 3, ICMPv6 code 4): the peer's host, or a firewall speaking for
    /// it, refused the port.
    pub fn port_unreachable(&self) -> bool {
        self.code == if self.sender.is_ipv6() { 4 } else { 3 }
    }

    /// What it said, by the name a reader knows.
    pub fn name(&self) -> &'static str {
        match (self.sender.is_ipv6(), self.code) {
            (false, 0) | (true, 0) => "network unreachable",
            (false, 1) | (true, 3) => "host unreachable",
            (false, 3) | (true, 4) => "port unreachable",
            (false, 9 | 10 | 13) | (true, 1) => "administratively prohibited",
            _ => "destination unreachable",
        }
    }

    /// Routers between its sender and us, as [`Segment::hops`] reads a TTL.
    pub fn hops(&self) -> u8 {
        Segment::hops_from(self.ttl)
    }
}

/// A socket's clocks when an event fired, in jiffies (32 bits, wrapping): now, the last ACK it
/// received, the last data it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IdleClocks {
    pub now: u32,
    pub last_received: u32,
    pub last_sent: u32,
}

impl IdleClocks {
    /// How long the connection had been idle before its latest transmission, in jiffies: when we
    /// sent after the last receive, from that receive to our send (the send the peer must answer);
    /// else from the last activity to now (the peer spoke first).
    pub fn idle_jiffies(&self) -> u32 {
        let sent_since = self.last_sent.wrapping_sub(self.last_received) as i32;
        if sent_since > 0 {
            sent_since as u32
        } else {
            self.now.wrapping_sub(self.last_received)
        }
    }
}

/// A TCP packet this host's kernel dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// `enum skb_drop_reason`.
    pub reason: u32,
    /// It was coming in from the peer (else going out to it).
    pub incoming: bool,
}

/// What a received segment's headers say of whoever sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// IP TTL (IPv6: hop limit) as it arrived.
    pub ttl: u8,
    /// IPv4 identification (0 for IPv6).
    pub ip_id: u16,
    pub window: u16,
    /// Sequence space it takes: payload bytes, + 1 for a SYN or FIN.
    pub length: u32,
    /// The TCP flag byte.
    pub flags: u8,
}

impl Segment {
    /// Initial TTLs senders use: old Windows, Linux and macOS, Windows, network devices.
    const INITIAL_TTLS: [u8; 4] = [32, 64, 128, 255];

    pub fn is_reset(&self) -> bool {
        self.flags & TCP_FLAG_RST != 0
    }

    /// Routers between its sender and us: the nearest initial TTL at or above what arrived, less
    /// what arrived. A sender with another initial TTL, or a device that rewrites it, reads wrong.
    pub fn hops(&self) -> u8 {
        Segment::hops_from(self.ttl)
    }

    /// The same for any packet that arrived with `ttl` (an ICMP error's, say).
    pub fn hops_from(ttl: u8) -> u8 {
        Segment::initial_ttl_of(ttl) - ttl
    }

    /// The TTL its sender most likely started from.
    pub fn initial_ttl(&self) -> u8 {
        Segment::initial_ttl_of(self.ttl)
    }

    fn initial_ttl_of(ttl: u8) -> u8 {
        Segment::INITIAL_TTLS.into_iter().find(|initial| *initial >= ttl).unwrap_or(255)
    }
}

/// A socket's counters at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SocketTotals {
    /// Bytes we sent that the peer acknowledged.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Segments retransmitted over the connection's life.
    pub retransmits: u32,
    /// The socket's pending error (an errno, 0 for none).
    pub error: u16,
    /// The socket took in the peer's FIN (counted in `bytes_received` as one byte).
    pub peer_fin: bool,
}
