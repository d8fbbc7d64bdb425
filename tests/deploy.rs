//! The deployment files are valid for the tools that will read them, and every flag they pass
//! is one the tracer accepts.
mod support;

use std::{
    collections::BTreeSet,
    fs,
    io::BufReader,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use support::artifacts::{artifact, said, stdout_of, untar, Root};
use tracer::app::cli::Cli;
use yaml_rust2::YamlLoader;

fn deploy(file: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)).unwrap()
}

/// `Key=` lines of a unit file, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix('='))).collect()
}

/// The command line the unit runs: ExecStart with $TRACER_OPTIONS from /etc/default/tracer.
fn unit_command_line() -> Vec<String> {
    let unit = deploy("tracer.service");
    let exec = unit_values(&unit, "ExecStart")[0];
    let defaults = deploy("debian/default");
    let options = defaults
        .lines()
        .find_map(|line| line.strip_prefix("TRACER_OPTIONS="))
        .expect("/etc/default/tracer sets TRACER_OPTIONS")
        .trim_matches('"');
    exec.replace("$TRACER_OPTIONS", options).split_whitespace().map(str::to_string).collect()
}

#[test]
fn the_systemd_unit_verifies_and_its_command_line_parses() {
    let unit = deploy("tracer.service");
    assert_eq!(unit_values(&unit, "EnvironmentFile"), ["-/etc/default/tracer"], "the options live in /etc/default/tracer");
    let args = unit_command_line();
    assert_eq!(args[0], "/usr/sbin/tracer", "the path the package installs");
    Cli::try_parse_from(&args).unwrap_or_else(|error| panic!("{args:?}: {error}"));

    // The host has no tracer in /usr/sbin nor its man page: point at this build and leave the
    // man check to the install test, which verifies the unit where the package put everything.
    let copy = std::env::temp_dir().join(format!("tracer-{}.service", std::process::id()));
    fs::write(&copy, unit.replace("/usr/sbin/tracer", env!("CARGO_BIN_EXE_tracer"))).unwrap();
    let output = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().expect("systemd-analyze runs");
    fs::remove_file(&copy).unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let capabilities = unit_values(&unit, "CapabilityBoundingSet")[0];
    for needed in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(capabilities.contains(needed), "{needed} missing from {capabilities}");
    }
}

/// The exposure score README quotes; hardening may only lower it.
const SECURITY_EXPOSURE_AT_MOST: f64 = 3.3;

#[test]
fn the_units_exposure_score_does_not_regress() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tracer.service");
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let score: f64 = report
        .lines()
        .find_map(|line| line.split("Overall exposure level for tracer.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level: {report}{}", String::from_utf8_lossy(&output.stderr)));
    assert!(score <= SECURITY_EXPOSURE_AT_MOST, "systemd-analyze security: {score} > {SECURITY_EXPOSURE_AT_MOST}\n{report}");
}

/// Every system call a syscall-filter group allows, nested groups expanded.
fn syscall_group(group: &str, into: &mut BTreeSet<String>) {
    let output = Command::new("systemd-analyze").args(["syscall-filter", "--no-pager", group]).output().expect("systemd-analyze runs");
    assert!(output.status.success(), "systemd-analyze syscall-filter {group}");
    for entry in String::from_utf8_lossy(&output.stdout).lines().skip(1).map(str::trim) {
        if entry.starts_with('#') || entry.is_empty() {
            continue;
        }
        if entry.starts_with('@') {
            syscall_group(entry, into);
        } else {
            into.insert(entry.to_string());
        }
    }
}

/// A command running under `strace -f -c`: the system calls it made, by name, once it ends.
struct Strace {
    child: Child,
    summary: PathBuf,
}

impl Strace {
    fn start(command: &Command, name: &str) -> Strace {
        let summary = std::env::temp_dir().join(format!("tracer-strace-{}-{name}", std::process::id()));
        let child = Command::new("strace")
            .args(["-f", "-qq", "-c", "-o"])
            .arg(&summary)
            .arg(command.get_program())
            .args(command.get_args())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace runs (apt install strace)");
        Strace { child, summary }
    }

    /// Reads the tracer's stderr until it says it attached (strace slows start-up a lot).
    fn wait_attached(&mut self) {
        let mut stderr = BufReader::new(self.child.stderr.take().unwrap());
        let said = support::until_attached(&mut stderr);
        assert!(self.child.try_wait().unwrap().is_none(), "the tracer ended right after attaching: {said}");
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    }

