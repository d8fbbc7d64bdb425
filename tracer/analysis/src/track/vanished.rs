//! Connections whose CLOSE event never came: lost to a full ring buffer, or skipped because the
//! kernel does not nest a program in itself (a timer's close interrupting another run of the
//! state hook on that CPU). Nothing else would end them: they would sit in the table as open
//! until evicted, and never get a line or a verdict.
//!
//! So a connection that has had no state change for [`QUIET_NS`] has its socket looked up by
//! 4-tuple, at the lingering sockets' fixed cadence and with what their budget leaves. Found
//! gone, once every event from before the lookup is in (its CLOSE may be on its way), it ends at
//! the lookup, `unresolved` unless a RST it took or sent already says how; found in TIME_WAIT,
//! it closed gracefully, ours the first FIN. Each is counted.
//! The cadence does not depend on `--interval`, so neither does the verdict.
use std::collections::VecDeque;

use super::{CloseLost, Connection, Ending, Observation, Role, Tracker, Tuple, SETTLE_NS};
use crate::decode::{SocketId, TcpState};

/// How long a connection goes without a state change before its socket is looked up, and
/// between two lookups that found it there.
pub const QUIET_NS: u64 = 5_000_000_000;
/// Quiet connections listed by one scan of the table, at most (the scan runs again once they
/// are all looked up, and at most every [`QUIET_NS`]).
const MAX_LISTED: usize = 4096;

#[derive(Default)]
pub(super) struct Watch {
    /// Quiet connections waiting for their lookup, as the last scan listed them.
    listed: VecDeque<SocketId>,
    /// When the table was last scanned.
    scanned_ns: u64,
    /// Connections found gone, in lookup order, until every event before then has arrived.
    gone: VecDeque<(u64, SocketId, CloseLost)>,
}

impl Watch {
    /// When the first connection found gone and not yet ended was looked up: its end.
    pub(super) fn first_gone_ns(&self) -> Option<u64> {
        self.gone.front().map(|(gone_ns, _, _)| *gone_ns)
    }
}

/// Open, with both ports known (a lookup needs the 4-tuple), and neither changed nor found
/// there for [`QUIET_NS`]. Listeners are left out: their close is not a connection's verdict.
fn is_quiet(connection: &Connection, now_ns: u64) -> bool {
    connection.ending.is_none()
        && connection.role != Role::Listener
        && connection.local.port() != 0
        && connection.remote.port() != 0
        && connection.state_since_ns.max(connection.checked_ns).saturating_add(QUIET_NS) <= now_ns
}

