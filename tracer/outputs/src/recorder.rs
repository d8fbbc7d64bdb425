//! The flight recorder (`--record-dir`): the last seconds of events and of ended connections stay
//! in memory, and when a finding fires, that peer's recent events and connection lines (the
//! `--connections` record: each connection's lifeline and verdict) are written to a file of their
//! own, in time order, named in the summary — the packet capture around the fault, without tcpdump.
//!
//! Bounded everywhere: events by count and age, each file by size, the directory by number of
//! files (oldest removed), and one file per finding and peer per minute.
use std::{collections::VecDeque, fs, io::Write, net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result};

use crate::{connections::ConnectionLine, events, files};
use tracer_analysis::{
    decode::{Decoder, Event},
    find::{Endpoint, Finding, FindingKind, PeerKey},
    track::Ended,
};
use tracer_model::{clock::Clock, links::LinkChange, FastMap};

const NS_PER_S: u64 = 1_000_000_000;
/// When a connection ended (or last changed, if it has not).
/// A finding for the same peer is recorded again only after this long.
const RECORD_AGAIN_AFTER_NS: u64 = 60 * NS_PER_S;

#[derive(Clone, Debug)]
pub struct RecorderConfig {
    pub dir: PathBuf,
    pub window_ns: u64,
    pub max_events: usize,
    pub max_file_bytes: u64,
    pub max_files: usize,
}

pub struct FlightRecorder {
    config: RecorderConfig,
    events: VecDeque<Event>,
    /// Ended connections, oldest first, bounded like the events.
    connections: VecDeque<Ended>,
    /// Link changes, oldest first, bounded like the events: a record holds its namespace's.
    links: VecDeque<LinkChange>,
    last_recorded: FastMap<(FindingKind, PeerKey), u64>,
    /// Events pushed out by the count cap before their time (they are not in any record).
    pub overflowed: u64,
}

fn matches(endpoint: Endpoint, address: SocketAddr) -> bool {
    endpoint.ip == address.ip() && endpoint.port.is_none_or(|port| port == address.port() || address.port() == 0)
}

impl FlightRecorder {
    pub fn new(config: RecorderConfig) -> Result<FlightRecorder> {
        fs::create_dir_all(&config.dir).with_context(|| format!("cannot create --record-dir {}", config.dir.display()))?;
        Ok(FlightRecorder {
            config,
            events: VecDeque::new(),
            connections: VecDeque::new(),
            links: VecDeque::new(),
            last_recorded: FastMap::default(),
            overflowed: 0,
        })
    }

