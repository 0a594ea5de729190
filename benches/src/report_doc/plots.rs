//! The report's plots, drawn with `plotters` into SVG text.
//!
//! plotters is built with its SVG backend only and no font support (`ttf` off): the backend
//! writes each label as an SVG `<text>` element in `sans-serif` and leaves the glyphs to
//! whatever shows the file; plotters only estimates text widths for its layout. Nothing here
//! reads a system font, so the plots draw the same on any machine.
//!
//! Each plot first gathers its series from the [`Results`] (a scenario that did not run is a
//! point left out, not a zero), then draws them. Throughput and latency spread over orders
//! of magnitude, so those axes are logarithmic.

use std::path::Path;

use anyhow::{Context as _, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Results;
use crate::postgres_peer;

/// Width and height of every plot, pixels.
const SIZE: (u32, u32) = (900, 520);
/// Events per append in the batch-size sweep, and the scenarios' name suffix.
const BATCHES: [u64; 4] = [1, 10, 100, 1000];
/// The latency plot's writers: x position, axis label, scenario.
const WRITERS: [(f64, &str, &str); 3] = [
    (0.0, "1 connection × 100 events", "client_append_batch100"),
    (1.0, "16 connections × 100", "client_append_batch100_c16"),
    (2.0, "64 connections × 1", "client_append_concurrent64"),
];
/// The scenario of 64 writers sharing one connection, drawn beside the 64-connection one.
const SHARED64: &str = "client_append_shared64";
/// Latency percentiles drawn: legend name, field.
const PERCENTILES: [(&str, &str); 3] = [("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")];
/// Short names of the workloads Quiver and PostgreSQL both run, for the bar plot's axis.
const POSTGRES_LABELS: &[(&str, &str)] = &[
    ("client_append_batch100", "100/append, 1 conn"),
    ("client_append_batch100_c16", "100/append, 16 conns"),
    ("client_append_concurrent64", "1/append, 64 conns"),
    ("client_read_stream", "read a stream"),
    ("client_scan_all", "read $all"),
];

/// Colours: Quiver's engine, Quiver's client, PostgreSQL, and the latency percentiles.
const ENGINE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const CLIENT: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const POSTGRES: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);
const PERCENTILE_COLOURS: [RGBColor; 3] = [
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
];

/// One of the report's plots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plot {
    /// Engine and client events/s against events per append.
    ThroughputVsBatch,
    /// Client append latency percentiles against concurrent writers.
    LatencyVsConcurrency,
    /// Quiver's and PostgreSQL's events/s per workload, side by side.
    QuiverVsPostgres,
}

/// A named line of points.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: &'static str,
    points: Vec<(f64, f64)>,
}

impl Plot {
    /// Every plot, in the order the document shows them.
    pub const ALL: [Plot; 3] = [
        Plot::ThroughputVsBatch,
        Plot::LatencyVsConcurrency,
        Plot::QuiverVsPostgres,
    ];

