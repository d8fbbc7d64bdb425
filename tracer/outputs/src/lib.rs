//! Everything the tracer prints: per-event lines, summaries, and the closing line, each as a
//! human table or JSON lines.
//!
//! Lines go through a bounded queue to a writer thread, so a reader that stops reading (a pipe
//! into a stalled `less`, a wedged log shipper) never blocks the ring-buffer consumer: when the
//! queue is full the line is dropped and counted, and the count is printed. Lines travel as
//! [`Bytes`]: a JSON line for stdout and for `--json-out` is made once and shared, not copied.
pub mod connections;
pub mod events;
pub mod exposition;
pub mod files;
pub mod metrics;
mod process_metrics;
pub mod recorder;
pub mod summary;
pub mod timeline;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc,
    },
    thread,
    time::Duration,
};

use bytes::Bytes;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE_LINES: usize = 4096;

pub struct Sink {
    queue: Option<SyncSender<Bytes>>,
    dropped: Arc<AtomicU64>,
    /// Notified once the reader is gone (EPIPE): like any Unix filter, the tracer then stops.
    closed: Arc<tokio::sync::Notify>,
    is_closed: Arc<AtomicBool>,
    done: Receiver<()>,
    writer: Option<thread::JoinHandle<()>>,
    pub json: bool,
}

impl Sink {
    pub fn new(out: impl Write + Send + 'static, json: bool) -> Sink {
        let (queue, lines) = sync_channel::<Bytes>(QUEUE_LINES);
        let (finished, done) = sync_channel(1);
        let closed = Arc::new(tokio::sync::Notify::new());
        let is_closed = Arc::new(AtomicBool::new(false));
        let (closing, marking) = (closed.clone(), is_closed.clone());
        let reader_gone = move |error: std::io::Error| {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                marking.store(true, Ordering::Relaxed);
                closing.notify_one();
            }
        };
        let writer = thread::Builder::new()
            .name("tracer-output".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(out);
                loop {
                    // Flush whenever the queue runs dry, so a reader sees lines promptly.
                    let line = match lines.try_recv() {
                        Ok(line) => line,
                        Err(_) => {
                            if let Err(error) = out.flush() {
                                reader_gone(error);
                                break;
                            }
                            match lines.recv() {
                                Ok(line) => line,
                                Err(_) => break,
                            }
                        }
                    };
                    if let Err(error) = out.write_all(&line).and_then(|()| out.write_all(b"\n")) {
                        reader_gone(error); // stdout closed (EPIPE): nothing more can be shown
                        break;
                    }
                }
                let _ = out.flush();
                let _ = finished.send(());
            })
            .expect("spawning the output thread");
        Sink { queue: Some(queue), dropped: Arc::new(AtomicU64::new(0)), closed, is_closed, done, writer: Some(writer), json }
    }

    /// Completes once the reader has gone away (`tracer --events | head -1`).
    pub fn reader_gone(&self) -> impl std::future::Future<Output = ()> + use<> {
        let closed = self.closed.clone();
        async move { closed.notified().await }
    }

    /// Whether the reader has gone away: nothing more is shown, and nothing needs saying.
    pub fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Relaxed)
    }

    /// Queues a line; never blocks. A full queue drops the line and counts it.
    pub fn line(&mut self, line: impl Into<Bytes>) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(line.into()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues a line that matters more than the others (the closing line), waiting up to
    /// `patience` for room before dropping it.
    pub fn line_patiently(&mut self, line: impl Into<Bytes>, patience: Duration) {
        let Some(queue) = &self.queue else { return };
        let mut line = line.into();
        let deadline = std::time::Instant::now() + patience;
        loop {
            match queue.try_send(line) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    line = back;
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Lines dropped because the reader did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lets the writer drain what is queued, waiting at most `patience`: a reader that never
    /// reads again must not keep the tracer from exiting.
    pub fn finish(&mut self, patience: Duration) -> bool {
        self.queue.take();
        match self.done.recv_timeout(patience) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(writer) = self.writer.take() {
                    let _ = writer.join();
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer that blocks until released, like a pipe nobody reads.
    struct Stalled {
        gate: Arc<Mutex<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            let _open = self.gate.lock().unwrap();
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_stops_reading_costs_dropped_lines_not_a_blocked_tracer() {
        let gate = Arc::new(Mutex::new(()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let closed = gate.lock().unwrap();
        let mut sink = Sink::new(Stalled { gate: gate.clone(), written: written.clone() }, false);
        let started = std::time::Instant::now();
        for i in 0..(QUEUE_LINES * 3) {
            sink.line(format!("line {i}"));
        }
        assert!(started.elapsed() < Duration::from_secs(5), "queuing never blocks");
        let dropped = sink.dropped();
        // The queue holds QUEUE_LINES, the writer's buffer a few hundred more; the rest is dropped.
        assert!(dropped >= QUEUE_LINES as u64, "{dropped}");
        assert!(!sink.finish(Duration::from_millis(50)), "gives up waiting on a stalled reader");
        drop(closed);
        assert!(sink.finish(Duration::from_secs(5)), "drains once the reader is back");
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let shown = text.lines().count() as u64;
        assert_eq!(shown + dropped, (QUEUE_LINES * 3) as u64, "every line is either shown or counted");
    }

    /// A pipe whose reader is gone.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_reader_that_went_away_is_said_once_so_the_tracer_can_stop() {
        let mut sink = Sink::new(Closed, false);
        let gone = sink.reader_gone();
        sink.line("nobody reads this");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), gone).await }).expect("told");
        assert!(sink.is_closed());
    }

    #[test]
    fn lines_arrive_in_order_and_finish_waits_for_them() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let mut sink = Sink::new(Stalled { gate: Arc::new(Mutex::new(())), written: written.clone() }, true);
        for i in 0..100 {
            sink.line(i.to_string());
        }
        assert!(sink.finish(Duration::from_secs(5)));
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().map(|l| l.parse::<u32>().unwrap()).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
        assert_eq!(sink.dropped(), 0);
    }
}