    pub fn push(&mut self, event: Event) {
        let horizon = event.timestamp_ns.saturating_sub(self.config.window_ns);
        while self.events.front().is_some_and(|oldest| oldest.timestamp_ns < horizon) {
            self.events.pop_front();
        }
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
            self.overflowed += 1;
        }
        self.events.push_back(event);
    }

    pub fn push_connection(&mut self, ended: Ended) {
        let horizon = ended.connection.end_ns().saturating_sub(self.config.window_ns);
        while self.connections.front().is_some_and(|oldest| oldest.connection.end_ns() < horizon) {
            self.connections.pop_front();
        }
        if self.connections.len() >= self.config.max_events {
            self.connections.pop_front();
            self.overflowed += 1;
        }
        self.connections.push_back(ended);
    }

    pub fn push_link(&mut self, change: LinkChange) {
        let horizon = change.at_ns.saturating_sub(self.config.window_ns);
        while self.links.front().is_some_and(|oldest| oldest.at_ns < horizon) {
            self.links.pop_front();
        }
        if self.links.len() >= self.config.max_events {
            self.links.pop_front();
            self.overflowed += 1;
        }
        self.links.push_back(change);
    }

    /// Writes a record for each finding that has events and was not recorded lately; fills in
    /// the findings' `record` field. Errors are returned as text for the summary, never fatal.
    pub fn record(&mut self, findings: &mut [Finding], now_ns: u64, clock: &Clock, decoder: &Decoder) -> Vec<String> {
        let mut problems = Vec::new();
        self.last_recorded.retain(|_, at| now_ns.saturating_sub(*at) < RECORD_AGAIN_AFTER_NS);
        for finding in findings.iter_mut() {
            let key = (finding.kind, finding.key);
            if self.last_recorded.contains_key(&key) {
                continue;
            }
            let peer = finding.key;
            let events: Vec<&Event> = self
                .events
                .iter()
                .filter(|event| event.socket.netns == peer.netns && matches(peer.local, event.local) && matches(peer.remote, event.remote))
                .collect();
            let connections: Vec<&Ended> = self
                .connections
                .iter()
                .filter(|ended| {
                    let connection = &ended.connection;
                    connection.socket.netns == peer.netns
                        && matches(peer.local, connection.local)
                        && matches(peer.remote, connection.remote)
                })
                .collect();
            if events.is_empty() && connections.is_empty() {
                continue;
            }
            let links: Vec<&LinkChange> = self.links.iter().filter(|change| change.netns == peer.netns).collect();
            match self.write(finding, &events, &connections, &links, clock, decoder) {
                Ok(path) => {
                    finding.record = Some(path.display().to_string());
                    self.last_recorded.insert(key, now_ns);
                }
                Err(error) => problems.push(format!("{error:#}")),
            }
        }
        self.prune();
        problems
    }

    fn write(
        &self,
        finding: &Finding,
        events: &[&Event],
        connections: &[&Ended],
        links: &[&LinkChange],
        clock: &Clock,
        decoder: &Decoder,
    ) -> Result<PathBuf> {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
        let peer: String = finding.remote.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
        let path = self.config.dir.join(format!("{stamp}-{}-{peer}.jsonl", finding.kind.name()));
        let mut file = files::create_private(&path).with_context(|| format!("cannot create flight record {}", path.display()))?;
        let mut written = 0u64;
        // In time order, newest last; if the cap cuts, it cuts the oldest.
        let reason_name = |code| decoder.reason_name(code).map(str::to_string);
        let mut timed: Vec<(u64, String)> = events.iter().map(|event| (event.timestamp_ns, events::json(event, clock, decoder))).collect();
        let drop_reason = |code| decoder.drop_reason_name(code);
        timed.extend(
            connections.iter().map(|ended| (ended.connection.end_ns(), ConnectionLine::new(ended, clock, reason_name, drop_reason).json())),
        );
        timed.extend(links.iter().map(|change| (change.at_ns, events::link_json(change, clock))));
        timed.sort_by_key(|(at, _)| *at);
        let lines: Vec<String> = timed.into_iter().map(|(_, line)| line).collect();
        let mut start = lines.len();
        while start > 0 && written + (lines[start - 1].len() as u64) < self.config.max_file_bytes {
            start -= 1;
            written += lines[start].len() as u64 + 1;
        }
        for line in &lines[start..] {
            writeln!(file, "{line}")?;
        }
        Ok(path)
    }

    /// Keeps the newest `max_files` records.
    fn prune(&self) {
        let Ok(entries) = fs::read_dir(&self.config.dir) else { return };
        let mut records: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "jsonl"))
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        if records.len() <= self.config.max_files {
            return;
        }
        records.sort();
        for (_, path) in &records[..records.len() - self.config.max_files] {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_analysis::decode::TcpState::*;
    use tracer_analysis::track::fixtures::Script;

    fn finding(kind: FindingKind, local: &str, remote: &str, key: PeerKey) -> Finding {
        Finding { local: local.into(), remote: remote.into(), ..tracer_analysis::track::fixtures::finding(kind, key) }
    }

    #[test]
    fn a_finding_gets_a_private_file_with_only_its_peers_recent_events() {
        let dir = std::env::temp_dir().join(format!("tracer-recorder-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let config = RecorderConfig { dir: dir.clone(), window_ns: 10 * NS_PER_S, max_events: 1000, max_file_bytes: 1 << 20, max_files: 2 };
        let mut recorder = FlightRecorder::new(config).unwrap();
        let peer = Script::new(1, "10.0.0.2:80", "10.0.0.1:40000");
        let other = Script::new(2, "10.0.0.2:80", "10.0.0.9:40000");
        recorder.push(peer.state(Listen, SynRecv, NS_PER_S)); // too old by the time of the fault
        recorder.push(peer.state(SynRecv, Established, 20 * NS_PER_S));
        recorder.push(other.state(Listen, SynRecv, 20 * NS_PER_S));
        recorder.push(peer.reset_received(21 * NS_PER_S));
        let key = PeerKey::new(tracer_analysis::track::Role::Server, peer.socket.netns, peer.local, peer.remote);
        let mut findings = vec![finding(FindingKind::RstFromPeer, "10.0.0.2:80", "10.0.0.1:*", key)];
        let problems = recorder.record(&mut findings, 21 * NS_PER_S, &Clock::now(), &Decoder::default());
        assert!(problems.is_empty(), "{problems:?}");
        let path = PathBuf::from(findings[0].record.clone().expect("recorded"));
        let text = fs::read_to_string(&path).unwrap();
        let kinds: Vec<String> =
            text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["state", "rst_received"], "only this peer, only the window: {text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        // The same finding a moment later is not recorded again.
        findings[0].record = None;
        recorder.record(&mut findings, 22 * NS_PER_S, &Clock::now(), &Decoder::default());
        assert!(findings[0].record.is_none());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_record_holds_the_peers_connection_lines_in_time_order_with_its_events() {
        let dir = std::env::temp_dir().join(format!("tracer-recorder-lines-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let config = RecorderConfig { dir: dir.clone(), window_ns: 10 * NS_PER_S, max_events: 1000, max_file_bytes: 1 << 20, max_files: 2 };
        let mut recorder = FlightRecorder::new(config).unwrap();
        let mut tracker = tracer_analysis::track::Tracker::new(
            tracer_analysis::track::TrackerConfig::default(),
            tracer_analysis::track::fixtures::reasons(),
        );
        let peer = Script::new(1, "10.0.0.2:80", "10.0.0.1:40000");
        let events = [
            peer.state(Listen, SynRecv, NS_PER_S),
            peer.state(SynRecv, Established, 2 * NS_PER_S),
            peer.reset_received(3 * NS_PER_S),
            peer.state(Established, Close, 3 * NS_PER_S),
        ];
        let mut out = Vec::new();
        for event in events {
            recorder.push(event);
            tracker.observe(&event, &mut out);
        }
        tracker.settle(u64::MAX, &mut out);
        recorder.push(peer.state(Listen, SynRecv, 4 * NS_PER_S)); // a later event for the same peer
        for observation in out {
            if let tracer_analysis::track::Observation::Ended(ended) = observation {
                recorder.push_connection(ended);
            }
        }
        let key = PeerKey::new(tracer_analysis::track::Role::Server, peer.socket.netns, peer.local, peer.remote);
        let mut findings = vec![finding(FindingKind::RstFromPeer, "10.0.0.2:80", "10.0.0.1:*", key)];
        recorder.record(&mut findings, 5 * NS_PER_S, &Clock::now(), &Decoder::default());
        let text = fs::read_to_string(findings[0].record.as_ref().expect("recorded")).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let what: Vec<&str> = lines.iter().map(|line| line["kind"].as_str().or(line["close"].as_str()).unwrap()).collect();
        assert_eq!(what, ["state", "state", "rst_received", "state", "reset_unverified", "state"], "{text}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn memory_is_bounded_by_count_and_age() {
        let dir = std::env::temp_dir().join(format!("tracer-recorder-bound-{}", std::process::id()));
        let config = RecorderConfig { dir: dir.clone(), window_ns: 5 * NS_PER_S, max_events: 3, max_file_bytes: 1 << 20, max_files: 2 };
        let mut recorder = FlightRecorder::new(config).unwrap();
        let script = Script::new(1, "10.0.0.2:80", "10.0.0.1:40000");
        for second in 0..5 {
            recorder.push(script.state(SynRecv, Established, second * NS_PER_S));
        }
        assert_eq!((recorder.events.len(), recorder.overflowed), (3, 2));
        recorder.push(script.state(SynRecv, Established, 100 * NS_PER_S));
        assert_eq!(recorder.events.len(), 1, "old events age out");
        fs::remove_dir_all(dir).unwrap();
    }
}
