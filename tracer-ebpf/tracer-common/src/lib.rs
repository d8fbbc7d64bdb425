//! The one record both sides share: what the kernel programs send through the ring buffer
//! ([`WireEvent`], in batches of up to [`BATCH_RECORDS`] per ring record) and what userspace
//! hands them at load time ([`KernelConfig`]).
//!
//! Both are `#[repr(C)]` plain integers so that the byte layout is the contract. Bump
//! [`WIRE_VERSION`] whenever a field moves; the decoder rejects (and counts) records of any other
//! version instead of misreading them. Nothing here may allocate, panic or depend on `std`.
#![no_std]

/// Version of [`WireEvent`]; carried in every record.
pub const WIRE_VERSION: u8 = 2;

/// The RST bit of the TCP flag byte (`Segment` records carry the byte).
pub const TCP_FLAG_RST: u8 = 0x04;
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
}

impl EventKind {
    /// The kinds that come from tracepoints, in [`KernelConfig::hooks`] order.
    pub const TRACEPOINTS: [EventKind; 5] =
        [EventKind::StateChange, EventKind::ResetSent, EventKind::ResetReceived, EventKind::Retransmit, EventKind::SynAckRetransmit];

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::TRACEPOINTS
            .into_iter()
            .chain([EventKind::TimeWaitEnter, EventKind::TimeWaitSyn, EventKind::Segment, EventKind::Drop])
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

/// Marks a field a tracepoint does not have in [`HookLayout`].
pub const ABSENT: u16 = u16::MAX;

/// Where a tracepoint keeps each fact, as byte offsets into its record, read from tracefs at
/// start-up. Any field may be [`ABSENT`]. Addresses come either as raw `saddr`/`daddr` arrays
/// (4 bytes for IPv4, 16 for IPv6) or, from Linux 6.10 on for resets, as `struct sockaddr_in6`
/// blobs (`*_sockaddr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookLayout {
    pub socket: u16,
    pub old_state: u16,
    pub new_state: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub family: u16,
    pub protocol: u16,
    pub local_addr4: u16,
    pub remote_addr4: u16,
    pub local_addr6: u16,
    pub remote_addr6: u16,
    pub local_sockaddr: u16,
    pub remote_sockaddr: u16,
    pub reason: u16,
    /// `skbaddr`, used to find the namespace of resets sent without a socket.
    pub skb: u16,
    /// How many bytes of the record the program copies (one read) before picking fields out:
    /// the end of the last field used, at most [`RECORD_MAX`].
    pub record_len: u16,
}

/// The most of a tracepoint record the programs copy.
pub const RECORD_MAX: usize = 128;

impl HookLayout {
    pub const NONE: HookLayout = HookLayout {
        socket: ABSENT,
        old_state: ABSENT,
        new_state: ABSENT,
        local_port: ABSENT,
        remote_port: ABSENT,
        family: ABSENT,
        protocol: ABSENT,
        local_addr4: ABSENT,
        remote_addr4: ABSENT,
        local_addr6: ABSENT,
        remote_addr6: ABSENT,
        local_sockaddr: ABSENT,
        remote_sockaddr: ABSENT,
        reason: ABSENT,
        skb: ABSENT,
        record_len: 0,
    };
}

