//! The findings from synthetic event sequences through a real tracker.
use super::*;
use crate::track::{
    fixtures::{reasons, Script, NETNS},
    TrackerConfig,
};
use tracer_model::links::LinkChange;
use TcpState::*;

const S: u64 = 1_000_000_000;

fn settings(_: u32) -> NamespaceSettings {
    NamespaceSettings::DEFAULT
}

/// Feeds events through a tracker into findings, then concludes at `now`.
fn picture(findings: &mut Findings, tracker: &mut Tracker, events: &[crate::decode::Event], now: u64, filter: &Filter) -> Picture {
    let mut out = Vec::new();
    for event in events {
        tracker.observe(event, &mut out);
    }
    tracker.settle(now, &mut out);
    for observation in &out {
        if in_scope(observation, filter) {
            findings.observe(observation, |code| tracker.reason_name(code).map(str::to_string));
        }
    }
    conclude(findings, tracker, now, filter)
}

fn conclude(findings: &mut Findings, tracker: &Tracker, now_ns: u64, filter: &Filter) -> Picture {
    let nobody = Owners::default();
    findings.conclude(&Context { now_ns, snapshot: None, settings: &settings, filter, owners: &nobody, links: &[] }, tracker)
}

fn tracker() -> Tracker {
    Tracker::new(TrackerConfig::default(), reasons())
}

fn server(address: u64, client_port: u16) -> Script {
    Script::new(address, "10.0.0.2:80", &format!("10.0.0.1:{client_port}"))
}

fn link_down(netns: u32, at_ns: u64) -> LinkChange {
    LinkChange {
        at_ns,
        netns,
        ifindex: 2,
        ifname: "veth0".into(),
        what: tracer_model::links::LinkWhat::Down,
        operstate: "lowerlayerdown",
        carrier: false,
    }
}

