//! The one record both sides share: what the kernel programs send through the ring buffer
//! ([`WireEvent`], in batches of up to [`BATCH_RECORDS`] per ring record) and what userspace
//! hands them at load time ([`KernelConfig`]).
//!
//! Both are `#[repr(C)]` plain integers so that the byte layout is the contract. Bump
//! [`WIRE_VERSION`] whenever a field moves; the decoder rejects (and counts) records of any other
//! version instead of misreading them. Nothing here may allocate, panic or depend on `std`.
#![no_std]

mod config;
pub use config::*;

/// Version of [`WireEvent`]; carried in every record.
pub const WIRE_VERSION: u8 = 3;

/// The RST bit of the TCP flag byte (`Segment` records carry the byte).
pub const TCP_FLAG_RST: u8 = 0x04;
/// The SYN bit: a handshake's first two segments.
pub const TCP_FLAG_SYN: u8 = 0x02;
/// The FIN bit: it takes a sequence number but carries no data.
pub const TCP_FLAG_FIN: u8 = 0x01;

/// Address families, as the kernel numbers them (`AF_INET`, `AF_INET6`).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u8 = 6;

/// TCP states, numbered as in the kernel's `include/net/tcp_states.h`: what the records carry.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Which kernel hook produced a record.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `sock:inet_sock_set_state` for a TCP socket.
    StateChange = 1,
    /// `tcp:tcp_send_reset`: we sent a RST.
    ResetSent = 2,
    /// `tcp:tcp_receive_reset`: the peer's RST reached a socket.
    ResetReceived = 3,
    /// `tcp:tcp_retransmit_skb`: a segment (a SYN when the state is SYN_SENT) was retransmitted.
    Retransmit = 4,
    /// `tcp:tcp_retransmit_synack`: a listener retransmitted its SYN-ACK.
    SynAckRetransmit = 5,
    /// fentry `tcp_time_wait`: a full socket hands over to a timewait socket; `new_state` is
    /// its substate (TIME_WAIT, or FIN_WAIT2 for an orphan whose peer has not sent its FIN).
    TimeWaitEnter = 6,
    /// fexit `tcp_timewait_state_process` for a SYN: `reason` is the `tcp_tw_status` returned
    /// (the SYN accepted, or answered with a bare ACK).
    TimeWaitSyn = 7,
    /// `tcp:tcp_probe` (BTF only): a segment reached an established socket, sent when it is a RST
    /// or the peer's first segment with data (the reference for what the peer's own packets carry).
    /// `reason` holds the IP TTL (IPv6: hop limit), `error` the IPv4 ID, `total_retrans` the TCP
    /// window, `tgid` the sequence space it takes (payload, + 1 for a SYN or FIN; there is no
    /// process in softirq), and `old_state` the TCP flag byte. Also sent for a data segment after
    /// an idle gap. With [`FLAG_IDLE_CLOCKS`].
    Segment = 8,
    /// `skb:kfree_skb` (BTF only, Linux ≥ 5.17 for the reason): this host's kernel dropped a TCP
    /// packet. `reason` is its `skb_drop_reason`; the socket's fields when the packet had one
    /// (else `socket` is 0 and the addresses are the packet's, as received: `remote` its
    /// source); `old_state` is 1 when the packet was coming in from `remote`.
    Drop = 9,
    /// `net:netif_receive_skb` (BTF only): a TCP RST arrived at this host, before any socket saw
    /// it (`tcp_probe` never sees those reaching a socket that is not established: a refused
    /// connect, a closing socket). `socket` is 0; the addresses are the packet's, as for a
    /// socketless [`EventKind::Drop`] (`remote` its source), `netns` its device's; the segment's
    /// facts as for [`EventKind::Segment`]. The reference to judge it by, from the kernel's
    /// table of handshakes (the last SYN or SYN-ACK from the same address in the same
    /// namespace): `new_state` its TTL (0: none known), `bytes_acked` when it arrived,
    /// `bytes_received` when that address's TTL last changed (0: never).
    ResetArrived = 10,
    /// `net:netif_receive_skb` (BTF only): an ICMP destination unreachable (ICMPv6: type 1)
    /// about a TCP segment of ours arrived. `socket` is 0; `local`/`remote` are the quoted
    /// segment's source and destination (ours, the peer's); `comm` holds the ICMP's sender (4
    /// bytes for IPv4, 16 for IPv6: the router or host that would not deliver it), `reason` its
    /// TTL (hop limit), `old_state` the ICMP type and `new_state` its code; `netns` the device's.
    IcmpArrived = 11,
}

