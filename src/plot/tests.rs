//! The SVG is read back: its tags balance, and its wide polylines (one per
//! line series: the legend draws squares) hold the series' points.

use super::*;

/// Check that the tags of `svg` nest and close (a small XML well-formedness
/// check: one root `svg` element, every `<x ...>` closed by `</x>` or
/// `/>`, no stray `<` inside text), and return the element names in order.
fn elements(svg: &str) -> Vec<String> {
    let body = svg.trim();
    assert!(body.starts_with("<svg"), "does not start with <svg: {}", &body[..body.len().min(80)]);
    assert!(body.ends_with("</svg>"), "does not end with </svg>");
    let (mut stack, mut names) = (Vec::<String>::new(), Vec::new());
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("an unclosed tag") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "a '<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "</{name}> closes another element");
        } else if !tag.starts_with('?') && !tag.starts_with('!') {
            let name = tag.split(|c: char| c.is_whitespace() || c == '/').next().expect("a tag name").to_string();
            if !tag.ends_with('/') {
                stack.push(name.clone());
            }
            names.push(name);
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert_eq!(names.iter().filter(|n| *n == "svg").count(), 1, "one svg element");
    names
}

/// The number of points of each series' line, in document order: the
/// `<polyline>`s of stroke width 2 (the axes and ticks are polylines of width 1).
fn polyline_points(svg: &str) -> Vec<usize> {
    svg.split("<polyline")
        .skip(1)
        .filter(|tag| tag[..tag.find('>').expect("the tag's end")].contains("stroke-width=\"2\""))
        .map(|tag| {
            let points = tag.split("points=\"").nth(1).expect("a points attribute");
            let points = &points[..points.find('"').expect("the attribute's end")];
            for p in points.split_whitespace() {
                let xy: Vec<f64> = p.split(',').map(|v| v.parse().expect("a pixel coordinate")).collect();
                assert_eq!(xy.len(), 2, "{p}");
            }
            points.split_whitespace().count()
        })
        .collect()
}

fn ramp(n: usize) -> Vec<(f64, f64)> {
    (0..n).map(|i| (i as f64 * 10.0, 1.0 + (i as f64).sin())).collect()
}

#[test]
fn a_chart_holds_its_title_legend_and_one_polyline_per_series() {
    let chart = Chart::new("loss <by> step")
        .x_label("optimizer step")
        .y_label("cross-entropy")
        .with_series(Series::line("adamw & cosine", ramp(7)))
        .with_series(Series::line("sgd", ramp(12)))
        .with_series(Series::scatter("final", ramp(3)));
    let svg = chart.render_svg(600, 400).unwrap();
    let names = elements(&svg.text);
    assert!(svg.skipped.is_empty(), "{}", svg.skipped);
    // Text is escaped, so a title with markup characters stays well-formed.
    assert!(svg.text.contains("loss &lt;by&gt; step"));
    for text in ["optimizer step", "cross-entropy", "adamw &amp; cosine", "sgd", "final"] {
        assert!(svg.text.contains(text), "{text} missing");
    }
    assert_eq!(polyline_points(&svg.text), vec![7, 12]);
    // The scatter's three dots, and a legend square per series.
    assert!(names.iter().filter(|n| *n == "circle").count() >= 3);
    assert!(names.iter().filter(|n| *n == "rect").count() >= 3);
}

#[test]
fn non_finite_points_are_skipped_and_counted() {
    let mut points = ramp(10);
    points[2].1 = f64::NAN;
    points[5].0 = f64::INFINITY;
    points[9].1 = f64::NEG_INFINITY;
    let chart = Chart::new("diverged").with_series(Series::line("run", points));
    let svg = chart.render_svg(400, 300).unwrap();
    elements(&svg.text);
    assert_eq!(svg.skipped.non_finite, 3);
    assert_eq!(polyline_points(&svg.text), vec![7]);
    // Nothing non-finite reaches the SVG.
    assert!(!svg.text.contains("NaN") && !svg.text.contains("inf"));
}

