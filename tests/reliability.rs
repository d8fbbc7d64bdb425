//! The tracer must never be the incident: a stalled reader, an unfamiliar kernel layout or a
//! privilege it no longer needs must not hurt the box it runs on.
mod support;

use std::{
    fs,
    io::{BufReader, Read},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use support::*;

/// A copy of the running kernel's tracepoint formats that a test may edit.
fn tracefs_copy(test: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("tracer-tracefs-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    for (hook, category, _) in tracer::kernel::hooks::tracepoints() {
        let hook = format!("{category}/{}", hook.name);
        let dir = root.join("events").join(&hook);
        fs::create_dir_all(&dir).unwrap();
        let format = Path::new("/sys/kernel/tracing/events").join(&hook).join("format");
        fs::copy(&format, dir.join("format")).unwrap_or_else(|error| panic!("{}: {error}", format.display()));
    }
    root
}

#[test]
fn a_missing_optional_tracepoint_is_named_and_the_rest_keeps_working() {
    require_root();
    let root = tracefs_copy("missing");
    fs::remove_dir_all(root.join("events/tcp/tcp_retransmit_synack")).unwrap();
    let link = Link::new();
    // --netns: a parallel test floods events; only this test's must reach the output.
    let tracer = Tracer::start(&["--events", "--tracefs", root.to_str().unwrap(), "--netns", &link.client.path()]);
    assert!(tracer.stderr.lock().unwrap().contains("tcp_retransmit_synack=unavailable"), "{}", tracer.stderr.lock().unwrap());
    let listener = link.listen(link.server_ip);
    let _client = link.connect(listener.local_addr().unwrap()).unwrap();
    tracer.wait_for("the handshake", |line| line["state"] == "ESTABLISHED" && line["netns"] == link.client.inode());
    tracer.stop();
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_renamed_field_stops_the_tracer_with_its_name_and_attaches_nothing() {
    require_root();
    let root = tracefs_copy("renamed");
    let format = root.join("events/sock/inet_sock_set_state/format");
    let text = fs::read_to_string(&format).unwrap().replace(" skaddr;", " sk_pointer;");
    fs::write(&format, text).unwrap();
    let output = Command::new(support::tracer_binary()).args(["--tracefs", root.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("inet_sock_set_state") && stderr.contains("`skaddr`"), "{stderr}");
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn after_attaching_the_tracer_keeps_only_the_capabilities_snapshots_need() {
    require_root();
    for (args, kept) in [(&[][..], 0x80_0028_1004u64), (&["--no-snapshot"][..], 0x80_0000_0000)] {
        let tracer = Tracer::start(args);
        let status = fs::read_to_string(format!("/proc/{}/status", tracer.pid())).unwrap();
        let effective = status.lines().find_map(|line| line.strip_prefix("CapEff:")).unwrap().trim();
        // BPF always (bpf() calls on older kernels); NET_ADMIN, SYS_ADMIN, SYS_PTRACE,
        // DAC_READ_SEARCH with snapshots.
        assert_eq!(u64::from_str_radix(effective, 16).unwrap(), kept, "{args:?}");
        let permitted = status.lines().find_map(|line| line.strip_prefix("CapPrm:")).unwrap().trim();
        assert_eq!(u64::from_str_radix(permitted, 16).unwrap(), kept, "{args:?}: cannot be raised again");
        tracer.stop();
    }
}

#[test]
fn a_reader_that_stops_reading_does_not_stall_the_tracer_and_drops_are_counted() {
    const CONNECTIONS: u64 = 8000;
    require_root();
    let link = Link::new();
    let netns = link.client.path();
    let mut child = Command::new(support::tracer_binary())
        .args(["--events", "--json", "--netns", &netns])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    until_attached(&mut stderr);

    // Nobody reads stdout while ~40 000 event lines (about 12 MB of JSON, more than the 8 MiB the
    // output queue holds) are produced.
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let acceptor = thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            drop(listener.accept().unwrap());
        }
    });
    link.client.run(move || {
        for _ in 0..CONNECTIONS {
            let mut stream = TcpStream::connect(server).unwrap();
            let _ = stream.read(&mut [0; 1]);
        }
    });
    acceptor.join().unwrap();
    thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "still running");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut output = String::new();
    child.stdout.take().unwrap().read_to_string(&mut output).unwrap();
    assert!(child.wait().unwrap().success());
    let last: serde_json::Value = serde_json::from_str(output.lines().last().unwrap()).unwrap();
    let events = &last["events"];
    assert_eq!(events["lost"], 0, "the ring buffer kept being drained: {last}");
    // Firings the kernel itself skips (a program already running on that CPU: a softirq landing
    // mid-run, which emulated guests see) are counted too, never silently gone.
    let skipped = events["skipped"].as_u64().unwrap();
    assert!(events["seen"].as_u64().unwrap() + skipped >= CONNECTIONS * 5, "{last}");
    let dropped = events["output_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "the stalled pipe cost lines: {last}");
    let shown = output.lines().count() as u64 - 1;
    assert!(shown + dropped + skipped >= CONNECTIONS * 5, "every client event is shown or counted: {shown} + {dropped} + {skipped}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("output lines dropped"), "{rest}");
}

#[test]
fn two_instances_at_once_work_independently() {
    require_root();
    let link = Link::new();
    let first = Tracer::start(&["--events", "--netns", &link.client.path()]);
    let second = Tracer::start(&["--events", "--netns", &link.client.path()]);
    let listener: TcpListener = link.listen(link.server_ip);
    let server: SocketAddr = listener.local_addr().unwrap();
    let _client = link.connect(server).unwrap();
    for tracer in [&first, &second] {
        tracer.wait_for("the connect", |line| line["state"] == "SYN_SENT" && line["netns"] == link.client.inode());
    }
    assert_nothing_lost(&first.stop());
    assert_nothing_lost(&second.stop());
}

/// Closes the kernel could not deliver (the ring buffer full while the tracer was stopped) still
/// end their connections: each is looked up once quiet and ends with what the lookup found, a
/// TIME_WAIT socket (graceful, our FIN first: the client's) or nothing (unresolved: the
/// server's), counted; none stays open for ever without a line.
#[test]
fn connections_whose_close_events_were_lost_still_end_and_are_counted() {
    const CONNECTIONS: usize = 40;
    require_root();
    let link = Link::new();
    let network = format!("{}/24", link.client_ip);
    let tracer = Tracer::start(&["--connections=all", "--addr", &network, "--interval", "1", "--ring-buffer-size", "16384"]);
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let streams: Vec<(TcpStream, TcpStream)> =
        (0..CONNECTIONS).map(|_| (link.connect(server).unwrap(), listener.accept().unwrap().0)).collect();
    let clients: Vec<String> = streams.iter().map(|(client, _)| client.local_addr().unwrap().to_string()).collect();
    thread::sleep(Duration::from_millis(500));
    // Stopped, the tracer drains nothing while every connection closes (the client first): the
    // ring buffer (the least it takes, two full batches) holds 128 of the ~400 records fired.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGSTOP) };
    drop(streams);
    thread::sleep(Duration::from_millis(500));
    // SAFETY: as above.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGCONT) };
    for client in &clients {
        for (end, side) in [("local", "client"), ("remote", "server")] {
            tracer.wait_long(&format!("the {side} line of {client}"), 30, |line| line[end] == client.as_str() && line["close"].is_string());
        }
    }
    let lines = tracer.stop();
    let unseen: Vec<&serde_json::Value> =
        lines.iter().filter(|line| line["detail"].as_str().is_some_and(|detail| detail.contains("CLOSE event"))).collect();
    assert!(!unseen.is_empty(), "some closes were lost: {lines:#?}");
    for line in &unseen {
        let expected = if line["role"] == "client" { "graceful" } else { "unresolved" };
        assert_eq!(line["close"], expected, "{line}");
        // Its end is known only to lie before the lookup: no span ends there.
        assert!(line["duration_ms"].is_null() && line["closing_ms"].is_null(), "{line}");
    }
    let events = &lines.last().unwrap()["events"];
    assert!(events["lost"].as_u64() > Some(0), "{events}");
    assert_eq!(events["closes_unseen"].as_u64(), Some(unseen.len() as u64), "{events}");
}
