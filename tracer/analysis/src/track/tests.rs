//! The state machine's cases, each from a synthetic event sequence.
use super::*;
use crate::{
    decode::{IdleClocks, Process, SocketTotals},
    track::fixtures::*,
};

const S: u64 = 1_000_000_000;

use TcpState::*;

#[test]
fn a_reset_without_a_socket_takes_its_role_from_the_ports_we_serve_even_after_the_listener_closed() {
    let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
    let mut out = Vec::new();
    // Both ports are in the ephemeral range: only the listener tells which one serves.
    let listener = Script::new(1, "127.0.0.1:37000", "0.0.0.0:0");
    tracker.observe(&listener.state(TcpState::Close, TcpState::Listen, 1), &mut out);
    tracker.observe(&listener.state(TcpState::Listen, TcpState::Close, 2), &mut out);
    tracker.settle(u64::MAX, &mut out);
    let from_client_port = Script::new(0, "127.0.0.1:40000", "127.0.0.1:37000").reset_sent(TcpState::Close, Some(1), 3);
    let to_client_port = Script::new(0, "127.0.0.1:37000", "127.0.0.1:40001").reset_sent(TcpState::Close, Some(1), 4);
    let unknown = Script::new(0, "127.0.0.1:41000", "127.0.0.1:42000").reset_sent(TcpState::Close, Some(1), 5);
    out.clear();
    for event in [from_client_port, to_client_port, unknown] {
        tracker.observe(&event, &mut out);
    }
    let roles: Vec<Role> =
        out.iter().filter_map(|o| if let Observation::ResetSent { role, .. } = o { Some(*role) } else { None }).collect();
    assert_eq!(roles, [Role::Client, Role::Server, Role::Server], "unknown ports: the ephemeral guess");
}

#[test]
fn a_namespace_that_is_gone_takes_its_time_wait_sockets_with_it() {
    let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
    let tuple = |port: u16| ("10.0.0.2:80".parse().unwrap(), format!("10.0.0.1:{port}").parse().unwrap());
    tracker.refresh_time_wait(NETNS, 5, [tuple(40000), tuple(40001)]);
    tracker.refresh_time_wait(NETNS + 1, 5, [tuple(40000)]);
    tracker.namespace_gone(NETNS);
    let left: Vec<u32> = tracker.time_wait(10).map(|(tuple, _)| tuple.netns).collect();
    assert_eq!(left, [NETNS + 1]);
}

#[test]
fn client_that_closes_first_after_the_peer_answers_is_graceful_and_leaves_time_wait() {
    let c = client();
    let (tracker, out) = run(
        TrackerConfig::default(),
        &[
            c.syscall(Close, SynSent, S),
            c.syscall(SynSent, Established, S + 1000),
            c.syscall(Established, FinWait1, 2 * S),
            c.state(FinWait1, FinWait2, 2 * S + 100),
            c.closed(FinWait2, true, 2 * S + 200),
        ],
    );
    let ended = ended(&out);
    assert_eq!(ended.len(), 1);
    let verdict = ended[0];
    assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
    assert_eq!(verdict.connection.first_fin, Some(FirstFin::Us));
    assert_eq!(verdict.connection.role, Role::Client);
    assert_eq!(verdict.connection.process.map(|p| p.pid), Some(4242));
    assert_eq!(tracker.time_wait(2 * S + 300).count(), 1);
    assert_eq!(tracker.time_wait(2 * S + 200 + TIME_WAIT_NS).count(), 0, "TIME_WAIT lasts 60 s");
}

#[test]
fn server_whose_peer_closes_first_records_the_peers_fin_and_ends_graceful() {
    let s = server();
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 10),
            s.state(Established, CloseWait, 2 * S),
            s.syscall(CloseWait, LastAck, 2 * S + 50),
            s.state(LastAck, Close, 2 * S + 60),
        ],
    );
    let verdict = ended(&out)[0];
    assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, false));
    assert_eq!((verdict.connection.role, verdict.connection.first_fin), (Role::Server, Some(FirstFin::Peer)));
    assert_eq!(verdict.connection.process, Some(process()), "the pid comes from close(), not softirq");
}

