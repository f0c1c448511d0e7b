//! The figures (PNG and SVG), one panel per network with the three methods in
//! each and one line per seed: per-seed lines show the spread directly, and
//! need no averaging of runs whose epochs (chosen by the termination rule)
//! differ. Text is drawn with a font shipped in the repository (DejaVu Sans,
//! `assets/`), so rendering needs no system fontconfig.

use std::error::Error;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::aggregate::{Row, networks};
use super::cells::network_label;
use super::error::ReportError;
use super::load::EpochRow;
use super::paper::{METHODS, method_title};

/// (file stem, title) of every figure, in the order the report shows them.
pub const FIGURES: [(&str, &str); 4] = [
    ("fig-val-acc-vs-epochs", "Validation accuracy vs epochs"),
    (
        "fig-flops-per-inference-vs-epochs",
        "FLOPs per inference vs epochs",
    ),
    (
        "fig3-val-acc-vs-train-flops",
        "Figure 3: validation accuracy vs cumulative training FLOPs",
    ),
    (
        "fig4-val-acc-vs-params",
        "Figure 4: final validation accuracy of each phase vs parameters",
    ),
];

const FONT: &str = "sans-serif";
const PANEL: (u32, u32) = (560, 400);
const TITLE_H: u32 = 48;

struct Axes {
    x: fn(&EpochRow) -> f64,
    y: fn(&EpochRow) -> f64,
    x_desc: &'static str,
    y_desc: &'static str,
    /// Markers as well as lines (parameters change in steps; markers show where).
    markers: bool,
}

fn axes(stem: &str) -> Axes {
    let acc = |e: &EpochRow| e.val_acc * 100.0;
    match stem {
        "fig-val-acc-vs-epochs" => Axes {
            x: |e| e.epoch,
            y: acc,
            x_desc: "epoch",
            y_desc: "validation accuracy (%)",
            markers: false,
        },
        "fig-flops-per-inference-vs-epochs" => Axes {
            x: |e| e.epoch,
            y: |e| e.flops_per_inference,
            x_desc: "epoch",
            y_desc: "FLOPs per inference",
            markers: false,
        },
        "fig3-val-acc-vs-train-flops" => Axes {
            x: |e| e.cum_train_flops,
            y: acc,
            x_desc: "cumulative training FLOPs",
            y_desc: "validation accuracy (%)",
            markers: false,
        },
        _ => Axes {
            x: |e| e.params,
            y: acc,
            x_desc: "parameters",
            y_desc: "validation accuracy (%)",
            markers: true,
        },
    }
}

fn width(method: &str) -> u32 {
    if method == "lookahead" { 5 } else { 2 }
}

fn color(method: &str) -> RGBColor {
    match method {
        "baseline" => RGBColor(31, 119, 180),
        "lookahead" => RGBColor(230, 110, 0),
        "random" => RGBColor(44, 160, 44),
        _ => RGBColor(120, 120, 120),
    }
}

/// Tick labels with SI prefixes: FLOPs span 1e6 to 1e15, and `1.2T` reads
/// better than `1200000000000`.
pub fn si(x: f64) -> String {
    let a = x.abs();
    let (v, p) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(m, _)| a >= *m)
        .map_or((x, ""), |(m, p)| (x / m, p));
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{p}")
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are the shipped, valid TTF; failure here is a build defect.
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        )
        .map_err(|_| ())
        .expect("assets/DejaVuSans.ttf is a valid font");
    });
}

fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad, hi + pad)
}

type DrawResult = Result<(), Box<dyn Error>>;

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[&Row],
    label: &str,
    ax: &Axes,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let epochs = || rows.iter().flat_map(|r| &r.runs).flat_map(|r| &r.epochs);
    let (x0, x1) = range(epochs().map(ax.x));
    let (y0, y1) = range(epochs().map(ax.y));
    let mut chart = ChartBuilder::on(area)
        .caption(label, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(ax.x_desc)
        .y_desc(ax.y_desc)
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| si(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    if epochs().next().is_none() {
        area.draw_text(
            "no per-epoch metrics",
            &(FONT, 16).into_text_style(area),
            (PANEL.0 as i32 / 3, PANEL.1 as i32 / 2),
        )?;
        return Ok(());
    }
    // Legend entries first, from empty series, so that the legend keeps the
    // paper's column order whatever order the lines are drawn in.
    for m in METHODS
        .iter()
        .filter(|m| rows.iter().any(|r| r.method == **m))
    {
        let c = color(m);
        let entry = chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(method_title(m));
        if *m == "random" {
            entry.legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 24, y)], 7, 4, c.stroke_width(2))
            });
        } else {
            entry.legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(width(m)))
            });
        }
    }
    // Look-ahead and random often coincide (same growth, same FLOPs), and
    // look-ahead often follows the baseline: look-ahead is drawn wide at the
    // bottom, the baseline over it, random dashed on top, so all stay visible.
    for m in ["lookahead", "baseline", "random"] {
        let c = color(m);
        for run in rows.iter().filter(|r| r.method == m).flat_map(|r| &r.runs) {
            let pts: Vec<(f64, f64)> = run.epochs.iter().map(|e| ((ax.x)(e), (ax.y)(e))).collect();
            if m == "random" {
                chart.draw_series(DashedLineSeries::new(pts.clone(), 9, 5, c.stroke_width(2)))?;
            } else {
                chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(width(m))))?;
            }
            if ax.markers {
                chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

const FIG4: &str = "fig4-val-acc-vs-params";

/// (parameters, validation accuracy %) at the end of each whole-network phase of a run:
/// one point per sub-network count, as the paper's Fig. 4 plots them.
pub fn phase_ends(epochs: &[EpochRow]) -> Vec<(usize, f64, f64)> {
    epochs
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            e.phase == "train"
                && epochs
                    .get(i + 1)
                    .is_none_or(|n| n.phase != e.phase || n.active != e.active)
        })
        .map(|(_, e)| (e.active.parse().unwrap_or(0), e.params, e.val_acc * 100.0))
        .collect()
}

