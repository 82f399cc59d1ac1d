//! `--plot FILE.svg|FILE.png`: throughput and latency percentiles against concurrency (a
//! throughput–latency curve for a `--max-concurrency` sweep). Text is drawn with a font compiled into
//! the binary, so a PNG renders the same on a machine without system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use super::{BenchError, RunResult};

/// One point per run: (concurrency, output tok/s, TTFT P50/P95/P99, TPOT P50/P95/P99) in ms.
struct Point {
    x: f64,
    tok_s: f64,
    ttft: [f64; 3],
    tpot: [f64; 3],
}

fn points(runs: &[RunResult]) -> Vec<Point> {
    let mut pts: Vec<Point> = runs
        .iter()
        .map(|r| {
            let m = &r.metrics;
            let x = r.options.load.max_concurrency.unwrap_or(r.num_prompts) as f64;
            // Percentiles not computed for this run fall back to the median.
            let at = |s: &super::metrics::Summary, p: f64| s.at(p).unwrap_or(s.median_ms);
            Point {
                x,
                tok_s: m.output_throughput,
                ttft: [m.ttft.median_ms, at(&m.ttft, 95.0), at(&m.ttft, 99.0)],
                tpot: [m.tpot.median_ms, at(&m.tpot, 95.0), at(&m.tpot, 99.0)],
            }
        })
        .collect();
    pts.sort_by(|a, b| a.x.total_cmp(&b.x));
    pts
}

/// The image formats `--plot` writes, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

/// Refuses a `--plot` file name whose format ember cannot write (checked before the benchmark runs).
pub fn check_path(path: &Path) -> Result<(), BenchError> {
    format_of(path).map(|_| ())
}

fn format_of(path: &Path) -> Result<Format, BenchError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(Format::Svg),
        Some(e) if e.eq_ignore_ascii_case("png") => Ok(Format::Png),
        _ => Err(BenchError::Config(format!(
            "--plot {}: name the file *.svg or *.png",
            path.display()
        ))),
    }
}

const SIZE: (u32, u32) = (1200, 900);

pub fn write(path: &Path, runs: &[RunResult], title: &str) -> Result<(), BenchError> {
    let format = format_of(path)?;
    if runs.is_empty() {
        return Err(BenchError::Config("--plot: no runs to plot".into()));
    }
    register_font()?;
    let pts = points(runs);
    match format {
        Format::Svg => draw(SVGBackend::new(path, SIZE).into_drawing_area(), &pts, title),
        Format::Png => draw(
            BitMapBackend::new(path, SIZE).into_drawing_area(),
            &pts,
            title,
        ),
    }
    .map_err(|e| BenchError::Io(format!("writing the plot {}: {e}", path.display())))
}

/// plotters measures and rasterizes text with fonts registered by name; ours is Ubuntu Light.
fn register_font() -> Result<(), BenchError> {
    static REGISTER: Once = Once::new();
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        )
        .map_err(|_| BenchError::Io("the plot font could not be read".into()));
    });
    result
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    pts: &[Point],
    title: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    let (top, bottom) = root.split_vertically(450);
    let (bl, br) = bottom.split_horizontally(600);
    // Sweeps double the concurrency: a log axis spaces 1, 2, 4, … 32 evenly.
    let xmin = pts
        .iter()
        .map(|p| p.x)
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        / 1.25;
    let xmax = pts.iter().map(|p| p.x).fold(1.0, f64::max) * 1.25;
    let xrange = xmin..xmax;
    let xs: Vec<f64> = pts.iter().map(|p| p.x).collect();

    let ymax = pts.iter().map(|p| p.tok_s).fold(1e-9, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&top)
        .caption("Output throughput vs concurrency", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xrange.clone().log_scale(), 0.0..ymax)?;
    c.configure_mesh()
        .x_desc("max concurrency (log scale)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_max_light_lines(1)
        .y_desc("output tokens/s")
        .draw()?;
    let tp: Vec<(f64, f64)> = pts.iter().map(|p| (p.x, p.tok_s)).collect();
    c.draw_series(LineSeries::new(tp.clone(), BLUE.stroke_width(2)))?
        .label("output tok/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(tp.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    c.configure_series_labels().border_style(BLACK).draw()?;

    latency_panel(
        &bl,
        "TTFT percentiles (ms)",
        &xs,
        pts.iter().map(|p| p.ttft),
        xrange.clone(),
    )?;
    latency_panel(
        &br,
        "TPOT percentiles (ms)",
        &xs,
        pts.iter().map(|p| p.tpot),
        xrange.clone(),
    )?;
    root.present()?;
    Ok(())
}

fn latency_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    xs: &[f64],
    values: impl Iterator<Item = [f64; 3]>,
    xrange: std::ops::Range<f64>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let values: Vec<[f64; 3]> = values.collect();
    let ymax = values
        .iter()
        .flat_map(|v| v.iter().copied())
        .fold(1e-9, f64::max)
        * 1.15;
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xrange.clone().log_scale(), 0.0..ymax)?;
    c.configure_mesh()
        .x_desc("max concurrency (log scale)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_max_light_lines(1)
        .y_desc("ms")
        .draw()?;
    let colors = [GREEN, MAGENTA, RED];
    for (k, name) in ["P50", "P95", "P99"].iter().enumerate() {
        let color = colors[k];
        let series: Vec<(f64, f64)> = xs.iter().zip(&values).map(|(&x, v)| (x, v[k])).collect();
        c.draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        c.draw_series(series.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    c.configure_series_labels().border_style(BLACK).draw()?;
    Ok(())
}
