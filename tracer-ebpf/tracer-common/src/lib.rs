//! The one record both sides share: what the kernel programs send through the ring buffer
//! ([`WireEvent`]) and what userspace hands them at load time ([`KernelConfig`]).
//!
//! Both are `#[repr(C)]` plain integers so that the byte layout is the contract. Bump
//! [`WIRE_VERSION`] whenever a field moves; the decoder rejects (and counts) records of any other
//! version instead of misreading them. Nothing here may allocate, panic or depend on `std`.
#![no_std]

/// Version of [`WireEvent`]; carried in every record.
pub const WIRE_VERSION: u8 = 1;

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
}

impl EventKind {
    /// The kinds that come from tracepoints, in [`KernelConfig::hooks`] order.
    pub const TRACEPOINTS: [EventKind; 5] = [
        EventKind::StateChange,
        EventKind::ResetSent,
        EventKind::ResetReceived,
        EventKind::Retransmit,
        EventKind::SynAckRetransmit,
    ];

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::TRACEPOINTS
            .into_iter()
            .chain([EventKind::TimeWaitEnter, EventKind::TimeWaitSyn])
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
    pub _pad0: u16,
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
    pub _pad1: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub comm: [u8; 16],
}

impl WireEvent {
    pub const SIZE: usize = core::mem::size_of::<WireEvent>();

    /// A record of `kind` with every fact still unknown (zero).
    pub const fn new(kind: EventKind, timestamp_ns: u64, socket: u64) -> WireEvent {
        WireEvent {
            version: WIRE_VERSION,
            kind: kind as u8,
            family: 0,
            flags: 0,
            old_state: 0,
            new_state: 0,
            local_port: 0,
            remote_port: 0,
            _pad0: 0,
            reason: 0,
            timestamp_ns,
            socket,
            netns: 0,
            tgid: 0,
            pid: 0,
            _pad1: 0,
            local_addr: [0; 16],
            remote_addr: [0; 16],
            comm: [0; 16],
        }
    }
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
/// programs find the namespace and the execution context. [`ABSENT`] disables the feature.
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
    /// `struct sock_common` members, for the fentry/fexit programs that get a socket pointer.
    pub sock_daddr: u16,
    pub sock_rcv_saddr: u16,
    pub sock_dport: u16,
    pub sock_num: u16,
    pub sock_family: u16,
    pub sock_v6_daddr: u16,
    pub sock_v6_rcv_saddr: u16,
    /// How much of `struct sock_common` to copy to reach all of the above.
    pub sock_common_len: u16,
    /// Size of a task's kernel stack (THREAD_SIZE).
    pub thread_size: u32,
    pub _pad1: u32,
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
        sock_common_len: 0,
        thread_size: 0,
        _pad1: 0,
    };
}

/// Everything the programs read at run time, set once by the loader (`.rodata`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    pub hooks: [HookLayout; 5],
    pub offsets: KernelOffsets,
    /// Wake the reader only once this many bytes wait in the ring buffer: a wakeup per event
    /// costs the kernel an interrupt; the reader polls on a short timer for the rest.
    pub wakeup_bytes: u64,
}

impl KernelConfig {
    pub const NONE: KernelConfig = KernelConfig {
        hooks: [HookLayout::NONE; 5],
        offsets: KernelOffsets::NONE,
        wakeup_bytes: 0,
    };
}

/// Slots of the per-CPU `COUNTERS` array.
pub const COUNTER_RESERVE_FAILED: u32 = 0;
pub const COUNTER_SLOTS: u32 = 1;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::KernelConfig {}
    unsafe impl aya::Pod for super::WireEvent {}
}
