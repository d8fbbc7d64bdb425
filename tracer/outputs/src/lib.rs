//! Everything the tracer prints: per-event lines, summaries, and the closing line, each as a
//! human table or JSON lines.
//!
//! Lines go through a bounded queue to a writer thread, so a reader that stops reading (a pipe
//! into a stalled `less`, a wedged log shipper) never blocks the ring-buffer consumer: when the
//! queue is full the line is dropped and counted, and the count is printed. Lines travel as
//! [`Bytes`]: a JSON line for stdout and for `--json-out` is made once and shared, not copied.
//! Lines that are due together (a drain's connection lines) travel as one chunk, so the writer
//! wakes once for them, not once a line.
mod columns;
pub mod connections;
pub mod events;
pub mod exposition;
pub mod files;
mod line_order;
pub mod metrics;
mod process_metrics;
pub mod recorder;
pub mod run_findings;
pub mod summary;
pub mod timeline;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender},
        Arc,
    },
    thread,
    time::Duration,
};

use bytes::Bytes;

/// Bytes of lines waiting for the writer before new ones are dropped: room for a burst of
/// connection lines (the verdicts that wait for a lookup of lingering sockets come out together,
/// a second's worth at once: about 40 000 lines at the rate one reader thread makes them, while
/// the writer drains), in bounded memory.
const QUEUE_BYTES: usize = 8 << 20;

/// Lines that travel to the writer as one chunk, at most.
pub const CHUNK_LINES: usize = 1024;

