//! The plotters side of [`Figure::render_svg`]: what of each series can be
//! drawn on its chart's axes ([`prepare`]), the axis ranges, and the drawing.

use super::{Chart, Figure, Marks, Scale, Series, Skipped, Spread, Svg};
use crate::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;

/// Colours of successive series: Tableau 10, readable on white and distinct
/// for the common forms of colour blindness.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const FONT: &str = "sans-serif";

/// A point's spread: `(x, low, y, high)`.
type Bar = (f64, f64, f64, f64);

/// A series reduced to what its chart can draw.
struct Drawable {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    /// A bar per point that has a finite half-width.
    spread: Option<(Vec<Bar>, Spread)>,
    marks: Marks,
}

/// A chart's drawable series and axis ranges.
struct Prepared {
    series: Vec<Drawable>,
    x: Range<f64>,
    y: Range<f64>,
}

fn drawable_on(scale: Scale, v: f64) -> bool {
    scale == Scale::Linear || v > 0.0
}

/// Keep what `chart`'s axes can show, counting what is left out in `skipped`.
fn prepare(chart: &Chart, skipped: &mut Skipped) -> Result<Prepared> {
    let mut series = Vec::with_capacity(chart.series.len());
    for (i, s) in chart.series.iter().enumerate() {
        series.push(prepare_series(chart, s, PALETTE[i % PALETTE.len()], skipped)?);
    }
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x = axis_range(chart.x_scale, xs, false);
    // The y range covers the spreads too, except a low end a log axis cannot show.
    let ys = series.iter().flat_map(|s| {
        let spread = s.spread.iter().flat_map(|(v, _)| v.iter().flat_map(|&(_, lo, _, hi)| [lo, hi]));
        s.points.iter().map(|p| p.1).chain(spread).filter(|&v| drawable_on(chart.y_scale, v))
    });
    let y = axis_range(chart.y_scale, ys, true);
    // Cut spreads that reach below a log axis at its bottom.
    if chart.y_scale == Scale::Log10 {
        for s in &mut series {
            for p in s.spread.iter_mut().flat_map(|(v, _)| v.iter_mut()) {
                p.1 = p.1.max(y.start);
            }
        }
    }
    Ok(Prepared { series, x, y })
}

fn prepare_series(chart: &Chart, s: &Series, color: RGBColor, skipped: &mut Skipped) -> Result<Drawable> {
    if let Some((widths, _)) = &s.spread {
        if widths.len() != s.points.len() {
            return Err(Error::value(
                "render_svg",
                format!(
                    "chart {:?}, series {:?}: {} half-widths for {} points (one per point expected)",
                    chart.title,
                    s.name,
                    widths.len(),
                    s.points.len()
                ),
            ));
        }
    }
    let mut points = Vec::with_capacity(s.points.len());
    let mut spread = Vec::new();
    for (i, &(x, y)) in s.points.iter().enumerate() {
        if !x.is_finite() || !y.is_finite() {
            skipped.non_finite += 1;
            continue;
        }
        if !drawable_on(chart.x_scale, x) || !drawable_on(chart.y_scale, y) {
            skipped.non_positive_on_log += 1;
            continue;
        }
        points.push((x, y));
        if let Some((widths, _)) = &s.spread {
            let w = widths[i].abs();
            if w.is_finite() {
                spread.push((x, y - w, y, y + w));
            } else {
                skipped.non_finite += 1;
            }
        }
    }
    if points.is_empty() {
        skipped.empty_series.push(s.name.clone());
    }
    Ok(Drawable {
        name: if points.is_empty() { format!("{} (no data)", s.name) } else { s.name.clone() },
        color,
        points,
        spread: s.spread.as_ref().map(|(_, how)| (spread, *how)),
        marks: s.marks,
    })
}

/// The range of `values` on a `scale` axis (all drawable on it), with a
/// margin when `pad`; a unit range when there are none, a widened one when
/// they are all equal.
fn axis_range(scale: Scale, values: impl Iterator<Item = f64>, pad: bool) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    match scale {
        Scale::Linear => {
            if lo > hi {
                return 0.0..1.0;
            }
            if lo == hi {
                let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
                return lo - d..hi + d;
            }
            let m = if pad { (hi - lo) * 0.05 } else { 0.0 };
            lo - m..hi + m
        }
        Scale::Log10 => {
            if lo > hi {
                return 1.0..10.0;
            }
            if lo == hi {
                return lo / 2.0..hi * 2.0;
            }
            let m = if pad { (hi / lo).powf(0.05) } else { 1.0 };
            lo / m..hi * m
        }
    }
}

/// A tick label: short, and in scientific notation far from 1.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".to_string();
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}").replace(".0e", "e");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::io("render_svg", format!("plotters could not draw the figure: {e}"))
}