/// Offsets of kernel structure members, read from the running kernel's BTF, that let the
/// programs find the namespace and the execution context, and (for the `tp_btf` programs, which
/// get the kernel's own pointers) every fact of a socket. [`ABSENT`] disables what needs it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sock_common.skc_net` (a `struct net *`).
    pub sock_net: u16,
    /// `struct net.ns.inum`.
    pub net_inum: u16,
    /// `struct sk_buff.dev`.
    pub skb_dev: u16,
    /// `struct net_device.nd_net`.
    pub device_net: u16,
    /// `struct task_struct.stack`.
    pub task_stack: u16,
    /// `struct task_struct.flags`.
    pub task_flags: u16,
    /// `struct pt_regs.sp`: the stack pointer the tracepoint's caller had.
    pub regs_sp: u16,
    /// `struct sock_common` members, for the programs that get a socket pointer.
    pub sock_daddr: u16,
    pub sock_rcv_saddr: u16,
    pub sock_dport: u16,
    pub sock_num: u16,
    pub sock_family: u16,
    pub sock_v6_daddr: u16,
    pub sock_v6_rcv_saddr: u16,
    pub sock_state: u16,
    /// How much of `struct sock_common` to copy to reach all of the above.
    pub sock_common_len: u16,
    /// `struct sock.sk_err`.
    pub sock_err: u16,
    /// `struct sock.sk_protocol`.
    pub sock_protocol: u16,
    /// `struct sock_common.skc_flags` (`sk_flags`: `SOCK_DONE` and friends).
    pub sock_flags: u16,
    /// `struct tcp_sock` counters read when a connection ends.
    pub tcp_bytes_acked: u16,
    pub tcp_bytes_received: u16,
    pub tcp_total_retrans: u16,
    /// `inet_sock.inet_sport` reached through `tcp_sock`: the local port, still set after
    /// `skc_num` is cleared (a reset sent after the socket closed, a socket that just handed over
    /// to its timewait socket).
    pub tcp_inet_sport: u16,
    /// `struct sk_buff` members that locate the headers of a packet reset without a socket.
    pub skb_head: u16,
    pub skb_network_header: u16,
    pub skb_transport_header: u16,
    /// `struct task_struct.comm`.
    pub task_comm: u16,
    /// `struct tcp_skb_cb` members, as offsets into `struct sk_buff` (through its `cb`): the TCP
    /// flags and the sequence space of a received segment.
    pub skb_tcp_flags: u16,
    pub skb_tcp_seq: u16,
    pub skb_tcp_end_seq: u16,
    /// `struct tcp_sock.data_segs_in`: segments with data received so far.
    pub tcp_data_segs_in: u16,
    /// `struct tcp_sock.rcv_tstamp`, `inet_connection_sock.icsk_ack.lrcvtime` and
    /// `tcp_sock.lsndtime` (jiffies): the last ACK received while data was in flight, the last
    /// data received, the last data sent.
    pub tcp_rcv_tstamp: u16,
    pub tcp_lrcvtime: u16,
    pub tcp_lsndtime: u16,
    /// `struct sk_buff.protocol` (network order) and `struct sk_buff.sk`.
    pub skb_protocol: u16,
    pub skb_sk: u16,
    /// Size of a task's kernel stack (THREAD_SIZE).
    pub thread_size: u32,
    /// `struct tcp_sock.keepalive_time` (jiffies; 0: the namespace's `tcp_keepalive_time`): the
    /// idle time after which the keepalive timer sends its first probe.
    pub tcp_keepalive_time: u16,
    /// `struct tcp_sock.tcp_clock_cache`: the monotonic time (ns) TCP took when it began
    /// processing the latest packet of the socket (`tcp_mstamp_refresh`).
    pub tcp_clock_cache: u16,
}

impl KernelOffsets {
    pub const NONE: KernelOffsets = KernelOffsets {
        sock_net: ABSENT,
        net_inum: ABSENT,
        skb_dev: ABSENT,
        device_net: ABSENT,
        task_stack: ABSENT,
        task_flags: ABSENT,
        regs_sp: ABSENT,
        sock_daddr: ABSENT,
        sock_rcv_saddr: ABSENT,
        sock_dport: ABSENT,
        sock_num: ABSENT,
        sock_family: ABSENT,
        sock_v6_daddr: ABSENT,
        sock_v6_rcv_saddr: ABSENT,
        sock_state: ABSENT,
        sock_common_len: 0,
        sock_err: ABSENT,
        sock_protocol: ABSENT,
        sock_flags: ABSENT,
        tcp_bytes_acked: ABSENT,
        tcp_bytes_received: ABSENT,
        tcp_total_retrans: ABSENT,
        tcp_inet_sport: ABSENT,
        skb_head: ABSENT,
        skb_network_header: ABSENT,
        skb_transport_header: ABSENT,
        task_comm: ABSENT,
        skb_tcp_flags: ABSENT,
        skb_tcp_seq: ABSENT,
        skb_tcp_end_seq: ABSENT,
        tcp_data_segs_in: ABSENT,
        tcp_rcv_tstamp: ABSENT,
        tcp_lrcvtime: ABSENT,
        tcp_lsndtime: ABSENT,
        skb_protocol: ABSENT,
        skb_sk: ABSENT,
        thread_size: 0,
        tcp_keepalive_time: ABSENT,
        tcp_clock_cache: ABSENT,
    };
}

/// Most ports per direction, and networks, the kernel filters on; a longer list is filtered in
/// userspace only.
pub const FILTER_PORTS: usize = 8;
pub const FILTER_NETWORKS: usize = 4;

/// One `--addr` network: `address & mask == network` for sockets of `family`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelNetwork {
    pub network: [u64; 2],
    pub mask: [u64; 2],
    pub family: u32,
    pub _pad: u32,
}

