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

/// Ids of loaded programs that carry our programs' names.
fn our_programs() -> Vec<u64> {
    let output = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool (apt: bpftool) runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let programs: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    programs
        .iter()
        .filter(|program| tracer::kernel::hooks::program_named(program["name"].as_str().unwrap_or_default()).is_some())
        .map(|program| program["id"].as_u64().unwrap())
        .collect()
}

/// What a tracer announced: (hooks attached, whether the flush program is loaded).
/// Hooks attached, hooks loaded to be attached on demand, and whether a flush program is loaded.
fn announced(tracer: &Tracer) -> (usize, usize, bool) {
    let announced = tracer.announced();
    (announced.attached(), announced.waiting(), announced.batched)
}

/// How many of `programs` are attached: by a link (tracing links for BTF hooks; perf links for
/// classic tracepoints from 5.15) or, on kernels without perf links, by a perf event holding
/// the program (`bpftool perf`). A program counts once however it is seen.
fn links_to(programs: &[u64]) -> usize {
    let mut attached = std::collections::BTreeSet::new();
    for what in ["link", "perf"] {
        let output = Command::new("bpftool").args(["-j", what, "show"]).output().unwrap();
        let entries: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
        attached.extend(entries.iter().filter_map(|entry| entry["prog_id"].as_u64()).filter(|id| programs.contains(id)));
    }
    attached.len()
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
    // The kernel frees a finished process's programs a moment later (the previous test binary's
    // tracers): wait for that, not for a tracer that keeps running.
    let leftovers = our_programs();
    wait_until_gone("the previous tests' tracers exited", &leftovers);
    let ways = [("SIGINT", libc::SIGINT, "auto"), ("SIGTERM", libc::SIGTERM, "auto"), ("kill -9", libc::SIGKILL, "auto")];
    let classic =
        [("SIGINT, classic tracepoints", libc::SIGINT, "tracepoint"), ("kill -9, classic tracepoints", libc::SIGKILL, "tracepoint")];
    for (how, signal, mode) in ways.into_iter().chain(classic) {
        let tracer = Tracer::start(&["--interval", "1", "--hook-mode", mode]);
        let programs = our_programs();
        let (attached, waiting, flush) = announced(&tracer);
        assert!(attached >= 5, "{how}: at least the five TCP hooks attached");
        assert_eq!(
            programs.len(),
            attached + waiting + usize::from(flush),
            "{how}: one program per hook, attached or waiting, plus the flush: {programs:?}"
        );
        assert_eq!(links_to(&programs), attached, "{how}: one link per attached hook");
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
    let (attached, waiting, flush) = announced(&tracer);
    assert!(!flush, "--events sends every record at once");
    assert_eq!(our_programs().len(), attached + waiting);
    tracer.stop();
}
