//! Runs the data path: the command line ([`cli`]) decides what is attached and where results go;
//! the event loop here drains the ring buffer in batches and hands events to the chosen consumer
//! (live event lines, [`event_printer`], or summary mode, [`aggregator`] around the [`pipeline`]),
//! and stops cleanly on SIGINT, SIGTERM or `--duration`, reporting what was seen and lost.
mod aggregator;
pub mod cli;
mod event_printer;
mod link_log;
mod owners;
pub use tracer_analysis::pipeline;
pub mod settings;

use std::{io, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    time::{interval_at, sleep_until, Instant, MissedTickBehavior},
};
use tracer_common::WireEvent;
use tracer_model::cost::Cost;

use self::{
    aggregator::{Aggregator, Outputs, PendingDump},
    cli::Cli,
    event_printer::{EventPrinter, Pending},
    settings::Settings,
};
use crate::{
    decode::{Decoder, Event},
    filter::Admission,
    kernel::{
        clock::{self, Clock},
        links::{LinkChange, Links},
        netns, privileges,
        probes::{AttachOptions, Probes, POLL_INTERVAL, QUIET_POLL_INTERVAL},
        sock_diag::{Snapshot, Snapshots},
    },
    output::{
        files::RotatingFile,
        metrics::{self, Metrics},
        summary::Health,
        timeline::{Page, Timeline},
        Sink,
    },
};

/// Link changes waiting for the event loop before the watcher waits.
const LINK_QUEUE: usize = 1024;

/// How long the exit waits for a stalled stdout to take the last lines.
const EXIT_PATIENCE: Duration = Duration::from_secs(2);

