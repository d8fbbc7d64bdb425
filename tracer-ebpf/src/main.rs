//! The kernel half: five tracepoint programs that copy the facts of a TCP event into one
//! [`WireEvent`] and hand it to userspace through a ring buffer.
//!
//! Every field is read at an offset the loader found in tracefs (and, for kernel structures, in
//! BTF), so one object serves every kernel layout. These programs must never decide anything,
//! loop, or block: they gather and send. A full ring buffer is counted, never hidden. The
//! reader is woken only when enough has piled up; it also polls on a short timer.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf, generated::bpf_get_current_task},
    macros::{fentry, fexit, map, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::{FEntryContext, FExitContext, TracePointContext},
    EbpfContext,
};
use tracer_common::{
    EventKind, HookLayout, KernelConfig, KernelOffsets, WireEvent, ABSENT, RECORD_MAX, COUNTER_RESERVE_FAILED, COUNTER_SLOTS,
    FLAG_HAS_REASON, FLAG_PROCESS_CONTEXT,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const PF_KTHREAD: u32 = 0x0020_0000;

/// Filled in by the loader before the programs are verified.
#[no_mangle]
static CONFIG: KernelConfig = KernelConfig::NONE;

/// Resized by the loader (`--ring-buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    emit(&ctx, EventKind::StateChange)
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    emit(&ctx, EventKind::ResetSent)
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    emit(&ctx, EventKind::ResetReceived)
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    emit(&ctx, EventKind::Retransmit)
}

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    emit(&ctx, EventKind::SynAckRetransmit)
}

/// The first bytes of a tracepoint record, copied in one read (a probe read per field costs
/// as much as the whole copy).
struct Record([u8; RECORD_MAX]);

impl Record {
    /// A value at `offset`, or `None` when the layout lacks it.
    #[inline(always)]
    fn field<T>(&self, offset: u16) -> Option<T> {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > RECORD_MAX {
            return None; // also ABSENT
        }
        Some(unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(offset).cast::<T>()) })
    }
}

/// Room for one record in the ring buffer; a full buffer is counted, per CPU.
#[inline(always)]
fn reserve() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<WireEvent>> {
    let entry = EVENTS.reserve::<WireEvent>(0);
    if entry.is_none() {
        if let Some(counter) = COUNTERS.get_ptr_mut(COUNTER_RESERVE_FAILED) {
            unsafe { *counter += 1 };
        }
    }
    entry
}

