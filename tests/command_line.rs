//! What an operator sees when the command line or the privileges are wrong: one line naming the
//! problem and how to fix it, a non-zero exit, and no probe left attached.
use std::process::{Command, Output};

fn tracer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer")).args(args).output().expect("tracer runs")
}

fn one_line_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "exactly one line: {stderr:?}");
    assert!(stderr.starts_with("tracer: error: "), "{stderr:?}");
    assert!(output.stdout.is_empty(), "nothing on stdout: {:?}", String::from_utf8_lossy(&output.stdout));
    stderr
}

#[test]
fn an_unknown_flag_is_one_line_and_exit_2() {
    let output = tracer(&["--bogus"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(one_line_error(&output).contains("'--bogus'"));
}

#[test]
fn two_output_modes_at_once_or_an_unknown_selection_is_one_line_and_exit_2() {
    let output = tracer(&["--connections", "--events"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(one_line_error(&output).contains("--events"));
    let output = tracer(&["--connections=some"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(one_line_error(&output).contains("some"));
}

#[test]
fn a_summary_flag_with_events_is_refused_not_ignored() {
    for flag in
        [&["--metrics-addr", "9464"][..], &["--record-dir", "/tmp"], &["--interval", "5"], &["--no-snapshot"], &["--stuck-after", "60"]]
    {
        let output = tracer(&[&["--events"][..], flag].concat());
        assert_eq!(output.status.code(), Some(2), "{flag:?}");
        let line = one_line_error(&output);
        assert!(line.contains(flag[0]) && line.contains("--events"), "{line}");
    }
}

#[test]
fn a_malformed_network_or_port_is_one_line_and_exit_2() {
    for args in [&["--addr", "10.0.0.300/8"][..], &["-L", "http"], &["--interval", "soon"], &["--ring-buffer-size", "5000"]] {
        let output = tracer(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let line = one_line_error(&output);
        assert!(line.contains(args[1]), "{line}");
    }
}

#[test]
fn an_unknown_namespace_is_refused_before_attaching() {
    let output = tracer(&["--netns", "/run/netns/does-not-exist"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(one_line_error(&output).contains("no such namespace"));
}

#[test]
fn without_privileges_the_error_names_the_capabilities() {
    // setpriv drops to nobody with no capabilities at all.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", env!("CARGO_BIN_EXE_tracer")])
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = one_line_error(&output);
    assert!(line.contains("CAP_BPF") && line.contains("CAP_PERFMON") && line.contains("sudo"), "{line}");
}
