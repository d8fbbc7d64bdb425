//! A recorded-style event stream for the benchmarks: the wire records the kernel would send for
//! short connections between many clients and one service, both ends traced.
#![allow(dead_code)] // each bench uses part of it

use tracer_common::{
    tcp_state::{CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, LAST_ACK, LISTEN, SYN_RECV, SYN_SENT},
    EventKind, WireEvent, FLAG_HAS_SOCKET_STATS, FLAG_PEER_FIN, FLAG_PROCESS_CONTEXT, WIRE_VERSION,
};

#[expect(clippy::too_many_arguments, reason = "one argument per wire field a generated record varies")]
fn record(
    kind: EventKind,
    socket: u64,
    at: u64,
    old: u8,
    new: u8,
    local: ([u8; 4], u16),
    remote: ([u8; 4], u16),
    process: bool,
) -> WireEvent {
    let mut local_addr = [0; 16];
    local_addr[..4].copy_from_slice(&local.0);
    let mut remote_addr = [0; 16];
    remote_addr[..4].copy_from_slice(&remote.0);
    WireEvent {
        version: WIRE_VERSION,
        kind: kind as u8,
        family: 2,
        flags: if process { FLAG_PROCESS_CONTEXT } else { 0 },
        old_state: old,
        new_state: new,
        local_port: local.1,
        remote_port: remote.1,
        error: 0,
        reason: 0,
        timestamp_ns: at,
        socket,
        netns: 4026531840,
        tgid: if process { 4242 } else { 0 },
        pid: if process { 4242 } else { 0 },
        total_retrans: 0,
        bytes_acked: 0,
        bytes_received: 0,
        local_addr,
        remote_addr,
        comm: *b"loadgen\0\0\0\0\0\0\0\0\0",
    }
}

/// The ten state changes of connection `n` (client and server side), starting at `at` ns, with
/// the server closing first; one in `reset_every` ends with a RST from the client instead.
pub fn connection(n: u64, at: u64, reset_every: u64) -> Vec<WireEvent> {
    let client_ip = [10, 1, (n >> 8) as u8 % 16, n as u8];
    let server_ip = [10, 0, 0, 1];
    let port = 32768 + (n % 28000) as u16;
    let client = (client_ip, port);
    let server = (server_ip, 443);
    // Socket addresses are reused by the kernel's allocator: cycle through a few thousand.
    let (c, s) = (0xffff_8880_0000_0000 + (n % 4096) * 0x1000, 0xffff_8881_0000_0000 + (n % 4096) * 0x1000);
    let state =
        |socket, t, old, new, local, remote, process| record(EventKind::StateChange, socket, at + t, old, new, local, remote, process);
    let mut events = vec![
        state(c, 0, CLOSE, SYN_SENT, (client_ip, 0), server, true),
        state(s, 20_000, LISTEN, SYN_RECV, server, client, false),
        state(c, 25_000, SYN_SENT, ESTABLISHED, client, server, false),
        state(s, 30_000, SYN_RECV, ESTABLISHED, server, client, false),
    ];
    if reset_every > 0 && n % reset_every == 0 {
        events.push(state(c, 100_000, ESTABLISHED, CLOSE, client, server, true));
        events.push(record(EventKind::ResetSent, c, at + 100_500, 0, CLOSE, client, server, true));
        events.push(record(EventKind::ResetReceived, s, at + 120_000, 0, ESTABLISHED, server, client, false));
        events.push(state(s, 120_500, ESTABLISHED, CLOSE, server, client, false));
    } else {
        events.extend([
            state(s, 100_000, ESTABLISHED, FIN_WAIT1, server, client, true),
            state(c, 120_000, ESTABLISHED, CLOSE_WAIT, client, server, false),
            state(s, 121_000, FIN_WAIT1, FIN_WAIT2, server, client, false),
            state(c, 140_000, CLOSE_WAIT, LAST_ACK, client, server, true),
            state(s, 160_000, FIN_WAIT2, CLOSE, server, client, false),
            state(c, 161_000, LAST_ACK, CLOSE, client, server, false),
        ]);
    }
    events
}

pub fn bytes(event: &WireEvent) -> [u8; WireEvent::SIZE] {
    // SAFETY: WireEvent is repr(C) plain integers with explicit padding.
    unsafe { std::mem::transmute::<WireEvent, [u8; WireEvent::SIZE]>(*event) }
}

/// CPUs the stream's connections are spread over.
const CPUS: u64 = 2;

/// `connections` connections starting every `spacing_ns`, flattened into ring-buffer records in
/// the order the ring buffer hands them over: connections alternate between [`CPUS`] CPUs, each
/// CPU's records go out in batches of `BATCH_RECORDS`, a batch when it is full, so the CPUs'
/// batches interleave and overlap in time as they do on a busy host.
pub fn stream(connections: u64, spacing_ns: u64) -> Vec<[u8; WireEvent::SIZE]> {
    batched((0..connections).map(|n| (n, connection(n, 1_000_000_000 + n * spacing_ns, 50))))
}

/// The same stream, but every connection comes from a client address of its own, as a server
/// with more clients than the tracker's tables hold sees them: one in `reset_every` ends with a
/// RST, the others leave a TIME_WAIT socket on the server (its orphan took the client's FIN), so
/// the TIME_WAIT table (or the resets' table) fills up and stays full.
pub fn distinct_clients_stream(connections: u64, spacing_ns: u64, reset_every: u64) -> Vec<[u8; WireEvent::SIZE]> {
    batched((0..connections).map(|n| {
        let mut records = connection(n, 1_000_000_000 + n * spacing_ns, reset_every);
        let client = [10, (n >> 16) as u8, (n >> 8) as u8, n as u8];
        for record in &mut records {
            let client_side = record.local_port != 443;
            let address = if client_side { &mut record.local_addr } else { &mut record.remote_addr };
            address[..4].copy_from_slice(&client);
            if (record.old_state, record.new_state) == (FIN_WAIT2, CLOSE) {
                record.flags |= FLAG_HAS_SOCKET_STATS | FLAG_PEER_FIN;
            }
        }
        (n, records)
    }))
}

/// Connections' records, each connection on CPU `n % CPUS`, as the ring buffer hands them over.
fn batched(connections: impl Iterator<Item = (u64, Vec<WireEvent>)>) -> Vec<[u8; WireEvent::SIZE]> {
    let mut records: Vec<(u64, WireEvent)> =
        connections.flat_map(|(n, records)| records.into_iter().map(move |record| (n % CPUS, record))).collect();
    records.sort_by_key(|(_, record)| record.timestamp_ns);
    let mut batches: Vec<Vec<WireEvent>> = (0..CPUS)
        .flat_map(|cpu| {
            let own: Vec<WireEvent> = records.iter().filter(|(on, _)| *on == cpu).map(|(_, record)| *record).collect();
            own.chunks(tracer_common::BATCH_RECORDS).map(<[WireEvent]>::to_vec).collect::<Vec<_>>()
        })
        .collect();
    batches.sort_by_key(|batch| batch.last().map(|record| record.timestamp_ns));
    batches.iter().flatten().map(bytes).collect()
}
