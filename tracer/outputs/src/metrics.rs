//! `--metrics-addr`: Prometheus text exposition of what the summaries say, for fleets, in
//! OpenMetrics or the classic text format as the scraper asks ([`exposition`]).
//!
//! Names follow node_exporter / OpenTelemetry habits: a `tcp_tracer_` prefix, lowercase label
//! values (`state="time_wait"`), `_total` counters. No 4-tuples in labels; the only address label
//! is `remote` on `tcp_tracer_peer_trouble`, limited to the ten most troubled peers of the last
//! interval, so the series count stays bounded whatever the traffic.
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, thread};

use anyhow::{Context, Result};
use bytes::Bytes;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use tracer_analysis::{
    decode::TcpState,
    find::{FindingKind, Picture},
    track::{CloseClass, Observation, Role, RstFrom},
};
use tracer_model::{health::KernelMisses, links::LinkWhat, sockets::RoundCost};

use crate::{
    exposition::{self, Format},
    summary::Health,
    timeline::Page,
};

type Labels = Vec<(String, String)>;

/// Buckets of `idle_before_death_seconds`: around the idle timeouts devices use (seconds to an hour).
const IDLE_BUCKETS_S: [f64; 8] = [1.0, 5.0, 30.0, 60.0, 240.0, 350.0, 900.0, 3600.0];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

pub struct Metrics {
    sockets: Family<Labels, Gauge>,
    transitions: Family<Labels, Counter>,
    closes: Family<Labels, Counter>,
    resets: Family<Labels, Counter>,
    reset_origins: Family<Labels, Counter>,
    resets_refused: Counter,
    drops: Family<Labels, Counter>,
    idle_before_death: Histogram,
    syn_retransmits: Family<Labels, Counter>,
    connect_failures: Family<Labels, Counter>,
    findings: Family<Labels, Gauge>,
    findings_total: Family<Labels, Counter>,
    peer_trouble: Family<Labels, Gauge>,
    health: Family<Labels, Counter>,
    kernel_misses: Family<Labels, Counter>,
    kernel_program_runs: Counter,
    kernel_program_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    link_changes: Family<Labels, Counter>,
    snapshot_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    snapshot_namespaces: Family<Labels, Gauge>,
    /// Health totals already added to the counters.
    reported: Health,
    /// State transitions since the last summary, [old][new], counted without locks.
    pending_transitions: [[u64; 13]; 13],
}

