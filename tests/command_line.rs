//! What an operator sees when the command line or the privileges are wrong: one line naming the
//! problem and how to fix it, a non-zero exit, and no probe left attached.
mod support;

use std::process::{Command, Output};

use support::require_root;

fn tracer(args: &[&str]) -> Output {
    Command::new(support::tracer_binary()).args(args).output().expect("tracer runs")
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
fn values_that_would_trace_nothing_or_flag_everything_are_refused_with_the_reason() {
    for (args, reason) in [
        (&["--addr", "10.0.0.0/33"][..], "prefix length 33 is longer than an IPv4 address"),
        (&["-L", "0"], "0 is not in 1..=65535"),
        (&["-D", "0"], "0 is not in 1..=65535"),
        (&["--time-wait-threshold", "0"], "at least 1"),
        (&["--rst-threshold", "0"], "at least 1"),
        (&["--connections=bad"], "one of: all, troubled"),
    ] {
        let output = tracer(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let line = one_line_error(&output);
        assert!(line.contains(reason), "{args:?}: {line}");
    }
    let output = tracer(&["--netns", "12345"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(one_line_error(&output).contains("no network namespace has that inode"));
}

#[test]
fn seconds_and_counts_it_cannot_honour_are_refused_before_anything_is_attached() {
    for (args, range) in [
        (&["--interval", "1e-10"][..], "give 0.1 to 86400 seconds"),
        (&["--interval", "1e20"], "give 0.1 to 86400 seconds"),
        (&["--duration", "1e20"], "give 0.1 to 31536000 seconds"),
        (&["--stuck-after", "1e30"], "give 0.1 to 31536000 seconds"),
        (&["--record-window", "NaN"], "give 0.1 to 86400 seconds"),
        (&["--max-connections", "0"], "at least 1"),
        (&["--record-max-events", "99999999999"], "the most it takes"),
        (&["--ring-buffer-size", "2147483648"], "from 16384 to 1073741824 bytes"),
        (&["--ring-buffer-size", "8192"], "holds two of the kernel's 64-event batches"),
    ] {
        let output = tracer(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let line = one_line_error(&output);
        assert!(line.contains(args[0]) && line.contains(range), "{args:?}: {line}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_tracer_quietly() {
    use std::io::{BufRead, BufReader};
    // tracer --events | head -1
    let mut child = std::process::Command::new(support::tracer_binary())
        .args(["--events", "--duration", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tracer runs");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let traffic = std::thread::spawn(move || {
        for _ in 0..200 {
            let _ = std::net::TcpStream::connect(server);
            let _ = listener.accept();
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("state"), "one event line: {first}");
    // The reader (head) is gone now; the next lines hit a closed pipe.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "still running after its reader left");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("dropped"), "nothing to say about lines nobody reads: {stderr}");
    drop(traffic);
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

/// Runs the tracer under `perf stat`, counting its bpf() system calls: a command refused
/// before attaching makes none (no program loaded, no map created, nothing to leave behind).
/// (`perf stat` exits 0 whatever its command did: the exit status comes from a plain run.)
fn bpf_calls_of(args: &[&str]) -> u64 {
    let stats = std::env::temp_dir().join(format!("tracer-bpf-calls-{}-{}", std::process::id(), args.join("_").replace('/', "_")));
    let output = Command::new("perf")
        .args(["stat", "-x,", "-e", "syscalls:sys_enter_bpf", "-o"])
        .arg(&stats)
        .arg("--")
        .arg(support::tracer_binary())
        .args(args)
        .output()
        .expect("perf (apt: linux-perf) runs");
    let counted = std::fs::read_to_string(&stats).unwrap_or_default();
    let _ = std::fs::remove_file(&stats);
    counted
        .lines()
        .find(|line| line.contains("sys_enter_bpf"))
        .and_then(|line| line.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("perf counted no bpf() calls: {counted:?} {output:?}"))
}

#[test]
fn a_command_refused_at_run_time_attaches_nothing() {
    require_root();
    for (args, reason) in [
        (&["--netns", "/run/netns/does-not-exist"][..], "no such namespace"),
        (&["--netns", "12345"], "no network namespace has that inode"),
        (&["--tracefs", "/nonexistent"], "is tracefs mounted there?"),
        (&["--metrics-addr", "192.0.2.1:9464"], "cannot listen on 192.0.2.1:9464"),
    ] {
        let output = tracer(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        assert!(one_line_error(&output).contains(reason), "{args:?}: {output:?}");
        assert_eq!(bpf_calls_of(args), 0, "{args:?}: refused, yet it made bpf() calls");
    }
    // The control: the same count for a run that attaches.
    let calls = bpf_calls_of(&["--duration", "0.5"]);
    assert!(calls > 0, "a run that attaches made {calls} bpf() calls");
}

#[test]
fn without_privileges_the_error_names_the_capabilities() {
    // setpriv drops to nobody with no capabilities at all.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(support::tracer_binary())
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = one_line_error(&output);
    assert!(line.contains("CAP_BPF") && line.contains("CAP_PERFMON") && line.contains("sudo"), "{line}");
}
