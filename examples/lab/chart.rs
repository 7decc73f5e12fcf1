//! NAME.svg: the outcome's panels side by side, drawn by the library's
//! `tamer::plot` (each line the mean over seeds with a ± one standard
//! deviation band).

use super::experiment::Panel;
use tamer::plot::{Chart, Figure, Scale, Series, Spread};
use tamer::Result;

/// The SVG text of `panels` under `title`.
pub fn render(title: &str, panels: &[Panel]) -> Result<String> {
    let mut figure = Figure::new(title).columns(panels.len().clamp(1, 2)).panel_size(600, 400);
    for panel in panels {
        let log = |on: bool| if on { Scale::Log10 } else { Scale::Linear };
        let mut chart = Chart::new(&panel.title)
            .x_label(&panel.x_label)
            .y_label(&panel.y_label)
            .x_scale(log(panel.log_x))
            .y_scale(log(panel.log_y));
        for line in &panel.lines {
            let series =
                Series::line(&line.label, line.points.iter().map(|&(x, m, _)| (x, m))).with_spread(line.points.iter().map(|&(_, _, s)| s), Spread::Band);
            chart = chart.with_series(series);
        }
        figure = figure.with_panel(chart);
    }
    Ok(figure.render_svg()?.text)
}