/// Draw `figure` into an SVG string (its title too when `titled`).
pub(super) fn render(figure: &Figure, titled: bool) -> Result<Svg> {
    let (w, h) = figure.panel_size;
    if figure.panels.is_empty() || figure.columns == 0 || w == 0 || h == 0 {
        return Err(Error::value(
            "render_svg",
            format!(
                "figure {:?}: {} panels in {} columns of {w}×{h} pixels: need at least one panel, one column and a non-zero size",
                figure.title,
                figure.panels.len(),
                figure.columns
            ),
        ));
    }
    let mut skipped = Skipped::default();
    let prepared = figure.panels.iter().map(|c| prepare(c, &mut skipped)).collect::<Result<Vec<_>>>()?;
    let columns = figure.columns.min(figure.panels.len());
    let rows = figure.panels.len().div_ceil(columns);
    let title_height = if titled && !figure.title.is_empty() { 40 } else { 0 };
    let size = (w * columns as u32, h * rows as u32 + title_height);
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let grid = if title_height > 0 {
            root.titled(&figure.title, (FONT, 24)).map_err(plot_error)?
        } else {
            root.clone()
        };
        let areas = grid.split_evenly((rows, columns));
        for ((area, chart), prep) in areas.iter().zip(&figure.panels).zip(&prepared) {
            draw_scaled(area, chart, prep).map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(Svg { text, skipped })
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// [`draw_chart`] with the coordinate types of the chart's scales.
fn draw_scaled<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart, p: &Prepared) -> DrawResult<DB> {
    let (x, y) = (p.x.clone(), p.y.clone());
    match (chart.x_scale, chart.y_scale) {
        (Scale::Linear, Scale::Linear) => draw_chart(area, chart, p, x, y),
        (Scale::Linear, Scale::Log10) => draw_chart(area, chart, p, x, y.log_scale()),
        (Scale::Log10, Scale::Linear) => draw_chart(area, chart, p, x.log_scale(), y),
        (Scale::Log10, Scale::Log10) => draw_chart(area, chart, p, x.log_scale(), y.log_scale()),
    }
}

fn draw_chart<DB, X, Y>(area: &DrawingArea<DB, Shift>, chart: &Chart, p: &Prepared, x: X, y: Y) -> DrawResult<DB>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, (FONT, 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    let format = |v: &f64| tick(*v);
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&format)
        .y_label_formatter(&format)
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 14))
        .draw()?;
    for s in &p.series {
        let color = s.color;
        match &s.spread {
            Some((spread, Spread::Band)) if spread.len() >= 2 => {
                let upper = spread.iter().map(|&(x, _, _, hi)| (x, hi));
                let lower = spread.iter().rev().map(|&(x, lo, _, _)| (x, lo));
                ctx.draw_series(std::iter::once(Polygon::new(upper.chain(lower).collect::<Vec<_>>(), color.mix(0.2).filled())))?;
            }
            // A band of one point has no width: drawn as a bar.
            Some((spread, _)) => {
                let bars = spread
                    .iter()
                    .map(|&(x, lo, y, hi)| ErrorBar::new_vertical(x, lo, y, hi, color.stroke_width(1), 8));
                ctx.draw_series(bars)?;
            }
            None => {}
        }
        let line = s.marks != Marks::Points && s.points.len() >= 2;
        if line {
            ctx.draw_series(std::iter::once(PathElement::new(s.points.clone(), color.stroke_width(2))))?;
        }
        if !line || s.marks == Marks::LineAndPoints {
            ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        // The legend's entry, a filled square (not a line, so that the
        // polylines of width 2 are the series: axes and ticks are width 1).
        ctx.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    if !p.series.is_empty() {
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(190, 190, 190))
            .label_font((FONT, 12))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_pad_and_survive_degenerate_input() {
        assert_eq!(axis_range(Scale::Linear, [].into_iter(), true), 0.0..1.0);
        assert_eq!(axis_range(Scale::Log10, [].into_iter(), true), 1.0..10.0);
        assert_eq!(axis_range(Scale::Linear, [2.0, 2.0].into_iter(), true), 1.8..2.2);
        assert_eq!(axis_range(Scale::Linear, [0.0].into_iter(), true), -1.0..1.0);
        assert_eq!(axis_range(Scale::Log10, [4.0].into_iter(), true), 2.0..8.0);
        assert_eq!(axis_range(Scale::Linear, [0.0, 10.0].into_iter(), false), 0.0..10.0);
        let r = axis_range(Scale::Linear, [0.0, 10.0].into_iter(), true);
        assert_eq!((r.start, r.end), (-0.5, 10.5));
        let r = axis_range(Scale::Log10, [1.0, 1e4].into_iter(), true);
        assert!((r.start - 1.0 / 10f64.powf(0.2)).abs() < 1e-12 && (r.end - 1e4 * 10f64.powf(0.2)).abs() < 1e-6);
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(1.5), "1.5");
        assert_eq!(tick(200.0), "200");
        assert_eq!(tick(0.0125), "0.0125");
        assert_eq!(tick(1e-4), "1e-4");
        assert_eq!(tick(2.5e6), "2.5e6");
        assert_eq!(tick(-3.0), "-3");
    }
}