#[test]
fn a_peer_gone_silent_right_after_its_link_went_down_says_so_and_an_older_change_does_not_count() {
    let s = server(1, 40000);
    // The link goes down at 10 s; our data is retransmitted from 11.2 s; the connection
    // times out at 40 s.
    let events = [
        s.state(Listen, SynRecv, S),
        s.state(SynRecv, Established, S + 1),
        s.retransmit(Established, 11 * S + S / 5),
        s.retransmit(Established, 12 * S),
        s.state(Established, Close, 40 * S),
    ];
    let run = |links: &[LinkChange]| {
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
        let mut out = Vec::new();
        for event in &events {
            tracker.observe(event, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        for observation in &out {
            findings.observe(observation, |_| None);
        }
        let nobody = Owners::default();
        let context = Context { now_ns: 41 * S, snapshot: None, settings: &settings, filter: &Filter::default(), owners: &nobody, links };
        let picture = findings.conclude(&context, &tracker);
        picture.findings.into_iter().find(|f| f.kind == FindingKind::PeerSilent).expect("peer_silent")
    };
    let silent = run(&[link_down(NETNS + 1, 11 * S), link_down(NETNS, 10 * S)]);
    let after = silent.near_link.as_ref().expect("the link in its namespace explains it");
    assert_eq!((after.ifname.as_str(), after.seconds), ("veth0", 1.2));
    assert!(silent.detail.ends_with("; it began 1.2 s after veth0 went down"), "{}", silent.detail);
    assert_eq!(run(&[link_down(NETNS, 0)]).near_link, None, "11 s before: too long ago");
    let first = run(&[link_down(NETNS, 12 * S)]);
    assert_eq!(first.near_link.as_ref().map(|link| link.seconds), Some(-0.8));
    assert!(first.detail.ends_with("; it began 0.8 s before veth0 went down: the traffic died first"), "{}", first.detail);
    assert_eq!(run(&[link_down(NETNS, 14 * S)]).near_link, None, "2.8 s after the trouble: unrelated");
    assert_eq!(run(&[link_down(NETNS + 1, 11 * S)]).near_link, None, "another namespace's link");
    assert_eq!(run(&[]).near_link, None);
}

#[test]
fn close_wait_older_than_stuck_after_is_reported_once_per_socket() {
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
    let s = server(1, 40000);
    let events = [s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1), s.state(Established, CloseWait, 2 * S)];
    let early = picture(&mut findings, &mut tracker, &events, 10 * S, &Filter::default());
    assert!(early.findings.is_empty(), "not stuck yet after 8 s: {:?}", early.findings);
    assert_eq!(early.states.get("CLOSE_WAIT"), Some(&1));

    let stuck = picture(&mut findings, &mut tracker, &[], 40 * S, &Filter::default());
    let finding = &stuck.findings[0];
    assert_eq!((finding.kind, finding.local.as_str(), finding.remote.as_str()), (FindingKind::CloseWaitStuck, "10.0.0.2:80", "10.0.0.1:*"));
    assert_eq!((finding.count, finding.total), (1, 1));
    assert!(finding.detail.contains("for up to 38s"), "{}", finding.detail);
    assert_eq!(stuck.peers[0].stuck, 1);

    let still = picture(&mut findings, &mut tracker, &[], 50 * S, &Filter::default());
    assert_eq!((still.findings[0].count, still.findings[0].total), (1, 1), "the same socket is not counted twice");
}

#[test]
fn silent_peers_are_aggregated_per_service_and_client_address() {
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
    let mut events = Vec::new();
    for (i, port) in [40000u16, 40001, 40002].into_iter().enumerate() {
        let s = server(10 + i as u64, port);
        events.extend([
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + 1),
            s.retransmit(Established, 2 * S),
            s.state(Established, Close, 5 * S),
        ]);
    }
    let picture = picture(&mut findings, &mut tracker, &events, 10 * S, &Filter::default());
    assert_eq!(picture.closes.get("peer_silent"), Some(&3));
    let silent: Vec<_> = picture.findings.iter().filter(|f| f.kind == FindingKind::PeerSilent).collect();
    assert_eq!(silent.len(), 1);
    assert_eq!((silent[0].local.as_str(), silent[0].remote.as_str(), silent[0].count), ("10.0.0.2:80", "10.0.0.1:*", 3));
    assert!(silent[0].detail.contains("×3"), "{}", silent[0].detail);
    assert_eq!((picture.peers[0].peer_silent, picture.peers[0].ended), (3, 3));
}

#[test]
fn a_syn_on_time_wait_is_told_from_the_side_that_saw_it() {
    let tuple = Tuple { netns: NETNS, local: "10.0.0.2:80".parse().unwrap(), remote: "10.0.0.9:40000".parse().unwrap() };
    let detail = |role, time_wait_age_ns, accepted| {
        let (mut findings, tracker) = (Findings::new(FindingsConfig::default()), tracker());
        findings.observe(&Observation::PortReuse { tuple, role, time_wait_age_ns, accepted, at_ns: 0 }, |_| None);
        let picture = conclude(&mut findings, &tracker, S, &Filter::default());
        picture.findings[0].detail.clone()
    };
    assert!(
        detail(Role::Server, Some(3 * S / 2), true).contains("10.0.0.2:80 ↔ 10.0.0.9:40000 was 1.5s into TIME_WAIT; the SYN was accepted")
    );
    assert!(detail(Role::Server, None, true).contains("was in TIME_WAIT; the SYN was accepted"));
    let refused = detail(Role::Server, Some(S), false);
    assert!(
        refused.contains("a SYN from 10.0.0.9:40000 hit 10.0.0.2:80 ↔ 10.0.0.9:40000 1.0s into TIME_WAIT and was answered with a bare ACK"),
        "{refused}"
    );
    assert!(detail(Role::Client, None, false).contains("our SYN"));
}

