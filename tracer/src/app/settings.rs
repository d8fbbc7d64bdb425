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
    pub skip_hooks: Vec<&'static str>,
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
                skip_hooks: cli.skip_hooks.clone(),
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
    fn only_optional_hooks_can_be_left_off_by_name() {
        let skipped = settings(&["--skip-hook", "netif_receive_skb", "--skip-hook", "kfree_skb"]).kernel.skip_hooks;
        assert_eq!(skipped, ["netif_receive_skb", "kfree_skb"]);
        for (name, says) in [("inet_sock_set_state", "is required"), ("tcp_prob", "the optional ones: tcp_send_reset")] {
            let error = Cli::try_parse_from(["tracer", "--skip-hook", name]).map(|_| ()).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(error.to_string().contains(says), "{error}");
        }
    }

    #[test]
    fn a_ring_buffer_that_is_no_power_of_two_is_a_bad_command_line() {
        let error = Cli::try_parse_from(["tracer", "--ring-buffer-size", "5000"]).map(|_| ()).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(error.to_string().contains("power of two"), "{error}");
        assert_eq!(settings(&["--ring-buffer-size", "16384"]).kernel.ring_buffer_bytes, 16384);
    }

    /// Every option that takes a value, with what it may be once accepted.
    const VALUED: [(&str, Accepted); 14] = [
        ("--duration", Accepted::Seconds(0.1, 365.0 * 86_400.0)),
        ("--interval", Accepted::Seconds(0.1, 86_400.0)),
        ("--stuck-after", Accepted::Seconds(0.1, 365.0 * 86_400.0)),
        ("--timeline-window", Accepted::Seconds(1.0, 30.0 * 86_400.0)),
        ("--record-window", Accepted::Seconds(0.1, 86_400.0)),
        ("--ring-buffer-size", Accepted::Count(16384, 1 << 30)),
        ("--time-wait-threshold", Accepted::Count(1, 1 << 32)),
        ("--rst-threshold", Accepted::Count(1, 1 << 32)),
        ("--json-out-max-bytes", Accepted::Count(4096, 1 << 40)),
        ("--json-out-keep", Accepted::Count(1, 1000)),
        ("--record-max-events", Accepted::Count(1, 10_000_000)),
        ("--record-max-bytes", Accepted::Count(4096, 1 << 32)),
        ("--record-max-files", Accepted::Count(1, 100_000)),
        ("--max-connections", Accepted::Count(1, 10_000_000)),
    ];

    #[derive(Clone, Copy)]
    enum Accepted {
        Seconds(f64, f64),
        Count(u64, u64),
    }

    /// The value the command line gave `flag`, as the text it would print back.
    fn given(cli: &Cli, flag: &str) -> f64 {
        match flag {
            "--duration" => cli.duration.map_or(0.0, |duration| duration.as_secs_f64()),
            "--interval" => cli.interval.as_secs_f64(),
            "--stuck-after" => cli.stuck_after.as_secs_f64(),
            "--timeline-window" => cli.timeline_window.as_secs_f64(),
            "--record-window" => cli.record_window.as_secs_f64(),
            "--ring-buffer-size" => f64::from(cli.ring_buffer_size),
            "--time-wait-threshold" => cli.time_wait_threshold.unwrap_or(0) as f64,
            "--rst-threshold" => cli.rst_threshold as f64,
            "--json-out-max-bytes" => cli.json_out_max_bytes as f64,
            "--json-out-keep" => f64::from(cli.json_out_keep),
            "--record-max-events" => cli.record_max_events as f64,
            "--record-max-bytes" => cli.record_max_bytes as f64,
            "--record-max-files" => cli.record_max_files as f64,
            "--max-connections" => cli.max_connections as f64,
            _ => unreachable!("{flag}"),
        }
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        /// Numbers an operator (or a typo) might give: tiny, huge, negative, not numbers at all.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<f64>().prop_map(|number| number.to_string()),
                (-40i32..40).prop_map(|exponent| format!("1e{exponent}")),
                any::<u64>().prop_map(|number| number.to_string()),
                (0u64..70_000).prop_map(|number| number.to_string()),
                Just("NaN".to_string()),
                Just("inf".to_string()),
                Just("-0".to_string()),
                "\\PC{0,12}",
            ]
        }

        proptest! {
            #[test]
            fn any_value_of_any_option_is_refused_or_honoured_never_a_panic(which in 0..VALUED.len(), text in value()) {
                let (flag, accepted) = VALUED[which];
                let Ok(cli) = Cli::try_parse_from(["tracer", flag, &text]) else { return Ok(()) };
                // What the run does with each value first: settings, timers and deadlines.
                let settings = Settings::new(&cli).expect("settings from an accepted command line");
                if let Some(summary) = &settings.summary {
                    let _ = tokio::time::Instant::now() + summary.interval;
                }
                if let Some(duration) = cli.duration {
                    let _ = std::time::Instant::now() + duration;
                }
                let value = given(&cli, flag);
                match accepted {
                    Accepted::Seconds(min, max) => prop_assert!((min..=max).contains(&value), "{flag} {text} gave {value}"),
                    Accepted::Count(min, max) => prop_assert!((min as f64..=max as f64).contains(&value), "{flag} {text} gave {value}"),
                }
            }
        }
    }
}
