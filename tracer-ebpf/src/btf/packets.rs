//! The `tp_btf` hooks that read packets: `tcp_probe` (the segments an established socket
//! receives: RSTs and the peer's reference segments, with their TTL) and `kfree_skb` (the TCP
//! packets this host dropped, with the kernel's reason). Both fire per packet, so both leave
//! after a few loads unless the packet is one of the few the tracer wants.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_buf,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use tracer_common::{COUNTER_PEER_REFERENCES_ADDED, TCP_FLAG_SYN};

use super::*;
use crate::count;

/// `tcp_probe(sk, skb)`: every segment at the top of the established receive path, before the
/// kernel acts on it. Sent: every RST; the peer's first segment with data (its reference: the
/// TTL the peer's own packets carry), at most one per connection; and a data segment after an
/// idle gap (`idle_gap_jiffies` without an ACK: the connection lived through it). Everything else
/// leaves after a few loads, so a bulk transfer pays little per packet.
#[btf_tracepoint(function = "tcp_probe")]
pub fn btf_tcp_probe(ctx: BtfTracePointContext) -> u32 {
    if cfg!(cost_cut = "hook") {
        return 0; // `cargo xtask bench --kernel-parts`: every program stops at its entry
    }
    let socket: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let offsets = &config().offsets;
    // SAFETY: `skb` is the tracepoint's `struct sk_buff *`; the offsets are inside its `cb`.
    let (flags, sequence_space) = unsafe {
        let flags = load::<u8>(skb, offsets.skb_tcp_flags);
        (flags, load::<u32>(skb, offsets.skb_tcp_end_seq).wrapping_sub(load::<u32>(skb, offsets.skb_tcp_seq)))
    };
    let reset = flags & TCP_FLAG_RST != 0;
    // A FIN takes a sequence number of its own.
    let carries_data = sequence_space > u32::from(flags & TCP_FLAG_FIN);
    // A segment with no data that is no RST (a pure ACK, all a bulk sender receives; a bare
    // FIN, a closing connection's) leaves here.
    if !reset && !carries_data {
        return 0;
    }
    let tcp = tcp_sock(socket);
    if tcp.is_null() {
        return 0;
    }
    if !reset {
        // SAFETY: the offsets are `tcp_sock` members.
        let wanted = unsafe {
            // Counted before the segment is processed: 1 while the first one with data is here.
            let first = load::<u32>(tcp, offsets.tcp_data_segs_in) == 1;
            let gap = config().idle_gap_jiffies;
            first || (gap != 0 && (bpf_jiffies64() as u32).wrapping_sub(last_heard(tcp, offsets)) >= gap)
        };
        if !wanted {
            return 0;
        }
    }
    emit(|event| {
        if !socket_event(event, EventKind::Segment, socket, offsets) || !keep(event) {
            return false;
        }
        if segment_facts(event, skb, flags, offsets).is_none() {
            missed(KernelMiss::Packet);
            return false;
        }
        // SAFETY: `tcp` was checked above.
        unsafe { add_idle_clocks(event, tcp, offsets) };
        // Softirq or a socket's backlog: no process to name.
        // SAFETY: a helper without arguments.
        event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
        true
    });
    0
}

