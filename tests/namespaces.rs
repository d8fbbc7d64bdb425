//! Namespaces come and go (pods on a Kubernetes node): the tracer lets go of the ones that are
//! gone, so that neither its descriptors nor the kernel's namespaces pile up, and it keeps
//! counting what it sees.
mod support;

use std::{
    io::Read,
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// The tests here count namespaces the tracer releases: one test's namespaces deleted during
/// another's count would be miscounted, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the tracer's fd directory").count()
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the tracer's status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number")
}

/// "sock_diag (12 netns, 3 gone and released)" → (12, 3).
fn covered_and_released(summary: &Value) -> (u64, u64) {
    let text = summary["modes"]["snapshot"].as_str().unwrap_or_default();
    let number_before = |word: &str| {
        text.split(", ")
            .map(|part| part.trim_start_matches("sock_diag ("))
            .find(|part| part.contains(word))
            .and_then(|part| part.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (number_before("netns"), number_before("released"))
}

/// The first summary after the first `after` lines that satisfies `predicate` (earlier rounds'
/// summaries do not count).
fn summary_after(tracer: &Tracer, after: usize, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(found) = tracer.lines().into_iter().skip(after).find(|line| predicate(line)) {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {:#?}", tracer.lines().last());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_thousand_pod_namespaces_created_and_deleted_leave_nothing_behind() {
    require_root();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    const ROUNDS: usize = 4;
    // Under the tracer's cap of 256 namespaces held at once.
    const PER_ROUND: usize = 250;
    let tracer = Tracer::start(&["--interval", "1"]);
    let first = tracer.wait_for("a first summary", |line| line["modes"]["snapshot"].is_string());
    let (baseline_covered, _) = covered_and_released(&first);
    let (baseline_fds, baseline_rss) = (open_descriptors(tracer.pid()), resident_kib(tracer.pid()));
    for round in 1..=ROUNDS {
        let round_start = tracer.lines().len();
        let namespaces: Vec<Netns> = (0..PER_ROUND).map(|_| Netns::new("pod")).collect();
        for namespace in &namespaces {
            namespace.run(|| {
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                drop(listener.accept().unwrap());
                assert_eq!(client.read(&mut [0; 1]).unwrap(), 0, "the server closed");
            });
        }
        // The tracer covers this round's namespaces while they live...
        summary_after(&tracer, round_start, "this round's namespaces covered", |line| {
            covered_and_released(line).0 >= baseline_covered + PER_ROUND as u64
        });
        let deleted = tracer.lines().len();
        drop(namespaces);
        // ...and lets every one of them go once they are deleted.
        let released = (round * PER_ROUND) as u64;
        let summary = summary_after(&tracer, deleted, "the deleted namespaces released", |line| {
            let (covered, gone) = covered_and_released(line);
            gone >= released && covered <= baseline_covered
        });
        assert_eq!(covered_and_released(&summary).1, released, "only deleted namespaces are released: {summary}");
        // The link watcher closes its sockets on its own thread, after the commands queued
        // before the release: give it a moment, not a leak.
        let settled = Instant::now() + Duration::from_secs(5);
        let mut fds = open_descriptors(tracer.pid());
        while fds > baseline_fds + 2 && Instant::now() < settled {
            std::thread::sleep(Duration::from_millis(100));
            fds = open_descriptors(tracer.pid());
        }
        assert!(fds <= baseline_fds + 2, "round {round}: {fds} descriptors open, {baseline_fds} at the start");
    }
    let rss = resident_kib(tracer.pid());
    assert!(rss <= baseline_rss + 16 * 1024, "RSS grew from {baseline_rss} KiB to {rss} KiB");
    let lines = tracer.stop();
    assert_nothing_lost(&lines);
}

/// The snapshot asks only namespaces that can have changed: the test's server namespace is dumped
/// while it holds a CLOSE_WAIT socket, skipped once it holds nothing the findings read, and dumped
/// again as soon as an event comes from it — and the counts stay exact throughout.
#[test]
fn idle_namespaces_are_not_dumped_and_the_counts_stay_exact() {
    require_root();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let link = Link::new();
    let tracer = Tracer::start(&["--interval", "1", "--netns", &link.server.path()]);
    let round = |line: &Value| line["modes"]["snapshot_round"].clone();
    let count = |line: &Value, state: &str| line["states"][state].as_u64().unwrap_or(0);
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let client_stream = link.connect(server).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    drop(client_stream); // the server's socket is left in CLOSE_WAIT

    let start = tracer.lines().len();
    let held = summary_after(&tracer, start, "the CLOSE_WAIT socket counted", |line| count(line, "CLOSE_WAIT") == 1);
    // Nothing happens in the namespace for the next rounds: it is dumped all the same (its socket
    // could end without an event only if it were not dumped), and the count holds.
    let mut after_held = tracer.lines().iter().position(|line| line == &held).unwrap() + 1;
    for _ in 0..3 {
        let next = summary_after(&tracer, after_held, "a quiet round", |line| line["events"].is_object());
        assert_eq!(count(&next, "CLOSE_WAIT"), 1, "{next}");
        assert!(round(&next)["dumped"].as_u64().unwrap() >= 1, "{next}");
        after_held = tracer.lines().iter().position(|line| line == &next).unwrap() + 1;
    }

    drop(accepted); // LAST_ACK → CLOSE: events, then nothing the findings read
    let closed = tracer.lines().len();
    summary_after(&tracer, closed, "the CLOSE_WAIT socket gone", |line| count(line, "CLOSE_WAIT") == 0);
    let idle = summary_after(&tracer, closed, "a round that skips an idle namespace", |line| round(line)["idle"].as_u64() >= Some(1));
    assert_eq!(round(&idle)["carried"], 0, "nothing is over budget here: {idle}");

    // The idle namespace gets a TIME_WAIT socket: its events make it due again.
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let mut client_stream = link.connect(server).unwrap();
    drop(listener.accept().unwrap()); // the server closes first: TIME_WAIT on its side
    assert_eq!(client_stream.read(&mut [0; 1]).unwrap(), 0);
    drop(client_stream);
    let after = tracer.lines().len();
    let seen = summary_after(&tracer, after, "the new TIME_WAIT socket counted", |line| count(line, "TIME_WAIT") == 1);
    assert_eq!(seen["states"]["TIME_WAIT"], link.server.ss_count("time-wait"), "like ss: {seen}");
    let lines = tracer.stop();
    assert_nothing_lost(&lines);
}
