//! `--kernel-log LEVEL`: the kernel programs' aya-log records, as `tracer: kernel:` lines on
//! stderr. Off by default, and then free: the level is a constant of the loaded object, so the
//! verifier drops the logging code, and its ring buffer is shrunk to one page. Whatever the level,
//! the paths that log are also counted (`kernel_misses` in every summary).
use std::io::Write;

use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;

/// `--kernel-log`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelLogLevel {
    #[default]
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

impl KernelLogLevel {
    pub fn name(self) -> &'static str {
        match self {
            KernelLogLevel::Off => "off",
            KernelLogLevel::Error => "error",
            KernelLogLevel::Warn => "warn",
            KernelLogLevel::Info => "info",
            KernelLogLevel::Debug => "debug",
        }
    }

    /// aya-log's `AYA_LOG_LEVEL`: a record is kept when its level is at most this (Error = 1).
    fn aya_level(self) -> u8 {
        match self {
            KernelLogLevel::Off => 0,
            KernelLogLevel::Error => aya_log::Level::Error as u8,
            KernelLogLevel::Warn => aya_log::Level::Warn as u8,
            KernelLogLevel::Info => aya_log::Level::Info as u8,
            KernelLogLevel::Debug => aya_log::Level::Debug as u8,
        }
    }
}

/// The object's log buffer when nothing is logged: one page, the smallest ring buffer.
const IDLE_LOG_BYTES: u32 = 4096;

/// Sets the object's log level before it is loaded.
pub fn configure<'a>(loader: &mut EbpfLoader<'a>, level: &'a u8, log_level: KernelLogLevel) {
    loader.override_global(aya_log::LEVEL, level, true);
    if log_level == KernelLogLevel::Off {
        loader.map_max_entries("AYA_LOGS", IDLE_LOG_BYTES);
    }
}

/// The level byte for [`configure`] (it must outlive the loader).
pub fn level_byte(level: KernelLogLevel) -> u8 {
    level.aya_level()
}

/// Reads the programs' log records; `None` when logging is off.
pub struct KernelLog(EbpfLogger<StderrLines>);

impl KernelLog {
    pub fn start(ebpf: &mut Ebpf, level: KernelLogLevel) -> anyhow::Result<Option<KernelLog>> {
        if level == KernelLogLevel::Off {
            return Ok(None);
        }
        let logger =
            EbpfLogger::init_with_logger(ebpf, StderrLines).map_err(|error| anyhow::anyhow!("cannot read the kernel log: {error}"))?;
        Ok(Some(KernelLog(logger)))
    }

    /// Prints every record waiting.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

/// One line per record on stderr, marked as the kernel programs'.
pub struct StderrLines;

impl StderrLines {
    fn line(record: &log::Record) -> String {
        format!("tracer: kernel: {} {}", record.level().as_str().to_lowercase(), record.args())
    }
}

impl log::Log for StderrLines {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let _ = writeln!(std::io::stderr().lock(), "{}", StderrLines::line(record));
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_aya_log_and_off_keeps_nothing() {
        assert_eq!(level_byte(KernelLogLevel::Off), 0);
        assert!(level_byte(KernelLogLevel::Error) < level_byte(KernelLogLevel::Warn));
        assert!(level_byte(KernelLogLevel::Info) < level_byte(KernelLogLevel::Debug));
    }

    #[test]
    fn a_record_is_one_marked_line() {
        let line = StderrLines::line(
            &log::Record::builder().level(log::Level::Warn).args(format_args!("socket_unreadable: the event is not sent")).build(),
        );
        assert_eq!(line, "tracer: kernel: warn socket_unreadable: the event is not sent");
    }
}
