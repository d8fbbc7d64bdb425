//! Summary mode around the [`Pipeline`]: where its events come from and its results go (connection
//! lines, metrics, flight records, the summary on stdout and in --json-out), and the socket
//! snapshot taken on a blocking thread while the event loop keeps draining the ring buffer.
use std::io::{self, IsTerminal};

use anyhow::Result;
use bytes::Bytes;
use tokio::time::Instant;

use super::{
    link_log::{LinkLog, LINK_MEMORY_NS},
    owners::OwnerCache,
    pipeline::Pipeline,
    settings::SummarySettings,
    EXIT_PATIENCE,
};
use crate::{
    decode::{Decoder, Event},
    filter::Filter,
    find::{Context, Findings, FindingsConfig},
    kernel::{
        clock::{self, Clock},
        links::{LinkChange, Links},
        probes::Probes,
        sock_diag::{NamespaceSettings, Snapshot, Snapshots},
    },
    output::{
        connections::{ConnectionLine, InOrder, Printed, Selection},
        metrics::Metrics,
        recorder::FlightRecorder,
        run_findings::RunFindings,
        summary::{Health, SourceModes, Summary},
        timeline::Timeline,
        Sink,
    },
    track::{Observation, Tracker, TrackerConfig},
    FastSet,
};

/// Where summaries go.
pub struct Outputs {
    pub stdout: Sink,
    pub json_file: Option<Sink>,
    pub metrics: Option<Metrics>,
    /// `--timeline`, and `/` of the metrics server.
    pub timeline: Option<Timeline>,
}

/// A socket snapshot being taken on a blocking thread; it hands the snapshots back.
pub type PendingDump = tokio::task::JoinHandle<(Snapshots, Snapshot)>;

/// Most namespaces remembered while a snapshot is being taken (past it, the next round dumps
/// every namespace, as activity may have gone unnoticed).
const MAX_SEEN_WHILE_AWAY: usize = 1024;

/// Lingering sockets looked up at most per second (a lookup is a hash lookup in the kernel, some
/// microseconds); past it the least recently checked go first.
const MAX_LOOKUPS: usize = 256;
/// Lingering sockets looked up once more at exit, at most (tens of milliseconds).
const MAX_EXIT_LOOKUPS: usize = 4096;

/// What a summary started before its snapshot was taken.
struct Pending {
    health: Health,
    now_ns: u64,
}

/// The default mode: events → reorder → tracker → findings → a summary every interval.
pub struct Aggregator {
    pub outputs: Outputs,
    recorder: Option<FlightRecorder>,
    /// Reset reason names, for flight records.
    decoder: Decoder,
    clock: Clock,
    pipeline: Pipeline,
    /// `None` without snapshots, and while a dump is running on its thread.
    snapshots: Option<Snapshots>,
    /// The summary waiting for its snapshot.
    pending: Option<Pending>,
    owners: OwnerCache,
    /// `--connections`: a line per ended connection on stdout instead of the summaries...
    connections: Option<Selection>,
    /// ... printed in the order the connections ended, with each finding as it arises.
    connection_lines: InOrder<Printed>,
    /// What the run found, for the final summary.
    run_findings: RunFindings,
    /// Namespaces events came from while the snapshots were away (learnt, or marked active, when
    /// they are back).
    seen_while_away: FastSet<u32>,
    /// Events came that the set above could not hold, or events were lost: the next round dumps
    /// every namespace.
    dump_everything: bool,
    /// Lost and skipped events at the previous round.
    missed_before: u64,
    /// Events seen by the previous summary.
    seen_before: u64,
    /// The namespace of the previous event: consecutive events mostly share one.
    last_netns: u32,
    modes: SourceModes,
    links: LinkLog,
    interval_started: Instant,
    colour: bool,
}