/// What the segment's headers say of its sender: TTL (hop limit), IPv4 ID, window, and its
/// sequence space.
#[inline(always)]
fn segment_facts(event: &mut WireEvent, skb: *const u8, flags: u8, offsets: &KernelOffsets) -> Option<()> {
    // SAFETY: `skb` is the tracepoint's `struct sk_buff *` and the offsets its members; the
    // header bytes are read with `bpf_probe_read_kernel`, which fails cleanly on a bad address.
    unsafe {
        let head = load::<u64>(skb, offsets.skb_head);
        let network = head + u64::from(load::<u16>(skb, offsets.skb_network_header));
        let transport = head + u64::from(load::<u16>(skb, offsets.skb_transport_header));
        let ip = bpf_probe_read_kernel(network as *const [u8; 12]).ok()?;
        let (ttl, id) = if ip[0] >> 4 == 6 { (ip[7], 0) } else { (ip[8], u16::from_be_bytes([ip[4], ip[5]])) };
        let window = bpf_probe_read_kernel((transport + 14) as *const [u8; 2]).ok()?;
        let (seq, end_seq) = (load::<u32>(skb, offsets.skb_tcp_seq), load::<u32>(skb, offsets.skb_tcp_end_seq));
        event.reason = u32::from(ttl);
        event.error = id;
        event.total_retrans = u32::from(u16::from_be_bytes(window));
        event.tgid = end_seq.wrapping_sub(seq);
        event.old_state = flags;
    }
    Some(())
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// `kfree_skb(skb, location, reason, …)`: a packet this host's kernel dropped, with why. Only
/// TCP packets dropped for a reason that means a loss are sent (`drop_reasons_wanted`): tied to
/// their socket when the packet had one (an early-demuxed segment for a connection), else with
/// the packet's own addresses.
#[btf_tracepoint(function = "kfree_skb")]
pub fn btf_kfree_skb(ctx: BtfTracePointContext) -> u32 {
    if cfg!(cost_cut = "hook") {
        return 0; // `cargo xtask bench --kernel-parts`: every program stops at its entry
    }
    // The branch is pruned, and the program not attached, where the prototype has no reason.
    if config().drop_reason_arg == 0 {
        return 0;
    }
    let skb: *const u8 = ctx.arg(0);
    let reason: u32 = ctx.arg(2);
    let wanted = &config().drop_reasons_wanted;
    if reason >= 256 || wanted[(reason / 64) as usize] & (1 << (reason % 64)) == 0 {
        return 0;
    }
    let offsets = &config().offsets;
    if skb.is_null() {
        return 0;
    }
    // SAFETY: `skb` is the tracepoint's `struct sk_buff *`; the offset is its member.
    let protocol = u16::from_be(unsafe { load::<u16>(skb, offsets.skb_protocol) });
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return 0;
    }
    emit(|event| {
        if dropped_packet(event, skb, offsets) != Some(true) || !keep(event) {
            return false;
        }
        event.reason = reason;
        // SAFETY: a helper without arguments.
        event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
        true
    });
    0
}

/// Fills `event` for a dropped packet: `Some(false)` when it is not TCP, `None` when it cannot
/// be read (counted).
#[inline(always)]
fn dropped_packet(event: &mut WireEvent, skb: *const u8, offsets: &KernelOffsets) -> Option<bool> {
    // SAFETY: `skb` is the tracepoint's `struct sk_buff *` and the offsets its members; header
    // bytes are read with `bpf_probe_read_kernel`, which fails cleanly on a bad address.
    unsafe {
        let head = load::<u64>(skb, offsets.skb_head);
        let network = head + u64::from(load::<u16>(skb, offsets.skb_network_header));
        let ip = bpf_probe_read_kernel(network as *const [u8; 10]).ok()?;
        let protocol = if ip[0] >> 4 == 6 { ip[6] } else { ip[9] };
        if protocol != IPPROTO_TCP {
            return Some(false);
        }
        let socket = load::<*const u8>(skb, offsets.skb_sk);
        if socket.is_null() {
            if packet_addresses(event, EventKind::Drop, skb, offsets).is_none() {
                missed(KernelMiss::Packet);
                return None;
            }
            event.old_state = 1;
            return Some(true);
        }
        // (`skb->sk` is an RCU pointer: loads only, no socket helper.)
        if !socket_event(event, EventKind::Drop, socket, offsets) {
            return None;
        }
        // Coming in when its source port is the peer's.
        let transport = head + u64::from(load::<u16>(skb, offsets.skb_transport_header));
        let source = u16::from_be(bpf_probe_read_kernel(transport as *const u16).ok()?);
        event.old_state = u8::from(source == event.remote_port);
    }
    Some(true)
}

/// Bytes read from a received packet's network header: a 20-byte IPv4 header and a TCP header
/// up to its window, or an IPv6 header and the same, in one read.
const HEADERS: usize = 56;

/// Where `btf_rx_reset` reads each packet's headers: one buffer per CPU, off the stack (the
/// verifier allows 512 bytes for a program's frames together).
#[map]
static RX_HEADERS: PerCpuArray<[u8; HEADERS]> = PerCpuArray::with_max_entries(1, 0);

