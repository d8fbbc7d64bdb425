//! One validation step from the command line to what each part of the tracer needs. clap refuses
//! malformed values and flags that make no sense together (exit 2, one line); this step turns
//! what is left into settings, resolving what needs the system (a `--netns` path) before anything
//! is attached, so that no part reads the command line itself.
use std::{path::PathBuf, time::Duration};

use anyhow::Result;

use super::cli::{Cli, HookMode};
use crate::{
    filter::Filter,
    find::FindingsConfig,
    kernel::kernel_log::KernelLogLevel,
    output::{connections::Selection, recorder::RecorderConfig},
};

/// What the kernel side is asked to do.
pub struct KernelSettings {
    pub ring_buffer_bytes: u32,
    pub tracefs: PathBuf,
    pub hook_mode: HookMode,
    pub kernel_log: KernelLogLevel,
}

/// `--json-out`.
pub struct JsonOut {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

/// Summary mode's settings (everything `--events` refuses).
pub struct SummarySettings {
    pub interval: Duration,
    pub max_connections: usize,
    pub findings: FindingsConfig,
    pub snapshots: bool,
    pub connections: Option<Selection>,
    pub recorder: Option<RecorderConfig>,
    pub timeline: Option<PathBuf>,
    pub timeline_window: Duration,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

pub struct Settings {
    pub filter: Filter,
    pub kernel: KernelSettings,
    pub json: bool,
    pub json_out: Option<JsonOut>,
    pub duration: Option<Duration>,
    /// Whether other namespaces may be entered (snapshots, link changes): not with `--no-snapshot`.
    pub enter_namespaces: bool,
    /// `None` with `--events`.
    pub summary: Option<SummarySettings>,
}

impl Settings {
    pub fn new(cli: &Cli) -> Result<Settings> {
        let summary = (!cli.events).then(|| SummarySettings {
            interval: cli.interval,
            max_connections: cli.max_connections,
            findings: FindingsConfig {
                stuck_after_ns: cli.stuck_after.as_nanos() as u64,
                time_wait_threshold: cli.time_wait_threshold,
                rst_threshold: cli.rst_threshold,
                ..FindingsConfig::default()
            },
            snapshots: !cli.no_snapshot,
            connections: cli.connections,
            recorder: cli.record_dir.clone().map(|dir| RecorderConfig {
                dir,
                window_ns: cli.record_window.as_nanos() as u64,
                max_events: cli.record_max_events,
                max_file_bytes: cli.record_max_bytes,
                max_files: cli.record_max_files,
            }),
            timeline: cli.timeline.clone(),
            timeline_window: cli.timeline_window,
            metrics_addr: cli.metrics_addr,
        });
        Ok(Settings {
            filter: cli.filter()?,
            kernel: KernelSettings {
                ring_buffer_bytes: cli.ring_buffer_size,
                tracefs: cli.tracefs.clone(),
                hook_mode: cli.hook_mode,
                kernel_log: cli.kernel_log,
            },
            json: cli.json,
            json_out: cli.json_out.clone().map(|path| JsonOut { path, max_bytes: cli.json_out_max_bytes, keep: cli.json_out_keep }),
            duration: cli.duration,
            enter_namespaces: !cli.no_snapshot,
            summary,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn settings(args: &[&str]) -> Settings {
        Settings::new(&Cli::try_parse_from(std::iter::once("tracer").chain(args.iter().copied())).unwrap()).unwrap()
    }

    #[test]
    fn events_mode_has_no_summary_settings_and_summary_flags_land_where_they_are_used() {
        assert!(settings(&["--events", "-L", "443"]).summary.is_none());
        let summary = settings(&["--stuck-after", "5", "--record-dir", "/tmp/r", "--no-snapshot"]);
        assert!(!summary.enter_namespaces);
        let summary = summary.summary.expect("summary mode");
        assert_eq!(summary.findings.stuck_after_ns, 5_000_000_000);
        assert_eq!(summary.recorder.map(|recorder| recorder.dir), Some(PathBuf::from("/tmp/r")));
        assert!(!summary.snapshots);
    }

    #[test]
    fn a_ring_buffer_that_is_no_power_of_two_is_a_bad_command_line() {
        let error = Cli::try_parse_from(["tracer", "--ring-buffer-size", "5000"]).map(|_| ()).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(error.to_string().contains("power of two"), "{error}");
        assert_eq!(settings(&["--ring-buffer-size", "16384"]).kernel.ring_buffer_bytes, 16384);
    }
}
