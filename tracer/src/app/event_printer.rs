//! `--events`: every event as a line, as it comes, and a closing line with what was seen and lost.
use std::ops::Range;

use bytes::Bytes;

use super::EXIT_PATIENCE;
use crate::{
    decode::{Decoder, Event},
    filter::{Admission, Filter},
    kernel::{
        clock::Clock,
        links::{LinkChange, Links},
    },
    output::{events, summary::Health, Sink, CHUNK_LINES},
};

/// `--events`: every event, as it comes.
pub struct EventPrinter {
    pub sink: Sink,
    pub json_file: Option<Sink>,
    /// The lines of the ring buffer's drain so far, for stdout and for the JSON file: they go to
    /// the writer as one chunk each when it ends (see [`EventPrinter::flush`]).
    pub pending: Pending,
    pub clock: Clock,
    pub filter: Filter,
    /// A socket's first event waits there until its ports say whether the filter takes it.
    pub admission: Admission,
    /// Follows link changes in the namespaces events come from.
    pub links: Links,
    pub last_netns: u32,
    /// The events the filter let through for the event at hand (kept for its allocation).
    pub admitted: Vec<Event>,
}

impl EventPrinter {
    pub fn event(&mut self, event: &Event, decoder: &Decoder) {
        let mut admitted = std::mem::take(&mut self.admitted);
        self.admission.admit(&self.filter, event, |event| admitted.push(*event));
        self.admission.expire(event.timestamp_ns);
        for event in admitted.drain(..) {
            self.print(&event, decoder);
        }
        self.admitted = admitted;
    }

    fn print(&mut self, event: &Event, decoder: &Decoder) {
        if !self.filter.matches(event.socket.netns, event.local, event.remote, event.process.as_ref()) {
            return;
        }
        if event.socket.netns != self.last_netns {
            self.last_netns = event.socket.netns;
            self.links.seen(event.socket.netns);
        }
        let (clock, Pending { shown, json }) = (&self.clock, &mut self.pending);
        // JSON for both writers is made once: stdout's is a copy of the file's.
        let for_file = self.json_file.is_some().then(|| json.add(|line| events::write_json(line, event, clock, decoder)));
        match for_file {
            Some(written) if self.sink.json => shown.add(|line| line.extend_from_slice(&json.text[written])),
            _ if self.sink.json => shown.add(|line| events::write_json(line, event, clock, decoder)),
            _ => shown.add_text(|line| events::write_human(line, event, clock, decoder)),
        };
        // A drain lasts as long as records keep coming: a chunk must not grow with it, or it
        // would pass the output queue's bound whole.
        if self.pending.shown.count >= CHUNK_LINES || self.pending.json.count >= CHUNK_LINES {
            self.flush();
        }
    }

    /// A link change goes out at once, after the events before it.
    pub fn link(&mut self, change: &LinkChange) {
        if self.filter.netns.is_some_and(|netns| netns != change.netns) {
            return;
        }
        let json = (self.sink.json || self.json_file.is_some()).then(|| events::link_json(change, &self.clock));
        if let Some(json) = json.as_ref().filter(|_| self.json_file.is_some()) {
            self.pending.json.add(|line| line.extend_from_slice(json.as_bytes()));
        }
        let shown = match json {
            Some(json) if self.sink.json => json,
            _ => events::link_human(change, &self.clock),
        };
        self.pending.shown.add(|line| line.extend_from_slice(shown.as_bytes()));
        self.flush();
    }

    /// Hands the lines gathered so far to the writers, one chunk each: a drain of the ring buffer
    /// holds hundreds of events on a busy host, and a line each was a wake-up of the writer each.
    pub fn flush(&mut self) {
        self.pending.shown.send(&mut self.sink);
        if let Some(file) = &mut self.json_file {
            self.pending.json.send(file);
        }
    }

    pub fn finish(&mut self, health: Health) {
        self.flush();
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

/// Lines waiting for the end of a drain, joined by newlines, for each writer.
#[derive(Default)]
pub struct Pending {
    shown: Lines,
    json: Lines,
}

#[derive(Default)]
struct Lines {
    text: Vec<u8>,
    count: usize,
    /// A human line is written here first (the column helpers write a `String`).
    scratch: String,
}

impl Lines {
    /// Appends a line; returns where it lies in `text`.
    fn add(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        if self.count > 0 {
            self.text.push(b'\n');
        }
        let start = self.text.len();
        write(&mut self.text);
        self.count += 1;
        start..self.text.len()
    }

    fn add_text(&mut self, write: impl FnOnce(&mut String)) -> Range<usize> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        write(&mut scratch);
        let written = self.add(|text| text.extend_from_slice(scratch.as_bytes()));
        self.scratch = scratch;
        written
    }

    fn send(&mut self, sink: &mut Sink) {
        if self.count > 0 {
            sink.chunk(Bytes::from(std::mem::take(&mut self.text)), std::mem::take(&mut self.count));
        }
    }
}