#[test]
fn handshake_times_per_peer_give_the_slowest_p50_and_p99() {
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
    let mut events = Vec::new();
    // 100 connections from one client to our port 80: handshakes of 1..=100 ms.
    for i in 0..100u64 {
        let s = server(100 + i, 40000 + i as u16);
        events.extend([
            s.state(Listen, SynRecv, S),
            s.state(SynRecv, Established, S + (i + 1) * 1_000_000),
            s.state(Established, Close, 2 * S),
        ]);
    }
    let first = picture(&mut findings, &mut tracker, &events, 10 * S, &Filter::default());
    let row = &first.handshakes[0];
    assert_eq!((row.local.as_str(), row.remote.as_str(), row.connections), ("10.0.0.2:80", "10.0.0.1:*", 100));
    assert_eq!((row.p50_ms, row.p99_ms), (51.0, 100.0));
    let next = picture(&mut findings, &mut tracker, &[], 20 * S, &Filter::default());
    assert!(next.handshakes.is_empty(), "one interval's samples only");
}

#[test]
fn resets_sent_without_a_socket_are_counted_for_the_closed_port_with_their_reason() {
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig { rst_threshold: 2, ..FindingsConfig::default() }), tracker());
    let probe = |port: u16, at: u64| {
        let script = Script::new(0, "10.0.0.2:9", &format!("10.0.0.1:{port}"));
        script.reset_sent(Close, Some(1), at)
    };
    let picture = picture(&mut findings, &mut tracker, &[probe(40000, S), probe(40001, S + 1)], 2 * S, &Filter::default());
    let sent = picture.findings.iter().find(|f| f.kind == FindingKind::RstToPeer).unwrap();
    assert_eq!((sent.local.as_str(), sent.remote.as_str(), sent.count), ("10.0.0.2:9", "10.0.0.1:*", 2));
    assert_eq!(sent.detail, "2 RST(s) from us (10.0.0.2:9) to the peer 10.0.0.1:*: NO_SOCKET ×2");
}

#[test]
fn time_wait_above_the_threshold_is_a_buildup_with_its_share_of_the_port_range() {
    let config = FindingsConfig { time_wait_threshold: Some(2), ..FindingsConfig::default() };
    let (mut findings, mut tracker) = (Findings::new(config), tracker());
    let mut events = Vec::new();
    for i in 0..3u16 {
        let s = server(100 + u64::from(i), 40000 + i);
        let at = S + u64::from(i) * 1000;
        events.extend([s.state(Listen, SynRecv, at), s.state(SynRecv, Established, at + 1)]);
        events.extend(s.we_close_first(at + 2));
    }
    let picture = picture(&mut findings, &mut tracker, &events, 2 * S, &Filter::default());
    let buildup = picture.findings.iter().find(|f| f.kind == FindingKind::TimeWaitBuildup).expect("buildup");
    assert_eq!((buildup.local.as_str(), buildup.remote.as_str(), buildup.count), ("10.0.0.2:80", "10.0.0.1:*", 3));
    assert!(buildup.detail.contains("0% of the 28232 ephemeral ports (32768-60999)"), "{}", buildup.detail);
    assert_eq!(picture.states.get("TIME_WAIT"), Some(&3));
}

