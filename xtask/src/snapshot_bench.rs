//! The socket-snapshot part of `cargo xtask bench`: what the periodic sock_diag dumps cost with
//! many namespaces full of sockets (a Kubernetes node), quiet and busy, and how the tracer
//! degrades when the dumps outgrow their share of the interval.
//!
//! Each namespace holds established loopback connections (two sockets each) created while the
//! tracer runs, so it learns every namespace from their events. The tracer's own JSON summaries
//! say what each round dumped and how long it took; its CPU time comes from schedstat.
use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

const PREFIX: &str = "tracer-snapbench-";

/// The benchmark's namespaces, deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(count: usize) -> Result<Namespaces> {
        let names: Vec<String> = (0..count).map(|index| format!("{PREFIX}{index}")).collect();
        for name in &names {
            // One left by an interrupted run; usually there is none.
            let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
            crate::run_checked(Command::new("ip").args(["netns", "add", name]))?;
            crate::run_checked(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        }
        Ok(Namespaces(names))
    }

    /// Runs `work` on a thread inside namespace `name`.
    fn run<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        crate::load::inside(name, None, work)?.join().map_err(|_| anyhow::anyhow!("a namespace thread panicked"))?
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Keeps `pairs` established loopback connections (both ends) open in namespace `name` until
/// dropped. The sockets live on a thread with a descriptor table of its own, as the open-file
/// limit counts per table and a container may not raise it.
struct Held(mpsc::Sender<()>, Option<thread::JoinHandle<()>>);

