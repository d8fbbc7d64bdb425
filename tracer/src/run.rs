//! The event loop: drain the ring buffer in batches, hand events to the chosen output, and stop
//! cleanly on SIGINT, SIGTERM or `--duration`, reporting what was seen and lost.
use std::io::{self, BufWriter};

use anyhow::{Context, Result};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    time::{sleep_until, Instant},
};

use crate::{
    cli::Cli,
    clock::Clock,
    output::{events, Sink},
    probes::Probes,
};

pub async fn run(cli: Cli) -> Result<()> {
    let (probes, ring, mut decoder) = Probes::attach(cli.ring_buffer_size)?;
    let clock = Clock::now();
    let mut sink = Sink::new(BufWriter::new(io::stdout().lock()), cli.json);
    eprintln!("tracer: attached; {}", probes.modes.describe());

    // SAFETY: the AsyncFd owns the ring buffer, so its descriptor outlives the registration.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|error| anyhow::anyhow!("cannot poll the ring buffer: {error}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let deadline = cli.duration.map(|duration| Instant::now() + duration);
    let mut seen = 0u64;
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.context("polling the ring buffer failed")?;
                let buffer = guard.get_inner_mut();
                while let Some(record) = buffer.next() {
                    seen += 1;
                    let Some(event) = decoder.decode(&record) else { continue };
                    let line = if cli.json {
                        events::json(&event, &clock, &decoder)
                    } else {
                        events::human(&event, &clock, &decoder)
                    };
                    sink.line(&line)?;
                }
                guard.clear_ready();
                sink.flush()?;
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
        }
    }
    let lost = probes.lost();
    let errors = decoder.stats.errors();
    let closing = if cli.json {
        serde_json::json!({"final": true, "events": {"seen": seen, "lost": lost, "decode_errors": errors}}).to_string()
    } else {
        format!("events: {seen} seen, {lost} lost (ring buffer full), {errors} undecodable")
    };
    sink.line(&closing)?;
    sink.flush()?;
    Ok(())
}
