//! Everything the tracer prints: per-event lines, summaries, and the closing line, each as a
//! human table or JSON lines.
pub mod events;
pub mod summary;

use std::io::Write;

/// Where lines go; flushed once per batch, not per line.
pub struct Sink<W: Write> {
    out: W,
    pub json: bool,
}

impl<W: Write> Sink<W> {
    pub fn new(out: W, json: bool) -> Self {
        Sink { out, json }
    }

    pub fn line(&mut self, line: &str) -> std::io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
