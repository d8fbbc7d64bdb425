//! The event loop: drain the ring buffer in batches, hand events to the chosen consumer (live
//! event lines, or the tracker → findings → summary pipeline), and stop cleanly on SIGINT,
//! SIGTERM or `--duration`, reporting what was seen and lost.
use std::{
    io::{self, IsTerminal},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tracer_common::WireEvent;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    time::{interval_at, sleep_until, Instant, MissedTickBehavior},
};

use crate::{
    cli::Cli,
    clock::{self, Clock},
    decode::{Decoder, Event, TcpState},
    filter::Filter,
    findings::{self, Findings, FindingsConfig},
    output::{
        events,
        files::RotatingFile,
        metrics::{self, Metrics},
        connections::{ConnectionLine, Selection},
        recorder::{FlightRecorder, RecorderConfig},
        summary::{Health, SourceModes, Summary},
        Sink,
    },
    privileges,
    probes::{AttachOptions, Probes, POLL_INTERVAL},
    reorder::Reorder,
    snapshot::{Snapshot, Snapshots},
    tracker::{Observation, Tracker, TrackerConfig},
    FastSet,
};

/// How long the exit waits for a stalled stdout to take the last lines.
const EXIT_PATIENCE: Duration = Duration::from_secs(2);

pub async fn run(cli: Cli) -> Result<()> {
    let filter = cli.filter()?;
    if cli.events && cli.metrics_addr.is_some() {
        anyhow::bail!("--metrics-addr needs the summary mode: drop --events");
    }
    let metrics_server = cli.metrics_addr.map(metrics::listen).transpose()?;
    let json_file = match &cli.json_out {
        Some(path) => Some(
            RotatingFile::open(path, cli.json_out_max_bytes, cli.json_out_keep)
                .with_context(|| format!("cannot open --json-out {}", path.display()))?,
        ),
        None => None,
    };
    // Before anything is attached: a signal during start-up must still end in a clean exit.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (probes, ring, mut decoder) = Probes::attach(AttachOptions {
        ring_buffer_bytes: cli.ring_buffer_size,
        tracefs_root: &cli.tracefs,
        hook_mode: cli.hook_mode,
        batching: !cli.events,
        filter: filter.kernel(),
    })?;
    // Snapshots open their own-namespace socket before the drop; later namespaces need CAP_SYS_ADMIN.
    let snapshots = (!cli.events && !cli.no_snapshot).then(|| Snapshots::new(cli.interval));
    privileges::drop_after_attach(snapshots.as_ref().is_some_and(Result::is_ok)).context("cannot drop capabilities after attaching")?;
    let sink = Sink::new(io::stdout(), cli.json);
    let json_file = json_file.map(|file| Sink::new(file, true));
    let mut consumer = if cli.events {
        Consumer::Events(Box::new(EventPrinter { sink, json_file, clock: Clock::now(), filter }))
    } else {
        let metrics = metrics_server.map(|server| Metrics::serve(server, &probes.modes.hooks));
        let outputs = Outputs { stdout: sink, json_file, metrics };
        Consumer::Summary(Box::new(Aggregator::new(&cli, filter, &probes, &decoder, outputs, snapshots)?))
    };
    eprintln!("tracer: attached; {}", probes.modes.describe());

    // SAFETY: the AsyncFd owns the ring buffer, so its descriptor outlives the registration.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|error| anyhow::anyhow!("cannot poll the ring buffer: {error}"))?;
    let deadline = cli.duration.map(|duration| Instant::now() + duration);
    let mut ticks = interval_at(Instant::now() + cli.interval, cli.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seen = 0u64;
    let health = |seen: u64, decoder: &Decoder| {
        let loss = probes.loss();
        Health {
            seen,
            lost: loss.ring_full,
            skipped: loss.nested,
            unreadable: loss.read_failed,
            decode_errors: decoder.stats.errors(),
            ..Health::default()
        }
    };
    let mut horizon = Horizon::new(probes.modes.batched);
    let mut dump: Option<PendingDump> = None;
    let mut polls = tokio::time::interval(POLL_INTERVAL);
    polls.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.context("polling the ring buffer failed")?;
                seen += drain(guard.get_inner_mut(), &mut decoder, &mut consumer, horizon.now());
                guard.clear_ready();
            }
            _ = polls.tick() => {
                horizon.flushed(&probes);
                seen += drain(ring.get_mut(), &mut decoder, &mut consumer, horizon.now());
            }
            _ = ticks.tick(), if !cli.events => {
                if let Some(started) = consumer.tick(health(seen, &decoder), Some(horizon.now()))? {
                    dump = Some(started);
                }
            }
            result = async { dump.as_mut().expect("guarded").await }, if dump.is_some() => {
                dump = None;
                consumer.snapshot_arrived(result)?;
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
        }
    }
    if let Some(dump) = dump {
        consumer.snapshot_arrived(dump.await)?;
    }
    // Whatever is still in the batches and the ring buffer belongs to this run.
    probes.flush();
    seen += drain(ring.get_mut(), &mut decoder, &mut consumer, horizon.now());
    consumer.tick(health(seen, &decoder), None)?;
    let (sink, json_file) = consumer.sinks();
    let dropped = sink.dropped();
    if !sink.finish(EXIT_PATIENCE) || dropped > 0 {
        eprintln!("tracer: {} output lines dropped: stdout was not read fast enough", sink.dropped());
    }
    if let Some(file) = json_file {
        if !file.finish(EXIT_PATIENCE) || file.dropped() > 0 {
            eprintln!("tracer: {} lines dropped from --json-out: the file could not be written fast enough", file.dropped());
        }
    }
    Ok(())
}