impl Aggregator {
    pub fn new(
        settings: &SummarySettings,
        filter: Filter,
        probes: &Probes,
        decoder: &Decoder,
        outputs: Outputs,
        snapshots: Option<Result<Snapshots>>,
        links: Links,
    ) -> Result<Aggregator> {
        let (snapshots, snapshot_mode) = match snapshots {
            None => (None, "off (--no-snapshot)".to_string()),
            Some(Ok(snapshots)) => (Some(snapshots), "sock_diag".to_string()),
            Some(Err(error)) => {
                eprintln!("tracer: warning: socket snapshots are off: {error:#}");
                (None, format!("off ({error})"))
            }
        };
        let own = snapshots.as_ref().map_or(NamespaceSettings::DEFAULT, Snapshots::own_settings);
        let ephemeral_ports = own.ephemeral_ports;
        let tracker = Tracker::new(
            TrackerConfig {
                max_connections: settings.max_connections,
                fin_timeout_ns: own.fin_timeout_s * 1_000_000_000,
                keepalive_time_ns: own.keepalive_time_s * 1_000_000_000,
                ephemeral_ports,
                probes: snapshots.is_some(),
                // Linux ≥ 6.10 gives reset reasons, and from then also traces resets sent from
                // timewait sockets.
                time_wait_resets_traced: probes.modes.reset_reasons,
                hz: probes.modes.hz,
                time_wait_status: probes.modes.exact_time_wait,
                ..TrackerConfig::default()
            },
            decoder.reason_names().clone(),
        )
        .with_drop_reasons(decoder.drop_reasons().clone());
        let findings = Findings::new(FindingsConfig { ephemeral_ports, ..settings.findings });
        let modes = SourceModes {
            hooks: probes.modes.describe(),
            time_wait: match (probes.modes.exact_time_wait.is_some(), snapshots.is_some()) {
                (true, true) => "fentry (exact) + sock_diag",
                (true, false) => "fentry (exact)",
                (false, true) => "sock_diag",
                (false, false) => "tracepoints (estimated)",
            },
            snapshot: snapshot_mode,
            snapshot_round: None,
        };
        let recorder = settings.recorder.clone().map(FlightRecorder::new).transpose()?;
        Ok(Aggregator {
            outputs,
            recorder,
            decoder: Decoder::new(decoder.reason_names().clone()).with_drop_reasons(decoder.drop_reasons().clone()),
            clock: Clock::now(),
            pipeline: Pipeline::new(filter, tracker, findings),
            snapshots,
            pending: None,
            owners: OwnerCache::default(),
            connections: settings.connections,
            connection_lines: InOrder::default(),
            run_findings: RunFindings::default(),
            seen_while_away: FastSet::default(),
            dump_everything: false,
            missed_before: 0,
            seen_before: 0,
            last_netns: 0,
            modes,
            links: LinkLog::new(links),
            interval_started: Instant::now(),
            colour: io::stdout().is_terminal(),
        })
    }

    pub fn event(&mut self, event: &Event) {
        if !self.pipeline.push(event) {
            return;
        }
        if event.socket.netns != self.last_netns {
            self.last_netns = event.socket.netns;
            self.links.watcher.seen(event.socket.netns);
            match &mut self.snapshots {
                Some(snapshots) => learn_netns(snapshots, &mut self.pipeline.tracker, event.socket.netns),
                // Away taking a snapshot: learnt when it is back.
                None if self.pending.is_some() => {
                    if self.seen_while_away.len() < MAX_SEEN_WHILE_AWAY {
                        self.seen_while_away.insert(event.socket.netns);
                    } else {
                        self.dump_everything = true;
                    }
                }
                None => {}
            }
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.push(*event);
        }
    }

    /// A link changed: counted, recorded, kept for the summary and for the findings it may explain.
    pub fn link(&mut self, change: LinkChange) {
        if self.pipeline.filter.netns.is_some_and(|netns| netns != change.netns) {
            return;
        }
        if let Some(metrics) = &self.outputs.metrics {
            metrics.link_change(change.what);
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.push_link(change.clone());
        }
        if let Some(timeline) = &mut self.outputs.timeline {
            timeline.link(&change, &self.clock);
        }
        self.links.push(change, &self.clock);
    }

