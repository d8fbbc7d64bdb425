//! The `tp_btf` programs: the same five tracepoints as `classic`, but their arguments are the
//! kernel's own `struct sock *` (and `sk_buff`, `request_sock`), read with direct loads at
//! offsets the loader took from BTF. No trace record is built and no probe read is made on the
//! common path, which is what makes a firing cost tens of nanoseconds instead of hundreds.
//!
//! The verifier checks every load against the kernel's types: an offset that does not name a
//! member of the right size refuses the program, and the loader falls back to `classic`.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::bpf_get_current_task_btf,
        generated::{bpf_jiffies64, bpf_skc_to_tcp_sock},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
    EbpfContext,
};
use tracer_common::{
    tcp_state, EventKind, KernelMiss, KernelOffsets, WireEvent, ABSENT, AF_INET, AF_INET6, FLAG_HAS_REASON, FLAG_HAS_SOCKET_STATS,
    FLAG_IDLE_CLOCKS, FLAG_KEEPALIVE_TIME, FLAG_PEER_FIN, FLAG_PEER_SACKED, FLAG_PROCESS_CONTEXT, FLAG_SEGMENT_SIZE, IPPROTO_TCP,
    PACKET_CLOCK_TICKS, STATE_BY_EXITING_TASK, TCP_FLAG_FIN, TCP_FLAG_RST,
};

use crate::{address_of, clear, config, emit, folded, keep, missed, own_context, put_ipv4, PF_EXITING};

mod packets;

const TCP_CLOSE: i32 = tcp_state::CLOSE as i32;

/// A direct load of a `T` at `base + offset`.
///
/// # Safety
/// `base` is a BTF-typed kernel pointer and `offset` names a member of type `T` in it; the
/// verifier refuses the program otherwise.
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, offset: u16) -> T {
    // SAFETY: the caller's contract: a member of type `T` at that offset of a kernel object.
    unsafe { core::ptr::read(base.add(offset as usize).cast::<T>()) }
}