impl Tracker {
    /// Quiet connections due for a lookup at `now_ns`, at most `limit`, with their 4-tuples.
    pub fn quiet_due(&mut self, now_ns: u64, limit: usize) -> Vec<(SocketId, Tuple)> {
        if self.watch.listed.is_empty() && now_ns.saturating_sub(self.watch.scanned_ns) >= QUIET_NS {
            self.watch.scanned_ns = now_ns;
            let quiet = self.connections.values().filter(|connection| is_quiet(connection, now_ns));
            self.watch.listed.extend(quiet.map(|connection| connection.socket).take(MAX_LISTED));
        }
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(socket) = self.watch.listed.pop_front() else { break };
            if let Some(connection) = self.connections.get(&socket).filter(|connection| is_quiet(connection, now_ns)) {
                due.push((socket, connection.tuple()));
            }
        }
        due
    }

    /// What a lookup of a quiet connection's socket found by `at_ns`: its state, or `None` when
    /// nothing holds its 4-tuple. Found gone (a lookup that finds no connection falls back to
    /// the listener) or in TIME_WAIT (a timewait socket took over), it ends once every event
    /// before `at_ns` is in, unless its CLOSE event comes meanwhile.
    pub fn quiet_checked(&mut self, socket: &SocketId, at_ns: u64, found: Option<TcpState>) {
        let Some(connection) = self.connections.get_mut(socket) else { return };
        connection.checked_ns = connection.checked_ns.max(at_ns);
        let lost = match found {
            None | Some(TcpState::Listen) => CloseLost::Gone,
            Some(TcpState::TimeWait) => CloseLost::InTimeWait,
            Some(_) => return,
        };
        self.watch.gone.push_back((at_ns, *socket, lost));
    }

    /// A lookup that could not be made (its namespace is not reachable): asked again after
    /// another quiet spell.
    pub fn quiet_not_asked(&mut self, socket: &SocketId, at_ns: u64) {
        if let Some(connection) = self.connections.get_mut(socket) {
            connection.checked_ns = connection.checked_ns.max(at_ns);
        }
    }

    /// Ends the connections found gone before `horizon_ns` that no event has ended since.
    pub(super) fn settle_vanished(&mut self, horizon_ns: u64, out: &mut Vec<Observation>) {
        while let Some(&(gone_ns, socket, lost)) = self.watch.gone.front() {
            if gone_ns.saturating_add(SETTLE_NS) > horizon_ns {
                break;
            }
            self.watch.gone.pop_front();
            // Its CLOSE came after all, or a later state change says the lookup missed it (the
            // socket's address reused, a new life begun).
            let Some(connection) = self.connections.get(&socket) else { continue };
            if connection.ending.is_some() || connection.state_since_ns >= gone_ns {
                continue;
            }
            let mut connection = self.connections.remove(&socket).expect("just checked");
            connection.ending = Some(Ending {
                at_ns: gone_ns,
                from: connection.state,
                by_application: false,
                lingered: None,
                resolved_ns: None,
                resolved_by_lookup: false,
                close_lost: Some(lost),
            });
            self.stats.closes_unseen += 1;
            self.finish(connection, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures::*, *};
    use crate::{
        decode::{Event, TcpState::*},
        track::{CloseClass, TrackerConfig},
    };

    const S: u64 = 1_000_000_000;

    /// A client connection established at 1 s; the tracker fed `events` after it, and a lookup
    /// every second from 2 s to 10 s that finds its socket established until `gone_at`, then
    /// `found`. Returns the tracker and every observation.
    fn looked_up(events: &[Event], gone_at: u64, found: Option<TcpState>) -> (Tracker, Vec<Observation>) {
        let c = client();
        let (mut tracker, mut out) =
            run(TrackerConfig::default(), &[&[c.syscall(Close, SynSent, S), c.state(SynSent, Established, S + 1)], events].concat());
        for second in 2..=10 {
            let now = second * S;
            tracker.settle(now, &mut out);
            for (socket, _) in tracker.quiet_due(now, 16) {
                tracker.quiet_checked(&socket, now, if now >= gone_at { found } else { Some(Established) });
            }
        }
        tracker.settle(12 * S, &mut out);
        (tracker, out)
    }

    #[test]
    fn a_connection_whose_close_never_came_ends_unresolved_once_its_socket_is_found_gone() {
        let (tracker, out) = looked_up(&[], 0, None);
        let verdicts = ended(&out);
        assert_eq!(verdicts.len(), 1, "{out:?}");
        assert_eq!(verdicts[0].class, CloseClass::Unresolved);
        assert!(verdicts[0].detail.contains("its CLOSE event never came"), "{}", verdicts[0].detail);
        assert_eq!(verdicts[0].connection.ending.and_then(|ending| ending.close_lost), Some(CloseLost::Gone));
        // Quiet from 1 s, so not listed by the scan at 5 s; listed by the next, at 10 s, and
        // ended at that lookup.
        assert_eq!(verdicts[0].connection.end_ns(), 10 * S);
        assert_eq!((tracker.stats.closes_unseen, tracker.connections().count()), (1, 0));
    }

    #[test]
    fn a_socket_found_there_is_looked_up_again_only_after_another_quiet_spell() {
        let c = client();
        let (mut tracker, mut out) = run(TrackerConfig::default(), &[c.state(SynSent, Established, S)]);
        assert!(tracker.quiet_due(4 * S, 16).is_empty(), "no scan before 5 s");
        let due = tracker.quiet_due(6 * S, 16);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].1.local, due[0].1.remote), ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:80".parse().unwrap()));
        tracker.quiet_checked(&due[0].0, 6 * S, Some(Established));
        assert!(tracker.quiet_due(11 * S - 1, 16).is_empty(), "found 5 s ago less a nanosecond");
        assert_eq!(tracker.quiet_due(11 * S, 16).len(), 1);
        tracker.settle(20 * S, &mut out);
        assert!(ended(&out).is_empty() && tracker.stats.closes_unseen == 0, "{out:?}");
    }

    #[test]
    fn a_close_that_arrives_after_the_lookup_found_the_socket_gone_decides_as_usual() {
        let c = client();
        let (mut tracker, mut out) = run(TrackerConfig::default(), &[c.state(SynSent, Established, S)]);
        let (socket, _) = tracker.quiet_due(6 * S, 16)[0];
        tracker.quiet_checked(&socket, 6 * S, None);
        // Its events, from before the lookup, reach the tracker after it.
        for event in [c.state(Established, CloseWait, 5 * S), c.syscall(CloseWait, LastAck, 5 * S + 1), c.state(LastAck, Close, 5 * S + 2)]
        {
            tracker.observe(&event, &mut out);
        }
        tracker.settle(7 * S, &mut out);
        let verdicts = ended(&out);
        assert_eq!((verdicts.len(), verdicts[0].class, tracker.stats.closes_unseen), (1, CloseClass::Graceful, 0), "{out:?}");
    }

    #[test]
    fn a_reset_seen_before_the_lost_close_still_names_who_reset_it() {
        let c = client();
        let (_, out) = looked_up(&[c.reset_arrived_after_handshake(64, 63, S, 3 * S), c.reset_received(3 * S)], 0, None);
        let verdicts = ended(&out);
        assert_eq!((verdicts.len(), verdicts[0].class), (1, CloseClass::ResetByPath), "{out:?}");
    }

    #[test]
    fn a_connection_whose_socket_stays_is_never_ended() {
        let (tracker, out) = looked_up(&[], u64::MAX, None);
        assert!(ended(&out).is_empty(), "{out:?}");
        assert_eq!((tracker.stats.closes_unseen, tracker.connections().count()), (0, 1));
    }

    #[test]
    fn the_listener_a_lookup_falls_back_to_is_no_sign_of_the_connection() {
        let (_, out) = looked_up(&[], 0, Some(Listen));
        assert_eq!(ended(&out).iter().map(|verdict| verdict.class).collect::<Vec<_>>(), [CloseClass::Unresolved]);
    }

    #[test]
    fn a_connection_found_in_time_wait_closed_gracefully_our_fin_first() {
        let (tracker, out) = looked_up(&[], 0, Some(TimeWait));
        let verdict = ended(&out)[0];
        assert_eq!((verdict.class, verdict.time_wait), (CloseClass::Graceful, true));
        assert!(verdict.detail.contains("found in TIME_WAIT"), "{}", verdict.detail);
        assert_eq!(tracker.stats.closes_unseen, 1);
    }

    #[test]
    fn a_connect_whose_close_was_lost_is_looked_up_once_a_syn_retransmit_named_its_port() {
        let c = client();
        // connect() sets SYN_SENT before it picks the local port.
        let (mut tracker, mut out) =
            run(TrackerConfig::default(), &[Event { local: "10.0.0.1:0".parse().unwrap(), ..c.syscall(Close, SynSent, S) }]);
        assert!(tracker.quiet_due(6 * S, 16).is_empty(), "no 4-tuple to look up yet");
        tracker.observe(&c.retransmit(SynSent, 7 * S), &mut out);
        let due = tracker.quiet_due(12 * S, 16);
        assert_eq!(due.iter().map(|(_, tuple)| tuple.local.port()).collect::<Vec<_>>(), [40000]);
        tracker.quiet_checked(&due[0].0, 12 * S, None);
        tracker.settle(13 * S, &mut out);
        assert_eq!(ended(&out).iter().map(|verdict| verdict.class).collect::<Vec<_>>(), [CloseClass::Unresolved]);
    }
}