#[test]
fn a_server_socket_whose_birth_the_kernel_folded_is_born_at_its_first_change_with_the_same_verdict() {
    let s = server();
    let life = |birth: &[Event]| {
        let mut events = birth.to_vec();
        events.extend([
            s.state(Established, CloseWait, 2 * S),
            s.syscall(CloseWait, LastAck, 2 * S + 50),
            s.state(LastAck, Close, 2 * S + 60),
        ]);
        let (tracker, out) = run(TrackerConfig::default(), &events);
        let verdict = ended(&out)[0].clone();
        (tracker.stats.joined_mid_life, verdict)
    };
    let (joined, told) = life(&[s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S)]);
    let (joined_folded, folded) = life(&[s.state(SynRecv, Established, S)]);
    assert_eq!((joined, joined_folded), (0, 0), "a birth, not a socket met mid-life");
    assert_eq!((folded.class, folded.connection.role, folded.connection.first_fin), (told.class, Role::Server, Some(FirstFin::Peer)));
    assert_eq!((folded.connection.opened_ns, folded.connection.established_ns), (Some(S), Some(S)));
    assert_eq!(folded.connection.process, told.connection.process);
    // A socket already followed in SYN_RECV is not born again when it leaves it.
    let (tracker, _) = run(TrackerConfig::default(), &[s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 10)]);
    assert_eq!(tracker.stats.tracked, 1);
}

#[test]
fn simultaneous_close_is_both() {
    let c = client();
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            c.syscall(Close, SynSent, S),
            c.state(SynSent, Established, S + 1),
            c.syscall(Established, FinWait1, S + 2),
            c.state(FinWait1, Closing, S + 3),
            c.state(Closing, Close, S + 4),
        ],
    );
    let verdict = ended(&out)[0];
    assert_eq!((verdict.class, verdict.connection.first_fin, verdict.time_wait), (CloseClass::Graceful, Some(FirstFin::Both), true));
}

#[test]
fn rst_in_reply_to_syn_is_refused() {
    let c = client();
    let (_, out) =
        run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), c.reset_received(S + 10), c.syscall(SynSent, Close, S + 11)]);
    assert_eq!(ended(&out)[0].class, CloseClass::Refused);
    assert!(matches!(out[0], Observation::ResetReceived { role: Role::Client, .. }));
}

#[test]
fn linger_zero_close_is_aborted_even_though_the_reset_follows_the_close() {
    let c = client();
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            c.syscall(Close, SynSent, S),
            c.syscall(SynSent, Established, S + 1),
            c.syscall(Established, Close, 2 * S),
            Event { process: Some(process()), ..c.reset_sent(Close, Some(14), 2 * S + 5) },
        ],
    );
    let verdict = ended(&out)[0];
    assert_eq!(verdict.class, CloseClass::Aborted);
    assert!(verdict.detail.contains("TCP_STATE"), "{}", verdict.detail);
}

#[test]
fn reset_sent_by_the_stack_is_reset_by_us_with_its_reason() {
    let s = server();
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 1),
            s.reset_sent(Established, Some(2), 2 * S),
            s.state(Established, Close, 2 * S + 1),
        ],
    );
    let verdict = ended(&out)[0];
    assert_eq!(verdict.class, CloseClass::ResetByUs);
    assert!(verdict.detail.contains("TCP_INVALID_ACK_SEQUENCE"), "{}", verdict.detail);
}

#[test]
fn keepalive_reset_means_the_peer_went_silent() {
    let s = server();
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 1),
            s.reset_sent(Established, Some(15), 90 * S),
            s.state(Established, Close, 90 * S),
        ],
    );
    assert_eq!(ended(&out)[0].class, CloseClass::PeerSilent);
}

