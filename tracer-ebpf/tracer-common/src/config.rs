//! What userspace hands the kernel programs at load time, in their frozen `.rodata`
//! ([`KernelConfig`]): where each tracepoint keeps its fields ([`HookLayout`], from tracefs),
//! where the kernel's structures keep theirs ([`KernelOffsets`], from BTF), the operator's filter
//! ([`KernelFilter`]), and the switches that say which facts this kernel can give.

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
    /// `struct sk_buff.protocol` (network order), `struct sk_buff.sk`, and `struct sk_buff.data`
    /// (where a received packet's network header starts when `netif_receive_skb` fires).
    pub skb_protocol: u16,
    pub skb_sk: u16,
    pub skb_data: u16,
    /// Size of a task's kernel stack (THREAD_SIZE).
    pub thread_size: u32,
    /// `struct tcp_sock.keepalive_time` (jiffies; 0: the namespace's `tcp_keepalive_time`): the
    /// idle time after which the keepalive timer sends its first probe.
    pub tcp_keepalive_time: u16,
    /// `struct tcp_sock.tcp_clock_cache`: the monotonic time (ns) TCP took when it began
    /// processing the latest packet of the socket (`tcp_mstamp_refresh`).
    pub tcp_clock_cache: u16,
    /// `struct tcp_sock.mss_cache` (the segment size it sends now) and `sacked_out` (segments the
    /// peer acknowledged selectively: it received data sent after what is still outstanding).
    pub tcp_mss_cache: u16,
    pub tcp_sacked_out: u16,
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
        skb_data: ABSENT,
        thread_size: 0,
        tcp_keepalive_time: ABSENT,
        tcp_mss_cache: ABSENT,
        tcp_sacked_out: ABSENT,
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
    /// 1: records collect in a per-CPU [`crate::Batch`] that goes to the ring buffer when full or when
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
    /// 1: a state a socket leaves in the softirq that brought it there is not sent; the
    /// aggregator learns it from the next change's old state. Two such: a server socket's birth
    /// into SYN_RECV (the kernel makes the child and moves it to ESTABLISHED at once), and an
    /// orphan's FIN_WAIT2 when it hands over to its timewait socket at once (its CLOSE, from the
    /// same packet at the same time, takes the FIN_WAIT2 record's place in the batch). One record
    /// fewer each; 0 for `--events`, which prints every change.
    pub fold_transient_states: u32,
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
        fold_transient_states: 0,
        jiffies_base_ns: 0,
        packet_clock_tick_ns: 0,
        _pad: 0,
    };
}
