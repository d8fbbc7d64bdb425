//! The deployment files are valid for the tools that will read them, and every flag they pass
//! is one the tracer accepts.
use std::{fs, path::Path, process::Command};

use clap::Parser;
use tracer::app::cli::Cli;
use yaml_rust2::YamlLoader;

fn deploy(file: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)).unwrap()
}

#[test]
fn the_systemd_unit_verifies_and_its_command_line_parses() {
    let unit = deploy("tracer.service");
    let exec = unit.lines().find_map(|line| line.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let args: Vec<&str> = exec.split_whitespace().collect();
    Cli::try_parse_from(&args).unwrap_or_else(|error| panic!("{exec}: {error}"));

    let copy = std::env::temp_dir().join(format!("tracer-{}.service", std::process::id()));
    fs::write(&copy, unit.replace(args[0], env!("CARGO_BIN_EXE_tracer"))).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect("systemd-analyze runs");
    fs::remove_file(&copy).unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let capabilities = unit.lines().find_map(|line| line.strip_prefix("CapabilityBoundingSet=")).unwrap();
    for needed in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(capabilities.contains(needed), "{needed} missing from {capabilities}");
    }
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

/// The Containerfile builds the binary the DaemonSet runs. It is built for real where buildah or
/// podman runs and a base image can be pulled; elsewhere the test says why and checks the file.
#[test]
fn the_container_image_is_the_tracer_on_a_slim_base_and_builds_where_a_builder_runs() {
    let containerfile = deploy("Containerfile");
    let stages: Vec<&str> = containerfile.lines().filter(|line| line.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a run stage: {stages:?}");
    assert!(stages[1].contains("slim"), "the run stage is a slim base: {}", stages[1]);
    let build_stage = containerfile.split(stages[1]).next().unwrap();
    assert!(build_stage.contains("cargo xtask setup && cargo xtask build"), "the image is built the README's way");
    let run_stage = containerfile.split(stages[1]).nth(1).unwrap();
    assert!(run_stage.contains("COPY --from=build /src/target/release/tracer /usr/local/bin/tracer"), "{run_stage}");
    assert!(run_stage.contains(r#"ENTRYPOINT ["/usr/local/bin/tracer"]"#), "{run_stage}");
    let manifest = deploy("daemonset.yaml");
    assert!(manifest.contains("image: ") && !manifest.contains("command:"), "the DaemonSet runs the image's entrypoint with its args");

    let Some(builder) = ["buildah", "podman"].into_iter().find(|tool| Command::new(tool).arg("--version").output().is_ok()) else {
        eprintln!("container image not built: neither buildah nor podman is installed here (apt install buildah)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tag = format!("localhost/tcp-tracer-test:{}", std::process::id());
    let build = Command::new(builder).current_dir(&root).args(["build", "-f", "deploy/Containerfile", "-t", &tag, "."]).output().unwrap();
    let said = String::from_utf8_lossy(&build.stderr);
    if !build.status.success() && (said.contains("pull") || said.contains("registry") || said.contains("dial tcp")) {
        eprintln!(
            "container image not built: {builder} cannot pull the Debian base image from here: {}",
            said.lines().last().unwrap_or_default()
        );
        return;
    }
    assert!(build.status.success(), "{builder} build failed: {said}");
    let run = Command::new("podman").args(["run", "--rm", &tag, "--version"]).output();
    let _ = Command::new(builder).args(["rmi", &tag]).output();
    if let Ok(run) = run {
        assert!(String::from_utf8_lossy(&run.stdout).starts_with("tracer "), "the image runs the tracer: {run:?}");
    }
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