/// The longest the tracker waits for a complete flush of every CPU's batch.
const MAX_FLUSH_WAIT_NS: u64 = 1_000_000_000;

/// Up to when every event is known to have arrived: what the tracker may be fed.
///
/// Records from different CPUs reach the ring buffer slightly out of timestamp order, and with
/// per-CPU batches a CPU's records wait until its batch fills or is flushed. After a flush of
/// every CPU that started at T, nothing older than T is still on its way (but for programs
/// running at that instant, which the reorder window covers).
struct Horizon {
    batched: bool,
    flushed_at_ns: u64,
}

impl Horizon {
    fn new(batched: bool) -> Horizon {
        Horizon { batched, flushed_at_ns: clock::monotonic_ns() }
    }

    /// Flushes every CPU's batch; the horizon moves only when all of them went.
    fn flushed(&mut self, probes: &Probes) {
        let started = clock::monotonic_ns();
        if probes.flush() {
            self.flushed_at_ns = started;
        }
    }

    fn now(&self) -> u64 {
        let now = clock::monotonic_ns();
        // Flushes that keep failing (or a CPU busy at every try) must not hold events forever.
        let arrived = if self.batched { self.flushed_at_ns.max(now.saturating_sub(MAX_FLUSH_WAIT_NS)) } else { now };
        arrived.saturating_sub(crate::reorder::WINDOW_NS)
    }
}

/// Hands every event waiting in the ring buffer to the consumer; returns how many there were.
/// A ring-buffer record holds one event or a CPU's batch of them.
fn drain(ring: &mut RingBuf<MapData>, decoder: &mut Decoder, consumer: &mut Consumer, horizon_ns: u64) -> u64 {
    let mut events = 0;
    while let Some(record) = ring.next() {
        for chunk in record.chunks(WireEvent::SIZE) {
            events += 1;
            if let Some(event) = decoder.decode(chunk) {
                consumer.event(event, decoder);
            }
        }
    }
    if events > 0 {
        consumer.batch_done(horizon_ns);
    }
    events
}

enum Consumer {
    Events(Box<EventPrinter>),
    Summary(Box<Aggregator>),
}

