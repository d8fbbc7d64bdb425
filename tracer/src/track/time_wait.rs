//! TIME_WAIT and timewait sockets left in FIN_WAIT2: they outlive the socket the events were
//! about, so the tracker keeps them by 4-tuple, dates them, and lets snapshots correct them.
use std::net::SocketAddr;

use super::{Ending, Lingered, Lingering, Observation, Role, Tracker, Tuple, TIME_WAIT_NS};
use crate::{
    decode::{Event, TcpState},
    FastMap, FastSet,
};

impl Tracker {
    /// Timewait sockets left in FIN_WAIT2, not yet resolved by a snapshot.
    pub fn lingering(&self) -> impl Iterator<Item = &Lingering> {
        self.lingering.values()
    }

    /// TIME_WAIT sockets believed to exist at `now_ns`.
    pub fn time_wait(&self, now_ns: u64) -> impl Iterator<Item = (&Tuple, u64)> {
        self.time_wait.iter().filter(move |(_, since)| now_ns.saturating_sub(**since) < TIME_WAIT_NS).map(|(tuple, since)| (tuple, *since))
    }

    /// Replaces what we believe about one namespace's TIME_WAIT sockets with a snapshot taken at
    /// `taken_ns`: sockets it lacks are gone (unless they entered TIME_WAIT after it was taken);
    /// new ones are dated to the snapshot, as sock_diag does not say when they began.
    pub fn refresh_time_wait(&mut self, netns: u32, taken_ns: u64, snapshot: impl IntoIterator<Item = (SocketAddr, SocketAddr)>) {
        let present: FastSet<Tuple> = snapshot.into_iter().map(|(local, remote)| Tuple { netns, local, remote }).collect();
        self.time_wait.retain(|tuple, since| tuple.netns != netns || present.contains(tuple) || *since >= taken_ns);
        for tuple in present {
            if !self.time_wait.contains_key(&tuple) {
                self.remember_time_wait(tuple, taken_ns);
            }
        }
    }

    /// Forgets the TIME_WAIT sockets of a namespace that is gone: the kernel purges them with
    /// the namespace, without an event.
    pub fn namespace_gone(&mut self, netns: u32) {
        self.time_wait.retain(|tuple, _| tuple.netns != netns);
    }

    pub(super) fn remember_time_wait(&mut self, tuple: Tuple, since_ns: u64) {
        if self.time_wait.len() >= self.config.max_time_wait && !self.time_wait.contains_key(&tuple) {
            let oldest = self.time_wait.iter().take(64).min_by_key(|(_, since)| **since).map(|(tuple, _)| *tuple);
            if let Some(oldest) = oldest {
                self.time_wait.remove(&oldest);
                self.stats.evicted_time_wait += 1;
            }
        }
        self.time_wait.insert(tuple, since_ns);
    }

    /// A SYN hit a timewait socket (exact, from fexit): accepted, or answered with a bare ACK.
    pub(super) fn syn_on_time_wait(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let (Some(status), Some(known)) = (event.tw_status, self.config.time_wait_status) else { return };
        let accepted = match status {
            status if status == known.syn => true,
            status if status == known.ack => false,
            _ => return,
        };
        let tuple = Tuple::of(event);
        let since = if accepted { self.time_wait.remove(&tuple) } else { self.time_wait.get(&tuple).copied() };
        let age = since.map(|since| event.timestamp_ns.saturating_sub(since));
        out.push(Observation::PortReuse { tuple, role: Role::Server, time_wait_age_ns: age, accepted, at_ns: event.timestamp_ns });
    }

    pub(super) fn linger(&mut self, lingering: Lingering, out: &mut Vec<Observation>) {
        let tuple =
            Tuple { netns: lingering.connection.socket.netns, local: lingering.connection.local, remote: lingering.connection.remote };
        if self.lingering.len() >= self.config.max_time_wait && !self.lingering.contains_key(&tuple) {
            let oldest = self.lingering.iter().take(64).min_by_key(|(_, l)| l.connection.state_since_ns).map(|(tuple, _)| *tuple);
            if let Some(oldest) = oldest.and_then(|oldest| self.lingering.remove(&oldest)) {
                self.finish(oldest.connection, out);
            }
        }
        if let Some(replaced) = self.lingering.insert(tuple, lingering) {
            self.finish(replaced.connection, out);
        }
    }

    /// Resolves lingering FIN_WAIT2 timewait sockets of `netns` with a snapshot taken at
    /// `taken_ns`, given as (local, remote, state) of its TIME_WAIT and FIN_WAIT2 sockets.
    pub fn reconcile(
        &mut self,
        netns: u32,
        taken_ns: u64,
        sockets: impl IntoIterator<Item = (SocketAddr, SocketAddr, TcpState)>,
        out: &mut Vec<Observation>,
    ) {
        let states: FastMap<(SocketAddr, SocketAddr), TcpState> =
            sockets.into_iter().map(|(local, remote, state)| ((local, remote), state)).collect();
        let mine: Vec<Tuple> = self.lingering.keys().filter(|tuple| tuple.netns == netns).copied().collect();
        for tuple in mine {
            let entry = self.lingering.get_mut(&tuple).expect("listed");
            let Some(ending) = entry.connection.ending.filter(|ending| ending.at_ns < taken_ns) else { continue };
            let outcome = match states.get(&(tuple.local, tuple.remote)) {
                Some(TcpState::TimeWait) => Lingered::PeerFin,
                Some(_) => {
                    entry.seen_in_fin_wait2 = true;
                    continue;
                }
                None if entry.seen_in_fin_wait2 || taken_ns - ending.at_ns >= self.config.fin_timeout_ns * 9 / 10 => Lingered::Expired,
                // Gone before any snapshot saw it in FIN_WAIT2: the peer answered (FIN or RST).
                None => Lingered::PeerFin,
            };
            let mut lingering = self.lingering.remove(&tuple).expect("listed");
            lingering.connection.ending = Some(Ending { lingered: Some(outcome), ..ending });
            if outcome == Lingered::PeerFin && states.contains_key(&(tuple.local, tuple.remote)) {
                self.remember_time_wait(tuple, ending.at_ns);
            }
            self.finish(lingering.connection, out);
        }
    }

    /// Forgets TIME_WAIT sockets that have expired, and gives up on lingering FIN_WAIT2 ones no
    /// snapshot could resolve (their namespace is gone or unreachable). Once per summary.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Observation>) {
        self.time_wait.retain(|_, since| now_ns.saturating_sub(*since) < TIME_WAIT_NS);
        let limit = self.config.fin_timeout_ns + TIME_WAIT_NS;
        let stale: Vec<Tuple> = self
            .lingering
            .iter()
            .filter(|(_, lingering)| lingering.connection.ending.is_some_and(|ending| now_ns.saturating_sub(ending.at_ns) > limit))
            .map(|(tuple, _)| *tuple)
            .collect();
        for tuple in stale {
            let mut lingering = self.lingering.remove(&tuple).expect("just listed");
            if lingering.seen_in_fin_wait2 {
                // Still FIN_WAIT2 when last seen, and tcp_fin_timeout is long past.
                if let Some(ending) = &mut lingering.connection.ending {
                    ending.lingered = Some(Lingered::Expired);
                }
            }
            self.finish(lingering.connection, out);
        }
    }
}