/// Before 6.10 the kernel gives no reset reason: the socket's ETIMEDOUT at its close says the
/// keepalive timer reset it, even when it ran in the application's context; a reset that leaves
/// no such error stays ours; where the hooks could not read the socket, it is unresolved.
#[test]
fn keepalive_reset_without_a_reason_is_known_by_the_sockets_timeout_error() {
    let s = server();
    let verdict = |error: Option<u16>, in_process: bool| {
        let close = s.closed(Established, false, 90 * S);
        let totals = error.and_then(|error| close.totals.map(|totals| SocketTotals { error, ..totals }));
        let reset = s.reset_sent(Established, None, 90 * S);
        let reset = if in_process { Event { process: Some(process()), ..reset } } else { reset };
        let events = [s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1), reset, Event { totals, ..close }];
        let (_, out) = run(TrackerConfig::default(), &events);
        let ended = ended(&out)[0];
        (ended.class, ended.detail.to_string())
    };
    for in_process in [false, true] {
        let (class, detail) = verdict(Some(110), in_process);
        assert_eq!(class, CloseClass::PeerSilent, "{detail}");
        assert!(detail.contains("ETIMEDOUT"), "{detail}");
    }
    assert_eq!(verdict(Some(0), false).0, CloseClass::ResetByUs, "no timeout error: a reset of our stack");
    assert_eq!(verdict(Some(0), true).0, CloseClass::Aborted, "no timeout error, in the application's context: an abort");
    assert!(verdict(Some(103), true).1.contains("destroyed on this host"), "ECONNABORTED: `ss -K`, not the application");
    let (class, detail) = verdict(None, false);
    assert_eq!(class, CloseClass::Unresolved, "neither reason nor error: no guess");
    assert!(detail.contains("keepalive timeout") && detail.contains("reset of our stack"), "{detail}");
}

/// A keepalive death's idle gap is the keepalive time: the first probe went out that long after
/// the peer was last heard, and went unanswered. The socket's own `TCP_KEEPIDLE` (in jiffies) or,
/// where it set none, the namespace's default; data in flight that went unanswered first keeps
/// its own gap, and a reset that is not the keepalive timer's gives none.
#[test]
fn a_keepalive_death_was_idle_for_the_keepalive_time_before_its_first_unanswered_probe() {
    let s = server();
    let config = TrackerConfig { hz: Some(250), keepalive_time_ns: 45 * S, ..TrackerConfig::default() };
    let idle_before = |keepalive_jiffies: Option<u32>, reason: Option<u32>, retransmit: bool| {
        let mut events = vec![s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1)];
        if retransmit {
            let clocks = IdleClocks { now: 2_000, last_received: 1_000, last_sent: 1_500 };
            events.push(Event { idle: Some(clocks), ..s.retransmit(Established, 20 * S) });
        }
        events.push(Event { keepalive_jiffies, ..s.reset_sent(Established, reason, 90 * S) });
        events.push(s.state(Established, Close, 90 * S));
        let (_, out) = run(config, &events);
        let ended = ended(&out)[0];
        (ended.class, ended.connection.idle_before_ns)
    };
    assert_eq!(idle_before(Some(250), Some(15), false), (CloseClass::PeerSilent, Some(S)), "TCP_KEEPIDLE 1 s at 250 Hz");
    assert_eq!(idle_before(Some(0), Some(15), false), (CloseClass::PeerSilent, Some(45 * S)), "the namespace's default");
    assert_eq!(idle_before(None, Some(15), false), (CloseClass::PeerSilent, None), "not read: no guess");
    assert_eq!(idle_before(Some(250), Some(15), true), (CloseClass::PeerSilent, Some(2 * S)), "the retransmission's own gap");
    assert_eq!(idle_before(Some(250), Some(2), false), (CloseClass::ResetByUs, None), "not the keepalive timer's reset");
}

#[test]
fn retransmission_timeout_without_fin_or_rst_is_peer_silent() {
    let c = client();
    let mut events = vec![c.syscall(Close, SynSent, S), c.state(SynSent, Established, S + 1)];
    events.extend((0..6).map(|i| c.retransmit(Established, 2 * S + i)));
    events.push(c.state(Established, Close, 20 * S));
    let (_, out) = run(TrackerConfig::default(), &events);
    let verdict = ended(&out)[0];
    assert_eq!((verdict.class, verdict.connection.retransmits), (CloseClass::PeerSilent, 6));
    assert!(verdict.detail.contains("6 retransmits"), "{}", verdict.detail);
}

