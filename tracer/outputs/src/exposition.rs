//! Which text format `/metrics` answers in. prometheus-client writes OpenMetrics, which Prometheus
//! asks for in its `Accept` header; `curl`, `promtool check metrics` and older agents read the
//! classic text format (0.0.4), which has no `# EOF` or `# UNIT` and names counters by their
//! `_total` series. So the scraper's `Accept` header decides, as content negotiation should.

/// A `/metrics` answer's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The format an `Accept` header prefers: OpenMetrics when it ranks it above the text format
/// (q-values; a missing q is 1), the text format otherwise, and for `*/*` or no header at all.
pub fn negotiate(accept: Option<&str>) -> Format {
    let mut best = (0.0_f32, Format::Text);
    let mut text_q = 0.0_f32;
    for entry in accept.unwrap_or("").split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts.filter_map(|param| param.strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" if q > best.0 => best = (q, Format::OpenMetrics),
            "text/plain" | "*/*" | "text/*" => text_q = text_q.max(q),
            _ => {}
        }
    }
    if best.1 == Format::OpenMetrics && best.0 > 0.0 && best.0 >= text_q {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Rewrites prometheus-client's OpenMetrics text as the classic text format: the `# EOF` and
/// `# UNIT` lines go, `_created` series go (0.0.4 has none), and a counter family's metadata
/// names its `_total` series, as 0.0.4 parsers expect.
pub fn to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name.to_string());
            }
        }
    }
    let is_counter = |name: &str| counters.iter().any(|counter| counter == name);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = match line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            Some(rest) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let keyword = &line[..7];
                if is_counter(name) {
                    format!("{keyword}{name}_total {tail}")
                } else {
                    line.to_string()
                }
            }
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                if name.strip_suffix("_created").is_some_and(is_counter) {
                    continue;
                }
                line.to_string()
            }
        };
        out.push_str(&rewritten);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_everything_else_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(negotiate(Some("application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::Text, "curl without -H");
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0")), Format::Text, "q=0 means not acceptable");
        assert_eq!(negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")), Format::Text);
    }

    #[test]
    fn the_text_format_names_counters_by_their_total_series_and_has_no_eof() {
        let openmetrics = "\
# HELP tcp_tracer_resets RST segments.
# TYPE tcp_tracer_resets counter
tcp_tracer_resets_total{direction=\"sent\"} 3
tcp_tracer_resets_created{direction=\"sent\"} 1700000000.0
# HELP tcp_tracer_sockets TCP sockets by state.
# TYPE tcp_tracer_sockets gauge
# UNIT tcp_tracer_sockets sockets
tcp_tracer_sockets{state=\"established\"} 2
# EOF
";
        let expected = "\
# HELP tcp_tracer_resets_total RST segments.
# TYPE tcp_tracer_resets_total counter
tcp_tracer_resets_total{direction=\"sent\"} 3
# HELP tcp_tracer_sockets TCP sockets by state.
# TYPE tcp_tracer_sockets gauge
tcp_tracer_sockets{state=\"established\"} 2
";
        assert_eq!(to_text(openmetrics), expected);
    }
}