    /// Feeds the tracker every event older than `horizon_ns`, then the findings. While a snapshot
    /// is being taken the events wait in the reorder stage, so that the snapshot is reconciled
    /// against exactly the events that came before it.
    pub fn advance(&mut self, horizon_ns: u64) {
        if self.pending.is_some() {
            return;
        }
        let metrics = &mut self.outputs.metrics;
        self.pipeline.advance(horizon_ns, |event, filter, folded_before| {
            if let (Some(metrics), Some(old), Some(new)) = (metrics.as_mut(), event.old_state, event.state) {
                if filter.matches(event.socket.netns, event.local, event.remote, event.process.as_ref()) {
                    if let Some(before) = folded_before {
                        metrics.state_change(before, old);
                    }
                    metrics.state_change(old, new);
                }
            }
        });
        self.report_observations();
        self.print_connection_lines(horizon_ns);
    }

    /// Prints the connection lines whose time has come (all of them at `u64::MAX`).
    fn print_connection_lines(&mut self, horizon_ns: u64) {
        // Without `--connections` no line waits: nothing to bound.
        if self.connections.is_none() {
            return;
        }
        let final_before_ns = self.pipeline.tracker.verdicts_final_before(horizon_ns);
        let (shown, json): (Vec<Bytes>, Vec<Option<Bytes>>) = self.connection_lines.due(horizon_ns, final_before_ns).into_iter().unzip();
        let json: Vec<Bytes> = json.into_iter().flatten().collect();
        // At exit every line still waiting comes at once: wait for room rather than drop them.
        let last = horizon_ns == u64::MAX;
        for (sink, lines) in [(self.outputs.json_file.as_mut(), json), (Some(&mut self.outputs.stdout), shown)] {
            match sink {
                Some(sink) if last => sink.lines_patiently(&lines, EXIT_PATIENCE),
                Some(sink) => sink.lines(&lines),
                None => {}
            }
        }
    }

    fn report_observations(&mut self) {
        let (outputs, recorder, clock, connections, lines) =
            (&mut self.outputs, &mut self.recorder, &self.clock, self.connections, &mut self.connection_lines);
        self.pipeline.report(|observation, scoped, tracker| {
            if !scoped {
                return;
            }
            let reason_name = |code| tracker.reason_name(code).map(str::to_string);
            if let Some(metrics) = outputs.metrics.as_ref() {
                metrics.observe(&observation, reason_name);
            }
            if let Some(timeline) = outputs.timeline.as_mut() {
                timeline.observe(&observation);
            }
            let Observation::Ended(ended) = observation else { return };
            if connections.is_some_and(|selection| selection.wants(&ended)) {
                let line = ConnectionLine::new(&ended, clock, reason_name, |code| tracker.drop_reason_name(code));
                let json = (outputs.stdout.json || outputs.json_file.is_some()).then(|| Bytes::from(line.json()));
                let shown = if outputs.stdout.json { json.clone().expect("made for stdout") } else { line.human().into() };
                let json = json.filter(|_| outputs.json_file.is_some());
                // With JSON on stdout both are one buffer: counted once.
                let size = shown.len() + json.as_ref().filter(|_| !outputs.stdout.json).map_or(0, Bytes::len);
                lines.push(ended.connection.end_ns(), (shown, json), size);
            }
            if let Some(recorder) = recorder.as_mut() {
                recorder.push_connection(ended);
            }
        });
    }

    /// Looks up the lingering FIN_WAIT2 timewait sockets and quiet connections (every second,
    /// whatever the interval, so their verdicts never depend on it), while the snapshots are not
    /// away.
    pub fn look_up_sockets(&mut self) {
        self.look_up(MAX_LOOKUPS, false);
    }

    fn look_up(&mut self, limit: usize, last: bool) {
        let Some(snapshots) = &self.snapshots else { return };
        self.pipeline.look_up_sockets(limit, last, clock::monotonic_ns, |tuple| snapshots.look_up(tuple.netns, tuple.local, tuple.remote));
        self.report_observations();
    }

