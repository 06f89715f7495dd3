//! The report's charts, drawn as SVG with plotters: vertical bars (with
//! threshold ticks, a threshold line and a panel of shares under them),
//! horizontal bars, and the panel that says why a chart has no data.
//!
//! Bars stand at whole x (or y) coordinates, so that ticks and lines are
//! placed in data coordinates, exactly; axis labels are written only at a
//! bar's own coordinate.

use plotters::prelude::*;

const SIZE: (u32, u32) = (900, 380);
const BAR: RGBColor = RGBColor(70, 110, 170);
const MARK: RGBColor = RGBColor(200, 40, 40);

/// Why plotters could not draw a chart into its SVG text.
pub(crate) type DrawError = plotters::drawing::DrawingAreaErrorKind<std::io::Error>;

/// `svg` as an element for an HTML page: no XML namespace (an inline SVG
/// needs none), so the page holds no address at all.
fn inline(svg: String) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
}

/// Vertical bars, one per label, with optional per-bar threshold ticks, a
/// vertical threshold line, and a line of shares (0–1) drawn in a panel of
/// its own under the bars. Bar i stands at x = i, so ticks and lines are
/// placed in data coordinates, exactly.
pub(crate) struct Bars<'a> {
    pub(crate) labels: Vec<String>,
    pub(crate) values: Vec<f64>,
    /// A threshold tick over each bar (empty for none).
    pub(crate) marks: Vec<Option<f64>>,
    /// A named series of shares (0–1), one per bar.
    pub(crate) line: Option<(&'a str, Vec<Option<f64>>)>,
    pub(crate) y_desc: &'a str,
    pub(crate) y_max: Option<f64>,
    /// Label every n-th bar.
    pub(crate) label_every: usize,
    /// A vertical line at this x (bar i spans i-0.5..i+0.5).
    pub(crate) threshold_at: Option<f64>,
}

impl Bars<'_> {
    pub(crate) fn draw(&self) -> Result<String, DrawError> {
        let n = self.values.len();
        let x_range = -0.5..(n as f64 - 0.5);
        let top = self.values.iter().chain(self.marks.iter().flatten()).copied().fold(0.0_f64, f64::max);
        let y_max = self.y_max.unwrap_or(if top > 0.0 { top * 1.15 } else { 1.0 });
        let every = self.label_every.max(1);
        // Labels only at a bar's own x.
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 || !(i as usize).is_multiple_of(every) {
                return String::new();
            }
            self.labels.get(i as usize).cloned().unwrap_or_default()
        };
        let height = if self.line.is_some() { SIZE.1 + 170 } else { SIZE.1 };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
            root.fill(&WHITE)?;
            let (upper, lower) = match self.line {
                Some(_) => {
                    let (u, l) = root.split_vertically(SIZE.1);
                    (u, Some(l))
                }
                None => (root.clone(), None),
            };
            let mut chart = ChartBuilder::on(&upper)
                .margin(14)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(x_range.clone(), 0f64..y_max)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n + 1)
                .x_label_formatter(&label)
                .y_desc(self.y_desc)
                .draw()?;
            chart.draw_series(self.values.iter().enumerate().map(|(i, v)| {
                let x = i as f64;
                Rectangle::new([(x - 0.4, 0.0), (x + 0.4, *v)], BAR.filled())
            }))?;
            chart.draw_series(self.marks.iter().enumerate().filter_map(|(i, m)| {
                let x = i as f64;
                m.map(|m| PathElement::new(vec![(x - 0.45, m), (x + 0.45, m)], MARK.stroke_width(3)))
            }))?;
            if let Some(at) = self.threshold_at {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(at, 0.0), (at, y_max)],
                    MARK.stroke_width(2),
                )))?;
            }
            if let (Some((name, line)), Some(lower)) = (&self.line, lower) {
                let points: Vec<(f64, f64)> =
                    line.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as f64, v))).collect();
                let high = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
                let mut chart = ChartBuilder::on(&lower)
                    .margin(14)
                    .margin_top(0)
                    .x_label_area_size(10)
                    .y_label_area_size(72)
                    .build_cartesian_2d(x_range, 0f64..(high * 1.25).max(0.05))?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_labels(0)
                    .y_labels(4)
                    .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
                    .y_desc(*name)
                    .draw()?;
                chart.draw_series(LineSeries::new(points.clone(), MARK.stroke_width(2)))?;
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, MARK.filled())))?;
            }
            root.present()?;
        }
        Ok(inline(svg))
    }
}

/// Horizontal bars, the first label at the top (bar i at y = n-1-i).
pub(crate) struct HBars<'a> {
    pub(crate) labels: Vec<String>,
    pub(crate) values: Vec<f64>,
    pub(crate) x_desc: &'a str,
    pub(crate) x_max: Option<f64>,
}

impl HBars<'_> {
    pub(crate) fn draw(&self) -> Result<String, DrawError> {
        let n = self.values.len();
        let top = self.values.iter().copied().fold(0.0_f64, f64::max);
        let x_max = self.x_max.unwrap_or(if top > 0.0 { top * 1.1 } else { 1.0 });
        let height = (60 + 24 * n as u32).max(160);
        let row = |i: usize| (n - 1 - i) as f64;
        let label = |y: &f64| {
            let r = y.round();
            if (y - r).abs() > 1e-6 || r < 0.0 || r as usize >= n {
                return String::new();
            }
            self.labels.get(n - 1 - r as usize).cloned().unwrap_or_default()
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(190)
                .build_cartesian_2d(0f64..x_max, -0.5..(n as f64 - 0.5))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(n + 1)
                .y_label_formatter(&label)
                .x_desc(self.x_desc)
                .draw()?;
            chart.draw_series(self.values.iter().enumerate().map(|(i, v)| {
                let y = row(i);
                Rectangle::new([(0.0, y - 0.35), (*v, y + 0.35)], BAR.filled())
            }))?;
            root.present()?;
        }
        Ok(inline(svg))
    }
}

/// A chart-sized SVG that says why there is no data.
pub(crate) fn no_data(reason: &str) -> String {
    format!(
        "<svg width=\"{w}\" height=\"120\" viewBox=\"0 0 {w} 120\"><rect width=\"{w}\" height=\"120\" fill=\"#f7f7f7\"/>\
         <text x=\"20\" y=\"64\" font-family=\"sans-serif\" font-size=\"16\" fill=\"#555\">No data: {}</text></svg>",
        crate::page::esc(reason),
        w = SIZE.0
    )
}