impl Consumer {
    fn event(&mut self, event: Event, decoder: &Decoder) {
        match self {
            Consumer::Events(printer) => printer.event(&event, decoder),
            Consumer::Summary(aggregator) => aggregator.event(event),
        }
    }

    fn batch_done(&mut self, horizon_ns: u64) {
        if let Consumer::Summary(aggregator) = self {
            aggregator.advance(horizon_ns);
        }
    }

    fn sink(&mut self) -> &mut Sink {
        self.sinks().0
    }

    fn sinks(&mut self) -> (&mut Sink, Option<&mut Sink>) {
        match self {
            Consumer::Events(printer) => (&mut printer.sink, printer.json_file.as_mut()),
            Consumer::Summary(aggregator) => (&mut aggregator.outputs.stdout, aggregator.outputs.json_file.as_mut()),
        }
    }

    /// A summary with every event before `horizon_ns` (or, for `--events`, the closing line);
    /// `None` at exit: everything.
    /// May hand back a snapshot being taken; pass its result to [`Consumer::snapshot_arrived`].
    fn tick(&mut self, mut health: Health, horizon_ns: Option<u64>) -> Result<Option<PendingDump>> {
        health.output_dropped = self.sink().dropped();
        match self {
            Consumer::Events(printer) => {
                printer.finish(health);
                Ok(None)
            }
            Consumer::Summary(aggregator) => aggregator.summarize(health, horizon_ns),
        }
    }

    fn snapshot_arrived(&mut self, result: Result<(Snapshots, Snapshot), tokio::task::JoinError>) -> Result<()> {
        let (snapshots, snapshot) = result.context("the socket snapshot thread failed")?;
        match self {
            Consumer::Summary(aggregator) => aggregator.snapshot_arrived(snapshots, snapshot),
            Consumer::Events(_) => Ok(()),
        }
    }
}

/// `--events`: every event, as it comes.
struct EventPrinter {
    sink: Sink,
    json_file: Option<Sink>,
    clock: Clock,
    filter: Filter,
}

impl EventPrinter {
    fn event(&mut self, event: &Event, decoder: &Decoder) {
        if !self.filter.matches(event.socket.netns, event.local, event.remote, event.process.as_ref()) {
            return;
        }
        let json = (self.sink.json || self.json_file.is_some()).then(|| events::json(event, &self.clock, decoder));
        if let (Some(file), Some(json)) = (&mut self.json_file, &json) {
            file.line(json.clone());
        }
        let line = match json {
            Some(json) if self.sink.json => json,
            _ => events::human(event, &self.clock, decoder),
        };
        self.sink.line(line);
    }

    fn finish(&mut self, health: Health) {
        let closing = if self.sink.json {
            serde_json::json!({"final": true, "events": health}).to_string()
        } else {
            format!(
                "events: {} seen, {} lost (ring buffer full), {} skipped (nested firing), {} unreadable, {} undecodable, {} output lines dropped",
                health.seen, health.lost, health.skipped, health.unreadable, health.decode_errors, health.output_dropped
            )
        };
        if let Some(file) = &mut self.json_file {
            file.line_patiently(serde_json::json!({"final": true, "events": health}).to_string(), EXIT_PATIENCE);
        }
        self.sink.line_patiently(closing, EXIT_PATIENCE);
    }
}

/// Where summaries go.
struct Outputs {
    stdout: Sink,
    json_file: Option<Sink>,
    metrics: Option<Metrics>,
}

/// A socket snapshot being taken on a blocking thread; it hands the snapshots back.
type PendingDump = tokio::task::JoinHandle<(Snapshots, Snapshot)>;

/// Most namespaces remembered while a snapshot is being taken (past it, the next round dumps
/// every namespace, as activity may have gone unnoticed).
const MAX_SEEN_WHILE_AWAY: usize = 1024;