#[test]
fn single_resets_are_counted_but_only_a_storm_within_ten_seconds_is_a_finding_at_any_interval() {
    // A health check closing with RST every 2 s: never 10 within 10 s.
    let check = |at: u64| Script::new(0, "10.0.0.2:80", "10.0.0.9:40000").reset_sent(Established, Some(14), at);
    let trickle: Vec<crate::decode::Event> = (0..20u64).map(|i| check(S + i * 2 * S)).collect();
    // Then a storm: 10 in one second.
    let storm: Vec<crate::decode::Event> = (0..10u64).map(|i| check(60 * S + i * 100_000_000)).collect();
    for interval in [S, 10 * S, 30 * S] {
        let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
        let (mut rows, mut reported) = (0, Vec::new());
        let events: Vec<&crate::decode::Event> = trickle.iter().chain(&storm).collect();
        let mut end = interval;
        let mut next = 0;
        while next < events.len() || end <= 62 * S {
            let batch: Vec<crate::decode::Event> = events[next..].iter().take_while(|e| e.timestamp_ns < end).map(|e| **e).collect();
            next += batch.len();
            let picture = picture(&mut findings, &mut tracker, &batch, end, &Filter::default());
            rows += picture.peers.iter().map(|row| row.rst_to_peer).sum::<u64>();
            reported.extend(picture.findings.iter().filter(|f| f.kind == FindingKind::RstToPeer).map(|f| f.count));
            end += interval;
        }
        assert_eq!(rows, 30, "every reset is in the peer table (interval {interval})");
        assert!(!reported.is_empty(), "the storm is a finding (interval {interval})");
        assert!(reported.iter().sum::<u64>() <= 10 + interval / (2 * S), "the trickle alone never was: {reported:?}");
    }
}

#[test]
fn a_syn_retransmitted_because_the_server_held_the_tuple_says_so_and_points_at_port_reuse() {
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
    let c = Script::new(0xa1, "10.0.0.1:40000", "10.0.0.2:80");
    let events = [
        c.syscall(Close, SynSent, S),
        c.reset_sent(SynSent, Some(2), S + 10), // our RST to the server's bare ACK
        c.retransmit(SynSent, 2 * S),
        c.state(SynSent, Established, 2 * S + 5),
    ];
    let reused = picture(&mut findings, &mut tracker, &events, 3 * S, &Filter::default());
    let retransmit = reused.findings.iter().find(|f| f.kind == FindingKind::SynRetransmit).expect("a syn_retransmit finding");
    assert!(retransmit.detail.contains("bare ACK for an older connection") && retransmit.detail.contains("port_reuse_in_time_wait"));
    assert!(!retransmit.detail.contains("did not answer"), "{}", retransmit.detail);
    // Without the bare ACK it is the peer that did not answer.
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), self::tracker());
    let silent = [c.syscall(Close, SynSent, S), c.retransmit(SynSent, 2 * S)];
    let unanswered = picture(&mut findings, &mut tracker, &silent, 3 * S, &Filter::default());
    assert!(unanswered.findings[0].detail.contains("the peer did not answer our SYN"), "{}", unanswered.findings[0].detail);
}

#[test]
fn findings_come_most_serious_first() {
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig { rst_threshold: 1, ..FindingsConfig::default() }), tracker());
    let stuck = server(1, 40000);
    let reset = server(2, 40001);
    let events = [
        reset.state(Listen, SynRecv, S),
        reset.state(SynRecv, Established, S + 1),
        reset.reset_received(S + 2),
        reset.state(Established, Close, S + 2),
        stuck.state(Listen, SynRecv, S),
        stuck.state(SynRecv, Established, S + 1),
        stuck.state(Established, CloseWait, S + 3),
    ];
    let picture = picture(&mut findings, &mut tracker, &events, 60 * S, &Filter::default());
    let kinds: Vec<_> = picture.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::CloseWaitStuck, FindingKind::RstFromPeer]);
}

#[test]
fn a_full_peer_table_drops_and_counts_instead_of_growing() {
    let config = FindingsConfig { max_peers: 2, rst_threshold: 1, ..FindingsConfig::default() };
    let (mut findings, mut tracker) = (Findings::new(config), tracker());
    let events: Vec<_> = (0..5u16)
        .map(|i| Script::new(0, "10.0.0.2:9", &format!("10.0.{i}.1:40000")).reset_sent(Close, Some(1), S + u64::from(i)))
        .collect();
    let picture = picture(&mut findings, &mut tracker, &events, 2 * S, &Filter::default());
    assert_eq!(picture.findings.len(), 2);
    assert_eq!(findings.evicted, 9, "3 peers, 3 findings and 3 reset windows did not fit");
    assert_eq!(NETNS, picture.findings[0].netns);
}

