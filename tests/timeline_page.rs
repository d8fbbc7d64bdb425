//! The timeline page over a long run, as an operator opens it the morning after: six hours of
//! one-minute intervals (synthesized through the same `Timeline` the tracer feeds), rendered in
//! headless Chromium. It draws in under a second, counts are steps across their interval, every
//! series of a chart has its own colour (none a marker's), the y axes carry ticks, and the counts a
//! chart shows add up to what was observed. The screenshot is kept in target/test-artifacts/
//! (docs/timeline-6h.png is a copy). Needs `chromium`, not root.
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    time::Duration,
};

use support::chromium;
use tracer::{
    find::{Finding, FindingKind, PeerKey, Picture},
    kernel::{
        clock::Clock,
        links::{LinkChange, LinkWhat},
    },
    output::timeline::{Page, Timeline},
    track::{fixtures, Observation, Role, Tuple},
};

const MINUTE_NS: u64 = 60_000_000_000;
const INTERVALS: u64 = 6 * 60;

fn reset_finding(at_ns: u64, count: u64) -> Finding {
    let key = PeerKey::new(Role::Server, 1, "10.0.0.1:8080".parse().unwrap(), "10.0.0.7:40000".parse().unwrap());
    let detail = format!("{count} RST(s) from the peer 10.0.0.7:* to us (10.0.0.1:8080)");
    Finding { count, total: count, detail, began_ns: Some(at_ns), ..fixtures::finding(FindingKind::RstFromPeer, key) }
}

/// Six hours of a server's life: a daily-looking load, a link flap every 90 minutes with an RST
/// storm after it, refused resets and drops now and then. Returns the page and the number of
/// RSTs received it was fed.
fn six_hours() -> (String, u64) {
    let clock = Clock::now();
    let mut timeline = Timeline::new(None, Page::default(), Duration::from_secs(6 * 3600));
    let tuple = Tuple { netns: 1, local: "10.0.0.1:8080".parse().unwrap(), remote: "10.0.0.7:40000".parse().unwrap() };
    let mut received = 0;
    let start_ns = 1_000 * MINUTE_NS;
    for minute in 1..=INTERVALS {
        let now_ns = start_ns + minute * MINUTE_NS;
        let load = 200.0 + (minute as f64 / 30.0).sin().abs() * 600.0;
        let flap = minute % 90 == 45;
        if flap {
            let change = |what, at_ns| LinkChange {
                at_ns,
                netns: 1,
                ifindex: 2,
                ifname: "eth0".into(),
                what,
                operstate: if what == LinkWhat::Down { "down" } else { "up" },
                carrier: what != LinkWhat::Down,
            };
            timeline.link(&change(LinkWhat::Down, now_ns - 40_000_000_000), &clock);
            timeline.link(&change(LinkWhat::Up, now_ns - 10_000_000_000), &clock);
        }
        let resets = if flap { 40 } else { minute % 7 };
        for _ in 0..resets {
            timeline.observe(&Observation::ResetReceived { tuple, role: Role::Server, process: None, at_ns: now_ns - MINUTE_NS / 2 });
        }
        received += resets;
        if minute % 11 == 0 {
            timeline.observe(&Observation::ResetRefused { tuple, role: Role::Server, at_ns: now_ns - 1 });
            timeline.observe(&Observation::Dropped {
                tuple,
                role: Role::Server,
                reason: "NETFILTER_DROP".into(),
                incoming: true,
                socketless: false,
                at_ns: now_ns - 1,
            });
        }
        let states =
            BTreeMap::from([("ESTABLISHED", load as u64), ("TIME_WAIT", (load * 3.0) as u64), ("CLOSE_WAIT", minute / 40), ("LISTEN", 4)]);
        let closes = BTreeMap::from([("graceful", (load * 2.0) as u64), ("reset_by_peer", resets), ("peer_silent", minute % 13 / 12)]);
        let findings = if flap { vec![reset_finding(now_ns - 9 * MINUTE_NS / 10, resets)] } else { vec![] };
        let picture = Picture { states, closes, findings, ..Picture::default() };
        timeline.summary(now_ns, Duration::from_secs(60), &picture, u64::from(minute == 200) * 12, &clock);
    }
    (timeline.render(&clock, start_ns + (INTERVALS + 1) * MINUTE_NS), received)
}

/// The value of `name="…"` in a tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[start..].split('"').next()
}