/// What a summary started before its snapshot was taken.
struct Pending {
    health: Health,
    now_ns: u64,
}

/// The default mode: events → reorder → tracker → findings → a summary every interval.
struct Aggregator {
    outputs: Outputs,
    recorder: Option<FlightRecorder>,
    /// Reset reason names, for flight records.
    decoder: Decoder,
    clock: Clock,
    filter: Filter,
    reorder: Reorder,
    tracker: Tracker,
    findings: Findings,
    /// `None` without snapshots, and while a dump is running on its thread.
    snapshots: Option<Snapshots>,
    /// The summary waiting for its snapshot.
    pending: Option<Pending>,
    /// `--connections`: a line per ended connection on stdout instead of the summaries.
    connections: Option<Selection>,
    /// Namespaces events came from while the snapshots were away (learnt, or marked active, when
    /// they are back).
    seen_while_away: FastSet<u32>,
    /// Events came that the set above could not hold, or events were lost: the next round dumps
    /// every namespace.
    dump_everything: bool,
    /// Lost and skipped events at the previous round.
    missed_before: u64,
    /// The namespace of the previous event: consecutive events mostly share one.
    last_netns: u32,
    modes: SourceModes,
    observations: Vec<Observation>,
    interval_started: Instant,
    colour: bool,
}

impl Aggregator {
    fn new(
        cli: &Cli,
        filter: Filter,
        probes: &Probes,
        decoder: &Decoder,
        outputs: Outputs,
        snapshots: Option<Result<Snapshots>>,
    ) -> Result<Aggregator> {
        let (snapshots, snapshot_mode) = match snapshots {
            None => (None, "off (--no-snapshot)".to_string()),
            Some(Ok(snapshots)) => (Some(snapshots), "sock_diag".to_string()),
            Some(Err(error)) => {
                eprintln!("tracer: warning: socket snapshots are off: {error:#}");
                (None, format!("off ({error})"))
            }
        };
        let settings = snapshots.as_ref().map(Snapshots::own_settings);
        let ephemeral_ports = settings.map_or((32768, 60999), |settings| settings.ephemeral_ports);
        let tracker = Tracker::new(
            TrackerConfig {
                max_connections: cli.max_connections,
                fin_timeout_ns: settings.map_or(60, |settings| settings.fin_timeout_s) * 1_000_000_000,
                ephemeral_ports,
                snapshots: snapshots.is_some(),
                time_wait_status: probes.modes.exact_time_wait,
                ..TrackerConfig::default()
            },
            decoder.reason_names().clone(),
        );
        let findings = Findings::new(FindingsConfig {
            stuck_after_ns: cli.stuck_after.as_nanos() as u64,
            time_wait_threshold: cli.time_wait_threshold,
            ephemeral_ports,
            ..FindingsConfig::default()
        });
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
        let recorder = match &cli.record_dir {
            Some(dir) => Some(FlightRecorder::new(RecorderConfig {
                dir: dir.clone(),
                window_ns: cli.record_window.as_nanos() as u64,
                max_events: cli.record_max_events,
                max_file_bytes: cli.record_max_bytes,
                max_files: cli.record_max_files,
            })?),
            None => None,
        };
        Ok(Aggregator {
            outputs,
            recorder,
            decoder: Decoder::new(decoder.reason_names().clone()),
            clock: Clock::now(),
            filter,
            reorder: Reorder::default(),
            tracker,
            findings,
            snapshots,
            pending: None,
            connections: cli.connections,
            seen_while_away: FastSet::default(),
            dump_everything: false,
            missed_before: 0,
            last_netns: 0,
            modes,
            observations: Vec::new(),
            interval_started: Instant::now(),
            colour: io::stdout().is_terminal(),
        })
    }