#[test]
fn a_storm_from_a_new_peer_is_found_when_the_reset_table_is_full_of_older_peers() {
    let config = FindingsConfig { max_peers: 4, rst_threshold: 3, ..FindingsConfig::default() };
    let (mut findings, mut tracker) = (Findings::new(config), tracker());
    let reset_to = |network: u16, at: u64| Script::new(0, "10.0.0.2:9", &format!("10.0.{network}.1:40000")).reset_sent(Close, Some(1), at);
    // Four peers reset once each: the table of recent resets is full, all within the window.
    let single: Vec<_> = (0..4u16).map(|i| reset_to(i, S + u64::from(i) * S)).collect();
    let quiet = picture(&mut findings, &mut tracker, &single, 5 * S, &Filter::default());
    assert!(quiet.findings.is_empty());
    // The next interval a fifth peer storms: the oldest single reset makes room for it.
    let storm: Vec<_> = (0..3u64).map(|i| reset_to(9, 6 * S + i * 100_000_000)).collect();
    let picture = picture(&mut findings, &mut tracker, &storm, 7 * S, &Filter::default());
    let remotes: Vec<_> = picture.findings.iter().map(|finding| (finding.kind, finding.remote.as_str())).collect();
    assert_eq!(remotes, [(FindingKind::RstToPeer, "10.0.9.1:*")]);
    assert_eq!(findings.evicted, 1, "the peer forgotten while its reset was in the window is counted");
}

#[test]
fn connects_that_found_no_local_port_are_one_finding_tied_to_the_time_wait_that_holds_the_ports() {
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
    let mut events = Vec::new();
    // Two client connections to the service that we closed first: TIME_WAIT holds their ports.
    for i in 0..2u16 {
        let c = Script::new(300 + u64::from(i), &format!("10.0.0.1:{}", 40000 + i), "10.0.0.2:80");
        let at = S + u64::from(i) * 1000;
        events.extend([c.syscall(Close, SynSent, at), c.state(SynSent, Established, at + 1)]);
        events.extend(c.we_close_first(at + 2));
    }
    // Three connects that found no port: SYN_SENT left with port 0, no SYN sent.
    for i in 0..3u64 {
        let c = Script::new(400 + i, "10.0.0.1:0", "10.0.0.2:80");
        events.extend([c.syscall(Close, SynSent, 2 * S + i), c.syscall(SynSent, Close, 2 * S + i + 1)]);
    }
    let picture = picture(&mut findings, &mut tracker, &events, 3 * S, &Filter::default());
    let exhausted = picture.findings.iter().find(|f| f.kind == FindingKind::LocalPortsExhausted).expect("local_ports_exhausted");
    assert_eq!((exhausted.local.as_str(), exhausted.remote.as_str(), exhausted.count), ("10.0.0.1:*", "10.0.0.2:80", 3));
    assert!(exhausted.detail.contains("no local port free for this destination (ephemeral range 32768-60999"), "{}", exhausted.detail);
    assert!(exhausted.detail.contains("2 socket(s) to it that we closed first still hold ports"), "{}", exhausted.detail);
    assert!(!picture.findings.iter().any(|f| f.kind == FindingKind::SynRetransmit), "{:?}", picture.findings);
    assert_eq!(picture.closes.get("no_local_port"), Some(&3));
}

