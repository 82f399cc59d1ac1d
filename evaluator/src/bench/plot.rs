//! `--plot FILE.svg`: throughput and latency percentiles against concurrency (a throughput–latency
//! curve for a `--max-concurrency` sweep). SVG only: PNG would need a font rasterizer and image
//! encoder in the build, for a figure any browser shows as SVG.

use std::path::Path;

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

pub fn write(path: &Path, runs: &[RunResult], title: &str) -> Result<(), BenchError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => {}
        _ => {
            return Err(BenchError::Config(format!(
                "--plot {}: ember bench writes SVG plots; name the file *.svg",
                path.display()
            )))
        }
    }
    if runs.is_empty() {
        return Err(BenchError::Config("--plot: no runs to plot".into()));
    }
    draw(path, &points(runs), title)
        .map_err(|e| BenchError::Io(format!("writing the plot {}: {e}", path.display())))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(path: &Path, pts: &[Point], title: &str) -> DrawResult {
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    let (top, bottom) = root.split_vertically(450);
    let (bl, br) = bottom.split_horizontally(600);
    let xmax = pts.iter().map(|p| p.x).fold(1.0, f64::max) * 1.05;
    let xs: Vec<f64> = pts.iter().map(|p| p.x).collect();

    let ymax = pts.iter().map(|p| p.tok_s).fold(1e-9, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&top)
        .caption("Output throughput vs concurrency", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    c.configure_mesh()
        .x_desc("max concurrency")
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
        xmax,
    )?;
    latency_panel(
        &br,
        "TPOT percentiles (ms)",
        &xs,
        pts.iter().map(|p| p.tpot),
        xmax,
    )?;
    root.present()?;
    Ok(())
}

fn latency_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    xs: &[f64],
    values: impl Iterator<Item = [f64; 3]>,
    xmax: f64,
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
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    c.configure_mesh()
        .x_desc("max concurrency")
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