/// (parameters, mean, sd) of one sub-network count over the seeds.
type PhasePoint = (f64, f64, f64);

/// Per method and sub-network count: (parameters, mean, sd) over the seeds.
fn phase_points(rows: &[&Row], method: &str) -> Vec<PhasePoint> {
    let mut by_k: std::collections::BTreeMap<usize, (f64, Vec<f64>)> = Default::default();
    for run in rows
        .iter()
        .filter(|r| r.method == method)
        .flat_map(|r| &r.runs)
    {
        for (k, params, acc) in phase_ends(&run.epochs) {
            by_k.entry(k).or_insert((params, Vec::new())).1.push(acc);
        }
    }
    by_k.into_values()
        .map(|(p, accs)| {
            let s = super::aggregate::Stats::of(&accs);
            (p, s.mean, s.std)
        })
        .collect()
}

fn phase_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[&Row],
    label: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let pts: Vec<(&str, Vec<PhasePoint>)> = METHODS
        .iter()
        .map(|m| (*m, phase_points(rows, m)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let all = || pts.iter().flat_map(|(_, p)| p.iter());
    let (x0, x1) = range(all().map(|p| p.0));
    let (y0, y1) = range(all().flat_map(|p| [p.1 - p.2, p.1 + p.2]));
    let mut chart = ChartBuilder::on(area)
        .caption(label, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("parameters")
        .y_desc("validation accuracy at the phase's end (%)")
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| si(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    if pts.is_empty() {
        area.draw_text(
            "no per-epoch metrics",
            &(FONT, 16).into_text_style(area),
            (PANEL.0 as i32 / 3, PANEL.1 as i32 / 2),
        )?;
        return Ok(());
    }
    // Incremental methods share parameter counts: offset them slightly so that error bars
    // of look-ahead and random do not hide each other.
    let dx = (x1 - x0) * 0.012;
    for (m, p) in &pts {
        let c = color(m);
        let off = match *m {
            "lookahead" => -dx,
            "random" => dx,
            _ => 0.0,
        };
        let line: Vec<(f64, f64)> = p.iter().map(|q| (q.0 + off, q.1)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?
            .label(method_title(m))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2)));
        chart.draw_series(p.iter().map(|q| {
            ErrorBar::new_vertical(q.0 + off, q.1 - q.2, q.1, q.1 + q.2, c.stroke_width(2), 8)
        }))?;
        chart.draw_series(line.into_iter().map(|q| Circle::new(q, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

fn figure<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    rows: &[Row],
    stem: &str,
    title: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let nets = networks(rows);
    let (cols, grid_rows) = grid(nets.len());
    let heading = if stem == FIG4 {
        format!("{title} (mean ± sd over seeds)")
    } else {
        format!("{title} (one line per seed)")
    };
    // Shrink the heading until it fits the figure (one panel is narrow); DejaVu Sans
    // glyphs average about 0.55 of the font size in width.
    let fit = root.dim_in_pixel().0 as f64 * 0.95 / (0.55 * heading.chars().count() as f64);
    let body = root.titled(&heading, (FONT, fit.clamp(12.0, 24.0)))?;
    let panels = body.split_evenly((grid_rows, cols));
    let ax = axes(stem);
    for ((net, paper_net), area) in nets.iter().zip(panels.iter()) {
        let mine: Vec<&Row> = rows.iter().filter(|r| &r.net == net).collect();
        if stem == FIG4 {
            phase_panel(area, &mine, &network_label(net, paper_net))?;
        } else {
            panel(area, &mine, &network_label(net, paper_net), &ax)?;
        }
    }
    root.present()?;
    Ok(())
}

/// (columns, rows) of the panel grid: at most three panels a row.
fn grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, 3);
    (cols, n.max(1).div_ceil(cols))
}

/// Writes every figure as `STEM.png` and `STEM.svg` into `dir`.
pub fn write_all(rows: &[Row], dir: &Path) -> Result<(), ReportError> {
    register_font();
    let (cols, grid_rows) = grid(networks(rows).len());
    let size = (PANEL.0 * cols as u32, PANEL.1 * grid_rows as u32 + TITLE_H);
    for (stem, title) in FIGURES {
        let png = dir.join(format!("{stem}.png"));
        figure(
            BitMapBackend::new(&png, size).into_drawing_area(),
            rows,
            stem,
            title,
        )
        .map_err(|e| ReportError::Plot {
            path: png.clone(),
            what: e.to_string(),
        })?;
        let svg = dir.join(format!("{stem}.svg"));
        figure(
            SVGBackend::new(&svg, size).into_drawing_area(),
            rows,
            stem,
            title,
        )
        .map_err(|e| ReportError::Plot {
            path: svg.clone(),
            what: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_labels() {
        assert_eq!(si(1.2e12), "1.2T");
        assert_eq!(si(65882.0), "65.88k");
        assert_eq!(si(50.0), "50");
        assert_eq!(grid(5), (3, 2));
        assert_eq!(grid(2), (2, 1));
    }
}