    /// The file it is written to, in the report's directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Plot::ThroughputVsBatch => "throughput_vs_batch.svg",
            Plot::LatencyVsConcurrency => "latency_vs_concurrency.svg",
            Plot::QuiverVsPostgres => "quiver_vs_postgres.svg",
        }
    }

    /// Its title, drawn on it and used as the image's alternative text.
    pub fn title(self) -> &'static str {
        match self {
            Plot::ThroughputVsBatch => "Durable appends: events/s against events per append",
            Plot::LatencyVsConcurrency => "Client append latency against concurrent writers",
            Plot::QuiverVsPostgres => "Quiver beside PostgreSQL, same machine, same run",
        }
    }

    /// What it shows, for the document.
    pub fn caption(self) -> &'static str {
        match self {
            Plot::ThroughputVsBatch => {
                "One caller appending batches of 1, 10, 100 and 1,000 events in turn, each \
                 durable before the next: the engine in-process (`engine_append_batchN`) and \
                 the client over QUIC on one connection (`client_append_batchN`). Both axes \
                 logarithmic; a scenario that did not run is left out."
            }
            Plot::LatencyVsConcurrency => {
                "Latency of one append call as the client sees it, at p50, p99 and p99.9: one \
                 connection appending 100 events at a time (`client_append_batch100`), 16 \
                 connections doing the same (`…_c16`), 64 connections appending single events \
                 (`client_append_concurrent64`); the crosses are 64 tasks sharing one \
                 connection (`client_append_shared64`). Logarithmic latency axis."
            }
            Plot::QuiverVsPostgres => {
                "Events/s of each workload both run (`client_…` and its `pg_…` counterpart), \
                 Quiver's client over QUIC beside PostgreSQL used as an event store; the label \
                 above each pair is Quiver's rate over PostgreSQL's. Logarithmic axis."
            }
        }
    }

    /// The plot as an SVG document.
    pub fn render(self, results: &Results) -> Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            if self.is_empty(results) {
                let centre = (SIZE.0 as i32 / 2, SIZE.1 as i32 / 2);
                let style = ("sans-serif", 20)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let text = "no data: none of these scenarios ran in this report";
                root.draw(&Text::new(text, centre, style))
                    .map_err(plot_error)?;
            }
            match self {
                Plot::ThroughputVsBatch => draw_throughput(&root, self.title(), results),
                Plot::LatencyVsConcurrency => draw_latency(&root, self.title(), results),
                Plot::QuiverVsPostgres => draw_postgres(&root, self.title(), results),
            }?;
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }
}

impl Plot {
    /// Whether none of the plot's scenarios ran.
    fn is_empty(self, results: &Results) -> bool {
        let no_points = |s: &Series| s.points.is_empty();
        match self {
            Plot::ThroughputVsBatch => throughput_series(results).iter().all(no_points),
            Plot::LatencyVsConcurrency => {
                let (percentiles, shared) = latency_series(results);
                percentiles.iter().all(no_points) && no_points(&shared)
            }
            Plot::QuiverVsPostgres => postgres_series(results).iter().all(no_points),
        }
    }
}

/// Writes every plot into `dir`.
pub fn render_all(results: &Results, dir: &Path) -> Result<()> {
    for plot in Plot::ALL {
        let path = dir.join(plot.file_name());
        let svg = plot.render(results)?;
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// plotters' errors borrow the backend's error type; keep their message only.
fn plot_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}

/// `events_per_sec` of each batch size, for the engine and the client.
fn throughput_series(results: &Results) -> Vec<Series> {
    let sweep = |name, prefix: &str| Series {
        name,
        points: BATCHES
            .iter()
            .filter_map(|&b| {
                let eps = results.number(&format!("{prefix}{b}"), "events_per_sec")?;
                (eps > 0.0).then_some((b as f64, eps))
            })
            .collect(),
    };
    vec![
        sweep("engine, 1 caller", "engine_append_batch"),
        sweep("client over QUIC, 1 connection", "client_append_batch"),
    ]
}

/// Each percentile against the writers of [`WRITERS`], then the shared connection's three
/// percentiles at the 64 writers' position (a series of its own, drawn as crosses).
fn latency_series(results: &Results) -> (Vec<Series>, Series) {
    let at = |scenario: &str, field: &str| results.number(scenario, field).filter(|&v| v > 0.0);
    let percentiles = PERCENTILES
        .iter()
        .map(|&(name, field)| Series {
            name,
            points: WRITERS
                .iter()
                .filter_map(|&(x, _, scenario)| Some((x, at(scenario, field)?)))
                .collect(),
        })
        .collect();
    let shared_x = WRITERS[2].0 + 0.12;
    let shared = Series {
        name: "64 tasks sharing one connection × 1",
        points: PERCENTILES
            .iter()
            .filter_map(|&(_, field)| Some((shared_x, at(SHARED64, field)?)))
            .collect(),
    };
    (percentiles, shared)
}

/// Quiver's and PostgreSQL's events/s per workload of `postgres_peer::COUNTERPARTS`, at
/// x = the workload's index.
fn postgres_series(results: &Results) -> [Series; 2] {
    let side = |name, pick: fn(&(&'static str, &'static str)) -> &'static str| Series {
        name,
        points: postgres_peer::COUNTERPARTS
            .iter()
            .enumerate()
            .filter_map(|(i, pair)| {
                let eps = results.number(pick(pair), "events_per_sec")?;
                (eps > 0.0).then_some((i as f64, eps))
            })
            .collect(),
    };
    [
        side("Quiver (client over QUIC)", |p| p.0),
        side("PostgreSQL", |p| p.1),
    ]
}

