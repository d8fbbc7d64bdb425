//! `--events`: every event as a line, as it comes, and a closing line with what was seen and lost.
use bytes::Bytes;

use super::EXIT_PATIENCE;
use crate::{
    decode::{Decoder, Event},
    filter::{Admission, Filter},
    kernel::{
        clock::Clock,
        links::{LinkChange, Links},
    },
    output::{events, summary::Health, Sink},
};

/// `--events`: every event, as it comes.
pub struct EventPrinter {
    pub sink: Sink,
    pub json_file: Option<Sink>,
    pub clock: Clock,
    pub filter: Filter,
    /// A socket's first event waits there until its ports say whether the filter takes it.
    pub admission: Admission,
    /// Follows link changes in the namespaces events come from.
    pub links: Links,
    pub last_netns: u32,
}

impl EventPrinter {
    pub fn event(&mut self, event: &Event, decoder: &Decoder) {
        let mut admitted = Vec::new();
        self.admission.admit(&self.filter, event, |event| admitted.push(*event));
        self.admission.expire(event.timestamp_ns);
        for event in admitted {
            self.print(&event, decoder);
        }
    }

    fn print(&mut self, event: &Event, decoder: &Decoder) {
        if !self.filter.matches(event.socket.netns, event.local, event.remote, event.process.as_ref()) {
            return;
        }
        if event.socket.netns != self.last_netns {
            self.last_netns = event.socket.netns;
            self.links.seen(event.socket.netns);
        }
        let json = (self.sink.json || self.json_file.is_some()).then(|| Bytes::from(events::json(event, &self.clock, decoder)));
        if let (Some(file), Some(json)) = (&mut self.json_file, &json) {
            file.line(json.clone());
        }
        let line = match json {
            Some(json) if self.sink.json => json,
            _ => events::human(event, &self.clock, decoder).into(),
        };
        self.sink.line(line);
    }

    pub fn link(&mut self, change: &LinkChange) {
        if self.filter.netns.is_some_and(|netns| netns != change.netns) {
            return;
        }
        let json = (self.sink.json || self.json_file.is_some()).then(|| Bytes::from(events::link_json(change, &self.clock)));
        if let (Some(file), Some(json)) = (&mut self.json_file, &json) {
            file.line(json.clone());
        }
        let line = match json {
            Some(json) if self.sink.json => json,
            _ => events::link_human(change, &self.clock).into(),
        };
        self.sink.line(line);
    }

    pub fn finish(&mut self, health: Health) {
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
