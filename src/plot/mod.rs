//! Charts written as SVG files: the figures of a training run (`metrics.svg`,
//! [`metrics`]), of `examples/plot_metrics.rs` and of the lab.
//!
//! A [`Chart`] is a title, axis labels, a [`Scale`] per axis and named
//! [`Series`] of `(x, y)` points, each drawn as a line or points, optionally
//! with a ± band or error bars (a mean ± standard deviation over seeds), and
//! a legend. A [`Figure`] lays several charts out in a grid in one SVG.
//! Drawing is [plotters](https://docs.rs/plotters)' SVG backend (no bitmap
//! backend, no font library: the SVG names the `sans-serif` family and the
//! viewer lays the text out), so this module depends only on the error type.
//!
//! What cannot be drawn is skipped, never a panic, and counted in
//! [`Skipped`]: points with a non-finite coordinate (a diverged run still
//! plots up to where it diverged, the line joining the points on either side
//! of a gap), points with `x ≤ 0` or `y ≤ 0` on a log axis, and ± half-widths
//! that are not finite (the point stays, without its spread). A band or bar
//! that reaches zero or below on a log axis is cut at the bottom of the axis.
//! A series with no point left is still named in the legend, marked
//! "(no data)". A chart with no point at all gets a unit range.
//!
//! ```
//! use tamer::plot::{Chart, Scale, Series, Spread};
//! let chart = Chart::new("loss over seeds")
//!     .x_label("step")
//!     .y_label("loss")
//!     .y_scale(Scale::Log10)
//!     .with_series(Series::line("adamw", [(1.0, 2.3), (2.0, 1.1), (3.0, 0.4)]).with_spread([0.1, 0.2, 0.05], Spread::Band))
//!     .with_series(Series::line("sgd", [(1.0, 2.3), (2.0, f64::NAN), (3.0, 0.0)]));
//! let svg = chart.render_svg(480, 320).unwrap();
//! assert!(svg.text.contains("loss over seeds") && svg.text.contains("adamw"));
//! // sgd's NaN and its 0 on the log axis are skipped and counted.
//! assert_eq!((svg.skipped.non_finite, svg.skipped.non_positive_on_log), (1, 1));
//! ```

mod draw;
pub mod metrics;

pub use metrics::{metrics_figure, read_metrics, write_metrics_svg, MetricsRun, METRICS_SVG};

use crate::{Error, Result};
use std::fmt;
use std::io::Write;
use std::path::Path;

/// How an axis maps values to positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    #[default]
    Linear,
    /// Base-10 logarithmic: only positive values can be drawn.
    Log10,
}

/// How a series' ± half-widths are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// A shaded band from `y − s` to `y + s` along the line.
    Band,
    /// A vertical bar from `y − s` to `y + s` at each point.
    ErrorBars,
}

/// What marks a series draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Marks {
    /// A line through the points in their order (one SVG `polyline` of
    /// stroke width 2, which only series lines have); a
    /// series of a single point draws that point instead.
    #[default]
    Line,
    /// A dot per point (SVG `circle`s), no line: a scatter plot.
    Points,
    /// Both.
    LineAndPoints,
}

/// A named sequence of `(x, y)` points, with optional ± half-widths.
///
/// ```
/// use tamer::plot::{Marks, Series, Spread};
/// let s = Series::line("val_loss", [(0.0, 2.0), (100.0, 1.5)]).with_spread([0.2, 0.1], Spread::ErrorBars);
/// assert_eq!(s.points.len(), 2);
/// assert_eq!(Series::scatter("runs", [(1.0, 1.0)]).marks, Marks::Points);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend's name for it.
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// A half-width per point (its sign is ignored) and how to draw them.
    pub spread: Option<(Vec<f64>, Spread)>,
    pub marks: Marks,
}