#[test]
fn log_axes_skip_zeros_and_negatives_without_panicking() {
    let points = vec![(0.0, 1.0), (1.0, 0.0), (2.0, -3.0), (3.0, 10.0), (4.0, 100.0)];
    let chart = Chart::new("log")
        .x_scale(Scale::Log10)
        .y_scale(Scale::Log10)
        .with_series(Series::line("a", points.clone()))
        .with_series(Series::line("zeros", [(1.0, 0.0), (2.0, 0.0)]));
    let svg = chart.render_svg(400, 300).unwrap();
    elements(&svg.text);
    // x = 0, y = 0, y = −3 of "a"; both of "zeros", which is left empty.
    assert_eq!(svg.skipped.non_positive_on_log, 5);
    assert_eq!(svg.skipped.empty_series, vec!["zeros".to_string()]);
    assert!(svg.text.contains("zeros (no data)"));
    assert_eq!(polyline_points(&svg.text), vec![2]);
    // Linear axes keep them all.
    let linear = Chart::new("lin").with_series(Series::line("a", points)).render_svg(400, 300).unwrap();
    assert_eq!(polyline_points(&linear.text), vec![5]);
}

#[test]
fn empty_charts_and_series_render() {
    let svg = Chart::new("nothing yet").render_svg(300, 200).unwrap();
    elements(&svg.text);
    assert!(svg.text.contains("nothing yet"));
    let svg = Chart::new("empty")
        .y_scale(Scale::Log10)
        .with_series(Series::line("none", []))
        .render_svg(300, 200)
        .unwrap();
    elements(&svg.text);
    assert_eq!(svg.skipped.empty_series, vec!["none".to_string()]);
    assert!(polyline_points(&svg.text).is_empty());
    // One point: drawn as a dot, not a line of one point.
    let svg = Chart::new("one").with_series(Series::line("p", [(1.0, 1.0)])).render_svg(300, 200).unwrap();
    assert!(polyline_points(&svg.text).is_empty());
    assert!(elements(&svg.text).iter().any(|n| n == "circle"));
}

#[test]
fn spreads_draw_bands_and_bars_and_must_match_the_points() {
    let band = Series::line("band", ramp(5)).with_spread([0.1, 0.2, f64::NAN, 0.1, -0.3], Spread::Band);
    let bars = Series::line("bars", ramp(4)).with_spread([0.1; 4], Spread::ErrorBars);
    let svg = Chart::new("spread").with_series(band).with_series(bars).render_svg(400, 300).unwrap();
    let names = elements(&svg.text);
    assert_eq!(svg.skipped.non_finite, 1, "the NaN half-width");
    assert_eq!(names.iter().filter(|n| *n == "polygon").count(), 1, "one band");
    // Each error bar is three lines (the bar and its two caps).
    assert!(names.iter().filter(|n| *n == "line").count() >= 12);
    assert_eq!(polyline_points(&svg.text), vec![5, 4]);
    let bad = Chart::new("bad").with_series(Series::line("s", ramp(3)).with_spread([0.1], Spread::Band));
    let e = bad.render_svg(300, 200).unwrap_err().to_string();
    assert!(e.contains("\"s\"") && e.contains("1 half-widths for 3 points"), "{e}");
}

#[test]
fn a_band_on_a_log_axis_is_cut_at_its_bottom() {
    // y − s ≤ 0 cannot be drawn on a log axis: the band's low side stops at the axis.
    let s = Series::line("s", [(1.0, 1.0), (2.0, 2.0)]).with_spread([2.0, 1.0], Spread::Band);
    let svg = Chart::new("cut").y_scale(Scale::Log10).with_series(s).render_svg(400, 300).unwrap();
    elements(&svg.text);
    assert!(svg.skipped.is_empty(), "{}", svg.skipped);
    assert!(svg.text.contains("<polygon"));
}

#[test]
fn figures_lay_out_every_panel_and_refuse_impossible_layouts() {
    let panel = |t: &str, n: usize| Chart::new(t).with_series(Series::line(format!("{t} series"), ramp(n)));
    let fig = Figure::new("four panels")
        .with_panel(panel("p1", 3))
        .with_panel(panel("p2", 4))
        .with_panel(panel("p3", 5).y_scale(Scale::Log10))
        .with_panel(panel("p4", 6));
    let svg = fig.render_svg().unwrap();
    elements(&svg.text);
    for t in ["four panels", "p1", "p2 series", "p3", "p4 series"] {
        assert!(svg.text.contains(t), "{t}");
    }
    assert_eq!(polyline_points(&svg.text), vec![3, 4, 5, 6]);
    let (w, h) = fig.panel_size;
    assert!(svg.text.contains(&format!("width=\"{}\"", 2 * w)), "two columns wide");
    assert!(svg.text.contains(&format!("height=\"{}\"", 2 * h + 40)), "two rows and the title high");
    assert!(Figure::new("none").render_svg().is_err());
    assert!(fig.clone().columns(0).render_svg().is_err());
    assert!(fig.panel_size(0, 10).render_svg().is_err());
}

