//! Pictures of a run: operations per second and latency over time, with the fault windows
//! shaded, as SVG a browser shows (written by hand: a few rectangles and polylines need no
//! plotting library).

use std::collections::BTreeMap;
use std::fmt::Write;

/// One completed operation: when it was invoked and completed (ns on the run's clock) and
/// how it ended (`ok`, `fail`, `info`).
#[derive(Debug, Clone)]
pub struct Op {
    /// Invoked at.
    pub invoked_ns: u64,
    /// Completed at.
    pub completed_ns: u64,
    /// `ok`, `fail` or `info`.
    pub kind: String,
}

/// A fault window: start and end (ns) and its name.
#[derive(Debug, Clone)]
pub struct Window {
    /// Started at.
    pub start_ns: u64,
    /// Healed at.
    pub end_ns: u64,
    /// The fault's name.
    pub name: String,
}

const W: f64 = 900.0;
const H: f64 = 260.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

/// Pairs invokes with completions from the history's JSON lines.
pub fn ops_from_history(lines: &str) -> Vec<Op> {
    let mut open: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for line in lines.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(p), Some(t), Some(kind)) = (
            e["process"].as_u64(),
            e["time_ns"].as_u64(),
            e["type"].as_str(),
        ) else {
            continue;
        };
        if kind == "invoke" {
            open.insert(p, t);
        } else if let Some(start) = open.remove(&p) {
            out.push(Op {
                invoked_ns: start,
                completed_ns: t,
                kind: kind.to_string(),
            });
        }
    }
    out
}

/// Fault windows from the timeline's JSON lines (a start without a stop ends at `end_ns`).
pub fn windows_from_timeline(lines: &str, end_ns: u64) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    for line in lines.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let t = e["time_ns"].as_u64().unwrap_or(0);
        let name = e["fault"].as_str().unwrap_or("?").to_string();
        match e["phase"].as_str() {
            Some("start") => out.push(Window {
                start_ns: t,
                end_ns,
                name,
            }),
            Some("stop") => {
                if let Some(w) = out.iter_mut().rev().find(|w| w.name == name) {
                    w.end_ns = t;
                }
            }
            _ => {}
        }
    }
    out
}

fn x_of(t_ns: u64, span_ns: u64) -> f64 {
    LEFT + (t_ns as f64 / span_ns.max(1) as f64) * (W - LEFT - 10.0)
}

fn frame(title: &str, y_label: &str, windows: &[Window], span_ns: u64, y_max: f64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    for w in windows {
        let (x0, x1) = (x_of(w.start_ns, span_ns), x_of(w.end_ns, span_ns));
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#f4c7c3" opacity="0.6"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            H - TOP - BOTTOM,
            w.name
        );
        let _ = write!(
            s,
            r##"<text x="{x0:.1}" y="{:.1}" fill="#a33" font-size="9">{}</text>"##,
            TOP + 10.0,
            w.name
        );
    }
    let base = H - BOTTOM;
    let _ = write!(
        s,
        r#"<line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="black"/>"#,
        W - 10.0
    );
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="14" font-size="13">{title}</text><text x="4" y="{TOP}" >{y_max:.0}</text><text x="4" y="{base}">0</text><text x="4" y="{:.0}">{y_label}</text>"#,
        TOP + 30.0
    );
    let secs = span_ns / 1_000_000_000;
    let step = (secs / 10).max(1);
    for t in (0..=secs).step_by(step as usize) {
        let x = x_of(t * 1_000_000_000, span_ns);
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}s</text>"#,
            base + 14.0
        );
    }
    s
}

fn polyline(points: &[(u64, f64)], span_ns: u64, y_max: f64, color: &str) -> String {
    let scale = (H - TOP - BOTTOM) / y_max.max(1.0);
    let pts: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x_of(*t, span_ns), H - BOTTOM - v * scale))
        .collect();
    format!(
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
        pts.join(" ")
    )
}

