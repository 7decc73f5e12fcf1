//! The plotters side of [`Figure::render_svg`]: what of each series can be
//! drawn on its chart's axes ([`prepare`]), the axis ranges, and the drawing.

use super::{Chart, Figure, Marks, Scale, Series, Skipped, Spread, Svg};
use crate::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
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
    /// The corner the legend covers the fewest points in.
    legend: SeriesLabelPosition,
}

fn drawable_on(scale: Scale, v: f64) -> bool {
    scale == Scale::Linear || v > 0.0
}

/// Keep what `chart`'s axes can show, counting what is left out in
/// `skipped`; `size` is the panel's, in pixels.
fn prepare(chart: &Chart, size: (u32, u32), skipped: &mut Skipped) -> Result<Prepared> {
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
    let legend = legend_corner(chart, &series, (&x, &y), size);
    Ok(Prepared { series, x, y, legend })
}

/// Where `v` falls on an axis over `range`, from 0 to 1.
fn fraction(scale: Scale, range: &Range<f64>, v: f64) -> f64 {
    match scale {
        Scale::Linear => (v - range.start) / (range.end - range.start),
        Scale::Log10 => (v / range.start).ln() / (range.end / range.start).ln(),
    }
}

/// The corner of the plot whose legend box would hide the fewest points
/// of the series' lines (sampled along each segment); ties go to the upper
/// right, then upper left, lower right, lower left.
fn legend_corner(chart: &Chart, series: &[Drawable], (x, y): (&Range<f64>, &Range<f64>), size: (u32, u32)) -> SeriesLabelPosition {
    // The plotting area and the legend box, roughly (labels ~7 px a character, 18 px a row).
    let (plot_w, plot_h) = ((size.0 as f64 - 100.0).max(1.0), (size.1 as f64 - 100.0).max(1.0));
    let longest = series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0) as f64;
    let (box_w, box_h) = ((longest * 7.0 + 40.0) / plot_w, (series.len() as f64 * 18.0 + 14.0) / plot_h);
    let mut samples = Vec::new();
    for s in series {
        let at = |p: &(f64, f64)| (fraction(chart.x_scale, x, p.0), fraction(chart.y_scale, y, p.1));
        let pts: Vec<(f64, f64)> = s.points.iter().map(at).collect();
        samples.extend(pts.iter().copied());
        for w in pts.windows(2) {
            samples.extend((1..8).map(|k| {
                let t = k as f64 / 8.0;
                (w[0].0 + t * (w[1].0 - w[0].0), w[0].1 + t * (w[1].1 - w[0].1))
            }));
        }
    }
    let corners = [
        (SeriesLabelPosition::UpperRight, 1.0 - box_w, 1.0 - box_h),
        (SeriesLabelPosition::UpperLeft, 0.0, 1.0 - box_h),
        (SeriesLabelPosition::LowerRight, 1.0 - box_w, 0.0),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.0),
    ];
    let hidden = |(x0, y0): (f64, f64)| {
        samples
            .iter()
            .filter(|p| p.0 >= x0 && p.0 <= x0 + box_w && p.1 >= y0 && p.1 <= y0 + box_h)
            .count()
    };
    let mut best = (SeriesLabelPosition::UpperRight, usize::MAX);
    for (corner, x0, y0) in corners {
        let n = hidden((x0, y0));
        if n < best.1 {
            best = (corner, n);
        }
    }
    best.0
}

/// A base-10 logarithmic axis over a positive range, labelled at `m·10ᵏ`
/// (plotters' own labels only powers of ten, so an axis spanning less than
/// a decade could show one label or none).
struct Log10Axis {
    range: Range<f64>,
}

impl Ranged for Log10Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value / self.range.start).ln() / (self.range.end / self.range.start).ln();
        let t = if t.is_finite() { t.clamp(-1.0, 2.0) } else { 0.0 };
        (limit.0 as f64 + (limit.1 - limit.0) as f64 * t).round() as i32
    }

    /// The densest of `1·10ᵏ`, `{1, 2, 5}·10ᵏ` and `{1, ..., 9}·10ᵏ` that
    /// fits `hint`'s count (every n-th power of ten when even powers do not),
    /// or linear ticks when that leaves fewer than three in range.
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let Range { start: lo, end: hi } = self.range;
        let max = hint.max_num_points().max(2);
        let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        let ticks = |mantissas: &[f64], every: usize| -> Vec<f64> {
            (k0..=k1)
                .step_by(every)
                // m / 10⁻ᵏ rather than m · 10ᵏ: 3 / 10 is the double nearest 0.3.
                .flat_map(|k| mantissas.iter().map(move |m| if k >= 0 { m * 10f64.powi(k) } else { m / 10f64.powi(-k) }))
                .filter(|v| (lo..=hi).contains(v))
                .collect()
        };
        let mut best = Vec::new();
        for mantissas in [&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0][..], &[1.0, 2.0, 5.0], &[1.0]] {
            best = ticks(mantissas, 1);
            if best.len() <= max {
                break;
            }
        }
        let mut every = 2;
        while best.len() > max {
            best = ticks(&[1.0], every);
            every += 1;
        }
        if best.len() < 3 {
            return RangedCoordf64::from(lo..hi).key_points(max);
        }
        best
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
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
    let prepared = figure.panels.iter().map(|c| prepare(c, (w, h), &mut skipped)).collect::<Result<Vec<_>>>()?;
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
        (Scale::Linear, Scale::Log10) => draw_chart(area, chart, p, x, Log10Axis { range: y }),
        (Scale::Log10, Scale::Linear) => draw_chart(area, chart, p, Log10Axis { range: x }, y),
        (Scale::Log10, Scale::Log10) => draw_chart(area, chart, p, Log10Axis { range: x }, Log10Axis { range: y }),
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
        .y_labels(8)
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
            .position(p.legend.clone())
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

    fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
        Log10Axis { range: lo..hi }.key_points(max)
    }

    #[test]
    fn log_axes_label_what_fits() {
        // Within a decade: every m·10ᵏ.
        assert_eq!(log_ticks(0.15, 0.95, 8), vec![0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);
        // Two decades: 1, 2, 5 of each.
        assert_eq!(log_ticks(1.0, 100.0, 8), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        // Eight decades: powers of ten only, then every other one.
        assert_eq!(log_ticks(1e-3, 1e4, 8).len(), 8);
        assert_eq!(log_ticks(1e-6, 1e6, 8), vec![1e-6, 1e-4, 0.01, 1.0, 100.0, 1e4, 1e6]);
        // Narrower than the gaps between m·10ᵏ: linear ticks, all in range.
        let t = log_ticks(0.87, 1.25, 8);
        assert!(t.len() >= 3 && t.iter().all(|v| (0.87..=1.25).contains(v)), "{t:?}");
        // The map: the ends of the range at the ends of the pixels, a decade in the middle.
        let axis = Log10Axis { range: 1.0..100.0 };
        assert_eq!([1.0, 10.0, 100.0].map(|v| axis.map(&v, (0, 200))), [0, 100, 200]);
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