/// `netif_receive_skb(skb)`: every packet this host receives, before any firewall or socket.
/// Sent: TCP RSTs, with their TTL and addresses (`tcp_probe` sees a RST only where it reaches an
/// established socket, not one answering our SYN or reaching a closing socket) and the reference
/// to judge them by, and ICMP destination unreachable errors about a TCP segment, with their
/// sender. A SYN or SYN-ACK is not sent: its TTL becomes its sender's reference in
/// [`PEER_REFERENCES`]. Every other packet leaves after one read of its headers.
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn btf_rx_reset(ctx: BtfTracePointContext) -> u32 {
    if cfg!(cost_cut = "hook") {
        return 0; // `cargo xtask bench --kernel-parts`: every program stops at its entry
    }
    let skb: *const u8 = ctx.arg(0);
    let offsets = &config().offsets;
    let Some(headers) = RX_HEADERS.get_ptr_mut(0) else { return 0 };
    // SAFETY: `skb` is the tracepoint's `struct sk_buff *`; the offsets are its members. The
    // header bytes are read with `bpf_probe_read_kernel`, which fails cleanly on a bad address,
    // into this CPU's buffer, which no other run of this program uses meanwhile (the kernel
    // never nests a program in itself).
    let headers = unsafe {
        let protocol = u16::from_be(load::<u16>(skb, offsets.skb_protocol));
        if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
            return 0;
        }
        // Here `data` is where the network header starts (the link header was pulled).
        let data = load::<u64>(skb, offsets.skb_data) as *const u8;
        if bpf_probe_read_kernel_buf(data, &mut *headers).is_err() {
            return 0;
        }
        &mut *headers
    };
    // Constant offsets on each branch (the verifier of older kernels refuses a computed one).
    let arrival = match headers[0] {
        0x45 if headers[9] == IPPROTO_TCP && headers[20 + 13] & TCP_FLAG_RST != 0 => Arrival::Reset,
        byte if byte >> 4 == 6 && headers[6] == IPPROTO_TCP && headers[40 + 13] & TCP_FLAG_RST != 0 => Arrival::Reset6,
        0x45 if headers[9] == IPPROTO_TCP && headers[20 + 13] & TCP_FLAG_SYN != 0 => return handshake_arrived::<20>(skb, headers, offsets),
        byte if byte >> 4 == 6 && headers[6] == IPPROTO_TCP && headers[40 + 13] & TCP_FLAG_SYN != 0 => {
            return handshake_arrived::<40>(skb, headers, offsets)
        }
        // IPv4 with options (rare): the TCP header is read again, where the header length puts it.
        0x46..=0x4f if headers[9] == IPPROTO_TCP => Arrival::AfterOptions,
        // ICMP destination unreachable quoting a TCP segment's headers (an inner IPv4 header
        // without options: the TCP ports end at byte 52 of the 56 read).
        0x45 if headers[9] == IPPROTO_ICMP && headers[20] == ICMP_DEST_UNREACH && headers[28] == 0x45 && headers[37] == IPPROTO_TCP => {
            Arrival::Icmp
        }
        byte if byte >> 4 == 6 && headers[6] == IPPROTO_ICMPV6 && headers[40] == ICMPV6_DEST_UNREACH => Arrival::Icmp6,
        _ => return 0,
    };
    // One place builds every record: each record built inline keeps a spare record's room in
    // this frame.
    emit(|event| {
        // SAFETY: `skb` is the tracepoint's `struct sk_buff *`.
        let netns = unsafe { device_netns(skb, offsets) };
        match arrival {
            Arrival::Reset => reset_arrived::<20>(event, netns, headers),
            Arrival::Reset6 => reset_arrived::<40>(event, netns, headers),
            Arrival::AfterOptions => reset_after_options(event, netns, skb, headers, offsets) == Some(true),
            Arrival::Icmp => icmp_arrived_v4(event, netns, headers),
            Arrival::Icmp6 => icmp_arrived_v6(event, netns, skb, headers, offsets) == Some(true),
        }
    });
    0
}

