//! A real Prometheus server scrapes a traced scenario: the series and values it stores are the
//! ones the scenario produced.
mod support;

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("tracer-prometheus-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt: prometheus) runs");
        Prometheus { child, port, dir }
    }

    /// The value of an instant query's single series: `None` while Prometheus is not up or the
    /// series does not exist yet, an error when Prometheus refuses the query (a bad expression).
    fn query(&self, promql: &str) -> Result<Option<f64>, String> {
        let encoded: String =
            promql
                .bytes()
                .map(|byte| {
                    if byte.is_ascii_alphanumeric() || b"_-.".contains(&byte) {
                        (byte as char).to_string()
                    } else {
                        format!("%{byte:02X}")
                    }
                })
                .collect();
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return Ok(None) };
        let mut response = String::new();
        if write!(stream, "GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err()
            || stream.read_to_string(&mut response).is_err()
        {
            return Ok(None); // still starting
        }
        let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP response: {response:?}"))?;
        let status = head.lines().next().unwrap_or_default();
        let body: Value = serde_json::from_str(body).map_err(|error| format!("{status}: not JSON ({error}): {body}"))?;
        if !status.contains(" 200 ") || body["status"] != "success" {
            return Err(format!("{status}: {}", body["error"]));
        }
        match body["data"]["result"][0]["value"][1].as_str() {
            None => Ok(None),
            Some(value) => value.parse().map(Some).map_err(|_| format!("not a number: {value}")),
        }
    }

    fn wait_for(&self, promql: &str, accept: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let value = self.query(promql).unwrap_or_else(|error| panic!("Prometheus refused {promql}: {error}"));
            if let Some(value) = value.filter(|value| accept(*value)) {
                return value;
            }
            assert!(Instant::now() < deadline, "Prometheus never had {promql} as expected (last: {value:?})");
            thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_the_numbers_of_a_traced_scenario() {
    require_root();
    let link = Link::new();
    let metrics_port = free_port();
    let tracer = Tracer::start(&["--interval", "1", "--netns", &link.client.path(), "--metrics-addr", &metrics_port.to_string()]);
    let prometheus = Prometheus::start(metrics_port);

    for _ in 0..3 {
        let refused = link.connect(SocketAddr::new(link.server_ip, 9));
        assert!(refused.is_err());
    }
    let listener = link.listen(link.server_ip);
    for _ in 0..2 {
        let client = link.connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(client);
        drop(accepted);
    }

    prometheus.wait_for(r#"tcp_tracer_connect_failures_total{error_type="refused",role="client"}"#, |v| v == 3.0);
    prometheus.wait_for(r#"tcp_tracer_resets_total{direction="received"}"#, |v| v == 3.0);
    prometheus.wait_for(r#"tcp_tracer_connections_closed_total{class="graceful"}"#, |v| v == 2.0);
    prometheus.wait_for(r#"tcp_tracer_state_transitions_total{from="syn_sent",to="established"}"#, |v| v == 2.0);
    // The mode the tracer announced (tp_btf where the kernel allows it) is the one exported.
    let announced = tracer.announced();
    let mode = announced.mode("inet_sock_set_state").expect("a hook mode").to_string();
    assert!(["tp_btf", "tracepoint"].contains(&mode.as_str()), "{announced:?}");
    prometheus.wait_for(&format!(r#"tcp_tracer_hook_mode{{hook="inet_sock_set_state",mode="{mode}"}}"#), |v| v == 1.0);
    prometheus.wait_for(r#"tcp_tracer_events_total{what="lost"}"#, |v| v == 0.0);
    prometheus.wait_for(r#"tcp_tracer_events_total{what="seen"}"#, |v| v > 0.0);
    // What the tracer costs: its process always; its kernel programs counted where the kernel
    // counts them (a series from the start either way, flat while kernel.bpf_stats_enabled is 0).
    // (as the dashboard's cost panel asks for it: only the instances that are tracers)
    prometheus.wait_for("rate(process_cpu_seconds_total[10s]) * on(instance, job) tcp_tracer_build_info", |v| v > 0.0);
    prometheus.wait_for("tcp_tracer_kernel_program_seconds_total", |v| v >= 0.0);
    // Only the client namespace is watched (--netns): the server's resets are not counted.
    assert_eq!(prometheus.query(r#"tcp_tracer_resets_total{direction="sent"}"#), Ok(None));
    let addresses = Command::new("ss").args(["-ltnH", &format!("sport = :{metrics_port}")]).output().unwrap();
    let listening = String::from_utf8_lossy(&addresses.stdout);
    assert!(listening.contains(&format!("127.0.0.1:{metrics_port}")), "loopback only: {listening}");
    tracer.stop();
}

/// `GET /metrics` with an optional `Accept` header: (Content-Type, body).
fn scrape(port: u16, accept: Option<&str>) -> (String, String) {
    get(port, "/metrics", accept)
}

fn get(port: u16, path: &str, accept: Option<&str>) -> (String, String) {
    let response = http_get(port, path, accept).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let content_type = head.lines().find_map(|line| line.strip_prefix("Content-Type: ")).expect("a Content-Type").to_string();
    (content_type, body.to_string())
}

/// Runs `program args` with `input` on stdin: (success, stdout + stderr).
fn check_with(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{program}: {error}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// Debian's python3-prometheus-client: its OpenMetrics parser refuses anything the format does
/// not allow (a missing `# EOF`, a counter sample without `_total`, metadata for the wrong name).
const OPENMETRICS_PARSER: &str = "import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print(family.name, family.type, len(family.samples))";

#[test]
fn metrics_are_the_text_format_unless_the_scraper_asks_for_openmetrics() {
    require_root();
    let link = Link::new();
    let port = free_port();
    let tracer = Tracer::start(&["--interval", "1", "--netns", &link.client.path(), "--metrics-addr", &port.to_string()]);
    let refused = link.connect(SocketAddr::new(link.server_ip, 9));
    assert!(refused.is_err());
    tracer.wait_for("the refused connect in a summary", |line| line["closes"]["refused"] == 1);

    // curl, promtool, older agents: no Accept header.
    let (content_type, text) = scrape(port, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF") && text.contains("# TYPE tcp_tracer_resets_total counter"), "{text}");
    let (valid, said) = check_with("promtool", &["check", "metrics"], &text);
    assert!(valid && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");

    // Prometheus's own Accept header.
    let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let (content_type, openmetrics) = scrape(port, Some(prometheus));
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    let (valid, families) = check_with("/usr/bin/python3", &["-c", OPENMETRICS_PARSER], &openmetrics);
    assert!(valid, "the strict OpenMetrics parser refused it: {families}\n{openmetrics}");
    assert!(families.lines().any(|line| line == "tcp_tracer_resets counter 1"), "{families}");
    assert!(families.lines().any(|line| line.starts_with("tcp_tracer_sockets gauge")), "{families}");
    // What every exporter serves, and series that start at 0 rather than appearing later.
    for family in ["tcp_tracer_build_info gauge 1", "process_cpu_seconds counter 1", "process_resident_memory_bytes gauge 1"] {
        assert!(families.lines().any(|line| line == family), "{family}: {families}");
    }
    for zero in [r#"tcp_tracer_syn_retransmits_total{role="client"} 0"#, r#"tcp_tracer_connections_closed_total{class="unresolved"} 0"#] {
        assert!(openmetrics.lines().any(|line| line == zero), "{zero}: {openmetrics}");
    }

    // And the timeline page at `/`, with the interval that held the refused connect.
    let (content_type, page) = get(port, "/", None);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(page.contains("<title>tracer timeline</title>") && page.contains(r#""refused":1"#), "{page}");
    tracer.stop();
}