    fn syscalls(mut self) -> BTreeSet<String> {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the traced tracer failed: {status}");
        let table = fs::read_to_string(&self.summary).unwrap();
        fs::remove_file(&self.summary).unwrap();
        table
            .lines()
            .skip(2)
            .filter(|line| !line.starts_with('-'))
            .filter_map(|line| line.split_whitespace().last())
            .filter(|name| *name != "total")
            .map(str::to_string)
            .collect()
    }
}

/// A scrape of the traced tracer's metrics, once its server answers.
fn scrape(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let answer = loop {
        match support::http_get(port, "/metrics", None) {
            Ok(answer) => break answer,
            Err(error) if Instant::now() > deadline => panic!("metrics on port {port}: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// SystemCallFilter= is enforced by seccomp: a call outside it kills a feature (EPERM) on the
/// first server it runs on. Run the tracer as the unit does, in both hook modes, with a network
/// namespace to enter, traffic, a scrape of its metrics and a flight record, and check every
/// call it made is one the unit allows.
#[test]
fn every_system_call_the_tracer_makes_is_in_the_units_filter() {
    support::require_root();
    let unit = deploy("tracer.service");
    let mut allowed = BTreeSet::new();
    for entry in unit_values(&unit, "SystemCallFilter").iter().flat_map(|value| value.split_whitespace()) {
        assert!(!entry.starts_with('~'), "an allow list, not a deny list: {entry}");
        if entry.starts_with('@') {
            syscall_group(entry, &mut allowed);
        } else {
            allowed.insert(entry.to_string());
        }
    }
    let link = support::Link::new();
    // A process inside the namespace, so that the snapshot enters it with setns().
    let mut resident = Command::new("ip").args(["netns", "exec", &link.server.name, "sleep", "20"]).spawn().unwrap();
    let listener = link.listen(link.server_ip);
    let to = SocketAddr::new(link.server_ip, listener.local_addr().unwrap().port());
    let records = std::env::temp_dir().join(format!("tracer-syscall-records-{}", std::process::id()));
    for (mode, metrics_port) in [("auto", 19464), ("tracepoint", 19465)] {
        let mut command = Command::new(support::tracer_binary());
        command.args(["--duration", "5", "--interval", "1", "--hook-mode", mode, "--json-out", "/dev/null", "--metrics-addr"]);
        command.arg(format!("127.0.0.1:{metrics_port}")).arg("--record-dir").arg(&records);
        let mut traced = Strace::start(&command, mode);
        traced.wait_attached();
        for _ in 0..5 {
            drop(link.connect(to));
        }
        scrape(metrics_port);
        let made = traced.syscalls();
        let outside: Vec<&String> = made.difference(&allowed).collect();
        assert!(outside.is_empty(), "--hook-mode {mode}: calls outside SystemCallFilter: {outside:?} (made: {made:?})");
        assert!(made.contains("bpf") && made.contains("setns"), "the programs loaded and the snapshot entered the namespace: {made:?}");
    }
    let _ = resident.kill();
    let _ = resident.wait();
    let _ = fs::remove_dir_all(&records);
}

#[test]
fn the_daemonset_validates_against_the_kubernetes_schema_and_its_args_parse() {
    let manifest = deploy("daemonset.yaml");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
    let output = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&path)
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate) runs");
    assert!(output.status.success(), "{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let documents = YamlLoader::load_from_str(&manifest).expect("daemonset.yaml is YAML");
    let daemonset = &documents[0];
    assert_eq!(daemonset["kind"].as_str(), Some("DaemonSet"));
    let template = &daemonset["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9464"));
    let pod = &template["spec"];
    assert_eq!((pod["hostPID"].as_bool(), pod["hostNetwork"].as_bool()), (Some(true), Some(true)), "namespaces of the node");
    let container = &pod["containers"][0];
    let args: Vec<String> =
        container["args"].as_vec().expect("container args").iter().map(|arg| arg.as_str().expect("a string arg").to_string()).collect();
    assert!(args.iter().any(|arg| arg == "--metrics-addr=0.0.0.0:9464"), "Prometheus scrapes the annotated port: {args:?}");
    Cli::try_parse_from(std::iter::once("tracer".to_string()).chain(args.clone())).unwrap_or_else(|error| panic!("{args:?}: {error}"));
    let ports: Vec<i64> = container["ports"].as_vec().into_iter().flatten().filter_map(|port| port["containerPort"].as_i64()).collect();
    assert_eq!(ports, [9464], "the metrics port is declared");
}

/// The image the DaemonSet names is built FROM scratch out of what `cargo xtask dist` staged (the
/// binary and the libraries it links), offline; its exported filesystem runs the tracer, chrooted
/// with /proc and /sys bound, until it prints a summary. A failed build fails the test.
#[test]
fn the_image_is_built_from_scratch_and_its_filesystem_runs_the_tracer() {
    support::require_root();
    let containerfile = deploy("Containerfile");
    let stages: Vec<&str> = containerfile.lines().filter(|line| line.starts_with("FROM ")).collect();
    assert_eq!(stages, ["FROM scratch"], "no base image to pull");
    assert!(containerfile.contains(r#"ENTRYPOINT ["/usr/sbin/tracer"]"#), "{containerfile}");
    let tag = artifact("TRACER_IMAGE_TAG");
    assert_eq!(tag, format!("localhost/tcp-tracer:{}", env!("CARGO_PKG_VERSION")));
    let manifest = YamlLoader::load_from_str(&deploy("daemonset.yaml")).expect("daemonset.yaml is YAML");
    let container = &manifest[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"].as_str(), Some(tag.as_str()), "the DaemonSet runs the image dist builds");
    assert!(container["command"].is_badvalue(), "the DaemonSet runs the image's entrypoint with its args");

    let podman = |args: &[&str]| stdout_of(Command::new("podman").args(args)).trim().to_string();
    let test_tag = format!("localhost/tcp-tracer-test:{}", std::process::id());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let containerfile = root.join("deploy/Containerfile");
    podman(&[
        "build",
        "--network=none",
        "--layers=false",
        "--quiet",
        "-f",
        containerfile.to_str().unwrap(),
        "-t",
        &test_tag,
        &artifact("TRACER_IMAGE_CONTEXT"),
    ]);
    let container = podman(&["create", &test_tag]);
    let exported = Root::new("image");
    let archive = exported.path.with_extension("tar");
    podman(&["export", "-o", archive.to_str().unwrap(), &container]);
    podman(&["rm", &container]);
    podman(&["rmi", &test_tag]);
    untar(&archive, &exported.path);
    fs::remove_file(&archive).unwrap();
    let mut held: Vec<String> = Vec::new();
    let mut pending = vec![exported.path.clone()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                held.push(entry.path().strip_prefix(&exported.path).unwrap().display().to_string());
            }
        }
    }
    assert!(held.contains(&"usr/sbin/tracer".to_string()) && held.len() <= 6, "the tracer and its libraries only: {held:?}");

    let run = exported.run(&["/usr/sbin/tracer", "--duration", "3", "--interval", "1"]);
    assert!(run.status.success(), "{}", said(&run));
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(stderr.contains("tracer: attached; hooks:"), "{stderr}");
    assert!(stdout.contains("final, interval") && stdout.contains("sockets "), "a summary: {stdout}");
    // The saved archive loads back as the same image.
    let loaded = podman(&["load", "-i", &artifact("TRACER_IMAGE_ARCHIVE")]);
    assert!(loaded.contains(&tag), "{loaded}");
}

/// What Grafana needs to import the dashboard: unique panel ids, panels on the 24-column grid
/// without overlaps, every query on the dashboard's Prometheus data-source variable. (Which series
/// it may query is checked against the tracer's registry by a unit test in `output/metrics.rs`.)
#[test]
fn the_grafana_dashboard_is_importable_and_every_panel_queries_the_chosen_prometheus() {
    let dashboard: serde_json::Value = serde_json::from_str(&deploy("grafana-dashboard.json")).expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"));
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6, "states, closes, resets, findings and more");
    let mut ids: Vec<u64> = panels.iter().map(|panel| panel["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let cells = |panel: &serde_json::Value| {
        let grid = &panel["gridPos"];
        let (x, y, w, h) =
            (grid["x"].as_u64().unwrap(), grid["y"].as_u64().unwrap(), grid["w"].as_u64().unwrap(), grid["h"].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{panel}");
        (x..x + w).flat_map(move |column| (y..y + h).map(move |row| (column, row))).collect::<Vec<_>>()
    };
    let mut taken = std::collections::HashSet::new();
    for panel in panels {
        for cell in cells(panel) {
            assert!(taken.insert(cell), "panel {} overlaps another at {cell:?}", panel["title"]);
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{target}");
            assert!(target["expr"].as_str().is_some_and(|expr| expr.contains("tcp_tracer_")), "{target}");
        }
    }
}