impl EventKind {
    /// The kinds that come from tracepoints, in [`KernelConfig::hooks`] order.
    pub const TRACEPOINTS: [EventKind; 5] =
        [EventKind::StateChange, EventKind::ResetSent, EventKind::ResetReceived, EventKind::Retransmit, EventKind::SynAckRetransmit];

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::TRACEPOINTS
            .into_iter()
            .chain([
                EventKind::TimeWaitEnter,
                EventKind::TimeWaitSyn,
                EventKind::Segment,
                EventKind::Drop,
                EventKind::ResetArrived,
                EventKind::IcmpArrived,
            ])
            .find(|kind| *kind as u8 == raw)
    }

    /// Index into [`KernelConfig::hooks`] (tracepoint kinds only).
    pub const fn index(self) -> usize {
        self as usize - 1
    }
}

/// [`WireEvent::flags`]: the event ran in a task's own context, so `pid`/`tgid`/`comm` name the
/// process that caused it. Cleared in interrupt/softirq context and in kernel threads.
pub const FLAG_PROCESS_CONTEXT: u8 = 1;
/// [`WireEvent::flags`]: `reason` holds the kernel's `sk_rst_reason`.
pub const FLAG_HAS_REASON: u8 = 2;
/// [`WireEvent::flags`]: a state change into CLOSE carries the socket's last counters
/// (`bytes_acked`, `bytes_received`, `total_retrans`, `error`), read from `tcp_sock` at its end.
pub const FLAG_HAS_SOCKET_STATS: u8 = 4;
/// [`WireEvent::flags`], with [`FLAG_HAS_SOCKET_STATS`]: the socket had taken in the peer's FIN
/// (`SOCK_DONE`), which `bytes_received` then counts as one byte.
pub const FLAG_PEER_FIN: u8 = 8;
/// [`WireEvent::flags`], for `Retransmit` and `Segment`: the socket's clocks, in jiffies (low 32
/// bits): `bytes_acked` holds now, `bytes_received` the last time anything came from the peer
/// (high half: the later of its last ACK and its last data) and the last data sent (low half).
/// How long the connection had been idle.
pub const FLAG_IDLE_CLOCKS: u8 = 16;
/// [`WireEvent::flags`], for `ResetSent` from a full socket: `total_retrans` holds its
/// `keepalive_time` (jiffies; 0 for the namespace's default). With [`FLAG_IDLE_CLOCKS`], what a
/// keepalive death needs: how long the connection was idle before its first unanswered probe.
pub const FLAG_KEEPALIVE_TIME: u8 = 32;

/// [`WireEvent::flags`], for `Retransmit` (BTF): `reason` holds the retransmitted segment's
/// sequence space (payload, + 1 for a SYN or FIN) and `error` the socket's MSS at the time.
pub const FLAG_SEGMENT_SIZE: u8 = 64;
/// [`WireEvent::flags`], with [`FLAG_SEGMENT_SIZE`]: the peer had selectively acknowledged
/// segments sent after this one (SACK): it receives some of what we send.
pub const FLAG_PEER_SACKED: u8 = 128;

/// [`WireEvent::reason`] of a `StateChange` in a task's own context: the task was exiting
/// (`PF_EXITING`), so the kernel closed its sockets for it (killed, or it exited without
/// closing them).
pub const STATE_BY_EXITING_TASK: u32 = 1;