/// What the operator excluded (`-L`, `-D`, `-4/-6`, `--netns`, `--addr`), so that it costs a
/// branch and no record. Every test passes what the kernel cannot tell apart (a port not chosen
/// yet, an unknown family); userspace applies the whole filter again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFilter {
    /// 0: any namespace.
    pub netns: u32,
    /// 0: any; AF_INET or AF_INET6 otherwise.
    pub family: u8,
    pub local_port_count: u8,
    pub remote_port_count: u8,
    pub network_count: u8,
    pub local_ports: [u16; FILTER_PORTS],
    pub remote_ports: [u16; FILTER_PORTS],
    pub networks: [KernelNetwork; FILTER_NETWORKS],
}

impl KernelFilter {
    pub const NONE: KernelFilter = KernelFilter {
        netns: 0,
        family: 0,
        local_port_count: 0,
        remote_port_count: 0,
        network_count: 0,
        local_ports: [0; FILTER_PORTS],
        remote_ports: [0; FILTER_PORTS],
        networks: [KernelNetwork { network: [0; 2], mask: [0; 2], family: 0, _pad: 0 }; FILTER_NETWORKS],
    };
}

/// Everything the programs read at run time, set once by the loader (`.rodata`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    pub hooks: [HookLayout; 5],
    pub offsets: KernelOffsets,
    pub filter: KernelFilter,
    /// Wake the reader only once this many bytes wait in the ring buffer: a wakeup per event
    /// costs the kernel an interrupt; the reader polls on a short timer for the rest.
    pub wakeup_bytes: u64,
    /// 1: records collect in a per-CPU [`Batch`] that goes to the ring buffer when full or when
    /// userspace flushes it; 0: each record goes to the ring buffer at once (`--events`).
    pub batching: u32,
    /// 1: the `tp_btf` `tcp_send_reset` passes the reset reason as its third argument (Linux ≥ 6.10).
    pub reset_reason_arg: u32,
    /// 1: the `tp_btf` `kfree_skb` passes the drop reason as its third argument (Linux ≥ 5.17).
    pub drop_reason_arg: u32,
    /// The drop reasons (bit `reason`, below 256) that mean this host lost a packet: a firewall,
    /// a full queue, memory, a bad checksum. Others (a RST consumed, old data, no socket for a
    /// stray segment) are TCP doing its work, and are not sent.
    pub drop_reasons_wanted: [u64; 4],
    /// `tcp_probe` also sends a data segment that arrives after this many jiffies without one
    /// (a connection that lived through an idle gap); 0: never.
    pub idle_gap_jiffies: u32,
    /// 1: a server socket's birth into SYN_RECV is not sent. The kernel makes the child socket
    /// and moves it to ESTABLISHED in the same softirq, so the aggregator learns the birth from
    /// the next change (old state SYN_RECV), one record fewer per accepted connection; 0 for
    /// `--events`, which prints every change.
    pub fold_child_births: u32,
    /// CLOCK_MONOTONIC less `jiffies_64` ticks, in nanoseconds (wrapping): with it, jiffies say
    /// what time it is to within a tick or two, for [`KernelConfig::packet_clock_tick_ns`].
    pub jiffies_base_ns: u64,
    /// Nanoseconds of one kernel tick, when a state change in softirq may take its time from
    /// the socket's `tcp_clock_cache` (see `KernelOffsets::tcp_clock_cache`) instead of reading
    /// the clock: the cache is used when it is no more than [`PACKET_CLOCK_TICKS`] ticks old
    /// by the jiffies; 0: always the clock.
    pub packet_clock_tick_ns: u32,
    pub _pad: u32,
}

/// How many ticks old the socket's packet clock may be and still give a state change its time:
/// the jiffies tell the time only to within a tick or two, and the timers that change states in
/// softirq fire hundreds of milliseconds after the socket's last packet at the earliest.
pub const PACKET_CLOCK_TICKS: u64 = 3;

impl KernelConfig {
    pub const NONE: KernelConfig = KernelConfig {
        hooks: [HookLayout::NONE; 5],
        offsets: KernelOffsets::NONE,
        filter: KernelFilter::NONE,
        wakeup_bytes: 0,
        batching: 0,
        reset_reason_arg: 0,
        drop_reason_arg: 0,
        drop_reasons_wanted: [0; 4],
        idle_gap_jiffies: 0,
        fold_child_births: 0,
        jiffies_base_ns: 0,
        packet_clock_tick_ns: 0,
        _pad: 0,
    };
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
/// Not zero while this CPU's batch holds records; userspace flushes CPUs where it is set.
pub const COUNTER_PENDING: u32 = 1;
pub const COUNTER_SLOTS: u32 = 2 + KernelMiss::ALL.len() as u32;

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