    fn event(&mut self, event: Event) {
        if self.filter.netns.is_some_and(|netns| netns != event.socket.netns) {
            return;
        }
        if event.socket.netns != self.last_netns {
            self.last_netns = event.socket.netns;
            match &mut self.snapshots {
                Some(snapshots) => snapshots.learn(event.socket.netns),
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
            recorder.push(event);
        }
        self.reorder.push(event);
    }

    /// Feeds the tracker every event older than `horizon_ns`, then the findings. While a snapshot
    /// is being taken the events wait in the reorder stage, so that the snapshot is reconciled
    /// against exactly the events that came before it.
    fn advance(&mut self, horizon_ns: u64) {
        if self.pending.is_some() {
            return;
        }
        let (metrics, filter, tracker, observations) = (&mut self.outputs.metrics, &self.filter, &mut self.tracker, &mut self.observations);
        self.reorder.release(horizon_ns, |event| {
            if let (Some(metrics), Some(old), Some(new)) = (metrics.as_mut(), event.old_state, event.state) {
                if filter.matches(event.socket.netns, event.local, event.remote, event.process.as_ref()) {
                    metrics.state_change(old, new);
                }
            }
            tracker.observe(event, observations);
        });
        self.tracker.settle(horizon_ns, &mut self.observations);
        self.report_observations();
    }

    fn report_observations(&mut self) {
        let tracker = &self.tracker;
        let reason_name = |code| tracker.reason_name(code).map(str::to_string);
        for observation in self.observations.drain(..) {
            let scoped = findings::in_scope(&observation, &self.filter);
            if let (Some(selection), Observation::Ended(ended), true) = (self.connections, &observation, scoped) {
                if selection.wants(ended) {
                    let line = ConnectionLine::new(ended, &self.clock, reason_name);
                    let json = (self.outputs.stdout.json || self.outputs.json_file.is_some()).then(|| line.json());
                    if let Some(file) = self.outputs.json_file.as_mut() {
                        file.line(json.clone().expect("made for the file"));
                    }
                    self.outputs.stdout.line(if self.outputs.stdout.json { json.expect("made for stdout") } else { line.human() });
                }
            }
            if let (Some(metrics), true) = (self.outputs.metrics.as_ref(), scoped) {
                metrics.observe(&observation, reason_name);
            }
            self.findings.observe(&observation, &self.filter, reason_name);
            if let (Some(recorder), Observation::Ended(ended), true) = (self.recorder.as_mut(), observation, scoped) {
                recorder.push_connection(ended);
            }
        }
    }

    /// Starts a summary: events up to `horizon_ns` (all at exit), expiry, then the socket
    /// snapshot. The dump runs on a blocking thread, and returns its handle, so the event loop keeps
    /// draining the ring buffer meanwhile (a dump of a busy namespace takes long enough to fill it);
    /// the summary is finished by [`Aggregator::snapshot_arrived`]. At exit, and without snapshots,
    /// it is finished at once.
    fn summarize(&mut self, health: Health, horizon_ns: Option<u64>) -> Result<Option<PendingDump>> {
        if self.pending.is_some() {
            return Ok(None); // the previous dump is still running: this tick folds into its summary
        }
        let now_ns = clock::monotonic_ns();
        let last = horizon_ns.is_none();
        // The next event marks its namespace active for the coming round.
        self.last_netns = 0;
        // Events first: a snapshot must not date a socket's TIME_WAIT before the events that led to it.
        self.advance(horizon_ns.unwrap_or(u64::MAX));
        self.tracker.expire(now_ns, &mut self.observations);
        // Lost events may have hidden a namespace's activity.
        let missed = health.lost + health.skipped;
        let everything = std::mem::take(&mut self.dump_everything) || std::mem::replace(&mut self.missed_before, missed) != missed;
        match self.snapshots.take() {
            Some(mut snapshots) if !last => {
                self.pending = Some(Pending { health, now_ns });
                return Ok(Some(tokio::task::spawn_blocking(move || {
                    let snapshot = snapshots.take(everything);
                    (snapshots, snapshot)
                })));
            }
            Some(mut snapshots) => {
                let snapshot = snapshots.take(everything);
                self.snapshots = Some(snapshots);
                self.conclude(health, now_ns, true, Some(snapshot))?;
            }
            None => self.conclude(health, now_ns, last, None)?,
        }
        Ok(None)
    }

    /// The dump started by [`Aggregator::summarize`] is back: finish that summary, then let the
    /// events held meanwhile through.
    fn snapshot_arrived(&mut self, snapshots: Snapshots, snapshot: Snapshot) -> Result<()> {
        self.snapshots = Some(snapshots);
        for netns in self.seen_while_away.drain() {
            self.snapshots.as_mut().expect("just returned").learn(netns);
        }
        let Some(Pending { health, now_ns }) = self.pending.take() else { return Ok(()) };
        self.conclude(health, now_ns, false, Some(snapshot))
    }

    fn conclude(&mut self, mut health: Health, now_ns: u64, last: bool, snapshot: Option<Snapshot>) -> Result<()> {
        if let (Some(snapshots), Some(snapshot)) = (&self.snapshots, &snapshot) {
            for netns in &snapshot.released {
                self.tracker.namespace_gone(*netns);
            }
            // Only a namespace dumped this round can say what ended since its last dump.
            for netns in &snapshot.fresh {
                let sockets = snapshot.sockets.get(netns).map_or(&[][..], |sockets| &sockets[..]);
                let timewait = sockets.iter().filter(|socket| matches!(socket.state, TcpState::TimeWait | TcpState::FinWait2));
                self.tracker.reconcile(*netns, now_ns, timewait.map(|socket| (socket.local, socket.remote, socket.state)), &mut self.observations);
                let time_wait = sockets.iter().filter(|socket| socket.state == TcpState::TimeWait);
                self.tracker.refresh_time_wait(*netns, now_ns, time_wait.map(|socket| (socket.local, socket.remote)));
            }
            let round = snapshot.round;
            self.modes.snapshot_round = Some(round);
            self.modes.snapshot = format!(
                "sock_diag ({} netns, {} dumped in {} ms{}{}{})",
                snapshots.covered(),
                round.dumped,
                round.micros / 1000,
                match round.carried {
                    0 => String::new(),
                    carried => format!(", over budget: {carried} carried over"),
                },
                match snapshots.unreachable() + snapshot.failed.len() {
                    0 => String::new(),
                    missing => format!(", {missing} unreachable"),
                },
                match snapshots.released() {
                    0 => String::new(),
                    released => format!(", {released} gone and released"),
                }
            );
        }
        self.report_observations();
        let settings = |netns: u32| {
            self.snapshots
                .as_ref()
                .and_then(|snapshots| snapshots.settings(netns))
                .unwrap_or(crate::snapshot::NamespaceSettings { ephemeral_ports: (32768, 60999), fin_timeout_s: 60 })
        };
        let mut picture = self.findings.conclude(now_ns, &mut self.tracker, snapshot.as_ref(), &settings, &self.filter);
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
        let stats = self.tracker.stats;
        health.evicted = stats.evicted_connections + stats.evicted_time_wait + self.findings.evicted;
        health.joined_mid_life = stats.joined_mid_life;
        if let Some(metrics) = &mut self.outputs.metrics {
            metrics.publish(&picture, health, self.modes.snapshot_round);
        }
        let elapsed = std::mem::replace(&mut self.interval_started, Instant::now()).elapsed();
        let summary = Summary::new(
            self.clock.format(now_ns),
            round_seconds(elapsed),
            last,
            health,
            &self.modes,
            &picture,
        );
        let json = (self.outputs.stdout.json || self.outputs.json_file.is_some()).then(|| summary.json());
        let text = match &json {
            Some(json) if self.outputs.stdout.json => json.clone(),
            _ => summary.human(self.colour).trim_end().to_string(),
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

fn round_seconds(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10.0).round() / 10.0
}