    /// Starts a summary: events up to `horizon_ns` (all at exit), expiry, then the socket
    /// snapshot. The dump runs on a blocking thread, and returns its handle, so the event loop keeps
    /// draining the ring buffer meanwhile (a dump of a busy namespace takes long enough to fill it);
    /// the summary is finished by [`Aggregator::snapshot_arrived`]. At exit, and without snapshots,
    /// it is finished at once.
    pub fn summarize(&mut self, health: Health, horizon_ns: Option<u64>) -> Result<Option<PendingDump>> {
        if self.pending.is_some() {
            return Ok(None); // the previous dump is still running: this tick folds into its summary
        }
        let now_ns = clock::monotonic_ns();
        let last = horizon_ns.is_none();
        // The next event marks its namespace active for the coming round.
        self.last_netns = 0;
        // Events first: a snapshot must not date a socket's TIME_WAIT before the events that led to it.
        self.advance(horizon_ns.unwrap_or(u64::MAX));
        if last {
            // Every event is in: one last look at the sockets still waiting for their peer's FIN
            // (the last ones to close included); those found gone are settled at once, as nothing
            // more can arrive, and the rest are given up.
            self.look_up(MAX_EXIT_LOOKUPS, true);
            self.advance(u64::MAX);
            self.pipeline.stop_following(now_ns);
        }
        self.pipeline.expire(now_ns);
        // Lost events may have hidden a namespace's activity.
        let missed = health.lost + health.skipped;
        let everything = std::mem::take(&mut self.dump_everything) || std::mem::replace(&mut self.missed_before, missed) != missed;
        match self.snapshots.take() {
            Some(mut snapshots) if !last => {
                self.pending = Some(Pending { health, now_ns });
                let known = self.owners.known();
                return Ok(Some(tokio::task::spawn_blocking(move || {
                    let mut snapshot = snapshots.take(everything);
                    crate::kernel::sock_diag::resolve_owners(&mut snapshot, &known);
                    (snapshots, snapshot)
                })));
            }
            Some(mut snapshots) => {
                let mut snapshot = snapshots.take(everything);
                crate::kernel::sock_diag::resolve_owners(&mut snapshot, &self.owners.known());
                self.snapshots = Some(snapshots);
                self.conclude(health, now_ns, true, Some(snapshot))?;
            }
            None => self.conclude(health, now_ns, last, None)?,
        }
        Ok(None)
    }

    /// The dump started by [`Aggregator::summarize`] is back: finish that summary, then let the
    /// events held meanwhile through.
    pub fn snapshot_arrived(&mut self, snapshots: Snapshots, snapshot: Snapshot) -> Result<()> {
        self.snapshots = Some(snapshots);
        for netns in self.seen_while_away.drain() {
            learn_netns(self.snapshots.as_mut().expect("just returned"), &mut self.pipeline.tracker, netns);
        }
        let Some(Pending { health, now_ns }) = self.pending.take() else { return Ok(()) };
        self.conclude(health, now_ns, false, Some(snapshot))
    }