/// Sixteen bytes at `base + offset` as two word loads and two word stores (a byte array copy
/// would compile to a byte-by-byte `memmove` call).
///
/// # Safety
/// As for [`load`], with a 16-byte member; `dst` is one of a `WireEvent`'s 16-byte fields, which
/// sit at 8-byte aligned offsets of an 8-byte aligned record.
#[inline(always)]
unsafe fn load16(dst: &mut [u8; 16], base: *const u8, offset: u16) {
    let words = dst.as_mut_ptr().cast::<u64>();
    // SAFETY: the caller's contract: 16 readable bytes at `base + offset`, and `dst` two aligned words.
    unsafe {
        core::ptr::write(words, load::<u64>(base, offset));
        core::ptr::write(words.add(1), load::<u64>(base, offset + 8));
    }
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_set_state(ctx: BtfTracePointContext) -> u32 {
    let socket: *const u8 = ctx.arg(0);
    let old_state: i32 = ctx.arg(1);
    let new_state: i32 = ctx.arg(2);
    let offsets = &config().offsets;
    // SAFETY: `socket` is the tracepoint's trusted `struct sock *`, never null here.
    if unsafe { load::<u16>(socket, offsets.sock_protocol) } != u16::from(IPPROTO_TCP) || folded(new_state) {
        return 0;
    }
    // The cuts `cargo xtask bench --kernel-parts` measures (never in a normal build): the hook alone.
    if cfg!(cost_cut = "hook") {
        return 0;
    }
    emit(|event| {
        if !socket_event(event, EventKind::StateChange, socket, offsets) {
            return false;
        }
        event.old_state = old_state as u8;
        event.new_state = new_state as u8;
        if old_state != TCP_CLOSE {
            add_unbound_port(event, socket, offsets); // connect and listen have none yet
        }
        if !keep(event) {
            return false;
        }
        if new_state == TCP_CLOSE {
            add_socket_stats(event, socket, offsets);
        }
        if cfg!(cost_cut = "record") {
            return true; // the record without its time and process
        }
        finish(&ctx, event, offsets, socket);
        true
    });
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn btf_send_reset(ctx: BtfTracePointContext) -> u32 {
    if cfg!(cost_cut = "hook") {
        return 0; // `cargo xtask bench --kernel-parts`: every program stops at its entry
    }
    let socket: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let offsets = &config().offsets;
    emit(|event| {
        let read = if socket.is_null() {
            packet_event(event, skb, offsets)
        } else {
            socket_event(event, EventKind::ResetSent, socket, offsets) && {
                add_unbound_port(event, socket, offsets);
                add_keepalive_clocks(event, socket, offsets);
                true
            }
        };
        if !read || !keep(event) {
            return false;
        }
        // A constant index: the verifier refuses a computed one. The branch is pruned where the
        // prototype has no third argument.
        if config().reset_reason_arg != 0 {
            event.reason = ctx.arg::<u32>(2);
            event.flags |= FLAG_HAS_REASON;
        }
        finish(&ctx, event, offsets, socket);
        true
    });
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn btf_recv_reset(ctx: BtfTracePointContext) -> u32 {
    socket_hook(&ctx, EventKind::ResetReceived, |_, _, _| {})
}

/// `tcp_retransmit_skb(sk, skb)`: with the socket's clocks, the segment's size against the MSS
/// and whether the peer has SACKed later ones (full-size segments lost while smaller ones pass
/// is a path MTU black hole).
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn btf_retransmit(ctx: BtfTracePointContext) -> u32 {
    let skb: *const u8 = ctx.arg(1);
    socket_hook(&ctx, EventKind::Retransmit, |event, socket, offsets| {
        // SAFETY: as in `add_socket_stats`; `skb` is the tracepoint's `struct sk_buff *` and the
        // sequence offsets are inside its `cb` (a `tcp_skb_cb` on the write queue too).
        unsafe {
            let tcp = tcp_sock(socket);
            if !tcp.is_null() {
                add_idle_clocks(event, tcp, offsets);
                let known = [offsets.tcp_mss_cache, offsets.tcp_sacked_out, offsets.skb_tcp_seq, offsets.skb_tcp_end_seq];
                if !skb.is_null() && known.iter().all(|offset| *offset != ABSENT) {
                    event.reason = load::<u32>(skb, offsets.skb_tcp_end_seq).wrapping_sub(load::<u32>(skb, offsets.skb_tcp_seq));
                    event.error = load::<u32>(tcp, offsets.tcp_mss_cache) as u16;
                    event.flags |= FLAG_SEGMENT_SIZE;
                    if load::<u32>(tcp, offsets.tcp_sacked_out) > 0 {
                        event.flags |= FLAG_PEER_SACKED;
                    }
                }
            }
        }
    })
}

/// When the peer was last heard from, in jiffies: the later of its last ACK (counted only while
/// we had data in flight) and its last data.
///
/// # Safety
/// `tcp` is a `tcp_sock` pointer from `bpf_skc_to_tcp_sock`.
#[inline(always)]
unsafe fn last_heard(tcp: *const u8, offsets: &KernelOffsets) -> u32 {
    // SAFETY: the caller's contract; both offsets are `tcp_sock` members.
    let (ack, data) = unsafe { (load::<u32>(tcp, offsets.tcp_rcv_tstamp), load::<u32>(tcp, offsets.tcp_lrcvtime)) };
    if (data.wrapping_sub(ack) as i32) > 0 {
        data
    } else {
        ack
    }
}

/// The socket's last receive and send times and now, in jiffies: how long it had been idle.
///
/// # Safety
/// `tcp` is a `tcp_sock` pointer from `bpf_skc_to_tcp_sock`.
#[inline(always)]
unsafe fn add_idle_clocks(event: &mut WireEvent, tcp: *const u8, offsets: &KernelOffsets) {
    // SAFETY: the caller's contract; the offset is a `tcp_sock` member.
    let (received, sent) = unsafe { (last_heard(tcp, offsets), load::<u32>(tcp, offsets.tcp_lsndtime)) };
    // SAFETY: a helper without arguments.
    event.bytes_acked = u64::from(unsafe { bpf_jiffies64() } as u32);
    event.bytes_received = u64::from(received) << 32 | u64::from(sent);
    event.flags |= FLAG_IDLE_CLOCKS;
}

/// For a reset from a full socket (the keepalive timer's among them): its clocks and its
/// keepalive time, which say how long it was idle before the first probe went unanswered.
#[inline(always)]
fn add_keepalive_clocks(event: &mut WireEvent, socket: *const u8, offsets: &KernelOffsets) {
    // SAFETY: `bpf_skc_to_tcp_sock` returns a `tcp_sock` pointer or null; the offsets are its
    // members (the keepalive time's only when the BTF had it).
    unsafe {
        let tcp = tcp_sock(socket);
        if tcp.is_null() {
            return;
        }
        add_idle_clocks(event, tcp, offsets);
        if offsets.tcp_keepalive_time != ABSENT {
            event.total_retrans = load::<u32>(tcp, offsets.tcp_keepalive_time);
            event.flags |= FLAG_KEEPALIVE_TIME;
        }
    }
}

/// `tcp_retransmit_synack(listener, request)`: the addresses are the request's (it starts with a
/// `struct sock_common`, like a socket); the socket reported is the listener, as in `classic`.
#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn btf_synack_retx(ctx: BtfTracePointContext) -> u32 {
    if cfg!(cost_cut = "hook") {
        return 0; // `cargo xtask bench --kernel-parts`: every program stops at its entry
    }
    let listener: *const u8 = ctx.arg(0);
    let request: *const u8 = ctx.arg(1);
    let offsets = &config().offsets;
    emit(|event| {
        if !socket_event(event, EventKind::SynAckRetransmit, request, offsets) {
            return false;
        }
        event.socket = listener as u64;
        if !keep(event) {
            return false;
        }
        finish(&ctx, event, offsets, core::ptr::null());
        true
    });
    0
}

/// A hook whose first argument is the socket: its facts, what `add` reads beside them for a
/// record the filter keeps, and the time and process.
#[inline(always)]
fn socket_hook(ctx: &BtfTracePointContext, kind: EventKind, add: impl FnOnce(&mut WireEvent, *const u8, &KernelOffsets)) -> u32 {
    if cfg!(cost_cut = "hook") {
        return 0; // `cargo xtask bench --kernel-parts`: every program stops at its entry
    }
    let socket: *const u8 = ctx.arg(0);
    let offsets = &config().offsets;
    emit(|event| {
        if !socket_event(event, kind, socket, offsets) {
            return false;
        }
        add_unbound_port(event, socket, offsets);
        if !keep(event) {
            return false;
        }
        add(event, socket, offsets);
        finish(ctx, event, offsets, socket);
        true
    });
    0
}

/// Time, and the process where it is the cause.
///
/// The context is the tracepoint's argument array, which the kernel builds on the stack it is
/// running on (the task's, or the per-CPU interrupt stack): its address says where the hook ran.
/// (The program's own frame does not: newer kernels give BPF programs a private stack.)
///
/// `clock_socket` (or null) is the event's socket: in softirq its packet clock may give the time
/// (see [`packet_time`]). Every event of a socket's packet takes the same clock, so a reset that
/// closes a socket keeps its place before the close (equal times keep the order they arrived in).
#[inline(always)]
fn finish(ctx: &BtfTracePointContext, event: &mut WireEvent, offsets: &KernelOffsets, clock_socket: *const u8) {
    // SAFETY: a helper without arguments; it returns the current task, a trusted BTF pointer.
    let task = unsafe { bpf_get_current_task_btf() }.cast::<u8>().cast_const();
    let in_task = if task.is_null() {
        missed(KernelMiss::Task);
        false
    } else {
        // SAFETY: `flags` and `stack` are members of the loaded `task_struct` type.
        let (flags, stack) = unsafe { (load::<u32>(task, offsets.task_flags), load::<u64>(task, offsets.task_stack)) };
        own_context(address_of(event.kind, ctx.as_ptr()), stack, flags)
    };
    event.timestamp_ns = match packet_time(clock_socket, in_task, offsets) {
        Some(time) => time,
        // SAFETY: a helper without arguments.
        None => unsafe { bpf_ktime_get_ns() },
    };
    if cfg!(cost_cut = "clock") {
        return; // the record, its context and time, without the process
    }
    if in_task {
        let pid_tgid = bpf_get_current_pid_tgid();
        event.tgid = (pid_tgid >> 32) as u32;
        event.pid = pid_tgid as u32;
        // Two direct loads; the helper that copies the name costs several times more.
        // SAFETY: `comm` is a 16-byte member of the loaded `task_struct` type.
        unsafe { load16(&mut event.comm, task, offsets.task_comm) };
        event.flags |= FLAG_PROCESS_CONTEXT;
        // SAFETY: as above.
        if event.kind == EventKind::StateChange as u8 && unsafe { load::<u32>(task, offsets.task_flags) } & PF_EXITING != 0 {
            event.reason = STATE_BY_EXITING_TASK;
        }
    }
}

/// The time a state change in softirq happened, from its socket: TCP takes the clock
/// (`tcp_mstamp_refresh`, into `tcp_clock_cache`) as it begins processing each packet, and in
/// softirq a packet is what changes a socket's state; a timer does too, but a timer fires long
/// after the socket's last packet, so a cache more than a few ticks old (by the jiffies) is not
/// used. Reading the cache costs a few loads where the clock costs tens of nanoseconds. `None`:
/// read the clock (in a task's context, where a system call may act long after the last packet;
/// or where the kernel lacks the cache).
#[inline(always)]
fn packet_time(socket: *const u8, in_task: bool, offsets: &KernelOffsets) -> Option<u64> {
    let tick_ns = u64::from(config().packet_clock_tick_ns);
    if in_task || tick_ns == 0 || socket.is_null() {
        return None;
    }
    // SAFETY: `bpf_skc_to_tcp_sock` returns a `tcp_sock` pointer or null; the offset is its
    // member; `bpf_jiffies64` is a helper without arguments.
    unsafe {
        let tcp = tcp_sock(socket);
        if tcp.is_null() {
            return None;
        }
        let cached = load::<u64>(tcp, offsets.tcp_clock_cache);
        let about_now = bpf_jiffies64().wrapping_mul(tick_ns).wrapping_add(config().jiffies_base_ns);
        ((about_now.wrapping_sub(cached) as i64) <= (PACKET_CLOCK_TICKS * tick_ns) as i64).then_some(cached)
    }
}

/// Everything `struct sock_common` says about a socket (or a request socket), written over
/// `event`. False (and counted) when there is no socket to read.
#[inline(always)]
fn socket_event(event: &mut WireEvent, kind: EventKind, socket: *const u8, offsets: &KernelOffsets) -> bool {
    if socket.is_null() {
        missed(KernelMiss::Socket);
        return false;
    }
    clear(event, kind, socket as u64);
    // SAFETY: every offset names a `struct sock_common` member of the loaded type.
    unsafe {
        let family = load::<u16>(socket, offsets.sock_family);
        event.family = family as u8;
        event.new_state = load::<u8>(socket, offsets.sock_state);
        event.local_port = load::<u16>(socket, offsets.sock_num);
        event.remote_port = u16::from_be(load::<u16>(socket, offsets.sock_dport));
        if family as u8 == AF_INET6 {
            load16(&mut event.local_addr, socket, offsets.sock_v6_rcv_saddr);
            load16(&mut event.remote_addr, socket, offsets.sock_v6_daddr);
        } else {
            put_ipv4(&mut event.local_addr, load::<u32>(socket, offsets.sock_rcv_saddr));
            put_ipv4(&mut event.remote_addr, load::<u32>(socket, offsets.sock_daddr));
        }
        let net = load::<*const u8>(socket, offsets.sock_net);
        if !net.is_null() {
            event.netns = load::<u32>(net, offsets.net_inum);
        }
    }
    true
}

/// The socket as a `tcp_sock` (a BTF-typed pointer whose members load directly), or null when
/// it is not a full TCP socket.
#[inline(always)]
fn tcp_sock(socket: *const u8) -> *const u8 {
    // SAFETY: the helper checks the socket's type itself and returns a `tcp_sock` pointer or null.
    unsafe { bpf_skc_to_tcp_sock(socket.cast_mut().cast()).cast::<u8>().cast_const() }
}

/// A socket already unbound (a reset sent after it closed, a socket that just handed over to its
/// timewait socket) has `skc_num` cleared; the port the connection used stays in `inet_sport`.
#[inline(always)]
fn add_unbound_port(event: &mut WireEvent, socket: *const u8, offsets: &KernelOffsets) {
    if event.local_port != 0 || socket.is_null() {
        return;
    }
    // SAFETY: `bpf_skc_to_tcp_sock` returns a `tcp_sock` pointer or null; the offset is its member.
    unsafe {
        let tcp = tcp_sock(socket);
        if !tcp.is_null() {
            event.local_port = u16::from_be(load::<u16>(tcp, offsets.tcp_inet_sport));
        }
    }
}

/// A reset sent without a socket (nothing listens, or the connection is gone): the addresses and
/// ports come from the packet that caused it, reversed, and the namespace from its device.
/// False (and counted) when the packet's headers cannot be read.
#[inline(always)]
fn packet_event(event: &mut WireEvent, skb: *const u8, offsets: &KernelOffsets) -> bool {
    if packet_addresses(event, EventKind::ResetSent, skb, offsets).is_none() {
        missed(KernelMiss::Packet);
        return false;
    }
    true
}

/// The addresses and ports of a received packet (`remote` its source), and the namespace of its
/// device, written over `event` as a `kind` record.
#[inline(always)]
fn packet_addresses(event: &mut WireEvent, kind: EventKind, skb: *const u8, offsets: &KernelOffsets) -> Option<()> {
    if skb.is_null() {
        return None;
    }
    clear(event, kind, 0);
    // SAFETY: `skb` is the tracepoint's `struct sk_buff *`; the header bytes are read with
    // `bpf_probe_read_kernel`, which fails cleanly on a bad address.
    unsafe {
        let head = load::<u64>(skb, offsets.skb_head);
        let network = head + u64::from(load::<u16>(skb, offsets.skb_network_header));
        let transport = head + u64::from(load::<u16>(skb, offsets.skb_transport_header));
        let version = bpf_probe_read_kernel(network as *const u8).ok()? >> 4;
        let ports = bpf_probe_read_kernel(transport as *const [u16; 2]).ok()?;
        event.remote_port = u16::from_be(ports[0]);
        event.local_port = u16::from_be(ports[1]);
        if version == 6 {
            event.family = AF_INET6;
            event.remote_addr = bpf_probe_read_kernel((network + 8) as *const [u8; 16]).ok()?;
            event.local_addr = bpf_probe_read_kernel((network + 24) as *const [u8; 16]).ok()?;
        } else {
            event.family = AF_INET;
            let addresses = bpf_probe_read_kernel((network + 12) as *const [u32; 2]).ok()?;
            put_ipv4(&mut event.remote_addr, addresses[0]);
            put_ipv4(&mut event.local_addr, addresses[1]);
        }
        event.netns = device_netns(skb, offsets);
    }
    Some(())
}

/// The namespace of a packet's device (its `net`'s inode), 0 where it has none.
///
/// # Safety
/// `skb` is a BTF-typed `struct sk_buff *`; the offsets are `sk_buff`, `net_device` and `net`
/// members.
#[inline(always)]
unsafe fn device_netns(skb: *const u8, offsets: &KernelOffsets) -> u32 {
    // SAFETY: the caller's contract; each pointer is checked before it is followed.
    unsafe {
        let device = load::<*const u8>(skb, offsets.skb_dev);
        if device.is_null() {
            return 0;
        }
        let net = load::<*const u8>(device, offsets.device_net);
        if net.is_null() {
            return 0;
        }
        load::<u32>(net, offsets.net_inum)
    }
}

/// The counters a connection log needs, read once, when the socket closes.
#[inline(always)]
fn add_socket_stats(event: &mut WireEvent, socket: *const u8, offsets: &KernelOffsets) {
    // SAFETY: `bpf_skc_to_tcp_sock` returns a `tcp_sock` pointer or null; the offsets are its members.
    unsafe {
        let tcp = tcp_sock(socket);
        if tcp.is_null() {
            return;
        }
        event.bytes_acked = load::<u64>(tcp, offsets.tcp_bytes_acked);
        event.bytes_received = load::<u64>(tcp, offsets.tcp_bytes_received);
        event.total_retrans = load::<u32>(tcp, offsets.tcp_total_retrans);
        event.error = load::<i32>(socket, offsets.sock_err) as u16;
        // tcp_fin() sets SOCK_DONE (bit 1); tcp_done() moves to CLOSE before anything else could.
        if load::<u64>(socket, offsets.sock_flags) & 2 != 0 {
            event.flags |= FLAG_PEER_FIN;
        }
    }
    event.flags |= FLAG_HAS_SOCKET_STATS;
}
