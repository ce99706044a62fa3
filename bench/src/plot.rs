//! Line charts as plain SVG, for the benchmark report (no plotting dependency: a report must be
//! reproducible from the result files with the workspace alone).

use std::fmt::Write as _;

/// One line of a chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (a reference line, such as a floor).
    pub dashed: bool,
}

/// A chart.
pub struct Chart {
    /// The title.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const COLOURS: [&str; 8] =
    ["#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b", "#8c6d31", "#17becf"];

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let (w, h, left, right, top, bottom) = (760.0, 440.0, 80.0, 190.0, 40.0, 55.0);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let pts: Vec<(f64, f64)> =
            self.series.iter().flat_map(|s| s.points.iter().copied()).collect();
        let tx = |v: f64, log: bool| if log { v.max(1e-9).log10() } else { v };
        let range = |vals: Vec<f64>, log: bool| {
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                return (0.0, 1.0);
            }
            if log {
                (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
            } else {
                (0f64.min(lo), if hi > lo { hi * 1.08 } else { lo + 1.0 })
            }
        };
        let (x0, x1) = range(pts.iter().map(|p| tx(p.0, self.log_x)).collect(), self.log_x);
        let (y0, y1) = range(pts.iter().map(|p| tx(p.1, self.log_y)).collect(), self.log_y);
        let sx = |v: f64| left + pw * (tx(v, self.log_x) - x0) / (x1 - x0);
        let sy = |v: f64| top + ph * (1.0 - (tx(v, self.log_y) - y0) / (y1 - y0));
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            left + pw / 2.0,
            esc(&self.title)
        );
        // Grid and ticks.
        let ticks = |a: f64, b: f64, log: bool| -> Vec<f64> {
            if log {
                (a as i32..=b as i32).map(|e| 10f64.powi(e)).collect()
            } else {
                let step = nice_step((b - a) / 5.0);
                let mut v = Vec::new();
                let mut t = (a / step).ceil() * step;
                while t <= b + 1e-9 {
                    v.push(t);
                    t += step;
                }
                v
            }
        };
        for t in ticks(y0, y1, self.log_y) {
            let y = sy(t);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 6.0,
                y + 4.0,
                label(t)
            );
        }
        for t in ticks(x0, x1, self.log_x) {
            let x = sx(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{:.1}" stroke="#f0f0f0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                top + ph,
                top + ph + 16.0,
                label(t)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            h - 14.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">{}</text>"#,
            top + ph / 2.0,
            top + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let path: Vec<String> =
                series.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
            let dash = if series.dashed { r#" stroke-dasharray="6 4""# } else { "" };
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
            if !series.dashed {
                for &(x, y) in &series.points {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                        sx(x),
                        sy(y)
                    );
                }
            }
            let ly = top + 14.0 + 18.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                left + pw + 12.0,
                left + pw + 32.0,
                left + pw + 38.0,
                ly + 4.0,
                esc(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.max(1e-12).log10().floor());
    let f = raw / mag;
    mag * if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    }
}

fn label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