impl Metrics {
    /// Starts serving on `server` (bound early with [`listen`], so a busy port is an error
    /// before anything is attached).
    /// `/` serves `page`, the timeline.
    pub fn serve(server: tiny_http::Server, hooks: &[(String, &'static str)], page: Page) -> Metrics {
        let (metrics, registry) = Metrics::new(hooks);
        let registry = Arc::new(registry);
        thread::Builder::new()
            .name("tracer-metrics".into())
            .spawn(move || answer(server, registry, page))
            .expect("spawning the metrics thread");
        metrics
    }

    /// Every family, registered under the `tcp_tracer_` prefix.
    fn new(hooks: &[(String, &'static str)]) -> (Metrics, Registry) {
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::process_metrics::ProcessMetrics::default()));
        let registry = root.sub_registry_with_prefix("tcp_tracer");
        let metrics = Metrics {
            sockets: Family::default(),
            transitions: Family::default(),
            closes: Family::default(),
            resets: Family::default(),
            reset_origins: Family::default(),
            resets_refused: Counter::default(),
            drops: Family::default(),
            idle_before_death: Histogram::new(IDLE_BUCKETS_S),
            syn_retransmits: Family::default(),
            connect_failures: Family::default(),
            findings: Family::default(),
            findings_total: Family::default(),
            peer_trouble: Family::default(),
            health: Family::default(),
            kernel_misses: Family::default(),
            kernel_program_runs: Counter::default(),
            kernel_program_seconds: Counter::default(),
            link_changes: Family::default(),
            snapshot_seconds: Gauge::default(),
            snapshot_namespaces: Family::default(),
            reported: Health::default(),
            pending_transitions: [[0; 13]; 13],
        };
        registry.register(
            "sockets",
            "TCP sockets by state; counted=all: every socket (sock_diag snapshot), counted=tracked: connections the tracer saw change state",
            metrics.sockets.clone(),
        );
        registry.register("state_transitions", "TCP state transitions seen", metrics.transitions.clone());
        registry.register("connections_closed", "Ended connections by how they ended", metrics.closes.clone());
        registry.register("resets", "RST segments by direction and kernel reason", metrics.resets.clone());
        registry.register(
            "reset_origins",
            "RSTs that ended a connection, by who sent them judged by their TTL: peer, path (a device in the peer's name), unknown (nothing to compare)",
            metrics.reset_origins.clone(),
        );
        registry.register(
            "resets_refused",
            "RSTs our kernel refused (out of window, or answered with a challenge ACK)",
            metrics.resets_refused.clone(),
        );
        registry.register(
            "idle_before_death_seconds",
            "How long connections had been idle before they died silent or were reset (the socket's clocks, tp_btf)",
            metrics.idle_before_death.clone(),
        );
        registry.register("drops", "TCP packets this host's kernel dropped, by reason and direction", metrics.drops.clone());
        registry.register("syn_retransmits", "SYN (client) and SYN-ACK (server) retransmits", metrics.syn_retransmits.clone());
        registry.register("connect_failures", "Failed connects by error type and our role", metrics.connect_failures.clone());
        registry.register("findings", "Findings in the last summary, by kind", metrics.findings.clone());
        registry.register(
            "findings_reported",
            "Findings reported since start (one per peer and summary), by kind",
            metrics.findings_total.clone(),
        );
        registry.register(
            "peer_trouble",
            "Trouble score of the ten most troubled remote endpoints of the last interval",
            metrics.peer_trouble.clone(),
        );
        registry.register(
            "events",
            "The tracer's own event accounting (seen, lost, skipped, unreadable, evicted, decode_errors, output_dropped, recorder_overflowed, held_dropped, closes_unseen)",
            metrics.health.clone(),
        );
        registry.register(
            "kernel_misses",
            "The kernel programs' rare paths: structures they could not read, unexpected families",
            metrics.kernel_misses.clone(),
        );
        registry.register(
            "kernel_program_runs",
            "Runs of the tracer's kernel programs, counted while the kernel counts them (sysctl kernel.bpf_stats_enabled=1)",
            metrics.kernel_program_runs.clone(),
        );
        registry.register(
            "kernel_program_seconds",
            "Time the tracer's kernel programs ran, counted while the kernel counts it (sysctl kernel.bpf_stats_enabled=1); the process's own is process_cpu_seconds_total",
            metrics.kernel_program_seconds.clone(),
        );
        registry.register(
            "link_changes",
            "Link changes in the watched namespaces (added, removed, down, up, carrier_lost, carrier_up); which device, in the events and summaries",
            metrics.link_changes.clone(),
        );
        for what in LinkWhat::ALL {
            let _zero = metrics.link_changes.get_or_create(&labels(&[("what", what.name())]));
        }
        registry.register("snapshot_seconds", "How long the last round of sock_diag dumps took", metrics.snapshot_seconds.clone());
        registry.register(
            "snapshot_namespaces",
            "Namespaces in the last round of sock_diag dumps: dumped, idle (nothing to ask), carried (over budget, last result reused)",
            metrics.snapshot_namespaces.clone(),
        );
        let hook_modes = Family::<Labels, Gauge>::default();
        registry.register("hook_mode", "1 for the mode of each kernel hook", hook_modes.clone());
        for (hook, mode) in hooks {
            hook_modes.get_or_create(&labels(&[("hook", hook), ("mode", mode)])).set(1);
        }
        let build_info = Family::<Labels, Gauge>::default();
        registry.register("build_info", "1, labelled with the tracer's version", build_info.clone());
        build_info.get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))])).set(1);
        metrics.start_at_zero();
        (metrics, root)
    }

    /// Every series whose labels are known in advance exists from the start at 0, so a rate()
    /// or an alert sees "none yet" rather than no data.
    fn start_at_zero(&self) {
        for class in CloseClass::ALL {
            self.closes.get_or_create(&labels(&[("class", class.name())])).inc_by(0);
        }
        for role in ["client", "server"] {
            self.syn_retransmits.get_or_create(&labels(&[("role", role)])).inc_by(0);
            for error_type in ["refused", "reset", "timed_out", "unreachable", "no_local_port"] {
                self.connect_failures.get_or_create(&labels(&[("error_type", error_type), ("role", role)])).inc_by(0);
            }
        }
        self.resets.get_or_create(&labels(&[("direction", "received"), ("reason", "unknown")])).inc_by(0);
        for origin in ["peer", "path", "unknown"] {
            self.reset_origins.get_or_create(&labels(&[("origin", origin)])).inc_by(0);
        }
        for (what, _) in Health::default().counters() {
            self.health.get_or_create(&labels(&[("what", what)])).inc_by(0);
        }
        for (what, _) in KernelMisses::default().iter() {
            self.kernel_misses.get_or_create(&labels(&[("what", what.name())])).inc_by(0);
        }
        for what in LinkWhat::ALL {
            self.link_changes.get_or_create(&labels(&[("what", what.name())])).inc_by(0);
        }
    }

    pub fn link_change(&self, what: LinkWhat) {
        self.link_changes.get_or_create(&labels(&[("what", what.name())])).inc();
    }

    /// One state change the tracer was sent. The kernel program folds a server socket's birth
    /// (LISTEN → SYN_RECV) into the socket's next change, so that change counts it too. (An
    /// orphan's folded FIN_WAIT2 is counted by the caller, which the tracker tells.)
    pub fn state_change(&mut self, old: TcpState, new: TcpState) {
        if old == TcpState::SynRecv {
            self.pending_transitions[TcpState::Listen as usize][TcpState::SynRecv as usize] += 1;
        }
        self.pending_transitions[old as usize][new as usize] += 1;
    }

    pub fn observe(&self, observation: &Observation, reason_name: impl Fn(u32) -> Option<String>) {
        match observation {
            Observation::Ended(ended) => {
                self.closes.get_or_create(&labels(&[("class", ended.class.name())])).inc();
                // A silence this host's drops explain is still a death after that idle gap.
                if let Some(idle_ns) = ended.connection.idle_before_ns.filter(|_| ended.class.died()) {
                    self.idle_before_death.observe(idle_ns as f64 / 1e9);
                }
                if let Some(origin) = ended.rst_from {
                    let origin = match origin {
                        RstFrom::Peer { .. } => "peer",
                        RstFrom::Path { .. } => "path",
                        RstFrom::NoReference { .. } => "unknown",
                    };
                    self.reset_origins.get_or_create(&labels(&[("origin", origin)])).inc();
                }
                let error_type = match ended.class {
                    CloseClass::Refused => Some("refused"),
                    CloseClass::ConnectTimeout => Some("timed_out"),
                    CloseClass::NoLocalPort => Some("no_local_port"),
                    CloseClass::Unreachable if ended.connection.established_ns.is_none() => Some("unreachable"),
                    CloseClass::ResetByPeer if ended.connection.established_ns.is_none() => Some("reset"),
                    _ => None,
                };
                if let Some(error_type) = error_type {
                    let role = match ended.connection.role {
                        Role::Client => "client",
                        Role::Server | Role::Listener => "server",
                    };
                    self.connect_failures.get_or_create(&labels(&[("error_type", error_type), ("role", role)])).inc();
                }
            }
            Observation::ResetSent { reason, .. } => {
                let reason = reason.and_then(&reason_name).map_or("unknown".to_string(), |name| name.to_lowercase());
                self.resets.get_or_create(&labels(&[("direction", "sent"), ("reason", &reason)])).inc();
            }
            Observation::ResetReceived { .. } => {
                self.resets.get_or_create(&labels(&[("direction", "received"), ("reason", "unknown")])).inc();
            }
            Observation::SynRetransmit { .. } => {
                self.syn_retransmits.get_or_create(&labels(&[("role", "client")])).inc();
            }
            Observation::SynAckRetransmit { .. } => {
                self.syn_retransmits.get_or_create(&labels(&[("role", "server")])).inc();
            }
            Observation::ResetRefused { .. } => {
                self.resets_refused.inc();
            }
            Observation::Dropped { reason, incoming, socketless, .. } => {
                let direction = match (socketless, incoming) {
                    (true, _) => "no_socket",
                    (false, true) => "in",
                    (false, false) => "out",
                };
                self.drops.get_or_create(&labels(&[("reason", &reason.to_lowercase()), ("direction", direction)])).inc();
            }
            Observation::PortReuse { .. } | Observation::IdleSurvived { .. } => {}
        }
    }

    /// Publishes a summary: state gauges, findings, the peer top list and the tracer's health.
    pub fn publish(&mut self, picture: &Picture, health: Health, snapshot: Option<RoundCost>) {
        if let Some(round) = snapshot {
            self.snapshot_seconds.set(round.micros as f64 / 1e6);
            for (what, count) in [("dumped", round.dumped), ("idle", round.idle), ("carried", round.carried)] {
                self.snapshot_namespaces.get_or_create(&labels(&[("what", what)])).set(count as i64);
            }
        }
        for state in TcpState::ALL {
            let count = picture.states.get(state.name()).copied().unwrap_or(0);
            // Every socket where the snapshot counts that state, else only the tracked ones: a
            // series must not claim 0 listeners because no listener changed state.
            let (counted, stale) = if picture.states_exact.contains(&state.name()) { ("all", "tracked") } else { ("tracked", "all") };
            let name = state.name().to_lowercase();
            self.sockets.remove(&labels(&[("state", &name), ("counted", stale)]));
            self.sockets.get_or_create(&labels(&[("state", &name), ("counted", counted)])).set(count as i64);
        }
        for (old, row) in self.pending_transitions.iter_mut().enumerate() {
            for (new, count) in row.iter_mut().enumerate().filter(|(_, count)| **count > 0) {
                let (Some(from), Some(to)) = (TcpState::from_kernel(old as u8), TcpState::from_kernel(new as u8)) else { continue };
                let key = labels(&[("from", &from.name().to_lowercase()), ("to", &to.name().to_lowercase())]);
                self.transitions.get_or_create(&key).inc_by(std::mem::take(count));
            }
        }
        let mut current: BTreeMap<&str, i64> = FindingKind::ALL.iter().map(|kind| (kind.name(), 0)).collect();
        for finding in &picture.findings {
            *current.entry(finding.kind.name()).or_default() += 1;
        }
        for (kind, count) in current {
            self.findings.get_or_create(&labels(&[("kind", kind)])).set(count);
            self.findings_total.get_or_create(&labels(&[("kind", kind)])).inc_by(count as u64);
        }
        self.peer_trouble.clear();
        for peer in &picture.peers {
            self.peer_trouble.get_or_create(&labels(&[("remote", &peer.remote)])).set(peer.trouble() as i64);
        }
        if let Some(kernel) = health.cost.kernel {
            self.kernel_program_runs.inc_by(kernel.runs);
            self.kernel_program_seconds.inc_by(kernel.run_ns as f64 / 1e9);
        }
        let previous = std::mem::replace(&mut self.reported, health);
        for ((what, now), (_, before)) in health.counters().into_iter().zip(previous.counters()) {
            self.health.get_or_create(&labels(&[("what", what)])).inc_by(now.saturating_sub(before));
        }
        for ((what, now), (_, before)) in health.kernel_misses.iter().zip(previous.kernel_misses.iter()) {
            self.kernel_misses.get_or_create(&labels(&[("what", what.name())])).inc_by(now.saturating_sub(before));
        }
    }
}