pub struct Sink {
    /// Chunks of lines, joined by newlines.
    queue: Option<SyncSender<Bytes>>,
    /// Bytes queued and not yet written: the bound is on bytes, whatever the chunks.
    waiting: Arc<AtomicUsize>,
    /// Bytes the writer got out so far: patience lasts while this moves.
    progress: Arc<AtomicU64>,
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
        let (queue, lines) = sync_channel::<Bytes>(QUEUE_BYTES / 64);
        let waiting = Arc::new(AtomicUsize::new(0));
        let written = waiting.clone();
        let progress = Arc::new(AtomicU64::new(0));
        let out = Counted { inner: out, written: progress.clone() };
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
                    let chunk = match lines.try_recv() {
                        Ok(chunk) => chunk,
                        Err(_) => {
                            if let Err(error) = out.flush() {
                                reader_gone(error);
                                break;
                            }
                            match lines.recv() {
                                Ok(chunk) => chunk,
                                Err(_) => break,
                            }
                        }
                    };
                    written.fetch_sub(chunk.len(), Ordering::Relaxed);
                    if let Err(error) = out.write_all(&chunk).and_then(|()| out.write_all(b"\n")) {
                        reader_gone(error); // stdout closed (EPIPE): nothing more can be shown
                        break;
                    }
                }
                let _ = out.flush();
                let _ = finished.send(());
            })
            .expect("spawning the output thread");
        Sink {
            queue: Some(queue),
            waiting,
            progress,
            dropped: Arc::new(AtomicU64::new(0)),
            closed,
            is_closed,
            done,
            writer: Some(writer),
            json,
        }
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
        self.send(line.into(), 1, None);
    }

    /// Queues a line that matters more than the others (the closing line), waiting for room
    /// while the writer gets lines out, and dropping it once nothing moved for `patience`.
    pub fn line_patiently(&mut self, line: impl Into<Bytes>, patience: Duration) {
        self.send(line.into(), 1, Some(patience));
    }

    /// Queues `lines` lines already joined by newlines, as one chunk; never blocks. A full queue
    /// drops them and counts them.
    pub fn chunk(&mut self, chunk: Bytes, lines: usize) {
        self.send(chunk, lines, None);
    }

    /// Queues lines that are due together, in chunks of [`CHUNK_LINES`]; never blocks. A full
    /// queue drops them and counts them.
    pub fn lines(&mut self, lines: &[Bytes]) {
        self.send_chunks(lines, None);
    }

    /// As [`Sink::lines`], waiting for room as [`Sink::line_patiently`] does (the lines still
    /// waiting at exit); once one chunk gives up, the rest are dropped at once.
    pub fn lines_patiently(&mut self, lines: &[Bytes], patience: Duration) {
        self.send_chunks(lines, Some(patience));
    }

    fn send_chunks(&mut self, lines: &[Bytes], mut patience: Option<Duration>) {
        for chunk in lines.chunks(CHUNK_LINES) {
            let joined = match chunk {
                [line] => line.clone(),
                _ => {
                    let mut joined = Vec::with_capacity(chunk.iter().map(|line| line.len() + 1).sum());
                    for (index, line) in chunk.iter().enumerate() {
                        if index > 0 {
                            joined.push(b'\n');
                        }
                        joined.extend_from_slice(line);
                    }
                    joined.into()
                }
            };
            if !self.send(joined, chunk.len(), patience) {
                patience = None;
            }
        }
    }

    /// Queues `count` lines joined by newlines (the writer ends the chunk with one). Without
    /// patience, or once the writer got nothing out for that long, a queue without room drops
    /// them and counts them. False when they were dropped.
    fn send(&mut self, chunk: Bytes, count: usize, patience: Option<Duration>) -> bool {
        let Some(queue) = &self.queue else { return false };
        let bytes = chunk.len();
        let mut stalled = Stall::new(&self.progress);
        loop {
            let queued = self.waiting.fetch_add(bytes, Ordering::Relaxed);
            if queued + bytes <= QUEUE_BYTES.max(bytes) && queue.try_send(chunk.clone()).is_ok() {
                return true;
            }
            self.waiting.fetch_sub(bytes, Ordering::Relaxed);
            if patience.is_none_or(|patience| stalled.for_at_least(&self.progress, patience)) {
                self.dropped.fetch_add(count as u64, Ordering::Relaxed);
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lines dropped because the reader did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lets the writer drain what is queued, for as long as it gets lines out: a reader that
    /// never reads again (nothing written for `patience`) must not keep the tracer from exiting,
    /// but a slow one gets every line, and never half of one.
    pub fn finish(&mut self, patience: Duration) -> bool {
        self.queue.take();
        let mut stalled = Stall::new(&self.progress);
        loop {
            match self.done.recv_timeout(Duration::from_millis(50)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    if let Some(writer) = self.writer.take() {
                        let _ = writer.join();
                    }
                    return true;
                }
                Err(RecvTimeoutError::Timeout) if stalled.for_at_least(&self.progress, patience) => return false,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// Since when the writer's progress has not moved.
struct Stall {
    seen: u64,
    since: std::time::Instant,
}

impl Stall {
    fn new(progress: &AtomicU64) -> Stall {
        Stall { seen: progress.load(Ordering::Relaxed), since: std::time::Instant::now() }
    }

    /// Whether nothing was written for `patience` (any progress starts the wait again).
    fn for_at_least(&mut self, progress: &AtomicU64, patience: Duration) -> bool {
        let now = progress.load(Ordering::Relaxed);
        if now != self.seen {
            *self = Stall { seen: now, since: std::time::Instant::now() };
        }
        self.since.elapsed() >= patience
    }
}

/// The output, counting the bytes it took.
struct Counted<W> {
    inner: W,
    written: Arc<AtomicU64>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.written.fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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
        // Lines of 1 KiB: the queue holds `fits` of them.
        let fits = QUEUE_BYTES / 1024;
        let line = |name: String| Bytes::from(format!("{name:<1024}"));
        for i in 0..fits {
            sink.line(line(format!("line {i}")));
        }
        // Chunks count as their lines, whether they fit or are dropped.
        for chunk in 0..(fits * 2 / 64) {
            sink.lines(&(0..64).map(|i| line(format!("chunk {chunk} line {i}"))).collect::<Vec<_>>());
        }
        assert!(started.elapsed() < Duration::from_secs(5), "queuing never blocks");
        let dropped = sink.dropped();
        // The queue holds `fits`, the writer's buffer a few more; the rest is dropped.
        assert!(dropped >= fits as u64, "{dropped}");
        assert!(!sink.finish(Duration::from_millis(50)), "gives up waiting on a stalled reader");
        drop(closed);
        assert!(sink.finish(Duration::from_secs(5)), "drains once the reader is back");
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let shown = text.lines().count() as u64;
        assert_eq!(shown + dropped, (fits * 3) as u64, "every line is either shown or counted");
    }

    /// A reader that keeps reading, slowly: 4 KiB every 2 ms.
    struct Slow(Arc<Mutex<Vec<u8>>>);

    impl Write for Slow {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            thread::sleep(Duration::from_millis(2));
            let taken = bytes.len().min(4096);
            self.0.lock().unwrap().extend_from_slice(&bytes[..taken]);
            Ok(taken)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_reader_gets_every_line_whole_however_long_it_takes_past_the_patience() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let mut sink = Sink::new(Slow(written.clone()), false);
        // 2 MiB: about a second of this reader, ten times the patience.
        let lines: Vec<Bytes> = (0..8192).map(|i| Bytes::from(format!("{i:0>255}"))).collect();
        let patience = Duration::from_millis(100);
        sink.lines_patiently(&lines, patience);
        assert!(sink.finish(patience), "the writer kept getting lines out");
        assert_eq!(sink.dropped(), 0);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let numbers: Vec<usize> = text.lines().map(|line| line.parse().unwrap()).collect();
        assert_eq!(numbers, (0..8192).collect::<Vec<_>>(), "every line, whole and in order");
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
        for i in 0..50 {
            sink.line(i.to_string());
        }
        let chunk: Vec<Bytes> = (50..100).map(|i| Bytes::from(i.to_string())).collect();
        sink.lines(&chunk[..1]);
        sink.lines(&chunk[1..]);
        assert!(sink.finish(Duration::from_secs(5)));
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().map(|l| l.parse::<u32>().unwrap()).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
        assert_eq!(sink.dropped(), 0);
    }
}
