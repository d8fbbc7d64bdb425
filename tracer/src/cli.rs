//! The command line: what the operator can ask for, with the defaults an on-call engineer wants.
use std::time::Duration;

use clap::Parser;

/// Follow every TCP connection from SYN to its end and tell which side dropped it.
///
/// Needs root (or CAP_BPF + CAP_PERFMON). Stops on SIGINT/SIGTERM or after --duration,
/// detaching every probe.
#[derive(Parser, Debug, Clone)]
#[command(name = "tracer", version, about, long_about)]
pub struct Cli {
    /// Print every event as it happens instead of periodic summaries.
    #[arg(long)]
    pub events: bool,

    /// One JSON object per line instead of the human format.
    #[arg(long)]
    pub json: bool,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Kernel → userspace ring buffer size in bytes (a power of two; 96 bytes per event).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub ring_buffer_size: u32,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("`{text}` must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}
