//! Optional fentry/fexit hooks that see what tracepoints cannot: a socket handing over to a
//! timewait socket, and what a timewait socket answers a SYN. Refused on kernels that block
//! ftrace hooks; then userspace falls back to socket snapshots.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use tracer_common::{tcp_state, EventKind, KernelMiss, AF_INET6, FLAG_HAS_REASON, RECORD_MAX};

use crate::{
    classic::{copy4, kernel, Record},
    clear, config, emit, keep, missed,
};

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
    let flags = kernel::<u8>(header, TCP_FLAGS_BYTE).unwrap_or(0);
    if flags & SYN != 0 {
        let Ok(status) = ctx.ret::<u32>() else { return missed(KernelMiss::ReturnValue) };
        emit_for_socket(EventKind::TimeWaitSyn, ctx.arg(0), 0, Some(status))
    } else if flags & FIN != 0 {
        emit_for_socket(EventKind::TimeWaitEnter, ctx.arg(0), tcp_state::TIME_WAIT, None)
    } else {
        0
    }
}

/// An event about a socket pointer (full or timewait: both start with `struct sock_common`).
#[inline(always)]
fn emit_for_socket(kind: EventKind, socket: u64, state: u8, status: Option<u32>) -> u32 {
    let offsets = &config().offsets;
    let mut common = Record([0; RECORD_MAX]);
    let length = offsets.sock_common_len as usize;
    // SAFETY: a probe read of the socket's first bytes fails cleanly on a bad address.
    if socket == 0 || length > RECORD_MAX || unsafe { bpf_probe_read_kernel_buf(socket as *const u8, &mut common.0[..length]) }.is_err() {
        return missed(KernelMiss::Socket);
    }
    emit(|event| {
        let family = common.field::<u16>(offsets.sock_family).unwrap_or(0);
        clear(event, kind, socket);
        event.family = family as u8;
        event.new_state = state;
        event.local_port = common.field(offsets.sock_num).unwrap_or(0);
        event.remote_port = u16::from_be(common.field(offsets.sock_dport).unwrap_or(0));
        if let Some(status) = status {
            event.reason = status;
            event.flags = FLAG_HAS_REASON;
        }
        if family as u8 == AF_INET6 {
            event.local_addr = common.field(offsets.sock_v6_rcv_saddr).unwrap_or([0; 16]);
            event.remote_addr = common.field(offsets.sock_v6_daddr).unwrap_or([0; 16]);
        } else {
            copy4(&mut event.local_addr, common.field(offsets.sock_rcv_saddr));
            copy4(&mut event.remote_addr, common.field(offsets.sock_daddr));
        }
        let net = kernel::<u64>(socket, offsets.sock_net).unwrap_or(0);
        event.netns = kernel::<u32>(net, offsets.net_inum).unwrap_or(0);
        if !keep(event) {
            return false;
        }
        // SAFETY: a helper without arguments.
        event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
        true
    });
    0
}