/// What a received packet is, for the record [`btf_rx_reset`] builds.
#[derive(Clone, Copy)]
enum Arrival {
    /// A TCP RST over IPv4 without options, or over IPv6.
    Reset,
    Reset6,
    /// A TCP segment over IPv4 with options: a record only if it is a RST.
    AfterOptions,
    /// An ICMP (ICMPv6) destination unreachable about a TCP segment.
    Icmp,
    Icmp6,
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;

/// An IPv4 ICMP destination unreachable about a TCP segment of ours: the segment's addresses and
/// ports as we sent them (ours first), and who sent the error.
#[inline(always)]
fn icmp_arrived_v4(event: &mut WireEvent, netns: u32, headers: &[u8; HEADERS]) -> bool {
    let address = |at: usize| u32::from_ne_bytes([headers[at], headers[at + 1], headers[at + 2], headers[at + 3]]);
    clear(event, EventKind::IcmpArrived, 0);
    event.family = AF_INET;
    put_ipv4(&mut event.local_addr, address(28 + 12));
    put_ipv4(&mut event.remote_addr, address(28 + 16));
    event.local_port = u16::from_be_bytes([headers[48], headers[49]]);
    event.remote_port = u16::from_be_bytes([headers[50], headers[51]]);
    event.netns = netns;
    if !keep(event) {
        return false;
    }
    put_ipv4(&mut event.comm, address(12));
    event.reason = u32::from(headers[8]);
    (event.old_state, event.new_state) = (headers[20], headers[21]);
    // SAFETY: a helper without arguments.
    event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    true
}

/// The same for ICMPv6: the quoted IPv6 header and TCP ports lie past the first read, so they
/// are read again (48 bytes from the quoted header on). `None` when they cannot be read.
#[inline(always)]
fn icmp_arrived_v6(event: &mut WireEvent, netns: u32, skb: *const u8, headers: &[u8; HEADERS], offsets: &KernelOffsets) -> Option<bool> {
    // SAFETY: as in `btf_rx_reset`; the read fails cleanly on a bad address.
    let quoted = unsafe { bpf_probe_read_kernel((load::<u64>(skb, offsets.skb_data) + 48) as *const [u8; 48]).ok()? };
    if quoted[6] != IPPROTO_TCP {
        return Some(false);
    }
    clear(event, EventKind::IcmpArrived, 0);
    event.family = AF_INET6;
    put_ipv6(&mut event.local_addr, &quoted, 8);
    put_ipv6(&mut event.remote_addr, &quoted, 24);
    event.local_port = u16::from_be_bytes([quoted[40], quoted[41]]);
    event.remote_port = u16::from_be_bytes([quoted[42], quoted[43]]);
    event.netns = netns;
    if !keep(event) {
        return Some(false);
    }
    put_ipv6(&mut event.comm, headers, 8);
    event.reason = u32::from(headers[7]);
    (event.old_state, event.new_state) = (headers[40], headers[41]);
    // SAFETY: a helper without arguments.
    event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    Some(true)
}

/// An IPv4 packet whose options push its TCP header past byte 20: reads that header where the
/// IHL says, and when it is a RST, builds its record as [`reset_arrived`] would with the header
/// in place.
#[inline(always)]
fn reset_after_options(
    event: &mut WireEvent,
    netns: u32,
    skb: *const u8,
    headers: &mut [u8; HEADERS],
    offsets: &KernelOffsets,
) -> Option<bool> {
    let ip_header = u64::from(headers[0] & 0x0f) * 4;
    // SAFETY: as in `btf_rx_reset`; the read fails cleanly on a bad address.
    let tcp = unsafe { bpf_probe_read_kernel((load::<u64>(skb, offsets.skb_data) + ip_header) as *const [u8; 20]).ok()? };
    if tcp[13] & TCP_FLAG_RST == 0 {
        return Some(false);
    }
    headers[20..40].copy_from_slice(&tcp);
    Some(reset_arrived::<20>(event, netns, headers))
}

/// Where a peer address's handshake arrived from, by the namespace of the device it came in on.
#[repr(C)]
struct PeerKey {
    netns: u32,
    family: u32,
    address: [u8; 16],
}

/// What the last handshake from that address carried.
#[repr(C)]
struct PeerReference {
    seen_ns: u64,
    /// When its TTL last differed from the one before (0: never): an address behind which
    /// hosts at several distances answer (a NAT), or a route that changed.
    changed_ns: u64,
    ttl: u32,
    _pad: u32,
}

/// The reference for a RST that reaches a connection with no packet of the peer's own yet
/// (refused connects; a reset right after the handshake): kept here, at one lookup per SYN and
/// SYN-ACK, rather than sent per connection, and sent inside the RST's record.
#[map]
static PEER_REFERENCES: LruHashMap<PeerKey, PeerReference> = LruHashMap::with_max_entries(tracer_common::PEER_REFERENCES, 0);

/// The key of the packet's source address, its header at `TCP - 20` (IPv4) or 0 (IPv6).
#[inline(always)]
fn peer_key<const TCP: usize>(netns: u32, headers: &[u8; HEADERS]) -> PeerKey {
    let mut key = PeerKey { netns, family: 0, address: [0; 16] };
    if TCP == 40 {
        key.family = u32::from(AF_INET6);
        put_ipv6(&mut key.address, headers, 8);
    } else {
        key.family = u32::from(AF_INET);
        put_ipv4(&mut key.address, u32::from_ne_bytes([headers[12], headers[13], headers[14], headers[15]]));
    }
    key
}

/// A SYN (at a server) or SYN-ACK (at a client) whose TCP header starts at `TCP`: its TTL is
/// what the peer's own packets carry, the first reference every connection has.
#[inline(always)]
fn handshake_arrived<const TCP: usize>(skb: *const u8, headers: &[u8; HEADERS], offsets: &KernelOffsets) -> u32 {
    // SAFETY: `skb` is the tracepoint's `struct sk_buff *`.
    let key = peer_key::<TCP>(unsafe { device_netns(skb, offsets) }, headers);
    let ttl = u32::from(if TCP == 40 { headers[7] } else { headers[8] });
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    match PEER_REFERENCES.get_ptr_mut(&key) {
        // SAFETY: the map's value for this key; a racing update of the same address on another
        // CPU leaves one of the two handshakes' facts, either of them right.
        Some(known) => unsafe {
            if (*known).ttl != ttl {
                (*known).changed_ns = now;
                (*known).ttl = ttl;
            }
            (*known).seen_ns = now;
        },
        None => {
            if PEER_REFERENCES.insert(&key, &PeerReference { seen_ns: now, changed_ns: 0, ttl, _pad: 0 }, 0).is_ok() {
                count(COUNTER_PEER_REFERENCES_ADDED, 1);
            }
        }
    }
    0
}

/// Builds the record of a received RST whose TCP header starts at `TCP` in `headers` (20: IPv4,
/// its options cut out; 40: IPv6), with the reference its source address's last handshake
/// left. False when the operator's filter does not want it.
#[inline(always)]
fn reset_arrived<const TCP: usize>(event: &mut WireEvent, netns: u32, headers: &[u8; HEADERS]) -> bool {
    let bytes = |at: usize| [headers[at], headers[at + 1]];
    clear(event, EventKind::ResetArrived, 0);
    let (ttl, id, length) = if TCP == 40 {
        event.family = AF_INET6;
        put_ipv6(&mut event.remote_addr, headers, 8);
        put_ipv6(&mut event.local_addr, headers, 24);
        (headers[7], 0, u16::from_be_bytes(bytes(4)))
    } else {
        event.family = AF_INET;
        put_ipv4(&mut event.remote_addr, u32::from_ne_bytes([headers[12], headers[13], headers[14], headers[15]]));
        put_ipv4(&mut event.local_addr, u32::from_ne_bytes([headers[16], headers[17], headers[18], headers[19]]));
        (headers[8], u16::from_be_bytes(bytes(4)), u16::from_be_bytes(bytes(2)).saturating_sub(u16::from(headers[0] & 0x0f) * 4))
    };
    event.remote_port = u16::from_be_bytes(bytes(TCP));
    event.local_port = u16::from_be_bytes(bytes(TCP + 2));
    event.netns = netns;
    if !keep(event) {
        return false;
    }
    event.reason = u32::from(ttl);
    event.error = id;
    event.total_retrans = u32::from(u16::from_be_bytes(bytes(TCP + 14)));
    // The payload: what the IP length holds beyond the TCP header.
    event.tgid = u32::from(length.saturating_sub(u16::from(headers[TCP + 12] >> 4) * 4));
    event.old_state = headers[TCP + 13];
    // SAFETY: a copy is read at once; an update racing on another CPU leaves either
    // handshake's facts.
    if let Some(reference) = unsafe { PEER_REFERENCES.get(peer_key::<TCP>(netns, headers)) } {
        event.new_state = reference.ttl as u8;
        (event.bytes_acked, event.bytes_received) = (reference.seen_ns, reference.changed_ns);
    }
    // SAFETY: a helper without arguments.
    event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    true
}

/// Copies the IPv6 address at byte `at` of `headers` into a 16-byte field, as two words.
#[inline(always)]
fn put_ipv6<const N: usize>(dst: &mut [u8; 16], headers: &[u8; N], at: usize) {
    // SAFETY: `at` is 8 or 24 and `N` at least 48, so the 16 bytes lie inside `headers`; `dst`
    // is one of a `WireEvent`'s 16-byte fields, at an 8-byte aligned offset of an 8-byte
    // aligned record.
    unsafe {
        let words = core::ptr::read_unaligned(headers.as_ptr().add(at).cast::<[u64; 2]>());
        core::ptr::write(dst.as_mut_ptr().cast::<[u64; 2]>(), words);
    }
}