/// One event, as written into the ring buffer. Addresses are in network byte order (IPv4 in
/// the first four bytes); ports in host order; `local`/`remote` are from this host's point of view.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireEvent {
    pub version: u8,
    pub kind: u8,
    /// AF_INET (2), AF_INET6 (10), or 0 when the hook does not say (userspace infers it).
    pub family: u8,
    pub flags: u8,
    /// TCP states as the kernel numbers them (1 = ESTABLISHED … 12 = NEW_SYN_RECV); for the
    /// reset and retransmit hooks `new_state` is the socket's state and `old_state` is 0.
    pub old_state: u8,
    pub new_state: u8,
    pub local_port: u16,
    pub remote_port: u16,
    /// With [`FLAG_HAS_SOCKET_STATS`]: the socket's pending error (`sk_err`, an errno) at its end.
    pub error: u16,
    pub reason: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub timestamp_ns: u64,
    /// Kernel address of the socket (for `SynAckRetransmit`, the listener). Unique while the
    /// socket lives; userspace adds a generation when the address is reused.
    pub socket: u64,
    /// Inode number of the socket's network namespace, 0 when it could not be read.
    pub netns: u32,
    pub tgid: u32,
    pub pid: u32,
    /// With [`FLAG_HAS_SOCKET_STATS`]: segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// With [`FLAG_HAS_SOCKET_STATS`]: bytes we sent that the peer acknowledged.
    pub bytes_acked: u64,
    /// With [`FLAG_HAS_SOCKET_STATS`]: bytes received from the peer.
    pub bytes_received: u64,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub comm: [u8; 16],
}

impl WireEvent {
    pub const SIZE: usize = core::mem::size_of::<WireEvent>();
}

/// Records per [`Batch`]: one ring-buffer reservation carries this many events.
pub const BATCH_RECORDS: usize = 64;

/// A CPU's records waiting for the ring buffer, appended to with plain stores (one per CPU, in
/// a per-CPU array). `busy` is set while a program appends or flushes: a program that interrupts
/// another on the same CPU (a softirq landing mid-append) sees it and sends its record directly.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Batch {
    pub len: u32,
    pub busy: u32,
    pub records: [WireEvent; BATCH_RECORDS],
}

/// Slots of the per-CPU `COUNTERS` array.
/// Events dropped because the ring buffer was full (a whole batch counts each of its records).
pub const COUNTER_RESERVE_FAILED: u32 = 0;
/// While this CPU's batch holds records, the time of its first (never 0); 0 when it is empty.
/// Userspace flushes the batches that have waited long enough.
pub const COUNTER_PENDING: u32 = 1;
/// Peer addresses entered into the kernel's table of handshake TTLs ([`PEER_REFERENCES`] at
/// most): beyond that many, each entry displaced an older one.
pub const COUNTER_PEER_REFERENCES_ADDED: u32 = 2 + KernelMiss::ALL.len() as u32;
pub const COUNTER_SLOTS: u32 = COUNTER_PEER_REFERENCES_ADDED + 1;

/// Peer addresses whose handshake TTL the kernel keeps (an LRU table, by namespace and
/// address): the reference a RST is judged against when its connection has no packet of the
/// peer's own yet.
pub const PEER_REFERENCES: u32 = 16_384;

/// The kernel programs' rare paths: a structure that could not be read where it had to be, or a
/// socket that is not what a TCP hook should see. Each is counted in its own `COUNTERS` slot
/// (never silent) and, when the operator asks (`--kernel-log`), logged through aya-log.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelMiss {
    /// The hook's socket was null or could not be read: the event is not sent.
    Socket = 2,
    /// A reset without a socket whose packet headers could not be read: not sent.
    Packet = 3,
    /// A classic tracepoint's record could not be copied: not sent.
    Record = 4,
    /// fexit could not read the function's return value: not sent.
    ReturnValue = 5,
    /// The current task could not be read: the event is sent without its process.
    Task = 6,
    /// A socket of neither IPv4 nor IPv6 on a TCP hook: not sent.
    Family = 7,
}

impl KernelMiss {
    pub const ALL: [KernelMiss; 6] =
        [KernelMiss::Socket, KernelMiss::Packet, KernelMiss::Record, KernelMiss::ReturnValue, KernelMiss::Task, KernelMiss::Family];

    /// Its `COUNTERS` slot.
    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// The name shown in summaries, metrics and kernel log lines.
    pub const fn name(self) -> &'static str {
        match self {
            KernelMiss::Socket => "socket_unreadable",
            KernelMiss::Packet => "packet_unreadable",
            KernelMiss::Record => "record_unreadable",
            KernelMiss::ReturnValue => "return_value_unreadable",
            KernelMiss::Task => "task_unreadable",
            KernelMiss::Family => "unexpected_family",
        }
    }

    /// Whether the event was still sent (with less in it).
    pub const fn event_sent(self) -> bool {
        matches!(self, KernelMiss::Task)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::KernelConfig {}
    unsafe impl aya::Pod for super::WireEvent {}
}
