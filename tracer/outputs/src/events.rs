//! `--events`: one line per kernel event, for watching a connection live, and one per link change.
use serde::Serialize;
use tracer_common::EventKind;

use tracer_analysis::decode::{Decoder, Event};
use tracer_model::{clock::Clock, links::LinkChange};

pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::StateChange => "state",
        EventKind::ResetSent => "rst_sent",
        EventKind::ResetReceived => "rst_received",
        EventKind::Retransmit => "retransmit",
        EventKind::SynAckRetransmit => "synack_retransmit",
        EventKind::TimeWaitEnter => "timewait_enter",
        EventKind::TimeWaitSyn => "timewait_syn",
        EventKind::Segment => "segment",
        EventKind::Drop => "dropped",
        EventKind::ResetArrived => "rst_arrived",
        EventKind::IcmpArrived => "icmp_arrived",
    }
}

#[derive(Serialize)]
struct EventJson<'a> {
    ts: String,
    ts_ns: u64,
    kind: &'static str,
    netns: u32,
    socket: String,
    local: String,
    remote: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<u32>,
    /// For `timewait_syn`: the `tcp_tw_status` the kernel returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    tw_status: Option<u32>,
    /// For `segment`: what its headers said (TTL, IPv4 ID, window, length, flags) and the hops
    /// its TTL implies.
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<tracer_analysis::decode::Segment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hops: Option<u8>,
    /// For `dropped`: the kernel's drop reason, and whether the packet was coming in.
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    incoming: Option<bool>,
    /// For `icmp_arrived`: who sent it, its type, code and TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp: Option<tracer_analysis::decode::IcmpError>,
    pid: Option<u32>,
    tgid: Option<u32>,
    comm: Option<String>,
}

pub fn json(event: &Event, clock: &Clock, decoder: &Decoder) -> String {
    let record = EventJson {
        ts: clock.format(event.timestamp_ns),
        ts_ns: event.timestamp_ns,
        kind: kind_name(event.kind),
        netns: event.socket.netns,
        socket: format!("{:#x}", event.socket.address),
        local: event.local.to_string(),
        remote: event.remote.to_string(),
        old_state: event.old_state.map(|state| state.name()),
        state: event.state.map(|state| state.name()),
        reason: event.reset_reason.and_then(|code| decoder.reason_name(code)),
        reason_code: event.reset_reason,
        tw_status: event.tw_status,
        segment: event.segment,
        hops: event.segment.map(|segment| segment.hops()).or(event.icmp.map(|icmp| icmp.hops())),
        icmp: event.icmp,
        drop_reason: event.drop.map(|drop| decoder.drop_reasons().get(&drop.reason).map_or("?", String::as_str)),
        incoming: event.drop.map(|drop| drop.incoming),
        pid: event.process.map(|process| process.pid),
        tgid: event.process.map(|process| process.tgid),
        comm: event.process.map(|process| process.comm.to_string()),
    };
    serde_json::to_string(&record).expect("plain data always serializes")
}

/// `2026-11-22T02:10:00.123456Z state  10.0.0.1:43210 → 10.0.0.2:80  SYN_SENT → ESTABLISHED  pid 42 curl`
pub fn human(event: &Event, clock: &Clock, decoder: &Decoder) -> String {
    let states = match (event.kind, event.old_state, event.state) {
        (EventKind::StateChange, old, new) => format!("{} → {}", name_or_unknown(old), name_or_unknown(new)),
        (_, _, Some(state)) => format!("in {state}"),
        (_, _, None) => String::new(),
    };
    let reason = match (event.reset_reason, event.segment) {
        (Some(code), _) => format!("  reason {}", decoder.reason_name(code).unwrap_or("?")),
        (None, Some(segment)) => format!(
            "  {}ttl {} ({} hops) id {} win {} len {}",
            if segment.is_reset() { "RST " } else { "" },
            segment.ttl,
            segment.hops(),
            segment.ip_id,
            segment.window,
            segment.length
        ),
        (None, None) => match event.drop {
            Some(drop) => format!(
                "  {} {}",
                decoder.drop_reasons().get(&drop.reason).map_or("?", String::as_str),
                if drop.incoming { "coming in" } else { "going out" }
            ),
            None => String::new(),
        },
    };
    let process = match event.process {
        Some(process) => format!("pid {} {}", process.tgid, process.comm),
        None => "pid -".to_string(),
    };
    format!(
        "{} {:<17} {:>22} → {:<22} {:<26}{}  {}  netns {}",
        clock.format(event.timestamp_ns),
        kind_name(event.kind),
        event.local.to_string(),
        event.remote.to_string(),
        states,
        reason,
        process,
        event.socket.netns,
    )
}

fn name_or_unknown(state: Option<tracer_analysis::decode::TcpState>) -> &'static str {
    state.map_or("?", |state| state.name())
}

#[derive(Serialize)]
struct LinkJson<'a> {
    ts: String,
    ts_ns: u64,
    kind: &'static str,
    netns: u32,
    ifindex: u32,
    ifname: &'a str,
    what: &'static str,
    operstate: &'static str,
    carrier: bool,
}

/// A link change as an event line: `kind` is `link`.
pub fn link_json(change: &LinkChange, clock: &Clock) -> String {
    let record = LinkJson {
        ts: clock.format(change.at_ns),
        ts_ns: change.at_ns,
        kind: "link",
        netns: change.netns,
        ifindex: change.ifindex,
        ifname: &change.ifname,
        what: change.what.name(),
        operstate: change.operstate,
        carrier: change.carrier,
    };
    serde_json::to_string(&record).expect("plain data always serializes")
}

/// `2026-11-22T02:10:00.123456Z link              veth0 down (operstate lowerlayerdown, no carrier)  netns 4026532`
pub fn link_human(change: &LinkChange, clock: &Clock) -> String {
    format!(
        "{} {:<17} {} {} (operstate {}, {})  netns {}",
        clock.format(change.at_ns),
        "link",
        change.ifname,
        change.what.name(),
        change.operstate,
        if change.carrier { "carrier" } else { "no carrier" },
        change.netns
    )
}
