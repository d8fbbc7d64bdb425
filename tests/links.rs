//! Link changes beside the sockets: a veth taken down and up under live traffic shows up as link
//! events, as a `links` line in the summary, and in the finding it explains ("it began 0.4 s
//! after vc7 went down", or "before ...: the traffic died first"), which is how the "interface
//! down" incident was finally told apart from traffic that died first.
mod support;

use std::{
    fs,
    io::Write,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// How long the test keeps the link down.
const DOWN_FOR: Duration = Duration::from_secs(5);

#[test]
fn a_veth_taken_down_under_traffic_is_a_link_event_a_summary_line_and_the_cause_of_the_silence() {
    require_root();
    let link = Link::new();
    let page = std::env::temp_dir().join(format!("tracer-timeline-{}.html", std::process::id()));
    let summaries = Tracer::start(&["--interval", "1", "--netns", &link.client.path(), "--timeline", page.to_str().unwrap()]);
    let events = Tracer::start(&["--events", "--netns", &link.client.path()]);
    let listener = link.listen(link.server_ip);
    let mut client = link.connect(listener.local_addr().unwrap()).unwrap();
    let (_accepted, _) = listener.accept().unwrap();
    set_option(&client, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 3000 as libc::c_uint);
    // A summary after the connection: the watcher has long had the namespace's links by then.
    summaries.wait_for("a summary with the connection", |line| line["states"]["ESTABLISHED"] == 1);

    // The server's end goes down: the client's veth loses its carrier and its operational state,
    // and what the client sends from now on goes nowhere.
    link.server.exec(&["ip", "link", "set", &link.server_dev, "down"]);
    let down_at = Instant::now();
    thread::sleep(Duration::from_millis(300));
    client.write_all(b"anyone there?").unwrap();
    // Where the kernel names its drops (kfree_skb with reasons), what the client sent died in
    // this host (the neighbour behind the dead link never answered: NEIGH_FAILED) and the
    // connection is `dropped_here`; elsewhere its end reads as the peer's silence.
    let drops_seen = summaries.announced().mode("kfree_skb") == Some("tp_btf");
    let kind = if drops_seen { "dropped_here" } else { "peer_silent" };
    let silent = summaries.wait_long("the connection to time out", 20, |line| {
        line["findings"].as_array().is_some_and(|findings| findings.iter().any(|f| f["kind"] == kind))
    });
    let finding = silent["findings"].as_array().unwrap().iter().find(|f| f["kind"] == kind).unwrap().clone();
    thread::sleep(DOWN_FOR.saturating_sub(down_at.elapsed()));
    link.server.exec(&["ip", "link", "set", &link.server_dev, "up"]);
    if drops_seen {
        assert!(finding["detail"].as_str().unwrap().contains("NEIGH_FAILED to the peer"), "{finding}");
    }

    // The finding names the link nearest its beginning: the first retransmission, about 0.3 s
    // (the write) plus one RTO after the link went (the kernel announces the client's carrier
    // loss up to a second late, so the retransmission may come first); or the first drop, when
    // the neighbour gives up, about three seconds of solicitations after the write.
    let near = &finding["near_link"];
    assert_eq!((near["ifname"].as_str(), near["what"].as_str()), (Some(&*link.client_dev), Some("down")), "{finding}");
    let seconds = near["seconds"].as_f64().unwrap();
    let window = if drops_seen { -1.5..6.0 } else { -1.5..3.0 };
    assert!(window.contains(&seconds), "began {seconds} s from the link going down: {finding}");
    let detail = finding["detail"].as_str().unwrap();
    let said = if seconds >= 0.0 { format!("it began {seconds:.1} s after") } else { format!("it began {:.1} s before", -seconds) };
    assert!(detail.contains(&format!("{said} {} went down", link.client_dev)), "{detail}");

    // The summaries list the link going down, then coming back after about DOWN_FOR.
    let back = summaries.wait_for("the link back up in a summary", |line| {
        line["links"].as_array().is_some_and(|links| links.iter().any(|l| l["ifname"] == link.client_dev.as_str() && l["what"] == "up"))
    });
    let up = back["links"].as_array().unwrap().iter().find(|l| l["what"] == "up").unwrap();
    let down_for = up["down_for_s"].as_f64().expect("how long it was down");
    assert!((DOWN_FOR.as_secs_f64() - 1.0..DOWN_FOR.as_secs_f64() + 2.0).contains(&down_for), "{up}");
    let lines = summaries.stop();
    let downs: Vec<&Value> = lines
        .iter()
        .flat_map(|line| line["links"].as_array().into_iter().flatten())
        .filter(|l| l["ifname"] == link.client_dev.as_str() && l["what"] == "down")
        .collect();
    assert_eq!(downs.len(), 1, "one down, one up: {downs:?}");
    the_timeline_shows_it_in_a_browser(&page, &link.client_dev, kind);

    // --events: the same two changes as lines of kind `link`, in order, with the device's state.
    events.wait_for("the link back up as an event", |line| line["kind"] == "link" && line["what"] == "up");
    // (what, operationally up, namespace, carrier); a veth whose peer went reports `down` or
    // `lowerlayerdown` depending on the kernel.
    let changes: Vec<(String, bool, String, bool)> = events
        .stop()
        .iter()
        .filter(|line| line["kind"] == "link" && line["ifname"] == link.client_dev.as_str())
        .map(|line| (line["what"].as_str().unwrap().into(), line["operstate"] == "up", line["netns"].to_string(), line["carrier"] == true))
        .collect();
    let netns = link.client.inode().to_string();
    assert_eq!(
        changes,
        [("down".into(), false, netns.clone(), false), ("up".into(), true, netns, true)],
        "the client's veth, as the kernel reported it"
    );
    drop(client);
}

/// Loads the page the scenario wrote in headless Chromium (Debian's `chromium`) and reads the
/// rendered DOM: the series and markers of the scenario are drawn, and the script ran without an
/// error. A screenshot is kept in target/test-artifacts/ (and is the README's picture).
/// `kind`: the finding (and the close class) the connection's end is drawn as.
fn the_timeline_shows_it_in_a_browser(page: &Path, device: &str, kind: &str) {
    let browser = |args: &[&str]| chromium(page, args);
    let rendered = browser(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&rendered.stdout);
    let console = String::from_utf8_lossy(&rendered.stderr);
    assert!(dom.contains(r#"data-rendered="ok">"#), "the script finished without an error: {console}\n{dom}");
    assert!(!console.contains("Uncaught"), "{console}");
    for drawn in [
        r#"data-chart="states""#.to_string(),
        r#"data-series="ESTABLISHED""#.to_string(),
        format!(r#"data-series="{kind}""#),
        r#"data-series="syn_retransmits""#.to_string(),
        format!(r#"data-marker="link" data-label="{device} down""#),
        format!(r#"data-marker="link" data-label="{device} up""#),
        format!(r#"data-marker="finding" data-label="{kind}"#),
    ] {
        assert!(dom.contains(&drawn), "{drawn} is not drawn:\n{dom}");
    }
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("timeline.png");
    browser(&["--window-size=1300,1000", &format!("--screenshot={}", screenshot.display())]);
    assert!(fs::metadata(&screenshot).is_ok_and(|meta| meta.len() > 10_000), "a screenshot of the page");
    fs::remove_file(page).unwrap();
}
