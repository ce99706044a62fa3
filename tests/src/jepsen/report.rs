//! What a run leaves behind, besides the history: a latency plot with the faults shaded
//! (`latency.svg`) and a short `index.md` tying the run directory together. The plot is plain
//! SVG written here, so that nothing beyond the workspace is needed to look at a run.

use std::fmt::Write as _;
use std::path::Path;

use super::nemesis::Fault;
use super::recorder::Outcome;

/// Writes `latency.svg`: every completed operation at (invoke time, latency) on a log scale,
/// coloured by outcome, with each fault's interval shaded and labelled.
pub fn latency_svg(
    path: &Path,
    points: &[(u64, u64, Outcome, String)],
    faults: &[Fault],
    seconds: f64,
) -> anyhow::Result<()> {
    let (w, h, left, right, top, bottom) = (1100.0, 480.0, 70.0, 20.0, 30.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let seconds = seconds.max(1.0);
    let x = |t: f64| left + pw * (t / seconds).clamp(0.0, 1.0);
    // Latency from 100 µs to 10 s, log10.
    let (lo, hi) = (1e-4f64.log10(), 10f64.log10());
    let y =
        |secs: f64| top + ph * (1.0 - ((secs.max(1e-4).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let colours = ["#e6550d", "#3182bd", "#31a354", "#756bb1", "#636363", "#d6616b", "#8c6d31"];
    for (i, f) in faults.iter().enumerate() {
        let end = f.end.unwrap_or(seconds);
        let c = colours[i % colours.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{top}" width="{:.1}" height="{ph}" fill="{c}" fill-opacity="0.12"><title>{}: {}</title></rect>"#,
            x(f.start),
            (x(end) - x(f.start)).max(1.0),
            escape(&f.name),
            escape(&f.detail)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" fill="{c}">{}</text>"#,
            x(f.start) + 2.0,
            top - 4.0 - 10.0 * (i % 2) as f64,
            escape(&f.name)
        );
    }
    // Axes and grid.
    for decade in [-4i32, -3, -2, -1, 0, 1] {
        let yy = y(10f64.powi(decade));
        let label = match decade {
            -4 => "100µs".to_string(),
            -3 => "1ms".into(),
            -2 => "10ms".into(),
            -1 => "100ms".into(),
            0 => "1s".into(),
            _ => "10s".into(),
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        );
    }
    let step = (seconds / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= seconds {
        let xx = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{t:.0}s</text>"##,
            top + ph,
            top + ph + 16.0
        );
        t += step;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the run began</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">latency</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for &(invoked, latency, outcome, _) in points {
        let colour = match outcome {
            Outcome::Ok => "#3182bd",
            Outcome::Fail => "#de2d26",
            Outcome::Info => "#fd8d3c",
        };
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{colour}" fill-opacity="0.6"/>"#,
            x(invoked as f64 / 1e9),
            y(latency as f64 / 1e9)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end"><tspan fill="#3182bd">● ok</tspan>  <tspan fill="#de2d26">● fail</tspan>  <tspan fill="#fd8d3c">● info</tspan></text>"##,
        left + pw,
        top + 12.0
    );
    svg.push_str("</svg>\n");
    std::fs::write(path, svg)?;
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
