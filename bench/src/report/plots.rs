//! Charts as SVG strings, drawn by plotters: percentile plots of latency (the "nines" on the x
//! axis, milliseconds on a log scale) and x/y plots on log or linear axes.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
pub use plotters::style::RGBColor;

pub const SERVER: RGBColor = RGBColor(31, 119, 180);
pub const CEILING: RGBColor = RGBColor(127, 127, 127);
pub const BASELINE: RGBColor = RGBColor(255, 127, 14);
pub const BASELINE_CEILING: RGBColor = RGBColor(214, 170, 120);

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Linear,
    Log,
    /// Quantiles shown as nines: 0.9 at 1, 0.99 at 2, 0.999 at 3...
    Nines,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub x_axis: Axis,
    pub y_axis: Axis,
    pub series: Vec<Series>,
}

const SIZE: (u32, u32) = (640, 380);

/// Where quantile `q` sits on a nines axis.
pub fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

fn nines_label(x: f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    let digits = (x - 2.0).ceil().clamp(0.0, 4.0) as usize;
    format!("{q:.digits$}%")
}

/// A short number for tick labels: 0.0123, 1.5, 250, 12k, 1.5M.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3}M", v / 1e6).replace(".000M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else if a == 0.0 {
        "0".into()
    } else {
        let digits = (-a.log10()).ceil() as usize + 1;
        let s = format!("{v:.digits$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The smallest and largest value of one coordinate over every point, padded for the axis.
fn range(chart: &Chart, pick: fn(&(f64, f64)) -> f64, axis: Axis) -> (f64, f64) {
    let values = chart.series.iter().flat_map(|s| s.points.iter().map(pick));
    let values: Vec<f64> = match axis {
        Axis::Log => values.filter(|v| *v > 0.0).collect(),
        _ => values.collect(),
    };
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (1.0, 10.0);
    }
    match axis {
        Axis::Log => (lo / 1.5, hi * 1.5),
        Axis::Nines => (0.0, (hi - 1e-6).ceil().max(1.0)),
        // From zero, so heights compare honestly.
        Axis::Linear => (lo.min(0.0), hi + (hi - lo.min(0.0)).abs().max(1e-9) * 0.1),
    }
}

/// The chart as one `<svg>` element.
pub fn svg(chart: &Chart) -> Result<String, String> {
    let (x0, x1) = range(chart, |p| p.0, chart.x_axis);
    let (mut y0, mut y1) = range(chart, |p| p.1, chart.y_axis);
    let mut chart = chart.clone();
    // A log scale over less than about a decade gets one or two labels: a linear one from zero
    // reads better there.
    if chart.y_axis == Axis::Log && y1 / y0 < 20.0 {
        chart.y_axis = Axis::Linear;
        (y0, y1) = (0.0, y1 / 1.5 * 1.1);
    }
    let chart = &chart;
    match (chart.x_axis, chart.y_axis) {
        (Axis::Log, Axis::Log) => render(chart, (x0..x1).log_scale(), (y0..y1).log_scale(), x1),
        (Axis::Log, _) => render(chart, (x0..x1).log_scale(), y0..y1, x1),
        (_, Axis::Log) => render(chart, x0..x1, (y0..y1).log_scale(), x1),
        _ => render(chart, x0..x1, y0..y1, x1),
    }
}

fn render<X, Y>(chart: &Chart, x: X, y: Y, x1: f64) -> Result<String, String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(x, y)
            .map_err(|x| e(&x))?;
        let nines_x = chart.x_axis == Axis::Nines;
        // On the nines axis only whole nines are labelled: 0%, 90%, 99%, 99.9%...
        let x_labels = if nines_x { x1.round() as usize + 1 } else { 10 };
        let x_fmt = move |v: &f64| {
            if nines_x {
                nines_label(*v)
            } else {
                short(*v)
            }
        };
        c.configure_mesh()
            .x_desc(chart.x_desc.as_str())
            .y_desc(chart.y_desc.as_str())
            .x_labels(x_labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| short(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|x| e(&x))?;
        for s in &chart.series {
            let style = ShapeStyle::from(&s.color).stroke_width(2);
            let points = s.points.clone();
            let drawn = if s.dashed {
                c.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
            } else {
                c.draw_series(LineSeries::new(points.clone(), style))
            }
            .map_err(|x| e(&x))?;
            let color = s.color;
            drawn
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            c.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 2, s.color.filled())),
            )
            .map_err(|x| e(&x))?;
        }
        // Percentile curves rise to the right; cost curves sit high on the left.
        let legend = if nines_x {
            SeriesLabelPosition::UpperLeft
        } else {
            SeriesLabelPosition::LowerRight
        };
        c.configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nines_axis_and_short_numbers() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(short(0.0123), "0.012");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(15000.0), "15k");
        assert_eq!(short(2_500_000.0), "2.500M");
    }

    #[test]
    fn a_chart_carries_its_series_and_axis_labels() {
        let chart = Chart {
            title: "cost per delivery".into(),
            x_desc: "subscribers".into(),
            y_desc: "server CPU per delivery (µs)".into(),
            x_axis: Axis::Log,
            y_axis: Axis::Log,
            series: vec![
                Series {
                    name: "server".into(),
                    points: vec![(10.0, 0.4), (100.0, 0.2), (1000.0, 0.25)],
                    color: SERVER,
                    dashed: false,
                },
                Series {
                    name: "ceiling".into(),
                    points: vec![(10.0, 0.3), (1000.0, 0.2)],
                    color: CEILING,
                    dashed: true,
                },
            ],
        };
        let svg = svg(&chart).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        for text in [
            "cost per delivery",
            "subscribers",
            "server CPU per delivery",
            "server",
            "ceiling",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // Both lines and their points are drawn.
        assert!(svg.matches("<polyline").count() >= 2, "{svg}");
    }

    #[test]
    fn an_empty_chart_still_draws() {
        let chart = Chart {
            title: "nothing".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            x_axis: Axis::Nines,
            y_axis: Axis::Log,
            series: vec![],
        };
        assert!(svg(&chart).unwrap().contains("nothing"));
    }
}