/// A logarithmic axis range holding `values` with some room: from the power of ten at or
/// below the smallest to the one at or above the largest (1 to 10 with no value).
fn log_range<'a>(values: impl Iterator<Item = &'a f64>, headroom: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || hi <= 0.0 {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf((lo / 1.2).log10().floor());
    let hi = 10f64.powf((hi * headroom).log10().ceil());
    (lo, hi.max(lo * 10.0))
}

/// The powers of ten from `lo` to `hi`, the ticks of a logarithmic axis.
fn decades(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = vec![];
    let mut t = lo;
    while t <= hi * 1.000_001 {
        ticks.push(t);
        t *= 10.0;
    }
    ticks
}

/// 1k, 10k, 1M: a rate on an axis.
fn rate_label(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

/// 100 µs, 1 ms, 1 s: a latency in µs on an axis.
fn latency_label(us: f64) -> String {
    match us {
        us if us >= 1e6 => format!("{} s", us / 1e6),
        us if us >= 1e3 => format!("{} ms", us / 1e3),
        us => format!("{us} µs"),
    }
}

/// A legend entry's mark: a short line in the series' colour.
fn legend_line(colour: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(3))
}

fn draw_throughput<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    results: &Results,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let series = throughput_series(results);
    let (lo, hi) = log_range(
        series.iter().flat_map(|s| s.points.iter().map(|p| &p.1)),
        2.0,
    );
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (0.6f64..1_700.0)
                .log_scale()
                .with_key_points(BATCHES.iter().map(|&b| b as f64).collect()),
            (lo..hi).log_scale().with_key_points(decades(lo, hi)),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("events per append")
        .y_desc("events/s")
        .x_label_formatter(&|v| format!("{v}"))
        .y_label_formatter(&|v| rate_label(*v))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    for (s, colour) in series.iter().zip([ENGINE, CLIENT]) {
        draw_line(&mut chart, s, colour)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// The chart's legend, boxed, in the corner `position`.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

/// One series as a line through its points, each marked, with its legend entry.
fn draw_line<'a, DB: DrawingBackend + 'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, DB, CT>,
    s: &Series,
    colour: RGBColor,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(LineSeries::new(s.points.clone(), colour.stroke_width(2)))
        .map_err(plot_error)?
        .label(s.name)
        .legend(legend_line(colour));
    chart
        .draw_series(s.points.iter().map(|&p| Circle::new(p, 5, colour.filled())))
        .map_err(plot_error)?;
    Ok(())
}