#[test]
fn a_process_that_only_ran_a_deferred_timer_is_not_taken_for_the_owner() {
    let c = client();
    let intruder = Event { process: Some(Process { pid: 1, tgid: 1, ..process() }), ..c.state(Established, Close, 3 * S) };
    let (_, out) = run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), c.state(SynSent, Established, S + 1), intruder]);
    assert_eq!(ended(&out)[0].connection.process.map(|p| p.pid), Some(4242));
}

#[test]
fn a_timeout_deferred_to_the_application_s_release_sock_is_still_peer_silent() {
    let c = client();
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            c.syscall(Close, SynSent, S),
            c.state(SynSent, Established, S + 1),
            c.retransmit(Established, 2 * S),
            c.syscall(Established, Close, 3 * S),
        ],
    );
    assert_eq!(ended(&out)[0].class, CloseClass::PeerSilent);
}

/// Lookups of lingering timewait sockets: the tp_btf close said the peer's FIN had not come.

#[test]
fn unanswered_syns_are_a_connect_timeout_with_their_retransmits() {
    let c = client();
    let (_, out) = run(
        TrackerConfig::default(),
        &[c.syscall(Close, SynSent, S), c.retransmit(SynSent, 2 * S), c.retransmit(SynSent, 4 * S), c.state(SynSent, Close, 8 * S)],
    );
    assert_eq!(out.iter().filter(|o| matches!(o, Observation::SynRetransmit { .. })).count(), 2);
    let verdict = ended(&out)[0];
    assert_eq!((verdict.class, verdict.connection.syn_retransmits), (CloseClass::ConnectTimeout, 2));
}

#[test]
fn a_late_event_from_another_cpu_does_not_move_the_state_back() {
    let c = client();
    let (tracker, _) = {
        let mut tracker = Tracker::new(TrackerConfig::default(), reasons());
        let mut out = Vec::new();
        for event in [c.syscall(Close, SynSent, S), c.state(SynSent, Established, 3 * S), c.state(Close, SynSent, 2 * S)] {
            tracker.observe(&Event { old_state: event.old_state, ..event }, &mut out);
        }
        (tracker, out)
    };
    let connection = tracker.connections().next().unwrap();
    assert_eq!((connection.state, connection.state_since_ns), (Established, 3 * S));
}

#[test]
fn a_full_table_evicts_and_counts() {
    let config = TrackerConfig { max_connections: 2, ..TrackerConfig::default() };
    let events: Vec<Event> = (0..5u64)
        .map(|i| Script::new(0x100 + i, &format!("10.0.0.1:{}", 40000 + i), "10.0.0.2:80").syscall(Close, SynSent, S + i))
        .collect();
    let (tracker, _) = run(config, &events);
    assert_eq!(tracker.stats.tracked, 5);
    assert_eq!(tracker.stats.evicted_connections, 3);
    assert_eq!(tracker.connections().count(), 2);
}

#[test]
fn a_new_connection_on_a_tuple_still_in_time_wait_is_port_reuse() {
    let s = server();
    let again = Script { socket: SocketId { netns: NETNS, address: 0xb2 }, ..server() };
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 1),
            s.syscall(Established, FinWait1, 2 * S),
            s.state(FinWait1, FinWait2, 2 * S + 1),
            s.closed(FinWait2, true, 2 * S + 2),
            again.state(Listen, SynRecv, 12 * S),
        ],
    );
    let reuse = out.iter().find_map(|o| match o {
        Observation::PortReuse { tuple, role, time_wait_age_ns, accepted, .. } => Some((*tuple, *role, *time_wait_age_ns, *accepted)),
        _ => None,
    });
    let (tuple, role, age, accepted) = reuse.expect("port reuse seen");
    assert_eq!((tuple.local, tuple.remote, role, accepted), (server().local, server().remote, Role::Server, true));
    assert_eq!(age, Some(10 * S - 2));
}

