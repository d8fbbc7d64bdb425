//! The columns of the human lines: padding what was written in place (no string per column,
//! at thousands of lines a second), and the short forms of durations and sizes.
use std::{borrow::Cow, fmt::Write as _, net::SocketAddr};

/// Characters written from `start`: bytes, where they are all ASCII (as addresses and numbers are).
fn written(line: &str, start: usize) -> usize {
    let text = &line[start..];
    if text.is_ascii() {
        text.len()
    } else {
        text.chars().count()
    }
}

/// `count` spaces, without an allocation for the widths the lines use.
fn spaces(count: usize) -> Cow<'static, str> {
    const SPACES: &str = "                                ";
    match SPACES.get(..count) {
        Some(spaces) => Cow::Borrowed(spaces),
        None => Cow::Owned(" ".repeat(count)),
    }
}

/// Pads what was written to `line` from `start` with spaces after it, to `width` characters.
pub fn pad_after(line: &mut String, start: usize, width: usize) {
    let padding = width.saturating_sub(written(line, start));
    line.push_str(&spaces(padding));
}

/// Pads what was written to `line` from `start` with spaces before it, to `width` characters.
pub fn pad_before(line: &mut String, start: usize, width: usize) {
    let padding = width.saturating_sub(written(line, start));
    if padding > 0 {
        line.insert_str(start, &spaces(padding));
    }
}

/// 0.3ms, 12ms, 4.2s, 3m10s: from the microsecond count, the last digit rounded half to even.
/// Integer arithmetic: formatting floats was a sixth of a `--connections` line's cost.
pub fn write_short_duration(line: &mut String, ms: f64) {
    // Half away from zero, as `f64::round` (a libm call) would: the value is not negative.
    let us = (ms.max(0.0) * 1000.0 + 0.5) as u64;
    match us {
        us if us < 1_000 => write_tenths(line, us, 1_000, "ms"),
        us if us < 1_000_000 => {
            write_integer(line, rounded(us, 1_000));
            line.push_str("ms");
        }
        us if us < 60_000_000 => write_tenths(line, us, 1_000_000, "s"),
        us => {
            write_integer(line, us / 60_000_000);
            line.push('m');
            write_integer(line, rounded(us % 60_000_000, 1_000_000));
            line.push('s');
        }
    }
}

/// 512, 1.2K, 3.4M, 5.6G (binary units), the tenth rounded half to even.
pub fn write_short_bytes(line: &mut String, bytes: u64) {
    match bytes {
        bytes if bytes < 1 << 10 => write_integer(line, bytes),
        bytes if bytes < 1 << 20 => write_tenths(line, bytes, 1 << 10, "K"),
        bytes if bytes < 1 << 30 => write_tenths(line, bytes, 1 << 20, "M"),
        bytes => write_tenths(line, bytes, 1 << 30, "G"),
    }
}

/// `value / unit` to one decimal, then `suffix`.
fn write_tenths(line: &mut String, value: u64, unit: u64, suffix: &str) {
    // Whole units, then the tenths of the rest (which fit 64 bits whatever `value`); whole units
    // are an even number of tenths, so rounding the rest's tenths half to even rounds the value's.
    let tenths = rounded(value % unit * 10, unit);
    write_integer(line, value / unit + tenths / 10);
    line.push('.');
    line.push(char::from(b'0' + (tenths % 10) as u8));
    line.push_str(suffix);
}

/// `value / unit`, rounded half to even.
fn rounded(value: u64, unit: u64) -> u64 {
    let (quotient, remainder) = (value / unit, value % unit);
    let up = match remainder.cmp(&(unit - remainder)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => quotient & 1 == 1,
        std::cmp::Ordering::Less => false,
    };
    quotient + u64::from(up)
}

/// A decimal number, without the formatting machinery.
pub fn write_integer(line: &mut String, value: u64) {
    line.push_str(itoa::Buffer::new().format(value));
}

/// An endpoint as `SocketAddr`'s `Display` writes it (an IPv4 one without the formatting
/// machinery, which took a tenth of a `--connections` line).
pub fn write_endpoint(line: &mut String, endpoint: SocketAddr) {
    match endpoint {
        SocketAddr::V4(endpoint) => {
            for (index, octet) in endpoint.ip().octets().into_iter().enumerate() {
                if index > 0 {
                    line.push('.');
                }
                write_integer(line, u64::from(octet));
            }
            line.push(':');
            write_integer(line, u64::from(endpoint.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(line, "{endpoint}");
        }
    }
}

/// An endpoint in a JSON line, as [`write_endpoint`] writes it.
pub fn serialize_endpoint<S: serde::Serializer>(endpoint: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
    let mut text = String::with_capacity(48);
    write_endpoint(&mut text, *endpoint);
    serializer.serialize_str(&text)
}

/// A value in a JSON line as its `Display` writes it, straight into the line.
pub fn serialize_displayed<T: std::fmt::Display, S: serde::Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
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

    #[test]
    fn the_integer_forms_write_what_the_formatting_machinery_did() {
        let mut line = String::new();
        // Sizes: bytes / 1024 is exact in binary, so `{:.1}` rounded the exact value half to even.
        for bytes in (0..3_000_000).step_by(37).chain([u64::MAX, 1 << 40, 1_048_575, 1_048_576, 1_023, 1_024, 1_126]) {
            line.clear();
            write_short_bytes(&mut line, bytes);
            let expected = match bytes {
                bytes if bytes < 1024 => format!("{bytes}"),
                bytes if bytes < 1 << 20 => format!("{:.1}K", bytes as f64 / 1024.0),
                bytes if bytes < 1 << 30 => format!("{:.1}M", bytes as f64 / (1 << 20) as f64),
                bytes => format!("{:.1}G", bytes as f64 / (1 << 30) as f64),
            };
            assert_eq!(line, expected, "{bytes} bytes");
        }
        // Durations: the same but where a tie in microseconds met a float just off it.
        for us in (0..200_000_000_u64).step_by(9_973).chain([0, 999, 1_000, 999_499, 999_500, 59_999_999, 60_000_000]) {
            let ms = ((us * 1_000) as f64 / 1e3).round() / 1e3; // as `millis` makes them from nanoseconds
            line.clear();
            write_short_duration(&mut line, ms);
            let expected = match ms {
                ms if ms < 1.0 => format!("{ms:.1}ms"),
                ms if ms < 1000.0 => format!("{ms:.0}ms"),
                ms if ms < 60_000.0 => format!("{:.1}s", ms / 1000.0),
                ms => format!("{}m{:.0}s", (ms / 60_000.0) as u64, (ms % 60_000.0) / 1000.0),
            };
            let tie = us % 100 == 50 || us % 1_000 == 500 || us % 100_000 == 50_000 || us % 1_000_000 == 500_000;
            if !tie {
                assert_eq!(line, expected, "{us} µs");
            }
        }
        for endpoint in ["0.0.0.0:0", "255.255.255.255:65535", "10.1.20.3:443", "[fd00::1]:80", "[::ffff:10.0.0.1]:8080"] {
            let endpoint: SocketAddr = endpoint.parse().unwrap();
            line.clear();
            write_endpoint(&mut line, endpoint);
            assert_eq!(line, endpoint.to_string());
        }
    }
}