/// Binds the metrics address.
pub fn listen(addr: SocketAddr) -> Result<tiny_http::Server> {
    tiny_http::Server::http(addr)
        .map_err(|error| anyhow::anyhow!("{error}"))
        .with_context(|| format!("cannot listen on {addr} for --metrics-addr"))
}

fn answer(server: tiny_http::Server, registry: Arc<Registry>, page: Page) {
    for request in server.incoming_requests() {
        let response = if request.url() == "/" || request.url().starts_with("/?") {
            let html = page.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            let html = if html.is_empty() {
                Bytes::from_static(b"<!DOCTYPE html><p>The first summary is not out yet; reload in a moment.</p>")
            } else {
                html
            };
            let content_type = tiny_http::Header::from_bytes("Content-Type", "text/html; charset=utf-8").expect("a valid header");
            tiny_http::Response::from_data(html.to_vec()).with_header(content_type)
        } else if request.url() == "/metrics" {
            let accept = request.headers().iter().find(|header| header.field.equiv("Accept")).map(|header| header.value.as_str());
            let format = exposition::negotiate(accept);
            let mut body = String::new();
            match encode(&mut body, &registry) {
                Ok(()) => {
                    let body = if format == Format::Text { exposition::to_text(&body) } else { body };
                    let content_type = tiny_http::Header::from_bytes("Content-Type", format.content_type()).expect("a valid header");
                    tiny_http::Response::from_string(body).with_header(content_type)
                }
                Err(_) => tiny_http::Response::from_string("encoding failed").with_status_code(500),
            }
        } else {
            tiny_http::Response::from_string("see / (the timeline) and /metrics\n").with_status_code(404)
        };
        let _ = request.respond(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the series every family of the tracer exports (with one sample each).
    fn exported_series() -> std::collections::BTreeSet<String> {
        let (metrics, registry) = Metrics::new(&[("inet_sock_set_state".into(), "tp_btf")]);
        let one = labels(&[("x", "y")]);
        for gauges in [&metrics.sockets, &metrics.findings, &metrics.peer_trouble, &metrics.snapshot_namespaces] {
            gauges.get_or_create(&one).set(1);
        }
        let counters = [
            &metrics.transitions,
            &metrics.closes,
            &metrics.resets,
            &metrics.syn_retransmits,
            &metrics.connect_failures,
            &metrics.findings_total,
            &metrics.health,
            &metrics.kernel_misses,
            &metrics.link_changes,
        ];
        for counter in counters {
            counter.get_or_create(&one).inc();
        }
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text.lines().filter(|line| !line.starts_with('#')).filter_map(|line| line.split(['{', ' ']).next()).map(str::to_string).collect()
    }

    #[test]
    fn a_server_socket_leaving_syn_recv_counts_the_birth_the_kernel_folded_into_it() {
        let (mut metrics, _) = Metrics::new(&[]);
        metrics.state_change(TcpState::SynRecv, TcpState::Established);
        metrics.state_change(TcpState::Established, TcpState::FinWait1);
        let count = |from: TcpState, to: TcpState| metrics.pending_transitions[from as usize][to as usize];
        assert_eq!(count(TcpState::Listen, TcpState::SynRecv), 1);
        assert_eq!(count(TcpState::SynRecv, TcpState::Established), 1);
        assert_eq!(count(TcpState::Established, TcpState::FinWait1), 1);
    }

    #[test]
    fn deaths_after_an_idle_gap_count_whoever_caused_them_and_failed_connects_by_type() {
        use tracer_analysis::track::{
            fixtures::{connection, Script},
            Ended, Observation, Role,
        };
        let (metrics, registry) = Metrics::new(&[]);
        let script = Script::new(1, "10.0.0.1:0", "10.0.0.2:80");
        let ended = |class: CloseClass, idle_s: u64| {
            let mut connection = connection(&script.state(TcpState::SynSent, TcpState::Close, 1), Role::Client);
            connection.idle_before_ns = Some(idle_s * 1_000_000_000);
            Observation::Ended(Ended {
                connection: Box::new(connection),
                class,
                detail: "".into(),
                time_wait: false,
                fin_wait2_expired: false,
                keepalive: false,
                rst_from: None,
                dropped_in: None,
            })
        };
        for (class, idle_s) in [(CloseClass::PeerSilent, 12), (CloseClass::DroppedHere, 14), (CloseClass::NoLocalPort, 0)] {
            metrics.observe(&ended(class, idle_s), |_| None);
        }
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("tcp_tracer_idle_before_death_seconds_count 2"), "{text}");
        assert!(text.contains("tcp_tracer_idle_before_death_seconds_sum 26.0"), "{text}");
        assert!(text.contains("tcp_tracer_connect_failures_total{error_type=\"no_local_port\",role=\"client\"} 1"), "{text}");
    }

    #[test]
    fn the_grafana_dashboard_queries_only_series_the_tracer_exports() {
        let exported = exported_series();
        let dashboard: serde_json::Value = serde_json::from_str(include_str!("../../../deploy/grafana-dashboard.json")).unwrap();
        let mut queries: Vec<String> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|target| target["expr"].as_str().map(str::to_string))
            .collect();
        queries.extend(
            dashboard["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|variable| variable["definition"].as_str().map(str::to_string)),
        );
        let mut used = std::collections::BTreeSet::new();
        for query in &queries {
            for (start, _) in query.match_indices("tcp_tracer_") {
                let name: String = query[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                used.insert(name);
            }
        }
        let unknown: Vec<&String> = used.iter().filter(|name| !exported.contains(*name)).collect();
        assert!(unknown.is_empty(), "the dashboard queries series the tracer does not export: {unknown:?} (exported: {exported:?})");
        for wanted in ["tcp_tracer_sockets", "tcp_tracer_connections_closed_total", "tcp_tracer_resets_total", "tcp_tracer_findings"] {
            assert!(used.contains(wanted), "the dashboard shows {wanted}");
        }
    }
}