impl Held {
    fn open(name: &str, pairs: usize) -> Result<Held> {
        let file = File::open(format!("/run/netns/{name}"))?;
        let (ready_sender, ready) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let holder = thread::spawn(move || {
            // SAFETY: unshare/setns affect only this thread; the descriptor is valid.
            let entered = unsafe { libc::unshare(libc::CLONE_FILES) == 0 && libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0 };
            if !entered {
                let _ = ready_sender.send(Err(std::io::Error::last_os_error().to_string()));
                return;
            }
            drop(file);
            let opened = (|| -> std::io::Result<Vec<TcpStream>> {
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
                let mut held = Vec::with_capacity(pairs * 2);
                for _ in 0..pairs {
                    held.push(TcpStream::connect(listener.local_addr()?)?);
                    held.push(listener.accept()?.0);
                }
                Ok(held)
            })();
            match opened {
                Ok(held) => {
                    let _ = ready_sender.send(Ok(()));
                    let _ = stopped.recv();
                    drop(held);
                }
                Err(error) => {
                    let _ = ready_sender.send(Err(error.to_string()));
                }
            }
        });
        match ready.recv() {
            Ok(Ok(())) => Ok(Held(stop, Some(holder))),
            Ok(Err(error)) => bail!("cannot hold connections in {name}: {error}"),
            Err(_) => bail!("the holder thread of {name} died"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.send(());
        if let Some(holder) = self.1.take() {
            let _ = holder.join();
        }
    }
}

/// A few short connections the server closes first: events, and TIME_WAIT sockets to dump.
fn touch(name: &str) -> Result<()> {
    Namespaces::run(name, || {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        for _ in 0..5 {
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
            drop(listener.accept().expect("accept"));
            let _ = client.read(&mut [0; 1]);
        }
    })
}

/// A tracer printing JSON summaries, read line by line as they come.
struct Tracer {
    child: Child,
    summaries: mpsc::Receiver<Value>,
}

impl Tracer {
    fn start(tracer: &Path, interval: &str) -> Result<Tracer> {
        let mut child = Command::new(tracer)
            .args(["--json", "--interval", interval])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start tracer")?;
        let stdout = child.stdout.take().unwrap();
        let (sender, summaries) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(summary) = serde_json::from_str::<Value>(&line) {
                    if sender.send(summary).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Tracer { child, summaries })
    }

    fn next_summary(&self) -> Result<Value> {
        self.summaries.recv_timeout(Duration::from_secs(60)).context("no summary from the tracer within 60 s")
    }

    fn cpu_ns(&self) -> u64 {
        crate::measure::cpu_ns(self.child.id())
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// One scenario's rounds: the snapshot figures of each summary, and the tracer's CPU per interval.
struct Rounds {
    dumped: Vec<u64>,
    idle: Vec<u64>,
    carried: Vec<u64>,
    millis: Vec<f64>,
    sockets: Vec<u64>,
    cpu_ms_per_interval: f64,
    lost: u64,
}

impl Rounds {
    /// Reads `count` summaries while `between` runs before each.
    fn measure(tracer: &Tracer, count: usize, mut between: impl FnMut() -> Result<()>) -> Result<Rounds> {
        let cpu_before = tracer.cpu_ns();
        let mut rounds =
            Rounds { dumped: vec![], idle: vec![], carried: vec![], millis: vec![], sockets: vec![], cpu_ms_per_interval: 0.0, lost: 0 };
        for _ in 0..count {
            between()?;
            let summary = tracer.next_summary()?;
            let round = &summary["modes"]["snapshot_round"];
            let number = |field: &str| round[field].as_u64().unwrap_or(0);
            rounds.dumped.push(number("dumped"));
            rounds.idle.push(number("idle"));
            rounds.carried.push(number("carried"));
            rounds.sockets.push(number("sockets"));
            rounds.millis.push(number("micros") as f64 / 1000.0);
            rounds.lost = summary["events"]["lost"].as_u64().unwrap_or(0);
        }
        rounds.cpu_ms_per_interval = (tracer.cpu_ns() - cpu_before) as f64 / 1e6 / count as f64;
        Ok(rounds)
    }

    fn row(&self, scenario: &str) -> String {
        let median = |values: &[u64]| {
            let mut sorted = values.to_vec();
            sorted.sort_unstable();
            sorted[sorted.len() / 2]
        };
        let mut millis = self.millis.clone();
        millis.sort_by(f64::total_cmp);
        format!(
            "| {scenario} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
            median(&self.dumped),
            median(&self.idle),
            median(&self.carried),
            median(&self.sockets),
            millis[millis.len() / 2],
            millis[millis.len() - 1],
            self.cpu_ms_per_interval
        )
    }
}

/// Returns the report's section.
pub fn run(tracer_binary: &Path, quick: bool) -> Result<String> {
    let (count, pairs, rounds) = if quick { (20, 50, 3) } else { (200, 500, 5) };
    let namespaces = Namespaces::create(count)?;
    let tracer = Tracer::start(tracer_binary, "2")?;
    tracer.next_summary()?;
    let setup = Instant::now();
    let mut held = Vec::new();
    for name in &namespaces.0 {
        held.push(Held::open(name, pairs)?);
    }
    let setup = setup.elapsed().as_secs_f64();
    // Every namespace learnt from its events and dumped once (over budget, over several rounds).
    let settle = Instant::now();
    let mut settled_after = 0;
    loop {
        let summary = tracer.next_summary()?;
        settled_after += 1;
        let round = &summary["modes"]["snapshot_round"];
        if round["carried"] == 0 && round["namespaces"].as_u64() > Some(count as u64) {
            break;
        }
        if settle.elapsed() > Duration::from_secs(300) {
            bail!("the snapshots did not catch up with {count} namespaces in 5 minutes: {summary}");
        }
    }
    let mut report = format!(
        "## Socket snapshots: {count} namespaces × {} established sockets ({} in all, set up in {setup:.1} s)\n\n\
         Summaries every 2 s; the dumps' budget is a tenth of that. Every namespace had been dumped once after \
         {settled_after} summaries. Medians of {rounds} rounds, worst dump time too.\n\n\
         | scenario | namespaces dumped | idle (skipped) | carried (over budget) | sockets returned | dump ms (median) | dump ms (worst) | tracer CPU ms per interval |\n\
         |---|---|---|---|---|---|---|---|\n",
        pairs * 2,
        count * pairs * 2
    );
    let quiet = Rounds::measure(&tracer, rounds, || Ok(()))?;
    report += &quiet.row("quiet: no events");
    let busy = Rounds::measure(&tracer, rounds, || namespaces.0.iter().try_for_each(|name| touch(name)))?;
    report += &busy.row("busy: events and TIME_WAIT in every namespace");
    let lost = quiet.lost.max(busy.lost);
    drop(tracer);
    // The same namespaces with a budget too small for all of them: spread over rounds.
    let tight = Tracer::start(tracer_binary, "0.1")?;
    for _ in 0..3 {
        tight.next_summary()?;
    }
    let over = Rounds::measure(&tight, rounds * 4, || namespaces.0.iter().step_by(4).try_for_each(|name| touch(name)))?;
    report += &over.row("busy, summaries every 0.1 s (10 ms budget)");
    drop(tight);
    report += &format!("\nlost events during the quiet and busy rounds: {lost}\n\n");
    drop(held);
    Ok(report)
}
