//! The verdicts of [`super::classify`] from synthetic event sequences through a real tracker:
//! one test per way a connection ends that the state machine's own tests do not cover.
use super::*;
use crate::track::{fixtures::*, TrackerConfig};
use TcpState::*;

const S: u64 = 1_000_000_000;

#[test]
fn rst_from_the_peer_mid_connection_is_reset_by_peer() {
    let s = Script::new(0xf0, "10.0.0.2:80", "10.0.1.1:40000");
    let established = [s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1), s.segment(63, false, 2 * S)];
    let reset = [s.segment(63, true, 3 * S), s.reset_received(3 * S), s.state(Established, Close, 3 * S)];
    let (_, out) = run(TrackerConfig::default(), &[&established[..], &reset[..]].concat());
    let verdict = ended(&out)[0];
    assert_eq!(verdict.class, CloseClass::ResetByPeer, "its TTL matches the peer's data");
    assert!(verdict.detail.contains("ESTABLISHED"), "{}", verdict.detail);
}

/// A server process killed with its connections open: the kernel closes them for it (a FIN,
/// or a RST where data was unread). The line says the owner exited.
#[test]
fn a_connection_whose_owner_exited_says_so() {
    let s = Script::new(0xf5, "10.0.0.2:80", "10.0.1.1:40000");
    let killed = |at| crate::decode::Event { process: Some(process()), by_exiting_process: true, ..s.syscall(Established, FinWait1, at) };
    let events = [
        s.state(Listen, SynRecv, S),
        s.state(SynRecv, Established, S + 1),
        killed(2 * S),
        s.state(FinWait1, FinWait2, 2 * S + 1),
        s.closed(FinWait2, true, 2 * S + 2),
    ];
    let (_, out) = run(TrackerConfig::default(), &events);
    let verdict = ended(&out)[0];
    assert_eq!(verdict.class, CloseClass::Graceful);
    assert!(
        verdict.detail.ends_with("pid 4242 (curl) exited without closing it (killed, or it ended): the kernel closed its socket"),
        "{}",
        verdict.detail
    );
}

/// The peer stopped acknowledging our request; we closed after it: our FIN went unanswered
/// too, but it is not what the peer failed to answer first.
#[test]
fn a_fin_after_unanswered_data_is_the_data_s_silence_not_an_unanswered_fin() {
    let c = Script::new(0xf4, "10.0.1.1:40000", "10.0.0.2:80");
    let mut events = vec![c.syscall(Close, SynSent, S), c.state(SynSent, Established, S + 1)];
    events.extend([c.retransmit(Established, S + S / 5), c.retransmit(Established, 2 * S)]);
    events.extend([c.syscall(Established, FinWait1, 3 * S), c.retransmit(FinWait1, 4 * S)]);
    let mut close = c.closed(FinWait1, false, 10 * S);
    close.totals.as_mut().unwrap().error = 110;
    events.push(close);
    let (_, out) = run(TrackerConfig::default(), &events);
    let verdict = ended(&out)[0];
    assert_eq!(verdict.class, CloseClass::PeerSilent);
    assert!(
        verdict.detail.starts_with("our data went unacknowledged from 1.8 s before our FIN, then our FIN too (3 retransmits)"),
        "{}",
        verdict.detail
    );
    assert!(verdict.connection.data_unanswered_before_fin());
}

/// connect() enters SYN_SENT before it takes a local port: one that found none free
/// (EADDRNOTAVAIL) leaves SYN_SENT with port 0 and no SYN sent. Not an abandoned connect.
#[test]
fn a_connect_that_found_no_local_port_is_no_local_port_not_an_abandoned_connect() {
    let c = Script::new(0xf1, "10.0.1.1:0", "10.0.0.2:80");
    let (_, out) = run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), c.syscall(SynSent, Close, S + 1)]);
    let (class, detail) = (ended(&out)[0].class, &ended(&out)[0].detail);
    assert_eq!(class, CloseClass::NoLocalPort, "{detail}");
    assert!(detail.contains("no local port free for this destination"), "{detail}");
    // With its port taken, the same close is the application abandoning its connect.
    let c = Script::new(0xf2, "10.0.1.1:40000", "10.0.0.2:80");
    let (_, out) = run(TrackerConfig::default(), &[c.syscall(Close, SynSent, S), c.syscall(SynSent, Close, S + 1)]);
    assert_eq!(ended(&out)[0].class, CloseClass::Aborted);
}

/// A line that ends in ETIMEDOUT is never graceful: FINs crossed (CLOSING) or the peer's came
/// first (LAST_ACK), and ours was retransmitted until the timer gave up.
#[test]
fn a_close_that_timed_out_after_both_fins_is_peer_silent_never_graceful() {
    let s = Script::new(0xf3, "10.0.0.2:80", "10.0.1.1:40000");
    for (path, from) in [(&[FinWait1, Closing][..], Closing), (&[CloseWait, LastAck][..], LastAck)] {
        let mut events = vec![s.state(Listen, SynRecv, S), s.state(SynRecv, Established, S + 1)];
        let mut previous = Established;
        for (step, state) in path.iter().enumerate() {
            events.push(s.state(previous, *state, 2 * S + step as u64));
            previous = *state;
        }
        events.push(s.retransmit(from, 3 * S));
        let mut close = s.closed(from, true, 9 * S);
        close.totals.as_mut().unwrap().error = 110;
        events.push(close);
        let (_, out) = run(TrackerConfig::default(), &events);
        let (class, detail) = (ended(&out)[0].class, &ended(&out)[0].detail);
        assert_eq!(class, CloseClass::PeerSilent, "{from}: {detail}");
        assert!(detail.contains(&format!("timed out in {from}")) && detail.contains("ETIMEDOUT"), "{detail}");
    }
}