fn draw_latency<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    results: &Results,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (percentiles, shared) = latency_series(results);
    let all = percentiles.iter().chain([&shared]);
    // A decade of room above the slowest sample for the four-line legend.
    let (lo, hi) = log_range(all.flat_map(|s| s.points.iter().map(|p| &p.1)), 10.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            -0.4f64..2.5,
            (lo..hi).log_scale().with_key_points(decades(lo, hi)),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // A linear axis ticks at round steps: one tick per writer count, on 0, 1, 2.
        .x_labels(WRITERS.len())
        .x_desc("concurrent writers × events per append")
        .y_desc("latency of one append call")
        .x_label_formatter(&|x| {
            WRITERS
                .iter()
                .find(|w| (w.0 - x).abs() < 0.01)
                .map_or_else(String::new, |w| w.1.to_string())
        })
        .y_label_formatter(&|v| latency_label(*v))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    for (s, colour) in percentiles.iter().zip(PERCENTILE_COLOURS) {
        draw_line(&mut chart, s, colour)?;
    }
    chart
        .draw_series(
            shared
                .points
                .iter()
                .zip(PERCENTILE_COLOURS)
                .map(|(&p, colour)| Cross::new(p, 6, colour.stroke_width(3))),
        )
        .map_err(plot_error)?
        .label(shared.name)
        .legend(|(x, y)| Cross::new((x + 11, y), 6, BLACK.stroke_width(3)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn draw_postgres<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    results: &Results,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let [quiver, postgres] = postgres_series(results);
    let both = quiver.points.iter().chain(&postgres.points);
    // Room above the tallest bar for its label and the ratio, under the legend.
    let (lo, hi) = log_range(both.map(|p| &p.1), 20.0);
    let workloads = postgres_peer::COUNTERPARTS.len();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            -0.5f64..workloads as f64 - 0.5,
            (lo..hi).log_scale().with_key_points(decades(lo, hi)),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(workloads)
        .y_desc("events/s")
        .x_label_formatter(&|x| {
            let quiver = if x.fract() == 0.0 && *x >= 0.0 {
                postgres_peer::COUNTERPARTS
                    .get(*x as usize)
                    .map_or("", |p| p.0)
            } else {
                ""
            };
            POSTGRES_LABELS
                .iter()
                .find(|(q, _)| *q == quiver)
                .map_or(quiver, |(_, label)| label)
                .to_string()
        })
        .y_label_formatter(&|v| rate_label(*v))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    let width = 0.36;
    for (s, colour, offset) in [(&quiver, CLIENT, -width), (&postgres, POSTGRES, 0.0)] {
        chart
            .draw_series(s.points.iter().map(|&(x, y)| {
                Rectangle::new(
                    [(x + offset + 0.01, lo), (x + offset + width - 0.01, y)],
                    colour.filled(),
                )
            }))
            .map_err(plot_error)?
            .label(s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled()));
        chart
            .draw_series(s.points.iter().map(|&(x, y)| {
                Text::new(
                    rate_label_rounded(y),
                    (x + offset + width / 2.0, y * 1.12),
                    ("sans-serif", 13)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(plot_error)?;
    }
    // Quiver's rate over PostgreSQL's above each pair that both ran.
    let ratios = quiver.points.iter().filter_map(|&(x, q)| {
        let &(_, p) = postgres.points.iter().find(|(px, _)| *px == x)?;
        Some((x, q / p, q.max(p)))
    });
    chart
        .draw_series(ratios.map(|(x, ratio, top)| {
            Text::new(
                format!("{ratio:.2}×"),
                (x, top * 2.2),
                ("sans-serif", 16)
                    .into_font()
                    .style(FontStyle::Bold)
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))
        .map_err(plot_error)?;
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// A bar's value, three significant digits: 157k, 1.11M, 8.54k.
fn rate_label_rounded(v: f64) -> String {
    let (scaled, unit) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let decimals = match scaled {
        s if s >= 100.0 => 0,
        s if s >= 10.0 => 1,
        _ => 2,
    };
    format!("{scaled:.decimals$}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_doc::fixture;

    /// How many times `needle` occurs in `svg`.
    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    #[test]
    fn throughput_plot_has_both_sweeps_and_a_point_per_scenario_that_ran() {
        let results = fixture::results();
        let series = throughput_series(&results);
        // The fixture has the engine's four batch sizes and the client's 1, 10 and 100.
        let xs = |s: &Series| s.points.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(xs(&series[0]), [1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(xs(&series[1]), [1.0, 10.0, 100.0]);
        assert_eq!(series[1].points[2].1, 157_351.0);
        let svg = Plot::ThroughputVsBatch.render(&results).unwrap();
        assert!(svg.contains(">\nengine, 1 caller\n<"), "{svg}");
        assert!(
            svg.contains(">\nclient over QUIC, 1 connection\n<"),
            "{svg}"
        );
        assert_eq!(count(&svg, "<circle"), 7, "one marker per point");
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn latency_plot_has_three_percentiles_and_the_shared_connection() {
        let results = fixture::results();
        let (percentiles, shared) = latency_series(&results);
        let names: Vec<&str> = percentiles.iter().map(|s| s.name).collect();
        assert_eq!(names, ["p50", "p99", "p99.9"]);
        assert_eq!(
            percentiles[1].points,
            [(0.0, 2028.5), (1.0, 18743.3), (2.0, 4005.9)]
        );
        let shared_y: Vec<f64> = shared.points.iter().map(|p| p.1).collect();
        assert_eq!(shared_y, [1100.0, 3000.0, 9000.0]);
        let svg = Plot::LatencyVsConcurrency.render(&results).unwrap();
        for name in ["p50", "p99", "p99.9", shared.name] {
            assert!(svg.contains(&format!(">\n{name}\n<")), "legend {name}");
        }
        assert_eq!(count(&svg, "<circle"), 9, "3 percentiles × 3 writer counts");
        // A cross is two strokes; the legend's cross is black, the data's coloured.
        let crosses = svg
            .lines()
            .filter(|l| l.starts_with("<line") && l.contains("stroke-width=\"3\""))
            .filter(|l| !l.contains("#000000"))
            .count();
        assert_eq!(crosses, 2 * 3);
    }

    #[test]
    fn postgres_plot_has_a_bar_per_side_and_a_ratio_per_pair() {
        let results = fixture::results();
        let [quiver, postgres] = postgres_series(&results);
        assert_eq!(quiver.points.len(), 5);
        // pg_scan_all did not run: no PostgreSQL bar, and no ratio, for `$all`.
        assert_eq!(postgres.points.len(), 4);
        let svg = Plot::QuiverVsPostgres.render(&results).unwrap();
        assert!(svg.contains(">\nQuiver (client over QUIC)\n<"));
        assert!(svg.contains(">\nPostgreSQL\n<"));
        // Each side's bars plus its legend mark, in its colour.
        assert_eq!(count(&svg, "fill=\"#D62728\""), 5 + 1);
        assert_eq!(count(&svg, "fill=\"#7F7F7F\""), 4 + 1);
        for ratio in ["1.77×", "4.24×", "4.14×", "1.96×"] {
            assert!(svg.contains(&format!(">\n{ratio}\n<")), "ratio {ratio}");
        }
        assert_eq!(count(&svg, "×\n<"), 4);
        for label in POSTGRES_LABELS.iter().map(|l| l.1) {
            assert!(svg.contains(label), "axis label {label}");
        }
    }

    #[test]
    fn plots_without_data_say_so() {
        for plot in Plot::ALL {
            let svg = plot.render(&Results::default()).unwrap();
            assert!(svg.contains("no data"), "{plot:?}");
            assert_eq!(count(&svg, "<circle"), 0);
        }
    }

    #[test]
    fn every_workload_both_run_has_an_axis_label() {
        for (quiver, _) in postgres_peer::COUNTERPARTS {
            assert!(POSTGRES_LABELS.iter().any(|(q, _)| q == quiver), "{quiver}");
        }
    }

    #[test]
    fn log_ranges_hold_their_values_between_powers_of_ten() {
        assert_eq!(
            log_range([5_180.0, 890_000.0].iter(), 2.0),
            (1_000.0, 10_000_000.0)
        );
        assert_eq!(log_range([].iter(), 2.0), (1.0, 10.0));
        assert_eq!(
            decades(100.0, 100_000.0),
            [100.0, 1_000.0, 10_000.0, 100_000.0]
        );
        assert_eq!(rate_label_rounded(157_351.0), "157k");
        assert_eq!(rate_label_rounded(8_538.0), "8.54k");
        assert_eq!(rate_label_rounded(1_107_485.0), "1.11M");
    }
}
