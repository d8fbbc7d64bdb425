//! The columns of the human lines: padding what was written in place (no string per column,
//! at thousands of lines a second), and the short forms of durations and sizes.
use std::fmt::Write as _;

/// Pads what was written to `line` from `start` with spaces after it, to `width` characters.
pub fn pad_after(line: &mut String, start: usize, width: usize) {
    let written = line[start..].chars().count();
    line.extend(std::iter::repeat_n(' ', width.saturating_sub(written)));
}

/// Pads what was written to `line` from `start` with spaces before it, to `width` characters.
pub fn pad_before(line: &mut String, start: usize, width: usize) {
    let written = line[start..].chars().count();
    if written < width {
        line.insert_str(start, &" ".repeat(width - written));
    }
}

/// 0.3ms, 12ms, 4.2s, 3m10s.
pub fn write_short_duration(line: &mut String, ms: f64) {
    let _ = match ms {
        ms if ms < 1.0 => write!(line, "{ms:.1}ms"),
        ms if ms < 1000.0 => write!(line, "{ms:.0}ms"),
        ms if ms < 60_000.0 => write!(line, "{:.1}s", ms / 1000.0),
        ms => write!(line, "{}m{:.0}s", (ms / 60_000.0) as u64, (ms % 60_000.0) / 1000.0),
    };
}

/// 512, 1.2K, 3.4M, 5.6G.
pub fn write_short_bytes(line: &mut String, bytes: u64) {
    let _ = match bytes {
        bytes if bytes < 1024 => write!(line, "{bytes}"),
        bytes if bytes < 1 << 20 => write!(line, "{:.1}K", bytes as f64 / 1024.0),
        bytes if bytes < 1 << 30 => write!(line, "{:.1}M", bytes as f64 / (1 << 20) as f64),
        bytes => write!(line, "{:.1}G", bytes as f64 / (1 << 30) as f64),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_at_a_glance() {
        let written = |write: &dyn Fn(&mut String)| {
            let mut line = String::new();
            write(&mut line);
            line
        };
        let durations = [0.04, 12.4, 4200.0, 190_000.0].map(|ms| written(&|line| write_short_duration(line, ms)));
        assert_eq!(durations, ["0.0ms", "12ms", "4.2s", "3m10s"]);
        let sizes = [512, 1536, 3 << 20, 5 << 30].map(|bytes| written(&|line| write_short_bytes(line, bytes)));
        assert_eq!(sizes, ["512", "1.5K", "3.0M", "5.0G"]);
    }
}