    fn conclude(&mut self, mut health: Health, now_ns: u64, last: bool, mut snapshot: Option<Snapshot>) -> Result<()> {
        if let Some(snapshot) = &mut snapshot {
            self.owners.update(snapshot);
        }
        if let (Some(snapshots), Some(snapshot)) = (&self.snapshots, &snapshot) {
            self.pipeline.apply_snapshot(now_ns, snapshot);
            for netns in &snapshot.released {
                self.links.watcher.release(*netns);
            }
            let round = snapshot.round;
            self.modes.snapshot_round = Some(round);
            self.modes.snapshot = format!(
                "sock_diag ({} netns, {} dumped in {} ms{}{}{}{})",
                snapshots.covered(),
                round.dumped,
                round.micros / 1000,
                match snapshots.undiscovered() {
                    0 => String::new(),
                    quiet => format!(", {quiet} without events not covered (no room)"),
                },
                match round.carried {
                    0 => String::new(),
                    carried => format!(", over budget: {carried} carried over"),
                },
                match (snapshots.unreachable() + snapshot.failed.len(), snapshots.why_unreachable()) {
                    (0, _) => String::new(),
                    (missing, Some((netns, why))) => format!(", {missing} unreachable (netns {netns}: {why})"),
                    (missing, None) => format!(", {missing} unreachable"),
                },
                match snapshots.released() {
                    0 => String::new(),
                    released => format!(", {released} gone and released"),
                }
            );
        }
        self.report_observations();
        if last {
            self.print_connection_lines(u64::MAX);
        }
        let settings =
            |netns: u32| self.snapshots.as_ref().and_then(|snapshots| snapshots.settings(netns)).unwrap_or(NamespaceSettings::DEFAULT);
        let filter = self.pipeline.filter.clone();
        self.links.forget_before(now_ns.saturating_sub(LINK_MEMORY_NS));
        let recent: Vec<LinkChange> = self.links.recent.iter().cloned().collect();
        let context = Context {
            now_ns,
            snapshot: snapshot.as_ref(),
            settings: &settings,
            filter: &filter,
            owners: &self.owners.named,
            links: &recent,
        };
        let mut picture = self.pipeline.conclude(&context);
        picture.links = std::mem::take(&mut self.links.interval);
        if let Some(snapshots) = &self.snapshots {
            for finding in &mut picture.findings {
                finding.netns_name = snapshots.name(finding.netns).map(str::to_string);
            }
        }
        if let Some(recorder) = &mut self.recorder {
            for problem in recorder.record(&mut picture.findings, now_ns, &self.clock, &self.decoder) {
                eprintln!("tracer: warning: flight recorder: {problem}");
            }
        }
        let ts = self.clock.format(now_ns);
        let announce = (self.connections.is_some() && !last).then_some(&mut self.outputs.stdout);
        self.run_findings.take(&picture.findings, &ts, announce);
        let stats = self.pipeline.tracker.stats;
        health.evicted += stats.evicted_connections
            + stats.evicted_time_wait
            + stats.evicted_drop_pairs
            + stats.evicted_drop_destinations
            + stats.evicted_arrived_resets
            + stats.evicted_peer_ttls
            + stats.evicted_arrived_icmp
            + self.pipeline.findings.evicted
            + self.run_findings.evicted
            + self.links.dropped;
        health.joined_mid_life = stats.joined_mid_life;
        health.closes_unseen = stats.closes_unseen;
        health.recorder_overflowed = self.recorder.as_ref().map_or(0, |recorder| recorder.overflowed);
        health.held_dropped = self.pipeline.dropped_while_held();
        if let Some(metrics) = &mut self.outputs.metrics {
            metrics.publish(&picture, health, self.modes.snapshot_round);
        }
        if let Some(timeline) = &mut self.outputs.timeline {
            timeline.summary(now_ns, self.interval_started.elapsed(), &picture, health.lost + health.skipped, &self.clock);
            if let Err(error) = timeline.publish(&self.clock, now_ns) {
                eprintln!("tracer: warning: {error:#}");
            }
        }
        let elapsed = std::mem::replace(&mut self.interval_started, Instant::now()).elapsed();
        let interval_events = health.seen - std::mem::replace(&mut self.seen_before, health.seen);
        let mut summary =
            Summary::new(ts, clock::tenths_of_seconds(elapsed.as_nanos() as i128), last, (health, interval_events), &self.modes, &picture);
        if last {
            summary = summary.with_since_start(self.run_findings.since_start());
        }
        let json = (self.outputs.stdout.json || self.outputs.json_file.is_some()).then(|| Bytes::from(summary.json()));
        let text = match &json {
            Some(json) if self.outputs.stdout.json => json.clone(),
            _ => Bytes::from(summary.human(self.colour).trim_end().to_string()),
        };
        // With --connections stdout holds connection lines; the final summary closes them.
        let stdout = (self.connections.is_none() || last).then_some(&mut self.outputs.stdout);
        for (sink, line) in [(stdout, Some(text)), (self.outputs.json_file.as_mut(), json)] {
            if let (Some(sink), Some(line)) = (sink, line) {
                if last {
                    sink.line_patiently(line, EXIT_PATIENCE);
                } else {
                    sink.line(line);
                }
            }
        }
        Ok(())
    }
}

/// Covers `netns` from the next snapshot round on, and names it in the verdicts.
fn learn_netns(snapshots: &mut Snapshots, tracker: &mut crate::track::Tracker, netns: u32) {
    snapshots.learn(netns);
    if let Some(name) = snapshots.name(netns) {
        tracker.name_netns(netns, name);
    }
}