impl Series {
    /// A series drawn as a line.
    pub fn line(name: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points: points.into_iter().collect(),
            spread: None,
            marks: Marks::Line,
        }
    }

    /// A series drawn as points only.
    pub fn scatter(name: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Series {
        Series {
            marks: Marks::Points,
            ..Series::line(name, points)
        }
    }

    /// The same series with other marks.
    pub fn marks(mut self, marks: Marks) -> Series {
        self.marks = marks;
        self
    }

    /// The same series with a ± half-width per point (one per point, in
    /// order: rendering refuses another count), e.g. a standard deviation.
    pub fn with_spread(mut self, half_widths: impl IntoIterator<Item = f64>, how: Spread) -> Series {
        self.spread = Some((half_widths.into_iter().collect(), how));
        self
    }

    /// The mean and the (population) standard deviation over `runs` at each
    /// x, as a line with a ± band: what a chart shows for one setting run
    /// under several seeds. `runs[r][i]` is run `r`'s value at `xs[i]`; a run
    /// shorter than `xs` (one that diverged and stopped) and non-finite values
    /// leave those points to the others; an x no run reached is skipped.
    ///
    /// ```
    /// use tamer::plot::Series;
    /// let s = Series::mean_std("lr 1e-3", &[1.0, 2.0], &[vec![1.0, 3.0], vec![3.0]]);
    /// assert_eq!(s.points, vec![(1.0, 2.0), (2.0, 3.0)]);
    /// assert_eq!(s.spread.unwrap().0, vec![1.0, 0.0]);
    /// ```
    pub fn mean_std(name: impl Into<String>, xs: &[f64], runs: &[Vec<f64>]) -> Series {
        let mut points = Vec::new();
        let mut spread = Vec::new();
        for (i, &x) in xs.iter().enumerate() {
            let values: Vec<f64> = runs.iter().filter_map(|r| r.get(i).copied()).filter(|v| v.is_finite()).collect();
            if values.is_empty() {
                continue;
            }
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            points.push((x, mean));
            spread.push(var.sqrt());
        }
        Series::line(name, points).with_spread(spread, Spread::Band)
    }
}

/// One chart: a title, axis labels and scales, and its series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
}

impl Chart {
    /// A chart with this title, linear axes and no series yet.
    pub fn new(title: impl Into<String>) -> Chart {
        Chart {
            title: title.into(),
            ..Chart::default()
        }
    }
    pub fn x_label(mut self, label: impl Into<String>) -> Chart {
        self.x_label = label.into();
        self
    }
    pub fn y_label(mut self, label: impl Into<String>) -> Chart {
        self.y_label = label.into();
        self
    }
    pub fn x_scale(mut self, scale: Scale) -> Chart {
        self.x_scale = scale;
        self
    }
    pub fn y_scale(mut self, scale: Scale) -> Chart {
        self.y_scale = scale;
        self
    }
    /// Add a series (drawn in the order added, each in the next colour).
    pub fn with_series(mut self, series: Series) -> Chart {
        self.series.push(series);
        self
    }

    /// The chart alone as an SVG document of `width × height` pixels (a
    /// [`Figure`] of one panel).
    pub fn render_svg(&self, width: u32, height: u32) -> Result<Svg> {
        Figure::new(self.title.clone())
            .panel_size(width, height)
            .with_panel(self.clone())
            .render_svg_untitled()
    }

    /// Render (as [`render_svg`](Self::render_svg)) and write to `path`; see
    /// [`Figure::write_svg`] for what is written and when a file is replaced.
    ///
    /// ```
    /// use tamer::plot::{Chart, Overwrite, Series};
    /// let path = std::env::temp_dir().join(format!("tamer-chart-doc-{}.svg", std::process::id()));
    /// let chart = Chart::new("t").with_series(Series::line("a", [(0.0, 1.0), (1.0, 2.0)]));
    /// chart.write_svg(&path, 400, 300, Overwrite::Replace).unwrap();
    /// // Asked not to replace, it refuses the file it just wrote.
    /// assert!(chart.write_svg(&path, 400, 300, Overwrite::Refuse).is_err());
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn write_svg(&self, path: impl AsRef<Path>, width: u32, height: u32, overwrite: Overwrite) -> Result<Skipped> {
        let svg = self.render_svg(width, height)?;
        write_file(path.as_ref(), &svg.text, overwrite)?;
        Ok(svg.skipped)
    }
}

/// Several charts in a grid in one SVG, under an optional title.
///
/// ```
/// use tamer::plot::{Chart, Figure, Series};
/// let panel = |t: &str| Chart::new(t).with_series(Series::line(t, [(0.0, 1.0), (1.0, 0.5)]));
/// let fig = Figure::new("a run").columns(2).with_panel(panel("loss")).with_panel(panel("lr")).with_panel(panel("acc"));
/// let svg = fig.render_svg().unwrap();
/// // One line per series: the polylines of width 2 (the axes' are width 1).
/// assert_eq!(svg.text.matches(r#"stroke-width="2" points"#).count(), 3);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Drawn above the grid; empty: none.
    pub title: String,
    /// Charts per row (rows follow from the number of panels).
    pub columns: usize,
    /// One chart's size in pixels.
    pub panel_size: (u32, u32),
    pub panels: Vec<Chart>,
}