#[test]
fn on_older_kernels_the_reused_tuple_is_found_once_the_child_is_established() {
    let s = server();
    let listener_view = Script { socket: SocketId { netns: NETNS, address: 0xb2 }, remote: "0.0.0.0:0".parse().unwrap(), ..server() };
    let again = Script { socket: SocketId { netns: NETNS, address: 0xb2 }, ..server() };
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 1),
            s.syscall(Established, FinWait1, 2 * S),
            s.state(FinWait1, FinWait2, 2 * S + 1),
            s.closed(FinWait2, true, 2 * S + 2),
            listener_view.state(Listen, SynRecv, 12 * S),
            again.state(SynRecv, Established, 12 * S + 1),
        ],
    );
    assert_eq!(out.iter().filter(|o| matches!(o, Observation::PortReuse { accepted: true, .. })).count(), 1);
}

#[test]
fn a_syn_answered_with_a_bare_ack_is_port_reuse_seen_from_the_client() {
    let c = client();
    let (_, out) = run(
        TrackerConfig::default(),
        &[
            c.syscall(Close, SynSent, S),
            c.reset_sent(SynSent, Some(2), S + 10),
            c.retransmit(SynSent, 2 * S),
            c.state(SynSent, Established, 2 * S + 5),
        ],
    );
    assert!(out.contains(&Observation::PortReuse {
        tuple: Tuple { netns: NETNS, local: c.local, remote: c.remote },
        role: Role::Client,
        time_wait_age_ns: None,
        accepted: false,
        at_ns: S + 10,
    }));
    assert_eq!(out.iter().filter(|o| matches!(o, Observation::PortReuse { .. })).count(), 1);
}

#[test]
fn sockets_that_predate_the_tracer_join_mid_life_with_a_guessed_role() {
    let c = client();
    let (tracker, out) = run(
        TrackerConfig::default(),
        &[c.state(Established, CloseWait, S), c.syscall(CloseWait, LastAck, S + 1), c.state(LastAck, Close, S + 2)],
    );
    assert_eq!(tracker.stats.joined_mid_life, 1);
    let verdict = ended(&out)[0];
    assert_eq!((verdict.connection.role, verdict.connection.opened_ns, verdict.class), (Role::Client, None, CloseClass::Graceful));
}

#[test]
fn the_socket_clocks_say_how_long_a_connection_was_idle_before_it_died_and_which_gaps_others_lived_through() {
    use crate::decode::IdleClocks;
    let config = TrackerConfig { hz: Some(250), ..TrackerConfig::default() };
    let c = client();
    // Last ACK at jiffy 1000, our data after 6 s of silence (jiffy 2500), retransmitted later.
    let clocks = IdleClocks { now: 2600, last_received: 1000, last_sent: 2500 };
    let (_, out) = run(
        config,
        &[
            c.syscall(Close, SynSent, S),
            c.state(SynSent, Established, S + 1),
            Event { idle: Some(clocks), ..c.retransmit(Established, 10 * S) },
            c.retransmit(Established, 11 * S),
            c.state(Established, Close, 20 * S),
        ],
    );
    let verdict = ended(&out)[0];
    assert_eq!((verdict.class, verdict.connection.idle_before_ns), (CloseClass::PeerSilent, Some(6 * S)));
    // The peer's data 2 s after the last ACK, with nothing sent meanwhile: a gap lived through.
    let other = Script::new(0xa2, "10.0.0.1:40001", "10.0.0.2:80");
    let quiet = IdleClocks { now: 1500, last_received: 1000, last_sent: 900 };
    let (_, out) = run(
        config,
        &[
            other.syscall(Close, SynSent, S),
            other.state(SynSent, Established, S + 1),
            Event { idle: Some(quiet), ..other.segment(64, false, 3 * S) },
        ],
    );
    assert!(out.iter().any(|o| matches!(o, Observation::IdleSurvived { gap_ns, .. } if *gap_ns == 2 * S)), "{out:?}");
    // Without the tick rate, no gap is claimed.
    let (_, out) =
        run(TrackerConfig::default(), &[other.syscall(Close, SynSent, S), Event { idle: Some(quiet), ..other.segment(64, false, 3 * S) }]);
    assert!(!out.iter().any(|o| matches!(o, Observation::IdleSurvived { .. })));
}