/// Operations completed per second, by outcome, over the run.
pub fn throughput_svg(ops: &[Op], windows: &[Window]) -> String {
    let span = ops.iter().map(|o| o.completed_ns).max().unwrap_or(1);
    let seconds = (span / 1_000_000_000 + 1) as usize;
    let mut per: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for o in ops {
        let s = (o.completed_ns / 1_000_000_000) as usize;
        per.entry(o.kind.as_str())
            .or_insert_with(|| vec![0.0; seconds])[s] += 1.0;
    }
    let y_max = per
        .values()
        .flat_map(|v| v.iter().copied())
        .fold(1.0, f64::max);
    let mut s = frame(
        "operations completed per second",
        "ops/s",
        windows,
        span,
        y_max,
    );
    let mut legend_y = TOP + 14.0;
    for (kind, color) in [("ok", "#2b7"), ("fail", "#c63"), ("info", "#36c")] {
        if let Some(v) = per.get(kind) {
            let points: Vec<(u64, f64)> = v
                .iter()
                .enumerate()
                .map(|(i, n)| (i as u64 * 1_000_000_000 + 500_000_000, *n))
                .collect();
            s += &polyline(&points, span, y_max, color);
            let _ = write!(
                s,
                r#"<text x="{}" y="{legend_y}" fill="{color}">{kind}</text>"#,
                W - 60.0
            );
            legend_y += 12.0;
        }
    }
    s + "</svg>\n"
}

/// Median and 99th percentile latency of the operations completed in each second (ms).
pub fn latency_svg(ops: &[Op], windows: &[Window]) -> String {
    let span = ops.iter().map(|o| o.completed_ns).max().unwrap_or(1);
    let mut per: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for o in ops {
        let ms = o.completed_ns.saturating_sub(o.invoked_ns) as f64 / 1e6;
        per.entry(o.completed_ns / 1_000_000_000)
            .or_default()
            .push(ms);
    }
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for (s, mut v) in per {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let t = s * 1_000_000_000 + 500_000_000;
        p50.push((t, at(0.5)));
        p99.push((t, at(0.99)));
    }
    let y_max = p99.iter().map(|(_, v)| *v).fold(1.0, f64::max);
    let mut s = frame(
        "latency per second (ms): p50, p99",
        "ms",
        windows,
        span,
        y_max,
    );
    s += &polyline(&p50, span, y_max, "#2b7");
    s += &polyline(&p99, span, y_max, "#c63");
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" fill="#2b7">p50</text><text x="{}" y="{}" fill="#c63">p99</text>"##,
        W - 60.0,
        TOP + 14.0,
        W - 60.0,
        TOP + 26.0
    );
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_and_a_timeline_become_pictures() {
        let history = r#"{"index":0,"type":"invoke","process":1,"time_ns":100,"wall_ms":0,"f":"txn","value":[]}
{"index":1,"type":"ok","process":1,"time_ns":2000000100,"wall_ms":0,"f":"txn","value":[]}
{"index":2,"type":"invoke","process":2,"time_ns":1000000000,"wall_ms":0,"f":"txn","value":[]}
{"index":3,"type":"info","process":2,"time_ns":3000000000,"wall_ms":0,"f":"txn","value":[]}"#;
        let ops = ops_from_history(history);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].kind, "info");
        let timeline = r#"{"time_ns":500000000,"phase":"start","fault":"kill","detail":"killed 1"}
{"time_ns":1500000000,"phase":"stop","fault":"kill","detail":"killed 1"}
{"time_ns":2500000000,"phase":"start","fault":"pause","detail":"paused 2"}"#;
        let windows = windows_from_timeline(timeline, 3_000_000_000);
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].end_ns, 1_500_000_000);
        assert_eq!(windows[1].end_ns, 3_000_000_000);
        for svg in [throughput_svg(&ops, &windows), latency_svg(&ops, &windows)] {
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
            assert!(svg.contains("<polyline") && svg.contains(">kill<"));
        }
    }
}