impl Figure {
    /// A figure with this title, two columns of 560 × 380 pixel panels, and no panel yet.
    pub fn new(title: impl Into<String>) -> Figure {
        Figure {
            title: title.into(),
            columns: 2,
            panel_size: (560, 380),
            panels: Vec::new(),
        }
    }
    pub fn columns(mut self, columns: usize) -> Figure {
        self.columns = columns;
        self
    }
    pub fn panel_size(mut self, width: u32, height: u32) -> Figure {
        self.panel_size = (width, height);
        self
    }
    pub fn with_panel(mut self, chart: Chart) -> Figure {
        self.panels.push(chart);
        self
    }

    /// The figure as an SVG document, with what had to be skipped.
    /// An error when it has no panel, zero columns, a zero panel size, or a
    /// series whose half-widths do not match its points.
    pub fn render_svg(&self) -> Result<Svg> {
        draw::render(self, true)
    }

    /// As [`render_svg`](Self::render_svg) without the figure's title (a lone chart has its own).
    fn render_svg_untitled(&self) -> Result<Svg> {
        draw::render(self, false)
    }

    /// Render and write the SVG to `path`, returning what was skipped.
    ///
    /// Naming `path` is the request to write that file: it is the only file
    /// written (no temporary beside it, no directory created), and only after
    /// the figure rendered, so an error leaves the file system as it was. If
    /// `path` exists it is replaced only with [`Overwrite::Replace`];
    /// [`Overwrite::Refuse`] makes that an error (checked and created in one
    /// step, so a file that appears meanwhile is not replaced either).
    pub fn write_svg(&self, path: impl AsRef<Path>, overwrite: Overwrite) -> Result<Skipped> {
        let svg = self.render_svg()?;
        write_file(path.as_ref(), &svg.text, overwrite)?;
        Ok(svg.skipped)
    }
}

/// Whether writing an SVG may replace an existing file at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it: the caller asked for this file (e.g. a run's own `metrics.svg`, or `--force`).
    Replace,
    /// Leave it and return an error.
    Refuse,
}

/// A rendered SVG document and what could not be drawn in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Svg {
    pub text: String,
    pub skipped: Skipped,
}

/// What a rendering left out (see the [module](self) documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Points with a non-finite x or y, and non-finite half-widths.
    pub non_finite: usize,
    /// Points with `x ≤ 0` on a log x axis or `y ≤ 0` on a log y axis.
    pub non_positive_on_log: usize,
    /// Series (by name) with no point left to draw.
    pub empty_series: Vec<String>,
}

impl Skipped {
    /// Whether everything was drawn.
    pub fn is_empty(&self) -> bool {
        self.non_finite == 0 && self.non_positive_on_log == 0 && self.empty_series.is_empty()
    }
}

impl fmt::Display for Skipped {
    /// `"nothing skipped"`, or e.g. `"2 non-finite values skipped; series with no data: sgd"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.non_finite > 0 {
            parts.push(format!("{} non-finite values skipped", self.non_finite));
        }
        if self.non_positive_on_log > 0 {
            parts.push(format!("{} points at or below zero skipped on log axes", self.non_positive_on_log));
        }
        if !self.empty_series.is_empty() {
            parts.push(format!("series with no data: {}", self.empty_series.join(", ")));
        }
        if parts.is_empty() {
            write!(f, "nothing skipped")
        } else {
            write!(f, "{}", parts.join("; "))
        }
    }
}

/// Write `text` to `path` as [`Figure::write_svg`] describes.
fn write_file(path: &Path, text: &str, overwrite: Overwrite) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    match overwrite {
        Overwrite::Replace => options.create(true).truncate(true),
        Overwrite::Refuse => options.create_new(true),
    };
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::io(
                "write_svg",
                format!("{} already exists and was not asked to be replaced; nothing was written", path.display()),
            )
        } else {
            Error::io("write_svg", format!("cannot create {}: {e}", path.display()))
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.flush())
        .map_err(|e| Error::io("write_svg", format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests;
