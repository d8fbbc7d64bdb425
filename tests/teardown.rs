//! Nothing is left behind: after SIGINT, SIGTERM or even `kill -9`, no program or link of the
//! tracer stays attached (checked with bpftool), and a new instance starts cleanly.
//! One test only: it counts programs system-wide, so no other tracer may run meanwhile.
mod support;

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

const PROGRAM_NAMES: [&str; 5] = ["inet_sock_set_state", "tcp_send_reset", "tcp_receive_reset", "tcp_retransmit_skb", "tcp_retransmit_synack"];

/// Ids of loaded programs that carry our programs' names.
fn our_programs() -> Vec<u64> {
    let output = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool (apt: bpftool) runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let programs: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    programs
        .iter()
        .filter(|program| program["type"] == "tracepoint" && PROGRAM_NAMES.contains(&program["name"].as_str().unwrap_or_default()))
        .map(|program| program["id"].as_u64().unwrap())
        .collect()
}

/// Links (tracepoint perf links) pointing at any of `programs`.
fn links_to(programs: &[u64]) -> usize {
    let output = Command::new("bpftool").args(["-j", "link", "show"]).output().unwrap();
    let links: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
    links.iter().filter(|link| link["prog_id"].as_u64().is_some_and(|id| programs.contains(&id))).count()
}

fn wait_until_gone(how: &str, programs: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while our_programs().iter().any(|id| programs.contains(id)) {
        assert!(Instant::now() < deadline, "after {how}, programs {programs:?} are still loaded");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(links_to(programs), 0, "after {how}, links remain");
}

#[test]
fn no_program_or_link_survives_any_way_of_stopping() {
    require_root();
    assert!(our_programs().is_empty(), "another tracer is running: {:?}", our_programs());
    for (how, signal) in [("SIGINT", libc::SIGINT), ("SIGTERM", libc::SIGTERM), ("kill -9", libc::SIGKILL)] {
        let tracer = Tracer::start(&["--interval", "1"]);
        let programs = our_programs();
        assert_eq!(programs.len(), 5, "all five hooks attached: {programs:?}");
        assert_eq!(links_to(&programs), 5, "one perf link per program");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(tracer.pid() as i32, signal) };
        if signal != libc::SIGKILL {
            let lines = tracer.stop_after_signal();
            assert_eq!(lines.last().unwrap()["final"], true, "{how}: a final summary");
        } else {
            drop(tracer);
        }
        wait_until_gone(how, &programs);
    }
    // And a new instance starts as if nothing happened.
    let tracer = Tracer::start(&["--events"]);
    assert_eq!(our_programs().len(), 5);
    tracer.stop();
}