#[test]
fn writing_replaces_only_when_asked() {
    let dir = std::env::temp_dir().join(format!("tamer-plot-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chart.svg");
    std::fs::write(&path, "mine").unwrap();
    let chart = Chart::new("t").with_series(Series::line("a", ramp(3)));
    let e = chart.write_svg(&path, 300, 200, Overwrite::Refuse).unwrap_err().to_string();
    assert!(e.contains("chart.svg") && e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
    // A figure that cannot render writes nothing, even when allowed to replace.
    assert!(Figure::new("empty").write_svg(&path, Overwrite::Replace).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
    chart.write_svg(&path, 300, 200, Overwrite::Replace).unwrap();
    elements(&std::fs::read_to_string(&path).unwrap());
    // Only the asked-for file exists: no temporary was left beside it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let e = chart.write_svg(dir.join("missing/chart.svg"), 300, 200, Overwrite::Replace).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mean_std_skips_missing_and_non_finite_runs() {
    let s = Series::mean_std("m", &[0.0, 1.0, 2.0], &[vec![1.0, 2.0, f64::NAN], vec![3.0, f64::INFINITY]]);
    assert_eq!(s.points, vec![(0.0, 2.0), (1.0, 2.0)]);
    assert_eq!(s.spread, Some((vec![1.0, 0.0], Spread::Band)));
}

#[test]
fn metrics_records_become_curves() {
    let dir = std::env::temp_dir().join(format!("tamer-plot-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("run-a")).unwrap();
    let path = dir.join("run-a").join("metrics.jsonl");
    let lines = [
        r#"{"event":"start","step":0}"#,
        r#"{"event":"train","step":2,"loss":2.0,"acc":0.1,"lr":0.001,"grad_norm":3.0}"#,
        r#"{"event":"train","step":4,"loss":1.5,"acc":0.3,"lr":0.002,"grad_norm":"inf"}"#,
        r#"{"event":"eval","step":4,"epoch":1.0,"test_loss":1.4,"test_acc":0.5,"eval_seconds":0.2,"elapsed":3.0}"#,
        r#"{"event":"train","step":6,"loss":1.2,"acc":0.4,"lr":0.001,"grad_norm":null}"#,
        // A crash after step 6, resumed from the checkpoint at step 4: step 6 is trained again.
        r#"{"event":"resume","step":4}"#,
        r#"{"event":"train","step":6,"loss":1.1,"acc":0.45,"lr":0.001,"grad_norm":1.0}"#,
    ];
    std::fs::write(&path, format!("{}\n{{\"event\":\"tra", lines.join("\n"))).unwrap();
    let run = read_metrics(&path).unwrap();
    assert_eq!(run.name, "run-a");
    assert_eq!(run.loss, vec![(2.0, 2.0), (4.0, 1.5), (6.0, 1.1)]);
    assert_eq!(run.acc, vec![(2.0, 0.1), (4.0, 0.3), (6.0, 0.45)]);
    assert_eq!(run.lr, vec![(2.0, 0.001), (4.0, 0.002), (6.0, 0.001)]);
    assert_eq!(run.grad_norm[1].1, f64::INFINITY);
    assert_eq!(run.grad_norm[2], (6.0, 1.0));
    let names: Vec<&str> = run.eval.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["test_loss", "test_acc"]);
    let fig = metrics_figure(&[run.clone(), MetricsRun { name: "b".into(), ..run }]);
    let svg = fig.render_svg().unwrap();
    elements(&svg.text);
    assert!(svg.text.contains("run-a: train loss") && svg.text.contains("b: test_acc"));
    assert_eq!(svg.skipped.non_finite, 2, "one inf gradient norm per run");
    // A cut line anywhere but the end is an error naming the file and the line.
    std::fs::write(&path, format!("{{\"event\":\"tra\n{}\n", lines[1])).unwrap();
    let e = read_metrics(&path).unwrap_err().to_string();
    assert!(e.contains("metrics.jsonl line 1"), "{e}");
    std::fs::write(&path, "[1, 2]\n").unwrap();
    assert!(read_metrics(&path).unwrap_err().to_string().contains("not a JSON object"));
    std::fs::write(&path, format!("{}\n", lines[0])).unwrap();
    assert!(read_metrics(&path).unwrap_err().to_string().contains("no \"train\" record"));
    std::fs::write(&path, "{\"event\":\"train\",\"loss\":1}\n").unwrap();
    assert!(read_metrics(&path).unwrap_err().to_string().contains("without a numeric \"step\""));
    let e = read_metrics(dir.join("absent.jsonl")).unwrap_err().to_string();
    assert!(e.contains("absent.jsonl"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