/// An ICMP error, not silence and not a RST: a connect ended by ICMP host unreachable at once,
/// one refused by ICMP port unreachable (ECONNREFUSED without a RST), and an established
/// connection whose retransmissions met host unreachable until it timed out.
#[test]
fn an_icmp_unreachable_is_the_paths_answer_not_the_peers_silence() {
    let s = Script::new(0xd1, "10.0.1.1:40000", "10.0.0.2:80");
    let verdict = |from: TcpState, error: u16, by_application: bool| {
        let mut events = vec![s.syscall(Close, SynSent, S)];
        if from != SynSent {
            events.extend([s.state(SynSent, Established, S + 1), s.retransmit(Established, 2 * S), s.retransmit(Established, 3 * S)]);
        }
        let mut close = s.closed(from, false, 4 * S);
        close.totals.as_mut().unwrap().error = error;
        close.process = by_application.then(process);
        let (_, out) = run(TrackerConfig::default(), &[events, vec![close]].concat());
        let ended = ended(&out)[0];
        (ended.class, ended.detail.to_string())
    };
    for by_application in [false, true] {
        let (class, detail) = verdict(SynSent, 113, by_application);
        assert_eq!(class, CloseClass::Unreachable, "{detail}");
        assert!(detail.contains("our SYN was answered with ICMP host unreachable (EHOSTUNREACH)"), "{detail}");
        let (class, detail) = verdict(SynSent, 111, by_application);
        assert_eq!(class, CloseClass::Refused, "{detail}");
        assert!(detail.contains("ICMP port unreachable, not by a RST"), "{detail}");
    }
    let (class, detail) = verdict(Established, 101, false);
    assert_eq!(class, CloseClass::Unreachable, "{detail}");
    assert!(detail.contains("our retransmissions were answered with ICMP network unreachable (ENETUNREACH)"), "{detail}");
    assert_eq!(verdict(Established, 110, false).0, CloseClass::PeerSilent, "ETIMEDOUT alone: silence");
    // An unread error from earlier on a close that retransmitted nothing is not the end's cause.
    let mut close = s.closed(LastAck, true, 4 * S);
    close.totals.as_mut().unwrap().error = 113;
    let opened = [s.syscall(Close, SynSent, S), s.state(SynSent, Established, S + 1), s.state(Established, CloseWait, 2 * S)];
    let (_, out) = run(TrackerConfig::default(), &[&opened[..], &[s.state(CloseWait, LastAck, 3 * S), close]].concat());
    assert_eq!(ended(&out)[0].class, CloseClass::Graceful);
}

/// The ACK of our FIN can come while our application holds the socket: the full socket then waits
/// in FIN_WAIT2 and takes the peer's reset; its line reads as a timewait socket's: after our FIN.
#[test]
fn a_reset_in_fin_wait2_on_the_full_socket_is_told_after_our_fin() {
    let c = Script::new(0xe1, "10.0.1.1:40000", "10.0.0.2:80");
    let events = [
        c.syscall(Close, SynSent, S),
        c.state(SynSent, Established, S + 1),
        c.syscall(Established, FinWait1, 2 * S),
        c.syscall(FinWait1, FinWait2, 2 * S + 1),
        c.reset_arrived_after_handshake(63, 63, S, 5 * S),
        c.reset_received(5 * S),
        c.state(FinWait2, Close, 5 * S),
    ];
    let (_, out) = run(TrackerConfig::default(), &events);
    let (class, detail) = (ended(&out)[0].class, &ended(&out)[0].detail);
    assert!(class == CloseClass::ResetByPeer && detail.contains("in FIN_WAIT2, 3.0 s after our FIN"), "{detail}");
}