/// Reads kernel memory at `base + offset`; `None` for a null base or an absent offset.
#[inline(always)]
fn kernel<T>(base: u64, offset: u16) -> Option<T> {
    if base == 0 || offset == ABSENT {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

#[inline(always)]
fn emit(ctx: &TracePointContext, kind: EventKind) -> u32 {
    // Volatile: the loader rewrites CONFIG after compilation, so the compiler must not fold it.
    let layout: HookLayout = unsafe { core::ptr::read_volatile(&raw const CONFIG.hooks[kind.index()]) };
    let mut record = Record([0; RECORD_MAX]);
    let length = layout.record_len as usize;
    if length > RECORD_MAX || unsafe { bpf_probe_read_kernel_buf(ctx.as_ptr().cast(), &mut record.0[..length]) }.is_err() {
        return 0;
    }
    if let Some(protocol) = record.field::<u16>(layout.protocol) {
        if protocol != IPPROTO_TCP {
            return 0;
        }
    }
    let Some(mut entry) = reserve() else { return 0 };
    let mut event = WireEvent::new(kind, unsafe { bpf_ktime_get_ns() }, record.field(layout.socket).unwrap_or(0));
    event.old_state = record.field::<i32>(layout.old_state).unwrap_or(0) as u8;
    event.new_state = record.field::<i32>(layout.new_state).unwrap_or(0) as u8;
    event.local_port = record.field(layout.local_port).unwrap_or(0);
    event.remote_port = record.field(layout.remote_port).unwrap_or(0);
    read_addresses(&record, &layout, &mut event);
    if let Some(reason) = record.field::<u32>(layout.reason) {
        event.reason = reason;
        event.flags |= FLAG_HAS_REASON;
    }
    let offsets = unsafe { core::ptr::read_volatile(&raw const CONFIG.offsets) };
    event.netns = namespace_of(&record, &layout, &offsets, event.socket);
    if in_process_context(&record, &offsets) {
        let pid_tgid = bpf_get_current_pid_tgid();
        event.tgid = (pid_tgid >> 32) as u32;
        event.pid = pid_tgid as u32;
        event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        event.flags |= FLAG_PROCESS_CONTEXT;
    }
    entry.write(event);
    let wakeup_bytes = unsafe { core::ptr::read_volatile(&raw const CONFIG.wakeup_bytes) };
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup_bytes { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(flags as u64);
    0
}

#[inline(always)]
fn read_addresses(record: &Record, layout: &HookLayout, event: &mut WireEvent) {
    if layout.local_sockaddr != ABSENT {
        // struct sockaddr_in / sockaddr_in6: family, big-endian port, then the address.
        let family = record.field::<u16>(layout.local_sockaddr).unwrap_or(0);
        event.family = family as u8;
        event.local_port = u16::from_be(record.field(layout.local_sockaddr + 2).unwrap_or(0));
        event.remote_port = u16::from_be(record.field(layout.remote_sockaddr + 2).unwrap_or(0));
        if family == AF_INET6 {
            event.local_addr = record.field(layout.local_sockaddr + 8).unwrap_or([0; 16]);
            event.remote_addr = record.field(layout.remote_sockaddr + 8).unwrap_or([0; 16]);
        } else {
            copy4(&mut event.local_addr, record.field(layout.local_sockaddr + 4));
            copy4(&mut event.remote_addr, record.field(layout.remote_sockaddr + 4));
        }
        return;
    }
    let family = record.field::<u16>(layout.family).unwrap_or(0);
    event.family = family as u8;
    if family == AF_INET || layout.local_addr6 == ABSENT {
        copy4(&mut event.local_addr, record.field(layout.local_addr4));
        copy4(&mut event.remote_addr, record.field(layout.remote_addr4));
    } else {
        // Without a family field (Linux < 6.1 resets) IPv4 arrives v4-mapped here; userspace infers.
        event.local_addr = record.field(layout.local_addr6).unwrap_or([0; 16]);
        event.remote_addr = record.field(layout.remote_addr6).unwrap_or([0; 16]);
    }
}

#[inline(always)]
fn copy4(dst: &mut [u8; 16], src: Option<[u8; 4]>) {
    if let Some(src) = src {
        dst[..4].copy_from_slice(&src);
    }
}

/// The network namespace inode, through the socket or, for resets sent without one, the
/// receiving device. 0 when neither can be read.
#[inline(always)]
fn namespace_of(record: &Record, layout: &HookLayout, offsets: &KernelOffsets, socket: u64) -> u32 {
    let net = if socket != 0 {
        kernel::<u64>(socket, offsets.sock_net)
    } else {
        let skb = record.field::<u64>(layout.skb).unwrap_or(0);
        let device = kernel::<u64>(skb, offsets.skb_dev).unwrap_or(0);
        kernel::<u64>(device, offsets.device_net)
    };
    kernel::<u32>(net.unwrap_or(0), offsets.net_inum).unwrap_or(0)
}

/// True when the caller ran on the current task's own stack in a user task: then the pid is the
/// one that caused the event. Softirq and hardirq run on per-CPU stacks, ksoftirqd is a kernel
/// thread; both leave the pid unknown rather than wrong. (For tracepoint programs the first
/// word of the record is the caller's `struct pt_regs *`.)
#[inline(always)]
fn in_process_context(record: &Record, offsets: &KernelOffsets) -> bool {
    let regs = record.field::<u64>(0).unwrap_or(0);
    let task = unsafe { bpf_get_current_task() };
    let (Some(sp), Some(stack), Some(flags)) = (
        kernel::<u64>(regs, offsets.regs_sp),
        kernel::<u64>(task, offsets.task_stack),
        kernel::<u32>(task, offsets.task_flags),
    ) else {
        return false;
    };
    flags & PF_KTHREAD == 0 && sp >= stack && sp - stack < offsets.thread_size as u64
}

/// fentry `tcp_time_wait(sk, state, timeo)`: the full socket becomes a timewait socket in
/// `state` (TIME_WAIT, or FIN_WAIT2 for an orphan). Tracepoints cannot see this.
#[fentry(function = "tcp_time_wait")]
pub fn tcp_time_wait(ctx: FEntryContext) -> u32 {
    let socket: u64 = ctx.arg(0);
    let state: i32 = ctx.arg(1);
    emit_for_socket(EventKind::TimeWaitEnter, socket, state as u8, None)
}

/// fexit `tcp_timewait_state_process(tw, skb, th, ...)`, for SYNs and FINs only: what the
/// timewait socket answered a SYN (a new connection, or a bare ACK), and a FIN reaching one left
/// in FIN_WAIT2 (the peer did close). Needs `bpf_get_func_ret` (Linux ≥ 5.17).
#[fexit(function = "tcp_timewait_state_process")]
pub fn tcp_timewait_state_process(ctx: FExitContext) -> u32 {
    let header: u64 = ctx.arg(2);
    const TCP_FLAGS_BYTE: u16 = 13;
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const TCP_TIME_WAIT: u8 = 6;
    let flags = kernel::<u8>(header, TCP_FLAGS_BYTE).unwrap_or(0);
    if flags & SYN != 0 {
        let Ok(status) = ctx.ret::<u32>() else { return 0 };
        emit_for_socket(EventKind::TimeWaitSyn, ctx.arg(0), 0, Some(status))
    } else if flags & FIN != 0 {
        emit_for_socket(EventKind::TimeWaitEnter, ctx.arg(0), TCP_TIME_WAIT, None)
    } else {
        0
    }
}

/// An event about a socket pointer (full or timewait: both start with `struct sock_common`).
#[inline(always)]
fn emit_for_socket(kind: EventKind, socket: u64, state: u8, status: Option<u32>) -> u32 {
    let offsets = unsafe { core::ptr::read_volatile(&raw const CONFIG.offsets) };
    let mut common = Record([0; RECORD_MAX]);
    let length = offsets.sock_common_len as usize;
    if socket == 0 || length > RECORD_MAX || unsafe { bpf_probe_read_kernel_buf(socket as *const u8, &mut common.0[..length]) }.is_err() {
        return 0;
    }
    let Some(mut entry) = reserve() else { return 0 };
    let family = common.field::<u16>(offsets.sock_family).unwrap_or(0);
    let mut event = WireEvent::new(kind, unsafe { bpf_ktime_get_ns() }, socket);
    event.family = family as u8;
    event.new_state = state;
    event.local_port = common.field(offsets.sock_num).unwrap_or(0);
    event.remote_port = u16::from_be(common.field(offsets.sock_dport).unwrap_or(0));
    if let Some(status) = status {
        event.reason = status;
        event.flags = FLAG_HAS_REASON;
    }
    if family == AF_INET6 {
        event.local_addr = common.field(offsets.sock_v6_rcv_saddr).unwrap_or([0; 16]);
        event.remote_addr = common.field(offsets.sock_v6_daddr).unwrap_or([0; 16]);
    } else {
        copy4(&mut event.local_addr, common.field(offsets.sock_rcv_saddr));
        copy4(&mut event.remote_addr, common.field(offsets.sock_daddr));
    }
    let net = kernel::<u64>(socket, offsets.sock_net).unwrap_or(0);
    event.netns = kernel::<u32>(net, offsets.net_inum).unwrap_or(0);
    entry.write(event);
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