/// A client that shut down its sending side while the server streams: our CLOSE_WAIT socket and
/// the client's FIN_WAIT2 still move data. Not stuck, not unanswered, until the flow stops.
#[test]
fn a_half_close_that_still_flows_is_not_stuck_until_the_flow_stops() {
    use std::sync::Arc;
    use tracer_model::sockets::{LastData, SocketRecord};
    let (mut findings, mut tracker) = (Findings::new(FindingsConfig::default()), tracker());
    let s = server(1, 40000);
    let c = Script::new(2, "10.0.0.1:40001", "10.0.0.2:80");
    let events = [
        s.state(Listen, SynRecv, S),
        s.state(SynRecv, Established, S + 1),
        s.state(Established, CloseWait, 2 * S),
        c.syscall(Close, SynSent, S),
        c.state(SynSent, Established, S + 1),
        c.syscall(Established, FinWait1, 2 * S),
        c.state(FinWait1, FinWait2, 2 * S + 1),
    ];
    let mut out = Vec::new();
    for event in &events {
        tracker.observe(event, &mut out);
    }
    let filter = Filter::default();
    let nobody = Owners::default();
    let mut conclude_with = |now_ns: u64, idle_ms: u32| {
        let record = |state, local: &Script| SocketRecord {
            state,
            local: local.local,
            remote: local.remote,
            inode: 0,
            accept_queue: None,
            last_data: Some(LastData { sent_ms: idle_ms, received_ms: idle_ms }),
        };
        let mut snapshot = Snapshot::default();
        snapshot.sockets.insert(NETNS, Arc::new(vec![record(TcpState::CloseWait, &s), record(TcpState::FinWait2, &c)]));
        let context = Context { now_ns, snapshot: Some(&snapshot), settings: &settings, filter: &filter, owners: &nobody, links: &[] };
        findings.conclude(&context, &tracker).findings
    };
    assert!(conclude_with(60 * S, 200).is_empty(), "58 s in the state, but data moved 0.2 s ago: a half-close");
    let stalled = conclude_with(90 * S, 45_000);
    let kinds: Vec<_> = stalled.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::CloseWaitStuck, FindingKind::FinUnanswered], "{stalled:?}");
    assert!(stalled[0].detail.contains("for up to 45s"), "its age counts from the last data: {}", stalled[0].detail);
}

#[test]
fn a_listener_takes_connections_to_its_port_at_its_address_or_any_when_bound_to_a_wildcard() {
    let endpoint = |text: &str| {
        let address: std::net::SocketAddr = text.parse().unwrap();
        Endpoint { ip: address.ip(), port: Some(address.port()) }
    };
    let service = endpoint("10.0.0.2:80");
    assert!(endpoint("10.0.0.2:80").takes(service));
    assert!(endpoint("0.0.0.0:80").takes(service) && endpoint("[::]:80").takes(service));
    assert!(!endpoint("10.0.0.3:80").takes(service), "another address");
    assert!(!endpoint("0.0.0.0:81").takes(service), "another port");
}

/// A keepalive death that this host's drops explain is `dropped_here`; its finding still says
/// what the drops killed, and how.
#[test]
fn a_keepalive_death_this_host_s_drops_explain_keeps_keepalive_in_its_finding() {
    let s = server(1, 40000);
    let names: BTreeMap<u32, String> = [(12, "NETFILTER_DROP".to_string())].into();
    let mut tracker = tracker().with_drop_reasons(names);
    let dropped = |at: u64| crate::decode::Event {
        kind: tracer_common::EventKind::Drop,
        drop: Some(crate::decode::Dropped { reason: 12, incoming: true }),
        ..s.retransmit(Established, at)
    };
    let mut reset = s.reset_sent(Established, None, 30 * S);
    reset.process = None;
    let mut close = s.closed(Established, false, 30 * S + 1);
    close.totals.as_mut().unwrap().error = 110;
    let events = [s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1), dropped(20 * S), dropped(25 * S), reset, close];
    let picture = picture(&mut Findings::new(FindingsConfig::default()), &mut tracker, &events, 31 * S, &Filter::default());
    let finding = picture.findings.iter().find(|f| f.kind == FindingKind::DroppedHere).expect("dropped_here");
    assert_eq!(
        finding.detail,
        "this host's kernel dropped 2 packet(s) between 10.0.0.2:80 and 10.0.0.1:*: NETFILTER_DROP from the peer ×2; 1 connection(s) died of it: 1 by keepalive timeout"
    );
}