/// The opening tags in `dom` that carry `marker`.
fn tags<'a>(dom: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> {
    dom.split('<').filter(move |tag| tag.contains(marker))
}

#[test]
fn six_hours_of_one_minute_intervals_render_in_under_a_second_and_read_well() {
    let (html, received) = six_hours();
    let data_json = html.split(r#"<script id="data" type="application/json">"#).nth(1).unwrap().split("</script>").next().unwrap();
    let data: serde_json::Value = serde_json::from_str(&data_json.replace("<\\/", "</")).unwrap();
    let points = data["points"].as_array().unwrap();
    assert_eq!(points.len() as u64, INTERVALS);
    let charted: u64 = points.iter().map(|point| point["rst_received"].as_u64().unwrap()).sum();
    assert_eq!(charted, received, "the chart's RSTs received add up to those observed");
    let storm = points.iter().find(|point| point["rst_received"] == 40).expect("the storm's interval");
    assert_eq!(storm["t"].as_i64().unwrap() - storm["s"].as_i64().unwrap(), 60_000, "a count spans its interval");
    assert!(points.iter().any(|point| point["rst_refused"] == 1 && point["dropped_here"] == 1), "refused resets and drops are charted");

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    fs::create_dir_all(&artifacts).unwrap();
    let page = artifacts.join("timeline-6h.html");
    fs::write(&page, &html).unwrap();
    let rendered = chromium(&page, &["--window-size=1400,1000", "--dump-dom"]);
    let dom = String::from_utf8_lossy(&rendered.stdout);
    let console = String::from_utf8_lossy(&rendered.stderr);
    assert!(dom.contains(r#"data-rendered="ok""#) && !console.contains("Uncaught"), "the script finished: {console}");
    let body = tags(&dom, "data-rendered").next().unwrap();
    let draw_ms: f64 = attribute(body, "data-draw-ms").expect("the page times its drawing").parse().unwrap();
    let parse_ms: f64 = attribute(body, "data-parse-ms").unwrap().parse().unwrap();
    assert!(draw_ms + parse_ms < 1000.0, "six hours drew in {draw_ms} ms (+{parse_ms} ms parsing)");

    for chart in ["states", "closes", "trouble"] {
        let svg = dom.split(&format!(r#"data-chart="{chart}""#)).nth(1).unwrap().split("</svg>").next().unwrap();
        let colours: Vec<&str> = tags(svg, "data-series=").filter_map(|tag| attribute(tag, "data-colour")).collect();
        let distinct: BTreeSet<&str> = colours.iter().copied().collect();
        assert_eq!(distinct.len(), colours.len(), "{chart}: one colour per series: {colours:?}");
        for marker in ["#1f6feb", "#c62828", "#8e24aa"] {
            assert!(!distinct.contains(marker), "{chart}: a series shares a marker's colour {marker}");
        }
        let ticks: Vec<u64> = tags(svg, "data-tick=").filter_map(|tag| attribute(tag, "data-tick")?.parse().ok()).collect();
        assert!(ticks.len() >= 3 && ticks[0] == 0, "{chart}: a y axis with ticks: {ticks:?}");
        let steps = chart != "states";
        assert_eq!(svg.contains(r#"data-drawn="steps""#), steps, "{chart}: counts per interval are steps");
        if steps {
            let path = tags(svg, r#"data-series="#).next().unwrap();
            assert!(path.starts_with("path") && attribute(path, "d").is_some_and(|d| d.contains('H')), "{chart}: a step path: {path}");
        }
    }
    let everywhere: Vec<(&str, &str)> =
        tags(&dom, "data-series=").filter_map(|tag| Some((attribute(tag, "data-series")?, attribute(tag, "data-colour")?))).collect();
    let colours: BTreeSet<&str> = everywhere.iter().map(|(_, colour)| *colour).collect();
    assert_eq!(colours.len(), everywhere.len(), "a colour means one series on the whole page: {everywhere:?}");
    assert_eq!(tags(&dom, r#"data-marker="link""#).count(), 4 * 2 * 3, "four flaps, down and up, on each of three charts");
    assert_eq!(tags(&dom, r#"data-marker="finding""#).count(), 4 * 3, "the storm after each flap");

    let screenshot = artifacts.join("timeline-6h.png");
    chromium(&page, &["--window-size=1400,900", &format!("--screenshot={}", screenshot.display())]);
    assert!(fs::metadata(&screenshot).is_ok_and(|meta| meta.len() > 10_000), "a screenshot of the page");
}