pub async fn run(cli: Cli) -> Result<()> {
    let settings = Settings::new(&cli)?;
    let summary = settings.summary.as_ref();
    let metrics_server = summary.and_then(|summary| summary.metrics_addr).map(metrics::listen).transpose()?;
    let json_file = match &settings.json_out {
        Some(out) => Some(
            RotatingFile::open(&out.path, out.max_bytes, out.keep)
                .with_context(|| format!("cannot open --json-out {}", out.path.display()))?,
        ),
        None => None,
    };
    if let Some(path) = summary.and_then(|summary| summary.timeline.as_ref()) {
        Timeline::prepare(path)?;
    }
    // Before anything is attached: a signal during start-up must still end in a clean exit.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (mut probes, ring, mut decoder) = Probes::attach(AttachOptions {
        ring_buffer_bytes: settings.kernel.ring_buffer_bytes,
        tracefs_root: &settings.kernel.tracefs,
        hook_mode: settings.kernel.hook_mode,
        skip_hooks: &settings.kernel.skip_hooks,
        batching: summary.is_some(),
        every_state_change: summary.is_none(),
        filter: settings.filter.kernel(),
        kernel_log: settings.kernel.kernel_log,
    })?;
    let mut kernel_log = probes.take_kernel_log();
    // Snapshots open their own-namespace socket before the drop; later namespaces need CAP_SYS_ADMIN.
    let snapshots = summary.filter(|summary| summary.snapshots).map(|summary| Snapshots::new(summary.interval, settings.filter.netns));
    privileges::drop_after_attach(snapshots.as_ref().is_some_and(Result::is_ok), settings.enter_namespaces)
        .context("cannot drop capabilities after attaching")?;
    // Link changes: in the namespaces events come from (the tracer's own at least), or only
    // in --netns's; entering others needs the capabilities kept above.
    let (link_changes, mut link_changes_in) = tokio::sync::mpsc::channel(LINK_QUEUE);
    let mut links = Links::start(link_changes).context("cannot follow link changes")?;
    let filter = settings.filter.clone();
    links.watch(filter.netns.or(netns::own()).unwrap_or(0));
    if !settings.enter_namespaces || filter.netns.is_some() {
        links.stop_following();
    }
    let sink = Sink::new(io::stdout(), settings.json);
    let json_file = json_file.map(|file| Sink::new(file, true));
    let mut consumer = match summary {
        None => Consumer::Events(Box::new(EventPrinter {
            sink,
            json_file,
            clock: Clock::now(),
            filter,
            admission: Admission::default(),
            links,
            last_netns: 0,
            pending: Pending::default(),
            admitted: Vec::new(),
        })),
        Some(summary) => {
            let page = Page::default();
            let metrics = metrics_server.map(|server| Metrics::serve(server, &probes.modes.hooks, page.clone()));
            let timeline = (summary.timeline.is_some() || metrics.is_some())
                .then(|| Timeline::new(summary.timeline.clone(), page, summary.timeline_window));
            let outputs = Outputs { stdout: sink, json_file, metrics, timeline };
            Consumer::Summary(Box::new(Aggregator::new(summary, filter, &probes, &decoder, outputs, snapshots, links)?))
        }
    };
    if let Some(kept) = settings.filter.describe() {
        eprintln!("tracer: filter: only connections with {kept}");
    }
    eprintln!("tracer: attached; {}", probes.modes.describe());

    // SAFETY: the AsyncFd owns the ring buffer, so its descriptor outlives the registration.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|error| anyhow::anyhow!("cannot poll the ring buffer: {error}"))?;
    let deadline = settings.duration.map(|duration| Instant::now() + duration);
    // --events has no summaries: its ticks never fire (the branch below is disabled).
    let interval = summary.map_or(Duration::from_secs(3600), |summary| summary.interval);
    let mut ticks = interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seen = 0u64;
    let (_, mut cost_since) = probes.loss_and_cost();
    let mut health = |probes: &Probes, seen: u64, decoder: &Decoder| {
        let (loss, cost_now) = probes.loss_and_cost();
        let cost = Cost::between(&cost_since, &cost_now);
        cost_since = cost_now;
        Health {
            cost,
            seen,
            lost: loss.ring_full,
            skipped: loss.nested,
            unreadable: loss.misses.not_sent(),
            kernel_misses: loss.misses,
            decode_errors: decoder.stats.errors(),
            // The kernel's table of handshake TTLs; the aggregator adds its own tables'.
            evicted: loss.references_evicted,
            ..Health::default()
        }
    };
    let mut horizon = Horizon::new(probes.modes.batched);
    let mut dump: Option<PendingDump> = None;
    let poll = tokio::time::sleep(POLL_INTERVAL);
    tokio::pin!(poll);
    // The ring buffer woke the reader since the last poll: not quiet.
    let mut woken = false;
    let reader_gone = consumer.sink().reader_gone();
    tokio::pin!(reader_gone);
    let mut lookups = tokio::time::interval(Duration::from_nanos(crate::track::LINGER_PROBE_NS));
    lookups.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.context("polling the ring buffer failed")?;
                seen += drain(guard.get_inner_mut(), &mut decoder, &mut consumer, horizon.now());
                guard.clear_ready();
                woken = true;
            }
            () = &mut poll => {
                let batches_waited = horizon.flushed(&probes);
                if let Some(log) = &mut kernel_log {
                    log.flush();
                }
                let drained = drain(ring.get_mut(), &mut decoder, &mut consumer, horizon.now());
                seen += drained;
                let quiet = !batches_waited && drained == 0 && !std::mem::take(&mut woken);
                poll.as_mut().reset(Instant::now() + if quiet { QUIET_POLL_INTERVAL } else { POLL_INTERVAL });
            }
            _ = lookups.tick(), if summary.is_some() => consumer.look_up_sockets(),
            _ = ticks.tick(), if summary.is_some() => {
                if let Some(started) = consumer.tick(health(&probes, seen, &decoder), Some(horizon.now()))? {
                    dump = Some(started);
                }
            }
            result = async { dump.as_mut().expect("guarded").await }, if dump.is_some() => {
                dump = None;
                consumer.snapshot_arrived(result)?;
            }
            Some(change) = link_changes_in.recv() => consumer.link(change),
            () = &mut reader_gone => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
        }
    }
    if let Some(dump) = dump {
        consumer.snapshot_arrived(dump.await)?;
    }
    // Whatever is still in the batches and the ring buffer belongs to this run.
    probes.flush(0);
    seen += drain(ring.get_mut(), &mut decoder, &mut consumer, horizon.now());
    consumer.tick(health(&probes, seen, &decoder), None)?;
    let (sink, json_file) = consumer.sinks();
    let dropped = sink.dropped();
    // A reader that went away (`| head -1`) needs no word about the lines it did not take.
    if (!sink.finish(EXIT_PATIENCE) || dropped > 0) && !sink.is_closed() {
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
/// A batch begun less than this long ago is not flushed at a poll: under load it fills and goes
/// on its own first (64 records), and each flush is a system call that interrupts that busy CPU.
/// The events wait for it at most this much longer.
const SPARE_BATCHES_NS: u64 = 50_000_000;

/// Up to when every event is known to have arrived: what the tracker may be fed.
///
/// Records from different CPUs reach the ring buffer slightly out of timestamp order, and with
/// per-CPU batches a CPU's records wait until its batch fills or is flushed. After a flush of
/// every CPU that started at T, nothing older than T is still on its way (but for programs
/// running at that instant, which the reorder window covers).
pub(crate) struct Horizon {
    batched: bool,
    flushed_at_ns: u64,
}

impl Horizon {
    fn new(batched: bool) -> Horizon {
        Horizon { batched, flushed_at_ns: clock::monotonic_ns() }
    }

    /// Flushes the CPUs' batches that waited [`SPARE_BATCHES_NS`]; the horizon moves only when
    /// all of them went, up to the oldest batch spared. Whether any batch held records (a failed
    /// flush counts as one).
    fn flushed(&mut self, probes: &Probes) -> bool {
        let Some(flushed) = probes.flush(SPARE_BATCHES_NS) else { return true };
        self.flushed_at_ns = self.flushed_at_ns.max(flushed.arrived_ns);
        flushed.batches_waited
    }

    fn now(&self) -> u64 {
        let now = clock::monotonic_ns();
        // Flushes that keep failing (or a CPU busy at every try) must not hold events forever.
        let arrived = if self.batched { self.flushed_at_ns.max(now.saturating_sub(MAX_FLUSH_WAIT_NS)) } else { now };
        arrived.saturating_sub(crate::track::reorder::WINDOW_NS)
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
                consumer.event(&event, decoder);
            }
        }
    }
    // Without new events too: the horizon moved on, so what waits behind it (events in the
    // reorder stage, connections settling, their lines) goes on, where an idle host held it until
    // the next event or summary.
    consumer.batch_done(horizon_ns);
    events
}

enum Consumer {
    Events(Box<EventPrinter>),
    Summary(Box<Aggregator>),
}

impl Consumer {
    fn link(&mut self, change: LinkChange) {
        match self {
            Consumer::Events(printer) => printer.link(&change),
            Consumer::Summary(aggregator) => aggregator.link(change),
        }
    }

    fn event(&mut self, event: &Event, decoder: &Decoder) {
        match self {
            Consumer::Events(printer) => printer.event(event, decoder),
            Consumer::Summary(aggregator) => aggregator.event(event),
        }
    }

    fn look_up_sockets(&mut self) {
        if let Consumer::Summary(aggregator) = self {
            aggregator.look_up_sockets();
        }
    }

    fn batch_done(&mut self, horizon_ns: u64) {
        match self {
            Consumer::Summary(aggregator) => aggregator.advance(horizon_ns),
            Consumer::Events(printer) => printer.flush(),
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
